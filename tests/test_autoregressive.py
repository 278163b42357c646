"""AutoRegressive: statsmodels AutoReg / OLS fits, the exact likelihood against statsmodels'
ARIMA Kalman filter and scipy, numerical integration, stationarity, the sampler, files."""

import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from statsmodels.regression.linear_model import OLS
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.arima_process import arma_acovf

import probseq
from probseq import AutoRegressive, Sequences

CASES = {
    0: (0.4, []),
    1: (0.7, [0.6]),
    2: (-0.3, [0.5, -0.3]),
    3: (1.2, [0.4, 0.2, -0.3]),
}
NOISE_VAR = 1.3


def _simulate(coef, intercept, noise_var, length, rng, burn=200):
    p = len(coef)
    y = np.zeros(length + burn)
    e = rng.normal(scale=np.sqrt(noise_var), size=length + burn)
    for t in range(p, length + burn):
        y[t] = intercept + sum(coef[j] * y[t - 1 - j] for j in range(p)) + e[t]
    return y[burn:]


def _acov(coef, noise_var, lags):
    """statsmodels' autocovariances of an AR process (independent of probseq)."""
    return arma_acovf(np.r_[1.0, -np.asarray(coef, dtype=float)], np.array([1.0]),
                      nobs=lags, sigma2=noise_var)


def _arima_loglike(y, intercept, coef, noise_var):
    """Exact Gaussian log-likelihood from statsmodels' Kalman filter (const is the mean)."""
    mean = intercept / (1 - sum(coef))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ARIMA(y, order=(len(coef), 0, 0), trend="c")
        return model.loglike(np.r_[mean, coef, noise_var])


@pytest.mark.parametrize("p", [1, 2, 3])
def test_fit_equals_statsmodels_autoreg(p):
    intercept, coef = CASES[p]
    y = _simulate(coef, intercept, NOISE_VAR, 800, np.random.default_rng(p))
    m = AutoRegressive(order=p).fit(y)
    ref = AutoReg(y, lags=p, trend="c").fit()
    assert m.params["intercept"].item() == pytest.approx(ref.params[0], abs=1e-6)
    assert np.allclose(m.params["coef"].numpy(), ref.params[1:], rtol=0, atol=1e-6)
    assert m.params["noise_var"].item() == pytest.approx(ref.sigma2, rel=1e-10)
    # sigma2 is the maximum-likelihood estimate SSR / nobs.
    assert ref.sigma2 == pytest.approx(np.sum(ref.resid**2) / ref.nobs, rel=1e-12)
    assert m.num_params == p + 2


def test_pooled_fit_equals_ols_on_a_hand_built_design():
    rng = np.random.default_rng(7)
    p = 2
    intercept, coef = CASES[p]
    series = [_simulate(coef, intercept, NOISE_VAR, int(n), rng) for n in
              rng.integers(1, 60, size=40)]
    rows, targets = [], []
    for y in series:  # lags never cross from one series into the next
        for t in range(p, len(y)):
            rows.append([1.0, y[t - 1], y[t - 2]])
            targets.append(y[t])
    ref = OLS(np.array(targets), np.array(rows)).fit()
    m = AutoRegressive(order=p).fit(series)
    assert m.params["intercept"].item() == pytest.approx(ref.params[0], abs=1e-10)
    assert np.allclose(m.params["coef"].numpy(), ref.params[1:], rtol=0, atol=1e-10)
    assert m.params["noise_var"].item() == pytest.approx(ref.ssr / len(targets), rel=1e-10)


@pytest.mark.parametrize("p", [0, 1, 2, 3])
def test_log_prob_equals_arima_exact_likelihood(p):
    intercept, coef = CASES[p]
    rng = np.random.default_rng(10 + p)
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    for length in (p + 1, 7, 300):
        y = _simulate(coef, intercept, NOISE_VAR, length, rng)
        ref = _arima_loglike(y, intercept, coef, NOISE_VAR)
        assert m.log_prob(y).item() == pytest.approx(ref, rel=1e-8)
    # And for fitted parameters.
    y = _simulate(coef, intercept, NOISE_VAR, 500, rng)
    fitted = AutoRegressive(order=p).fit(y)
    par = fitted.params
    ref = _arima_loglike(y, par["intercept"].item(), par["coef"].numpy(), par["noise_var"].item())
    assert fitted.log_prob(y).item() == pytest.approx(ref, rel=1e-8)


