"""Rank fitted models on the same data, with paired tests and a verdict.

Statistics (n = number of scored time steps, k = ``num_params``):

* Conditioning. A model may declare ``num_diffuse_steps`` (d_m, default 0): initial steps
  it cannot score properly (a diffuse initial state: the local level has 1, the local
  linear trend 2). Every model is scored on the same steps: those at positions
  ``t >= c_i`` of sequence i (0-based), conditioning on the first ``c_i``. Without gaps
  ``c_i = c = max(start, max_m d_m)``, stated in the ``conditioned_on`` column and in
  ``table.attrs``. A diffuse state is located by observed values, not by steps: where gaps
  come first, ``c_i`` extends to cover each model's actual diffuse steps in that sequence
  (``model.diffuse_steps(data)`` where a model has it, else the steps up to its d_m-th
  observed value), so no model gets a free score at a step it cannot predict. The
  per-sequence ``c_i`` are ``table.attrs["conditioned_steps"]``.
* ``log_lik`` = the sum over sequences of ``sum_{t >= c} log p(x_t | x_<t)``;
  ``nats_per_step`` = ``-log_lik / n``, n counting the steps with an observed value (missing
  values are marginalised by the models that can; a step with nothing observed scores 0);
  ``bits_per_step`` = ``nats_per_step / log 2`` (discrete data only).
* ``aic`` = ``2k - 2 LL``, ``bic`` = ``k log n - 2 LL``, with LL and n taken on ``fit_data``
  when given (the data the models were fitted on), else on ``data``, conditioned on the
  first ``max_m d_m`` steps of each sequence. NaN where they are not meaningful: for a
  score that is not an exact likelihood (a bound or an approximation).
* ``delta_vs_best`` = ``sum_u d_u`` with ``d_u = ll_model(u) - ll_best(u)`` over paired
  units u; its standard error ``delta_se`` = ``sqrt(U) * sd(d)`` treats units as
  independent draws, as in the paired comparison of Vehtari et al.'s elpd differences.
  ``p_value`` is the two-sided paired t-test of ``mean(d) = 0`` on U - 1 degrees of freedom.
* Units. ``"sequences"`` (the default with several sequences) pairs whole sequences;
  ``"steps"`` (the default with one sequence) pairs the per-step conditionals
  ``log p(x_t | x_<t)``: the Diebold-Mariano comparison of one-step-ahead forecasts. One-step
  log scores of a correct model form a martingale difference sequence, so the lag-0
  variance is the right one under the null; with misspecified models it can understate the
  error. Pairing whole sequences is refused for a single sequence (there is nothing to pair).
* Verdict. The m - 1 tests against the best are a family: ``p_adjusted`` is Holm's
  step-down adjustment of ``p_value`` (it controls the family-wise error rate at ``level``),
  ``significant`` says ``p_adjusted < level`` (this model is significantly worse than the
  best). ``indistinguishable`` marks the best and every model not significantly worse: the
  set the data cannot separate. ``simplest`` marks the model with the fewest parameters in
  that set (the best-scoring one on a tie). ``params_exceed_data`` flags a model with more
  parameters than fitted values (the steps of ``fit_data``, or of ``data``). The verdict in
  words is ``table.attrs["verdict"]``.
* ``score_kind``: ``"exact"`` (an exact log-likelihood), ``"bound"`` (a lower bound, e.g. an
  ELBO or an importance-weighted bound of a whole sequence) or ``"approximate"`` (neither:
  e.g. a held-out tail of a bound-based model is a difference of two bounds) or ``"monte
  carlo"`` (an estimate from posterior draws: :class:`probseq.BayesianModel`). Read from a
  model's ``score_kind`` where it has one, else from ``exact_likelihood``; ``exact`` is
  ``score_kind == "exact"``. ``mc_se`` is the Monte Carlo standard error of a Monte Carlo
  ``log_lik`` (its ``monte_carlo_se``; NaN for the others), stated in the verdict with the
  model's ``score_note`` (leave-future-out k-hats and refits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy import stats

from probseq.base import SequenceModel, exog_for
from probseq.data import Sequences, as_sequences
from probseq.scoring import compare_columns

__all__ = ["compare", "per_sequence_log_prob", "holm", "score_kind", "conditioning_steps",
           "conditioning_per_sequence"]

_PMF_KINDS = {"discrete", "count"}
_SCORE_KINDS = ("exact", "bound", "approximate", "monte carlo")


def _data_family(models: Mapping[str, SequenceModel]) -> str:
    kinds = {name: m.data_kind for name, m in models.items()}
    pmf = [n for n, k in kinds.items() if k in _PMF_KINDS]
    pdf = [n for n, k in kinds.items() if k not in _PMF_KINDS]
    if pmf and pdf:
        raise ValueError(
            "cannot compare models of discrete data (probabilities: "
            f"{', '.join(pmf)}) with models of continuous data (densities: {', '.join(pdf)}); "
            "their likelihoods are not on the same scale"
        )
    return "discrete" if pmf else "continuous"


def score_kind(model: SequenceModel, conditioned: bool = False) -> str:
    """What a model's score is: ``"exact"``, ``"bound"`` or ``"approximate"``.

    Args:
        model: a fitted model; its ``score_kind`` attribute is used where it has one, else
            ``exact_likelihood`` (True: exact, False: bound).
        conditioned: True when the score is conditioned on initial steps (a held-out tail):
            a bound's tail is the difference of two bounds, which bounds nothing.
    """
    kind = getattr(model, "score_kind", None)
    if kind is None:
        kind = "exact" if model.exact_likelihood else "bound"
    if kind not in _SCORE_KINDS:
        raise ValueError(f"{model.name}.score_kind is {kind!r}, not one of {_SCORE_KINDS}")
    if kind == "bound" and conditioned:
        return "approximate"
    return kind


def conditioning_steps(models: Mapping[str, SequenceModel]) -> int:
    """``max_m num_diffuse_steps``: the initial steps every model is conditioned on."""
    steps = {}
    for name, m in models.items():
        d = getattr(m, "num_diffuse_steps", 0)
        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0:
            raise ValueError(f"models[{name!r}].num_diffuse_steps must be an integer >= 0, "
                             f"got {d!r}")
        steps[name] = int(d)
    return max(steps.values(), default=0)


def conditioning_per_sequence(models: Mapping[str, SequenceModel], seqs: Sequences,
                              start: int = 0) -> np.ndarray:
    """``[N]`` the steps each sequence is conditioned on: at least ``start``, and every step
    a model cannot score because its diffuse state is not located yet.

    A model with ``num_diffuse_steps`` d > 0 is asked ``model.diffuse_steps(seqs)`` (its
    exact count per sequence, gaps included) where it has that method; otherwise its d
    diffuse steps are taken to end at each sequence's d-th step with an observed value.
    Capped at each sequence's length.
    """
    conditioning_steps(models)  # validates num_diffuse_steps
    lengths = seqs.lengths.numpy()
    out = np.minimum(np.full(len(seqs), int(start), dtype=np.int64), lengths)
    seen = None
    for m in models.values():
        d = int(getattr(m, "num_diffuse_steps", 0))
        if d == 0:
            continue
        hook = getattr(m, "diffuse_steps", None)
        steps = None
        if callable(hook):
            try:
                steps = np.atleast_1d(np.asarray(hook(seqs), dtype=np.int64))
            except ValueError:  # not fitted yet (a backtest that refits): the rule below
                steps = None
        if steps is None:
            if seen is None:
                obs = seqs.step_any_observed if seqs.has_missing else seqs.mask
                seen = np.cumsum(obs.numpy(), axis=1)
            reached = seen >= d
            steps = np.where(reached.any(1), reached.argmax(1) + 1, lengths)
        out = np.maximum(out, np.minimum(steps, lengths))
    return out


def per_sequence_log_prob(
    model: SequenceModel, seqs: Sequences, start: int | np.ndarray = 0,
    units: str = "sequences", exog: Any = None,
) -> np.ndarray:
    """Log-likelihood units, counting only steps ``t >= start`` (0-based; an ``[N]`` array:
    one start per sequence).

    With ``start > 0`` the earlier steps are conditioned on, not scored: the one-step-ahead
    held-out evaluation of the tail of each sequence.

    Returns:
        ``[N]`` per-sequence totals, or with ``units="steps"`` the scored per-step
        conditionals of all sequences, flattened (steps with no observed value left out).
    """
    exog = exog_for(model, exog)
    kw = {} if exog is None else {"exog": exog}
    if units != "steps" and not np.any(start):
        return np.atleast_1d(model.log_prob(seqs, **kw).numpy())
    steps = model.log_prob_steps(seqs, **kw)
    if steps.ndim == 1:
        steps = steps[None]
    after = _after(seqs, start)
    if units == "steps":
        return steps[_scored(seqs) & after].numpy()
    return torch.where(after, steps, torch.zeros((), dtype=steps.dtype)).sum(-1).numpy()


def _after(seqs: Sequences, start: int | np.ndarray) -> torch.Tensor:
    """``[N, T_max]`` bool: the steps at or after each sequence's start."""
    first = torch.as_tensor(np.broadcast_to(np.asarray(start), (len(seqs),)).copy(),
                            dtype=torch.int64)
    return torch.arange(seqs.max_length)[None, :] >= first[:, None]


