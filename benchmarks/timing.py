"""Side-by-side timing with a quiet-machine filter.

Every contender of a comparison runs in this process, in interleaved repeats (A, B, A, B,
..., with the order reversed every other round). Around each repeat the monitor reads the
machine's busy CPU time from ``/proc/stat`` (all cores) and this process's own CPU time
from ``getrusage``; the difference is CPU time that *other* processes used while the repeat
ran. A repeat during which others used more than ``others_fraction`` of one core (plus the
clock-tick resolution of ``/proc/stat``) is dropped and retried, up to ``max_rounds`` rounds.
The estimate is the median of the kept repeats; when too few repeats were kept, the median
of all of them is used and the measurement is flagged as not quiet.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CpuReading",
    "CpuMonitor",
    "TimingConfig",
    "Timing",
    "others_cpu",
    "is_quiet",
    "measure",
]


@dataclass(frozen=True)
class CpuReading:
    """CPU time counters at one instant, in seconds.

    Attributes:
        busy: non-idle time summed over all cores (``None`` when ``/proc/stat`` is unreadable).
        own: this process's user plus system time (all its threads).
    """

    busy: float | None
    own: float


def _read_proc_stat(path: str = "/proc/stat") -> float | None:
    """Busy seconds over all cores: user, nice, system, irq, softirq and steal ticks."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (ticks + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMonitor:
    """Reads the CPU counters that decide whether a repeat ran on a quiet machine.

    Args:
        proc_stat: the file to read machine-wide counters from.
    """

    def __init__(self, proc_stat: str = "/proc/stat"):
        self.proc_stat = proc_stat
        self.num_cpus = os.cpu_count() or 1
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK")
        self.available = _read_proc_stat(proc_stat) is not None

    def read(self) -> CpuReading:
        """The counters now."""
        return CpuReading(_read_proc_stat(self.proc_stat), _own_cpu())

    @property
    def resolution(self) -> float:
        """Seconds of slack for ``/proc/stat``'s granularity: one clock tick per core."""
        return self.tick * self.num_cpus


def others_cpu(before: CpuReading, after: CpuReading) -> float | None:
    """CPU seconds that other processes used between two readings (None: unknown)."""
    if before.busy is None or after.busy is None:
        return None
    return max(0.0, (after.busy - before.busy) - (after.own - before.own))


def is_quiet(others: float | None, wall: float, fraction: float, slack: float) -> bool | None:
    """Whether a repeat of ``wall`` seconds ran undisturbed.

    Args:
        others: CPU seconds other processes used during the repeat (None: unknown).
        wall: the repeat's wall-clock seconds.
        fraction: the tolerated share of one core (0.05 = 5%).
        slack: extra seconds tolerated for counter resolution.

    Returns:
        True (quiet), False (disturbed) or None (no counters on this system).
    """
    if others is None:
        return None
    return others <= fraction * wall + slack


@dataclass
class TimingConfig:
    """How hard to try.

    Attributes:
        repeats: quiet repeats wanted per contender.
        max_rounds: the most interleaved rounds (kept plus dropped repeats).
        min_time: a repeat runs the callable enough times to last at least this long (s).
        budget: stop retrying once a comparison has run this long (s), if every contender
            has at least one repeat.
        others_fraction: tolerated CPU use by other processes, as a share of one core.
    """

    repeats: int = 5
    max_rounds: int = 15
    min_time: float = 0.2
    budget: float = 15.0
    others_fraction: float = 0.05


@dataclass
class Timing:
    """The repeats of one contender.

    Attributes:
        name: the contender.
        number: calls per repeat (times are per call).
        kept: per-call seconds of the quiet repeats.
        dropped: per-call seconds of the repeats dropped because others used the CPU.
        others: CPU seconds used by others in each repeat, in order of running.
        monitored: False when the machine's counters could not be read.
        wanted: how many quiet repeats make the measurement quiet.
    """

    name: str
    number: int = 1
    kept: list[float] = field(default_factory=list)
    dropped: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    monitored: bool = True
    wanted: int = 3

    @property
    def quiet(self) -> bool:
        """Enough quiet repeats (``wanted``: 3, or fewer when fewer were asked) were kept."""
        return self.monitored and len(self.kept) >= self.wanted

    @property
    def median(self) -> float:
        """Median seconds per call: of the kept repeats, or of all when none was kept."""
        pool = self.kept or self.dropped
        return statistics.median(pool) if pool else math.nan

    @property
    def best(self) -> float:
        """The fastest repeat (kept or dropped): a bound that interference can only raise."""
        pool = self.kept + self.dropped
        return min(pool) if pool else math.nan

    def summary(self) -> dict:
        """JSON-able description."""
        return {
            "name": self.name,
            "median_s": self.median,
            "best_s": self.best,
            "number": self.number,
            "kept": len(self.kept),
            "dropped": len(self.dropped),
            "quiet": self.quiet,
            "kept_s": self.kept,
            "dropped_s": self.dropped,
        }


def _run_repeat(fn: Callable[[], object], number: int, monitor: CpuMonitor,
                clock: Callable[[], float]) -> tuple[float, float | None]:
    before = monitor.read()
    start = clock()
    for _ in range(number):
        fn()
    wall = clock() - start
    after = monitor.read()
    return wall, others_cpu(before, after)


def measure(
    contenders: Sequence[tuple[str, Callable[[], object]]],
    config: TimingConfig,
    monitor: CpuMonitor | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time several callables side by side, interleaved, dropping disturbed repeats.

    Each callable is first called once (warm-up, which also sets the number of calls per
    repeat so that a repeat lasts ``config.min_time``). Then rounds run every contender that
    still lacks quiet repeats, alternating the order, until each has ``config.repeats`` quiet
    repeats, or ``config.max_rounds`` rounds ran, or the budget is spent (once every contender
    has two repeats, kept or dropped; at twice the budget in any case).

    Args:
        contenders: ``(name, callable)`` pairs; the callable does one unit of work.
        config: repeats, retries and thresholds.
        monitor: the CPU counters (a fresh :class:`CpuMonitor` by default).
        clock: the wall clock.

    Returns:
        A :class:`Timing` per contender name.
    """
    monitor = monitor or CpuMonitor()
    wanted = min(3, config.repeats)
    timings = {name: Timing(name, wanted=wanted, monitored=monitor.available)
               for name, _ in contenders}
    for name, fn in contenders:
        start = clock()
        fn()
        first = max(clock() - start, 1e-9)
        timings[name].number = max(1, min(10_000, math.ceil(config.min_time / first)))
    started = clock()
    for round_index in range(config.max_rounds):
        order = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
        pending = [(n, f) for n, f in order if len(timings[n].kept) < config.repeats]
        if not pending:
            break
        for name, fn in pending:
            t = timings[name]
            wall, others = _run_repeat(fn, t.number, monitor, clock)
            per_call = wall / t.number
            quiet = is_quiet(others, wall, config.others_fraction, monitor.resolution)
            t.others.append(math.nan if others is None else others)
            if quiet is False:
                t.dropped.append(per_call)
            else:
                t.kept.append(per_call)
        spent = clock() - started
        enough = all(len(t.kept) + len(t.dropped) >= min(2, wanted) for t in timings.values())
        if (spent > config.budget and enough) or spent > 2 * config.budget:
            break
    return timings
