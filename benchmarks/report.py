"""Results of a benchmark run and their tables (terminal text, markdown, JSON)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.rules import GOALS, SCALING_RULE, Goal, RatioRule, loglog_slope
from benchmarks.timing import Timing

__all__ = [
    "Comparison",
    "Throughput",
    "ScalingCurve",
    "Results",
    "format_seconds",
    "format_rate",
    "loglog_slope",
    "text_table",
    "markdown_report",
    "write_results",
    "goal_rows",
]

#: the range of the scaling rule (kept for readers of the old name).
LINEAR_SLOPE = (SCALING_RULE.low, SCALING_RULE.high)


def format_seconds(s: float) -> str:
    """``0.0512`` -> ``"51.2 ms"``."""
    if not math.isfinite(s):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def format_rate(rate: float, unit: str) -> str:
    """``3.95e6, "steps"`` -> ``"3.95 M steps/s"``."""
    if not math.isfinite(rate):
        return "-"
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g} {prefix} {unit}/s"
    return f"{rate:.3g} {unit}/s"


def _ratio(num: float, den: float) -> float:
    if not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
        return math.nan
    return num / den


@dataclass
class Comparison:
    """probseq against one peer on the same work.

    Attributes:
        case: the benchmark case.
        task: what both sides compute.
        peer: the peer's name.
        ours: probseq's timing.
        theirs: the peer's timing.
        goal: the ratio to reach (peer time / probseq time), or None (for information).
        work: units of work per call (steps, tokens...), for throughput.
        unit: the unit of ``work``.
        note: anything a reader must know (what is excluded from the timing...).
        goal_ids: the goals of :data:`benchmarks.rules.GOALS` this line is judged by.
    """

    case: str
    task: str
    peer: str
    ours: Timing
    theirs: Timing
    goal: float | None = None
    work: float | None = None
    unit: str = "steps"
    note: str = ""
    goal_ids: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        """Peer median / probseq median: > 1 means probseq is faster."""
        return _ratio(self.theirs.median, self.ours.median)

    @property
    def ratio_best(self) -> float:
        """The same ratio on the fastest repeats (less sensitive to a busy machine)."""
        return _ratio(self.theirs.best, self.ours.best)

    def rules(self) -> list[tuple[str, RatioRule]]:
        """``(name, rule)`` of every criterion this line is judged by: its registered goals
        that no other goal replaces, else its own ``goal``."""
        replaced = {g.replaces for g in GOALS.values() if g.replaces}
        current = [(i, GOALS[i].rule) for i in self.goal_ids
                   if i in GOALS and i not in replaced]
        if current:
            return current
        return [] if self.goal is None else [("goal", RatioRule(self.goal))]

    @property
    def status(self) -> str:
        """``PASS`` when every current rule passes, ``FAIL``, or ``info`` (no rule)."""
        rules = self.rules()
        if not rules:
            return "info"
        return "PASS" if all(r.judge(self.ratio) == "PASS" for _, r in rules) else "FAIL"

    @property
    def quiet(self) -> bool:
        return self.ours.quiet and self.theirs.quiet

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case, "task": self.task, "peer": self.peer, "goal": self.goal,
            "goal_ids": list(self.goal_ids),
            "rules": [f"{n}: {r.describe()}" for n, r in self.rules()],
            "ratio": self.ratio, "ratio_best": self.ratio_best, "status": self.status,
            "quiet": self.quiet, "work": self.work, "unit": self.unit, "note": self.note,
            "probseq": self.ours.summary(), "peer_timing": self.theirs.summary(),
        }


@dataclass
class Throughput:
    """An absolute rate, with no peer (sampling)."""

    case: str
    task: str
    timing: Timing
    work: float
    unit: str

    @property
    def rate(self) -> float:
        return _ratio(self.work, self.timing.median)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "task": self.task, "rate": self.rate, "unit": self.unit,
                "work": self.work, "quiet": self.timing.quiet, "timing": self.timing.summary()}


@dataclass
class ScalingCurve:
    """Time against one size (T or N) with the other fixed."""

    case: str
    task: str
    axis: str
    fixed: str
    sizes: list[int]
    timings: list[Timing]
    judged: bool = True

    @property
    def seconds(self) -> list[float]:
        return [t.median for t in self.timings]

    @property
    def slope(self) -> float:
        """The log-log slope over all sizes."""
        return loglog_slope(self.sizes, self.seconds)

    @property
    def upper_slope(self) -> float:
        """The slope over the larger half of the sizes (at least three)."""
        return SCALING_RULE.upper_half(self.sizes, self.seconds)

    @property
    def status(self) -> str:
        """:data:`benchmarks.rules.SCALING_RULE`'s verdict, ``info`` for unjudged (quick)
        curves."""
        if not self.judged:
            return "info"
        return SCALING_RULE.judge(self.sizes, self.seconds)

    @property
    def quiet(self) -> bool:
        return all(t.quiet for t in self.timings)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "task": self.task, "axis": self.axis, "fixed": self.fixed,
                "sizes": self.sizes, "seconds": self.seconds, "slope": self.slope,
                "upper_slope": self.upper_slope, "status": self.status, "quiet": self.quiet,
                "timings": [t.summary() for t in self.timings]}


@dataclass
class Results:
    """Everything one run produced."""

    environment: dict[str, Any] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    throughputs: list[Throughput] = field(default_factory=list)
    curves: list[ScalingCurve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def all_timings(self) -> list[Timing]:
        out: list[Timing] = []
        for c in self.comparisons:
            out += [c.ours, c.theirs]
        out += [t.timing for t in self.throughputs]
        for curve in self.curves:
            out += curve.timings
        return out

    def quietness(self) -> dict[str, Any]:
        """Kept and dropped repeats over the whole run."""
        timings = self.all_timings()
        kept = sum(len(t.kept) for t in timings)
        dropped = sum(len(t.dropped) for t in timings)
        return {
            "kept": kept,
            "dropped": dropped,
            "measurements": len(timings),
            "quiet_measurements": sum(t.quiet for t in timings),
            "machine_quiet": bool(timings) and all(t.quiet for t in timings),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "quietness": self.quietness(),
            "comparisons": [c.to_dict() for c in self.comparisons],
            "throughputs": [t.to_dict() for t in self.throughputs],
            "scaling": [c.to_dict() for c in self.curves],
            "notes": self.notes,
            "skipped": self.skipped,
            "errors": self.errors,
        }


def _repeats(t: Timing) -> str:
    return f"{len(t.kept)}/{len(t.kept) + len(t.dropped)}"


def _goal(c: Comparison) -> str:
    rules = c.rules()
    if not rules:
        return "-"
    return "; ".join(f">= {r.minimum:.3g}x" for _, r in rules)


def _fmt_ratio(r: float) -> str:
    return "-" if not math.isfinite(r) else f"{r:.2f}x"


def _comparison_rows(results: Results) -> list[list[str]]:
    rows = []
    for c in results.comparisons:
        rate = (format_rate(_ratio(c.work, c.ours.median), c.unit) if c.work else "")
        rows.append([
            c.task, c.peer, format_seconds(c.ours.median), format_seconds(c.theirs.median),
            _fmt_ratio(c.ratio), _fmt_ratio(c.ratio_best), _goal(c), c.status, rate,
            f"{_repeats(c.ours)}, {_repeats(c.theirs)}", "yes" if c.quiet else "no",
        ])
    return rows


_COMPARISON_HEADER = ["task", "peer", "probseq", "peer time", "ratio", "ratio (best)", "goal",
                      "status", "probseq rate", "kept repeats", "quiet"]


def _throughput_rows(results: Results) -> list[list[str]]:
    return [[t.task, format_seconds(t.timing.median), format_rate(t.rate, t.unit),
             _repeats(t.timing), "yes" if t.timing.quiet else "no"] for t in results.throughputs]


_THROUGHPUT_HEADER = ["task", "time", "rate", "kept repeats", "quiet"]


def _curve_rows(results: Results) -> list[list[str]]:
    lo, hi = LINEAR_SLOPE
    return [[c.task, f"{c.axis} ({c.fixed})", ", ".join(str(s) for s in c.sizes),
             ", ".join(format_seconds(s) for s in c.seconds), f"{c.slope:.2f}",
             f"{c.upper_slope:.2f}", f"both {lo:g}..{hi:g}", c.status,
             "yes" if c.quiet else "no"]
            for c in results.curves]


def goal_rows(results: Results) -> list[list[str]]:
    """One row per registered goal: its rule, the measured ratio(s) and the verdict (``not
    measured`` when no line of this run carries it; ``replaced by ...`` for old rules)."""
    replaced_by = {g.replaces: g.id for g in GOALS.values() if g.replaces}
    rows = []
    for g in GOALS.values():
        lines = [c for c in results.comparisons if g.id in c.goal_ids]
        ratios = ", ".join(_fmt_ratio(c.ratio) for c in lines) or "-"
        if not lines:
            verdict = "not measured"
        else:
            verdict = "PASS" if all(g.rule.judge(c.ratio) == "PASS" for c in lines) else "FAIL"
        if g.id in replaced_by:
            verdict += f" (replaced by {replaced_by[g.id]})"
        rows.append([g.id, g.what, g.rule.describe(), ratios, verdict, _reason(g)])
    return rows


def _reason(g: Goal) -> str:
    return g.reason + (f"; replaces {g.replaces}" if g.replaces else "")


_GOAL_HEADER = ["goal", "work", "rule", "ratio", "status", "why"]


_CURVE_HEADER = ["task", "against", "sizes", "times", "slope", "slope (upper half)", "goal",
                 "status", "quiet"]


def _text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows])


def _quiet_sentence(results: Results) -> str:
    q = results.quietness()
    verdict = "quiet" if q["machine_quiet"] else "NOT quiet"
    return (f"Machine {verdict}: {q['dropped']} of {q['kept'] + q['dropped']} repeats were "
            f"dropped because other processes used the CPU; {q['quiet_measurements']} of "
            f"{q['measurements']} measurements had enough quiet repeats.")


def text_table(results: Results) -> str:
    """The report for the terminal."""
    parts = [_text(["goal", "ratio", "status", "rule"],
                   [[r[0], r[3], r[4], r[2]] for r in goal_rows(results)])]
    if results.comparisons:
        parts.append(_text(_COMPARISON_HEADER, _comparison_rows(results)))
    if results.throughputs:
        parts.append(_text(_THROUGHPUT_HEADER, _throughput_rows(results)))
    if results.curves:
        parts.append(_text(_CURVE_HEADER, _curve_rows(results)))
    parts.append(_quiet_sentence(results))
    parts += ["\n".join([f"skipped: {n}" for n in results.skipped]
                        + [f"ERROR: {n}" for n in results.errors]
                        + [f"note: {n}" for n in results.notes])]
    return "\n\n".join(p for p in parts if p)


def markdown_report(results: Results) -> str:
    """The report as a markdown document."""
    env = results.environment
    out = ["# probseq benchmarks", ""]
    out.append(
        "Ratios are peer time / probseq time on the same work, measured in one process with "
        "interleaved repeats (> 1 means probseq is faster). `ratio` uses medians of the kept "
        "repeats, `ratio (best)` the fastest repeats. A repeat is dropped when other "
        "processes used more than "
        f"{100 * env.get('others_fraction', 0.05):g}% of one core while it ran."
    )
    out += ["", _quiet_sentence(results), ""]
    if env:
        out.append("Environment: " + "; ".join(f"{k} = {v}" for k, v in env.items()) + ".")
        out.append("")
    out += ["## Goals", "", "Each goal's rule is printed from the object in "
            "`benchmarks/rules.py` that judges it; a replaced rule stays listed.", "",
            _markdown(_GOAL_HEADER, goal_rows(results)), ""]
    if results.comparisons:
        out += ["## Against peers", "", _markdown(_COMPARISON_HEADER, _comparison_rows(results))]
        noted = [c for c in results.comparisons if c.note]
        if noted:
            out += [""] + [f"- {c.task} vs {c.peer}: {c.note}" for c in noted]
        out.append("")
    if results.throughputs:
        out += ["## Sampling throughput", "",
                _markdown(_THROUGHPUT_HEADER, _throughput_rows(results)), ""]
    if results.curves:
        out += ["## Scaling", "", f"Rule: {SCALING_RULE.describe()} (least-squares slopes "
                "of log time against log size; 1 = linear). Plot: `scaling.png`.", "",
                _markdown(_CURVE_HEADER, _curve_rows(results)), ""]
    if results.skipped or results.errors:
        out += ["## Not run", ""] + [f"- skipped: {n}" for n in results.skipped]
        out += [f"- ERROR: {n}" for n in results.errors] + [""]
    if results.notes:
        out += ["## Notes (correctness checks of the benchmark, skipped peers)", ""]
        out += [f"- {n}" for n in results.notes] + [""]
    return "\n".join(out)


def write_results(results: Results, directory: Path) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "results.md", directory / "results.json"
    md.write_text(markdown_report(results))
    js.write_text(json.dumps(_clean(results.to_dict()), indent=1) + "\n")
    return md, js


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)
