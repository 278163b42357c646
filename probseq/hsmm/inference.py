"""Exact recursions of the hidden semi-Markov model (pure functions over tensors).

Shape letters: N sequences, T steps (``T_max`` the longest), K states, D the longest
duration (``max_duration``). The model is run as its countdown chain: the latent state at
step t is ``(k, r)``, the segment's state k and r = 1..D the steps it has left, this one
included. A segment of state k and duration d enters as ``(k, d)`` and counts down
``(k, d) -> (k, d-1) -> ... -> (k, 1)``; from ``(k, 1)`` the next segment starts in
``(j, d')`` with probability ``transition[k, j] * duration[j, d'-1]``. Only k emits, so
the chain is an HMM with K*D states whose transition matrix is sparse: a step of the
forward (or backward) recursion costs O(K D + K^2) instead of O((K D)^2). The last segment
is right-censored by construction (the chain may be anywhere in its countdown at T).

The recursions are compiled (numba, one loop over the rows and the steps, like
:mod:`probseq.hmm.compiled`) and scaled: each forward step is normalised, with the
emission likelihoods shifted by the step's largest predicted log-density so that no step
underflows; the backward messages are normalised by their largest entry at every step and
the two-slice posteriors divided by their own total, so neither overflows. The backward
pass recomputes the forward slices block by block from checkpoints kept every ~sqrt(T)
steps: O(sqrt(T) K D) memory per sequence.

:func:`hsmm_viterbi` maximises over segmentations directly (segment ends, O(T K D + T
K^2)), summing the censored last segment's duration out: it returns the most probable
state path ``z_1..z_T``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

__all__ = ["hsmm_forward_backward", "hsmm_viterbi", "countdown_forecast",
           "countdown_filter", "backward_sample"]


@numba.njit(cache=True, nogil=True)
def _forward_step(initial, transition, duration, log_lik_t, prev, out, first, pred, q, e,
                  b_t):
    """One scaled forward step: ``out [K, D]`` from ``prev [K, D]`` (unused when ``first``).

    Writes the scaled emission likelihoods into ``b_t [K]`` and the predicted state masses
    into ``q [K]``; returns ``(log normaliser, total predicted mass)``, the first ``-inf``
    when the step is impossible (then ``out`` is not written).
    """
    k, dmax = duration.shape
    if first:
        for kk in range(k):
            for r in range(dmax):
                pred[kk, r] = initial[kk] * duration[kk, r]
    else:
        for kk in range(k):
            e[kk] = 0.0
        for j in range(k):
            a = prev[j, 0]
            if a != 0.0:
                for kk in range(k):
                    e[kk] += a * transition[j, kk]
        for kk in range(k):
            ek = e[kk]
            for r in range(dmax - 1):
                pred[kk, r] = prev[kk, r + 1] + duration[kk, r] * ek
            pred[kk, dmax - 1] = duration[kk, dmax - 1] * ek
    shift = -np.inf
    total_q = 0.0
    for kk in range(k):
        qk = 0.0
        for r in range(dmax):
            qk += pred[kk, r]
        q[kk] = qk
        total_q += qk
        if qk > 0.0:
            v = log_lik_t[kk] + math.log(qk)
            if v > shift:
                shift = v
    if not (shift > -np.inf) or not (total_q > 0.0):
        return -np.inf, total_q
    c = 0.0
    for kk in range(k):
        bk = math.exp(min(log_lik_t[kk] - shift, 700.0))
        b_t[kk] = bk
        c += bk * q[kk]
    inv = 1.0 / c
    for kk in range(k):
        scale = b_t[kk] * inv
        for r in range(dmax):
            out[kk, r] = pred[kk, r] * scale
    return shift + math.log(c), total_q


@numba.njit(cache=True, nogil=True)
def _forward_backward_rows(initial, transition, duration, log_lik, lengths, backward,
                           steps_out, filtered_out, predicted_out, smoothed_out, last_out,
                           init_counts, trans_counts, dur_counts, alpha):
    """Forward (and backward) passes of every row. ``alpha`` is ``[T_max, K, D]`` to keep
    the whole forward pass (a prefix to sample from), else ``[2, K, D]``: then the backward
    pass keeps the forward pass at every B-th step only (B ~ sqrt(T)) and recomputes each
    block of B steps from its checkpoint, so memory is O(sqrt(T) K D) per row, not
    O(T K D), for twice the forward work."""
    n, t_max, k = log_lik.shape
    dmax = duration.shape[1]
    store = alpha.shape[0] >= t_max
    b = np.empty((t_max, k))
    pred = np.empty((k, dmax))
    q = np.empty(k)
    e = np.empty(k)
    g = np.empty(k)
    beta = np.empty((k, dmax))
    newb = np.empty((k, dmax))
    for row in range(n):
        length = lengths[row]
        block = 1
        while block * block < length:
            block += 1
        ckpt = np.empty((1 if store or not backward else (length + block - 1) // block, k,
                         dmax))
        dead = False
        cur = 0
        for t in range(length):
            cur = t if store else t % 2
            prev = t - 1 if store else (t - 1) % 2
            step, total_q = _forward_step(initial, transition, duration, log_lik[row, t],
                                          alpha[prev], alpha[cur], t == 0, pred, q, e, b[t])
            if not (step > -np.inf):
                dead = True
                for tt in range(t, length):  # as the HMM: every conditional from here on
                    steps_out[row, tt] = -np.inf
                break
            steps_out[row, t] = step
            for kk in range(k):
                f = 0.0
                for r in range(dmax):
                    f += alpha[cur, kk, r]
                filtered_out[row, t, kk] = f
                predicted_out[row, t, kk] = q[kk] / total_q
            if backward and not store and t % block == 0:
                ckpt[t // block] = alpha[cur]
        if dead:
            continue
        for kk in range(k):
            for r in range(dmax):
                last_out[row, kk, r] = alpha[cur, kk, r]
        if not backward:
            continue
        # The forward slices of the current block (recomputed from its checkpoint).
        blk = alpha if store else np.empty((block, k, dmax))
        blk_start = 0 if store else length  # no block recomputed yet
        end = length - 1
        for kk in range(k):
            smoothed_out[row, end, kk] = filtered_out[row, end, kk]
            for r in range(dmax):
                beta[kk, r] = 1.0
        if length == 1:
            for kk in range(k):
                for r in range(dmax):
                    g0 = alpha[cur, kk, r]
                    init_counts[kk] += g0
                    dur_counts[kk, r] += g0
        for t in range(length - 2, -1, -1):
            if t < blk_start:
                blk_start = (t // block) * block
                blk[0] = ckpt[t // block]
                for tt in range(blk_start + 1, t + 1):
                    _forward_step(initial, transition, duration, log_lik[row, tt],
                                  blk[tt - 1 - blk_start], blk[tt - blk_start], False, pred, q,
                                  e, b[tt])
            at = blk[t - blk_start]
            for j in range(k):
                s = 0.0
                for d in range(dmax):
                    s += duration[j, d] * beta[j, d]
                g[j] = b[t + 1, j] * s
            for kk in range(k):
                h = 0.0
                for j in range(k):
                    h += transition[kk, j] * g[j]
                newb[kk, 0] = h
                bk = b[t + 1, kk]
                for r in range(1, dmax):
                    newb[kk, r] = bk * beta[kk, r - 1]
            z = 0.0
            for kk in range(k):
                for r in range(dmax):
                    z += at[kk, r] * newb[kk, r]
            if not (z > 0.0) or not (z < np.inf):
                # Cannot happen for a sequence of positive probability (the messages are
                # scaled); mark the row rather than divide by zero.
                for tt in range(length):
                    for kk in range(k):
                        smoothed_out[row, tt, kk] = np.nan
                break
            invz = 1.0 / z
            # Segments that start at t + 1 (two-slice posteriors of the countdown chain).
            for kk in range(k):
                e[kk] = 0.0
            for j in range(k):
                a = at[j, 0] * invz
                if a != 0.0:
                    for kk in range(k):
                        w = a * transition[j, kk]
                        e[kk] += w
                        trans_counts[j, kk] += w * g[kk]
            for kk in range(k):
                coef = e[kk] * b[t + 1, kk]
                if coef != 0.0:
                    for d in range(dmax):
                        dur_counts[kk, d] += coef * duration[kk, d] * beta[kk, d]
            for kk in range(k):
                sm = 0.0
                for r in range(dmax):
                    sm += at[kk, r] * newb[kk, r]
                smoothed_out[row, t, kk] = sm * invz
            if t == 0:
                for kk in range(k):
                    for r in range(dmax):
                        g0 = at[kk, r] * newb[kk, r] * invz
                        init_counts[kk] += g0
                        dur_counts[kk, r] += g0
            top = 0.0
            for kk in range(k):
                for r in range(dmax):
                    if newb[kk, r] > top:
                        top = newb[kk, r]
            if top > 0.0:
                top = 1.0 / top
            for kk in range(k):
                for r in range(dmax):
                    beta[kk, r] = newb[kk, r] * top


def _float64(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float64)


def _arrays(initial, transition, duration, log_lik, lengths):
    """The kernels' NumPy arrays (float64, C-contiguous; lengths int64)."""
    return (_float64(initial), _float64(transition), _float64(duration), _float64(log_lik),
            np.ascontiguousarray(lengths.cpu().numpy(), dtype=np.int64))


