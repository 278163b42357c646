"""Model selection: choose a Markov order, an AR order or a number of HMM states.

Four criteria, each honest about what it measures; every result says which one it used
(:attr:`Selection.criterion`, and ``table.attrs["criterion"]``):

* ``"crossval"``: held-out log-likelihood without separate validation data. With several
  sequences, K-fold cross-validation over sequences: each fold is fitted on the other folds
  and every sequence is scored once, by a model that never saw it. With one sequence, a
  held-out tail: the candidate is fitted on the first ``1 - tail`` of the series and scored
  on the rest one step ahead (conditioning on everything before each step). The chosen
  candidate is then refitted on all of ``data``. The default for smoothed Markov chains,
  whose effective number of parameters no information criterion counts well.
* ``"heldout"``: fit on ``data``, pick the highest log-likelihood of ``validation_data``
  (the default of :func:`select_markov_order` when ``validation_data`` is given).
* ``"bic"``: fit every candidate on ``data`` and pick the lowest BIC
  (``k log n - 2 log L``, n = number of time steps); consistent for the true order of a
  correctly specified parametric model (the default of :func:`select`, AR orders and HMM
  states; ``validation_data`` then only adds held-out columns to the table).
* ``"aic"``: the lowest AIC (``2k - 2 log L``).

The held-out criteria also report, for each candidate, the paired difference to the chosen
one and its standard error (over held-out sequences, or over held-out steps for a tail).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from probseq.base import SequenceModel
from probseq.data import Sequences, as_sequences

__all__ = [
    "Selection",
    "select",
    "select_markov_order",
    "select_ar_order",
    "select_hmm_states",
    "select_var_order",
]

Criterion = Literal["crossval", "heldout", "bic", "aic"]
_CRITERIA = ("crossval", "heldout", "bic", "aic")


@dataclass
class Selection:
    """The outcome of a selection.

    Attributes:
        best: the chosen candidate value (an order or a number of states).
        model: the fitted model for ``best`` (fitted on all of ``data``).
        table: one row per candidate: ``log_lik`` (on the fitting data), ``num_params``,
            ``bic``, ``aic``; with ``"heldout"`` or ``"crossval"`` also ``heldout_log_lik``,
            ``heldout_nats_per_step``, ``heldout_delta`` (paired difference to the chosen
            candidate) and ``heldout_delta_se``. ``table.attrs["criterion"]`` repeats the
            criterion.
        models: every candidate fitted on all of ``data``, by value.
        criterion: the criterion used (``"crossval"``, ``"heldout"``, ``"bic"`` or
            ``"aic"``).
        description: one sentence saying how the criterion was computed.
    """

    best: Any
    model: SequenceModel
    table: pd.DataFrame
    models: dict[Any, SequenceModel]
    criterion: str = "bic"
    description: str = ""


def select(
    build: Callable[[Any], SequenceModel],
    candidates: Iterable[Any],
    data: Any,
    *,
    criterion: Criterion | None = None,
    validation_data: Any | None = None,
    fit_options: dict[str, Any] | None = None,
    num_folds: int = 5,
    tail: float = 0.2,
    seed: int = 0,
) -> Selection:
    """Fit ``build(c)`` for each candidate ``c`` and choose one.

    Args:
        build: candidate value -> unfitted model.
        candidates: the values to try, e.g. ``range(1, 6)``.
        data: the fitting data.
        criterion: ``"crossval"``, ``"heldout"`` (which needs ``validation_data``), ``"bic"``
            or ``"aic"``; None means ``"bic"``.
        validation_data: held-out sequences; with ``"bic"`` or ``"aic"`` they only add the
            held-out columns to the table.
        fit_options: keywords passed to every ``fit``.
        num_folds: K of K-fold cross-validation over sequences (at most the number of
            sequences).
        tail: the fraction of a single sequence held out by ``"crossval"``.
        seed: the random assignment of sequences to folds.

    Returns:
        A :class:`Selection`. Ties go to the simpler model (fewer parameters).
    """
    if criterion is None:
        criterion = "bic"
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    if criterion == "heldout" and validation_data is None:
        raise ValueError("criterion='heldout' needs validation_data")
    if criterion == "crossval" and validation_data is not None:
        raise ValueError("criterion='crossval' holds out parts of data itself; pass "
                         "validation_data with criterion='heldout' instead")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no candidates to select from")
    if not (isinstance(num_folds, int) and num_folds >= 2):
        raise ValueError(f"num_folds must be an integer >= 2, got {num_folds!r}")
    if not 0 < tail < 1:
        raise ValueError(f"tail must lie strictly between 0 and 1, got {tail!r}")
    fit_options = dict(fit_options or {})
    probe = build(candidates[0])
    kind = "continuous" if probe.data_kind == "continuous" else "discrete"
    seqs, _ = as_sequences(data, kind)

    models: dict[Any, SequenceModel] = {}
    rows = []
    for c in candidates:
        m = build(c).fit(seqs, **fit_options)
        models[c] = m
        ll = float(m.log_prob(seqs).sum())
        k = int(m.num_params)
        rows.append({"candidate": c, "log_lik": ll, "num_params": k,
                     "aic": 2 * k - 2 * ll, "bic": k * math.log(seqs.num_steps) - 2 * ll})
    table = pd.DataFrame(rows).set_index("candidate")

    if criterion in ("bic", "aic"):
        best = min(candidates, key=lambda c: (table.loc[c, criterion], table.loc[c, "num_params"]))
        description = (f"lowest {criterion.upper()} of the fit on all {seqs.num_steps} steps "
                       f"({len(seqs)} sequence{'s' if len(seqs) > 1 else ''})")
    if validation_data is not None or criterion == "crossval":
        if validation_data is not None:
            vseqs, _ = as_sequences(validation_data, kind)
            units = {c: models[c].log_prob(vseqs).numpy() for c in candidates}
            n_scored = vseqs.num_steps
            how = (f"highest log-likelihood of validation_data ({len(vseqs)} "
                   f"sequences, {n_scored} steps) under the fit on data")
        else:
            units, n_scored, how = _cross_validate(
                build, candidates, seqs, fit_options, num_folds, tail, seed)
        totals = {c: float(units[c].sum()) for c in candidates}
        if criterion in ("heldout", "crossval"):
            best = max(candidates, key=lambda c: (totals[c], -table.loc[c, "num_params"]))
            description = how
        table["heldout_log_lik"] = [totals[c] for c in candidates]
        table["heldout_nats_per_step"] = [-totals[c] / n_scored for c in candidates]
        deltas = [_paired(units[c], units[best]) for c in candidates]
        # Paired against the chosen candidate (with "bic"/"aic" too, for comparison).
        table["heldout_delta"] = [d for d, _ in deltas]
        table["heldout_delta_se"] = [se for _, se in deltas]
    table.attrs["criterion"] = criterion
    table.attrs["description"] = description
    return Selection(best=best, model=models[best], table=table, models=models,
                     criterion=criterion, description=description)


def _cross_validate(build, candidates, seqs: Sequences, fit_options, num_folds, tail, seed
                    ) -> tuple[dict[Any, np.ndarray], int, str]:
    """Held-out scores of every candidate: per sequence (K folds) or per step (a tail)."""
    n = len(seqs)
    if n == 1:
        length = int(seqs.lengths[0])
        cut = int(round((1 - tail) * length))
        if cut < 1 or cut >= length:
            raise ValueError(f"the sequence has {length} steps: too short to hold out a tail "
                             f"of {tail:.0%} (need at least one step on each side)")
        head = seqs[0][:cut]
        units = {}
        for c in candidates:
            m = build(c).fit(head, **fit_options)
            units[c] = m.log_prob_steps(seqs)[0, cut:].numpy()
        return units, length - cut, (
            f"held-out tail: fitted on steps 1..{cut} of the one sequence, scored one step "
            f"ahead on steps {cut + 1}..{length}")
    k = min(num_folds, n)
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    units = {c: np.zeros(n) for c in candidates}
    for f in range(k):
        train = np.flatnonzero(fold != f).tolist()
        test = np.flatnonzero(fold == f).tolist()
        for c in candidates:
            m = build(c).fit(seqs[train], **fit_options)
            units[c][test] = m.log_prob(seqs[test]).numpy()
    return units, seqs.num_steps, (
        f"{k}-fold cross-validation over {n} sequences: each sequence scored by the fit "
        "on the other folds")


def _paired(ll: np.ndarray, ll_best: np.ndarray) -> tuple[float, float]:
    d = ll - ll_best
    if len(d) < 2 or not np.isfinite(d).all():
        return float(d.sum()), float("nan")
    return float(d.sum()), float(math.sqrt(len(d)) * d.std(ddof=1))


def _num_symbols(data: Any, given: int | None) -> int | None:
    """V for every fold: the given one, or the largest symbol in all of ``data`` plus one."""
    if given is not None:
        return given
    seqs, _ = as_sequences(data, "discrete")
    return int(seqs.values.max()) + 1


def select_markov_order(
    data: Any,
    orders: Iterable[int] = range(0, 6),
    *,
    criterion: Criterion | None = None,
    validation_data: Any | None = None,
    num_folds: int = 5,
    tail: float = 0.2,
    seed: int = 0,
    **model_options: Any,
) -> Selection:
    """Choose the order k of a :class:`~probseq.MarkovChain` (keywords go to its constructor).

    Args:
        data: symbol sequences.
        orders: the candidate orders.
        criterion: None (the default) means ``"heldout"`` with ``validation_data``, else
            ``"crossval"`` (K-fold over sequences, or a held-out tail of one sequence); see
            :func:`select` for ``"bic"`` and ``"aic"``.
        validation_data: held-out sequences for ``"heldout"``.
        num_folds: K for ``"crossval"`` over sequences.
        tail: the held-out fraction of a single sequence for ``"crossval"``.
        seed: the assignment of sequences to folds.
        **model_options: ``MarkovChain`` keywords (``smoothing``, ``alpha``,
            ``num_symbols``); V defaults to the largest symbol in ``data`` plus one, the same
            for every fold.

    Returns:
        A :class:`Selection` whose ``criterion`` says which criterion chose.
    """
    from probseq.markov import MarkovChain

    if criterion is None:
        criterion = "heldout" if validation_data is not None else "crossval"
    v = _num_symbols(data, model_options.pop("num_symbols", None))
    return select(lambda k: MarkovChain(order=k, num_symbols=v, **model_options), orders, data,
                  criterion=criterion, validation_data=validation_data, num_folds=num_folds,
                  tail=tail, seed=seed)


def select_ar_order(
    data: Any,
    orders: Iterable[int] = range(1, 9),
    *,
    criterion: Criterion | None = None,
    validation_data: Any | None = None,
    num_folds: int = 5,
    tail: float = 0.2,
    seed: int = 0,
) -> Selection:
    """Choose the order p of an :class:`~probseq.AutoRegressive` model.

    ``criterion=None`` means ``"bic"`` (see :func:`select`).
    """
    from probseq.autoregressive import AutoRegressive

    return select(lambda p: AutoRegressive(order=p), orders, data, criterion=criterion,
                  validation_data=validation_data, num_folds=num_folds, tail=tail, seed=seed)


def select_hmm_states(
    data: Any,
    num_states: Iterable[int] = range(1, 6),
    *,
    emission: str = "gaussian",
    criterion: Criterion | None = None,
    validation_data: Any | None = None,
    fit_options: dict[str, Any] | None = None,
    num_folds: int = 5,
    tail: float = 0.2,
    seed: int = 0,
    **model_options: Any,
) -> Selection:
    """Choose the number of states K of a :class:`~probseq.HiddenMarkovModel`.

    ``criterion=None`` means ``"bic"`` (see :func:`select`). Categorical emissions use one
    alphabet V for every fold.
    """
    from probseq.hmm import HiddenMarkovModel

    if emission == "categorical":
        model_options["num_symbols"] = _num_symbols(data, model_options.get("num_symbols"))
    return select(
        lambda k: HiddenMarkovModel(num_states=k, emission=emission, **model_options),
        num_states, data, criterion=criterion, validation_data=validation_data,
        fit_options=fit_options, num_folds=num_folds, tail=tail, seed=seed,
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
