"""``python -m probseq``: the command line.

``python -m probseq compare`` fits the model families that apply to a built-in dataset,
compares them with :func:`probseq.compare` (paired tests against the best, Holm-corrected)
and writes a CSV table, a markdown report whose headline is the verdict (the models the
data cannot separate from the best, the simplest of them, the conditioning used) and PNG
figures to ``--out``. With no options it runs the main job: Markov chains of orders 1 to 6
and a small GRU on held-out CPython documentation text.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probseq import _backtest_cli, datasets
from probseq.data import Sequences

__all__ = ["main", "build_parser", "load_dataset", "model_factories"]


@dataclass
class Dataset:
    """A dataset ready for comparison.

    Attributes:
        fit: the sequences models are fitted on.
        evaluate: the sequences they are judged on.
        start: steps before ``start`` of each evaluated sequence are conditioned on, not
            scored (a held-out tail of one long series); 0 for held-out sequences.
        kind: "continuous" or "discrete".
        description: one line for the report.
        decode: symbols -> text, for text data.
        num_symbols: V for discrete data (the whole vocabulary, so that every model can
            score held-out symbols that training lacks).
    """

    name: str
    fit: Sequences
    evaluate: Sequences
    start: int
    kind: str
    description: str
    decode: Callable[[Any], str] | None = None
    index: Sequence | None = None
    num_symbols: int | None = None


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """Build one of ``probseq.datasets.DATASETS`` with its fit/evaluation split."""
    if name in ("nile", "sunspots"):
        series = datasets.nile() if name == "nile" else datasets.sunspots()
        y = series.to_numpy()
        cut = int(round(0.8 * len(y)))
        return Dataset(
            name,
            Sequences.from_list([y[:cut]]),
            Sequences.from_list([y]),
            cut,
            "continuous",
            f"{name}: one series of {len(y)} values ({series.index[0]}-{series.index[-1]}); "
            f"fitted on the first {cut}, judged on the last {len(y) - cut} one step ahead",
            index=list(series.index),
        )
    if name == "gdp":
        series = datasets.gdp_growth()
        y = series.to_numpy()
        cut = int(round(0.8 * len(y)))
        return Dataset(
            name, Sequences.from_list([y[:cut]]), Sequences.from_list([y]), cut, "continuous",
            f"gdp: quarterly US real GDP growth in percent, {len(y)} values "
            f"({series.index[0]}-{series.index[-1]}, statsmodels macrodata); fitted on the "
            f"first {cut}, judged on the last {len(y) - cut} one step ahead",
            index=[str(q) for q in series.index],
        )
    if name == "co2":
        series = datasets.co2()
        y = series.to_numpy()
        cut = len(y) - 260
        gaps = int(np.isnan(y).sum())
        return Dataset(
            name, Sequences.from_list([y[:cut]]), Sequences.from_list([y]), cut, "continuous",
            f"co2: weekly CO2 at Mauna Loa (ppm), {len(y)} weeks ({series.index[0]:%Y-%m-%d} to "
            f"{series.index[-1]:%Y-%m-%d}, statsmodels) with {gaps} missing weeks, marginalised "
            f"exactly; fitted on the first {cut}, judged on the last 260 one step ahead",
            index=list(series.index),
        )
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
            name,
            corpus.chunks("train", 256),
            corpus.chunks("test", 256),
            0,
            "discrete",
            f"text: CPython's pydoc topics, {corpus.num_symbols} characters; fitted on "
            f"{len(corpus.train):,} characters, judged on the {len(corpus.test):,} held-out "
            "test characters in chunks of 256",
            decode=corpus.decode,
            num_symbols=corpus.num_symbols,
        )
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(datasets.DATASETS)}")


def model_factories(kind: str, num_symbols: int | None = None
                    ) -> dict[str, Callable[[], tuple[Any, dict[str, Any]]]]:
    """name -> a function building ``(unfitted model, fit keywords)`` for a data kind.

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
        }
    v = num_symbols

    def markov(order: int, **options: Any):
        return lambda: (ps.MarkovChain(order=order, num_symbols=v, **options), {})

    def recurrent(cell: str, hidden: int, epochs: int, **fit_options: Any):
        return lambda: (ps.RecurrentModel(cell=cell, hidden_size=hidden, num_symbols=v),
                        {"max_epochs": epochs, **fit_options})

    factories: dict[str, Callable[[], tuple[Any, dict[str, Any]]]] = {
        f"markov{k}": markov(k) for k in range(0, 9)
    }
    factories.update({
        # A small GRU trained for about a CPU-minute and a half (3 epochs of 1,454 chunks in
        # batches of 8, ~540 Adam steps at a learning rate of 0.01).
        "gru": recurrent("gru", 32, 3, batch_size=8, learning_rate=0.01),
        "hmm16": lambda: (
            ps.HiddenMarkovModel(num_states=16, emission="categorical", num_symbols=v),
            {"max_epochs": 30, "num_restarts": 1},
        ),
        "rnn": recurrent("rnn", 128, 3),
        "lstm": recurrent("lstm", 128, 3),
        "gru128": recurrent("gru", 128, 3),
        "transformer": recurrent("transformer", 128, 3),
        "markov1_additive": markov(1, smoothing="additive"),
        "markov5_additive": markov(5, smoothing="additive"),
        "markov1_mle": markov(1, smoothing="additive", alpha=0.0),
    })
    return factories


