"""Compiled n-gram counting (numba): one pass over the symbols, no key arrays.

Shapes use the letters of :mod:`probseq.base`: N sequences, T steps, V symbols. The keys
are those of :mod:`probseq.markov.counting` (base ``B = V + 1``, ``BOS = V``, the most recent
symbol the least significant digit); this module only counts them where the key space is
small enough for a dense table, which the NumPy route would otherwise reach through an
``[sum(lengths)]`` key array built in ``k + 1`` passes and a ``np.bincount``.

Compiled on first use and cached on disk (``cache=True``); imported lazily.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["count_ngrams_dense"]


@numba.njit(cache=True, nogil=True)
def _count(values: np.ndarray, lengths: np.ndarray, order: int, base: int,
           counts: np.ndarray) -> None:
    bos = base - 1
    for r in range(values.shape[0]):
        row = values[r]
        length = lengths[r]
        head = min(order, length)
        for t in range(head):  # contexts reaching back before the start: BOS digits
            key = 0
            for j in range(order, -1, -1):
                key = key * base + (row[t - j] if t >= j else bos)
            counts[key] += 1
        # Each key straight from its k + 1 symbols (no loop-carried context: the steps are
        # independent, so the loop runs at the memory's pace); order 1 written out.
        if order == 1:
            for t in range(head, length):
                counts[row[t - 1] * base + row[t]] += 1
        else:
            for t in range(head, length):
                key = row[t - order]
                for j in range(order - 1, -1, -1):
                    key = key * base + row[t - j]
                counts[key] += 1


def count_ngrams_dense(values: np.ndarray, lengths: np.ndarray, order: int, num_symbols: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The order-``k`` n-gram counts of every real step, counted into a dense table.

    Equal to ``counting.count_keys(counting.ngram_keys(values, lengths, k, V), B**(k+1))``.

    Args:
        values: ``[N, T_max]`` int64 symbols ``0..V-1`` (padding anything in ``0..V-1``).
        lengths: ``[N]`` int64.
        order: k, the context length.
        num_symbols: V.

    Returns:
        ``(unique_keys [G] int64, counts [G] float64)``, keys sorted.
    """
    base = num_symbols + 1
    counts = np.zeros(base ** (order + 1), dtype=np.int64)
    _count(np.ascontiguousarray(values, dtype=np.int64),
           np.ascontiguousarray(lengths, dtype=np.int64), order, base, counts)
    nonzero = np.flatnonzero(counts)
    return nonzero.astype(np.int64), counts[nonzero].astype(np.float64)
