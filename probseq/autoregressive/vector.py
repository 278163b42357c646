"""The Gaussian VAR(p) process: companion form, stationary moments, exact joint likelihood.

Pure functions over numpy arrays (float64). Shapes use the letters of :mod:`probseq.base`:
N sequences, T steps (``T_max`` the longest), D observation dimensions.

The model, with intercept ``c [D]``, coefficient matrices ``A_1..A_p`` (``coef [p, D, D]``,
lag 1 first) and noise covariance ``Sigma [D, D]``::

    y_t = c + A_1 y_{t-1} + ... + A_p y_{t-p} + e_t,    e_t ~ N(0, Sigma)

In companion form the state ``s_t = (y_t, y_{t-1}, ..., y_{t-p+1})`` ``[p D]`` follows
``s_t = F s_{t-1} + (c, 0..0) + (e_t, 0..0)``. When stationary (spectral radius of ``F`` below
1) the mean is ``mu = (I - sum_i A_i)^{-1} c`` and the covariance of the state solves the
discrete Lyapunov equation ``P = F P F^T + blockdiag(Sigma, 0)``. The exact joint density of
``y_1..y_T`` takes the first ``min(p, T)`` vectors from that stationary Gaussian and each
later vector from its conditional Gaussian.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_discrete_lyapunov, solve_triangular

__all__ = [
    "companion",
    "spectral_radius",
    "stationary_mean",
    "initial_covariance",
    "log_prob_steps",
    "pooled_least_squares",
]

_LOG_2PI = float(np.log(2 * np.pi))


def companion(coef: np.ndarray) -> np.ndarray:
    """``[p D, p D]`` companion matrix ``F`` of ``coef [p, D, D]``."""
    p, d, _ = coef.shape
    f = np.zeros((p * d, p * d))
    if p:
        f[:d] = np.concatenate(list(coef), axis=1)
        f[d:, : (p - 1) * d] = np.eye((p - 1) * d)
    return f


def spectral_radius(coef: np.ndarray) -> float:
    """The largest modulus of an eigenvalue of the companion matrix (stationary when < 1)."""
    if coef.shape[0] == 0:
        return 0.0
    return float(np.abs(np.linalg.eigvals(companion(coef))).max())


def stationary_mean(intercept: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``[D]`` ``mu = (I - sum_i A_i)^{-1} c``."""
    d = intercept.shape[0]
    return np.linalg.solve(np.eye(d) - coef.sum(0), intercept)


def initial_covariance(coef: np.ndarray, noise_cov: np.ndarray) -> np.ndarray:
    """``[p D, p D]`` stationary covariance of ``(y_1, ..., y_p)`` stacked in time order.

    Block ``(i, j)`` is ``Cov(y_i, y_j) = Gamma(i - j)``; obtained from the companion-form
    Lyapunov solution (whose blocks run backwards in time) by reversing the block order.
    """
    p, d, _ = coef.shape
    q = np.zeros((p * d, p * d))
    q[:d, :d] = noise_cov
    state = solve_discrete_lyapunov(companion(coef), q)
    order = np.concatenate([np.arange(d) + d * (p - 1 - i) for i in range(p)])
    cov = state[np.ix_(order, order)]
    return 0.5 * (cov + cov.T)


def log_prob_steps(
    values: np.ndarray,
    lengths: np.ndarray,
    intercept: np.ndarray,
    coef: np.ndarray,
    noise_chol: np.ndarray,
    mean: np.ndarray,
    initial_chol: np.ndarray,
) -> np.ndarray:
    """Exact per-step conditionals ``log p(y_t | y_1..y_{t-1})`` of a stationary VAR(p).

    For ``t <= p``: with ``L`` the lower Cholesky factor of the time-ordered stationary
    covariance of the first p vectors and ``z = L^{-1} (y_{1:p} - mu)``, the conditional of
    ``y_t`` is the sum over its D coordinates of ``-log(2 pi)/2 - log L_kk - z_k^2/2`` (L is
    lower triangular, so a sequence shorter than p only uses its own leading block). For
    ``t > p``: ``N(c + sum_i A_i y_{t-i}, Sigma)``.

    Args:
        values: ``[N, T_max, D]`` float64 (padding ignored).
        lengths: ``[N]`` int64.
        intercept: ``[D]``.
        coef: ``[p, D, D]``, lag 1 first; must be stationary.
        noise_chol: ``[D, D]`` lower Cholesky factor of Sigma.
        mean: ``[D]`` stationary mean.
        initial_chol: ``[p D, p D]`` lower Cholesky factor of :func:`initial_covariance`.

    Returns:
        ``[N, T_max]`` float64, zero at padded steps.
    """
    n, t_max, d = values.shape
    p = coef.shape[0]
    out = np.zeros((n, t_max))
    head = min(p, t_max)
    if head:
        chol = initial_chol[: head * d, : head * d]
        centred = (values[:, :head] - mean).reshape(n, head * d)
        z = solve_triangular(chol, centred.T, lower=True).T
        terms = -0.5 * _LOG_2PI - np.log(np.diag(chol))[None, :] - 0.5 * z**2
        out[:, :head] = terms.reshape(n, head, d).sum(-1)
    if t_max > p:
        resid = values[:, p:] - intercept
        for lag in range(1, p + 1):
            resid = resid - values[:, p - lag : t_max - lag] @ coef[lag - 1].T
        w = solve_triangular(noise_chol, resid.reshape(-1, d).T, lower=True).T
        logdet = float(np.log(np.diag(noise_chol)).sum())
        quad = (w**2).sum(-1).reshape(n, t_max - p)
        out[:, p:] = -0.5 * d * _LOG_2PI - logdet - 0.5 * quad
    if not bool((lengths == t_max).all()):
        out[np.arange(t_max)[None, :] >= lengths[:, None]] = 0.0
    return out


def lagged_design(values: np.ndarray, lengths: np.ndarray, order: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The pooled regression of a VAR(p) with intercept; lags never cross sequences.

    Returns:
        ``(design [R, 1 + p D], target [R, D])``: the row of step t of sequence i
        (``t >= p``) is ``[1, y_{t-1}, ..., y_{t-p}]`` and its target ``y_t``.
    """
    n, t_max, d = values.shape
    if t_max <= order:
        return np.zeros((0, 1 + order * d)), np.zeros((0, d))
    keep = np.arange(order, t_max)[None, :] < lengths[:, None]
    target = values[:, order:][keep]
    cols = [np.ones((target.shape[0], 1))]
    for lag in range(1, order + 1):
        cols.append(values[:, order - lag : t_max - lag][keep])
    return np.concatenate(cols, axis=1), target


def pooled_least_squares(values: np.ndarray, lengths: np.ndarray, order: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equation-by-equation least squares of a VAR(p) with intercept over many sequences.

    Returns:
        ``(intercept [D], coef [p, D, D], noise_cov [D, D], resid [R, D])`` with
        ``noise_cov`` the maximum-likelihood estimate ``resid^T resid / R``.
    """
    d = values.shape[2]
    design, target = lagged_design(values, lengths, order)
    beta = np.linalg.lstsq(design, target, rcond=None)[0]  # [1 + p D, D]
    resid = target - design @ beta
    coef = beta[1:].T.reshape(d, order, d).transpose(1, 0, 2)
    return beta[0].copy(), np.ascontiguousarray(coef), resid.T @ resid / target.shape[0], resid