DEFAULT_MODELS = {
    "continuous": ["ar1", "ar2", "ar3", "local_level", "hmm2", "gru", "lstm"],
    "discrete": ["markov1", "markov2", "markov3", "markov4", "markov5", "markov6", "gru"],
}
DEFAULT_DATASET = "text"
#: datasets whose default models differ from their kind's.
DATASET_MODELS = {
    "gdp": "ar1,ar3,msar1,msar4,local_level,gru",
    # models that marginalise the gaps exactly
    "co2": "ar2,ar4,local_level,local_linear_trend,hmm2",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m probseq",
        description="probseq: which model explains these sequences best, and by how much?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cmp = sub.add_parser(
        "compare",
        help="fit model families on a dataset and rank them (the main job)",
        description="Fit model families to a built-in dataset, compare them by held-out "
        "log-likelihood with Holm-corrected paired tests against the best, and write a report "
        "whose headline is the verdict: the models the data cannot separate from the best and "
        "the simplest of them. With no options: Markov chains of orders 1-6 and a GRU on "
        "held-out CPython documentation text.",
    )
    cmp.add_argument("--dataset", default=DEFAULT_DATASET, choices=datasets.DATASETS,
                     help=f"built-in dataset (default: {DEFAULT_DATASET})")
    cmp.add_argument("--models", default=None,
                     help="comma-separated model names (default: every family that applies; "
                     "see `python -m probseq models`)")
    cmp.add_argument("--out", default="report", help="output folder (default: report)")
    cmp.add_argument("--seed", type=int, default=0, help="seed of every fit and sample")
    cmp.set_defaults(subparser=cmp)
    cmp.add_argument("--no-plots", action="store_true", help="write the table only")
    lst = sub.add_parser("models", help="list the model names --models accepts")
    lst.add_argument("--dataset", default=None, choices=datasets.DATASETS)
    sub.add_parser("datasets", help="list the built-in datasets")
    _backtest_cli.add_parser(sub)
    return parser


def _choose_models(parser: argparse.ArgumentParser, kind: str, spec: str | None) -> list[str]:
    known = model_factories(kind)
    if spec is None:
        return DEFAULT_MODELS[kind]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        parser.error("--models needs at least one model name")
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(
            f"unknown model(s) {', '.join(unknown)} for {kind} data; choose from "
            f"{', '.join(known)}"
        )
    return names


def run_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from probseq import compare
    from probseq._utils import progress_bar

    data = load_dataset(args.dataset, seed=args.seed)
    names = _choose_models(parser, data.kind, args.models or DATASET_MODELS.get(args.dataset))
    factories = model_factories(data.kind, data.num_symbols)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(data.description, file=sys.stderr)

    fitted, seconds, options = {}, {}, {}
    bar = progress_bar(len(names), None, "fitting")
    for name in names:
        bar.set_postfix_str(name)
        model, fit_kw = factories[name]()
        options[name] = ", ".join(f"{k}={v!r}" for k, v in fit_kw.items())
        tic = time.perf_counter()
        model.fit(data.fit, seed=args.seed, **fit_kw)
        seconds[name] = time.perf_counter() - tic
        fitted[name] = model
        bar.update()
    bar.close()

    table = compare(fitted, data.evaluate, fit_data=data.fit, start=data.start)
    table["fit_seconds"] = [seconds[n] for n in table.index]
    table.to_csv(out / "comparison.csv", index_label="name")
    _print_table(table)
    print("\n" + table.attrs["verdict"])
    figures = [] if args.no_plots else _write_figures(fitted, table, data, out, args.seed)
    described, unconverged = {}, []
    for n, m in fitted.items():
        described[n] = f"`{m!r}`"
        result = getattr(m, "fit_result_", None)
        if isinstance(result, dict) and result.get("message"):
            described[n] += f" (training: {result['message']})"
            if result.get("converged") is False:
                unconverged.append(n)
    _write_report(out / "report.md", table, data, figures, described, options, unconverged)
    print(f"\nwrote {out / 'comparison.csv'}, {out / 'report.md'}"
          + (f" and {len(figures)} figures" if figures else ""), file=sys.stderr)
    return 0


