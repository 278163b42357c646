"""Compiled per-step recursions (numba): what a loop over time costs in C, from Python.

Shape letters: N rows (sequences), T steps (``T_max`` the longest), K states, M the real
steps of a batch in all. Arrays are float64 and C-contiguous.

Why a compiler. A recursion over time cannot be vectorised across its steps: the NumPy
kernels of :mod:`probseq.hmm.kernels` batch the *rows* of a step into one call, which pays
where many rows of similar length are alive, but one long sequence, or the long tail of a
ragged batch, costs a Python step per time step (microseconds against tens of nanoseconds
of arithmetic at K = 16). Here every sequence runs in one compiled loop, as hmmlearn's C++
does: a ragged batch costs its real steps, and a long sequence no more per step than a
batch. The max-product recursion (:func:`viterbi`) and the forward-backward recursion
(:func:`forward_backward`) are the same recursions as the torch references of
:mod:`probseq.hmm.inference`, which the tests compare them with.

Floating point: ``fastmath`` is limited to contraction and reassociation of sums (the
rounding of a dot product may differ from a sequential sum); infinities and NaN keep their
IEEE meaning, which the recursions need (``-inf`` for impossible moves).

The functions are compiled on first use and cached on disk (``cache=True``), so only the
first call after an installation pays the compilation (about a second each); this module is
imported lazily for the same reason.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

from probseq.hmm.kernels import FLUSH

# Threads: numba's 'workqueue' layer (always present). The OpenMP layer, numba's default
# where libgomp exists, leaves its threads spinning after each parallel loop; on a machine
# with few cores (and beside torch's own OpenMP threads) that spinning was measured to make
# the *following* unrelated calls up to ten times slower in CPU time. A layer chosen by the
# user (NUMBA_THREADING_LAYER) is left alone, and the parallel loops then run serially
# unless it is workqueue. workqueue must not be entered from two threads at once: a lock
# sends a concurrent caller to the serial loop.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_PARALLEL_LOCK = threading.Lock()


def _workqueue() -> bool:
    """Whether numba's parallel loops run (or will run) on the workqueue layer."""
    try:
        return numba.threading_layer() == "workqueue"
    except ValueError:  # no parallel loop launched yet: the configured layer will be used
        return numba.config.THREADING_LAYER == "workqueue"


def _run(serial, parallel, want: bool, *args) -> None:
    """``parallel(*args)`` when wanted, possible and not already running elsewhere, else
    ``serial(*args)`` (both compute the same thing)."""
    if want and _workqueue() and _PARALLEL_LOCK.acquire(blocking=False):
        try:
            parallel(*args)
        finally:
            _PARALLEL_LOCK.release()
        return
    serial(*args)

__all__ = ["viterbi", "forward_backward", "log_prob"]


@numba.njit(cache=True, nogil=True)
def _viterbi_rows(log_initial: np.ndarray, log_transition: np.ndarray, log_lik: np.ndarray,
                  lengths: np.ndarray, paths: np.ndarray, best: np.ndarray) -> None:
    n_rows, t_max, k = log_lik.shape
    delta = np.empty((t_max, k))
    new = np.empty(k)
    for r in range(n_rows):
        length = lengths[r]
        for j in range(k):
            delta[0, j] = log_initial[j] + log_lik[r, 0, j]
        for t in range(1, length):
            # The maximum over the previous state, one previous state at a time: the loop
            # over the next state j is elementwise (and vectorises), the maximum exact.
            for j in range(k):
                new[j] = -np.inf
            for i in range(k):
                d = delta[t - 1, i]
                for j in range(k):
                    v = d + log_transition[i, j]
                    if v > new[j]:
                        new[j] = v
            for j in range(k):
                delta[t, j] = new[j] + log_lik[r, t, j]
        end = length - 1
        state = 0
        for j in range(1, k):
            if delta[end, j] > delta[end, state]:
                state = j
        best[r] = delta[end, state]
        paths[r, end] = state
        # Backpointers of the chosen states only, as the first maximiser of the same sums
        # the forward pass maximised (bit for bit): ties resolve as a stored argmax would.
        for t in range(end, 0, -1):
            state = 0
            top = delta[t - 1, 0] + log_transition[0, paths[r, t]]
            for i in range(1, k):
                v = delta[t - 1, i] + log_transition[i, paths[r, t]]
                if v > top:
                    top = v
                    state = i
            paths[r, t - 1] = state
        for t in range(length, t_max):
            paths[r, t] = -1


