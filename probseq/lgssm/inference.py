"""Kalman filter, RTS smoother and forecasts for linear-Gaussian state-space models.

Pure tensor functions; no model objects. The model is

    z_0 ~ N(initial_mean, initial_cov)          (the state AT the first observation)
    z_t = A z_(t-1) + w_t,   w_t ~ N(0, Q)      (t >= 1)
    x_t = C z_t + v_t,       v_t ~ N(0, R)

with shapes ``initial_mean [S]``, ``initial_cov [S, S]``, ``A [S, S]``, ``Q [S, S]``,
``C [D, S]``, ``R [D, D]`` and data ``y [N, T, D]``. Everything is float64.

Two facts make the batched filter cheap:

* The covariance recursion (predicted covariance ``P_t``, innovation covariance ``F_t``,
  gain ``K_t``) does not depend on the data, and every sequence starts from the same prior at
  its first observation, so it is computed once for the whole batch, not per sequence.
  :func:`riccati` runs it in Joseph form with symmetrisation. Once ``P_(t+1)`` equals ``P_t``
  to within ``steady_tol`` (relative, a few units in the last place by default) the filter has
  reached the Riccati fixed point in floating point and every later step uses the same
  matrices, so the recursion stops there (the *steady-state shortcut*); ``steady_tol=None``
  runs the plain recursion for every step.
* Given the gains, the filtered mean is an affine recurrence ``m_t = L_t m_(t-1) + u_t``
  with ``L_t = (I - K_t C) A`` and ``u_t = K_t y_t``. The transient part is a short time loop
  over ``[N, S]`` tensors; the steady part has constant ``L`` and is applied without a Python
  loop per step (a doubling scan, or ``scipy.signal.lfilter`` when S = 1 and no gradient is
  needed).

Ragged batches: padded steps come after the real ones and the recursion is causal, so the
results at real steps never depend on padding; callers mask what lies past each length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CovarianceSequence",
    "FilterResult",
    "riccati",
    "filtered_means",
    "kalman_filter",
    "diffuse_kalman_filter",
    "diffuse_located",
    "DIFFUSE_TOL",
    "diffuse_smoother",
    "rts_smoother",
    "em_m_step",
    "forecast_moments",
    "linear_recurrence",
]

_LOG_2PI = math.log(2.0 * math.pi)
#: relative change of the predicted covariance under which the filter counts as steady.
DEFAULT_STEADY_TOL = 1e-14


@dataclass
class CovarianceSequence:
    """The data-independent half of the Kalman filter, shared by every sequence.

    Step ``t`` uses entry ``min(t, U - 1)`` (see :meth:`index`): when the recursion converged
    the last entry holds for every later step.

    Attributes:
        pred_cov: ``[U, S, S]`` predicted state covariances ``P_(t|t-1)``.
        filt_cov: ``[U, S, S]`` filtered state covariances ``P_(t|t)``.
        innov_cov: ``[U, D, D]`` innovation covariances ``F_t = C P_(t|t-1) C' + R``.
        gain: ``[U, S, D]`` Kalman gains ``K_t``.
        steady: True when the recursion reached its fixed point at entry ``U - 1``.
        num_diffuse: d, the exact diffuse steps at the start (0 for a proper prior). At those
            steps ``pred_cov``/``filt_cov``/``innov_cov`` hold the finite parts ``P_*`` and
            ``F_*`` (Durbin & Koopman's notation), ``pred_cov_inf``/``filt_cov_inf``
            ``[d, S, S]`` the diffuse parts ``P_inf`` (the covariance is ``P_* + kappa P_inf``
            with kappa -> inf) and ``gain`` the filtered gain of the step.
    """

    pred_cov: torch.Tensor
    filt_cov: torch.Tensor
    innov_cov: torch.Tensor
    gain: torch.Tensor
    steady: bool
    num_diffuse: int = 0
    pred_cov_inf: torch.Tensor | None = None
    filt_cov_inf: torch.Tensor | None = None

    @property
    def num_unique(self) -> int:
        return self.pred_cov.shape[0]

    def index(self, num_steps: int) -> torch.Tensor:
        """``[T]`` int64: the entry that step ``t`` uses."""
        return torch.arange(num_steps).clamp(max=self.num_unique - 1)

    def per_step(self, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        """``x[index(T)]`` for ``x [U, ...]``, built without a gather (slow on CPU)."""
        U = self.num_unique
        if num_steps <= U:
            return x[:num_steps]
        return torch.cat([x[: U - 1], x[U - 1 :].expand(num_steps - U + 1, *x.shape[1:])])


@dataclass
class FilterResult:
    """Output of :func:`kalman_filter`.

    Attributes:
        log_prob_steps: ``[N, T]`` ``log N(x_t; C m_(t|t-1), F_t)`` (not masked).
        filt_mean: ``[N, T, S]`` filtered means ``E[z_t | x_0..x_t]``.
        pred_mean: ``[N, T, S]`` predicted means ``E[z_t | x_0..x_(t-1)]``.
        covs: the shared :class:`CovarianceSequence`.
    """

    log_prob_steps: torch.Tensor
    filt_mean: torch.Tensor
    pred_mean: torch.Tensor
    covs: CovarianceSequence


def _times(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``x @ M.T`` over the last axis; a plain product when M is 1 x 1 (much faster)."""
    if M.shape == (1, 1):
        return x * M[0, 0]
    return x @ M.T


def _sym(m: torch.Tensor) -> torch.Tensor:
    return 0.5 * (m + m.transpose(-1, -2))


def riccati(
    initial_cov: torch.Tensor,
    A: torch.Tensor,
    Q: torch.Tensor,
    C: torch.Tensor,
    R: torch.Tensor,
    num_steps: int,
    steady_tol: float | None = DEFAULT_STEADY_TOL,
    observed: torch.Tensor | None = None,
) -> CovarianceSequence:
    """The covariance recursion of the Kalman filter (Joseph form, symmetrised).

    Differentiable (torch autograd) in every input. Uses plain Python floats when D = 1,
    S <= 2 and no gradient is needed (NumPy for S <= 8), which removes the per-step tensor
    overhead.

    Missing values (``observed``): a step with nothing observed skips the update (gain 0,
    ``P_(t|t) = P_(t|t-1)``; its ``innov_cov`` is a placeholder 1); a partially observed
    step updates on its observed coordinates only (the missing rows of C are zeroed and
    their block of R replaced by the identity, which leaves the update and the density of
    the observed coordinates exact). The steady-state shortcut is only taken after the last
    gap.

    Args:
        initial_cov: ``[S, S]`` covariance of the state at the first observation.
        A, Q: ``[S, S]`` transition matrix and noise covariance.
        C: ``[D, S]`` observation matrix; R: ``[D, D]`` observation noise covariance.
        num_steps: T.
        steady_tol: stop once every entry satisfies ``|P_(t+1) - P_t|_ij <= steady_tol *
            d_i d_j`` with ``d_i`` the larger of the two standard deviations of state i (a
            scale-free test: each entry is judged on its own scale); None runs every step.
        observed: ``[T]`` (D = 1) or ``[T, D]`` bool, the observation pattern shared by the
            sequences filtered together; None: everything observed.
    """
    S, D = A.shape[0], C.shape[0]
    obs = None
    after = 0  # the shortcut may be taken from this step on (after the last gap)
    if observed is not None:
        obs = observed.reshape(observed.shape[0], -1)[:num_steps]
        gaps = torch.nonzero(~obs.all(-1))
        after = int(gaps[-1, 0]) + 1 if len(gaps) else 0
        if not len(gaps):
            obs = None
    obs1 = None if obs is None else obs[:, 0].tolist() if D == 1 else None
    needs_grad = torch.is_grad_enabled() and any(
        x.requires_grad for x in (initial_cov, A, Q, C, R)
    )
    if S == 1 and D == 1 and not needs_grad:
        return _riccati_scalar(
            float(initial_cov), float(A), float(Q), float(C), float(R), num_steps, steady_tol,
            obs1, after,
        )
    if D == 1 and S == 2 and not needs_grad:
        return _riccati_two(initial_cov.tolist(), A.tolist(), Q.tolist(), C[0].tolist(),
                            float(R), num_steps, steady_tol, obs1, after)
    if D == 1 and S <= _SMALL_STATE and not needs_grad:
        return _riccati_small(initial_cov.numpy(), A.numpy(), Q.numpy(), C.numpy()[0],
                              float(R), num_steps, steady_tol, obs1, after)
    eye = torch.eye(S, dtype=A.dtype)
    At, Ct = A.T, C.T
    P = _sym(initial_cov)
    preds, filts, innovs, gains = [], [], [], []
    steady = False
    for t in range(num_steps):
        Ce, Re, Cte = C, R, Ct
        if obs is not None and not bool(obs[t].all()):
            o = obs[t].to(A.dtype)
            Ce = C * o[:, None]
            Re = R * torch.outer(o, o) + torch.diag(1.0 - o)
            Cte = Ce.T
        PCt = P @ Cte
        F = _sym(Ce @ PCt + Re)
        K = PCt / F if D == 1 else torch.linalg.solve(F, PCt.T).T
        IKC = eye - K @ Ce
        Pf = _sym(IKC @ P @ IKC.T + K @ Re @ K.T)
        preds.append(P)
        filts.append(Pf)
        innovs.append(F)
        gains.append(K)
        if t == num_steps - 1:
            break
        P_next = _sym(A @ Pf @ At + Q)
        if (steady_tol is not None and t >= after
                and _converged(P.detach(), P_next.detach(), steady_tol)):
            steady = True
            break
        P = P_next
    return CovarianceSequence(
        torch.stack(preds), torch.stack(filts), torch.stack(innovs), torch.stack(gains), steady
    )


#: D = 1 models with at most this many states run the covariance recursion in NumPy when no
#: gradient is needed (a few microseconds a step instead of tens with torch's small ops).
_SMALL_STATE = 32


def _riccati_small(P: np.ndarray, A: np.ndarray, Q: np.ndarray, c: np.ndarray, r: float,
                   num_steps: int, steady_tol: float | None, obs: list | None = None,
                   after: int = 0) -> CovarianceSequence:
    """:func:`riccati` for D = 1 in NumPy: the same Joseph-form operations, same test."""
    S = A.shape[0]
    eye = np.eye(S)
    P = 0.5 * (P + P.T)
    preds, filts, innovs, gains = [], [], [], []
    steady = False
    At = A.T
    for t in range(num_steps):
        if obs is not None and not obs[t]:
            f, k, Pf = 1.0, np.zeros(S), P
        else:
            Pc = P @ c
            f = float(c @ Pc) + r
            k = Pc / f
            ikc = eye - np.outer(k, c)
            Pf = ikc @ P @ ikc.T + r * np.outer(k, k)
            Pf = 0.5 * (Pf + Pf.T)
        preds.append(P)
        filts.append(Pf)
        innovs.append(f)
        gains.append(k)
        if t == num_steps - 1:
            break
        P_next = A @ Pf @ At + Q
        P_next = 0.5 * (P_next + P_next.T)
        if steady_tol is not None and t >= after:
            dg = np.sqrt(np.maximum(np.maximum(np.diagonal(P), np.diagonal(P_next)), 0.0))
            if (np.abs(P_next - P) <= steady_tol * np.outer(dg, dg)).all():
                steady = True
                break
        P = P_next
    return CovarianceSequence(
        torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(filts)),
        torch.tensor(innovs, dtype=torch.float64).reshape(-1, 1, 1),
        torch.from_numpy(np.stack(gains)).unsqueeze(-1), steady,
    )


