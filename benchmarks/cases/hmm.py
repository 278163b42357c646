"""Hidden Markov models against hmmlearn (and pomegranate when it is installed)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from benchmarks.cases.common import random_hmm, sample_hmm_states, sample_hmm_symbols
from benchmarks.harness import Context, Peer, Unavailable, case, peer_available, probseq_class

K, V = 16, 32


def _hmmlearn() -> Any:
    if not peer_available("hmmlearn"):
        raise Unavailable("hmmlearn is not installed")
    from hmmlearn import hmm

    return hmm


def _categorical_hmmlearn(theta: tuple[np.ndarray, ...], implementation: str,
                          **kwargs: Any) -> Any:
    hmm = _hmmlearn()
    initial, transition, emission = theta
    model = hmm.CategoricalHMM(n_components=len(initial), implementation=implementation,
                               init_params="", **kwargs)
    model.n_features = emission.shape[1]
    _set_categorical(model, theta)
    return model


def _set_categorical(model: Any, params: tuple[np.ndarray, ...]) -> None:
    model.startprob_, model.transmat_, model.emissionprob_ = (p.copy() for p in params)


def _probseq_categorical(params: tuple[np.ndarray, ...]) -> Any:
    cls = probseq_class("HiddenMarkovModel")
    initial, transition, emission = params
    return cls.from_params(initial=initial, transition=transition, emission=emission)


def _concatenated(x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """hmmlearn's input: ``[N * T, 1]`` plus the lengths."""
    return x.reshape(-1, 1), [x.shape[1]] * x.shape[0]


def _pomegranate_peer(params: tuple[np.ndarray, ...], x: np.ndarray) -> tuple[Peer, float]:
    """pomegranate 1.x ``DenseHMM.log_probability`` on the same batch (only if installed)."""
    import torch
    from pomegranate.distributions import Categorical
    from pomegranate.hmm import DenseHMM

    initial, transition, emission = params
    dists = [Categorical(torch.tensor(e[None, :], dtype=torch.float64)) for e in emission]
    model = DenseHMM(dists, edges=torch.tensor(transition, dtype=torch.float64),
                     starts=torch.tensor(initial, dtype=torch.float64))
    xt = torch.tensor(x[..., None])

    def run() -> object:
        return model.log_probability(xt)

    return Peer("pomegranate", run), float(run().sum())


@case("hmm_batched", needs=("HiddenMarkovModel",),
      description="categorical HMM log_prob, K=16 V=32, 200 x 1000, vs hmmlearn")
def hmm_batched(ctx: Context) -> None:
    """Batched categorical HMM log_prob against hmmlearn's score (both implementations)."""
    from probseq import Sequences

    n, t = ctx.size((200, 1000), (8, 64))
    params = random_hmm(K, V, seed=0)
    x = sample_hmm_symbols(n, t, *params, seed=1)
    seqs = Sequences.from_padded(x)
    model = _probseq_categorical(params)
    ours = float(model.log_prob(seqs).sum())
    xc, lengths = _concatenated(x)
    peers = []
    for impl, goal in (("scaling", 2.0), ("log", None)):
        ref = _categorical_hmmlearn(params, impl)
        ctx.check_close(f"total log-likelihood vs hmmlearn {impl}", ours, ref.score(xc, lengths),
                        rtol=1e-9)
        peers.append(Peer(f"hmmlearn {impl}", lambda r=ref: r.score(xc, lengths), goal=goal))
    if peer_available("pomegranate"):
        try:
            peer, total = _pomegranate_peer(params, x)
            ctx.check_close("total log-likelihood vs pomegranate", ours, total, rtol=1e-6)
            peers.append(peer)
        except Exception as err:  # an untested optional peer must not stop the case
            ctx.note(f"pomegranate is installed but failed: {type(err).__name__}: {err}")
    else:
        ctx.note("pomegranate not available (not installed); its line is skipped")
    ctx.compare(f"HMM log_prob K={K} V={V} {n}x{t}", lambda: model.log_prob(seqs), peers,
                work=n * t)


@case("hmm_long", needs=("HiddenMarkovModel",),
      description="categorical HMM log_prob on one sequence of 10^5 vs hmmlearn scaling")
def hmm_long(ctx: Context) -> None:
    """One long sequence: probseq's blocked scan against hmmlearn's compiled loop."""
    t = ctx.size(100_000, 2_000)
    params = random_hmm(K, V, seed=0)
    x = sample_hmm_symbols(1, t, *params, seed=2)[0]
    model = _probseq_categorical(params)
    ref = _categorical_hmmlearn(params, "scaling")
    xc = x.reshape(-1, 1)
    ctx.check_close("log-likelihood vs hmmlearn scaling", float(model.log_prob(x)),
                    ref.score(xc), rtol=1e-9)
    ctx.compare(f"HMM log_prob K={K} V={V} one sequence of {t}", lambda: model.log_prob(x),
                [Peer("hmmlearn scaling", lambda: ref.score(xc), goal=1.0)], work=t)