def viterbi(log_initial: np.ndarray, log_transition: np.ndarray, log_lik: np.ndarray,
            lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max-product on a ragged batch (log space), one compiled loop per row.

    Args:
        log_initial: ``[K]``.
        log_transition: ``[K, K]`` (rows: from; ``-inf`` for impossible moves).
        log_lik: ``[N, T_max, K]`` emission log-likelihoods (values past a row's length are
            not read).
        lengths: ``[N]`` positive int lengths.

    Returns:
        ``(paths [N, T_max], log_joint [N])``: int64 paths with -1 at padded steps, and each
        path's log joint probability with its sequence (``-inf`` for a sequence of
        probability zero). Ties go to the lowest state index.
    """
    n_rows, t_max, _ = log_lik.shape
    paths = np.empty((n_rows, t_max), dtype=np.int64)
    best = np.empty(n_rows)
    _viterbi_rows(np.ascontiguousarray(log_initial, dtype=np.float64),
                  np.ascontiguousarray(log_transition, dtype=np.float64),
                  np.ascontiguousarray(log_lik, dtype=np.float64),
                  np.ascontiguousarray(lengths, dtype=np.int64), paths, best)
    return paths, best


@numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc", "nsz"})
def _forward_backward_range(r0: int, r1: int, initial: np.ndarray, transition: np.ndarray,
                            transition_t: np.ndarray, b_src: np.ndarray, index: np.ndarray,
                            starts: np.ndarray, lengths: np.ndarray, backward: bool,
                            keep: bool, flush: bool, block: int, min_mass: float,
                            post: np.ndarray, norm: np.ndarray, xi: np.ndarray,
                            ok: np.ndarray) -> None:
    k = transition.shape[0]
    pred = np.empty(k)
    beta = np.empty(k)
    for r in range(r0, r1):
        s = starts[r]
        e = s + lengths[r]
        ok[r] = True
        mass = 1.0
        # Forward, normalised every step: post[t] = P(z_t | x_<=t), norm[t] = c_t (without
        # ``keep``, post holds the last two steps only, at t % 2).
        for t in range(s, e):
            now = t if keep else t & 1
            if t == s:
                for j in range(k):
                    pred[j] = initial[j]
            else:
                before = t - 1 if keep else (t - 1) & 1
                for j in range(k):  # contiguous dot products: vectorised reductions
                    acc = 0.0
                    for i in range(k):
                        acc += post[before, i] * transition_t[j, i]
                    pred[j] = acc
            src = index[t]
            c = 0.0
            for j in range(k):
                v = pred[j] * b_src[src, j]
                post[now, j] = v
                c += v
            mass *= c
            if (t - s) % block == block - 1 or t == e - 1:
                if not mass >= min_mass:  # below the guard over this block of steps
                    ok[r] = False
                    break
                mass = 1.0
            if not c > 0:  # an impossible step
                ok[r] = False
                break
            norm[t] = c
            inv = 1.0 / c
            for j in range(k):
                v = post[now, j] * inv
                if flush and v < FLUSH:
                    v = 0.0
                post[now, j] = v
        if not (backward and ok[r]):
            continue
        # Backward with the forward normalisers: w_t = b_t * beta_t / c_t (in ``pred``),
        # beta_(t-1) = A w_t, and post[t] becomes P(z_t | x) = filtered * beta.
        for j in range(k):
            beta[j] = 1.0
        for t in range(e - 1, s - 1, -1):
            src = index[t]
            inv = 1.0 / norm[t]
            for j in range(k):
                pred[j] = b_src[src, j] * beta[j] * inv
            for j in range(k):
                post[t, j] *= beta[j]
            if t > s:
                for i in range(k):  # expected transitions (t - 1 -> t), before the scaling
                    f = post[t - 1, i]
                    for j in range(k):
                        xi[i, j] += f * pred[j]
                for i in range(k):  # A w_t
                    acc = 0.0
                    for j in range(k):
                        acc += transition[i, j] * pred[j]
                    beta[i] = acc
                if flush:
                    for i in range(k):
                        if beta[i] < FLUSH:
                            beta[i] = 0.0


# Two functions, not one compiled twice: numba's disk cache tells functions apart by name
# and line, not by the ``parallel`` flag.
@numba.njit(cache=True, nogil=True)
def _fb_serial(bounds: np.ndarray, initial: np.ndarray, transition: np.ndarray,
               transition_t: np.ndarray, b_src: np.ndarray, index: np.ndarray,
               starts: np.ndarray, lengths: np.ndarray, backward: bool, keep: bool,
               flush: bool, block: int, min_mass: float, post: np.ndarray, norm: np.ndarray,
               xi_parts: np.ndarray, ok: np.ndarray) -> None:
    for c in range(bounds.shape[0] - 1):  # runs of rows, each with its own counts
        _forward_backward_range(bounds[c], bounds[c + 1], initial, transition, transition_t,
                                b_src, index, starts, lengths, backward, keep, flush, block,
                                min_mass, post, norm, xi_parts[c], ok)


@numba.njit(cache=True, nogil=True, parallel=True)
def _fb_parallel(bounds: np.ndarray, initial: np.ndarray, transition: np.ndarray,
                 transition_t: np.ndarray, b_src: np.ndarray, index: np.ndarray,
                 starts: np.ndarray, lengths: np.ndarray, backward: bool, keep: bool,
                 flush: bool, block: int, min_mass: float, post: np.ndarray, norm: np.ndarray,
                 xi_parts: np.ndarray, ok: np.ndarray) -> None:
    for c in numba.prange(bounds.shape[0] - 1):  # as _fb_serial, runs in threads
        _forward_backward_range(bounds[c], bounds[c + 1], initial, transition, transition_t,
                                b_src, index, starts, lengths, backward, keep, flush, block,
                                min_mass, post, norm, xi_parts[c], ok)


#: the most chunks of rows the forward-backward cuts a batch into (each with its own
#: transition counts, summed in chunk order after the loop).
MAX_CHUNKS = 8


def row_chunks(lengths: np.ndarray, max_chunks: int = MAX_CHUNKS) -> np.ndarray:
    """``[C + 1]`` row boundaries cutting the rows into ``C <= max_chunks`` runs of about
    equal numbers of steps, chosen from the lengths alone (not from the number of threads),
    so that the chunked sums are the same whichever threads run them."""
    n = lengths.shape[0]
    c = max(1, min(max_chunks, n, int(lengths.sum()) // (PARALLEL_MIN_STEPS // 2) or 1))
    ends = np.cumsum(lengths)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, c) / c, side="left") + 1
    return np.unique(np.concatenate([[0], np.minimum(cuts, n), [n]])).astype(np.int64)


def forward_backward(initial: np.ndarray, transition: np.ndarray, b_src: np.ndarray,
                     index: np.ndarray, lengths: np.ndarray, backward: bool = True,
                     keep: bool = True, flush: bool = False, block: int = 16,
                     min_mass: float = 0.0, parallel: bool | None = None
                     ) -> dict[str, np.ndarray]:
    """The scaled forward(-backward) recursion on a ragged batch, normalised every step, one
    compiled loop per row; rows are packed one after the other (``M`` real steps in all).
    Runs of rows (:func:`row_chunks`) go to parallel threads where there are several, each
    with its own transition counts; the result does not depend on the number of threads.

    Args:
        initial: ``[K]`` the predicted distribution at each row's first step.
        transition: ``[K, K]``.
        b_src: ``[X, K]`` scaled emission likelihoods (``max_k b = 1``), gathered by
            ``index``: a ``[V + 1, K]`` table for symbols, or every step's own row.
        index: ``[M]`` the entry of ``b_src`` of each packed step (row 0's steps first).
        lengths: ``[N]`` positive.
        backward: False stops after the forward pass.
        keep: False (forward pass only) keeps no distributions: ``post`` is left out.
        flush: the flushing mode of :mod:`probseq.hmm.kernels` (parameters and scaled
            likelihoods below ``2**-340`` must already be zero; filtered and backward entries
            below it are set to zero), which keeps subnormal numbers out.
        block: the steps over which the guard is taken (counted from each row's start).
        min_mass: the guard: a row whose product of normalisers ``c_t`` over a block of
            steps (the mass of the unnormalised recursion started there, as the NumPy
            kernels normalise it) is below it is marked not ``ok``, as is a row with an
            impossible step; their outputs are meaningless and the caller recomputes them.
            The flushing mode needs :data:`probseq.hmm.kernels.MIN_MASS_FLUSH`, for the
            error bound of :mod:`probseq.hmm.kernels`; the plain mode is exact without one.
        parallel: runs of rows in parallel threads; None: where there are several threads
            and runs.

    Returns:
        A dict: ``log_c [M]`` (``log p(x_t | x_<t)`` up to the emission shift), ``ok [N]``,
        with ``keep`` ``post [M, K]`` (filtered distributions, smoothed with ``backward``),
        and with ``backward`` ``xi [K, K]``, the expected transition counts summed over the
        rows that are ``ok``.
    """
    k = transition.shape[0]
    m = index.shape[0]
    keep = keep or backward
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    starts = np.zeros(lengths.shape[0], dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    a = np.ascontiguousarray(transition, dtype=np.float64)
    norm = np.ones(m)  # rows that are not ok leave ones after their stop
    out = {"post": np.empty((m if keep else 2, k)), "ok": np.empty(lengths.shape[0], dtype=bool),
           "xi": np.zeros((k, k))}
    bounds = row_chunks(lengths)
    xi_parts = np.zeros((bounds.shape[0] - 1, k, k))
    if parallel is None:
        parallel = bounds.shape[0] > 2 and numba.get_num_threads() > 1
    _run(_fb_serial, _fb_parallel, parallel, bounds,
         np.ascontiguousarray(initial, dtype=np.float64), a, np.ascontiguousarray(a.T),
         np.ascontiguousarray(b_src), np.ascontiguousarray(index, dtype=np.int64), starts,
         lengths, bool(backward), bool(keep), bool(flush), int(block), float(min_mass),
         out["post"], norm, xi_parts, out["ok"])
    xi_parts.sum(0, out=out["xi"])
    out["log_c"] = np.log(norm, out=norm)
    if backward:
        out["xi"] *= a
    else:
        del out["xi"]
    if not keep:
        del out["post"]
    return out


def _log_prob_row(initial: np.ndarray, transition_t: np.ndarray, b_src: np.ndarray,
                  shift_src: np.ndarray, index: np.ndarray, s: int, length: int,
                  flush: bool, block: int, min_mass: float, v: np.ndarray,
                  w: np.ndarray) -> tuple[float, bool]:
    """One row of :func:`log_prob` (``transition_t`` is ``A^T``; ``v``, ``w`` are ``[K]``
    work buffers)."""
    k = transition_t.shape[0]
    acc = 0.0
    shift = 0.0
    src = index[s]
    shift += shift_src[src]
    for j in range(k):
        x = initial[j] * b_src[src, j]
        if flush and x < FLUSH:
            x = 0.0
        v[j] = x
    for t in range(1, length):
        if t % block == 0:  # normalise once per block, behind the guard
            mass = 0.0
            for j in range(k):
                mass += v[j]
            if not mass >= min_mass:
                return 0.0, False
            acc += np.log(mass)
            inv = 1.0 / mass
            for j in range(k):
                v[j] *= inv
        src = index[s + t]
        shift += shift_src[src]
        # w = v A as K contiguous dot products with the columns of A (vectorised reductions).
        for j in range(k):
            dot = 0.0
            for i in range(k):
                dot += v[i] * transition_t[j, i]
            w[j] = dot
        for j in range(k):
            x = w[j] * b_src[src, j]
            if flush and x < FLUSH:
                x = 0.0
            v[j] = x
    mass = 0.0
    for j in range(k):
        mass += v[j]
    if not mass >= min_mass:
        return 0.0, False
    return acc + np.log(mass) + shift, True


_FASTMATH = {"contract", "reassoc", "nsz"}
_log_prob_row_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(_log_prob_row)


@numba.njit(cache=True, nogil=True)
def _log_prob_serial(initial: np.ndarray, transition_t: np.ndarray, b_src: np.ndarray,
                     shift_src: np.ndarray, index: np.ndarray, starts: np.ndarray,
                     lengths: np.ndarray, flush: bool, block: int, min_mass: float,
                     out: np.ndarray, ok: np.ndarray) -> None:
    k = transition_t.shape[0]
    v = np.empty(k)
    w = np.empty(k)
    for r in range(starts.shape[0]):
        out[r], ok[r] = _log_prob_row_jit(initial, transition_t, b_src, shift_src, index,
                                          starts[r], lengths[r], flush, block, min_mass, v, w)


@numba.njit(cache=True, nogil=True, parallel=True)
def _log_prob_parallel(initial: np.ndarray, transition_t: np.ndarray, b_src: np.ndarray,
                       shift_src: np.ndarray, index: np.ndarray, starts: np.ndarray,
                       lengths: np.ndarray, flush: bool, block: int, min_mass: float,
                       out: np.ndarray, ok: np.ndarray) -> None:
    k = transition_t.shape[0]
    for r in numba.prange(starts.shape[0]):  # as _log_prob_serial, rows in threads
        v = np.empty(k)
        w = np.empty(k)
        out[r], ok[r] = _log_prob_row_jit(initial, transition_t, b_src, shift_src, index,
                                          starts[r], lengths[r], flush, block, min_mass, v, w)


#: the fewest real steps, in all, for which rows run in parallel threads (below it the
#: threads' start costs more than they save).
PARALLEL_MIN_STEPS = 20_000


def log_prob(initial: np.ndarray, transition: np.ndarray, b_src: np.ndarray,
             shift_src: np.ndarray, index: np.ndarray, starts: np.ndarray,
             lengths: np.ndarray, flush: bool = False, block: int = 16,
             min_mass: float = 0.0, parallel: bool | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``[N]`` log-likelihoods by the forward recursion normalised once per block, one
    compiled loop per row (rows in parallel threads where that pays).

    The recursion of :func:`probseq.hmm.kernels.forward_log_mass`, row by row: the
    unnormalised ``alpha_t = (alpha_(t-1) A) * b_t`` is normalised every ``block`` steps
    (counted from the row's start) after checking that its mass is at least ``min_mass``;
    since the mass never increases within a block (``b <= 1``, ``A`` stochastic or, flushed,
    sub-stochastic), that bounds every intermediate mass (the module docstring of
    :mod:`probseq.hmm.kernels`). One logarithm per block, none per step.

    Args:
        initial: ``[K]``.
        transition: ``[K, K]``.
        b_src: ``[X, K]`` scaled emission likelihoods (``max_k b = 1``), gathered by
            ``index``.
        shift_src: ``[X]`` the shifts ``m`` of ``b_src``'s entries.
        index: ``[*]`` the entry of ``b_src`` of each step: row ``r``'s steps are
            ``index[starts[r]:starts[r] + lengths[r]]``.
        starts: ``[N]``.
        lengths: ``[N]`` positive.
        flush: the flushing mode of :mod:`probseq.hmm.kernels` (parameters and ``b_src``
            below :data:`probseq.hmm.kernels.FLUSH` must already be zero).
        block: steps between normalisations.
        min_mass: the guard (:data:`probseq.hmm.kernels.MIN_MASS`, or
            :data:`probseq.hmm.kernels.MIN_MASS_FLUSH` when flushing).
        parallel: rows in parallel threads; None decides by the number of rows and steps.

    Returns:
        ``(log_prob [N], ok [N])``: rows not ``ok`` (a mass below the guard, an impossible
        step) have a meaningless log-likelihood; the caller recomputes them.
    """
    n = lengths.shape[0]
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if parallel is None:
        parallel = (n > 1 and numba.get_num_threads() > 1
                    and int(lengths.sum()) >= PARALLEL_MIN_STEPS)
    out = np.empty(n)
    ok = np.empty(n, dtype=np.bool_)
    _run(_log_prob_serial, _log_prob_parallel, parallel,
         np.ascontiguousarray(initial, dtype=np.float64),
         np.ascontiguousarray(np.asarray(transition, dtype=np.float64).T),
         np.ascontiguousarray(b_src, dtype=np.float64),
         np.ascontiguousarray(shift_src, dtype=np.float64),
         np.ascontiguousarray(index, dtype=np.int64),
         np.ascontiguousarray(starts, dtype=np.int64), lengths, bool(flush), int(block),
         float(min_mass), out, ok)
    return out, ok
