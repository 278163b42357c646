"""The Gaussian AR(p) process: stationary moments, exact joint likelihood, lagged designs.

Pure functions over numpy arrays (float64). Shapes use the letters of :mod:`probseq.base`:
N sequences, T steps (``T_max`` the longest).

The model, with intercept c, coefficients ``phi_1..phi_p`` (lag 1 first) and noise variance
``sigma2``::

    y_t = c + phi_1 y_{t-1} + ... + phi_p y_{t-p} + e_t,    e_t ~ N(0, sigma2)

When stationary (every root of ``1 - phi_1 z - ... - phi_p z^p`` outside the unit circle) it
has mean ``mu = c / (1 - sum(phi))`` and autocovariances ``gamma_h`` solving the Yule-Walker
equations ``gamma_h = sum_j phi_j gamma_{|h-j|} + sigma2 [h = 0]``, ``h = 0..p``. The exact
joint density of ``y_1..y_T`` takes the first ``min(p, T)`` values from
``N(mu, Toeplitz(gamma_0..gamma_{p-1}))`` and each later value from its conditional Gaussian.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

__all__ = [
    "max_root_inverse_modulus",
    "is_stationary",
    "stationary_mean",
    "autocovariances",
    "stationary_moments",
    "log_prob_steps",
    "lagged_design",
    "pooled_least_squares",
]

_LOG_2PI = float(np.log(2 * np.pi))


def max_root_inverse_modulus(coef: np.ndarray) -> float:
    """The spectral radius of the companion matrix (1 / the smallest root modulus of the
    characteristic polynomial); the process is stationary when it is below 1.

    Args:
        coef: ``[p]`` AR coefficients, lag 1 first.
    """
    p = coef.shape[0]
    if p == 0:
        return 0.0
    companion = np.zeros((p, p))
    companion[0] = coef
    companion[np.arange(1, p), np.arange(p - 1)] = 1.0
    return float(np.abs(np.linalg.eigvals(companion)).max())


def is_stationary(coef: np.ndarray) -> bool:
    """Whether AR coefficients ``[p]`` define a (weakly) stationary process."""
    return max_root_inverse_modulus(coef) < 1.0


def stationary_mean(intercept: float, coef: np.ndarray) -> float:
    """``mu = c / (1 - sum(phi))``."""
    return float(intercept) / (1.0 - float(coef.sum()))


def autocovariances(coef: np.ndarray, noise_var: float) -> np.ndarray:
    """``[p + 1]`` autocovariances ``gamma_0..gamma_p`` of a stationary AR(p).

    Solves the ``p + 1`` Yule-Walker equations
    ``gamma_h - sum_j phi_j gamma_{|h - j|} = sigma2 [h = 0]`` as one linear system.
    """
    p = coef.shape[0]
    system = np.eye(p + 1)
    for h in range(p + 1):
        for j in range(1, p + 1):
            system[h, abs(h - j)] -= coef[j - 1]
    rhs = np.zeros(p + 1)
    rhs[0] = noise_var
    return np.linalg.solve(system, rhs)


def stationary_cholesky(coef: np.ndarray, noise_var: float) -> np.ndarray:
    """``[p, p]`` lower Cholesky factor of ``Toeplitz(gamma_0..gamma_{p-1})``."""
    p = coef.shape[0]
    gamma = autocovariances(coef, noise_var)[:p]
    idx = np.abs(np.arange(p)[:, None] - np.arange(p)[None, :])
    return np.linalg.cholesky(gamma[idx])


def stationary_moments(intercept: float, coef: np.ndarray, noise_var: float
                       ) -> tuple[float, np.ndarray]:
    """``(mu, L)``: the stationary mean and the ``[p, p]`` Cholesky factor of the stationary
    covariance of p consecutive values."""
    return stationary_mean(intercept, coef), stationary_cholesky(coef, noise_var)


def log_prob_steps(
    values: np.ndarray,
    lengths: np.ndarray,
    intercept: float,
    coef: np.ndarray,
    noise_var: float,
    moments: tuple[float, np.ndarray] | None = None,
) -> np.ndarray:
    """Exact per-step conditionals ``log p(y_t | y_1..y_{t-1})`` of a stationary AR(p).

    For ``t <= p`` the conditional comes from the stationary Gaussian of the first p values:
    with ``L`` the Cholesky factor of its covariance and ``z = L^{-1} (y_{1:p} - mu)``,
    ``log p(y_t | y_<t) = -log(2 pi)/2 - log L_tt - z_t^2/2`` (L is lower triangular, so a
    sequence shorter than p only uses the block of its own length). For ``t > p`` it is
    ``N(c + sum_j phi_j y_{t-j}, sigma2)``.

    Args:
        values: ``[N, T_max]`` float64 (padding ignored).
        lengths: ``[N]`` int64.
        intercept: c.
        coef: ``[p]`` coefficients, lag 1 first; must be stationary.
        noise_var: sigma2 > 0.
        moments: ``(mu, L)`` from :func:`stationary_moments`, when already computed.

    Returns:
        ``[N, T_max]`` float64, zero at padded steps.
    """
    n, t_max = values.shape
    p = coef.shape[0]
    out = np.zeros((n, t_max))
    head = min(p, t_max)
    if head:
        mu, chol = moments if moments is not None else stationary_moments(
            intercept, coef, noise_var)
        chol = chol[:head, :head]
        # Forward substitution by hand (p is small): elementwise across sequences, so a
        # sequence's result does not depend on the batch it is in.
        centred = values[:, :head] - mu
        z = np.empty_like(centred)
        for t in range(head):
            z[:, t] = (centred[:, t] - z[:, :t] @ chol[t, :t]) / chol[t, t]
        out[:, :head] = -0.5 * _LOG_2PI - np.log(np.diag(chol))[None, :] - 0.5 * z**2
    if t_max > p:
        resid = values[:, p:] - intercept
        for lag in range(1, p + 1):
            resid -= coef[lag - 1] * values[:, p - lag : t_max - lag]
        out[:, p:] = -0.5 * (_LOG_2PI + np.log(noise_var)) - (0.5 / noise_var) * resid**2
    if not bool((lengths == t_max).all()):
        out[np.arange(t_max)[None, :] >= lengths[:, None]] = 0.0
    return out


def lagged_design(values: np.ndarray, lengths: np.ndarray, order: int,
                  augmented: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The pooled regression design of an AR(p) with intercept, lags within each sequence.

    Row for step t of sequence i (``t >= p``, never crossing into another sequence):
    target ``y_{i,t}``, regressors ``[1, y_{i,t-1}, ..., y_{i,t-p}]``. Built from shifted
    views of the padded array (no loop over sequences or steps).

    Args:
        values: ``[N, T_max]`` float64.
        lengths: ``[N]`` int64.
        order: p.
        augmented: also append the target as a last column of the design.

    Returns:
        ``(design [R, p + 1] (or [R, p + 2] augmented), target [R])`` with
        ``R = sum(max(lengths - p, 0))``; the design is column-major.
    """
    n, t_max = values.shape
    width = order + 1 + int(augmented)
    if t_max <= order:
        return np.zeros((0, width), order="F"), np.zeros(0)
    keep = None
    if not bool((lengths == t_max).all()):
        keep = np.arange(order, t_max)[None, :] < lengths[:, None]

    def column(shift: int) -> np.ndarray:  # y_{t - shift} for every kept step t >= p
        block = values[:, order - shift : t_max - shift]
        return block.reshape(-1) if keep is None else block[keep]

    target = column(0)
    design = np.empty((target.shape[0], width), order="F")
    design[:, 0] = 1.0
    for lag in range(1, order + 1):
        design[:, lag] = column(lag)
    if augmented:
        design[:, -1] = target
    return design, target


