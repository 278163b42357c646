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

from probseq._parallel import balanced_cuts, num_threads, run_parts

__all__ = ["scalar_log_prob_steps"]

_LOG_2PI = math.log(2.0 * math.pi)

#: the fewest values for which rows are shared by parallel threads.
PARALLEL_MIN_VALUES = 50_000


#: rows filtered in lockstep: one row's recursion waits on the latency of its own few
#: operations per step; several independent ones fill those waits.
_LANES = 8


@numba.njit(cache=True, nogil=True)
def _scalar_rows(r0: int, r1: int, y: np.ndarray, lengths: np.ndarray, m0: float, a: float,
                 c: float, gain: np.ndarray, log_f: np.ndarray, inv_f: np.ndarray,
                 out: np.ndarray) -> None:
    last = gain.shape[0] - 1
    t_max = y.shape[1]
    pred = np.empty(_LANES)
    for g in range(r0, r1, _LANES):
        rows = min(_LANES, r1 - g)
        n = 0
        for i in range(rows):
            pred[i] = m0
            n = max(n, lengths[g + i])
        for t in range(n):  # past a row's length its values are computed and not kept
            u = min(t, last)
            k = gain[u]
            half_log = 0.5 * (_LOG_2PI + log_f[u])
            half_inv = 0.5 * inv_f[u]
            for i in range(rows):
                v = y[g + i, t] - c * pred[i]
                out[g + i, t] = -(half_log + v * v * half_inv)
                pred[i] = a * (pred[i] + k * v)
        for i in range(rows):
            for t in range(lengths[g + i], t_max):
                out[g + i, t] = 0.0


def scalar_log_prob_steps(y: np.ndarray, lengths: np.ndarray, initial_mean: float,
                          a: float, c: float, gain: np.ndarray,
                          innov_var: np.ndarray) -> np.ndarray:
    """``[N, T_max]`` ``log N(y_t; c m_(t|t-1), F_t)`` (0 at padding) of a scalar
    linear-Gaussian model whose sequences share the covariance recursion.

    Args:
        y: ``[N, T_max]`` float64 observations (past each length: anything).
        lengths: ``[N]`` positive.
        initial_mean: the predicted mean at the first step.
        a: the transition coefficient.
        c: the observation coefficient.
        gain: ``[U]`` the Kalman gains ``k_t``.
        innov_var: ``[U]`` the innovation variances ``F_t``.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    out = np.empty(y.shape)
    f = np.asarray(innov_var, dtype=np.float64)
    args = (y, lengths, float(initial_mean), float(a), float(c),
            np.ascontiguousarray(gain, dtype=np.float64), np.log(f), 1.0 / f, out)

    def rows(r0: int, r1: int) -> None:
        _scalar_rows(r0, r1, *args)

    threads = num_threads() if lengths.sum() >= PARALLEL_MIN_VALUES else 1
    run_parts(rows, balanced_cuts(lengths, threads))
    return out
