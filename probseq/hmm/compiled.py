"""Compiled per-step recursions (numba): what a loop over time costs in C, from Python.

Shape letters: N rows (sequences), T steps (``T_max`` the longest), K states. Arrays are
float64 and C-contiguous.

Why a compiler. A recursion over time cannot be vectorised across its steps: the NumPy
kernels of :mod:`probseq.hmm.kernels` batch the *rows* of a step into one call, which pays
where many rows are alive, but one long sequence costs a Python step per time step (a few
microseconds against tens of nanoseconds of arithmetic at K = 16). The max-product
recursion has no associative trick of the kind the forward pass's chunked scans use (a
max-plus matrix product costs K times more than a step), so it runs here, in one compiled
loop per row, as hmmlearn's C++ ``decode`` does.

The functions are compiled on first use and cached on disk (``cache=True``), so only the
first call after an installation pays the compilation (about a second); this module is
imported lazily for the same reason.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["viterbi"]


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
