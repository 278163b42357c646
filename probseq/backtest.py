"""Rolling-origin evaluation (time-series cross-validation) of fitted models.

At each origin t (``initial, initial + step, ...``) every sequence longer than t is cut to
its first t steps (an expanding window), each model forecasts the next ``horizon`` steps,
and the forecasts are scored against what followed: the log score ``log p(y_(t+h) | y_1..t)``
(exact marginal h-step densities; NaN at steps a model only samples), the CRPS (continuous
data; closed form for Gaussian and mixture predictives, from samples otherwise), the Brier
score (symbols), the error ``y - mean`` (Euclidean norm for multivariate data; for symbols
1 when the most probable symbol is wrong) and whether y lies in the central ``level``
interval.

With ``refit=False`` and ``horizon=1`` the scores come from one pass over the data (the
one-step predictives of every step), so the log scores are exactly those of
``compare(models, data, start=initial)`` restricted to the origins.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from probseq import distributed
from probseq._utils import progress_bar, seeded
from probseq.base import SequenceModel, _exog_kw, exog_for
from probseq.compare import _data_family, conditioning_per_sequence
from probseq.data import Sequences, as_sequences
from probseq.forecast import moments
from probseq.scoring import brier, covered, crps, crps_samples

__all__ = ["backtest", "BacktestResult"]


@dataclass
class BacktestResult:
    """What :func:`backtest` returns; unpacks as ``table, summary = backtest(...)``.

    Attributes:
        table: one row per model, sequence, origin and step h: ``model``, ``sequence``,
            ``origin`` (steps seen), ``h``, ``log_score``, ``crps`` (continuous) or
            ``brier`` (symbols), ``error``, ``covered``.
        summary: one row per model and h: ``n``, the mean scores (``log_score``, ``crps`` /
            ``brier``, ``rmse``, ``mae``, ``coverage``), ``delta_vs_best`` (mean log score
            minus the best model's at that h) with ``delta_se``, and ``crps_delta`` /
            ``crps_delta_se`` likewise (continuous data). Standard errors are paired across
            origins: the per-origin sums of the differences are treated as independent.
    """

    table: pd.DataFrame
    summary: pd.DataFrame

    def __iter__(self):
        yield self.table
        yield self.summary


def backtest(
    models: Mapping[str, SequenceModel],
    data: Any,
    *,
    initial: int,
    horizon: int = 1,
    step: int = 1,
    refit: bool | int = False,
    exog: Any | None = None,
    level: float = 0.95,
    num_samples: int | None = None,
    fit_options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> BacktestResult:
    """Rolling-origin evaluation of one or more models on one or more series.

    Args:
        models: name -> model (fitted, unless ``refit`` refits it at the first origin).
        data: the sequences (one series or many).
        initial: the first origin: steps seen before the first forecast (>= 1).
        horizon: H, steps forecast at each origin.
        step: distance between origins.
        refit: False scores the models as given; True refits a copy at every origin on
            all sequences cut at the origin; an int k refits every k origins.
        exog: covariates aligned with ``data`` (models that take them).
        level: coverage of the intervals behind ``covered``.
        num_samples: sampled paths per forecast where sampling is needed (default 1000).
        fit_options: name -> keyword arguments of ``fit`` when refitting.
        seed: seeds the sampled forecasts (origin by origin, so results do not depend on
            how origins are split across ranks).
        progress: a progress bar over origins (default: on a terminal or in a notebook).

    Under an active ``torch.distributed`` process group the origins are split across ranks
    (each rank fits and forecasts its own origins without collectives) and every rank gets
    the whole result.

    Returns:
        A :class:`BacktestResult` (``table, summary``).
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict of name -> model")
    for name, m in models.items():
        if not isinstance(m, SequenceModel):
            raise ValueError(f"models[{name!r}] is a {type(m).__name__}, not a probseq model")
        if refit is False:
            m._check_fitted()
    family = _data_family(models)
    seqs, _ = as_sequences(data, "discrete" if family == "discrete" else "continuous")
    t_max = seqs.max_length
    if isinstance(initial, bool) or not isinstance(initial, int) or not 1 <= initial < t_max:
        raise ValueError(f"initial must be an integer in 1..{t_max - 1} (the longest sequence "
                         f"has {t_max} steps), got {initial!r}")
    for what, v in (("horizon", horizon), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    if refit is not False and refit is not True and (
        isinstance(refit, bool) or not isinstance(refit, int) or refit < 1
    ):
        raise ValueError(f"refit must be True, False or a positive integer, got {refit!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    every = 0 if refit is False else (1 if refit is True else int(refit))
    origins = list(range(initial, t_max, step))
    fit_options = dict(fit_options or {})
    discrete = family == "discrete" and all(m.data_kind == "discrete" for m in models.values())

    # an origin before a sequence's diffuse state is located (the first d observed values
    # of a model with d diffuse steps) gets no forecast from any model: nothing is scored
    # for free, as in compare
    located = torch.as_tensor(conditioning_per_sequence(models, seqs))
    rows: list[dict[str, Any]] = []
    if every == 0 and horizon == 1:
        for name, m in models.items():
            rows += _one_step_rows(name, m, seqs, data, exog_for(m, exog), origins, level,
                                   discrete, located)
    else:
        world, rank = distributed.world_size(), distributed.rank()
        mine = [j for j in range(len(origins)) if j % world == rank]
        current, fitted_block = dict(models), None
        with distributed.local(), progress_bar(len(mine), progress, "backtest") as bar:
            for j in mine:
                t = origins[j]
                if every:
                    block = (j // every) * every  # refit on the data cut at this origin
                    if block != fitted_block:
                        current = _refit(models, seqs, data, exog, origins[block],
                                         fit_options)
                        fitted_block = block
                for name, m in current.items():
                    rows += _origin_rows(name, m, seqs, exog_for(m, exog), data, t, horizon,
                                         level, num_samples, seed + t, discrete, located)
                bar.update(1)
        rows = _gather_rows(rows)
    table = pd.DataFrame(rows, columns=_columns(discrete))
    table = table.sort_values(["model", "sequence", "origin", "h"], kind="stable")
    table = table.reset_index(drop=True)
    return BacktestResult(table, _summary(table, list(models), discrete))


def _columns(discrete: bool) -> list[str]:
    score = "brier" if discrete else "crps"
    return ["model", "sequence", "origin", "h", "log_score", score, "error", "covered"]


def _refit(models, seqs: Sequences, data, exog, t_fit: int, fit_options) -> dict:
    """Copies of the models fitted on every sequence cut at step ``t_fit`` (missing values
    kept missing; covariates cut alike for the models fitted with them)."""
    cuts = [min(t_fit, int(seqs.lengths[i])) for i in range(len(seqs))]
    cut = [seqs.with_gaps(i)[:k] for i, k in enumerate(cuts)]
    out = {}
    for name, m in models.items():
        fresh = copy.deepcopy(m)
        kw = dict(fit_options.get(name, {}))
        if exog_for(m, exog) is not None:
            full = m._coerce_exog(exog, seqs, data)
            kw["exog"] = [full[i, :k] for i, k in enumerate(cuts)]
        fresh.fit(cut, **kw)
        out[name] = fresh
    return out


def _gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not distributed.is_active():
        return rows
    parts: list[Any] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(parts, rows)
    return [r for part in parts for r in part]


def _one_step_rows(name, m, seqs: Sequences, data, exog, origins, level, discrete,
                   located: torch.Tensor):
    """Every origin's one-step forecast from one pass (the one-step predictives); origins
    before ``located [N]`` are skipped."""
    kw = _exog_kw(m._coerce_exog(exog, seqs, data))
    log_steps = m.log_prob_steps(seqs, **kw)
    t_idx = torch.tensor(origins)
    keep = torch.zeros_like(seqs.mask)
    keep[:, t_idx] = True
    keep &= seqs.mask
    keep &= torch.arange(seqs.max_length)[None, :] >= located[:, None]
    if seqs.has_missing:
        keep &= seqs.step_observed
    try:
        with torch.no_grad():
            dist = m._step_predictive(seqs, **kw)
        scores = _scores(dist, seqs.values, level, discrete)
    except NotImplementedError:
        scores = None
    rows = []
    for i, t in torch.nonzero(keep).tolist():
        row = {"model": name, "sequence": i, "origin": t, "h": 1,
               "log_score": float(log_steps[i, t])}
        if scores is not None:
            row.update({k: float(v[i, t]) for k, v in scores.items()})
        rows.append(row)
    return rows


def _scores(dist, y: torch.Tensor, level: float, discrete: bool) -> dict[str, torch.Tensor]:
    """Scores of exact predictives ``dist`` (batch B) at observations ``y`` ``[B(, D)]``."""
    if discrete:
        mode = dist.probs.argmax(-1)
        return {"brier": brier(dist, y), "error": (mode != y).to(torch.float64),
                "covered": torch.full(y.shape, math.nan, dtype=torch.float64)}
    y = y.to(torch.float64)
    mean = moments(dist)[0]
    err = y - mean
    inside = covered(dist, y, level)
    if dist.event_shape:
        err = err.norm(dim=-1)
        inside = inside.all(-1)
    return {"crps": crps(dist, y), "error": err, "covered": inside.to(torch.float64)}


def _sample_scores(samples: torch.Tensor, y: torch.Tensor, level: float,
                   discrete: bool) -> dict[str, torch.Tensor]:
    """Scores from sampled paths ``[B, S(, D)]`` at ``y [B(, D)]`` (no log score)."""
    if discrete:
        v = int(max(int(samples.max()), int(y.max()))) + 1
        probs = torch.nn.functional.one_hot(samples, v).to(torch.float64).mean(1)
        dist = torch.distributions.Categorical(probs=probs)
        return {"brier": brier(dist, y),
                "error": (probs.argmax(-1) != y).to(torch.float64),
                "covered": torch.full(y.shape, math.nan, dtype=torch.float64)}
    x = samples.to(torch.float64)
    y = y.to(torch.float64)
    err = y - x.mean(1)
    lo = torch.quantile(x, 0.5 - 0.5 * level, dim=1)
    hi = torch.quantile(x, 0.5 + 0.5 * level, dim=1)
    inside = (y >= lo) & (y <= hi)
    if x.ndim == 3:
        err, inside = err.norm(dim=-1), inside.all(-1)
        score = crps_samples(x.movedim(1, -2), y)
    else:
        score = crps_samples(x, y)
    return {"crps": score, "error": err, "covered": inside.to(torch.float64)}


def _origin_rows(name, m, seqs: Sequences, exog, data, t: int, horizon: int, level: float,
                 num_samples, seed: int, discrete: bool,
                 located: torch.Tensor) -> list[dict[str, Any]]:
    """Forecast every sequence longer than t whose diffuse state is located by t (``located
    [N]``) from its first t steps; score what followed."""
    active = torch.nonzero((seqs.lengths > t) & (located <= t)).flatten().tolist()
    if not active:
        return []
    hist = Sequences(seqs.values[active, :t], torch.full((len(active),), t),
                     seqs.observed[active, :t] if seqs.has_missing else None)
    kw = {}
    if exog is not None:
        full = m._coerce_exog(exog, seqs, data)
        pad = torch.zeros(len(seqs), horizon, full.shape[-1], dtype=full.dtype)
        kw = {"exog": torch.cat([full, pad], dim=1)[active, : t + horizon]}
    ends = seqs.lengths[active]
    future = torch.zeros((len(active), horizon, *seqs.values.shape[2:]), dtype=seqs.values.dtype)
    avail = min(horizon, seqs.max_length - t)
    future[:, :avail] = seqs.values[active, t: t + avail]
    valid = (t + torch.arange(horizon))[None, :] < ends[:, None]
    if seqs.has_missing:
        obs = torch.zeros(len(active), horizon, dtype=torch.bool)
        obs[:, :avail] = seqs.step_observed[active, t: t + avail]
        valid &= obs
    try:
        with torch.no_grad(), seeded(seed):
            dist, n_exact, samples, _ = m._predictive_batch(hist, horizon, num_samples, **kw)
    except NotImplementedError:
        dist, n_exact, samples = None, 0, None
    cols: dict[str, torch.Tensor] = {}
    nan = torch.full((len(active), horizon), math.nan, dtype=torch.float64)
    log_score = nan.clone()
    if dist is not None:
        y_exact = future[:, :n_exact]
        lp = dist.log_prob(y_exact if discrete else y_exact.to(torch.float64))
        log_score[:, :n_exact] = lp.to(torch.float64)
        for k, v in _scores(dist, y_exact, level, discrete).items():
            cols.setdefault(k, nan.clone())[:, :n_exact] = v
    elif horizon >= 1:  # no predictive hooks: the one-step log score still exists
        steps = m.log_prob_steps(Sequences(seqs.values[active, : t + 1],
                                           torch.full((len(active),), t + 1)), **(
            {} if exog is None else {"exog": kw["exog"][:, : t + 1]}))
        log_score[:, 0] = steps[:, t]
    if samples is not None and n_exact < horizon:
        for h in range(n_exact, horizon):
            for k, v in _sample_scores(samples[:, :, h], future[:, h], level, discrete).items():
                cols.setdefault(k, nan.clone())[:, h] = v
    rows = []
    for a, i in enumerate(active):
        for h in range(horizon):
            if not bool(valid[a, h]):
                continue
            row = {"model": name, "sequence": i, "origin": t, "h": h + 1,
                   "log_score": float(log_score[a, h])}
            row.update({k: float(v[a, h]) for k, v in cols.items()})
            rows.append(row)
    return rows


def _summary(table: pd.DataFrame, names: list[str], discrete: bool) -> pd.DataFrame:
    score = "brier" if discrete else "crps"
    out = []
    for h, part in table.groupby("h", sort=True):
        means = part.groupby("model")["log_score"].mean()
        finite = means.dropna()
        best = finite.idxmax() if len(finite) else None
        best_crps = None
        if not discrete:
            crps_means = part.groupby("model")["crps"].mean().dropna()
            best_crps = best if best in crps_means.index else (
                crps_means.idxmin() if len(crps_means) else None)
        for name in names:
            rows = part[part["model"] == name]
            if rows.empty:
                continue
            err = rows["error"].to_numpy(dtype=float)
            entry = {
                "model": name, "h": int(h), "n": len(rows),
                "log_score": rows["log_score"].mean(),
                score: rows[score].mean() if score in rows else math.nan,
                "rmse": math.sqrt(np.nanmean(err**2)) if np.isfinite(err).any() else math.nan,
                "mae": np.nanmean(np.abs(err)) if np.isfinite(err).any() else math.nan,
                "coverage": rows["covered"].mean() if not discrete else math.nan,
            }
            entry["delta_vs_best"], entry["delta_se"] = _paired(part, name, best, "log_score")
            if not discrete:
                entry["crps_delta"], entry["crps_delta_se"] = _paired(part, name, best_crps,
                                                                      "crps")
            out.append(entry)
    df = pd.DataFrame(out)
    if discrete:
        df = df.drop(columns="coverage")
    return df


def _paired(part: pd.DataFrame, name: str, best: str | None, col: str) -> tuple[float, float]:
    """Mean difference from ``best`` over paired rows and its standard error across origins."""
    if best is None:
        return math.nan, math.nan
    key = ["sequence", "origin"]
    a = part[part["model"] == name].set_index(key)[col]
    b = part[part["model"] == best].set_index(key)[col]
    d = (a - b).dropna()
    if d.empty:
        return math.nan, math.nan
    delta = float(d.mean())
    per_origin = d.groupby(level="origin").sum()
    if name == best:
        return 0.0, 0.0
    if len(per_origin) < 2:
        return delta, math.nan
    se = math.sqrt(len(per_origin)) * float(per_origin.std(ddof=1)) / len(d)
    return delta, se
