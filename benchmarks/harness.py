"""The case registry and the context a case runs in."""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from benchmarks.report import Comparison, Results, ScalingCurve, Throughput
from benchmarks.timing import CpuMonitor, TimingConfig, measure

__all__ = ["Peer", "Case", "Context", "CASES", "case", "probseq_class", "peer_available",
           "Unavailable"]

T = TypeVar("T")

#: where each public class lives, for models written but not yet exported.
_FAMILY_MODULES = {
    "HiddenMarkovModel": "probseq.hmm",
    "LinearGaussianSSM": "probseq.lgssm",
    "MarkovChain": "probseq.markov",
    "AutoRegressive": "probseq.autoregressive",
    "RecurrentModel": "probseq.recurrent",
}


class Unavailable(Exception):
    """A case (or one of its peers) cannot run here; the message says why."""


def probseq_class(name: str) -> type:
    """The probseq class ``name`` (public export first, then its family module).

    Raises:
        Unavailable: it does not exist (yet).
    """
    import probseq

    cls = getattr(probseq, name, None)
    if cls is not None:
        return cls
    module = _FAMILY_MODULES.get(name)
    if module is not None:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except Exception as err:  # a family module being written may not import yet
            raise Unavailable(f"probseq.{name} is not available ({module}: {err})") from None
    if cls is None:
        raise Unavailable(f"probseq.{name} is not available (not written yet)")
    return cls


def peer_available(module: str) -> bool:
    """Whether a peer library can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


@dataclass
class Peer:
    """A peer implementation of the same work.

    Attributes:
        name: shown in the table.
        fn: does one unit of work.
        goal: the ratio (peer time / probseq time) to reach, or None.
        note: what the reader must know about this peer's timing.
        goal_ids: goals of :data:`benchmarks.rules.GOALS` that judge this line.
    """

    name: str
    fn: Callable[[], object]
    goal: float | None = None
    note: str = ""
    goal_ids: tuple[str, ...] = ()


@dataclass
class Case:
    """A registered benchmark."""

    name: str
    fn: Callable[[Context], None]
    needs: tuple[str, ...]
    description: str


CASES: dict[str, Case] = {}


def case(name: str, needs: tuple[str, ...] = (), description: str = ""):
    """Register a benchmark function ``fn(ctx)`` under ``name``.

    Args:
        name: the name for ``--only``.
        needs: the probseq classes it uses; the case is skipped when one is missing.
        description: one line for ``--list``.
    """

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        CASES[name] = Case(name, fn, needs, description or (fn.__doc__ or "").strip())
        return fn

    return register


@dataclass
class Context:
    """What a case needs: sizes, the timing settings, and where results go.

    Attributes:
        quick: small sizes for a smoke run.
        config: repeats and thresholds for :func:`benchmarks.timing.measure`.
        results: where comparisons, throughputs and curves are collected.
        log: prints a progress line.
        monitor: the CPU counters.
        case_name: the case being run.
    """

    quick: bool
    config: TimingConfig
    results: Results = field(default_factory=Results)
    log: Callable[[str], None] = print
    monitor: CpuMonitor = field(default_factory=CpuMonitor)
    case_name: str = ""

    def size(self, full: T, quick: T) -> T:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def rng(self, seed: int = 0) -> np.random.Generator:
        return np.random.default_rng(seed)

    def note(self, message: str) -> None:
        """Record (and print) a note for the report."""
        text = f"[{self.case_name}] {message}"
        self.results.notes.append(text)
        self.log(f"  note: {message}")

    def check_close(self, what: str, ours: Any, theirs: Any, *, rtol: float = 1e-6,
                    atol: float = 0.0) -> bool:
        """Check that probseq and a peer computed the same numbers; warn if not.

        This checks the benchmark itself: both sides must do the same work.
        """
        a = np.asarray(_to_numpy(ours), dtype=np.float64)
        b = np.asarray(_to_numpy(theirs), dtype=np.float64)
        if a.shape != b.shape:
            self.note(f"WARNING: {what}: shapes differ, probseq {a.shape} vs peer {b.shape}")
            return False
        if not np.allclose(a, b, rtol=rtol, atol=atol):
            err = float(np.max(np.abs(a - b)))
            self.note(f"WARNING: {what} disagree (max abs difference {err:.3g}, rtol={rtol:g},"
                      f" atol={atol:g}): the timed computations may not be the same")
            return False
        self.log(f"  check ok: {what} agree (rtol={rtol:g}, atol={atol:g})")
        return True

    def compare(self, task: str, ours: Callable[[], object], peers: list[Peer], *,
                work: float | None = None, unit: str = "steps") -> None:
        """Time probseq and its peers side by side and record one line per peer."""
        contenders = [("probseq", ours)] + [(p.name, p.fn) for p in peers]
        timings = measure(contenders, self.config, self.monitor)
        for p in peers:
            c = Comparison(self.case_name, task, p.name, timings["probseq"], timings[p.name],
                           goal=p.goal, work=work, unit=unit, note=p.note,
                           goal_ids=tuple(p.goal_ids))
            self.results.comparisons.append(c)
            rules = c.rules()
            goal = "" if not rules else (
                f" (goal >= {', '.join(f'{r.minimum:.3g}x' for _, r in rules)}: {c.status})")
            quiet = "" if c.quiet else " [not quiet]"
            self.log(f"  {task}: {p.name} / probseq = {_fmt(c.ratio)}{goal}{quiet}")

    def throughput(self, task: str, fn: Callable[[], object], work: float, unit: str) -> None:
        """Time probseq alone and record its rate (``work`` units per call)."""
        timing = measure([("probseq", fn)], self.config, self.monitor)["probseq"]
        t = Throughput(self.case_name, task, timing, work, unit)
        self.results.throughputs.append(t)
        quiet = "" if timing.quiet else " [not quiet]"
        self.log(f"  {task}: {t.rate:.4g} {unit}/s{quiet}")

    def scaling(self, task: str, axis: str, fixed: str, sizes: list[int],
                make: Callable[[int], Callable[[], object]],
                config: TimingConfig | None = None) -> None:
        """Time ``make(size)()`` at each size and record the curve."""
        timings = []
        for s in sizes:
            timings.append(measure([(f"{axis}={s}", make(s))], config or self.config,
                                   self.monitor)[f"{axis}={s}"])
        curve = ScalingCurve(self.case_name, task, axis, fixed, list(sizes), timings,
                             judged=not self.quick)
        self.results.curves.append(curve)
        self.log(f"  {task} against {axis}: slope {curve.slope:.2f}, upper half "
                 f"{curve.upper_slope:.2f} ({curve.status})")


def _fmt(r: float) -> str:
    return "nan" if not math.isfinite(r) else f"{r:.2f}x"


def _to_numpy(x: Any) -> Any:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x
