"""Compiled likelihood loops of the AR(p) model (numba), imported lazily.

Shape letters: N sequences, T steps (``T_max`` the longest).

:func:`log_prob_totals` is :func:`probseq.autoregressive.likelihood.log_prob_steps` followed
by a sequential sum over each row, fused into one pass without a ``[N, T_max]``
temporary. No ``fastmath``: every step's conditional is the same sequence of IEEE
operations as the NumPy expression (no contraction into fused multiply-adds), and the sum
runs step by step from the first, so each total equals the last entry of the NumPy
``cumsum`` of the steps bit for bit, whatever padding follows.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["log_prob_tails"]


@numba.njit(cache=True, nogil=True)
def _tails(values: np.ndarray, lengths: np.ndarray, head: np.ndarray, intercept: float,
           coef: np.ndarray, const: float, scale: float, out: np.ndarray) -> None:
    p = coef.shape[0]
    for r in range(values.shape[0]):
        acc = 0.0
        n = lengths[r]
        for t in range(min(p, n)):
            acc += head[r, t]
        for t in range(p, n):
            resid = values[r, t] - intercept
            for lag in range(1, p + 1):
                resid -= coef[lag - 1] * values[r, t - lag]
            acc += const - scale * (resid * resid)
        out[r] = acc


def log_prob_tails(values: np.ndarray, lengths: np.ndarray, head: np.ndarray,
                   intercept: float, coef: np.ndarray, noise_var: float) -> np.ndarray:
    """``[N]`` each row's sum of per-step conditionals, summed step by step from the first.

    Args:
        values: ``[N, T_max]`` float64 (padding is not read).
        lengths: ``[N]`` int64, positive.
        head: ``[N, min(p, T_max)]`` the conditionals of the first steps (from the
            stationary Gaussian), as :func:`probseq.autoregressive.likelihood.
            log_prob_steps` computes them.
        intercept: c.
        coef: ``[p]`` lag 1 first.
        noise_var: sigma2 > 0.

    Returns:
        ``[N]`` float64: ``head`` summed over the row's first ``min(p, T)`` steps, then
        ``-(log(2 pi) + log sigma2)/2 - resid^2 / (2 sigma2)`` for every later step.
    """
    out = np.empty(values.shape[0])
    const = -0.5 * (float(np.log(2 * np.pi)) + np.log(noise_var))
    _tails(np.ascontiguousarray(values, dtype=np.float64),
           np.ascontiguousarray(lengths, dtype=np.int64),
           np.ascontiguousarray(head, dtype=np.float64), float(intercept),
           np.ascontiguousarray(coef, dtype=np.float64), float(const),
           float(0.5 / noise_var), out)
    return out
