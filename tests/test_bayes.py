"""BayesianModel: posteriors through Pyro, scored against closed forms and quadrature.

References: the Dirichlet-multinomial (Polya urn) posterior predictive of a Markov chain and
of a one-state categorical HMM under Dirichlet(1) priors; numerical integration over a
grid of an AR(1) posterior for leave-future-out; Pareto samples of known shape for PSIS.
NUTS runs are kept small (one chain, few draws); the statistical ones are marked slow.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy.special import gammaln, logsumexp

import probseq as ps
from probseq.autoregressive import likelihood
from probseq.bayes import psis
from probseq.bayes.model import _mix
from probseq.markov.model import transition_counts

F64 = torch.float64


def _quiet_fit(model, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # low ESS of deliberately short runs
        return model.fit(data, **kw)


def _ar_series(n=30, seed=0):
    return ps.AutoRegressive.from_params(intercept=0.5, coef=[0.6], noise_var=1.0).sample(
        1, n, seed=seed)[0].numpy()


@pytest.fixture(scope="module")
def ar_posterior():
    """An AR(1) posterior from a short NUTS run on the first 24 of 30 points."""
    y = _ar_series()
    bm = ps.BayesianModel(ps.AutoRegressive(1), num_samples=80, warmup_steps=60)
    return _quiet_fit(bm, y[:24], seed=0), y


# ------------------------------------------------------------------------ PSIS
@pytest.mark.parametrize("k", [0.3, 0.6, 0.9])
def test_psis_khat_recovers_the_pareto_shape(k):
    """Ratios w = U^(-k) have a generalised Pareto tail of shape k: k_hat (averaged over five
    independent sets of 4000 draws) recovers it within 0.1."""
    rng = np.random.default_rng(1)
    est = [psis(-k * np.log(rng.uniform(size=4000)))[1] for _ in range(5)]
    assert abs(np.mean(est) - k) < 0.1, est


def test_psis_light_tails_leave_the_weights_nearly_raw():
    rng = np.random.default_rng(2)
    lr = rng.normal(0.0, 0.3, size=2000)
    lw, k_hat = psis(lr)
    assert k_hat < 0.5
    assert abs(logsumexp(lw)) < 1e-12
    raw = lr - logsumexp(lr)
    assert np.abs(np.exp(lw) - np.exp(raw)).sum() < 0.02  # only the tail is touched
    top = np.argmax(lr)
    assert lw[top] <= raw[top] + 1e-12  # truncated at the largest raw ratio


def test_psis_constant_ratios_and_bad_input():
    lw, k_hat = psis(np.full(50, 3.0))
    assert np.allclose(np.exp(lw), 1 / 50) and k_hat == 0.0
    with pytest.raises(ValueError, match="NaN"):
        psis(np.array([0.0, np.nan, 1.0]))


# ------------------------------------------------------------------------ pyro_model likelihoods
@pytest.mark.parametrize("p", [0, 1, 2, 3])
def test_ar_torch_log_prob_equals_the_numpy_joint(p):
    coef = [0.5, -0.3, 0.1][:p]
    m = ps.AutoRegressive.from_params(intercept=0.5, coef=coef, noise_var=1.3)
    s = m.sample(4, 12, seed=1)
    seqs = ps.Sequences.from_list([s[0][:2], s[1], s[2][:7], s[3][:1]])
    got = likelihood.torch_log_prob(seqs.values, seqs.lengths, torch.tensor(0.5, dtype=F64),
                                    torch.tensor(coef, dtype=F64), torch.tensor(1.3, dtype=F64))
    torch.testing.assert_close(got, m.log_prob(seqs), rtol=0, atol=1e-10)


def _site_log_lik(model, data, sites):
    import pyro.poutine as poutine

    tr = poutine.trace(poutine.condition(lambda: model.pyro_model(data), data=sites)
                       ).get_trace()
    return float(tr.nodes["log_lik"]["fn"].log_prob(torch.zeros(())))


def test_markov_and_ar_pyro_likelihoods_equal_log_prob():
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 3, size=n) for n in (5, 9, 2)]
    init = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    trans = torch.tensor([[0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.7, 0.2, 0.1]], dtype=F64)
    ref = ps.MarkovChain.from_params(initial=init, transition=trans).log_prob(data).sum()
    got = _site_log_lik(ps.MarkovChain(order=1, num_symbols=3), data,
                        {"initial": init, "transition": trans})
    assert abs(got - float(ref)) < 1e-10
    y = _ar_series(20)
    sites = {"mean": torch.tensor(1.2, dtype=F64), "pacf": torch.tensor([0.4], dtype=F64),
             "noise_var": torch.tensor(0.8, dtype=F64)}
    ref = ps.AutoRegressive.from_params(intercept=1.2 * 0.6, coef=[0.4], noise_var=0.8)
    assert abs(_site_log_lik(ps.AutoRegressive(1), y, sites) - float(ref.log_prob(y))) < 1e-10


# ------------------------------------------------------------------------ construction
def test_refusals():
    with pytest.raises(ValueError, match="pyro_model"):
        ps.BayesianModel(ps.RecurrentModel(cell="gru", hidden_size=4))
    with pytest.raises(ValueError, match="method"):
        ps.BayesianModel(ps.AutoRegressive(1), method="gibbs")
    with pytest.raises(ValueError, match="num_samples"):
        ps.BayesianModel(ps.AutoRegressive(1), num_samples=0)
    with pytest.raises(ValueError, match="not a distribution"):
        ps.BayesianModel(ps.AutoRegressive(1), prior={"mean": 3.0})
    bm = ps.BayesianModel(ps.AutoRegressive(1), prior={"typo": dist.Normal(0.0, 1.0)})
    with pytest.raises(ValueError, match="unknown site"):
        bm.fit(_ar_series(10))
    with pytest.raises(ValueError, match="order 1"):
        ps.BayesianModel(ps.MarkovChain(order=2)).fit([np.array([0, 1, 0])])
    with pytest.raises(ps.NotFittedError):
        ps.BayesianModel(ps.AutoRegressive(1)).log_prob(_ar_series(5))


def test_prior_override_replaces_the_site_prior():
    import pyro.poutine as poutine

    bm = ps.BayesianModel(ps.AutoRegressive(2), prior={
        "noise_var": dist.InverseGamma(3.0, 2.0), "pacf": dist.Uniform(-0.5, 0.5)})
    fn = bm._pyro_function(ps.Sequences.from_list([_ar_series(10)]))
    tr = poutine.trace(fn).get_trace()
    assert isinstance(tr.nodes["noise_var"]["fn"], dist.InverseGamma)
    pacf = tr.nodes["pacf"]["fn"]
    assert pacf.event_shape == (2,) and float(pacf.base_dist.high.max()) == 0.5
    assert (tr.nodes["pacf"]["value"].abs() < 0.5).all()
    config = bm.get_config()
    rebuilt = ps.BayesianModel(**config)
    assert rebuilt.get_config() == config


def test_to_inference_data_refuses_without_arviz(ar_posterior):
    bm, _ = ar_posterior
    try:
        import arviz  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install arviz"):
            bm.to_inference_data()
    else:
        pytest.skip("arviz is installed")


def test_to_inference_data_exports_chains_and_draws(ar_posterior):
    pytest.importorskip("arviz")
    bm, _ = ar_posterior
    idata = bm.to_inference_data()
    assert idata.posterior["noise_var"].shape == (1, 80)


# ------------------------------------------------------------------------ scores
def test_draws_steps_sum_and_save_load(ar_posterior, tmp_path):
    bm, y = ar_posterior
    assert bm.num_draws == 80 and bm.draws["coef"].shape == (80, 1)
    assert bm.num_params == 3 and bm.score_kind == "monte carlo"
    new = [_ar_series(15, seed=3), _ar_series(9, seed=4)]
    steps = bm.log_prob_steps(new)
    torch.testing.assert_close(steps.sum(-1), bm.log_prob(new), rtol=0, atol=1e-10)
    # a new sequence: log (1/S) sum_s p(x | theta_s), from the draws' own log densities
    per_draw = torch.stack([m.log_prob(new) for m in bm.members])
    ref = torch.logsumexp(per_draw, 0) - math.log(bm.num_draws)
    torch.testing.assert_close(bm.log_prob(new), ref, rtol=0, atol=1e-10)
    # the one-step predictive mixture has exactly these log densities, new and fitted data
    for data in (ps.Sequences.from_list(new), ps.Sequences.from_list([y])):
        lp = bm._step_predictive(data).log_prob(data.values)
        torch.testing.assert_close(torch.where(data.mask, lp, torch.zeros(())),
                                   bm.log_prob_steps(data), rtol=0, atol=1e-9)
    bm.save(tmp_path / "bm.pt")
    back = ps.load(tmp_path / "bm.pt")
    for k, v in bm.draws.items():
        assert torch.equal(back.draws[k], v)
    assert torch.equal(back.log_prob(new), bm.log_prob(new))
    assert torch.equal(back.log_prob_steps(y), bm.log_prob_steps(y))
    assert back.diagnostics().equals(bm.diagnostics())


def test_held_out_tail_does_not_count_the_fitted_steps_twice(ar_posterior):
    """Past the fitted prefix, steps are importance-weighted by the NEW steps only: at the
    first held-out step the weights are uniform, so it equals the plain average of the draws'
    predictive densities (weighting by the whole prefix would count it twice)."""
    bm, y = ar_posterior
    steps = bm.log_prob_steps(y)
    per_draw = torch.stack([m.log_prob_steps(y) for m in bm.members])  # [S, T]
    first = torch.logsumexp(per_draw[:, 24], 0) - math.log(bm.num_draws)
    assert abs(float(steps[24] - first)) < 1e-10
    double = torch.logsumexp(per_draw[:, :25].sum(-1), 0) - torch.logsumexp(
        per_draw[:, :24].sum(-1), 0)
    assert abs(float(steps[24] - double)) > 1e-6
    note = bm.score_note(y, 24)
    assert "leave-future-out" in note and "refit" in note


def test_compare_mixes_posterior_and_point_models(ar_posterior):
    bm, y = ar_posterior
    mle = ps.AutoRegressive(1).fit(y[:24])
    table = ps.compare({"posterior": bm, "mle": mle}, y, fit_data=y[:24], start=24)
    assert table.loc["posterior", "score_kind"] == "monte carlo"
    assert not table.loc["posterior", "exact"] and table.loc["mle", "exact"]
    se = table.loc["posterior", "mc_se"]
    assert 0 < se < 1 and math.isnan(table.loc["mle", "mc_se"])
    assert math.isnan(table.loc["posterior", "aic"])
    assert abs(table.loc["posterior", "log_lik"] - float(bm.log_prob_steps(y)[24:].sum())) < 1e-9
    assert "Monte Carlo se" in table.attrs["verdict"]


def test_forecast_mixes_the_draws_exact_forecasts(ar_posterior):
    """From the fitted series the weights are uniform: mean = average of the draws' means,
    variance = mean of their variances + variance of their means (total variance)."""
    bm, y = ar_posterior
    fc = bm.forecast(y[:24], 3)
    assert fc.method.startswith("posterior mixture over 80 draws") and "exact" in fc.method
    each = [m.forecast(y[:24], 3) for m in bm.members]
    means = torch.stack([f.mean for f in each])
    var = torch.stack([f.std**2 for f in each]).mean(0) + means.var(0, correction=0)
    torch.testing.assert_close(fc.mean, means.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(fc.std, var.sqrt(), rtol=0, atol=1e-10)
    plug = ps.AutoRegressive.from_params(**{k: v.mean(0) for k, v in bm.draws.items()})
    assert (fc.upper - fc.lower > plug.forecast(y[:24], 3).upper
            - plug.forecast(y[:24], 3).lower).all()  # parameter uncertainty widens them


def test_mixture_of_categoricals_and_samples_with_prefix(ar_posterior):
    probs = [torch.tensor([[[0.2, 0.8]]], dtype=F64), torch.tensor([[[0.6, 0.4]]], dtype=F64)]
    mixed = _mix([torch.distributions.Categorical(probs=p) for p in probs],
                 torch.log(torch.tensor([[[0.25, 0.75]]], dtype=F64)))
    torch.testing.assert_close(mixed.probs, torch.tensor([[[0.5, 0.5]]], dtype=F64))
    bm, y = ar_posterior
    s = bm.sample(5, 30, prefix=y[:24], seed=0)
    assert torch.equal(s.values[:, :24], torch.as_tensor(y[:24]).expand(5, -1))
    assert torch.isfinite(s.values).all()


@pytest.mark.slow
def test_svi_posterior_agrees_with_nuts(ar_posterior):
    nuts, y = ar_posterior
    bm = ps.BayesianModel(ps.AutoRegressive(1), method="svi", num_samples=200)
    bm.fit(y[:24], seed=0, max_epochs=400, learning_rate=0.05)
    assert bm.elbo_ and np.isfinite(bm.elbo_[-1])
    for k in ("intercept", "noise_var"):
        a, b = nuts.draws[k], bm.draws[k]
        assert abs(float(a.mean() - b.mean())) < 0.5 * float(a.std()) + 0.1, k
    assert torch.isfinite(bm.log_prob(y)).all()


# ------------------------------------------------------------------------ closed forms (slow)
def _dirichlet_multinomial(prior: np.ndarray, new: np.ndarray) -> float:
    """log of prod_rows B(prior + new) / B(prior): the Polya-urn predictive of new counts."""
    post = prior + new
    return float((gammaln(post).sum(-1) - gammaln(post.sum(-1))
                  - gammaln(prior).sum(-1) + gammaln(prior.sum(-1))).sum())


def _symbol_data():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 3, size=8) for _ in range(3)], [np.array([0, 1, 1, 2, 0, 0])]


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [None, [0.5, 1.0, 2.0]])
def test_markov_chain_posterior_predictive_is_dirichlet_multinomial(alpha):
    """Dirichlet(1) priors, then each transition row's prior overridden by Dirichlet(alpha)
    (one distribution expanded to every row): the Polya urn with those pseudo-counts."""
    train, test = _symbol_data()
    prior = None if alpha is None else {"transition": dist.Dirichlet(torch.tensor(alpha))}
    bm = _quiet_fit(ps.BayesianModel(ps.MarkovChain(order=1, num_symbols=3), num_samples=300,
                                     warmup_steps=150, prior=prior), train, seed=0)
    f, tr = transition_counts(ps.Sequences.from_list(train), 3)
    rows = 1.0 if alpha is None else torch.tensor(alpha, dtype=F64)
    prior = torch.cat([1 + f[None], rows + tr]).numpy()
    steps = bm.log_prob_steps(test[0])
    se = bm.monte_carlo_se(test)
    x = test[0]
    new = np.zeros_like(prior)
    for t in range(len(x)):  # each step's urn: the counts of the fit and of x_<t
        row = 0 if t == 0 else 1 + x[t - 1]
        ref = math.log((prior[row, x[t]] + new[row, x[t]]) / (prior[row] + new[row]).sum())
        assert abs(float(steps[t]) - ref) < 0.1, (t, float(steps[t]), ref)
        new[row, x[t]] += 1
    total = _dirichlet_multinomial(prior, new)
    assert abs(float(bm.log_prob(test[0])) - total) < 4 * se + 0.01, (total, se)


@pytest.mark.slow
def test_one_state_hmm_posterior_predictive_is_dirichlet_multinomial():
    train, test = _symbol_data()
    bm = _quiet_fit(ps.BayesianModel(ps.HiddenMarkovModel(1, num_symbols=3), num_samples=300,
                                     warmup_steps=150), train, seed=0)
    prior = 1.0 + np.bincount(np.concatenate(train), minlength=3)[None]
    total = _dirichlet_multinomial(prior, np.bincount(test[0], minlength=3)[None])
    se = bm.monte_carlo_se(test)
    assert abs(float(bm.log_prob(test[0])) - total) < 4 * se + 0.01, (total, se)


def _ar1_quadrature(y: np.ndarray) -> np.ndarray:
    """Exact log p(y_t | y_<t) of the AR(1) posterior predictive under mean ~ N(0, 5^2),
    pacf ~ U(-1, 1), log noise_var ~ N(0, 1), by midpoint quadrature on a 3-D grid."""
    mu = np.linspace(y.mean() - 4, y.mean() + 4, 121)[:, None, None]
    phi = (np.arange(160) + 0.5)[None, :, None] / 80 - 1
    logv = np.linspace(-3, 3, 101)[None, None, :]
    v = np.exp(logv)
    log_prior = -0.5 * (mu / 5) ** 2 - 0.5 * logv**2
    marg = v / (1 - phi**2)
    cum = log_prior - 0.5 * (np.log(2 * np.pi * marg) + (y[0] - mu) ** 2 / marg)
    out = [logsumexp(cum) - logsumexp(log_prior)]
    for t in range(1, len(y)):
        e = y[t] - mu - phi * (y[t - 1] - mu)
        new = cum - 0.5 * (np.log(2 * np.pi * v) + e**2 / v)
        out.append(logsumexp(new) - logsumexp(cum))
        cum = new
    return np.array(out)


@pytest.mark.slow
def test_leave_future_out_equals_exact_refits_by_quadrature():
    """LFO scores of the held-out tail equal the exact one-step posterior predictives (the
    posterior refitted on y_<t at every t, integrated on a grid) within Monte Carlo error;
    with a threshold of -inf the refit path is exercised and still agrees."""
    y = _ar_series(24, seed=2)
    k = 18
    exact = _ar1_quadrature(y)
    prior = {"mean": dist.Normal(0.0, 5.0), "noise_var": dist.LogNormal(0.0, 1.0)}
    for threshold, n_held in ((0.7, 6), (-math.inf, 2)):
        yy = y[: k + n_held]
        bm = _quiet_fit(ps.BayesianModel(ps.AutoRegressive(1), num_samples=400,
                                         warmup_steps=200, prior=prior,
                                         lfo_threshold=threshold), yy[:k], seed=1)
        steps = bm.log_prob_steps(yy)[k:].numpy()
        assert np.abs(steps - exact[k: k + n_held]).max() < 0.06, (steps, exact[k:])
        if threshold < 0:
            assert [r["step"] for r in bm.lfo_refits] == [k + 1]
            seqs = ps.Sequences.from_list([yy])
            lp = bm._step_predictive(seqs).log_prob(seqs.values)[0, k:]
            torch.testing.assert_close(lp, bm.log_prob_steps(yy)[k:], rtol=0, atol=1e-9)
        else:
            assert bm.lfo_refits == []


@pytest.mark.slow
def test_nile_local_level_converges_with_two_chains():
    nile = ps.datasets.nile()
    bm = ps.BayesianModel(ps.LinearGaussianSSM.local_level(), num_samples=150,
                          warmup_steps=150, num_chains=2)
    _quiet_fit(bm, nile, seed=0)
    table = bm.diagnostics()
    assert set(table.index) == {"level_var", "obs_var"} and table.attrs["num_chains"] == 2
    assert (table["r_hat"] < 1.05).all(), table
    assert (table["ess"] > 50).all(), table
    # posterior medians near Durbin & Koopman's maximum-likelihood estimates (15099, 1469)
    med = {k: float(v.median()) for k, v in bm._sites.items()}
    assert 8000 < med["obs_var"] < 25000 and 300 < med["level_var"] < 6000, med


def test_fast_local_level_model_equals_the_family_pyro_model():
    """The dense differenced likelihood used for the diffuse local level gives the same
    joint density (priors and Kalman likelihood) as LinearGaussianSSM.pyro_model, on a
    ragged batch, and the same sites."""
    import pyro.poutine as poutine

    from probseq.bayes.families import local_level_diffuse_log_prob

    rng = np.random.default_rng(0)
    data = ps.Sequences.from_list([np.cumsum(rng.normal(size=n)) + rng.normal(size=n)
                                   for n in (30, 7, 1)])
    ll = ps.LinearGaussianSSM.local_level()
    fast = ps.BayesianModel(ll)._pyro_function(data)
    slow = ll.pyro_model(data)
    for q, r in ((0.5, 1.3), (2.0, 0.01)):
        sites = {"level_var": torch.tensor(q, dtype=F64), "obs_var": torch.tensor(r, dtype=F64)}
        a = poutine.trace(poutine.condition(fast, data=sites)).get_trace()
        b = poutine.trace(poutine.condition(slow, data=sites)).get_trace()
        assert abs(float(a.log_prob_sum() - b.log_prob_sum())) < 1e-8
        ref = ps.LinearGaussianSSM.local_level(q, r).log_prob(data).sum()
        got = sum(local_level_diffuse_log_prob(torch.diff(data[i]), sites["level_var"],
                                               sites["obs_var"]) for i in range(3))
        assert abs(float(got - ref)) < 1e-8
