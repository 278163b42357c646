"""What the command line's subcommands share: the data they read, the models they fit, the
folders they write to and the tables they print.

Each subcommand is its own module over this one (:mod:`probseq._compare_cli`,
:mod:`probseq._backtest_cli`); :mod:`probseq.cli` builds the parser from them. Nothing here
imports torch at module level, so that ``python -m probseq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DATASETS",
    "DEFAULT_MODELS",
    "DATASET_MODELS",
    "TEXT_FILE_MODELS",
    "Dataset",
    "load_dataset",
    "read_data",
    "model_factories",
    "choose_models",
    "fit_models",
    "FittedModels",
    "output_folder",
    "print_table",
    "markdown_table",
    "add_data_arguments",
    "data_from_args",
]

#: the built-in datasets (``probseq.datasets.DATASETS``; repeated here so that the parser
#: is built without importing torch).
DATASETS = ("nile", "sunspots", "text", "regimes", "gdp", "co2", "co2_monthly")

#: the shipped character-level networks the main job scores (name -> cell).
SHIPPED = {"lstm_shipped": "lstm", "gru_shipped": "gru", "rnn_shipped": "rnn"}

DEFAULT_MODELS = {
    "continuous": ["ar1", "ar2", "ar3", "local_level", "hmm2", "gru", "lstm"],
    # The Markov chains beside the networks shipped with the package (trained once for 10 to
    # 35 minutes each, see probseq.pretrained): the main job scores both on the same chunks.
    "discrete": ["markov1", "markov2", "markov3", "markov4", "markov5", "markov6",
                 *SHIPPED],
}
DEFAULT_DATASET = "text"
#: datasets whose default models differ from their kind's.
DATASET_MODELS = {
    "gdp": "ar1,ar3,msar1,msar4,local_level,gru",
    # models that marginalise the gaps exactly
    "co2": "ar2,ar4,local_level,local_linear_trend,hmm2,structural_weekly",
    "co2_monthly": "ar2,ar4,local_level,local_linear_trend,hmm2,structural_s12,airline",
}
#: a text file of the user's: the chains, the shipped networks where its characters are in
#: their vocabulary, and a small network fitted within a budget of optimiser steps.
TEXT_FILE_MODELS = [f"markov{k}" for k in range(1, 7)] + [*SHIPPED, "gru"]


@dataclass
class Dataset:
    """A dataset ready for comparison.

    Attributes:
        name: a short name (folder names and titles).
        fit: the sequences models are fitted on.
        evaluate: the sequences they are judged on.
        start: steps before ``start`` of each evaluated sequence are conditioned on, not
            scored (a held-out tail of one long series); 0 for held-out sequences.
        kind: "continuous" or "discrete".
        description: one line for the report.
        decode: symbols -> text, for text data.
        index: the labels of the evaluated series' steps (one long series).
        num_symbols: V for discrete data (the whole vocabulary, so that every model can
            score held-out symbols that training lacks).
        shipped: for text, why the shipped networks cannot score it (None: they can).
        gaps: the number of missing values.
    """

    name: str
    fit: Any
    evaluate: Any
    start: int
    kind: str
    description: str
    decode: Callable[[Any], str] | None = None
    index: Sequence | None = None
    num_symbols: int | None = None
    shipped: str | None = None
    gaps: int = 0
    default_models: list[str] | None = field(default=None)


def _split_series(name: str, series, description: str, fraction: float = 0.8) -> Dataset:
    import numpy as np

    from probseq.data import Sequences

    y = series.to_numpy(np.float64)
    cut = int(round(fraction * len(y)))
    return Dataset(name, Sequences.from_list([y[:cut]]), Sequences.from_list([y]), cut,
                   "continuous", description.format(cut=cut, rest=len(y) - cut),
                   index=list(series.index), gaps=int(np.isnan(y).sum()))


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """Build one of the built-in datasets (:data:`DATASETS`) with its fit/evaluation split."""
    from probseq import datasets

    if name in ("nile", "sunspots"):
        series = datasets.nile() if name == "nile" else datasets.sunspots()
        return _split_series(
            name, series,
            f"{name}: one series of {len(series)} values ({series.index[0]}-"
            f"{series.index[-1]}); fitted on the first {{cut}}, judged on the last {{rest}} "
            "one step ahead")
    if name == "gdp":
        series = datasets.gdp_growth()
        data = _split_series(
            name, series,
            f"gdp: quarterly US real GDP growth in percent, {len(series)} values "
            f"({series.index[0]}-{series.index[-1]}, statsmodels macrodata); fitted on the "
            "first {cut}, judged on the last {rest} one step ahead")
        data.index = [str(q) for q in series.index]
        return data
    if name == "co2":
        series = datasets.co2()
        gaps = int(series.isna().sum())
        return _split_series(
            name, series,
            f"co2: weekly CO2 at Mauna Loa (ppm), {len(series)} weeks "
            f"({series.index[0]:%Y-%m-%d} to {series.index[-1]:%Y-%m-%d}, statsmodels) with "
            f"{gaps} missing weeks, marginalised exactly; fitted on the first {{cut}}, judged "
            "on the last {rest} one step ahead",
            fraction=(len(series) - 260) / len(series))
    if name == "co2_monthly":
        series = datasets.co2_monthly()
        gaps = int(series.isna().sum())
        return _split_series(
            name, series,
            f"co2_monthly: monthly mean CO2 at Mauna Loa (ppm), {len(series)} months "
            f"({series.index[0]:%Y-%m} to {series.index[-1]:%Y-%m}, statsmodels) with {gaps} "
            "missing months, marginalised exactly; fitted on the first {cut}, judged on the "
            "last {rest} one step ahead",
            fraction=(len(series) - 60) / len(series))
    if name == "regimes":
        seqs, _ = datasets.gaussian_hmm(240, 100, seed=seed)
        return Dataset(
            name, seqs[:160], seqs[160:], 0, "continuous",
            "regimes: 240 synthetic series of 100 steps from a 2-state Gaussian HMM; "
            "fitted on 160, judged on 80 held-out series",
        )
    if name == "text":
        corpus = datasets.python_docs_text()
        return Dataset(
            name, corpus.chunks("train", 256), corpus.chunks("test", 256), 0, "discrete",
            f"text: CPython's pydoc topics, {corpus.num_symbols} characters; fitted on "
            f"{len(corpus.train):,} characters, judged on the {len(corpus.test):,} held-out "
            "test characters in chunks of 256, each scored from its start",
            decode=corpus.decode, num_symbols=corpus.num_symbols,
            shipped=_shipped_refusal(corpus.vocab),
        )
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


# ------------------------------------------------------------------ the user's own data
def read_data(path: str | Path, column: str | None = None) -> Dataset:
    """A dataset from the user's file: a CSV series (``.csv``, ``.tsv``) or a text file.

    A CSV has a date (or step) column first and one value column (or names it with
    ``column``); empty cells are missing values, missing dates of a regular calendar are
    filled with missing values. The first 80% is fitted, the last 20% judged one step ahead.
    A text file is modelled character by character, split as
    :func:`probseq.datasets.text_corpus` splits it: the first 80% is fitted, the last 10%
    judged in chunks of up to 256 characters, each scored from its start.

    Raises:
        ValueError: the file is missing, empty, or not readable as described, naming why.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data {path}: no such file")
    if path.suffix.lower() in (".csv", ".tsv"):
        return _read_series(path, column)
    if column is not None:
        raise ValueError(f"--column applies to a CSV series, but {path} is read as text")
    return _read_text(path)