def _riccati_two(P: list, A: list, Q: list, c: list, r: float, num_steps: int,
                 steady_tol: float | None, obs: list | None = None,
                 after: int = 0, raw: bool = False):
    """:func:`riccati` for S = 2, D = 1 in Python floats (the local linear trend): the
    Joseph-form update written out, ``Pf = P - k Pc' - Pc k' + f k k'``, and the same
    scale-free steady-state test."""
    (a00, a01), (a10, a11) = A
    q00, q01, q11 = Q[0][0], 0.5 * (Q[0][1] + Q[1][0]), Q[1][1]
    c0, c1 = c
    p00, p01, p11 = P[0][0], 0.5 * (P[0][1] + P[1][0]), P[1][1]
    preds, filts, innovs, gains = [], [], [], []
    steady = False
    for t in range(num_steps):
        if obs is not None and not obs[t]:
            f, k0, k1, f00, f01, f11 = 1.0, 0.0, 0.0, p00, p01, p11
        else:
            g0 = p00 * c0 + p01 * c1
            g1 = p01 * c0 + p11 * c1
            f = c0 * g0 + c1 * g1 + r
            k0, k1 = g0 / f, g1 / f
            f00 = p00 - 2.0 * k0 * g0 + f * k0 * k0
            f01 = p01 - k0 * g1 - g0 * k1 + f * k0 * k1
            f11 = p11 - 2.0 * k1 * g1 + f * k1 * k1
        preds.append(((p00, p01), (p01, p11)))
        filts.append(((f00, f01), (f01, f11)))
        innovs.append(f)
        gains.append((k0, k1))
        if t == num_steps - 1:
            break
        b00, b01 = a00 * f00 + a01 * f01, a00 * f01 + a01 * f11
        b10, b11 = a10 * f00 + a11 * f01, a10 * f01 + a11 * f11
        n00 = b00 * a00 + b01 * a01 + q00
        n01 = b00 * a10 + b01 * a11 + q01
        n11 = b10 * a10 + b11 * a11 + q11
        if steady_tol is not None and t >= after:
            d0 = math.sqrt(max(p00, n00, 0.0))
            d1 = math.sqrt(max(p11, n11, 0.0))
            if (abs(n00 - p00) <= steady_tol * d0 * d0
                    and abs(n01 - p01) <= steady_tol * d0 * d1
                    and abs(n11 - p11) <= steady_tol * d1 * d1):
                steady = True
                break
        p00, p01, p11 = n00, n01, n11
    if raw:  # (innovation variances, gains, steady) as lists, for the float profile
        return innovs, gains, steady
    f64 = torch.float64
    return CovarianceSequence(
        torch.tensor(preds, dtype=f64), torch.tensor(filts, dtype=f64),
        torch.tensor(innovs, dtype=f64).reshape(-1, 1, 1),
        torch.tensor(gains, dtype=f64).unsqueeze(-1), steady,
    )


def _converged(P: torch.Tensor, P_next: torch.Tensor, tol: float) -> bool:
    """Scale-free fixed-point test: every entry's change is small relative to its own scale.

    ``|P_next[i, j] - P[i, j]| <= tol * d_i * d_j`` with ``d_i = sqrt(max(P[i, i],
    P_next[i, i]))`` (the correlation scale of the entry), so a state with variance 1e-4 is
    judged on its own scale and not against one with variance 1e12. Entries of a state with
    zero variance must not change at all.
    """
    d = torch.maximum(torch.diagonal(P), torch.diagonal(P_next)).clamp(min=0).sqrt()
    return bool(((P_next - P).abs() <= tol * torch.outer(d, d)).all())


