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
    for impl, goals in (("scaling", ("hmm_categorical_log_prob_r1", "hmm_categorical_log_prob",
                                      "hmm_categorical_log_prob_turn1",
                                      "hmm_categorical_log_prob_r3")),
                        ("log", ())):
        ref = _categorical_hmmlearn(params, impl)
        ctx.check_close(f"total log-likelihood vs hmmlearn {impl}", ours, ref.score(xc, lengths),
                        rtol=1e-9)
        peers.append(Peer(f"hmmlearn {impl}", lambda r=ref: r.score(xc, lengths),
                          goal_ids=goals))
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
                [Peer("hmmlearn scaling", lambda: ref.score(xc),
                      goal_ids=("hmm_long_log_prob", "hmm_long_log_prob_turn1",
                                "hmm_long_log_prob_r3"))],
                work=t)


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
                [Peer("hmmlearn fit n_iter=1", peer, note=note,
                      goal_ids=("hmm_em_r1", "hmm_em", "hmm_em_r3"))],
                work=n * t)
    ctx.compare(f"{task}: expected_stats + maximize", lambda: _em_step_probseq(start, seqs),
                [Peer("hmmlearn fit n_iter=1", peer, note=note)], work=n * t)


def _gaussian_pair(k: int, d: int, n: int, t: int, seed: int) -> tuple[Any, Any, Any, Any]:
    """A Gaussian HMM (full covariances for D > 1) in probseq and hmmlearn at the same
    parameters, and data from it as ``Sequences`` and hmmlearn's concatenated array."""
    from probseq import Sequences

    hmm = _hmmlearn()
    rng = np.random.default_rng(seed)
    initial, transition, _ = random_hmm(k, 2, seed=seed)
    means = 3.0 * rng.standard_normal((k, d))
    a = rng.standard_normal((k, d, d))
    cov = a @ a.transpose(0, 2, 1) / d + 0.5 * np.eye(d)
    z = sample_hmm_states(n, t, initial, transition, seed=seed + 1)
    x = means[z] + np.einsum("ntij,ntj->nti", np.linalg.cholesky(cov)[z],
                             rng.standard_normal((n, t, d)))
    cls = probseq_class("HiddenMarkovModel")
    model = cls.from_params(initial=initial, transition=transition, means=means,
                            covariances=cov, covariance_type="full")
    # hmmlearn's fastest exact form for D = 1 is "diag" (the same model); "full" for D > 1.
    ctype = "diag" if d == 1 else "full"
    ref = hmm.GaussianHMM(n_components=k, covariance_type=ctype, implementation="scaling",
                          init_params="")
    ref.startprob_, ref.transmat_, ref.means_ = initial.copy(), transition.copy(), means.copy()
    ref.covars_ = cov[:, :, 0].copy() if d == 1 else cov.copy()
    seqs = Sequences.from_padded(x[..., 0] if d == 1 else x)
    return model, ref, seqs, x.reshape(n * t, d)


@case("hmm_gaussian", needs=("HiddenMarkovModel",),
      description="Gaussian HMM log_prob, K=8, D=1 and D=4 full, 200 x 1000, vs hmmlearn")
def hmm_gaussian(ctx: Context) -> None:
    """Gaussian HMM log_prob against hmmlearn's GaussianHMM (scaling) on the same data."""
    k = 8
    n, t = ctx.size((200, 1000), (8, 64))
    for d, goal in ((1, "hmm_gaussian_d1"), (4, "hmm_gaussian_d4")):
        model, ref, seqs, xc = _gaussian_pair(k, d, n, t, seed=4 + d)
        lengths = [t] * n
        ctx.check_close(f"D={d} total log-likelihood vs hmmlearn GaussianHMM",
                        float(model.log_prob(seqs).sum()), ref.score(xc, lengths), rtol=1e-9)
        kind = "diag (= full at D=1)" if d == 1 else "full"
        ctx.compare(f"Gaussian HMM log_prob K={k} D={d} {n}x{t}",
                    lambda m=model, s=seqs: m.log_prob(s),
                    [Peer(f"hmmlearn GaussianHMM {kind} scaling",
                          lambda r=ref, x=xc, n_=lengths: r.score(x, n_), goal_ids=(goal,))],
                    work=n * t)


