"""First-order Markov chain fit against a bare ``np.bincount`` of transitions."""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Context, Peer, case, probseq_class


def random_walk_symbols(t: int, v: int, seed: int = 0) -> np.ndarray:
    """``[T]`` int64 symbols: a lazy random walk on a ring of V symbols."""
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.integers(-3, 4, size=t)) % v).astype(np.int64)


def bincount_transitions(x: np.ndarray, v: int) -> np.ndarray:
    """The peer: first-order transition counts ``[V, V]``."""
    return np.bincount(x[:-1] * v + x[1:], minlength=v * v).reshape(v, v)


@case("markov_fit", needs=("MarkovChain",),
      description="order-1 Markov fit on 10^7 symbols, V=256, vs np.bincount")
def markov_fit(ctx: Context) -> None:
    """Counting (and normalising) transitions against the bare count."""
    cls = probseq_class("MarkovChain")
    v = 256
    t = ctx.size(10_000_000, 100_000)
    x = random_walk_symbols(t, v)
    fitted = cls(order=1, num_symbols=v, alpha=0.0).fit(x)
    counts = bincount_transitions(x, v).astype(np.float64)
    rows = counts.sum(1, keepdims=True)
    expected = np.where(rows > 0, counts / np.maximum(rows, 1), 1.0 / v)
    ctx.check_close("transition matrix vs normalised bincount", fitted.params["transition"],
                    expected, rtol=1e-12, atol=1e-15)
    ctx.compare(f"Markov order-1 fit, {t} symbols, V={v}",
                lambda: cls(order=1, num_symbols=v, alpha=0.0).fit(x),
                [Peer("np.bincount(prev*V+next)", lambda: bincount_transitions(x, v),
                      goal_ids=("markov_counts", "markov_counts_turn1", "markov_counts_r3"),
                      note="the peer only counts; probseq also validates and builds its tables")],
                work=t, unit="symbols")
