"""Compiled (numba) Kalman loop for a scalar state observed by a scalar (the local level,
an AR(1) plus noise): the prediction-error decomposition of the likelihood in one pass per
sequence, imported lazily.

Shape letters: N sequences, T steps (``T_max`` the longest), U the distinct steps of the
shared covariance recursion (step ``t`` reads entry ``min(t, U - 1)``).

The covariance recursion does not depend on the data, so it is computed once
(:func:`probseq.lgssm.inference.riccati`) and shared; what is left per sequence is the
mean: ``v_t = y_t - c m_(t|t-1)``, ``log N(v_t; 0, F_t)``, ``m_t = m_(t|t-1) + k_t v_t``,
``m_(t+1|t) = a m_t``. In torch or NumPy that is a dozen array passes over ``[N, T]``;
here it is one loop whose state is two numbers, rows shared by parallel threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from probseq._parallel import PARTS_PER_THREAD, balanced_cuts, num_threads, run_parts

__all__ = ["scalar_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)

#: the fewest values for which rows are shared by parallel threads (below it, waking the
#: other threads costs about what they save: ~0.2 ms measured on a 2-core virtual machine).
PARALLEL_MIN_VALUES = 150_000


#: rows filtered in lockstep: one row's recursion waits on the latency of its own few
#: operations per step; several independent ones fill those waits.
_LANES = 8


@numba.njit(cache=True, nogil=True, inline="always")
def _step(y: float, pred: float, a: float, c: float, gain: float, half_log: float,
          half_inv: float) -> tuple[float, float]:
    """One step of one row: ``(log N(y; c pred, F), the next step's predicted mean)``,
    with ``half_log = log(2 pi F) / 2`` and ``half_inv = 1 / (2 F)``."""
    v = y - c * pred
    return -(half_log + v * v * half_inv), a * (pred + gain * v)


@numba.njit(cache=True, nogil=True)
def _scalar_rows(r0: int, r1: int, y: np.ndarray, lengths: np.ndarray, m0: float, a: float,
                 c: float, gain: np.ndarray, half_log: np.ndarray, half_inv: np.ndarray,
                 steps: bool, out: np.ndarray, total: np.ndarray) -> None:
    last = gain.shape[0] - 1
    t_max = y.shape[1]
    pred = np.empty(_LANES)
    acc = np.empty(_LANES)
    for g in range(r0, r1, _LANES):
        rows = min(_LANES, r1 - g)
        common = t_max
        for i in range(rows):
            pred[i] = m0
            acc[i] = 0.0
            common = min(common, lengths[g + i])
        for t in range(common):  # every row of the group in lockstep
            u = min(t, last)
            for i in range(rows):
                lp, pred[i] = _step(y[g + i, t], pred[i], a, c, gain[u], half_log[u],
                                    half_inv[u])
                acc[i] += lp
                if steps:
                    out[g + i, t] = lp
        for i in range(rows):  # then each row's own steps: the same _step, so a row's
            r = g + i          # result does not depend on the rows it was grouped with
            m = pred[i]
            s = acc[i]
            for t in range(common, lengths[r]):
                u = min(t, last)
                lp, m = _step(y[r, t], m, a, c, gain[u], half_log[u], half_inv[u])
                s += lp
                if steps:
                    out[r, t] = lp
            total[r] = s
            if steps:
                for t in range(lengths[r], t_max):
                    out[r, t] = 0.0


def scalar_log_prob(y: np.ndarray, lengths: np.ndarray, initial_mean: float, a: float,
                    c: float, gain: np.ndarray, innov_var: np.ndarray, steps: bool = True
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """``log N(y_t; c m_(t|t-1), F_t)`` of a scalar linear-Gaussian model whose sequences
    share the covariance recursion: each sequence's total, and its steps.

    Args:
        y: ``[N, T_max]`` float64 observations (past each length: anything).
        lengths: ``[N]`` positive.
        initial_mean: the predicted mean at the first step.
        a: the transition coefficient.
        c: the observation coefficient.
        gain: ``[U]`` the Kalman gains ``k_t``.
        innov_var: ``[U]`` the innovation variances ``F_t``.
        steps: also return the steps.

    Returns:
        ``(total [N], steps [N, T_max] or None)``, steps 0 at padding.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    out = np.empty(y.shape if steps else (0, 0))
    total = np.empty(y.shape[0])
    f = np.asarray(innov_var, dtype=np.float64)
    args = (y, lengths, float(initial_mean), float(a), float(c),
            np.ascontiguousarray(gain, dtype=np.float64), 0.5 * (_LOG_2PI + np.log(f)),
            0.5 / f, bool(steps), out, total)

    def rows(r0: int, r1: int) -> None:
        _scalar_rows(r0, r1, *args)

    threads = num_threads() if lengths.sum() >= PARALLEL_MIN_VALUES else 1
    # Cuts at multiples of the lockstep group, by steps.
    groups = np.add.reduceat(lengths, np.arange(0, lengths.shape[0], _LANES))
    cuts = balanced_cuts(groups, PARTS_PER_THREAD * threads) * _LANES
    run_parts(rows, np.minimum(cuts, lengths.shape[0]), threads)
    return total, (out if steps else None)
