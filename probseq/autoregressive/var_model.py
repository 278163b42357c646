"""Gaussian vector autoregressions VAR(p) of multivariate real sequences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.linalg import cho_solve, solve_triangular

from probseq._utils import param_array
from probseq.autoregressive import vector
from probseq.base import SequenceModel
from probseq.data import Sequences

__all__ = ["VectorAutoRegressive"]

_PREDICTABLE_TOL = 1e-9
_ROUNDING_TOL = 1e-12


class VectorAutoRegressive(SequenceModel):
    """Gaussian VAR(p) with intercept, scored by its exact stationary joint likelihood.

    Generative process::

        (y_1..y_p) ~ N(mu, Gamma_p)                  # the stationary distribution
        for t in p+1..T:
            y_t ~ N(c + A_1 y_{t-1} + ... + A_p y_{t-p}, Sigma)

    with ``mu = (I - sum_i A_i)^{-1} c`` and ``Gamma_p`` the stationary covariance of p
    consecutive vectors (the companion-form discrete Lyapunov equation). A sequence shorter
    than p is scored by the stationary marginal of its vectors. A model that is not
    stationary (companion spectral radius >= 1) has no stationary start: it can exist and
    continue a prefix of at least p vectors, but ``log_prob`` refuses it.

    Fitting is least squares equation by equation (the conditional maximum likelihood given
    the first p vectors of each sequence): one sequence with statsmodels ``VAR(y).fit(p,
    trend="c")``, several by least squares on the pooled lagged design (lags never cross a
    sequence boundary). ``noise_cov`` is by default the maximum-likelihood estimate
    ``resid^T resid / nobs`` (statsmodels' ``sigma_u_mle``; nobs = the regression rows);
    ``noise_estimate="unbiased"`` divides by the residual degrees of freedom ``nobs - (1 +
    p D)`` instead (statsmodels' ``sigma_u``, which its ``VAR.forecast_interval`` uses: the
    intervals are then wider by ``sqrt(nobs / (nobs - 1 - p D))``). The other estimate is
    always ``noise_cov_mle`` / ``noise_cov_unbiased`` after a fit.

    Args:
        order: p >= 0.
        noise_estimate: ``"mle"`` (default) or ``"unbiased"`` (degrees-of-freedom adjusted):
            which estimate of Sigma the fitted model uses.
    """

    data_kind = "continuous"
    #: ``noise_cov`` is listed by its lower triangle, row by row: (0,0), (1,0), (1,1), ...
    summary_params = ("intercept", "coef", "noise_cov")

    def __init__(self, order: int = 1, noise_estimate: str = "mle"):
        if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
            raise ValueError(f"order must be a non-negative integer, got {order!r}")
        if noise_estimate not in ("mle", "unbiased"):
            raise ValueError("noise_estimate must be 'mle' or 'unbiased', got "
                             f"{noise_estimate!r}")
        self.order = int(order)
        self.noise_estimate = noise_estimate
        #: the two estimates of Sigma from the last fit (None before one)
        self.noise_cov_mle: torch.Tensor | None = None
        self.noise_cov_unbiased: torch.Tensor | None = None
        self._obs_dim = "any"
        self._univariate = False
        self._intercept: np.ndarray | None = None
        self._coef: np.ndarray | None = None
        self._noise_cov: np.ndarray | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_params(cls, intercept: Any, coef: Any, noise_cov: Any) -> VectorAutoRegressive:
        """A VAR(p) with the given parameters.

        Args:
            intercept: ``[D]`` c.
            coef: ``[p, D, D]`` ``A_1..A_p``, lag 1 first (p = 0 allowed: shape ``[0, D, D]``).
            noise_cov: ``[D, D]`` Sigma, symmetric positive definite.

        Raises:
            ValueError: shapes that disagree, non-finite values, a noise covariance that is
                not symmetric positive definite, or a noise scale below the rounding level of
                the process's mean. Non-stationary coefficients are accepted (``log_prob``
                then refuses).
        """
        c = param_array(intercept, "intercept")
        a = param_array(coef, "coef")
        s = param_array(noise_cov, "noise_cov")
        if c.ndim != 1 or c.shape[0] < 1:
            raise ValueError(f"intercept must be a vector [D], got shape {c.shape}")
        d = c.shape[0]
        if a.ndim != 3 or a.shape[1:] != (d, d):
            raise ValueError(f"coef must have shape [p, {d}, {d}], got {a.shape}")
        if s.shape != (d, d):
            raise ValueError(f"noise_cov must have shape [{d}, {d}], got {s.shape}")
        if np.abs(s - s.T).max() > 1e-8 * np.abs(s).max():
            raise ValueError("noise_cov is not symmetric")
        s = 0.5 * (s + s.T)
        try:
            np.linalg.cholesky(s)
        except np.linalg.LinAlgError:
            raise ValueError("noise_cov is not positive definite") from None
        level = np.abs(c)
        if vector.spectral_radius(a) < 1:
            level = np.maximum(level, np.abs(vector.stationary_mean(c, a)))
        sd = np.sqrt(np.diag(s))
        bad = np.flatnonzero(sd <= _ROUNDING_TOL * level)
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"noise_cov[{j}, {j}] = {s[j, j]:.3g} is below the rounding level of coordinate "
                f"{j} (noise sd {sd[j]:.3g} against a level of {level[j]:.3g}): float64 values "
                "at that level cannot resolve the noise"
            )
        model = cls(order=a.shape[0])
        model._obs_dim = d
        model._set(c.copy(), a.copy(), s)
        return model

    def _set(self, intercept: np.ndarray, coef: np.ndarray, noise_cov: np.ndarray) -> None:
        self._intercept, self._coef, self._noise_cov = intercept, coef, noise_cov
        self._noise_chol = np.linalg.cholesky(noise_cov)
        self._radius = vector.spectral_radius(coef)
        self._moments = None
        if self._radius < 1:
            try:
                mean = vector.stationary_mean(intercept, coef)
                init = vector.initial_covariance(coef, noise_cov) if self.order else None
                chol = np.linalg.cholesky(init) if self.order else np.zeros((0, 0))
                if np.isfinite(chol).all() and np.isfinite(mean).all():
                    self._moments = (mean, init, chol)
            except np.linalg.LinAlgError:  # so close to a unit root that Gamma is not SPD
                self._moments = None

    def fit(self, data: Any, *, seed: int | None = None, progress: bool | None = None,
            **unknown: Any) -> VectorAutoRegressive:
        """Estimate the VAR(p) by least squares (the conditional maximum likelihood).

        Args:
            data: ``[T, D]`` series, a list of them, or a ``Sequences`` (1-D series are fitted
                as D = 1).
            seed: accepted for a uniform interface; the fit is deterministic.
            progress: accepted for a uniform interface; the fit is one solve.

        Returns:
            self.

        Raises:
            ValueError: fewer regression rows than regressors, or data that a VAR(p)
                predicts exactly (a constant coordinate, an exact linear relation).
        """
        return super().fit(data, seed=seed, progress=progress, **unknown)

    def _fit(self, seqs: Sequences, seed: int | None = None,
             progress: bool | None = None) -> None:
        p = self.order
        self._univariate = seqs.dim is None
        values = seqs.values3d().numpy()
        lengths = seqs.lengths.numpy()
        d = values.shape[2]
        rows = int(np.maximum(lengths - p, 0).sum())
        if rows < p * d + 2:
            raise ValueError(
                f"a VAR({p}) fit of D={d} needs at least {p * d + 2} vectors after the first "
                f"{p} of each sequence ({p * d + 1} regressors and a residual), but the data "
                f"gives {rows}"
            )
        mask = seqs.mask.numpy()
        observed = values[mask]  # [sum T, D]
        centre = observed.mean(0)
        centred = values - centre
        if len(seqs) == 1 and d > 1:
            import warnings

            from statsmodels.tsa.api import VAR

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = VAR(centred[0, : lengths[0]]).fit(p, trend="c")
            intercept = np.asarray(res.intercept, dtype=np.float64).copy()
            coef = np.asarray(res.coefs, dtype=np.float64).reshape(p, d, d).copy()
            noise_cov = np.asarray(res.sigma_u_mle, dtype=np.float64).copy()
            resid = np.asarray(res.resid, dtype=np.float64)
        else:
            intercept, coef, noise_cov, resid = vector.pooled_least_squares(centred, lengths, p)
        intercept = intercept + (np.eye(d) - coef.sum(0)) @ centre
        noise_cov = 0.5 * (noise_cov + noise_cov.T)
        if not (np.isfinite(intercept).all() and np.isfinite(coef).all()
                and np.isfinite(noise_cov).all()):
            raise ValueError(f"the VAR({p}) fit gave non-finite parameters")
        _check_not_exactly_predictable(resid, observed, p)
        self._obs_dim = 1 if self._univariate else d
        df = rows - (1 + p * d)
        unbiased = noise_cov * (rows / df) if df > 0 else noise_cov * math.inf
        self.noise_cov_mle = torch.from_numpy(noise_cov.copy())
        self.noise_cov_unbiased = torch.from_numpy(unbiased.copy())
        if self.noise_estimate == "unbiased":
            if df <= 0:
                raise ValueError(f"noise_estimate='unbiased' needs more regression rows "
                                 f"({rows}) than regressors ({1 + p * d})")
            noise_cov = unbiased
        self._set(intercept, coef, noise_cov)

    # ---------------------------------------------------------------- probabilities
    def _check_stationary(self) -> None:
        if self._moments is None:
            raise ValueError(
                f"this VAR({self.order}) is not stationary (companion spectral radius "
                f"{self._radius:.6g} >= 1, or numerically at 1), so the first {self.order} "
                "vectors have no stationary distribution and the exact joint likelihood is "
                "undefined"
            )

    def _steps(self, seqs: Sequences) -> np.ndarray:
        self._check_stationary()
        mean, _, chol = self._moments
        return vector.log_prob_steps(
            seqs.values3d().numpy(), seqs.lengths.numpy(), self._intercept, self._coef,
            self._noise_chol, mean, chol,
        )

    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        return torch.from_numpy(self._steps(seqs))

    def _log_prob(self, seqs: Sequences) -> torch.Tensor:
        return torch.from_numpy(np.cumsum(self._steps(seqs), axis=1)[:, -1].copy())

    @property
    def stationary_mean(self) -> torch.Tensor:
        """``[D]`` ``mu = (I - sum_i A_i)^{-1} c`` (stationary models only)."""
        self._check_fitted()
        self._check_stationary()
        return torch.from_numpy(self._moments[0].copy())

    def impulse_responses(self, horizon: int = 10, orthogonal: bool = False) -> torch.Tensor:
        """``[horizon + 1, D, D]`` responses ``Psi_h``: entry ``[h, i, j]`` is the effect on
        ``y_{t+h, i}`` of a unit shock to ``e_{t, j}`` (``Psi_0 = I``); ``orthogonal`` uses
        the shocks ``L u`` with ``L`` the Cholesky factor of Sigma (``Psi_h L``), as
        statsmodels' ``irf().irfs`` / ``orth_irfs``."""
        self._check_fitted()
        p, d = self.order, self._coef.shape[1]
        psi = [np.eye(d)]
        for h in range(1, int(horizon) + 1):
            psi.append(sum(self._coef[i - 1] @ psi[h - i] for i in range(1, min(h, p) + 1))
                       if p else np.zeros((d, d)))
        out = np.stack(psi)
        if orthogonal:
            out = out @ self._noise_chol
        return torch.from_numpy(out)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """``intercept [D]``, ``coef [p, D, D]`` (lag 1 first), ``noise_cov [D, D]``."""
        self._check_fitted()
        return {
            "intercept": torch.from_numpy(self._intercept.copy()),
            "coef": torch.from_numpy(self._coef.copy()),
            "noise_cov": torch.from_numpy(self._noise_cov.copy()),
        }

    # ---------------------------------------------------------------- sampling
    def _initial_conditional(self, known: np.ndarray, head: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``[(head - k) D]`` and covariance of the vectors ``k..head-1`` of the
        stationary start given the first ``k`` vectors ``known [k, D]``."""
        mean, cov, _ = self._moments
        d, k = mean.shape[0], known.shape[0]
        mu = np.tile(mean, head)
        cov = cov[: head * d, : head * d]
        a, b = slice(0, k * d), slice(k * d, head * d)
        if k == 0:
            return mu, cov
        chol = np.linalg.cholesky(cov[a, a])
        gain = cho_solve((chol, True), cov[a, b]).T
        return mu[b] + gain @ (known.reshape(-1) - mu[a]), cov[b, b] - gain @ cov[a, b]

    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"VectorAutoRegressive.sample got unknown options {sorted(options)}")
        p, n, d = self.order, num_sequences, self._intercept.shape[0]
        y = np.empty((n, length, d))
        start = 0
        if prefix is not None:
            pre = prefix.numpy().reshape(prefix.shape[0], d)
            start = pre.shape[0]
            y[:, :start] = pre
        head = min(p, length)
        if start < head:
            self._check_stationary()
            mean, cov = self._initial_conditional(y[0, :start], head)
            chol = np.linalg.cholesky(0.5 * (cov + cov.T))
            eps = torch.randn(n, (head - start) * d, dtype=torch.float64).numpy()
            y[:, start:head] = (mean + eps @ chol.T).reshape(n, head - start, d)
            start = head
        if start < length:
            eps = torch.randn(n, length - start, d, dtype=torch.float64).numpy()
            eps = eps @ self._noise_chol.T
            for t in range(start, length):
                y[:, t] = self._intercept + eps[:, t - start]
                for i in range(1, p + 1):
                    y[:, t] += y[:, t - i] @ self._coef[i - 1].T
        out = torch.from_numpy(y)
        return out[..., 0] if self._univariate else out

    # ---------------------------------------------------------------- bookkeeping
    @property
    def num_params(self) -> int:
        """``D + p D^2 + D (D + 1) / 2``."""
        self._check_fitted()
        d = self._intercept.shape[0]
        return d + self.order * d * d + d * (d + 1) // 2

    def _is_fitted(self) -> bool:
        return self._coef is not None

    def _summary_free(self, seqs: Sequences, exog: torch.Tensor | None) -> Any:
        """Intercept, coefficients (``coef[lag, i, j]``: equation i on variable j) and the
        noise covariance's lower triangle (``noise_cov[i, j]``, i >= j)."""
        from probseq._summary import Blocks

        p, blocks = self.params, Blocks()
        parts = {"intercept": blocks.add("intercept", p["intercept"]),
                 "coef": blocks.add("coef", p["coef"]),
                 "noise_cov": blocks.add_symmetric("noise_cov", p["noise_cov"])}

        def log_lik(vec: torch.Tensor) -> torch.Tensor:
            v = {k: part(vec) for k, part in parts.items()}
            model = type(self).from_params(v["intercept"], v["coef"], v["noise_cov"])
            return model._log_prob(seqs).sum()

        return blocks.build(log_lik, differentiable=False)

    def get_config(self) -> dict[str, Any]:
        return {"order": self.order, "noise_estimate": self.noise_estimate}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return self.params

    def _meta(self) -> dict[str, Any]:
        return {"univariate": self._univariate}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        c = tensors["intercept"].to(torch.float64).numpy().copy()
        a = tensors["coef"].to(torch.float64).numpy().copy()
        s = tensors["noise_cov"].to(torch.float64).numpy().copy()
        d = c.shape[0]
        if a.shape != (self.order, d, d) or s.shape != (d, d):
            raise KeyError(f"coef {a.shape} / noise_cov {s.shape} for order {self.order}, D={d}")
        self._univariate = bool(meta.get("univariate", False))
        self._obs_dim = 1 if self._univariate else d
        self._set(c, a, s)

    # ---------------------------------------------------------------- Bayesian inference
    def pyro_model(self, data: Any) -> None:
        """A Pyro model of the data with priors on every parameter (for NUTS and SVI).

        Priors (weakly informative, relative to each coordinate's scale: the data's mean
        ``m_j`` and standard deviation ``s_j``, an empirical-Bayes choice as for the AR):

        * ``mean [D] ~ Normal(m_j, 3 s_j)``: the stationary mean mu (intercept
          ``c = (I - sum_i A_i) mu``);
        * ``pacf_free [p, D, D] ~ Normal(0, 1)`` per entry: the partial autocorrelation
          matrices are ``P_k = chol(I + B_k B_k^T)^{-1} B_k`` (singular values below 1), and
          the coefficients follow from ``P`` and Sigma by the Ansley-Kohn / Heaps (2022)
          recursion (:func:`~probseq.autoregressive.vector.stationary_from_pacf`), so every
          draw is stationary and every stationary VAR(p) is reachable. For D = 1 this is the
          AR's partial autocorrelation ``B / sqrt(1 + B^2)``, whose prior density is 0.40 at 0,
          0.76 near +-0.8 and vanishes at +-1. The prior on the ``A_i`` is the one this
          induces (not a Gaussian);
        * ``noise_scale [D] ~ LogNormal(log s_j, 1)``: the noise standard deviations;
        * ``noise_corr_chol [D, D] ~ LKJCholesky(D, 1)`` (D >= 2): the noise correlations,
          uniform over correlation matrices; ``Sigma = diag(scale) R diag(scale)``.

        The likelihood is ``pyro.factor("log_lik", ...)`` of the exact stationary joint
        density (:func:`~probseq.autoregressive.vector.torch_log_prob_steps`, the function
        ``log_prob`` evaluates). Fully observed data only. Override a prior with
        ``probseq.BayesianModel(..., prior={"noise_scale": ...})``.

        Args:
            data: the sequences (any accepted input).
        """
        import pyro
        import pyro.distributions as dist

        seqs, _ = self._coerce(data, fitting=True)
        if seqs.has_missing:
            raise ValueError("VectorAutoRegressive.pyro_model needs fully observed data")
        f64 = torch.float64
        values = seqs.values3d().to(f64)
        x = values[seqs.mask]  # [sum T, D]
        d, p = x.shape[1], self.order
        sd = x.std(0) if x.shape[0] > 1 else torch.ones(d, dtype=f64)
        level = torch.where(x.mean(0) != 0, x.mean(0).abs(), torch.ones((), dtype=f64))
        sd = torch.where(sd > 0, sd, level)
        mean = pyro.sample("mean", dist.Normal(x.mean(0), 3.0 * sd).to_event(1))
        free = None
        if p:
            free = pyro.sample("pacf_free", dist.Normal(torch.zeros(p, d, d, dtype=f64),
                                                        torch.ones(p, d, d, dtype=f64))
                               .to_event(3))
        scale = pyro.sample("noise_scale", dist.LogNormal(torch.log(sd), torch.ones(d, dtype=f64))
                            .to_event(1))
        corr = None
        if d > 1:
            corr = pyro.sample("noise_corr_chol", dist.LKJCholesky(d, torch.tensor(1.0, dtype=f64)))
        params = vector.params_from_free(mean, free, scale, corr)
        pyro.factor("log_lik", vector.torch_log_prob_steps(
            values, seqs.lengths, params["intercept"], params["coef"], params["noise_chol"],
            mean, params["initial_chol"]).sum())

    # ---------------------------------------------------------------- predictive distributions
    def _step_predictive(self, seqs: Sequences) -> torch.distributions.Distribution:
        """``MultivariateNormal`` with batch shape ``[N, T_max]`` and event ``(D,)`` (a
        ``Normal`` for a model of 1-D series): ``y_t`` given ``y_<t``, exact; arbitrary (but
        valid) past each length."""
        self._check_fitted()
        self._check_stationary()
        mean, _, chol = self._moments
        y = seqs.values3d().numpy()
        n, t_max, d = y.shape
        p = self.order
        loc = np.empty((n, t_max, d))
        tril = np.empty((n, t_max, d, d))
        head = min(p, t_max)
        if head:
            ch = chol[: head * d, : head * d]
            centred = (y[:, :head] - mean).reshape(n, head * d)
            z = solve_triangular(ch, centred.T, lower=True).T
            for t in range(head):
                block = slice(t * d, (t + 1) * d)
                diag = ch[block, block]
                loc[:, t] = y[:, t] - z[:, block] @ diag.T
                tril[:, t] = diag
        if t_max > p:
            pred = np.broadcast_to(self._intercept, (n, t_max - p, d)).copy()
            for lag in range(1, p + 1):
                pred += y[:, p - lag : t_max - lag] @ self._coef[lag - 1].T
            loc[:, p:] = pred
            tril[:, p:] = self._noise_chol
        if self._univariate:
            return torch.distributions.Normal(torch.from_numpy(loc[..., 0]),
                                              torch.from_numpy(tril[..., 0, 0]))
        return torch.distributions.MultivariateNormal(torch.from_numpy(loc),
                                                      scale_tril=torch.from_numpy(tril))

    def _forecast(self, seqs: Sequences, horizon: int) -> torch.distributions.Distribution:
        """Exact h-step predictive marginals of ``y_{T+h}`` given each sequence:
        ``MultivariateNormal`` with batch shape ``[N, H]`` (a ``Normal`` for 1-D series).

        From the companion state ``s_T`` (known when ``T >= p``; for a shorter sequence the
        stationary start conditioned on its vectors), ``s <- F s + c``,
        ``P <- F P F^T + blockdiag(Sigma, 0)``.
        """
        self._check_fitted()
        p, d, h_max = self.order, self._intercept.shape[0], int(horizon)
        y = seqs.values3d().numpy()
        lengths = seqs.lengths.numpy()
        n = y.shape[0]
        means = np.empty((n, h_max, d))
        covs = np.empty((n, h_max, d, d))
        f = vector.companion(self._coef)
        q = np.zeros((p * d, p * d))
        q[:d, :d] = self._noise_cov
        shift = np.zeros(p * d)
        shift[:d] = self._intercept
        for i in range(n):
            length = int(lengths[i])
            h0 = 0
            if p == 0:
                state, cov = np.zeros(0), np.zeros((0, 0))
            elif length >= p:
                state = y[i, length - p : length][::-1].reshape(-1)
                cov = np.zeros((p * d, p * d))
            else:  # the stationary start given the first T vectors: y_{T+1..p} are forecasts
                self._check_stationary()
                cond_mean, cond_cov = self._initial_conditional(y[i, :length], p)
                h0 = p - length
                for h in range(min(h0, h_max)):
                    block = slice(h * d, (h + 1) * d)
                    means[i, h], covs[i, h] = cond_mean[block], cond_cov[block, block]
                mean_t = np.concatenate([y[i, :length].reshape(-1), cond_mean])
                cov_t = np.zeros((p * d, p * d))
                cov_t[length * d :, length * d :] = cond_cov
                order = np.concatenate([np.arange(d) + d * (p - 1 - j) for j in range(p)])
                state, cov = mean_t[order], cov_t[np.ix_(order, order)]
            for h in range(h0, h_max):
                if p == 0:
                    means[i, h], covs[i, h] = self._intercept, self._noise_cov
                    continue
                state = f @ state + shift
                cov = f @ cov @ f.T + q
                means[i, h], covs[i, h] = state[:d], cov[:d, :d]
        covs = 0.5 * (covs + covs.transpose(0, 1, 3, 2))
        if self._univariate:
            return torch.distributions.Normal(torch.from_numpy(means[..., 0]),
                                              torch.from_numpy(np.sqrt(covs[..., 0, 0])))
        return torch.distributions.MultivariateNormal(torch.from_numpy(means),
                                                      covariance_matrix=torch.from_numpy(covs))


def _check_not_exactly_predictable(resid: np.ndarray, observed: np.ndarray,
                                   order: int) -> None:
    """Refuse a fit whose residuals are a rounding residue in some direction: a coordinate
    that is constant, or a combination of coordinates that a VAR(p) predicts exactly.

    Scale-free: the residuals ``[R, D]`` are standardised by each coordinate's sd, and their
    smallest singular value (the residual sd in the most predictable direction,
    accurate to rounding, unlike an eigenvalue of the covariance) is compared with 1 and with
    the magnitude of the values.
    """
    spread = observed.std(0)
    level = np.sqrt((observed**2).mean(0))
    const = np.flatnonzero(spread <= _ROUNDING_TOL * level)
    if const.size:
        raise ValueError(
            f"coordinate {int(const[0])} of the data is constant: a VAR({order}) predicts it "
            "exactly, so its noise variance would be a rounding residue"
        )
    standard = resid / spread / np.sqrt(resid.shape[0])
    smallest = float(np.linalg.svd(standard, compute_uv=False).min())
    if smallest <= max(_PREDICTABLE_TOL, _ROUNDING_TOL * float((level / spread).max())):
        raise ValueError(
            f"the data are exactly predictable by a VAR({order}) in some direction (residual "
            f"sd {smallest:.3g} of the data's sd in that direction: a deterministic coordinate "
            "or an exact linear relation between coordinates), so the noise covariance would "
            "be singular and every likelihood absurd"
        )
