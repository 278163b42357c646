"""Gaussian autoregressive models AR(p) of univariate real sequences, with missing values
and exogenous regressors (regression with AR(p) errors)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from probseq._utils import param_array
from probseq.autoregressive import likelihood
from probseq.base import SequenceModel
from probseq.data import Sequences

__all__ = ["AutoRegressive"]

#: a residual sd at or below this fraction of the data's sd is an exact fit (rounding residue)
_PREDICTABLE_TOL = 1e-9
#: a noise sd at or below this fraction of the values' magnitude is below float64 rounding
_ROUNDING_TOL = 1e-12
_LOG_2PI = float(np.log(2 * np.pi))


def _check_not_exactly_predictable(noise_var: float, values: np.ndarray, order: int) -> None:
    """Refuse a fit whose residual variance is a rounding residue.

    Scale-free: the residual sd is compared with the sd of the data (an exact fit of a
    non-constant series: linear, geometric, periodic) and with the magnitude of the values
    (a constant series, whose own sd is a rounding residue too).
    """
    sd = float(np.sqrt(max(noise_var, 0.0)))
    spread = float(values.std()) if values.size else 0.0
    level = float(np.sqrt(np.mean(values**2))) if values.size else 0.0
    if sd <= _PREDICTABLE_TOL * spread or sd <= _ROUNDING_TOL * level:
        raise ValueError(
            f"the data are exactly predictable by an AR({order}) (residual sd {sd:.3g} "
            f"against a data sd of {spread:.3g} and magnitude {level:.3g}: constant, "
            "linear or otherwise deterministic), so the noise variance would be a rounding "
            "residue and every likelihood absurd"
        )


def _check_complete_windows(values: np.ndarray, observed: np.ndarray, order: int) -> None:
    """Refuse gappy data that an AR(p) predicts exactly (the same rule as for complete data):
    least squares of each value on its p lags over the windows of p + 1 observed values."""
    t_max = values.shape[1]
    if t_max <= order:
        return
    keep = observed[:, order:].copy()
    for lag in range(1, order + 1):
        keep &= observed[:, order - lag : t_max - lag]
    rows = int(keep.sum())
    if rows < order + 2:
        return
    design = np.ones((rows, order + 1))
    for lag in range(1, order + 1):
        design[:, lag] = values[:, order - lag : t_max - lag][keep]
    target = values[:, order:][keep]
    resid = target - design @ np.linalg.lstsq(design, target, rcond=None)[0]
    _check_not_exactly_predictable(float(np.mean(resid**2)), values[observed], order)


class AutoRegressive(SequenceModel):
    """Gaussian AR(p) with intercept, scored by its exact stationary joint likelihood.

    Generative process::

        y_1..y_p ~ N(mu, Toeplitz(gamma_0..gamma_{p-1}))      # the stationary distribution
        for t in p+1..T:
            y_t ~ N(c + phi_1 y_{t-1} + ... + phi_p y_{t-p}, sigma2)

    with ``mu = c / (1 - sum(phi))`` and ``gamma`` the autocovariances (Yule-Walker). A
    sequence shorter than p is scored by the stationary marginal of its values. A model whose
    coefficients are not stationary (a root of ``1 - sum_j phi_j z^j`` on or inside the unit
    circle) has no stationary distribution: it can exist (and continue a prefix of at least
    p values) but ``log_prob`` refuses it.

    **Covariates** (``exog`` ``[N, T, E]``): regression with AR(p) errors, statsmodels'
    ``ARIMA(p, 0, 0, exog=..., trend="c")``: ``y_t = beta . x_t + u_t`` with ``u_t`` the
    AR(p) above (``exog_coef`` is beta, and statsmodels' ``const`` is ``mu``). The Jacobian
    of ``y -> u`` is 1, so the densities are those of y.

    **Missing values** (NaN) are marginalised exactly: ``log_prob`` from the banded precision
    of the stationary joint (:func:`~probseq.autoregressive.likelihood.missing_log_prob`),
    ``log_prob_steps`` from the Kalman filter of the companion form (0 at missing steps);
    both equal statsmodels' ``ARIMA`` with NaN in the data.

    Args:
        order: p >= 0.
    """

    data_kind = "continuous"
    summary_params = ("intercept", "coef", "noise_var", "exog_coef")
    supports_missing = True
    supports_exog = True
    _obs_dim = None

    def __init__(self, order: int = 1):
        if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
            raise ValueError(f"order must be a non-negative integer, got {order!r}")
        self.order = int(order)
        self._intercept: float | None = None
        self._coef: np.ndarray | None = None
        self._noise_var: float | None = None
        self._exog_coef: np.ndarray | None = None
        self.fit_result_: Any = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_params(cls, intercept: Any, coef: Any, noise_var: Any,
                    exog_coef: Any = None) -> AutoRegressive:
        """An AR(p) with the given parameters.

        Args:
            intercept: c, a scalar (of the AR errors ``u`` when there are covariates).
            coef: ``[p]`` ``phi_1..phi_p``, lag 1 first (p = 0 allowed: an empty vector).
            noise_var: sigma2 > 0.
            exog_coef: ``[E]`` regression coefficients beta of the covariates, or None.

        Raises:
            ValueError: non-scalar intercept or noise variance, coef or exog_coef not 1-D,
                non-finite values, ``noise_var <= 0``, or a noise sd below the rounding level
                of the process's mean (values at that level cannot resolve it).
                Non-stationary coefficients are accepted (``log_prob`` then refuses).
        """
        c = param_array(intercept, "intercept")
        phi = param_array(coef, "coef")
        s2 = param_array(noise_var, "noise_var")
        if c.ndim != 0:
            raise ValueError(f"intercept must be a scalar, got shape {c.shape}")
        if s2.ndim != 0:
            raise ValueError(f"noise_var must be a scalar, got shape {s2.shape}")
        if phi.ndim != 1:
            raise ValueError(f"coef must be a vector [p] (lag 1 first), got shape {phi.shape}")
        beta = None
        if exog_coef is not None:
            beta = param_array(exog_coef, "exog_coef")
            if beta.ndim != 1 or beta.shape[0] < 1:
                raise ValueError(f"exog_coef must be a vector [E], got shape {beta.shape}")
        if not s2 > 0:
            raise ValueError(f"noise_var must be > 0, got {float(s2)}")
        level = abs(float(c))
        if likelihood.is_stationary(phi):
            level = max(level, abs(likelihood.stationary_mean(float(c), phi)))
        if np.sqrt(s2) <= _ROUNDING_TOL * level:
            raise ValueError(
                f"noise_var = {float(s2):.3g} is below the rounding level of the process "
                f"(noise sd {np.sqrt(s2):.3g} against a level of {level:.3g}): float64 "
                "values at that level cannot resolve the noise, so densities would be "
                "rounding artefacts"
            )
        model = cls(order=phi.shape[0])
        model._set(float(c), phi.copy(), float(s2), beta)
        return model

    def _set(self, intercept: float, coef: np.ndarray, noise_var: float,
             exog_coef: np.ndarray | None = None) -> None:
        self._intercept, self._coef, self._noise_var = intercept, coef, noise_var
        self._exog_coef = exog_coef
        self._radius = likelihood.max_root_inverse_modulus(coef)
        self._moments = None
        self._gamma = None
        if self._radius < 1:
            try:
                self._moments = likelihood.stationary_moments(intercept, coef, noise_var)
                self._gamma = likelihood.autocovariances(coef, noise_var)
            except np.linalg.LinAlgError:  # so close to a unit root that gamma is not SPD
                self._moments = None

    # ---------------------------------------------------------------- fitting
    def fit(self, data: Any, *, exog: Any = None, method: str = "auto", max_iter: int = 1000,
            seed: int | None = None, progress: bool | None = None,
            **unknown: Any) -> AutoRegressive:
        """Estimate the AR(p) (with regression coefficients when ``exog`` is given).

        Args:
            data: one series, a list of series or a ``Sequences``; NaN marks a missing value.
            exog: covariates ``[T, E]`` / ``[N, T, E]`` / a DataFrame aligned with the data;
                the model becomes a regression with AR(p) errors.
            method: ``"cls"``: conditional least squares (the conditional maximum likelihood
                given the first p values of each sequence; statsmodels' ``AutoReg`` for one
                series), for complete data without covariates. ``"mle"``: the exact maximum
                likelihood (the stationary joint, missing values marginalised; statsmodels'
                ``ARIMA(p, 0, 0).fit()``), by L-BFGS over a stationary parametrisation
                (partial autocorrelations) on standardised data. ``"auto"`` (default):
                ``"cls"`` for complete data without covariates, else ``"mle"``.
            max_iter: the iteration limit of the ``"mle"`` optimiser (its result is kept as
                ``fit_result_``, a ``scipy.optimize.OptimizeResult``).
            seed: accepted for a uniform interface; both fits are deterministic.
            progress: accepted for a uniform interface.

        Returns:
            self.

        Raises:
            ValueError: too few values for the regression, data an AR(p) predicts exactly
                (constant, linear, ...: the noise variance would be a rounding residue), a
                constant covariate (confounded with the intercept), or ``"cls"`` asked for
                data with gaps or covariates.
        """
        return super().fit(data, exog=exog, method=method, max_iter=max_iter, seed=seed,
                           progress=progress, **unknown)

    def _fit(self, seqs: Sequences, *, exog: torch.Tensor | None = None, method: str = "auto",
             max_iter: int = 1000, seed: int | None = None,
             progress: bool | None = None) -> None:
        if method not in ("auto", "cls", "mle"):
            raise ValueError(f"method must be 'auto', 'cls' or 'mle', got {method!r}")
        self._fit_obs_dim(seqs, univariate_only=True)
        if method == "auto":
            method = "cls" if exog is None and not seqs.has_missing else "mle"
        self.fit_result_ = None  # the "mle" optimiser's result
        if method == "cls":
            if exog is not None or seqs.has_missing:
                raise ValueError(
                    "method='cls' needs complete data without covariates; use method='mle' "
                    "(the exact likelihood marginalises missing values and takes exog)"
                )
            self._fit_cls(seqs)
        else:
            self._fit_mle(seqs, exog, int(max_iter))

    def _fit_cls(self, seqs: Sequences) -> None:
        p = self.order
        values = seqs.values.numpy()
        lengths = seqs.lengths.numpy()
        rows = int(np.maximum(lengths - p, 0).sum())
        if rows < p + 2:
            n = len(seqs)
            raise ValueError(
                f"an AR({p}) fit needs at least {p + 2} values after the first {p} of each "
                f"sequence ({p + 1} regressors and a residual), so at least {2 * p + 2} "
                f"values in one sequence; the data has {int(lengths.sum())} values in {n} "
                f"sequence{'s' if n != 1 else ''} (longest {int(lengths.max())}), which "
                f"give {rows}"
            )
        # Regress the centred data: the same least-squares problem, but a level far above
        # the noise no longer ruins the conditioning of [1, lags].
        flat = values[seqs.mask.numpy()]
        centre = float(flat.mean())
        centred = values - centre
        if len(seqs) == 1:
            from statsmodels.tsa.ar_model import AutoReg

            # statsmodels warns (SingularMatrixWarning, ...) on data that the check below
            # refuses anyway; hold its warnings back and replay them only if the fit stands.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = AutoReg(centred[0, : lengths[0]], lags=p, trend="c").fit()
            params, noise_var = np.asarray(res.params, dtype=np.float64), float(res.sigma2)
        else:
            params, ssr, nobs = likelihood.pooled_least_squares(centred, lengths, p)
            noise_var = ssr / nobs
            caught = []
        params[0] += centre * (1.0 - params[1:].sum())
        if not (np.isfinite(params).all() and np.isfinite(noise_var)):
            raise ValueError(f"the AR({p}) fit gave non-finite parameters; is the data degenerate?")
        _check_not_exactly_predictable(noise_var, flat, p)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._set(float(params[0]), params[1:].copy(), noise_var)

    def _fit_mle(self, seqs: Sequences, exog: torch.Tensor | None, max_iter: int) -> None:
        from scipy.optimize import minimize

        p = self.order
        y = seqs.values.numpy()
        obs = seqs.observed.numpy()
        lengths = seqs.lengths.numpy()
        n_obs = int(obs.sum())
        x = None if exog is None else exog[:, : seqs.max_length].numpy()
        e = 0 if x is None else x.shape[2]
        if n_obs < p + e + 3:
            raise ValueError(
                f"an exact AR({p}) fit with {e} covariates needs at least {p + e + 3} observed "
                f"values, but the data has {n_obs}"
            )
        # Standardise (the fit is then scale-free): ys = (y - loc) / scale, xs likewise.
        y_obs = y[obs]
        y_loc, y_scale = float(y_obs.mean()), float(y_obs.std())
        if not y_scale > _ROUNDING_TOL * max(abs(y_loc), np.finfo(float).tiny):
            _check_not_exactly_predictable(0.0, y_obs, p)
        ys = np.where(obs, (y - y_loc) / y_scale, 0.0)
        if x is None:
            _check_complete_windows(ys, obs, p)
        xs = None
        if x is not None:
            x_obs = x[obs]
            x_loc, x_scale = x_obs.mean(0), x_obs.std(0)
            const = np.flatnonzero(x_scale <= 1e-12 * np.maximum(np.abs(x_loc), 1e-300))
            if const.size:
                raise ValueError(
                    f"covariate {int(const[0])} is constant over the observed steps: it is "
                    "confounded with the intercept"
                )
            xs = (x - x_loc) / x_scale
        start = self._mle_start(ys, obs, xs)
        rows_missing = obs.sum(1) < lengths

        def unpack(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
            mu, beta = float(theta[0]), theta[1 : 1 + e]
            coef = likelihood.coef_from_pacf(np.tanh(theta[1 + e : 1 + e + p]))
            return mu, beta, coef, float(np.exp(theta[-1]))

        def objective(theta: np.ndarray) -> float:
            mu, beta, coef, s2 = unpack(theta)
            u = ys if xs is None else ys - xs @ beta
            total = _total_log_prob(u, obs, lengths, rows_missing, mu * (1 - coef.sum()),
                                    coef, s2)
            return -total / n_obs if np.isfinite(total) else 1e300

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = minimize(objective, start, method="L-BFGS-B", jac="3-point",
                           options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-15})
        if not np.isfinite(res.fun):
            raise ValueError(f"the exact AR({p}) fit failed to find a finite likelihood")
        mu_s, b_s, coef, s2_s = unpack(res.x)
        pacf = np.tanh(res.x[1 + e : 1 + e + p])
        if p and np.abs(pacf).max() >= 1 - 1e-6:
            raise ValueError(
                f"the exact AR({p}) likelihood has no maximum inside the stationary region "
                f"(a partial autocorrelation went to {pacf[np.abs(pacf).argmax()]:+.9f}): the "
                "data are (nearly) exactly predictable by an AR with a root on the unit "
                "circle (constant, alternating, sinusoidal, trending); difference the series "
                "or model the trend"
            )
        noise_var = s2_s * y_scale**2
        beta = None
        mu = y_loc + y_scale * mu_s
        if x is not None:
            beta = y_scale * b_s / x_scale
            mu -= float(x_loc @ beta)
        _check_not_exactly_predictable(noise_var, y_obs, p)
        self._set(mu * (1.0 - float(coef.sum())), coef, float(noise_var), beta)
        self.fit_result_ = res

    def _mle_start(self, ys: np.ndarray, obs: np.ndarray, xs: np.ndarray | None) -> np.ndarray:
        """Starting values: least squares of the observed values on the covariates, then the
        partial autocorrelations of the residuals from the autocovariances over observed
        pairs (Durbin-Levinson), shrunk inside (-0.9, 0.9)."""
        p = self.order
        design = np.ones((int(obs.sum()), 1))
        if xs is not None:
            design = np.hstack([design, xs[obs]])
        beta = np.linalg.lstsq(design, ys[obs], rcond=None)[0]
        resid = np.zeros_like(ys)
        resid[obs] = ys[obs] - design @ beta
        if xs is not None and resid[obs].std() <= _PREDICTABLE_TOL:  # ys has sd 1
            raise ValueError(
                f"the data are an exact linear function of the covariates (residual sd "
                f"{resid[obs].std():.3g} of the data's sd), so the noise variance would be a "
                "rounding residue and every likelihood absurd"
            )
        acov = np.zeros(p + 1)
        for k in range(p + 1):
            both = obs[:, k:] & obs[:, : ys.shape[1] - k]
            count = max(int(both.sum()), 1)
            acov[k] = (resid[:, k:] * resid[:, : ys.shape[1] - k])[both].sum() / count
        var = max(acov[0], 1e-12)
        pacf = np.zeros(p)
        phi = np.zeros(0)
        v = var
        for k in range(1, p + 1):  # Durbin-Levinson on the sample autocovariances
            r = (acov[k] - phi @ acov[1:k][::-1]) / v if k > 1 else acov[1] / v
            r = float(np.clip(r, -0.9, 0.9))
            pacf[k - 1] = r
            phi = np.r_[phi - r * phi[::-1], r]
            v *= 1 - r * r
        return np.r_[beta, np.arctanh(pacf), np.log(max(v, 1e-12))]

    # ---------------------------------------------------------------- probabilities
    def _check_stationary(self) -> None:
        if self._moments is None:
            raise ValueError(
                f"this AR({self.order}) is not stationary (a root of its characteristic "
                f"polynomial lies on or inside the unit circle, or numerically at it: companion "
                f"spectral radius {self._radius:.6g}), so the first {self.order} values have "
                "no stationary distribution and the exact joint likelihood is undefined"
            )

    def _errors(self, values: np.ndarray, exog: torch.Tensor | None) -> np.ndarray:
        """``u = y - exog @ beta`` ``[N, T]`` (y itself without covariates)."""
        if self._exog_coef is None:
            if exog is not None:
                raise ValueError(
                    "this AutoRegressive was fitted without covariates; do not pass exog="
                )
            return values
        e = self._exog_coef.shape[0]
        if exog is None:
            raise ValueError(
                f"this AutoRegressive has {e} covariate coefficient(s); pass exog= with "
                f"{e} covariate(s) for every step"
            )
        if exog.shape[2] != e:
            raise ValueError(f"exog has {exog.shape[2]} covariates, the model was fitted with {e}")
        return values - exog[:, : values.shape[1]].numpy() @ self._exog_coef

    def _steps(self, seqs: Sequences, exog: torch.Tensor | None = None) -> np.ndarray:
        self._check_stationary()
        u = self._errors(seqs.values.numpy(), exog)
        lengths = seqs.lengths.numpy()
        out = likelihood.log_prob_steps(u, lengths, self._intercept, self._coef,
                                        self._noise_var, self._moments)
        if seqs.has_missing:
            obs = seqs.observed.numpy()
            rows = np.flatnonzero(obs.sum(1) < lengths)
            mean, var = likelihood.predictive_moments(
                u[rows], obs[rows], lengths[rows], self._intercept, self._coef,
                self._noise_var, self._moments, self._kalman_gamma())
            lp = -0.5 * (_LOG_2PI + np.log(var) + (u[rows] - mean) ** 2 / var)
            out[rows] = np.where(obs[rows], lp, 0.0)
        return out

    def _kalman_gamma(self) -> np.ndarray:
        return self._gamma if self.order else np.array([self._noise_var])

    def _log_prob_steps(self, seqs: Sequences, exog: torch.Tensor | None = None
                        ) -> torch.Tensor:
        return torch.from_numpy(self._steps(seqs, exog))

    def _log_prob(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        self._check_stationary()
        u = self._errors(seqs.values.numpy(), exog)
        lengths = seqs.lengths.numpy()
        obs = seqs.observed.numpy()
        missing = obs.sum(1) < lengths if seqs.has_missing else np.zeros(len(seqs), bool)
        return torch.from_numpy(_per_sequence_log_prob(
            u, obs, lengths, missing, self._intercept, self._coef, self._noise_var,
            self._moments))

    @property
    def stationary_mean(self) -> float:
        """``mu = c / (1 - sum(phi))`` (stationary models only; of the AR errors u when the
        model has covariates)."""
        self._check_fitted()
        self._check_stationary()
        return likelihood.stationary_mean(self._intercept, self._coef)

    def autocovariances(self, max_lag: int | None = None) -> torch.Tensor:
        """``[max_lag + 1]`` stationary autocovariances ``gamma_0..gamma_max_lag``
        (default ``max_lag = p``), extended beyond p by the AR recursion."""
        self._check_fitted()
        self._check_stationary()
        p = self.order
        max_lag = p if max_lag is None else int(max_lag)
        gamma = list(likelihood.autocovariances(self._coef, self._noise_var))
        for h in range(p + 1, max_lag + 1):
            gamma.append(sum(self._coef[j - 1] * gamma[h - j] for j in range(1, p + 1)))
        return torch.tensor(gamma[: max_lag + 1], dtype=torch.float64)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """``intercept`` (0-d), ``coef [p]`` (lag 1 first), ``noise_var`` (0-d) and, for a
        model with covariates, ``exog_coef [E]``."""
        self._check_fitted()
        out = {
            "intercept": torch.tensor(self._intercept, dtype=torch.float64),
            "coef": torch.from_numpy(self._coef.copy()),
            "noise_var": torch.tensor(self._noise_var, dtype=torch.float64),
        }
        if self._exog_coef is not None:
            out["exog_coef"] = torch.from_numpy(self._exog_coef.copy())
        return out

    # ---------------------------------------------------------------- sampling
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                exog: torch.Tensor | None = None,
                prefix_observed: torch.Tensor | None = None) -> torch.Tensor:
        p, n = self.order, num_sequences
        c, phi, s2 = self._intercept, self._coef, self._noise_var
        shift = np.zeros((n, length))
        if self._exog_coef is not None or exog is not None:
            shift = self._errors(np.zeros((n, length)), exog) * -1.0  # exog @ beta
        u = np.empty((n, length))
        start = 0 if prefix is None else prefix.shape[0]
        if start:
            u[:, :start] = prefix.numpy()[None, :] - shift[:, :start]
        if prefix_observed is not None and not bool(prefix_observed.all()):
            # Gaps in the prefix: draw them from their conditional given the observed values.
            self._check_stationary()
            obs = prefix_observed.numpy()
            filled, band = likelihood.conditional_fill(u[:, :start], obs, phi, s2,
                                                       self._moments)
            eps = torch.randn(n, int((~obs).sum()), dtype=torch.float64).numpy()
            u[:, :start] = likelihood.draw_missing(filled, obs, band, eps)
        head = min(p, length)
        if start < head:
            # The values before step p: the stationary Gaussian, conditioned on the prefix.
            self._check_stationary()
            gamma = likelihood.autocovariances(phi, s2)
            idx = np.abs(np.arange(head)[:, None] - np.arange(head)[None, :])
            cov = gamma[idx]
            mu = likelihood.stationary_mean(c, phi)
            known, todo = slice(0, start), slice(start, head)
            mean = np.full((n, head - start), mu)
            cond = cov[todo, todo]
            if start:
                gain = np.linalg.solve(cov[known, known], cov[known, todo]).T
                mean = mean + (u[:, known] - mu) @ gain.T
                cond = cond - gain @ cov[known, todo]
            chol = np.linalg.cholesky(cond)
            eps = torch.randn(n, head - start, dtype=torch.float64).numpy()
            u[:, todo] = mean + eps @ chol.T
            start = head
        if start < length:
            eps = torch.randn(n, length - start, dtype=torch.float64).numpy() * np.sqrt(s2)
            for t in range(start, length):
                u[:, t] = c + u[:, t - p : t] @ phi[::-1] + eps[:, t - start]
        y = u + shift
        if prefix is not None:
            keep = np.ones(prefix.shape[0], bool) if prefix_observed is None else (
                prefix_observed.numpy())
            y[:, : prefix.shape[0]][:, keep] = prefix.numpy()[keep]
        return torch.from_numpy(y)

    # ---------------------------------------------------------------- bookkeeping
    @property
    def num_exog(self) -> int:
        """E, the number of covariates the fitted model uses (0 without covariates)."""
        return 0 if self._exog_coef is None else int(self._exog_coef.shape[0])

    @property
    def num_params(self) -> int:
        """``p + 2 + E``: intercept, p coefficients, the noise variance and E regression
        coefficients."""
        e = 0 if self._exog_coef is None else self._exog_coef.shape[0]
        return self.order + 2 + e

    def _is_fitted(self) -> bool:
        return self._coef is not None

    def get_config(self) -> dict[str, Any]:
        return {"order": self.order}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return self.params

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        coef = tensors["coef"].to(torch.float64).numpy().copy()
        if coef.shape != (self.order,):
            raise KeyError(f"coef of shape {coef.shape} for order {self.order}")
        beta = tensors.get("exog_coef")
        beta = None if beta is None else beta.to(torch.float64).numpy().copy()
        self._set(float(tensors["intercept"]), coef, float(tensors["noise_var"]), beta)

    # ---------------------------------------------------------------- Pyro
    def pyro_model(self, data: Any) -> None:
        """A Pyro model of the data with priors on every parameter (for NUTS and SVI).

        Priors (empirical Bayes: located on the data, broad):

        * ``mean ~ Normal(data mean, 3 * data std)``: the stationary mean mu;
        * ``pacf ~ Uniform(-1, 1)`` per lag ``[p]``: the partial autocorrelations, so every
          draw is stationary (``coef`` by the Durbin-Levinson map);
        * ``noise_var ~ LogNormal(log data variance, 1)``.

        The intercept is ``mu (1 - sum(coef))``. The likelihood is
        ``pyro.factor("log_lik", ...)`` of the exact stationary joint density. Fully observed
        data without covariates only. Override a prior with
        ``probseq.BayesianModel(..., prior={"noise_var": ...})``.

        Args:
            data: the sequences (any accepted input).
        """
        import pyro
        import pyro.distributions as dist

        seqs, _ = self._coerce(data, fitting=True)
        if seqs.has_missing:
            raise ValueError("AutoRegressive.pyro_model needs fully observed data")
        f64 = torch.float64
        x = seqs.values[seqs.mask].to(f64)
        sd = x.std() if x.numel() > 1 else torch.ones((), dtype=f64)
        sd = torch.where(sd > 0, sd, torch.ones((), dtype=f64))
        mean = pyro.sample("mean", dist.Normal(x.mean(), 3.0 * sd))
        p = self.order
        if p:
            pacf = pyro.sample("pacf", dist.Uniform(-torch.ones(p, dtype=f64),
                                                    torch.ones(p, dtype=f64)).to_event(1))
            coef = likelihood.torch_coef_from_pacf(pacf)
        else:
            coef = torch.zeros(0, dtype=f64)
        noise_var = pyro.sample("noise_var", dist.LogNormal(torch.log(sd**2),
                                                            torch.ones((), dtype=f64)))
        intercept = mean * (1.0 - coef.sum())
        pyro.factor("log_lik", likelihood.torch_log_prob(
            seqs.values.to(f64), seqs.lengths, intercept, coef, noise_var).sum())

    # ---------------------------------------------------------------- predictive distributions
    def _step_predictive(self, seqs: Sequences, exog: torch.Tensor | None = None
                         ) -> torch.distributions.Normal:
        """``Normal`` with batch shape ``[N, T_max]``: ``y_t`` given the observed ``y_<t``
        (and the covariates), exact; arbitrary (but valid) past each length."""
        self._check_fitted()
        self._check_stationary()
        values = seqs.values.numpy()
        u = self._errors(values, exog)
        shift = values - u
        obs = seqs.observed.numpy() if seqs.has_missing else None
        loc, var = likelihood.predictive_moments(
            u, obs, seqs.lengths.numpy(), self._intercept, self._coef, self._noise_var,
            self._moments, self._kalman_gamma())
        scale = np.sqrt(var)
        return torch.distributions.Normal(torch.from_numpy(loc + shift),
                                          torch.from_numpy(scale))

    def _forecast(self, seqs: Sequences, horizon: int, exog: torch.Tensor | None = None
                  ) -> torch.distributions.Normal:
        """Exact h-step predictive marginals ``Normal`` with batch shape ``[N, H]`` of
        ``y_{T+h}`` given each sequence's observed values (and the covariates, which ``exog``
        ``[N, T_max + H, E]`` gives for the future steps too)."""
        self._check_fitted()
        values = seqs.values.numpy()
        n, t_max = values.shape
        lengths = seqs.lengths.numpy()
        full = None
        if exog is not None:
            full = exog.numpy()
            exog = exog[:, :t_max]
        u = self._errors(values, exog)
        obs = seqs.observed.numpy()
        # The state after step T only depends on the values since the last run of p
        # observed values (which pins it down): filter that window.
        p = self.order
        starts = np.empty(n, dtype=np.int64)
        for i in range(n):
            o = obs[i, : lengths[i]]
            if p == 0:
                starts[i] = lengths[i] - 1
                continue
            runs = np.flatnonzero(np.convolve(o.astype(np.int64), np.ones(p, np.int64),
                                              mode="valid") == p)
            if not runs.size:
                self._check_stationary()  # the stationary start is needed
            starts[i] = runs[-1] if runs.size else 0
        width = lengths - starts
        w_max = int(width.max())
        cols = starts[:, None] + np.arange(w_max)[None, :]
        inside = np.arange(w_max)[None, :] < width[:, None]
        cols = np.where(inside, cols, 0)
        rows = np.arange(n)[:, None]
        if self._moments is not None:
            centre, gamma, drift = self._moments[0], self._kalman_gamma(), 0.0
        else:  # every window begins with p observed values: any prior is forgotten exactly
            centre, gamma, drift = 0.0, np.r_[self._noise_var, np.zeros(p)], self._intercept
        _, _, a, cov = likelihood.kalman_predictive(
            u[rows, cols], obs[rows, cols] & inside, width, self._coef, self._noise_var,
            centre, gamma, drift)
        mean, var = likelihood.forecast_moments(a, cov, self._coef, self._noise_var, centre,
                                                int(horizon), drift)
        if self._exog_coef is not None:
            future = lengths[:, None] + np.arange(int(horizon))[None, :]
            if future.max() >= full.shape[1]:
                raise ValueError(f"exog must cover the {horizon} forecast steps")
            mean = mean + full[rows, future] @ self._exog_coef
        return torch.distributions.Normal(torch.from_numpy(mean), torch.from_numpy(np.sqrt(var)))


def _total_log_prob(u: np.ndarray, obs: np.ndarray, lengths: np.ndarray,
                    missing_rows: np.ndarray, intercept: float, coef: np.ndarray,
                    noise_var: float) -> float:
    """Sum over sequences of the exact log-likelihood (the "mle" objective)."""
    if not (likelihood.is_stationary(coef) and noise_var > 0):
        return -np.inf
    try:
        moments = likelihood.stationary_moments(intercept, coef, noise_var)
    except (np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
        return -np.inf
    if not np.isfinite(moments[1]).all():
        return -np.inf
    return float(_per_sequence_log_prob(u, obs, lengths, missing_rows, intercept, coef,
                                        noise_var, moments).sum())


def _per_sequence_log_prob(u: np.ndarray, obs: np.ndarray, lengths: np.ndarray,
                           missing_rows: np.ndarray, intercept: float, coef: np.ndarray,
                           noise_var: float, moments: tuple[float, np.ndarray]) -> np.ndarray:
    """``[N]`` exact log-likelihoods: complete rows by the vectorised conditionals, rows with
    gaps by :func:`likelihood.missing_log_prob`."""
    out = np.zeros(u.shape[0])
    full = ~missing_rows
    if full.any():
        # A sequential sum (one compiled pass), so trailing padding cannot change a bit.
        out[full] = likelihood.log_prob_totals(u[full], lengths[full], intercept, coef,
                                               noise_var, moments)
    for i in np.flatnonzero(missing_rows):
        t = int(lengths[i])
        if not obs[i, :t].any():
            continue  # nothing observed: log 1, exactly
        out[i] = likelihood.missing_log_prob(u[i, :t], obs[i, :t], intercept, coef, noise_var,
                                             moments)[0]
    return out
