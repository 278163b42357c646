"""The input-output HMM: an HMM whose transition probabilities depend on covariates."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from probseq._utils import progress_bar
from probseq.base import SequenceModel
from probseq.data import Sequences
from probseq.hmm.model import HiddenMarkovModel
from probseq.iohmm import inference as io

__all__ = ["InputOutputHMM"]


class InputOutputHMM(SequenceModel):
    """A K-state HMM whose transitions are multinomial-logistic in covariates ``u_t``.

    Generative process (``u_t = exog[t]``, E covariates)::

        z_1 ~ Categorical(initial)
        z_t ~ Categorical(softmax_j(transition_bias[z_(t-1), j]
                                    + transition_weights[z_(t-1), j] . u_t))     (t >= 2)
        x_t ~ emission(z_t)           (categorical, Gaussian or Poisson, as the HMM's)

    With zero weights it is the HMM with ``transition = softmax(transition_bias)``. The
    likelihood marginalises the states exactly by the forward recursion with one transition
    matrix per step (:mod:`probseq.iohmm.inference`). ``u_1`` is not used (``initial`` is
    fixed). Logits are defined up to a constant per row ``i``; ``params`` reports them
    centred over ``j``.

    Args:
        num_states: K.
        emission: ``"categorical"``, ``"gaussian"`` or ``"poisson"``.
        num_symbols, covariance_type, min_covar: as :class:`~probseq.HiddenMarkovModel`.

    Parameters (``.params``, ``from_params``): ``initial [K]``, ``transition_bias [K, K]``,
    ``transition_weights [K, K, E]`` (rows: from), and the emission's (categorical
    ``emission [K, V]``; gaussian ``means [K, D]``, ``covariances [K, D, D]``; poisson
    ``rates [K]``). A model fitted without ``exog`` has E = 0 (a plain HMM).

    Attributes:
        history_: the log-likelihood at every EM iteration of the best restart.
        restart_log_likelihoods_: the final log-likelihood of every restart.
    """

    supports_missing = True
    supports_exog = True

    def __init__(self, num_states: int = 2, emission: str = "categorical",
                 num_symbols: int | None = None, covariance_type: str = "full",
                 min_covar: float = 1e-6):
        self._hmm = HiddenMarkovModel(num_states, emission, num_symbols=num_symbols,
                                      covariance_type=covariance_type, min_covar=min_covar)
        self.num_states = num_states
        self.emission = emission
        self._config = self._hmm.get_config()
        self._sync()
        self._bias: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None
        self.history_: list[float] = []
        self.restart_log_likelihoods_: list[float] = []

    def _sync(self) -> None:
        """Data kind, V and D follow the inner HMM (its emission)."""
        self.data_kind = self._hmm.data_kind
        self.num_symbols = self._hmm.num_symbols
        self._obs_dim = self._hmm._obs_dim

    # ------------------------------------------------------------------ parameters
    @classmethod
    def from_params(cls, *, initial: Any, transition_weights: Any, transition_bias: Any,
                    emission: Any | None = None, means: Any | None = None,
                    covariances: Any | None = None, rates: Any | None = None,
                    covariance_type: str | None = None,
                    min_covar: float = 1e-6) -> InputOutputHMM:
        """Build a model from parameters.

        Args:
            initial: ``[K]`` distribution of the first state.
            transition_weights: ``[K, K, E]`` covariate weights of the logits (rows: from).
            transition_bias: ``[K, K]`` intercepts of the logits.
            emission, means, covariances, rates, covariance_type, min_covar: the emission, as
                :meth:`probseq.HiddenMarkovModel.from_params`.

        Raises:
            ValueError: shapes that disagree, non-finite logits, or invalid HMM parameters.
        """
        bias = torch.as_tensor(transition_bias, dtype=torch.float64).clone()
        weights = torch.as_tensor(transition_weights, dtype=torch.float64).clone()
        if bias.ndim != 2 or bias.shape[0] != bias.shape[1]:
            raise ValueError(f"transition_bias must have shape [K, K], got {tuple(bias.shape)}")
        k = bias.shape[0]
        if weights.ndim != 3 or weights.shape[:2] != (k, k):
            raise ValueError(f"transition_weights must have shape [{k}, {k}, E], got "
                             f"{tuple(weights.shape)}")
        if not (torch.isfinite(bias).all() and torch.isfinite(weights).all()):
            raise ValueError("transition_bias and transition_weights must be finite")
        hmm = HiddenMarkovModel.from_params(
            initial=initial, transition=torch.softmax(bias, -1), emission=emission, means=means,
            covariances=covariances, rates=rates, covariance_type=covariance_type,
            min_covar=min_covar)
        if hmm.num_states != k:
            raise ValueError(f"initial has {hmm.num_states} states, transition_bias has {k}")
        model = cls(k, hmm.emission, covariance_type=hmm.covariance_type, min_covar=min_covar)
        model._hmm = hmm
        model._sync()
        model._bias, model._weights = _centred(bias, weights)
        return model

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The parameters (copies), named as ``from_params`` takes them."""
        self._check_fitted()
        out = {n: v.clone() for n, v in self._hmm.params.items() if n != "transition"}
        out["transition_bias"] = self._bias.clone()
        out["transition_weights"] = self._weights.clone()
        return out

    @property
    def num_exog(self) -> int:
        """E, the number of covariates of the transitions (0: a plain HMM)."""
        return 0 if self._weights is None else int(self._weights.shape[2])

    @property
    def num_params(self) -> int:
        """``K - 1`` initial, ``K (K - 1) (1 + E)`` logits (a row's logits are defined up to
        a constant), and the emission's parameters."""
        self._check_fitted()
        k = self.num_states
        em = self._hmm._em.num_params(self._hmm._params, self._hmm._options())
        return (k - 1) + k * (k - 1) * (1 + self.num_exog) + em

    def _is_fitted(self) -> bool:
        return self._bias is not None

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = dict(self._hmm._params)
        out["transition_bias"] = self._bias
        out["transition_weights"] = self._weights
        return out

    def _meta(self) -> dict[str, Any]:
        return {"hmm": self._hmm._meta(), "history": [float(v) for v in self.history_]}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        for name in ("transition_bias", "transition_weights"):
            if name not in tensors:
                raise KeyError(f"missing tensor {name}")
        self._bias = tensors["transition_bias"].to(torch.float64)
        self._weights = tensors["transition_weights"].to(torch.float64)
        inner = {n: v for n, v in tensors.items() if not n.startswith("transition_")}
        self._hmm._load_state(inner, meta.get("hmm", {}))
        self._sync()
        self.history_ = list(meta.get("history", []))

    # ------------------------------------------------------------------ recursions
    def _checked_exog(self, exog: torch.Tensor | None) -> torch.Tensor | None:
        e = self.num_exog
        if e == 0:
            if exog is not None:
                raise ValueError(f"this {self.name} was fitted without covariates; do not "
                                 "pass exog=")
            return None
        if exog is None:
            raise ValueError(f"this {self.name} has {e} covariate(s) in its transitions; pass "
                             "exog= with the covariates of every step")
        if exog.shape[2] != e:
            raise ValueError(f"exog has {exog.shape[2]} covariates, the model has {e}")
        return exog

    def _transitions(self, n: int, steps: int, exog: torch.Tensor | None,
                     bias: torch.Tensor | None = None,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, steps, K, K]`` transition matrices into each step."""
        bias = self._bias if bias is None else bias
        weights = self._weights if weights is None else weights
        if exog is None or weights.shape[2] == 0:
            k = bias.shape[0]
            return torch.softmax(bias, -1).expand(n, steps, k, k)
        return io.softmax_transitions(bias, weights, exog[:, :steps])

    def _forward(self, seqs: Sequences, exog: torch.Tensor | None,
                 smooth: bool = False) -> dict[str, torch.Tensor]:
        exog = self._checked_exog(exog)
        p = self._hmm._params
        trans = self._transitions(len(seqs), seqs.max_length, exog)
        ll = self._hmm._log_lik(p, seqs)
        fn = io.forward_backward if smooth else io.forward
        return fn(p["initial"], trans, ll, seqs.lengths)

    def _log_prob_steps(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        return self._forward(seqs, exog)["steps"]

    @torch.no_grad()
    def filter(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """Filtered marginals ``P(z_t | x_1..x_t, u)``: ``[N, T_max, K]`` (``[T, K]`` for
        one sequence)."""
        self._check_fitted()
        seqs, single = self._coerce(data)
        u = self._forward(seqs, self._coerce_exog(exog, seqs, data))["filtered"]
        u = torch.where(seqs.mask[..., None], u, torch.zeros((), dtype=u.dtype))
        return u[0] if single else u

    @torch.no_grad()
    def smoother(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """Smoothed marginals ``P(z_t | x_1..x_T, u)``: ``[N, T_max, K]``."""
        self._check_fitted()
        seqs, single = self._coerce(data)
        out = self._forward(seqs, self._coerce_exog(exog, seqs, data), smooth=True)["smoothed"]
        return out[0] if single else out

    @torch.no_grad()
    def most_likely_states(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """The Viterbi path: ``[N, T_max]`` int64, -1 at padding (``[T]`` for one sequence)."""
        self._check_fitted()
        seqs, single = self._coerce(data)
        ex = self._checked_exog(self._coerce_exog(exog, seqs, data))
        p = self._hmm._params
        paths = io.viterbi(p["initial"], self._transitions(len(seqs), seqs.max_length, ex),
                           self._hmm._log_lik(p, seqs), seqs.lengths)
        return paths[0] if single else paths

    # ------------------------------------------------------------------ fitting
    def fit(self, data: Any, *, exog: Any = None, max_epochs: int = 100, tol: float = 1e-6,
            num_restarts: int = 3, progress: bool | None = None, seed: int | None = None,
            **unknown: Any) -> InputOutputHMM:
        """Fit by EM with random restarts.

        The E-step is the forward-backward pass with one transition matrix per step. The
        M-step sets ``initial`` and the emissions in closed form (as the HMM's EM) and
        maximises the expected complete log-likelihood of the transitions,
        ``sum_t sum_(i,j) P(z_(t-1)=i, z_t=j | x) log softmax_j(b_ij + w_ij . u_t)``, a
        concave function of the logits' parameters, by L-BFGS from the previous values (a
        ridge of 1e-6 on the weights of the standardised covariates keeps it bounded when
        the covariates separate the moves). Covariates are standardised for the fit and
        the weights mapped back. The fit is not data-parallel (every rank fits the whole
        data).

        Args:
            data: the sequences.
            exog: covariates ``[T, E]`` / ``[N, T, E]`` aligned with the data (None: E = 0,
                a plain HMM).
            max_epochs: the most EM iterations per restart.
            tol: stop when the log-likelihood improves by less than ``tol`` nats per step.
            num_restarts: random initialisations; the best final log-likelihood wins.
            progress: show a progress bar (None: on a terminal or in a notebook).
            seed: makes the initialisations reproducible.

        Returns:
            self.
        """
        return super().fit(data, exog=exog, max_epochs=max_epochs, tol=tol,
                           num_restarts=num_restarts, progress=progress, seed=seed, **unknown)

    def _fit(self, seqs: Sequences, *, exog: torch.Tensor | None = None, max_epochs: int = 100,
             tol: float = 1e-6, num_restarts: int = 3, progress: bool | None = None,
             seed: int | None = None) -> None:
        for name, v in (("max_epochs", max_epochs), ("num_restarts", num_restarts)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(tol, int | float) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        hmm = HiddenMarkovModel(**self._config)
        hmm._prepare_data_shape(seqs)
        e = 0 if exog is None else exog.shape[2]
        x = torch.zeros(len(seqs), seqs.max_length, 0, dtype=torch.float64)
        centre = torch.zeros(e, dtype=torch.float64)
        scale = torch.ones(e, dtype=torch.float64)
        if e:
            raw = exog[:, : seqs.max_length]
            rows = raw[seqs.mask]
            centre, scale = rows.mean(0), rows.std(0)
            scale = torch.where(scale > 0, scale, torch.ones((), dtype=scale.dtype))
            x = torch.where(seqs.mask[..., None], (raw - centre) / scale,
                            torch.zeros((), dtype=torch.float64))
        k = self.num_states
        results = []
        bar = progress_bar(num_restarts * max_epochs, progress, "IO-HMM EM")
        try:
            for _ in range(num_restarts):
                params = hmm._random_params(seqs)
                bias = torch.log(params.pop("transition"))
                weights = 0.1 * torch.randn(k, k, e, dtype=torch.float64)
                results.append(self._run_em(hmm, seqs, x, params, bias, weights, max_epochs,
                                            tol, bar))
        finally:
            bar.close()
            hmm._data_var = None
        finals = [h[-1] if h else -math.inf for *_, h in results]
        best = max(range(len(results)), key=lambda i: finals[i])
        if not math.isfinite(finals[best]):
            raise ValueError("every restart of the IO-HMM fit failed (non-finite "
                             "log-likelihood)")
        params, bias, weights, history = results[best]
        weights = weights / scale  # logits: b + w_z . (u - c) / s
        bias = bias - weights @ centre
        self._bias, self._weights = _centred(bias, weights)
        params["transition"] = torch.softmax(self._bias, -1)
        hmm._params = params
        self._hmm = hmm
        self._sync()
        self.history_ = history
        self.restart_log_likelihoods_ = finals

    def _run_em(self, hmm: HiddenMarkovModel, seqs: Sequences, x: torch.Tensor,
                params: dict[str, torch.Tensor], bias: torch.Tensor, weights: torch.Tensor,
                max_epochs: int, tol: float, bar) -> tuple:
        steps = seqs.num_steps
        history: list[float] = []
        good = (params, bias, weights)
        for _ in range(max_epochs):
            trans = self._transitions(len(seqs), seqs.max_length, x if x.shape[2] else None,
                                      bias, weights)
            post = io.forward_backward(params["initial"], trans, hmm._log_lik(params, seqs),
                                       seqs.lengths)
            ll = float(post["log_prob"].sum())
            if not math.isfinite(ll) or (history and ll < history[-1] - 1e-8 * abs(ll)):
                if history and math.isfinite(ll):
                    warnings.warn(f"IO-HMM EM log-likelihood decreased ({history[-1]:.6f} -> "
                                  f"{ll:.6f}); keeping the last good parameters",
                                  RuntimeWarning, stacklevel=6)
                break
            history.append(ll)
            good = (params, bias, weights)
            bar.update(1)
            if len(history) > 1 and history[-1] - history[-2] < tol * steps:
                break
            params = self._m_step_emissions(hmm, seqs, params, post)
            bias, weights = _m_step_transitions(post["pairs"], x, bias, weights)
        return (*good, history)

    @staticmethod
    def _m_step_emissions(hmm: HiddenMarkovModel, seqs: Sequences,
                          params: dict[str, torch.Tensor],
                          post: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``initial`` and the emissions from the smoothed marginals (the HMM's M-step)."""
        smoothed = post["smoothed"]
        first = smoothed[:, 0].sum(0)
        new = {"initial": first / first.sum()}
        options = hmm._options()
        options["floored"] = []
        if seqs.has_missing and hmm.emission == "gaussian":
            stats = hmm._em.stats_missing(params, seqs, smoothed)
        else:
            rows, steps = torch.nonzero(seqs.mask, as_tuple=True)
            weights = smoothed[rows, steps]
            if seqs.has_missing:
                weights = weights * seqs.step_observed[rows, steps][:, None]
            stats = hmm._em.stats(hmm._em.values(seqs, rows, steps), weights)
        new.update(hmm._em.m_step(stats, params, options))
        return new

    # ------------------------------------------------------------------ sampling, forecasts
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                exog: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"{self.name}.sample got unknown options {sorted(options)}")
        exog = self._checked_exog(exog)
        n, k = num_sequences, self.num_states
        p = self._hmm._params
        trans = self._transitions(n, length, exog)
        states = torch.empty(n, length, dtype=torch.int64)
        start = 0
        if prefix is None:
            states[:, 0] = torch.multinomial(p["initial"].expand(n, k), 1)[:, 0]
        else:
            t0 = prefix.shape[0]
            if exog is not None and not torch.equal(exog[:, :t0], exog[:1, :t0].expand(
                    n, -1, -1)):
                raise ValueError("with a prefix, every sample needs the same covariates over "
                                 "the prefix's steps")
            kind = "continuous" if self.emission == "gaussian" else self.data_kind
            pre = Sequences.from_list([prefix], kind=kind)
            ll = self._hmm._log_lik(p, pre)
            filt = io.forward(p["initial"], trans[:1, :t0], ll, pre.lengths)["filtered"]
            last = filt[0, -1]
            if not last.sum() > 0:
                raise ValueError("the prefix has probability zero under this model")
            start = t0 - 1
            states[:, start] = torch.multinomial(last.expand(n, k), 1, replacement=True)[:, 0]
        for t in range(start + 1, length):
            rows = trans[torch.arange(n), t, states[:, t - 1]]  # [n, K]
            states[:, t] = torch.multinomial(rows, 1)[:, 0]
        if prefix is not None:
            states[:, :start] = states[:, start : start + 1]  # not read: prefix values kept
        values = self._hmm._em.sample(p, states)
        if self.emission == "gaussian" and self._hmm._univariate:
            values = values.squeeze(-1)
        if prefix is not None:
            values[:, : prefix.shape[0]] = prefix.to(values.dtype).reshape(
                prefix.shape[0], *values.shape[2:])
        return values

    def _step_predictive(self, seqs: Sequences,
                         exog: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """``[N, T_max]``: the emission mixture under ``P(z_t | x_<t, u)``."""
        exog = self._checked_exog(exog)
        p = self._hmm._params
        trans = self._transitions(len(seqs), seqs.max_length, exog)
        filt = io.forward(p["initial"], trans, self._hmm._log_lik(p, seqs),
                          seqs.lengths)["filtered"]
        pred = torch.empty_like(filt)
        pred[:, 0] = p["initial"]
        pred[:, 1:] = (filt[:, :-1, None, :] @ trans[:, 1:])[:, :, 0]
        bad = ~(pred.sum(-1, keepdim=True) > 0)
        pred = torch.where(bad, torch.full((), 1.0 / self.num_states, dtype=pred.dtype), pred)
        return self._hmm._emission_predictive(pred / pred.sum(-1, keepdim=True))

    def _forecast(self, seqs: Sequences, horizon: int,
                  exog: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """Exact ``[N, H]`` marginals: the filtered state at T pushed through the transition
        matrices of the future covariates, mixed over the emissions."""
        exog = self._checked_exog(exog)
        p = self._hmm._params
        n = len(seqs)
        filt = io.forward(p["initial"], self._transitions(n, seqs.max_length, exog),
                          self._hmm._log_lik(p, seqs), seqs.lengths)["filtered"]
        state = filt[torch.arange(n), seqs.lengths - 1]
        if not bool((state.sum(-1) > 0).all()):
            i = int(torch.nonzero(~(state.sum(-1) > 0))[0])
            raise ValueError(f"sequence {i} has probability zero under this model")
        out = []
        for h in range(horizon):
            if exog is None:
                a = torch.softmax(self._bias, -1).expand(n, -1, -1)
            else:
                u = exog[torch.arange(n), seqs.lengths + h]  # [N, E]: the step T + h + 1
                a = torch.softmax(self._bias + torch.einsum("ije,ne->nij", self._weights, u), -1)
            state = (state[:, None, :] @ a)[:, 0]
            out.append(state)
        weights = torch.stack(out, 1)
        return self._hmm._emission_predictive(weights / weights.sum(-1, keepdim=True))


def _centred(bias: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits' parameters centred over the destination state (the softmax is unchanged)."""
    return bias - bias.mean(1, keepdim=True), weights - weights.mean(1, keepdim=True)


def _m_step_transitions(pairs: torch.Tensor, x: torch.Tensor, bias: torch.Tensor,
                        weights: torch.Tensor, ridge: float = 1e-6,
                        max_iter: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise ``sum_(n,t,i,j) pairs[n,t,i,j] log softmax_j(b_ij + w_ij . x[n,t])`` (minus
    ``ridge`` times the squared weights, per unit of expected moves) by L-BFGS.

    Args:
        pairs: ``[N, T, K, K]`` expected moves into each step (zero at t = 0 and padding).
        x: ``[N, T, E]`` standardised covariates; bias ``[K, K]``; weights ``[K, K, E]``.
    """
    counts = pairs.sum((0, 1))
    total = float(counts.sum())
    if total <= 0:
        return bias, weights
    if weights.shape[2] == 0:  # no covariates: the closed form
        rows = counts.sum(-1, keepdim=True)
        trans = torch.where(rows > 0, counts / rows.clamp_min(1e-300), torch.softmax(bias, -1))
        return torch.log(trans.clamp_min(1e-300)), weights
    live = pairs.sum((2, 3)) > 0
    xi = pairs[live]  # [R, K, K]
    u = x[live]  # [R, E]
    b = bias.clone().requires_grad_(True)
    w = weights.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([b, w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = b[None] + torch.einsum("ije,re->rij", w, u)
        obj = (xi * torch.log_softmax(logits, -1)).sum() - ridge * total * (w**2).sum()
        loss = -obj / total
        loss.backward()
        return loss

    opt.step(closure)
    return b.detach(), w.detach()
