"""BayesianModel of VectorAutoRegressive and ARIMA: their pyro_models and posteriors.

References: the pyro models' log joint minus their log prior against ``log_prob`` of
``from_params`` at the same values; the stationary VAR parametrisation against scipy's
Lyapunov solution and the univariate Durbin-Levinson map; the ARIMA's central-difference
gradient against autograd of a dense MA(1) Gaussian density; posteriors against numerical
integration on a grid (ARIMA(0,0,1): 2-D; a VAR(1) of one coordinate: 3-D, with scipy's
normal density as the likelihood). NUTS runs are short; the statistical ones are slow.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import probseq as ps
from probseq.autoregressive import vector
from probseq.autoregressive.likelihood import torch_coef_from_pacf
from probseq.bayes import families
from probseq.bayes.model import _mix, _splice

F64 = torch.float64


def _quiet_fit(model, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # low ESS of deliberately short runs
        return model.fit(data, progress=False, **kw)


def _log_lik_from_trace(model, data, sites):
    """The pyro model's log joint at ``sites`` minus its log prior (every sample site's
    log density but the likelihood factor's)."""
    tr = poutine.trace(poutine.condition(lambda: model.pyro_model(data), data=sites)
                       ).get_trace()
    prior = sum(site["fn"].log_prob(site["value"]).sum() for name, site in tr.nodes.items()
                if site["type"] == "sample" and name != "log_lik")
    assert set(sites) == {n for n, s in tr.nodes.items()
                          if s["type"] == "sample" and n != "log_lik"}
    return float(tr.log_prob_sum() - prior)


def _var_model():
    return ps.VectorAutoRegressive.from_params(
        intercept=[0.1, -0.2], coef=[[[0.5, 0.1], [0.2, 0.3]]],
        noise_cov=[[1.0, 0.3], [0.3, 0.5]])


# ------------------------------------------------------------------------ likelihoods
@pytest.mark.parametrize("p, d", [(0, 2), (1, 1), (1, 2), (2, 3), (3, 2)])
def test_var_pyro_log_joint_minus_prior_is_log_prob(p, d):
    gen = torch.Generator().manual_seed(10 * p + d)
    truth = ps.VectorAutoRegressive.from_params(
        intercept=torch.randn(d, generator=gen, dtype=F64),
        coef=0.3 * torch.eye(d, dtype=F64).expand(p, d, d),
        noise_cov=torch.eye(d, dtype=F64) + 0.2)
    s = truth.sample(3, 15, seed=1).values
    data = ps.Sequences.from_list([s[0], s[1][:6], s[2][:1]])
    sites = {"mean": torch.randn(d, generator=gen, dtype=F64),
             "noise_scale": torch.rand(d, generator=gen, dtype=F64) + 0.5}
    if p:
        sites["pacf_free"] = torch.randn(p, d, d, generator=gen, dtype=F64)
    if d > 1:
        corr = torch.eye(d, dtype=F64) * 0.6 + 0.4
        sites["noise_corr_chol"] = torch.linalg.cholesky(corr)
    got = _log_lik_from_trace(ps.VectorAutoRegressive(p), data, sites)
    params = families.params_from_sites(ps.VectorAutoRegressive(p), sites, data)
    ref = float(ps.VectorAutoRegressive.from_params(**params).log_prob(data).sum())
    assert abs(got - ref) < 1e-9, (got, ref)


@pytest.mark.parametrize("order, seasonal, trend", [
    ((0, 0, 1), (0, 0, 0, 0), "n"),
    ((2, 0, 1), (0, 0, 0, 0), "c"),
    ((1, 1, 1), (1, 0, 1, 4), None),
    ((0, 1, 2), (0, 1, 1, 3), "c"),
])
def test_arima_pyro_log_joint_minus_prior_is_log_prob(order, seasonal, trend):
    truth = ps.ARIMA.from_params(order=order, seasonal_order=seasonal,
                                 ar=[0.4, -0.2][: order[0]], ma=[0.3, 0.1][: order[2]],
                                 seasonal_ar=[0.3][: seasonal[0]],
                                 seasonal_ma=[-0.2][: seasonal[2]], noise_var=2.0, mean=0.5)
    y = truth.sample(2, 40, seed=3).values.numpy()
    y[1, 17] = np.nan  # a gap: marginalised by the filter, in both
    data = [y[0], y[1, :30]]
    model = ps.ARIMA(order=order, seasonal_order=seasonal, trend=trend)
    names = dict(model.PACF_SITES)
    sizes = {"ar": order[0], "ma": order[2], "seasonal_ar": seasonal[0],
             "seasonal_ma": seasonal[2]}
    vals = iter([0.5, -0.3, 0.2, 0.7, -0.6, 0.1])
    sites = {names[k]: torch.tensor([next(vals) for _ in range(n)], dtype=F64)
             for k, n in sizes.items() if n}
    sites["noise_var"] = torch.tensor(1.7, dtype=F64)
    if model.trend == "c":
        sites["mean"] = torch.tensor(0.3, dtype=F64)
    got = _log_lik_from_trace(model, data, sites)
    params = families.params_from_sites(model, sites, None)
    member = families.build_member(model, params)
    ref = float(member.log_prob(data).sum())
    assert abs(got - ref) < 1e-9, (got, ref)
    # the MA polynomial of a draw is invertible, its AR polynomial stationary
    assert (np.abs(np.roots(np.r_[1.0, params["ma"].numpy()])) < 1).all()