def _riccati_scalar(
    p: float, a: float, q: float, c: float, r: float, num_steps: int, steady_tol: float | None,
    obs: list | None = None, after: int = 0, raw: bool = False,
):
    """:func:`riccati` for S = D = 1 in Python floats (same operations, no tensor overhead);
    ``raw`` returns ``(innovation variances, gains, steady)`` as lists."""
    preds, filts, innovs, gains = [], [], [], []
    steady = False
    for t in range(num_steps):
        if obs is not None and not obs[t]:
            f, k, pf = 1.0, 0.0, p
        else:
            f = c * p * c + r
            k = p * c / f
            ikc = 1.0 - k * c
            pf = ikc * p * ikc + k * r * k
        preds.append(p)
        filts.append(pf)
        innovs.append(f)
        gains.append(k)
        if t == num_steps - 1:
            break
        p_next = a * pf * a + q
        if (steady_tol is not None and t >= after
                and abs(p_next - p) <= steady_tol * max(abs(p), abs(p_next))):
            steady = True
            break
        p = p_next
    if raw:
        return innovs, [(k,) for k in gains], steady

    def col(v: list[float]) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float64).reshape(-1, 1, 1)

    return CovarianceSequence(col(preds), col(filts), col(innovs), col(gains), steady)


def linear_recurrence(u: torch.Tensor, L: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Solve ``m_t = L m_(t-1) + u_t`` for a constant ``L`` without a per-step loop.

    A doubling (Hillis-Steele) scan: ``ceil(log2 T)`` batched matrix products.

    Args:
        u: ``[N, T, S]`` inputs.
        L: ``[S, S]``.
        start: ``[N, S]`` the value ``m_(-1)`` before the first input.

    Returns:
        ``[N, T, S]`` the states ``m_0..m_(T-1)``.
    """
    x = torch.cat([(u[:, :1] + (start @ L.T).unsqueeze(1)), u[:, 1:]], dim=1)
    T = x.shape[1]
    power = L
    k = 1
    while k < T:
        x = torch.cat([x[:, :k], x[:, k:] + x[:, :-k] @ power.T], dim=1)
        power = power @ power
        k *= 2
    return x


#: transients longer than this run as an associative scan instead of a per-step loop.
_SCAN_FROM = 16


def linear_recurrence_varying(u: torch.Tensor, L: torch.Tensor,
                              start: torch.Tensor) -> torch.Tensor:
    """Solve ``m_t = L_t m_(t-1) + u_t`` (t >= 1), ``m_0 = u_0 + start``, without a
    per-step loop: a doubling scan over the affine maps, ``ceil(log2 T)`` rounds of batched
    ``[T, S, S]`` products (differentiable).

    Args:
        u: ``[N, T, S]``; L: ``[T, S, S]`` (``L[0]`` unused); start: ``[S]`` or ``[N, S]``.

    Returns:
        ``[N, T, S]``.
    """
    x = torch.cat([u[:, :1] + start.reshape(-1, 1, u.shape[-1]), u[:, 1:]], dim=1)
    M = L.clone()
    M[0] = 0.0
    T = x.shape[1]
    k = 1
    while k < T:
        # x_t <- x_t + M_t x_(t-k);  M_t <- M_t M_(t-k): the map from step t-2k to t
        x = torch.cat([x[:, :k], x[:, k:] + torch.einsum("tij,ntj->nti", M[k:], x[:, :-k])],
                      dim=1)
        M = torch.cat([M[:k], M[k:] @ M[:-k]], dim=0)
        k *= 2
    return x


def filtered_means(
    y: torch.Tensor,
    initial_mean: torch.Tensor,
    A: torch.Tensor,
    C: torch.Tensor,
    covs: CovarianceSequence,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered and predicted state means of every sequence.

    Args:
        y: ``[N, T, D]`` observations (padding allowed; it only affects padded steps).
        initial_mean: ``[S]``, or ``[N, S]`` (one per sequence); A: ``[S, S]``; C: ``[D, S]``.
        covs: from :func:`riccati` for at least ``min(T, U)`` steps.

    Returns:
        ``(filt_mean, pred_mean)``, both ``[N, T, S]``.
    """
    N, T, _ = y.shape
    S = A.shape[0]
    U = covs.num_unique
    eye = torch.eye(S, dtype=A.dtype)
    K = covs.gain  # [U, S, D]
    L = (eye - K @ C) @ A  # [U, S, S]; L_t for t >= 1
    K_t = covs.per_step(K, T)  # [T, S, D]
    if K.shape[1:] == (1, 1):
        u = y * K_t[:, 0]  # [N, T, 1]
    else:
        u = torch.einsum("tsd,ntd->nts", K_t, y)  # [N, T, S]
    mu0 = initial_mean @ (eye - K[0] @ C).T  # the prior's share of m_0: [S] or [N, S]
    t_steady = max(U - 1, 1) if covs.steady else T
    t_loop = min(t_steady, T)
    needs_grad = torch.is_grad_enabled() and any(
        x.requires_grad for x in (y, initial_mean, A, C, K)
    )
    if S == 1 and not needs_grad:
        filt = _means_state1_numpy(u, mu0, L, t_loop)
    elif N <= _NUMPY_MEANS_ROWS and not needs_grad:
        filt = _means_numpy(u, mu0, L, t_loop, T)
    elif t_loop > _SCAN_FROM:
        # the transient by an associative scan over the affine maps (L_t, u_t)
        filt = linear_recurrence_varying(u[:, :t_loop], L[:t_loop], mu0)
        if t_loop < T:
            rest = linear_recurrence(u[:, t_loop:], L[U - 1], filt[:, -1])
            filt = torch.cat([filt, rest], dim=1)
    else:
        m = u[:, 0] + mu0
        out = [m]
        for t in range(1, t_loop):
            m = torch.addmm(u[:, t], m, L[t].T)
            out.append(m)
        filt = torch.stack(out, dim=1)
        if t_loop < T:
            rest = linear_recurrence(u[:, t_loop:], L[U - 1], filt[:, -1])
            filt = torch.cat([filt, rest], dim=1)
    pred = torch.cat([initial_mean.reshape(-1, 1, S).expand(N, 1, S), _times(filt[:, :-1], A)],
                     dim=1)
    return filt, pred


#: without gradients, at most this many sequences run the mean recursion as a NumPy loop
#: (microseconds a step) instead of torch's doubling scan (which pays ``log T`` batched
#: products of ``[T, S, S]``): the case of a structural model's profile likelihood.
_NUMPY_MEANS_ROWS = 4


def _means_numpy(u: torch.Tensor, mu0: torch.Tensor, L: torch.Tensor, t_loop: int,
                 T: int) -> torch.Tensor:
    """Filtered means ``m_t = L_t m_(t-1) + u_t`` without autograd, a NumPy loop (``L_t``
    is ``L[min(t, U - 1)]``, the steady one after ``t_loop``)."""
    un = u.numpy()  # [N, T, S]
    Lt = L.numpy().transpose(0, 2, 1).copy()  # m @ L_t'
    N, _, S = un.shape
    out = np.empty((N, T, S))
    m = un[:, 0] + np.broadcast_to(mu0.numpy(), (N, S))
    out[:, 0] = m
    last = Lt[-1]
    for t in range(1, T):
        m = m @ (Lt[t] if t < t_loop else last) + un[:, t]
        out[:, t] = m
    return torch.from_numpy(out)


def _means_state1_numpy(
    u: torch.Tensor, mu0: torch.Tensor, L: torch.Tensor, t_loop: int
) -> torch.Tensor:
    """S = 1 filtered means without autograd: a numpy loop over the transient, then one
    ``scipy.signal.lfilter`` pass (the same first-order recursion, in C) over the rest."""
    from scipy.signal import lfilter

    un = u[..., 0].numpy()  # [N, T]
    ln = L[:, 0, 0].numpy()
    N, T = un.shape
    out = np.empty((N, T))
    m = un[:, 0] + mu0[..., 0].numpy()
    out[:, 0] = m
    for t in range(1, t_loop):
        m = m * ln[t] + un[:, t]
        out[:, t] = m
    if t_loop < T:
        lam = float(ln[-1])
        out[:, t_loop:], _ = lfilter(
            [1.0], [1.0, -lam], un[:, t_loop:], axis=1, zi=(lam * m)[:, None]
        )
    return torch.from_numpy(out).unsqueeze(-1)


def _innovation_log_prob(
    y: torch.Tensor, pred_mean: torch.Tensor, C: torch.Tensor, covs: CovarianceSequence,
    observed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N, T]`` ``log N(y_t; C m_(t|t-1), F_t)`` over the observed coordinates (0 at
    steps with nothing observed)."""
    T, D = y.shape[1], y.shape[2]
    v = y - _times(pred_mean, C)  # [N, T, D]
    if D == 1:
        f = covs.per_step(covs.innov_cov[:, 0, 0], T)
        out = -0.5 * (_LOG_2PI + torch.log(f) + v[..., 0] ** 2 / f)
        if observed is not None:
            out = torch.where(observed.reshape(1, T), out, torch.zeros((), dtype=out.dtype))
        return out
    n_obs = torch.full((T,), float(D), dtype=y.dtype)
    if observed is not None:
        o = observed.reshape(T, D)
        v = v * o.to(v.dtype)  # missing coordinates: unit variance, zero innovation
        n_obs = o.sum(-1).to(y.dtype)
    chol = torch.linalg.cholesky(covs.innov_cov)  # [U, D, D]
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    white = torch.linalg.solve_triangular(covs.per_step(chol, T), v.unsqueeze(-1), upper=False)
    return -0.5 * (n_obs * _LOG_2PI + covs.per_step(logdet, T) + white.squeeze(-1).pow(2).sum(-1))


def kalman_filter(
    y: torch.Tensor,
    initial_mean: torch.Tensor,
    initial_cov: torch.Tensor,
    A: torch.Tensor,
    Q: torch.Tensor,
    C: torch.Tensor,
    R: torch.Tensor,
    steady_tol: float | None = DEFAULT_STEADY_TOL,
    observed: torch.Tensor | None = None,
) -> FilterResult:
    """The Kalman filter and its prediction-error decomposition of the likelihood.

    Step t contributes ``log N(x_t; C m_(t|t-1), C P_(t|t-1) C' + R)``; the sum over steps is
    the exact log density of the sequence. Differentiable. Missing values are marginalised
    exactly (skipped or partial updates, see :func:`riccati`): the steps then contribute the
    density of their observed coordinates, 0 when nothing is observed.

    Args:
        y: ``[N, T, D]`` float64 observations (0 at missing values).
        initial_mean, initial_cov, A, Q, C, R: the parameters (see the module docstring).
        steady_tol: see :func:`riccati`.
        observed: ``[T]`` or ``[T, D]`` bool, the observation pattern the N sequences
            share; None when nothing is missing.
    """
    covs = riccati(initial_cov, A, Q, C, R, y.shape[1], steady_tol, observed)
    filt, pred = filtered_means(y, initial_mean, A, C, covs)
    return FilterResult(_innovation_log_prob(y, pred, C, covs, observed), filt, pred, covs)


def _diffuse_steps(
    y: torch.Tensor, A: torch.Tensor, Q: torch.Tensor, C: torch.Tensor, R: torch.Tensor,
    observed: list | None = None, initial_cov: torch.Tensor | None = None,
    initial_cov_inf: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The exact initial Kalman filter (Durbin & Koopman 2012, section 5.2) for D = 1.

    A missing step (``observed[t]`` False) skips the update, so gaps lengthen the diffuse
    period. Through leading gaps (nothing observed yet) with a well-conditioned A (see
    :func:`flat_start`) the state stays flat: ``P_inf = I``, ``P_* = 0`` at every such step
    (exactly the same limit, since ``A^t A^t'`` is then nonsingular and a flat prior does
    not depend on ``P_*``), instead of ``P_inf = A^t A^t'`` growing like t^2 for a trend and
    costing digits to cancellation once an observation arrives.

    By default every state starts diffuse: ``z_0 ~ N(0, kappa I)`` with kappa -> inf, i.e. the
    predicted covariance is ``P_* + kappa P_inf`` with ``P_inf = I``, ``P_* = 0``;
    ``initial_cov_inf`` and ``initial_cov`` give other ``P_inf`` and ``P_*`` (a mixed start:
    some states diffuse, others from a proper prior, as the stationary AR states of a
    structural model). Step t has
    ``F_inf = C P_inf C'``; while ``F_inf > 0`` the observation only pins down the diffuse
    directions and contributes no term to the diffuse log-likelihood (0 here); a step with
    ``F_inf = 0`` inside the diffuse period contributes ``log N(v; 0, F_*)``. The period ends
    when ``P_inf`` vanishes; from then on the ordinary filter applies.

    Returns:
        ``(steps, mean, cov)``: per-step tensors (``lp [N, d]``, ``filt_mean``/``pred_mean``
        ``[N, d, S]``, ``pred_star``/``filt_star``/``pred_inf``/``filt_inf`` ``[d, S, S]``,
        ``innov`` ``[d]`` (``F_*``), ``gain`` ``[d, S]``), and the predicted state at step d:
        ``mean [N, S]``, ``cov [S, S]`` (proper unless the T steps ran out first).
    """
    N, T, _ = y.shape
    S = A.shape[0]
    dtype = A.dtype
    c, h = C[0], R[0, 0]
    scale = float((c.detach() ** 2).sum())
    a = torch.zeros(N, S, dtype=dtype)
    P_inf = torch.eye(S, dtype=dtype) if initial_cov_inf is None else initial_cov_inf.to(dtype)
    P_st = torch.zeros(S, S, dtype=dtype) if initial_cov is None else initial_cov.to(dtype)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "lp", "filt_mean", "pred_mean", "pred_star", "filt_star", "pred_inf", "filt_inf",
        "innov", "gain")}
    leading = observed is not None and not observed[0] and flat_start(A, P_inf)
    for t in range(T):
        if leading and observed[t]:
            leading = False
        if float(P_inf.detach().abs().max()) <= _DIFFUSE_TOL:
            break
        v = y[:, t, 0] - a @ c
        M_inf, M_st = P_inf @ c, P_st @ c
        f_inf, f_st = c @ M_inf, c @ M_st + h
        if observed is not None and not observed[t]:
            gain = torch.zeros(S, dtype=dtype)
            Pinf_f, Pst_f = P_inf, P_st
            f_st = torch.ones((), dtype=dtype)
            lp = torch.zeros(N, dtype=dtype)
        elif float(f_inf.detach()) > _DIFFUSE_TOL * scale:
            f1 = 1.0 / f_inf
            gain = M_inf * f1
            Pinf_f = P_inf - torch.outer(M_inf, M_inf) * f1
            Pst_f = (P_st - (torch.outer(M_st, M_inf) + torch.outer(M_inf, M_st)) * f1
                     + torch.outer(M_inf, M_inf) * (f_st * f1 * f1))
            lp = torch.zeros(N, dtype=dtype)
        else:
            gain = M_st / f_st
            Pinf_f = P_inf
            Pst_f = P_st - torch.outer(M_st, M_st) / f_st
            lp = -0.5 * (_LOG_2PI + torch.log(f_st) + v * v / f_st)
        a_f = a + v[:, None] * gain
        for k, x in (("lp", lp), ("filt_mean", a_f), ("pred_mean", a), ("pred_star", P_st),
                     ("filt_star", _sym(Pst_f)), ("pred_inf", P_inf), ("filt_inf", _sym(Pinf_f)),
                     ("innov", f_st), ("gain", gain)):
            out[k].append(x)
        if leading:  # still flat: the next step's prior is flat as well
            continue
        a = a_f @ A.T
        P_inf = _sym(A @ Pinf_f @ A.T)
        P_st = _sym(A @ Pst_f @ A.T + Q)
    steps = {k: torch.stack(v, dim=1 if k in ("lp", "filt_mean", "pred_mean") else 0)
             for k, v in out.items()}
    return steps, a, P_st


