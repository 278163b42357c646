"""RecurrentModel: autoregressive neural sequence models with exact likelihoods.

The model factorises ``p(x_1..x_T) = prod_t p(x_t | x_<t)``; a network (RNN, LSTM, GRU or a
causal transformer) reads ``x_1..x_{t-1}`` and emits the parameters of each conditional.
Every conditional is a normalised distribution, so ``log_prob`` is exact.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import Any

import torch

from probseq import distributed
from probseq.base import SequenceModel
from probseq.data import Sequences, as_exog, as_sequences, check_sequences, max_symbol
from probseq.recurrent.emissions import (
    CategoricalEmission,
    Emission,
    GaussianEmission,
    MixtureEmission,
)
from probseq.recurrent.networks import RECURRENT_CELLS, SequenceNetwork, chrono_init_
from probseq.recurrent.training import (
    LR_SCHEDULES,
    PaddedData,
    ShuffleSampler,
    TrainingResult,
    train_network,
)

__all__ = ["RecurrentModel"]

_CELLS = (*RECURRENT_CELLS, "transformer")
_EMISSIONS = ("categorical", "gaussian", "mixture")
_GATE_INITS = (None, "chrono")
#: evaluation works on chunks of at most this many (sequence, step) cells at a time.
_EVAL_TOKENS = 1 << 16
#: RNN evaluation walks long sequences in windows of this many steps, carrying the state.
_EVAL_WINDOW = 4096
#: a single sequence's held-out tail is validated given at most this many steps before it.
_VALID_CONTEXT = 4096


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
        gate_init: None (torch's initialisation, with the LSTM's forget-gate bias at 1) or
            ``"chrono"`` (LSTM, GRU): chrono initialisation of the gate biases (Tallec &
            Ollivier, 2018; see :func:`~probseq.recurrent.networks.chrono_init_`) with T_max
            the longest training sequence, so that units start with memory time constants
            spread over 1..T_max steps; it helps long-range dependencies.

    :meth:`fit` trains by Adam over training windows (truncated back-propagation through
    time) with early stopping counted in optimiser steps; its docstring lists every option.

    Attributes:
        history_: ``{"train": [...], "valid": [...], "steps": [...]}``: nats per step per
            epoch and the optimiser steps taken by the end of each epoch.
        best_epoch_: the epoch whose weights were kept.
        fit_result_: ``{"converged", "message", "iterations" (optimiser steps), "epochs",
            "stopped", "best_epoch", "window_length", "monitored"}`` from the last fit.
    """

    data_kind = "discrete"
    supports_exog = True

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
        gate_init: str | None = None,
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
        if gate_init not in _GATE_INITS:
            raise ValueError(f"gate_init must be one of {_GATE_INITS}, got {gate_init!r}")
        if gate_init == "chrono" and cell not in ("lstm", "gru"):
            raise ValueError(f"gate_init='chrono' needs cell='lstm' or 'gru', got {cell!r}")
        self.gate_init = gate_init
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
        self._num_exog = 0  # E, covariates seen by fit
        self._exog_mean: torch.Tensor | None = None  # [E] float64
        self._exog_std: torch.Tensor | None = None  # [E] float64
        self.history_: dict[str, list[float]] = {"train": [], "valid": [], "steps": []}
        self.best_epoch_: int | None = None
        self.fit_result_: dict[str, Any] | None = None

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
        net = self._plain_network()
        if self.gate_init == "chrono":
            chrono_init_(net.core, max(2, self._fitted_max_length or 2))
        return net

    def _plain_network(self) -> SequenceNetwork:
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
            num_exog=self._num_exog,
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
    def fit(
        self,
        data: Any,
        *,
        exog: Any = None,
        validation_data: Any = None,
        validation_exog: Any = None,
        max_epochs: int | None = None,
        max_steps: int | None = 5000,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        window_length: int | None = None,
        patience: int | None = 200,
        min_steps: int = 300,
        lr_schedule: str = "constant",
        weight_decay: float = 0.0,
        clip_norm: float | None = 1.0,
        validation_fraction: float = 0.1,
        chunk_length: int | None = None,
        seed: int | None = None,
        progress: bool | None = None,
        **unknown: Any,
    ) -> RecurrentModel:
        """Fit the network by Adam on the mean negative log-likelihood per step.

        Training data is cut into *training windows*: each optimiser step reads a batch of
        ``batch_size`` streams for ``window_length`` steps, and the network state is carried
        (detached) into the next window of the same streams (truncated back-propagation
        through time). When there are fewer sequences than ``batch_size`` (one long series, a
        few sequences), long sequences are also cut into contiguous streams (each at least 4
        windows long) so that a batch holds several of them; a stream that starts inside a
        sequence reads the observation before it as its first input. So one long series gives
        many optimiser steps per epoch. The transformer is trained on whole sequences.

        Early stopping counts optimiser steps: after every epoch the monitored loss (the
        validation NLL per step, or without validation the epoch's training NLL) is
        measured; training ends when it has not improved for ``patience`` steps, but never
        before ``min_steps`` steps, and at the latest after ``max_steps`` steps or
        ``max_epochs`` epochs. With validation the best weights are restored. ``fit_result_``
        says whether training converged (the monitored loss had stopped improving for
        ``patience`` steps when it ended); a ``RuntimeWarning`` says when it did not. A
        non-finite loss stops training with a ``RuntimeWarning`` and restores the last good
        weights. Deterministic for a given ``seed`` on the CPU.

        Args:
            data: the training sequences (symbols for ``emission="categorical"``, reals
                otherwise).
            exog: covariates ``[N, T, E]`` (``[T, E]`` or a DataFrame for one sequence)
                aligned with ``data`` (default None). Standardised with the training steps'
                mean and standard deviation and joined to the network's input at every step
                (as DeepAR does): step t reads ``x_(t-1)`` and the covariates of step t. A
                model fitted with covariates needs them in ``log_prob``, ``log_prob_steps``
                and ``sample``.
            validation_data: sequences whose NLL decides early stopping and the weights
                kept. Default None: a random ``validation_fraction`` of the sequences (at
                least one) is held out; a single sequence is split in time, its last
                ``validation_fraction`` of steps scored given everything before them.
            validation_exog: the covariates of ``validation_data`` (needed exactly when
                ``exog`` is given with ``validation_data``; default None).
            max_epochs: the most passes over the training data (default None: no limit).
            max_steps: the most optimiser steps (default 5000; None: no limit, then
                ``max_epochs`` is required).
            batch_size: streams per optimiser step (default 32).
            learning_rate: Adam's step size (default 3e-3).
            window_length: W, steps per optimiser step (default None: whole sequences up
                to 256 steps when there are at least ``batch_size`` sequences, otherwise
                ``ceil(T_max / 8)`` clamped to 16..256, so that an epoch of a few sequences is
                several steps). A sequence longer than W is walked in windows with its state
                carried.
            patience: optimiser steps without improvement of the monitored loss before
                training stops (default 200; None: never stop early).
            min_steps: early stopping never ends training before this many optimiser steps
                (default 300).
            lr_schedule: the learning-rate schedule (default ``"constant"``):
                ``"constant"``, ``"cosine"`` (decays to 0 at ``max_steps``) or ``"plateau"``
                (halved after every epoch that does not improve the monitored loss, down to
                ``learning_rate / 64``).
            weight_decay: decoupled weight decay (AdamW) (default 0: plain Adam).
            clip_norm: the largest L2 norm of the gradient (default 1.0; None: no clipping).
            validation_fraction: the share held out when ``validation_data`` is None
                (default 0.1; 0 trains on everything, monitors the training loss and keeps
                the last weights).
            chunk_length: cut every sequence into independent pieces of at most this many
                steps, each restarting from the start input (default None). Mainly for the
                transformer on one long series; recurrent cells carry their state across
                windows instead.
            seed: makes the fit reproducible on the CPU (default None).
            progress: show a progress bar (default None: on a terminal or in a notebook).
            **unknown: refused with ``ValueError``.

        Returns:
            self, with ``history_``, ``best_epoch_`` and ``fit_result_`` set.
        """
        return super().fit(
            data, exog=exog, validation_data=validation_data, validation_exog=validation_exog,
            max_epochs=max_epochs, max_steps=max_steps,
            batch_size=batch_size, learning_rate=learning_rate, window_length=window_length,
            patience=patience, min_steps=min_steps, lr_schedule=lr_schedule,
            weight_decay=weight_decay, clip_norm=clip_norm,
            validation_fraction=validation_fraction, chunk_length=chunk_length, seed=seed,
            progress=progress, **unknown,
        )

    def _fit(
        self,
        seqs: Sequences,
        *,
        exog: torch.Tensor | None = None,
        validation_data: Any = None,
        validation_exog: Any = None,
        max_epochs: int | None = None,
        max_steps: int | None = 5000,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        window_length: int | None = None,
        patience: int | None = 200,
        min_steps: int = 300,
        lr_schedule: str = "constant",
        weight_decay: float = 0.0,
        clip_norm: float | None = 1.0,
        validation_fraction: float = 0.1,
        chunk_length: int | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> None:
        """Fit by Adam over training windows with early stopping; see :meth:`fit`."""
        if max_epochs is not None:
            max_epochs = _check_int(max_epochs, "max_epochs")
        if max_steps is not None:
            max_steps = _check_int(max_steps, "max_steps")
        if max_epochs is None and max_steps is None:
            raise ValueError("max_epochs and max_steps are both None: give at least one")
        batch_size = _check_int(batch_size, "batch_size")
        learning_rate = _check_float(learning_rate, "learning_rate", 0.0, math.inf,
                                     low_open=True)
        if window_length is not None:
            window_length = _check_int(window_length, "window_length")
        if patience is not None:
            patience = _check_int(patience, "patience")
        min_steps = _check_int(min_steps, "min_steps", minimum=0)
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if lr_schedule == "cosine" and max_steps is None:
            raise ValueError("lr_schedule='cosine' needs max_steps")
        weight_decay = _check_float(weight_decay, "weight_decay", 0.0, math.inf)
        if clip_norm is not None:
            clip_norm = _check_float(clip_norm, "clip_norm", 0.0, math.inf, low_open=True)
        validation_fraction = _check_float(validation_fraction, "validation_fraction", 0.0, 1.0)
        if chunk_length is not None:
            chunk_length = _check_int(chunk_length, "chunk_length")

        valid_seqs = valid_exog = None
        if validation_data is not None:
            valid_seqs, _ = as_sequences(validation_data, self.data_kind)
            check_sequences(valid_seqs, model=self.name)
            if (validation_exog is None) != (exog is None):
                raise ValueError("give validation_exog with validation_data exactly when the "
                                 "training data has covariates (exog)")
            if validation_exog is not None:
                valid_exog = as_exog(validation_exog, valid_seqs, data=validation_data)
                if valid_exog.shape[-1] != exog.shape[-1]:
                    raise ValueError(f"validation_exog has E={valid_exog.shape[-1]} covariates, "
                                     f"exog has E={exog.shape[-1]}")
        elif validation_exog is not None:
            raise ValueError("validation_exog was given without validation_data")
        self._set_data_shape(seqs, valid_seqs)
        recurrent = self.cell != "transformer"
        split = None
        if valid_seqs is None:
            seqs, exog, split = _hold_out(seqs, exog, validation_fraction)
        longest = max(seqs.max_length, 0 if valid_seqs is None else valid_seqs.max_length)
        if split is not None:
            longest = max(longest, split[0].max_length)
        self._fitted_max_length = self.max_length or longest
        if chunk_length is not None:
            seqs, exog = _chunk(seqs, exog, chunk_length)
            if valid_seqs is not None:
                valid_seqs, valid_exog = _chunk(valid_seqs, valid_exog, chunk_length)
        self._check_length(longest if chunk_length is None else min(longest, chunk_length))

        if self.data_kind == "continuous":
            x = seqs.values3d()[seqs.mask]  # [steps, D]
            self._mean = x.mean(0)
            std = x.std(0, correction=0)
            self._std = torch.where(std > 0, std, torch.ones_like(std))
        self._num_exog = 0 if exog is None else int(exog.shape[-1])
        self._exog_mean = self._exog_std = None
        if exog is not None:
            z = exog[seqs.mask]  # [steps, E]
            self._exog_mean = z.mean(0)
            z_std = z.std(0, correction=0)
            self._exog_std = torch.where(z_std > 0, z_std, torch.ones_like(z_std))

        def to_device(s: Sequences, ex: torch.Tensor | None, previous: torch.Tensor | None = None,
                      **kw: Any) -> PaddedData:
            if previous is not None:  # [N(, D)] raw observations, standardised like values
                previous = self._standardise(previous.unsqueeze(1), torch.float32)[:, 0]
            return PaddedData.build(self._standardise(s.values, torch.float32), s.lengths,
                                    self.device, previous=previous,
                                    exog=self._standardise_exog(ex, torch.float32), **kw)

        world = distributed.world_size()
        if recurrent:
            window = window_length or _auto_window(seqs, batch_size * world)
            train = _streams(seqs, exog, window, batch_size * world, to_device)
        else:
            window = None
            train = to_device(seqs, exog)
        if split is not None:
            valid = _tail_validation(*split, chunk_length, recurrent, to_device)
        elif valid_seqs is not None:
            valid = to_device(valid_seqs, valid_exog)
        else:
            valid = None

        network = self._build_network().to(self.device)
        step_fn = self._step_fn()
        sampler_seed = int(torch.randint(0, 2**31 - 1, ())) if seed is None else int(seed)
        result = train_network(
            network,
            step_fn,
            train,
            valid,
            sampler=ShuffleSampler(len(train), sampler_seed),
            max_epochs=max_epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            window_length=window,
            patience=patience,
            min_steps=min_steps,
            lr_schedule=lr_schedule,
            weight_decay=weight_decay,
            clip_norm=clip_norm,
            progress=progress,
            desc=f"{self.name}({self.cell})",
        )
        self._network = network.eval()
        self._network64 = None
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.fit_result_ = _fit_result(result, window, patience, valid is not None)
        if not result.converged and result.stopped != "diverged" and patience is not None:
            warnings.warn(
                f"{self.name}(cell={self.cell!r}) did not converge: {self.fit_result_['message']}",
                RuntimeWarning,
                stacklevel=4,  # _fit, SequenceModel.fit, RecurrentModel.fit, caller
            )

    def _step_fn(self):
        """The summed NLL of one training window (see ``probseq.recurrent.training.StepFn``)."""
        emission = self._make_emission()
        log_std_sum = self._log_std_sum

        def step_fn(net: SequenceNetwork, x: torch.Tensor, mask: torch.Tensor, state: Any,
                    previous: torch.Tensor | None, has_previous: torch.Tensor | None,
                    exog: torch.Tensor | None = None):
            params, state = net.run(net.inputs(x, previous, has_previous, exog), state)
            logp = emission.log_prob(params, x)
            zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
            nll = -torch.where(mask, logp, zero).sum()
            return nll + mask.sum() * log_std_sum, state

        return step_fn

    def _standardise_exog(self, exog: torch.Tensor | None,
                          dtype: torch.dtype) -> torch.Tensor | None:
        """Covariates ``[N, T, E]`` standardised with the training steps' mean and std."""
        if exog is None:
            return None
        return ((exog.to(torch.float64) - self._exog_mean) / self._exog_std).to(dtype)

    def _check_exog(self, exog: torch.Tensor | None) -> None:
        """Refuse covariates that do not match the fit's."""
        if exog is None and self._num_exog:
            raise ValueError(f"this {self.name} was fitted with {self._num_exog} covariate(s): "
                             "pass exog= for every step")
        if exog is not None and not self._num_exog:
            raise ValueError(f"this {self.name} was fitted without covariates; exog= cannot be "
                             "used (refit with fit(..., exog=...))")
        if exog is not None and exog.shape[-1] != self._num_exog:
            raise ValueError(f"exog has E={exog.shape[-1]} covariates, this {self.name} was "
                             f"fitted with E={self._num_exog}")

    def _set_data_shape(self, seqs: Sequences, valid: Sequences | None) -> None:
        """Fix V (categorical) or D (continuous) from the fit data; check validation data."""
        if self.data_kind == "discrete":
            if self._num_symbols_arg is not None:
                v = self._num_symbols_arg
            else:
                v = max_symbol(seqs) + 1
                if valid is not None:
                    v = max(v, max_symbol(valid) + 1)
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
    def _log_prob_steps(self, seqs: Sequences, exog: torch.Tensor | None = None
                        ) -> torch.Tensor:
        self._check_length(seqs.max_length)
        self._check_exog(exog)
        z = self._standardise_exog(exog, torch.float64)
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
            zr = None if z is None else z[r0: r0 + rows, :t_rows].to(self.device)
            state, previous = None, None
            for t0 in range(0, t_rows, window):
                xw = x[:, t0: t0 + window]
                zw = None if zr is None else zr[:, t0: t0 + window]
                params, state = net(xw, state, previous, zw)
                out[r0: r0 + rows, t0: t0 + xw.shape[1]] = emission.log_prob(params, xw).cpu()
                previous = xw[:, -1]
        out -= self._log_std_sum
        return torch.where(seqs.mask, out, torch.zeros((), dtype=out.dtype))

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                temperature: float = 1.0, exog: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling, batched across sequences.

        ``temperature`` divides the categorical logits and the mixture logits, and multiplies
        the Gaussian standard deviations (in standardised units); 1 samples the model itself.
        ``exog`` ``[N, length, E]``: the covariates of every step (models fitted with them).
        """
        temperature = _check_float(temperature, "temperature", 0.0, math.inf, low_open=True)
        self._check_length(length)
        self._check_exog(exog)
        z = self._standardise_exog(exog, torch.float64)
        z = None if z is None else z.to(self.device)

        def with_exog(inputs: torch.Tensor, t0: int) -> torch.Tensor:
            """Join the covariates of steps t0.. to inputs for those steps."""
            if z is None:
                return inputs
            return torch.cat([inputs, z[:, t0: t0 + inputs.shape[1]]], dim=-1)

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
            inputs = torch.cat([start, net.embed(pre).expand(n, -1, -1)], dim=1)[:, :length]
        inputs = with_exog(inputs, 0)
        params, state = net.run(inputs)
        for t in range(done, length):
            x = emission.sample(params[:, -1], temperature)
            out[:, t] = x
            if t + 1 == length:
                break
            e = with_exog(net.embed(x.unsqueeze(1)), t + 1)
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
    def num_exog(self) -> int:
        """E, the number of covariates the fitted model uses (0 without covariates)."""
        return self._num_exog

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
            "gate_init": self.gate_init,
        }

    def __repr__(self) -> str:
        """The settings that apply to this cell and emission (``get_config`` keeps all)."""
        config = self.get_config()
        if self.emission != "mixture":
            del config["num_components"]
        if self.emission != "categorical":
            del config["num_symbols"]
        if self.cell != "transformer":
            del config["num_heads"], config["max_length"]
        if self.cell not in ("lstm", "gru"):
            del config["gate_init"]
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{self.name}({args})"

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"network.{k}": v for k, v in self._network.state_dict().items()}
        if self._mean is not None:
            tensors["standardise.mean"] = self._mean
            tensors["standardise.std"] = self._std
        if self._exog_mean is not None:
            tensors["exog.mean"] = self._exog_mean
            tensors["exog.std"] = self._exog_std
        return tensors

    def _meta(self) -> dict[str, Any]:
        return {
            "num_symbols": self.num_symbols,
            "obs_dim": self._obs_dim,
            "max_length": self._fitted_max_length,
            "history": self.history_,
            "best_epoch": self.best_epoch_,
            "fit_result": self.fit_result_,
            "num_exog": self._num_exog,
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.num_symbols = meta["num_symbols"]
        self._obs_dim = meta["obs_dim"]
        self._fitted_max_length = meta["max_length"]
        self.history_ = meta["history"]
        self.best_epoch_ = meta["best_epoch"]
        self.fit_result_ = meta.get("fit_result")
        self._num_exog = int(meta.get("num_exog", 0))
        if self._num_exog:
            self._exog_mean = tensors.pop("exog.mean").to(torch.float64)
            self._exog_std = tensors.pop("exog.std").to(torch.float64)
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
    def _step_params(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, T_max, P]`` float64 emission parameters of every step (as in scoring)."""
        self._check_length(seqs.max_length)
        self._check_exog(exog)
        z = self._standardise_exog(exog, torch.float64)
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
            zr = None if z is None else z[r0: r0 + rows, :t_rows].to(self.device)
            state, previous = None, None
            for t0 in range(0, t_rows, window):
                xw = x[:, t0: t0 + window]
                zw = None if zr is None else zr[:, t0: t0 + window]
                params, state = net(xw, state, previous, zw)
                out[r0: r0 + rows, t0: t0 + xw.shape[1]] = params.cpu()
                previous = xw[:, -1]
        return out

    def _step_predictive(self, seqs: Sequences, exog: torch.Tensor | None = None
                         ) -> torch.distributions.Distribution:
        """``[N, T_max]``: the network's output distribution of every step, in data units.

        Categorical: the softmax; Gaussian: Normal (``Independent`` Normals for D > 1);
        mixture: ``MixtureSameFamily`` of those. Standardisation is undone (means
        ``m + s * mean``, scales ``s * scale``), so densities include the Jacobian.
        """
        dist = torch.distributions
        params = self._step_params(seqs, exog)
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


def _hold_out(seqs: Sequences, exog: torch.Tensor | None, fraction: float):
    """Split off validation data.

    Returns ``(train, train_exog, split)``: with two or more sequences a random ``fraction``
    of them (at least one) is held out and ``split = (held_out, held_exog, None)``; a single
    sequence is split in time, ``train`` its first steps and ``split = (whole, exog,
    t_train)``: its last ``fraction`` of steps (at least one) are scored given the first
    ``t_train``. ``split`` is None when nothing is held out.
    """
    n = len(seqs)
    if fraction == 0:
        return seqs, exog, None
    if n >= 2:
        n_valid = min(n - 1, max(1, round(fraction * n)))
        order = torch.randperm(n)
        keep, held = order[n_valid:].sort().values, order[:n_valid].sort().values
        return (seqs[keep], _rows(exog, keep, seqs[keep].max_length),
                (seqs[held], _rows(exog, held, seqs[held].max_length), None))
    t = int(seqs.lengths[0])
    if t < 2:
        return seqs, exog, None
    t_valid = min(t - 1, max(1, round(fraction * t)))
    whole = seqs.values[0]
    train = Sequences(whole[None, : t - t_valid].clone(), torch.tensor([t - t_valid]))
    train_exog = None if exog is None else exog[:, : t - t_valid]
    whole_seq = Sequences(whole[None, :t].clone(), torch.tensor([t]))
    return train, train_exog, (whole_seq, None if exog is None else exog[:, :t], t - t_valid)


def _rows(exog: torch.Tensor | None, index: torch.Tensor, t_max: int) -> torch.Tensor | None:
    return None if exog is None else exog[index, :t_max]


def _tail_validation(held: Sequences, held_exog: torch.Tensor | None, t_train: int | None,
                     chunk_length: int | None, recurrent: bool, to_device) -> PaddedData:
    """Validation data from :func:`_hold_out`'s split.

    Held-out sequences are scored whole. The tail of a single sequence is scored given its
    past: the whole sequence for the transformer, at most ``_VALID_CONTEXT`` steps of context
    (entered with the observation before them) for recurrent cells. With ``chunk_length``
    the tail is scored on its own from the start input, in chunks.
    """
    if t_train is None:
        if chunk_length is not None:
            held, held_exog = _chunk(held, held_exog, chunk_length)
        return to_device(held, held_exog)
    t = int(held.lengths[0])
    if chunk_length is not None:
        tail = Sequences(held.values[:, t_train:t].clone(), torch.tensor([t - t_train]))
        tail_exog = None if held_exog is None else held_exog[:, t_train:t]
        return to_device(*_chunk(tail, tail_exog, chunk_length))
    begin = max(0, t_train - _VALID_CONTEXT) if recurrent else 0
    piece = Sequences(held.values[:, begin:t].clone(), torch.tensor([t - begin]))
    previous = held.values[:, begin - 1] if begin > 0 else held.values[:, 0]
    return to_device(piece, None if held_exog is None else held_exog[:, begin:t],
                     previous=previous, score_from=torch.tensor([t_train - begin]),
                     has_previous=torch.tensor([begin > 0]))


def _auto_window(seqs: Sequences, num_streams: int) -> int:
    """The default window length: see :meth:`RecurrentModel.fit`."""
    t_max = seqs.max_length
    if len(seqs) >= num_streams:
        return max(1, min(256, t_max))
    return min(256, max(16, math.ceil(t_max / 8)))


def _streams(seqs: Sequences, exog: torch.Tensor | None, window: int, num_streams: int,
             to_device) -> PaddedData:
    """Training streams: the sequences, and with fewer than ``num_streams`` sequences the
    long ones cut into contiguous pieces of at least ``4 * window`` steps (about
    ``num_streams`` streams in all); a piece that starts inside a sequence carries the
    observation before it."""
    n = len(seqs)
    if n >= num_streams:
        return to_device(seqs, exog)
    per_seq = math.ceil(num_streams / n)
    pieces, pieces_exog, previous, has_previous = [], [], [], []
    for i, s in enumerate(seqs):
        k = max(1, min(per_seq, s.shape[0] // (4 * window)))
        bounds = torch.linspace(0, s.shape[0], k + 1).round().long().tolist()
        for a, b in itertools.pairwise(bounds):
            pieces.append(s[a:b])
            if exog is not None:
                pieces_exog.append(exog[i, a:b])
            previous.append(s[a - 1] if a > 0 else s[0])
            has_previous.append(a > 0)
    if len(pieces) == n:
        return to_device(seqs, exog)
    lengths = torch.tensor([p.shape[0] for p in pieces], dtype=torch.int64)
    values = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
    ex = None if exog is None else torch.nn.utils.rnn.pad_sequence(pieces_exog, batch_first=True)
    return to_device(Sequences(values, lengths), ex, previous=torch.stack(previous),
                     has_previous=torch.tensor(has_previous))


def _best_monitored_step(result: TrainingResult, validated: bool) -> int:
    """The optimiser step at the end of the epoch with the lowest monitored loss, read from
    the history (``best_step`` is the last step when nothing is validated)."""
    losses = result.history["valid" if validated else "train"]
    steps = result.history["steps"]
    if not losses:
        return int(result.best_step)
    best = min(range(len(losses)), key=lambda i: (math.isnan(losses[i]), losses[i]))
    return int(steps[best])


def _fit_result(result: TrainingResult, window: int | None, patience: int | None,
                validated: bool) -> dict[str, Any]:
    monitored = "validation" if validated else "training"
    best = _best_monitored_step(result, validated)
    if result.stopped == "diverged":
        message = (f"training diverged after {result.num_steps} optimiser steps; kept the "
                   f"weights of epoch {result.best_epoch}")
    elif result.converged:
        message = (f"the {monitored} loss stopped improving: best at optimiser step "
                   f"{best}, no improvement in the {patience} steps after it")
    elif patience is None:
        message = (f"stopped by {result.stopped} after {result.num_steps} optimiser steps with "
                   "patience=None, so convergence was not judged")
    elif best >= result.num_steps:
        # The loss is judged once per epoch: its best at the last judgement is still improving.
        message = (f"stopped by {result.stopped} after {result.num_steps} optimiser steps while "
                   f"the {monitored} loss was still improving (best at the last step, "
                   f"{best}); raise max_steps or max_epochs")
    else:
        message = (f"stopped by {result.stopped} after {result.num_steps} optimiser steps, "
                   f"before the patience of {patience} steps ran out: the {monitored} loss "
                   f"was best at step {best} of {result.num_steps} and the later "
                   "steps did not improve it; raise max_steps or max_epochs to judge "
                   "convergence")
    return {
        "converged": bool(result.converged),
        "message": message,
        "iterations": int(result.num_steps),
        "epochs": len(result.history["train"]),
        "stopped": result.stopped,
        "best_epoch": int(result.best_epoch),
        "window_length": window,
        "monitored": monitored,
    }


def _chunk(seqs: Sequences, exog: torch.Tensor | None,
           chunk_length: int) -> tuple[Sequences, torch.Tensor | None]:
    """Cut every sequence (and its covariates) into consecutive pieces of at most
    ``chunk_length`` steps."""
    if seqs.max_length <= chunk_length:
        return seqs, exog
    pieces = [p for s in seqs for p in torch.split(s, chunk_length)]
    lengths = torch.tensor([p.shape[0] for p in pieces], dtype=torch.int64)
    values = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
    if exog is None:
        return Sequences(values, lengths), None
    ex = [p for i, s in enumerate(seqs) for p in torch.split(exog[i, : s.shape[0]], chunk_length)]
    return Sequences(values, lengths), torch.nn.utils.rnn.pad_sequence(ex, batch_first=True)
