"""Model selection: choose a Markov order, an AR order, a (seasonal) ARIMA order or a number
of HMM states.

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
* ``"aicc"`` (:func:`select_arima_order` only, its default): the lowest small-sample
  corrected AIC, ``AIC + 2k(k + 1) / (n - k - 1)`` with n the scored steps, as R's
  ``auto.arima`` ranks orders.

The held-out criteria also report, for each candidate, the paired difference to the chosen
one and its standard error (over held-out sequences, or over held-out steps for a tail).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    "select_arima_order",
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
        details: anything else the selection decided on the way (for
            :func:`select_arima_order`: the differencing orders and the tests that chose
            them).
    """

    best: Any
    model: SequenceModel
    table: pd.DataFrame
    models: dict[Any, SequenceModel]
    criterion: str = "bic"
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)


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


#: ``auto.arima``'s threshold on the seasonal strength for one seasonal difference.
SEASONAL_STRENGTH_THRESHOLD = 0.64


def kpss_differences(y: np.ndarray, max_d: int = 2, alpha: float = 0.05) -> tuple[int, list]:
    """d from repeated KPSS tests (level stationarity, statsmodels' ``kpss``): difference
    while the test rejects at ``alpha`` (R's ``ndiffs``). Returns ``(d, [(d, statistic,
    p-value), ...])`` (statsmodels interpolates p-values within 0.01..0.1 only)."""
    import warnings

    from statsmodels.tsa.stattools import kpss

    record = []
    x = np.asarray(y, dtype=np.float64)
    for d in range(max_d + 1):
        if x.size < 4 or float(x.std()) == 0.0:
            return d, record
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stat, pvalue, *_ = kpss(x, regression="c", nlags="auto")
        record.append((d, float(stat), float(pvalue)))
        if pvalue >= alpha or d == max_d:
            return d, record
        x = np.diff(x)
    return max_d, record


def seasonal_strength(y: np.ndarray, period: int) -> float:
    """Wang, Smith & Hyndman's seasonal strength ``max(0, 1 - Var(R) / Var(S + R))`` from an
    STL decomposition (statsmodels' ``STL``); R's ``nsdiffs`` (its default test) takes
    ``D = 1`` above 0.64."""
    from statsmodels.tsa.seasonal import STL

    res = STL(np.asarray(y, dtype=np.float64), period=period, robust=True).fit()
    resid, seasonal = np.asarray(res.resid), np.asarray(res.seasonal)
    total = float(np.var(seasonal + resid))
    return 0.0 if total == 0 else max(0.0, 1.0 - float(np.var(resid)) / total)


