"""Seasonal ARIMA(p, d, q)(P, D, Q, s) models of univariate real sequences, with the exact
likelihood of the differenced series, missing values and regression with SARIMA errors."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import numpy as np
import torch

from probseq._utils import param_array
from probseq.arima import inference
from probseq.autoregressive.likelihood import coef_from_pacf, max_root_inverse_modulus
from probseq.base import SequenceModel
from probseq.data import Sequences

__all__ = ["ARIMA"]

_TRENDS = ("n", "c")


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """One BLAS thread for the optimiser: its products are of a handful of numbers, and on
    a busy machine idle BLAS threads spinning for work made each L-BFGS step cost
    milliseconds (the fit ran 3x slower). A no-op without ``threadpoolctl``."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _newton_polish(objective, x: np.ndarray, fx: float, steps: int = 3
                   ) -> tuple[np.ndarray, float]:
    """A few Newton steps from L-BFGS's end point, with central-difference derivatives.

    L-BFGS on forward-difference gradients stops where the gradient's rounding noise
    (~1e-8) hides the slope, which leaves the estimates uncertain at ~1e-6 and different
    for data that differ only by rounding (``c * y``). Central differences bring the
    gradient's error to ~1e-10 and Newton converges quadratically, so the estimates settle
    to ~1e-9. A step is kept only if the Hessian is positive definite and the objective
    does not increase."""
    k = x.size
    h = 1e-4 * np.maximum(1.0, np.abs(x))
    for _ in range(steps):
        f0 = fx
        grad = np.empty(k)
        hess = np.empty((k, k))
        plus = np.empty(k)
        minus = np.empty(k)
        for i in range(k):
            e = np.zeros(k)
            e[i] = h[i]
            plus[i], minus[i] = objective(x + e), objective(x - e)
            grad[i] = (plus[i] - minus[i]) / (2 * h[i])
            hess[i, i] = (plus[i] - 2 * f0 + minus[i]) / h[i] ** 2
        for i in range(k):
            for j in range(i + 1, k):
                ei = np.zeros(k)
                ej = np.zeros(k)
                ei[i], ej[j] = h[i], h[j]
                fpp, fmm = objective(x + ei + ej), objective(x - ei - ej)
                hess[i, j] = hess[j, i] = (fpp - plus[i] - plus[j] + 2 * f0 - minus[i]
                                           - minus[j] + fmm) / (2 * h[i] * h[j])
        if not (np.isfinite(grad).all() and np.isfinite(hess).all()):
            break
        try:
            chol = np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            break
        step = np.linalg.solve(chol.T, np.linalg.solve(chol, grad))
        x_new = x - step
        f_new = objective(x_new)
        if not f_new <= fx:
            break
        x, fx = x_new, f_new
        if np.abs(step).max() < 1e-10:
            break
    return x, fx


def _order(x: Any, size: int, name: str) -> tuple[int, ...]:
    try:
        vals = tuple(x)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of {size} non-negative integers, "
                         f"got {x!r}") from None
    if len(vals) != size or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0 for v in vals
    ):
        raise ValueError(f"{name} must be a tuple of {size} non-negative integers, got {x!r}")
    return tuple(int(v) for v in vals)


def _vector(x: Any, name: str, size: int) -> np.ndarray:
    arr = param_array([] if x is None else x, name)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a vector, got shape {arr.shape}")
    arr = arr.reshape(-1)
    if arr.shape[0] != size:
        raise ValueError(f"{name} has {arr.shape[0]} coefficient(s), the order asks for {size}")
    return arr


