"""The hidden Markov model: categorical, Gaussian (full or diagonal) and Poisson emissions.

Generative process (N sequences of lengths T_n, K states)::

    z_1 ~ Categorical(initial)
    z_t ~ Categorical(transition[z_(t-1)])        for t = 2..T
    x_t ~ emission(z_t)                           for t = 1..T

``log_prob`` marginalises the states exactly with the scaled forward algorithm
(:mod:`probseq.hmm.inference`); ``fit`` runs Baum-Welch EM with random restarts (or gradient
maximum likelihood); the E-step returns a dict of sufficient statistics summed over
sequences and the M-step is a separate function of those statistics.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from probseq import distributed
from probseq._utils import progress_bar
from probseq.base import SequenceModel
from probseq.data import Sequences, check_sequences, max_symbol
from probseq.hmm import inference
from probseq.hmm.emissions import EMISSIONS, imputed_steps, observed_variance
from probseq.validation import probability_vectors

__all__ = ["HiddenMarkovModel"]

_KINDS = {"categorical": "discrete", "gaussian": "continuous", "poisson": "count"}


def _as_float_tensor(x: Any, name: str) -> torch.Tensor:
    try:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x, dtype=np.float64)
        t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x,
                            dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} could not be read as a float tensor: {err}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _check_stochastic(t: torch.Tensor, name: str) -> torch.Tensor:
    """``probability_vectors`` on a float64 tensor."""
    return torch.from_numpy(probability_vectors(t.numpy(), name))


class HiddenMarkovModel(SequenceModel):
    """A K-state hidden Markov model with exact likelihoods.

    Args:
        num_states: K, the number of hidden states.
        emission: ``"categorical"`` (symbols ``0..V-1``), ``"gaussian"`` (reals, univariate
            ``[T]`` or multivariate ``[T, D]``) or ``"poisson"`` (non-negative counts).
        num_symbols: V for categorical emissions (inferred from the data when omitted).
        covariance_type: ``"full"`` or ``"diag"`` (Gaussian emissions).
        min_covar: relative floor of a Gaussian state's covariance during fitting: when the
            covariance standardised by the data's variance per dimension has an eigenvalue
            below ``min_covar`` (a collapsing state), ``min_covar`` times the data's variance
            is added to each diagonal entry. Relative, so that fitting ``c * x`` gives the
            model fitted to ``x``, rescaled.

    Parameters (``.params``, ``from_params``): ``initial [K]``, ``transition [K, K]`` (rows:
    from); categorical ``emission [K, V]``; gaussian ``means [K, D]``, ``covariances
    [K, D, D]`` (D=1 for univariate data); poisson ``rates [K]``.

    Missing values (NaN reals, masked or ``pd.NA`` symbols) are marginalised exactly: a
    missing step's emission factor is 1, a Gaussian step with some coordinates observed
    scores their marginal density, and EM uses only the observed emissions (with the exact
    conditional expectations of missing Gaussian coordinates). ``log_prob_steps`` is 0 at
    missing steps; ``filter``, ``smoother`` and ``most_likely_states`` accept gappy data.

    Attributes:
        history_: the log-likelihood (nats, summed over the data) at every EM iteration (or
            gradient epoch) of the best restart; EM never decreases it.
        restart_log_likelihoods_: the final log-likelihood of every restart.
    """

    data_kind = "discrete"
    supports_missing: ClassVar[bool] = True
    summary_params = ("initial", "transition", "emission", "means", "covariances", "rates")

    def __init__(self, num_states: int = 2, emission: str = "categorical",
                 num_symbols: int | None = None, covariance_type: str = "full",
                 min_covar: float = 1e-6):
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 1:
            raise ValueError(f"num_states must be a positive integer, got {num_states!r}")
        if emission not in EMISSIONS:
            raise ValueError(f"emission must be one of {sorted(EMISSIONS)}, got {emission!r}")
        if covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}")
        if num_symbols is not None:
            if emission != "categorical":
                raise ValueError("num_symbols applies only to emission='categorical'")
            if isinstance(num_symbols, bool) or not isinstance(num_symbols, int) or (
                num_symbols < 1
            ):
                raise ValueError(f"num_symbols must be a positive integer, got {num_symbols!r}")
        if not (isinstance(min_covar, int | float) and min_covar > 0):
            raise ValueError(f"min_covar must be a positive number, got {min_covar!r}")
        self.num_states = num_states
        self.emission = emission
        self.num_symbols = num_symbols
        #: the constructor's V (None: inferred at each fit); ``num_symbols`` is the fitted V.
        self._config_num_symbols = num_symbols
        self.covariance_type = covariance_type
        self.min_covar = float(min_covar)
        self.data_kind = _KINDS[emission]
        self._obs_dim = "any" if emission == "gaussian" else None
        self._univariate = True
        self._params: dict[str, torch.Tensor] | None = None
        self.history_: list[float] = []
        self.restart_log_likelihoods_: list[float] = []
        #: the data's variance per dimension [D] during a Gaussian fit (scales the floor).
        self._data_var: torch.Tensor | None = None
        #: states whose covariance the last M-step floored.
        self._floored: list[int] = []
        #: chunk length of the torch scan that recomputes the rows the fast recursions
        #: refuse: None chooses by a cost model, 0 is plain.
        self.chunk_size: int | None = None

    def fit(self, data: Any, *, method: str = "em", max_epochs: int = 100, tol: float = 1e-6,
            num_restarts: int = 3, init: str = "random", learning_rate: float | None = None,
            optimizer: str = "adam", batch_size: int | None = None,
            progress: bool | None = None, seed: int | None = None, states: Any = None,
            **unknown: Any) -> HiddenMarkovModel:
        """Estimate the parameters by maximum likelihood.

        Args:
            data: the sequences (a ``Sequences``, a list, or one sequence); missing values
                (NaN reals, masked symbols) are marginalised exactly.
            method: ``"em"`` (Baum-Welch, default) or ``"gradient"`` (the exact
                log-likelihood maximised by Adam or L-BFGS through autograd).
            max_epochs: the most EM iterations (or optimizer steps) per restart (100).
            tol: stop when the log-likelihood improves by less than ``tol`` nats per step
                (1e-6).
            num_restarts: random initialisations; the best final log-likelihood wins (3).
            init: ``"random"`` (default), or ``"params"`` to start once from the current
                parameters (a fitted model or one built with ``from_params``).
            learning_rate: gradient method only (None: 0.05 for Adam, 1 for L-BFGS).
            optimizer: gradient method: ``"adam"`` (default) or ``"lbfgs"``.
            batch_size: gradient method with Adam: sequences per step (None: all).
            progress: show a progress bar (None: on a terminal or in a notebook).
            seed: makes the initialisations reproducible (None: not seeded).
            states: partly known states (EM only), the data's shape: per step a state
                ``0..K-1``, or ``-1`` (or a masked entry, ``pd.NA``, NaN) where unknown. A
                known state clamps the posterior during EM (the emission likelihood of every
                other state is zero at that step), so the fit maximises ``log p(x, known
                states)`` and the fitted numbering follows the labels; ``history_`` records
                that objective.
            **unknown: refused with a ``ValueError`` that lists the valid options; covariates
                (``exog``) are not supported by the HMM.

        Under an active ``torch.distributed`` process group, EM is data-parallel (each rank
        computes the expected statistics of its shard; they are summed before every M-step).

        Returns:
            self, with ``history_`` and ``restart_log_likelihoods_`` set.
        """
        return super().fit(data, method=method, max_epochs=max_epochs, tol=tol,
                           num_restarts=num_restarts, init=init, learning_rate=learning_rate,
                           optimizer=optimizer, batch_size=batch_size, progress=progress,
                           seed=seed, states=states, **unknown)

    # ------------------------------------------------------------------ parameters
    @property
    def _em(self):
        return EMISSIONS[self.emission]

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The parameters as a dict of tensors (copies), named as in the class docstring."""
        self._check_fitted()
        return {k: v.clone() for k, v in self._params.items()}

    @classmethod
    def from_params(cls, *, initial: Any, transition: Any, emission: Any | None = None,
                    means: Any | None = None, covariances: Any | None = None,
                    rates: Any | None = None, covariance_type: str | None = None,
                    min_covar: float = 1e-6) -> HiddenMarkovModel:
        """Build a model from parameters; the emission family follows from which are given.

        Args:
            initial: ``[K]`` distribution of the first state.
            transition: ``[K, K]`` rows: from.
            emission: ``[K, V]`` categorical emission probabilities.
            means: ``[K, D]`` (or ``[K]`` for univariate) Gaussian means.
            covariances: ``[K, D, D]`` (or ``[K]`` variances for univariate).
            rates: ``[K]`` Poisson rates (non-negative).
            covariance_type: ``"full"`` or ``"diag"``; default ``"diag"`` when every given
                covariance is diagonal, else ``"full"``.

        Probabilities valid to rounding (see :func:`probseq.validation.probability_vectors`)
        are projected once: negative rounding set to 0, each vector divided by its sum.

        Raises:
            ValueError: probability vectors or rows do not sum to 1 (within 1e-6) or are
                negative beyond rounding, covariances are not symmetric positive definite,
                shapes disagree, or the emission parameters are ambiguous.
        """
        given = {
            "categorical": emission is not None,
            "gaussian": means is not None or covariances is not None,
            "poisson": rates is not None,
        }
        kinds = [k for k, v in given.items() if v]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one emission family: emission=[K, V] (categorical), "
                "means= and covariances= (gaussian) or rates=[K] (poisson)"
            )
        kind = kinds[0]
        init = _check_stochastic(_as_float_tensor(initial, "initial"), "initial")
        if init.ndim != 1:
            raise ValueError(f"initial must be a vector [K], got shape {tuple(init.shape)}")
        k = init.shape[0]
        trans = _as_float_tensor(transition, "transition")
        if trans.shape != (k, k):
            raise ValueError(f"transition must have shape [{k}, {k}], got {tuple(trans.shape)}")
        trans = _check_stochastic(trans, "transition")
        params = {"initial": init, "transition": trans}
        univariate = True
        if kind == "categorical":
            e = _as_float_tensor(emission, "emission")
            if e.ndim != 2 or e.shape[0] != k:
                raise ValueError(f"emission must have shape [{k}, V], got {tuple(e.shape)}")
            params["emission"] = _check_stochastic(e, "emission")
            model = cls(k, "categorical", num_symbols=e.shape[1])
        elif kind == "gaussian":
            if means is None or covariances is None:
                raise ValueError("gaussian emissions need both means and covariances")
            m = _as_float_tensor(means, "means")
            cov = _as_float_tensor(covariances, "covariances")
            if m.ndim == 1:
                m = m[:, None]
            univariate = m.shape[1] == 1
            if cov.ndim == 1:
                cov = cov[:, None, None]
            d = m.shape[1]
            if m.shape[0] != k or cov.shape != (k, d, d):
                raise ValueError(
                    f"means must be [{k}, D] and covariances [{k}, D, D]; got "
                    f"{tuple(m.shape)} and {tuple(cov.shape)}"
                )
            _check_spd(cov)
            diagonal = bool((cov - torch.diag_embed(torch.diagonal(cov, 0, -2, -1)) == 0).all())
            ctype = covariance_type or ("diag" if diagonal else "full")
            if ctype == "diag" and not diagonal:
                raise ValueError("covariance_type='diag' but covariances have off-diagonal terms")
            params["means"], params["covariances"] = m, cov
            model = cls(k, "gaussian", covariance_type=ctype, min_covar=min_covar)
            model._obs_dim = d
        else:
            r = _as_float_tensor(rates, "rates")
            if r.shape != (k,):
                raise ValueError(f"rates must have shape [{k}], got {tuple(r.shape)}")
            if (r < 0).any():
                raise ValueError("rates must be non-negative")
            params["rates"] = r
            model = cls(k, "poisson")
        model._params = params
        model._univariate = univariate
        return model

    # ------------------------------------------------------------------ protocol
    @property
    def num_params(self) -> int:
        self._check_fitted()
        k = self.num_states
        return (k - 1) + k * (k - 1) + self._em.num_params(self._params, self._options())

    def _is_fitted(self) -> bool:
        return self._params is not None

    def get_config(self) -> dict[str, Any]:
        return {
            "num_states": self.num_states,
            "emission": self.emission,
            "num_symbols": self._config_num_symbols,
            "covariance_type": self.covariance_type,
            "min_covar": self.min_covar,
        }

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._params)

    def _meta(self) -> dict[str, Any]:
        return {
            "univariate": self._univariate,
            "obs_dim": self._obs_dim,
            "history": [float(v) for v in self.history_],
            "restart_log_likelihoods": [float(v) for v in self.restart_log_likelihoods_],
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        names = ("initial", "transition") + self._em.names
        missing = [n for n in names if n not in tensors]
        if missing:
            raise KeyError(f"missing tensors {missing}")
        self._params = {n: tensors[n].to(torch.float64) for n in names}
        self._univariate = bool(meta.get("univariate", True))
        self._obs_dim = meta.get("obs_dim", self._obs_dim)
        self.history_ = list(meta.get("history", []))
        self.restart_log_likelihoods_ = list(meta.get("restart_log_likelihoods", []))
        if self.emission == "categorical":
            self.num_symbols = int(self._params["emission"].shape[1])

    def _options(self) -> dict[str, Any]:
        return {
            "num_symbols": self.num_symbols,
            "covariance_type": self.covariance_type,
            "min_covar": self.min_covar,
            "data_var": self._data_var,
        }

    # ------------------------------------------------------------------ likelihood
    def _log_lik(self, params: dict[str, torch.Tensor], seqs: Sequences,
                 states: torch.Tensor | None = None) -> torch.Tensor:
        ll = self._em.log_lik(params, seqs)
        if states is None:
            return ll
        # A known state: every other state's emission likelihood is zero at that step.
        other = (states[..., None] >= 0) & (
            states[..., None] != torch.arange(ll.shape[-1])[None, None])
        return ll.masked_fill(other, -math.inf)

    def coerce_states(self, states: Any, seqs: Sequences) -> torch.Tensor:
        """Partly known states as ``[N, T_max]`` int64, -1 where unknown (and at padding).

        Args:
            states: the data's shape: one sequence of labels, a list of them, or an
                ``[N, T]`` array; ``-1``, masked entries (``numpy.ma``), ``pd.NA`` or NaN
                where a state is unknown.
            seqs: the data the labels belong to.

        Raises:
            ValueError: labels that do not line up with the sequences, are not whole
                numbers, or lie outside ``-1..K-1``.
        """
        n, t_max = len(seqs), seqs.max_length
        if isinstance(states, Sequences):
            rows = [states.with_gaps(i) if states.has_missing else states[i]
                    for i in range(len(states))]
        elif isinstance(states, list | tuple) and states and not np.isscalar(states[0]) and (
                np.ndim(states[0]) >= 1):
            rows = list(states)
        else:
            arr = states.to_numpy(dtype=object) if hasattr(states, "to_numpy") else states
            if isinstance(arr, torch.Tensor):
                arr = arr.numpy()
            arr = arr if isinstance(arr, np.ma.MaskedArray) else np.asarray(arr, dtype=object)
            rows = [arr] if arr.ndim == 1 else list(arr)
        if len(rows) != n:
            raise ValueError(f"states has labels for {len(rows)} sequences, the data has {n}")
        out = torch.full((n, t_max), -1, dtype=torch.int64)
        for i, row in enumerate(rows):
            if isinstance(row, torch.Tensor):
                row = row.numpy()
            if hasattr(row, "to_numpy"):
                row = row.to_numpy(dtype=object)
            mask = np.ma.getmaskarray(row) if isinstance(row, np.ma.MaskedArray) else None
            vals = np.asarray(np.ma.getdata(row), dtype=object).reshape(-1)
            t = int(seqs.lengths[i])
            if vals.shape[0] != t:
                raise ValueError(f"states of sequence {i} has {vals.shape[0]} labels, the "
                                 f"sequence has {t} steps")
            unknown = np.array([v is None or v is pd.NA
                                or (isinstance(v, float) and math.isnan(v)) for v in vals])
            if mask is not None:
                unknown |= mask.reshape(-1)
            known = vals[~unknown]
            try:
                num = np.array([float(v) for v in known])
            except (TypeError, ValueError):
                raise ValueError(f"states of sequence {i} must be integers (-1 unknown)") from None
            if num.size and ((num != np.round(num)).any() or (num < -1).any()
                             or (num >= self.num_states).any()):
                raise ValueError(f"states of sequence {i} must be whole numbers in -1.."
                                 f"{self.num_states - 1}")
            lab = np.full(t, -1, dtype=np.int64)
            lab[~unknown] = num.astype(np.int64)
            out[i, :t] = torch.from_numpy(lab)
        return out

    def _scaled(self, params: dict[str, torch.Tensor], seqs: Sequences,
                states: torch.Tensor | None = None) -> inference.Scaled:
        """The scaled emission likelihoods of a batch, as the NumPy kernels take them
        (clamped to the known ``states [N, T_max]``, -1 unknown, when given)."""
        if states is not None:
            return inference.Scaled(seqs.lengths,
                                    log_lik=self._log_lik(params, seqs, states))
        if hasattr(self._em, "scaled_table"):
            table, shift = self._em.scaled_table(params)
            symbols = seqs.values
            if seqs.has_missing:  # symbol V is the table's row of ones (factor 1)
                symbols = torch.where(seqs.observed, symbols, table.shape[0])
            return inference.Scaled(seqs.lengths, table=table, shift=shift, symbols=symbols)
        if hasattr(self._em, "scaled_packed") and not seqs.has_missing:
            em = self._em
            return inference.Scaled(
                seqs.lengths, packed=lambda rows, steps: em.scaled_packed(params, seqs, rows,
                                                                          steps))
        return inference.Scaled(seqs.lengths, log_lik=self._log_lik(params, seqs))

    def _log_prob(self, seqs: Sequences) -> torch.Tensor:
        p = self._params
        return inference.hmm_log_prob(p["initial"], p["transition"], self._scaled(p, seqs),
                                      self.chunk_size)

    def _forward(self, seqs: Sequences, filtered: bool) -> dict[str, torch.Tensor]:
        p = self._params
        return inference.hmm_forward_backward(p["initial"], p["transition"],
                                              self._scaled(p, seqs), backward=False,
                                              filtered=filtered, chunk_size=self.chunk_size)

    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        return self._forward(seqs, filtered=False)["steps"]

    def _posteriors(self, seqs: Sequences, params: dict[str, torch.Tensor] | None = None,
                    states: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        p = self._params if params is None else params
        return inference.hmm_forward_backward(p["initial"], p["transition"],
                                              self._scaled(p, seqs, states),
                                              chunk_size=self.chunk_size)

    @torch.no_grad()
    def filter(self, data: Any) -> torch.Tensor:
        """Filtered marginals ``P(z_t | x_1..x_t)``.

        Returns:
            ``[N, T_max, K]`` float64 (``[T, K]`` for one sequence); zero at padded steps and
            from the first step of probability zero on.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        u = self._forward(seqs, filtered=True)["filtered"]
        return u[0] if single else u

    @torch.no_grad()
    def smoother(self, data: Any, *, states: Any = None) -> torch.Tensor:
        """Smoothed marginals ``P(z_t | x_1..x_T)`` (and the known states, when given).

        Args:
            data: the sequences.
            states: partly known states, as in :meth:`fit` (-1 unknown): the marginals
                are ``P(z_t | x_1..x_T, known states)``.

        Returns:
            ``[N, T_max, K]`` float64 (``[T, K]`` for one sequence); zero at padded steps and
            for sequences of probability zero.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        labels = None if states is None else self.coerce_states(states, seqs)
        out = self._posteriors(seqs, states=labels)["smoothed"]
        return out[0] if single else out

    @torch.no_grad()
    def most_likely_states(self, data: Any, *, states: Any = None) -> torch.Tensor:
        """The Viterbi path of each sequence.

        Args:
            data: the sequences.
            states: partly known states, as in :meth:`fit` (-1 unknown): the most likely
                path among those through them.

        Returns:
            ``[N, T_max]`` int64 states, ``-1`` at padded steps (``[T]`` for one sequence).
            Ties go to the lowest state index.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        p = self._params
        labels = None if states is None else self.coerce_states(states, seqs)
        paths, _ = inference.hmm_viterbi(p["initial"], p["transition"],
                                         self._log_lik(p, seqs, labels), seqs.lengths)
        return paths[0] if single else paths

    # ------------------------------------------------------------------ EM
    def expected_stats(self, seqs: Sequences, params: dict[str, torch.Tensor],
                       states: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """E-step: expected sufficient statistics summed over the sequences.

        Every entry is a tensor that adds up across shards of the data (so a data-parallel
        fit can all-reduce them): ``log_lik`` (0-d, the total log-likelihood at ``params``),
        ``num_sequences`` (0-d), ``initial_counts [K]``, ``transition_counts [K, K]`` and the
        emission's statistics (categorical ``emission_counts [K, V]``; gaussian ``weight
        [K]``, ``sum_x [K, D]``, ``sum_xx [K, D, D]``; poisson ``weight [K]``, ``sum_x [K]``).
        ``states [N, T_max]`` (known states, -1 unknown) clamps the posteriors.
        """
        post = inference.hmm_forward_backward(params["initial"], params["transition"],
                                              self._scaled(params, seqs, states),
                                              chunk_size=self.chunk_size, time_major=True,
                                              by_source=self.emission == "categorical")
        stats = {
            "log_lik": post["log_prob"].sum(),
            "num_sequences": torch.tensor(float(len(seqs)), dtype=torch.float64),
            "initial_counts": post["initial_counts"],
            "transition_counts": post["transition_counts"],
        }
        if "by_source" in post:
            # Summed by symbol inside the compiled pass; row V (missing symbols) left out.
            v = params["emission"].shape[1]
            stats["emission_counts"] = post["by_source"][:v].T.contiguous()
            return stats
        weights = post["weights"]  # [M, K] packed: entry i is step steps[i] of rows[i]
        rows, steps = post["index"]
        if seqs.has_missing and self.emission == "gaussian":
            # Exact expectations over the missing coordinates.
            natural = torch.zeros(len(seqs), seqs.max_length, weights.shape[-1],
                                  dtype=weights.dtype)
            natural[rows, steps] = weights
            stats.update(self._em.stats_missing(params, seqs, natural))
            return stats
        if seqs.has_missing:  # only observed emissions enter the emission statistics
            weights = weights * seqs.step_observed[rows, steps][:, None]
        stats.update(self._em.stats(self._em.values(seqs, rows, steps), weights))
        return stats

    def maximize(self, stats: dict[str, torch.Tensor],
                 params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """M-step: the parameters maximising the expected complete log-likelihood.

        A state without responsibility keeps its previous parameters (any value maximises
        the objective there), so no NaN arises.
        """
        ic = stats["initial_counts"]
        initial = ic / ic.sum() if ic.sum() > 0 else params["initial"]
        tc = stats["transition_counts"]
        rows = tc.sum(-1, keepdim=True)
        transition = torch.where(
            rows > 0, tc / torch.where(rows > 0, rows, torch.ones((), dtype=rows.dtype)),
            params["transition"],
        )
        new = {"initial": initial, "transition": transition}
        options = self._options()
        if self.emission == "gaussian" and options["data_var"] is None:
            d = params["means"].shape[-1]
            options["data_var"] = _pooled_variance(stats, d)
        options["floored"] = []
        new.update(self._em.m_step(stats, params, options))
        self._floored = options["floored"]
        return new

    def _random_params(self, seqs: Sequences) -> dict[str, torch.Tensor]:
        k = self.num_states
        dirichlet = torch.distributions.Dirichlet
        initial = dirichlet(torch.full((k,), 5.0, dtype=torch.float64)).sample()
        transition = dirichlet(torch.ones(k, k, dtype=torch.float64) + 4 * torch.eye(k)).sample()
        params = {"initial": initial, "transition": transition}
        params.update(self._em.init(seqs, k, self._options()))
        return params

    def _fit(self, seqs: Sequences, *, method: str = "em", max_epochs: int = 100,
             tol: float = 1e-6, num_restarts: int = 3, init: str = "random",
             learning_rate: float | None = None, optimizer: str = "adam",
             batch_size: int | None = None, progress: bool | None = None,
             seed: int | None = None, states: Any = None) -> None:
        """Fit by Baum-Welch EM (``method="em"``) or gradient ascent (``"gradient"``).

        Args:
            seqs: the data.
            method: ``"em"`` or ``"gradient"``.
            max_epochs: the most EM iterations (or optimizer steps) per restart.
            tol: stop when the log-likelihood improves by less than ``tol`` nats per step.
            num_restarts: random initialisations; the best final log-likelihood wins.
            init: ``"random"``, or ``"params"`` to start (once) from the current parameters.
            learning_rate: gradient method only (Adam default 0.05, L-BFGS default 1).
            optimizer: ``"adam"`` or ``"lbfgs"`` (gradient method).
            batch_size: gradient method with Adam: sequences per step (default all).
            progress: show a progress bar (None: on a terminal or in a notebook).
            seed: handled by the base class (the RNG is seeded around this call).
            states: partly known states (see :meth:`fit`).

        Under an active ``torch.distributed`` process group, EM is data-parallel: each rank
        computes the expected sufficient statistics of its shard and they are summed over
        ranks before every M-step (initialisations agree because the ranks share a seed). The
        gradient method is not data-parallel.
        """
        if method not in ("em", "gradient"):
            raise ValueError(f"method must be 'em' or 'gradient', got {method!r}")
        if init not in ("random", "params"):
            raise ValueError(f"init must be 'random' or 'params', got {init!r}")
        if init == "params" and not self._is_fitted():
            raise ValueError("init='params' needs a model that already has parameters")
        for name, v in (("max_epochs", max_epochs), ("num_restarts", num_restarts)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(tol, int | float) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        labels = None
        if states is not None:
            if method != "em":
                raise ValueError("states= (partly known states) is used by EM; "
                                 "method='gradient' does not take it")
            labels = self.coerce_states(states, seqs)
        self._prepare_data_shape(seqs)
        starts = (
            [dict(self._params)] if init == "params"
            else [self._random_params(seqs) for _ in range(num_restarts)]
        )
        if labels is not None and init == "random":
            starts = [self._labelled_start(seqs, start, labels) for start in starts]
        results = []
        self._restart_floored: list[list[int]] = []
        bar = progress_bar(len(starts) * max_epochs, progress, f"HMM {method}")
        try:
            for start in starts:
                if method == "em":
                    results.append(self._run_em(seqs, start, max_epochs, tol, bar, labels))
                else:
                    results.append(self._run_gradient(
                        seqs, start, max_epochs, tol, learning_rate, optimizer, batch_size, bar))
        finally:
            bar.close()
            self._data_var = None
        finals = [h[-1] if h else -math.inf for _, h in results]
        best = max(range(len(results)), key=lambda i: finals[i])
        if not math.isfinite(finals[best]):
            raise ValueError("every restart of the HMM fit failed (non-finite log-likelihood)")
        self._params, self.history_ = results[best]
        self.restart_log_likelihoods_ = finals
        floored = self._restart_floored[best] if best < len(self._restart_floored) else []
        if floored:
            warnings.warn(
                f"the covariance of state(s) {floored} collapsed during EM (fewer effective "
                "steps than dimensions, or a state on repeated values) and was regularised: "
                f"min_covar={self.min_covar:g} times the data's variance was added to its "
                "diagonal", RuntimeWarning, stacklevel=4)

    def _labelled_start(self, seqs: Sequences, params: dict[str, torch.Tensor],
                        labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """A random start whose emissions are refitted to the labelled steps (an M-step
        with the known states as posteriors; states without labels keep their random
        parameters), so that EM starts with the labels' numbering instead of having to
        cross a valley of the clamped likelihood to reach it."""
        known = (labels >= 0) & seqs.step_observed & seqs.mask
        rows, steps = torch.nonzero(known, as_tuple=True)
        if rows.numel() == 0:
            return params
        weights = torch.nn.functional.one_hot(labels[rows, steps], self.num_states).to(
            torch.float64)
        stats = self._em.stats(self._em.values(seqs, rows, steps), weights)
        options = self._options()
        options["floored"] = []
        out = dict(params)
        out.update(self._em.m_step(stats, params, options))
        return out

    def _prepare_data_shape(self, seqs: Sequences) -> None:
        """Read V or D from the data (the constructor's ``num_symbols`` is checked, never
        changed: ``get_config()`` is the same before and after a fit) and, for Gaussian
        emissions, the data's variance per dimension that scales the covariance floor."""
        if self.emission == "categorical":
            v = self._config_num_symbols
            if v is None:
                v = max_symbol(seqs) + 1
            else:
                check_sequences(seqs, model=self.name, num_symbols=v)
            self.num_symbols = v
        elif self.emission == "gaussian":
            d = seqs.dim
            var, count = observed_variance(seqs)
            dims = var.shape[0]
            steps = int(count.min())
            if self.covariance_type == "full" and steps <= dims:
                raise ValueError(
                    f"a Gaussian HMM with full covariances needs more observed steps than "
                    f"dimensions: the data have {steps} observed steps of dimension {dims}, so "
                    "no covariance can be estimated (if these are several univariate sequences "
                    "in one [N, T] array, pass a list of sequences or Sequences.from_padded)")
            const = torch.nonzero(~(var > 0)).reshape(-1)
            if const.numel():
                raise ValueError(
                    f"the data are constant in dimension {int(const[0])}: a Gaussian HMM has "
                    "no finite maximum-likelihood estimate there (the likelihood grows "
                    "without bound as a variance shrinks)")
            self._univariate = d is None
            self._obs_dim = 1 if d is None else d
            self._data_var = var

    def _run_em(self, seqs: Sequences, params: dict[str, torch.Tensor], max_epochs: int,
                tol: float, bar, states: torch.Tensor | None = None
                ) -> tuple[dict[str, torch.Tensor], list[float]]:
        steps = seqs.num_steps
        history: list[float] = []
        good = params  # the parameters whose log-likelihood history[-1] is
        result = params
        floored: list[int] = []  # states floored by the M-step that gave `params`
        good_floored: list[int] = []
        for it in range(max_epochs):
            # One E-step per iteration: its forward pass gives the log-likelihood of the
            # current parameters, which is what is recorded and checked (as hmmlearn does).
            stats = self._expected_stats_all_ranks(seqs, params, states)
            ll = float(stats["log_lik"])
            if not math.isfinite(ll) or any(not torch.isfinite(v).all() for v in params.values()):
                warnings.warn(
                    f"HMM EM diverged at iteration {it} (log-likelihood {ll}); keeping the "
                    "last good parameters", RuntimeWarning, stacklevel=5)
                result = good
                break
            if history and ll < history[-1] - 1e-9 * max(1.0, abs(history[-1])):
                if floored:
                    why = (f"the covariance floor (min_covar={self.min_covar:g} times the data's "
                           f"variance) was applied to state(s) {floored} in the M-step before, "
                           "so that step did not maximise exactly")
                else:
                    why = "a numerical problem"
                warnings.warn(
                    f"HMM EM log-likelihood decreased at iteration {it} ({history[-1]:.6f} -> "
                    f"{ll:.6f}): {why}; keeping the last good parameters",
                    RuntimeWarning, stacklevel=5)
                result = good
                break
            if history and ll <= history[-1]:
                result = good  # converged to rounding: keep the previous (not worse) parameters
                break
            history.append(ll)
            good, good_floored = params, floored
            bar.update(1)
            bar.set_postfix(nats_per_step=f"{-ll / steps:.5f}")
            params = self.maximize(stats, params)
            floored = list(self._floored)
            # An M-step never lowers the likelihood, so its output is the result unless it
            # is not finite.
            finite = all(torch.isfinite(v).all() for v in params.values())
            result = params if finite else good
            if not finite or (len(history) > 1 and history[-1] - history[-2] < tol * steps):
                break
        self._restart_floored.append(floored if result is params else good_floored)
        return result, history

    def _expected_stats_all_ranks(self, seqs: Sequences, params: dict[str, torch.Tensor],
                                  states: torch.Tensor | None = None
                                  ) -> dict[str, torch.Tensor]:
        """The E-step over all of ``seqs``; under an active process group each rank computes
        the statistics of its shard and they are summed over ranks (EM is then the same
        algorithm as on one process, up to the order of floating-point sums)."""
        if not distributed.is_active() or len(seqs) < distributed.world_size():
            return self.expected_stats(seqs, params, states)
        idx = distributed.shard_indices(len(seqs))
        part = seqs[idx]
        local = None if states is None else states[idx, : part.max_length]
        return distributed.all_reduce_sum(self.expected_stats(part, params, local))

    def _summary_free(self, seqs: Sequences, exog: torch.Tensor | None = None) -> Any:
        """Free parameters for :meth:`summary`: each probability row without its largest
        entry (``initial[k]``, ``transition[i,j]``, ``emission[k,v]``), Gaussian ``means[k,d]``
        and the covariances' lower triangles ``covariances[k,i,j]`` (the diagonal alone when
        ``covariance_type="diag"``), Poisson ``rates[k]``; the Hessian by autograd through
        the differentiable forward pass (missing values marginalised as in ``log_prob``)."""
        from probseq._summary import Blocks

        p, blocks = self._params, Blocks()
        parts = {"initial": blocks.add_simplex("initial", p["initial"]),
                 "transition": blocks.add_simplex("transition", p["transition"])}
        diag = False
        if self.emission == "categorical":
            parts["emission"] = blocks.add_simplex("emission", p["emission"])
        elif self.emission == "gaussian":
            parts["means"] = blocks.add("means", p["means"])
            cov = p["covariances"]
            diag = self.covariance_type == "diag"
            if diag:
                k, d = cov.shape[0], cov.shape[-1]
                labels = [f"covariances[{s},{i},{i}]" for s in range(k) for i in range(d)]
                parts["covariances"] = blocks.add("covariances",
                                                  torch.diagonal(cov, 0, -2, -1), labels)
            else:
                parts["covariances"] = blocks.add_symmetric("covariances", cov)
        else:
            parts["rates"] = blocks.add("rates", p["rates"], non_negative=True)

        def log_lik(vec: torch.Tensor) -> torch.Tensor:
            q = {name: part(vec) for name, part in parts.items()}
            if diag:
                q["covariances"] = torch.diag_embed(q["covariances"])
            return self._differentiable_log_prob(q, seqs).sum()

        return blocks.build(log_lik)

    # ------------------------------------------------------------------ gradient MLE
    def _unconstrained(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tiny = 1e-12
        raw = {
            "initial": torch.log(params["initial"] + tiny),
            "transition": torch.log(params["transition"] + tiny),
        }
        if self.emission == "categorical":
            raw["emission"] = torch.log(params["emission"] + tiny)
        elif self.emission == "gaussian":
            raw["means"] = params["means"].clone()
            chol = torch.linalg.cholesky(params["covariances"])
            diag = torch.diagonal(chol, dim1=-2, dim2=-1)
            raw["chol"] = chol.tril(-1) + torch.diag_embed(torch.log(diag))
        else:
            raw["rates"] = torch.log(params["rates"] + tiny)
        return {k: v.detach().clone().requires_grad_(True) for k, v in raw.items()}

    def _constrained(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {
            "initial": torch.softmax(raw["initial"], -1),
            "transition": torch.softmax(raw["transition"], -1),
        }
        if self.emission == "categorical":
            out["emission"] = torch.softmax(raw["emission"], -1)
        elif self.emission == "gaussian":
            out["means"] = raw["means"]
            c = raw["chol"]
            if self.covariance_type == "diag":
                c = torch.diag_embed(torch.diagonal(c, dim1=-2, dim2=-1))
            chol = c.tril(-1) + torch.diag_embed(torch.exp(torch.diagonal(c, dim1=-2, dim2=-1)))
            d = chol.shape[-1]
            var = self._data_var if self._data_var is not None else torch.ones(
                d, dtype=chol.dtype)
            # A floor relative to the data's variance keeps the fit scale-free.
            out["covariances"] = chol @ chol.transpose(-1, -2) + torch.diag(
                self.min_covar * 1e-3 * var)
        else:
            out["rates"] = torch.exp(raw["rates"])
        return out

    def _differentiable_log_prob(self, params: dict[str, torch.Tensor],
                                 seqs: Sequences) -> torch.Tensor:
        return inference.hmm_log_prob_differentiable(
            params["initial"], params["transition"], self._log_lik(params, seqs), seqs.lengths)

    def _run_gradient(self, seqs, params, max_epochs, tol, learning_rate, optimizer,
                      batch_size, bar) -> tuple[dict[str, torch.Tensor], list[float]]:
        if optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
        raw = self._unconstrained(params)
        steps = seqs.num_steps
        history: list[float] = []

        def total() -> torch.Tensor:
            return self._differentiable_log_prob(self._constrained(raw), seqs).sum()

        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(list(raw.values()), lr=learning_rate or 1.0,
                                    max_iter=max_epochs, tolerance_change=tol,
                                    line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = -total() / steps
                loss.backward()
                history.append(-loss.item() * steps)
                bar.update(1)
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam(list(raw.values()), lr=learning_rate or 0.05)
            n = len(seqs)
            for _ in range(max_epochs):
                opt.zero_grad()
                if batch_size and batch_size < n:
                    idx = torch.randperm(n)[:batch_size]
                    batch = seqs[idx]
                    loss = -self._differentiable_log_prob(self._constrained(raw), batch).sum()
                    loss = loss / batch.num_steps
                else:
                    loss = -total() / steps
                if not torch.isfinite(loss):
                    warnings.warn("HMM gradient fit diverged (non-finite loss); keeping the "
                                  "last good parameters", RuntimeWarning, stacklevel=5)
                    break
                loss.backward()
                opt.step()
                bar.update(1)
                history.append(-loss.item() * steps)  # at the parameters before this step
                if len(history) > 1 and abs(history[-1] - history[-2]) < tol * steps:
                    break
        with torch.no_grad():
            final = {k: v.detach().clone() for k, v in self._constrained(raw).items()}
            ll = float(inference.hmm_log_prob(final["initial"], final["transition"],
                                              self._scaled(final, seqs)).sum())
        if not math.isfinite(ll):
            return params, history
        history.append(ll)
        return final, history

    # ------------------------------------------------------------------ sampling
    def sample(self, num_sequences: int, length: int, *, prefix: Any | None = None,
               seed: int | None = None, return_states: bool = False,
               **options: Any) -> Sequences | tuple[Sequences, torch.Tensor]:
        """Ancestral samples (see :meth:`SequenceModel.sample`).

        Args:
            num_sequences: N.
            length: T, prefix included.
            prefix: one sequence every sample continues; the states continue from the
                filtered distribution at its last step.
            seed: makes the draw reproducible.
            return_states: also return the states ``[N, T]`` int64 (over the prefix they are
                a draw from the posterior given the prefix).

        Returns:
            A ``Sequences``, or ``(Sequences, states)`` with ``return_states=True``.
        """
        holder: list[torch.Tensor] = []
        seqs = super().sample(num_sequences, length, prefix=prefix, seed=seed,
                              _states_out=holder, **options)
        return (seqs, holder[0]) if return_states else seqs

    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                _states_out: list | None = None, prefix_observed: torch.Tensor | None = None,
                **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"unknown sample options {sorted(options)}")
        p = self._params
        n, k = num_sequences, self.num_states
        states = torch.empty(n, length, dtype=torch.int64)
        start = 0
        if prefix is None:
            states[:, 0] = torch.multinomial(p["initial"].expand(n, k), 1).squeeze(1)
        else:
            if prefix_observed is None:
                kind = "continuous" if self.emission == "gaussian" else self.data_kind
                pre = Sequences.from_list([prefix], kind=kind)
            else:
                pre = Sequences(prefix[None], torch.tensor([prefix.shape[0]]),
                                observed=prefix_observed[None])
            _, u = inference.hmm_filter(p["initial"], p["transition"], self._log_lik(p, pre),
                                        pre.lengths)
            last = u[0, -1]
            if last.sum() <= 0:
                raise ValueError("the prefix has probability zero under this model")
            start = prefix.shape[0] - 1
            states[:, start] = torch.multinomial(last.expand(n, k), 1).squeeze(1)
            states[:, : start + 1] = inference.backward_sample(u[0], p["transition"],
                                                               states[:, start])
        for t in range(start + 1, length):
            states[:, t] = torch.multinomial(p["transition"][states[:, t - 1]], 1).squeeze(1)
        if _states_out is not None:
            _states_out.append(states)
        return self._emit(p, states, prefix, prefix_observed)

    def _emit(self, p: dict[str, torch.Tensor], states: torch.Tensor,
              prefix: torch.Tensor | None, prefix_observed: torch.Tensor | None
              ) -> torch.Tensor:
        """Observations drawn given the state paths ``[S, T]``, the prefix's values kept.

        Missing prefix values are draws given the states (and, for a Gaussian step with
        some coordinates observed, given those coordinates)."""
        values = self._em.sample(p, states)
        if self.emission == "gaussian" and self._univariate:
            values = values.squeeze(-1)
        if prefix is not None:
            given = prefix.to(values.dtype).reshape(prefix.shape[0], *values.shape[2:])
            if prefix_observed is None:
                values[:, : prefix.shape[0]] = given
            else:
                obs = prefix_observed.reshape(given.shape)
                head = values[:, : prefix.shape[0]]
                if self.emission == "gaussian" and not self._univariate:
                    self._conditional_fill(head, given, obs, states[:, : prefix.shape[0]])
                head[:, obs] = given[obs]
        return values

    def _conditional_fill(self, values: torch.Tensor, given: torch.Tensor, obs: torch.Tensor,
                          states: torch.Tensor) -> None:
        """Redraw the missing coordinates of partially observed steps from their Gaussian
        conditional given the observed ones and the state (in place).

        Args:
            values: ``[S, P, D]`` draws to correct.
            given: ``[P, D]`` the prefix.
            obs: ``[P, D]`` its observed mask.
            states: ``[S, P]`` the drawn states.
        """
        means, cov = self._params["means"], self._params["covariances"]
        for t in torch.nonzero(obs.any(-1) & ~obs.all(-1)).reshape(-1).tolist():
            o = obs[t]
            u = ~o
            soo = cov[:, o][:, :, o]
            suo = cov[:, u][:, :, o]
            gain = torch.linalg.solve(soo, suo.transpose(-1, -2)).transpose(-1, -2)
            cond = cov[:, u][:, :, u] - gain @ suo.transpose(-1, -2)
            cond = 0.5 * (cond + cond.transpose(-1, -2))
            mean = means[:, u] + (gain @ (given[t, o] - means[:, o])[:, None])[..., 0]  # [K, U]
            z = states[:, t]
            chol = torch.linalg.cholesky(cond)[z]  # [S, U, U]
            eps = torch.randn(z.shape[0], int(u.sum()), 1, dtype=means.dtype)
            values[:, t, u] = mean[z] + (chol @ eps)[..., 0]

    # ------------------------------------------------------------------ Pyro
    def pyro_model(self, data: Any) -> None:
        """A Pyro model of the data with priors on every parameter; states marginalised.

        Priors: ``initial ~ Dirichlet(1)``, each ``transition`` row ``~ Dirichlet(1)``;
        categorical emission rows ``~ Dirichlet(1)``; gaussian ``means ~ Normal(data mean,
        3 * data std)``, per-dimension ``scales ~ LogNormal(log data std, 1)`` and, for full
        covariances, ``corr_chol ~ LKJCholesky(D, 1)``; poisson ``rates ~ Gamma(1, 1 / data
        mean)``. The data-dependent prior locations are an empirical-Bayes choice. The
        likelihood is ``pyro.factor("log_lik", ...)`` of the exact forward algorithm, so the
        model works with SVI (``AutoDelta``, ``AutoNormal``) and NUTS.

        Args:
            data: the sequences (any accepted input).
        """
        import pyro
        import pyro.distributions as dist

        seqs, _ = self._coerce(data, fitting=not self._is_fitted())
        k = self.num_states
        f64 = torch.float64
        initial = pyro.sample("initial", dist.Dirichlet(torch.ones(k, dtype=f64)))
        transition = pyro.sample("transition",
                                 dist.Dirichlet(torch.ones(k, k, dtype=f64)).to_event(1))
        params = {"initial": initial, "transition": transition}
        if self.emission == "categorical":
            v = self.num_symbols or max_symbol(seqs) + 1
            params["emission"] = pyro.sample(
                "emission", dist.Dirichlet(torch.ones(k, v, dtype=f64)).to_event(1))
        elif self.emission == "gaussian":
            x = imputed_steps(seqs)
            d = x.shape[-1]
            mu0 = x.mean(0)
            sd0 = x.std(0) if x.shape[0] > 1 else torch.zeros(d, dtype=f64)
            # Constant dimensions: a prior scale relative to the values (1 for zeros).
            level = torch.where(mu0 != 0, mu0.abs(), torch.ones((), dtype=f64))
            sd0 = torch.where(sd0 > 0, sd0, level)
            means = pyro.sample("means", dist.Normal(mu0.expand(k, d), 3 * sd0.expand(k, d))
                                .to_event(2))
            scales = pyro.sample("scales", dist.LogNormal(torch.log(sd0).expand(k, d),
                                                          torch.ones(k, d, dtype=f64)).to_event(2))
            if self.covariance_type == "full" and d > 1:
                corr = pyro.sample("corr_chol", dist.LKJCholesky(d, torch.tensor(1.0, dtype=f64))
                                   .expand([k]).to_event(1))
                chol = scales[..., None] * corr
                cov = chol @ chol.transpose(-1, -2)
            else:
                cov = torch.diag_embed(scales**2)
            params["means"], params["covariances"] = means, cov
        else:
            x = seqs.values[seqs.observed].to(f64)
            rate0 = 1.0 / max(float(x.mean()), 1e-3)
            params["rates"] = pyro.sample(
                "rates", dist.Gamma(torch.ones(k, dtype=f64), torch.full((k,), rate0, dtype=f64))
                .to_event(1))
        pyro.factor("log_lik", self._differentiable_log_prob(params, seqs).sum())

    # ------------------------------------------------------------------ forecasts
    def _emission_predictive(self, weights: torch.Tensor) -> torch.distributions.Distribution:
        """The observation distribution when the state has probabilities ``weights [..., K]``.

        Categorical: ``Categorical(weights @ emission)``; Gaussian: a mixture of the states'
        Normals (MultivariateNormals for D > 1); Poisson: a mixture of Poissons.
        """
        p = self._params
        dist = torch.distributions
        if self.emission == "categorical":
            probs = (weights @ p["emission"]).clamp_min(0)
            return dist.Categorical(probs=probs / probs.sum(-1, keepdim=True))
        mix = dist.Categorical(probs=weights)
        batch = weights.shape
        if self.emission == "poisson":
            return dist.MixtureSameFamily(mix, dist.Poisson(p["rates"].expand(batch)))
        if self._univariate:
            comp = dist.Normal(p["means"][:, 0].expand(batch),
                               p["covariances"][:, 0, 0].sqrt().expand(batch))
        else:
            comp = dist.MultivariateNormal(p["means"], p["covariances"]).expand(batch)
        return dist.MixtureSameFamily(mix, comp)

    def _step_predictive(self, seqs: Sequences) -> torch.distributions.Distribution:
        """``[N, T_max]``: the emission mixture under ``P(z_t | x_<t)`` (the filtered state of
        step t-1 pushed through the transition; the initial distribution at t = 1).

        After a step of probability zero the conditionals are undefined; those steps (and
        padding) use the uniform state distribution so the result stays a distribution.
        """
        p = self._params
        filtered = self._forward(seqs, filtered=True)["filtered"]  # [N, T_max, K]
        k = self.num_states
        pred = torch.empty_like(filtered)
        pred[:, 0] = p["initial"]
        pred[:, 1:] = filtered[:, :-1] @ p["transition"]
        dead = pred.sum(-1, keepdim=True) <= 0
        pred = torch.where(dead, torch.full((), 1.0 / k, dtype=pred.dtype), pred)
        return self._emission_predictive(pred / pred.sum(-1, keepdim=True))

    def _forecast(self, seqs: Sequences, horizon: int) -> torch.distributions.Distribution:
        """Exact ``[N, H]`` marginals: ``P(z_(T+h) | x_1..x_T) = filtered_T A^h`` mixed over
        the states' emission distributions."""
        p = self._params
        filtered = self._forward(seqs, filtered=True)["filtered"]
        state = filtered[torch.arange(len(seqs)), seqs.lengths - 1]  # [N, K]
        if (state.sum(-1) <= 0).any():
            i = int(torch.nonzero(state.sum(-1) <= 0)[0])
            raise ValueError(f"sequence {i} has probability zero under this model")
        steps = []
        for _ in range(horizon):
            state = state @ p["transition"]
            steps.append(state)
        weights = torch.stack(steps, dim=1)
        return self._emission_predictive(weights / weights.sum(-1, keepdim=True))


def _pooled_variance(stats: dict[str, torch.Tensor], d: int) -> torch.Tensor:
    """``[D]`` the data's variance per dimension from Gaussian E-step statistics (for a bare
    ``maximize`` call outside ``fit``)."""
    w = stats["weight"].sum()
    mean = stats["sum_x"].sum(0) / w
    second = torch.diagonal(stats["sum_xx"].sum(0), dim1=-2, dim2=-1) / w
    var = (second - mean * mean).clamp_min(0.0)
    return torch.where(var > 0, var, torch.ones((), dtype=var.dtype)).reshape(d)


def _check_spd(cov: torch.Tensor) -> None:
    # Symmetry relative to each matrix's own scale (covariances of data in tiny or huge
    # units are legitimate).
    scale = cov.abs().amax((-2, -1), keepdim=True)
    if ((cov - cov.transpose(-1, -2)).abs() > 1e-10 * scale).any():
        raise ValueError("covariances must be symmetric")
    eig = torch.linalg.eigvalsh(cov)
    if (eig <= 0).any():
        i = int(torch.nonzero((eig <= 0).any(-1))[0])
        raise ValueError(f"covariances must be positive definite (state {i} is not)")
