"""Regression guard: the working tree's probseq against another commit's, side by side.

``python -m benchmarks --against REV [--only CASES]`` exports the package ``probseq/`` of the
git revision ``REV`` into a temporary folder and runs the same benchmark cases (the working
tree's ``benchmarks/``, so both sides do the same work) twice per round, once importing each
``probseq``, in fresh worker processes. Only probseq's own calls are timed (the peers are
not: the question is whether probseq got slower). Rounds alternate which side runs first, and
each line's time is the median over rounds of each worker's median, so slow drift of the
machine falls on both sides.

A line is flagged ``SLOWER`` when the working tree takes more than ``1 + threshold`` times the
revision's time (threshold 10% by default, stated in the table). The guard only reports: it
is for reading before a change to a hot path lands, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GuardContext", "GuardLine", "compare_trees", "export_package", "format_table",
           "main"]

ROOT = Path(__file__).resolve().parent.parent


def export_package(rev: str, dest: Path, repo: Path = ROOT) -> Path:
    """Write ``probseq/`` as it is at git revision ``rev`` into ``dest``; returns ``dest``.

    Raises:
        ValueError: ``rev`` is not a revision of the repository (git's message included).
    """
    archive = dest / "probseq.tar"
    proc = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", "-o",
                           str(archive), rev, "probseq"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"cannot export probseq/ at {rev!r}: {proc.stderr.strip()}")
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tar:
        tar.extractall(dest, **safe)
    archive.unlink()
    return dest


def _context_class():
    from benchmarks.harness import Context
    from benchmarks.timing import measure

    class _GuardContext(Context):
        """A :class:`~benchmarks.harness.Context` that times probseq's calls only."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.times: dict[str, float] = {}
            self.cpu_time = False

        def _time(self, task: str, fn: Callable[[], object]) -> None:
            clock = time.process_time if self.cpu_time else time.perf_counter
            timing = measure([("probseq", fn)], self.config, self.monitor, clock=clock)[
                "probseq"]
            self.times[f"{self.case_name}: {task}"] = timing.median
            self.log(f"  {task}: {1e3 * timing.median:.3f} ms")

        def check_close(self, what: str, ours: Any, theirs: Any, **kwargs: Any) -> bool:
            return True

        def compare(self, task: str, ours: Callable[[], object], peers: list, **kwargs: Any
                    ) -> None:
            self._time(task, ours)

        def throughput(self, task: str, fn: Callable[[], object], work: float, unit: str
                       ) -> None:
            self._time(task, fn)

        def scaling(self, task: str, axis: str, fixed: str, sizes: list[int],
                    make: Callable[[int], Callable[[], object]], config: Any = None) -> None:
            self._time(f"{task}, {axis}={sizes[-1]}", make(sizes[-1]))

    return _GuardContext


def GuardContext(*args: Any, **kwargs: Any):  # noqa: N802 (a class made on first use)
    """A benchmark context that records probseq's median time per line (``.times``)."""
    return _context_class()(*args, **kwargs)


def _worker(argv: Sequence[str]) -> int:
    """Run cases with the ``probseq`` found under ``--root`` and print ``{line: seconds}``."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--only", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--repeats", type=int, required=True)
    p.add_argument("--cpu-time", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, args.root)  # before the installed (editable) probseq
    import torch

    import benchmarks.cases  # noqa: F401  (registers the cases)
    import probseq
    from benchmarks.cli import run, timing_config

    if Path(probseq.__file__).resolve().parent.parent != Path(args.root).resolve():
        raise SystemExit(f"imported {probseq.__file__}, not the probseq under {args.root}")
    torch.set_num_threads(args.threads)
    cfg = timing_config(args.quick, args.repeats, None)
    ctx = GuardContext(quick=args.quick, config=cfg, log=lambda s: print(s, file=sys.stderr))
    ctx.cpu_time = args.cpu_time
    run(args.only.split(","), ctx)
    print(json.dumps({"times": ctx.times, "errors": ctx.results.errors,
                      "skipped": ctx.results.skipped}))
    return 0


@dataclass
class GuardLine:
    """One timed line: seconds per call, one value per round, on each side."""

    line: str
    now: list[float] = field(default_factory=list)
    then: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Working tree time / revision time (> 1: slower now)."""
        if not self.now or not self.then:
            return math.nan
        return statistics.median(self.now) / statistics.median(self.then)


def compare_trees(rev: str, cases: Sequence[str], *, rounds: int = 3, quick: bool = False,
                  threads: int = 2, repeats: int = 3, cpu_time: bool = False,
                  log: Callable[[str], None] = print) -> tuple[list[GuardLine], list[str]]:
    """Time ``cases`` with the working tree's probseq and with ``rev``'s, alternating.

    Returns:
        The lines measured on either side, and the errors or skips the workers reported.
    """
    lines: dict[str, GuardLine] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="probseq-guard-") as tmp:
        sides = {"now": str(ROOT), "then": str(export_package(rev, Path(tmp)))}
        for r in range(rounds):
            order = ["now", "then"] if r % 2 == 0 else ["then", "now"]
            for side in order:
                log(f"round {r + 1}/{rounds}: {'working tree' if side == 'now' else rev}")
                cmd = [sys.executable, "-m", "benchmarks.guard", "--worker", "--root",
                       sides[side], "--only", ",".join(cases), "--threads", str(threads),
                       "--repeats", str(repeats)] + (["--quick"] if quick else []) + (
                    ["--cpu-time"] if cpu_time else [])
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"the {side} worker failed:\n{proc.stderr[-3000:]}")
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                for line, seconds in out["times"].items():
                    getattr(lines.setdefault(line, GuardLine(line)), side).append(seconds)
                if r == 0:
                    problems += [f"{side}: {m}" for m in out["errors"] + out["skipped"]]
    return list(lines.values()), problems