class ARIMA(SequenceModel):
    """Seasonal ARIMA(p, d, q)(P, D, Q, s) with the sign conventions of statsmodels.

    Generative process (B the backshift operator, ``u_t = y_t - exog_t . exog_coef``)::

        w_t   = (1 - B)^d (1 - B^s)^D u_t                                # differencing
        phi(B) Phi(B^s) (w_t - mean) = theta(B) Theta(B^s) e_t,   e_t ~ N(0, noise_var)
        phi(B) = 1 - ar_1 B - ... - ar_p B^p,     Phi(B^s) = 1 - seasonal_ar_1 B^s - ...
        theta(B) = 1 + ma_1 B + ... + ma_q B^q,   Theta(B^s) = 1 + seasonal_ma_1 B^s + ...

    so that ``y_t = ar_1 y_(t-1) + ... + e_t + ma_1 e_(t-1) + ...`` for an ARMA. The ARMA
    part of ``w`` starts from its stationary distribution (exact likelihood, the state's
    covariance from the discrete Lyapunov equation, as statsmodels' stationary
    initialisation). ``mean`` is the mean of ``w`` (the process mean for ``d = D = 0``, a
    drift per step otherwise; statsmodels' ``SARIMAX(trend="c")`` intercept is
    ``mean * phi(1) Phi(1)``).

    **Differencing.** The first ``num_diffuse_steps = d + D s`` values only fix the
    integration constants: ``log_prob`` is the exact log-likelihood of the differenced
    series (statsmodels ``SARIMAX(..., simple_differencing=True)``), which equals the exact
    diffuse likelihood of the integrated model after its diffuse steps
    (``SARIMAX(..., use_exact_diffuse=True)``); ``log_prob_steps`` is 0 at the diffuse
    steps, and :func:`probseq.compare` conditions every model on them.

    **Missing values** (NaN) are marginalised exactly: the Kalman filter skips the update
    at a gap. With differencing, a sequence with gaps is filtered in the integrated
    state-space form (the ARMA state and the ``d + D s`` previous values, the latter with an
    exact diffuse start; Durbin & Koopman 2012, 5.2): its scored terms are the exact
    diffuse likelihood (statsmodels ``SARIMAX(..., use_exact_diffuse=True)``), and a gap
    among the first values lengthens the diffuse period (those steps score 0 too).

    **Covariates** (``exog [N, T, E]``): regression with SARIMA errors, ``y_t = exog_t .
    exog_coef + u_t``; with differencing both sides are differenced (as statsmodels'
    ``simple_differencing=True``).

    Args:
        order: ``(p, d, q)``.
        seasonal_order: ``(P, D, Q, s)``; s >= 2 when P, D or Q is positive.
        trend: ``"c"`` (a constant ``mean``) or ``"n"`` (none); None: ``"c"`` without
            differencing, ``"n"`` with it (statsmodels' ``ARIMA`` rule).
    """

    data_kind = "continuous"
    summary_params = ("ar", "ma", "seasonal_ar", "seasonal_ma", "mean", "noise_var", "exog_coef")
    supports_missing = True
    supports_exog = True
    _obs_dim = None

    def __init__(self, order: Any = (1, 0, 0), seasonal_order: Any = (0, 0, 0, 0),
                 trend: str | None = None):
        p, d, q = _order(order, 3, "order")
        sp, sd, sq, s = _order(seasonal_order, 4, "seasonal_order")
        if (sp or sd or sq) and s < 2:
            raise ValueError(
                f"seasonal_order={tuple(seasonal_order)!r} has seasonal terms but a period "
                f"s = {s}; the period must be at least 2")
        if not (sp or sd or sq):
            s = 0
        if trend is None:
            trend = "c" if d == 0 and sd == 0 else "n"
        if trend not in _TRENDS:
            raise ValueError(f"trend must be 'n', 'c' or None, got {trend!r}")
        self.order = (p, d, q)
        self.seasonal_order = (sp, sd, sq, s)
        self.trend = trend
        self.num_diffuse_steps = d + sd * s
        self.min_length = self.num_diffuse_steps + 1
        self._delta = inference.differencing_polynomial(d, sd, s)
        self._coefs: dict[str, np.ndarray] | None = None
        self.fit_result_: Any = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_params(cls, order: Any = None, seasonal_order: Any = None, *, ar: Any = None,
                    ma: Any = None, seasonal_ar: Any = None, seasonal_ma: Any = None,
                    noise_var: Any, mean: Any = None, intercept: Any = None,
                    exog_coef: Any = None) -> ARIMA:
        """A SARIMA with the given parameters.

        Args:
            order: ``(p, d, q)``; default ``(len(ar), 0, len(ma))``.
            seasonal_order: ``(P, D, Q, s)``; default no seasonal part.
            ar: ``[p]`` ``ar_1..ar_p`` (lag 1 first); ma: ``[q]``; seasonal_ar: ``[P]``
                (lags s, 2s, ...); seasonal_ma: ``[Q]``. Omitted: none.
            noise_var: sigma2 > 0.
            mean: the mean of the (differenced) series: the model gets ``trend="c"``.
            intercept: alternatively statsmodels' ``SARIMAX(trend="c")`` intercept ``c``
                (``mean = c / (phi(1) Phi(1))``); at most one of the two.
            exog_coef: ``[E]`` regression coefficients of the covariates.

        Raises:
            ValueError: coefficient counts that disagree with the orders, non-finite
                values, ``noise_var <= 0``, both ``mean`` and ``intercept``, or an AR
                polynomial that is not stationary (a root of ``phi(z) Phi(z^s)`` on or inside
                the unit circle: the stationary start, hence the exact likelihood, does not
                exist; unit roots belong in d or D). A non-invertible MA polynomial is
                accepted: its exact likelihood is well defined (it equals that of the
                invertible polynomial with the roots flipped and the variance rescaled),
                and ``fit`` always returns the invertible one.
        """
        def length(x: Any) -> int:
            return 0 if x is None else int(np.size(x))

        if order is None:
            order = (length(ar), 0, length(ma))
        if seasonal_order is None:
            if length(seasonal_ar) or length(seasonal_ma):
                raise ValueError("seasonal_ar/seasonal_ma need seasonal_order=(P, D, Q, s) "
                                 "to give the period s")
            seasonal_order = (0, 0, 0, 0)
        if mean is not None and intercept is not None:
            raise ValueError("give mean or intercept, not both")
        trend = "n" if mean is None and intercept is None else "c"
        model = cls(order=order, seasonal_order=seasonal_order, trend=trend)
        p, _, q = model.order
        sp, _, sq, _ = model.seasonal_order
        coefs = {
            "ar": _vector(ar, "ar", p),
            "ma": _vector(ma, "ma", q),
            "seasonal_ar": _vector(seasonal_ar, "seasonal_ar", sp),
            "seasonal_ma": _vector(seasonal_ma, "seasonal_ma", sq),
        }
        s2 = param_array(noise_var, "noise_var")
        if s2.ndim != 0:
            raise ValueError(f"noise_var must be a scalar, got shape {s2.shape}")
        if not s2 > 0:
            raise ValueError(f"noise_var must be > 0, got {float(s2)}")
        a, _ = model._reduced(coefs)
        radius = max_root_inverse_modulus(a)
        if not radius < 1.0:
            raise ValueError(
                f"the AR polynomial phi(z) Phi(z^s) is not stationary (inverse root modulus "
                f"{radius:.6g} >= 1): the ARMA part has no stationary distribution, so the "
                "exact likelihood is undefined; put unit roots in d or D instead")
        mu = 0.0
        if mean is not None:
            m = param_array(mean, "mean")
            if m.ndim != 0:
                raise ValueError(f"mean must be a scalar, got shape {m.shape}")
            mu = float(m)
        elif intercept is not None:
            c = param_array(intercept, "intercept")
            if c.ndim != 0:
                raise ValueError(f"intercept must be a scalar, got shape {c.shape}")
            mu = float(c) / (1.0 - float(a.sum()))
        beta = None
        if exog_coef is not None:
            beta = param_array(exog_coef, "exog_coef")
            if beta.ndim != 1 or beta.shape[0] < 1:
                raise ValueError(f"exog_coef must be a vector [E], got shape {beta.shape}")
        model._set(coefs, float(s2), mu, beta)
        return model

    def _reduced(self, coefs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return inference.reduced_polynomials(coefs["ar"], coefs["ma"], coefs["seasonal_ar"],
                                             coefs["seasonal_ma"], self.seasonal_order[3])

    def _set(self, coefs: dict[str, np.ndarray], noise_var: float, mean: float,
             exog_coef: np.ndarray | None) -> None:
        self._coefs = {k: np.asarray(v, dtype=np.float64).copy() for k, v in coefs.items()}
        self._noise_var = float(noise_var)
        self._mean = float(mean) if self.trend == "c" else 0.0
        self._exog_coef = None if exog_coef is None else np.asarray(exog_coef, np.float64).copy()
        a, b = self._reduced(self._coefs)
        self._ar, self._rvec = inference.transition_first_column(a, b)
        self._P0 = inference.stationary_state_cov(self._ar, self._rvec)

    # ---------------------------------------------------------------- data preparation
    def _errors(self, values: np.ndarray, exog: torch.Tensor | None) -> np.ndarray:
        """``u = y - exog @ exog_coef`` ``[N, T]`` (y itself without covariates)."""
        if self._exog_coef is None:
            if exog is not None:
                raise ValueError("this ARIMA was fitted without covariates; do not pass exog=")
            return values
        e = self._exog_coef.shape[0]
        if exog is None:
            raise ValueError(f"this ARIMA has {e} covariate coefficient(s); pass exog= with "
                             f"{e} covariate(s) for every step")
        if exog.shape[2] != e:
            raise ValueError(f"exog has {exog.shape[2]} covariates, the model was fitted with {e}")
        return values - exog[:, : values.shape[1]].numpy() @ self._exog_coef

    def _filter(self, seqs: Sequences, exog: torch.Tensor | None
                ) -> tuple[np.ndarray, inference.SeriesFilter]:
        """``(u, filter)``: the regression errors and the exact filter of them."""
        u = self._errors(seqs.values.numpy(), exog)
        observed = seqs.observed.numpy() if seqs.has_missing else None
        res = inference.filter_series(u, seqs.lengths.numpy(), observed, self._delta, self._ar,
                                      self._rvec, self._P0, self._mean)
        return u, res

    # ---------------------------------------------------------------- probabilities
    def _log_prob_steps(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        _, res = self._filter(seqs, exog)
        return torch.from_numpy(
            inference.gaussian_steps(res.innov, res.var, res.scored, self._noise_var))

    def _log_prob(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        # a sequential sum, so trailing padding (exact zeros) cannot change a bit
        return torch.from_numpy(np.cumsum(self._log_prob_steps(seqs, exog).numpy(), 1)[:, -1])

    # ---------------------------------------------------------------- fitting
    def fit(self, data: Any, *, exog: Any = None, max_iter: int = 500, seed: int | None = None,
            progress: bool | None = None, **unknown: Any) -> ARIMA:
        """Maximum likelihood: the exact likelihood of the differenced series.

        L-BFGS over an unconstrained parametrisation that keeps every AR polynomial
        stationary and every MA polynomial invertible (partial autocorrelations through
        ``tanh``), with the noise variance concentrated out and the data scaled to unit
        spread (the fit is scale-equivariant). The optimiser's result is kept as
        ``fit_result_``.

        Args:
            data: one series, a list of series or a ``Sequences`` (one set of parameters
                for all); NaN marks a missing value.
            exog: covariates aligned with the data (regression with SARIMA errors).
            max_iter: the optimiser's iteration limit.
            seed: accepted for a uniform interface (the fit is deterministic).
            progress: accepted for a uniform interface.

        Raises:
            ValueError: too few values, a differenced series that is constant (nothing to
                model), or a constant covariate.
        """
        return super().fit(data, exog=exog, max_iter=max_iter, seed=seed, progress=progress,
                           **unknown)

    def _fit(self, seqs: Sequences, *, exog: torch.Tensor | None = None, max_iter: int = 500,
             seed: int | None = None, progress: bool | None = None) -> None:
        from scipy.optimize import minimize

        self._fit_obs_dim(seqs, univariate_only=True)
        p, _, q = self.order
        sp, _, sq, _ = self.seasonal_order
        nd = self.num_diffuse_steps
        y = seqs.values.numpy()
        lengths = seqs.lengths.numpy()
        obs = seqs.observed.numpy() & seqs.mask.numpy()
        observed = obs if seqs.has_missing else None
        x = None if exog is None else exog[:, : seqs.max_length].numpy()
        e = 0 if x is None else x.shape[2]
        k_arma = p + q + sp + sq
        keep_w = self._complete_differences(obs)
        n_free = k_arma + (self.trend == "c") + e + 1
        n_scored = int(keep_w.sum())
        if n_scored < n_free + 1:
            raise ValueError(
                f"an ARIMA{self.order}{self.seasonal_order} fit with {e} covariate(s) needs at "
                f"least {n_free + 1} complete differences (d + D*s = {nd} steps back), but "
                f"the data gives {n_scored}")
        # scale (and, without differencing, centre) so that the fit is equivariant
        y0 = np.where(obs, y, 0.0)
        w_obs = inference.difference(y0, self._delta)[keep_w]
        y_loc = float(y[obs].mean()) if nd == 0 else 0.0
        y_scale = float(w_obs.std()) if nd else float(y[obs].std())
        if not y_scale > 1e-12 * max(float(np.abs(y[obs]).max()), 1e-300):
            raise ValueError(
                "the (differenced) data are constant: there is no noise to model "
                f"(spread {y_scale:.3g})")
        ys = np.where(obs, (y - y_loc) / y_scale, 0.0)
        xs = None
        x_loc = np.zeros(e)
        x_scale = np.ones(e)
        if x is not None:
            x_obs = x[obs]
            x_loc = x_obs.mean(0) if nd == 0 else np.zeros(e)
            x_scale = x_obs.std(0)
            const = np.flatnonzero(x_scale <= 1e-12 * np.maximum(np.abs(x_obs).max(0), 1e-300))
            if const.size:
                raise ValueError(f"covariate {int(const[0])} is constant over the observed "
                                 "steps: it is confounded with the mean")
            xs = (x - x_loc) / x_scale
        sizes = (p, sp, q, sq)

        def unpack(theta: np.ndarray) -> tuple[dict[str, np.ndarray], float, np.ndarray]:
            parts = np.split(theta[:k_arma], np.cumsum(sizes)[:-1])
            coefs = {
                "ar": coef_from_pacf(np.tanh(parts[0])),
                "seasonal_ar": coef_from_pacf(np.tanh(parts[1])),
                "ma": -coef_from_pacf(np.tanh(parts[2])),
                "seasonal_ma": -coef_from_pacf(np.tanh(parts[3])),
            }
            mu = float(theta[k_arma]) if self.trend == "c" else 0.0
            beta = theta[k_arma + (self.trend == "c"):]
            return coefs, mu, beta

        def run(theta: np.ndarray) -> tuple[float, float]:
            coefs, mu, beta = unpack(theta)
            u = ys if xs is None else ys - xs @ beta
            a, b = self._reduced(coefs)
            ar, rvec = inference.transition_first_column(a, b)
            P0 = inference.stationary_state_cov(ar, rvec)
            res = inference.filter_series(u, lengths, observed, self._delta, ar, rvec, P0, mu)
            if not (res.var[res.scored] > 0).all():
                return -np.inf, np.nan
            return inference.concentrated_log_lik(res.innov, res.var, res.scored)

        def objective(theta: np.ndarray) -> float:
            try:
                ll, _ = run(theta)
            except (np.linalg.LinAlgError, ValueError):
                return 1e300
            return -ll / n_scored if np.isfinite(ll) else 1e300

        start = self._start(ys, xs, sizes, keep_w)
        with warnings.catch_warnings(), _one_blas_thread():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = minimize(objective, start, method="L-BFGS-B",
                           options={"maxiter": int(max_iter), "gtol": 1e-8, "ftol": 1e-14})
        if not np.isfinite(res.fun) or res.fun >= 1e299:
            raise ValueError("the ARIMA fit failed to find a finite likelihood")
        res.x, res.fun = _newton_polish(objective, res.x, res.fun)
        coefs, mu_s, beta_s = unpack(res.x)
        _, s2 = run(res.x)
        beta = beta_s * y_scale / x_scale
        mu = y_scale * mu_s + (y_loc - float(x_loc @ beta) if nd == 0 else 0.0)
        self.fit_result_ = res
        self._set(coefs, s2 * y_scale**2, mu, beta if e else None)

    def _complete_differences(self, obs: np.ndarray) -> np.ndarray:
        """``[N, T_max - n_d]`` bool: the differences whose every term is observed."""
        nd = self.num_diffuse_steps
        t_max = obs.shape[1]
        keep = obs[:, nd:].copy()
        for k in range(1, nd + 1):
            if self._delta[k] != 0.0:
                keep &= obs[:, nd - k : t_max - k]
        return keep

    def _start(self, ys: np.ndarray, xs: np.ndarray | None, sizes: tuple[int, ...],
               keep: np.ndarray) -> np.ndarray:
        """Starting values: regression by least squares on the complete differences, AR
        partial autocorrelations from the sample ones (halved), the rest at 0."""
        p, sp, q, sq = sizes
        w = np.where(keep, inference.difference(ys, self._delta), 0.0)
        beta = np.zeros(0)
        if xs is not None:
            xw = np.stack([inference.difference(xs[..., j], self._delta)
                           for j in range(xs.shape[2])], -1)
            design = xw[keep]
            if self.trend == "c":
                design = np.c_[np.ones(design.shape[0]), design]
            coef = np.linalg.lstsq(design, w[keep], rcond=None)[0]
            beta = coef[1:] if self.trend == "c" else coef
            w = np.where(keep, w - xw @ beta, 0.0)
        mu = float(w[keep].mean()) if self.trend == "c" else 0.0
        resid = np.where(keep, w - mu, 0.0)
        pacf = np.zeros(p)
        if p:
            acov = np.array([(resid[:, k:] * resid[:, : resid.shape[1] - k]).sum()
                             for k in range(p + 1)]) / max(int(keep.sum()), 1)
            phi = np.zeros(0)
            v = max(acov[0], 1e-12)
            for k in range(1, p + 1):
                r = (acov[k] - phi @ acov[1:k][::-1]) / v if k > 1 else acov[1] / v
                r = float(np.clip(0.5 * r, -0.9, 0.9))
                pacf[k - 1] = r
                phi = np.r_[phi - r * phi[::-1], r]
                v *= 1 - r * r
        theta = np.r_[np.arctanh(pacf), np.zeros(sp + q + sq)]
        if self.trend == "c":
            theta = np.r_[theta, mu]
        return np.r_[theta, beta]

    # ---------------------------------------------------------------- Bayesian inference
    #: the sample sites of :meth:`pyro_model` for the partial autocorrelations, in the order
    #: of (ar, seasonal_ar, ma, seasonal_ma)
    PACF_SITES = (("ar", "pacf"), ("seasonal_ar", "seasonal_pacf"), ("ma", "ma_pacf"),
                  ("seasonal_ma", "seasonal_ma_pacf"))

    def pyro_model(self, data: Any) -> None:
        """A Pyro model of the data with priors on every parameter (for NUTS and SVI).

        Priors (weakly informative, located on the differenced series ``w``, an
        empirical-Bayes choice as for the AR; the differencing orders are fixed):

        * ``pacf [p]``, ``seasonal_pacf [P]`` ``~ Uniform(-1, 1)``: partial autocorrelations
          of ``phi`` and ``Phi`` (Durbin-Levinson), so every draw is stationary;
        * ``ma_pacf [q]``, ``seasonal_ma_pacf [Q]`` ``~ Uniform(-1, 1)``: the MA polynomials
          are ``theta = -coef_from_pacf(ma_pacf)`` (likewise ``Theta``), so every draw is
          invertible (the parametrisation ``fit`` uses);
        * ``mean ~ Normal(mean of w, 3 sd of w)`` (``trend="c"`` only);
        * ``noise_var ~ LogNormal(log variance of w, 1)``.

        The likelihood is ``pyro.factor("log_lik", ...)`` of exactly what ``log_prob``
        computes (the same Kalman filter of the differenced series, in numpy); its gradient,
        which NUTS and SVI need, is by central differences (relative error about 1e-8:
        NUTS stays exact, since its leapfrog steps are reversible and volume-preserving for
        any gradient field and its acceptance uses the exact density). Sequences may have
        missing values (marginalised exactly, as in ``log_prob``); no covariates. Override a
        prior with ``probseq.BayesianModel(..., prior={"noise_var": ...})``.

        Args:
            data: the sequences (any accepted input).
        """
        import pyro
        import pyro.distributions as dist

        seqs, _ = self._coerce(data, fitting=True)
        f64 = torch.float64
        obs = seqs.observed.numpy() & seqs.mask.numpy()
        keep = self._complete_differences(obs)
        w = inference.difference(np.where(obs, seqs.values.numpy(), 0.0), self._delta)[keep]
        if w.size < 2 or not w.std() > 0:
            raise ValueError("ARIMA.pyro_model needs at least two complete differences that "
                             f"are not all equal; the data gives {w.size}")
        loc, sd = float(w.mean()), float(w.std())
        sizes = dict(zip(("ar", "ma"), self.order[::2], strict=True))
        sizes.update(seasonal_ar=self.seasonal_order[0], seasonal_ma=self.seasonal_order[2])
        parts = []
        for name, site in self.PACF_SITES:
            k = sizes[name]
            if k:
                parts.append(pyro.sample(site, dist.Uniform(-torch.ones(k, dtype=f64),
                                                            torch.ones(k, dtype=f64))
                                         .to_event(1)))
        if self.trend == "c":
            parts.append(pyro.sample("mean", dist.Normal(torch.tensor(loc, dtype=f64),
                                                         torch.tensor(3.0 * sd, dtype=f64)))[None])
        parts.append(pyro.sample("noise_var", dist.LogNormal(
            torch.tensor(math.log(sd**2), dtype=f64), torch.ones((), dtype=f64)))[None])
        theta = torch.cat([x.to(f64) for x in parts])
        pyro.factor("log_lik", _FiniteDifferenceLogLik.apply(theta, _LogLik(self, seqs)))

    def params_from_pacf(self, values: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The parameters (``params`` names) of one draw of :meth:`pyro_model`'s sites
        ``values`` (site name -> tensor)."""
        sizes = {"ar": self.order[0], "ma": self.order[2],
                 "seasonal_ar": self.seasonal_order[0], "seasonal_ma": self.seasonal_order[2]}
        out = {}
        for name, site in self.PACF_SITES:
            pacf = (torch.as_tensor(values[site], dtype=torch.float64).numpy()
                    if sizes[name] else np.zeros(0))
            coef = coef_from_pacf(pacf)
            out[name] = torch.from_numpy(-coef if name.endswith("ma") else coef)
        out["noise_var"] = torch.as_tensor(values["noise_var"], dtype=torch.float64)
        if self.trend == "c":
            out["mean"] = torch.as_tensor(values["mean"], dtype=torch.float64)
        return out

    # ---------------------------------------------------------------- predictive distributions
    def _step_predictive(self, seqs: Sequences, exog: torch.Tensor | None = None
                         ) -> torch.distributions.Normal:
        """``Normal`` with batch shape ``[N, T_max]``: ``y_t`` given the observed ``y_<t``
        (and the covariates), exact; the variance is infinite at the diffuse steps (the
        first ``num_diffuse_steps``, later with gaps). Arbitrary (but finite) past each
        length."""
        self._check_fitted()
        values = seqs.values.numpy()
        u, res = self._filter(seqs, exog)
        shift = 0.0
        if self._exog_coef is not None:  # exog @ exog_coef, at missing steps too
            shift = exog[:, : values.shape[1]].numpy() @ self._exog_coef
        var = np.where(res.diffuse_step, math.inf, self._noise_var * res.var)
        return torch.distributions.Normal(torch.from_numpy(res.mean + shift),
                                          torch.from_numpy(np.sqrt(var)), validate_args=False)

    def _forecast(self, seqs: Sequences, horizon: int, exog: torch.Tensor | None = None
                  ) -> torch.distributions.Normal:
        """Exact h-step predictive marginals ``Normal`` with batch shape ``[N, H]`` of
        ``y_(T+h)`` given each sequence (and the covariates: ``exog [N, T_max + H, E]``
        covers the future steps of a model with covariates)."""
        mean, var = self._forecast_moments(seqs, horizon, exog)
        return torch.distributions.Normal(torch.from_numpy(mean), torch.from_numpy(np.sqrt(var)))

    def _forecast_moments(self, seqs: Sequences, horizon: int,
                          exog: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [N, H], var [N, H])`` of the next H values after each sequence."""
        self._check_fitted()
        h = int(horizon)
        t_max = seqs.max_length
        lengths = seqs.lengths.numpy()
        full = None
        if exog is not None:
            full = exog.numpy()
            exog = exog[:, :t_max]
        u, res = self._filter(seqs, exog)
        n = len(seqs)
        mean = np.zeros((n, h))
        var = np.zeros((n, h))
        plain = np.flatnonzero(~res.diffuse_rows)
        if plain.size:
            mean[plain], var[plain] = self._integrate_future(
                u[plain], lengths[plain], res.a_end[plain], res.p_end[plain], h)
        for i in np.flatnonzero(res.diffuse_rows):
            if res.diffuse_end[i]:
                raise ValueError(
                    f"sequence {i} has too few observed values to pin down its "
                    f"{self.num_diffuse_steps} integration constants; it cannot be forecast")
            tm, c, rr, z, _ = inference.integrated_form(self._ar, self._rvec, self._delta,
                                                        self._mean)
            x, P = res.x_end[i], res.px_end[i]
            for j in range(h):
                mean[i, j] = z @ x + self._mean
                var[i, j] = z @ P @ z
                x = tm @ x + c
                P = tm @ P @ tm.T + rr
        var = var * self._noise_var
        if self._exog_coef is not None:
            future = lengths[:, None] + np.arange(h)[None, :]
            if full is None or future.max() >= full.shape[1]:
                raise ValueError(f"exog must cover the {h} forecast steps")
            mean = mean + full[np.arange(n)[:, None], future] @ self._exog_coef
        return mean, var

    def _integrate_future(self, u: np.ndarray, lengths: np.ndarray, a_end: np.ndarray,
                          p_end: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Moments of ``u_(T+1..T+H)`` from the joint moments of the future differences:
        ``u_future = L^-1 (w_future + mean - c)`` with L the lower-triangular Toeplitz matrix
        of the differencing weights and c the share of the observed past."""
        wm, wcov = inference.future_cov(a_end, p_end, self._ar, self._rvec, h)
        wm = wm + self._mean
        nd = self.num_diffuse_steps
        n = u.shape[0]
        lower = np.zeros((h, h))
        for k in range(min(nd, h - 1) + 1):
            lower[np.arange(k, h), np.arange(h - k)] = self._delta[k]
        c = np.zeros((n, h))
        rows = np.arange(n)
        for j in range(h):
            for k in range(j + 1, nd + 1):
                c[:, j] += self._delta[k] * u[rows, lengths + j - k]
        inv = np.linalg.inv(lower)
        mean = (wm - c) @ inv.T
        cov = inv @ wcov @ inv.T
        return mean, np.diagonal(cov, axis1=1, axis2=2).copy()

    # ---------------------------------------------------------------- sampling
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                exog: torch.Tensor | None = None) -> torch.Tensor:
        """Without a prefix the values before the first are taken as 0 (the model does not
        determine the first ``d + D s`` values); with one, the ARMA state is filtered on
        the prefix and the continuation drawn from its exact conditional."""
        n = num_sequences
        nd = self.num_diffuse_steps
        shift = np.zeros((n, length))
        if self._exog_coef is not None or exog is not None:
            shift = -self._errors(np.zeros((n, length)), exog)
        start = 0 if prefix is None else int(prefix.shape[0])
        u = np.zeros((n, length))
        if start:
            u[:, :start] = prefix.numpy()[None, :] - shift[:, :start]
        state = state_cov = None
        if start > nd:
            pre = Sequences(torch.from_numpy(prefix.numpy()[None, :].copy()),
                            torch.tensor([start]))
            ex = None if exog is None else exog[:1, :start]
            _, res = self._filter(pre, ex)
            state, state_cov = res.a_end[0], res.p_end[0]
        todo = length - start
        if todo <= 0:
            return torch.from_numpy(u + shift)
        r = len(self._ar)
        start_noise = torch.randn(n, r, dtype=torch.float64).numpy()
        noise = torch.randn(n, todo, dtype=torch.float64).numpy()
        w = inference.sample_arma(n, todo, self._ar, self._rvec, self._P0, state, state_cov,
                                  noise, start_noise, math.sqrt(self._noise_var)) + self._mean
        for t in range(start, length):
            val = w[:, t - start]
            for k in range(1, nd + 1):
                if t - k >= 0:
                    val = val - self._delta[k] * u[:, t - k]
            u[:, t] = val
        return torch.from_numpy(u + shift)

    # ---------------------------------------------------------------- bookkeeping
    @property
    def params(self) -> dict[str, torch.Tensor]:
        """``ar [p]``, ``ma [q]``, ``seasonal_ar [P]``, ``seasonal_ma [Q]`` (lag 1, or s,
        first), ``noise_var`` (0-d), ``mean`` (0-d, ``trend="c"`` only) and ``exog_coef
        [E]`` (models with covariates)."""
        self._check_fitted()
        out = {k: torch.from_numpy(v.copy()) for k, v in self._coefs.items()}
        out["noise_var"] = torch.tensor(self._noise_var, dtype=torch.float64)
        if self.trend == "c":
            out["mean"] = torch.tensor(self._mean, dtype=torch.float64)
        if self._exog_coef is not None:
            out["exog_coef"] = torch.from_numpy(self._exog_coef.copy())
        return out

    @property
    def intercept(self) -> float:
        """statsmodels' ``SARIMAX(trend="c")`` intercept ``mean * phi(1) Phi(1)``."""
        self._check_fitted()
        return self._mean * (1.0 - float(self._ar.sum()))

    @property
    def num_exog(self) -> int:
        """E, the number of covariates the fitted model uses (0 without covariates)."""
        return 0 if self._exog_coef is None else int(self._exog_coef.shape[0])

    @property
    def num_params(self) -> int:
        """``p + q + P + Q + 1`` (the noise variance) ``+ 1`` for a mean ``+ E``."""
        p, _, q = self.order
        sp, _, sq, _ = self.seasonal_order
        return p + q + sp + sq + 1 + (self.trend == "c") + self.num_exog

    def _is_fitted(self) -> bool:
        return self._coefs is not None

    def _summary_rebuild_keywords(self) -> dict[str, Any]:
        return {"order": self.order, "seasonal_order": self.seasonal_order}

    def get_config(self) -> dict[str, Any]:
        return {"order": list(self.order), "seasonal_order": list(self.seasonal_order),
                "trend": self.trend}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return self.params

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        sizes = {"ar": self.order[0], "ma": self.order[2], "seasonal_ar": self.seasonal_order[0],
                 "seasonal_ma": self.seasonal_order[2]}
        coefs = {}
        for k, size in sizes.items():
            coefs[k] = tensors[k].to(torch.float64).numpy().copy()
            if coefs[k].shape != (size,):
                raise KeyError(f"{k} of shape {coefs[k].shape} for order {size}")
        beta = tensors.get("exog_coef")
        beta = None if beta is None else beta.to(torch.float64).numpy().copy()
        mean = float(tensors["mean"]) if "mean" in tensors else 0.0
        self._set(coefs, float(tensors["noise_var"]), mean, beta)


class _LogLik:
    """``log_prob(seqs).sum()`` of an ARIMA at the flat vector of :meth:`ARIMA.pyro_model`
    (partial autocorrelations, mean, noise variance): the model's own filter."""

    def __init__(self, model: ARIMA, seqs: Sequences):
        self.template = ARIMA(order=model.order, seasonal_order=model.seasonal_order,
                              trend=model.trend)
        self.seqs = seqs
        self.sizes = [model.order[0], model.seasonal_order[0], model.order[2],
                      model.seasonal_order[2]]
        self.num_pacf = sum(self.sizes)

    def __call__(self, theta: np.ndarray) -> float:
        if not (np.abs(theta[: self.num_pacf]) < 1).all():
            # a partial autocorrelation rounded onto +-1 (a sampler's transform far out): a
            # unit root, no stationary start, no likelihood
            return -math.inf
        parts = np.split(theta[: self.num_pacf], np.cumsum(self.sizes)[:-1])
        coefs = {"ar": coef_from_pacf(parts[0]), "seasonal_ar": coef_from_pacf(parts[1]),
                 "ma": -coef_from_pacf(parts[2]), "seasonal_ma": -coef_from_pacf(parts[3])}
        mean = float(theta[self.num_pacf]) if self.template.trend == "c" else 0.0
        self.template._set(coefs, float(theta[-1]), mean, None)
        return float(self.template._log_prob(self.seqs).sum())

    def steps(self, theta: np.ndarray) -> np.ndarray:
        """Central-difference steps: relative to each value's scale, inside (-1, 1) for a
        partial autocorrelation."""
        h = np.empty_like(theta)
        k = self.num_pacf
        h[:k] = np.minimum(1e-5, 0.5 * (1.0 - np.abs(theta[:k])))
        scale = math.sqrt(theta[-1])
        h[k:-1] = 1e-5 * max(scale, float(np.abs(theta[k:-1]).max(initial=0.0)))
        h[-1] = 1e-5 * theta[-1]
        return h


class _FiniteDifferenceLogLik(torch.autograd.Function):
    """A numpy log-likelihood as a torch function of a flat parameter vector, its gradient
    by central differences."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor, fn: _LogLik) -> torch.Tensor:
        ctx.fn = fn
        ctx.save_for_backward(theta)
        return torch.tensor(fn(theta.detach().numpy().astype(np.float64)), dtype=theta.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (theta,) = ctx.saved_tensors
        x = theta.detach().numpy().astype(np.float64)
        h = ctx.fn.steps(x)
        out = np.zeros_like(x)
        for i in range(x.size):
            if not h[i] > 0:  # on the boundary: no likelihood, no slope
                continue
            e = np.zeros_like(x)
            e[i] = h[i]
            diff = ctx.fn(x + e) - ctx.fn(x - e)
            out[i] = diff / (2 * h[i]) if np.isfinite(diff) else 0.0
        return grad * torch.from_numpy(out).to(theta.dtype), None
