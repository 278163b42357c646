"""Model selection: choose a Markov order, an AR order or a number of HMM states.

Two criteria, each honest about what it measures:

* ``"bic"``: fit every candidate on ``data`` and pick the lowest BIC
  (``k log n - 2 log L``, n = number of time steps); consistent for the true order.
* ``"heldout"``: fit on ``data``, pick the highest log-likelihood of ``validation_data``
  (held-out sequences), the criterion closest to predictive performance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from probseq.base import SequenceModel
from probseq.data import as_sequences

__all__ = [
    "Selection",
    "select",
    "select_markov_order",
    "select_ar_order",
    "select_hmm_states",
    "select_var_order",
]

Criterion = Literal["bic", "heldout"]


@dataclass
class Selection:
    """The outcome of a selection.

    Attributes:
        best: the chosen candidate value (an order or a number of states).
        model: the fitted model for ``best``.
        table: one row per candidate: ``log_lik`` (on the fitting data), ``num_params``,
            ``bic``, ``aic`` and, with validation data, ``heldout_log_lik`` and
            ``heldout_nats_per_step``.
        models: every fitted candidate, by value.
    """

    best: Any
    model: SequenceModel
    table: pd.DataFrame
    models: dict[Any, SequenceModel]


def select(
    build: Callable[[Any], SequenceModel],
    candidates: Iterable[Any],
    data: Any,
    *,
    criterion: Criterion = "bic",
    validation_data: Any | None = None,
    fit_options: dict[str, Any] | None = None,
) -> Selection:
    """Fit ``build(c)`` for each candidate ``c`` and choose one.

    Args:
        build: candidate value -> unfitted model.
        candidates: the values to try, e.g. ``range(1, 6)``.
        data: the fitting data.
        criterion: ``"bic"`` or ``"heldout"`` (which needs ``validation_data``).
        validation_data: held-out sequences.
        fit_options: keywords passed to every ``fit``.

    Returns:
        A :class:`Selection`. Ties go to the simpler model (fewer parameters).
    """
    if criterion not in ("bic", "heldout"):
        raise ValueError(f"criterion must be 'bic' or 'heldout', got {criterion!r}")
    if criterion == "heldout" and validation_data is None:
        raise ValueError("criterion='heldout' needs validation_data")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no candidates to select from")
    fit_options = dict(fit_options or {})
    models: dict[Any, SequenceModel] = {}
    rows = []
    for c in candidates:
        m = build(c).fit(data, **fit_options)
        models[c] = m
        kind = "continuous" if m.data_kind == "continuous" else "discrete"
        seqs, _ = as_sequences(data, kind)
        ll = float(m.log_prob(seqs).sum())
        k = int(m.num_params)
        row = {"candidate": c, "log_lik": ll, "num_params": k,
               "aic": 2 * k - 2 * ll, "bic": k * math.log(seqs.num_steps) - 2 * ll}
        if validation_data is not None:
            vseqs, _ = as_sequences(validation_data, kind)
            vll = float(m.log_prob(vseqs).sum())
            row["heldout_log_lik"] = vll
            row["heldout_nats_per_step"] = -vll / vseqs.num_steps
        rows.append(row)
    table = pd.DataFrame(rows).set_index("candidate")
    if criterion == "bic":
        best = min(candidates, key=lambda c: (table.loc[c, "bic"], table.loc[c, "num_params"]))
    else:
        best = max(candidates, key=lambda c: (table.loc[c, "heldout_log_lik"],
                                              -table.loc[c, "num_params"]))
    return Selection(best=best, model=models[best], table=table, models=models)


def select_markov_order(
    data: Any,
    orders: Iterable[int] = range(1, 6),
    *,
    criterion: Criterion = "bic",
    validation_data: Any | None = None,
    **model_options: Any,
) -> Selection:
    """Choose the order k of a :class:`~probseq.MarkovChain` (keywords go to its constructor)."""
    from probseq.markov import MarkovChain

    return select(lambda k: MarkovChain(order=k, **model_options), orders, data,
                  criterion=criterion, validation_data=validation_data)


def select_ar_order(
    data: Any,
    orders: Iterable[int] = range(1, 9),
    *,
    criterion: Criterion = "bic",
    validation_data: Any | None = None,
) -> Selection:
    """Choose the order p of an :class:`~probseq.AutoRegressive` model."""
    from probseq.autoregressive import AutoRegressive

    return select(lambda p: AutoRegressive(order=p), orders, data, criterion=criterion,
                  validation_data=validation_data)


def select_hmm_states(
    data: Any,
    num_states: Iterable[int] = range(1, 6),
    *,
    emission: str = "gaussian",
    criterion: Criterion = "bic",
    validation_data: Any | None = None,
    fit_options: dict[str, Any] | None = None,
    **model_options: Any,
) -> Selection:
    """Choose the number of states K of a :class:`~probseq.HiddenMarkovModel`."""
    from probseq.hmm import HiddenMarkovModel

    return select(
        lambda k: HiddenMarkovModel(num_states=k, emission=emission, **model_options),
        num_states, data, criterion=criterion, validation_data=validation_data,
        fit_options=fit_options,
    )


def select_var_order(
    data: Any,
    orders: Iterable[int] = range(1, 9),
    *,
    criterion: Criterion = "bic",
    validation_data: Any | None = None,
) -> Selection:
    """Choose the order p of a :class:`~probseq.VectorAutoRegressive` model (BIC counts
    ``D + p D^2 + D (D + 1) / 2`` parameters and n = number of time steps)."""
    from probseq.autoregressive import VectorAutoRegressive

    return select(lambda p: VectorAutoRegressive(order=p), orders, data, criterion=criterion,
                  validation_data=validation_data)
