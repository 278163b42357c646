"""The hidden semi-Markov model against independent references.

References: the expanded-state HMM with countdown states built by hand as a
``HiddenMarkovModel`` (its own, separately tested recursions), brute-force enumeration of
state paths (each path's probability from its segments, the last one censored), the sum
over all V^T sequences, and sampling frequencies.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from reference import permuted_labels
from scipy import stats

import probseq as ps
from probseq import Sequences
from probseq.hsmm import inference

F64 = torch.float64


# ------------------------------------------------------------------------ builders
def _transition(k, gen):
    off = torch.as_tensor(gen.dirichlet(np.ones(k - 1), size=k))
    a = torch.zeros(k, k, dtype=F64)
    a[~torch.eye(k, dtype=torch.bool)] = off.reshape(-1)
    return a


def _emission_params(emission, k, gen, v=3, d=2, diag=False):
    if emission == "categorical":
        return {"emission": torch.as_tensor(gen.dirichlet(np.ones(v), size=k))}
    if emission == "poisson":
        return {"rates": torch.as_tensor(gen.uniform(0.5, 8.0, size=k))}
    means = torch.as_tensor(gen.normal(0, 2, size=(k, d)))
    if diag:
        cov = torch.diag_embed(torch.as_tensor(gen.uniform(0.3, 2.0, size=(k, d))))
    else:
        m = torch.as_tensor(gen.normal(size=(k, d, d)))
        cov = m @ m.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=F64)
    return {"means": means, "covariances": cov}


def _duration_params(family, k, dmax, gen):
    if family == "categorical":
        return {"duration": torch.as_tensor(gen.dirichlet(np.ones(dmax), size=k))}
    if family == "poisson":
        return {"duration_rate": torch.as_tensor(gen.uniform(0.5, dmax / 2, size=k)),
                "max_duration": dmax}
    return {"duration_count": torch.as_tensor(gen.uniform(0.5, 4.0, size=k)),
            "duration_prob": torch.as_tensor(gen.uniform(0.2, 0.8, size=k)),
            "max_duration": dmax}


def _model(emission="categorical", family="categorical", k=3, dmax=5, seed=0, **kw):
    gen = np.random.default_rng(seed)
    return ps.HiddenSemiMarkovModel.from_params(
        initial=torch.as_tensor(gen.dirichlet(np.ones(k))), transition=_transition(k, gen),
        **_duration_params(family, k, dmax, gen), **_emission_params(emission, k, gen, **kw))


def _expanded(model):
    """The HMM over countdown states (k, r), state index k * D + (r - 1), built by hand."""
    p = model.params
    pmf = model.duration_pmf
    k, dmax = pmf.shape
    s = k * dmax
    initial = (p["initial"][:, None] * pmf).reshape(s)
    trans = torch.zeros(s, s, dtype=F64)
    for i in range(k):
        for r in range(1, dmax):
            trans[i * dmax + r, i * dmax + r - 1] = 1.0  # count down
        trans[i * dmax] = (p["transition"][i][:, None] * pmf).reshape(s)  # a new segment
    names = {"categorical": ("emission",), "gaussian": ("means", "covariances"),
             "poisson": ("rates",)}[model.emission]
    em = {n: p[n].repeat_interleave(dmax, 0) for n in names}
    return ps.HiddenMarkovModel.from_params(initial=initial, transition=trans, **em)


def _data(emission, lengths, seed, d=2):
    gen = np.random.default_rng(seed)
    if emission == "categorical":
        return [gen.integers(0, 3, size=n) for n in lengths]
    if emission == "poisson":
        return [gen.poisson(3.0, size=n) for n in lengths]
    return [gen.normal(0, 2, size=(n, d)) for n in lengths]


LENGTHS = [1, 2, 3, 7, 40, 300]
CASES = [("categorical", {}), ("poisson", {}), ("gaussian", {}), ("gaussian", {"diag": True}),
         ("gaussian", {"d": 1})]


def _case_id(case):
    return case[0] + ("_diag" if case[1].get("diag") else "") + (
        "_1d" if case[1].get("d") == 1 else "")


# ------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("family", ["categorical", "poisson", "negative_binomial"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_equals_hand_built_expanded_hmm(case, family):
    emission, kw = case
    m = _model(emission, family, k=3, dmax=6, seed=1, **kw)
    h = _expanded(m)
    data = _data(emission, LENGTHS, seed=2, d=kw.get("d", 2))
    if kw.get("d") == 1:
        data = [x[:, 0] for x in data]
    for got, ref in ((m.log_prob(data), h.log_prob(data)),
                     (m.log_prob_steps(data), h.log_prob_steps(data))):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-9)
    k, dmax = 3, 6
    n, t = len(data), max(LENGTHS)
    torch.testing.assert_close(m.filter(data), h.filter(data).reshape(n, t, k, dmax).sum(-1),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(m.smoother(data),
                               h.smoother(data).reshape(n, t, k, dmax).sum(-1), rtol=0, atol=1e-9)
    f, g = m.forecast(data[3], 5), h.forecast(data[3], 5)
    torch.testing.assert_close(f.mean, g.mean, rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_gaps_equal_expanded_hmm(case):
    emission, kw = case
    m = _model(emission, "categorical", k=3, dmax=4, seed=3, **kw)
    h = _expanded(m)
    gen = np.random.default_rng(4)
    data = _data(emission, [1, 5, 30, 120], seed=5, d=kw.get("d", 2))
    gappy = []
    for x in data:
        if emission == "gaussian":
            x = x.astype(float)
            if kw.get("d") == 1:
                x = x[:, 0]
            x[gen.random(x.shape) < 0.3] = np.nan  # partly observed steps in 2-D
        else:
            x = np.ma.masked_array(x, mask=gen.random(x.shape) < 0.3)
        gappy.append(x)
    torch.testing.assert_close(m.log_prob(gappy), h.log_prob(gappy), rtol=0, atol=1e-9)
    torch.testing.assert_close(m.log_prob_steps(gappy), h.log_prob_steps(gappy), rtol=0,
                               atol=1e-9)
    torch.testing.assert_close(m.smoother(gappy),
                               h.smoother(gappy).reshape(4, 120, 3, 4).sum(-1), rtol=0, atol=1e-9)
    # An all-missing sequence has probability one.
    if emission != "gaussian":
        empty = np.ma.masked_array(np.zeros(6, dtype=int), mask=np.ones(6, dtype=bool))
        assert abs(float(m.log_prob(empty))) < 1e-12


def _path_log_prob(z, pi, a, pmf):
    """log P(z_1..z_T) from the path's segments, the last one censored (survival)."""
    segs = [(k, len(list(g))) for k, g in itertools.groupby(z)]
    dmax = pmf.shape[1]
    if any(d > dmax for _, d in segs):
        return -math.inf
    out = math.log(pi[segs[0][0]])
    for i, (k, d) in enumerate(segs):
        if i > 0:
            out += math.log(a[segs[i - 1][0], k]) if a[segs[i - 1][0], k] > 0 else -math.inf
        prob = pmf[k, d - 1] if i < len(segs) - 1 else pmf[k, d - 1:].sum()
        out += math.log(prob) if prob > 0 else -math.inf
    return out


