"""InputOutputHMM against brute-force enumeration of every state path (scipy densities),
against the plain HMM when the covariate weights are zero, and against its own simulations
(weights recovered by EM, forecasts against sampled paths)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

import probseq as ps
from probseq import InputOutputHMM, Sequences

BIAS = [[1.0, -1.0], [-0.5, 0.5]]
WEIGHTS = [[[0.8, -0.3], [-0.8, 0.3]], [[0.2, 1.0], [-0.2, -1.0]]]


def _gaussian() -> InputOutputHMM:
    return InputOutputHMM.from_params(initial=[0.6, 0.4], transition_bias=BIAS,
                                      transition_weights=WEIGHTS, means=[-1.0, 1.5],
                                      covariances=[0.7, 1.2])


def _categorical() -> InputOutputHMM:
    rng = np.random.default_rng(3)
    return InputOutputHMM.from_params(
        initial=[0.2, 0.5, 0.3], transition_bias=rng.normal(size=(3, 3)),
        transition_weights=rng.normal(size=(3, 3, 1)),
        emission=[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])


def _enumerate(model: InputOutputHMM, x: np.ndarray, u: np.ndarray):
    """log p(x | u), the posterior marginals and the best path, over every state path."""
    p = {n: v.numpy() for n, v in model.params.items()}
    k, t_len = p["initial"].shape[0], x.shape[0]
    if "means" in p:
        emit = stats.norm(p["means"][:, 0], np.sqrt(p["covariances"][:, 0, 0]))
        table = np.array([emit.logpdf(v) for v in x])  # [T, K]
    else:
        table = np.log(p["emission"][:, x]).T
    logs, paths = [], list(itertools.product(range(k), repeat=t_len))
    for z in paths:
        lp = np.log(p["initial"][z[0]]) + table[0, z[0]]
        for t in range(1, t_len):
            logits = p["transition_bias"][z[t - 1]] + p["transition_weights"][z[t - 1]] @ u[t]
            lp += logits[z[t]] - np.logaddexp.reduce(logits) + table[t, z[t]]
        logs.append(lp)
    logs = np.array(logs)
    total = np.logaddexp.reduce(logs)
    marg = np.zeros((t_len, k))
    for w, z in zip(np.exp(logs - total), paths, strict=True):
        marg[np.arange(t_len), list(z)] += w
    return total, marg, np.array(paths[int(np.argmax(logs))])


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_exact_likelihood_equals_path_enumeration(kind):
    model = _gaussian() if kind == "gaussian" else _categorical()
    rng = np.random.default_rng(0)
    e = model.num_exog
    data, covs = [], []
    for t_len in (1, 2, 6):
        x = rng.normal(size=t_len) if kind == "gaussian" else rng.integers(0, 3, size=t_len)
        u = rng.normal(size=(t_len, e))
        total, marg, best = _enumerate(model, x, u)
        assert float(model.log_prob(x, exog=u)) == pytest.approx(total, abs=1e-10)
        assert float(model.log_prob_steps(x, exog=u).sum()) == pytest.approx(total, abs=1e-10)
        np.testing.assert_allclose(model.smoother(x, exog=u).numpy(), marg, atol=1e-10)
        np.testing.assert_array_equal(model.most_likely_states(x, exog=u).numpy(), best)
        np.testing.assert_allclose(model.filter(x, exog=u)[-1].numpy(), marg[-1], atol=1e-10)
        data.append(x)
        covs.append(u)
    # A ragged batch equals one by one.
    batch = model.log_prob(data, exog=covs)
    single = torch.stack([model.log_prob(x, exog=u) for x, u in zip(data, covs, strict=True)])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-12)


def test_zero_weights_give_the_hmm():
    trans = np.array([[0.7, 0.3], [0.2, 0.8]])
    io = InputOutputHMM.from_params(initial=[0.5, 0.5], transition_bias=np.log(trans),
                                    transition_weights=np.zeros((2, 2, 3)), means=[-1.0, 1.0],
                                    covariances=[1.0, 0.5])
    hmm = ps.HiddenMarkovModel.from_params(initial=[0.5, 0.5], transition=trans,
                                           means=[-1.0, 1.0], covariances=[1.0, 0.5])
    rng = np.random.default_rng(1)
    data = [rng.normal(size=n) for n in (3, 12, 40)]
    covs = [rng.normal(size=(len(x), 3)) for x in data]
    torch.testing.assert_close(io.log_prob(data, exog=covs), hmm.log_prob(data),
                               rtol=0, atol=1e-11)
    torch.testing.assert_close(io.log_prob_steps(data, exog=covs), hmm.log_prob_steps(data),
                               rtol=0, atol=1e-11)
    torch.testing.assert_close(io.smoother(data, exog=covs), hmm.smoother(data), rtol=0,
                               atol=1e-11)
    assert torch.equal(io.most_likely_states(data, exog=covs), hmm.most_likely_states(data))
    fc_io = io.forecast(data[1], 3, exog=rng.normal(size=(15, 3)))
    fc = hmm.forecast(data[1], 3)
    torch.testing.assert_close(fc_io.mean, fc.mean, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_fit_recovers_simulated_weights():
    truth = _gaussian()
    rng = np.random.default_rng(2)
    u = rng.normal(size=(12, 150, 2))
    data = truth.sample(12, 150, exog=u, seed=1)
    model = InputOutputHMM(2, emission="gaussian").fit(data, exog=u, num_restarts=2, seed=0,
                                                       progress=False)
    hist = np.array(model.history_)
    assert (np.diff(hist) >= -1e-8 * np.abs(hist[1:])).all()
    p = model.params
    order = np.argsort(p["means"][:, 0].numpy())  # the truth's state 0 has the lower mean
    w = p["transition_weights"].numpy()[order][:, order]
    b = p["transition_bias"].numpy()[order][:, order]
    np.testing.assert_allclose(w, np.array(WEIGHTS), atol=0.3)
    np.testing.assert_allclose(b, np.array(BIAS), atol=0.3)
    # The fit is at least as likely as the truth on its own data.
    assert float(model.log_prob(data, exog=u).sum()) >= float(truth.log_prob(data, exog=u).sum())


def test_forecasts_with_future_covariates(tmp_path):
    model = _gaussian()
    rng = np.random.default_rng(4)
    x = rng.normal(size=8)
    u = rng.normal(size=(11, 2))
    fc = model.forecast(x, 3, exog=u, num_samples=4000, seed=0)
    assert fc.method == "exact"
    nxt = 0.3
    step = model.log_prob_steps(np.r_[x, nxt], exog=u[:9])[-1]
    dist = model._forecast(Sequences.from_list([x]), 1, exog=torch.as_tensor(u[None]))
    value = torch.tensor([[nxt]], dtype=torch.float64)
    assert float(dist.log_prob(value)) == pytest.approx(float(step), abs=1e-12)
    paths = fc.samples.numpy()  # sampled continuations, against the exact marginals
    sd = paths.std(0)
    assert (np.abs(paths.mean(0) - fc.mean.numpy()) < 4 * sd / np.sqrt(paths.shape[0])).all()
    se_var = np.sqrt((((paths - paths.mean(0)) ** 4).mean(0) - paths.var(0) ** 2) / len(paths))
    assert (np.abs(paths.var(0) - fc.std.numpy() ** 2) < 4.5 * se_var).all()
    covs = [rng.normal(size=(30, 2)) for _ in range(3)]
    series = [model.sample(1, 30, exog=c, seed=i).values[0].numpy() for i, c in enumerate(covs)]
    table = ps.compare({"iohmm": model, "hmm": ps.HiddenMarkovModel.from_params(
        initial=[0.6, 0.4], transition=[[0.8, 0.2], [0.3, 0.7]], means=[-1.0, 1.5],
        covariances=[0.7, 1.2])}, series, exog=covs)
    assert set(table.index if "model" not in table else table["model"]) >= {"iohmm", "hmm"}
    res = ps.backtest({"iohmm": model}, series[:1], exog=covs[:1], initial=26, horizon=2)
    assert np.isfinite(res.table["log_score"].dropna()).all()
    path = tmp_path / "iohmm.pt"
    model.save(path)
    back = ps.load(path)
    torch.testing.assert_close(back.log_prob(x, exog=u[:8]), model.log_prob(x, exog=u[:8]),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="pass exog="):
        model.log_prob(x)
    with pytest.raises(ValueError, match="transition_weights"):
        InputOutputHMM.from_params(initial=[0.5, 0.5], transition_bias=BIAS,
                                   transition_weights=np.zeros((2, 2)), means=[0.0, 1.0],
                                   covariances=[1.0, 1.0])