def _read_series(path: Path, column: str | None) -> Dataset:
    import numpy as np
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"--data {path} is not a readable CSV file: {err}") from None
    if df.shape[1] < 2 or len(df) == 0:
        raise ValueError(f"--data {path} needs a date column and a value column, with rows; "
                         f"it has columns {list(df.columns)} and {len(df)} rows")
    first = df.columns[0]
    values = [c for c in df.columns[1:]]
    if column is None:
        if len(values) > 1:
            raise ValueError(f"--data {path} has several value columns "
                             f"({', '.join(map(str, values))}); choose one with --column")
        column = values[0]
    elif column not in values:
        raise ValueError(f"--column {column!r} is not a value column of {path}; its columns: "
                         f"{', '.join(map(str, values))}")
    y = pd.to_numeric(df[column], errors="coerce")
    bad = y.isna() & df[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"--data {path}: column {column!r} row {row + 1} holds "
                         f"{df[column].iloc[row]!r}, not a number")
    index = _time_index(df[first], path)
    series = pd.Series(y.to_numpy(np.float64), index=index, name=str(column))
    if isinstance(series.index, pd.DatetimeIndex):
        series = _regular(series)
    if not np.isfinite(series.to_numpy()).any() or series.notna().sum() < 10:
        raise ValueError(f"--data {path}: column {column!r} has {int(series.notna().sum())} "
                         "values; at least 10 are needed to fit and judge a model")
    gaps = int(series.isna().sum())
    name = _safe_name(path.stem)
    return _split_series(
        name, series,
        f"{name}: column {column!r} of {path.name}, {len(series)} steps "
        f"({_label(series.index[0])} to {_label(series.index[-1])})"
        + (f" with {gaps} missing values, marginalised exactly by the models that can" if gaps
           else "")
        + "; fitted on the first {cut}, judged on the last {rest} one step ahead")