def flat_start(A: torch.Tensor, P_inf: torch.Tensor | None = None) -> bool:
    """Whether a diffuse state stays flat through leading gaps: every state diffuse at the
    start (``P_inf`` None, meaning I, or nonsingular) and A well conditioned (condition
    numbers below 1e8), so ``A^t P_inf A^t'`` stays nonsingular. A mixed start (some states
    proper, a singular ``P_inf``) is not flat: its proper part evolves through the gaps."""
    if P_inf is not None and not np.linalg.cond(P_inf.detach().numpy()) < 1e8:
        return False
    return bool(np.linalg.cond(A.detach().numpy()) < 1e8)


#: P_inf entries (and F_inf relative to |C|^2) below this count as zero: P_inf starts at I and
#: is dimensionless up to the state's units, which structured models fix at 1. Rounding
#: leaves entries of order 1e-16 times the largest P_inf reached (tens of thousands after a
#: hundred leading gaps of the local linear trend), far below this.
DIFFUSE_TOL = 1e-10
_DIFFUSE_TOL = DIFFUSE_TOL


def diffuse_num_steps(A: torch.Tensor, C: torch.Tensor, max_steps: int = 1000,
                      observed: list[bool] | None = None,
                      initial_cov_inf: torch.Tensor | None = None) -> int:
    """d: the steps of a fully observed sequence until the diffuse part ``P_inf`` vanishes
    (local level 1, local linear trend 2). Needs only A and C (``P_inf`` ignores noise) and
    the initial ``P_inf`` (default: I, every state diffuse).

    With ``observed`` (a ``[T]`` pattern of a sequence with gaps) the steps of that pattern's
    diffuse period (gaps lengthen it), at most T; no refusal then."""
    S = A.shape[0]
    if observed is not None:
        max_steps = len(observed)
    y = torch.zeros(1, max_steps, 1, dtype=A.dtype)
    Q = torch.zeros(S, S, dtype=A.dtype)
    R = torch.ones(1, 1, dtype=A.dtype)
    steps, _, _ = _diffuse_steps(y, A.detach(), Q, C.detach(), R, observed,
                                 initial_cov_inf=initial_cov_inf)
    d = int(steps["lp"].shape[1])
    if observed is None and d == max_steps:
        raise ValueError(
            f"the observations do not identify the diffuse initial state within {max_steps} "
            "steps; use initialization='proper' (a proper prior) for this model"
        )
    return d


