"""Residual diagnostics: one-step quantile residuals and the Ljung-Box test.

A model that is right makes its one-step predictive CDF at the observed value,
``u_t = F_t(x_t | x_1..x_(t-1))``, independent and uniform (the probability integral
transform); its quantile residuals ``r_t = Phi^-1(u_t)`` are then independent standard
normals (Dunn & Smyth 1996), whatever the predictive's shape: a Gaussian's residual is the
standardised one-step error ``(x_t - mean) / sd``, a mixture's (HMM, switching AR) is not, but
is still N(0, 1) under the model. Serial correlation left in them (Ljung-Box) or a shape far
from normal (Jarque-Bera) says the model misses structure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probseq.data import Sequences

__all__ = ["quantile_residuals", "autocorrelations", "ljung_box"]


def quantile_residuals(model: Any, seqs: Sequences, exog: torch.Tensor | None = None,
                       kind: str = "quantile", seed: int = 0) -> torch.Tensor:
    """``[N, T_max]`` one-step residuals of univariate reals or counts; NaN where none exists.

    Counts get randomised quantile residuals: ``u_t`` drawn uniformly between
    ``F_t(x_t - 1)`` and ``F_t(x_t)`` (Dunn & Smyth), with a generator seeded by ``seed``.

    Args:
        model: a fitted model with one-step predictive distributions.
        seqs: univariate real sequences.
        exog: covariates ``[N, T_max, E]`` (models with covariates).
        kind: ``"quantile"`` (``Phi^-1(F_t(x_t))``) or ``"standardized"``
            (``(x_t - E[x_t | past]) / sd(x_t | past)``; the same for a Gaussian predictive;
            reals only).
        seed: the randomisation of count residuals.

    Returns:
        NaN at padding, at missing steps and at the steps that only locate a diffuse
        initial state (those :func:`probseq.compare` conditions on).

    Raises:
        ValueError: symbols or multivariate data, or an unknown ``kind``.
    """
    from probseq.compare import conditioning_per_sequence

    if kind not in ("quantile", "standardized"):
        raise ValueError(f"kind must be 'quantile' or 'standardized', got {kind!r}")
    from probseq.scoring import pit

    if model.data_kind == "discrete" or seqs.values.ndim != 2:
        raise ValueError(
            f"residuals are defined here for univariate real data or counts; {model.name} "
            f"models {'multivariate ' if seqs.values.ndim == 3 else ''}{model.data_kind} data "
            "(use probseq.plots.plot_calibration for a PIT histogram of any model)")
    if kind == "standardized" and model.data_kind == "count":
        raise ValueError("standardized residuals of counts are not N(0, 1) under the model; "
                         "use kind='quantile' (randomised quantile residuals)")
    kw = {} if exog is None else {"exog": exog}
    dist = model._step_predictive(seqs, **kw)
    x = seqs.values.to(torch.float64)
    if kind == "quantile":
        u = pit(dist, x, seed=seed).to(torch.float64).clamp(1e-300, 1 - 1e-16)
        out = torch.special.ndtri(u)
    else:
        out = (x - dist.mean.to(torch.float64)) / dist.stddev.to(torch.float64)
    keep = seqs.step_observed if seqs.has_missing else seqs.mask
    skip = torch.from_numpy(conditioning_per_sequence({"model": model}, seqs))
    keep = keep & (torch.arange(seqs.max_length)[None, :] >= skip[:, None])
    return torch.where(keep, out, torch.full((), math.nan, dtype=torch.float64))


def autocorrelations(values: np.ndarray, lags: int) -> np.ndarray:
    """``[lags]`` autocorrelations at lags 1..lags of one series ``[T]`` with NaN where
    missing: statsmodels' ``acf(missing="conservative")`` (products of the pairs both
    observed, over the observed sum of squares; the usual estimate without gaps)."""
    from statsmodels.tsa.stattools import acf

    return acf(np.asarray(values, dtype=np.float64), nlags=lags, missing="conservative",
               fft=False)[1:]


def ljung_box(residuals: torch.Tensor | np.ndarray, lags: int | None = None) -> Any:
    """The Ljung-Box test of residuals ``[N, T_max]`` (NaN where missing), pooled over
    sequences.

    One complete sequence gives exactly statsmodels' ``acorr_ljungbox``. A sequence with
    gaps uses :func:`autocorrelations` with ``n`` its observed count. Independent sequences
    add: Q is the sum of their statistics, on ``N * lag`` degrees of freedom (no correction
    for estimated parameters, as statsmodels' default).

    Args:
        residuals: ``[N, T_max]`` or ``[T]``.
        lags: the largest lag (default: ``min(10, n // 5)`` with n the shortest sequence's
            residual count, at least 1).

    Returns:
        A DataFrame indexed by lag 1..lags with ``lb_stat``, ``lb_pvalue`` and ``df``.

    Raises:
        ValueError: a sequence has no more residuals than ``lags``.
    """
    import pandas as pd
    from scipy import stats
    from statsmodels.stats.diagnostic import acorr_ljungbox

    r = np.atleast_2d(np.asarray(residuals, dtype=np.float64))
    rows = []
    for row in r:
        idx = np.flatnonzero(np.isfinite(row))
        rows.append(row[idx[0]: idx[-1] + 1] if len(idx) else row[:0])
    counts = [int(np.isfinite(row).sum()) for row in rows]
    if lags is None:
        lags = max(1, min(10, min(counts) // 5))
    if isinstance(lags, bool) or not isinstance(lags, int) or lags < 1:
        raise ValueError(f"lags must be a positive integer, got {lags!r}")
    q = np.zeros(lags)
    for i, (row, n) in enumerate(zip(rows, counts, strict=True)):
        if n <= lags:
            raise ValueError(f"sequence {i} has {n} residuals, not more than lags={lags}")
        if n == len(row):
            q += acorr_ljungbox(row, lags=lags)["lb_stat"].to_numpy()
        else:
            rho = autocorrelations(row, lags)
            q += n * (n + 2) * np.cumsum(rho ** 2 / (n - np.arange(1, lags + 1)))
    df = len(rows) * np.arange(1, lags + 1)
    return pd.DataFrame({"lb_stat": q, "lb_pvalue": stats.chi2.sf(q, df), "df": df},
                        index=pd.Index(np.arange(1, lags + 1), name="lag"))