def _enumerate(m, x):
    """(log p(x), {path: log p(z, x)}) by enumerating every state path."""
    p = m.params
    pi, a, pmf = p["initial"].numpy(), p["transition"].numpy(), m.duration_pmf.numpy()
    ll = m._log_lik(p, Sequences.from_list([x]))[0].numpy()
    joint = {}
    for z in itertools.product(range(m.num_states), repeat=len(x)):
        joint[z] = _path_log_prob(z, pi, a, pmf) + sum(ll[t, k] for t, k in enumerate(z))
    vals = np.array(list(joint.values()))
    return float(np.logaddexp.reduce(vals)), joint


@pytest.mark.parametrize("family", ["categorical", "poisson", "negative_binomial"])
@pytest.mark.parametrize("emission", ["categorical", "gaussian"])
def test_brute_force_segmentations_and_viterbi(emission, family):
    m = _model(emission, family, k=3, dmax=3, seed=6, d=1)
    for t in (1, 2, 4, 6):
        x = _data(emission, [t], seed=10 + t, d=1)[0]
        x = x[:, 0] if x.ndim == 2 else x
        total, joint = _enumerate(m, x)
        assert float(m.log_prob(x)) == pytest.approx(total, abs=1e-10)
        best = max(joint, key=joint.get)
        path = m.most_likely_states(x)
        assert tuple(path.tolist()) == best
        _, score = inference.hsmm_viterbi(
            m.params["initial"], m.params["transition"], m.duration_pmf,
            m._log_lik(m.params, Sequences.from_list([x])), torch.tensor([t]))
        assert float(score[0]) == pytest.approx(joint[best], abs=1e-10)
        # Smoothed marginals from the enumeration.
        post = np.zeros((t, 3))
        for z, v in joint.items():
            post[np.arange(t), list(z)] += math.exp(v - total)
        torch.testing.assert_close(m.smoother(x), torch.as_tensor(post), rtol=0, atol=1e-10)