def _em_fit_probseq(theta: tuple[np.ndarray, ...], seqs: Any) -> Any:
    """One Baum-Welch iteration through the public API: ``fit(init="params", max_epochs=1)``
    from a model built with ``from_params`` (a fresh model each call)."""
    model = _probseq_categorical(theta)
    return model.fit(seqs, init="params", max_epochs=1, tol=0.0, progress=False)


def _em_step_probseq(theta: tuple[np.ndarray, ...], seqs: Any) -> dict[str, Any]:
    """One E-step and one M-step through ``expected_stats`` and ``maximize``."""
    model = _probseq_categorical(theta)
    params = model.params
    return model.maximize(model.expected_stats(seqs, params), params)


@case("hmm_em", needs=("HiddenMarkovModel",),
      description="one categorical HMM EM iteration vs hmmlearn fit(n_iter=1)")
def hmm_em(ctx: Context) -> None:
    """One Baum-Welch iteration from the same parameters on both sides."""
    from probseq import Sequences

    n, t = ctx.size((100, 1000), (8, 64))
    truth = random_hmm(K, V, seed=0)
    start = random_hmm(K, V, seed=3)  # EM starts away from the truth
    x = sample_hmm_symbols(n, t, *truth, seed=1)
    seqs = Sequences.from_padded(x)
    xc, lengths = _concatenated(x)
    ref = _categorical_hmmlearn(start, "scaling", n_iter=1, tol=0.0, params="ste")

    logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # its small-data warning, quick mode

    def peer() -> object:
        _set_categorical(ref, start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ref.fit(xc, lengths)

    try:
        fitted = _em_fit_probseq(start, seqs).params
    except (TypeError, ValueError) as err:
        raise Unavailable(f"HiddenMarkovModel.fit does not take the EM options used here: "
                          f"{err}") from None
    stepped = _em_step_probseq(start, seqs)
    peer()
    for name, theirs in (("initial", ref.startprob_), ("transition", ref.transmat_),
                         ("emission", ref.emissionprob_)):
        ctx.check_close(f"{name} after one EM iteration (fit) vs hmmlearn", fitted[name],
                        theirs, rtol=1e-6, atol=1e-9)
        ctx.check_close(f"{name} after expected_stats + maximize vs hmmlearn", stepped[name],
                        theirs, rtol=1e-6, atol=1e-9)
    task = f"HMM one EM iteration K={K} V={V} {n}x{t}"
    note = "hmmlearn scaling, init_params='', parameters reset before each fit"
    ctx.compare(f"{task}: fit(max_epochs=1)", lambda: _em_fit_probseq(start, seqs),
                [Peer("hmmlearn fit n_iter=1", peer, goal=1.0, note=note)], work=n * t)
    ctx.compare(f"{task}: expected_stats + maximize", lambda: _em_step_probseq(start, seqs),
                [Peer("hmmlearn fit n_iter=1", peer, note=note)], work=n * t)


@case("hmm_gaussian", needs=("HiddenMarkovModel",),
      description="Gaussian HMM log_prob, K=8, 200 x 1000, vs hmmlearn GaussianHMM scaling")
def hmm_gaussian(ctx: Context) -> None:
    """Univariate Gaussian HMM log_prob against hmmlearn's GaussianHMM."""
    from probseq import Sequences

    hmm = _hmmlearn()
    k = 8
    n, t = ctx.size((200, 1000), (8, 64))
    initial, transition, _ = random_hmm(k, 2, seed=4)
    means = np.linspace(-4.0, 4.0, k)
    stds = np.linspace(0.5, 1.5, k)
    z = sample_hmm_states(n, t, initial, transition, seed=5)
    x = means[z] + stds[z] * np.random.default_rng(6).standard_normal(z.shape)
    seqs = Sequences.from_padded(x)
    cls = probseq_class("HiddenMarkovModel")
    model = cls.from_params(initial=initial, transition=transition, means=means[:, None],
                            covariances=(stds**2)[:, None, None])
    ref = hmm.GaussianHMM(n_components=k, covariance_type="diag", implementation="scaling",
                          init_params="")
    ref.startprob_, ref.transmat_ = initial.copy(), transition.copy()
    ref.means_, ref.covars_ = means[:, None].copy(), (stds**2)[:, None].copy()
    xc, lengths = _concatenated(x)
    ctx.check_close("total log-likelihood vs hmmlearn GaussianHMM",
                    float(model.log_prob(seqs).sum()), ref.score(xc, lengths), rtol=1e-9)
    ctx.compare(f"Gaussian HMM log_prob K={k} {n}x{t}", lambda: model.log_prob(seqs),
                [Peer("hmmlearn GaussianHMM scaling", lambda: ref.score(xc, lengths))],
                work=n * t)
