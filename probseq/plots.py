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

__all__ = ["plot_comparison", "plot_step_log_lik", "plot_samples", "plot_forecast"]


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
    models: Mapping[str, SequenceModel],
    history: Any,
    horizon: int,
    actual: Any | None = None,
    num_samples: int = 500,
    level: float = 0.9,
    seed: int | None = 0,
    index: Sequence | None = None,
):
    """Forecast fans: each model's median and central ``level`` interval of ``horizon``
    future values, estimated from ``num_samples`` sampled continuations of ``history``.

    Sampling works for every model (latent ones filter on the history first), so the fans
    of different families are comparable. Univariate continuous data only.
    """
    hist = np.asarray(as_sequences(history, "continuous")[0][0], dtype=float)
    if hist.ndim != 1:
        raise ValueError("plot_forecast draws univariate series only")
    t0 = len(hist)
    x = np.asarray(index) if index is not None else np.arange(t0 + horizon)
    shown = max(0, t0 - max(3 * horizon, 30))  # the recent history only
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = _figure(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (name, m) in zip(axes.flat, models.items(), strict=False):
        s = m.sample(num_samples, t0 + horizon, prefix=torch.as_tensor(hist), seed=seed)
        fut = s.values.numpy()[:, t0:]
        lo, med, hi = np.quantile(fut, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
        ax.plot(x[shown:t0], hist[shown:], color="k", lw=1)
        ax.fill_between(x[t0:], lo, hi, alpha=0.3, label=f"{int(level * 100)}% interval")
        ax.plot(x[t0:], med, lw=1.5, label="median")
        if actual is not None:
            ax.plot(x[t0:], np.asarray(actual, dtype=float)[:horizon], "k--", lw=1,
                    label="actual")
        ax.set_title(name)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Forecasts, {horizon} steps ahead")
    fig.tight_layout()
    return fig
