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

With missing values the density of the observed values is exact two ways: the whole-sequence
total from the banded precision of the joint (:func:`missing_log_prob`, linear in T), and the
per-step predictives from a Kalman filter of the companion form (:func:`kalman_predictive`)
run only over the windows that the steps after a gap need (:func:`predictive_moments`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import (
    cho_solve,
    cho_solve_banded,
    cholesky_banded,
    lapack,
    solve_banded,
)

__all__ = [
    "max_root_inverse_modulus",
    "is_stationary",
    "stationary_mean",
    "autocovariances",
    "stationary_moments",
    "log_prob_steps",
    "log_prob_totals",
    "lagged_design",
    "pooled_least_squares",
    "missing_log_prob",
    "conditional_fill",
    "draw_missing",
    "kalman_predictive",
    "irregular_segments",
    "predictive_moments",
    "forecast_moments",
    "coef_from_pacf",
    "pacf_from_coef",
    "torch_coef_from_pacf",
    "torch_log_prob",
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
    ``gamma_h - sum_j phi_j gamma_{|h - j|} = sigma2 [h = 0]`` as one linear system, then
    refines the solution with residuals computed in extended precision (``np.longdouble``):
    near a unit root the system is ill-conditioned and the conditional variances of values
    far apart (``gamma_0 - gamma_h^2 / gamma_0``) cancel most digits of gamma, so a plain
    float64 solve costs up to ~1e-4 nats on 20 values with roots 4e-4 from the unit circle.
    """
    p = coef.shape[0]
    exact = np.eye(p + 1, dtype=np.longdouble)
    phi = coef.astype(np.longdouble)
    for h in range(p + 1):
        for j in range(1, p + 1):
            exact[h, abs(h - j)] -= phi[j - 1]
    system = exact.astype(np.float64)
    rhs = np.zeros(p + 1, dtype=np.longdouble)
    rhs[0] = noise_var
    gamma = np.linalg.solve(system, rhs.astype(np.float64)).astype(np.longdouble)
    for _ in range(3):  # iterative refinement
        resid = rhs - exact @ gamma
        gamma += np.linalg.solve(system, resid.astype(np.float64)).astype(np.longdouble)
    return gamma.astype(np.float64)


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
        out[:, :head] = _head_steps(values, head, intercept, coef, noise_var, moments)
    if t_max > p:
        resid = values[:, p:] - intercept
        for lag in range(1, p + 1):
            resid -= coef[lag - 1] * values[:, p - lag : t_max - lag]
        out[:, p:] = -0.5 * (_LOG_2PI + np.log(noise_var)) - (0.5 / noise_var) * resid**2
    if not bool((lengths == t_max).all()):
        out[np.arange(t_max)[None, :] >= lengths[:, None]] = 0.0
    return out


def _head_steps(values: np.ndarray, head: int, intercept: float, coef: np.ndarray,
                noise_var: float, moments: tuple[float, np.ndarray] | None) -> np.ndarray:
    """``[N, head]`` the conditionals of the first ``head <= p`` steps (stationary Gaussian;
    garbage past a row's length)."""
    mu, chol = moments if moments is not None else stationary_moments(
        intercept, coef, noise_var)
    chol = chol[:head, :head]
    # Forward substitution by hand (p is small): elementwise across sequences, so a
    # sequence's result does not depend on the batch it is in.
    centred = values[:, :head] - mu
    z = np.empty_like(centred)
    for t in range(head):
        z[:, t] = (centred[:, t] - z[:, :t] @ chol[t, :t]) / chol[t, t]
    return -0.5 * _LOG_2PI - np.log(np.diag(chol))[None, :] - 0.5 * z**2


def log_prob_totals(
    values: np.ndarray,
    lengths: np.ndarray,
    intercept: float,
    coef: np.ndarray,
    noise_var: float,
    moments: tuple[float, np.ndarray] | None = None,
) -> np.ndarray:
    """``[N]`` exact log-likelihoods of complete rows: the conditionals of
    :func:`log_prob_steps` summed step by step from the first, in one compiled pass
    (:func:`probseq.autoregressive.compiled.log_prob_tails`) without the ``[N, T_max]``
    array of steps.

    Equal bit for bit to the last entry of ``np.cumsum(log_prob_steps(...), axis=1)``: the
    same floating-point operations in the same order, so trailing padding cannot change a
    bit either. Same arguments as :func:`log_prob_steps`.
    """
    from probseq.autoregressive import compiled  # compiles (or loads its cache) on first use

    t_max = values.shape[1]
    head = min(coef.shape[0], t_max)
    first = (_head_steps(values, head, intercept, coef, noise_var, moments) if head
             else np.zeros((values.shape[0], 0)))
    return compiled.log_prob_tails(values, lengths, first, intercept, coef, noise_var)


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
        # Q1 = A R1^{-1} as one matrix product with the small triangular inverse (a GEMM
        # over the m rows instead of m triangular solves: ~3x faster, and as accurate for
        # CholQR2, whose second pass absorbs Q1's loss of orthogonality).
        r1_inv, info = lapack.dtrtri(r1, lower=0)
        if info != 0:
            raise np.linalg.LinAlgError("singular triangular factor")
        q1 = a @ r1_inv
        r2 = np.linalg.cholesky(q1.T @ q1).T
        tri = r2 @ r1
        if np.isfinite(tri).all():
            return tri
    except np.linalg.LinAlgError:
        pass
    tri = np.linalg.qr(a, mode="r")
    return np.vstack([tri, np.zeros((max(k - tri.shape[0], 0), k))])[:k]


# ---------------------------------------------------------------------------- missing values
def _precision_times(v: np.ndarray, coef: np.ndarray, noise_var: float,
                     head_chol: np.ndarray) -> np.ndarray:
    """``Q v`` for sequences ``v [..., T]`` (centred), Q the precision of the stationary
    joint: ``Q = blockdiag(Gamma_head^{-1}, 0) + A^T A / sigma2`` with A the ``[T - p, T]``
    matrix of the innovations ``e_t = v_t - sum_j phi_j v_{t-j}`` (``t > p``)."""
    p, t = coef.shape[0], v.shape[-1]
    out = np.zeros(v.shape)
    head = head_chol.shape[0]
    if head:
        flat = v[..., :head].reshape(-1, head).T
        out[..., :head] = cho_solve((head_chol, True), flat).T.reshape(*v.shape[:-1], head)
    if t > p:
        e = v[..., p:].copy()
        for lag in range(1, p + 1):
            e -= coef[lag - 1] * v[..., p - lag : t - lag]
        e /= noise_var
        out[..., p:] += e
        for lag in range(1, p + 1):
            out[..., p - lag : t - lag] -= coef[lag - 1] * e
    return out


def _precision_band(missing: np.ndarray, length: int, coef: np.ndarray, noise_var: float,
                    head_inv: np.ndarray) -> np.ndarray:
    """``Q_MM`` in lower banded storage ``[p + 1, m]`` (``ab[k, c] = Q[M[c + k], M[c]]``) for
    the sorted missing steps ``M``; the band is p wide since ``Q_ij = 0`` for ``|i - j| > p``.
    """
    p, m = coef.shape[0], missing.shape[0]
    a = np.r_[1.0, -coef]  # innovation weights a_0..a_p
    head = head_inv.shape[0]
    ab = np.zeros((p + 1, m))
    for k in range(min(p, m - 1) + 1):
        i, j = missing[: m - k], missing[k:]  # i <= j
        d = j - i
        q = np.zeros(m - k)
        ok = d <= p
        for s in range(p + 1):  # t = j + s, weights a_{d+s} a_s, for p <= t < T, d+s <= p
            t = j + s
            valid = ok & (d + s <= p) & (t >= p) & (t < length)
            q[valid] += a[np.minimum(d + s, p)[valid]] * a[s]
        q /= noise_var
        both = ok & (j < head)
        q[both] += head_inv[i[both], j[both]]
        ab[k, : m - k] = q
    return ab


def missing_log_prob(
    u: np.ndarray,
    observed: np.ndarray,
    intercept: float,
    coef: np.ndarray,
    noise_var: float,
    moments: tuple[float, np.ndarray],
) -> tuple[float, np.ndarray, np.ndarray]:
    """Exact ``log p(u_O)`` of the observed values of one stationary AR(p) sequence.

    With Q the (banded) precision of the whole sequence, the missing values given the
    observed are ``N(u_hat_M, Q_MM^{-1})``, ``u_hat_M = mu - Q_MM^{-1} Q_MO (u_O - mu)``, so
    for the completed sequence ``u_hat`` (observed values, and ``u_hat_M`` at the gaps)::

        log p(u_O) = log p(u_hat) - log p(u_hat_M | u_O)
                   = log p(u_hat) + m log(2 pi) / 2 - log det(Q_MM) / 2

    ``log p(u_hat)`` is the complete-data likelihood and ``Q_MM`` has bandwidth p, so the
    cost is linear in T.

    Args:
        u: ``[T]`` values (anything at missing steps).
        observed: ``[T]`` bool.
        intercept, coef, noise_var: the AR(p).
        moments: ``(mu, L)`` from :func:`stationary_moments`.

    Returns:
        ``(log p(u_O), u_hat [T], band)`` with ``band`` the lower banded Cholesky factor of
        ``Q_MM`` (``[p + 1, m]``), for conditional draws of the missing values.
    """
    t = u.shape[0]
    filled, band = conditional_fill(u[None], observed, coef, noise_var, moments)
    filled = filled[0]
    logdet = 2.0 * float(np.log(band[0]).sum())
    complete = log_prob_steps(filled[None], np.array([t]), intercept, coef, noise_var,
                              moments).sum()
    return float(complete + 0.5 * band.shape[1] * _LOG_2PI - 0.5 * logdet), filled, band


def conditional_fill(u: np.ndarray, observed: np.ndarray, coef: np.ndarray,
                     noise_var: float, moments: tuple[float, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(u_hat [S, T], band [p + 1, m])``: sequences ``u [S, T]`` sharing one pattern of
    gaps ``observed [T]`` with each gap replaced by its conditional mean given the observed
    values, ``u_hat_M = mu - Q_MM^{-1} Q_MO (u_O - mu)``, and the lower banded Cholesky
    factor of ``Q_MM`` (the conditional precision of the gaps)."""
    mu, chol = moments
    t = u.shape[1]
    head = min(coef.shape[0], t)
    head_chol = chol[:head, :head]
    missing = np.flatnonzero(~observed)
    v = np.where(observed, u - mu, 0.0)
    if not missing.size:
        return v + mu, np.zeros((coef.shape[0] + 1, 0))
    head_inv = cho_solve((head_chol, True), np.eye(head)) if head else np.zeros((0, 0))
    band = cholesky_banded(_precision_band(missing, t, coef, noise_var, head_inv), lower=True)
    g = _precision_times(v, coef, noise_var, head_chol)[:, missing]
    v[:, missing] = -cho_solve_banded((band, True), g.T).T
    return v + mu, band


def draw_missing(filled: np.ndarray, observed: np.ndarray, band: np.ndarray,
                 eps: np.ndarray) -> np.ndarray:
    """Draws ``[S, T]`` of a sequence whose missing values are drawn from their conditional
    given the observed ones: ``u_hat_M + L^{-T} eps`` with ``Q_MM = L L^T``.

    Args:
        filled: ``[T]`` or ``[S, T]``: completed sequences (:func:`conditional_fill`).
        observed: ``[T]`` bool.
        band: ``[p + 1, m]`` lower banded Cholesky factor of ``Q_MM``.
        eps: ``[S, m]`` standard normal draws.
    """
    p1, m = band.shape
    out = np.broadcast_to(filled, (eps.shape[0], filled.shape[-1])).copy()
    if m == 0:
        return out
    upper = np.zeros_like(band)  # L^T in solve_banded's upper storage (0, p)
    for k in range(p1):
        upper[p1 - 1 - k, k:] = band[k, : m - k]
    out[:, ~observed] += solve_banded((0, p1 - 1), upper, eps.T).T
    return out


def kalman_predictive(
    u: np.ndarray,
    observed: np.ndarray,
    lengths: np.ndarray,
    coef: np.ndarray,
    noise_var: float,
    mean: float,
    gamma: np.ndarray,
    drift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One-step predictive moments of ``u_t`` given the observed ``u_<t`` (Kalman filter of
    the companion form, batched over sequences; a missing step skips its update).

    The state is ``s_t = (u_t, ..., u_{t-r+1}) - mu`` with ``r = max(p, 1)``, started from
    the stationary ``N(0, Toeplitz(gamma_0..gamma_{r-1}))``; observing ``u_t`` reads its first
    coordinate without noise.

    Args:
        u: ``[N, T_max]`` values (anything at missing or padded steps).
        observed: ``[N, T_max]`` bool (False at padding).
        lengths: ``[N]``.
        coef: ``[p]``; noise_var: sigma2; mean: mu; gamma: ``[>= r]`` autocovariances.
        drift: ``c - m (1 - sum(phi))`` when ``mean`` is a centre m other than mu (a model
            without a stationary mean, whose windows begin with p observed values that pin
            the state down whatever the prior; gamma then only needs to be positive
            definite).

    Returns:
        ``(pred_mean [N, T_max], pred_var [N, T_max], state_mean [N, r], state_cov
        [N, r, r])``: predictive moments at every step (values past a length are arbitrary),
        and the filtered state after each sequence's last step.
    """
    n, t_max = u.shape
    p = coef.shape[0]
    r = max(p, 1)
    phi = coef if p else np.zeros(1)
    idx = np.abs(np.arange(r)[:, None] - np.arange(r)[None, :])
    a = np.zeros((n, r))
    cov = np.broadcast_to(gamma[idx], (n, r, r)).copy()
    pred_mean = np.empty((n, t_max))
    pred_var = np.empty((n, t_max))
    end_a, end_p = np.zeros((n, r)), np.zeros((n, r, r))
    v = np.where(observed, u - mean, 0.0)
    seen = observed.astype(np.float64)
    ends: dict[int, list[int]] = {}
    for i, t in enumerate(lengths - 1):
        ends.setdefault(int(t), []).append(i)
    for t in range(t_max):
        f = cov[:, 0, 0].copy()
        pred_mean[:, t] = a[:, 0]
        pred_var[:, t] = f
        # Update (a no-op where u_t is missing: the gain is multiplied by 0 there).
        gain = cov[:, :, 0] * (seen[:, t] / f)[:, None]
        a += gain * (v[:, t] - a[:, 0])[:, None]
        cov -= gain[:, :, None] * cov[:, None, 0, :]
        keep = (1.0 - seen[:, t])[:, None]
        cov[:, 0, :] *= keep  # the observed coordinate is known exactly
        cov[:, :, 0] *= keep
        if t in ends:
            rows = ends[t]
            end_a[rows], end_p[rows] = a[rows], cov[rows]
        a, cov = _predict_state(a, cov, phi, noise_var, drift)
    return pred_mean + mean, pred_var, end_a, end_p


def irregular_segments(observed: np.ndarray, lengths: np.ndarray, order: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The steps whose predictive the complete-data formulas get wrong, and the windows a
    Kalman filter needs to get them right.

    Step t is *regular* when the values it conditions on in the complete-data formulas are
    observed: ``y_{t-p}..y_{t-1}`` for ``t >= p``, ``y_0..y_{t-1}`` for ``t < p``. Every other
    step inside the lengths is irregular. The predictive of an irregular step t given the
    observed past only depends on the values since the last run of p observed values before
    t (which pins the state down), so a filter started from the stationary distribution at
    the start of that run (or at 0) is exact. Irregular steps sharing that start share a
    window.

    Returns:
        ``(owner [N, T_max] int, rows [W], starts [W], ends [W])``: W windows
        ``[start, end)`` of sequence ``row``; ``owner`` is the window of each irregular step
        (-1 at regular steps).
    """
    n, t_max = observed.shape
    owner = np.full((n, t_max), -1, dtype=np.int64)
    rows, starts, ends = [], [], []
    if order == 0:
        return owner, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    for i in range(n):
        length = int(lengths[i])
        o = observed[i, :length]
        if o.all():
            continue
        missing_before = np.r_[0, np.cumsum(~o)]  # [length + 1]
        t = np.arange(length)
        lo = np.maximum(t - order, 0)
        irr = np.flatnonzero((missing_before[t] - missing_before[lo]) > 0)
        if not irr.size:
            continue
        e = np.arange(order, length + 1)
        full_end = np.full(length + 1, -1)
        full_end[order:] = np.where(missing_before[e] - missing_before[e - order] == 0, e, -1)
        last_full_end = np.maximum.accumulate(full_end)[irr]
        begin = np.where(last_full_end >= 0, last_full_end - order, 0)
        # irr is sorted and begin is non-decreasing in it: one window per distinct begin.
        first = np.r_[True, begin[1:] != begin[:-1]]
        group = np.cumsum(first) - 1 + len(rows)
        owner[i, irr] = group
        last = np.r_[np.flatnonzero(first)[1:] - 1, irr.size - 1]
        rows += [i] * int(first.sum())
        starts += begin[first].tolist()
        ends += (irr[last] + 1).tolist()
    return owner, np.array(rows, np.int64), np.array(starts, np.int64), \
        np.array(ends, np.int64)


def windows(x: np.ndarray, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(x[rows, starts..ends] left-aligned [W, max width], width [W])``."""
    width = ends - starts
    cols = starts[:, None] + np.arange(int(width.max()))[None, :]
    inside = cols < ends[:, None]
    return x[rows[:, None], np.where(inside, cols, 0)], width


def predictive_moments(
    u: np.ndarray,
    observed: np.ndarray | None,
    lengths: np.ndarray,
    intercept: float,
    coef: np.ndarray,
    noise_var: float,
    moments: tuple[float, np.ndarray],
    gamma: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [N, T_max], var [N, T_max])`` of ``u_t`` given the observed ``u_<t``, exact.

    Regular steps (see :func:`irregular_segments`) by the complete-data formulas (the
    stationary conditional for ``t < p``, ``c + sum_j phi_j u_{t-j}`` after); irregular ones
    by the Kalman filter (:func:`kalman_predictive`) over the merged windows they need.
    """
    n, t_max = u.shape
    p = coef.shape[0]
    mu, chol = moments
    mean = np.empty((n, t_max))
    var = np.empty((n, t_max))
    head = min(p, t_max)
    if head:
        ch = chol[:head, :head]
        centred = u[:, :head] - mu
        z = np.empty_like(centred)
        for t in range(head):
            z[:, t] = (centred[:, t] - z[:, :t] @ ch[t, :t]) / ch[t, t]
        diag = np.diag(ch)
        mean[:, :head] = u[:, :head] - diag * z
        var[:, :head] = diag**2
    if t_max > p:
        pred = np.full((n, t_max - p), intercept)
        for lag in range(1, p + 1):
            pred += coef[lag - 1] * u[:, p - lag : t_max - lag]
        mean[:, p:] = pred
        var[:, p:] = noise_var
    if observed is not None:
        owner, rows, starts, ends = irregular_segments(observed, lengths, p)
        width = ends - starts
        # Windows in classes of similar width (factor 8), so a few long windows do not
        # make every short one run as long.
        classes = np.ceil(np.log2(np.maximum(width, 1)) / 3).astype(np.int64)
        for cls in np.unique(classes):
            pick = np.flatnonzero(classes == cls)
            u_w, w = windows(u, rows[pick], starts[pick], ends[pick])
            o_w, _ = windows(observed, rows[pick], starts[pick], ends[pick])
            o_w &= np.arange(u_w.shape[1])[None, :] < w[:, None]
            m_w, v_w, _, _ = kalman_predictive(u_w, o_w, w, coef, noise_var, mu, gamma)
            # Scatter each window's own irregular steps.
            i_idx, t_idx = np.nonzero(np.isin(owner, pick))
            k = np.searchsorted(pick, owner[i_idx, t_idx])
            col = t_idx - starts[pick][k]
            mean[i_idx, t_idx] = m_w[k, col]
            var[i_idx, t_idx] = v_w[k, col]
    return mean, var


def _predict_state(a: np.ndarray, cov: np.ndarray, phi: np.ndarray, noise_var: float,
                   drift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One companion-form prediction ``a <- F a + drift e_1``,
    ``P <- F P F^T + sigma2 e_1 e_1^T``."""
    new_a = np.empty_like(a)
    new_a[:, 0] = a @ phi + drift
    new_a[:, 1:] = a[:, :-1]
    fp = np.empty_like(cov)
    fp[:, 0, :] = np.einsum("j,njk->nk", phi, cov)
    fp[:, 1:, :] = cov[:, :-1, :]
    new_p = np.empty_like(cov)
    new_p[:, :, 0] = fp @ phi
    new_p[:, :, 1:] = fp[:, :, :-1]
    new_p[:, 0, 0] += noise_var
    return new_a, 0.5 * (new_p + new_p.transpose(0, 2, 1))


def forecast_moments(state_mean: np.ndarray, state_cov: np.ndarray, coef: np.ndarray,
                     noise_var: float, mean: float, horizon: int, drift: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [N, H], var [N, H])`` of ``u_{T+h}`` given a filtered state at step T (of
    :func:`kalman_predictive` with the same ``mean`` and ``drift``)."""
    p = coef.shape[0]
    phi = coef if p else np.zeros(1)
    a, cov = state_mean, state_cov
    means, variances = [], []
    for _ in range(horizon):
        a, cov = _predict_state(a, cov, phi, noise_var, drift)
        means.append(a[:, 0] + mean)
        variances.append(cov[:, 0, 0].copy())
    return np.stack(means, 1), np.stack(variances, 1)


def coef_from_pacf(pacf: np.ndarray) -> np.ndarray:
    """AR coefficients ``[p]`` from partial autocorrelations in (-1, 1) (Durbin-Levinson);
    every such vector gives a stationary AR (Barndorff-Nielsen and Schou 1973)."""
    phi = np.zeros(0)
    for k, r in enumerate(pacf):
        phi = np.r_[phi - r * phi[::-1], r] if k else np.array([r])
    return phi


def torch_coef_from_pacf(pacf: torch.Tensor) -> torch.Tensor:
    """:func:`coef_from_pacf` in torch (differentiable): ``[p]`` coefficients from ``[p]``
    partial autocorrelations in (-1, 1)."""
    phi = pacf[:0]
    for j in range(pacf.shape[-1]):
        r = pacf[j : j + 1]
        phi = torch.cat([phi - r * phi.flip(-1), r])
    return phi


def torch_log_prob(values: torch.Tensor, lengths: torch.Tensor, intercept: torch.Tensor,
                   coef: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """The exact stationary joint log density of each sequence, in torch (differentiable in
    the parameters; for Pyro). Fully observed sequences, no covariates.

    The first ``m = min(p, T)`` values are ``N(mu, Gamma[:m, :m])`` with ``Gamma`` the
    stationary covariance of p consecutive values (from the companion form's Lyapunov
    equation ``Gamma = A Gamma A' + sigma2 e1 e1'``), each later value
    ``N(c + sum_j phi_j y_(t-j), sigma2)``.

    Args:
        values: ``[N, T_max]`` float64 (padding arbitrary).
        lengths: ``[N]``.
        intercept, noise_var: 0-d tensors; coef: ``[p]`` stationary coefficients.

    Returns:
        ``[N]`` float64.
    """
    p = coef.shape[0]
    n, t_max = values.shape
    mask = torch.arange(t_max)[None, :] < lengths[:, None]
    y = torch.where(mask, values, torch.zeros((), dtype=values.dtype))
    out = torch.zeros(n, dtype=values.dtype)
    if p:
        a = torch.zeros(p, p, dtype=values.dtype)
        a = a + torch.diag(torch.ones(p - 1, dtype=values.dtype), -1)
        a = torch.cat([coef[None, :], a[1:]])
        q = torch.zeros(p * p, dtype=values.dtype)
        q = q + noise_var * (torch.arange(p * p) == 0).to(values.dtype)
        eye = torch.eye(p * p, dtype=values.dtype)
        gamma = torch.linalg.solve(eye - torch.kron(a, a), q).reshape(p, p)
        gamma = 0.5 * (gamma + gamma.T)
        mu = intercept / (1.0 - coef.sum())
        for m in sorted({min(p, int(length)) for length in lengths}):
            rows = torch.minimum(lengths, torch.tensor(p)) == m
            chol = torch.linalg.cholesky(gamma[:m, :m])
            z = torch.linalg.solve_triangular(chol, (y[:, :m] - mu).T, upper=False)
            head = -0.5 * (m * _LOG_2PI + (z * z).sum(0)) - torch.log(
                torch.diagonal(chol)).sum()
            out = out + torch.where(rows, head, torch.zeros(()))
    if t_max > p:
        mean = intercept + sum(coef[j] * y[:, p - 1 - j : t_max - 1 - j] for j in range(p))
        resid = y[:, p:] - mean
        lp = -0.5 * (_LOG_2PI + torch.log(noise_var) + resid**2 / noise_var)
        out = out + torch.where(mask[:, p:], lp, torch.zeros(())).sum(-1)
    return out


def pacf_from_coef(coef: np.ndarray) -> np.ndarray:
    """The inverse of :func:`coef_from_pacf` (stationary coefficients only)."""
    phi = np.asarray(coef, dtype=np.float64).copy()
    out = np.zeros(phi.shape[0])
    for k in range(phi.shape[0] - 1, -1, -1):
        r = phi[k]
        out[k] = r
        if k:
            phi = (phi[:k] + r * phi[:k][::-1]) / (1.0 - r * r)
    return out
