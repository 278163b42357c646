"""The exact Gaussian likelihood of (seasonal) ARMA processes, batched over sequences.

Pure functions over numpy arrays (float64); no model objects. Shape letters as in
:mod:`probseq.base`: N sequences, T steps (``T_max`` the longest); r is the dimension of
the state below.

The model of the (differenced, de-meaned) series ``w_t``, with the reduced polynomials
``phi(B) = 1 - a_1 B - ... - a_m B^m`` (the product of the non-seasonal and seasonal AR
polynomials) and ``theta(B) = 1 + b_1 B + ... + b_k B^k`` (the MA product)::

    w_t = a_1 w_(t-1) + ... + a_m w_(t-m) + e_t + b_1 e_(t-1) + ... + b_k e_(t-k)

has Harvey's state-space form with ``r = max(m, k + 1)`` states (Harvey 1989, 3.3;
statsmodels' ``SARIMAX`` uses the same one)::

    alpha_t = Tm alpha_(t-1) + R e_t,   w_t = alpha_t[0]
    Tm = [a | shift] (first column a_1..a_r, ones on the superdiagonal),
    R  = [1, b_1, ..., b_(r-1)]'.

The process is stationary, so the exact likelihood starts the state at its stationary
distribution ``N(0, sigma2 P0)`` with ``P0 = Tm P0 Tm' + R R'`` (the discrete Lyapunov
equation, :func:`stationary_state_cov`). The Kalman filter then gives the prediction-error
decomposition ``log p(w) = sum_t log N(v_t; 0, sigma2 f_t)``: there is no observation
noise, so ``f_t = P_t[0, 0]`` and the gain is the first column of ``P_t`` over ``f_t``.
Every quantity of the filter but the innovations scales with ``sigma2``, so the filter runs
with ``sigma2 = 1`` and :func:`gaussian_steps` applies it (the likelihood with ``sigma2``
concentrated out is :func:`concentrated_log_lik`).

Two facts make a batch cheap (:func:`arma_filter`): the covariance recursion does not
depend on the data, so every sequence with no missing value shares one recursion; and with
the structure of ``Tm`` one step of the mean is ``O(r)`` and of the covariance ``O(r^2)``.
A sequence with gaps runs its own covariance recursion, skipping the update at each gap
(the exact marginal density of the observed values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "reduced_polynomials",
    "state_dim",
    "transition_first_column",
    "stationary_state_cov",
    "arma_filter",
    "gaussian_steps",
    "concentrated_log_lik",
    "difference",
    "differencing_polynomial",
    "future_cov",
    "sample_arma",
    "integrated_form",
    "diffuse_filter",
    "SeriesFilter",
    "filter_series",
]

_LOG_2PI = math.log(2.0 * math.pi)


def reduced_polynomials(ar: np.ndarray, ma: np.ndarray, seasonal_ar: np.ndarray,
                        seasonal_ma: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """The coefficients ``a [m]`` of ``phi(B) Phi(B^s) = 1 - sum_j a_j B^j`` and ``b [k]``
    of ``theta(B) Theta(B^s) = 1 + sum_j b_j B^j`` (statsmodels' sign conventions: AR
    coefficients enter with a minus sign in the polynomial, MA with a plus).

    Args:
        ar: ``[p]`` phi_1..phi_p; ma: ``[q]``; seasonal_ar: ``[P]``; seasonal_ma: ``[Q]``.
        period: s (ignored when there are no seasonal terms).
    """
    def poly(coef: np.ndarray, sign: float, step: int) -> np.ndarray:
        out = np.zeros(step * len(coef) + 1)
        out[0] = 1.0
        out[step::step] = sign * np.asarray(coef, dtype=np.float64)
        return out

    phi = np.convolve(poly(ar, -1.0, 1), poly(seasonal_ar, -1.0, max(period, 1)))
    theta = np.convolve(poly(ma, 1.0, 1), poly(seasonal_ma, 1.0, max(period, 1)))
    return -phi[1:], theta[1:]


def state_dim(a: np.ndarray, b: np.ndarray) -> int:
    """r = max(m, k + 1)."""
    return max(len(a), len(b) + 1)


def transition_first_column(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ar [r], rvec [r])``: the first column of ``Tm`` and the vector R, padded to r."""
    r = state_dim(a, b)
    ar = np.zeros(r)
    ar[: len(a)] = a
    rvec = np.zeros(r)
    rvec[0] = 1.0
    rvec[1 : len(b) + 1] = b
    return ar, rvec


