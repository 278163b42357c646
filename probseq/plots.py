"""Figures for notebooks and the command line. Each function returns a matplotlib Figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from probseq.base import SequenceModel
from probseq.data import as_sequences

__all__ = ["plot_comparison", "plot_step_log_lik", "plot_samples", "plot_forecast",
           "plot_calibration"]


def _figure(nrows: int = 1, ncols: int = 1, **kwargs: Any):
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, **kwargs)


def plot_comparison(table: pd.DataFrame, title: str | None = None):
    """Nats per step of each model (lower is better) as points, with a 95% interval of each
    model's paired difference to the best one (1.96 ``delta_se``, per step) as error bars.

    ``table`` is the output of :func:`probseq.compare`. Models whose likelihood is a bound
    are drawn in orange.
    """
    n_steps = (-table["log_lik"] / table["nats_per_step"]).to_numpy()
    err = (1.96 * table["delta_se"].to_numpy() / n_steps)
    err = np.where(np.isfinite(err), err, 0.0)
    fig, ax = _figure(figsize=(7, 0.45 * len(table) + 1.6))
    y = np.arange(len(table))[::-1]
    for yi, (x, e, exact) in enumerate(zip(table["nats_per_step"], err, table["exact"],
                                           strict=True)):
        ax.errorbar(x, y[yi], xerr=e, fmt="o", capsize=4,
                    color="tab:blue" if exact else "tab:orange")
    ax.set_yticks(y, table.index)
    ax.set_xlabel("nats per step (lower is better)")
    ax.grid(axis="x", alpha=0.3)
    note = "error bars: 95% interval of the paired difference to the best model"
    if not table["exact"].all():
        note += "; orange: likelihood is a lower bound"
    ax.set_title((title or "Model comparison") + "\n" + note, fontsize=9)
    fig.tight_layout()
    return fig


def plot_step_log_lik(models: Mapping[str, SequenceModel], sequence: Any, start: int = 0):
    """Per-step log-likelihood ``log p(x_t | x_<t)`` of each model over one sequence (top),
    and each model's cumulative log-likelihood relative to the best one (bottom), which
    shows where models gain or lose.

    Args:
        models: name -> fitted model.
        sequence: one sequence ``[T]`` or ``[T, D]``.
        start: steps before ``start`` are shaded (the conditioning history) and the
            cumulative sums begin there.
    """
    fig, (ax, ax2) = _figure(2, 1, figsize=(9, 5.5), sharex=True)
    steps = {name: m.log_prob_steps(sequence).numpy() for name, m in models.items()}
    cum = {name: np.cumsum(v[start:]) for name, v in steps.items()}
    best = max(cum, key=lambda n: cum[n][-1])
    for name, v in steps.items():
        t = np.arange(len(v))
        ax.plot(t, v, lw=0.8, label=name)
        ax2.plot(t[start:], cum[name] - cum[best], lw=1.2, label=name)
    if start:
        for a in (ax, ax2):
            a.axvspan(-0.5, start - 0.5, color="0.9", zorder=0)
    ax.set_ylabel("log p(x_t | x_<t)")
    ax2.set_ylabel(f"cumulative log-lik\nminus {best}'s")
    ax2.set_xlabel("step t")
    ax.legend(fontsize=8, ncol=min(4, len(models)))
    ax.set_title("Per-step log-likelihood")
    fig.tight_layout()
    return fig


def plot_samples(
    models: Mapping[str, SequenceModel],
    data: Any,
    length: int | None = None,
    num_samples: int = 3,
    seed: int | None = 0,
    decode=None,
    prefix_length: int = 0,
):
    """Sample paths of each model beside the data.

    Continuous data are drawn as lines (the first dimension of multivariate data). Symbol
    data are drawn as coloured rasters, or, with ``decode`` (symbols -> str), as text.
    With ``prefix_length > 0`` every sample continues the data's first steps (useful
    for models whose initial distribution is diffuse).
    """
    seqs, _ = as_sequences(data)
    first = seqs[0].numpy()
    length = length or len(first)
    prefix = seqs[0][:prefix_length] if prefix_length else None
    rows = len(models) + 1
    fig, axes = _figure(rows, 1, figsize=(9, 1.6 * rows + 0.5), sharex=decode is None,
                        squeeze=False)
    axes = axes[:, 0]
    panels = [("data", first[None])]
    for name, m in models.items():
        s = m.sample(num_samples, length, prefix=prefix, seed=seed).values.numpy()
        panels.append((name, s))
    for ax, (name, arr) in zip(axes, panels, strict=True):
        if decode is not None:
            ax.axis("off")
            lines = [decode(a[:120]).replace("\n", "⏎") for a in arr[:num_samples]]
            ax.text(0, 1, f"{name}:\n" + "\n".join(lines), va="top", family="monospace",
                    fontsize=7, transform=ax.transAxes)
        elif seqs.is_discrete:
            ax.imshow(arr[:, :length], aspect="auto", interpolation="nearest", cmap="tab20")
            ax.set_ylabel(name, rotation=0, ha="right")
            ax.set_yticks([])
        else:
            vals = arr if arr.ndim == 2 else arr[..., 0]
            for row in vals:
                ax.plot(row[:length], lw=0.9, color="k" if name == "data" else None)
            ax.set_ylabel(name, rotation=0, ha="right")
    axes[-1].set_xlabel("step t")
    fig.suptitle("Data and samples" + (f" continuing its first {prefix_length} step(s)"
                                        if prefix_length else ""))
    fig.tight_layout()
    return fig


def plot_forecast(
    models: Mapping[str, Any] | Any,
    history: Any,
    horizon: int | None = None,
    actual: Any | None = None,
    num_samples: int = 500,
    level: float = 0.9,
    seed: int | None = 0,
    index: Sequence | pd.Index | None = None,
):
    """Forecast fans: each model's median and central ``level`` interval of the next
    ``horizon`` values after ``history``.

    Args:
        models: name -> fitted model or :class:`~probseq.forecast.Forecast` (one ``Forecast``
            alone is also accepted). Models are asked for ``forecast(history, horizon)``
            (exact where they can, sampled otherwise, ``num_samples`` paths); a model
            without a forecast falls back to quantiles of sampled continuations.
        history: one univariate series (array, tensor or pandas Series).
        horizon: H; taken from the forecasts when only Forecast objects are given.
        actual: the values that followed, drawn dashed.
        num_samples: sampled paths where sampling is needed.
        level: the interval's coverage.
        seed: makes sampled parts reproducible.
        index: x positions of history and future (``len(history) + H``): any sequence or a
            pandas ``DatetimeIndex`` / ``PeriodIndex``. By default a pandas ``history``
            provides them (its index continued by the forecast's), else ``0..T+H-1``.
    """
    from probseq.forecast import Forecast

    if isinstance(models, Forecast):
        models = {"forecast": models}
    hist = np.asarray(as_sequences(history, "continuous")[0][0], dtype=float)
    if hist.ndim != 1:
        raise ValueError("plot_forecast draws univariate series only")
    t0 = len(hist)
    fcs: dict[str, Forecast] = {}
    for name, m in models.items():
        if isinstance(m, Forecast):
            if m.mean.ndim != 1:
                raise ValueError(f"forecast {name!r} is not of one univariate series")
            fcs[name] = m
        else:
            if horizon is None:
                raise ValueError("horizon is needed to forecast with models")
            fcs[name] = _forecast_of(m, history, hist, horizon, level, num_samples, seed)
    h = horizon if horizon is not None else max(int(f.mean.shape[0]) for f in fcs.values())
    x = _x_positions(index, history, fcs, t0, h)
    shown = max(0, t0 - max(3 * h, 30))  # the recent history only
    ncols = min(3, len(fcs))
    nrows = math.ceil(len(fcs) / ncols)
    fig, axes = _figure(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (name, fc) in zip(axes.flat, fcs.items(), strict=False):
        hh = min(h, int(fc.mean.shape[0]))
        lvl = fc.level
        lo, med, hi = (fc.quantile(q).numpy()[:hh] for q in (0.5 - lvl / 2, 0.5, 0.5 + lvl / 2))
        ax.plot(x[shown:t0], hist[shown:], color="k", lw=1)
        ax.fill_between(x[t0:t0 + hh], lo, hi, alpha=0.3, label=f"{lvl:.0%} interval")
        ax.plot(x[t0:t0 + hh], med, lw=1.5, label="median")
        if actual is not None:
            act = np.asarray(actual, dtype=float)[:hh]
            ax.plot(x[t0:t0 + len(act)], act, "k--", lw=1, label="actual")
        ax.set_title(name)
        if np.issubdtype(np.asarray(x).dtype, np.datetime64):
            fig.autofmt_xdate()
    for ax in list(axes.flat)[len(fcs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Forecasts, {h} steps ahead")
    fig.tight_layout()
    return fig


def _forecast_of(model, history, hist: np.ndarray, horizon: int, level: float,
                 num_samples: int, seed: int | None):
    """``model.forecast``, or quantiles of sampled continuations for a model without one."""
    from probseq.forecast import build_forecast

    try:
        return model.forecast(history, horizon, level=level, num_samples=num_samples,
                              seed=seed)
    except (NotImplementedError, TypeError):
        s = model.sample(num_samples, len(hist) + horizon, prefix=torch.as_tensor(hist),
                         seed=seed)
        fut = s.values[:, len(hist):].unsqueeze(0)
        return build_forecast(None, 0, fut, horizon, level, discrete=False, single=True)


def _x_positions(index, history, fcs, t0: int, h: int) -> np.ndarray:
    """x values of the T + H points: the given index, a pandas history's continued, or
    positions. Periods become timestamps (matplotlib draws dates, not Periods)."""
    if index is None and isinstance(history, pd.Series | pd.DataFrame):
        future = next((f.index for f in fcs.values() if f.index is not None), None)
        if future is not None and len(future) >= h:
            index = history.index.append(future[:h])
    if index is None:
        return np.arange(t0 + h)
    idx = index if isinstance(index, pd.Index) else pd.Index(list(index))
    if isinstance(idx, pd.PeriodIndex):
        idx = idx.to_timestamp()
    elif idx.dtype == object and len(idx) and isinstance(idx[0], pd.Period):
        idx = pd.PeriodIndex(idx).to_timestamp()
    if len(idx) < t0 + h:
        raise ValueError(f"index has {len(idx)} entries; history plus horizon need {t0 + h}")
    return idx.to_numpy()[: t0 + h]


def plot_calibration(
    models: Mapping[str, SequenceModel],
    data: Any,
    *,
    start: int = 0,
    levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 0.99),
    bins: int = 10,
):
    """Calibration of the one-step-ahead predictives of continuous (or count) models.

    Left: the histogram of PIT values ``F(x_t)`` of every step ``t >= start`` (flat for a
    calibrated model; U-shaped: too narrow; hump-shaped: too wide). Right: the empirical
    coverage of the central intervals against their nominal levels (on the diagonal for a
    calibrated model).
    """
    from probseq.scoring import covered, pit

    seqs = as_sequences(data, "continuous")[0]
    keep = seqs.mask.clone()
    keep[:, :start] = False
    fig, (ax_pit, ax_cov) = _figure(1, 2, figsize=(9, 3.6))
    edges = np.linspace(0, 1, bins + 1)
    for name, m in models.items():
        dist = m._step_predictive(seqs)
        values = seqs.values.to(torch.float64)
        u = pit(dist, values)
        u = (u[..., 0] if u.ndim == 3 else u)[keep].numpy()
        ax_pit.hist(u, bins=edges, density=True, histtype="step", lw=1.5, label=name)
        cov = []
        for lvl in levels:
            c = covered(dist, values, lvl)
            c = c[..., 0] if c.ndim == 3 else c
            cov.append(float(c[keep].to(torch.float64).mean()))
        ax_cov.plot(levels, cov, "o-", label=name)
    ax_pit.axhline(1.0, color="k", lw=0.8, ls=":")
    ax_pit.set_xlabel("PIT")
    ax_pit.set_ylabel("density")
    ax_pit.set_title("PIT histogram")
    ax_cov.plot([0, 1], [0, 1], color="k", lw=0.8, ls=":")
    ax_cov.set_xlim(min(levels) - 0.05, 1.0)
    ax_cov.set_ylim(min(levels) - 0.05, 1.0)
    ax_cov.set_xlabel("nominal coverage")
    ax_cov.set_ylabel("empirical coverage")
    ax_cov.set_title("Interval coverage")
    ax_cov.legend(fontsize=7)
    fig.tight_layout()
    return fig
