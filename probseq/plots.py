"""Figures for notebooks and the command line. Each function returns a matplotlib Figure."""

from __future__ import annotations

import math
import re
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


def _x_axis(data: Any, index: Sequence | None, length: int) -> tuple[np.ndarray, str]:
    """x values for ``length`` steps and their label: ``index`` (or a pandas input's index),
    continued past its end by its step when needed; else the step numbers 0..length-1."""
    if index is None and isinstance(data, pd.Series | pd.DataFrame):
        index = data.index
    if index is None:
        return np.arange(length), "step t"
    name = getattr(index, "name", None)
    x = np.asarray(index)
    if len(x) < length:
        if len(x) >= 2 and np.issubdtype(x.dtype, np.number):
            step = x[-1] - x[-2]
            x = np.concatenate([x, x[-1] + step * np.arange(1, length - len(x) + 1)])
        else:
            return np.arange(length), "step t"
    return x[:length], (str(name) if name else "time")


def plot_comparison(table: pd.DataFrame, title: str | None = None):
    """Nats per step of each model (lower is better) as points, with a 95% interval of each
    model's paired difference to the best one (1.96 ``delta_se``, per step) as error bars.

    Args:
        table: the output of :func:`probseq.compare`. Models whose likelihood is a bound
            are drawn in orange.
        title: what was scored (e.g. "Nile, last 20 years one step ahead"); the default
            says held-out nats per step.
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
    ax.set_xlabel("nats per scored step (lower is better)")
    ax.grid(axis="x", alpha=0.3)
    note = "error bars: 95% interval of the paired difference to the best model"
    if not table["exact"].all():
        note += "; orange: likelihood is a lower bound"
    ax.set_title((title or "Negative log-likelihood per step of the scored data") + "\n" + note,
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_step_log_lik(models: Mapping[str, SequenceModel], sequence: Any, start: int = 0,
                      index: Sequence | None = None):
    """Per-step log-likelihood ``log p(x_t | x_<t)`` of each model over one sequence (top),
    and each model's cumulative log-likelihood relative to the best one (bottom), which
    shows where models gain or lose.

    Args:
        models: name -> fitted model.
        sequence: one sequence ``[T]`` or ``[T, D]`` (a pandas Series puts its index on the
            x-axis).
        start: steps before ``start`` are shaded and labelled as the conditioning history
            (not scored); the cumulative sums begin there.
        index: x values of the T steps (years, dates); default: a pandas input's index, else
            the step numbers.
    """
    fig, (ax, ax2) = _figure(2, 1, figsize=(9, 5.5), sharex=True)
    steps = {name: m.log_prob_steps(sequence).numpy() for name, m in models.items()}
    length = len(next(iter(steps.values())))
    x, xlabel = _x_axis(sequence, index, length)
    cum = {name: np.cumsum(v[start:]) for name, v in steps.items()}
    best = max(cum, key=lambda n: cum[n][-1])
    for name, v in steps.items():
        ax.plot(x, v, lw=0.8, label=name)
        ax2.plot(x[start:], cum[name] - cum[best], lw=1.2, label=name)
    if start:
        half = (x[1] - x[0]) / 2 if length > 1 else 0.5
        for a in (ax, ax2):
            a.axvspan(x[0] - half, x[start] - half, color="0.9", zorder=0,
                      label="conditioned on, not scored" if a is ax else None)
    ax.set_ylabel("log p(x_t | x_<t)  (nats)")
    ax2.set_ylabel(f"cumulative log-lik\nminus {best}'s")
    ax2.axhline(0.0, color="0.5", lw=0.6)
    ax2.set_xlabel(xlabel)
    ax.legend(fontsize=8, ncol=min(5, len(models) + bool(start)))
    first = x[start]
    scored = (f"scored from {'step ' if xlabel == 'step t' else ''}{first} on, each step "
              "given the ones before it") if start else "every step given the ones before it"
    ax.set_title(f"One-step-ahead log-likelihood per step: {scored}", fontsize=10)
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
    index: Sequence | None = None,
    width: int = 100,
):
    """Sample paths of each model beside the data.

    Continuous data are drawn as lines (the first dimension of multivariate data) on one
    shared y-scale, so the spread of the panels can be compared; symbol data as coloured
    rasters, or with ``decode`` (symbols -> str) as text wrapped at ``width`` characters
    (newlines shown as ⏎, runs of spaces and tabs as one space).

    Args:
        models: name -> fitted model.
        data: the data; its first sequence is drawn on top (a pandas Series puts its index
            on the x-axis).
        length: T of each sample (default: the length of the first sequence).
        num_samples: samples per model.
        seed: makes the draws reproducible.
        decode: symbols -> str, to print symbol samples as text.
        prefix_length: with ``prefix_length > 0`` every sample continues the data's first
            steps (useful for models whose initial distribution is diffuse).
        index: x values of the steps (default: a pandas input's index, continued past its
            end, else the step numbers).
        width: characters per line of text samples.
    """
    seqs, _ = as_sequences(data)
    first = seqs[0].numpy()
    length = length or len(first)
    prefix = seqs[0][:prefix_length] if prefix_length else None
    panels = [("data", first[None, :length])]
    for name, m in models.items():
        s = m.sample(num_samples, length, prefix=prefix, seed=seed).values.numpy()
        panels.append((name, s))
    what = (f"continuing the data's first {prefix_length} step(s)" if prefix_length
            else "drawn from each model")
    if decode is not None:
        return _text_samples(panels, decode, width, num_samples,
                             f"Data and {num_samples} samples of each model, {what}")
    rows = len(panels)
    fig, axes = _figure(rows, 1, figsize=(9, 1.5 * rows + 0.7), sharex=True,
                        sharey=not seqs.is_discrete, squeeze=False)
    axes = axes[:, 0]
    x, xlabel = _x_axis(data, index, length)
    for ax, (name, arr) in zip(axes, panels, strict=True):
        if seqs.is_discrete:
            ax.imshow(arr[:, :length], aspect="auto", interpolation="nearest", cmap="tab20",
                      extent=(x[0] - 0.5, x[length - 1] + 0.5, len(arr) - 0.5, -0.5))
            ax.set_yticks([])
        else:
            vals = arr if arr.ndim == 2 else arr[..., 0]
            for row in vals:
                ax.plot(x[: row.shape[0]], row[:length], lw=0.9,
                        color="k" if name == "data" else None)
            if prefix_length and name != "data":  # the steps copied from the data
                half = (x[1] - x[0]) / 2 if length > 1 else 0.5
                ax.axvspan(x[0] - half, x[prefix_length - 1] + half, color="0.9", zorder=0)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel(xlabel)
    scale = "" if seqs.is_discrete else " (one y-scale for all panels)"
    fig.suptitle(f"Data and {num_samples} samples of each model, {what}{scale}", fontsize=10)
    fig.tight_layout()
    return fig


def _text_samples(panels, decode, width: int, num_samples: int, title: str):
    """Text samples, wrapped, in a figure whose height follows the number of lines."""
    import textwrap

    blocks = []
    for name, arr in panels:
        lines = []
        for a in arr[:num_samples]:
            text = re.sub(r"[ \t]+", " ", decode(a).replace("\n", "⏎ "))
            lines += textwrap.wrap(text, width, replace_whitespace=False,
                                   drop_whitespace=False) or [""]
            lines.append("")
        blocks.append((name, lines[:-1]))
    n_lines = sum(len(lines) + 2 for _, lines in blocks)
    line_h = 0.16  # inches per line at fontsize 8
    fig, ax = _figure(figsize=(0.075 * width + 0.6, line_h * n_lines + 0.7))
    ax.axis("off")
    y = 1.0
    step = line_h / (line_h * n_lines)
    for name, lines in blocks:
        ax.text(0, y, name, va="top", fontsize=9, fontweight="bold", transform=ax.transAxes)
        y -= step
        ax.text(0, y, "\n".join(lines), va="top", family="monospace", fontsize=8,
                transform=ax.transAxes, linespacing=1.35)
        y -= step * (len(lines) + 1)
    fig.suptitle(title, fontsize=10)
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
