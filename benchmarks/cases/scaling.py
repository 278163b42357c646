"""Scaling curves: probseq's HMM and LGSSM log_prob time against T and against N."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from benchmarks.cases.common import local_level_series, random_hmm, sample_hmm_symbols
from benchmarks.cases.lgssm import probseq_local_level
from benchmarks.harness import Context, Unavailable, case, probseq_class


def _grid(ctx: Context) -> tuple[list[int], int, list[int], int]:
    """Lengths T (at fixed N) and batch sizes N (at fixed T)."""
    return ctx.size(([500, 1000, 2000, 4000, 8000], 100, [50, 100, 200, 400, 800], 1000),
                    ([32, 64, 128, 256], 4, [4, 8, 16, 32], 64))


def _curves(ctx: Context, name: str, data, score: Callable) -> None:
    """Time ``score(batch)`` on ``data[:N, :T]`` along both axes."""
    from probseq import Sequences

    lengths, n_fixed, counts, t_fixed = _grid(ctx)

    def at(n: int, t: int) -> Callable[[], object]:
        seqs = Sequences.from_padded(data[:n, :t])
        return lambda: score(seqs)

    config = replace(ctx.config, repeats=min(3, ctx.config.repeats),
                     budget=ctx.config.budget / 4)
    ctx.scaling(f"{name} log_prob", "T", f"N={n_fixed}", lengths,
                lambda t: at(n_fixed, t), config=config)
    ctx.scaling(f"{name} log_prob", "N", f"T={t_fixed}", counts,
                lambda n: at(n, t_fixed), config=config)


@case("scaling", description="HMM and LGSSM log_prob time against T and N (log-log slope)")
def scaling(ctx: Context) -> None:
    """Both should be linear in T and in N: a log-log slope near 1."""
    lengths, n_fixed, counts, t_fixed = _grid(ctx)
    n_max, t_max = max(counts + [n_fixed]), max(lengths + [t_fixed])
    try:
        cls = probseq_class("HiddenMarkovModel")
        params = random_hmm(16, 32, seed=0)
        initial, transition, emission = params
        model = cls.from_params(initial=initial, transition=transition, emission=emission)
        x = sample_hmm_symbols(n_max, t_max, *params, seed=1)
        _curves(ctx, "HMM K=16 V=32", x, model.log_prob)
    except Unavailable as err:
        ctx.note(f"HMM curves skipped: {err}")
    try:
        model = probseq_local_level()
        _curves(ctx, "LGSSM local level", local_level_series(n_max, t_max), model.log_prob)
    except Unavailable as err:
        ctx.note(f"LGSSM curves skipped: {err}")