def _transition(ar: np.ndarray) -> np.ndarray:
    r = len(ar)
    tm = np.zeros((r, r))
    tm[:, 0] = ar
    tm[np.arange(r - 1), np.arange(1, r)] = 1.0
    return tm


def stationary_state_cov(ar: np.ndarray, rvec: np.ndarray) -> np.ndarray:
    """``[r, r]`` P0 solving ``P0 = Tm P0 Tm' + R R'`` (the stationary covariance of the
    state for ``sigma2 = 1``), by the doubling algorithm (Smith 1968):
    ``P_(k+1) = P_k + A_k P_k A_k'``, ``A_(k+1) = A_k^2`` from ``P_0 = R R'``, ``A_0 = Tm``,
    which sums ``sum_j Tm^j R R' Tm'^j`` over ``2^k`` terms at step k, every term positive
    semi-definite (no cancellation), until the sum stops changing in floating point. Tested
    against a direct solve of the ``r^2`` linear equations (what statsmodels does for small
    r), which costs ``O(r^6)``; this costs ``O(r^3)`` per doubling.

    The AR part must be stationary (checked by the caller; otherwise ``ValueError``).
    """
    p0, converged = _lyapunov_doubling(_transition(ar), np.outer(rvec, rvec))
    if not converged:
        raise ValueError("the AR part is not stationary (the Lyapunov sum diverges)")
    return p0


@numba.njit(cache=True, nogil=True)
def _lyapunov_doubling(tm: np.ndarray, rr: np.ndarray) -> tuple[np.ndarray, bool]:
    p = rr.copy()
    a = tm.copy()
    for _ in range(80):
        step = a @ p @ a.T
        p_new = p + step
        p_new = 0.5 * (p_new + p_new.T)
        done = True
        for i in range(p.shape[0]):
            for j in range(p.shape[0]):
                if p_new[i, j] != p[i, j]:
                    done = False
        p = p_new
        if done:
            return p, np.isfinite(p).all()
        a = a @ a
        if not np.isfinite(a).all():
            return p, False
    return p, False


@numba.njit(cache=True, nogil=True)
def _predict_cov(P: np.ndarray, ar: np.ndarray, rr: np.ndarray, out: np.ndarray,
                 tmp: np.ndarray) -> None:
    """``out = Tm P Tm' + R R'`` in O(r^2), using the structure of Tm."""
    r = ar.shape[0]
    for i in range(r):  # tmp = Tm P
        for j in range(r):
            v = ar[i] * P[0, j]
            if i + 1 < r:
                v += P[i + 1, j]
            tmp[i, j] = v
    for i in range(r):  # out = tmp Tm' + R R'
        for j in range(r):
            v = tmp[i, 0] * ar[j]
            if j + 1 < r:
                v += tmp[i, j + 1]
            out[i, j] = v + rr[i, j]


@numba.njit(cache=True, nogil=True)
def _update_cov(P: np.ndarray, out: np.ndarray) -> float:
    """``out = P - P[:, 0] P[0, :] / f``; returns ``f = P[0, 0]``."""
    r = P.shape[0]
    f = P[0, 0]
    for i in range(r):
        for j in range(r):
            out[i, j] = P[i, j] - P[i, 0] * P[0, j] / f
    return f


@numba.njit(cache=True, nogil=True)
def _shared_covariances(P0: np.ndarray, ar: np.ndarray, rr: np.ndarray, t_max: int,
                        f_all: np.ndarray, k_all: np.ndarray, p_all: np.ndarray) -> None:
    """The data-free recursion of a complete sequence: ``f_t``, the gains ``k_t = P_t[:, 0]
    / f_t`` and the predicted covariances ``P_t`` (``p_all [t_max + 1, r, r]``)."""
    r = ar.shape[0]
    filt = np.empty((r, r))
    tmp = np.empty((r, r))
    p_all[0] = P0
    for t in range(t_max):
        P = p_all[t]
        f = P[0, 0]
        f_all[t] = f
        for i in range(r):
            k_all[t, i] = P[i, 0] / f
        _update_cov(P, filt)
        _predict_cov(filt, ar, rr, p_all[t + 1], tmp)


