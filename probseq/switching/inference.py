"""Markov-switching autoregressions as an HMM over windows of regimes: pure tensor functions.

Shape letters: N sequences, T steps (``T_max`` the longest), K regimes, D observation
dimension, p the autoregressive order. Everything is float64 and differentiable by autograd
(the gradient fit and the Pyro model run through these functions).

The emission of ``y_t`` depends on the regimes ``S_(t-p)..S_t`` (Hamilton's mean form) or,
in the first p steps, on ``S_1..S_t``. So the hidden chain of the forward pass is the window
``W_t = (S_(t-p), ..., S_t)`` of ``p + 1`` regimes, ``M = K^(p+1)`` states numbered in base K
with the oldest regime as the most significant digit (:func:`window_digits`). A window moves
to the window shifted by one regime, ``W_(t+1) = (S_(t-p+1), ..., S_t, S_(t+1))``, with
probability ``transition[S_t, S_(t+1)]`` (:func:`window_transition`). At ``t = 1`` the
regimes before the first step are not part of the model: they are drawn uniformly and never
used, so ``P(W_1) = initial[S_1] / K^p`` (:func:`window_start`).

Per window and step, ``y_t`` given ``y_<t`` is Gaussian (:func:`window_gaussians`):

* mean form (``form="mean"``), with ``u_t = y_t - mu[S_t]``::

      u_t = sum_i coef[S_t, i] u_(t-i) + e_t,     e_t ~ N(0, cov[S_t])      (t > p)
      u_1..u_p ~ the stationary distribution of that AR(p) with regime S_1's coefficients

  The regime means may move in time (``loc [N, T_max, K, D]``: covariates with
  regime-switching coefficients, ``mu[k] + x_t . beta[k]``); then
  ``u_t = y_t - loc[t, S_t]`` and the first p values have means ``loc[t, S_t]``.

* intercept form (``form="intercept"``, the AR-HMM of dynamax and ssm)::

      y_t = c[S_t] + sum_i coef[S_t, i] y_(t-i) + e_t                      (t > p)
      y_1..y_p ~ the stationary distribution of regime S_1's VAR(p)

The first p steps are scored by the block Cholesky factor ``L`` of the stationary covariance
of ``p`` consecutive values: with ``z = L^(-1) (y_(1:p) - m)``, ``y_t`` given ``y_<t`` has
mean ``m_t + sum_(s<t) L_ts z_s`` and Cholesky factor ``L_tt`` (``L`` is block lower
triangular, so a sequence shorter than p uses only its own block).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "window_digits",
    "window_transition",
    "window_start",
    "window_path_prior",
    "stationary_distribution",
    "companion_radius",
    "stationary_covariance",
    "pacf_to_coef",
    "window_gaussians",
    "gaussian_log_lik",
    "regime_marginals",
    "segment_joint",
    "segment_predictive",
    "gap_blocks",
    "draw_missing",
]

_LOG_2PI = math.log(2 * math.pi)


def window_digits(num_regimes: int, length: int) -> torch.Tensor:
    """``[K^length, length]`` int64: the regimes of every window, oldest first."""
    k = num_regimes
    m = k**length
    idx = torch.arange(m)
    powers = k ** torch.arange(length - 1, -1, -1)
    return (idx[:, None] // powers[None, :]) % k


def window_transition(transition: torch.Tensor, order: int) -> torch.Tensor:
    """``[M, M]`` transition between windows of ``order + 1`` regimes (rows: from).

    Args:
        transition: ``[K, K]`` regime transition (rows: from).
        order: p.
    """
    k = transition.shape[0]
    m = k ** (order + 1)
    w = torch.arange(m)
    last = w % k
    base = (w % (k**order)) * k  # the next window keeps the last p regimes
    out = torch.zeros(m, m, dtype=transition.dtype)
    cols = base[:, None] + torch.arange(k)[None, :]  # [M, K]
    return out.scatter(1, cols, transition[last])


def window_start(initial: torch.Tensor, order: int) -> torch.Tensor:
    """``[M]`` distribution of the first window: ``initial[S_1] / K^p``."""
    k = initial.shape[0]
    return initial.repeat(k**order) / k**order


def window_path_prior(initial: torch.Tensor, transition: torch.Tensor, order: int) -> torch.Tensor:
    """``[M]``: ``initial[S_1] prod_j transition[S_j, S_(j+1)]`` for windows ``(S_1..S_(p+1))``
    (the regimes of the first step that Hamilton's conditional likelihood scores)."""
    k = initial.shape[0]
    d = window_digits(k, order + 1)
    out = initial[d[:, 0]]
    for j in range(order):
        out = out * transition[d[:, j], d[:, j + 1]]
    return out


def stationary_distribution(transition: torch.Tensor) -> torch.Tensor:
    """``[K]`` the stationary distribution ``pi = pi A`` of a regime chain (least squares on
    ``[A^T - I; 1^T] pi = [0; 1]``, as statsmodels' steady-state initialisation)."""
    k = transition.shape[0]
    a = torch.cat([transition.T - torch.eye(k, dtype=transition.dtype),
                   torch.ones(1, k, dtype=transition.dtype)])
    b = torch.zeros(k + 1, 1, dtype=transition.dtype)
    b[-1] = 1.0
    pi = torch.linalg.pinv(a) @ b
    return pi[:, 0]


def _companion(coef: torch.Tensor) -> torch.Tensor:
    """``[..., pD, pD]`` companion matrices of ``coef [..., p, D, D]``."""
    *batch, p, d, _ = coef.shape
    top = torch.cat(list(coef.unbind(-3)), -1)  # [..., D, pD]
    if p == 1:
        return top
    eye = torch.eye((p - 1) * d, p * d, dtype=coef.dtype).expand(*batch, -1, -1)
    return torch.cat([top, eye], -2)


def companion_radius(coef: torch.Tensor) -> torch.Tensor:
    """``[...]`` spectral radius of the companion matrix of ``coef [..., p, D, D]`` (the
    autoregression is stationary when it is below 1)."""
    if coef.shape[-3] == 0:
        return torch.zeros(coef.shape[:-3], dtype=coef.dtype)
    return torch.linalg.eigvals(_companion(coef.detach())).abs().amax(-1)


def stationary_covariance(coef: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """``[..., pD, pD]`` stationary covariance of ``(y_1, ..., y_p)`` (oldest first) of a
    zero-mean VAR(p) with coefficients ``coef [..., p, D, D]`` and noise ``cov [..., D, D]``.

    Solves the discrete Lyapunov equation ``X = F X F^T + Q`` of the companion form as the
    linear system ``(I - F kron F) vec X = vec Q``.
    """
    *batch, p, d, _ = coef.shape
    f = _companion(coef)
    n = p * d
    q = torch.zeros(*batch, n, n, dtype=coef.dtype)
    q[..., :d, :d] = cov
    kron = (f[..., :, None, :, None] * f[..., None, :, None, :]).reshape(*batch, n * n, n * n)
    system = torch.eye(n * n, dtype=coef.dtype) - kron
    x = torch.linalg.solve(system, q.reshape(*batch, n * n, 1)).reshape(*batch, n, n)
    x = 0.5 * (x + x.transpose(-1, -2))
    # The companion state is (y_t, ..., y_(t-p+1)): reverse the blocks to put the oldest first.
    rev = torch.arange(p - 1, -1, -1)
    x = x.reshape(*batch, p, d, p, d)[..., rev, :, :, :][..., rev, :]
    return x.reshape(*batch, n, n)


def pacf_to_coef(pacf: torch.Tensor) -> torch.Tensor:
    """``[..., p]`` AR coefficients from partial autocorrelations in ``(-1, 1)`` (the
    Durbin-Levinson recursion; Barndorff-Nielsen and Schou 1973): every such vector gives a
    stationary AR(p), and every stationary AR(p) arises once."""
    p = pacf.shape[-1]
    phi = pacf[..., :0]
    for j in range(p):
        r = pacf[..., j : j + 1]
        phi = torch.cat([phi - r * phi.flip(-1), r], -1)
    return phi


def window_gaussians(
    values: torch.Tensor,
    form: str,
    loc: torch.Tensor,
    coef: torch.Tensor,
    cov: torch.Tensor,
    head: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian of ``y_t`` given ``y_<t`` and each window of regimes.

    Args:
        values: ``[N, T_max, D]`` (padding may hold anything finite).
        form: ``"mean"`` or ``"intercept"``.
        loc: ``[K, D]`` regime means (mean form) or intercepts; the mean form also takes
            time-varying means ``[N, T_max, K, D]`` (covariates with switching coefficients).
        coef: ``[K, p, D, D]`` coefficients, lag 1 first (``y_t`` gets ``coef[k, i] y_(t-i-1)``).
        cov: ``[K, D, D]`` noise covariances.
        head: True scores the first p steps from the stationary start; False returns the
            steps after the first p only (Hamilton's conditional likelihood).

    Returns:
        ``(mean [N, T', M, D], scale_tril [T', M, D, D])`` with ``T' = T_max`` (head) or
        ``T_max - p``, ``M = K^(p+1)``.
    """
    n, t_max, d = values.shape
    k, p = coef.shape[0], coef.shape[1]
    dig = window_digits(k, p + 1)
    cur = dig[:, p]
    means, trils = [], []
    moving = loc.dim() == 4  # time-varying means [N, T_max, K, D] (mean form)
    if moving and form != "mean":
        raise ValueError("time-varying regime locations are defined for the mean form only")
    if t_max > p:
        y = values[:, p:]  # [N, T-p, D]
        lags = [values[:, p - i : t_max - i] for i in range(1, p + 1)]
        a = coef[cur]  # [M, p, D, D]
        if form == "mean" and moving:
            mean = loc[:, p:, cur]  # [N, T-p, M, D]
            for i in range(1, p + 1):
                centred = lags[i - 1][:, :, None, :] - loc[:, p - i : t_max - i, dig[:, p - i]]
                mean = mean + torch.einsum("mde,ntme->ntmd", a[:, i - 1], centred)
        elif form == "mean":
            mean = loc[cur][None, None].expand(n, t_max - p, -1, -1)
            for i in range(1, p + 1):
                centred = lags[i - 1][:, :, None, :] - loc[dig[:, p - i]][None, None]
                mean = mean + torch.einsum("mde,ntme->ntmd", a[:, i - 1], centred)
        else:
            mean = loc[cur][None, None].expand(n, t_max - p, -1, -1)
            for i in range(1, p + 1):
                mean = mean + torch.einsum("mde,nte->ntmd", a[:, i - 1], lags[i - 1])
        chol = torch.linalg.cholesky(cov)[cur]  # [M, D, D]
        means.append(mean)
        trils.append(chol[None].expand(y.shape[1], -1, -1, -1))
        del y
    if head and p > 0:
        h = min(p, t_max)
        pad = values[:, :h]
        if h < p:  # the factor is lower triangular: later entries never reach earlier steps
            pad = torch.cat([pad, torch.zeros(n, p - h, d, dtype=values.dtype)], 1)
        gamma = stationary_covariance(coef, cov)  # [K, pD, pD]
        lh = torch.linalg.cholesky(gamma)
        paths = window_digits(k, p)  # [P, p]: S_1..S_p
        first = paths[:, 0]
        if form == "mean" and moving:
            m = torch.zeros(n, paths.shape[0], p, d, dtype=values.dtype)  # [N, P, p, D]
            m[:, :, :h] = loc[:, torch.arange(h)[None, :], paths[:, :h]]
        elif form == "mean":
            m = loc[paths][None]  # [1, P, p, D]
        else:
            eye = torch.eye(d, dtype=coef.dtype)
            level = torch.linalg.solve(eye - coef.sum(1), loc[..., None])[..., 0]  # [K, D]
            m = level[first][None, :, None, :].expand(-1, -1, p, -1)
        u = (pad[:, None] - m).reshape(n, -1, p * d)  # [N, P, pD]
        lp = lh[first]  # [P, pD, pD]
        z = torch.linalg.solve_triangular(lp, u[..., None], upper=False)[..., 0]
        blocks = lp.reshape(-1, p, d, p, d)
        z_blocks = z.reshape(n, -1, p, d)
        diag = torch.stack([blocks[:, t, :, t, :] for t in range(p)], 1)  # [P, p, D, D]
        own = torch.einsum("qtde,nqte->nqtd", diag, z_blocks)
        head_mean = pad[:, None] - own  # [N, P, p, D]: m_t + sum_(s<t) L_ts z_s
        # The window at step t (0-based) holds S_(t+1-p)..S_(t+1); S_1..S_(t+1) are its last
        # t + 1 regimes, and the path of S_1..S_p they index has zeros after them.
        hm, ht = [], []
        for t in range(h):
            known = dig[:, p - t :]  # [M, t + 1]
            powers = k ** torch.arange(p - 1, p - t - 2, -1)
            path = (known * powers[None, :]).sum(-1)  # [M]
            hm.append(head_mean[:, path, t])
            ht.append(diag[path, t])
        means.insert(0, torch.stack(hm, 1))
        trils.insert(0, torch.stack(ht, 0))
    if not means:
        return (torch.zeros(n, 0, k ** (p + 1), d, dtype=values.dtype),
                torch.zeros(0, k ** (p + 1), d, d, dtype=values.dtype))
    return torch.cat(means, 1), torch.cat(trils, 0)


def gaussian_log_lik(values: torch.Tensor, mean: torch.Tensor,
                     scale_tril: torch.Tensor) -> torch.Tensor:
    """``[N, T', M]`` log densities of ``values [N, T', D]`` under ``N(mean [N, T', M, D],
    L L^T)`` with ``L = scale_tril [T', M, D, D]``."""
    d = values.shape[-1]
    resid = values[:, :, None, :] - mean
    if d == 1:
        sd = scale_tril[..., 0, 0]
        z2 = (resid[..., 0] / sd) ** 2
        logdet = torch.log(sd)
    else:
        inv = torch.linalg.solve_triangular(
            scale_tril, torch.eye(d, dtype=values.dtype).expand_as(scale_tril), upper=False)
        z2 = torch.einsum("tmde,ntme->ntmd", inv, resid).pow(2).sum(-1)
        logdet = torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * d * _LOG_2PI - logdet - 0.5 * z2


def regime_marginals(window_probs: torch.Tensor, num_regimes: int) -> torch.Tensor:
    """``[..., K]`` the current regime's probabilities from window probabilities ``[..., M]``
    (the current regime is the least significant digit)."""
    m = window_probs.shape[-1]
    return window_probs.reshape(*window_probs.shape[:-1], m // num_regimes,
                                num_regimes).sum(-2)


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def segment_joint(
    values: torch.Tensor,
    regimes: torch.Tensor,
    form: str,
    loc: torch.Tensor,
    coef: torch.Tensor,
    cov: torch.Tensor,
    start: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint Gaussian of a segment's values after its anchor, for each path of regimes.

    Given the regimes, the values are jointly Gaussian. The segment begins either at the
    first step (``start``: its first ``min(p, S)`` values from the stationary start) or with
    p fully observed values (an anchor: by the Markov property of the AR given the regimes,
    nothing before them matters). The free positions are the segment's last ``F = S`` (start)
    or ``F = S - p`` values; they are ``Phi^(-1) (b + e)`` with ``Phi`` unit lower
    triangular (the AR recursion), ``b`` the part fixed by the anchor and the intercepts, and
    ``e`` Gaussian noise of block-diagonal covariance (the stationary block at the start).

    Args:
        values: ``[..., S, D]`` segments of one length (entries after the anchor are not
            read); only the mean depends on them.
        regimes: ``[W, S]`` int64 regime paths over the segment.
        form, loc, coef, cov: as in :func:`window_gaussians`; time-varying means are the
            segments' own, ``loc [..., S, K, D]``.
        start: the segment begins at the first step.

    Returns:
        ``(mean [..., W, F * D], cov [W, F * D, F * D])``, positions in time order.
    """
    *batch, s_len, d = values.shape
    w = regimes.shape[0]
    p = coef.shape[1]
    anchor = 0 if start else p
    f = s_len - anchor
    dt = values.dtype
    mu = None
    if form == "mean" and loc.dim() > 2:  # [..., S, K, D] -> [..., W, S, D]
        mu = loc[..., torch.arange(s_len)[None, :], regimes, :]
    elif form == "mean":
        mu = loc[regimes]  # [W, S, D]
    x_known = values[..., None, :anchor, :]  # [..., 1, anchor, D]
    if form == "mean" and anchor:
        x_known = x_known - mu[..., :anchor, :]  # [..., W, anchor, D]
    phi = torch.eye(f * d, dtype=dt).repeat(w, 1, 1)
    b = torch.zeros(*batch, w, f * d, dtype=dt)
    q = torch.zeros(w, f * d, f * d, dtype=dt)
    h = min(p, f) if start else 0
    if h:
        first = regimes[:, 0]
        gamma = stationary_covariance(coef, cov)[first][:, : h * d, : h * d]
        q[:, : h * d, : h * d] = gamma
        if form == "intercept":
            eye = torch.eye(d, dtype=dt)
            level = torch.linalg.solve(eye - coef.sum(1), loc[..., None])[..., 0]  # [K, D]
            b[..., : h * d] = b[..., : h * d] + level[first].repeat(1, h)
    for j in range(h, f):
        r = regimes[:, anchor + j]
        rows = slice(j * d, (j + 1) * d)
        q[:, rows, rows] = cov[r]
        if form == "intercept":
            b[..., rows] = b[..., rows] + loc[r]
        for i in range(1, p + 1):
            a = coef[r, i - 1]  # [W, D, D]
            if j - i >= 0:
                phi[:, rows, (j - i) * d : (j - i + 1) * d] = -a
            else:
                lag = x_known[..., anchor + j - i, :]  # [..., W or 1, D]
                b[..., rows] = b[..., rows] + (a @ lag[..., None])[..., 0]
    mean = torch.linalg.solve_triangular(phi, b[..., None], upper=False,
                                         unitriangular=True)[..., 0]
    inv = torch.linalg.solve_triangular(phi, torch.eye(f * d, dtype=dt).expand_as(phi),
                                        upper=False, unitriangular=True)
    full = inv @ q @ inv.transpose(-1, -2)
    if form == "mean":
        mean = mean + mu[..., anchor:, :].reshape(*mu.shape[:-2], f * d)
    return mean, 0.5 * (full + full.transpose(-1, -2))


def segment_predictive(
    values: torch.Tensor,
    observed: torch.Tensor,
    regimes: torch.Tensor,
    form: str,
    loc: torch.Tensor,
    coef: torch.Tensor,
    cov: torch.Tensor,
    start: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian of the last value of a segment given its observed coordinates before it,
    for each path of regimes over the segment (exact marginalisation of missing values).

    The segment is as in :func:`segment_joint`; segments of one length and one pattern of
    observed entries are computed together (the covariance is shared).

    Args:
        values: ``[..., S, D]`` the segments (missing entries anything finite).
        observed: ``[S, D]`` bool, shared by the segments.
        regimes: ``[W, S]`` int64 regime paths over the segment.
        form, loc, coef, cov: as in :func:`window_gaussians`.
        start: the segment begins at the first step.

    Returns:
        ``(mean [..., W, D], cov [W, D, D])`` of the last value.
    """
    s_len, d = values.shape[-2:]
    anchor = 0 if start else coef.shape[1]
    f = s_len - anchor
    mean, full = segment_joint(values, regimes, form, loc, coef, cov, start)
    last = slice((f - 1) * d, f * d)
    cond = observed[anchor:-1].reshape(-1)
    m_t, c_t = mean[..., last], full[:, last, last]
    if bool(cond.any()):
        idx = torch.nonzero(cond)[:, 0]
        c_oo = full[:, idx][:, :, idx]
        c_to = full[:, last][:, :, idx]
        y_o = values[..., anchor:-1, :].reshape(*values.shape[:-2], -1)[..., idx]
        gain = torch.linalg.solve(c_oo, c_to.transpose(-1, -2)).transpose(-1, -2)  # [W, D, O]
        m_t = m_t + (gain @ (y_o[..., None, :] - mean[..., idx])[..., None])[..., 0]
        c_t = c_t - gain @ c_to.transpose(-1, -2)
    return m_t, 0.5 * (c_t + c_t.transpose(-1, -2))


def gap_blocks(step_observed: list[bool], order: int) -> list[tuple[int, int, bool]]:
    """The blocks of a sequence that hold its missing values, independent given the regimes.

    A block runs from an anchor (the latest p fully observed steps before its first missing
    step, or the first step when there are none) to the end of the first run of p fully
    observed steps after its last missing step (or the last step). Given the regimes, the
    values of a block depend on the rest of the sequence only through its anchor (the AR is
    Markov of order p in the values), so its missing values can be drawn block by block.

    Args:
        step_observed: ``[T]`` whether each step is fully observed.
        order: p.

    Returns:
        ``(first, last, start)`` per block: its first and last step (inclusive) and whether it
        begins at the first step (no anchor).
    """
    p, f = order, step_observed
    t_len = len(f)
    out: list[tuple[int, int, bool]] = []
    t = 0
    while t < t_len:
        if f[t]:
            t += 1
            continue
        if p == 0:  # given the regimes, every value is independent of the others
            out.append((t, t, True))
            t += 1
            continue
        first = t - p
        start = first < 0 or not all(f[first:t])
        if start:
            first = 0
        run, last = 0, t
        for u in range(t + 1, t_len):
            if f[u]:
                run += 1
                if run == p:
                    break
            else:
                run, last = 0, u
        end = min(last + p, t_len - 1)
        out.append((first, end, start))
        t = end + 1
    return out


def draw_missing(
    values: torch.Tensor,
    observed: torch.Tensor,
    regimes: torch.Tensor,
    form: str,
    loc: torch.Tensor,
    coef: torch.Tensor,
    cov: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draws of the missing values of one sequence given its observed values and, per draw, a
    path of regimes: the Gaussian of each block of :func:`gap_blocks` conditioned on its
    observed entries.

    Args:
        values: ``[T, D]`` (missing entries anything finite).
        observed: ``[T, D]`` bool.
        regimes: ``[W, T]`` int64 regime paths, one per draw.
        form, loc, coef, cov: as in :func:`window_gaussians`; time-varying means are this
            sequence's, ``loc [T, K, D]``.
        generator: the random source (None: torch's global one).

    Returns:
        ``[W, T, D]``: ``values`` with the missing entries drawn.
    """
    t_len, d = values.shape
    w, p = regimes.shape[0], coef.shape[1]
    out = values[None].expand(w, -1, -1).clone()
    full = observed.all(-1).tolist()
    for first, last, start in gap_blocks(full, p):
        seg = values[first : last + 1]
        # The Gaussians of the distinct regime paths over the block (at most K^length).
        paths, which = torch.unique(regimes[:, first : last + 1], dim=0, return_inverse=True)
        seg_loc = loc[first : last + 1] if loc.dim() > 2 else loc
        mean, big = segment_joint(seg, paths, form, seg_loc, coef, cov, start)
        anchor = 0 if start else p
        obs = observed[first + anchor : last + 1].reshape(-1)
        idx_o, idx_m = torch.nonzero(obs)[:, 0], torch.nonzero(~obs)[:, 0]
        m, c = mean[:, idx_m], big[:, idx_m][:, :, idx_m]
        if idx_o.numel():
            c_mo = big[:, idx_m][:, :, idx_o]
            gain = torch.linalg.solve(big[:, idx_o][:, :, idx_o],
                                      c_mo.transpose(-1, -2)).transpose(-1, -2)
            y_o = seg[anchor:].reshape(-1)[idx_o]
            m = m + (gain @ (y_o - mean[:, idx_o])[..., None])[..., 0]
            c = c - gain @ c_mo.transpose(-1, -2)
        chol = torch.linalg.cholesky(0.5 * (c + c.transpose(-1, -2)))
        z = torch.randn(w, idx_m.numel(), 1, dtype=values.dtype, generator=generator)
        draw = m[which] + (chol[which] @ z)[..., 0]
        block = out[:, first + anchor : last + 1].reshape(w, -1)
        block[:, idx_m] = draw
        out[:, first + anchor : last + 1] = block.reshape(w, -1, d)
    return out
