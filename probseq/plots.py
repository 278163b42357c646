"""Figures for notebooks and the command line. Each function returns a matplotlib Figure."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from probseq.base import SequenceModel
from probseq.data import as_sequences

__all__ = ["plot_comparison", "plot_step_log_lik", "plot_samples", "plot_forecast",
           "plot_calibration", "plot_decomposition", "plot_residuals"]


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
    steps = {name: np.asarray(m.log_prob_steps(sequence), dtype=float)
             for name, m in models.items()}
    length = len(next(iter(steps.values())))
    x, xlabel = _x_axis(sequence, index, length)
    cum = {name: np.cumsum(v[start:]) for name, v in steps.items()}
    best = max(cum, key=lambda n: cum[n][-1])
    # of a long conditioning history, only as much as is scored is drawn
    lo = max(0, start - max(length - start, 10)) if start else 0
    for name, v in steps.items():
        ax.plot(x[lo:], v[lo:], lw=0.8, label=name)
        ax2.plot(x[start:], cum[name] - cum[best], lw=1.2, label=name)
    if start:
        half = (x[1] - x[0]) / 2 if length > 1 else 0.5
        for a in (ax, ax2):
            a.axvspan(x[lo] - half, x[start] - half, color="0.9", zorder=0,
                      label="conditioned on, not scored" if a is ax else None)
    ax.set_ylabel("log p(x_t | x_<t)  (nats)")
    ax2.set_ylabel(f"cumulative log-lik minus\n{best}'s (the best here)")
    ax2.axhline(0.0, color="0.5", lw=0.6)
    ax2.set_xlabel(xlabel)
    ax.legend(fontsize=8, ncol=min(5, len(models) + bool(start)))
    first = x[start]
    if isinstance(first, np.datetime64 | pd.Timestamp):
        first = f"{pd.Timestamp(first):%Y-%m-%d}"
    scored = (f"scored from {'step ' if xlabel == 'step t' else ''}{first} on, each step "
              "given the ones before it") if start else "every step given the ones before it"
    ax.set_title(textwrap.fill(
        f"One-step-ahead log-likelihood per step: {scored}; below, each model's cumulative "
        f"difference to {best}, the best on this sequence", 100), fontsize=9)
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
    first = np.asarray(seqs.with_gaps(0))
    length = length or len(first)
    prefix = first[:prefix_length] if prefix_length else None
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
    models: Mapping[str, Any] | Any,
    history: Any,
    horizon: int | None = None,
    actual: Any | None = None,
    num_samples: int = 500,
    level: float = 0.95,
    seed: int | None = 0,
    index: Sequence | pd.Index | None = None,
    title: str | None = None,
):
    """Forecast fans: each model's median and central ``level`` interval of the next
    ``horizon`` values after ``history``.

    The panels share one y-scale when their ranges are comparable (within a factor of 3),
    so that spreads can be compared; otherwise each panel has its own, so that one wide fan
    does not flatten the others.

    Args:
        models: name -> fitted model or :class:`~probseq.forecast.Forecast` (one model or
            one ``Forecast`` alone is also accepted). Models are asked for
            ``forecast(history, horizon)`` (exact where they can, sampled otherwise,
            ``num_samples`` paths); a model without a forecast falls back to quantiles of
            sampled continuations.
        history: one univariate series (array, tensor or pandas Series).
        horizon: H; taken from the forecasts when only Forecast objects are given.
        actual: the values that followed, drawn dashed.
        num_samples: sampled paths where sampling is needed.
        level: the interval's coverage.
        seed: makes sampled parts reproducible.
        index: x positions of history and future (``len(history) + H``): any sequence or a
            pandas ``DatetimeIndex`` / ``PeriodIndex``. By default a pandas ``history``
            provides them (its index continued by the forecast's), else ``0..T+H-1``.
        title: the figure's title (default: the horizon and the intervals' level).
    """
    from probseq.forecast import Forecast

    if isinstance(models, Forecast):
        models = {"forecast": models}
    elif isinstance(models, SequenceModel):
        models = {models.name: models}
    hist = np.asarray(as_sequences(history, "continuous")[0].with_gaps(0), dtype=float)
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
    width = max(4.2 * ncols, 7.0)
    fig, axes = _figure(nrows, ncols, figsize=(width, 3.2 * nrows + 0.4), squeeze=False,
                        sharex=True)
    ranges = []
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
        ranges.append(ax.get_ylim())
        if np.issubdtype(np.asarray(x).dtype, np.datetime64):
            fig.autofmt_xdate()
    spans = [hi - lo for lo, hi in ranges]
    if len(spans) > 1 and max(spans) <= 3 * max(min(spans), 1e-300):
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        for ax in list(axes.flat)[: len(fcs)]:
            ax.set_ylim(lo, hi)  # comparable ranges: one scale, so spreads compare
    for ax in list(axes.flat)[len(fcs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    levels = sorted({round(float(fc.level), 6) for fc in fcs.values()})
    if title is None:
        title = (f"Forecasts of the next {h} steps from one origin "
                 f"({' / '.join(f'{v:.0%}' for v in levels)} intervals)")
    fig.suptitle(textwrap.fill(title, int(width * 11)), fontsize=10)
    fig.tight_layout()
    return fig


def _forecast_of(model, history, hist: np.ndarray, horizon: int, level: float,
                 num_samples: int, seed: int | None):
    """``model.forecast``, or quantiles of sampled continuations for a model without one."""
    from probseq.forecast import build_forecast

    try:
        fc = model.forecast(history, horizon, level=level, seed=seed)  # exact: no sampling
        if fc.method != "exact" and num_samples is not None:
            fc = model.forecast(history, horizon, level=level, num_samples=num_samples,
                                seed=seed)
        return fc
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

    One small panel per model: the histogram of PIT values ``F(x_t)`` of every step
    ``t >= start`` (flat for a calibrated model; U-shaped: too narrow; hump-shaped: too
    wide). Last panel: the empirical coverage of the central intervals against their nominal
    levels (on the diagonal for a calibrated model), every model's line inside the axes.
    """
    from probseq.scoring import covered, pit

    seqs = as_sequences(data, "continuous")[0]
    keep = seqs.mask.clone()
    keep[:, :start] = False
    panels = len(models) + 1
    ncols = min(4, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = _figure(nrows, ncols, figsize=(2.9 * ncols, 2.6 * nrows), squeeze=False)
    flat = list(axes.flat)
    ax_cov = flat[len(models)]
    edges = np.linspace(0, 1, bins + 1)
    lowest = min(levels)
    for (name, m), ax_pit, color in zip(models.items(), flat, _colors(len(models)),
                                        strict=False):
        dist = m._step_predictive(seqs)
        values = seqs.values.to(torch.float64)
        u = pit(dist, values)
        u = (u[..., 0] if u.ndim == 3 else u)[keep].numpy()
        ax_pit.hist(u, bins=edges, density=True, color=color, alpha=0.8)
        ax_pit.axhline(1.0, color="k", lw=0.8, ls=":")
        ax_pit.set_title(f"PIT: {name}", fontsize=9)
        ax_pit.set_xlabel("PIT", fontsize=8)
        cov = []
        for lvl in levels:
            c = covered(dist, values, lvl)
            c = c[..., 0] if c.ndim == 3 else c
            cov.append(float(c[keep].to(torch.float64).mean()))
        lowest = min(lowest, *cov)
        ax_cov.plot(levels, cov, "o-", color=color, label=name)
    flat[0].set_ylabel("density")
    ax_cov.plot([0, 1], [0, 1], color="k", lw=0.8, ls=":")
    ax_cov.set_xlim(min(levels) - 0.05, 1.02)
    ax_cov.set_ylim(lowest - 0.05, 1.02)
    ax_cov.set_xlabel("nominal coverage", fontsize=8)
    ax_cov.set_ylabel("empirical coverage", fontsize=8)
    ax_cov.set_title("Interval coverage", fontsize=9)
    ax_cov.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_residuals(model: SequenceModel, series: Any, *, exog: Any = None,
                   lags: int | None = None, title: str | None = None):
    """Four panels on the one-step quantile residuals of one series
    (:meth:`~probseq.SequenceModel.residuals`), as statsmodels' ``plot_diagnostics``: the
    residuals over time, their histogram against the N(0, 1) density, a normal Q-Q plot and
    their autocorrelations with the +-1.96/sqrt(n) band, the Ljung-Box p-value at the
    largest lag and Jarque-Bera's in the titles. Missing and diffuse steps are left out.
    """
    from scipy import stats

    from probseq.diagnostics import autocorrelations

    r = model.residuals(series, exog=exog)
    values = np.asarray(r, dtype=np.float64).reshape(-1)
    if values.ndim != 1 or np.isfinite(values).sum() < 3:
        raise ValueError("plot_residuals takes one series with at least 3 residuals")
    x, xlabel = _x_axis(series, None, len(values))
    ok = np.isfinite(values)
    table = model.residual_diagnostics(series, exog=exog, lags=lags)
    k = int(table.index[-1])
    fig, axes = _figure(2, 2, figsize=(9.5, 6.2))
    ax = axes[0, 0]
    ax.plot(x[ok], values[ok], lw=0.8, color="C0")
    ax.axhline(0, color="k", lw=0.6)
    for z in (-1.96, 1.96):
        ax.axhline(z, color="k", lw=0.6, ls=":")
    ax.set_title("Quantile residuals (N(0, 1) under the model)", fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax = axes[0, 1]
    ax.hist(values[ok], bins="auto", density=True, color="C0", alpha=0.7, label="residuals")
    grid = np.linspace(min(-4.0, values[ok].min()), max(4.0, values[ok].max()), 200)
    ax.plot(grid, stats.norm.pdf(grid), color="k", lw=1.0, label="N(0, 1)")
    ax.legend(fontsize=7)
    ax.set_title(f"Histogram (Jarque-Bera p = {table.attrs['jarque_bera_pvalue']:.3g})",
                 fontsize=9)
    ax = axes[1, 0]
    (osm, osr), _ = stats.probplot(values[ok], dist="norm")
    ax.plot(osm, osr, ".", ms=3, color="C0")
    lim = [min(osm.min(), osr.min()), max(osm.max(), osr.max())]
    ax.plot(lim, lim, color="k", lw=0.8)
    ax.set_xlabel("normal quantiles", fontsize=8)
    ax.set_ylabel("residual quantiles", fontsize=8)
    ax.set_title("Normal Q-Q", fontsize=9)
    ax = axes[1, 1]
    first, last = np.flatnonzero(ok)[[0, -1]]
    rho = autocorrelations(values[first: last + 1], k)
    ax.vlines(np.arange(1, k + 1), 0, rho, color="C0")
    ax.plot(np.arange(1, k + 1), rho, "o", ms=4, color="C0")
    band = 1.96 / math.sqrt(int(ok.sum()))
    ax.axhspan(-band, band, color="0.85", zorder=0)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("lag", fontsize=8)
    ax.set_title(f"Autocorrelation (Ljung-Box p = {table['lb_pvalue'].iloc[-1]:.3g} at "
                 f"lag {k})", fontsize=9)
    fig.suptitle(title or f"{model.name}: one-step residual diagnostics", fontsize=10)
    fig.tight_layout()
    return fig


def plot_decomposition(model: Any, series: Any, *, exog: Any = None, level: float = 0.95,
                       index: Sequence | pd.Index | None = None, title: str | None = None):
    """A structural model's decomposition of one series: the data with the smoothed level
    (the trend), then one panel per component (slope, seasonal, cycle, ...) with its
    central ``level`` interval from the smoothed variance, and the irregular (the data minus
    the observation components).

    Args:
        model: a fitted structural :class:`~probseq.LinearGaussianSSM` (built by
            ``LinearGaussianSSM.structural``).
        series: one univariate series (array, tensor or pandas Series; NaN gaps allowed).
        exog: the covariates of a model fitted with them (a ``regression`` panel is added).
        level: coverage of the bands.
        index: x positions (default: a pandas input's index, else 0..T-1).
        title: the figure's title.
    """
    from scipy.stats import norm

    dec = model.decompose(series, exog=exog)
    y = np.asarray(as_sequences(series, "continuous")[0].with_gaps(0), dtype=float)
    if y.ndim != 1:
        raise ValueError("plot_decomposition draws univariate series only")
    x, xlabel = _x_axis(series, index, len(y))
    z = float(norm.ppf(0.5 + level / 2))
    mean = {k: np.asarray(v, dtype=float) for k, v in dec.mean.items()}
    std = {k: np.sqrt(np.maximum(np.asarray(v, dtype=float), 0.0)) for k, v in dec.var.items()}
    others = [k for k in mean if k != "level"]
    signal = sum((mean[k] for k in mean if k != "slope"), np.zeros(len(y)))
    panels = 1 + len(others) + 1
    fig, axes = _figure(panels, 1, figsize=(8.0, 1.9 * panels), sharex=True, squeeze=False)
    axes = axes[:, 0]
    ax = axes[0]
    ax.plot(x, y, color="0.55", lw=0.8, label="data")
    if "level" in mean:
        ax.plot(x, mean["level"], color="C0", lw=1.3, label="level (smoothed)")
        ax.fill_between(x, mean["level"] - z * std["level"], mean["level"] + z * std["level"],
                        color="C0", alpha=0.25, lw=0)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_ylabel("data")
    for ax, name in zip(axes[1:], others, strict=False):
        m, s = mean[name], std[name]
        ax.plot(x, m, color="C1", lw=1)
        ax.fill_between(x, m - z * s, m + z * s, color="C1", alpha=0.3, lw=0)
        ax.set_ylabel(name)
    ax = axes[-1]
    ax.plot(x, y - signal, ".", color="0.3", ms=2)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_ylabel("irregular")
    ax.set_xlabel(xlabel)
    if np.issubdtype(np.asarray(x).dtype, np.datetime64):
        fig.autofmt_xdate()
    fig.suptitle(title or f"Smoothed components ({level:.0%} bands)")
    fig.tight_layout()
    return fig


def _colors(n: int) -> list:
    """n colours of matplotlib's default cycle (repeated past its length)."""
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    return [cycle[i % len(cycle)] for i in range(n)]
