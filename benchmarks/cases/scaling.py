"""Scaling curves: probseq's HMM and LGSSM log_prob time against T and against N."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from benchmarks.cases.common import local_level_series, random_hmm, sample_hmm_symbols
from benchmarks.cases.lgssm import probseq_local_level
from benchmarks.harness import Context, Unavailable, case, probseq_class

Grid = tuple[list[int], int, list[int], int]

#: lengths T (at fixed N) and batch sizes N (at fixed T), large enough that per-step overhead
#: does not hide the growth (below N=400 at T=500 the HMM time is mostly per-step overhead);
#: the quick grid is for smoke runs.
HMM_GRID: Grid = ([1000, 2000, 4000, 8000, 16000], 50, [200, 400, 800, 1600, 3200], 500)
LGSSM_GRID: Grid = ([2000, 4000, 8000, 16000, 32000], 100, [200, 400, 800, 1600, 3200], 1000)
QUICK_GRID: Grid = ([32, 64, 128, 256], 4, [4, 8, 16, 32], 64)


def _curves(ctx: Context, name: str, grid: Grid,
            make_data: Callable[[int, int], np.ndarray], score: Callable) -> None:
    """Time ``score(batch)`` along both axes; ``make_data(N, T)`` gives ``[N, T]`` data."""
    from probseq import Sequences

    lengths, n_fixed, counts, t_fixed = ctx.size(grid, QUICK_GRID)
    along_t = make_data(n_fixed, max(lengths))
    along_n = make_data(max(counts), t_fixed)

    def at(n: int, t: int) -> Callable[[], object]:
        data = along_t if n == n_fixed and t in lengths else along_n
        seqs = Sequences.from_padded(data[:n, :t])
        return lambda: score(seqs)

    # Every point takes the run's full number of repeats: a slope over three points is
    # sensitive to one noisy median (round two saw 19 ms at T=4000 between 14 and 45 ms).
    config = replace(ctx.config, budget=ctx.config.budget / 2)
    ctx.scaling(f"{name} log_prob", "T", f"N={n_fixed}", lengths,
                lambda t: at(n_fixed, t), config=config)
    ctx.scaling(f"{name} log_prob", "N", f"T={t_fixed}", counts,
                lambda n: at(n, t_fixed), config=config)


@case("scaling", description="HMM and LGSSM log_prob time against T and N (log-log slope)")
def scaling(ctx: Context) -> None:
    """Both should be linear in T and in N: a log-log slope near 1."""
    try:
        cls = probseq_class("HiddenMarkovModel")
        params = random_hmm(16, 32, seed=0)
        initial, transition, emission = params
        model = cls.from_params(initial=initial, transition=transition, emission=emission)
        _curves(ctx, "HMM K=16 V=32", HMM_GRID,
                lambda n, t: sample_hmm_symbols(n, t, *params, seed=1), model.log_prob)
    except Unavailable as err:
        ctx.note(f"HMM curves skipped: {err}")
    try:
        model = probseq_local_level()
        _curves(ctx, "LGSSM local level", LGSSM_GRID, local_level_series, model.log_prob)
    except Unavailable as err:
        ctx.note(f"LGSSM curves skipped: {err}")
