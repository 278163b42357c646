"""Parameters and data shared by several cases (numpy, seeded)."""

from __future__ import annotations

import numpy as np

__all__ = ["random_hmm", "sample_hmm_symbols", "sample_hmm_states", "local_level_series",
           "LOCAL_LEVEL"]

#: the local level model of the LGSSM cases: level and observation noise variances, and the
#: initial level's mean and variance (a proper prior so that every side scores all T values).
LOCAL_LEVEL = {"level_var": 0.5, "obs_var": 1.0, "initial_mean": 0.0, "initial_var": 2.0}


def random_hmm(k: int, v: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sticky categorical HMM: ``initial [K]``, ``transition [K, K]``, ``emission [K, V]``."""
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(k))
    transition = rng.dirichlet(np.ones(k), size=k) + 4.0 * np.eye(k)
    transition /= transition.sum(1, keepdims=True)
    emission = rng.dirichlet(np.full(v, 0.5), size=k)
    return initial, transition, emission


def _markov_states(rng: np.random.Generator, n: int, t: int, initial: np.ndarray,
                   transition: np.ndarray) -> np.ndarray:
    z = np.empty((n, t), dtype=np.int64)
    cum = np.cumsum(transition, axis=1)
    z[:, 0] = rng.choice(len(initial), size=n, p=initial)
    u = rng.random((n, t))
    k = len(initial)
    for s in range(1, t):
        z[:, s] = np.minimum((u[:, s, None] > cum[z[:, s - 1]]).sum(1), k - 1)
    return z


def sample_hmm_symbols(n: int, t: int, initial: np.ndarray, transition: np.ndarray,
                       emission: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, T]`` int64 symbols from a categorical HMM."""
    rng = np.random.default_rng(seed)
    z = _markov_states(rng, n, t, initial, transition)
    cum = np.cumsum(emission, axis=1)
    u = rng.random(z.shape)
    return np.minimum((u[..., None] > cum[z]).sum(-1), emission.shape[1] - 1).astype(np.int64)


def sample_hmm_states(n: int, t: int, initial: np.ndarray, transition: np.ndarray,
                      seed: int = 0) -> np.ndarray:
    """``[N, T]`` hidden states of a Markov chain."""
    return _markov_states(np.random.default_rng(seed), n, t, initial, transition)


def local_level_series(n: int, t: int, seed: int = 0) -> np.ndarray:
    """``[N, T]`` float64 series from the local level model :data:`LOCAL_LEVEL`."""
    rng = np.random.default_rng(seed)
    p = LOCAL_LEVEL
    level0 = p["initial_mean"] + np.sqrt(p["initial_var"]) * rng.standard_normal((n, 1))
    steps = np.sqrt(p["level_var"]) * rng.standard_normal((n, t - 1))
    level = np.concatenate([level0, level0 + np.cumsum(steps, axis=1)], axis=1)
    return level + np.sqrt(p["obs_var"]) * rng.standard_normal((n, t))