def _print_table(table) -> None:
    import pandas as pd

    cols = [c for c in ("nats_per_step", "bits_per_step", "delta_vs_best", "delta_se",
                        "p_adjusted", "indistinguishable", "simplest", "num_params", "bic",
                        "score_kind", "fit_seconds") if c in table]
    with pd.option_context("display.width", 140, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(table[cols].to_string())


def _write_figures(fitted, table, data: Dataset, out: Path, seed: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probseq import plots

    written = []

    def save(fig, name):
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    save(plots.plot_comparison(table, title=f"{data.name}: model comparison"), "comparison.png")
    first = data.evaluate.with_gaps(0)  # missing values stay missing
    if data.kind == "discrete":
        first = first[:400]
    save(plots.plot_step_log_lik(fitted, first, start=data.start, index=data.index),
         "step_log_lik.png")
    length = min(int(data.evaluate.lengths[0]), 200)
    # samples continue the data's first steps, enough of them to locate diffuse states
    # (the first d observed values: gaps before them lengthen the prefix)
    from probseq.compare import conditioning_per_sequence

    located = conditioning_per_sequence(fitted, data.evaluate[:1])
    prefix = max(1, min(int(located[0]), length))
    save(plots.plot_samples(fitted, data.evaluate[:1] if data.decode is None else first,
                            length=length, seed=seed, decode=data.decode,
                            prefix_length=prefix, index=data.index),
         "samples.png")
    if data.kind == "continuous" and data.start:
        y = np.asarray(data.evaluate.with_gaps(0))
        save(plots.plot_forecast(fitted, y[: data.start], len(y) - data.start,
                                 actual=y[data.start:], seed=seed, index=data.index),
             "forecast.png")
    return written


def _write_report(path: Path, table, data: Dataset, figures: list[str],
                  fitted_repr: dict[str, str], fit_options: dict[str, Any],
                  unconverged: list[str]) -> None:
    attrs = table.attrs
    tied, simplest, best = attrs["indistinguishable"], attrs["simplest"], attrs["best"]
    units = ("held-out sequences" if attrs["units"] == "sequences"
             else "one-step-ahead held-out steps (Diebold-Mariano)")
    cond = attrs["conditioned_on"]
    if cond:
        conditioning = (f"every model is scored on the same steps, conditioning on the first "
                        f"{cond} step{'s' if cond > 1 else ''} of each sequence (the "
                        f"largest number of diffuse initial steps a model declares is "
                        f"{attrs['num_diffuse_steps']}; "
                        f"start = {attrs['start']})")
    else:
        conditioning = ("none: every model is scored on every step of the evaluated "
                        "sequences (no model declares diffuse initial steps)")
    over = [n for n in table.index if table.loc[n, "params_exceed_data"]]
    lines = [
        f"# probseq comparison: {data.name}",
        "",
        data.description + ".",
        "",
        "## Verdict",
        "",
        attrs["verdict"],
        "",
        ("- Best model: **" + best + "**, significantly better than every other model."
         if len(tied) == 1 else
         f"- Indistinguishable from the best ({best}): **{', '.join(tied)}**."),
        (f"- Simplest adequate model (fewest parameters among those): **{simplest}** "
         f"({int(table.loc[simplest, 'num_params'])} parameters)." if len(tied) > 1 else
         f"- Simplest adequate model: **{simplest}**, the only one not significantly worse "
         "than the best."),
        f"- Tests: paired t-tests of the log-likelihood difference to the best over {units}, "
        f"Holm-corrected for {len(table) - 1} comparisons at {attrs['level']:.0%}.",
        f"- Conditioning: {conditioning}.",
        "- More parameters than fitted values: " + (", ".join(over) if over else "none") + ".",
        "- Training stopped before convergence: "
        + (", ".join(unconverged) + " (a fit within this run's budget, not the best that "
           "family can do; see Models)" if unconverged else "none") + ".",
        "",
        "## Models",
        "",
        *(f"- {name}: {fitted_repr[name]}, fitted with {fit_options[name] or 'defaults'} "
          f"in {table.loc[name, 'fit_seconds']:.1f} s" for name in table.index),
        "",
        "## Table",
        "",
        "`delta_vs_best` is the paired difference in total log-likelihood to the best model "
        "(nats) and `delta_se` its standard error; `p_value` the paired t-test and "
        "`p_adjusted` its Holm adjustment; `significant` = significantly worse than the best; "
        "`indistinguishable` = not; `simplest` marks the simplest indistinguishable model; "
        "`score_kind` is exact, bound (a lower bound) or approximate; AIC and BIC (on the "
        "fitting data) are empty where the score is not an exact likelihood.",
        "",
        _markdown_table(table.drop(columns=["model"])),
        "",
    ]
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    path.write_text("\n".join(lines))


def _markdown_table(table) -> str:
    def fmt(v):
        if isinstance(v, float | np.floating):
            return f"{v:.4g}"
        return str(v)

    head = "| name | " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    rows = [
        f"| {name} | " + " | ".join(fmt(v) for v in row) + " |"
        for name, row in zip(table.index, table.itertuples(index=False), strict=True)
    ]
    return "\n".join([head, rule, *rows])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "datasets":
        for name in datasets.DATASETS:
            print(name)
        return 0
    if args.command == "models":
        kinds = ["continuous", "discrete"]
        if args.dataset:
            kinds = [load_dataset(args.dataset).kind]
        for kind in kinds:
            default = ", ".join(DEFAULT_MODELS[kind])
            print(f"{kind}: {', '.join(model_factories(kind))} (default: {default})")
        return 0
    if args.command == "backtest":
        return _backtest_cli.run(args, args.subparser)
    return run_compare(args, args.subparser)
