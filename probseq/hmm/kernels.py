"""NumPy kernels of the scaled forward recursion (pure array functions), and the rules on
underflow and subnormal numbers that the compiled forward-backward
(:func:`probseq.hmm.compiled.forward_backward`) shares with them.

Shape letters: N rows (sequences), T steps, K states. Arrays are float64 and time-major
(``[T, N, K]``): the rows of one step are contiguous, so each step is one small matrix
product plus one elementwise product on ``[N, K]`` buffers. For
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
  with the unflushed parameters, as in the plain mode. The compiled forward-backward
  (:func:`probseq.hmm.compiled.forward_backward`) normalises every step and takes the same
  guard on the product of its normalisers over each block of :data:`BLOCK` steps, which is
  the mass this recursion meets at the block's end: the same bound holds for it.

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
    "alive_counts",
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
    return acc, ok, trace


def alive_counts(lengths: np.ndarray) -> np.ndarray:
    """``n [T_max]``: how many rows (sorted by decreasing length) are alive at each step."""
    t_max = int(lengths[0])
    return np.searchsorted(-lengths, -(np.arange(t_max) + 1), side="right")
