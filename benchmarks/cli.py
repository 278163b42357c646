"""Command line of the benchmark runner: ``python -m benchmarks [--quick] [--only ...]``."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import CASES, Context, Unavailable, probseq_class
from benchmarks.plot import plot_scaling
from benchmarks.report import Results, text_table, write_results
from benchmarks.timing import CpuMonitor, TimingConfig

__all__ = ["main", "parse_args", "run", "timing_config"]

HERE = Path(__file__).resolve().parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time probseq against peer libraries side by side (same process, "
        "interleaved repeats, repeats disturbed by other processes dropped).",
    )
    p.add_argument("--only", default=None, metavar="NAME[,NAME]",
                   help="run only these cases (see --list)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and few repeats: a smoke run (written to "
                   "benchmarks/results/quick unless --out is given)")
    p.add_argument("--repeats", type=int, default=None,
                   help="quiet repeats wanted per contender (default 5, quick 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the number of CPUs)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds after which a comparison stops retrying dropped repeats "
                   "(default 8, quick 1)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for results.md, results.json and scaling.png "
                   "(default: benchmarks/)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--against", default=None, metavar="REV",
                   help="regression guard: time probseq's own calls in the working tree "
                   "against git revision REV's probseq, side by side (see benchmarks.guard)")
    p.add_argument("--cpu-time", action="store_true",
                   help="with --against: time with the process's CPU clock (for a busy "
                   "machine, with --threads 1)")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def timing_config(quick: bool, repeats: int | None = None,
                  budget: float | None = None) -> TimingConfig:
    """The timing settings of a full or a quick run."""
    if quick:
        cfg = TimingConfig(repeats=2, max_rounds=4, min_time=0.01, budget=1.0)
    else:
        cfg = TimingConfig(repeats=5, max_rounds=12, min_time=0.25, budget=8.0)
    if repeats is not None:
        cfg.repeats = repeats
        cfg.max_rounds = max(cfg.max_rounds, 3 * repeats)
    if budget is not None:
        cfg.budget = budget
    return cfg


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _environment(args: argparse.Namespace, cfg: TimingConfig, threads: int,
                 monitor: CpuMonitor) -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "load_average_at_start": f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}",
        "cpu_monitor": "/proc/stat" if monitor.available else "unavailable (nothing dropped)",
        "repeats": cfg.repeats,
        "max_rounds": cfg.max_rounds,
        "min_repeat_s": cfg.min_time,
        "budget_s": cfg.budget,
        "others_fraction": cfg.others_fraction,
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{p: _version(p) for p in ("numpy", "hmmlearn", "statsmodels", "pyro-ppl",
                                    "pomegranate")},
    }


def _limit_blas_threads(threads: int) -> str:
    """Limit numpy's BLAS/OpenMP pools (used by the peers) to ``threads`` for the run."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "not limited (threadpoolctl missing)"
    _BLAS_LIMITS.append(threadpool_limits(limits=threads))
    return str(threads)


_BLAS_LIMITS: list[Any] = []  # keeps the limit in force until the process ends


def run(names: Sequence[str], ctx: Context) -> Results:
    """Run the named cases in ``ctx``; a missing class or peer skips a case, an exception
    is recorded as an error and the run goes on."""
    for name in names:
        c = CASES[name]
        ctx.case_name = name
        ctx.log(f"\n== {name}: {c.description}")
        start = time.perf_counter()
        try:
            for cls in c.needs:
                probseq_class(cls)
            c.fn(ctx)
        except Unavailable as err:
            ctx.results.skipped.append(f"[{name}] not available: {err}")
            ctx.log(f"  not available: {err}")
        except Exception as err:
            ctx.results.errors.append(f"[{name}] {type(err).__name__}: {err}")
            ctx.log(f"  ERROR: {type(err).__name__}: {err}")
            traceback.print_exc(file=sys.stderr)
        ctx.log(f"  ({time.perf_counter() - start:.1f} s)")
    return ctx.results


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> int:
    """Run the benchmarks; returns the exit status (1 when a case raised an error)."""
    args = parse_args(argv)
    if args.against is not None:
        from benchmarks import guard

        extra = (["--only", args.only] if args.only else []) + (
            ["--quick"] if args.quick else []) + (
            ["--threads", str(args.threads)] if args.threads else []) + (
            ["--repeats", str(args.repeats)] if args.repeats else []) + (
            ["--cpu-time"] if args.cpu_time else [])
        return guard.main([args.against, *extra])
    import benchmarks.cases  # noqa: F401  (registers the cases)

    log = log or (lambda s: print(s, flush=True))
    if args.list:
        for name, c in CASES.items():
            log(f"{name:18s} {c.description}")
        return 0
    names = list(CASES) if args.only is None else [n.strip() for n in args.only.split(",")
                                                    if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        log(f"unknown case(s) {unknown}; available: {', '.join(CASES)}")
        return 2

    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    blas = _limit_blas_threads(threads)
    cfg = timing_config(args.quick, args.repeats, args.budget)
    monitor = CpuMonitor()
    results = Results()
    results.environment = _environment(args, cfg, torch.get_num_threads(), monitor)
    results.environment["blas_threads"] = blas
    log(f"probseq benchmarks ({results.environment['mode']}): torch threads = "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average "
        f"{results.environment['load_average_at_start']}")
    ctx = Context(quick=args.quick, config=cfg, results=results, log=log, monitor=monitor)
    started = time.perf_counter()
    run(names, ctx)
    results.environment["total_s"] = round(time.perf_counter() - started, 1)
    out = args.out or (HERE / "results" / "quick" if args.quick else HERE)
    md, js = write_results(results, out)
    png = plot_scaling(results.curves, out / "scaling.png")
    log("\n" + text_table(results))
    log(f"\nwrote {md}, {js}" + (f", {png}" if png else ""))
    if not args.quick and args.only is None and args.out is None:
        # a full run of every case, written where the repository keeps it: the README's
        # table follows (benchmarks.readme)
        from benchmarks import readme

        readme.main([str(js), "--readme", str(HERE.parent / "README.md")])
    return 1 if results.errors else 0