def diffuse_kalman_filter(
    y: torch.Tensor,
    A: torch.Tensor,
    Q: torch.Tensor,
    C: torch.Tensor,
    R: torch.Tensor,
    steady_tol: float | None = DEFAULT_STEADY_TOL,
    observed: torch.Tensor | None = None,
    initial_cov: torch.Tensor | None = None,
    initial_cov_inf: torch.Tensor | None = None,
) -> FilterResult:
    """The Kalman filter under exact diffuse initialisation (every state diffuse unless
    ``initial_cov_inf`` says otherwise), D = 1.

    The first d steps run the exact initial filter (see :func:`_diffuse_steps`); their
    ``log_prob_steps`` are 0 (their terms are not densities), and the remaining steps are the
    ordinary filter started from the proper state at step d, so the row sums are the diffuse
    log-likelihood ``log p(x_d..x_(T-1) | x_0..x_(d-1))`` that statsmodels reports with
    ``loglikelihood_burn = d``. Differentiable.

    Args:
        y: ``[N, T, 1]`` observations.
        A, Q, C, R: the parameters (see the module docstring).
        steady_tol: see :func:`riccati` (used after the diffuse steps).
        observed: ``[T]`` bool pattern shared by the sequences (see :func:`kalman_filter`).
        initial_cov: ``[S, S]`` the proper part ``P_*`` of the initial covariance (default 0).
        initial_cov_inf: ``[S, S]`` its diffuse part ``P_inf`` (default I); the initial mean
            is 0.

    Returns:
        A :class:`FilterResult` whose ``covs.num_diffuse`` is d.
    """
    if C.shape[0] != 1:
        raise ValueError("exact diffuse initialisation is implemented for D = 1 only")
    N, T, _ = y.shape
    obs = None if observed is None else observed.reshape(T).tolist()
    st, mean, cov = _diffuse_steps(y, A, Q, C, R, obs, initial_cov, initial_cov_inf)
    d = st["lp"].shape[1]
    parts = [(st["lp"], st["filt_mean"], st["pred_mean"])]
    covs = [(st["pred_star"], st["filt_star"], st["innov"].reshape(-1, 1, 1),
             st["gain"].unsqueeze(-1))]
    steady = False
    if T > d:
        rest = None if observed is None else observed.reshape(T)[d:]
        res = kalman_filter(y[:, d:], mean, cov, A, Q, C, R, steady_tol, rest)
        parts.append((res.log_prob_steps, res.filt_mean, res.pred_mean))
        c = res.covs
        covs.append((c.pred_cov, c.filt_cov, c.innov_cov, c.gain))
        steady = c.steady
    lp, filt, pred = (torch.cat(z, dim=1) for z in zip(*parts, strict=True))
    pc, fc, ic, g = (torch.cat(z, dim=0) for z in zip(*covs, strict=True))
    return FilterResult(lp, filt, pred, CovarianceSequence(
        pc, fc, ic, g, steady, d, st["pred_inf"], st["filt_inf"]))


def diffuse_located(covs: CovarianceSequence) -> list[bool]:
    """For each exact diffuse step t < d: is the filtered state at t proper (``P_inf`` of
    ``P_(t|t)`` zero to within rounding, the same tolerance the filter uses)?"""
    if not covs.num_diffuse:
        return []
    peak = covs.filt_cov_inf.detach().abs().flatten(1).max(1).values
    return (peak <= _DIFFUSE_TOL).tolist()