@numba.njit(cache=True, nogil=True)
def _filter_rows(w: np.ndarray, observed: np.ndarray, lengths: np.ndarray, complete: np.ndarray,
                 P0: np.ndarray, ar: np.ndarray, rr: np.ndarray, f_all: np.ndarray,
                 k_all: np.ndarray, p_all: np.ndarray, m_out: np.ndarray, v_out: np.ndarray,
                 f_out: np.ndarray, a_end: np.ndarray, p_end: np.ndarray) -> None:
    n, _ = w.shape
    r = ar.shape[0]
    a = np.empty(r)
    af = np.empty(r)
    P = np.empty((r, r))
    filt = np.empty((r, r))
    tmp = np.empty((r, r))
    for row in range(n):
        length = lengths[row]
        for i in range(r):
            a[i] = 0.0
        if complete[row]:
            for t in range(length):
                m_out[row, t] = a[0]
                v = w[row, t] - a[0]
                v_out[row, t] = v
                f_out[row, t] = f_all[t]
                for i in range(r):
                    af[i] = a[i] + k_all[t, i] * v
                for i in range(r - 1):
                    a[i] = ar[i] * af[0] + af[i + 1]
                a[r - 1] = ar[r - 1] * af[0]
            p_end[row] = p_all[length]
        else:
            P[:, :] = P0
            for t in range(length):
                m_out[row, t] = a[0]
                if observed[row, t]:
                    f = P[0, 0]
                    v = w[row, t] - a[0]
                    v_out[row, t] = v
                    f_out[row, t] = f
                    for i in range(r):
                        af[i] = a[i] + P[i, 0] / f * v
                    _update_cov(P, filt)
                else:
                    v_out[row, t] = 0.0
                    f_out[row, t] = P[0, 0]
                    for i in range(r):
                        af[i] = a[i]
                    filt[:, :] = P
                for i in range(r - 1):
                    a[i] = ar[i] * af[0] + af[i + 1]
                a[r - 1] = ar[r - 1] * af[0]
                _predict_cov(filt, ar, rr, P, tmp)
            p_end[row] = P
        a_end[row] = a