def test_autocovariances_equal_statsmodels():
    for p in (1, 2, 3):
        intercept, coef = CASES[p]
        m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
        assert np.allclose(m.autocovariances(8).numpy(), _acov(coef, NOISE_VAR, 9), rtol=1e-10)
        assert m.stationary_mean == pytest.approx(intercept / (1 - sum(coef)), rel=1e-14)


def test_a_length_two_density_integrates_to_one():
    # AR(1) with T = 2: a stationary first value, then a conditional step.
    intercept, coef = CASES[1]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    mu, sd = intercept / (1 - sum(coef)), np.sqrt(_acov(coef, NOISE_VAR, 1)[0])
    lo, hi = mu - 8 * sd, mu + 8 * sd  # the mass outside is below 1e-14
    total, err = integrate.dblquad(
        lambda x2, x1: np.exp(m.log_prob(np.array([x1, x2])).item()), lo, hi, lo, hi,
        epsabs=1e-8, epsrel=1e-8,
    )
    assert total == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("p", [2, 3])
def test_sequences_shorter_than_the_order_use_the_stationary_marginal(p):
    intercept, coef = CASES[p]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    mu = intercept / (1 - sum(coef))
    gamma = _acov(coef, NOISE_VAR, p)
    rng = np.random.default_rng(3)
    short = [rng.normal(mu, 1.0, size=t) for t in range(1, p)]
    for y in short:
        cov = gamma[np.abs(np.subtract.outer(np.arange(len(y)), np.arange(len(y))))]
        ref = stats.multivariate_normal(np.full(len(y), mu), cov).logpdf(y)
        assert m.log_prob(y).item() == pytest.approx(ref, rel=1e-12)
    # In a ragged batch with long sequences, and step by step.
    batch = short + [_simulate(coef, intercept, NOISE_VAR, 9, rng)]
    lp = m.log_prob(batch)
    assert torch.equal(lp, torch.stack([m.log_prob(y) for y in batch]))
    assert torch.allclose(m.log_prob_steps(batch).sum(-1), lp, rtol=0, atol=1e-12)
    assert AutoRegressive(order=p).min_length == 1


def test_padding_and_batch_order_change_nothing():
    intercept, coef = CASES[3]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    rng = np.random.default_rng(4)
    batch = [_simulate(coef, intercept, NOISE_VAR, int(n), rng) for n in rng.integers(1, 30, 15)]
    lp = m.log_prob(batch)
    lengths = [len(y) for y in batch]
    padded = rng.normal(size=(len(batch), max(lengths) + 4)) * 1e6
    for i, y in enumerate(batch):
        padded[i, : len(y)] = y
    assert torch.equal(m.log_prob(Sequences.from_padded(padded, lengths)), lp)
    perm = rng.permutation(len(batch))
    assert torch.equal(m.log_prob([batch[i] for i in perm]), lp[perm])
    steps = m.log_prob_steps(batch)
    assert torch.allclose(steps.sum(-1), lp, rtol=0, atol=1e-12)


def test_non_stationary_models_refuse_to_score():
    for coef in ([1.0], [1.2], [0.5, 0.6], [0.0, 0.0, 1.0]):
        m = AutoRegressive.from_params(0.0, coef, 1.0)
        with pytest.raises(ValueError, match="not stationary"):
            m.log_prob([0.1, 0.2, 0.3])
        with pytest.raises(ValueError, match="not stationary"):
            m.sample(3, 5)
        # Continuing a long enough prefix needs no stationary distribution.
        s = m.sample(3, 6, prefix=[0.1, 0.2, 0.3], seed=0)
        assert s.values.shape == (3, 6)
    rng = np.random.default_rng(5)
    explosive = np.cumprod(np.full(200, 1.03)) + rng.normal(size=200)
    fitted = AutoRegressive(order=1).fit(explosive)
    assert fitted.params["coef"].item() > 1
    with pytest.raises(ValueError, match="not stationary"):
        fitted.log_prob(explosive)