def diffuse_smoother(
    y: torch.Tensor,
    res: FilterResult,
    A: torch.Tensor,
    Q: torch.Tensor,
    C: torch.Tensor,
    R: torch.Tensor,
    length: int,
    observed: torch.Tensor | None = None,
    smoothed_at_d: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact initial state smoother (Durbin & Koopman 2012, section 5.3) for D = 1.

    For sequences that all have ``length`` steps, the smoothed means and covariances of the
    steps ``t < min(d, length)`` of :func:`diffuse_kalman_filter`'s diffuse period, where the
    RTS smoother does not apply (its gain needs the inverse of a covariance with an infinite
    part). The backward quantities ``r_t`` and ``N_t`` are first run over the proper steps
    (``r_(t-1) = C' v_t / F_t + L_t' r_t``, ``N_(t-1) = C' C / F_t + L_t' N_t L_t`` with
    ``L_t = A (I - k_t C)``; a missing step has ``L_t = A`` and no data term), then expanded
    in ``1 / kappa`` through the diffuse steps (``r^(0)``, ``r^(1)``, ``N^(0..2)``, D&K
    equations 5.21-5.31), giving ``E[z_t] = a_t + P_* r^(0) + P_inf r^(1)`` and
    ``Var[z_t] = P_* - P_* N^(0) P_* - (P_inf N^(1) P_*)' - P_inf N^(1) P_* - P_inf N^(2)
    P_inf``. No kappa is chosen: the limit is exact up to rounding.

    Leading gaps (no observation at or before step t) are smoothed backwards by
    ``E[z_t] = A^-1 E[z_(t+1)]``, ``Var[z_t] = A^-1 (Var[z_(t+1)] + Q) A^-T`` (exact under
    the flat prior; A well conditioned, :func:`flat_start`; the filter keeps the state
    flat there too). Against a 40-digit reference
    (local linear trend, 100 steps, observed only at 90 and 95) the covariances are within
    1e-9 of the largest variance and the means within 1e-9 smoothed standard deviations.

    Args:
        y: ``[n, T, 1]`` (T >= length) the data filtered into ``res``.
        res: :func:`diffuse_kalman_filter` of ``y``.
        A, Q, C, R: the parameters.
        length: the sequences' common length.
        observed: ``[T]`` bool pattern shared by the sequences (None: no gaps).
        smoothed_at_d: the RTS smoother's ``(mean [n, S], cov [S, S])`` at step d (when
            ``length > d``): then ``r`` and ``N`` after the proper steps follow from
            ``E[z_d] = a_d + P_d r``, ``Var[z_d] = P_d - P_d N P_d`` (one solve with the
            predicted covariance ``P_d``) instead of the backward loop over every step,
            where ``P_d`` is well conditioned (condition number below 1e8).

    Returns:
        ``(mean [n, m, S], cov [m, S, S])`` with ``m = min(d, length)``.

    Raises:
        ValueError: the diffuse state is not located by the end of the sequences (its
            smoothed variance is infinite).
    """
    covs = res.covs
    d = covs.num_diffuse
    m = min(d, length)
    S = A.shape[0]
    if m == 0:
        return (torch.zeros(y.shape[0], 0, S, dtype=A.dtype), torch.zeros(0, S, S, dtype=A.dtype))
    if length <= d and not diffuse_located(covs)[length - 1]:
        raise ValueError("the diffuse initial state is not located by the end of the sequence")
    An = A.detach().numpy()
    At = An.T
    c = C.detach().numpy()[0]
    h = float(R.detach()[0, 0])
    scale = float(c @ c)
    obs = None if observed is None else observed.reshape(-1).tolist()
    yv = y[:, :length, 0].detach().numpy()
    pred = res.pred_mean[:, :length].detach().numpy()
    v_all = yv - pred @ c  # [n, length] innovations
    n = yv.shape[0]
    # --- proper steps, backwards from the end: r, N after step t (r_(t-1) in D&K)
    r0 = np.zeros((n, S))
    N0 = np.zeros((S, S))
    P_d = covs.pred_cov[min(d, covs.num_unique - 1)].detach().numpy() if length > d else None
    if P_d is not None and smoothed_at_d is not None and np.linalg.cond(P_d) < 1e8:
        m_d, V_d = (x.detach().numpy() for x in smoothed_at_d)
        a_d = res.pred_mean[:, d].detach().numpy()
        Pinv = np.linalg.inv(P_d)
        r0 = (m_d - a_d) @ Pinv  # P_d symmetric
        N0 = Pinv @ (P_d - V_d) @ Pinv
        N0 = 0.5 * (N0 + N0.T)
    elif length > d:
        idx = covs.index(length).tolist()
        F = covs.innov_cov[:, 0, 0].detach().numpy()
        K = covs.gain[:, :, 0].detach().numpy()
        eye = np.eye(S)
        for t in range(length - 1, d - 1, -1):
            if obs is not None and not obs[t]:
                r0 = r0 @ An
                N0 = At @ N0 @ An
                continue
            u = idx[t]
            L = An @ (eye - np.outer(K[u], c))
            r0 = np.outer(v_all[:, t] / F[u], c) + r0 @ L
            N0 = np.outer(c, c) / F[u] + L.T @ N0 @ L
    # --- diffuse steps: the 1 / kappa expansion
    r1 = np.zeros((n, S))
    N1 = np.zeros((S, S))
    N2 = np.zeros((S, S))
    P_st = covs.pred_cov[:m].detach().numpy()
    P_inf = covs.pred_cov_inf[:m].detach().numpy()
    means = np.empty((n, m, S))
    out_cov = np.empty((m, S, S))
    cc = np.outer(c, c)
    first = 0 if obs is None else next((t for t in range(length) if obs[t]), length)
    stop = 0  # the expansion runs down to this step; leading gaps below by A^-1
    if 0 < first < m and flat_start(A, covs.pred_cov_inf[0]):
        stop = first  # (the filter kept the state flat there: P_inf = I, P_* = 0)
    for t in range(m - 1, stop - 1, -1):
        Ps, Pi = P_st[t], P_inf[t]
        if obs is not None and not obs[t]:
            r0, r1 = r0 @ An, r1 @ An
            N0, N1, N2 = At @ N0 @ An, At @ N1 @ An, At @ N2 @ An
        else:
            M_inf, M_st = Pi @ c, Ps @ c
            f_inf, f_st = float(c @ M_inf), float(c @ M_st) + h
            v = v_all[:, t]
            if f_inf > _DIFFUSE_TOL * scale:
                F1, F2 = 1.0 / f_inf, -f_st / f_inf**2
                K0 = An @ M_inf * F1
                K1 = An @ M_st * F1 + An @ M_inf * F2
                L0 = An - np.outer(K0, c)
                L1 = -np.outer(K1, c)
                r1 = np.outer(v * F1, c) + r1 @ L0 + r0 @ L1
                r0 = r0 @ L0
                N2 = (cc * F2 + L0.T @ N2 @ L0 + L0.T @ N1 @ L1 + L1.T @ N1.T @ L0
                      + L1.T @ N0 @ L1)
                N1 = cc * F1 + L0.T @ N1 @ L0 + L1.T @ N0 @ L0 + L0.T @ N0 @ L1
                N0 = L0.T @ N0 @ L0
            else:
                L0 = An - np.outer(An @ M_st / f_st, c)
                r0 = np.outer(v / f_st, c) + r0 @ L0
                r1 = r1 @ An
                N0 = cc / f_st + L0.T @ N0 @ L0
                N1 = At @ N1 @ L0
                N2 = At @ N2 @ An
        means[:, t] = pred[:, t] + r0 @ Ps + r1 @ Pi  # P symmetric: (P r)' = r' P
        PiN1Ps = Pi @ N1 @ Ps
        V = Ps - Ps @ N0 @ Ps - PiN1Ps.T - PiN1Ps - Pi @ N2 @ Pi
        out_cov[t] = 0.5 * (V + V.T)
    if stop:
        Ai = np.linalg.inv(An)
        Qn = Q.detach().numpy()
        for t in range(stop - 1, -1, -1):
            means[:, t] = means[:, t + 1] @ Ai.T
            V = Ai @ (out_cov[t + 1] + Qn) @ Ai.T
            out_cov[t] = 0.5 * (V + V.T)
    return torch.from_numpy(means), torch.from_numpy(out_cov)


def innovation_sums(
    y: torch.Tensor, mask: torch.Tensor, A: torch.Tensor, Q: torch.Tensor, C: torch.Tensor,
    R: torch.Tensor, observed: torch.Tensor | None = None,
) -> tuple[float, float, int]:
    """``(sum v_t^2 / F_t, sum log F_t, n)`` over the scored steps of the diffuse filter of
    ``y [N, T, 1]`` (D = 1; ``mask [N, T]`` real steps): what a likelihood with the scale
    concentrated out needs. Scored steps are the observed ones with ``F_inf = 0``: those
    after the diffuse period, and those inside it (gaps lengthen it) that ``log_prob_steps``
    scores."""
    res = diffuse_kalman_filter(y, A, Q, C, R, observed=observed)
    d = res.covs.num_diffuse
    T = y.shape[1]
    f = res.covs.per_step(res.covs.innov_cov[:, 0, 0], T)
    v = (y[..., 0] - _times(res.pred_mean, C)[..., 0])
    scored = torch.ones(T, dtype=torch.bool)
    if d:
        f_inf = (C @ res.covs.pred_cov_inf @ C.T)[:, 0, 0]
        scored[:d] = f_inf <= _DIFFUSE_TOL * float((C.detach() ** 2).sum())
    keep = mask & scored
    if observed is not None:
        keep = keep & observed.reshape(1, T)
    quad = float(torch.where(keep, v * v / f, 0.0).sum())
    logdet = float((torch.log(f) * keep.sum(0)).sum())
    return quad, logdet, int(keep.sum())


def rts_smoother(
    filt_mean: torch.Tensor,
    pred_mean: torch.Tensor,
    covs: CovarianceSequence,
    A: torch.Tensor,
    steady_tol: float | None = DEFAULT_STEADY_TOL,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rauch-Tung-Striebel smoother for sequences that all have the same length T.

    ``G_t = P_(t|t) A' P_(t+1|t)^-1``, ``m_t = m_(t|t) + G_t (m_(t+1) - m_(t+1|t))``,
    ``P_t = P_(t|t) + G_t (P_(t+1) - P_(t+1|t)) G_t'``. Where the filter is steady the
    gain is one matrix: the means are then one backward linear recurrence (a doubling scan,
    ``scipy.signal.lfilter`` when S = 1) and the smoothed covariances, which converge going
    backwards, are recursed only until they stop changing (the scale-free test of
    :func:`riccati`; ``steady_tol=None`` recurses every step). The transient steps at the
    start run one by one.

    Args:
        filt_mean, pred_mean: ``[N, T, S]`` from :func:`kalman_filter`.
        covs: the filter's covariances.
        A: ``[S, S]``.
        steady_tol: see above.

    Returns:
        ``(means [N, T, S], covs [T, S, S], cross [T - 1, S, S])``: ``E[z_t | x_0..x_(T-1)]``,
        the shared smoothed covariances and the lag-one cross-covariances
        ``Cov(z_(t+1), z_t | x_0..x_(T-1))``.
    """
    N, T, S = filt_mean.shape
    U = covs.num_unique
    Pf, Pp = covs.filt_cov, covs.pred_cov
    # steps t >= t_ss (t <= T - 2) use the steady pair (U - 1, U - 1)
    t_ss = min(U - 1, T - 1) if covs.steady else T - 1
    n_tr = t_ss  # transient gains G_0..G_(t_ss - 1), pairs (t, t + 1)
    if n_tr > 0:
        G_tr = _solve_psd_batch(Pp[1 : n_tr + 1], A @ Pf[:n_tr]).transpose(-1, -2)
    else:
        G_tr = torch.zeros(0, S, S, dtype=A.dtype)
    G_ss = _solve_psd(Pp[U - 1], A @ Pf[U - 1]).T if t_ss < T - 1 else None
    # --- covariances, backwards
    Ps_last = Pf[min(T - 1, U - 1)]
    tail: list[torch.Tensor] = []  # Ps_t for t = T-1, T-2, ... down to t_ss
    Ps = Ps_last
    tail.append(Ps)
    flat_from = None  # smoothed covariance constant for t_ss <= t <= flat_from
    if G_ss is not None:
        Pf_ss, Pp_ss = Pf[U - 1], Pp[U - 1]
        for t in range(T - 2, t_ss - 1, -1):
            nxt = _sym(Pf_ss + G_ss @ (Ps - Pp_ss) @ G_ss.T)
            if steady_tol is not None and _converged(Ps, nxt, steady_tol):
                flat_from = t
                break
            Ps = nxt
            tail.append(Ps)
    if flat_from is not None:
        n_flat = flat_from - t_ss + 1
        steady_part = Ps.expand(n_flat, S, S)
    else:
        steady_part = torch.zeros(0, S, S, dtype=A.dtype)
    head: list[torch.Tensor] = []  # Ps_t for t = t_ss - 1 down to 0
    Ps_next = Ps if flat_from is not None else tail[-1]
    for t in range(n_tr - 1, -1, -1):
        G = G_tr[t]
        Ps_next = _sym(Pf[t] + G @ (Ps_next - Pp[t + 1]) @ G.T)
        head.append(Ps_next)
    parts = [torch.stack(head[::-1])] if head else []
    parts += [steady_part, torch.stack(tail[::-1])]
    cov_out = torch.cat(parts, dim=0)
    # --- means, backwards: m_t = G_t m_(t+1) + (m_(t|t) - G_t m_(t+1|t))
    means = torch.empty(N, T, S, dtype=filt_mean.dtype)
    means[:, T - 1] = filt_mean[:, T - 1]
    if G_ss is not None:
        b = filt_mean[:, t_ss : T - 1] - pred_mean[:, t_ss + 1 : T] @ G_ss.T  # [N, n, S]
        rev = b.flip(1)
        if S == 1 and not torch.is_grad_enabled():
            from scipy.signal import lfilter

            g = float(G_ss[0, 0])
            out, _ = lfilter([1.0], [1.0, -g], rev[..., 0].numpy(), axis=1,
                             zi=(g * filt_mean[:, T - 1, 0].numpy())[:, None])
            sol = torch.from_numpy(out).unsqueeze(-1)
        else:
            sol = linear_recurrence(rev, G_ss, filt_mean[:, T - 1])
        means[:, t_ss : T - 1] = sol.flip(1)
    m = means[:, t_ss]
    for t in range(n_tr - 1, -1, -1):
        G = G_tr[t]
        m = filt_mean[:, t] + (m - pred_mean[:, t + 1]) @ G.T
        means[:, t] = m
    # --- lag-one cross-covariances Cov(z_(t+1), z_t) = P_(t+1) G_t'
    if T > 1:
        G_all = G_tr if G_ss is None else torch.cat(
            [G_tr, G_ss.expand(T - 1 - n_tr, S, S)], dim=0)
        cross = cov_out[1:] @ G_all.transpose(-1, -2)
    else:
        cross = torch.zeros(0, S, S, dtype=A.dtype)
    return means, cov_out, cross