def arma_filter(w: np.ndarray, lengths: np.ndarray, observed: np.ndarray | None, ar: np.ndarray,
                rvec: np.ndarray, P0: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Kalman filter of a stationary ARMA with unit noise variance, over a batch.

    Args:
        w: ``[N, T_max]`` the zero-mean series (padding after each length is ignored; values
            at missing steps are ignored).
        lengths: ``[N]`` int64, each at least 0.
        observed: ``[N, T_max]`` bool, or None when nothing is missing.
        ar, rvec: ``[r]`` from :func:`transition_first_column`.
        P0: ``[r, r]`` from :func:`stationary_state_cov` (computed when None).

    Returns:
        ``(m, v, f, a_end, p_end)``: the predictive means ``m [N, T_max]`` of each
        ``w_t`` given the observed values before it, the innovations ``v = w - m`` and their
        variances ``f``
        (for ``sigma2 = 1``; ``v = 0`` at missing steps, where ``f`` is the variance the
        prediction would have had; both 0 past each length), and the predicted state after
        each sequence's last step, ``a_end [N, r]`` and ``p_end [N, r, r]`` (the state
        ``alpha_(T+1)`` given the sequence).
    """
    w = np.ascontiguousarray(w, dtype=np.float64)
    n, t_max = w.shape
    r = len(ar)
    if P0 is None:
        P0 = stationary_state_cov(ar, rvec)
    rr = np.outer(rvec, rvec)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if observed is None:
        obs = np.ones((n, t_max), dtype=np.bool_)
        complete = np.ones(n, dtype=np.bool_)
    else:
        obs = np.ascontiguousarray(observed, dtype=np.bool_)
        inside = np.arange(t_max)[None, :] < lengths[:, None]
        complete = ~(inside & ~obs).any(1)
    t_shared = int(lengths[complete].max()) if complete.any() else 0
    f_all = np.empty(t_shared)
    k_all = np.empty((t_shared, r))
    p_all = np.empty((t_shared + 1, r, r))
    _shared_covariances(P0, ar, rr, t_shared, f_all, k_all, p_all)
    m = np.zeros((n, t_max))
    v = np.zeros((n, t_max))
    f = np.zeros((n, t_max))
    a_end = np.empty((n, r))
    p_end = np.empty((n, r, r))
    _filter_rows(w, obs, lengths, complete, P0, ar, rr, f_all, k_all, p_all, m, v, f, a_end,
                 p_end)
    return m, v, f, a_end, p_end


def gaussian_steps(v: np.ndarray, f: np.ndarray, keep: np.ndarray, sigma2: float) -> np.ndarray:
    """``[N, T]`` ``log N(v_t; 0, sigma2 f_t)`` where ``keep``, else 0."""
    var = np.where(keep, sigma2 * f, 1.0)
    out = -0.5 * (_LOG_2PI + np.log(var) + np.where(keep, v, 0.0) ** 2 / var)
    return np.where(keep, out, 0.0)


def concentrated_log_lik(v: np.ndarray, f: np.ndarray, keep: np.ndarray
                         ) -> tuple[float, float]:
    """``(log_lik, sigma2_hat)``: the exact log-likelihood with the noise variance
    concentrated out, ``sigma2_hat = sum v^2 / f / n`` over the kept steps."""
    n = int(keep.sum())
    fk = np.where(keep, f, 1.0)
    quad = float((np.where(keep, v, 0.0) ** 2 / fk).sum())
    s2 = quad / n
    return -0.5 * (n * (_LOG_2PI + math.log(s2) + 1.0) + float(np.log(fk).sum())), s2


def differencing_polynomial(d: int, seasonal_d: int, period: int) -> np.ndarray:
    """``[d + D s + 1]`` the coefficients ``delta_0 = 1, delta_1, ...`` of
    ``(1 - B)^d (1 - B^s)^D`` (lag 0 first)."""
    out = np.array([1.0])
    for _ in range(d):
        out = np.convolve(out, [1.0, -1.0])
    for _ in range(seasonal_d):
        seasonal = np.zeros(period + 1)
        seasonal[0], seasonal[period] = 1.0, -1.0
        out = np.convolve(out, seasonal)
    return out


def difference(y: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``[N, T - n_d]`` the differenced series ``w_t = sum_k delta_k y_(t-k)`` for
    ``t >= n_d`` (``n_d = len(delta) - 1``); padding past a length only reaches padding."""
    nd = len(delta) - 1
    if nd == 0:
        return y.copy()
    t = y.shape[1]
    out = np.zeros((y.shape[0], max(t - nd, 0)))
    for k, c in enumerate(delta):
        if c != 0.0:
            out += c * y[:, nd - k : t - k]
    return out