def test_stationary_var_parametrisation():
    """Every draw is stationary; the recursion's autocovariances equal scipy's Lyapunov
    solution for the resulting coefficients and noise covariance (so Sigma is the noise
    covariance of that VAR); for D = 1 it is the AR's Durbin-Levinson map."""
    gen = torch.Generator().manual_seed(0)
    for p, d in ((1, 2), (2, 3), (3, 1), (2, 2)):
        free = 1.5 * torch.randn(p, d, d, generator=gen, dtype=F64)
        pacf = vector.pacf_from_free(free)
        assert float(torch.linalg.matrix_norm(pacf, ord=2).max()) < 1
        m = torch.randn(d, d, generator=gen, dtype=F64)
        sigma = m @ m.T + 0.5 * torch.eye(d, dtype=F64)
        coef, init = vector.stationary_from_pacf(pacf, sigma)
        assert vector.spectral_radius(coef.numpy()) < 1
        ref = vector.initial_covariance(coef.numpy(), sigma.numpy())
        np.testing.assert_allclose(init.numpy(), ref, rtol=1e-8, atol=1e-10)
        if d == 1:
            torch.testing.assert_close(coef[:, 0, 0], torch_coef_from_pacf(pacf[:, 0, 0]),
                                       rtol=0, atol=1e-12)
    # gradients flow through the map (NUTS needs them)
    free = torch.randn(2, 2, 2, generator=gen, dtype=F64, requires_grad=True)
    coef, init = vector.stationary_from_pacf(vector.pacf_from_free(free),
                                             torch.eye(2, dtype=F64))
    (coef.sum() + init.sum()).backward()
    assert torch.isfinite(free.grad).all() and free.grad.abs().sum() > 0


def test_arima_gradient_matches_autograd_of_the_dense_ma1_density():
    """The likelihood factor's central-difference gradient in (ma_pacf, noise_var) equals
    autograd of the MA(1) Gaussian density with tridiagonal covariance."""
    y = ps.ARIMA.from_params(order=(0, 0, 1), ma=[0.5], noise_var=1.5).sample(
        1, 30, seed=0)[0].numpy()
    r = torch.tensor([-0.4], dtype=F64, requires_grad=True)
    s2 = torch.tensor(1.3, dtype=F64, requires_grad=True)
    tr = poutine.trace(poutine.condition(
        lambda: ps.ARIMA(order=(0, 0, 1), trend="n").pyro_model(y),
        data={"ma_pacf": r, "noise_var": s2})).get_trace()
    lik = tr.nodes["log_lik"]["fn"].log_prob(torch.zeros((), dtype=F64))
    got = torch.autograd.grad(lik, [r, s2])
    r2 = r.detach().clone().requires_grad_()
    v2 = s2.detach().clone().requires_grad_()
    theta = -r2[0]
    n = len(y)
    cov = v2 * ((1 + theta**2) * torch.eye(n, dtype=F64)
                + theta * (torch.diag(torch.ones(n - 1, dtype=F64), 1)
                           + torch.diag(torch.ones(n - 1, dtype=F64), -1)))
    ref_lik = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64), cov).log_prob(
        torch.as_tensor(y))
    ref = torch.autograd.grad(ref_lik, [r2, v2])
    assert abs(float(lik.detach()) - float(ref_lik.detach())) < 1e-9
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_refusals_and_prior_override():
    with pytest.raises(ValueError, match="complete differences"):
        ps.ARIMA(order=(0, 1, 1)).pyro_model(np.array([1.0, 2.0, 3.0, 4.0]))
    bm = ps.BayesianModel(ps.VectorAutoRegressive(1), prior={
        "noise_scale": dist.HalfNormal(torch.tensor(2.0, dtype=F64)),
        "noise_corr_chol": dist.LKJCholesky(2, torch.tensor(3.0, dtype=F64))})
    fn = bm._pyro_function(ps.Sequences.from_list([_var_model().sample(1, 10, seed=0)[0]]))
    tr = poutine.trace(fn).get_trace()
    assert isinstance(tr.nodes["noise_scale"]["fn"].base_dist, dist.HalfNormal)
    assert float(tr.nodes["noise_corr_chol"]["fn"].concentration) == 3.0
    back = ps.BayesianModel(**bm.get_config())  # priors, LKJ included, go through JSON
    assert float(back.prior["noise_corr_chol"].concentration) == 3.0
    ba = ps.BayesianModel(ps.ARIMA(order=(2, 0, 0)),
                          prior={"pacf": dist.Uniform(torch.tensor(0.0, dtype=F64),
                                                      torch.tensor(0.5, dtype=F64))})
    tr = poutine.trace(ba._pyro_function(ps.Sequences.from_list([np.sin(np.arange(12.0))])))
    site = tr.get_trace().nodes["pacf"]
    assert float(site["fn"].base_dist.high[0]) == 0.5 and (site["value"] < 0.5).all()


