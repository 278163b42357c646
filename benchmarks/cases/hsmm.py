"""The hidden semi-Markov model against hmmlearn on its expanded-state HMM.

An HSMM with K states and durations up to D is an HMM over K*D countdown states ``(k, r)``
(r = the steps the segment has left). hmmlearn has no semi-Markov model, so its peer is
``CategoricalHMM.score`` on that expanded HMM, built by hand: the same likelihood, computed
by a dense forward pass of O((K D)^2) per step where probseq's sparse recursion costs
O(K D + K^2).
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Context, Peer, Unavailable, case, peer_available, probseq_class

K, D, V = 4, 50, 8


def random_hsmm(k: int, dmax: int, v: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters: ``initial [K]``, ``transition [K, K]`` (zero diagonal), ``duration [K, D]``
    (a discretised bump per state, mean durations spread over 5..D/2), ``emission [K, V]``."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.ones(k - 1), size=k)
    full = np.zeros((k, k))
    full[~np.eye(k, dtype=bool)] = transition.reshape(-1)
    d = np.arange(1, dmax + 1)
    centres = np.linspace(5, dmax / 2, k)
    duration = np.exp(-0.5 * ((d[None] - centres[:, None]) / (0.3 * centres[:, None])) ** 2)
    duration /= duration.sum(1, keepdims=True)
    return {"initial": rng.dirichlet(np.ones(k)), "transition": full, "duration": duration,
            "emission": rng.dirichlet(np.full(v, 0.5), size=k)}


def expanded_hmm(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(initial [K D], transition [K D, K D], emission [K D, V])`` of the countdown chain,
    state ``k * D + r - 1``."""
    pmf = p["duration"]
    k, dmax = pmf.shape
    s = k * dmax
    initial = (p["initial"][:, None] * pmf).reshape(s)
    trans = np.zeros((s, s))
    for i in range(k):
        for r in range(1, dmax):
            trans[i * dmax + r, i * dmax + r - 1] = 1.0
        trans[i * dmax] = (p["transition"][i][:, None] * pmf).reshape(s)
    return initial, trans, np.repeat(p["emission"], dmax, axis=0)


@case("hsmm_log_prob", needs=("HiddenSemiMarkovModel",),
      description="HSMM log_prob, K=4 D=50, vs hmmlearn on the expanded-state HMM")
def hsmm_log_prob(ctx: Context) -> None:
    """Batched HSMM log_prob against hmmlearn's score of the equivalent 200-state HMM."""
    if not peer_available("hmmlearn"):
        raise Unavailable("hmmlearn is not installed")
    from hmmlearn import hmm

    from probseq import Sequences

    n, t = ctx.size((20, 1000), (4, 100))
    params = random_hsmm(K, D, V, seed=0)
    model = probseq_class("HiddenSemiMarkovModel").from_params(**params)
    seqs = model.sample(n, t, seed=1)
    x = seqs.values.numpy()
    initial, trans, emission = expanded_hmm(params)
    ref = hmm.CategoricalHMM(n_components=K * D, implementation="scaling", init_params="")
    ref.n_features = V
    ref.startprob_, ref.transmat_, ref.emissionprob_ = initial, trans, emission
    xc, lengths = x.reshape(-1, 1), [t] * n
    ours = float(model.log_prob(seqs).sum())
    ctx.check_close("total log-likelihood vs hmmlearn on the expanded HMM", ours,
                    ref.score(xc, lengths), rtol=1e-9)
    ctx.compare(f"HSMM log_prob K={K} D={D} V={V} {n}x{t}",
                lambda: model.log_prob(Sequences(seqs.values, seqs.lengths)),
                [Peer("hmmlearn scaling (expanded HMM)", lambda: ref.score(xc, lengths),
                      goal_ids=("hsmm_log_prob",))], work=n * t)