def hsmm_forward_backward(initial: torch.Tensor, transition: torch.Tensor,
                          duration: torch.Tensor, log_lik: torch.Tensor, lengths: torch.Tensor,
                          *, backward: bool = True) -> dict[str, torch.Tensor]:
    """The forward (and backward) recursion of the countdown chain.

    Args:
        initial: ``[K]`` distribution of the first segment's state.
        transition: ``[K, K]`` between segments (rows: from; zero diagonal).
        duration: ``[K, D]`` the pmf of each state's durations d = 1..D.
        log_lik: ``[N, T_max, K]`` emission log-likelihoods (0 at missing steps; padding is
            never read).
        lengths: ``[N]``.
        backward: also run the backward pass (smoothed marginals and EM statistics).

    Returns:
        A dict of float64 tensors: ``log_prob [N]``; ``steps [N, T_max]`` the conditionals
        ``log p(x_t | x_<t)`` (0 at padding, ``-inf`` from the first impossible step
        on); ``filtered [N, T_max, K]`` ``P(z_t | x_1..x_t)``; ``predicted [N, T_max,
        K]`` ``P(z_t | x_<t)``; ``last [N, K, D]`` the filtered countdown state at each
        sequence's last step; with ``backward``: ``smoothed [N, T_max, K]``,
        ``initial_counts [K]``, ``transition_counts [K, K]`` and ``duration_counts [K, D]``
        (the expected number of segments of each state and duration, the censored last one
        included), summed over the sequences. Every marginal is zero at padding and from
        an impossible step on.
    """
    pi, a, p, ll, lens = _arrays(initial, transition, duration, log_lik, lengths)
    n, t_max, k = ll.shape
    dmax = p.shape[1]
    steps = np.zeros((n, t_max))
    filtered = np.zeros((n, t_max, k))
    predicted = np.zeros((n, t_max, k))
    smoothed = np.zeros((n, t_max, k)) if backward else np.zeros((1, 1, 1))
    last = np.zeros((n, k, dmax))
    init_counts = np.zeros(k)
    trans_counts = np.zeros((k, k))
    dur_counts = np.zeros((k, dmax))
    alpha = np.empty((2, k, dmax))
    _forward_backward_rows(pi, a, p, ll, lens, backward, steps, filtered, predicted, smoothed,
                           last, init_counts, trans_counts, dur_counts, alpha)
    out = {
        "log_prob": torch.from_numpy(steps.sum(1)),
        "steps": torch.from_numpy(steps),
        "filtered": torch.from_numpy(filtered),
        "predicted": torch.from_numpy(predicted),
        "last": torch.from_numpy(last),
    }
    if backward:
        out.update(smoothed=torch.from_numpy(smoothed),
                   initial_counts=torch.from_numpy(init_counts),
                   transition_counts=torch.from_numpy(trans_counts),
                   duration_counts=torch.from_numpy(dur_counts))
    return out


