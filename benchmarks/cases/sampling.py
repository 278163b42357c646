"""Sampling throughput (absolute: values drawn per second; no peer)."""

from __future__ import annotations

from benchmarks.cases.autoregressive import COEF, INTERCEPT, NOISE_VAR
from benchmarks.cases.common import random_hmm
from benchmarks.cases.lgssm import probseq_local_level
from benchmarks.harness import Context, Unavailable, case, probseq_class


def _try(ctx: Context, what: str, fn) -> None:
    """Run one sampler's measurement; a missing class only skips that line."""
    try:
        fn()
    except Unavailable as err:
        ctx.note(f"{what}: {err}")


@case("sampling", description="sample() throughput of Markov, HMM, AR, LGSSM, RecurrentModel")
def sampling(ctx: Context) -> None:
    """Values sampled per second by each model's ``sample``."""
    n, t = ctx.size((200, 1000), (20, 50))

    def markov() -> None:
        cls = probseq_class("MarkovChain")
        initial, transition, _ = random_hmm(32, 2, seed=7)
        model = cls.from_params(initial=initial, transition=transition)
        ctx.throughput(f"MarkovChain(V=32).sample({n}, {t})",
                       lambda: model.sample(n, t, seed=0), n * t, "values")

    def hmm() -> None:
        cls = probseq_class("HiddenMarkovModel")
        initial, transition, emission = random_hmm(16, 32, seed=0)
        model = cls.from_params(initial=initial, transition=transition, emission=emission)
        ctx.throughput(f"HiddenMarkovModel(K=16, V=32).sample({n}, {t})",
                       lambda: model.sample(n, t, seed=0), n * t, "values")

    def ar() -> None:
        cls = probseq_class("AutoRegressive")
        model = cls.from_params(intercept=INTERCEPT, coef=COEF, noise_var=NOISE_VAR)
        ctx.throughput(f"AutoRegressive(5).sample({n}, {t})",
                       lambda: model.sample(n, t, seed=0), n * t, "values")

    def lgssm() -> None:
        model = probseq_local_level()
        ctx.throughput(f"LinearGaussianSSM local level .sample({n}, {t})",
                       lambda: model.sample(n, t, seed=0), n * t, "values")

    def recurrent() -> None:
        from benchmarks.cases.recurrent import _sizes, briefly_fitted

        sizes = _sizes(ctx)
        model = briefly_fitted("lstm", sizes)
        m, length = sizes["batch_size"], sizes["length"]
        ctx.throughput(f"RecurrentModel(lstm, hidden {sizes['hidden']}).sample({m}, {length})",
                       lambda: model.sample(m, length, seed=0), m * length, "values")

    for what, fn in (("MarkovChain", markov), ("HiddenMarkovModel", hmm),
                     ("AutoRegressive", ar), ("LinearGaussianSSM", lgssm),
                     ("RecurrentModel", recurrent)):
        _try(ctx, what, fn)
