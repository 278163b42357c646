"""Gaussian autoregressive models AR(p) of univariate real sequences."""

from __future__ import annotations

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

    Fitting is conditional least squares, the conditional maximum likelihood given the first
    p values of each sequence, on the data centred at their mean (the same problem, better
    conditioned when the level dwarfs the noise): one sequence is fitted with statsmodels'
    ``AutoReg(y, lags=p, trend="c")``; several by least squares on the pooled lagged design
    (lags never cross a sequence boundary), solved by a block-wise Householder QR
    (:func:`probseq.autoregressive.likelihood.pooled_least_squares`; the tests check it
    against statsmodels ``OLS`` on a hand-built design). ``noise_var`` is the
    maximum-likelihood estimate ``SSR / nobs`` (AutoReg's ``sigma2``), nobs the number of
    regression rows.

    Args:
        order: p >= 0.
    """

    data_kind = "continuous"
    _obs_dim = None

    def __init__(self, order: int = 1):
        if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
            raise ValueError(f"order must be a non-negative integer, got {order!r}")
        self.order = int(order)
        self._intercept: float | None = None
        self._coef: np.ndarray | None = None
        self._noise_var: float | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_params(cls, intercept: Any, coef: Any, noise_var: Any) -> AutoRegressive:
        """An AR(p) with the given parameters.

        Args:
            intercept: c, a scalar.
            coef: ``[p]`` ``phi_1..phi_p``, lag 1 first (p = 0 allowed: an empty vector).
            noise_var: sigma2 > 0.

        Raises:
            ValueError: non-scalar intercept or noise variance, coef not 1-D, non-finite
                values, or ``noise_var <= 0``. Non-stationary coefficients are accepted
                (``log_prob`` then refuses).
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
        model._set(float(c), phi.copy(), float(s2))
        return model

    def _set(self, intercept: float, coef: np.ndarray, noise_var: float) -> None:
        self._intercept, self._coef, self._noise_var = intercept, coef, noise_var
        self._radius = likelihood.max_root_inverse_modulus(coef)
        self._moments = None
        if self._radius < 1:
            try:
                self._moments = likelihood.stationary_moments(intercept, coef, noise_var)
            except np.linalg.LinAlgError:  # so close to a unit root that gamma is not SPD
                self._moments = None

    def _fit(self, seqs: Sequences, **options: Any) -> None:
        unknown = set(options) - {"seed", "progress"}
        if unknown:
            raise ValueError(f"AutoRegressive.fit got unknown options {sorted(unknown)}")
        self._fit_obs_dim(seqs, univariate_only=True)
        p = self.order
        values = seqs.values.numpy()
        lengths = seqs.lengths.numpy()
        rows = int(np.maximum(lengths - p, 0).sum())
        if rows < p + 2:
            raise ValueError(
                f"an AR({p}) fit needs at least {p + 2} values after the first {p} of each "
                f"sequence ({p + 1} regressors and a residual), but the data gives {rows}"
            )
        # Regress the centred data: the same least-squares problem, but a level far above
        # the noise no longer ruins the conditioning of [1, lags].
        centre = float(values[seqs.mask.numpy()].mean())
        centred = values - centre
        if len(seqs) == 1:
            from statsmodels.tsa.ar_model import AutoReg

            res = AutoReg(centred[0, : lengths[0]], lags=p, trend="c").fit()
            params, noise_var = np.asarray(res.params, dtype=np.float64), float(res.sigma2)
        else:
            params, ssr, nobs = likelihood.pooled_least_squares(centred, lengths, p)
            noise_var = ssr / nobs
        params[0] += centre * (1.0 - params[1:].sum())
        if not (np.isfinite(params).all() and np.isfinite(noise_var)):
            raise ValueError(f"the AR({p}) fit gave non-finite parameters; is the data degenerate?")
        _check_not_exactly_predictable(noise_var, values[seqs.mask.numpy()], p)
        self._set(float(params[0]), params[1:].copy(), noise_var)

    # ---------------------------------------------------------------- probabilities
    def _check_stationary(self) -> None:
        if self._moments is None:
            raise ValueError(
                f"this AR({self.order}) is not stationary (a root of its characteristic "
                f"polynomial lies on or inside the unit circle, or numerically at it: companion "
                f"spectral radius {self._radius:.6g}), so the first {self.order} values have "
                "no stationary distribution and the exact joint likelihood is undefined"
            )

    def _steps(self, seqs: Sequences) -> np.ndarray:
        self._check_stationary()
        return likelihood.log_prob_steps(
            seqs.values.numpy(), seqs.lengths.numpy(), self._intercept, self._coef,
            self._noise_var, self._moments,
        )

    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        return torch.from_numpy(self._steps(seqs))

    def _log_prob(self, seqs: Sequences) -> torch.Tensor:
        # A sequential sum, so trailing padding (exact zeros) cannot change a single bit.
        return torch.from_numpy(np.cumsum(self._steps(seqs), axis=1)[:, -1].copy())

    @property
    def stationary_mean(self) -> float:
        """``mu = c / (1 - sum(phi))`` (stationary models only)."""
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
        """``intercept`` (0-d), ``coef [p]`` (lag 1 first), ``noise_var`` (0-d)."""
        self._check_fitted()
        return {
            "intercept": torch.tensor(self._intercept, dtype=torch.float64),
            "coef": torch.from_numpy(self._coef.copy()),
            "noise_var": torch.tensor(self._noise_var, dtype=torch.float64),
        }

    # ---------------------------------------------------------------- sampling
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"AutoRegressive.sample got unknown options {sorted(options)}")
        p, n = self.order, num_sequences
        c, phi, s2 = self._intercept, self._coef, self._noise_var
        y = np.empty((n, length))
        start = 0 if prefix is None else prefix.shape[0]
        if start:
            y[:, :start] = prefix.numpy()
        head = min(p, length)
        if start < head:
            # The values before step p: the stationary Gaussian, conditioned on the prefix.
            self._check_stationary()
            gamma = likelihood.autocovariances(phi, s2)
            idx = np.abs(np.arange(head)[:, None] - np.arange(head)[None, :])
            cov = gamma[idx]
            mu = likelihood.stationary_mean(c, phi)
            known, todo = slice(0, start), slice(start, head)
            gain = np.linalg.solve(cov[known, known], cov[known, todo]).T if start else None
            mean = np.full(head - start, mu)
            cond = cov[todo, todo]
            if start:
                mean = mean + gain @ (y[0, known] - mu)
                cond = cond - gain @ cov[known, todo]
            chol = np.linalg.cholesky(cond)
            eps = torch.randn(n, head - start, dtype=torch.float64).numpy()
            y[:, todo] = mean + eps @ chol.T
            start = head
        if start < length:
            eps = torch.randn(n, length - start, dtype=torch.float64).numpy() * np.sqrt(s2)
            for t in range(start, length):
                y[:, t] = c + y[:, t - p : t] @ phi[::-1] + eps[:, t - start]
        return torch.from_numpy(y)

    # ---------------------------------------------------------------- bookkeeping
    @property
    def num_params(self) -> int:
        """``p + 2``: intercept, p coefficients and the noise variance."""
        return self.order + 2

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
        self._set(float(tensors["intercept"]), coef, float(tensors["noise_var"]))