def countdown_filter(initial: torch.Tensor, transition: torch.Tensor, duration: torch.Tensor,
                     log_lik: torch.Tensor) -> torch.Tensor:
    """The filtered countdown distributions of one sequence at every step.

    Args:
        initial, transition, duration: as :func:`hsmm_forward_backward`.
        log_lik: ``[T, K]``.

    Returns:
        ``[T, K, D]``: ``P(z_t = k, r_t = r | x_1..x_t)`` (r = 1..D along the last axis);
        zero from the first impossible step on.
    """
    pi, a, p, ll, _ = _arrays(initial, transition, duration, log_lik[None],
                              torch.tensor([log_lik.shape[0]]))
    t, k = log_lik.shape
    dmax = p.shape[1]
    alpha = np.zeros((t, k, dmax))
    _forward_backward_rows(pi, a, p, ll, np.array([t], dtype=np.int64), False,
                           np.zeros((1, t)), np.zeros((1, t, k)), np.zeros((1, t, k)),
                           np.zeros((1, 1, 1)), np.zeros((1, k, dmax)), np.zeros(k),
                           np.zeros((k, k)), np.zeros((k, dmax)), alpha)
    return torch.from_numpy(alpha)


def backward_sample(alpha: torch.Tensor, transition: torch.Tensor, duration: torch.Tensor,
                    state: torch.Tensor, countdown: torch.Tensor) -> torch.Tensor:
    """Draw state paths of one sequence from their posterior, backwards from its last step.

    Args:
        alpha: ``[T, K, D]`` filtered countdown distributions (:func:`countdown_filter`).
        transition, duration: as :func:`hsmm_forward_backward`.
        state: ``[S]`` the states drawn at the last step.
        countdown: ``[S]`` their countdowns r - 1 (0-based) at the last step.

    Returns:
        ``[S, T]`` int64 states.
    """
    t_len, k, dmax = alpha.shape
    s = state.shape[0]
    out = torch.empty(s, t_len, dtype=torch.int64)
    out[:, -1] = state
    ks, rs = state.clone(), countdown.clone()
    for t in range(t_len - 1, 0, -1):
        prev = alpha[t - 1]  # [K, D]
        # Either the segment continues from (k, r + 1), or it began at t after (j, 1).
        cont = torch.where(rs + 1 < dmax, prev[ks, (rs + 1).clamp_max(dmax - 1)],
                           torch.zeros((), dtype=prev.dtype))
        new = prev[:, 0][None, :] * transition[:, ks].T * duration[ks, rs][:, None]  # [S, K]
        w = torch.cat([cont[:, None], new], dim=1)
        pick = torch.multinomial(w, 1).squeeze(1)
        began = pick > 0
        ks = torch.where(began, pick - 1, ks)
        rs = torch.where(began, torch.zeros_like(rs), rs + 1)
        out[:, t - 1] = ks
    return out


