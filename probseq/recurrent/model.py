"""RecurrentModel: autoregressive neural sequence models with exact likelihoods.

The model factorises ``p(x_1..x_T) = prod_t p(x_t | x_<t)``; a network (RNN, LSTM, GRU or a
causal transformer) reads ``x_1..x_{t-1}`` and emits the parameters of each conditional.
Every conditional is a normalised distribution, so ``log_prob`` is exact.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from probseq.base import SequenceModel
from probseq.data import Sequences, as_sequences, check_sequences
from probseq.recurrent.emissions import (
    CategoricalEmission,
    Emission,
    GaussianEmission,
    MixtureEmission,
)
from probseq.recurrent.networks import RECURRENT_CELLS, SequenceNetwork
from probseq.recurrent.training import PaddedData, ShuffleSampler, train_network

__all__ = ["RecurrentModel"]

_CELLS = (*RECURRENT_CELLS, "transformer")
_EMISSIONS = ("categorical", "gaussian", "mixture")
#: evaluation works on chunks of at most this many (sequence, step) cells at a time.
_EVAL_TOKENS = 1 << 16
#: RNN evaluation walks long sequences in windows of this many steps, carrying the state.
_EVAL_WINDOW = 4096


def _check_int(x: Any, what: str, minimum: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {x!r}")
    return x


def _check_float(x: Any, what: str, low: float, high: float, *, high_open: bool = True,
                 low_open: bool = False) -> float:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    if ok:
        ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{what} must be a number in {lo}{low}, {high}{hi}, got {x!r}")
    return float(x)


class RecurrentModel(SequenceModel):
    """An autoregressive neural sequence model: p(x_t | x_<t) from a recurrent network.

    Generative process (``e_0`` a learned start input)::

        for t in 1..T:
            h_t = cell(h_{t-1}, encode(x_{t-1}) or e_0)     # transformer: attends to x_<t
            x_t ~ emission(head(h_t))

    Emissions: ``"categorical"`` (symbols ``0..V-1`` read through an embedding),
    ``"gaussian"`` (reals, univariate ``[T]`` or multivariate ``[T, D]`` with a *diagonal*
    covariance given the history) and ``"mixture"`` (K diagonal Gaussians). Continuous data
    is standardised with the training data's per-dimension mean and standard deviation; the
    densities include the Jacobian ``-sum_d log std_d`` per step, so they are densities of the
    data as given.

    Numerics: training runs in float32; ``log_prob``, ``log_prob_steps`` and ``sample`` run a
    float64 copy of the trained network, so discrete probabilities sum to 1 up to float64
    rounding (~1e-15 per step). Padding never reaches a real step (the cores are causal), so
    ragged batches are scored exactly without packing.

    ``cell="transformer"`` is a pre-norm causal ``nn.TransformerEncoder`` with learned
    positional embeddings: it accepts sequences of at most ``max_length`` steps (by default
    the longest sequence given to ``fit``) and refuses longer ones with ``ValueError``; its
    sampling re-reads the whole history at each step (O(T^2) per sample, no cache).

    Args:
        cell: ``"rnn"`` (tanh), ``"lstm"``, ``"gru"`` or ``"transformer"``.
        hidden_size: H, the width of the core.
        num_layers: stacked layers of the core.
        dropout: dropout between stacked layers and before the emission head (training only).
        emission: ``"categorical"``, ``"gaussian"`` or ``"mixture"``.
        num_components: K, mixture components (``emission="mixture"``).
        num_symbols: V (categorical); inferred from the data when None.
        embedding_dim: E, the input embedding size; symbols default to H, reals default to
            the D standardised values fed directly (a linear map to H for the transformer).
        device: where fitting and evaluation run (``"cuda"``, ``"cpu"``...); None picks CUDA
            when available. Not saved with the model: a loaded model uses its own default.
        num_heads: attention heads (transformer; must divide ``hidden_size``).
        max_length: the transformer's longest sequence (None: the longest seen in ``fit``).

    ``fit(data, validation_data=None, max_epochs=100, batch_size=32, learning_rate=3e-3,
    seed=None, progress=None, patience=10, clip_norm=1.0, validation_fraction=0.1,
    chunk_length=None)``: Adam on the mean NLL per step with gradient-norm clipping; early
    stopping on the validation NLL restores the best epoch's weights. Without
    ``validation_data`` a random ``validation_fraction`` of the sequences (at least one) is
    held out; a single sequence is split in time (its last ``validation_fraction`` of steps,
    scored from the start input, validates). ``validation_fraction=0`` trains ``max_epochs``
    epochs and keeps the last weights. ``chunk_length`` cuts long sequences into pieces of at
    most that many steps for training (each piece restarts from the start input); use it
    for one long sequence. A non-finite loss stops training with a ``RuntimeWarning`` and
    restores the last good weights. Deterministic for a given ``seed`` on the CPU.

    Attributes:
        history_: ``{"train": [...], "valid": [...]}`` nats per step per epoch.
        best_epoch_: the epoch whose weights were kept.
    """

    data_kind = "discrete"

    def __init__(
        self,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        emission: str = "categorical",
        num_components: int = 3,
        num_symbols: int | None = None,
        embedding_dim: int | None = None,
        device: str | torch.device | None = None,
        num_heads: int = 4,
        max_length: int | None = None,
    ):
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {_CELLS}, got {cell!r}")
        if emission not in _EMISSIONS:
            raise ValueError(f"emission must be one of {_EMISSIONS}, got {emission!r}")
        self.cell = cell
        self.hidden_size = _check_int(hidden_size, "hidden_size")
        self.num_layers = _check_int(num_layers, "num_layers")
        self.dropout = _check_float(dropout, "dropout", 0.0, 1.0)
        self.emission = emission
        self.num_components = _check_int(num_components, "num_components")
        self.embedding_dim = (
            None if embedding_dim is None else _check_int(embedding_dim, "embedding_dim")
        )
        self.num_heads = _check_int(num_heads, "num_heads")
        if cell == "transformer" and hidden_size % num_heads:
            raise ValueError(
                f"hidden_size={hidden_size} must be a multiple of num_heads={num_heads}"
            )
        self.max_length = None if max_length is None else _check_int(max_length, "max_length")
        if emission == "categorical":
            self.data_kind = "discrete"
            self._num_symbols_arg = (
                None if num_symbols is None else _check_int(num_symbols, "num_symbols")
            )
        else:
            if num_symbols is not None:
                raise ValueError(
                    f"num_symbols is for emission='categorical'; emission={emission!r} models "
                    "real values"
                )
            self.data_kind = "continuous"
            self._num_symbols_arg = None
        self.num_symbols = self._num_symbols_arg
        self._obs_dim = "any"
        try:
            self.device = torch.device(
                device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
            )
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device={device!r} is not a torch device: {err}") from None
        self._device_arg = None if device is None else str(device)
        self._network: SequenceNetwork | None = None
        self._network64: SequenceNetwork | None = None
        self._mean: torch.Tensor | None = None  # [D] float64 (continuous)
        self._std: torch.Tensor | None = None  # [D] float64 (continuous)
        self._fitted_max_length: int | None = None
        self.history_: dict[str, list[float]] = {"train": [], "valid": []}
        self.best_epoch_: int | None = None

    # ---------------------------------------------------------------- structure
    @property
    def _dim(self) -> int:
        """D for the network (1 for univariate data)."""
        return 1 if self._obs_dim in (None, "any") else int(self._obs_dim)

    def _make_emission(self) -> Emission:
        if self.emission == "categorical":
            return CategoricalEmission(self.num_symbols)
        if self.emission == "gaussian":
            return GaussianEmission(self._dim)
        return MixtureEmission(self._dim, self.num_components)

    def _build_network(self) -> SequenceNetwork:
        return SequenceNetwork(
            cell=self.cell,
            num_symbols=self.num_symbols if self.data_kind == "discrete" else None,
            obs_dim=self._dim,
            embedding_dim=self.embedding_dim,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
            num_outputs=self._make_emission().num_outputs,
            num_heads=self.num_heads,
            max_length=self._fitted_max_length or 0,
        )

    def _eval_network(self) -> SequenceNetwork:
        """A float64 copy of the trained network, in evaluation mode (cached)."""
        if self._network64 is None:
            net = copy.deepcopy(self._network).to(device=self.device, dtype=torch.float64)
            net.requires_grad_(False)
            self._network64 = net.eval()
        return self._network64

    @property
    def _log_std_sum(self) -> float:
        """``sum_d log std_d``, the per-step log-Jacobian of standardisation (0 for symbols)."""
        return 0.0 if self._std is None else float(torch.log(self._std).sum())

    def _standardise(self, values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Network input: symbols unchanged, reals ``[N, T(, D)]`` to standardised ``[N, T, D]``."""
        if self.data_kind == "discrete":
            return values
        x = values if values.ndim == 3 else values.unsqueeze(-1)
        return ((x.to(torch.float64) - self._mean) / self._std).to(dtype)

    def _check_length(self, t: int) -> None:
        if self.cell == "transformer" and t > self._fitted_max_length:
            raise ValueError(
                f"a sequence has {t} steps but this transformer accepts at most max_length="
                f"{self._fitted_max_length}; build RecurrentModel(max_length=...) larger"
            )

    # ---------------------------------------------------------------- fitting
    def _fit(
        self,
        seqs: Sequences,
        *,
        validation_data: Any = None,
        max_epochs: int = 100,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        seed: int | None = None,
        progress: bool | None = None,
        patience: int | None = 10,
        clip_norm: float | None = 1.0,
        validation_fraction: float = 0.1,
        chunk_length: int | None = None,
    ) -> None:
        """Fit by Adam with early stopping; see :meth:`fit`."""
        max_epochs = _check_int(max_epochs, "max_epochs")
        batch_size = _check_int(batch_size, "batch_size")
        learning_rate = _check_float(learning_rate, "learning_rate", 0.0, math.inf,
                                     low_open=True)
        if patience is not None:
            patience = _check_int(patience, "patience")
        if clip_norm is not None:
            clip_norm = _check_float(clip_norm, "clip_norm", 0.0, math.inf, low_open=True)
        validation_fraction = _check_float(validation_fraction, "validation_fraction", 0.0, 1.0)
        if chunk_length is not None:
            chunk_length = _check_int(chunk_length, "chunk_length")

        valid = None
        if validation_data is not None:
            valid, _ = as_sequences(validation_data, self.data_kind)
            check_sequences(valid, model=self.name)
        self._set_data_shape(seqs, valid)
        if valid is None:
            seqs, valid = _hold_out(seqs, validation_fraction)
        longest = max(seqs.max_length, 0 if valid is None else valid.max_length)
        self._fitted_max_length = self.max_length or longest
        if chunk_length is not None:
            seqs = _chunk(seqs, chunk_length)
            valid = None if valid is None else _chunk(valid, chunk_length)
        self._check_length(longest if chunk_length is None else min(longest, chunk_length))

        if self.data_kind == "continuous":
            x = seqs.values3d()[seqs.mask]  # [steps, D]
            self._mean = x.mean(0)
            std = x.std(0, correction=0)
            self._std = torch.where(std > 0, std, torch.ones_like(std))

        network = self._build_network().to(self.device)
        emission = self._make_emission()
        log_std_sum = self._log_std_sum

        def loss_fn(net: SequenceNetwork, values: torch.Tensor, lengths: torch.Tensor):
            params, _ = net(values)
            logp = emission.log_prob(params, values)
            mask = torch.arange(values.shape[1], device=values.device) < lengths[:, None]
            nll = -torch.where(mask, logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
            return nll.sum() + lengths.sum() * log_std_sum

        def to_device(s: Sequences) -> PaddedData:
            return PaddedData.build(self._standardise(s.values, torch.float32), s.lengths,
                                    self.device)

        sampler_seed = int(torch.randint(0, 2**31 - 1, ())) if seed is None else int(seed)
        result = train_network(
            network,
            loss_fn,
            to_device(seqs),
            None if valid is None else to_device(valid),
            sampler=ShuffleSampler(len(seqs), sampler_seed),
            max_epochs=max_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            patience=patience,
            clip_norm=clip_norm,
            progress=progress,
            desc=f"{self.name}({self.cell})",
        )
        self._network = network.eval()
        self._network64 = None
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch

    def _set_data_shape(self, seqs: Sequences, valid: Sequences | None) -> None:
        """Fix V (categorical) or D (continuous) from the fit data; check validation data."""
        if self.data_kind == "discrete":
            if self._num_symbols_arg is not None:
                v = self._num_symbols_arg
            else:
                v = int(seqs.values[seqs.mask].max()) + 1
                if valid is not None:
                    v = max(v, int(valid.values[valid.mask].max()) + 1)
            check_sequences(seqs, model=self.name, num_symbols=v)
            if valid is not None:
                check_sequences(valid, model=self.name, num_symbols=v)
            self.num_symbols = v
        else:
            if valid is not None and valid.dim != seqs.dim:
                raise ValueError(
                    f"validation_data has D={valid.dim} but the training data has D={seqs.dim}"
                )
            self._obs_dim = seqs.dim

    # ---------------------------------------------------------------- evaluation
    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        self._check_length(seqs.max_length)
        net = self._eval_network()
        emission = self._make_emission()
        n, t_max = seqs.values.shape[:2]
        out = torch.zeros(n, t_max, dtype=torch.float64)
        recurrent = self.cell != "transformer"
        window = min(t_max, _EVAL_WINDOW) if recurrent else t_max
        rows = max(1, _EVAL_TOKENS // window)
        for r0 in range(0, n, rows):
            lengths = seqs.lengths[r0: r0 + rows]
            t_rows = int(lengths.max())
            x = self._standardise(seqs.values[r0: r0 + rows, :t_rows], torch.float64)
            x = x.to(self.device)
            state, previous = None, None
            for t0 in range(0, t_rows, window):
                xw = x[:, t0: t0 + window]
                params, state = net(xw, state, previous)
                out[r0: r0 + rows, t0: t0 + xw.shape[1]] = emission.log_prob(params, xw).cpu()
                previous = xw[:, -1]
        out -= self._log_std_sum
        return torch.where(seqs.mask, out, torch.zeros((), dtype=out.dtype))

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                temperature: float = 1.0) -> torch.Tensor:
        """Ancestral sampling, batched across sequences.

        ``temperature`` divides the categorical logits and the mixture logits, and multiplies
        the Gaussian standard deviations (in standardised units); 1 samples the model itself.
        """
        temperature = _check_float(temperature, "temperature", 0.0, math.inf, low_open=True)
        self._check_length(length)
        net = self._eval_network()
        emission = self._make_emission()
        n = num_sequences
        start = net.start_inputs(n)
        if self.data_kind == "discrete":
            out = torch.empty(n, length, dtype=torch.int64, device=self.device)
        else:
            out = torch.empty(n, length, self._dim, dtype=torch.float64, device=self.device)
        done = 0
        inputs = start
        if prefix is not None:
            done = prefix.shape[0]
            pre = self._standardise(prefix.unsqueeze(0), torch.float64).to(self.device)
            out[:, :done] = pre[0]
            inputs = torch.cat([start, net.embed(pre).expand(n, -1, -1)], dim=1)
        params, state = net.run(inputs)
        for t in range(done, length):
            x = emission.sample(params[:, -1], temperature)
            out[:, t] = x
            if t + 1 == length:
                break
            e = net.embed(x.unsqueeze(1))
            if self.cell == "transformer":
                inputs = torch.cat([inputs, e], dim=1)
                params, _ = net.run(inputs)
            else:
                params, state = net.run(e, state)
        out = out.cpu()
        if self.data_kind == "discrete":
            return out
        values = out * self._std + self._mean
        if prefix is not None:  # the prefix exactly as given, not a standardised round trip
            values[:, :done] = prefix.reshape(done, -1).to(torch.float64)
        return values.squeeze(-1) if self._obs_dim is None else values

    # ---------------------------------------------------------------- protocol
    @property
    def num_params(self) -> int:
        """The number of trainable parameters of the network."""
        self._check_fitted()
        return sum(p.numel() for p in self._network.parameters() if p.requires_grad)

    def _is_fitted(self) -> bool:
        return self._network is not None

    def get_config(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "emission": self.emission,
            "num_components": self.num_components,
            "num_symbols": self._num_symbols_arg,
            "embedding_dim": self.embedding_dim,
            "num_heads": self.num_heads,
            "max_length": self.max_length,
        }

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"network.{k}": v for k, v in self._network.state_dict().items()}
        if self._mean is not None:
            tensors["standardise.mean"] = self._mean
            tensors["standardise.std"] = self._std
        return tensors

    def _meta(self) -> dict[str, Any]:
        return {
            "num_symbols": self.num_symbols,
            "obs_dim": self._obs_dim,
            "max_length": self._fitted_max_length,
            "history": self.history_,
            "best_epoch": self.best_epoch_,
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.num_symbols = meta["num_symbols"]
        self._obs_dim = meta["obs_dim"]
        self._fitted_max_length = meta["max_length"]
        self.history_ = meta["history"]
        self.best_epoch_ = meta["best_epoch"]
        if self.data_kind == "continuous":
            self._mean = tensors.pop("standardise.mean").to(torch.float64)
            self._std = tensors.pop("standardise.std").to(torch.float64)
        network = self._build_network()
        prefix = "network."
        network.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                 if k.startswith(prefix)})
        self._network = network.to(self.device).eval()
        self._network64 = None

    # ---------------------------------------------------------------- forecasts
    def _step_params(self, seqs: Sequences) -> torch.Tensor:
        """``[N, T_max, P]`` float64 emission parameters of every step (as in scoring)."""
        self._check_length(seqs.max_length)
        net = self._eval_network()
        n, t_max = seqs.values.shape[:2]
        out = torch.zeros(n, t_max, self._make_emission().num_outputs, dtype=torch.float64)
        recurrent = self.cell != "transformer"
        window = min(t_max, _EVAL_WINDOW) if recurrent else t_max
        rows = max(1, _EVAL_TOKENS // window)
        for r0 in range(0, n, rows):
            t_rows = int(seqs.lengths[r0: r0 + rows].max())
            x = self._standardise(seqs.values[r0: r0 + rows, :t_rows], torch.float64)
            x = x.to(self.device)
            state, previous = None, None
            for t0 in range(0, t_rows, window):
                xw = x[:, t0: t0 + window]
                params, state = net(xw, state, previous)
                out[r0: r0 + rows, t0: t0 + xw.shape[1]] = params.cpu()
                previous = xw[:, -1]
        return out

    def _step_predictive(self, seqs: Sequences) -> torch.distributions.Distribution:
        """``[N, T_max]``: the network's output distribution of every step, in data units.

        Categorical: the softmax; Gaussian: Normal (``Independent`` Normals for D > 1);
        mixture: ``MixtureSameFamily`` of those. Standardisation is undone (means
        ``m + s * mean``, scales ``s * scale``), so densities include the Jacobian.
        """
        dist = torch.distributions
        params = self._step_params(seqs)
        emission = self._make_emission()
        if self.data_kind == "discrete":
            return dist.Categorical(logits=params)
        univariate = self._obs_dim is None
        if self.emission == "gaussian":
            mean, scale = emission._split(params)
            mean, scale = self._mean + self._std * mean, self._std * scale
            if univariate:
                return dist.Normal(mean[..., 0], scale[..., 0])
            return dist.Independent(dist.Normal(mean, scale), 1)
        logits, means, scales = emission._split(params)  # [N, T, K], [N, T, K, D]
        means, scales = self._mean + self._std * means, self._std * scales
        mix = dist.Categorical(logits=logits)
        if univariate:
            return dist.MixtureSameFamily(mix, dist.Normal(means[..., 0], scales[..., 0]))
        return dist.MixtureSameFamily(mix, dist.Independent(dist.Normal(means, scales), 1))


def _hold_out(seqs: Sequences, fraction: float) -> tuple[Sequences, Sequences | None]:
    """Split off validation data: a random ``fraction`` of the sequences (at least one), or,
    for a single sequence, its last ``fraction`` of steps (at least one step)."""
    n = len(seqs)
    if fraction == 0:
        return seqs, None
    if n >= 2:
        n_valid = min(n - 1, max(1, round(fraction * n)))
        order = torch.randperm(n)
        return seqs[order[n_valid:].sort().values], seqs[order[:n_valid].sort().values]
    t = int(seqs.lengths[0])
    if t < 2:
        return seqs, None
    t_valid = min(t - 1, max(1, round(fraction * t)))
    whole = seqs.values[0]
    train = Sequences(whole[None, : t - t_valid].clone(), torch.tensor([t - t_valid]))
    valid = Sequences(whole[None, t - t_valid: t].clone(), torch.tensor([t_valid]))
    return train, valid


def _chunk(seqs: Sequences, chunk_length: int) -> Sequences:
    """Cut every sequence into consecutive pieces of at most ``chunk_length`` steps."""
    if seqs.max_length <= chunk_length:
        return seqs
    pieces = [p for s in seqs for p in torch.split(s, chunk_length)]
    lengths = torch.tensor([p.shape[0] for p in pieces], dtype=torch.int64)
    values = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
    return Sequences(values, lengths)
