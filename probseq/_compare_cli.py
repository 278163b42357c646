"""``python -m probseq compare``: fit or load model families, rank them and write a report.

The models are fitted on the data's fitting part (the shipped networks come fitted), ranked
with :func:`probseq.compare` (paired tests against the best, Holm-corrected) on the judged
part, and written to ``--out`` as a CSV table, a markdown report whose headline is the
verdict, and PNG figures. A network fitted in the run whose training did not converge is
left out of the ranking, and the report says why.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from probseq._cli_common import (
    DEFAULT_DATASET,
    Dataset,
    FittedModels,
    add_data_arguments,
    choose_models,
    data_from_args,
    fit_models,
    markdown_table,
    output_folder,
    print_table,
)

__all__ = ["add_parser", "run"]

_COLUMNS = ("nats_per_step", "bits_per_step", "delta_vs_best", "delta_se", "p_adjusted",
            "indistinguishable", "simplest", "num_params", "bic", "score_kind", "fit_seconds")


def add_parser(sub) -> None:
    """Add the ``compare`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "compare",
        help="fit model families on a dataset and rank them (the main job)",
        description="Fit model families to a built-in dataset or your own file (--data), "
        "compare them by held-out log-likelihood with Holm-corrected paired tests against "
        "the best, and write a report whose headline is the verdict: the models the data "
        "cannot separate from the best and the simplest of them. With no options: Markov "
        "chains of orders 1-6 and the character networks shipped with the package on "
        "held-out CPython documentation text.",
    )
    add_data_arguments(p, DEFAULT_DATASET, "report")
    p.add_argument("--models", default=None,
                   help="comma-separated model names (default: every family that applies; "
                   "see `python -m probseq models`)")
    p.add_argument("--seed", type=int, default=0, help="seed of every fit and sample")
    p.add_argument("--no-plots", action="store_true", help="write the table only")
    p.add_argument("--max-chunks", type=int, default=None, metavar="N",
                   help="judge on the first N held-out sequences only (a quick look)")
    p.set_defaults(subparser=p)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``compare`` with parsed arguments."""
    from probseq import compare

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    data = data_from_args(args, parser, DEFAULT_DATASET)
    names = choose_models(parser, data, args.models, args.dataset)
    if args.max_chunks is not None:
        if args.max_chunks < 1:
            parser.error("--max-chunks must be >= 1")
        if data.start:
            parser.error("--max-chunks applies to data judged as separate sequences")
        data.evaluate = data.evaluate[: args.max_chunks]
        data.description += f" (only the first {len(data.evaluate)} judged: --max-chunks)"
    out = output_folder(args.out, "report", data.name, "report.md", args.overwrite)
    print(data.description, file=sys.stderr)

    fitted = fit_models(names, data, args.seed)
    if not fitted.models:
        parser.error("no model could be ranked: "
                     + "; ".join(f"{n}: {why}" for n, why in fitted.left_out.items()))
    # The shipped networks were fitted on a training text hundreds of thousands of characters
    # long; rescoring it for AIC/BIC would take minutes, so they are computed on the judged
    # data then (and the report says so).
    fit_data = None if fitted.shipped else data.fit
    table = compare(fitted.models, data.evaluate, fit_data=fit_data, start=data.start)
    table["fit_seconds"] = [fitted.seconds[n] for n in table.index]
    table.drop(columns=["model"]).to_csv(out / "comparison.csv", index_label="name")
    print_table(table, _COLUMNS)
    print("\n" + table.attrs["verdict"])
    for name, why in fitted.left_out.items():
        print(f"{name}: {why}")
    figures = [] if args.no_plots else _write_figures(fitted.models, table, data, out,
                                                      args.seed)
    _write_report(out / "report.md", table, data, figures, fitted, aic_on_fit=fit_data is not None)
    print(f"\nwrote {out / 'comparison.csv'}, {out / 'report.md'}"
          + (f" and {len(figures)} figures" if figures else ""), file=sys.stderr)
    return 0


def _write_figures(fitted, table, data: Dataset, out: Path, seed: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
        h = len(y) - data.start
        save(plots.plot_forecast(
            fitted, y[: data.start], h, actual=y[data.start:], seed=seed, index=data.index,
            title=f"Forecasts of all {h} held-out steps from the end of the fitting data (95% "
            "intervals; the comparison scores one step ahead, not these)"),
             "forecast.png")
    return written


def _describe(name: str, model: Any, fitted: FittedModels) -> str:
    text = f"`{model!r}`"
    if name in fitted.shipped:
        from probseq import pretrained

        s = pretrained.text_network_summary(model.cell)
        return (f"{text}, shipped with the package (probseq.pretrained.text_network"
                f"({model.cell!r})): trained once by `{s['command']}` in {s['fit_seconds']} s "
                f"on {s['torch_threads']} thread(s), best validation loss at epoch "
                f"{s['best_epoch']} ({s['valid_bits_per_char']} bits/char); loaded in "
                f"{fitted.seconds[name]:.1f} s")
    result = getattr(model, "fit_result_", None)
    if isinstance(result, dict) and result.get("message"):
        text += f" (training: {result['message']})"
    return (f"{text}, fitted with {fitted.options[name] or 'defaults'} in "
            f"{fitted.seconds[name]:.1f} s")


def _write_report(path: Path, table, data: Dataset, figures: list[str], fitted: FittedModels,
                  aic_on_fit: bool) -> None:
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
    left = fitted.left_out
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
        "- Left out of the ranking: "
        + ("; ".join(f"{n} ({why})" for n, why in left.items()) if left else "none") + ".",
        "",
        "## Models",
        "",
        *(f"- {name}: {_describe(name, fitted.models[name], fitted)}" for name in table.index),
        *(f"- {name}: {why}" for name, why in left.items()),
        "",
        "## Table",
        "",
        "`delta_vs_best` is the paired difference in total log-likelihood to the best model "
        "(nats) and `delta_se` its standard error; `p_value` the paired t-test and "
        "`p_adjusted` its Holm adjustment; `significant` = significantly worse than the best; "
        "`indistinguishable` = not; `simplest` marks the simplest indistinguishable model; "
        "`score_kind` is exact, bound (a lower bound) or approximate; AIC and BIC "
        + ("(on the fitting data) " if aic_on_fit else
           "(on the judged data: the shipped networks' training text is not rescored) ")
        + "are empty where the score is not an exact likelihood.",
        "",
        markdown_table(table.drop(columns=["model"])),
        "",
    ]
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    path.write_text("\n".join(lines))