def countdown_forecast(last: torch.Tensor, transition: torch.Tensor, duration: torch.Tensor,
                       horizon: int) -> torch.Tensor:
    """Exact state marginals of the H steps after the data.

    Args:
        last: ``[N, K, D]`` the filtered countdown state at the last step.
        transition, duration: as :func:`hsmm_forward_backward`.
        horizon: H.

    Returns:
        ``[N, H, K]``: ``P(z_(T+h) = k | x_1..x_T)``.
    """
    w = last
    out = []
    for _ in range(horizon):
        enter = w[:, :, 0] @ transition  # [N, K]
        nxt = duration[None] * enter[:, :, None]
        nxt[:, :, :-1] += w[:, :, 1:]
        w = nxt
        out.append(w.sum(-1))
    return torch.stack(out, dim=1)


@numba.njit(cache=True, nogil=True)
def _viterbi_rows(log_initial, log_transition, log_duration, log_survival, log_lik, lengths,
                  paths, best):
    n, t_max, k = log_lik.shape
    dmax = log_duration.shape[1]
    # enter[t, k]: the best log score of x_1..x_t with a segment of state k starting at t+1
    # (its transition included); close[t, k]: of x_1..x_t with a segment of k ending at t.
    enter = np.empty((t_max + 1, k))
    close = np.empty((t_max + 1, k))
    close_d = np.zeros((t_max + 1, k), dtype=np.int64)
    enter_from = np.zeros((t_max + 1, k), dtype=np.int64)
    for row in range(n):
        length = lengths[row]
        for kk in range(k):
            enter[0, kk] = log_initial[kk]
        for t in range(1, length + 1):
            final = t == length
            for kk in range(k):
                top = -np.inf
                arg = 1
                seg = 0.0
                for d in range(1, min(t, dmax) + 1):
                    seg += log_lik[row, t - d, kk]
                    if final:
                        v = enter[t - d, kk] + log_survival[kk, d - 1] + seg
                    else:
                        v = enter[t - d, kk] + log_duration[kk, d - 1] + seg
                    if v > top:
                        top = v
                        arg = d
                close[t, kk] = top
                close_d[t, kk] = arg
            if not final:
                for kk in range(k):
                    top = -np.inf
                    arg = 0
                    for j in range(k):
                        v = close[t, j] + log_transition[j, kk]
                        if v > top:
                            top = v
                            arg = j
                    enter[t, kk] = top
                    enter_from[t, kk] = arg
        state = 0
        for kk in range(1, k):
            if close[length, kk] > close[length, state]:
                state = kk
        best[row] = close[length, state]
        t = length
        while t > 0:
            d = close_d[t, state]
            for s in range(t - d, t):
                paths[row, s] = state
            t -= d
            if t > 0:
                state = enter_from[t, state]
        for s in range(length, t_max):
            paths[row, s] = -1


def hsmm_viterbi(initial: torch.Tensor, transition: torch.Tensor, duration: torch.Tensor,
                 log_lik: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The most probable state path of each sequence, over segmentations.

    Maximises ``p(z_1..z_T, x_1..x_T)`` where the last segment's probability is its
    survival ``P(d >= its length)`` (right-censored). Cost O(T K D + T K^2).

    Args:
        initial, transition, duration: as :func:`hsmm_forward_backward`.
        log_lik: ``[N, T_max, K]``.
        lengths: ``[N]``.

    Returns:
        ``(paths [N, T_max] int64, -1 at padding; best [N] the maximal log joint)``.
    """
    pi, a, p, ll, lens = _arrays(initial, transition, duration, log_lik, lengths)
    survival = np.cumsum(p[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(divide="ignore"):
        args = [np.ascontiguousarray(np.log(x)) for x in (pi, a, p, np.clip(survival, 0, 1))]
    n, t_max, _ = ll.shape
    paths = np.zeros((n, t_max), dtype=np.int64)
    best = np.zeros(n)
    _viterbi_rows(*args, ll, lens, paths, best)
    return torch.from_numpy(paths), torch.from_numpy(best)
