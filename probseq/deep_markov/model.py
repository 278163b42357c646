"""The deep Markov model (Krishnan, Shalit and Sontag, 2017) for real-valued sequences."""

from __future__ import annotations

import copy
import hashlib
import math
import uuid
import warnings
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.util import zero_grads
from pyro.optim import ClippedAdam

from probseq import distributed
from probseq._utils import progress_bar, seeded
from probseq.base import SequenceModel
from probseq.data import Sequences
from probseq.deep_markov.inference import (
    importance_log_weights,
    iwae_steps,
    log_joint_steps,
    sample_guide,
    step_mask,
)
from probseq.deep_markov.networks import DMMNetwork

__all__ = ["DeepMarkovModel"]

# Evaluation works on chunks of n sequences with K * n * T_max * (2 S + 1) <= this (noise,
# paths, log weights) and on time blocks with K * n * block * H <= this: about 128 MB.
_EVAL_BUDGET = 2**24


class DeepMarkovModel(SequenceModel):
    """Deep Markov model: a nonlinear Gaussian state-space model fitted by SVI.

    Generative model, for each sequence (``y`` is the standardised observation, below)::

        z_1 ~ N(mu_0, diag(sigma_0^2))                       mu_0, sigma_0 learned
        z_t ~ N(GatedTransition(z_(t-1)))                    t = 2..T
        y_t ~ N(Emitter(z_t))  (diagonal, learned scale)     t = 1..T

    The guide ``q(z | x)`` is the structured one of Krishnan et al. and Pyro's DMM example:
    a GRU runs backwards over ``y_T..y_1`` and a combiner draws ``z_t`` given ``z_(t-1)`` and
    the GRU state at t, which summarises ``y_t..y_T``.

    Data is standardised internally, per dimension, with the mean and standard deviation of
    the training steps: ``y = (x - m) / s``. Every density this model reports is of x as the
    user gave it: ``log p(x_t | ...) = log p(y_t | ...) - sum_d log s_d`` (the Jacobian is in
    every step, in ``log_prob``, ``log_prob_steps`` and the ELBO in ``history_``).

    The likelihood is intractable, so ``log_prob`` is the importance-weighted bound (IWAE,
    Burda et al. 2016) with the guide as proposal and ``num_particles`` particles:
    ``log (1/K) sum_k p(x, z^k) / q(z^k | x)``. It is a stochastic lower bound: its
    expectation is below ``log p(x)`` and rises towards it as K grows, but one draw can land
    above. To make it a deterministic function of the model and the sequence, the standard
    normal draws of each sequence come from a generator seeded by a hash of that sequence's
    standardised values (rounded to float32, so that rescaled data gets the same draws) and
    ``eval_seed``: repeated calls agree exactly, and a sequence's
    score does not depend on the batch it is in, its position or its padding. Particles are
    nested: the first K of K' > K particles are the same draws.

    Args:
        latent_dim: S, the dimension of ``z_t``.
        hidden_dim: hidden units of the emitter and transition networks.
        rnn_dim: hidden units of the guide's backward GRU (and combiner).
        obs_dim: D; ``None`` infers it from the data at ``fit``.
        emission: ``"gaussian"`` (the only one for now).
        num_particles: K for ``log_prob``, ``log_prob_steps`` and filtering a prefix in
            ``sample``; also an attribute that may be changed after fitting.
        device: where to fit and evaluate (``None``: CPU). Not saved with the model: a
            loaded model uses its own default (CPU).

    Attributes:
        history_: ``{"train_loss": [...], "val_loss": [...]}``, the negative ELBO in nats per
            step (data units) of each epoch; ``val_loss`` is filled when ``validation_data``
            is given to ``fit``. (``history`` is a deprecated alias.)
        eval_seed: the seed mixed into every sequence's evaluation draws (default 0).
        net: the :class:`~probseq.deep_markov.networks.DMMNetwork` once fitted.
    """

    data_kind = "continuous"
    exact_likelihood = False

    def __init__(
        self,
        latent_dim: int = 2,
        hidden_dim: int = 32,
        rnn_dim: int = 32,
        obs_dim: int | None = None,
        emission: str = "gaussian",
        num_particles: int = 100,
        device: str | None = None,
    ):
        self.latent_dim = _check_positive_int(latent_dim, "latent_dim")
        self.hidden_dim = _check_positive_int(hidden_dim, "hidden_dim")
        self.rnn_dim = _check_positive_int(rnn_dim, "rnn_dim")
        if obs_dim is not None:
            obs_dim = _check_positive_int(obs_dim, "obs_dim")
        self.obs_dim = obs_dim
        if emission != "gaussian":
            raise ValueError(f"emission must be 'gaussian', got {emission!r}")
        self.emission = emission
        self.num_particles = num_particles
        try:
            self._device = torch.device(device if device is not None else "cpu")
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device {device!r} is not a torch device: {err}") from None
        self.device = device
        self._obs_dim = obs_dim if obs_dim is not None else "any"
        self.net: DMMNetwork | None = None
        self._loc: torch.Tensor | None = None
        self._scale: torch.Tensor | None = None
        self._univariate = False
        self.eval_seed = 0
        self.history_: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        # A unique name in Pyro's param store, for users who run pyro_model/guide themselves.
        self.pyro_name = _unique_pyro_name()

    @property
    def num_particles(self) -> int:
        """K, the number of importance samples per sequence in evaluation."""
        return self._num_particles

    @num_particles.setter
    def num_particles(self, value: int) -> None:
        self._num_particles = _check_positive_int(value, "num_particles")

    @property
    def history(self) -> dict[str, list[float]]:
        """Deprecated alias of ``history_`` (the name every other model uses)."""
        warnings.warn("DeepMarkovModel.history is deprecated; use history_", DeprecationWarning,
                      stacklevel=2)
        return self.history_

    # ---------------------------------------------------------------- Pyro programs
    def _model(self, y: torch.Tensor, lengths: torch.Tensor) -> None:
        """The generative model over standardised ``y [N, T_max, D]``, as a Pyro program."""
        net = self.net
        pyro.module(self.pyro_name, net)
        n, t_max, _ = y.shape
        mask = step_mask(lengths, t_max)
        with pyro.plate("sequences", n, dim=-1):
            z = None
            for t in pyro.markov(range(t_max)):
                if z is None:
                    loc, scale = net.initial()
                    loc, scale = loc.expand(n, -1), scale.expand(n, -1)
                else:
                    loc, scale = net.transition(z)
                z = pyro.sample(
                    f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t])
                )
                x_loc, x_scale = net.emitter(z)
                pyro.sample(
                    f"x_{t + 1}",
                    dist.Normal(x_loc, x_scale).to_event(1).mask(mask[:, t]),
                    obs=y[:, t],
                )

    def _guide(self, y: torch.Tensor, lengths: torch.Tensor) -> None:
        """The structured guide ``q(z | y)`` over standardised ``y [N, T_max, D]``."""
        net = self.net
        pyro.module(self.pyro_name, net)
        n, t_max, _ = y.shape
        mask = step_mask(lengths, t_max)
        h = net.rnn(y, lengths)
        with pyro.plate("sequences", n, dim=-1):
            z = net.guide_z_0.expand(n, -1)
            for t in pyro.markov(range(t_max)):
                loc, scale = net.combiner(z, h[:, t])
                z = pyro.sample(
                    f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t])
                )

    def pyro_model(self, data: Any) -> None:
        """Run the generative model on data, as a Pyro program (for tracing, SVI, MCMC...).

        The sites are ``z_1..z_T`` (latent, ``[N, S]`` each) and ``x_1..x_T`` (observed
        ``[N, D]``), inside ``pyro.plate("sequences", N)``; padded steps are masked out.
        Observations enter standardised (``(x - m) / s``): add ``-num_steps * sum(log s)``
        (see ``log_jacobian``) to a log density to get one of the data as given. The
        networks are registered with ``pyro.module`` as ``self.pyro_name`` in the current
        param store.
        """
        self._check_fitted()
        y, lengths = self._standardise(self._coerce(data)[0])
        self._model(y, lengths)

    def guide(self, data: Any) -> None:
        """Run the guide ``q(z | x)`` on data, as a Pyro program (sites ``z_1..z_T``)."""
        self._check_fitted()
        y, lengths = self._standardise(self._coerce(data)[0])
        self._guide(y, lengths)

    @property
    def log_jacobian(self) -> float:
        """``-sum_d log s_d``: what standardisation adds to each step's log density."""
        self._check_fitted()
        return -float(self._scale.log().sum())

    # ---------------------------------------------------------------- fitting
    def fit(
        self,
        data: Any,
        *,
        max_epochs: int = 200,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        seed: int | None = None,
        progress: bool | None = None,
        validation_data: Any | None = None,
        clip_norm: float = 10.0,
        patience: int | None = None,
        **unknown: Any,
    ) -> DeepMarkovModel:
        """Fit by stochastic variational inference (``Trace_ELBO``, ``ClippedAdam``) over
        minibatches of sequences.

        Data is standardised per dimension with the training steps' mean and standard
        deviation (the Jacobian is in every reported density). A non-finite ELBO stops
        training with a ``RuntimeWarning`` and keeps the weights of the last finished epoch.
        The fit runs in a fresh scope of Pyro's global param store, which is left exactly
        as it was. Under an active ``torch.distributed`` process group each rank takes its
        part of every epoch's order and gradients are averaged over ranks.

        Args:
            data: the training sequences (reals, ``[T]`` or ``[T, D]`` each).
            max_epochs: passes over the data (default 200).
            batch_size: sequences per SVI step (default 32).
            learning_rate: Adam's step size (default 3e-3).
            seed: makes the fit reproducible on the CPU (default None).
            progress: show a progress bar with the ELBO in nats per step (default None: when
                stderr is a terminal).
            validation_data: sequences whose negative ELBO per step (with fixed evaluation
                draws) is measured after every epoch; the weights of the best epoch are kept
                (default None: the last epoch's).
            clip_norm: ``ClippedAdam``'s gradient-norm clip (default 10.0).
            patience: with ``validation_data``, stop after this many epochs without
                improvement (default None: never stop early).
            **unknown: refused with ``ValueError``.

        Returns:
            self, with ``history_`` set.
        """
        return super().fit(
            data, max_epochs=max_epochs, batch_size=batch_size, learning_rate=learning_rate,
            seed=seed, progress=progress, validation_data=validation_data,
            clip_norm=clip_norm, patience=patience, **unknown,
        )

    def _fit(
        self,
        seqs: Sequences,
        *,
        max_epochs: int = 200,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        seed: int | None = None,
        progress: bool | None = None,
        validation_data: Any | None = None,
        clip_norm: float = 10.0,
        patience: int | None = None,
    ) -> None:
        """Fit by SVI (``Trace_ELBO``, ``ClippedAdam``) over minibatches of sequences.

        Args:
            seqs: training sequences.
            max_epochs: passes over the data.
            batch_size: sequences per SVI step.
            learning_rate: Adam's step size.
            seed: makes the fit reproducible on CPU (the base seeds torch's RNG with it).
            progress: show a progress bar with the ELBO in nats per step (``None``: when
                stderr is a terminal).
            validation_data: sequences scored each epoch (negative ELBO per step, with fixed
                evaluation draws); the weights of the best epoch are kept.
            clip_norm: ``ClippedAdam``'s gradient-norm clip.
            patience: with ``validation_data``, stop after this many epochs without
                improvement (``None``: never stop early).

        Pyro's global param store is shared by everything in the process. The fit runs in a
        fresh scope of it (``pyro.get_param_store().scope()``): the networks' parameters are
        registered there with ``pyro.module`` (so ClippedAdam updates the modules' own
        tensors, not stale copies), and on exit the caller's store is restored exactly, with
        nothing of this model left behind and nothing of another model read.
        """
        max_epochs = _check_positive_int(max_epochs, "max_epochs")
        batch_size = _check_positive_int(batch_size, "batch_size")
        learning_rate = _check_positive_float(learning_rate, "learning_rate")
        clip_norm = _check_positive_float(clip_norm, "clip_norm")
        if patience is not None:
            patience = _check_positive_int(patience, "patience")
        del seed  # the base already seeded torch's RNG with it

        previous = (self.net, self._loc, self._scale, self._univariate, self._obs_dim,
                    self.history_)
        self._obs_dim = self.obs_dim if self.obs_dim is not None else "any"
        try:
            self._fit_fresh(seqs, max_epochs, batch_size, learning_rate, clip_norm, patience,
                            progress, validation_data)
        except BaseException:
            # a failed (re)fit leaves the model as it was
            (self.net, self._loc, self._scale, self._univariate, self._obs_dim,
             self.history_) = previous
            raise

    def _fit_fresh(self, seqs, max_epochs, batch_size, learning_rate, clip_norm, patience,
                   progress, validation_data) -> None:
        dim = self._fit_obs_dim(seqs)
        self._univariate = seqs.dim is None
        self._obs_dim = self.obs_dim if self.obs_dim is not None else seqs.dim
        obs_dim = dim if dim is not None else 1
        self._set_standardisation(seqs)
        val_seqs = None
        if validation_data is not None:
            val_seqs, _ = self._coerce(validation_data)
        self.net = DMMNetwork(obs_dim, self.latent_dim, self.hidden_dim, self.rnn_dim)
        self.net.to(device=self._device, dtype=torch.float64)
        # new networks, new name: never matched to a user's param-store entries of old ones
        self.pyro_name = _unique_pyro_name()
        self.history_ = {"train_loss": [], "val_loss": []}
        self._train(seqs, val_seqs, max_epochs, batch_size, learning_rate, clip_norm, patience,
                    progress)

    def _set_standardisation(self, seqs: Sequences) -> None:
        flat = seqs.values3d()[seqs.mask]
        loc = flat.mean(0)
        scale = flat.std(0, correction=0) if flat.shape[0] > 1 else torch.ones_like(loc)
        tiny = scale <= 1e-12 * torch.clamp(loc.abs(), min=1.0)
        self._loc = loc.to(torch.float64)
        self._scale = torch.where(tiny, torch.ones_like(scale), scale).to(torch.float64)

    def _train(self, seqs, val_seqs, max_epochs, batch_size, learning_rate, clip_norm,
               patience, progress) -> None:
        net = self.net
        y_all, len_all = self._standardise(seqs)
        jac = self.log_jacobian
        optim = ClippedAdam({"lr": learning_rate, "clip_norm": clip_norm})
        svi = SVI(self._model, self._guide, optim, loss=Trace_ELBO())
        val = self._standardise(val_seqs) if val_seqs is not None else None
        good = copy.deepcopy(net.state_dict())
        best, best_loss, since_best = None, math.inf, 0
        bar = progress_bar(max_epochs, progress, desc=self.name)
        try:
            with pyro.get_param_store().scope():
                order_seed = int(torch.randint(0, 2**31 - 1, ()))
                for epoch in range(max_epochs):
                    total = self._epoch(svi, y_all, len_all, batch_size, order_seed + epoch)
                    if total is None:  # diverged: back to the last finished epoch
                        net.load_state_dict(good)
                        self._diverged(epoch)
                        break
                    train_loss = total / seqs.num_steps - jac
                    self.history_["train_loss"].append(train_loss)
                    good = copy.deepcopy(net.state_dict())
                    postfix = {"elbo_nats_per_step": f"{-train_loss:.4f}"}
                    if val is not None:
                        with seeded(self.eval_seed):
                            val_loss = svi.evaluate_loss(*val) / val_seqs.num_steps - jac
                        self.history_["val_loss"].append(val_loss)
                        postfix["val_elbo"] = f"{-val_loss:.4f}"
                        if val_loss < best_loss:
                            best, best_loss, since_best = good, val_loss, 0
                        else:
                            since_best += 1
                    bar.set_postfix(postfix)
                    bar.update(1)
                    if patience is not None and val is not None and since_best >= patience:
                        break
        finally:
            bar.close()
        if best is not None:
            net.load_state_dict(best)

    def _epoch(self, svi: SVI, y_all: torch.Tensor, len_all: torch.Tensor,
               batch_size: int, order_seed: int) -> float | None:
        """One SVI pass over shuffled minibatches: the summed loss, None if it diverged.

        The order comes from its own generator (``order_seed``), so that it is the same on
        every rank of a process group; each rank then takes its part of it
        (:class:`probseq.distributed.RankSampler`) and gradients are averaged over ranks
        before each optimiser step.
        """
        total, ok = 0.0, True
        sampler = distributed.RankSampler(_Permutation(len(len_all), order_seed))
        for idx in torch.as_tensor(list(sampler), dtype=torch.int64).split(batch_size):
            idx = idx.to(len_all.device)
            lengths = len_all[idx]
            loss = _svi_step(svi, y_all[idx, : int(lengths.max())], lengths)
            ok = ok and math.isfinite(loss) and all(
                torch.isfinite(p).all() for p in self.net.parameters()
            )
            if not distributed.is_active() and not ok:
                return None
            total += loss
        summed = distributed.all_reduce_sum({
            "total": torch.tensor(total, dtype=torch.float64),
            "bad": torch.tensor(0.0 if ok else 1.0, dtype=torch.float64),
        })
        return float(summed["total"]) if summed["bad"] == 0 else None

    def _diverged(self, epoch: int) -> None:
        if epoch == 0:
            raise FloatingPointError(
                f"{self.name} fit diverged (NaN/inf ELBO) in the first epoch; try a smaller "
                "learning_rate or clip_norm"
            )
        warnings.warn(
            f"{self.name} fit diverged (NaN/inf ELBO) in epoch {epoch + 1}; stopped and kept "
            f"the weights after epoch {epoch}",
            RuntimeWarning,
            stacklevel=6,  # _diverged, _train, _fit_fresh, _fit, SequenceModel.fit, caller
        )

    # ---------------------------------------------------------------- evaluation
    def _standardise(self, seqs: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y [N, T_max, D], lengths [N])`` on the model's device, zero at padding."""
        x = seqs.values3d().to(torch.float64)
        y = (x - self._loc) / self._scale
        y = torch.where(seqs.mask[..., None], y, torch.zeros((), dtype=y.dtype))
        return y.to(self._device), seqs.lengths.to(self._device)

    def _evaluation_noise(self, y: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
        """``[K, N, T_max, S]`` standard normals; sequence i's come from a generator seeded by
        its own standardised values ``y[i, :L_i]`` and ``eval_seed`` (zero at padding)."""
        n, t_max, _ = y.shape
        noise = torch.zeros(k, n, t_max, self.latent_dim, dtype=torch.float64)
        for i, length in enumerate(lengths.tolist()):
            g = torch.Generator().manual_seed(_sequence_seed(y[i, :length], self.eval_seed))
            noise[:, i, :length] = torch.randn(
                k, length, self.latent_dim, generator=g, dtype=torch.float64
            )
        return noise.to(self._device)

    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        """IWAE per-step terms (see :func:`~probseq.deep_markov.inference.iwae_steps`).

        Step t's term is ``L_t - L_(t-1)`` where ``L_t`` is the importance-weighted estimate
        of ``log p(x_1..x_t)`` from the same K guide paths truncated at t (an unbiased
        weight estimate for every prefix, since the guide's marginal of ``z_1..z_t`` is a
        proper proposal). The terms telescope to the whole-sequence IWAE bound, so rows sum
        to ``log_prob``; each includes the Jacobian ``-sum_d log s_d``.
        """
        k = self.num_particles
        chunk = max(1, _EVAL_BUDGET // (k * seqs.max_length * (2 * self.latent_dim + 1)))
        block = max(1, _EVAL_BUDGET // (k * min(chunk, len(seqs)) * self.hidden_dim))
        out = torch.zeros(len(seqs), seqs.max_length, dtype=torch.float64)
        jac = self.log_jacobian
        for start in range(0, len(seqs), chunk):
            part = seqs[start : start + chunk]
            y, lengths = self._standardise(part)
            noise = self._evaluation_noise(y, lengths, k)
            log_w = importance_log_weights(self.net, y, lengths, noise, block)
            steps = iwae_steps(log_w).cpu() + jac * part.mask.to(torch.float64)
            out[start : start + chunk, : part.max_length] = steps
        return out

    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                **options: Any) -> torch.Tensor:
        """Ancestral samples; with a prefix, ``z`` at its last step is drawn from the guide's
        K particles on the prefix, resampled by their importance weights (sampling
        importance resampling), and the chain continues from there."""
        if options:
            raise TypeError(f"unexpected sample options {sorted(options)}")
        net, n, s = self.net, num_sequences, self.latent_dim
        dev = self._device
        if prefix is None:
            start = 0
            loc, scale = net.initial()
            z = loc + scale * torch.randn(n, s, dtype=torch.float64, device=dev)
        else:
            start = prefix.shape[0]
            pre = Sequences(prefix.reshape(1, start, -1).to(torch.float64),
                            torch.tensor([start]))
            y, lengths = self._standardise(pre)
            k = self.num_particles
            noise = torch.randn(k, 1, start, s, dtype=torch.float64, device=dev)
            paths, log_q = sample_guide(net, y, lengths, noise)
            log_w = (log_joint_steps(net, y, lengths, paths) - log_q).sum(-1)[:, 0]
            pick = torch.distributions.Categorical(logits=log_w).sample((n,))
            z = paths[pick, 0, start - 1]
        ys = []
        for t in range(start, length):
            if t > 0:
                loc, scale = net.transition(z)
                z = loc + scale * torch.randn_like(loc)
            x_loc, x_scale = net.emitter(z)
            ys.append(x_loc + x_scale * torch.randn_like(x_loc))
        d = self._loc.shape[0]
        new = torch.stack(ys, 1).cpu() if ys else torch.zeros(n, 0, d, dtype=torch.float64)
        new = self._loc + self._scale * new
        if prefix is not None:
            pre_x = prefix.to(torch.float64).reshape(1, start, d).expand(n, -1, -1)
            new = torch.cat([pre_x, new], dim=1)
        return new[..., 0] if self._univariate else new

    # ---------------------------------------------------------------- bookkeeping
    @property
    def num_params(self) -> int:
        """Free parameters of the generative model ``p(x, z)``.

        The guide's parameters are not counted: they change the bound, not the model being
        scored (``num_guide_params`` has them).
        """
        self._check_fitted()
        return sum(p.numel() for p in self.net.generative_parameters())

    @property
    def num_guide_params(self) -> int:
        """Parameters of the guide (backward GRU, combiner, its ``z_0``)."""
        self._check_fitted()
        return sum(p.numel() for p in self.net.parameters()) - self.num_params

    def _is_fitted(self) -> bool:
        return self.net is not None

    def get_config(self) -> dict[str, Any]:
        return {
            "latent_dim": self.latent_dim,
            "hidden_dim": self.hidden_dim,
            "rnn_dim": self.rnn_dim,
            "obs_dim": self.obs_dim,
            "emission": self.emission,
            "num_particles": self.num_particles,
        }

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors["standardise_loc"] = self._loc
        tensors["standardise_scale"] = self._scale
        return tensors

    def _meta(self) -> dict[str, Any]:
        return {
            "obs_dim": int(self._loc.shape[0]),
            "univariate": self._univariate,
            "eval_seed": self.eval_seed,
            "history": self.history_,
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if self._device.type == "cuda" and not torch.cuda.is_available():
            # files written before the device was left out of the configuration
            self._device, self.device = torch.device("cpu"), None
        net = DMMNetwork(int(meta["obs_dim"]), self.latent_dim, self.hidden_dim, self.rnn_dim)
        net.to(device=self._device, dtype=torch.float64)  # before loading: no float32 round
        state = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
        net.load_state_dict(state, strict=True)
        self.net = net
        self._loc = tensors["standardise_loc"].to(torch.float64)
        self._scale = tensors["standardise_scale"].to(torch.float64)
        self._univariate = bool(meta["univariate"])
        self._obs_dim = None if self._univariate else int(meta["obs_dim"])
        if self.obs_dim is not None:
            self._obs_dim = self.obs_dim
        self.eval_seed = int(meta["eval_seed"])
        self.history_ = {k: list(v) for k, v in meta["history"].items()}


    # ---------------------------------------------------------------- forecasts
    #: the one-step predictive is a particle approximation, not exact.
    step_predictive_exact = False

    @torch.no_grad()
    def _step_predictive(self, seqs: Sequences) -> torch.distributions.Distribution:
        """``[N, T_max]`` APPROXIMATE one-step predictives from a bootstrap particle filter.

        ``num_particles`` particles start from the initial state distribution; before each
        step they are resampled by their weights (multinomial) and moved through the
        transition, and the predictive of ``x_t`` is the equal-weight mixture of their
        emission Gaussians (in data units). It converges to ``p(x_t | x_<t)`` as the number
        of particles grows, but its log density is not ``log_prob_steps`` (an IWAE estimate
        with the guide as proposal). Draws come from a generator seeded by ``eval_seed``,
        so repeated calls agree.
        """
        dist = torch.distributions
        net, k, s = self.net, self.num_particles, self.latent_dim
        y, _ = self._standardise(seqs)
        n, t_max, d = y.shape
        g = torch.Generator(device=self._device).manual_seed(int(self.eval_seed))

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g, dtype=torch.float64, device=self._device)

        loc0, scale0 = net.initial()
        z = loc0 + scale0 * normal(k, n, s)  # [K, N, S]
        log_w = torch.zeros(k, n, dtype=torch.float64, device=self._device)
        locs = torch.empty(n, t_max, k, d, dtype=torch.float64)
        scales = torch.empty_like(locs)
        rows = torch.arange(n, device=self._device)
        for t in range(t_max):
            if t > 0:
                probs = torch.softmax(log_w, dim=0).T  # [N, K]
                pick = torch.multinomial(probs, k, replacement=True, generator=g)  # [N, K]
                z = z[pick.T, rows[None, :]]
                log_w = torch.zeros_like(log_w)
                loc, scale = net.transition(z)
                z = loc + scale * normal(k, n, s)
            x_loc, x_scale = net.emitter(z)  # [K, N, D]
            locs[:, t] = x_loc.transpose(0, 1).cpu()
            scales[:, t] = x_scale.transpose(0, 1).cpu()
            z_score = (y[:, t].unsqueeze(0) - x_loc) / x_scale
            log_w = log_w + (-0.5 * z_score**2 - x_scale.log()).sum(-1)
        locs = self._loc + self._scale * locs
        scales = self._scale * scales
        mix = dist.Categorical(probs=torch.full((n, t_max, k), 1.0 / k, dtype=torch.float64))
        if self._univariate:
            return dist.MixtureSameFamily(mix, dist.Normal(locs[..., 0], scales[..., 0]))
        return dist.MixtureSameFamily(mix, dist.Independent(dist.Normal(locs, scales), 1))


def _unique_pyro_name() -> str:
    return f"DeepMarkovModel_{uuid.uuid4().hex}"


def _sequence_seed(x: torch.Tensor, eval_seed: int) -> int:
    """A 63-bit seed from a (standardised) sequence's values rounded to float32 and
    ``eval_seed``."""
    h = hashlib.blake2b(digest_size=8)
    h.update(int(eval_seed).to_bytes(8, "little", signed=True))
    # float32 rounding: rescaled data (c * x) standardises to the same values up to float64
    # rounding, which must not change the draws (scale equivariance)
    h.update(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32).tobytes())
    return int.from_bytes(h.digest(), "little") & (2**63 - 1)


def _check_positive_int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or x < 1:
        raise ValueError(f"{what} must be a positive integer, got {x!r}")
    return int(x)


def _check_positive_float(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float | np.number):
        raise ValueError(f"{what} must be a positive number, got {x!r}")
    if not (math.isfinite(float(x)) and float(x) > 0):
        raise ValueError(f"{what} must be a positive finite number, got {x!r}")
    return float(x)


class _Permutation:
    """A fresh random order of ``0..n-1`` from a seed (the sampler interface)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def set_epoch(self, epoch: int) -> None:  # the seed already names the epoch
        pass

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _svi_step(svi: SVI, *args) -> float:
    """``svi.step``, with gradients averaged over ranks when a process group is active."""
    if not distributed.is_active():
        return svi.step(*args)
    with poutine.trace(param_only=True) as capture:
        loss = svi.loss_and_grads(svi.model, svi.guide, *args)
    named = sorted(
        (name, site["value"].unconstrained()) for name, site in capture.trace.nodes.items()
    )
    grads = {name: p.grad if p.grad is not None else torch.zeros_like(p) for name, p in named}
    summed = distributed.all_reduce_sum(grads)
    w = distributed.world_size()
    params = [p for _, p in named]
    for name, p in named:
        p.grad = summed[name] / w
    svi.optim(params)
    zero_grads(params)
    return float(loss)