def test_expected_statistics_equal_enumeration():
    """The E-step's expected segment counts (censored last duration included) by brute force."""
    m = _model("categorical", "categorical", k=3, dmax=3, seed=7)
    p = m.params
    pmf = m.duration_pmf.numpy()
    xs = [_data("categorical", [t], seed=20 + t)[0] for t in (1, 3, 5)]
    want = {"initial_counts": np.zeros(3), "transition_counts": np.zeros((3, 3)),
            "duration_counts": np.zeros((3, 3))}
    for x in xs:
        total, joint = _enumerate(m, x)
        for z, v in joint.items():
            if v == -math.inf:  # a segment longer than D
                continue
            w = math.exp(v - total)
            segs = [(k, len(list(g))) for k, g in itertools.groupby(z)]
            want["initial_counts"][segs[0][0]] += w
            for i, (k, d) in enumerate(segs):
                if i > 0:
                    want["transition_counts"][segs[i - 1][0], k] += w
                if i < len(segs) - 1:
                    want["duration_counts"][k, d - 1] += w
                else:  # censored: the total duration d' >= d with odds pmf[d']
                    tail = pmf[k, d - 1:]
                    want["duration_counts"][k, d - 1:] += w * tail / tail.sum()
    got = m.expected_stats(Sequences.from_list(xs), p)
    for name, ref in want.items():
        torch.testing.assert_close(got[name], torch.as_tensor(ref), rtol=0, atol=1e-12)
    assert float(got["log_lik"]) == pytest.approx(float(m.log_prob(xs).sum()), abs=1e-12)


@pytest.mark.parametrize("family", ["categorical", "poisson", "negative_binomial"])
def test_probabilities_sum_to_one_over_all_sequences(family):
    m = _model("categorical", family, k=2, dmax=3, seed=8, v=2)
    for t in (1, 2, 5, 8):
        xs = [np.array(s) for s in itertools.product(range(2), repeat=t)]
        total = torch.logsumexp(m.log_prob(xs), 0)
        assert float(total) == pytest.approx(0.0, abs=1e-12)


def test_duration_families_pmfs():
    m = _model("categorical", "poisson", k=2, dmax=7, seed=9)
    rate = m.params["duration_rate"].numpy()
    ref = stats.poisson.pmf(np.arange(7)[None], rate[:, None])
    torch.testing.assert_close(m.duration_pmf, torch.as_tensor(ref / ref.sum(1, keepdims=True)))
    m = _model("categorical", "negative_binomial", k=2, dmax=7, seed=9)
    n, q = m.params["duration_count"].numpy(), m.params["duration_prob"].numpy()
    ref = stats.nbinom.pmf(np.arange(7)[None], n[:, None], q[:, None])
    torch.testing.assert_close(m.duration_pmf, torch.as_tensor(ref / ref.sum(1, keepdims=True)))


# ------------------------------------------------------------------------ sampling
def test_sampler_frequencies_agree_with_log_prob():
    m = _model("categorical", "negative_binomial", k=2, dmax=3, seed=11, v=2)
    s = m.sample(20000, 4, seed=0)
    seqs = [tuple(r) for r in s.values.tolist()]
    for x in itertools.product(range(2), repeat=4):
        p = float(m.log_prob(np.array(x)).exp())
        freq = seqs.count(x) / len(seqs)
        assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / len(seqs)) + 1e-4, x
    # With a prefix: P(x_3, x_4 | x_1, x_2) = p(x) / p(prefix).
    prefix = np.array([1, 0])
    c = m.sample(20000, 4, prefix=prefix, seed=1)
    assert c.values[:, :2].eq(torch.as_tensor(prefix)).all()
    lp = float(m.log_prob(prefix))
    tails = [tuple(r) for r in c.values[:, 2:].tolist()]
    for tail in itertools.product(range(2), repeat=2):
        p = math.exp(float(m.log_prob(np.array([1, 0, *tail]))) - lp)
        freq = tails.count(tail) / len(tails)
        assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / len(tails)) + 1e-4, tail


