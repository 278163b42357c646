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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from probseq.hmm.kernels import FLUSH

# Threads. The compiled loops release the GIL (``nogil``), so a pool of ordinary threads
# runs groups of rows side by side; each thread calls the serial loop on its share. numba's own
# parallel loops (``prange``) were measured erratic here: on two cores its workqueue layer
# took 5-10 ms for a batch that two plain threads finish in 4.9 ms every time, and its
# OpenMP layer leaves spinning threads that slowed later unrelated calls tenfold.
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def num_threads() -> int:
    """The threads the compiled loops use: numba's configured count (``NUMBA_NUM_THREADS``,
    by default the CPUs this process may run on)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _executor(workers: int) -> ThreadPoolExecutor:
    """The module's pool (made again in a forked child, whose copy has no threads)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid() or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probseq")
            _POOL_PID = os.getpid()
        return _POOL


def run_parts(fn: Callable[[int, int], None], bounds: np.ndarray) -> None:
    """``fn(bounds[i], bounds[i + 1])`` for every part ``i``, in parallel threads (the
    calling thread runs the first part). ``fn`` must release the GIL to gain anything, and
    the parts must write to disjoint outputs."""
    parts = [(int(bounds[i]), int(bounds[i + 1])) for i in range(bounds.shape[0] - 1)]
    if len(parts) == 1:
        fn(*parts[0])
        return
    futures = [_executor(len(parts) - 1).submit(fn, *part) for part in parts[1:]]
    try:
        fn(*parts[0])
    finally:
        for future in futures:
            future.result()


def balanced_cuts(costs: np.ndarray, parts: int) -> np.ndarray:
    """``[C + 1]`` cuts of a sequence of items into ``C <= parts`` contiguous runs of about
    equal total cost (every run non-empty)."""
    n = costs.shape[0]
    parts = max(1, min(parts, n))
    ends = np.cumsum(costs, dtype=np.float64)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, parts) / parts, side="left") + 1
    return np.unique(np.concatenate([[0], np.minimum(cuts, n), [n]])).astype(np.int64)


__all__ = ["viterbi", "forward_backward", "log_prob", "num_threads"]


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
    # The counts are summed in a buffer of this call's own and added to ``xi`` at the end:
    # runs in parallel threads writing every step to neighbouring parts of one array would
    # share cache lines.
    counts = np.zeros((k, k))
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
                        counts[i, j] += f * pred[j]
                for i in range(k):  # A w_t
                    acc = 0.0
                    for j in range(k):
                        acc += transition[i, j] * pred[j]
                    beta[i] = acc
                if flush:
                    for i in range(k):
                        if beta[i] < FLUSH:
                            beta[i] = 0.0
    xi += counts