def _scored(seqs: Sequences) -> torch.Tensor:
    """``[N, T_max]`` bool: the steps that carry a score (inside the lengths, observed)."""
    return seqs.step_any_observed if seqs.has_missing else seqs.mask


def _num_scored(seqs: Sequences, start: int | np.ndarray) -> int:
    return int((_scored(seqs) & _after(seqs, start)).sum())


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and are not counted).

    ``p_(i)`` sorted ascending among the m finite ones: adjusted
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``. Rejecting where the adjusted value is below
    a level controls the family-wise error rate at that level.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.shape[0]
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def compare(
    models: Mapping[str, SequenceModel],
    data: Any,
    *,
    fit_data: Any | None = None,
    start: int = 0,
    units: Literal["sequences", "steps"] | None = None,
    level: float = 0.05,
    exog: Any = None,
    fit_exog: Any = None,
) -> pd.DataFrame:
    """Rank fitted models by their log-likelihood of ``data``, best first, with a verdict.

    Args:
        models: name -> fitted model. All must model the same kind of data (discrete symbols
            and counts, or continuous values).
        data: the sequences the models are judged on (held-out data, ideally).
        fit_data: the data the models were fitted on; AIC and BIC are computed on it. When
            omitted they are computed on ``data``.
        start: score only the steps ``t >= start`` (0-based) of each sequence of ``data``,
            conditioning on the earlier ones (for a held-out tail of one long series). The
            models' ``num_diffuse_steps`` can raise it (see the module docstring).
        units: what the paired tests treat as independent: whole ``"sequences"`` or
            one-step-ahead ``"steps"`` (Diebold-Mariano). None (the default) means
            ``"sequences"`` with several sequences and ``"steps"`` with one; pairing
            ``"sequences"`` on one sequence is refused.
        level: the family-wise level of the Holm-corrected paired tests against the best.
        exog: covariates aligned with ``data``, passed to the models fitted with covariates
            (``num_exog > 0``); the others are scored without them.
        fit_exog: covariates aligned with ``fit_data``.

    Returns:
        A DataFrame indexed by model name, best first, with columns ``model``, ``log_lik``,
        ``nats_per_step`` (and ``bits_per_step`` for discrete data), ``num_params``, ``aic``,
        ``bic``, ``delta_vs_best``, ``delta_se``, ``mc_se``, ``p_value``, ``p_adjusted``,
        ``significant``, ``indistinguishable``, ``simplest``, ``params_exceed_data``,
        ``score_kind``, ``exact``, ``conditioned_on``, ``scored_steps``. With ``start > 0``
        also ``crps`` or ``brier`` and their paired ``*_se`` on the same scored steps (see
        :func:`probseq.scoring.compare_columns`). ``table.attrs`` holds ``conditioned_on``,
        ``units``, ``level``, ``correction``, ``best``, ``indistinguishable`` (a list),
        ``simplest`` and ``verdict`` (a sentence).

    Raises:
        ValueError: mixed data kinds, unfitted models, ``start`` or the conditioning leaving
            a sequence with nothing to score, or ``units="sequences"`` on one sequence.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict of name -> fitted model")
    for name, m in models.items():
        if not isinstance(m, SequenceModel):
            raise ValueError(f"models[{name!r}] is a {type(m).__name__}, not a probseq model")
        m._check_fitted()
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    family = _data_family(models)
    kind = "discrete" if family == "discrete" else "continuous"
    seqs, _ = as_sequences(data, kind)
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    diffuse = conditioning_steps(models)
    cond = max(int(start), diffuse)
    shortest = int(seqs.lengths.min())
    if cond >= shortest:
        i = int(seqs.lengths.argmin())
        why = (f"start={start} leaves" if cond == start else
               f"the models' diffuse initial steps (num_diffuse_steps up to {diffuse}) leave")
        raise ValueError(
            f"{why} nothing to score in sequence {i} of data ({shortest} steps): every "
            f"model is conditioned on the first {cond} steps of each sequence"
        )
    conds = conditioning_per_sequence(models, seqs, int(start))
    empty = np.flatnonzero(~(_scored(seqs) & _after(seqs, conds)).any(1).numpy())
    if len(empty):
        i = int(empty[0])
        raise ValueError(
            f"sequence {i} of data has no observed value left to score: every model is "
            f"conditioned on its first {int(conds[i])} steps (start={start}; a diffuse "
            f"initial state needs up to {diffuse} observed values to be located, and gaps "
            "before them lengthen the steps it takes)")
    if units is None:
        units = "steps" if len(seqs) == 1 else "sequences"
    if units not in ("sequences", "steps"):
        raise ValueError(f"units must be 'sequences' or 'steps', got {units!r}")
    if units == "sequences" and len(seqs) == 1:
        raise ValueError(
            "units='sequences' pairs whole sequences, but data is one sequence: there is no "
            "standard error to compute; use units='steps' (the default for one sequence) to "
            "pair one-step-ahead scores"
        )
    n_steps = _num_scored(seqs, conds)
    fit_seqs = as_sequences(fit_data, kind)[0] if fit_data is not None else None
    if fit_exog is not None and fit_data is None:
        raise ValueError("fit_exog is given but fit_data is not")

    per_unit = {name: per_sequence_log_prob(m, seqs, conds, units, exog)
                for name, m in models.items()}
    totals = {name: float(ll.sum()) for name, ll in per_unit.items()}
    kinds = {name: score_kind(m, conditioned=cond > 0) for name, m in models.items()}
    if fit_seqs is not None:
        fit_cond = conditioning_per_sequence(models, fit_seqs)
        fit_ll = {name: float(per_sequence_log_prob(m, fit_seqs, fit_cond, exog=fit_exog).sum())
                  for name, m in models.items()}
        n_fit = _num_scored(fit_seqs, fit_cond)
        fit_kinds = {name: score_kind(m, conditioned=bool(fit_cond.any()))
                     for name, m in models.items()}
        n_fitted_values = _num_scored(fit_seqs, 0)
    else:
        fit_ll, n_fit, fit_kinds = totals, n_steps, kinds
        n_fitted_values = _num_scored(seqs, 0)
    best = max(totals, key=lambda k: (totals[k], -models[k].num_params))

    paired = {name: _paired(per_unit[name], per_unit[best], name == best) for name in models}
    names = list(models)
    adjusted = dict(zip(names, holm(np.array([paired[n][2] for n in names])), strict=True))
    # one-step CRPS (continuous) / Brier (symbols) of a held-out tail, paired like the log score
    scores = compare_columns(models, seqs, torch.as_tensor(conds), best, units, exog) if (
        start > 0) else {}
    rows = []
    for name, m in models.items():
        k = int(m.num_params)
        delta, se, p = paired[name]
        p_adj = adjusted[name]
        significant = bool(p_adj < level) if not math.isnan(p_adj) else False
        meaningful = fit_kinds[name] == "exact"
        row: dict[str, Any] = {
            "model": name,
            "log_lik": totals[name],
            "nats_per_step": -totals[name] / n_steps,
        }
        if family == "discrete":
            row["bits_per_step"] = -totals[name] / n_steps / math.log(2)
        row.update(
            num_params=k,
            aic=2 * k - 2 * fit_ll[name] if meaningful else float("nan"),
            bic=k * math.log(n_fit) - 2 * fit_ll[name] if meaningful else float("nan"),
            delta_vs_best=delta,
            delta_se=se,
            mc_se=m.monte_carlo_se(seqs, cond) if hasattr(m, "monte_carlo_se") else math.nan,
            p_value=p,
            p_adjusted=p_adj,
            significant=significant,
            indistinguishable=not significant,
            simplest=False,
            params_exceed_data=k > n_fitted_values,
            score_kind=kinds[name],
            exact=kinds[name] == "exact",
            conditioned_on=cond,
            scored_steps=n_steps,
        )
        row.update(scores.get(name, {}))
        rows.append(row)
    df = pd.DataFrame(rows).set_index(pd.Index([r["model"] for r in rows], name=None))
    order = sorted(df.index, key=lambda n: (-totals[n], models[n].num_params))
    df = df.loc[order]
    tied = [n for n in order if df.loc[n, "indistinguishable"]]
    simplest = min(tied, key=lambda n: (int(df.loc[n, "num_params"]), order.index(n)))
    df.loc[simplest, "simplest"] = True
    df.attrs.update(
        conditioned_on=cond,
        conditioned_steps=conds.tolist(),
        num_diffuse_steps=diffuse,
        start=int(start),
        units=units,
        level=level,
        correction="holm",
        best=best,
        indistinguishable=tied,
        simplest=simplest,
        verdict=_verdict(df, best, tied, simplest, cond, diffuse, units, level,
                         longer=int((conds > cond).sum())) + "".join(
            f" {name}: {m.score_note(seqs, cond)}." for name, m in models.items()
            if hasattr(m, "score_note")),
    )
    return df


def _paired(ll: np.ndarray, ll_best: np.ndarray, is_best: bool) -> tuple[float, float, float]:
    """Sum of paired differences, its standard error and a two-sided paired t-test p-value."""
    if is_best:
        return 0.0, 0.0, float("nan")
    d = ll - ll_best
    delta = float(d.sum())
    if delta == -math.inf and np.isfinite(ll_best).all():
        return delta, float("nan"), 0.0  # zero probability where the best has some: worse
    if not np.isfinite(d).all() or len(d) < 2:
        return delta, float("nan"), float("nan")  # no test; the verdict says so
    sd = float(d.std(ddof=1))
    se = math.sqrt(len(d)) * sd
    if sd == 0.0:
        return delta, se, (0.0 if delta != 0 else 1.0)
    t = d.mean() / (sd / math.sqrt(len(d)))
    return delta, se, float(2 * stats.t.sf(abs(t), df=len(d) - 1))


def _verdict(df: pd.DataFrame, best: str, tied: list[str], simplest: str, cond: int,
             diffuse: int, units: str, level: float, longer: int = 0) -> str:
    """The comparison's conclusion in words."""
    unit_words = ("whole sequences" if units == "sequences"
                  else "one-step-ahead scores (Diebold-Mariano)")
    test = (f"paired t-tests on {unit_words} against the best, Holm-corrected for "
            f"{len(df) - 1} comparison{'s' if len(df) != 2 else ''} at {level:.0%}")
    parts = []
    if len(df) == 1:
        parts.append(f"One model, {best}: nothing to compare.")
    elif len(tied) == 1:
        parts.append(f"{best} fits best and is significantly better than every other model "
                     f"({test}).")
    else:
        others = [n for n in tied if n != best]
        parts.append(
            f"The data cannot separate {_join(tied)}: {best} scores highest, but "
            f"{_join(others)} {'is' if len(others) == 1 else 'are'} not significantly worse "
            f"({test}). The simplest of them is {simplest} "
            f"({int(df.loc[simplest, 'num_params'])} parameters).")
    untested = [n for n in df.index if n != best and math.isnan(df.loc[n, "p_value"])]
    if untested:
        parts.append(f"No paired test was possible for {_join(untested)} (fewer than two "
                     "paired units, or infinite scores): counted as not separated from the "
                     "best.")
    over = [n for n in df.index if df.loc[n, "params_exceed_data"]]
    if over:
        parts.append(f"{_join(over)} {'has' if len(over) == 1 else 'have'} more parameters "
                     "than fitted values: in-sample fit and AIC/BIC say little there; the "
                     "held-out scores are the evidence.")
    not_exact = [n for n in df.index if df.loc[n, "score_kind"] != "exact"]
    if not_exact:
        parts.append("Scores that are not exact likelihoods: " + ", ".join(
            f"{n} ({df.loc[n, 'score_kind']})" for n in not_exact) + ".")
    if cond:
        why = (f"a model with a diffuse initial state cannot score its {_first(diffuse)}"
               if diffuse >= cond else f"start={cond}: the earlier steps are context")
        parts.append(f"Every model is scored on the same steps, conditioning on the "
                     f"{_first(cond)} of each sequence ({why}).")
        if longer:
            parts.append(f"In {longer} sequence{'s' if longer != 1 else ''} gaps come before "
                         "a diffuse state is located, so more steps are conditioned on there "
                         "(attrs['conditioned_steps']).")
    return " ".join(parts)


def _first(n: int) -> str:
    return "first step" if n == 1 else f"first {n} steps"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