def test_sampled_durations_follow_the_pmf():
    # States read off the symbols (identity emissions): complete segments' durations.
    gen = np.random.default_rng(12)
    pmf = torch.as_tensor(gen.dirichlet(np.ones(5), size=3))
    m = ps.HiddenSemiMarkovModel.from_params(initial=torch.full((3,), 1 / 3, dtype=F64),
                                             transition=_transition(3, gen), duration=pmf,
                                             emission=torch.eye(3, dtype=F64))
    x, z = m.sample(200, 60, seed=2, return_states=True)
    assert torch.equal(x.values, z)
    counts = np.zeros((3, 5))
    for row in z.tolist():
        segs = [(k, len(list(g))) for k, g in itertools.groupby(row)][1:-1]
        for k, d in segs:
            counts[k, d - 1] += 1
    for k in range(3):
        assert stats.chisquare(counts[k], counts[k].sum() * pmf[k].numpy()).pvalue > 1e-3


def test_gappy_prefix_sampling_and_forecast_shapes():
    m = _model("gaussian", "poisson", k=2, dmax=5, seed=13)
    x = _data("gaussian", [12], seed=14)[0]
    x[3, 0] = np.nan
    x[7] = np.nan
    s = m.sample(5, 20, prefix=x, seed=0)
    obs = ~np.isnan(x)
    assert torch.equal(s.values[:, :12][:, torch.as_tensor(obs)],
                       torch.as_tensor(x[obs]).expand(5, -1))
    assert torch.isfinite(s.values).all()
    f = m.forecast(x, 6)
    assert f.mean.shape == (6, 2) and f.method == "exact"


# ------------------------------------------------------------------------ fitting
def _simulate(family_params, n, t, seed):
    m = ps.HiddenSemiMarkovModel.from_params(
        initial=[0.5, 0.5, 0.0], transition=[[0, 0.7, 0.3], [0.5, 0, 0.5], [0.6, 0.4, 0]],
        means=[[-2.0], [0.0], [2.5]], covariances=[[[0.6]], [[0.6]], [[0.6]]],
        **family_params)
    return m, m.sample(n, t, seed=seed)


@pytest.mark.parametrize("family", ["categorical", "poisson", "negative_binomial"])
def test_fit_recovers_durations(family):
    truth = {"duration_count": [20.0, 8.0, 40.0], "duration_prob": [0.8, 0.5, 0.8],
             "max_duration": 25}
    m0, data = _simulate(truth, 40, 150, seed=15)
    m = ps.HiddenSemiMarkovModel(3, emission="gaussian", duration=family, max_duration=25)
    m.fit(data, seed=0, max_epochs=60, num_restarts=2, progress=False)
    order = torch.argsort(m.params["means"][:, 0])
    true_mean = (m0.duration_pmf * torch.arange(1, 26)).sum(-1)
    got_mean = (m.duration_pmf[order] * torch.arange(1, 26)).sum(-1)
    torch.testing.assert_close(got_mean, true_mean, rtol=0.1, atol=0)
    assert np.all(np.diff(m.history_) >= -1e-8 * abs(m.history_[-1]))
    # The fitted transition keeps a zero diagonal.
    assert torch.diagonal(m.params["transition"]).eq(0).all()


def test_beats_a_same_sized_hmm_on_held_out_hsmm_data():
    truth = {"duration_count": [30.0, 30.0, 30.0], "duration_prob": [0.75, 0.75, 0.75],
             "max_duration": 30}
    _, train = _simulate(truth, 30, 120, seed=16)
    _, test = _simulate(truth, 30, 120, seed=17)
    hsmm = ps.HiddenSemiMarkovModel(3, emission="gaussian", duration="negative_binomial",
                                    max_duration=30).fit(train, seed=0, max_epochs=40,
                                                         progress=False)
    hmm = ps.HiddenMarkovModel(3, emission="gaussian").fit(train, seed=0, progress=False)
    table = ps.compare({"hsmm": hsmm, "hmm": hmm}, test, fit_data=train)
    assert table.index[0] == "hsmm"
    assert float(hsmm.log_prob(test).sum() - hmm.log_prob(test).sum()) > 20


def test_em_is_monotone_and_categorical_fit_runs_with_gaps():
    m0 = _model("categorical", "categorical", k=2, dmax=6, seed=18)
    data = m0.sample(20, 50, seed=3)
    gen = np.random.default_rng(19)
    gappy = [np.ma.masked_array(x.numpy(), mask=gen.random(50) < 0.2) for x in data]
    m = ps.HiddenSemiMarkovModel(2, max_duration=6).fit(gappy, seed=0, max_epochs=30,
                                                        progress=False)
    h = np.array(m.history_)
    assert len(h) > 2 and np.all(np.diff(h) >= -1e-9 * abs(h[-1]))
    assert math.isfinite(float(m.log_prob(gappy).sum()))