def format_table(lines: Sequence[GuardLine], rev: str, threshold: float) -> str:
    """A plain-text table, one row per line, with the verdict."""
    rows = [f"{'line':70s} {'now ms':>10s} {rev[:10] + ' ms':>14s} {'now/then':>9s}"]
    for g in lines:
        now = 1e3 * statistics.median(g.now) if g.now else math.nan
        then = 1e3 * statistics.median(g.then) if g.then else math.nan
        flag = ""
        if math.isfinite(g.ratio):
            flag = "SLOWER" if g.ratio > 1 + threshold else (
                "faster" if g.ratio < 1 / (1 + threshold) else "same")
        rows.append(f"{g.line[:70]:70s} {now:10.3f} {then:14.3f} {g.ratio:9.3f} {flag}")
    rows.append(f"(SLOWER: the working tree takes more than {1 + threshold:g}x {rev}'s time; "
                "medians over rounds of per-worker medians)")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.guard REV [--only ...]``; the worker mode is internal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return _worker(argv[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks --against REV",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("rev")
    p.add_argument("--only", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--threshold", type=float, default=0.10)
    p.add_argument("--cpu-time", action="store_true",
                   help="time with the process's CPU clock instead of the wall clock: with "
                   "--threads 1 this reads through other processes' load (not their cache "
                   "pressure), for a busy machine")
    args = p.parse_args(argv)
    import os

    import benchmarks.cases  # noqa: F401
    from benchmarks.harness import CASES

    cases = list(CASES) if args.only is None else [c.strip() for c in args.only.split(",")]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; available: {', '.join(CASES)}")
    lines, problems = compare_trees(args.rev, cases, rounds=args.rounds, quick=args.quick,
                                    threads=args.threads or os.cpu_count() or 1,
                                    repeats=args.repeats, cpu_time=args.cpu_time)
    print(format_table(lines, args.rev, args.threshold))
    for m in problems:
        print("note:", m)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
