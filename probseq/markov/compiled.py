"""Compiled n-gram counting (numba): one pass over the symbols, no key arrays.

Shapes use the letters of :mod:`probseq.base`: N sequences, T steps, V symbols. The keys
are those of :mod:`probseq.markov.counting` (base ``B = V + 1``, ``BOS = V``, the most recent
symbol the least significant digit); this module only counts them where the key space is
small enough for a dense table, which the NumPy route would otherwise reach through an
``[sum(lengths)]`` key array built in ``k + 1`` passes and a ``np.bincount``.

Long inputs are cut into parts of about equal numbers of steps (a part may begin inside a
row: its first keys read their context from the steps before it), counted by parallel
threads into tables of their own, and the tables summed: integer counts, so the result is
the same whatever the number of threads. Every symbol a key reads is checked against V as
it is read, so a symbol out of range is reported, never counted out of bounds.

Compiled on first use and cached on disk (``cache=True``); imported lazily.
"""

from __future__ import annotations

import numba
import numpy as np

from probseq._parallel import num_threads, run_parts

__all__ = ["count_ngrams_dense"]

#: the fewest steps for which parts are counted by parallel threads, and the largest key
#: space given a table per thread (8 MB each).
PARALLEL_MIN_STEPS = 1_000_000
PARALLEL_MAX_SPACE = 1 << 20


@numba.njit(cache=True, nogil=True)
def _count(values: np.ndarray, seg_row: np.ndarray, seg_lo: np.ndarray, seg_hi: np.ndarray,
           order: int, base: int, counts: np.ndarray) -> int:
    """Counts the keys ending at steps ``seg_lo[s]..seg_hi[s] - 1`` of rows ``seg_row[s]``;
    returns -1, or the segment of a symbol outside ``0..V-1`` (counting stops there)."""
    v = base - 1
    bos = v
    for s in range(seg_row.shape[0]):
        row = values[seg_row[s]]
        lo = seg_lo[s]
        hi = seg_hi[s]
        head = min(max(order, lo), hi)
        for t in range(lo, head):  # contexts reaching back before the start: BOS digits
            key = 0
            for j in range(order, -1, -1):
                x = bos
                if t >= j:
                    x = row[t - j]
                    if x < 0 or x >= v:
                        return s
                key = key * base + x
            counts[key] += 1
        # Each key straight from its k + 1 symbols (no loop-carried context: the steps are
        # independent, so the loop runs at the memory's pace); order 1 written out.
        if order == 1:
            for t in range(head, hi):
                a = row[t - 1]
                b = row[t]
                if a < 0 or a >= v or b < 0 or b >= v:
                    return s
                counts[a * base + b] += 1
        else:
            for t in range(head, hi):
                key = 0
                for j in range(order, -1, -1):
                    x = row[t - j]
                    if x < 0 or x >= v:
                        return s
                    key = key * base + x
                counts[key] += 1
    return -1


def _segments(lengths: np.ndarray, parts: int) -> list[tuple[np.ndarray, ...]]:
    """The rows' steps cut into ``parts`` runs of about equal numbers of steps:
    per run, ``(rows, lo, hi)`` of its pieces of rows."""
    ends = np.cumsum(lengths)
    total = int(ends[-1])
    cuts = [total * p // parts for p in range(parts + 1)]
    out = []
    for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True):
        r0 = int(np.searchsorted(ends, c0, side="right"))
        r1 = int(np.searchsorted(ends, c1, side="left")) + 1
        rows = np.arange(r0, min(r1, lengths.shape[0]), dtype=np.int64)
        start = ends[rows] - lengths[rows]  # each row's first step, in the joint count
        lo = np.clip(c0 - start, 0, lengths[rows])
        hi = np.clip(c1 - start, 0, lengths[rows])
        keep = hi > lo
        out.append((rows[keep], lo[keep].astype(np.int64), hi[keep].astype(np.int64)))
    return out


def count_ngrams_dense(values: np.ndarray, lengths: np.ndarray, order: int, num_symbols: int
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """The order-``k`` n-gram counts of every real step, counted into a dense table.

    Equal to ``counting.count_keys(counting.ngram_keys(values, lengths, k, V), B**(k+1))``.

    Args:
        values: ``[N, T_max]`` int64 symbols (padding anything).
        lengths: ``[N]`` int64.
        order: k, the context length.
        num_symbols: V.

    Returns:
        ``(unique_keys [G] int64, counts [G] float64)``, keys sorted; None when a symbol lies
        outside ``0..V-1`` (the caller reports it).
    """
    base = num_symbols + 1
    space = base ** (order + 1)
    values = np.ascontiguousarray(values, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    parts = (num_threads() if total >= PARALLEL_MIN_STEPS and space <= PARALLEL_MAX_SPACE
             else 1)
    segments = _segments(lengths, parts)
    tables = np.zeros((len(segments), space), dtype=np.int64)
    bad = np.full(len(segments), -1)

    def count(p0: int, p1: int) -> None:
        for p in range(p0, p1):
            bad[p] = _count(values, *segments[p], order, base, tables[p])

    run_parts(count, np.arange(len(segments) + 1), len(segments))
    if (bad >= 0).any():
        return None
    counts = tables[0] if len(segments) == 1 else tables.sum(0)
    nonzero = np.flatnonzero(counts)
    return nonzero.astype(np.int64), counts[nonzero].astype(np.float64)