# ------------------------------------------------------------------------ parameters, files
def test_from_params_validates():
    good = {"initial": [0.5, 0.5], "transition": [[0, 1], [1, 0]],
            "emission": [[0.5, 0.5], [0.1, 0.9]]}
    ps.HiddenSemiMarkovModel.from_params(**good, duration=[[0.5, 0.5], [1, 0]])
    bad = [
        ({"duration": [[0.5, 0.5], [1, 0]], "transition": [[0.5, 0.5], [1, 0]]}, "diagonal"),
        ({"duration": [[0.5, 0.6], [1, 0]]}, "sum to 1"),
        ({"duration": [[1.5, -0.5], [1, 0]]}, "negative"),
        ({"duration": [0.5, 0.5]}, "shape"),
        ({"duration_rate": [1.0, 2.0]}, "max_duration"),
        ({"duration_rate": [1.0, -2.0], "max_duration": 4}, "non-negative"),
        ({"duration_count": [1.0, 2.0], "max_duration": 4}, "both"),
        ({"duration_count": [1.0, 2.0], "duration_prob": [0.5, 1.5], "max_duration": 4},
         "(0, 1]"),
        ({}, "exactly one duration family"),
        ({"duration": [[1, 0], [1, 0]], "duration_rate": [1.0, 1.0]}, "exactly one"),
        ({"duration": [[1, 0], [1, 0]], "max_duration": 3}, "disagrees"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[")):
            ps.HiddenSemiMarkovModel.from_params(**{**good, **change})
    with pytest.raises(ValueError, match="num_states >= 2"):
        ps.HiddenSemiMarkovModel(1)
    with pytest.raises(ValueError, match="duration must be one of"):
        ps.HiddenSemiMarkovModel(2, duration="geometric")
    with pytest.raises(ValueError, match="max_duration"):
        ps.HiddenSemiMarkovModel(2, max_duration=0)


@pytest.mark.parametrize("family", ["categorical", "poisson", "negative_binomial"])
def test_params_num_params_and_save_load(family, tmp_path):
    m = _model("gaussian", family, k=3, dmax=5, seed=21)
    x = _data("gaussian", [30, 12], seed=22)
    path = tmp_path / "m.pt"
    m.save(path)
    back = ps.load(path)
    assert isinstance(back, ps.HiddenSemiMarkovModel) and back.duration == family
    assert torch.equal(back.log_prob(x), m.log_prob(x))
    again = ps.HiddenSemiMarkovModel.from_params(**m.params, max_duration=5)
    torch.testing.assert_close(again.log_prob(x), m.log_prob(x), rtol=1e-13, atol=0)
    dur = {"categorical": 3 * 4, "poisson": 3, "negative_binomial": 6}[family]
    assert m.num_params == 2 + 3 * 1 + dur + 3 * (2 + 3)


def test_impossible_and_extreme_sequences_agree_with_expanded_hmm():
    m = ps.HiddenSemiMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0, 1], [1, 0]], duration=[[0.5, 0.5], [0.5, 0.5]],
        emission=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    h = _expanded(m)
    y = [np.array([0, 0, 1, 2, 0]), np.array([0, 0, 0, 1]), np.array([1, 0, 0])]
    torch.testing.assert_close(m.log_prob(y), h.log_prob(y), rtol=0, atol=1e-12)
    torch.testing.assert_close(m.log_prob_steps(y), h.log_prob_steps(y), rtol=0, atol=1e-12)
    assert m.smoother(y)[:2].eq(0).all()
    # States 1e6 standard deviations apart, an outlier between them, a forced duration.
    m = ps.HiddenSemiMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0, 1], [1, 0]],
        duration=[[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.25, 0.25]],
        means=[[0.0], [100.0]], covariances=[[[1e-4]], [[1e-4]]])
    h = _expanded(m)
    xs = [v.numpy() for v in m.sample(2, 400, seed=0)]
    xs[0][100] = 50.0
    xs[1][200:203] = 0.0
    torch.testing.assert_close(m.log_prob(xs), h.log_prob(xs), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(m.smoother(xs), h.smoother(xs).reshape(2, 400, 2, 4).sum(-1),
                               rtol=0, atol=1e-9)


def test_expected_statistics_add_over_shards():
    """What makes the data-parallel E-step exact: shard statistics sum to the whole's."""
    m = _model("poisson", "negative_binomial", k=3, dmax=6, seed=23)
    data = Sequences.from_list(_data("poisson", [5, 40, 17, 60, 1], seed=24))
    whole = m.expected_stats(data, m.params)
    parts = [m.expected_stats(data[idx], m.params) for idx in ([0, 3], [1, 2, 4])]
    for name, value in whole.items():
        torch.testing.assert_close(parts[0][name] + parts[1][name], value, rtol=1e-12, atol=1e-10)


def test_duration_m_steps_are_weighted_maximum_likelihood():
    """Each family's M-step maximises sum_d w_d log pmf(d) (checked against scipy.stats pmfs
    optimised by Nelder-Mead from several starts, and against the boundary cases)."""
    from scipy import optimize

    from probseq.hsmm.durations import NegativeBinomial, Poisson

    gen = np.random.default_rng(25)
    dmax = 12
    m = np.arange(dmax)
    counts = torch.as_tensor(gen.gamma(0.7, size=(3, dmax)) * 10)
    counts[2, :] = 0.0
    counts[2, 0] = 5.0  # every duration 1: the Poisson rate goes to 0

    def objective(logpmf, w):
        return float(w @ (logpmf - np.logaddexp.reduce(logpmf)))

    rate = Poisson.m_step(counts, {"duration_rate": torch.ones(3, dtype=F64)})["duration_rate"]
    assert float(rate[2]) == 0.0
    nb = NegativeBinomial.m_step(counts, {"duration_count": torch.full((3,), 2.0, dtype=F64),
                                          "duration_prob": torch.full((3,), 0.3, dtype=F64)})
    for k in range(2):
        w = counts[k].numpy()
        got = objective(stats.poisson.logpmf(m, float(rate[k])), w)
        ref = optimize.minimize_scalar(lambda a, w=w: -objective(stats.poisson.logpmf(m, np.exp(a)),
                                                                 w), bounds=(-10, 8),
                                       method="bounded", options={"xatol": 1e-10})
        assert got >= -ref.fun - 1e-9
        got = objective(stats.nbinom.logpmf(m, float(nb["duration_count"][k]),
                                            float(nb["duration_prob"][k])), w)
        best = max(-optimize.minimize(
            lambda z, w=w: -objective(stats.nbinom.logpmf(m, np.exp(z[0]), 1 / (1 + np.exp(-z[1]))),
                                      w), z0, method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}).fun
            for z0 in ([0.0, 0.0], [2.0, 1.0], [-1.0, -1.0]))
        assert got >= best - 1e-7


