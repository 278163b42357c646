"""The main job (issues 26 and 28): ``python -m probseq compare`` end to end, against a budget."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Context, case
from benchmarks.report import Comparison
from benchmarks.timing import Timing, is_quiet, others_cpu

#: the budget of the goal ``main_job`` (seconds).
BUDGET_S = 60.0


@case("main_job", needs=(),
      description="the main job, python -m probseq compare (a fresh process), vs a 60 s budget")
def main_job(ctx: Context) -> None:
    """What ``make demo`` runs, in a fresh interpreter (imports included), report written to a
    temporary folder. The quick mode runs it too (it has no smaller size), unjudged."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "probseq", "compare", "--out", str(Path(tmp) / "report"),
               "--overwrite"]
        # One run, timed as it comes (no warm-up run: a user runs it once). The child's CPU is
        # its own work, so it is subtracted from the machine's before judging quietness.
        before, child_before, start = ctx.monitor.read(), _children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after, child = ctx.monitor.read(), _children_cpu() - child_before
    if proc.returncode != 0:
        raise RuntimeError(f"the main job failed:\n{proc.stderr[-2000:]}")
    others = others_cpu(before, after)
    others = None if others is None else max(0.0, others - child)
    quiet = is_quiet(others, wall, 0.05, ctx.monitor.resolution)
    ours = Timing("probseq", wanted=1, monitored=quiet is not None,
                  others=[] if others is None else [others])
    (ours.kept if quiet is not False else ours.dropped).append(wall)
    budget = Timing(f"{BUDGET_S:g} s budget", kept=[BUDGET_S], wanted=1)
    c = Comparison(ctx.case_name, "main job: python -m probseq compare", budget.name, ours,
                   budget, work=1.0, unit="runs",
                   note="budget / probseq time >= 1 means under the budget; a fresh process",
                   goal_ids=() if ctx.quick else ("main_job",))
    ctx.results.comparisons.append(c)
    ctx.log(f"  {c.task}: {ours.median:.1f} s ({BUDGET_S:g} s budget: {c.status})")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
