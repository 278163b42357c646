"""``python -m probseq backtest``: rolling-origin evaluation of model families on a dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probseq._cli_common import (
    add_data_arguments,
    choose_models,
    data_from_args,
    fit_models,
    markdown_table,
    output_folder,
)

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Add the ``backtest`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "backtest",
        help="rolling-origin forecast evaluation of model families on a dataset",
        description="Fit model families on a built-in dataset or your own file (--data), "
        "forecast from every origin of its evaluation data (expanding window) and score the "
        "forecasts: log score, CRPS or Brier score, errors and interval coverage, with paired "
        "standard errors.",
    )
    add_data_arguments(p, "nile", "backtest")
    p.add_argument("--models", default=None,
                   help="comma-separated model names (see `python -m probseq models`)")
    p.add_argument("--horizon", type=int, default=1, help="steps ahead (default: 1)")
    p.add_argument("--initial", type=int, default=None,
                   help="first origin (default: the dataset's held-out start, else half the "
                   "shortest sequence)")
    p.add_argument("--step", type=int, default=1, help="distance between origins (default: 1)")
    p.add_argument("--refit", type=int, default=0,
                   help="refit every k origins (default 0: never; fit once on the fit data)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="sampled paths where forecasts need them (default: 1000)")
    p.add_argument("--level", type=float, default=0.95,
                   help="coverage of the central prediction intervals (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of every fit and sample")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    p.set_defaults(subparser=p)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``backtest`` with parsed arguments."""
    import logging

    import pandas as pd

    from probseq.backtest import backtest

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    data = data_from_args(args, parser, "nile")
    names = choose_models(parser, data, args.models)
    shortest = int(data.evaluate.lengths.min())
    initial = args.initial if args.initial is not None else (data.start or max(1, shortest // 2))
    if args.horizon < 1 or args.step < 1 or args.refit < 0:
        parser.error("--horizon and --step must be >= 1, --refit >= 0")
    if not 0 < args.level < 1:
        parser.error("--level must lie strictly between 0 and 1")
    out = output_folder(args.out, "backtest", data.name, "report.md", args.overwrite)
    print(data.description, file=sys.stderr)

    result = fit_models(names, data, args.seed)
    fitted = result.models
    if args.refit and result.shipped:
        parser.error(f"--refit cannot refit the shipped networks ({', '.join(result.shipped)})")
    if not fitted:
        parser.error("no model could be backtested: "
                     + "; ".join(f"{n}: {why}" for n, why in result.left_out.items()))
    fit_kws = {n: {"seed": args.seed, **result.fit_kwargs[n]} for n in fitted}
    try:
        table, summary = backtest(fitted, data.evaluate, initial=initial, horizon=args.horizon,
                                  step=args.step, refit=args.refit or False,
                                  num_samples=args.num_samples, fit_options=fit_kws,
                                  seed=args.seed, level=args.level)
    except ValueError as err:
        parser.error(str(err))
    table.to_csv(out / "backtest.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    with pd.option_context("display.width", 140, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(summary.to_string(index=False))
    figures = [] if args.no_plots else _figures(fitted, data, initial, args, out)
    ahead = ("one step ahead" if args.horizon == 1
             else f"1 to {args.horizon} steps ahead")
    lines = [
        f"# probseq backtest: {data.name}", "", data.description.replace(
            " one step ahead", "") + ".", "",
        f"Forecasts {ahead} from origins every {args.step} step(s) from step {initial}, "
        + ("models fitted once on the fit data" if not args.refit
           else f"models refitted every {args.refit} origin(s)")
        + f"; intervals and coverage at the {args.level:.0%} level. Mean scores per "
        "forecast (log score: higher is better; CRPS, Brier, RMSE, MAE: "
        "lower is better); `delta_vs_best` and `crps_delta` are paired differences to the "
        "best model with standard errors across origins. Log scores of sampled steps are "
        "not available (NaN).", "",
        markdown_table(summary.set_index("model")), "",
        "Left out: " + ("; ".join(f"{n} ({why})" for n, why in result.left_out.items())
                        if result.left_out else "none") + ".", "",
    ]
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"\nwrote {out / 'backtest.csv'}, {out / 'summary.csv'}, {out / 'report.md'}"
          + (f" and {len(figures)} figures" if figures else ""), file=sys.stderr)
    return 0


def _figures(fitted, data, initial: int, args, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probseq import plots

    written = []
    if data.kind != "continuous":
        return written
    capable = {}
    for name, m in fitted.items():
        try:
            m._step_predictive(data.evaluate[:1])
            capable[name] = m
        except NotImplementedError:
            pass
    if capable:
        fig = plots.plot_calibration(capable, data.evaluate, start=initial)
        fig.savefig(out / "calibration.png", dpi=110)
        plt.close(fig)
        written.append("calibration.png")
    y = data.evaluate[0].numpy()
    h = min(max(args.horizon, 12), len(y) - initial)
    if h >= 1:
        scored = ("1 step ahead" if args.horizon == 1
                  else f"1 to {args.horizon} steps ahead")
        fig = plots.plot_forecast(
            fitted, y[:initial], h, actual=y[initial:initial + h], seed=args.seed,
            index=data.index, level=args.level,
            title=f"Forecasts of the next {h} steps from the first origin ({args.level:.0%} "
            f"intervals); the backtest scores {scored} from every origin")
        fig.savefig(out / "forecast.png", dpi=110)
        plt.close(fig)
        written.append("forecast.png")
    return written