@numba.njit(cache=True, nogil=True)
def _fb_runs(bounds: np.ndarray, initial: np.ndarray, transition: np.ndarray,
             transition_t: np.ndarray, b_src: np.ndarray, index: np.ndarray,
             starts: np.ndarray, lengths: np.ndarray, backward: bool, keep: bool,
             flush: bool, block: int, min_mass: float, post: np.ndarray, norm: np.ndarray,
             xi_parts: np.ndarray, ok: np.ndarray) -> None:
    for c in range(bounds.shape[0] - 1):  # runs of rows, each with its own counts
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
    return balanced_cuts(lengths,
                         min(max_chunks, int(lengths.sum()) // (PARALLEL_MIN_STEPS // 2)))


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
        parallel: runs of rows in parallel threads (:func:`num_threads`); None: where
            there are several runs.

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
        parallel = bounds.shape[0] > 2
    args = (np.ascontiguousarray(initial, dtype=np.float64), a, np.ascontiguousarray(a.T),
            np.ascontiguousarray(b_src), np.ascontiguousarray(index, dtype=np.int64), starts,
            lengths, bool(backward), bool(keep), bool(flush), int(block), float(min_mass),
            out["post"], norm)

    def runs(c0: int, c1: int) -> None:
        _fb_runs(bounds[c0:c1 + 1], *args, xi_parts[c0:c1], out["ok"])

    run_parts(runs, balanced_cuts(np.diff(bounds), num_threads() if parallel else 1))
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


def _log_prob_back(transition: np.ndarray, b_src: np.ndarray, shift_src: np.ndarray,
                   index: np.ndarray, s: int, lo: int, length: int, block: int,
                   min_mass: float, beta: np.ndarray, u: np.ndarray) -> tuple[float, bool]:
    """The backward recursion over steps ``lo..length - 1`` of the row starting at ``s``:
    leaves ``beta`` holding ``p(x_lo.. | z_(lo-1) = k)`` divided by ``exp(returned value)``
    with its maximum 1, and returns ``(log scale + shift of those steps, ok)``.

    ``beta_(t-1) = A (b_t * beta_t)``, normalised by its maximum every ``block`` steps and at
    the end, behind the guard ``max >= min_mass``. The maximum never increases between two
    normalisations (``A`` stochastic, ``b <= 1``), so in the plain mode of
    :mod:`probseq.hmm.kernels` (every ``A_ij >= a_min`` with ``a_min**2 b_min >= MIN_MASS``)
    every product ``A_ij b_j beta_j`` is at least ``MIN_MASS`` times a maximum that is at
    least ``MIN_MASS``: no subnormal arises, as in the forward loop."""
    k = transition.shape[0]
    acc = 0.0
    shift = 0.0
    for j in range(k):
        beta[j] = 1.0
    n = 0
    for t in range(length - 1, lo - 1, -1):
        src = index[s + t]
        shift += shift_src[src]
        for j in range(k):
            u[j] = b_src[src, j] * beta[j]
        for i in range(k):  # A u as K contiguous dot products with the rows of A
            dot = 0.0
            for j in range(k):
                dot += transition[i, j] * u[j]
            beta[i] = dot
        n += 1
        if n % block == 0 or t == lo:
            top = 0.0
            for i in range(k):
                top = max(top, beta[i])
            if not (top >= min_mass and top > 0.0):
                return 0.0, False
            acc += np.log(top)
            inv = 1.0 / top
            for i in range(k):
                beta[i] *= inv
    return acc + shift, True


_FASTMATH = {"contract", "reassoc", "nsz"}
_log_prob_row_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(_log_prob_row)
_log_prob_back_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(_log_prob_back)


@numba.njit(cache=True, nogil=True)
def _log_prob_tasks(q0: int, q1: int, initial: np.ndarray, transition: np.ndarray,
                    transition_t: np.ndarray, b_src: np.ndarray, shift_src: np.ndarray,
                    index: np.ndarray, starts: np.ndarray, task_row: np.ndarray,
                    task_lo: np.ndarray, task_hi: np.ndarray, flush: bool, block: int,
                    min_mass: float, value: np.ndarray, ok: np.ndarray,
                    vec: np.ndarray) -> None:
    """Tasks ``q0..q1 - 1`` of :func:`log_prob`: ``task_lo == 0`` is the forward loop over a
    row's steps ``0..task_hi - 1`` (``vec`` keeps its last unnormalised ``alpha``), else the
    backward loop over steps ``task_lo..task_hi - 1`` (``vec`` keeps ``beta``)."""
    k = transition.shape[0]
    # Work buffers of this call's own (not rows of ``vec``): two threads writing every step
    # to neighbouring rows of one array would share cache lines.
    v = np.empty(k)
    w = np.empty(k)
    for q in range(q0, q1):
        s = starts[task_row[q]]
        if task_lo[q] == 0:
            value[q], ok[q] = _log_prob_row_jit(initial, transition_t, b_src, shift_src, index,
                                                s, task_hi[q], flush, block, min_mass, v, w)
        else:
            value[q], ok[q] = _log_prob_back_jit(transition, b_src, shift_src, index, s,
                                                 task_lo[q], task_hi[q], block, min_mass, v, w)
        vec[q] = v


#: the fewest real steps for which the work is shared by parallel threads (below it the
#: threads' start costs more than they save), and the shortest row that is split.
PARALLEL_MIN_STEPS = 20_000


def log_prob(initial: np.ndarray, transition: np.ndarray, b_src: np.ndarray,
             shift_src: np.ndarray, index: np.ndarray, starts: np.ndarray,
             lengths: np.ndarray, flush: bool = False, block: int = 16,
             min_mass: float = 0.0, parallel: bool | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``[N]`` log-likelihoods by the forward recursion normalised once per block, one
    compiled loop per row, rows in parallel threads where that pays.

    The recursion of :func:`probseq.hmm.kernels.forward_log_mass`, row by row: the
    unnormalised ``alpha_t = (alpha_(t-1) A) * b_t`` is normalised every ``block`` steps
    (counted from the row's start) after checking that its mass is at least ``min_mass``;
    since the mass never increases within a block (``b <= 1``, ``A`` stochastic or, flushed,
    sub-stochastic), that bounds every intermediate mass (the module docstring of
    :mod:`probseq.hmm.kernels`). One logarithm per block, none per step.

    A row of at least :data:`PARALLEL_MIN_STEPS` steps and half the batch's steps (one long
    sequence) is split in two halves that meet in the middle: the forward loop runs over
    its first half and the backward loop over its second half, side by side, and
    ``p(x) = p(x_<m) sum_k p(z_(m-1) = k | x_<m) p(x_>=m | z_(m-1) = k)`` joins them (an
    exact identity; every term is positive, so the join adds one rounding). That is done in
    the plain mode only (``flush`` False), where no subnormal can arise on either side, and
    whatever the number of threads, so that the result depends on the data alone.

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
            :data:`probseq.hmm.kernels.MIN_MASS_FLUSH` when flushing); the halves of a split
            row take it too, and so does their join.
        parallel: work shared by parallel threads (:func:`num_threads`); None decides by
            the number of steps.

    Returns:
        ``(log_prob [N], ok [N])``: rows not ``ok`` (a mass below the guard, an impossible
        step) have a meaningless log-likelihood; the caller recomputes them.
    """
    n = lengths.shape[0]
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if parallel is None:
        parallel = total >= PARALLEL_MIN_STEPS
    a = np.ascontiguousarray(transition, dtype=np.float64)
    k = a.shape[0]
    split = ((lengths >= PARALLEL_MIN_STEPS) & (2 * lengths >= total) if not flush
             else np.zeros(n, dtype=bool))
    # Tasks: one per row, two per split row (its forward half, then its backward half).
    per_row = 1 + split.astype(np.int64)
    task_row = np.repeat(np.arange(n, dtype=np.int64), per_row)
    task_hi = lengths[task_row].copy()
    task_lo = np.zeros_like(task_hi)
    first = np.cumsum(per_row) - per_row  # each row's first task
    middle = (lengths[split] + 1) // 2  # m - 1 forward products against length - m backward
    task_hi[first[split]] = middle
    task_lo[first[split] + 1] = middle
    q = task_row.shape[0]
    value = np.empty(q)
    task_ok = np.empty(q, dtype=np.bool_)
    vec = np.empty((q, k))
    args = (np.ascontiguousarray(initial, dtype=np.float64), a, np.ascontiguousarray(a.T),
            np.ascontiguousarray(b_src, dtype=np.float64),
            np.ascontiguousarray(shift_src, dtype=np.float64),
            np.ascontiguousarray(index, dtype=np.int64),
            np.ascontiguousarray(starts, dtype=np.int64), task_row, task_lo, task_hi,
            bool(flush), int(block), float(min_mass), value, task_ok, vec)

    def tasks(q0: int, q1: int) -> None:
        _log_prob_tasks(q0, q1, *args)

    run_parts(tasks, balanced_cuts(task_hi - task_lo, num_threads() if parallel else 1))
    out = value[first]
    ok = task_ok[first].copy()
    if split.any():
        fwd = first[split]
        alpha, beta = vec[fwd], vec[fwd + 1]
        # p(x_>=m | x_<m) = p_(m-1) . beta with p the filtered distribution at m - 1.
        join = np.einsum("rk,rk->r", alpha, beta) / alpha.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[split] += value[fwd + 1] + np.log(join)
        ok[split] &= task_ok[fwd + 1] & (join >= min_mass) & (join > 0)
    return out, ok
