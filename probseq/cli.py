"""``python -m probseq``: the command line.

``python -m probseq compare`` fits the model families that apply to a built-in dataset or
the user's own file (``--data``), compares them with :func:`probseq.compare` (paired tests
against the best, Holm-corrected) and writes a CSV table, a markdown report whose headline
is the verdict and PNG figures. With no options it runs the main job: Markov chains of
orders 1 to 6 beside the character networks shipped with the package, on held-out CPython
documentation text. ``backtest`` evaluates forecasts from rolling origins.

Each subcommand is a module of its own (:mod:`probseq._compare_cli`,
:mod:`probseq._backtest_cli`) over the shared :mod:`probseq._cli_common`; this module only
builds the parser and dispatches. Building the parser imports neither torch nor the models,
so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from probseq import _backtest_cli, _compare_cli
from probseq._cli_common import (
    DATASET_MODELS,
    DATASETS,
    DEFAULT_MODELS,
    Dataset,
    load_dataset,
    model_factories,
    model_names,
    read_data,
)

__all__ = ["main", "build_parser", "load_dataset", "read_data", "model_factories",
           "Dataset", "DEFAULT_MODELS", "DATASET_MODELS"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m probseq",
        description="probseq: which model explains these sequences best, and by how much?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _compare_cli.add_parser(sub)
    lst = sub.add_parser("models", help="list the model names --models accepts")
    lst.add_argument("--dataset", default=None, choices=DATASETS)
    sub.add_parser("datasets", help="list the built-in datasets")
    _backtest_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "datasets":
        for name in DATASETS:
            print(name)
        return 0
    if args.command == "models":
        kinds = ["continuous", "discrete"]
        if args.dataset:
            kinds = [load_dataset(args.dataset).kind]
        for kind in kinds:
            default = ", ".join(DEFAULT_MODELS[kind])
            print(f"{kind}: {', '.join(model_names(kind))} (default: {default})")
        return 0
    if args.command == "backtest":
        return _backtest_cli.run(args, args.subparser)
    return _compare_cli.run(args, args.subparser)