# ------------------------------------------------------------------------ partly known states
def _clamped_dense_reference(h, dmax, x, labels):
    """log p(x, known states) and P(z_t = k | x, known states) of one sequence, by a dense
    scaled forward-backward (NumPy) over the hand-built expanded HMM ``h``, with the emission
    factor of every countdown state (k, r) whose k disagrees with a label set to zero."""
    p = {n: v.numpy() for n, v in h.params.items()}
    ll = h._log_lik(h.params, Sequences.from_list([x]))[0].numpy()  # [T, K*D] unclamped
    t_len, s = ll.shape
    state_of = np.arange(s) // dmax
    allowed = (labels[:, None] < 0) | (state_of[None] == labels[:, None])
    shift = np.where(allowed, ll, -np.inf).max(1)
    factors = np.where(allowed, np.exp(ll - shift[:, None]), 0.0)
    alpha = np.zeros((t_len, s))
    scale = np.zeros(t_len)
    for t in range(t_len):
        a = p["initial"] if t == 0 else alpha[t - 1] @ p["transition"]
        a = a * factors[t]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    beta = np.ones((t_len, s))
    for t in range(t_len - 2, -1, -1):
        beta[t] = p["transition"] @ (factors[t + 1] * beta[t + 1]) / scale[t + 1]
    post = (alpha * beta).reshape(t_len, -1, dmax).sum(-1)
    return float(np.log(scale).sum() + shift.sum()), post


