"""Markov-switching autoregressions: Hamilton's (1989) model and the AR-HMM."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from probseq import distributed
from probseq._utils import param_array, progress_bar
from probseq.base import SequenceModel
from probseq.data import Sequences
from probseq.hmm import inference as hmm
from probseq.switching import inference as sw
from probseq.validation import probability_vectors

__all__ = ["SwitchingAutoRegressive"]

_FORMS = ("mean", "intercept")


def _positive_int(x: Any, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    return int(x)


class SwitchingAutoRegressive(SequenceModel):
    """A Markov-switching autoregression of order p with K regimes, exact likelihoods.

    Generative process, Hamilton's mean form (``switching="mean"``, univariate)::

        S_1 ~ Categorical(initial),  S_t ~ Categorical(transition[S_(t-1)])
        u_1..u_p ~ the stationary AR(p) distribution (regime S_1's coefficients)
        u_t = sum_i coef_i[S_t] u_(t-i) + e_t,  e_t ~ N(0, noise_var[S_t])   (t > p)
        y_t = means[S_t] + u_t

    that is ``y_t - mu[S_t] = sum_i coef_i (y_(t-i) - mu[S_(t-i)]) + e_t``: the regime shifts
    the level the series is drawn back to. The AR-HMM form (``switching="intercept"``, as
    dynamax's and ssm's ``LinearAutoregressiveHMM``, univariate ``[T]`` or multivariate
    ``[T, D]``) is ``y_t = intercept[S_t] + sum_i coef_i[S_t] y_(t-i) + e_t``, its first p
    values drawn from the stationary distribution of regime S_1's VAR(p). Coefficients and
    noise are shared by the regimes unless ``switching_ar`` / ``switching_variance``.

    Covariates ``x_t [E]`` (mean form, ``exog=``) move the regime levels, as in statsmodels'
    ``MarkovAutoregression(exog=...)``: with coefficients shared by the regimes
    (``exog_coef [E]``) ``y_t - x_t . exog_coef`` follows the model without covariates; with
    ``switching_exog`` each regime has its own (``exog_coef [K, E]``) and::

        y_t - mu[S_t] - x_t . beta[S_t] = sum_i coef_i (y_(t-i) - mu[S_(t-i)]
                                                         - x_(t-i) . beta[S_(t-i)]) + e_t

    (the first p values Gaussian around ``mu[S_t] + x_t . beta[S_t]`` with the stationary
    covariance), so the windows of regimes read each lag's own level.

    ``log_prob`` is the exact joint density of all T values, regime paths marginalised by a
    forward pass over the last ``p + 1`` regimes (``K^(p+1)`` window states, see
    :mod:`probseq.switching.inference`), so it is comparable with every other model.
    :meth:`conditional_log_prob` is Hamilton's conditional likelihood of the steps after the
    first p, as statsmodels' ``MarkovAutoregression`` computes it.

    Missing values (NaN, or single coordinates of a vector) are marginalised exactly by
    ``log_prob``, ``log_prob_steps``, ``filter``, ``smoother``, ``most_likely_states`` and the
    one-step predictive: a step whose last p values are not all observed is scored by the
    exact Gaussian of the segment back to the latest p observed values, with the windows of
    regimes grown to cover it (refused beyond 4096 windows). ``sample`` after a gappy
    prefix, and so ``forecast`` and ``backtest`` beyond one step, draw the regimes (forward
    filtering, backward sampling over those windows) and then the missing values given the
    regimes exactly; forecasts stay exact (Gaussian mixtures) when the last p values are
    observed. ``fit`` maximises the exact likelihood of gappy univariate data (see
    :meth:`fit`); ``fit(conditional=True)`` and ``conditional_log_prob`` need complete data.

    Args:
        num_regimes: K >= 1.
        order: p >= 0.
        switching: ``"mean"`` (Hamilton) or ``"intercept"`` (AR-HMM).
        switching_ar: each regime has its own AR coefficients.
        switching_variance: each regime has its own noise variance (covariance).
        switching_exog: each regime has its own covariate coefficients (mean form; used
            when ``fit`` is given ``exog=``).

    Parameters (``.params``, ``from_params``): ``transition [K, K]`` (rows: from),
    ``initial [K]`` (default: the stationary distribution of the chain), ``means [K]`` (mean
    form) or ``intercept [K]`` / ``[K, D]``, ``coef [p]`` (``[K, p]`` with ``switching_ar``;
    ``[p, D, D]`` / ``[K, p, D, D]`` multivariate, lag 1 first), ``noise_var`` (scalar or
    ``[K]``; multivariate ``noise_cov [D, D]`` / ``[K, D, D]``), and with covariates
    ``exog_coef`` (``[E]``, or ``[K, E]`` with ``switching_exog``).

    Attributes:
        history_: the conditional log-likelihood (nats, data units) at every EM iteration of
            the best restart, then the fit objective after EM, then after the L-BFGS polish
            (when it ran on that restart); ``history_[-1]`` is the objective reached.
        restart_log_likelihoods_: the final objective of every restart.
    """

    data_kind = "continuous"
    supports_missing = True
    supports_exog = True
    summary_params = ("transition", "means", "intercept", "coef", "noise_var", "noise_cov",
                      "exog_coef")
    _summary_conditional: bool | None = None  # None: the criterion of the last fit

    def __init__(self, num_regimes: int = 2, order: int = 1, switching: str = "mean",
                 switching_ar: bool = False, switching_variance: bool = False,
                 switching_exog: bool = False):
        self.num_regimes = _positive_int(num_regimes, "num_regimes", 1)
        self.order = _positive_int(order, "order", 0)
        if switching not in _FORMS:
            raise ValueError(f"switching must be 'mean' or 'intercept', got {switching!r}")
        for name, v in (("switching_ar", switching_ar),
                        ("switching_variance", switching_variance),
                        ("switching_exog", switching_exog)):
            if not isinstance(v, bool):
                raise ValueError(f"{name} must be True or False, got {v!r}")
        if switching_exog and switching != "mean":
            raise ValueError("switching_exog=True needs the mean form (switching=\"mean\"): "
                             "covariates enter as statsmodels' MarkovAutoregression has them")
        self.switching = switching
        self.switching_ar = switching_ar
        self.switching_variance = switching_variance
        self.switching_exog = switching_exog
        self._obs_dim = None if switching == "mean" else "any"
        self._univariate = True
        self._p: dict[str, torch.Tensor] | None = None  # transition, loc, coef, cov (full)
        self._initial: torch.Tensor | None = None  # None: the stationary distribution
        self.history_: list[float] = []
        self.restart_log_likelihoods_: list[float] = []
        self._fit_conditional = False  # the criterion of the last fit

    # ------------------------------------------------------------------ parameters
    @classmethod
    def from_params(cls, *, transition: Any, coef: Any, means: Any | None = None,
                    intercept: Any | None = None, noise_var: Any | None = None,
                    noise_cov: Any | None = None, initial: Any | None = None,
                    exog_coef: Any | None = None) -> SwitchingAutoRegressive:
        """Build a model from parameters; the form and the switching flags follow the shapes.

        Args:
            transition: ``[K, K]`` regime transition probabilities (rows: from).
            coef: ``[p]`` shared or ``[K, p]`` switching AR coefficients, lag 1 first;
                multivariate ``[p, D, D]`` or ``[K, p, D, D]``.
            means: ``[K]`` regime means: Hamilton's mean form.
            intercept: ``[K]`` or ``[K, D]`` regime intercepts: the AR-HMM form.
            noise_var: a scalar (shared) or ``[K]`` (switching) noise variance, univariate.
            noise_cov: ``[D, D]`` or ``[K, D, D]`` noise covariance, multivariate AR-HMM.
            initial: ``[K]`` distribution of the first regime (default: stationary).
            exog_coef: covariate coefficients (mean form): ``[E]`` shared by the regimes
                (``y_t - x_t . exog_coef`` follows the model without covariates) or
                ``[K, E]`` one vector per regime (``switching_exog``: the regime's level at
                step t is ``means[k] + x_t . exog_coef[k]``, and
                ``y_t - means[S_t] - x_t . exog_coef[S_t] = sum_i coef_i (y_(t-i) -
                means[S_(t-i)] - x_(t-i) . exog_coef[S_(t-i)]) + e_t``, statsmodels'
                ``MarkovAutoregression(exog=..., switching_exog=True)``).

        Probabilities valid to rounding (see :func:`probseq.validation.probability_vectors`)
        are projected once: negative rounding set to 0, each vector divided by its sum.

        Raises:
            ValueError: rows of ``transition`` or ``initial`` not summing to 1 within 1e-6 or
                negative beyond rounding, non-positive variances, covariances not symmetric positive
                definite, shapes that disagree, or a regime whose autoregression is not
                stationary.
        """
        if (means is None) == (intercept is None):
            raise ValueError("give exactly one of means=[K] (Hamilton's mean form) or "
                             "intercept=[K] / [K, D] (the AR-HMM form)")
        form = "mean" if means is not None else "intercept"
        trans = param_array(transition, "transition")
        if trans.ndim != 2 or trans.shape[0] != trans.shape[1]:
            raise ValueError(f"transition must have shape [K, K], got {trans.shape}")
        k = trans.shape[0]
        trans = probability_vectors(trans, "transition")
        loc = param_array(means if form == "mean" else intercept,
                          "means" if form == "mean" else "intercept")
        if loc.ndim == 1:
            loc = loc[:, None]
            univariate = True
        elif loc.ndim == 2 and form == "intercept":
            univariate = False
        else:
            raise ValueError(f"means must have shape [{k}], got {loc.shape}" if form == "mean"
                             else f"intercept must have shape [{k}] or [{k}, D], got {loc.shape}")
        if loc.shape[0] != k:
            raise ValueError(f"{'means' if form == 'mean' else 'intercept'} has {loc.shape[0]} "
                             f"regimes but transition has {k}")
        d = loc.shape[1]
        a = param_array(coef, "coef")
        base = 1 if univariate else 3
        if a.ndim == base:
            switching_ar, a = False, np.broadcast_to(a, (k,) + a.shape).copy()
        elif a.ndim == base + 1 and a.shape[0] == k:
            switching_ar = True
        else:
            want = f"[p] or [{k}, p]" if univariate else f"[p, {d}, {d}] or [{k}, p, {d}, {d}]"
            raise ValueError(f"coef must have shape {want}, got {np.shape(coef)}")
        if univariate:
            a = a[:, :, None, None]
        elif a.shape[2:] != (d, d):
            raise ValueError(f"coef must have shape [..., p, {d}, {d}], got {a.shape}")
        p = a.shape[1]
        if univariate:
            if noise_cov is not None or noise_var is None:
                raise ValueError("univariate models take noise_var (a scalar or [K])")
            s2 = param_array(noise_var, "noise_var")
            if s2.ndim == 0:
                switching_variance, s2 = False, np.full(k, float(s2))
            elif s2.shape == (k,):
                switching_variance = True
            else:
                raise ValueError(f"noise_var must be a scalar or [{k}], got shape {s2.shape}")
            if not (s2 > 0).all():
                raise ValueError(f"noise_var must be > 0, got {s2}")
            cov = s2[:, None, None]
        else:
            if noise_var is not None or noise_cov is None:
                raise ValueError("multivariate models take noise_cov ([D, D] or [K, D, D])")
            cov = param_array(noise_cov, "noise_cov")
            if cov.shape == (d, d):
                switching_variance, cov = False, np.broadcast_to(cov, (k, d, d)).copy()
            elif cov.shape == (k, d, d):
                switching_variance = True
            else:
                raise ValueError(f"noise_cov must have shape [{d}, {d}] or [{k}, {d}, {d}], "
                                 f"got {cov.shape}")
            if not np.allclose(cov, cov.transpose(0, 2, 1), rtol=1e-10, atol=1e-12):
                raise ValueError("noise_cov must be symmetric")
            if (np.linalg.eigvalsh(cov) <= 0).any():
                raise ValueError("noise_cov must be positive definite")
        init = None
        if initial is not None:
            init = param_array(initial, "initial")
            if init.shape != (k,):
                raise ValueError(f"initial must have shape [{k}], got {init.shape}")
            init = torch.from_numpy(probability_vectors(init, "initial"))
        beta = None
        if exog_coef is not None:
            if form != "mean":
                raise ValueError("covariates (exog_coef) are supported in the mean form "
                                 "(statsmodels' MarkovAutoregression with exog)")
            beta = param_array(exog_coef, "exog_coef")
            if beta.ndim not in (1, 2) or (beta.ndim == 2 and beta.shape[0] != k):
                raise ValueError(f"exog_coef must have shape [E] (shared) or [{k}, E] (one "
                                 f"vector per regime), got {beta.shape}")
        model = cls(k, p, form, switching_ar=switching_ar, switching_variance=switching_variance,
                    switching_exog=beta is not None and beta.ndim == 2)
        params = {"transition": torch.from_numpy(trans), "loc": torch.from_numpy(loc.copy()),
                  "coef": torch.from_numpy(np.ascontiguousarray(a)),
                  "cov": torch.from_numpy(np.ascontiguousarray(cov))}
        radius = sw.companion_radius(params["coef"])
        if p and (radius >= 1 - 1e-9).any():
            bad = int(torch.nonzero(radius >= 1 - 1e-9)[0])
            raise ValueError(
                f"the autoregression of regime {bad} is not stationary (companion spectral "
                f"radius {float(radius[bad]):.6g} >= 1), so the first {p} values have no "
                "stationary distribution")
        if beta is not None:
            params["beta"] = torch.from_numpy(beta.copy())
        model._p, model._initial = params, init
        model._univariate = univariate
        if form == "intercept":
            model._obs_dim = None if univariate else d
        return model

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The parameters as a dict of tensors (copies), shaped as ``from_params`` takes them."""
        self._check_fitted()
        return self._public(self._p, self._initial)

    def _public(self, p: dict[str, torch.Tensor],
                initial: torch.Tensor | None) -> dict[str, torch.Tensor]:
        coef = p["coef"] if self.switching_ar else p["coef"][0]
        cov = p["cov"] if self.switching_variance else p["cov"][0]
        out = {"transition": p["transition"].clone()}
        out["initial"] = (initial if initial is not None
                          else sw.stationary_distribution(p["transition"])).clone()
        name = "means" if self.switching == "mean" else "intercept"
        if self._univariate:
            out[name] = p["loc"][:, 0].clone()
            out["coef"] = coef[..., 0, 0].clone()
            out["noise_var"] = cov[..., 0, 0].clone()
            if "beta" in p:
                out["exog_coef"] = p["beta"].clone()
        else:
            out[name] = p["loc"].clone()
            out["coef"] = coef.clone()
            out["noise_cov"] = cov.clone()
        return out

    def _initial_probs(self, p: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        p = self._p if p is None else p
        if "initial" in p:  # the model's own parameters for a batch (see :meth:`_prepare`)
            return p["initial"]
        if self._initial is not None and p is self._p:
            return self._initial
        pi = sw.stationary_distribution(p["transition"]).clamp_min(0)
        return pi / pi.sum()

    # ------------------------------------------------------------------ protocol
    @property
    def num_exog(self) -> int:
        """E, the number of covariates (0: fitted without ``exog``)."""
        beta = None if self._p is None else self._p.get("beta")
        return 0 if beta is None else int(beta.shape[-1])

    @property
    def num_params(self) -> int:
        """Free parameters: ``K (K - 1)`` transitions, K means (intercepts) times D, the
        coefficients, the noise (co)variances and the covariate coefficients (E, or ``K E``
        with ``switching_exog``), shared or per regime (the initial distribution is the
        stationary one, not a free parameter)."""
        self._check_fitted()
        k, p = self.num_regimes, self.order
        d = 1 if self._univariate else int(self._obs_dim)
        n_coef = (k if self.switching_ar else 1) * p * d * d
        n_cov = (k if self.switching_variance else 1) * d * (d + 1) // 2
        n_exog = (k if self._p.get("beta") is not None and self._p["beta"].dim() == 2
                  else 1) * self.num_exog
        return k * (k - 1) + k * d + n_coef + n_cov + n_exog

    def _is_fitted(self) -> bool:
        return self._p is not None

    def get_config(self) -> dict[str, Any]:
        return {"num_regimes": self.num_regimes, "order": self.order,
                "switching": self.switching, "switching_ar": self.switching_ar,
                "switching_variance": self.switching_variance,
                "switching_exog": self.switching_exog}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = dict(self._p)
        if self._initial is not None:
            out["initial"] = self._initial
        return out

    def _meta(self) -> dict[str, Any]:
        return {"univariate": self._univariate, "obs_dim": self._obs_dim,
                "history": [float(v) for v in self.history_],
                "fit_conditional": self._fit_conditional}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        names = ("transition", "loc", "coef", "cov")
        missing = [n for n in names if n not in tensors]
        if missing:
            raise KeyError(f"missing tensors {missing}")
        self._p = {n: tensors[n].to(torch.float64) for n in names}
        if "beta" in tensors:
            self._p["beta"] = tensors["beta"].to(torch.float64)
        if self._p["coef"].shape[:2] != (self.num_regimes, self.order):
            raise KeyError(f"coef of shape {tuple(self._p['coef'].shape)} for K="
                           f"{self.num_regimes}, p={self.order}")
        init = tensors.get("initial")
        self._initial = None if init is None else init.to(torch.float64)
        self._univariate = bool(meta.get("univariate", True))
        self._obs_dim = meta.get("obs_dim", self._obs_dim)
        self.history_ = list(meta.get("history", []))
        self._fit_conditional = bool(meta.get("fit_conditional", False))

    # ------------------------------------------------------------------ likelihood
    def _window_log_lik(self, seqs: Sequences, p: dict[str, torch.Tensor] | None = None,
                        head: bool = True) -> torch.Tensor:
        p = self._p if p is None else p
        y = seqs.values3d()
        mean, tril = sw.window_gaussians(y, self.switching, p["loc"], p["coef"], p["cov"],
                                         head=head)
        target = y if head else y[:, self.order :]
        return sw.gaussian_log_lik(target, mean, tril)

    def _emissions(self, seqs: Sequences, prm: dict[str, torch.Tensor] | None = None,
                   initial: torch.Tensor | None = None,
                   plan: tuple[list, int] | None = None) -> dict[str, torch.Tensor]:
        """The HMM over windows of regimes for a batch: ``initial [W]``, ``transition
        [W, W]``, ``log_lik [N, T_max, W]`` and the Gaussians ``mean [N, T_max, W, D]``,
        ``scale_tril [N or 1, T_max, W, D, D]`` of each step given its past and the window.

        Complete data use windows of ``p + 1`` regimes. With missing values, a step whose
        last p values are not all observed is scored from the exact Gaussian of the segment
        back to the latest p fully observed values (or to the first step), so the windows
        grow to cover the longest such segment (at most 4096 windows). Differentiable in
        ``prm`` and ``initial`` (the gradient fit on gappy data runs through it); ``plan``
        is :meth:`_gap_plan` of ``seqs``, computed once by a caller that repeats the call.
        """
        p = self.order
        prm = self._p if prm is None else prm
        initial = self._initial_probs(prm) if initial is None else initial
        y = seqs.values3d()
        mean, tril = sw.window_gaussians(y, self.switching, prm["loc"], prm["coef"], prm["cov"])
        if not seqs.has_missing:
            return {"initial": sw.window_start(initial, p),
                    "transition": sw.window_transition(prm["transition"], p),
                    "log_lik": sw.gaussian_log_lik(y, mean, tril), "mean": mean,
                    "scale_tril": tril[None]}
        k = self.num_regimes
        obs = seqs.observed if seqs.observed.ndim == 3 else seqs.observed[..., None]
        plan, need = self._gap_plan(seqs) if plan is None else plan
        full = obs.all(-1)
        base = torch.arange(k**need) % k ** (p + 1)
        dig = sw.window_digits(k, need)
        mean = mean[:, :, base].clone()
        tril = tril[None, :, base].expand(len(seqs), -1, -1, -1, -1).clone()
        # Segments of one length, start flag and pattern of gaps share their covariance.
        groups: dict[tuple, list[tuple[int, int, int]]] = {}
        for n, t, first, start in plan:
            pattern = tuple(obs[n, first : t + 1].reshape(-1).tolist())
            groups.setdefault((t - first + 1, start, pattern), []).append((n, t, first))
        for (length, start, _), items in groups.items():
            rows = torch.tensor([n for n, _, _ in items])
            steps = torch.tensor([t for _, t, _ in items])
            span = torch.tensor([first for _, _, first in items])[:, None] + torch.arange(length)
            n0, t0, f0 = items[0]
            loc = prm["loc"] if prm["loc"].dim() == 2 else prm["loc"][rows[:, None], span]
            m_t, c_t = sw.segment_predictive(
                y[rows[:, None], span], obs[n0, f0 : t0 + 1], dig[:, need - length :],
                self.switching, loc, prm["coef"], prm["cov"], start)
            mean[rows, steps] = m_t
            tril[rows, steps] = torch.linalg.cholesky(c_t)[None].expand(len(items), -1, -1, -1)
        resid = y[:, :, None, :] - mean
        z = torch.linalg.solve_triangular(tril, resid[..., None], upper=False)[..., 0]
        logdet = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
        d = y.shape[-1]
        ll = -0.5 * d * math.log(2 * math.pi) - logdet - 0.5 * z.pow(2).sum(-1)
        partial = (obs.any(-1) & ~full) & seqs.mask
        for n, t in torch.nonzero(partial).tolist():
            keep = torch.nonzero(obs[n, t])[:, 0]
            c = tril[n, t] @ tril[n, t].transpose(-1, -2)
            ll[n, t] = torch.distributions.MultivariateNormal(
                mean[n, t][:, keep], c[:, keep][:, :, keep]).log_prob(y[n, t, keep])
        ll = torch.where(obs.any(-1)[..., None], ll, torch.zeros((), dtype=ll.dtype))
        init = sw.window_start(initial, need - 1)
        trans = sw.window_transition(prm["transition"], need - 1)
        return {"initial": init, "transition": trans, "log_lik": ll, "mean": mean,
                "scale_tril": tril}

    def _gap_plan(self, seqs: Sequences) -> tuple[list[tuple[int, int, int, bool]], int]:
        """The steps whose last p values are not all observed, each with the segment that
        scores it: ``[(sequence, step, first step of the segment, segment at the start)]``,
        and the number of regimes the windows must hold (refused beyond 4096 windows)."""
        k, p = self.num_regimes, self.order
        obs = seqs.observed if seqs.observed.ndim == 3 else seqs.observed[..., None]
        full = obs.all(-1)
        plan, need = [], p + 1
        for n in range(len(seqs)):
            f = full[n, : int(seqs.lengths[n])].tolist()
            for t in range(len(f)):
                if f[t] and all(f[max(0, t - p) : t]):
                    continue
                start, first = True, 0
                for tau in range(t - 1, p - 2, -1):
                    if all(f[tau - p + 1 : tau + 1]):
                        start, first = False, tau - p + 1
                        break
                plan.append((n, t, first, start))
                need = max(need, t - first + 1)
                if k**need > _MISSING_WINDOWS:
                    raise ValueError(
                        f"sequence {n} has missing values too close together for exact "
                        f"marginalisation: step {t} depends on the regimes of {need} steps "
                        f"({k}^{need} windows, more than {_MISSING_WINDOWS})")
        return plan, need

    def _check_exog(self, exog: torch.Tensor | None, beta: torch.Tensor | None,
                    what: str = "every step") -> None:
        if beta is None:
            if exog is not None:
                raise ValueError(f"this {self.name} was fitted without covariates; do not "
                                 "pass exog=")
            return
        if exog is None:
            raise ValueError(f"this {self.name} has {beta.shape[-1]} covariate(s); pass exog= "
                             f"with the covariates of {what}")
        if exog.shape[2] != beta.shape[-1]:
            raise ValueError(f"exog has {exog.shape[2]} covariates, the model has "
                             f"{beta.shape[-1]}")

    def _prepare(self, seqs: Sequences, exog: torch.Tensor | None,
                 prm: dict[str, torch.Tensor] | None = None
                 ) -> tuple[Sequences, dict[str, torch.Tensor]]:
        """The batch and the parameters as the likelihood sees them.

        Covariates shared by the regimes (``beta [E]``): the series less their effect,
        ``y_t - x_t . beta``, which follows the model without covariates. Regime-switching
        coefficients (``beta [K, E]``): the series as given, and time-varying regime means
        ``loc [N, T_max, K, 1] = mu[k] + x_t . beta[k]`` that the windows of regimes read
        (:func:`probseq.switching.inference.window_gaussians`). Without covariates, the
        identity (checked). The model's own parameters keep their initial distribution.
        """
        own = prm is None or prm is self._p
        prm = self._p if prm is None else prm
        beta = prm.get("beta")
        self._check_exog(exog, beta)
        if beta is None:
            return seqs, prm
        if beta.dim() == 1:
            shift = exog[:, : seqs.max_length] @ beta
            values = torch.where(seqs.mask, seqs.values - shift,
                                 torch.zeros((), dtype=shift.dtype))
            return Sequences(values, seqs.lengths,
                             observed=seqs.observed if seqs.has_missing else None), prm
        out = dict(prm)
        out["loc"] = self._levels(exog[:, : seqs.max_length], prm)
        if own:
            out["initial"] = self._initial_probs()
        return seqs, out

    @staticmethod
    def _levels(exog: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[N, T, K, 1]`` regime levels ``mu[k] + x_t . beta[k]`` of ``exog [N, T, E]``
        (switching covariate coefficients ``beta [K, E]``)."""
        return (prm["loc"][:, 0] + exog @ prm["beta"].T)[..., None]

    def _refuse_missing(self, seqs: Sequences, what: str) -> None:
        if seqs.has_missing:
            i = int(torch.nonzero((~seqs.step_observed & seqs.mask).any(-1))[0, 0])
            raise ValueError(
                f"sequence {i} has missing values; {what} needs complete data "
                f"({self.name}.log_prob, log_prob_steps, filter, smoother and "
                "most_likely_states marginalise missing values)")

    def _hmm(self, seqs: Sequences, prm: dict[str, torch.Tensor] | None = None,
             **kw: Any) -> dict[str, torch.Tensor]:
        e = self._emissions(seqs, prm)
        return hmm.hmm_forward_backward(e["initial"], e["transition"],
                                        hmm.Scaled(seqs.lengths, log_lik=e["log_lik"]), **kw)

    def _log_prob(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        seqs, prm = self._prepare(seqs, exog)
        e = self._emissions(seqs, prm)
        return hmm.hmm_log_prob(e["initial"], e["transition"],
                                hmm.Scaled(seqs.lengths, log_lik=e["log_lik"]))

    def _log_prob_steps(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        seqs, prm = self._prepare(seqs, exog)
        return self._hmm(seqs, prm, backward=False, filtered=False)["steps"]

    def _conditional_parts(self, seqs: Sequences, p: dict[str, torch.Tensor] | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Initial windows, window transition, log-likelihoods and lengths of the steps after
        the first p (Hamilton's conditional likelihood)."""
        p = self._p if p is None else p
        initial = (self._initial_probs(p) if p is self._p or "initial" in p
                   else sw.stationary_distribution(p["transition"]).clamp_min(0))
        init = sw.window_path_prior(initial, p["transition"], self.order)
        trans = sw.window_transition(p["transition"], self.order)
        return init, trans, self._window_log_lik(seqs, p, head=False), seqs.lengths - self.order

    def _check_conditional_lengths(self, seqs: Sequences) -> None:
        short = torch.nonzero(seqs.lengths <= self.order)
        if short.numel():
            i = int(short[0, 0])
            raise ValueError(
                f"sequence {i} has {int(seqs.lengths[i])} steps; the conditional likelihood "
                f"of an order-{self.order} model needs at least {self.order + 1}")

    @torch.no_grad()
    def conditional_log_prob(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """Hamilton's conditional log-likelihood ``log p(y_(p+1..T) | y_(1..p))`` per sequence.

        The first window of regimes ``(S_1..S_(p+1))`` starts from ``initial`` (the
        stationary distribution unless given) and the chain; the first p values enter only
        as lags. This is statsmodels' ``MarkovAutoregression`` likelihood (its ``llf`` at the
        same parameters).

        Returns:
            ``[N]`` float64 (0-d for one sequence).

        Raises:
            ValueError: a sequence with p values or fewer.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        seqs, prm = self._prepare(seqs, self._coerce_exog(exog, seqs, data))
        self._refuse_missing(seqs, "conditional_log_prob")
        self._check_conditional_lengths(seqs)
        init, trans, ll, lengths = self._conditional_parts(seqs, prm)
        out = hmm.hmm_log_prob(init, trans, hmm.Scaled(lengths, log_lik=ll))
        return out[0] if single else out

    # ------------------------------------------------------------------ posteriors
    @torch.no_grad()
    def filter(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """Filtered regime probabilities ``P(S_t | y_1..y_t)``.

        Returns:
            ``[N, T_max, K]`` float64 (``[T, K]`` for one sequence), zero at padded steps.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        seqs, prm = self._prepare(seqs, self._coerce_exog(exog, seqs, data))
        u = self._hmm(seqs, prm, backward=False, filtered=True)["filtered"]
        out = sw.regime_marginals(u, self.num_regimes)
        return out[0] if single else out

    @torch.no_grad()
    def smoother(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """Smoothed regime probabilities ``P(S_t | y_1..y_T)`` (Kim's smoother).

        Returns:
            ``[N, T_max, K]`` float64 (``[T, K]`` for one sequence), zero at padded steps.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        seqs, prm = self._prepare(seqs, self._coerce_exog(exog, seqs, data))
        post = self._hmm(seqs, prm)
        out = sw.regime_marginals(post["smoothed"], self.num_regimes)
        return out[0] if single else out

    @torch.no_grad()
    def most_likely_states(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """The most likely regime path of each sequence (Viterbi over windows of regimes).

        Returns:
            ``[N, T_max]`` int64 regimes, ``-1`` at padded steps (``[T]`` for one sequence).
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        seqs, prm = self._prepare(seqs, self._coerce_exog(exog, seqs, data))
        e = self._emissions(seqs, prm)
        paths, _ = hmm.hmm_viterbi(e["initial"], e["transition"], e["log_lik"], seqs.lengths)
        out = torch.where(paths >= 0, paths % self.num_regimes, paths)
        return out[0] if single else out

    # ------------------------------------------------------------------ fitting
    def fit(self, data: Any, *, exog: Any = None, conditional: bool = False,
            num_restarts: int = 5,
            max_epochs: int = 200, tol: float = 1e-6, polish: bool = True,
            max_polish_iter: int = 100, progress: bool | None = None,
            seed: int | None = None, **unknown: Any) -> SwitchingAutoRegressive:
        """Fit by EM with random restarts, then polish by L-BFGS.

        Each restart runs EM on Hamilton's conditional likelihood: the E-step is the Hamilton
        filter and Kim smoother over windows of ``p + 1`` regimes; the M-step updates the
        transition from the expected regime moves and the regression in closed form given the
        regime weights (weighted least squares; in the mean form alternately for the
        coefficients given the means and the means given the coefficients, and then the
        noise, each a conditional maximisation). The transition update ignores that the
        first window starts from the stationary distribution, which the polish then accounts
        for. The data are standardised for the fit and the parameters mapped back, so the fit
        is equivariant to the data's scale and location.

        Gappy data (univariate, ``conditional=False``): EM runs on the gaps filled by linear
        interpolation, which only chooses the starting points; the polish then maximises
        the exact likelihood of the observed values (gaps marginalised as in ``log_prob``),
        so the estimate is a maximum of the exact likelihood, not of the filled data's.
        This is a gradient fit through the exact likelihood, not EM with expectations over
        the missing values.

        Args:
            data: the sequences (any accepted input); with ``conditional=True`` each needs
                more than p values.
            exog: covariates ``[T, E]`` / ``[N, T, E]`` / a DataFrame aligned with the data
                (mean form): ``y_t - x_t . exog_coef`` follows the model without
                covariates, so every regime level moves with the covariates
                (statsmodels' ``MarkovAutoregression(exog=..., switching_exog=False)``). EM
                estimates the coefficients with the regime means (the same weighted least
                squares); the polish includes them. With ``switching_exog`` each regime
                gets its own coefficients (``exog_coef [K, E]``, statsmodels'
                ``switching_exog=True``): EM's regression step is one weighted least
                squares for every regime's mean and coefficients given the AR coefficients
                (each window of regimes contributes the levels of its own regimes at the
                current step and the lags), and the polish includes them too; the random
                starts give every regime the pooled least-squares coefficients, jittered.
            conditional: False maximises the exact joint likelihood (``log_prob``); True
                maximises Hamilton's conditional likelihood (``conditional_log_prob``), the
                criterion of statsmodels' ``MarkovAutoregression``.
            num_restarts: random initialisations; the best final objective wins. Richer
                models have multimodal likelihoods (a 2-regime switching AR(2) with two
                switching covariates on US GDP growth has modes at -231.5 and -228.5): the
                fit is a maximum, not always the highest; raise num_restarts and compare
                ``restart_log_likelihoods_``.
            max_epochs: the most EM iterations per restart.
            tol: EM stops when the conditional log-likelihood improves by less than ``tol``
                nats per scored step.
            polish: after EM, maximise the objective by L-BFGS over unconstrained parameters
                (transition rows by softmax, AR coefficients by partial autocorrelations in
                (-1, 1) so every iterate is stationary, variances by their logarithms).
                Univariate models only; multivariate AR-HMMs keep the EM estimate.
            max_polish_iter: the most L-BFGS iterations per restart.
            progress: show a progress bar (None: on a terminal or in a notebook).
            seed: makes the random initialisations reproducible.

        Under an active ``torch.distributed`` process group, EM is data-parallel: each rank
        runs the E-step on its shard of the sequences and the M-step sums the sufficient
        statistics over ranks (initialisations agree because the ranks share a seed). The
        polish is not data-parallel: every rank runs it on the whole data, to the same result.

        Returns:
            self.
        """
        return super().fit(data, exog=exog, conditional=conditional, num_restarts=num_restarts,
                           max_epochs=max_epochs, tol=tol, polish=polish,
                           max_polish_iter=max_polish_iter, progress=progress, seed=seed,
                           **unknown)

    def _fit(self, seqs: Sequences, *, exog: torch.Tensor | None = None,
             conditional: bool = False, num_restarts: int = 5,
             max_epochs: int = 200, tol: float = 1e-6, polish: bool = True,
             max_polish_iter: int = 100, progress: bool | None = None,
             seed: int | None = None) -> None:
        for name, v in (("num_restarts", num_restarts), ("max_epochs", max_epochs)):
            _positive_int(v, name, 1)
        _positive_int(max_polish_iter, "max_polish_iter", 0)
        if not (isinstance(tol, int | float) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        gappy = seqs.has_missing
        if gappy and conditional:
            self._refuse_missing(seqs, "fit(conditional=True) (Hamilton's conditional "
                                 "likelihood; fit(conditional=False) maximises the exact "
                                 "likelihood of gappy data)")
        if self.switching == "mean":
            self._fit_obs_dim(seqs, univariate_only=True)
            univariate, d = True, 1
        else:
            dim = self._fit_obs_dim(seqs)
            univariate, d = dim is None, 1 if dim is None else dim
        p, k = self.order, self.num_regimes
        long = torch.nonzero(seqs.lengths > p)[:, 0]
        if conditional:
            self._check_conditional_lengths(seqs)
        rows = int((seqs.lengths[long] - p).sum()) if long.numel() else 0
        n_reg = (k if self.switching_ar else 1) * p * d + k
        if exog is not None:
            n_reg += (k if self.switching_exog else 1) * int(exog.shape[-1])
        if rows < n_reg + 2:
            raise ValueError(
                f"a {k}-regime switching AR({p}) fit needs more than {n_reg + 1} values after "
                f"the first {p} of each sequence, but the data give {rows}")
        if gappy and not univariate:
            self._refuse_missing(seqs, "the fit of a multivariate AR-HMM")
        if gappy and not (polish and max_polish_iter > 0):
            raise ValueError("a fit on gappy data maximises the exact likelihood by L-BFGS "
                             "(polish=True, max_polish_iter > 0); EM alone only starts it")
        # Standardise: y = centre + scale * z, per dimension.
        obs3 = seqs.observed if seqs.observed.ndim == 3 else seqs.observed[..., None]
        x = seqs.values3d()[seqs.mask & obs3.all(-1)] if gappy else seqs.values3d()[seqs.mask]
        centre, scale = x.mean(0), x.std(0)
        if not bool((scale > 0).all()):
            raise ValueError("the data are constant (zero variance); nothing to fit")
        z = Sequences(torch.where(seqs.mask[..., None], (seqs.values3d() - centre) / scale,
                                  torch.zeros((), dtype=torch.float64)), seqs.lengths.clone())
        fit_seqs = z if univariate is False else Sequences(
            z.values[..., 0], z.lengths, observed=seqs.observed if gappy else None)
        self._univariate = univariate
        if not univariate:
            self._obs_dim = d
        xz = None
        if exog is not None:
            if self.switching != "mean":
                raise ValueError("covariates (exog=) are supported in the mean form "
                                 "(switching=\"mean\", statsmodels' MarkovAutoregression)")
            xs = exog[:, : seqs.max_length]
            rows_x = xs[seqs.mask]
            x_centre, x_scale = rows_x.mean(0), rows_x.std(0)
            if not bool((x_scale > 0).all()):
                j = int(torch.nonzero(~(x_scale > 0))[0, 0])
                raise ValueError(f"covariate {j} is constant over the data; the regime means "
                                 "already hold the intercept")
            xz = torch.where(seqs.mask[..., None], (xs - x_centre) / x_scale,
                             torch.zeros((), dtype=torch.float64))
        # EM starts from the gaps filled by linear interpolation; the polish then maximises
        # the exact likelihood of the observed values (gaps marginalised).
        em_seqs = _interpolated(fit_seqs) if gappy else fit_seqs
        zlong = em_seqs[long]
        xlong = None if xz is None else xz[long][:, : zlong.max_length]
        self._refuse_exact_fit(zlong)
        count = seqs.num_observed if gappy else seqs.num_steps
        scored = count - (p * len(seqs) if conditional else 0)
        log_jac = float(torch.log(scale).sum()) * (
            int((seqs.lengths[long] - p).sum()) if conditional else count)
        results = []
        bar = progress_bar(num_restarts * max_epochs, progress, "switching AR fit")
        try:
            for _ in range(num_restarts):
                params = self._random_params(zlong, xlong)
                params, history = self._run_em(zlong, params, max_epochs, tol, bar, xlong)
                history = [h - log_jac for h in history]
                final = self._objective(fit_seqs, params, conditional, xz) - log_jac
                results.append([final, params, history + [final]])
                bar.set_postfix(nats_per_step=f"{-final / scored:.5f}")
            if polish and univariate and max_polish_iter > 0:
                # The two best EM restarts (distinct optima are usually far apart in value).
                ranked = sorted(range(len(results)), key=lambda i: -_finite(results[i][0]))
                for i in ranked[:2]:
                    params = self._polish(fit_seqs, results[i][1], conditional,
                                          max_polish_iter, xz)
                    final = self._objective(fit_seqs, params, conditional, xz) - log_jac
                    results[i] = [final, params, results[i][2] + [final]]  # after the polish
        finally:
            bar.close()
        finals = [r[0] for r in results]
        best = max(range(len(results)), key=lambda i: _finite(finals[i]))
        if not math.isfinite(finals[best]):
            raise ValueError("every restart of the switching AR fit failed "
                             "(non-finite log-likelihood)")
        best_params = results[best][1]
        self._p = self._unstandardise(best_params, centre, scale)
        if xz is not None:
            # y - mu[k] - x beta[k] = scale * (z - mu_z[k] - xz beta_z[k]) with
            # beta[k] = scale beta_z[k] / x_scale, mu[k] = centre + scale mu_z[k] - x_centre beta[k]
            beta = scale[0] * best_params["beta"] / x_scale
            self._p["loc"] = self._p["loc"] - (beta @ x_centre).reshape(-1, 1)
            self._p["beta"] = beta
        self._initial = None
        self.history_ = results[best][2]
        self.restart_log_likelihoods_ = finals
        self._fit_conditional = bool(conditional)

    def _refuse_exact_fit(self, seqs: Sequences) -> None:
        """Refuse data that a pooled VAR(p) with intercept predicts exactly (standardised
        data: a residual variance below 1e-10 of the data's)."""
        p = self.order
        y = seqs.values3d()
        d, t_max = y.shape[-1], y.shape[1]
        mask = (torch.arange(p, t_max)[None, :] < seqs.lengths[:, None]).reshape(-1)
        target = y[:, p:].reshape(-1, d)[mask]
        design = torch.cat([torch.ones(target.shape[0], 1, dtype=torch.float64)]
                           + [y[:, p - i : t_max - i].reshape(-1, d)[mask]
                              for i in range(1, p + 1)], 1)
        resid = target - design @ torch.linalg.lstsq(design, target).solution
        if float(torch.linalg.eigvalsh(resid.T @ resid / resid.shape[0]).min()) < 1e-10:
            raise ValueError(
                f"the data are (nearly) exactly predictable from {p} lags (an AR({p}) leaves "
                "no residual variance), so a switching AR has no finite maximum likelihood")

    def _objective(self, seqs: Sequences, p: dict[str, torch.Tensor], conditional: bool,
                   exog: torch.Tensor | None = None) -> float:
        if exog is not None:
            seqs, p = self._prepare(seqs, exog, p)
        with torch.no_grad():
            if conditional:
                init, trans, ll, lengths = self._conditional_parts(seqs, p)
                return float(hmm.hmm_log_prob(init, trans, hmm.Scaled(lengths, log_lik=ll)).sum())
            pi = sw.stationary_distribution(p["transition"]).clamp_min(0)
            e = self._emissions(seqs, p, pi / pi.sum())
            scaled = hmm.Scaled(seqs.lengths, log_lik=e["log_lik"])
            return float(hmm.hmm_log_prob(e["initial"], e["transition"], scaled).sum())

    def _unstandardise(self, p: dict[str, torch.Tensor], centre: torch.Tensor,
                       scale: torch.Tensor) -> dict[str, torch.Tensor]:
        s = scale
        coef = p["coef"] * s[:, None] / s[None, :]  # S A S^-1, broadcast over [K, p]
        cov = p["cov"] * s[:, None] * s[None, :]
        if self.switching == "mean":
            loc = centre + s * p["loc"]
        else:
            eye = torch.eye(s.shape[0], dtype=s.dtype)
            loc = s * p["loc"] + ((eye - coef.sum(1)) @ centre[:, None])[..., 0]
        return {"transition": p["transition"].clone(), "loc": loc, "coef": coef, "cov": cov}

    def _random_params(self, seqs: Sequences,
                       exog: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """A random start on standardised data: a pooled VAR(p) by least squares, regime
        levels at random quantiles, a sticky random transition (covariate coefficients by
        least squares of the series on them, the rest from the series less their effect;
        with ``switching_exog`` every regime starts from those coefficients, jittered by
        ``N(0, 0.1^2)`` on the standardised scale)."""
        if exog is not None:
            rows = exog[seqs.mask]
            design = torch.cat([torch.ones(rows.shape[0], 1, dtype=torch.float64), rows], 1)
            beta = torch.linalg.lstsq(design, seqs.values[seqs.mask][:, None]).solution[1:, 0]
            adjusted, _ = self._prepare(seqs, exog, {"beta": beta})
            out = self._random_params(adjusted)
            if self.switching_exog:
                k = self.num_regimes
                beta = beta.expand(k, -1) + 0.1 * torch.randn(k, beta.shape[0],
                                                              dtype=torch.float64)
            out["beta"] = beta.clone()
            return out
        k, p = self.num_regimes, self.order
        y = seqs.values3d()
        d = y.shape[-1]
        lengths = seqs.lengths
        t_max = y.shape[1]
        mask = (torch.arange(p, t_max)[None, :] < lengths[:, None]).reshape(-1)
        target = y[:, p:].reshape(-1, d)[mask]
        design = [torch.ones(target.shape[0], 1, dtype=torch.float64)]
        for i in range(1, p + 1):
            design.append(y[:, p - i : t_max - i].reshape(-1, d)[mask])
        x = torch.cat(design, 1)
        beta = torch.linalg.lstsq(x, target).solution  # [1 + pD, D]
        a = beta[1:].reshape(p, d, d).transpose(-1, -2) if p else torch.zeros(0, d, d,
                                                                              dtype=torch.float64)
        if p and float(sw.companion_radius(a)) >= 0.98:
            a = a * (0.9 / float(sw.companion_radius(a)))
        resid = target - x @ beta
        noise = resid.T @ resid / max(resid.shape[0], 1)
        noise = 0.5 * noise + 1e-3 * torch.eye(d, dtype=torch.float64)  # regimes explain some
        obs = y[seqs.mask]
        # Levels at stratified random quantiles: one regime per slice of the distribution.
        q = (torch.arange(k, dtype=torch.float64) + torch.rand(k, dtype=torch.float64)) / k
        q = 0.05 + 0.9 * q
        levels = torch.quantile(obs, q, dim=0)  # [K, D]
        jitter = torch.exp(0.4 * torch.randn(k, dtype=torch.float64))
        cov = noise[None].expand(k, -1, -1) * (
            jitter[:, None, None] if self.switching_variance else 1.0)
        if self.switching == "intercept":
            eye = torch.eye(d, dtype=torch.float64)
            loc = ((eye - a.sum(0)) @ levels.T).T
        else:
            loc = levels
        trans = torch.distributions.Dirichlet(
            torch.ones(k, k, dtype=torch.float64) + 8 * torch.eye(k, dtype=torch.float64)).sample()
        return {"transition": trans, "loc": loc.clone(),
                "coef": a[None].expand(k, -1, -1, -1).clone(), "cov": cov.clone()}

    # ---------------------------------------------------------------- EM
    def _e_step(self, seqs: Sequences, p: dict[str, torch.Tensor],
                exog: torch.Tensor | None = None) -> dict[str, Any]:
        if exog is not None:
            seqs, p = self._prepare(seqs, exog, p)
        init, trans, ll, lengths = self._conditional_parts(seqs, p)
        post = hmm.hmm_forward_backward(init, trans, hmm.Scaled(lengths, log_lik=ll))
        return {"log_lik": float(post["log_prob"].sum()), "smoothed": post["smoothed"],
                "window_counts": post["transition_counts"]}

    def _run_em(self, seqs: Sequences, params: dict[str, torch.Tensor], max_epochs: int,
                tol: float, bar, exog: torch.Tensor | None = None
                ) -> tuple[dict[str, torch.Tensor], list[float]]:
        steps = int((seqs.lengths - self.order).sum())
        history: list[float] = []
        good = params
        parallel = distributed.is_active() and len(seqs) >= distributed.world_size()
        local, local_x = seqs, exog
        if parallel:
            idx = distributed.shard_indices(len(seqs))
            local = seqs[idx]
            local_x = None if exog is None else exog[idx][:, : local.max_length]
        reduce = _all_ranks if parallel else _no_reduce
        for _ in range(max_epochs):
            stats = self._e_step(local, params, local_x)
            ll = float(reduce({"ll": np.array([stats["log_lik"]])})["ll"][0])
            if not math.isfinite(ll):
                params = good
                break
            if history and ll < history[-1]:
                params = good  # the start-up term the M-step ignores; keep the better one
                break
            history.append(ll)
            good = params
            bar.update(1)
            params = self._m_step(local, stats, params, reduce, local_x)
            if len(history) > 1 and history[-1] - history[-2] < tol * steps:
                break
        return params, history

    def _m_step(self, seqs: Sequences, stats: dict[str, Any], old: dict[str, torch.Tensor],
                reduce: Reduce | None = None,
                exog: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The M-step from the E-step of ``seqs``; ``reduce`` sums the sufficient statistics
        of every shard of the data (data-parallel EM; the identity on one process)."""
        reduce = _no_reduce if reduce is None else reduce
        k, p = self.num_regimes, self.order
        dig = sw.window_digits(k, p + 1).numpy()
        cur = dig[:, p]
        g = stats["smoothed"].numpy()  # [N, T', M], zero at padding
        # Transition: expected regime moves (window moves, plus those inside the first window).
        wc = stats["window_counts"].numpy()
        counts = np.zeros((k, k))
        np.add.at(counts, (cur[:, None].repeat(wc.shape[1], 1),
                           np.tile(cur, (wc.shape[0], 1))), wc)
        first = g[:, 0].sum(0)
        for j in range(p):
            np.add.at(counts, (dig[:, j], dig[:, j + 1]), first)
        counts = reduce({"counts": counts})["counts"]
        old_t = old["transition"].numpy()
        rows = counts.sum(1, keepdims=True)
        trans = np.where(rows > 0, counts / np.where(rows > 0, rows, 1.0), old_t)
        y = seqs.values3d().numpy()
        t_max = y.shape[1]
        yt = y[:, p:]  # [N, T', D]
        lags = np.stack([y[:, p - i : t_max - i] for i in range(1, p + 1)], 2) if p else (
            np.zeros(yt.shape[:2] + (0, yt.shape[-1])))  # [N, T', p, D]
        loc, coef, cov = (old["loc"].numpy().copy(), old["coef"].numpy().copy(),
                          old["cov"].numpy().copy())
        beta = None
        if self.switching == "mean":
            xt = xlags = None
            if exog is not None:
                x = exog.numpy()
                xt = x[:, p:]
                xlags = (np.stack([x[:, p - i : t_max - i] for i in range(1, p + 1)], 2) if p
                         else np.zeros(xt.shape[:2] + (0, xt.shape[-1])))
                beta = old["beta"].numpy().copy()
            loc, coef, cov, beta = _m_step_mean(
                yt[..., 0], lags[..., 0], g, dig, loc[:, 0], coef[:, :, 0, 0], cov[:, 0, 0],
                self.switching_ar, self.switching_variance, reduce, xt, xlags, beta)
        else:
            gk = g.reshape(*g.shape[:2], -1, k).sum(2)  # [N, T', K]
            loc, coef, cov = _m_step_intercept(yt, lags, gk, loc, coef, cov, self.switching_ar,
                                               self.switching_variance, reduce)
        out = {"transition": torch.from_numpy(trans), "loc": torch.from_numpy(loc),
               "coef": torch.from_numpy(coef), "cov": torch.from_numpy(cov)}
        if beta is not None:
            out["beta"] = torch.from_numpy(beta)
        return out

    # ---------------------------------------------------------------- L-BFGS polish
    def _polish(self, seqs: Sequences, params: dict[str, torch.Tensor], conditional: bool,
                max_iter: int, exog: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        k, p = self.num_regimes, self.order
        ka = k if self.switching_ar else 1
        kv = k if self.switching_variance else 1
        pacf = torch.from_numpy(np.stack([_coef_to_pacf(params["coef"][j, :, 0, 0].numpy())
                                          for j in range(ka)]))
        raw = {
            "logits": torch.log(params["transition"].clamp_min(1e-12)),
            "loc": params["loc"][:, 0].clone(),
            "pacf": torch.atanh(pacf.clamp(-1 + 1e-9, 1 - 1e-9)),
            "log_var": torch.log(params["cov"][:kv, 0, 0].clone()),
        }
        if "beta" in params:
            raw["beta"] = params["beta"].clone()
        raw = {n: v.detach().clone().requires_grad_(True) for n, v in raw.items()}
        steps = seqs.num_observed
        plan = self._gap_plan(seqs) if seqs.has_missing else None

        def build() -> dict[str, torch.Tensor]:
            coef = sw.pacf_to_coef(torch.tanh(raw["pacf"])).expand(k, -1)
            var = torch.exp(raw["log_var"]).expand(k)
            out = {"transition": torch.softmax(raw["logits"], -1), "loc": raw["loc"][:, None],
                   "coef": coef[:, :, None, None], "cov": var[:, None, None]}
            if "beta" in raw:
                out["beta"] = raw["beta"]
            return out

        raw_seqs = seqs

        def objective() -> torch.Tensor:
            q = build()
            seqs = raw_seqs
            if exog is not None:
                seqs, q = self._prepare(raw_seqs, exog, q)
            trans = q["transition"]
            pi = sw.stationary_distribution(trans)
            if conditional:
                init = sw.window_path_prior(pi, trans, p)
                ll = self._window_log_lik(seqs, q, head=False)
                lengths = seqs.lengths - p
            elif seqs.has_missing:
                e = self._emissions(seqs, q, pi, plan)
                init, wt, ll = e["initial"], e["transition"], e["log_lik"]
                return hmm.hmm_log_prob_differentiable(init, wt, ll, seqs.lengths).sum()
            else:
                init = sw.window_start(pi, p)
                ll = self._window_log_lik(seqs, q)
                lengths = seqs.lengths
            wt = sw.window_transition(trans, p)
            return hmm.hmm_log_prob_differentiable(init, wt, ll, lengths).sum()

        start = self._objective(seqs, params, conditional, exog)
        opt = torch.optim.LBFGS(list(raw.values()), lr=1.0, max_iter=max_iter,
                                tolerance_grad=1e-8, tolerance_change=1e-11,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -objective() / steps
            if not torch.isfinite(loss):
                return torch.tensor(1e10, dtype=torch.float64, requires_grad=True)
            loss.backward()
            return loss

        try:
            opt.step(closure)
        except (RuntimeError, ValueError):  # a degenerate step (singular covariance)
            return params
        with torch.no_grad():
            new = {n: v.detach().clone() for n, v in build().items()}
        end = self._objective(seqs, new, conditional, exog)
        return new if math.isfinite(end) and end >= start else params

    # ------------------------------------------------------------------ sampling
    def _head_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per first regime k: ``(Gamma [K, pD, pD], level [K, D])`` of the first p values
        (level only used by the intercept form)."""
        p = self._p
        gamma = sw.stationary_covariance(p["coef"], p["cov"])
        d = p["loc"].shape[1]
        eye = torch.eye(d, dtype=torch.float64)
        level = torch.linalg.solve(eye - p["coef"].sum(1), p["loc"][..., None])[..., 0]
        return gamma, level

    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                prefix_observed: torch.Tensor | None = None,
                exog: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        beta = self._p.get("beta")
        if exog is None and beta is None:
            return self._sample_adjusted(num_sequences, length, prefix, prefix_observed,
                                         **options)
        self._check_exog(exog, beta, "every sampled step")
        if beta.dim() == 2:  # regime-switching coefficients: time-varying regime levels
            levels = self._levels(exog, self._p)  # [n, length, K, 1]
            if prefix is not None:
                t0 = prefix.shape[0]
                if not torch.equal(exog[:, :t0], exog[:1, :t0].expand(num_sequences, -1, -1)):
                    raise ValueError("with a prefix, every sample needs the same covariates "
                                     "over the prefix's steps")
            return self._sample_adjusted(num_sequences, length, prefix, prefix_observed,
                                         levels=levels, **options)
        effect = exog @ beta  # [n, length]
        if prefix is not None:
            t0 = prefix.shape[0]
            if not torch.equal(effect[:, :t0], effect[:1, :t0].expand(num_sequences, -1)):
                raise ValueError("with a prefix, every sample needs the same covariates over "
                                 "the prefix's steps")
            prefix = prefix - effect[0, :t0]
        out = self._sample_adjusted(num_sequences, length, prefix, prefix_observed, **options)
        return out + effect

    def _sample_adjusted(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                         prefix_observed: torch.Tensor | None = None,
                         levels: torch.Tensor | None = None,
                         **options: Any) -> torch.Tensor:
        """Ancestral samples of the model without covariates, or (mean form) with the
        time-varying regime levels ``levels [n, length, K, 1]`` of switching covariate
        coefficients in place of ``means``."""
        if options:
            raise ValueError(f"SwitchingAutoRegressive.sample got unknown options "
                             f"{sorted(options)}")
        prm = self._p
        n, k, p = num_sequences, self.num_regimes, self.order
        d = prm["loc"].shape[1]
        trans = prm["transition"]
        rows = torch.arange(n)

        def level_at(t: int | torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            """The mean-form level of regimes ``r [n, ...]`` at step(s) t."""
            return prm["loc"][r] if levels is None else levels[rows.reshape((n,) + (1,) * (
                r.dim() - 1)), t, r]

        def known(t_len: int) -> dict[str, torch.Tensor]:
            """The parameters over a prefix of ``t_len`` steps (its levels, if they move)."""
            if levels is None:
                return prm
            return {**prm, "loc": levels[:1, :t_len], "initial": self._initial_probs()}

        y = torch.zeros(n, length, d, dtype=torch.float64)
        s = torch.zeros(n, length, dtype=torch.int64)
        start = 0
        if prefix is None:
            s[:, 0] = torch.multinomial(self._initial_probs().expand(n, k), 1)[:, 0]
        elif prefix_observed is not None and not bool(prefix_observed.all()):
            start = prefix.shape[0]
            filled, s[:, :start] = self._posterior_draws(prefix, prefix_observed, n,
                                                         known(start))
            y[:, :start] = filled
            prefix = None  # the filled draws are the prefix now
        else:
            pre = prefix.reshape(prefix.shape[0], d)
            start = pre.shape[0]
            y[:, :start] = pre
            seqs = Sequences(pre[None] if not self._univariate else pre[None, :, 0],
                             torch.tensor([start]))
            e = self._emissions(seqs, known(start))
            u = hmm.hmm_forward_backward(e["initial"], e["transition"],
                                         hmm.Scaled(seqs.lengths, log_lik=e["log_lik"]),
                                         backward=False, filtered=True)["filtered"][0, start - 1]
            if not u.sum() > 0:
                raise ValueError("the prefix has probability zero under this model")
            w = torch.multinomial(u.expand(n, -1), 1)[:, 0]
            dig = sw.window_digits(k, p + 1)[w]  # [n, p + 1]: S_(start-p)..S_start
            for j in range(p + 1):
                t = start - 1 - p + j
                if t >= 0:
                    s[:, t] = dig[:, j]
        for t in range(max(start, 1), length):
            s[:, t] = torch.multinomial(trans[s[:, t - 1]], 1)[:, 0]
        head = min(p, length)
        if start < head:
            gamma, level = self._head_moments()
            g = gamma[s[:, 0]][:, : head * d, : head * d]  # [n, hD, hD]
            if self.switching == "mean":
                m = level_at(torch.arange(head)[None, :], s[:, :head]).reshape(n, head * d)
            else:
                m = level[s[:, 0]].repeat(1, head)
            known = start * d
            mean, cond = m[:, known:], g[:, known:, known:]
            if known:
                gain = torch.linalg.solve(g[:, :known, :known], g[:, :known, known:])
                obs = y[:, :start].reshape(n, known) - m[:, :known]
                mean = mean + (gain.transpose(1, 2) @ obs[..., None])[..., 0]
                cond = cond - g[:, known:, :known] @ gain
            chol = torch.linalg.cholesky(0.5 * (cond + cond.transpose(1, 2)))
            draw = mean + (chol @ torch.randn(n, chol.shape[-1], 1, dtype=torch.float64))[..., 0]
            y[:, start:head] = draw.reshape(n, head - start, d)
            start = head
        chol = torch.linalg.cholesky(prm["cov"])
        for t in range(start, length):
            r = s[:, t]
            a = prm["coef"][r]  # [n, p, D, D]
            if self.switching == "mean":
                mean = level_at(t, r)
                for i in range(1, p + 1):
                    lag = y[:, t - i] - level_at(t - i, s[:, t - i])
                    mean = mean + (a[:, i - 1] @ lag[..., None])[..., 0]
            else:
                mean = prm["loc"][r]
                for i in range(1, p + 1):
                    mean = mean + (a[:, i - 1] @ y[:, t - i][..., None])[..., 0]
            eps = torch.randn(n, d, 1, dtype=torch.float64)
            y[:, t] = mean + (chol[r] @ eps)[..., 0]
        if prefix is not None:
            y[:, : prefix.shape[0]] = prefix.reshape(prefix.shape[0], d)
        return y[..., 0] if self._univariate else y

    def _posterior_draws(self, prefix: torch.Tensor, observed: torch.Tensor,
                         num_draws: int, prm: dict[str, torch.Tensor] | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact draws of the regimes and the missing values of a gappy prefix given its
        observed values: the regime paths by forward filtering, backward sampling over the
        windows of regimes that marginalise the gaps (:meth:`_emissions`), then the missing
        values given each path (:func:`probseq.switching.inference.draw_missing`).

        ``prm``: the parameters over the prefix (time-varying levels ``loc [1, T, K, 1]``
        with switching covariate coefficients; None: the model's).

        Returns:
            ``(values [W, T, D], regimes [W, T])``.
        """
        prm = self._p if prm is None else prm
        t_len = prefix.shape[0]
        d = self._p["loc"].shape[1]
        values = prefix.reshape(t_len, d)
        obs = observed.reshape(t_len, d)
        seqs = Sequences(values[None, :, 0] if self._univariate else values[None],
                         torch.tensor([t_len]),
                         observed=obs[None, :, 0] if self._univariate else obs[None])
        e = self._emissions(seqs, prm)
        u = hmm.hmm_forward_backward(e["initial"], e["transition"],
                                     hmm.Scaled(seqs.lengths, log_lik=e["log_lik"]),
                                     backward=False, filtered=True)["filtered"][0]
        if not u[-1].sum() > 0:
            raise ValueError("the prefix has probability zero under this model")
        last = torch.multinomial(u[-1].expand(num_draws, -1), 1, replacement=True)[:, 0]
        windows = hmm.backward_sample(u, e["transition"], last)  # [W, T]
        regimes = windows % self.num_regimes
        loc = prm["loc"] if prm["loc"].dim() == 2 else prm["loc"][0]
        filled = sw.draw_missing(values.to(torch.float64), obs, regimes, self.switching,
                                 loc, prm["coef"], prm["cov"])
        return filled, regimes

    # ------------------------------------------------------------------ summary
    def summary(self, data: Any = None, *, exog: Any = None, level: float = 0.95,
                conditional: bool | None = None) -> Any:
        """Estimates and standard errors of the free parameters (observed information).

        As :meth:`probseq.SequenceModel.summary`, with the Hessian by autograd through the
        forward pass over windows of regimes. The free parameters are the rows of
        ``transition`` without their largest entry (``transition[i,j]``), the means or
        intercepts, the AR coefficients, the noise variances (or the lower triangles of the
        noise covariances) and the covariate coefficients, each shared or per regime as the
        model has them (``len(table) == num_params``); the initial distribution is the
        chain's stationary one (a function of ``transition``), or held fixed when given to
        ``from_params``.

        Args:
            data: the data the model was fitted on (default: the data of the last ``fit``).
            exog: covariates of ``data``.
            level: coverage of the intervals.
            conditional: the information of Hamilton's conditional likelihood (True, the
                criterion of ``fit(conditional=True)`` and of statsmodels'
                ``MarkovAutoregression``, whose ``bse`` it reproduces) or of the exact joint
                likelihood (False); None: the criterion of the last fit (exact for a model
                built by ``from_params``). ``attrs["log_lik"]`` is that likelihood.

        Returns:
            The table of :meth:`probseq.SequenceModel.summary`.
        """
        if conditional is not None and not isinstance(conditional, bool):
            raise ValueError(f"conditional must be True, False or None, got {conditional!r}")
        view = copy.copy(self)  # the same fitted model, told which likelihood to expand
        view._summary_conditional = (self._fit_conditional if conditional is None
                                     else conditional)
        return SequenceModel.summary(view, data, exog=exog, level=level)

    def _summary_free(self, seqs: Sequences, exog: torch.Tensor | None = None) -> Any:
        """The free parameters (see :meth:`summary`) with the exact or the conditional
        log-likelihood of ``seqs`` as a differentiable function of them."""
        from probseq._summary import Blocks

        conditional = bool(self._summary_conditional)
        if conditional:
            self._refuse_missing(seqs, "summary(conditional=True)")
            self._check_conditional_lengths(seqs)
        pub, blocks = self.params, Blocks()
        k, p = self.num_regimes, self.order
        loc_name = "means" if self.switching == "mean" else "intercept"
        parts = {"transition": blocks.add_simplex("transition", pub["transition"]),
                 loc_name: blocks.add(loc_name, pub[loc_name]),
                 "coef": blocks.add("coef", pub["coef"])}
        if self._univariate:
            parts["noise_var"] = blocks.add("noise_var", pub["noise_var"], non_negative=True)
        else:
            parts["noise_cov"] = blocks.add_symmetric("noise_cov", pub["noise_cov"])
        if "exog_coef" in pub:
            parts["exog_coef"] = blocks.add("exog_coef", pub["exog_coef"])
        fixed_initial = self._initial
        plan = self._gap_plan(seqs) if seqs.has_missing and not conditional else None
        d = self._p["loc"].shape[1]

        def log_lik(vec: torch.Tensor) -> torch.Tensor:
            v = {name: part(vec) for name, part in parts.items()}
            if self._univariate:
                coef = v["coef"][..., None, None]
                cov = v["noise_var"].reshape(-1)[:, None, None]
            else:
                coef, cov = v["coef"], v["noise_cov"].reshape(-1, d, d)
            q = {"transition": v["transition"], "loc": v[loc_name].reshape(k, d),
                 "coef": coef.expand(k, p, d, d), "cov": cov.expand(k, d, d)}
            if "exog_coef" in v:
                q["beta"] = v["exog_coef"]
            s, q = self._prepare(seqs, exog, q)
            if fixed_initial is not None:
                q["initial"] = fixed_initial
            if conditional:  # the first window from the stationary chain, as in fit
                init, trans, ll, lengths = self._conditional_parts(s, q)
                return hmm.hmm_log_prob_differentiable(init, trans, ll, lengths).sum()
            pi = (fixed_initial if fixed_initial is not None
                  else sw.stationary_distribution(q["transition"]))
            e = self._emissions(s, q, pi, plan)
            return hmm.hmm_log_prob_differentiable(e["initial"], e["transition"], e["log_lik"],
                                                   s.lengths).sum()

        free = blocks.build(log_lik)
        if conditional:  # Hamilton's likelihood scores the steps after the first p
            free.num_observations = int((seqs.lengths - p).sum())
        return free

    # ------------------------------------------------------------------ Pyro
    def pyro_model(self, data: Any) -> None:
        """A Pyro model of the data with priors on every parameter; regimes marginalised.

        Priors (univariate models): each ``transition`` row ``~ Dirichlet(1)``; ``means``
        (or ``intercept``) ``~ Normal(data mean, 3 * data std)``; partial autocorrelations of
        the coefficients ``~ Uniform(-1, 1)`` (so every draw is stationary);
        ``noise_var ~ LogNormal(log data variance, 1)``. The data-dependent prior locations
        are an empirical-Bayes choice. The likelihood is ``pyro.factor("log_lik", ...)`` of
        the exact joint forward pass, so the model works with SVI and NUTS.

        Args:
            data: the sequences (any accepted input).
        """
        import pyro
        import pyro.distributions as dist

        if not self._univariate:
            raise ValueError("pyro_model supports univariate models only")
        seqs, _ = self._coerce(data, fitting=not self._is_fitted())
        self._refuse_missing(seqs, "pyro_model")
        k, p = self.num_regimes, self.order
        f64 = torch.float64
        x = seqs.values[seqs.mask]
        mu0, sd0 = x.mean(), x.std().clamp_min(1e-12) if x.numel() > 1 else torch.ones((),
                                                                                       dtype=f64)
        trans = pyro.sample("transition", dist.Dirichlet(torch.ones(k, k, dtype=f64)).to_event(1))
        loc = pyro.sample("means" if self.switching == "mean" else "intercept",
                          dist.Normal(mu0.expand(k), 3 * sd0.expand(k)).to_event(1))
        ka, kv = (k if self.switching_ar else 1), (k if self.switching_variance else 1)
        pacf = pyro.sample("pacf", dist.Uniform(-torch.ones(ka, p, dtype=f64),
                                                torch.ones(ka, p, dtype=f64)).to_event(2))
        var = pyro.sample("noise_var", dist.LogNormal(torch.log(sd0**2).expand(kv),
                                                      torch.ones(kv, dtype=f64)).to_event(1))
        coef = sw.pacf_to_coef(pacf).expand(k, p)
        q = {"transition": trans, "loc": loc[:, None], "coef": coef[:, :, None, None],
             "cov": var.expand(k)[:, None, None]}
        pi = sw.stationary_distribution(trans)
        ll = self._window_log_lik(seqs, q)
        pyro.factor("log_lik", hmm.hmm_log_prob_differentiable(
            sw.window_start(pi, p), sw.window_transition(trans, p), ll, seqs.lengths).sum())

    # ------------------------------------------------------------------ forecasts
    def _step_predictive(self, seqs: Sequences,
                         exog: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """The one-step predictive ``p(y_t | y_<t)`` at every step: a mixture over windows of
        regimes of the Gaussians given each window, ``[N, T_max]`` batch."""
        seqs, prm = self._prepare(seqs, exog)
        e = self._emissions(seqs, prm)
        init, trans, mean = e["initial"], e["transition"], e["mean"]
        tril = e["scale_tril"].expand(mean.shape + (mean.shape[-1],))
        u = hmm.hmm_forward_backward(init, trans, hmm.Scaled(seqs.lengths, log_lik=e["log_lik"]),
                                     backward=False, filtered=True)["filtered"]
        pred = torch.cat([init.expand(len(seqs), 1, -1), u[:, :-1] @ trans], 1)
        ok = pred.sum(-1, keepdim=True) > 0
        pred = torch.where(ok, pred, init)
        mix = _categorical(pred)
        if self._univariate:
            loc = mean[..., 0]
            if exog is not None and prm["beta"].dim() == 1:  # the same in every window
                loc = loc + (exog[:, : seqs.max_length] @ self._p["beta"])[..., None]
            comp = torch.distributions.Normal(loc, tril[..., 0, 0])
        else:
            comp = torch.distributions.MultivariateNormal(mean, scale_tril=tril)
        return torch.distributions.MixtureSameFamily(mix, comp)

    def _forecast(self, seqs: Sequences, horizon: int,
                  exog: torch.Tensor | None = None) -> torch.distributions.Distribution | None:
        """Exact h-step marginals ``[N, H]`` as Gaussian mixtures, or None (see
        :meth:`_forecast_adjusted`); covariates shared by the regimes shift every component
        by ``x_(T+h) . exog_coef``; regime-switching ones move the regime levels of the
        history and of the future (``exog [N, T_max + H, E]`` covers the future)."""
        beta = self._p.get("beta")
        if beta is not None and beta.dim() == 2:
            self._check_exog(exog, beta, "the history and the future steps")
            return self._forecast_adjusted(seqs, horizon, self._levels(exog, self._p))
        seqs, _ = self._prepare(seqs, exog)
        dist = self._forecast_adjusted(seqs, horizon)
        if dist is None or exog is None:
            return dist
        effect = exog @ self._p["beta"]  # [N, T_max + H]
        future = effect.gather(1, seqs.lengths[:, None] + torch.arange(horizon)[None, :])
        comp = dist.component_distribution
        return torch.distributions.MixtureSameFamily(
            dist.mixture_distribution,
            torch.distributions.Normal(comp.loc + future[..., None], comp.scale))

    def _forecast_adjusted(self, seqs: Sequences, horizon: int,
                           levels: torch.Tensor | None = None
                           ) -> torch.distributions.Distribution | None:
        """Exact h-step marginals ``[N, H]`` as Gaussian mixtures, or None.

        ``levels [N, T_max + H, K, 1]``: the time-varying regime levels of switching covariate
        coefficients (mean form), the future ones at each sequence's ``T + h``; None: the
        model's means.

        Given the windows of regimes at the last step T (filtered), the future is linear
        Gaussian along each path of future regimes. Hamilton's mean form with shared
        coefficients and variance has a closed form with ``K^(p+2)`` components: its
        deviations ``u_t = y_t - mu[S_t]`` are an AR(p) independent of the regimes, so
        ``y_(T+h)`` mixes, over the window at T (which fixes ``u_(T-p+1..T)``) and
        ``S_(T+h)`` (``transition^h`` from ``S_T``), ``N(mu[S_(T+h)] + E[u_(T+h) | u_(<=T)],
        sum_(j<h) psi_j^2 sigma2)`` (``psi`` the AR's impulse responses). Otherwise every
        path of future regimes is a component (``K^(p+1+H)`` of them, propagated by the
        Kalman prediction of the last p values); beyond 4096 components, for sequences
        shorter than p, or when one of a sequence's last p values is missing, the sampling
        fallback is used (None). Earlier gaps only change the filtered windows at T.
        """
        if int(seqs.lengths.min()) < max(self.order, 1):
            return None
        if seqs.has_missing:
            # Exact when the last p values of every sequence are observed (they and the
            # window of regimes at T carry everything the future depends on).
            steps = torch.arange(self.order)
            idx = (seqs.lengths[:, None] - 1 - steps[None, :]).clamp_min(0)
            tail = seqs.step_observed.gather(1, idx)
            if self.order and not bool(tail.all()):
                return None
        if levels is None and self.switching == "mean" and not (
                self.switching_ar or self.switching_variance):
            return self._forecast_shared(seqs, horizon)
        if self.num_regimes ** (self.order + 1 + horizon) <= _FORECAST_COMPONENTS:
            return self._forecast_paths(seqs, horizon, levels)
        return None

    def _last_windows(self, seqs: Sequences,
                      prm: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[N, M]`` filtered window probabilities at each sequence's last step."""
        e = self._emissions(seqs, prm)
        u = hmm.hmm_forward_backward(e["initial"], e["transition"],
                                     hmm.Scaled(seqs.lengths, log_lik=e["log_lik"]),
                                     backward=False, filtered=True)["filtered"]
        last = u[torch.arange(len(seqs)), seqs.lengths - 1]
        m = self.num_regimes ** (self.order + 1)  # gaps grow the windows: keep p + 1 regimes
        return last.reshape(len(seqs), -1, m).sum(1)

    def _forecast_paths(self, seqs: Sequences, horizon: int,
                        levels: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """Exact forecasts by enumerating the future regime paths (see :meth:`_forecast`);
        ``levels`` as in :meth:`_forecast_adjusted`."""
        k, p = self.num_regimes, self.order
        prm = self._p
        d = prm["loc"].shape[1]
        n = len(seqs)
        rows = torch.arange(n)
        history = None if levels is None else {
            **prm, "loc": levels[:, : seqs.max_length], "initial": self._initial_probs()}
        last = self._last_windows(seqs, history)  # [N, M]
        dig = sw.window_digits(k, p + 1)
        m = dig.shape[0]
        paths = sw.window_digits(k, horizon)  # [P, H]
        q = paths.shape[0]
        # Path weights: P(window) P(S_(T+1..T+H) | S_T).
        prob = last[:, :, None].expand(n, m, q).clone()
        prev = dig[:, p][:, None].expand(m, q)
        for h in range(horizon):
            prob = prob * prm["transition"][prev, paths[None, :, h]][None]
            prev = paths[None, :, h].expand(m, q)
        # State: the last p values (most recent first), known at T; deviations u in the
        # mean form (u_(T-i) = y_(T-i) - mu[S_(T-i)]), values y in the intercept form.
        idx = seqs.lengths[:, None] - 1 - torch.arange(p)[None, :]  # [N, p]
        y3 = seqs.values3d()
        recent = y3[torch.arange(n)[:, None], idx]  # [N, p, D]
        if levels is not None:  # the levels of the window's regimes at T, T-1, ...
            lv = levels[rows[:, None], idx]  # [N, p, K, D]
            recent = recent[:, None] - lv[:, torch.arange(p)[None, :], dig[:, p - torch.arange(p)]]
        elif self.switching == "mean":
            recent = recent[:, None] - prm["loc"][dig[:, p - torch.arange(p)]][None]
        else:
            recent = recent[:, None].expand(n, m, p, d)
        state = recent[:, :, None].expand(n, m, q, p, d).clone()  # [N, M, P, p, D]
        cov = torch.zeros(m, q, p * d, p * d, dtype=torch.float64)
        chol = torch.linalg.cholesky(prm["cov"])
        means, trils = [], []
        for h in range(horizon):
            s = paths[:, h]  # [P]
            a = prm["coef"][s]  # [P, p, D, D]
            new = torch.einsum("qide,nmqie->nmqd", a, state)
            if self.switching == "intercept":
                new = new + prm["loc"][s][None, None]
            top = torch.cat(list(a.unbind(1)), -1) if p else torch.zeros(q, d, 0,
                                                                          dtype=torch.float64)
            var = top[None] @ cov @ top.transpose(-1, -2)[None] + prm["cov"][s][None]
            cross = top[None] @ cov  # [M, P, D, pD]: Cov(y_new, old state)
            if p:
                state = torch.cat([new[:, :, :, None], state[:, :, :, :-1]], 3)
                cov = torch.cat([torch.cat([var, cross], -1),
                                 torch.cat([cross.transpose(-1, -2), cov], -1)],
                                -2)[..., : p * d, : p * d]
            if levels is not None:  # the levels at T + h of the path's regime
                level = levels[rows, seqs.lengths + h][:, s][:, None]  # [N, 1, P, D]
            else:
                level = prm["loc"][s][None, None] if self.switching == "mean" else 0.0
            means.append(new + level)
            trils.append(torch.linalg.cholesky(var) if p else chol[s][None].expand(m, q, d, d))
        weights = prob.reshape(n, m * q)[:, None].expand(n, horizon, m * q)
        loc = torch.stack(means, 1).reshape(n, horizon, m * q, d)
        tril = torch.stack(trils, 0).reshape(horizon, m * q, d, d)[None].expand(
            n, horizon, m * q, d, d)
        if self._univariate:
            comp = torch.distributions.Normal(loc[..., 0], tril[..., 0, 0])
        else:
            comp = torch.distributions.MultivariateNormal(loc, scale_tril=tril)
        return torch.distributions.MixtureSameFamily(_categorical(weights), comp)

    def _forecast_shared(self, seqs: Sequences,
                         horizon: int) -> torch.distributions.Distribution:
        """The closed form of the mean form with shared coefficients and variance."""
        k, p = self.num_regimes, self.order
        lengths = seqs.lengths
        n = len(seqs)
        last = self._last_windows(seqs)  # [N, M]
        mu = self._p["loc"][:, 0]
        phi = self._p["coef"][0, :, 0, 0]
        var = self._p["cov"][0, 0, 0]
        dig = sw.window_digits(k, p + 1)
        m = dig.shape[0]
        idx = lengths[:, None] - 1 - torch.arange(p)[None, :]  # [N, p]: T, T-1, ..., T-p+1
        recent = seqs.values.gather(1, idx)
        state = recent[:, None, :] - mu[dig[:, p - torch.arange(p)]][None]  # [N, M, p]
        companion = torch.zeros(p, p, dtype=torch.float64)
        if p:
            companion[0] = phi
            companion[1:, :-1] = torch.eye(p - 1, dtype=torch.float64)
        power = torch.eye(max(p, 1), dtype=torch.float64)
        a_h = torch.eye(k, dtype=torch.float64)
        means, sds, weights = [], [], []
        spread = torch.zeros((), dtype=torch.float64)
        for _ in range(horizon):
            psi = power[0, 0] if p else torch.ones((), dtype=torch.float64)
            spread = spread + psi**2 * var
            if p:
                state = state @ companion.T
                power = companion @ power
                dev = state[..., 0]  # [N, M]
            else:
                dev = torch.zeros(n, m, dtype=torch.float64)
            a_h = a_h @ self._p["transition"]
            weights.append((last[:, :, None] * a_h[dig[:, p]][None]).reshape(n, m * k))
            means.append((dev[:, :, None] + mu[None, None, :]).reshape(n, m * k))
            sds.append(spread.sqrt().expand(n, m * k))
        return torch.distributions.MixtureSameFamily(
            _categorical(torch.stack(weights, 1)),
            torch.distributions.Normal(torch.stack(means, 1), torch.stack(sds, 1)))


# ---------------------------------------------------------------------- M-step helpers
_FORECAST_COMPONENTS = 4096
_MISSING_WINDOWS = 4096

Reduce = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None


def _no_reduce(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return sums


def _all_ranks(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum statistics over the ranks of the active process group."""
    out = distributed.all_reduce_sum({n: torch.from_numpy(np.ascontiguousarray(v))
                                      for n, v in sums.items()})
    return {n: v.numpy() for n, v in out.items()}


def _categorical(probs: torch.Tensor) -> torch.distributions.Categorical:
    """Mixture weights by their logarithms: ``Categorical(probs=...)`` would clamp the
    structural zeros (impossible windows of regimes) up to machine epsilon."""
    probs = probs / probs.sum(-1, keepdim=True)
    logits = torch.where(probs > 0, torch.log(probs), torch.full((), -math.inf,
                                                                 dtype=probs.dtype))
    return torch.distributions.Categorical(logits=logits)


def _interpolated(seqs: Sequences) -> Sequences:
    """Univariate sequences with their gaps filled by linear interpolation (the nearest
    observed value before the first or after the last observation)."""
    values = seqs.values.clone()
    for i in range(len(seqs)):
        t = int(seqs.lengths[i])
        obs = seqs.observed[i, :t].numpy()
        if obs.all() or not obs.any():
            continue
        steps = np.arange(t)
        values[i, :t] = torch.from_numpy(np.interp(steps, steps[obs],
                                                   values[i, :t].numpy()[obs]))
    return Sequences(values, seqs.lengths.clone())


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _ridge_solve(a: np.ndarray, b: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Solve ``a x = b``, pulled toward ``old`` by a vanishing ridge (directions without
    data keep their previous values instead of collapsing to zero)."""
    eps = 1e-10 * max(float(np.abs(np.diag(a)).max()), 1e-300)
    return np.linalg.solve(a + eps * np.eye(a.shape[0]), b + eps * old)


def _stationary(coef: np.ndarray) -> bool:
    if coef.shape[1] == 0:
        return True
    return bool((sw.companion_radius(torch.from_numpy(coef)) < 1 - 1e-6).all())


def _m_step_mean(yt: np.ndarray, lags: np.ndarray, g: np.ndarray, dig: np.ndarray,
                 mu: np.ndarray, phi: np.ndarray, var: np.ndarray, switching_ar: bool,
                 switching_variance: bool, reduce: Reduce = None,
                 xt: np.ndarray | None = None, xlags: np.ndarray | None = None,
                 beta: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Conditional maximisation of the mean form (univariate): coefficients given the
    means (and covariate coefficients), means and covariate coefficients given the AR
    coefficients (one weighted least squares), then variances.

    Args:
        yt: ``[N, T']`` the scored values; lags ``[N, T', p]``; g ``[N, T', M]`` window
        weights; dig ``[M, p + 1]``; mu ``[K]``; phi ``[K, p]``; var ``[K]``; xt
        ``[N, T', E]`` and xlags ``[N, T', p, E]`` the covariates of the scored steps and
        their lags, beta ``[E]`` shared or ``[K, E]`` per regime (all None without
        covariates).
    """
    k, p = mu.shape[0], phi.shape[1]
    cur = dig[:, p]
    rev = dig[:, :p][:, ::-1]  # the regimes at lags 1..p
    reduce = _no_reduce if reduce is None else reduce
    w = g / var[cur]
    switching_exog = beta is not None and beta.ndim == 2
    if p:
        # The regime levels mu[k] + x . beta[k] of the scored step and of its lags, per window.
        if beta is None:
            lev, lev_lag = mu[cur], mu[rev][None, None]
        elif not switching_exog:
            lev = mu[cur] + (xt @ beta)[..., None]  # [N, T', M]
            lev_lag = mu[rev][None, None] + (xlags @ beta)[:, :, None, :]  # [N, T', M, p]
        else:
            lev = mu[cur] + (xt @ beta.T)[..., cur]
            lev_lag = mu[rev][None, None] + (xlags @ beta.T)[:, :, np.arange(p)[None, :], rev]
        u = yt[..., None] - lev  # [N, T', M]
        lag_u = lags[:, :, None, :] - lev_lag  # [N, T', M, p]
        new = phi.copy()
        groups = [np.arange(k)] if not switching_ar else [[j] for j in range(k)]
        sums = {}
        for i, grp in enumerate(groups):
            sel = np.isin(cur, grp)
            uw = lag_u[:, :, sel] * w[:, :, sel, None]
            sums[f"a{i}"] = np.einsum("ntmi,ntmj->ij", uw, lag_u[:, :, sel])
            sums[f"b{i}"] = np.einsum("ntmi,ntm->i", uw, u[:, :, sel])
        sums = reduce(sums)
        for i, grp in enumerate(groups):
            new[grp] = _ridge_solve(sums[f"a{i}"], sums[f"b{i}"], phi[grp[0]])
        if _stationary(new[:, :, None, None]):
            phi = new
    # Means given the coefficients: ytil = y_t - sum_i phi_i y_(t-i) = X(window) mu + e
    # (+ xtil_t beta with covariates, xtil_t = x_t - sum_i phi_i x_(t-i)).
    a_cur = phi[cur]  # [M, p]
    ytil = yt[..., None] - np.einsum("mi,nti->ntm", a_cur, lags)
    x = np.eye(k)[cur] - np.einsum("mi,mik->mk", a_cur, np.eye(k)[rev])
    if beta is None:
        sums = reduce({"weight": w.sum((0, 1)), "wy": (w * ytil).sum((0, 1))})  # [M] each
        a = (x * sums["weight"][:, None]).T @ x
        mu = _ridge_solve(a, x.T @ sums["wy"], mu)
        fitted = (x @ mu)[None, None]
    elif switching_exog:
        # ytil = des . theta + e, theta[k] = (mu[k], beta[k]), with the window's design
        # des = onehot(S_t) kron (1, x_t) - sum_i phi_i onehot(S_(t-i)) kron (1, x_(t-i)).
        ones = np.ones(xt.shape[:-1] + (1,))
        x1 = np.concatenate([ones, xt], -1)  # [N, T', 1 + E]
        xl1 = np.concatenate([ones[:, :, None].repeat(p, 2), xlags], -1)  # [N, T', p, 1 + E]
        eye = np.eye(k)
        des = eye[cur][None, None, :, :, None] * x1[:, :, None, None, :]
        if p:
            des = des - np.einsum("mi,mik,ntie->ntmke", a_cur, eye[rev], xl1)
        des = des.reshape(*des.shape[:3], -1)  # [N, T', M, K (1 + E)]
        sums = reduce({"a": np.einsum("ntm,ntmq,ntmr->qr", w, des, des),
                       "b": np.einsum("ntm,ntmq,ntm->q", w, des, ytil)})
        old = np.concatenate([mu[:, None], beta], 1).reshape(-1)
        theta = _ridge_solve(sums["a"], sums["b"], old).reshape(k, -1)
        mu, beta = theta[:, 0].copy(), theta[:, 1:].copy()
        fitted = des @ theta.reshape(-1)
    else:
        xtil = xt[:, :, None, :] - np.einsum("mi,ntie->ntme", a_cur, xlags)  # [N, T', M, E]
        sums = reduce({
            "weight": w.sum((0, 1)), "wy": (w * ytil).sum((0, 1)),
            "wx": np.einsum("ntm,ntme->me", w, xtil),
            "wxx": np.einsum("ntm,ntme,ntmf->ef", w, xtil, xtil),
            "wxy": np.einsum("ntm,ntme,ntm->e", w, xtil, ytil)})
        a_mm = (x * sums["weight"][:, None]).T @ x
        a_mb = x.T @ sums["wx"]  # [K, E]
        lhs = np.block([[a_mm, a_mb], [a_mb.T, sums["wxx"]]])
        rhs = np.concatenate([x.T @ sums["wy"], sums["wxy"]])
        sol = _ridge_solve(lhs, rhs, np.concatenate([mu, beta]))
        mu, beta = sol[:k], sol[k:]
        fitted = (x @ mu)[None, None] + xtil @ beta
    e2 = (ytil - fitted) ** 2
    sums = reduce({"num": np.bincount(cur, weights=(g * e2).sum((0, 1)), minlength=k),
                   "den": np.bincount(cur, weights=g.sum((0, 1)), minlength=k)})
    num, den = sums["num"], sums["den"]
    if switching_variance:
        var = np.where(den > 0, num / np.where(den > 0, den, 1.0), var)
    else:
        var = np.full(k, num.sum() / den.sum())
    var = np.maximum(var, 1e-8)
    return mu[:, None], phi[:, :, None, None], var[:, None, None], beta


def _m_step_intercept(yt: np.ndarray, lags: np.ndarray, gk: np.ndarray, loc: np.ndarray,
                      coef: np.ndarray, cov: np.ndarray, switching_ar: bool,
                      switching_variance: bool, reduce: Reduce = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generalised least squares of the AR-HMM given the regime weights, then covariances.

    Minimises ``sum_(t,k) gk[t,k] (y_t - B x_k(t))^T P_k (y_t - B x_k(t))`` over ``B``
    (``P_k`` the current noise precisions) with ``x_k(t) = [onehot(k), lags]`` (lags
    interacted with the regime when ``switching_ar``), by the normal equations
    ``(sum_k X_k^T W_k X_k kron P_k) vec B = vec(sum_k P_k Y^T W_k X_k)``.

    Args:
        yt: ``[N, T', D]``; lags ``[N, T', p, D]``; gk ``[N, T', K]`` regime weights; loc
        ``[K, D]``; coef ``[K, p, D, D]``; cov ``[K, D, D]``.
    """
    reduce = _no_reduce if reduce is None else reduce
    k, p, d = coef.shape[0], coef.shape[1], yt.shape[-1]
    y = yt.reshape(-1, d)
    lag = lags.reshape(y.shape[0], p * d)  # [R, pD], lag 1 first
    weights = gk.reshape(-1, k)
    width = p * d * (k if switching_ar else 1)
    q = k + width
    prec = np.linalg.inv(cov)
    lhs = np.zeros((q * d, q * d))
    rhs = np.zeros((d, q))
    for j in range(k):
        x = np.zeros((y.shape[0], q))
        x[:, j] = 1.0
        off = k + (j * p * d if switching_ar else 0)
        x[:, off : off + p * d] = lag
        xw = x * weights[:, j : j + 1]
        lhs += np.kron(xw.T @ x, prec[j])
        rhs += prec[j] @ (y.T @ xw)
    sums = reduce({"lhs": lhs, "rhs": rhs})
    lhs, rhs = sums["lhs"], sums["rhs"]
    old = np.zeros((d, q))
    old[:, :k] = loc.T
    blocks = coef.transpose(0, 2, 1, 3).reshape(k, d, p * d)  # [K, D, pD]: B_k = [A_1..A_p]
    if switching_ar:
        for j in range(k):
            old[:, k + j * p * d : k + (j + 1) * p * d] = blocks[j]
    elif p:
        old[:, k:] = blocks[0]
    vec = _ridge_solve(lhs, rhs.reshape(-1, order="F"), old.reshape(-1, order="F"))
    b = vec.reshape(d, q, order="F")
    new_coef = coef.copy()
    if p:
        for j in range(k):
            off = k + (j * p * d if switching_ar else 0)
            new_coef[j] = b[:, off : off + p * d].reshape(d, p, d).transpose(1, 0, 2)
    if _stationary(new_coef):
        loc, coef = b[:, :k].T.copy(), new_coef
    scatter = np.zeros((k, d, d))
    total = np.zeros(k)
    for j in range(k):
        pred = loc[j] + sum(lags[:, :, i] @ coef[j, i].T for i in range(p)) if p else loc[j]
        e = (yt - pred).reshape(-1, d)
        scatter[j] = (e * weights[:, j : j + 1]).T @ e
        total[j] = weights[:, j].sum()
    sums = reduce({"scatter": scatter, "total": total})
    scatter, total = sums["scatter"], sums["total"]
    if switching_variance:
        cov = np.where(total[:, None, None] > 0,
                       scatter / np.where(total > 0, total, 1.0)[:, None, None], cov)
    else:
        cov = np.broadcast_to(scatter.sum(0) / total.sum(), (k, d, d)).copy()
    floor = 1e-8 * np.eye(d)
    cov = 0.5 * (cov + cov.transpose(0, 2, 1)) + floor
    return loc, coef, cov


def _coef_to_pacf(phi: np.ndarray) -> np.ndarray:
    """Partial autocorrelations ``[p]`` of stationary AR coefficients (the step-down
    Durbin-Levinson recursion, inverse of :func:`probseq.switching.inference.pacf_to_coef`)."""
    phi = np.asarray(phi, dtype=np.float64).copy()
    p = phi.shape[0]
    out = np.zeros(p)
    for j in range(p - 1, -1, -1):
        r = phi[j]
        out[j] = r
        if j:
            phi = (phi[:j] + r * phi[:j][::-1]) / (1 - r * r)
    return out