def test_mixtures_and_splices_of_multivariate_normals():
    """_mix of two draws' MultivariateNormals has density sum_s w_s N(x; s), per cell;
    _splice takes the second mixture's cells where asked."""
    gen = torch.Generator().manual_seed(0)
    locs = [torch.randn(2, 3, 2, generator=gen, dtype=F64) for _ in range(2)]
    tril = torch.linalg.cholesky(torch.tensor([[1.0, 0.4], [0.4, 2.0]], dtype=F64))
    dists = [torch.distributions.MultivariateNormal(m, scale_tril=tril.expand(2, 3, 2, 2))
             for m in locs]
    w = torch.rand(2, 3, 2, generator=gen, dtype=F64)
    lw = torch.log(w / w.sum(-1, keepdim=True))
    x = torch.randn(2, 3, 2, generator=gen, dtype=F64)
    mixed = _mix(dists, lw)
    ref = torch.logsumexp(lw + torch.stack([d.log_prob(x) for d in dists], -1), -1)
    torch.testing.assert_close(mixed.log_prob(x), ref, rtol=0, atol=1e-12)
    other = _mix(dists[::-1], lw)
    cells = torch.tensor([[True, False, False], [False, False, True]])
    spliced = _splice(mixed, other, cells)
    want = torch.where(cells, other.log_prob(x), mixed.log_prob(x))
    torch.testing.assert_close(spliced.log_prob(x), want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------ fitted posteriors
# The fitted posteriors below are short NUTS runs (20 draws): too few for Pareto k-hats to be
# meaningful, so leave-future-out never refits here (lfo_threshold=inf); refits are tested
# in test_bayes.py and are the same code for every family.
@pytest.fixture(scope="module")
def var_posterior():
    y = _var_model().sample(1, 40, seed=3)[0].numpy()
    bm = ps.BayesianModel(ps.VectorAutoRegressive(1), num_samples=20, warmup_steps=60,
                          lfo_threshold=math.inf)
    return _quiet_fit(bm, y[:32], seed=0), y


@pytest.fixture(scope="module")
def arima_posterior():
    truth = ps.ARIMA.from_params(order=(1, 1, 0), seasonal_order=(0, 0, 1, 4), ar=[0.5],
                                 seasonal_ma=[0.4], noise_var=2.0)
    y = truth.sample(1, 48, seed=5)[0].numpy() + 100.0
    bm = ps.BayesianModel(ps.ARIMA(order=(1, 1, 0), seasonal_order=(0, 0, 1, 4)),
                          num_samples=20, warmup_steps=60,
                          lfo_threshold=math.inf)
    return _quiet_fit(bm, y[:40], seed=0), y


@pytest.mark.slow
def test_var_posterior_scores_forecasts_and_saves(var_posterior, tmp_path):
    bm, y = var_posterior
    assert bm.draws["coef"].shape == (20, 1, 2, 2) and bm.num_params == 2 + 4 + 3
    assert all(vector.spectral_radius(c.numpy()) < 1 for c in bm.draws["coef"])
    assert (bm.draws["coef"].std(0) > 0).all()  # the chain moved
    new = [_var_model().sample(1, 12, seed=7)[0].numpy(), y[:5]]
    steps = bm.log_prob_steps(new)
    torch.testing.assert_close(steps.sum(-1), bm.log_prob(new), rtol=0, atol=1e-10)
    per_draw = torch.stack([m.log_prob(new) for m in bm.members])
    torch.testing.assert_close(bm.log_prob(new),
                               torch.logsumexp(per_draw, 0) - math.log(bm.num_draws),
                               rtol=0, atol=1e-10)
    # the one-step predictive mixture (of MultivariateNormals) has exactly these densities
    for data in (ps.Sequences.from_list(new), ps.Sequences.from_list([y])):
        lp = bm._step_predictive(data).log_prob(data.values)
        torch.testing.assert_close(torch.where(data.mask, lp, torch.zeros((), dtype=F64)),
                                   bm.log_prob_steps(data), rtol=0, atol=1e-9)
    # forecasts from the fitted series: uniform weights, total mean and covariance
    fc = bm.forecast(y[:32], 3)
    assert fc.method.startswith("posterior mixture over 20 draws") and "exact" in fc.method
    each = [m._forecast(ps.Sequences.from_list([y[:32]]), 3) for m in bm.members]
    means = torch.stack([d.mean[0] for d in each])  # [S, H, D]
    cov = (torch.stack([d.covariance_matrix[0] for d in each]).mean(0)
           + torch.einsum("shi,shj->hij", means - means.mean(0), means - means.mean(0))
           / len(each))
    torch.testing.assert_close(fc.mean, means.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(fc.std, torch.diagonal(cov, dim1=-2, dim2=-1).sqrt(),
                               rtol=0, atol=1e-10)
    bm.save(tmp_path / "var.pt")
    back = ps.load(tmp_path / "var.pt")
    for k, v in bm.draws.items():
        assert torch.equal(back.draws[k], v)
    assert torch.equal(back.log_prob_steps(new), steps)


@pytest.mark.slow
def test_var_posterior_in_compare_with_a_point_var(var_posterior):
    bm, y = var_posterior
    mle = ps.VectorAutoRegressive(1).fit(y[:32])
    table = ps.compare({"posterior": bm, "mle": mle}, y, fit_data=y[:32], start=32)
    assert table.loc["posterior", "score_kind"] == "monte carlo"
    assert table.loc["mle", "exact"] and not table.loc["posterior", "exact"]
    assert abs(table.loc["posterior", "log_lik"]
               - float(bm.log_prob_steps(y)[32:].sum())) < 1e-9
    assert 0 < table.loc["posterior", "mc_se"] < 1


def test_arima_posterior_scores_forecasts_and_saves(arima_posterior, tmp_path):
    bm, y = arima_posterior
    assert set(bm.draws) == {"ar", "ma", "seasonal_ar", "seasonal_ma", "noise_var"}
    assert bm.num_params == 3 and bm.num_diffuse_steps == 1
    assert bm.draws["ar"].std() > 0 and bm.draws["seasonal_ma"].std() > 0  # the chain moved
    new = [y[:20], y[5:]]
    steps = bm.log_prob_steps(new)
    assert (steps[:, 0] == 0).all()  # the diffuse step
    torch.testing.assert_close(steps.sum(-1), bm.log_prob(new), rtol=0, atol=1e-10)
    per_draw = torch.stack([m.log_prob(new) for m in bm.members])
    torch.testing.assert_close(bm.log_prob(new),
                               torch.logsumexp(per_draw, 0) - math.log(bm.num_draws),
                               rtol=0, atol=1e-10)
    fc = bm.forecast(y[:40], 4)
    each = [m.forecast(y[:40], 4) for m in bm.members]
    means = torch.stack([f.mean for f in each])
    var = torch.stack([f.std**2 for f in each]).mean(0) + means.var(0, correction=0)
    torch.testing.assert_close(fc.mean, means.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(fc.std, var.sqrt(), rtol=0, atol=1e-9)
    mle = ps.ARIMA(order=(1, 1, 0), seasonal_order=(0, 0, 1, 4)).fit(y[:40])
    table = ps.compare({"posterior": bm, "mle": mle}, y, fit_data=y[:40], start=40)
    assert table.loc["posterior", "score_kind"] == "monte carlo"
    assert abs(table.loc["posterior", "log_lik"]
               - float(bm.log_prob_steps(y)[40:].sum())) < 1e-9
    bm.save(tmp_path / "arima.pt")
    back = ps.load(tmp_path / "arima.pt")
    for k, v in bm.draws.items():
        assert torch.equal(back.draws[k], v)
    assert torch.equal(back.log_prob_steps(new), steps)


@pytest.mark.slow
def test_svi_fits_var_and_arima():
    y = _var_model().sample(1, 40, seed=3)[0].numpy()
    bm = ps.BayesianModel(ps.VectorAutoRegressive(1), method="svi", num_samples=30)
    bm.fit(y, seed=0, max_epochs=150, learning_rate=0.05)
    assert np.isfinite(bm.elbo_[-1]) and bm.elbo_[-1] > bm.elbo_[0]
    assert all(vector.spectral_radius(c.numpy()) < 1 for c in bm.draws["coef"])
    assert torch.isfinite(bm.log_prob(y))
    ya = ps.ARIMA.from_params(order=(1, 0, 1), ar=[0.5], ma=[0.3], noise_var=1.0,
                              mean=3.0).sample(1, 40, seed=0)[0].numpy()
    ba = ps.BayesianModel(ps.ARIMA(order=(1, 0, 1)), method="svi", num_samples=30)
    ba.fit(ya, seed=0, max_epochs=150, learning_rate=0.05)
    assert np.isfinite(ba.elbo_[-1]) and torch.isfinite(ba.log_prob(ya))
    assert abs(float(ba.draws["mean"].mean()) - float(np.mean(ya))) < 1.0


# ------------------------------------------------------------------------ grids (slow)
def _ma1_grid(y):
    """Posterior moments of (ma_1, noise_var) of ARIMA(0,0,1) without a mean under the
    default priors (ma_pacf ~ U(-1, 1), noise_var ~ LogNormal(log var y, 1)), on a grid in
    (ma_pacf, log noise_var); the likelihood is the dense MA(1) Gaussian (scipy)."""
    n = len(y)
    r = np.linspace(-1, 1, 402)[1:-1]
    v = np.linspace(math.log(np.var(y)) - 2.5, math.log(np.var(y)) + 2.5, 300)
    logdet, quad = np.empty(r.size), np.empty(r.size)
    for i, ri in enumerate(r):
        theta = -ri
        cov = ((1 + theta**2) * np.eye(n) + theta * (np.eye(n, k=1) + np.eye(n, k=-1)))
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, y)
        logdet[i], quad[i] = 2 * np.log(np.diag(chol)).sum(), z @ z
    s2 = np.exp(v)
    loglik = -0.5 * (n * math.log(2 * math.pi) + n * v[None, :] + logdet[:, None]
                     + quad[:, None] / s2[None, :])
    # LogNormal prior of s2 in log coordinates: Normal(v; log var y, 1)
    logpost = loglik + stats.norm.logpdf(v, math.log(np.var(y)), 1.0)[None, :]
    w = np.exp(logpost - logsumexp(logpost))
    ma = np.broadcast_to(-r[:, None], w.shape)
    sv = np.broadcast_to(s2[None, :], w.shape)
    out = {}
    for name, x in (("ma", ma), ("noise_var", sv)):
        m = (w * x).sum()
        out[name] = (m, math.sqrt((w * (x - m) ** 2).sum()))
    return out


@pytest.mark.slow
def test_arima_ma1_posterior_matches_grid_integration():
    y = ps.ARIMA.from_params(order=(0, 0, 1), ma=[0.5], noise_var=1.0).sample(
        1, 40, seed=4)[0].numpy()
    ref = _ma1_grid(y)
    bm = _quiet_fit(ps.BayesianModel(ps.ARIMA(order=(0, 0, 1), trend="n"), num_samples=300,
                                     warmup_steps=150), y, seed=0)
    ess = bm.diagnostics()["ess"]
    for name in ("ma", "noise_var"):
        draws = bm.draws[name].reshape(-1).numpy()
        mean, sd = ref[name]
        se = sd / math.sqrt(float(ess.min()))
        assert abs(draws.mean() - mean) < 4 * se, (name, draws.mean(), mean, se)
        assert abs(draws.std() / sd - 1) < 0.3, (name, draws.std(), sd)
    svi = ps.BayesianModel(ps.ARIMA(order=(0, 0, 1), trend="n"), method="svi",
                           num_samples=2000)
    svi.fit(y, seed=0, max_epochs=500, learning_rate=0.05)
    for name in ("ma", "noise_var"):  # a Gaussian guide: close, not exact
        mean, sd = ref[name]
        assert abs(float(svi.draws[name].mean()) - mean) < 0.3 * sd, name
        assert abs(float(svi.draws[name].std()) / sd - 1) < 0.4, name


def _var1_grid(y):
    """Posterior moments of (coef, noise_var, stationary mean) of a VAR(1) of one coordinate
    under the pyro_model's default priors, on a grid in (phi, log sigma, mu); the likelihood
    is the exact AR(1) density from scipy.stats.norm."""
    m0, sd0 = y.mean(), y.std()
    phi = np.linspace(-1, 1, 162)[1:-1][:, None, None]
    logs = np.linspace(math.log(sd0) - 1.2, math.log(sd0) + 0.8, 70)[None, :, None]
    mu = np.linspace(m0 - 4 * sd0, m0 + 4 * sd0, 81)[None, None, :]
    sigma = np.exp(logs)
    ll = stats.norm.logpdf(y[0], mu, sigma / np.sqrt(1 - phi**2))
    for t in range(1, len(y)):
        ll = ll + stats.norm.logpdf(y[t], mu + phi * (y[t - 1] - mu), sigma)
    # priors: pacf_free B = phi / sqrt(1 - phi^2) ~ N(0, 1) (Jacobian (1 - phi^2)^-3/2),
    # log sigma ~ N(log sd, 1), mu ~ N(mean, 3 sd)
    b = phi / np.sqrt(1 - phi**2)
    lp = (ll + stats.norm.logpdf(b) - 1.5 * np.log1p(-phi**2)
          + stats.norm.logpdf(logs, math.log(sd0), 1.0) + stats.norm.logpdf(mu, m0, 3 * sd0))
    w = np.exp(lp - logsumexp(lp))
    out = {}
    for name, x in (("coef", phi), ("noise_var", sigma**2), ("mean", mu)):
        x = np.broadcast_to(x, w.shape)
        m = (w * x).sum()
        out[name] = (m, math.sqrt((w * (x - m) ** 2).sum()))
    return out


@pytest.mark.slow
def test_var_posterior_of_one_coordinate_matches_grid_integration():
    y = ps.AutoRegressive.from_params(intercept=1.0, coef=[0.6], noise_var=2.0).sample(
        1, 40, seed=6)[0].numpy()
    ref = _var1_grid(y)
    bm = _quiet_fit(ps.BayesianModel(ps.VectorAutoRegressive(1), num_samples=300,
                                     warmup_steps=150), y, seed=0)
    ess = float(bm.diagnostics()["ess"].min())
    coef = bm.draws["coef"][:, 0, 0, 0].numpy()
    got = {"coef": coef, "noise_var": bm.draws["noise_cov"][:, 0, 0].numpy(),
           "mean": bm.draws["intercept"][:, 0].numpy() / (1 - coef)}
    for name, draws in got.items():
        mean, sd = ref[name]
        assert abs(draws.mean() - mean) < 4 * sd / math.sqrt(ess), (name, draws.mean(), mean)
        assert abs(draws.std() / sd - 1) < 0.3, (name, draws.std(), sd)
    # a model of 1-D series answers in 1-D, as the point VAR does
    assert bm.forecast(y, 2).mean.shape == (2,)


@pytest.mark.slow
def test_var_leave_future_out_refit_keeps_the_step_predictive_exact():
    """With lfo_threshold=-inf the second held-out step refits the posterior; the one-step
    predictive mixture (MultivariateNormals spliced from the refit) still has exactly the
    log_prob_steps densities, and compare states the refit."""
    y = _var_model().sample(1, 26, seed=8)[0].numpy()
    bm = _quiet_fit(ps.BayesianModel(ps.VectorAutoRegressive(1), num_samples=20,
                                     warmup_steps=60, lfo_threshold=-math.inf), y[:24],
                    seed=0)
    steps = bm.log_prob_steps(y)
    assert [r["step"] for r in bm.lfo_refits] == [25]
    seqs = ps.Sequences.from_list([y])
    lp = bm._step_predictive(seqs).log_prob(seqs.values)[0]
    torch.testing.assert_close(lp, steps, rtol=0, atol=1e-9)
    table = ps.compare({"posterior": bm, "mle": ps.VectorAutoRegressive(1).fit(y[:24])}, y,
                       fit_data=y[:24], start=24)
    assert "1 refit(s)" in table.attrs["verdict"]