def pooled_least_squares(values: np.ndarray, lengths: np.ndarray, order: int
                         ) -> tuple[np.ndarray, float, int]:
    """Conditional least squares of an AR(p) with intercept over many sequences.

    Minimises ``sum_i sum_{t >= p} (y_{i,t} - c - sum_j phi_j y_{i,t-j})^2``. The triangular
    factor of the augmented design ``A = [1, lags, y] = Q [[R, r], [0, rho]]`` is computed by
    Cholesky-QR2 (Fukaya et al. 2014: two passes of ``R = chol(A^T A)``,
    ``A <- A R^{-1}``, which is as accurate as Householder QR while ``cond(A) < 1e8`` and
    costs two Gram matrices), falling back to a Householder QR when the Gram matrix is not
    numerically positive definite. Then ``R beta = r`` (minimum-norm least squares, as a
    pseudo-inverse would, if R is singular) and ``SSR = rho^2 + |r - R beta|^2``.

    Returns:
        ``(params [p + 1] = [c, phi_1..phi_p], ssr, nobs)``.
    """
    augmented, _ = lagged_design(values, lengths, order, augmented=True)
    rows, k = augmented.shape[0], order + 1
    tri = _triangular_factor(augmented)
    params = np.linalg.lstsq(tri[:k, :k], tri[:k, k], rcond=None)[0]
    ssr = float(tri[k, k] ** 2 + np.sum((tri[:k, k] - tri[:k, :k] @ params) ** 2))
    return params, ssr, rows


def _triangular_factor(a: np.ndarray) -> np.ndarray:
    """Upper-triangular ``R [k, k]`` with ``a^T a = R^T R`` (``a [m, k]``, any m)."""
    k = a.shape[1]
    try:
        r1 = np.linalg.cholesky(a.T @ a).T
        q1 = solve_triangular(r1, a.T, trans="T", lower=False)  # [k, m] = (a R1^{-1})^T
        r2 = np.linalg.cholesky(q1 @ q1.T).T
        tri = r2 @ r1
        if np.isfinite(tri).all():
            return tri
    except np.linalg.LinAlgError:
        pass
    tri = np.linalg.qr(a, mode="r")
    return np.vstack([tri, np.zeros((max(k - tri.shape[0], 0), k))])[:k]
