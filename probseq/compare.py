"""Rank fitted models on the same data, with paired standard errors.

Statistics (n = number of time steps, k = ``num_params``):

* ``log_lik`` = sum over sequences of ``log p(x_i)``; ``nats_per_step`` = ``-log_lik / n``;
  ``bits_per_step`` = ``nats_per_step / log 2`` (discrete data only).
* ``aic`` = ``2k - 2 LL``, ``bic`` = ``k log n - 2 LL``, with LL and n taken on ``fit_data``
  when given (the data the models were fitted on), else on ``data``.
* ``delta_vs_best`` = ``sum_i d_i`` with ``d_i = log p_model(x_i) - log p_best(x_i)``; its
  standard error ``delta_se`` = ``sqrt(N) * sd(d)`` treats sequences as independent draws,
  as in the paired comparison of Vehtari et al.'s elpd differences. ``p_value`` is the
  two-sided paired t-test of ``mean(d) = 0`` on N - 1 degrees of freedom, and
  ``significant`` says ``p_value < 0.05``. With a single sequence these are NaN.
* ``units="steps"`` pairs the per-step conditionals ``log p(x_t | x_<t)`` instead of whole
  sequences: the Diebold-Mariano comparison of one-step-ahead forecasts, for one long series.
  One-step log scores of a correct model form a martingale difference sequence, so the
  lag-0 variance is the right one under the null; with misspecified models it can
  understate the error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from probseq.base import SequenceModel
from probseq.data import Sequences, as_sequences
from probseq.scoring import compare_columns

__all__ = ["compare", "per_sequence_log_prob"]

_PMF_KINDS = {"discrete", "count"}


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


def per_sequence_log_prob(
    model: SequenceModel, seqs: Sequences, start: int = 0, units: str = "sequences"
) -> np.ndarray:
    """Log-likelihood units, counting only steps ``t >= start``.

    With ``start > 0`` the earlier steps are conditioned on, not scored: the one-step-ahead
    held-out evaluation of the tail of each sequence.

    Returns:
        ``[N]`` per-sequence totals, or with ``units="steps"`` the scored per-step
        conditionals of all sequences, flattened.
    """
    if units == "steps":
        steps = model.log_prob_steps(seqs)
        return steps[:, start:][seqs.mask[:, start:]].numpy()
    if start == 0:
        return model.log_prob(seqs).numpy()
    return model.log_prob_steps(seqs)[:, start:].sum(-1).numpy()


def compare(
    models: Mapping[str, SequenceModel],
    data: Any,
    *,
    fit_data: Any | None = None,
    start: int = 0,
    units: Literal["sequences", "steps"] = "sequences",
) -> pd.DataFrame:
    """Rank fitted models by their log-likelihood of ``data``, best first.

    Args:
        models: name -> fitted model. All must model the same kind of data (discrete symbols
            and counts, or continuous values).
        data: the sequences the models are judged on (held-out data, ideally).
        fit_data: the data the models were fitted on; AIC and BIC are computed on it. When
            omitted they are computed on ``data``.
        start: score only the steps ``t >= start`` of each sequence of ``data``, conditioning
            on the earlier ones (for a held-out tail of one long series).
        units: what the paired standard error treats as independent: whole
            ``"sequences"`` (the default) or one-step-ahead ``"steps"`` (Diebold-Mariano).

    Returns:
        A DataFrame indexed by model name with columns ``model``, ``log_lik``,
        ``nats_per_step`` (and ``bits_per_step`` for discrete data), ``num_params``, ``aic``,
        ``bic``, ``delta_vs_best``, ``delta_se``, ``p_value``, ``significant``, ``exact``.
        With ``start > 0`` also ``crps`` or ``brier`` and their paired ``*_se`` (see
        :func:`probseq.scoring.compare_columns`).
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict of name -> fitted model")
    for name, m in models.items():
        if not isinstance(m, SequenceModel):
            raise ValueError(f"models[{name!r}] is a {type(m).__name__}, not a probseq model")
        m._check_fitted()
    family = _data_family(models)
    kind = "discrete" if family == "discrete" else "continuous"
    seqs, _ = as_sequences(data, kind)
    if start < 0 or start >= int(seqs.lengths.min()):
        raise ValueError(
            f"start={start} must lie in 0..{int(seqs.lengths.min()) - 1} (the shortest sequence)"
        )
    n_steps = int((seqs.lengths - start).sum())
    fit_seqs = as_sequences(fit_data, kind)[0] if fit_data is not None else None

    if units not in ("sequences", "steps"):
        raise ValueError(f"units must be 'sequences' or 'steps', got {units!r}")
    per_seq = {name: per_sequence_log_prob(m, seqs, start, units) for name, m in models.items()}
    totals = {name: float(ll.sum()) for name, ll in per_seq.items()}
    if fit_seqs is not None:
        fit_ll = {name: float(m.log_prob(fit_seqs).sum()) for name, m in models.items()}
        n_fit = fit_seqs.num_steps
    else:
        fit_ll, n_fit = totals, n_steps
    best = max(totals, key=lambda k: (totals[k], -models[k].num_params))

    # one-step CRPS (continuous) / Brier (symbols) of a held-out tail, paired like the log score
    scores = compare_columns(models, seqs, start, best, units) if start > 0 else {}
    rows = []
    for name, m in models.items():
        k = int(m.num_params)
        delta, se, p = _paired(per_seq[name], per_seq[best], name == best)
        row: dict[str, Any] = {
            "model": name,
            "log_lik": totals[name],
            "nats_per_step": -totals[name] / n_steps,
        }
        if family == "discrete":
            row["bits_per_step"] = -totals[name] / n_steps / math.log(2)
        row.update(
            num_params=k,
            aic=2 * k - 2 * fit_ll[name],
            bic=k * math.log(n_fit) - 2 * fit_ll[name],
            delta_vs_best=delta,
            delta_se=se,
            p_value=p,
            significant=bool(p < 0.05) if not math.isnan(p) else False,
            exact=bool(m.exact_likelihood),
        )
        row.update(scores.get(name, {}))
        rows.append(row)
    df = pd.DataFrame(rows).set_index(pd.Index([r["model"] for r in rows], name=None))
    order = sorted(df.index, key=lambda n: (-totals[n], models[n].num_params))
    return df.loc[order]


def _paired(ll: np.ndarray, ll_best: np.ndarray, is_best: bool) -> tuple[float, float, float]:
    """Sum of paired differences, its standard error and a two-sided paired t-test p-value."""
    if is_best:
        return 0.0, (float("nan") if len(ll) < 2 else 0.0), float("nan")
    d = ll - ll_best
    delta = float(d.sum())
    if len(d) < 2 or not np.isfinite(d).all():
        return delta, float("nan"), float("nan")
    sd = float(d.std(ddof=1))
    se = math.sqrt(len(d)) * sd
    if sd == 0.0:
        return delta, se, (0.0 if delta != 0 else 1.0)
    t = d.mean() / (sd / math.sqrt(len(d)))
    return delta, se, float(2 * stats.t.sf(abs(t), df=len(d) - 1))