def ragged_lengths(n: int, mean: int, ratio: float, seed: int = 0) -> np.ndarray:
    """``[N]`` log-normal lengths with the given mean whose longest is ``ratio`` times the
    mean (the log-normal's spread is solved for, then the draw is rescaled)."""
    rng = np.random.default_rng(seed)
    z = np.sort(rng.standard_normal(n))
    best = None
    for sigma in np.linspace(0.2, 3.0, 141):
        w = np.exp(sigma * z)
        r = w.max() / w.mean()
        if best is None or abs(r - ratio) < abs(best[1] - ratio):
            best = (w, r)
    w = best[0]
    return np.maximum(1, np.round(w / w.mean() * mean)).astype(np.int64)


@case("hmm_ragged_em", needs=("HiddenMarkovModel",),
      description="HMM EM iteration on a ragged batch (max/mean ~25) vs equal-length rows")
def hmm_ragged_em(ctx: Context) -> None:
    """One EM iteration on log-normal lengths against the same total steps in equal rows."""
    from probseq import Sequences

    n, mean = ctx.size((400, 250), (16, 32))
    lengths = ragged_lengths(n, mean, 25.0)
    total = int(lengths.sum())
    truth = random_hmm(K, V, seed=0)
    start = random_hmm(K, V, seed=3)
    x = sample_hmm_symbols(1, total, *truth, seed=1)[0]
    cuts = np.cumsum(lengths)[:-1]
    ragged = Sequences.from_list(list(np.split(x, cuts)))
    row = total // n
    equal = Sequences.from_padded(x[: row * n].reshape(n, row))
    ctx.note(f"ragged lengths: N={n}, mean {lengths.mean():.0f}, max {lengths.max()} "
             f"(max/mean {lengths.max() / lengths.mean():.1f}), {total} steps; equal rows: "
             f"{n} x {row} ({n * row} steps)")
    ctx.check_close("ragged EM log-likelihood vs one sequence at a time",
                    float(_probseq_categorical(start).log_prob(ragged).sum()),
                    sum(float(_probseq_categorical(start).log_prob(s)) for s in
                        ragged.to_list()[:4]) + float(
                        _probseq_categorical(start).log_prob(ragged[4:]).sum()), rtol=1e-10)
    ctx.compare(f"HMM one EM iteration K={K} V={V}, ragged N={n} (max/mean "
                f"{lengths.max() / lengths.mean():.0f})",
                lambda: _em_fit_probseq(start, ragged),
                [Peer("probseq, equal-length rows", lambda: _em_fit_probseq(start, equal),
                      goal_ids=("hmm_ragged_em",),
                      note="the same total steps cut into equal rows: ratio = equal time / "
                      "ragged time")],
                work=total)


@case("hmm_decode", needs=("HiddenMarkovModel",),
      description="Viterbi and smoother, K=16, one sequence of 10^5 and 200 x 1000, vs hmmlearn")
def hmm_decode(ctx: Context) -> None:
    """most_likely_states against hmmlearn decode, smoother against predict_proba."""
    k = 16
    params = random_hmm(k, V, seed=0)
    model = _probseq_categorical(params)
    ref = _categorical_hmmlearn(params, "scaling")
    long_t = ctx.size(100_000, 2_000)
    n, t = ctx.size((200, 1000), (8, 64))
    for label, x, suffix in (
        (f"one sequence of {long_t}", sample_hmm_symbols(1, long_t, *params, seed=2), "long"),
        (f"{n}x{t}", sample_hmm_symbols(n, t, *params, seed=3), "batch"),
    ):
        from probseq import Sequences

        seqs = Sequences.from_padded(x)
        xc, lengths = _concatenated(x)
        paths = model.most_likely_states(seqs).numpy().reshape(-1)
        ctx.check_close(f"Viterbi paths ({label}) vs hmmlearn decode", paths,
                        ref.decode(xc, lengths, algorithm="viterbi")[1], rtol=0)
        ctx.check_close(f"smoothed marginals ({label}) vs hmmlearn predict_proba",
                        model.smoother(seqs).numpy().reshape(-1, k),
                        ref.predict_proba(xc, lengths), rtol=0, atol=1e-8)
        ctx.compare(f"HMM Viterbi K={k} V={V} {label}", lambda s=seqs: model.most_likely_states(s),
                    [Peer("hmmlearn decode", lambda a=xc, b=lengths: ref.decode(
                        a, b, algorithm="viterbi"), goal_ids=(f"hmm_viterbi_{suffix}",))],
                    work=x.size)
        ctx.compare(f"HMM smoother K={k} V={V} {label}", lambda s=seqs: model.smoother(s),
                    [Peer("hmmlearn predict_proba", lambda a=xc, b=lengths: ref.predict_proba(
                        a, b), goal_ids=(f"hmm_smoother_{suffix}",))],
                    work=x.size)
