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

Threads and latency. Rows, runs of rows, and the two halves of one long sequence (see
:func:`log_prob`) go to the threads of :mod:`probseq._parallel`, each running a loop here
that releases the GIL. Within a thread, one recursion waits on the latency of its own dot
products every step; the log-likelihood therefore runs four rows of similar length in
lockstep, and every matrix-vector product computes four outputs at a time
(:func:`_matvec`). How the work is cut depends on the lengths only, never on the number of
threads, so a result does not depend on the machine; a row's last bits can depend on the
rows it is grouped with (a lockstep group sums in another order than a lone row).

Floating point: ``fastmath`` is limited to contraction and reassociation of sums (the
rounding of a dot product may differ from a sequential sum); infinities and NaN keep their
IEEE meaning, which the recursions need (``-inf`` for impossible moves).

The functions are compiled on first use and cached on disk (``cache=True``), so only the
first call after an installation pays the compilation (about a second each); this module is
imported lazily for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from probseq._parallel import PARTS_PER_THREAD, balanced_cuts, num_threads, run_parts
from probseq.hmm.kernels import FLUSH

__all__ = ["viterbi", "forward_backward", "log_prob"]


@numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc", "nsz"}, inline="always")
def _matvec(m: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """``out = m @ x`` as contiguous dot products with the rows of ``m`` (vectorised
    reductions), four rows at a time: the four share each load of ``x`` and their sums
    overlap (measured 25-30% faster than one row at a time at K = 16). Inlined into its
    callers (numba's ``inline="always"``: another 10-15%)."""
    k = m.shape[0]
    k4 = k - k % 4
    for j in range(0, k4, 4):
        d0 = 0.0
        d1 = 0.0
        d2 = 0.0
        d3 = 0.0
        for i in range(k):
            xi = x[i]
            d0 += xi * m[j, i]
            d1 += xi * m[j + 1, i]
            d2 += xi * m[j + 2, i]
            d3 += xi * m[j + 3, i]
        out[j] = d0
        out[j + 1] = d1
        out[j + 2] = d2
        out[j + 3] = d3
    for j in range(k4, k):
        dot = 0.0
        for i in range(k):
            dot += x[i] * m[j, i]
        out[j] = dot


@numba.njit(cache=True, nogil=True)
def _viterbi_rows(r0: int, r1: int, log_initial: np.ndarray, log_transition: np.ndarray,
                  log_lik: np.ndarray, lengths: np.ndarray, paths: np.ndarray,
                  best: np.ndarray) -> None:
    _, t_max, k = log_lik.shape
    delta = np.empty((t_max, k))
    new = np.empty(k)
    for r in range(r0, r1):
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
    """Max-product on a ragged batch (log space), one compiled loop per row, rows in
    parallel threads where there are many steps.

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
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    args = (np.ascontiguousarray(log_initial, dtype=np.float64),
            np.ascontiguousarray(log_transition, dtype=np.float64),
            np.ascontiguousarray(log_lik, dtype=np.float64), lengths, paths, best)

    def rows(r0: int, r1: int) -> None:
        _viterbi_rows(r0, r1, *args)

    threads = num_threads() if lengths.sum() >= PARALLEL_MIN_STEPS else 1
    run_parts(rows, balanced_cuts(lengths, PARTS_PER_THREAD * threads), threads)
    return paths, best


@numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc", "nsz"})
def _forward_backward_range(r0: int, r1: int, initial: np.ndarray, transition: np.ndarray,
                            transition_t: np.ndarray, b_src: np.ndarray, index: np.ndarray,
                            starts: np.ndarray, lengths: np.ndarray, backward: bool,
                            keep: bool, flush: bool, block: int, min_mass: float,
                            post: np.ndarray, norm: np.ndarray, xi: np.ndarray,
                            by_source: np.ndarray, ok: np.ndarray) -> None:
    k = transition.shape[0]
    pred = np.empty(k)
    beta = np.empty(k)
    # The counts are summed in buffers of this call's own and added to ``xi`` (and
    # ``by_source``) at the end: runs in parallel threads writing every step to neighbouring
    # parts of one array would share cache lines.
    counts = np.zeros((k, k))
    sources = np.zeros(by_source.shape)
    per_source = by_source.shape[0] > 0
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
                _matvec(transition_t, post[before], pred)
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
            if per_source:
                for j in range(k):
                    sources[src, j] += post[t, j]
            if t > s:
                for i in range(k):  # expected transitions (t - 1 -> t), before the scaling
                    f = post[t - 1, i]
                    for j in range(k):
                        counts[i, j] += f * pred[j]
                _matvec(transition, pred, beta)  # A w_t
                if flush:
                    for i in range(k):
                        if beta[i] < FLUSH:
                            beta[i] = 0.0
    xi += counts
    by_source += sources


@numba.njit(cache=True, nogil=True)
def _fb_runs(bounds: np.ndarray, initial: np.ndarray, transition: np.ndarray,
             transition_t: np.ndarray, b_src: np.ndarray, index: np.ndarray,
             starts: np.ndarray, lengths: np.ndarray, backward: bool, keep: bool,
             flush: bool, block: int, min_mass: float, post: np.ndarray, norm: np.ndarray,
             xi_parts: np.ndarray, source_parts: np.ndarray, ok: np.ndarray) -> None:
    for c in range(bounds.shape[0] - 1):  # runs of rows, each with its own counts
        _forward_backward_range(bounds[c], bounds[c + 1], initial, transition, transition_t,
                                b_src, index, starts, lengths, backward, keep, flush, block,
                                min_mass, post, norm, xi_parts[c], source_parts[c], ok)


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
                     min_mass: float = 0.0, parallel: bool | None = None,
                     by_source: bool = False) -> dict[str, np.ndarray]:
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
        by_source: with ``backward``, also sum the smoothed distributions by their entry
            of ``b_src`` (for a symbol table: the expected emission counts, without a pass
            over ``post``).

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
    source_parts = np.zeros((bounds.shape[0] - 1,
                             b_src.shape[0] if backward and by_source else 0, k))
    if parallel is None:
        parallel = bounds.shape[0] > 2
    args = (np.ascontiguousarray(initial, dtype=np.float64), a, np.ascontiguousarray(a.T),
            np.ascontiguousarray(b_src), np.ascontiguousarray(index, dtype=np.int64), starts,
            lengths, bool(backward), bool(keep), bool(flush), int(block), float(min_mass),
            out["post"], norm)

    def runs(c0: int, c1: int) -> None:
        _fb_runs(bounds[c0:c1 + 1], *args, xi_parts[c0:c1], source_parts[c0:c1], out["ok"])

    run_parts(runs, np.arange(bounds.shape[0]), num_threads() if parallel else 1)
    xi_parts.sum(0, out=out["xi"])
    if backward and by_source:
        out["by_source"] = source_parts.sum(0)
    out["log_c"] = np.log(norm, out=norm)
    if backward:
        out["xi"] *= a
    else:
        del out["xi"]
    if not keep:
        del out["post"]
    return out


def _forward_start(initial: np.ndarray, b_src: np.ndarray, shift_src: np.ndarray,
                   index: np.ndarray, s: int, flush: bool, v: np.ndarray) -> float:
    """``v = initial * b`` at the first step of the row starting at ``s``; returns that
    step's shift."""
    src = index[s]
    for j in range(initial.shape[0]):
        x = initial[j] * b_src[src, j]
        if flush and x < FLUSH:
            x = 0.0
        v[j] = x
    return shift_src[src]


def _forward_end(v: np.ndarray, min_mass: float) -> tuple[float, bool]:
    """``(log sum v, ok)``, behind the guard."""
    mass = 0.0
    for j in range(v.shape[0]):
        mass += v[j]
    if not mass >= min_mass:
        return 0.0, False
    return np.log(mass), True


def _forward_steps(transition_t: np.ndarray, b_src: np.ndarray, shift_src: np.ndarray,
                   index: np.ndarray, s: int, t0: int, t1: int, flush: bool, block: int,
                   min_mass: float, v: np.ndarray, w: np.ndarray) -> tuple[float, float, bool]:
    """Steps ``t0..t1 - 1`` (``t0 >= 1``, counted from the row's start ``s``) of the forward
    loop of :func:`log_prob` on ``v``; returns ``(sum of log normalisers, sum of shifts,
    ok)`` (``transition_t`` is ``A^T``, ``w`` a ``[K]`` work buffer)."""
    k = transition_t.shape[0]
    acc = 0.0
    shift = 0.0
    for t in range(t0, t1):
        if t % block == 0:  # normalise once per block, behind the guard
            mass = 0.0
            for j in range(k):
                mass += v[j]
            if not mass >= min_mass:
                return 0.0, 0.0, False
            acc += np.log(mass)
            inv = 1.0 / mass
            for j in range(k):
                v[j] *= inv
        src = index[s + t]
        shift += shift_src[src]
        _matvec(transition_t, v, w)
        for j in range(k):
            x = w[j] * b_src[src, j]
            if flush and x < FLUSH:
                x = 0.0
            v[j] = x
    return acc, shift, True


def _forward_steps4(transition_t: np.ndarray, b_src: np.ndarray, shift_src: np.ndarray,
                    index: np.ndarray, s4: np.ndarray, t0: int, t1: int, flush: bool,
                    block: int, min_mass: float, v4: np.ndarray, w4: np.ndarray,
                    acc4: np.ndarray, shift4: np.ndarray, ok4: np.ndarray) -> None:
    """:func:`_forward_steps` on four rows in lockstep (rows starting at ``s4 [4]``, state
    ``v4 [4, K]``), adding to ``acc4``, ``shift4`` and clearing ``ok4`` of a row below the
    guard (whose loop goes on, finite, and is not read). One recursion per step waits on
    the latency of its own dot products; four independent ones fill those waits (measured
    1.85x the throughput of one at K = 16), and share each load of ``A``."""
    k = transition_t.shape[0]
    for t in range(t0, t1):
        if t % block == 0:
            for r in range(4):
                mass = 0.0
                for j in range(k):
                    mass += v4[r, j]
                if not mass >= min_mass:
                    ok4[r] = False
                    if not mass > 0.0:
                        mass = 1.0
                acc4[r] += np.log(mass)
                inv = 1.0 / mass
                for j in range(k):
                    v4[r, j] *= inv
        for j in range(k):
            d0 = 0.0
            d1 = 0.0
            d2 = 0.0
            d3 = 0.0
            for i in range(k):
                a = transition_t[j, i]
                d0 += v4[0, i] * a
                d1 += v4[1, i] * a
                d2 += v4[2, i] * a
                d3 += v4[3, i] * a
            w4[0, j] = d0
            w4[1, j] = d1
            w4[2, j] = d2
            w4[3, j] = d3
        for r in range(4):
            src = index[s4[r] + t]
            shift4[r] += shift_src[src]
            for j in range(k):
                x = w4[r, j] * b_src[src, j]
                if flush and x < FLUSH:
                    x = 0.0
                v4[r, j] = x


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
        _matvec(transition, u, beta)
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


def _jit(fn: Callable) -> Callable:
    return numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(fn)


_forward_start_jit = _jit(_forward_start)
_forward_end_jit = _jit(_forward_end)
_forward_steps_jit = _jit(_forward_steps)
_forward_steps4_jit = _jit(_forward_steps4)
_log_prob_back_jit = _jit(_log_prob_back)


@numba.njit(cache=True, nogil=True)
def _log_prob_groups(g0: int, g1: int, groups: np.ndarray, initial: np.ndarray,
                     transition: np.ndarray, transition_t: np.ndarray, b_src: np.ndarray,
                     shift_src: np.ndarray, index: np.ndarray, starts: np.ndarray,
                     item_row: np.ndarray, item_lo: np.ndarray, item_hi: np.ndarray,
                     flush: bool, block: int, min_mass: float, value: np.ndarray,
                     ok: np.ndarray, vec: np.ndarray) -> None:
    """Groups ``g0..g1 - 1`` of :func:`log_prob`'s items (group ``g`` is items
    ``groups[g]..groups[g + 1] - 1``). An item is a row's steps ``item_lo..item_hi - 1``:
    ``item_lo == 0`` the forward loop from the row's start, else the backward loop. A group
    of several items (whole rows, at most four) runs in lockstep over their common steps;
    a lone item keeps its last vector (``alpha`` or ``beta``) in ``vec``."""
    k = transition.shape[0]
    # Work buffers of this call's own (not rows of ``vec``): two threads writing every step
    # to neighbouring rows of one array would share cache lines.
    v = np.empty(k)
    w = np.empty(k)
    v4 = np.empty((4, k))
    w4 = np.empty((4, k))
    s4 = np.empty(4, dtype=np.int64)
    acc4 = np.empty(4)
    shift4 = np.empty(4)
    ok4 = np.empty(4, dtype=np.bool_)
    for g in range(g0, g1):
        q0 = groups[g]
        n_items = groups[g + 1] - q0
        if n_items == 1:
            s = starts[item_row[q0]]
            if item_lo[q0] == 0:
                shift = _forward_start_jit(initial, b_src, shift_src, index, s, flush, v)
                acc, more, good = _forward_steps_jit(transition_t, b_src, shift_src, index, s,
                                                     1, item_hi[q0], flush, block, min_mass,
                                                     v, w)
                end, fine = _forward_end_jit(v, min_mass)
                value[q0] = acc + end + shift + more
                ok[q0] = good and fine
            else:
                value[q0], ok[q0] = _log_prob_back_jit(transition, b_src, shift_src, index, s,
                                                       item_lo[q0], item_hi[q0], block,
                                                       min_mass, v, w)
            vec[q0] = v
            continue
        # Whole rows in lockstep (a group of fewer than four repeats its last row, unread).
        common = item_hi[q0]
        for r in range(4):
            q = q0 + min(r, n_items - 1)
            s4[r] = starts[item_row[q]]
            shift4[r] = _forward_start_jit(initial, b_src, shift_src, index, s4[r], flush,
                                           v4[r])
            acc4[r] = 0.0
            ok4[r] = True
            common = min(common, item_hi[q])
        _forward_steps4_jit(transition_t, b_src, shift_src, index, s4, 1, common, flush,
                            block, min_mass, v4, w4, acc4, shift4, ok4)
        for r in range(n_items):  # each row's own remaining steps, then its end
            q = q0 + r
            for j in range(k):
                v[j] = v4[r, j]
            acc, more, good = _forward_steps_jit(transition_t, b_src, shift_src, index, s4[r],
                                                 common, item_hi[q], flush, block, min_mass,
                                                 v, w)
            end, fine = _forward_end_jit(v, min_mass)
            value[q] = acc4[r] + acc + end + shift4[r] + more
            ok[q] = ok4[r] and good and fine


#: whole rows run in lockstep groups of this many (:func:`_forward_steps4`).
GROUP = 4


#: the fewest real steps for which the work is shared by parallel threads (below it the
#: threads' start costs more than they save), and the shortest row that is split.
PARALLEL_MIN_STEPS = 20_000


def log_prob(initial: np.ndarray, transition: np.ndarray, b_src: np.ndarray,
             shift_src: np.ndarray, index: np.ndarray, starts: np.ndarray,
             lengths: np.ndarray, flush: bool = False, block: int = 16,
             min_mass: float = 0.0, parallel: bool | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``[N]`` log-likelihoods by the forward recursion normalised once per block, one
    compiled loop per row (rows of similar length four at a time in lockstep), rows in
    parallel threads where that pays.

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
    # Items: the halves of split rows (forward, then backward), then the other rows by
    # decreasing length, so that lockstep groups of GROUP rows have similar lengths.
    halves = np.nonzero(split)[0]
    whole = np.nonzero(~split)[0]
    whole = whole[np.argsort(-lengths[whole], kind="stable")]
    item_row = np.concatenate([np.repeat(halves, 2), whole]).astype(np.int64)
    item_hi = lengths[item_row].copy()
    item_lo = np.zeros_like(item_hi)
    middle = (lengths[halves] + 1) // 2  # m - 1 forward products against length - m backward
    fwd = 2 * np.arange(halves.shape[0])
    item_hi[fwd] = middle
    item_lo[fwd + 1] = middle
    # Groups: each half alone; whole rows by GROUP (a remainder of 2 runs alone).
    full, rest = divmod(whole.shape[0], GROUP)
    sizes = np.concatenate([np.ones(2 * halves.shape[0], dtype=np.int64),
                            np.full(full, GROUP, dtype=np.int64),
                            np.ones(rest, dtype=np.int64) if rest < 3 else [rest]])
    groups = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
    np.cumsum(sizes, out=groups[1:])
    steps = np.add.reduceat(item_hi - item_lo, groups[:-1]).astype(np.float64)
    cost = np.where(sizes > 1, 0.55 * steps, steps)  # lockstep rows run ~1.85x faster
    q = item_row.shape[0]
    value = np.empty(q)
    item_ok = np.empty(q, dtype=np.bool_)
    vec = np.empty((q, k))
    args = (groups, np.ascontiguousarray(initial, dtype=np.float64), a,
            np.ascontiguousarray(a.T), np.ascontiguousarray(b_src, dtype=np.float64),
            np.ascontiguousarray(shift_src, dtype=np.float64),
            np.ascontiguousarray(index, dtype=np.int64),
            np.ascontiguousarray(starts, dtype=np.int64), item_row, item_lo, item_hi,
            bool(flush), int(block), float(min_mass), value, item_ok, vec)

    def run(g0: int, g1: int) -> None:
        _log_prob_groups(g0, g1, *args)

    threads = num_threads() if parallel else 1
    run_parts(run, balanced_cuts(cost, PARTS_PER_THREAD * threads), threads)
    out = np.empty(n)
    ok = np.empty(n, dtype=bool)
    out[whole] = value[fwd.shape[0] * 2:]
    ok[whole] = item_ok[fwd.shape[0] * 2:]
    if halves.size:
        alpha, beta = vec[fwd], vec[fwd + 1]
        # p(x_>=m | x_<m) = p_(m-1) . beta with p the filtered distribution at m - 1.
        join = np.einsum("rk,rk->r", alpha, beta) / alpha.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[halves] = value[fwd] + value[fwd + 1] + np.log(join)
        ok[halves] = item_ok[fwd] & item_ok[fwd + 1] & (join >= min_mass) & (join > 0)
    return out, ok