def _time_index(col, path: Path):
    import pandas as pd

    if pd.api.types.is_integer_dtype(col):
        return pd.Index(col.to_numpy(), name=col.name)
    try:
        index = pd.DatetimeIndex(pd.to_datetime(col), name=col.name)
    except (ValueError, TypeError):
        raise ValueError(f"--data {path}: the first column {col.name!r} holds neither dates nor "
                         "step numbers") from None
    if index.hasnans or not index.is_monotonic_increasing or index.has_duplicates:
        raise ValueError(f"--data {path}: the dates of column {col.name!r} must be distinct, "
                         "present and increasing")
    return index


def _regular(series):
    """Missing dates of a regular calendar (daily, weekly, monthly, ...) become missing
    values (NaN); an irregular calendar is left as it is (its rows are consecutive steps)."""
    import collections

    import pandas as pd

    def infer(idx):  # an offset (pd.infer_freq's string return is deprecated and warns)
        return pd.DatetimeIndex(idx, freq="infer").freq

    index = series.index
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 4 or infer(index) is not None:
        return series
    guesses = collections.Counter(
        infer(index[i:i + 3]) for i in range(0, len(index) - 2, max(1, len(index) // 50)))
    guesses.pop(None, None)
    for freq, _ in guesses.most_common(3):
        full = pd.date_range(index[0], index[-1], freq=freq, name=index.name)
        if index.isin(full).all():
            return series.reindex(full)
    return series


def _label(x) -> str:
    """A step's label in words: a date without a midnight time."""
    import pandas as pd

    if isinstance(x, pd.Timestamp) and x == x.normalize():
        return f"{x:%Y-%m-%d}"
    return str(x)


def _safe_name(stem: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem).strip("_")
    return name or "data"


def _shipped_refusal(vocab: Sequence[str]) -> str | None:
    """Why the shipped networks cannot score text over ``vocab`` (None: they can)."""
    from probseq import pretrained

    if not pretrained.TEXT_NETWORKS:
        return "no networks are shipped with this installation"
    shipped = pretrained.text_network_summary(pretrained.TEXT_NETWORKS[0])["vocab"]
    missing = sorted(set(vocab) - set(shipped))
    if missing:
        return (f"{len(missing)} of its characters ({''.join(missing[:10])!r}...) are not in "
                f"the vocabulary the shipped networks were trained on")
    if tuple(vocab) != tuple(shipped) and len(vocab) == len(shipped):
        return "its vocabulary orders the characters differently from the shipped networks'"
    return None


def _read_text(path: Path) -> Dataset:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--data {path} is neither a .csv series nor UTF-8 text: {err}") from None
    if len(text) < 100:
        raise ValueError(f"--data {path} has {len(text)} characters; at least 100 are needed to "
                         "fit and judge character models")
    own = sorted(set(text))
    refusal = _shipped_refusal(own) if not set(own) <= _shipped_vocab_set() else None
    vocab = _shipped_vocab() if refusal is None else None
    from probseq.datasets import text_corpus

    corpus = text_corpus(text, vocab=None if vocab is None else "".join(vocab))
    length = min(256, len(corpus.test))
    name = _safe_name(path.stem)
    return Dataset(
        name, corpus.chunks("train", 256), corpus.chunks("test", length), 0, "discrete",
        f"{name}: the text of {path.name}, {len(set(text))} distinct characters"
        + (f" (encoded over the shipped networks' {corpus.num_symbols})" if refusal is None
           else "") + f"; fitted on the first {len(corpus.train):,} characters, judged on "
        f"the last {len(corpus.test):,} in chunks of {length}, each scored from its start",
        decode=corpus.decode, num_symbols=corpus.num_symbols, shipped=refusal,
        default_models=list(TEXT_FILE_MODELS),
    )


def _shipped_vocab() -> tuple[str, ...] | None:
    from probseq import pretrained

    if not pretrained.TEXT_NETWORKS:
        return None
    return tuple(pretrained.text_network_summary(pretrained.TEXT_NETWORKS[0])["vocab"])


def _shipped_vocab_set() -> set[str]:
    return set(_shipped_vocab() or ())


# ------------------------------------------------------------------ models
def model_factories(kind: str, num_symbols: int | None = None
                    ) -> dict[str, Callable[[], tuple[Any, dict[str, Any] | None]]]:
    """name -> a function building ``(model, fit keywords)`` for a data kind.

    The fit keywords are None for a model that comes fitted (the shipped networks).

    Args:
        kind: ``"continuous"`` or ``"discrete"``.
        num_symbols: V for the discrete models (inferred from the fitting data when None).
    """
    import probseq as ps

    if kind == "continuous":
        return {
            "ar1": lambda: (ps.AutoRegressive(order=1), {}),
            "ar2": lambda: (ps.AutoRegressive(order=2), {}),
            "ar3": lambda: (ps.AutoRegressive(order=3), {}),
            "local_level": lambda: (ps.LinearGaussianSSM.local_level(), {}),
            "hmm2": lambda: (ps.HiddenMarkovModel(num_states=2, emission="gaussian"), {}),
            "hmm3": lambda: (ps.HiddenMarkovModel(num_states=3, emission="gaussian"), {}),
            "gru": lambda: (ps.RecurrentModel(cell="gru", hidden_size=32, emission="gaussian"), {}),
            "lstm": lambda: (
                ps.RecurrentModel(cell="lstm", hidden_size=32, emission="gaussian"), {}
            ),
            "local_linear_trend": lambda: (ps.LinearGaussianSSM.local_linear_trend(), {}),
            "ar4": lambda: (ps.AutoRegressive(order=4), {}),
            "ar5": lambda: (ps.AutoRegressive(order=5), {}),
            "dmm": lambda: (ps.DeepMarkovModel(), {"max_epochs": 100}),
            "msar1": lambda: (ps.SwitchingAutoRegressive(num_regimes=2, order=1), {}),
            "msar4": lambda: (ps.SwitchingAutoRegressive(num_regimes=2, order=4), {}),
            # seasonal models: structural (statsmodels' UnobservedComponents) with a local
            # linear trend plus a monthly dummy seasonal, or a yearly trigonometric seasonal
            # of weekly data; and the airline model SARIMA(0,1,1)(0,1,1,12)
            "structural_s12": lambda: (
                ps.LinearGaussianSSM.structural(trend=True, seasonal=12), {}),
            "structural_weekly": lambda: (ps.LinearGaussianSSM.structural(
                trend=True, freq_seasonal=[{"period": 365.25 / 7, "harmonics": 1}]), {}),
            "airline": lambda: (ps.ARIMA(order=(0, 1, 1), seasonal_order=(0, 1, 1, 12)), {}),
        }
    v = num_symbols

    def markov(order: int, **options: Any):
        return lambda: (ps.MarkovChain(order=order, num_symbols=v, **options), {})

    def recurrent(cell: str, hidden: int, **fit_options: Any):
        return lambda: (ps.RecurrentModel(cell=cell, hidden_size=hidden, num_symbols=v),
                        fit_options)

    def shipped(cell: str):
        return lambda: (ps.pretrained.text_network(cell), None)

    factories: dict[str, Callable[[], tuple[Any, dict[str, Any] | None]]] = {
        f"markov{k}": markov(k) for k in range(0, 9)
    }
    factories.update({name: shipped(cell) for name, cell in SHIPPED.items()})
    factories.update({
        # A small GRU fitted live within a budget of 400 optimiser steps (batches of 16
        # windows of 64 characters), stopped when the validation loss has not improved for
        # 100 steps: on a large text it does not converge in that budget and the report
        # leaves it out of the ranking.
        "gru": recurrent("gru", 32, max_steps=400, min_steps=100, patience=100,
                         batch_size=16, window_length=64, learning_rate=0.01),
        "hmm16": lambda: (
            ps.HiddenMarkovModel(num_states=16, emission="categorical", num_symbols=v),
            {"max_epochs": 30, "num_restarts": 1},
        ),
        "rnn": recurrent("rnn", 128, max_epochs=3),
        "lstm": recurrent("lstm", 128, max_epochs=3),
        "gru128": recurrent("gru", 128, max_epochs=3),
        "transformer": recurrent("transformer", 128, max_epochs=3),
        "markov1_additive": markov(1, smoothing="additive"),
        "markov5_additive": markov(5, smoothing="additive"),
        "markov1_mle": markov(1, smoothing="additive", alpha=0.0),
    })
    return factories


def model_names(kind: str) -> list[str]:
    """The names :func:`model_factories` knows for a data kind."""
    if kind == "continuous":
        return ["ar1", "ar2", "ar3", "local_level", "hmm2", "hmm3", "gru", "lstm",
                "local_linear_trend", "ar4", "ar5", "dmm", "msar1", "msar4",
                "structural_s12", "structural_weekly", "airline"]
    return [*(f"markov{k}" for k in range(9)), *SHIPPED, "gru", "hmm16", "rnn", "lstm",
            "gru128", "transformer", "markov1_additive", "markov5_additive", "markov1_mle"]


def choose_models(parser: argparse.ArgumentParser, data: Dataset, spec: str | None,
                  dataset: str | None = None) -> list[str]:
    """The model names a run fits: ``--models``, else the data's defaults."""
    known = model_names(data.kind)
    if spec is None:
        if dataset in DATASET_MODELS:
            spec = DATASET_MODELS[dataset]
        else:
            return list(data.default_models or DEFAULT_MODELS[data.kind])
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        parser.error("--models needs at least one model name")
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(
            f"unknown model(s) {', '.join(unknown)} for {data.kind} data; choose from "
            f"{', '.join(known)}"
        )
    return names


@dataclass
class FittedModels:
    """What :func:`fit_models` returns.

    Attributes:
        models: name -> fitted model, for the ranking.
        seconds: name -> fit (or load) seconds.
        options: name -> the fit keywords in words.
        fit_kwargs: name -> the fit keywords (empty for the shipped models).
        left_out: name -> why the model is not ranked (not converged, cannot read the data).
        shipped: the names of the models that came fitted.
    """

    models: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    fit_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    shipped: list[str] = field(default_factory=list)


def fit_models(names: list[str], data: Dataset, seed: int) -> FittedModels:
    """Fit (or load) the named models on ``data.fit``.

    A model fitted here whose training did not converge, a shipped network that cannot read
    the data's characters, and a model that cannot marginalise the data's gaps are left out
    of the ranking, with the reason.
    """
    import logging

    from probseq._utils import progress_bar

    log = logging.getLogger("probseq")
    factories = model_factories(data.kind, data.num_symbols)
    out = FittedModels()
    bar = progress_bar(len(names), None, "fitting")
    for name in names:
        bar.set_postfix_str(name)
        if name in SHIPPED and data.shipped is not None:
            out.left_out[name] = f"not scored: {data.shipped}"
            bar.update()
            continue
        tic = time.perf_counter()
        model, fit_kw = factories[name]()
        if data.gaps and not model.supports_missing:
            out.left_out[name] = (f"not fitted: the data has {data.gaps} missing values and "
                                  f"{model.name} cannot marginalise them")
            bar.update()
            continue
        out.fit_kwargs[name] = dict(fit_kw or {})
        if fit_kw is None:
            out.shipped.append(name)
            out.options[name] = "shipped with the package"
        else:
            out.options[name] = ", ".join(f"{k}={v!r}" for k, v in fit_kw.items())
            log.info("fitting %s", name)
            model.fit(data.fit, seed=seed, **fit_kw)
        out.seconds[name] = time.perf_counter() - tic
        result = getattr(model, "fit_result_", None)
        if (fit_kw is not None and isinstance(result, dict)
                and result.get("converged") is False):
            out.left_out[name] = ("left out of the ranking: training did not converge within "
                                  f"this run's budget ({result.get('message')})")
        else:
            out.models[name] = model
        bar.update()
    bar.close()
    return out


# ------------------------------------------------------------------ output
def add_data_arguments(p: argparse.ArgumentParser, default_dataset: str, what: str) -> None:
    """``--dataset``, ``--data``, ``--column``, ``--out`` and ``--overwrite``."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", default=None, choices=DATASETS,
                     help=f"built-in dataset (default: {default_dataset})")
    src.add_argument("--data", default=None, metavar="PATH",
                     help="your own data: a CSV series (.csv: a date column, then one value "
                     "column or several and --column; empty cells are gaps) or a text file "
                     "(any other name: character models)")
    p.add_argument("--column", default=None, help="the value column of a --data CSV")
    p.add_argument("--out", default=None,
                   help=f"output folder (default: {what}/<data name>); a folder that holds "
                   "another run's report is not overwritten: the run writes to <out>-2, "
                   "-3, ... and says so, unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report in --out instead of writing beside it")


def data_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                   default_dataset: str) -> Dataset:
    """The dataset a run reads: ``--data`` (the user's file) or ``--dataset``."""
    if args.column is not None and args.data is None:
        parser.error("--column needs --data")
    try:
        if args.data is not None:
            return read_data(args.data, args.column)
        return load_dataset(args.dataset or default_dataset, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def output_folder(out: str | None, root: str, name: str, marker: str,
                  overwrite: bool = False) -> Path:
    """The folder a run writes to: ``out`` (default ``root/name``), or, when it already
    holds another run's ``marker`` file and not ``overwrite``, the first free
    ``<out>-2``, ``<out>-3``, ... (said on stderr)."""
    base = Path(out) if out is not None else Path(root) / name
    if not base.name:  # "." (or "/"): number the folder's own name
        base = base.resolve()
    path, k = base, 1
    while not overwrite and (path / marker).exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    if path != base:
        print(f"{base} holds another run's {marker}; writing to {path} instead "
              "(--overwrite replaces it)", file=sys.stderr)
    path.mkdir(parents=True, exist_ok=True)
    return path


def print_table(table, columns: Sequence[str]) -> None:
    """Print the columns of ``table`` that it has, compactly."""
    import pandas as pd

    cols = [c for c in columns if c in table]
    with pd.option_context("display.width", 140, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(table[cols].to_string())


def markdown_table(table) -> str:
    """A DataFrame as a markdown table (index first, floats to 4 significant digits)."""
    import numpy as np

    def fmt(v):
        if isinstance(v, float | np.floating):
            return f"{v:.4g}"
        return str(v)

    head = f"| {table.index.name or 'name'} | " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    rows = [
        f"| {name} | " + " | ".join(fmt(v) for v in row) + " |"
        for name, row in zip(table.index, table.itertuples(index=False), strict=True)
    ]
    return "\n".join([head, rule, *rows])