@pytest.mark.parametrize("family", ["categorical", "negative_binomial"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_labelled_posteriors_equal_clamped_expanded_hmm(case, family):
    """Known states (30% of the steps, gaps too) clamp the countdown chain: the E-step's
    log p(x, known states) and the smoother equal the hand-built expanded HMM with every
    other state's emission factor set to zero."""
    emission, kw = case
    k, dmax = 3, 6
    m = _model(emission, family, k=k, dmax=dmax, seed=26, **kw)
    h = _expanded(m)
    gen = np.random.default_rng(27)
    data = []
    for x in _data(emission, [1, 2, 7, 40, 300], seed=28, d=kw.get("d", 2)):
        if emission == "gaussian":
            x = x[:, 0].copy() if kw.get("d") == 1 else x.copy()
            x[gen.random(x.shape) < 0.15] = np.nan
        else:
            x = np.ma.masked_array(x, mask=gen.random(x.shape) < 0.15)
        data.append(x)
    labels = [np.where(gen.random(len(x)) < 0.3, gen.integers(0, k, len(x)), -1) for x in data]
    seqs = m._coerce(data)[0]
    smoothed = m.smoother(data, states=labels)
    for i, (x, lab) in enumerate(zip(data, labels, strict=True)):
        ref_lp, ref_post = _clamped_dense_reference(h, dmax, x, lab)
        one = m.coerce_states([lab], seqs[[i]])
        got = m.expected_stats(seqs[[i]], m.params, one)["log_lik"]
        assert float(got) == pytest.approx(ref_lp, abs=1e-9)
        torch.testing.assert_close(smoothed[i, : len(x)], torch.as_tensor(ref_post),
                                   rtol=0, atol=1e-9)
        steps = np.nonzero(lab >= 0)[0]
        assert (smoothed[i, steps, lab[steps]] > 1 - 1e-12).all()
    # Without labels the clamped reference is the model's likelihood itself.
    lp0, _ = _clamped_dense_reference(h, dmax, data[3], np.full(len(data[3]), -1))
    assert float(m.log_prob(data[3])) == pytest.approx(lp0, abs=1e-9)


@pytest.mark.parametrize("family", ["categorical", "poisson"])
def test_labelled_viterbi_smoother_and_stats_equal_enumeration(family):
    """Over every segmentation of a short sequence that passes through the known states:
    the best path and its score (Viterbi), the marginals and log p(x, known states)."""
    m = _model("gaussian", family, k=3, dmax=3, seed=29, d=1)
    p = m.params
    pi, a, pmf = p["initial"].numpy(), p["transition"].numpy(), m.duration_pmf.numpy()
    for t, lab in ((1, [2]), (5, [-1, 1, -1, -1, 1]), (7, [0, -1, -1, 2, -1, -1, -1])):
        x = _data("gaussian", [t], seed=30 + t, d=1)[0][:, 0]
        lab = np.array(lab)
        ll = stats.norm(p["means"][:, 0].numpy(),
                        np.sqrt(p["covariances"][:, 0, 0].numpy())).logpdf(x[:, None])
        joint = {}
        for z in itertools.product(range(3), repeat=t):
            if all(v < 0 or v == s for v, s in zip(lab, z, strict=True)):
                joint[z] = _path_log_prob(z, pi, a, pmf) + ll[np.arange(t), list(z)].sum()
        total = float(np.logaddexp.reduce(np.array(list(joint.values()))))
        best = max(joint, key=joint.get)
        assert tuple(m.most_likely_states(x, states=lab).tolist()) == best
        _, score = inference.hsmm_viterbi(
            p["initial"], p["transition"], m.duration_pmf,
            m._log_lik(p, Sequences.from_list([x]), torch.as_tensor(lab)[None]),
            torch.tensor([t]))
        assert float(score[0]) == pytest.approx(joint[best], abs=1e-10)
        post = np.zeros((t, 3))
        for z, v in joint.items():
            post[np.arange(t), list(z)] += math.exp(v - total)
        torch.testing.assert_close(m.smoother(x, states=lab), torch.as_tensor(post), rtol=0,
                                   atol=1e-10)
        seqs = Sequences.from_list([x])
        got = m.expected_stats(seqs, p, m.coerce_states(lab, seqs))["log_lik"]
        assert float(got) == pytest.approx(total, abs=1e-10)
    # Labels that change the unlabelled Viterbi path: the path obeys them.
    x = _data("gaussian", [7], seed=37, d=1)[0][:, 0]
    free = m.most_likely_states(x)
    lab = np.full(7, -1)
    lab[3] = (int(free[3]) + 1) % 3
    assert int(m.most_likely_states(x, states=lab)[3]) == lab[3]


def test_labelled_expected_statistics_add_over_shards():
    """The clamped E-step shards as the data-parallel fit splits it."""
    m = _model("poisson", "negative_binomial", k=3, dmax=6, seed=31)
    data = Sequences.from_list(_data("poisson", [5, 40, 17, 60, 1], seed=32))
    gen = np.random.default_rng(33)
    labels = m.coerce_states([np.where(gen.random(t) < 0.2, gen.integers(0, 3, t), -1)
                              for t in (5, 40, 17, 60, 1)], data)
    whole = m.expected_stats(data, m.params, labels)
    parts = [m.expected_stats(data[idx], m.params,
                              labels[idx, : int(data.lengths[idx].max())])
             for idx in ([0, 3], [1, 2, 4])]
    for name, value in whole.items():
        torch.testing.assert_close(parts[0][name] + parts[1][name], value, rtol=1e-12, atol=1e-10)
    assert float(whole["log_lik"]) < float(m.log_prob(data).sum())  # p(x, labels) < p(x)


def test_four_percent_labelled_steps_fix_the_numbering_of_the_fit():
    """Labels on 4% of the steps, in a numbering that permutes the simulation's: every
    restart seed fits state perm[s] to the simulation's state s."""
    truth = ps.HiddenSemiMarkovModel.from_params(
        initial=[1 / 3] * 3, transition=[[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]],
        means=[[-3.0], [0.0], [3.0]], covariances=[[[0.5]], [[0.5]], [[0.5]]],
        duration_count=[10.0, 10.0, 10.0], duration_prob=[0.6, 0.6, 0.6], max_duration=20)
    data, z = truth.sample(10, 100, seed=0, return_states=True)
    perm = np.array([2, 0, 1])  # true state s is labelled perm[s]
    labels = permuted_labels(z.numpy(), perm)
    means = np.array([-3.0, 0.0, 3.0])
    free = []
    for seed in range(3):
        model = ps.HiddenSemiMarkovModel(3, emission="gaussian", duration="negative_binomial",
                                         max_duration=20)
        model.fit(data, states=labels, num_restarts=1, seed=seed, max_epochs=50,
                  progress=False)
        fitted = model.params["means"][:, 0].numpy()
        np.testing.assert_allclose(fitted[perm], means, atol=0.25)
        h = np.array(model.history_)
        assert np.all(np.diff(h) >= -1e-9 * abs(h[-1]))
        model.fit(data, num_restarts=1, seed=seed, max_epochs=50, progress=False)
        free.append(tuple(np.argsort(model.params["means"][:, 0].numpy())))  # perm if labelled
    # Without the labels the numbering is the initialisation's: not always the labels'.
    assert any(f != tuple(perm) for f in free)


def test_bad_labels_raise_naming_the_sequence():
    m = _model("poisson", "categorical", k=3, dmax=4, seed=34)
    data = _data("poisson", [6, 9], seed=35)
    good = [np.full(6, -1), np.full(9, -1)]
    bad = [
        ([np.full(6, -1), np.array([0, -1, 3, -1, -1, -1, -1, -1, -1])], r"sequence 1.*-1\.\.2"),
        ([np.full(6, -1), np.full(8, -1)], "sequence 1 has 8 labels"),
        ([np.array([-1, 0.5, -1, -1, -1, -1]), good[1]], "sequence 0 must be whole numbers"),
        ([np.array([-1, "a", -1, -1, -1, -1], dtype=object), good[1]],
         "sequence 0 must be integers"),
        ([np.full(6, -1), np.array([-1, 1, 1, 1, 1, 1, -1, -1, -1])],
         "sequence 1 label 5 consecutive steps"),
        ([np.full(6, -1)], "labels for 1 sequences, the data has 2"),
    ]
    for labels, message in bad:
        for call in (lambda lab: m.smoother(data, states=lab),
                     lambda lab: m.most_likely_states(data, states=lab),
                     lambda lab: ps.HiddenSemiMarkovModel(3, emission="poisson", max_duration=4)
                     .fit(data, states=lab, max_epochs=2, num_restarts=1, progress=False)):
            with pytest.raises(ValueError, match=message):
                call(labels)
    # A run of exactly D equal labels is allowed; -1, None and masked entries are unknown.
    ok = [np.ma.masked_array([0, 0, 0, 0, 1, 1], mask=[0, 0, 0, 0, 1, 0]),
          [None, 2, None, None, None, None, None, None, None]]
    assert torch.isfinite(m.smoother(data, states=ok)).all()
