"""The hidden semi-Markov model: HMM states that persist for explicit durations.

Generative process (N sequences of lengths T_n, K states, durations up to D)::

    z ~ Categorical(initial);  d ~ duration[z]              the first segment
    repeat until T steps are drawn:
        x_t ~ emission(z) for the d steps of the segment
        z' ~ Categorical(transition[z]) (never z itself);  d' ~ duration[z']

The last segment is right-censored: ``log_prob`` is the density of ``x_1..x_T`` with the
final segment allowed to continue past T. This is the HMM over the countdown states
``(k, r)`` (r = the steps the segment has left), run by the sparse recursions of
:mod:`probseq.hsmm.inference` in O(T K D + T K^2).

The emissions are those of :class:`~probseq.HiddenMarkovModel` (categorical, Gaussian full
or diagonal, Poisson), and so are the fit keywords, the EM loop (restarts,
data-parallel E-step, monotonicity checks) and the treatment of missing values: this class
extends ``HiddenMarkovModel`` with the durations and replaces its recursions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probseq.data import Sequences
from probseq.hmm import HiddenMarkovModel
from probseq.hmm.emissions import EMISSIONS
from probseq.hsmm import inference
from probseq.hsmm.durations import DURATIONS

__all__ = ["HiddenSemiMarkovModel"]


def _as_float(x: Any, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x,
                            dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} could not be read as a float tensor: {err}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _positive_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return x


class HiddenSemiMarkovModel(HiddenMarkovModel):
    """A K-state hidden semi-Markov model (explicit durations) with exact likelihoods.

    Args:
        num_states: K >= 2 (transitions go between different states only).
        emission: ``"categorical"``, ``"gaussian"`` or ``"poisson"``, as for
            :class:`~probseq.HiddenMarkovModel`.
        duration: the family of each state's durations d = 1..D: ``"categorical"`` (a free
            pmf), ``"poisson"`` (``d - 1 ~ Poisson(duration_rate)``) or
            ``"negative_binomial"`` (``d - 1 ~ NegBinomial(duration_count, duration_prob)``,
            scipy's ``nbinom``); the parametric ones truncated at D (renormalised).
        max_duration: D, the longest duration.
        num_symbols, covariance_type, min_covar: as for ``HiddenMarkovModel``.

    Parameters (``.params``, ``from_params``): ``initial [K]``, ``transition [K, K]`` (rows:
    from, zero diagonal); ``duration [K, D]`` (categorical), ``duration_rate [K]``
    (poisson) or ``duration_count [K]`` and ``duration_prob [K]`` (negative binomial); the
    emission's parameters as ``HiddenMarkovModel`` names them. ``duration_pmf`` is the
    ``[K, D]`` pmf of every family.

    Missing values are marginalised exactly, as in the HMM. Partly known states
    (``states=`` in :meth:`fit`, :meth:`smoother` and :meth:`most_likely_states`; -1 where
    unknown) clamp the countdown chain to the labelled state at those steps.
    """

    #: no summary() yet (the HMM's free parameters and likelihood are not this model's).
    summary_params = None

    def __init__(self, num_states: int = 2, emission: str = "categorical",
                 duration: str = "categorical", max_duration: int = 20,
                 num_symbols: int | None = None, covariance_type: str = "full",
                 min_covar: float = 1e-6):
        super().__init__(num_states, emission, num_symbols=num_symbols,
                         covariance_type=covariance_type, min_covar=min_covar)
        if num_states < 2:
            raise ValueError("a hidden semi-Markov model needs num_states >= 2 (a segment "
                             f"always moves to a different state), got {num_states}")
        if duration not in DURATIONS:
            raise ValueError(f"duration must be one of {sorted(DURATIONS)}, got {duration!r}")
        self.duration = duration
        self.max_duration = _positive_int(max_duration, "max_duration")

    def fit(self, data: Any, *, max_epochs: int = 100, tol: float = 1e-6,
            num_restarts: int = 3, init: str = "random", progress: bool | None = None,
            seed: int | None = None, states: Any = None,
            **unknown: Any) -> HiddenSemiMarkovModel:
        """Estimate the parameters by EM (the forward-backward of the countdown chain).

        Args:
            data: the sequences; missing values are marginalised exactly.
            max_epochs: the most EM iterations per restart (100).
            tol: stop when the log-likelihood improves by less than ``tol`` nats per step.
            num_restarts: random initialisations; the best final log-likelihood wins (3).
            init: ``"random"``, or ``"params"`` to start once from the current parameters.
            progress: show a progress bar (None: on a terminal or in a notebook).
            seed: makes the initialisations reproducible.
            states: partly known states, the data's shape: per step a state ``0..K-1``, or
                ``-1`` (or a masked entry, ``pd.NA``, NaN) where unknown. A known state
                clamps the posterior during EM (only the countdown states ``(k, r)`` of the
                labelled k are allowed at that step), so the fit maximises ``log p(x, known
                states)`` and the fitted numbering follows the labels; ``history_`` records
                that objective. A run of more than D steps labelled with one state is
                refused (no segment is that long).
            **unknown: refused with a ``ValueError`` listing the valid options.

        The M-step is closed-form for the initial, transition, categorical-duration and
        emission parameters; the Poisson and negative binomial durations are the weighted
        maximum-likelihood fits of the truncated family to the expected durations. Under an
        active ``torch.distributed`` process group the E-step is data-parallel.

        Returns:
            self, with ``history_`` and ``restart_log_likelihoods_``.
        """
        return super(HiddenMarkovModel, self).fit(
            data, max_epochs=max_epochs, tol=tol, num_restarts=num_restarts, init=init,
            progress=progress, seed=seed, states=states, **unknown)

    def _fit(self, seqs: Sequences, *, max_epochs: int = 100, tol: float = 1e-6,
             num_restarts: int = 3, init: str = "random", progress: bool | None = None,
             seed: int | None = None, states: Any = None) -> None:
        super()._fit(seqs, method="em", max_epochs=max_epochs, tol=tol,
                     num_restarts=num_restarts, init=init, progress=progress, seed=seed,
                     states=states)

    def coerce_states(self, states: Any, seqs: Sequences) -> torch.Tensor:
        """Partly known states as ``[N, T_max]`` int64, -1 where unknown (and at padding).

        As :meth:`HiddenMarkovModel.coerce_states`; besides, a run of more than D
        consecutive steps labelled with the same state is refused, since no segment lasts
        longer than D steps (the labels would have probability zero under every parameter).

        Raises:
            ValueError: labels that do not line up with the sequences, are not whole
                numbers, lie outside ``-1..K-1``, or hold a run longer than D of one state.
        """
        labels = super().coerce_states(states, seqs)
        lab = labels.numpy()
        steps = np.arange(lab.shape[1])
        starts = np.ones(lab.shape, dtype=bool)  # a run of equal labels starts here
        starts[:, 1:] = lab[:, 1:] != lab[:, :-1]
        run = steps - np.maximum.accumulate(np.where(starts, steps, 0), axis=1) + 1
        bad = (lab >= 0) & (run > self.max_duration)
        if bad.any():
            i, t = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"states of sequence {i} label {self.max_duration + 1} consecutive steps (up "
                f"to step {t}) with state {int(lab[i, t])}, more than "
                f"max_duration={self.max_duration}: no segment is that long")
        return labels

    # ------------------------------------------------------------------ parameters
    @property
    def _dur(self):
        return DURATIONS[self.duration]

    @property
    def duration_pmf(self) -> torch.Tensor:
        """``[K, D]`` the pmf of each state's durations d = 1..D."""
        self._check_fitted()
        return self._dur.pmf(self._params, self.max_duration).clone()

    @classmethod
    def from_params(cls, *, initial: Any, transition: Any, duration: Any | None = None,
                    duration_rate: Any | None = None, duration_count: Any | None = None,
                    duration_prob: Any | None = None, max_duration: int | None = None,
                    emission: Any | None = None, means: Any | None = None,
                    covariances: Any | None = None, rates: Any | None = None,
                    covariance_type: str | None = None,
                    min_covar: float = 1e-6) -> HiddenSemiMarkovModel:
        """Build a model from parameters.

        Args:
            initial: ``[K]`` distribution of the first segment's state.
            transition: ``[K, K]`` rows: from; zero diagonal.
            duration: ``[K, D]`` the pmf of the durations 1..D (categorical family).
            duration_rate: ``[K]`` Poisson rates of ``d - 1`` (poisson family).
            duration_count, duration_prob: ``[K]`` each, the negative binomial of ``d - 1``
                (``n > 0``, ``0 < p <= 1``; scipy's ``nbinom``).
            max_duration: D, needed by the parametric families (the categorical family
                reads it from ``duration``; if given it must agree).
            emission, means, covariances, rates, covariance_type, min_covar: the emission,
                as :meth:`HiddenMarkovModel.from_params` takes it.

        Raises:
            ValueError: a probability vector or row does not sum to 1 or is negative, the
                transition has a non-zero diagonal, shapes disagree, no or several duration
                families are given, or an emission parameter is invalid.
        """
        model = super().from_params(initial=initial, transition=transition, emission=emission,
                                    means=means, covariances=covariances, rates=rates,
                                    covariance_type=covariance_type, min_covar=min_covar)
        k = model.num_states
        trans = model._params["transition"]
        if k < 2:
            raise ValueError("a hidden semi-Markov model needs at least 2 states")
        if (torch.diagonal(trans) != 0).any():
            i = int(torch.nonzero(torch.diagonal(trans) != 0)[0])
            raise ValueError(f"transition must have a zero diagonal (segments move to another "
                             f"state); transition[{i}, {i}] = {float(trans[i, i])}")
        given = {"categorical": duration is not None, "poisson": duration_rate is not None,
                 "negative_binomial": duration_count is not None or duration_prob is not None}
        families = [f for f, v in given.items() if v]
        if len(families) != 1:
            raise ValueError("give exactly one duration family: duration=[K, D] (categorical), "
                             "duration_rate=[K] (poisson) or duration_count=[K] and "
                             "duration_prob=[K] (negative_binomial)")
        family = families[0]
        params: dict[str, torch.Tensor] = {}
        if family == "categorical":
            p = _as_float(duration, "duration")
            if p.ndim != 2 or p.shape[0] != k:
                raise ValueError(f"duration must have shape [{k}, D], got {tuple(p.shape)}")
            if max_duration is not None and max_duration != p.shape[1]:
                raise ValueError(f"max_duration={max_duration} disagrees with duration's "
                                 f"{p.shape[1]} columns")
            if (p < 0).any():
                raise ValueError("duration has negative entries")
            sums = p.sum(-1)
            if ((sums - 1).abs() > 1e-6).any():
                i = int(torch.nonzero((sums - 1).abs() > 1e-6)[0])
                raise ValueError(f"duration must sum to 1 within 1e-6 (row {i} sums to "
                                 f"{float(sums[i])})")
            params["duration"] = p / sums[:, None]
            max_duration = p.shape[1]
        else:
            if max_duration is None:
                raise ValueError(f"the {family} duration family needs max_duration=D")
            _positive_int(max_duration, "max_duration")
            if family == "poisson":
                r = _as_float(duration_rate, "duration_rate")
                if r.shape != (k,) or (r < 0).any():
                    raise ValueError(f"duration_rate must be [{k}] non-negative rates, got "
                                     f"{r.tolist()}")
                params["duration_rate"] = r
            else:
                if duration_count is None or duration_prob is None:
                    raise ValueError("the negative binomial family needs both duration_count "
                                     "and duration_prob")
                n = _as_float(duration_count, "duration_count")
                q = _as_float(duration_prob, "duration_prob")
                if n.shape != (k,) or q.shape != (k,):
                    raise ValueError(f"duration_count and duration_prob must have shape [{k}]")
                if (n <= 0).any():
                    raise ValueError("duration_count must be positive")
                if ((q <= 0) | (q > 1)).any():
                    raise ValueError("duration_prob must lie in (0, 1]")
                params["duration_count"], params["duration_prob"] = n, q
        model.duration = family
        model.max_duration = int(max_duration)
        model._params = {"initial": model._params["initial"], "transition": trans, **params,
                         **{n: model._params[n] for n in model._em.names}}
        return model

    @property
    def num_params(self) -> int:
        self._check_fitted()
        k = self.num_states
        return ((k - 1) + k * (k - 2) + self._dur.num_params(k, self.max_duration)
                + self._em.num_params(self._params, self._options()))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "duration": self.duration,
                "max_duration": self.max_duration}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        names = ("initial", "transition") + self._dur.names + EMISSIONS[self.emission].names
        missing = [n for n in names if n not in tensors]
        if missing:
            raise KeyError(f"missing tensors {missing}")
        super()._load_state({n: tensors[n] for n in names if n not in self._dur.names}, meta)
        self._params.update({n: tensors[n].to(torch.float64) for n in self._dur.names})

    # ------------------------------------------------------------------ recursions
    def _run(self, seqs: Sequences, params: dict[str, torch.Tensor] | None = None,
             backward: bool = False, states: torch.Tensor | None = None
             ) -> dict[str, torch.Tensor]:
        """The countdown recursions; known ``states [N, T_max]`` (-1 unknown) clamp them:
        every other state's emission likelihood is zero at a labelled step, so only the
        countdown states ``(k, r)`` of the labelled k carry mass there."""
        p = self._params if params is None else params
        return inference.hsmm_forward_backward(
            p["initial"], p["transition"], self._dur.pmf(p, self.max_duration),
            self._log_lik(p, seqs, states), seqs.lengths, backward=backward)

    def _log_prob(self, seqs: Sequences) -> torch.Tensor:
        return self._run(seqs)["log_prob"]

    # The HMM's public filter, smoother and log_prob_steps read these two hooks.
    def _forward(self, seqs: Sequences, filtered: bool = True) -> dict[str, torch.Tensor]:
        return self._run(seqs)

    def _posteriors(self, seqs: Sequences, params: dict[str, torch.Tensor] | None = None,
                    states: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self._run(seqs, params, backward=True, states=states)

    @torch.no_grad()
    def most_likely_states(self, data: Any, *, states: Any = None) -> torch.Tensor:
        """The most probable state path of each sequence (Viterbi over segments).

        Maximises ``p(z_1..z_T, x_1..x_T)``, the last segment counted by its survival
        probability (right-censored).

        Args:
            data: the sequences.
            states: partly known states, as in :meth:`fit` (-1 unknown): the most likely
                path among those through them.

        Returns:
            ``[N, T_max]`` int64 states, ``-1`` at padded steps (``[T]`` for one sequence).
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        p = self._params
        labels = None if states is None else self.coerce_states(states, seqs)
        paths, _ = inference.hsmm_viterbi(p["initial"], p["transition"], self.duration_pmf,
                                          self._log_lik(p, seqs, labels), seqs.lengths)
        return paths[0] if single else paths

    # ------------------------------------------------------------------ EM
    def expected_stats(self, seqs: Sequences, params: dict[str, torch.Tensor],
                       states: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """E-step: expected sufficient statistics summed over the sequences.

        As :meth:`HiddenMarkovModel.expected_stats`, plus ``duration_counts [K, D]`` (the
        expected number of segments of each state and duration, the censored last one
        included); ``transition_counts`` counts the moves between segments. ``states [N,
        T_max]`` (known states, -1 unknown; :meth:`coerce_states`) clamps the posteriors,
        and ``log_lik`` is then ``log p(x, known states)``.
        """
        post = self._run(seqs, params, backward=True, states=states)
        stats = {
            "log_lik": post["log_prob"].sum(),
            "num_sequences": torch.tensor(float(len(seqs)), dtype=torch.float64),
            "initial_counts": post["initial_counts"],
            "transition_counts": post["transition_counts"],
            "duration_counts": post["duration_counts"],
        }
        smoothed = post["smoothed"]
        if seqs.has_missing and self.emission == "gaussian":
            stats.update(self._em.stats_missing(params, seqs, smoothed))
            return stats
        rows, steps = torch.nonzero(seqs.mask, as_tuple=True)
        weights = smoothed[rows, steps]
        if seqs.has_missing:
            weights = weights * seqs.step_observed[rows, steps][:, None]
        stats.update(self._em.stats(self._em.values(seqs, rows, steps), weights))
        return stats

    def maximize(self, stats: dict[str, torch.Tensor],
                 params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """M-step: initial, transition (its diagonal stays zero) and emission as in the HMM;
        the durations by their family's M-step."""
        new = super().maximize(stats, params)
        new.update(self._dur.m_step(stats["duration_counts"], params))
        return {"initial": new["initial"], "transition": new["transition"],
                **{n: new[n] for n in self._dur.names},
                **{n: new[n] for n in self._em.names}}

    def _random_params(self, seqs: Sequences) -> dict[str, torch.Tensor]:
        k, dmax = self.num_states, self.max_duration
        dirichlet = torch.distributions.Dirichlet
        initial = dirichlet(torch.full((k,), 5.0, dtype=torch.float64)).sample()
        off = dirichlet(torch.full((k, k - 1), 5.0, dtype=torch.float64)).sample()
        transition = torch.zeros(k, k, dtype=torch.float64)
        mask = ~torch.eye(k, dtype=torch.bool)
        transition[mask] = off.reshape(-1)
        typical = max(1.0, min(dmax / 3, float(seqs.lengths.double().mean()) / (2 * k)))
        params = {"initial": initial, "transition": transition}
        params.update(self._dur.init(k, dmax, typical))
        params.update(self._em.init(seqs, k, self._options()))
        return params

    def _differentiable_log_prob(self, params: dict[str, torch.Tensor],
                                 seqs: Sequences) -> torch.Tensor:
        raise NotImplementedError("HiddenSemiMarkovModel is fitted by EM only")

    def pyro_model(self, data: Any) -> None:
        """Not available for the semi-Markov model (fit it by EM)."""
        raise NotImplementedError("HiddenSemiMarkovModel has no Pyro model yet; fit it by EM")

    # ------------------------------------------------------------------ sampling
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                _states_out: list | None = None, prefix_observed: torch.Tensor | None = None,
                **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"unknown sample options {sorted(options)}")
        p = self._params
        pmf = self._dur.pmf(p, self.max_duration)
        n, k = num_sequences, self.num_states
        states = torch.empty(n, length, dtype=torch.int64)
        if prefix is None:
            state = torch.multinomial(p["initial"].expand(n, k), 1).squeeze(1)
            left = torch.multinomial(pmf[state], 1).squeeze(1)  # countdown r - 1
            start = 0
        else:
            if prefix_observed is None:
                kind = "continuous" if self.emission == "gaussian" else self.data_kind
                pre = Sequences.from_list([prefix], kind=kind)
            else:
                pre = Sequences(prefix[None], torch.tensor([prefix.shape[0]]),
                                observed=prefix_observed[None])
            alpha = inference.countdown_filter(p["initial"], p["transition"], pmf,
                                               self._log_lik(p, pre)[0])
            last = alpha[-1].reshape(-1)
            if last.sum() <= 0:
                raise ValueError("the prefix has probability zero under this model")
            flat = torch.multinomial(last.expand(n, -1), 1).squeeze(1)
            state, left = flat // self.max_duration, flat % self.max_duration
            start = prefix.shape[0] - 1
            states[:, : start + 1] = inference.backward_sample(alpha, p["transition"], pmf,
                                                               state, left)
        states[:, start] = state
        for t in range(start + 1, length):
            moves = left == 0
            if moves.any():
                nxt = torch.multinomial(p["transition"][state[moves]], 1).squeeze(1)
                state = state.clone()
                state[moves] = nxt
                left = torch.where(moves, 0, left - 1)
                left[moves] = torch.multinomial(pmf[nxt], 1).squeeze(1)
            else:
                left = left - 1
            states[:, t] = state
        if _states_out is not None:
            _states_out.append(states)
        return self._emit(p, states, prefix, prefix_observed)

    # ------------------------------------------------------------------ forecasts
    def _step_predictive(self, seqs: Sequences) -> torch.distributions.Distribution:
        """``[N, T_max]``: the emission mixture under ``P(z_t | x_<t)`` (uniform after a step
        of probability zero and at padding, so the result stays a distribution)."""
        pred = self._run(seqs)["predicted"]
        dead = pred.sum(-1, keepdim=True) <= 0
        pred = torch.where(dead, torch.full((), 1.0 / self.num_states, dtype=pred.dtype), pred)
        return self._emission_predictive(pred / pred.sum(-1, keepdim=True))

    def _forecast(self, seqs: Sequences, horizon: int) -> torch.distributions.Distribution:
        """Exact ``[N, H]`` marginals: the filtered countdown state pushed through the
        countdown chain, mixed over the states' emission distributions."""
        p = self._params
        last = self._run(seqs)["last"]
        total = last.sum((-2, -1))
        if (total <= 0).any():
            i = int(torch.nonzero(total <= 0)[0])
            raise ValueError(f"sequence {i} has probability zero under this model")
        weights = inference.countdown_forecast(last, p["transition"], self.duration_pmf, horizon)
        return self._emission_predictive(weights / weights.sum(-1, keepdim=True))
