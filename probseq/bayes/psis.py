"""Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao and Gabry 2024).

Importance ratios ``r_s = p(theta_s | target) / p(theta_s | proposal)`` of S posterior draws
have a heavy right tail when the two posteriors differ much. PSIS fits a generalised Pareto
distribution to the M largest ratios (``M = min(ceil(0.2 S), ceil(3 sqrt(S)))``), replaces
them by the fitted distribution's expected order statistics (quantiles at
``(z - 1/2) / M``, z = 1..M) and truncates at the largest raw ratio. The fitted shape
``k_hat`` says how far to trust the estimate: below 0.5 the plain estimate is fine, up to
0.7 PSIS is reliable, above 0.7 the ratios' variance is (nearly) infinite and the estimate
is not to be trusted (leave-future-out then refits; Buerkner, Gabry and Vehtari 2020).

The shape is estimated as Zhang and Stephens (2009) with the weakly informative prior of
Vehtari et al. (the estimate shrunk towards 0.5 with weight 10 observations), as in the
``loo`` R package and ArviZ.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psis", "gpd_fit", "tail_length"]


def tail_length(num_draws: int) -> int:
    """M, the number of largest ratios the generalised Pareto tail is fitted to."""
    return int(math.ceil(min(0.2 * num_draws, 3.0 * math.sqrt(num_draws))))


def gpd_fit(exceedances: np.ndarray) -> tuple[float, float]:
    """Shape k and scale sigma of a generalised Pareto fit to positive exceedances.

    Zhang and Stephens' (2009) empirical Bayes estimate, then the shape shrunk towards 0.5
    by the weakly informative prior of Vehtari et al. (``(n k + 10 * 0.5) / (n + 10)``).

    Args:
        exceedances: ``[n]`` values above the threshold (minus the threshold), sorted
            ascending.

    Returns:
        ``(k, sigma)``.
    """
    x = np.asarray(exceedances, dtype=np.float64)
    n = x.shape[0]
    m = 30 + int(math.sqrt(n))
    b = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b /= 3.0 * x[int(n / 4 + 0.5) - 1]
    b += 1.0 / x[-1]
    k = np.log1p(-b[:, None] * x).mean(axis=1)
    profile = n * (np.log(-b / k) - k - 1.0)
    weights = 1.0 / np.exp(profile - profile[:, None]).sum(axis=1)
    keep = weights >= 10 * np.finfo(float).eps
    weights, b = weights[keep], b[keep]
    weights /= weights.sum()
    b_post = float((b * weights).sum())
    k_post = float(np.log1p(-b_post * x).mean())
    sigma = -k_post / b_post
    k_post = (n * k_post + 10 * 0.5) / (n + 10)
    return k_post, sigma


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    if abs(k) < 1e-12:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def psis(log_ratios: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, self-normalised log importance weights and their k-hat.

    Args:
        log_ratios: ``[S]`` log importance ratios (any additive constant).

    Returns:
        ``(log_weights [S], k_hat)``: ``log_weights`` are normalised (their exponentials sum
        to 1). ``k_hat`` is ``inf`` when 4 or fewer draws lie above the tail's threshold
        (too few to fit), and 0 for constant ratios (uniform weights).

    Raises:
        ValueError: a NaN ratio, or fewer than 2 draws.
    """
    lr = np.array(log_ratios, dtype=np.float64).reshape(-1)
    s = lr.shape[0]
    if s < 2:
        raise ValueError(f"PSIS needs at least 2 draws, got {s}")
    if np.isnan(lr).any():
        raise ValueError("log importance ratios contain NaN")
    lr = lr - lr.max()
    if not (lr < 0).any():  # constant ratios: the weights are uniform
        return np.full(s, -math.log(s)), 0.0
    order = np.argsort(lr, kind="stable")
    m = tail_length(s)
    cutoff = max(lr[order[s - m - 1]], math.log(np.finfo(float).tiny))
    tail = order[lr[order] > cutoff]  # ascending
    k_hat = math.inf
    if tail.shape[0] > 4:
        exceed = np.exp(lr[tail]) - math.exp(cutoff)
        k_hat, sigma = gpd_fit(exceed)
        if math.isfinite(k_hat):
            probs = (np.arange(tail.shape[0]) + 0.5) / tail.shape[0]
            smoothed = _gpd_quantile(probs, k_hat, sigma) + math.exp(cutoff)
            lr[tail] = np.minimum(np.log(smoothed), 0.0)  # truncated at the largest raw ratio
    lr -= _logsumexp(lr)
    return lr, float(k_hat)


def _logsumexp(x: np.ndarray) -> float:
    top = float(x.max())
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.exp(x - top).sum()))
