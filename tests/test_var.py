"""VectorAutoRegressive: the exact joint against a dense multivariate normal of the stacked
sequence (scipy), fits against statsmodels VAR on macrodata and OLS, sampling, impulse
responses, degenerate data, scale equivariance, files."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.regression.linear_model import OLS
from statsmodels.tsa.api import VAR

import probseq
from probseq import Sequences, VectorAutoRegressive

COEF = np.array([[[0.5, 0.1, 0.0], [-0.2, 0.3, 0.1], [0.05, 0.0, 0.4]],
                 [[-0.1, 0.0, 0.05], [0.1, -0.2, 0.0], [0.0, 0.1, 0.1]]])
INTERCEPT = np.array([0.3, -1.0, 2.0])
NOISE = np.array([[1.0, 0.3, -0.2], [0.3, 0.8, 0.1], [-0.2, 0.1, 1.5]])


def _simulate(intercept, coef, noise_cov, length, rng, burn=200):
    p, d = coef.shape[0], intercept.shape[0]
    y = np.zeros((length + burn, d))
    e = rng.multivariate_normal(np.zeros(d), noise_cov, size=length + burn)
    for t in range(p, length + burn):
        y[t] = intercept + sum(coef[i] @ y[t - 1 - i] for i in range(p)) + e[t]
    return y[burn:]


def _stacked_cov(coef, noise_cov, t, n_terms=400):
    """The covariance of t stacked vectors: Gamma(h) = sum_j Psi_{j+h} Sigma Psi_j^T from the
    MA(infinity) weights Psi_j, truncated at 400 terms (the weights decay like radius^j with
    radius ~ 0.6 here: the omitted terms are below 1e-80)."""
    p, d = coef.shape[0], noise_cov.shape[0]
    psi = [np.eye(d)]
    while len(psi) < n_terms + t:
        j = len(psi)
        psi.append(sum((coef[i - 1] @ psi[j - i] for i in range(1, min(j, p) + 1)),
                       np.zeros((d, d))))
    gamma = [sum(psi[j + h] @ noise_cov @ psi[j].T for j in range(n_terms)) for h in range(t)]
    cov = np.zeros((t * d, t * d))
    for a in range(t):
        for b in range(t):
            cov[a * d:(a + 1) * d, b * d:(b + 1) * d] = gamma[a - b] if a >= b else gamma[b - a].T
    return cov


def _dense_log_prob(y, intercept, coef, noise_cov):
    """The whole stacked sequence as one multivariate normal (scipy), its covariance from the
    MA(infinity) weights, independent of probseq."""
    t, d = y.shape
    mean = np.linalg.solve(np.eye(d) - coef.sum(0), intercept)
    return stats.multivariate_normal(np.tile(mean, t), _stacked_cov(coef, noise_cov, t)).logpdf(
        y.reshape(-1))


@pytest.mark.parametrize("p", [0, 1, 2])
def test_log_prob_equals_dense_multivariate_normal(p):
    coef = COEF[:p]
    m = VectorAutoRegressive.from_params(INTERCEPT, coef, NOISE)
    rng = np.random.default_rng(p)
    batch = [_simulate(INTERCEPT, coef, NOISE, t, rng) for t in (1, 2, 3, 6)]
    lp = m.log_prob(batch)
    ref = np.array([_dense_log_prob(y, INTERCEPT, coef, NOISE) for y in batch])
    assert np.abs(lp.numpy() - ref).max() < 1e-9 * np.abs(ref).max()
    steps = m.log_prob_steps(batch)
    torch.testing.assert_close(steps.sum(-1), lp, rtol=0, atol=1e-10)
    torch.testing.assert_close(lp, torch.cat([m.log_prob([y]) for y in batch]), rtol=1e-13,
                               atol=0)
    assert m.num_params == 3 + p * 9 + 6


def _macro_growth():
    from statsmodels.datasets import macrodata

    data = macrodata.load_pandas().data[["realgdp", "realcons", "realinv"]]
    return np.diff(np.log(data.to_numpy()), axis=0)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_fit_equals_statsmodels_var_on_macrodata(p):
    y = _macro_growth()
    m = VectorAutoRegressive(order=p).fit(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = VAR(y).fit(p, trend="c")
    par = m.params
    assert np.allclose(par["intercept"].numpy(), ref.intercept, rtol=1e-8, atol=1e-12)
    assert np.allclose(par["coef"].numpy(), ref.coefs, rtol=1e-8, atol=1e-10)
    assert np.allclose(par["noise_cov"].numpy(), ref.sigma_u_mle, rtol=1e-8, atol=1e-16)
    # The conditional log-likelihood of statsmodels (given the first p vectors) is the sum of
    # our steps after the first p.
    steps = m.log_prob_steps(y).numpy()
    assert steps[p:].sum() == pytest.approx(ref.llf, rel=1e-10)
    # Impulse responses equal statsmodels' (plain, and orthogonalised by the Cholesky factor
    # of the maximum-likelihood noise covariance; statsmodels' default uses the
    # degrees-of-freedom-corrected one).
    assert np.allclose(m.impulse_responses(8).numpy(), ref.irf(8).irfs, atol=1e-12)
    chol = np.linalg.cholesky(ref.sigma_u_mle)
    assert np.allclose(m.impulse_responses(8, orthogonal=True).numpy(),
                       ref.orth_ma_rep(8, P=chol), atol=1e-12)


def test_pooled_fit_equals_ols_on_a_hand_built_design():
    rng = np.random.default_rng(3)
    p = 2
    series = [_simulate(INTERCEPT, COEF, NOISE, int(n), rng) for n in rng.integers(1, 40, 30)]
    rows, targets = [], []
    for y in series:
        for t in range(p, len(y)):
            rows.append(np.r_[1.0, y[t - 1], y[t - 2]])
            targets.append(y[t])
    design, targets = np.array(rows), np.array(targets)
    m = VectorAutoRegressive(order=p).fit(series)
    for k in range(3):
        ref = OLS(targets[:, k], design).fit()
        assert m.params["intercept"][k].item() == pytest.approx(ref.params[0], abs=1e-10)
        fitted_row = m.params["coef"].numpy()[:, k, :].reshape(-1)
        assert np.allclose(fitted_row, ref.params[1:], atol=1e-10)
    resid = targets - design @ np.linalg.lstsq(design, targets, rcond=None)[0]
    assert np.allclose(m.params["noise_cov"].numpy(), resid.T @ resid / len(targets),
                       atol=1e-10)


def test_short_sequences_and_a_single_vector():
    m = VectorAutoRegressive.from_params(INTERCEPT, COEF, NOISE)
    mean = m.stationary_mean.numpy()
    assert np.allclose(mean, np.linalg.solve(np.eye(3) - COEF.sum(0), INTERCEPT))
    one = np.array([[0.1, -0.5, 2.5]])
    ref = _dense_log_prob(one, INTERCEPT, COEF, NOISE)
    assert m.log_prob([one]).item() == pytest.approx(ref, rel=1e-10)  # [x]: one short sequence


def test_non_stationary_models_refuse_to_score():
    explosive = np.array([[[1.05, 0.0], [0.0, 0.5]]])
    m = VectorAutoRegressive.from_params([0.0, 0.0], explosive, np.eye(2))
    with pytest.raises(ValueError, match="not stationary"):
        m.log_prob(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="not stationary"):
        m.sample(2, 4)
    s = m.sample(2, 6, prefix=[np.ones((2, 2))], seed=0)
    assert s.values.shape == (2, 6, 2)
    # Forecasts continue the recursion from the last p vectors (no stationary start needed).
    fc = m.forecast([np.ones((3, 2))], 2)
    assert np.allclose(fc.mean[0].numpy(), [[1.05, 0.5], [1.05**2, 0.25]])
    assert np.allclose(fc.cov[0, 1].numpy(), np.diag([1 + 1.05**2, 1 + 0.25]))
    rng = np.random.default_rng(0)
    growth = np.cumprod(np.full(150, 1.03))[:, None] * np.ones((1, 2)) + rng.normal(size=(150, 2))
    fitted = VectorAutoRegressive(order=1).fit(growth)
    with pytest.raises(ValueError, match="not stationary"):
        fitted.log_prob(growth)


def test_sampler_moments_and_prefix():
    m = VectorAutoRegressive.from_params(INTERCEPT, COEF, NOISE)
    n = 20_000
    y = m.sample(n, 3, seed=0).values.numpy()  # [n, 3, D]
    mean = m.stationary_mean.numpy()
    cov = m._moments[1]  # [2 D, 2 D] stationary covariance of two consecutive vectors
    sd = np.sqrt(np.diag(cov))
    first = y[:, :2].reshape(n, -1)
    assert np.abs(first.mean(0) - np.tile(mean, 2)).max() < 5 * sd.max() / np.sqrt(n)
    assert np.abs(np.cov(first.T) - cov).max() < 5 * cov.max() * np.sqrt(2 / n)
    prefix = np.array([[0.5, -1.0, 2.0], [0.1, 0.2, 0.3]])
    s = m.sample(n, 3, prefix=[prefix], seed=1).values.numpy()
    assert np.array_equal(s[:, :2], np.broadcast_to(prefix, (n, 2, 3)))
    expected = INTERCEPT + COEF[0] @ prefix[1] + COEF[1] @ prefix[0]
    assert np.abs(s[:, 2].mean(0) - expected).max() < 5 * np.sqrt(NOISE.diagonal().max() / n)
    assert np.abs(np.cov(s[:, 2].T) - NOISE).max() < 5 * NOISE.max() * np.sqrt(2 / n)


@pytest.mark.parametrize("kind", ["constant_coordinate", "exact_relation", "linear"])
def test_exactly_predictable_data_are_refused(kind):
    rng = np.random.default_rng(1)
    y = _simulate(INTERCEPT[:2], COEF[:1, :2, :2], NOISE[:2, :2], 80, rng)
    if kind == "constant_coordinate":
        y[:, 1] = 4.2e5
        match = "coordinate 1 of the data is constant"
    elif kind == "exact_relation":
        y = np.hstack([y, y[:, :1] - 2.0 * y[:, 1:]])
        match = "exactly predictable by a VAR"
    else:
        y = np.hstack([y, 1e3 + 7.0 * np.arange(80.0)[:, None]])
        match = "exactly predictable by a VAR"
    with pytest.raises(ValueError, match=match):
        VectorAutoRegressive(order=1).fit(y)
    with pytest.raises(ValueError, match=match):
        VectorAutoRegressive(order=1).fit([y, y[10:50]])
    with pytest.raises(ValueError, match="needs at least"):
        VectorAutoRegressive(order=2).fit(y[:5])


def test_from_params_validates():
    with pytest.raises(ValueError, match="not positive definite"):
        VectorAutoRegressive.from_params([0, 0], np.zeros((1, 2, 2)), [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="not symmetric"):
        VectorAutoRegressive.from_params([0, 0], np.zeros((1, 2, 2)), [[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"coef must have shape \[p, 2, 2\]"):
        VectorAutoRegressive.from_params([0, 0], np.zeros((2, 2)), np.eye(2))
    with pytest.raises(ValueError, match="noise_cov must have shape"):
        VectorAutoRegressive.from_params([0, 0], np.zeros((1, 2, 2)), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        VectorAutoRegressive.from_params([0, np.nan], np.zeros((1, 2, 2)), np.eye(2))
    with pytest.raises(ValueError, match="rounding level"):
        VectorAutoRegressive.from_params([1.0, 0.0], np.zeros((1, 2, 2)), np.diag([1e-31, 1.0]))
    m = VectorAutoRegressive.from_params([0, 0], np.zeros((1, 2, 2)), np.eye(2))
    with pytest.raises(ValueError, match="D=2"):
        m.log_prob(np.zeros((4, 3)))


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1e3, 1e6])
def test_scale_equivariance(scale):
    rng = np.random.default_rng(2)
    x = [_simulate(INTERCEPT, COEF, NOISE, n, rng) for n in (90, 40)]
    y = _simulate(INTERCEPT, COEF, NOISE, 30, rng)
    for data in (x[0], x):
        base = VectorAutoRegressive(order=2).fit(data)
        scaled_data = [scale * s for s in data] if isinstance(data, list) else scale * data
        scaled = VectorAutoRegressive(order=2).fit(scaled_data)
        b, s = base.params, scaled.params
        assert np.allclose(s["intercept"].numpy(), scale * b["intercept"].numpy(), rtol=1e-8)
        assert np.allclose(s["coef"].numpy(), b["coef"].numpy(), rtol=1e-8, atol=1e-12)
        assert np.allclose(s["noise_cov"].numpy(), scale**2 * b["noise_cov"].numpy(), rtol=1e-8)
        shift = -y.size * np.log(scale)
        assert scaled.log_prob(scale * y).item() == pytest.approx(
            base.log_prob(y).item() + shift, abs=1e-7 * abs(shift) + 1e-8)


def test_univariate_series_and_files(tmp_path):
    rng = np.random.default_rng(4)
    y = _simulate(np.array([0.5]), np.array([[[0.6]], [[-0.2]]]), np.eye(1), 200, rng)[:, 0]
    m = VectorAutoRegressive(order=2).fit(y)
    ar = probseq.AutoRegressive(order=2).fit([y, y[:1]])  # the pooled least squares path
    assert m.params["coef"].numpy().reshape(-1) == pytest.approx(ar.params["coef"].numpy(),
                                                                  abs=1e-10)
    assert m.log_prob(y).item() == pytest.approx(ar.log_prob(y).item(), rel=1e-10)
    assert m.sample(2, 5, seed=0).values.shape == (2, 5)
    m.save(tmp_path / "var1.pt")
    assert torch.equal(probseq.load(tmp_path / "var1.pt").log_prob(y), m.log_prob(y))
    y3 = _macro_growth()
    m3 = VectorAutoRegressive(order=2).fit(y3)
    m3.save(tmp_path / "var.pt")
    loaded = probseq.load(tmp_path / "var.pt")
    assert torch.equal(loaded.log_prob(y3), m3.log_prob(y3))
    assert loaded.sample(3, 6, seed=1) == m3.sample(3, 6, seed=1)
    assert loaded.get_config() == m3.get_config() == {"order": 2, "noise_estimate": "mle"}
    padded = Sequences.from_list([y3[:10], y3[:4]])
    torch.testing.assert_close(m3.log_prob(padded), torch.stack(
        [m3.log_prob(y3[:10]), m3.log_prob(y3[:4])]), rtol=1e-13, atol=0)


def test_select_var_order_finds_the_simulated_order():
    from probseq.selection import select_var_order

    rng = np.random.default_rng(6)
    y = _simulate(INTERCEPT, COEF, NOISE, 600, rng)
    sel = select_var_order(y, orders=range(1, 5))
    assert sel.best == 2
    assert sel.table.loc[2, "num_params"] == 3 + 2 * 9 + 6
    assert sel.table.loc[2, "log_lik"] == pytest.approx(sel.model.log_prob(y).item(), rel=1e-12)


# ------------------------------------------------------------------ predictive distributions
def test_forecast_equals_statsmodels_var_forecast():
    y = _macro_growth()
    p, horizon = 2, 12
    m = VectorAutoRegressive(order=p).fit(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = VAR(y).fit(p, trend="c")
    dist = m._forecast(Sequences.from_list([y]), horizon)
    assert dist.batch_shape == (1, horizon) and dist.event_shape == (3,)
    assert np.allclose(dist.mean[0].numpy(), ref.forecast(y[-p:], horizon), rtol=1e-8,
                       atol=1e-12)
    # Forecast covariances sum_{j < h} Psi_j Sigma Psi_j^T from statsmodels' MA weights, with
    # the maximum-likelihood Sigma (statsmodels' own mse() uses the df-corrected one).
    psi = ref.ma_rep(horizon)
    expected = np.cumsum([w @ ref.sigma_u_mle @ w.T for w in psi[:horizon]], axis=0)
    assert np.allclose(dist.covariance_matrix[0].numpy(), expected, rtol=1e-8, atol=1e-14)


def test_forecast_of_a_sequence_shorter_than_the_order():
    m = VectorAutoRegressive.from_params(INTERCEPT, COEF, NOISE)
    y = np.array([[0.2, -1.5, 3.0]])
    horizon, d = 4, 3
    dist = m._forecast(Sequences.from_list([y]), horizon)
    cov = _stacked_cov(COEF, NOISE, 1 + horizon)
    mean = np.tile(np.linalg.solve(np.eye(d) - COEF.sum(0), INTERCEPT), 1 + horizon)
    known, rest = slice(0, d), slice(d, None)
    gain = np.linalg.solve(cov[known, known], cov[known, rest]).T
    cond_mean = mean[rest] + gain @ (y[0] - mean[known])
    cond_cov = cov[rest, rest] - gain @ cov[known, rest]
    for h in range(horizon):
        block = slice(h * d, (h + 1) * d)
        assert np.allclose(dist.mean[0, h].numpy(), cond_mean[block], atol=1e-10)
        assert np.allclose(dist.covariance_matrix[0, h].numpy(), cond_cov[block, block],
                           atol=1e-10)


def test_step_predictive_scores_the_steps():
    m = VectorAutoRegressive.from_params(INTERCEPT, COEF, NOISE)
    rng = np.random.default_rng(9)
    seqs = Sequences.from_list([_simulate(INTERCEPT, COEF, NOISE, n, rng) for n in (12, 1, 5)])
    dist = m._step_predictive(seqs)
    assert dist.batch_shape == (3, 12) and dist.event_shape == (3,)
    scores = torch.where(seqs.mask, dist.log_prob(seqs.values), 0.0)
    torch.testing.assert_close(scores, m.log_prob_steps(seqs), rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.integers(1, 3),
    dim=st.integers(1, 3),
    radius=st.floats(0.0, 0.999),
    log_cond=st.floats(0.0, 6.0),
    log_scale=st.floats(-6.0, 6.0),
    length=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_log_prob_equals_dense_normal_over_random_parameters(order, dim, radius, log_cond,
                                                              log_scale, length, seed):
    """Random coefficients rescaled to a companion spectral radius up to 0.999, noise
    covariances with condition numbers up to 1e6 and scales 1e-6..1e6; the reference is the
    stacked sequence as one multivariate normal with statsmodels' VARProcess autocovariances
    (vec formula, independent of the Lyapunov solver used here)."""
    from statsmodels.tsa.vector_ar.var_model import VARProcess

    from probseq.autoregressive import vector

    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(order, dim, dim))
    r0 = vector.spectral_radius(coef)
    # Scaling A_i by s^i scales every companion eigenvalue by s.
    s = radius / r0 if r0 > 0 else 0.0
    coef = coef * s ** np.arange(1, order + 1)[:, None, None]
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scale = 10.0**log_scale
    noise = scale**2 * (q * np.logspace(0, -log_cond, dim)) @ q.T
    noise = 0.5 * (noise + noise.T)
    intercept = scale * rng.normal(size=dim)
    m = VectorAutoRegressive.from_params(intercept, coef, noise)
    y = m.sample(1, length, seed=seed).values.numpy()[0].reshape(length, dim)
    acf = VARProcess(coef, None, noise).acf(max(length, order))
    cov = np.zeros((length * dim, length * dim))
    for a in range(length):
        for b in range(length):
            cov[a * dim:(a + 1) * dim, b * dim:(b + 1) * dim] = (
                acf[a - b] if a >= b else acf[b - a].T)
    mean = np.linalg.solve(np.eye(dim) - coef.sum(0), intercept)
    ref = stats.multivariate_normal(np.tile(mean, length), cov, allow_singular=True).logpdf(
        y.reshape(-1))
    got = m.log_prob([y.reshape(length, dim)]).item()
    # Over 300 random draws the largest relative difference was 1.6e-11.
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-8 * length * dim)


def test_public_forecast_and_predict():
    y = _macro_growth()
    m = VectorAutoRegressive(order=2).fit(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = VAR(y).fit(2, trend="c")
    fc = m.forecast(y, 6)
    assert fc.method == "exact" and fc.mean.shape == (6, 3)
    assert np.allclose(fc.mean.numpy(), ref.forecast(y[-2:], 6), rtol=1e-8, atol=1e-12)
    psi = ref.ma_rep(6)
    expected = np.cumsum([w @ ref.sigma_u_mle @ w.T for w in psi[:6]], axis=0)
    assert np.allclose(fc.cov.numpy(), expected, rtol=1e-8, atol=1e-14)
    pred = m.predict(y).numpy()
    assert np.allclose(pred[2:], ref.fittedvalues, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_noise_estimate_unbiased_matches_statsmodels_forecast_interval(scale):
    """Issue 23: the MLE noise covariance by default (sigma_u_mle), the degrees-of-freedom
    adjusted one on request (sigma_u, what statsmodels' VAR.forecast_interval uses)."""
    rng = np.random.default_rng(7)
    y = _simulate(INTERCEPT, COEF, NOISE, 120, rng) * scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = VAR(y).fit(2, trend="c")
    mle = VectorAutoRegressive(2).fit(y)
    adj = VectorAutoRegressive(2, noise_estimate="unbiased").fit(y)
    np.testing.assert_allclose(mle.params["noise_cov"], ref.sigma_u_mle, rtol=1e-8)
    np.testing.assert_allclose(adj.params["noise_cov"], ref.sigma_u, rtol=1e-8)
    np.testing.assert_allclose(mle.noise_cov_unbiased, ref.sigma_u, rtol=1e-8)
    np.testing.assert_allclose(adj.noise_cov_mle, ref.sigma_u_mle, rtol=1e-8)
    mean, lo, hi = ref.forecast_interval(y[-2:], 3, alpha=0.05)
    f = adj.forecast(y, 3, level=0.95)
    np.testing.assert_allclose(f.mean, mean, rtol=1e-7, atol=1e-9 * scale)
    np.testing.assert_allclose(f.lower, lo, rtol=1e-7, atol=1e-9 * scale)
    np.testing.assert_allclose(f.upper, hi, rtol=1e-7, atol=1e-9 * scale)
    assert VectorAutoRegressive(2, noise_estimate="unbiased").get_config()["noise_estimate"] \
        == "unbiased"
    with pytest.raises(ValueError, match="noise_estimate must be"):
        VectorAutoRegressive(2, noise_estimate="df")
