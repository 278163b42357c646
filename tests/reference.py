"""Independent numerical references shared by test modules."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def fd_standard_errors(loglik: Callable[[np.ndarray], float], theta: np.ndarray,
                       rel: float = 1e-4) -> np.ndarray:
    """Standard errors from a central finite-difference Hessian of ``loglik`` at ``theta``
    (steps ``rel * max(|theta|, 0.01)``), written independently of probseq's own."""
    theta = np.asarray(theta, float)
    k = len(theta)
    h = rel * np.maximum(np.abs(theta), 1e-2)
    hess = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            def at(a: float, b: float, i: int = i, j: int = j) -> float:
                v = theta.copy()
                v[i] += a * h[i]
                v[j] += b * h[j]
                return loglik(v)
            hess[i, j] = hess[j, i] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (
                4 * h[i] * h[j])
    return np.sqrt(np.diag(np.linalg.inv(-hess)))


def permuted_labels(states: np.ndarray, perm: np.ndarray, fraction: float = 0.04,
                    seed: int = 1) -> np.ndarray:
    """Known states on about ``fraction`` of the steps (-1 elsewhere), numbered so that the
    simulation's state ``s`` is labelled ``perm[s]``."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(states.shape) < fraction, perm[states], -1)
    assert 0.5 * fraction < (labels >= 0).mean() < 1.5 * fraction
    return labels