def test_sampler_moments_match_the_stationary_distribution():
    p = 2
    intercept, coef = CASES[p]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    n, length = 20_000, 6
    y = m.sample(n, length, seed=0).values.numpy()
    mu = intercept / (1 - sum(coef))
    gamma = _acov(coef, NOISE_VAR, length)
    expected_cov = gamma[np.abs(np.subtract.outer(np.arange(length), np.arange(length)))]
    # Standard errors: sd(mean) = sqrt(gamma_0 / n); sd(cov) <= gamma_0 sqrt(2 / n).
    assert np.abs(y.mean(0) - mu).max() < 5 * np.sqrt(gamma[0] / n)
    assert np.abs(np.cov(y.T) - expected_cov).max() < 5 * gamma[0] * np.sqrt(2 / n)


def test_sampler_continues_a_prefix():
    p = 3
    intercept, coef = CASES[p]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    n = 20_000
    prefix = [0.5, -1.0, 2.0, 0.3]
    y = m.sample(n, 5, prefix=prefix, seed=1).values.numpy()
    assert np.array_equal(y[:, :4], np.tile(prefix, (n, 1)))
    mean = intercept + coef[0] * 0.3 + coef[1] * 2.0 + coef[2] * -1.0
    assert abs(y[:, 4].mean() - mean) < 5 * np.sqrt(NOISE_VAR / n)
    assert abs(y[:, 4].var() - NOISE_VAR) < 5 * NOISE_VAR * np.sqrt(2 / n)
    # A prefix shorter than p: the rest of the first p values from the stationary
    # conditional y_2 | y_1 (Gaussian conditioning with statsmodels' autocovariances).
    gamma = _acov(coef, NOISE_VAR, 2)
    mu = intercept / (1 - sum(coef))
    y = m.sample(n, 2, prefix=[1.5], seed=2).values.numpy()
    cond_mean = mu + gamma[1] / gamma[0] * (1.5 - mu)
    cond_var = gamma[0] - gamma[1] ** 2 / gamma[0]
    assert abs(y[:, 1].mean() - cond_mean) < 5 * np.sqrt(cond_var / n)
    assert abs(y[:, 1].var() - cond_var) < 5 * cond_var * np.sqrt(2 / n)


def test_save_load_exact(tmp_path):
    rng = np.random.default_rng(8)
    y = _simulate(CASES[2][1], CASES[2][0], NOISE_VAR, 300, rng)
    m = AutoRegressive(order=2).fit(y)
    m.save(tmp_path / "ar.pt")
    loaded = probseq.load(tmp_path / "ar.pt")
    assert torch.equal(loaded.log_prob(y), m.log_prob(y))
    for key, value in m.params.items():
        assert torch.equal(loaded.params[key], value)
    assert loaded.sample(4, 9, seed=3) == m.sample(4, 9, seed=3)


def test_bad_input_and_parameters():
    rng = np.random.default_rng(9)
    y = _simulate([0.5], 0.0, 1.0, 100, rng)
    m = AutoRegressive(order=1).fit(y)
    with pytest.raises(ValueError, match="univariate"):
        AutoRegressive(order=1).fit(rng.normal(size=(50, 2)))
    with pytest.raises(ValueError, match="univariate"):
        m.log_prob(rng.normal(size=(50, 2)))
    with pytest.raises(ValueError, match="NaN"):
        m.log_prob(np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        AutoRegressive(order=1).fit(np.array([0.1, np.nan, 0.3, 0.2, 0.5]))
    with pytest.raises(ValueError, match="needs at least"):
        AutoRegressive(order=3).fit([1.0, 2.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="order"):
        AutoRegressive(order=-1)
    with pytest.raises(ValueError, match="noise_var must be > 0"):
        AutoRegressive.from_params(0.0, [0.5], 0.0)
    with pytest.raises(ValueError, match="coef must be a vector"):
        AutoRegressive.from_params(0.0, [[0.5]], 1.0)
    with pytest.raises(ValueError, match="intercept must be a scalar"):
        AutoRegressive.from_params([0.0, 1.0], [0.5], 1.0)
    with pytest.raises(ValueError, match="NaN"):
        AutoRegressive.from_params(0.0, [np.nan], 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels: the design is rank-deficient
        with pytest.raises(ValueError, match="no residual variance"):
            AutoRegressive(order=1).fit(np.ones(20))
    # Integers are promoted to reals (non-negative ones: the shared input layer refuses a
    # negative integer before it knows the model is continuous).
    ints = np.round(y * 10).astype(np.int64) + 100
    assert torch.equal(AutoRegressive(order=1).fit(ints).log_prob(ints),
                       AutoRegressive(order=1).fit(ints.astype(float)).log_prob(ints / 1.0))
