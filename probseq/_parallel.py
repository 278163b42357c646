"""Threads for the compiled (numba) loops: a pool of plain threads, each running a serial
``nogil`` loop over its share of the rows.

numba's own parallel loops (``prange``) were measured erratic on a small machine: on two
cores its workqueue layer took 5-10 ms for an HMM batch that two plain threads finish in
4.9 ms every time, and its OpenMP layer leaves spinning threads that slowed later unrelated
calls tenfold. A loop given to these threads must not write, every step, to memory next to
another thread's (cache lines shared between cores cost more than the arithmetic): keep
per-step work buffers local to the call.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["num_threads", "run_parts", "balanced_cuts"]

#: parts per thread that callers cut the work into, for :func:`run_parts` to balance.
PARTS_PER_THREAD = 4

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()
#: how long the calling thread polls for the other parts before it blocks.
_POLL_S = 2e-3


def num_threads() -> int:
    """The threads the compiled loops use: numba's configured count (``NUMBA_NUM_THREADS``,
    by default the CPUs this process may run on), read without importing numba."""
    value = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if value:
        return max(1, int(value))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def _executor(workers: int) -> ThreadPoolExecutor:
    """The module's pool (made again in a forked child, whose copy has no threads)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid() or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probseq")
            _POOL_PID = os.getpid()
        return _POOL


def run_parts(fn: Callable[[int, int], None], bounds: np.ndarray,
              threads: int | None = None) -> None:
    """``fn(bounds[i], bounds[i + 1])`` for every part ``i``, by up to ``threads`` threads
    (default :func:`num_threads`; the calling thread is one of them) that claim the parts
    in order as they become free: a thread that starts late (a sleeping core wakes in
    tenths of a millisecond) or runs slowly takes fewer parts. ``fn`` must release the GIL
    to gain anything, and the parts must write to disjoint outputs (then the result does
    not depend on which thread ran which part)."""
    n = bounds.shape[0] - 1
    threads = min(n, num_threads() if threads is None else threads)
    claim = itertools.count()  # next() on it is atomic under the GIL

    def work() -> None:
        while (i := next(claim)) < n:
            fn(int(bounds[i]), int(bounds[i + 1]))

    if threads <= 1:
        work()
        return
    futures = [_executor(threads - 1).submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        # The other threads end about when this one does: poll for a moment (yielding the
        # GIL, keeping this core awake) before blocking, so that a sleeping core's wake-up
        # is not paid at the end of every call.
        until = time.perf_counter() + _POLL_S
        for future in futures:
            while not future.done() and time.perf_counter() < until:
                time.sleep(0)
            future.result()


def balanced_cuts(costs: np.ndarray, parts: int) -> np.ndarray:
    """``[C + 1]`` cuts of a sequence of items into ``C <= parts`` contiguous runs of about
    equal total cost (every run non-empty)."""
    n = costs.shape[0]
    parts = max(1, min(parts, n))
    ends = np.cumsum(costs, dtype=np.float64)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, parts) / parts, side="left") + 1
    return np.unique(np.concatenate([[0], np.minimum(cuts, n), [n]])).astype(np.int64)