def future_cov(a_end: np.ndarray, p_end: np.ndarray, ar: np.ndarray, rvec: np.ndarray,
               horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Joint moments of the next H values of the ARMA (unit noise variance).

    Args:
        a_end: ``[N, r]`` predicted state ``alpha_(T+1)``; p_end: ``[N, r, r]`` its covariance.
        ar, rvec: ``[r]``.
        horizon: H.

    Returns:
        ``(mean [N, H], cov [N, H, H])`` of ``w_(T+1..T+H)`` given the data.
    """
    n, r = a_end.shape
    tm = _transition(ar)
    rr = np.outer(rvec, rvec)
    rows = np.empty((horizon, r))  # e_0' Tm^k
    e = np.zeros(r)
    e[0] = 1.0
    for k in range(horizon):
        rows[k] = e
        e = e @ tm
    mean = np.empty((n, horizon))
    cov = np.empty((n, horizon, horizon))
    a = a_end.copy()
    P = p_end.copy()
    for i in range(horizon):
        mean[:, i] = a[:, 0]
        col = P[:, :, 0]  # Cov(alpha_(T+1+i), w_(T+1+i))
        cross = col @ rows[: horizon - i].T  # [N, H - i]: Cov(w_(T+1+j), w_(T+1+i))
        cov[:, i, i:] = cross
        cov[:, i:, i] = cross
        a = a @ tm.T
        P = tm @ P @ tm.T + rr
    return mean, cov


def sample_arma(num_sequences: int, length: int, ar: np.ndarray, rvec: np.ndarray,
                P0: np.ndarray, state: np.ndarray | None, state_cov: np.ndarray | None,
                noise: np.ndarray, start_noise: np.ndarray, sigma: float) -> np.ndarray:
    """``[N, length]`` draws of the zero-mean ARMA with noise sd ``sigma``.

    The first state is drawn from ``N(state, sigma^2 state_cov)`` (``[r]``, ``[r, r]``;
    the stationary ``N(0, sigma^2 P0)`` when ``state`` is None; covariances in units of the
    noise variance, as :func:`arma_filter` returns them) with the standard normals
    ``start_noise [N, r]``; ``noise [N, length]`` (standard normals) drives the later steps.
    """
    r = len(ar)
    tm = _transition(ar)
    mean, cov = (np.zeros(r), P0) if state is None else (state, state_cov)
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    out = np.empty((num_sequences, length))
    alpha = mean[None, :] + sigma * (start_noise @ root.T)
    for t in range(length):
        if t:
            alpha = alpha @ tm.T + sigma * noise[:, t, None] * rvec[None, :]
        out[:, t] = alpha[:, 0]
    return out


def integrated_form(ar: np.ndarray, rvec: np.ndarray, delta: np.ndarray, mean: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The state-space form of the integrated series, for the exact diffuse filter.

    The state is ``x_t = [alpha_t (r), u_(t-1), ..., u_(t-n_d)]`` and the observation
    ``u_t = z . x_t + mean`` with ``z = [1, 0.., -delta_1, ..., -delta_(n_d)]``: the ARMA
    state, whose start is stationary, and the ``n_d = d + D s`` previous values, whose start
    is diffuse (``P_inf`` the identity on them).

    Returns:
        ``(tm [S, S], c [S], rr [S, S], z [S], p_inf [S, S])`` with ``S = r + n_d``: the
        transition ``x_(t+1) = tm x_t + c + noise``, its noise covariance (unit variance),
        the observation vector and the initial diffuse part.
    """
    r, nd = len(ar), len(delta) - 1
    size = r + nd
    z = np.zeros(size)
    z[0] = 1.0
    z[r:] = -delta[1:]
    tm = np.zeros((size, size))
    tm[:r, :r] = _transition(ar)
    c = np.zeros(size)
    if nd:
        tm[r] = z  # the new first lag is u_t
        c[r] = mean
        tm[np.arange(r + 1, size), np.arange(r, size - 1)] = 1.0
    rr = np.zeros((size, size))
    rr[:r, :r] = np.outer(rvec, rvec)
    p_inf = np.zeros((size, size))
    p_inf[np.arange(r, size), np.arange(r, size)] = 1.0
    return tm, c, rr, z, p_inf


#: entries of the diffuse covariance (and F_inf against |z|^2) below this count as zero;
#: the diffuse part starts at the identity and the differencing weights are integers.
DIFFUSE_TOL = 1e-9


@numba.njit(cache=True, nogil=True)
def _diffuse_rows(u: np.ndarray, observed: np.ndarray, lengths: np.ndarray, tm: np.ndarray,
                  c: np.ndarray, rr: np.ndarray, z: np.ndarray, p_star0: np.ndarray,
                  p_inf0: np.ndarray, mean: float, tol: float, m_out: np.ndarray,
                  v_out: np.ndarray, f_out: np.ndarray, scored: np.ndarray,
                  diffuse_step: np.ndarray, x_end: np.ndarray, p_end: np.ndarray,
                  inf_end: np.ndarray) -> None:
    n = u.shape[0]
    size = tm.shape[0]
    scale = 0.0
    for i in range(size):
        scale += z[i] * z[i]
    for row in range(n):
        a = np.zeros(size)
        P = p_star0.copy()
        Pi = p_inf0.copy()
        diffuse = True
        for t in range(lengths[row]):
            pred = mean
            for i in range(size):
                pred += z[i] * a[i]
            m_out[row, t] = pred
            ms = P @ z
            mi = Pi @ z
            fs = 0.0
            fi = 0.0
            for i in range(size):
                fs += z[i] * ms[i]
                fi += z[i] * mi[i]
            f_out[row, t] = fs
            diffuse_step[row, t] = diffuse and fi > tol * scale
            if observed[row, t]:
                v = u[row, t] - pred
                v_out[row, t] = v
                if diffuse and fi > tol * scale:
                    for i in range(size):
                        a[i] += mi[i] * v / fi
                    for i in range(size):
                        for j in range(size):
                            P[i, j] = (P[i, j] - (ms[i] * mi[j] + mi[i] * ms[j]) / fi
                                       + mi[i] * mi[j] * fs / (fi * fi))
                            Pi[i, j] -= mi[i] * mi[j] / fi
                else:
                    scored[row, t] = True
                    for i in range(size):
                        a[i] += ms[i] * v / fs
                    for i in range(size):
                        for j in range(size):
                            P[i, j] -= ms[i] * ms[j] / fs
            a = tm @ a + c
            P = tm @ P @ tm.T + rr
            P = 0.5 * (P + P.T)
            if diffuse:
                Pi = tm @ Pi @ tm.T
                Pi = 0.5 * (Pi + Pi.T)
                big = 0.0
                for i in range(size):
                    for j in range(size):
                        big = max(big, abs(Pi[i, j]))
                if big <= tol:
                    diffuse = False
                    Pi[:, :] = 0.0
        x_end[row] = a
        p_end[row] = P
        inf_end[row] = diffuse


def diffuse_filter(u: np.ndarray, lengths: np.ndarray, observed: np.ndarray, ar: np.ndarray,
                   rvec: np.ndarray, P0: np.ndarray, delta: np.ndarray, mean: float):
    """The exact diffuse Kalman filter (Durbin & Koopman 2012, 5.2) of the integrated
    series ``u`` (not differenced), unit noise variance, one row at a time: the way to
    marginalise missing values when the model differences.

    Args:
        u: ``[N, T_max]``; lengths: ``[N]``; observed: ``[N, T_max]`` bool.
        ar, rvec, P0: the ARMA part (see :func:`arma_filter`); delta: from
            :func:`differencing_polynomial`; mean: the mean of the differenced series.

    Returns:
        ``(m, v, f, scored, diffuse_step, x_end, p_end, diffuse_end)``: predictive means
        ``m`` of each ``u_t`` given the observed values before it, the innovations ``v`` at
        observed steps and the finite parts ``f`` of their variances (all ``[N, T_max]``);
        ``scored`` True at the observed steps whose terms are proper densities (False at
        the steps that only resolve the diffuse values); ``diffuse_step`` True where the
        prediction has an infinite variance (observed or not); the predicted state after
        the last step ``x_end [N, S]``, its finite covariance ``p_end [N, S, S]`` and
        whether a diffuse direction remains (``diffuse_end [N]``: too few observed values).
        Without missing values the scored terms are the exact likelihood of the differenced
        series (tested).
    """
    tm, c, rr, z, p_inf = integrated_form(ar, rvec, delta, mean)
    size = tm.shape[0]
    r = len(ar)
    p_star = np.zeros((size, size))
    p_star[:r, :r] = P0
    n, t_max = u.shape
    m = np.zeros((n, t_max))
    v = np.zeros((n, t_max))
    f = np.ones((n, t_max))
    scored = np.zeros((n, t_max), dtype=np.bool_)
    diffuse_step = np.zeros((n, t_max), dtype=np.bool_)
    x_end = np.empty((n, size))
    p_end = np.empty((n, size, size))
    inf_end = np.zeros(n, dtype=np.bool_)
    u = np.ascontiguousarray(np.where(observed, u, 0.0))
    _diffuse_rows(u, np.ascontiguousarray(observed), np.ascontiguousarray(lengths, np.int64),
                  tm, c, rr, z, p_star, p_inf, float(mean), DIFFUSE_TOL, m, v, f, scored,
                  diffuse_step, x_end, p_end, inf_end)
    return m, v, f, scored, diffuse_step, x_end, p_end, inf_end


@dataclass
class SeriesFilter:
    """Output of :func:`filter_series`, indexed by the steps of the undifferenced series.

    Attributes:
        mean: ``[N, T_max]`` predictive means of each ``u_t`` given the observed values
            before it (only the scored steps, and the steps after the diffuse ones, are
            meaningful).
        innov: ``[N, T_max]`` innovations (0 where not observed).
        var: ``[N, T_max]`` their variances for unit noise variance.
        scored: ``[N, T_max]`` bool, the steps whose term is a proper density (observed,
            within the length, after the diffuse steps).
        diffuse_step: ``[N, T_max]`` bool, the steps whose prediction has an infinite
            variance.
        a_end, p_end: the predicted ARMA state after each complete row (``[N, r]``,
            ``[N, r, r]``; rows marginalised by the diffuse filter hold zeros).
        diffuse_rows: ``[N]`` bool, the rows run by the diffuse filter (with gaps and
            differencing); x_end ``[N, S]``, px_end ``[N, S, S]`` their integrated states,
            diffuse_end ``[N]`` True where a diffuse direction remains.
    """

    mean: np.ndarray
    innov: np.ndarray
    var: np.ndarray
    scored: np.ndarray
    diffuse_step: np.ndarray
    a_end: np.ndarray
    p_end: np.ndarray
    diffuse_rows: np.ndarray
    x_end: np.ndarray
    px_end: np.ndarray
    diffuse_end: np.ndarray


def filter_series(u: np.ndarray, lengths: np.ndarray, observed: np.ndarray | None,
                  delta: np.ndarray, ar: np.ndarray, rvec: np.ndarray, P0: np.ndarray,
                  mean: float) -> SeriesFilter:
    """The exact filter of ``(1 - B)^d (1 - B^s)^D u_t - mean ~ ARMA`` over a batch.

    Complete rows: the differenced series through :func:`arma_filter` (the first
    ``n_d = len(delta) - 1`` steps are not scored); rows with missing values: the ARMA filter
    itself when ``n_d = 0``, else :func:`diffuse_filter` on the integrated series.

    Args:
        u: ``[N, T_max]``; lengths ``[N]`` (each > n_d); observed ``[N, T_max]`` or None.
        delta, ar, rvec, P0, mean: the model (unit noise variance).
    """
    n, t_max = u.shape
    nd = len(delta) - 1
    r = len(ar)
    inside = np.arange(t_max)[None, :] < lengths[:, None]
    gaps = np.zeros(n, dtype=bool) if observed is None else (inside & ~observed).any(1)
    obs_full = inside if observed is None else inside & observed
    m = np.zeros((n, t_max))
    v = np.zeros((n, t_max))
    f = np.ones((n, t_max))
    scored = np.zeros((n, t_max), dtype=bool)
    diffuse_step = np.zeros((n, t_max), dtype=bool)
    diffuse_step[:, :nd] = True
    a_end = np.zeros((n, r))
    p_end = np.zeros((n, r, r))
    size = r + nd
    x_end = np.zeros((n, size))
    px_end = np.zeros((n, size, size))
    diffuse_end = np.zeros(n, dtype=bool)
    plain = ~gaps if nd else np.ones(n, dtype=bool)
    if plain.all():
        rows = slice(None)  # every row: views, not copies
    elif plain.any():
        rows = np.flatnonzero(plain)
    if plain.any():
        uu = u[rows] if observed is None else np.where(obs_full[rows], u[rows], 0.0)
        w = difference(uu, delta) - mean
        obs_w = None if not gaps[rows].any() else obs_full[rows][:, nd:]
        if obs_w is not None:
            w = np.where(obs_w, w, 0.0)
        mw, vw, fw, a_end[rows], p_end[rows] = arma_filter(w, lengths[rows] - nd, obs_w, ar,
                                                           rvec, P0)
        pred = mean + mw
        for k in range(1, nd + 1):
            if delta[k] != 0.0:
                pred -= delta[k] * uu[:, nd - k : t_max - k]
        m[rows, nd:] = pred
        v[rows, nd:] = vw
        f[rows, nd:] = np.where(fw > 0, fw, 1.0)
        scored[rows, nd:] = obs_full[rows, nd:]
    if not plain.all():
        rows = np.flatnonzero(~plain)
        (m[rows], v[rows], f[rows], scored[rows], diffuse_step[rows], x_end[rows],
         px_end[rows], diffuse_end[rows]) = diffuse_filter(
            u[rows], lengths[rows], obs_full[rows], ar, rvec, P0, delta, mean)
    return SeriesFilter(m, v, f, scored & obs_full, diffuse_step, a_end, p_end, ~plain, x_end,
                        px_end, diffuse_end)