def select_arima_order(
    data: Any,
    *,
    period: int = 0,
    max_p: int = 3,
    max_q: int = 3,
    max_seasonal_p: int = 1,
    max_seasonal_q: int = 1,
    d: int | None = None,
    seasonal_d: int | None = None,
    max_d: int = 2,
    criterion: Literal["aicc", "aic", "bic", "heldout", "crossval"] = "aicc",
    validation_data: Any | None = None,
    tail: float = 0.2,
    alpha: float = 0.05,
) -> Selection:
    """Choose a seasonal ARIMA(p, d, q)(P, D, Q, s) for ``data``, as R's ``auto.arima`` does
    in its exhaustive (not stepwise) mode.

    The differencing orders come first, from unit-root tests on the data (unless given):
    D (0 or 1, when ``period >= 2``) from the seasonal strength of an STL decomposition
    (``D = 1`` above 0.64, ``nsdiffs``' default; statsmodels has no OCSB test), then d from
    repeated KPSS tests on the seasonally differenced series (``ndiffs``). With d and D
    fixed, every (p, q, P, Q) in the grid is fitted by exact maximum likelihood of the
    differenced series, with a constant (``trend="c"``: a mean, or a drift when
    ``d + D = 1``) when ``d + D <= 1``, and the lowest AICc wins (on the same differenced
    data, so the likelihoods are comparable). ``criterion="heldout"`` (with
    ``validation_data``) or ``"crossval"`` (a held-out tail of one series, scored one step
    ahead) rank by held-out likelihood instead; ``"aic"`` and ``"bic"`` as :func:`select`.

    With several sequences the tests run on each and the largest d and D are used.

    Args:
        data: one series, a list of series or a ``Sequences`` (complete values for the
            tests; the fits take gaps).
        period: s, the seasonal period (0: no seasonal part).
        max_p, max_q, max_seasonal_p, max_seasonal_q: the grid.
        d, seasonal_d: fixed differencing orders (skip the tests).
        max_d: the largest d the KPSS tests may choose.
        criterion: ``"aicc"`` (default), ``"aic"``, ``"bic"``, ``"heldout"`` or
            ``"crossval"``.
        validation_data: held-out series for ``"heldout"``.
        tail: the held-out fraction for ``"crossval"``.
        alpha: the level of the KPSS tests.

    Returns:
        A :class:`Selection`: ``best`` is ``((p, d, q), (P, D, Q, s))`` (``models`` is keyed
        the same way), the table (one row per order, labelled ``"(p,d,q)(P,D,Q,s)"``) has an
        ``aicc`` column, ``details`` holds ``d``, ``seasonal_d`` and the test results, and
        ``description`` states both the tests and the criterion.
    """
    from probseq.arima import ARIMA

    period = int(period)
    if period == 1 or period < 0:
        raise ValueError(f"period must be 0 (no seasonal part) or at least 2, got {period}")
    if criterion not in ("aicc", "aic", "bic", "heldout", "crossval"):
        raise ValueError(f"criterion must be 'aicc', 'aic', 'bic', 'heldout' or 'crossval', "
                         f"got {criterion!r}")
    seqs, _ = as_sequences(data, "continuous")
    series = [s.numpy() for s in seqs.to_list()]
    series = [s[np.isfinite(s)] for s in series]
    tests: dict[str, Any] = {}
    if seasonal_d is None:
        if period >= 2:
            strengths = [seasonal_strength(s, period) if s.size >= 2 * period + 1 else 0.0
                         for s in series]
            seasonal_d = int(max(strengths) > SEASONAL_STRENGTH_THRESHOLD)
            tests["seasonal_strength"] = strengths
            seasonal_how = (f"D = {seasonal_d} from the STL seasonal strength "
                            f"{max(strengths):.3f} (threshold {SEASONAL_STRENGTH_THRESHOLD})")
        else:
            seasonal_d, seasonal_how = 0, "D = 0 (no period)"
    else:
        seasonal_how = f"D = {seasonal_d} (given)"
    if d is None:
        found = []
        for s in series:
            x = s[period:] - s[:-period] if seasonal_d and s.size > period else s
            found.append(kpss_differences(x, max_d, alpha))
        d = max(k for k, _ in found)
        tests["kpss"] = [rec for _, rec in found]
        how_d = f"d = {d} from KPSS tests at level {alpha} (statsmodels kpss)"
    else:
        how_d = f"d = {d} (given)"
    s_period = period if period >= 2 else 0
    trend = "c" if d + seasonal_d <= 1 else "n"
    orders = {
        f"({p},{d},{q})({sp},{seasonal_d},{sq},{s_period})":
            ((p, d, q), (sp, seasonal_d, sq, s_period))
        for p in range(max_p + 1) for q in range(max_q + 1)
        for sp in range(max_seasonal_p + 1 if s_period else 1)
        for sq in range(max_seasonal_q + 1 if s_period else 1)
    }

    def build(label: str) -> ARIMA:
        order, seasonal_order = orders[label]
        return ARIMA(order, seasonal_order, trend=trend)

    base = "aic" if criterion == "aicc" else criterion
    sel = select(build, list(orders), seqs, criterion=base, validation_data=validation_data,
                 tail=tail)
    nd = d + seasonal_d * s_period
    n = int((seqs.lengths - nd).sum())
    k = sel.table["num_params"].to_numpy()
    sel.table["aicc"] = np.where(n - k - 1 > 0, sel.table["aic"].to_numpy()
                                 + 2 * k * (k + 1) / np.maximum(n - k - 1, 1), np.inf)
    if criterion == "aicc":
        label = min(orders, key=lambda c: (sel.table.loc[c, "aicc"],
                                           sel.table.loc[c, "num_params"]))
        sel.model = sel.models[label]
        sel.description = (f"lowest AICc (n = {n} steps of the differenced series) of the "
                           "exact maximum-likelihood fits on all of data")
    else:
        label = sel.best
    sel.best = orders[label]
    sel.models = {orders[c]: m for c, m in sel.models.items()}
    sel.criterion = criterion
    sel.table.attrs["criterion"] = criterion
    sel.description = f"{seasonal_how}; {how_d}; then {sel.description}"
    sel.table.attrs["description"] = sel.description
    sel.details = {"d": d, "seasonal_d": seasonal_d, "tests": tests, "trend": trend}
    return sel
