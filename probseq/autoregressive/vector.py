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
import torch
from scipy.linalg import solve_discrete_lyapunov

__all__ = [
    "companion",
    "spectral_radius",
    "stationary_mean",
    "initial_covariance",
    "log_prob_steps",
    "torch_log_prob_steps",
    "pacf_from_free",
    "stationary_from_pacf",
    "params_from_free",
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

    :func:`torch_log_prob_steps` on numpy arrays (one implementation of the likelihood,
    shared with the Pyro model); see it for the arguments.

    Returns:
        ``[N, T_max]`` float64, zero at padded steps.
    """
    return torch_log_prob_steps(*(torch.as_tensor(np.asarray(a)) for a in (
        values, lengths, intercept, coef, noise_chol, mean, initial_chol))).numpy()


def torch_log_prob_steps(
    values: torch.Tensor,
    lengths: torch.Tensor,
    intercept: torch.Tensor,
    coef: torch.Tensor,
    noise_chol: torch.Tensor,
    mean: torch.Tensor,
    initial_chol: torch.Tensor,
) -> torch.Tensor:
    """Exact per-step conditionals ``log p(y_t | y_1..y_{t-1})`` of a stationary VAR(p), in
    torch (differentiable in the parameters: the likelihood of ``pyro_model`` too).

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
    parts = []
    head = min(p, t_max)
    if head:
        chol = initial_chol[: head * d, : head * d]
        centred = (values[:, :head] - mean).reshape(n, head * d)
        z = torch.linalg.solve_triangular(chol, centred.T, upper=False).T
        terms = (-0.5 * _LOG_2PI - torch.log(torch.diagonal(chol))[None, :]
                 - 0.5 * z**2)
        parts.append(terms.reshape(n, head, d).sum(-1))
    if t_max > p:
        resid = values[:, p:] - intercept
        for lag in range(1, p + 1):
            resid = resid - values[:, p - lag : t_max - lag] @ coef[lag - 1].T
        w = torch.linalg.solve_triangular(noise_chol, resid.reshape(-1, d).T, upper=False).T
        logdet = torch.log(torch.diagonal(noise_chol)).sum()
        quad = (w**2).sum(-1).reshape(n, t_max - p)
        parts.append(-0.5 * d * _LOG_2PI - logdet - 0.5 * quad)
    out = torch.cat(parts, 1) if parts else values.new_zeros(n, 0)
    pad = torch.arange(t_max)[None, :] >= lengths[:, None]
    return torch.where(pad, torch.zeros((), dtype=out.dtype), out)


def pacf_from_free(free: torch.Tensor) -> torch.Tensor:
    """``[p, D, D]`` partial autocorrelation matrices with singular values below 1 from
    unconstrained ``[p, D, D]``: ``P = chol(I + B B^T)^{-1} B`` (a bijection onto that set:
    ``I - P P^T = L^{-1} L^{-T}`` with ``L = chol(I + B B^T)`` is positive definite).
    For D = 1, ``P = B / sqrt(1 + B^2)``."""
    d = free.shape[-1]
    eye = torch.eye(d, dtype=free.dtype)
    chol = torch.linalg.cholesky(eye + free @ free.transpose(-1, -2))
    return torch.linalg.solve_triangular(chol, free, upper=False)


def stationary_from_pacf(pacf: torch.Tensor, noise_cov: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The stationary VAR(p) with partial autocorrelations ``pacf`` and noise covariance
    ``noise_cov`` (Ansley and Kohn 1986; Heaps 2022), differentiable.

    Every ``pacf [p, D, D]`` whose matrices have singular values below 1, with any ``noise_cov
    [D, D]`` (SPD), gives a stationary VAR(p), and every stationary VAR(p) arises so. The
    multivariate Durbin-Levinson (Whittle) recursion is run on a process with ``Gamma(0) =
    I``: with ``Sigma_s``, ``Sigma*_s`` the forward and backward prediction error
    covariances (``S_s``, ``S*_s`` their Cholesky factors),
    ``phi_(s+1,s+1) = S_s P_(s+1) S*_s^{-1}``, ``phi*_(s+1,s+1) = S*_s P_(s+1)^T S_s^{-1}``,
    ``phi_(s+1,k) = phi_(s,k) - phi_(s+1,s+1) phi*_(s,s+1-k)`` (and symmetrically),
    ``Sigma_(s+1) = Sigma_s - phi_(s+1,s+1) Sigma*_s phi_(s+1,s+1)^T``, and the
    autocovariances ``Gamma(s+1) = sum_k phi_(s,k) Gamma(s+1-k) + phi_(s+1,s+1) Sigma*_s``.
    The process ``T y`` with ``T = chol(noise_cov) chol(Sigma_p)^{-1}`` then has noise
    covariance ``noise_cov``, coefficients ``T phi_(p,k) T^{-1}`` and autocovariances
    ``T Gamma(k) T^T``.

    Args:
        pacf: ``[p, D, D]`` (e.g. from :func:`pacf_from_free`).
        noise_cov: ``[D, D]``.

    Returns:
        ``(coef [p, D, D], initial_cov [p D, p D])``: the coefficients (lag 1 first) and the
        time-ordered stationary covariance of p consecutive vectors (as
        :func:`initial_covariance`).
    """
    p, d = pacf.shape[0], noise_cov.shape[0]
    eye = torch.eye(d, dtype=noise_cov.dtype)
    if p == 0:
        return noise_cov.new_zeros(0, d, d), noise_cov.new_zeros(0, 0)
    fwd_cov, bwd_cov = eye, eye
    fwd: list[torch.Tensor] = []
    bwd: list[torch.Tensor] = []
    gamma = [eye]
    for s in range(p):
        lf = torch.linalg.cholesky(fwd_cov)
        lb = torch.linalg.cholesky(bwd_cov)
        # phi = lf P lb^{-1}, phi* = lb P^T lf^{-1}
        phi = torch.linalg.solve_triangular(lb.T, (lf @ pacf[s]).T, upper=True).T
        phi_b = torch.linalg.solve_triangular(lf.T, (lb @ pacf[s].T).T, upper=True).T
        gamma.append(sum((fwd[k - 1] @ gamma[s + 1 - k] for k in range(1, s + 1)),
                         phi @ bwd_cov))
        fwd, bwd = ([fwd[k - 1] - phi @ bwd[s - k] for k in range(1, s + 1)] + [phi],
                    [bwd[k - 1] - phi_b @ fwd[s - k] for k in range(1, s + 1)] + [phi_b])
        fwd_cov, bwd_cov = (fwd_cov - phi @ bwd_cov @ phi.T,
                            bwd_cov - phi_b @ fwd_cov @ phi_b.T)
        fwd_cov = 0.5 * (fwd_cov + fwd_cov.T)
        bwd_cov = 0.5 * (bwd_cov + bwd_cov.T)
    # T = chol(noise_cov) chol(Sigma_p)^{-1}
    lp = torch.linalg.cholesky(fwd_cov)
    lt = torch.linalg.cholesky(noise_cov)
    tr = torch.linalg.solve_triangular(lp, lt, upper=False, left=False)
    tr_inv = torch.linalg.solve_triangular(lt, lp, upper=False, left=False)
    coef = torch.stack([tr @ a @ tr_inv for a in fwd])
    blocks = [[None] * p for _ in range(p)]
    for i in range(p):
        for j in range(p):
            g = tr @ gamma[abs(i - j)] @ tr.T
            blocks[i][j] = g if i >= j else g.T
    init = torch.cat([torch.cat(row, 1) for row in blocks], 0)
    return coef, 0.5 * (init + init.T)


def params_from_free(mean: torch.Tensor, pacf_free: torch.Tensor | None,
                     noise_scale: torch.Tensor, noise_corr_chol: torch.Tensor | None
                     ) -> dict[str, torch.Tensor]:
    """The VAR(p) of ``VectorAutoRegressive.pyro_model``'s sample sites, differentiable.

    Args:
        mean: ``[D]`` stationary mean.
        pacf_free: ``[p, D, D]`` unconstrained partial autocorrelations (None: p = 0).
        noise_scale: ``[D]`` noise standard deviations.
        noise_corr_chol: ``[D, D]`` Cholesky factor of the noise correlations (None: D = 1).

    Returns:
        ``intercept [D]``, ``coef [p, D, D]``, ``noise_cov [D, D]``, ``noise_chol [D, D]``
        and ``initial_chol [p D, p D]`` (of the stationary start).
    """
    d = mean.shape[0]
    corr = (torch.eye(d, dtype=mean.dtype) if noise_corr_chol is None
            else noise_corr_chol.to(mean.dtype))
    noise_chol = noise_scale[:, None] * corr
    noise_cov = noise_chol @ noise_chol.T
    if pacf_free is None:
        coef, init = mean.new_zeros(0, d, d), mean.new_zeros(0, 0)
    else:
        coef, init = stationary_from_pacf(pacf_from_free(pacf_free), noise_cov)
    intercept = (torch.eye(d, dtype=mean.dtype) - coef.sum(0)) @ mean
    return {"intercept": intercept, "coef": coef, "noise_cov": noise_cov,
            "noise_chol": noise_chol, "initial_chol": torch.linalg.cholesky(init)}


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