def _solve_psd_batch(P: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``P^-1 B`` for a batch of positive semi-definite P (pseudo-inverse where singular)."""
    chol, info = torch.linalg.cholesky_ex(P)
    if bool((info == 0).all()):
        return torch.cholesky_solve(B, chol)
    return torch.linalg.pinv(P, hermitian=True) @ B


def em_m_step(
    y: torch.Tensor,
    mask: torch.Tensor,
    mean: torch.Tensor,
    cov: torch.Tensor,
    cross: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The EM (Shumway-Stoffer) M-step of a full LGSSM from smoothed moments.

    Args:
        y: ``[N, T, D]``; mask: ``[N, T]`` real steps.
        mean: ``[N, T, S]`` smoothed means; cov: ``[N, T, S, S]`` smoothed covariances.
        cross: ``[N, T - 1, S, S]`` ``Cov(z_(t+1), z_t | x)``.

    Returns:
        The maximising parameters (named as the model's). With no consecutive pair of
        steps, ``transition_matrix`` and ``transition_cov`` are absent.
    """
    m = mask.to(y.dtype)
    Ezz = cov + mean.unsqueeze(-1) * mean.unsqueeze(-2)  # [N, T, S, S]
    Szz = torch.einsum("nt,ntij->ij", m, Ezz)
    Syz = torch.einsum("nt,nti,ntj->ij", m, y, mean)
    Syy = torch.einsum("nt,nti,ntj->ij", m, y, y)
    n_steps = m.sum()
    C = torch.linalg.solve(Szz, Syz.T).T
    R = _sym(Syy - C @ Syz.T) / n_steps
    mu0 = mean[:, 0].mean(0)
    dev = mean[:, 0] - mu0
    P0 = _sym((cov[:, 0] + dev.unsqueeze(-1) * dev.unsqueeze(-2)).mean(0))
    out = {"initial_mean": mu0, "initial_cov": P0, "observation_matrix": C,
           "observation_cov": R}
    pair = (mask[:, 1:] & mask[:, :-1]).to(y.dtype)
    n_pairs = pair.sum()
    if n_pairs > 0:
        E10 = cross + mean[:, 1:].unsqueeze(-1) * mean[:, :-1].unsqueeze(-2)
        S10 = torch.einsum("nt,ntij->ij", pair, E10)
        S00 = torch.einsum("nt,ntij->ij", pair, Ezz[:, :-1])
        S11 = torch.einsum("nt,ntij->ij", pair, Ezz[:, 1:])
        A = torch.linalg.solve(S00, S10.T).T
        out["transition_matrix"] = A
        out["transition_cov"] = _sym(S11 - A @ S10.T) / n_pairs
    return out


def _solve_psd(P: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``P^-1 B`` for a positive semi-definite P (pseudo-inverse when P is singular)."""
    chol, info = torch.linalg.cholesky_ex(P)
    if int(info) == 0:
        return torch.cholesky_solve(B, chol)
    return torch.linalg.pinv(P, hermitian=True) @ B


def forecast_moments(
    mean: torch.Tensor,
    cov: torch.Tensor,
    A: torch.Tensor,
    Q: torch.Tensor,
    C: torch.Tensor,
    R: torch.Tensor,
    horizon: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive moments of the next ``horizon`` observations.

    Args:
        mean: ``[N, S]`` filtered mean at the last observation; cov: ``[N, S, S]``.
        A, Q, C, R: the parameters.
        horizon: H.

    Returns:
        ``(obs_mean [N, H, D], obs_cov [N, H, D, D])``.
    """
    means, covs = [], []
    m, P = mean, cov
    for _ in range(horizon):
        m = m @ A.T
        P = _sym(A @ P @ A.T + Q)
        means.append(m @ C.T)
        covs.append(_sym(C @ P @ C.T + R))
    return torch.stack(means, dim=1), torch.stack(covs, dim=1)


def innovation_sums_small(y: np.ndarray, A: np.ndarray, c: np.ndarray, q: np.ndarray,
                          steady_tol: float = DEFAULT_STEADY_TOL) -> tuple[float, float, int]:
    """:func:`innovation_sums` for one fully observed sequence ``y [T]`` of a model with
    S <= 2, D = 1, diagonal ``Q = diag(q)`` and ``R = 1``, in Python floats and SciPy.

    The diffuse steps and the transient of the covariance recursion run as scalar loops;
    once the gain is steady, the innovations are a fixed rational filter of the data
    (``v = H(z) y`` with ``H(z) = 1 - c (zI - L)^-1 A k``, ``L = A (I - k c)``), applied by
    ``scipy.signal.lfilter``, plus the free response ``-c L^t a`` of the state there (by the
    Cayley-Hamilton recurrence). The same numbers as the general filter (tested)."""
    from scipy.signal import lfilter, lfiltic

    S = A.shape[0]
    T = y.shape[0]
    Af = A.tolist()
    cf = c.tolist()
    # --- exact diffuse steps (all states diffuse), Python floats via small numpy
    a = np.zeros(S)
    P_inf = np.eye(S)
    P_st = np.zeros((S, S))
    Qm = np.diag(q)
    scale = float(c @ c)
    t = 0
    quad = logdet = 0.0
    n = 0
    while t < T and np.abs(P_inf).max() > _DIFFUSE_TOL:
        v = y[t] - a @ c
        M_inf, M_st = P_inf @ c, P_st @ c
        f_inf, f_st = float(c @ M_inf), float(c @ M_st) + 1.0
        if f_inf > _DIFFUSE_TOL * scale:
            gain = M_inf / f_inf
            Pinf_f = P_inf - np.outer(M_inf, M_inf) / f_inf
            Pst_f = (P_st - (np.outer(M_st, M_inf) + np.outer(M_inf, M_st)) / f_inf
                     + np.outer(M_inf, M_inf) * (f_st / f_inf**2))
        else:
            gain = M_st / f_st
            Pinf_f = P_inf
            Pst_f = P_st - np.outer(M_st, M_st) / f_st
            quad += v * v / f_st
            logdet += math.log(f_st)
            n += 1
        a = A @ (a + v * gain)
        P_inf = A @ Pinf_f @ A.T
        P_inf = 0.5 * (P_inf + P_inf.T)
        P_st = A @ Pst_f @ A.T + Qm
        P_st = 0.5 * (P_st + P_st.T)
        t += 1
    if t >= T:
        return quad, logdet, n
    rest = T - t
    if S == 1:
        fl, Kl, steady = _riccati_scalar(float(P_st[0, 0]), Af[0][0], float(q[0]), cf[0], 1.0,
                                         rest, steady_tol, raw=True)
    else:
        fl, Kl, steady = _riccati_two(P_st.tolist(), Af, Qm.tolist(), cf, 1.0, rest,
                                      steady_tol, raw=True)
    U = len(fl)
    t_loop = U - 1 if steady else rest
    yy = y[t:]
    # transient: scalar loop in Python floats
    yl = yy[:t_loop].tolist()
    if S == 1:
        a0, aa, c0 = float(a[0]), Af[0][0], cf[0]
        for s in range(t_loop):
            v = yl[s] - c0 * a0
            quad += v * v / fl[s]
            logdet += math.log(fl[s])
            a0 = aa * (a0 + v * Kl[s][0])
        a = np.array([a0])
    else:
        (a00, a01), (a10, a11) = Af
        c0, c1 = cf
        x0, x1 = float(a[0]), float(a[1])
        for s in range(t_loop):
            v = yl[s] - c0 * x0 - c1 * x1
            quad += v * v / fl[s]
            logdet += math.log(fl[s])
            k0, k1 = Kl[s]
            f0, f1 = x0 + v * k0, x1 + v * k1
            x0, x1 = a00 * f0 + a01 * f1, a10 * f0 + a11 * f1
        a = np.array([x0, x1])
    n += t_loop
    if t_loop < rest:
        k = np.array(Kl[U - 1])
        fs = float(fl[U - 1])
        L = A @ (np.eye(S) - np.outer(k, c))
        b = A @ k
        ys = yy[t_loop:]
        m = len(ys)
        if S == 1:
            lam = float(L[0, 0])
            num, den = [1.0, -(lam + cf[0] * float(b[0]))], [1.0, -lam]
            free = cf[0] * float(a[0]) * lam ** np.arange(m)
        else:
            tr, det = float(L[0, 0] + L[1, 1]), float(L[0, 0] * L[1, 1] - L[0, 1] * L[1, 0])
            cb = float(c @ b)
            e = (-cf[0] * L[1, 1] * b[0] + cf[0] * L[0, 1] * b[1] + cf[1] * L[1, 0] * b[0]
                 - cf[1] * L[0, 0] * b[1])
            num, den = [1.0, -(tr + cb), det - float(e)], [1.0, -tr, det]
            s0, s1 = float(c @ a), float(c @ (L @ a))
            free = np.empty(m)
            free[0] = s0
            if m > 1:
                free[1] = s1
            if m > 2:
                zi = lfiltic([1.0], den, [s1, s0])
                free[2:], _ = lfilter([1.0], den, np.zeros(m - 2), zi=zi)
        v = lfilter(num, den, ys) - free
        quad += float(v @ v) / fs
        logdet += m * math.log(fs)
        n += m
    return quad, logdet, n
