"""NumPy kernels of the scaled forward and backward recursions (pure array functions).

Shape letters: N rows (sequences, or chunks of a long sequence), T steps, K states. Arrays
are float64 and time-major (``[T, N, K]``): the rows of one step are contiguous, so each
step is one small matrix product plus one elementwise product on ``[N, K]`` buffers. For
such small arrays a NumPy call costs a few microseconds against 5-19 for a torch op, and the
number of calls per step is what sets the speed.

Emission likelihoods come scaled, ``b_t = exp(log_lik_t - m_t)`` with ``max_k b_t[k] = 1``
(see :func:`probseq.hmm.inference.emission_scale`), and are supplied block by block by a
callable ``blocks(t0, t1, n) -> [t1 - t0, n, K]`` so that categorical emissions gather each
block from a ``[V, K]`` table instead of materialising ``[T, N, K]``.

Normalisation every step is not needed for exactness: with ``b <= 1`` and a stochastic
transition matrix the mass ``sum_k alpha_t[k]`` of the unnormalised recursion
``alpha_t = (alpha_(t-1) A) * b_t`` never increases. The kernels therefore normalise once per
block of :data:`BLOCK` steps, after checking that the mass at the block's end is at least
:data:`MIN_MASS`. Since the mass only decreases, every intermediate mass was at least that
too, so the only effect of not normalising is that a component could meet the subnormal
range, where rounding is absolute (at most ``2**-1075``) instead of relative; against a mass of
at least ``MIN_MASS`` that is a relative error below ``1e-170`` per step, far under float64's
own rounding. Rows whose mass falls below the threshold (improbable runs, or impossible
steps with mass 0) are reported as not ``ok``; the caller recomputes them with the
per-step-normalised recursion, which also handles probability-zero steps.

Subnormal numbers. Parameters that EM reaches on real data hold entries such as ``1e-74`` or
``1e-300``; products of them fall into the subnormal range (below ``2**-1022``), which many
x86 processors compute about a hundred times more slowly than normal numbers. The kernels
therefore run in one of two modes, chosen per call by :func:`needs_flush` from the smallest
transition probability and the smallest non-zero scaled emission likelihood ``b_min``:

* Plain (every transition probability at least ``a_min > 0`` and ``a_min**2 * b_min >=``
  :data:`MIN_MASS`): no subnormal can arise in a row that passes the mass guard. A predicted
  distribution has every entry at least ``a_min`` times its mass, so every non-zero entry of
  ``alpha_t`` is at least ``a_min * b_min`` times the mass at ``t - 1`` (at least
  :data:`MIN_MASS`), every product inside the matrix products at least ``a_min`` times that,
  and the same holds for the backward variables (``beta_t >= a_min``) and their products
  with the filtered distributions.
* Flushing (otherwise): transition probabilities and scaled emission likelihoods below
  :data:`FLUSH` (``2**-340``, about ``4.5e-103``) are read as zero, and after every step the
  entries of ``alpha_t`` (relative to a mass of 1 at the block's start) and of the scaled
  ``beta_t`` below :data:`FLUSH` are set to zero. Every non-zero operand is then at least
  :data:`FLUSH` and every product of three at least ``2**-1020``: no subnormal is formed.
  The error: in the forward pass each step loses at most ``(2 K + 1) FLUSH`` of mass (the
  dropped transitions carry at most ``K FLUSH`` of a mass at most 1, the dropped emissions
  ``FLUSH``, the flushed entries ``K FLUSH``), and the mass guard of this mode is
  :data:`MIN_MASS_FLUSH` (``1e-60``), so the relative error per step is below ``1e-40``: the
  same kind of bound, relative to the mass, as the subnormal rounding argument above. In the
  backward pass ``sum_k filtered_t[k] beta_t[k] = 1`` is kept by the recursion, so a flush at
  step ``t`` changes each earlier smoothed distribution by at most :data:`FLUSH` in l1:
  at most ``T * FLUSH`` in all. Rows below the stricter guard go to the per-step recursion
  with the unflushed parameters, as in the plain mode.

Ragged batches are handled without masks: rows are sorted by decreasing length, so the rows
alive at step ``t`` are a leading slice ``[:n_t]``; time is cut into segments where ``n_t``
is constant, and padded steps are never computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = [
    "BLOCK",
    "MIN_MASS",
    "MIN_MASS_FLUSH",
    "FLUSH",
    "needs_flush",
    "segments",
    "forward_log_mass",
    "forward_backward",
    "alive_counts",
    "speculative_log_mass",
    "hilbert_distance",
]

#: steps between normalisations.
BLOCK = 16
#: the smallest mass accepted at a normalisation (see the module docstring).
MIN_MASS = 1e-150

#: in the flushing mode, operands and buffer entries below this are set to zero (``2**-340``).
FLUSH = 2.0 ** -340
#: the mass guard of the flushing mode.
MIN_MASS_FLUSH = 1e-60

Blocks = Callable[[int, int, int], np.ndarray]


def needs_flush(initial: np.ndarray, transition: np.ndarray, b_min: float) -> bool:
    """Whether the kernels must flush tiny values to keep subnormals out (module docstring).

    Args:
        initial: ``[K]`` or ``[N, K]`` predicted distribution(s) at the first step.
        transition: ``[K, K]``.
        b_min: the smallest non-zero scaled emission likelihood of the batch (1 if none).
    """
    a_min = float(np.min(transition))
    init = np.asarray(initial)
    positive = init[init > 0]
    pi_min = float(positive.min()) if positive.size else 1.0
    # The first step's products are pi * b * a; every later one is covered by a_min^2 b_min.
    return not (a_min > 0 and a_min * a_min * b_min >= MIN_MASS
                and pi_min * b_min * a_min >= MIN_MASS * MIN_MASS)


def _flushed(transition: np.ndarray, blocks: Blocks, flush: bool
             ) -> tuple[np.ndarray, Blocks, float]:
    """The transition matrix, blocks and mass guard of the chosen mode."""
    a = np.ascontiguousarray(transition, dtype=np.float64)
    if not flush:
        return a, blocks, MIN_MASS
    a = np.where(a < FLUSH, 0.0, a)

    def flushed_blocks(t0: int, t1: int, n: int) -> np.ndarray:
        b = blocks(t0, t1, n)
        return np.where(b < FLUSH, 0.0, b)

    return a, flushed_blocks, MIN_MASS_FLUSH


def _flush(x: np.ndarray, low: np.ndarray) -> None:
    """Set the entries of ``x`` below :data:`FLUSH` to zero (``low`` a bool buffer)."""
    np.less(x, FLUSH, out=low)
    np.copyto(x, 0.0, where=low)


def segments(lengths: np.ndarray, block: int = BLOCK) -> Iterator[tuple[int, int, int]]:
    """Cut time into blocks ``[t0, t1)`` of at most ``block`` steps over which the number
    ``n`` of rows still alive is constant.

    Args:
        lengths: ``[N]`` int lengths sorted in decreasing order (all positive).
        block: the longest block.

    Yields:
        ``(t0, t1, n)``: the rows ``[:n]`` have length at least ``t1``.
    """
    t_max = int(lengths[0])
    ends = sorted(set(int(v) for v in lengths))
    t0, i = 0, 0
    neg = -lengths
    while t0 < t_max:
        while ends[i] <= t0:
            i += 1
        t1 = min(t0 + block, ends[i])
        n = int(np.searchsorted(neg, -t1, side="right"))
        yield t0, t1, n
        t0 = t1


def forward_log_mass(initial: np.ndarray, transition: np.ndarray, blocks: Blocks,
                     lengths: np.ndarray, block: int = BLOCK, states: bool = False,
                     stop: Callable[[int, int, np.ndarray, np.ndarray], bool] | None = None,
                     flush: bool = False) -> tuple[np.ndarray, np.ndarray, list | None]:
    """``log sum_z p(x_1..x_T, z)`` of each row, up to the emission shifts ``m_t``.

    Args:
        initial: ``[K]`` or ``[N, K]`` predicted distribution at the first step.
        transition: ``[K, K]``.
        blocks: the scaled emission likelihoods, ``blocks(t0, t1, n) -> [t1 - t0, n, K]``.
        lengths: ``[N]`` decreasing.
        block: steps between normalisations.
        states: also return, after every block, ``(t1, n, log_mass [n], state [n, K])``
            (the normalised filtered distribution at step ``t1 - 1`` and the log mass so far).
        stop: called after every block as ``stop(index, t1, log_mass [n], state [n, K])``;
            True ends the pass there.
        flush: run the flushing mode (see the module docstring and :func:`needs_flush`).

    Returns:
        ``(log_mass, ok, trace)``: ``log_mass [N]`` the sum of ``log c_t`` over the row's
        steps, ``ok [N]`` False where a normalisation met a mass below the mode's guard
        (:data:`MIN_MASS` or :data:`MIN_MASS_FLUSH`)
        (those rows' ``log_mass`` is meaningless), and the trace (or None).
    """
    n_rows = lengths.shape[0]
    k = transition.shape[0]
    a, blocks, min_mass = _flushed(transition, blocks, flush)
    ones = np.ones(k)
    buf = [np.empty((n_rows, k)), np.empty((n_rows, k))]
    low_buf = np.empty((n_rows, k), dtype=bool)
    cur = 0
    acc = np.zeros(n_rows)
    mass = np.empty(n_rows)
    ok = np.ones(n_rows, dtype=bool)
    trace: list | None = [] if states else None
    init = np.asarray(initial, dtype=np.float64)
    if flush:
        init = np.where(init < FLUSH, 0.0, init)
    init = np.broadcast_to(init, (n_rows, k))
    index = 0
    for t0, t1, n in segments(lengths, block):
        b = blocks(t0, t1, n)
        v, w = buf[cur][:n], buf[1 - cur][:n]
        j0 = 0
        if t0 == 0:
            np.multiply(init[:n], b[0], out=v)
            if flush:
                _flush(v, low_buf[:n])
            j0 = 1
        for j in range(j0, t1 - t0):
            np.matmul(v, a, out=w)
            np.multiply(w, b[j], out=w)
            if flush:
                _flush(w, low_buf[:n])
            v, w = w, v
            cur = 1 - cur
        s = mass[:n]
        np.matmul(v, ones, out=s)
        low = s < min_mass
        if low.any():
            ok[:n] &= ~low
            s[low] = 1.0
            v[low] = 1.0 / k
        acc[:n] += np.log(s)
        v /= s[:, None]
        if trace is not None:
            trace.append((t1, n, acc[:n].copy(), v.copy()))
        if stop is not None and stop(index, t1, acc[:n], v):
            break
        index += 1
    return acc, ok, trace


def speculative_log_mass(initial: np.ndarray, transition: np.ndarray, blocks: Blocks,
                         lengths: np.ndarray, first: np.ndarray, previous: np.ndarray,
                         tol: float = 1e-13, block: int = BLOCK,
                         flush: bool = False) -> np.ndarray | None:
    """Log masses of the chunks of long sequences, all chunks run at once.

    Row ``r`` is a chunk; it continues row ``previous[r]`` unless ``first[r]`` (the first chunk
    of a sequence, which starts from ``initial``). Pass 1 runs every chunk from a guess (the
    uniform distribution). Pass 2 runs every chunk from the predicted distribution that its
    predecessor hands over at the end of pass 1, block by block, until its filtered
    distribution is within ``tol`` (Hilbert's projective distance) of pass 1's at the same
    step; from there on, pass 1's trajectory is pass 2's up to that distance, so pass 1's
    remaining log mass is used. Why that is exact: a chunk's log mass from step ``j`` on is
    the log of a linear function of the (normalised) distribution at ``j``, which changes by at
    most the Hilbert distance between two such distributions, and the filter never expands that
    distance. So a chunk's total is off by at most ``tol`` for the coupling plus the distance
    between its incoming distribution and the exact one, which is the coupling distance of its
    predecessor (at most ``tol``), damped by the predecessor's forgetting. A chunk that ends
    (its sequence's last) needs no coupling: pass 2 ran it whole from its incoming
    distribution.

    Args:
        initial: ``[K]``.
        transition: ``[K, K]``.
        blocks: scaled emission likelihoods of the chunks (see :func:`forward_log_mass`).
        lengths: ``[R]`` the chunks' lengths, decreasing; a chunk shorter than the first must
            be the last of its sequence.
        first: ``[R]`` bool.
        previous: ``[R]`` int, the preceding chunk's row (ignored where ``first``).
        tol: the coupling tolerance.
        block: steps between normalisations and coupling checks.
        flush: run the flushing mode (see :func:`forward_log_mass`).

    Returns:
        ``[R]`` log masses, or None when a chunk did not couple (the chain forgets too
        slowly for this chunk length) or a mass fell below the guard; the caller then
        uses a sequential method.
    """
    k = transition.shape[0]
    rows = lengths.shape[0]
    guess = np.full((rows, k), 1.0 / k)
    guess[first] = initial
    total1, ok, trace = forward_log_mass(guess, transition, blocks, lengths, block, states=True,
                                         flush=flush)
    if not ok.all():
        return None
    last_state = np.empty((rows, k))
    for _, n, _, v in trace:
        last_state[:n] = v  # rows that end earlier keep their own final state
    incoming = last_state[previous] @ transition
    incoming[first] = initial
    is_last = np.ones(rows, dtype=bool)
    is_last[previous[~first]] = False
    total = np.full(rows, np.nan)
    done = np.zeros(rows, dtype=bool)
    failed = []

    def stop(index: int, t1: int, acc: np.ndarray, v: np.ndarray) -> bool:
        n = acc.shape[0]
        _, _, acc1, v1 = trace[index]
        new = ~done[:n]
        coupled = new & (hilbert_distance(v, v1) < tol)
        total[:n][coupled] = acc[coupled] + (total1[:n][coupled] - acc1[coupled])
        ending = new & ~coupled & (lengths[:n] == t1)
        if (ending & ~is_last[:n]).any():
            failed.append(index)
            return True
        total[:n][ending] = acc[ending]  # ran whole from its incoming distribution
        done[:n] |= coupled | ending
        return bool(done.all())

    forward_log_mass(incoming, transition, blocks, lengths, block, stop=stop, flush=flush)
    if failed or not done.all():
        return None
    return total


def alive_counts(lengths: np.ndarray) -> np.ndarray:
    """``n [T_max]``: how many rows (sorted by decreasing length) are alive at each step."""
    t_max = int(lengths[0])
    return np.searchsorted(-lengths, -(np.arange(t_max) + 1), side="right")


def forward_backward(initial: np.ndarray, transition: np.ndarray, blocks: Blocks,
                     lengths: np.ndarray, block: int = BLOCK, backward: bool = True,
                     filtered: bool = True, flush: bool = False,
                     final: np.ndarray | None = None,
                     counted: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> dict[str, np.ndarray]:
    """Scaled forward-backward on a ragged batch sorted by decreasing length.

    Arrays with a state axis are stored packed: step ``t``'s ``n_t`` alive rows follow step
    ``t - 1``'s (``[M, K]`` with ``M`` the total number of real steps), as
    ``x_time_major[alive]`` would select them from a padded ``[T, N, K]`` array with
    ``alive[t, r] = r < n_t``. A ragged batch therefore costs its real steps, not
    ``T_max * N``.

    Args:
        initial: ``[K]``, or ``[N, K]`` one predicted distribution per row (a chunk of a
            long sequence starts from what the chunk before it hands over).
        transition: ``[K, K]``.
        blocks: the scaled emission likelihoods (see :func:`forward_log_mass`).
        lengths: ``[N]`` decreasing.
        block: steps between normalisations of the forward pass.
        backward: False stops after the forward pass.
        filtered: False skips normalising the filtered distributions (forward pass only;
            ``filtered`` is then left out).
        flush: run the flushing mode (see the module docstring and :func:`needs_flush`).
        final: ``[N, K]`` the backward variables at each row's last step, up to a positive
            factor per row (None: all ones, the end of a sequence). They are rescaled so that
            ``sum_k filtered[k] beta[k] = 1`` there, which the recursion then keeps: a chunk
            that the rest of its sequence follows passes in ``A (b * beta / c)`` of the
            successor's first step (its ``w0``).
        counted: ``(lo [N], hi [N])``: only the transitions into steps ``lo <= t < hi`` of
            each row (counted from 0 at the row's first step) enter ``xi`` (None: all).

    Returns:
        A dict: ``log_c [M]`` packed (the per-step ``log c_t``, so that ``log p(x_t | x_<t)
        = log_c + m_t``), ``log_mass [N]`` (its sum per row), ``alive [T]`` (the ``n_t``),
        ``row [M]`` and ``step [M]`` (where each packed entry sits), ``filtered [M, K]``
        packed, ``ok [N]`` (False for rows to recompute with the guarded
        recursion) and, with the backward pass, ``smoothed [M, K]`` packed, ``xi [K, K]``
        (expected transition counts summed over rows and the counted steps), ``w [M, K]``
        packed, ``b_t * beta_t / c_t`` (what the transition into step ``t`` is weighted by)
        and ``w0 [N, K]``, its entries at each row's first step.
    """
    n_rows = lengths.shape[0]
    t_max = int(lengths[0])
    k = transition.shape[0]
    a, blocks, min_mass = _flushed(transition, blocks, flush)
    at = np.ascontiguousarray(a.T)
    low_buf = np.empty((n_rows, k), dtype=bool)
    ones = np.ones(k)
    alive = alive_counts(lengths)
    off = np.zeros(t_max + 1, dtype=np.int64)
    np.cumsum(alive, out=off[1:])
    total = int(off[-1])
    alpha = np.empty((total, k))
    bees = np.empty((total, k))
    mass = np.empty(total)  # sum of alpha_t, packed
    fresh = np.zeros(t_max, dtype=bool)  # the prediction at t was normalised
    ok = np.ones(n_rows, dtype=bool)
    pred = np.empty((n_rows, k))
    init = np.asarray(initial, dtype=np.float64)
    if flush:
        init = np.where(init < FLUSH, 0.0, init)
    segs = list(segments(lengths, block))
    # Forward: alpha_t = (alpha_(t-1) A / s) * b_t, with s = mass_(t-1) at block starts
    # (the carry is normalised there) and s = 1 inside blocks.
    for t0, t1, n in segs:
        b = bees[off[t0]:off[t1]].reshape(t1 - t0, n, k)
        b[...] = blocks(t0, t1, n)
        al = alpha[off[t0]:off[t1]].reshape(t1 - t0, n, k)
        for t in range(t0, t1):
            out = al[t - t0]
            if t == 0:
                np.multiply(init, b[0], out=out)
            elif t == t0:
                s = mass[off[t - 1]:off[t - 1] + n]
                np.matmul(alpha[off[t - 1]:off[t - 1] + n], ones, out=s)
                low = s < min_mass
                if low.any():
                    ok[:n] &= ~low
                    s = np.where(low, 1.0, s)
                p = pred[:n]
                np.matmul(alpha[off[t - 1]:off[t - 1] + n], a, out=p)
                p /= s[:, None]
                np.multiply(p, b[t - t0], out=out)
            else:
                np.matmul(al[t - t0 - 1], a, out=out)
                out *= b[t - t0]
            if flush:
                _flush(out, low_buf[:n])
        fresh[t0] = True
    # Every step's mass at once (the block ends were also summed above, before their
    # normalisation, which divides the next block and not these).
    np.matmul(alpha, ones, out=mass)
    # Packed bookkeeping: the step of every packed entry and the entry of the same row at
    # the step before (off[t] - off[t - 1] = n_(t-1)).
    step = np.repeat(np.arange(t_max), alive)
    ok &= mass[off[lengths - 1] + np.arange(n_rows)] >= min_mass
    prev = np.ones(total)
    later = ~fresh[step]
    idx = np.nonzero(later)[0]
    prev[idx] = mass[idx - alive[step[idx] - 1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = mass / prev
        log_c = np.log(c)
    row = np.arange(total) - off[step]
    log_mass = np.bincount(row, weights=log_c, minlength=n_rows)
    ok &= np.isfinite(log_mass)
    out = {"log_c": log_c, "log_mass": log_mass, "alive": alive, "ok": ok, "row": row,
           "step": step}
    if not (backward or filtered):
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        filt = np.divide(alpha, mass[:, None], out=alpha)
    out["filtered"] = filt
    if not backward:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        # Backward with the forward normalisers: beta_(t-1) = A (b_t * beta_t) / c_t.
        bees /= c[:, None]
    beta = np.zeros((total, k))
    w = bees  # becomes b_t * beta_t / c_t in place
    xi = np.zeros((k, k))
    if final is not None:
        ends = off[lengths - 1] + np.arange(n_rows)
        with np.errstate(all="ignore"):
            norm = np.einsum("nk,nk->n", filt[ends], final)
            final = final / norm[:, None]
        if flush:  # as every later scaled beta_t is (see the module docstring)
            final = np.where(final < FLUSH, 0.0, final)
        ok &= np.isfinite(norm) & (norm > 0)
    with np.errstate(all="ignore"):  # rows that are not ok may hold inf; they are redone
        for t0, t1, n in reversed(segs):
            # rows [n_next:n] end at t1 - 1 and start their backward pass there.
            ending = lengths[:n] == t1
            if final is None:
                beta[off[t1 - 1]:off[t1 - 1] + n][ending] = 1.0
            elif ending.any():
                beta[off[t1 - 1]:off[t1 - 1] + n][ending] = final[:n][ending]
            for t in range(t1 - 1, t0 - 1, -1):
                wt = w[off[t]:off[t] + n]
                wt *= beta[off[t]:off[t] + n]
                if t > 0:
                    nxt = beta[off[t - 1]:off[t - 1] + n]
                    np.matmul(wt, at, out=nxt)
                    if flush:
                        _flush(nxt, low_buf[:n])
            # Transition counts of the pairs (t - 1, t) for t in this segment.
            first = max(t0, 1)
            if first < t1:
                head = filt[off[first - 1]:off[first - 1] + n]
                rest = filt[off[first]:off[t1 - 1]]
                f = head if first == t1 - 1 else np.concatenate([head, rest])
                ws = w[off[first]:off[t1]]
                if counted is not None:
                    tt = np.arange(first, t1)[:, None]
                    keep = (tt >= counted[0][None, :n]) & (tt < counted[1][None, :n])
                    if not keep.all():
                        ws = (ws.reshape(-1, n, k) * keep[..., None]).reshape(-1, k)
                xi += f.T @ ws
        xi *= a
        w0 = w[:n_rows].copy()
        smoothed = np.multiply(beta, filt, out=beta)
    # Padded steps are not stored; log c = 0 there (mass = prev = 1).
    bad = ~np.isfinite(smoothed.sum(1))
    if bad.any():
        ok[np.unique(row[bad])] = False
    out.update({"smoothed": smoothed, "xi": xi, "w": w, "w0": w0})
    return out


def hilbert_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hilbert's projective distance ``max log(p/q) - min log(p/q)`` over the last axis.

    Entries where both are zero are ignored; a zero facing a non-zero gives ``inf``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(p) - np.log(q)
    both = (p == 0) & (q == 0)
    hi = np.where(both, -np.inf, r).max(-1)
    lo = np.where(both, np.inf, r).min(-1)
    d = hi - lo
    return np.where(np.isnan(d), np.inf, d)
