"""AutoRegressive: statsmodels AutoReg / OLS fits, the exact likelihood against statsmodels'
ARIMA Kalman filter and scipy, numerical integration, stationarity, the sampler, files."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


@pytest.mark.slow
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
    with pytest.raises(ValueError, match="inf"):
        m.log_prob(np.array([0.1, np.inf, 0.3]))
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
        with pytest.raises(ValueError, match="exactly predictable"):
            AutoRegressive(order=1).fit(np.ones(20))
    # Integers are promoted to reals (non-negative ones: the shared input layer refuses a
    # negative integer before it knows the model is continuous).
    ints = np.round(y * 10).astype(np.int64) + 100
    assert torch.equal(AutoRegressive(order=1).fit(ints).log_prob(ints),
                       AutoRegressive(order=1).fit(ints.astype(float)).log_prob(ints / 1.0))


# ------------------------------------------------------------------ degenerate data (issue 12)
DEGENERATE = {
    "constant": lambda t: np.full(t, 2.5),
    "constant_large": lambda t: np.full(t, -3.7e6),
    "zeros_then_level": lambda t: np.zeros(t) + 1e-7,
    "linear": lambda t: 3.0 + 2.5 * np.arange(t),
    "linear_large": lambda t: 1e6 + 1e3 * np.arange(t),
    "geometric": lambda t: 1.01 ** np.arange(t),
    "alternating": lambda t: (-1.0) ** np.arange(t),
    "quadratic": lambda t: np.arange(t, dtype=float) ** 2,
}


@pytest.mark.parametrize("kind", list(DEGENERATE))
def test_exactly_predictable_data_are_refused(kind):
    y = DEGENERATE[kind](50)
    with warnings.catch_warnings():
        # The refusal comes alone: no statsmodels warning (rank-deficient design) before it.
        warnings.simplefilter("error")
        for p in (1, 2, 3):
            if kind == "quadratic" and p == 1:
                continue  # a quadratic is not an exact AR(1): a fit with residuals
            with pytest.raises(ValueError, match="exactly predictable by an AR"):
                AutoRegressive(order=p).fit(y)
            # The pooled path: several windows of the series.
            with pytest.raises(ValueError, match="exactly predictable by an AR"):
                AutoRegressive(order=p).fit([y, y[10:40], y[:20]])
        if kind.startswith(("constant", "zeros")):
            with pytest.raises(ValueError, match="exactly predictable by an AR"):
                AutoRegressive(order=0).fit(y)


def test_nearly_but_not_exactly_predictable_data_fit():
    # A level of 1e6 with noise of sd 1e-3 (1e9 times below the level, 1e7 times above its
    # rounding) is real data: it fits, and scores like the same data centred.
    rng = np.random.default_rng(0)
    noise = _simulate([0.5], 0.0, 1.0, 300, rng) * 1e-3
    m = AutoRegressive(order=1).fit(1e6 + noise)
    centred = AutoRegressive(order=1).fit(noise)
    assert m.params["coef"].item() == pytest.approx(centred.params["coef"].item(), abs=1e-6)
    assert m.log_prob(1e6 + noise).item() == pytest.approx(
        centred.log_prob(noise).item(), rel=1e-6)


def test_from_params_refuses_noise_below_rounding_of_the_level():
    # The fit of np.ones(50) before the fix: noise_var 7.9e-31 around a level of 1.
    with pytest.raises(ValueError, match="rounding level"):
        AutoRegressive.from_params(1.0, [0.0], 7.9e-31)
    with pytest.raises(ValueError, match="rounding level"):
        AutoRegressive.from_params(0.5, [0.5], 1e-30)  # mean 1, sd 1e-15
    # Scale-free: tiny noise around a tiny (or zero) level is a fine model.
    m = AutoRegressive.from_params(1e-20, [0.5], 1e-40)
    assert np.isfinite(m.log_prob([2e-20, 1.5e-20, 3e-20]).item())
    AutoRegressive.from_params(0.0, [0.5], 1e-300)


def test_short_and_length_one_sequences():
    rng = np.random.default_rng(1)
    # Only length-1 sequences: no regression rows for p >= 1.
    with pytest.raises(ValueError, match="needs at least"):
        AutoRegressive(order=1).fit([rng.normal(size=1) for _ in range(10)])
    with pytest.raises(ValueError, match="needs at least"):
        AutoRegressive(order=2).fit([rng.normal(size=2) for _ in range(10)])
    # The message says what the data has and what the order needs (issue 26).
    with pytest.raises(ValueError, match=r"at least 12 values in one sequence; the data has "
                                         r"4 values in 1 sequence \(longest 4\)"):
        AutoRegressive(order=5).fit(np.arange(4.0))
    # p = 0 on length-1 sequences is iid N(mu, s2): the sample mean and variance.
    ones = [rng.normal(3.0, 2.0, size=1) for _ in range(30)]
    m0 = AutoRegressive(order=0).fit(ones)
    flat = np.concatenate(ones)
    assert m0.params["intercept"].item() == pytest.approx(flat.mean(), rel=1e-12)
    assert m0.params["noise_var"].item() == pytest.approx(flat.var(), rel=1e-10)
    # Length-1 sequences beside long ones add nothing to the regression and are scored by
    # the stationary marginal.
    long = _simulate([0.6], 0.7, NOISE_VAR, 200, rng)
    m = AutoRegressive(order=1).fit([long] + ones)
    assert m.params["coef"].item() == pytest.approx(
        AutoRegressive(order=1).fit(long).params["coef"].item(), abs=1e-10)
    mu, var = m.stationary_mean, m.autocovariances(0).item()
    assert m.log_prob(ones[0]).item() == pytest.approx(
        stats.norm(mu, np.sqrt(var)).logpdf(ones[0][0]), rel=1e-12)


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1e3, 1e6])
def test_scale_equivariance(scale):
    rng = np.random.default_rng(2)
    p = 2
    intercept, coef = CASES[p]
    x = [_simulate(coef, intercept, NOISE_VAR, n, rng) for n in (120, 80, 3)]
    y = _simulate(coef, intercept, NOISE_VAR, 60, rng)
    for data in (x[0], x):  # the single-series (AutoReg) and pooled paths
        base = AutoRegressive(order=p).fit(data)
        scaled_data = [scale * s for s in data] if isinstance(data, list) else scale * data
        scaled = AutoRegressive(order=p).fit(scaled_data)
        b, s = base.params, scaled.params
        assert s["intercept"].item() == pytest.approx(scale * b["intercept"].item(), rel=1e-9)
        assert np.allclose(s["coef"].numpy(), b["coef"].numpy(), rtol=1e-9, atol=1e-12)
        assert s["noise_var"].item() == pytest.approx(scale**2 * b["noise_var"].item(),
                                                      rel=1e-9)
        # log p_c(c y) = log p(y) - T log c; relative to the size of the scores (up to
        # |T log c| ~ 800 nats), the agreement is the rounding of the fits.
        shift = -len(y) * np.log(scale)
        assert scaled.log_prob(scale * y).item() == pytest.approx(
            base.log_prob(y).item() + shift, abs=1e-7 * abs(shift) + 1e-8)
        draws = scaled.sample(3, 10, seed=4).values / scale
        assert torch.allclose(draws, base.sample(3, 10, seed=4).values, rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------ differential fuzzing
def _coef_from_inverse_roots(moduli, angles):
    """AR coefficients whose characteristic inverse roots have the given moduli; an angle
    of 0 gives a real root, any other a complex-conjugate pair (two roots)."""
    roots = []
    for r, a in zip(moduli, angles, strict=True):
        roots += [r] if a == 0 else [r * np.exp(1j * a), r * np.exp(-1j * a)]
    return -np.real(np.poly(roots))[1:]


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    persistence=st.lists(st.floats(0.0, 3.5), min_size=1, max_size=2),
    angles=st.lists(st.sampled_from([0.0, 0.3, 1.5, 3.0]), min_size=2, max_size=2),
    log_scale=st.floats(-6.0, 6.0),
    mean=st.floats(-10.0, 10.0),
    length=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    gaps=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_log_prob_equals_arima_over_random_parameters(persistence, angles, log_scale, mean,
                                                       length, seed, gaps):
    # Inverse-root moduli 1 - 10^-k for k up to 3.5: roots as close as 3e-4 to the unit
    # circle; noise sd from 1e-6 to 1e6 (and the mean with it); orders 1 to 4. Over 300
    # random draws the largest relative difference was 1.5e-9 (with and without gaps);
    # statsmodels' own error against a 50-digit evaluation reaches 2e-7 nats there.
    moduli = [1.0 - 10.0 ** -k for k in persistence]
    coef = _coef_from_inverse_roots(moduli, angles[: len(moduli)])
    scale = 10.0**log_scale
    intercept = mean * scale * (1 - coef.sum())
    m = AutoRegressive.from_params(intercept, coef, scale**2)
    y = m.sample(1, length, seed=seed).values[0].numpy()
    ref = _arima_loglike(y, intercept, coef, scale**2)
    assert m.log_prob(y).item() == pytest.approx(ref, rel=1e-8, abs=1e-8 * length)
    # And with missing values (at least one value observed).
    holes = np.array(gaps[:length])
    holes[seed % length] = False
    if holes.any():
        y[holes] = np.nan
        ref = _arima_loglike(y, intercept, coef, scale**2)
        assert m.log_prob(y).item() == pytest.approx(ref, rel=1e-8, abs=1e-8 * length)
        assert m.log_prob_steps(y).sum().item() == pytest.approx(ref, rel=1e-8,
                                                                 abs=1e-8 * length)


# ------------------------------------------------------------------ missing values and exog
def _arima(y, p, exog=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ARIMA(y, order=(p, 0, 0), trend="c", exog=exog)


def _gappy(y, rng, pattern):
    y = y.copy()
    if pattern == "scattered":
        y[rng.random(len(y)) < 0.3] = np.nan
    elif pattern == "head_and_tail":
        y[:3] = np.nan
        y[-4:] = np.nan
    elif pattern == "long_gap":
        y[10:35] = np.nan
        y[1] = np.nan
    elif pattern == "alternating":
        y[::2] = np.nan
    return y


@pytest.mark.parametrize("p", [0, 1, 2, 3])
@pytest.mark.parametrize("pattern", ["scattered", "head_and_tail", "long_gap", "alternating"])
def test_missing_values_equal_arima_with_nan(p, pattern):
    intercept, coef = CASES[p]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    rng = np.random.default_rng(20 + p)
    y = _gappy(_simulate(coef, intercept, NOISE_VAR, 60, rng), rng, pattern)
    mean = intercept / (1 - sum(coef))
    ref_model = _arima(y, p)
    params = np.r_[mean, coef, NOISE_VAR]
    ref = ref_model.loglike(params)
    got = m.log_prob(y).item()
    assert got == pytest.approx(ref, rel=1e-10, abs=1e-10)
    steps = m.log_prob_steps(y).numpy()
    assert np.all(steps[np.isnan(y)] == 0.0)
    assert steps.sum() == pytest.approx(got, rel=1e-10)
    # Step by step: statsmodels' per-observation log-likelihoods (0 at NaN).
    assert np.allclose(steps, ref_model.loglikeobs(params), rtol=1e-9, atol=1e-10)


def test_missing_values_in_a_ragged_batch_and_unchanged_complete_rows():
    intercept, coef = CASES[2]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    rng = np.random.default_rng(30)
    batch = [_simulate(coef, intercept, NOISE_VAR, int(n), rng) for n in (40, 3, 25, 1, 12)]
    complete = m.log_prob(batch)
    batch[0][[0, 5, 6, 39]] = np.nan
    batch[2][10] = np.nan
    batch[4][:11] = np.nan  # a single observed value
    assert m.log_prob(np.full(4, np.nan)).item() == 0.0  # nothing observed
    lp = m.log_prob(batch)
    for i in (1, 3):
        assert lp[i] == complete[i]  # rows without gaps: the complete-data path, bit for bit
    for i, y in enumerate(batch):
        ref = _arima(y, 2).loglike(np.r_[intercept / (1 - sum(coef)), coef, NOISE_VAR]) \
            if len(y) > 1 else m.log_prob(y).item()
        assert lp[i].item() == pytest.approx(ref, rel=1e-10)
    torch.testing.assert_close(m.log_prob_steps(batch).sum(-1), lp, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("gaps", [True, False])
def test_exact_fit_equals_arima_fit(p, gaps):
    intercept, coef = CASES[p]
    rng = np.random.default_rng(40 + p)
    y = _simulate(coef, intercept, NOISE_VAR, 300, rng)
    if gaps:
        y = _gappy(y, rng, "scattered")
    m = AutoRegressive(order=p).fit(y, method="mle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _arima(y, p).fit()
    par = m.params
    mean = par["intercept"].item() / (1 - par["coef"].sum().item())
    # The same maximum: our log-likelihood is at least statsmodels' (both exact), and the
    # parameters agree to the optimisers' precision.
    assert m.log_prob(y).item() >= ref.llf - 1e-7
    assert m.log_prob(y).item() == pytest.approx(ref.llf, abs=1e-4)
    assert np.allclose(np.r_[mean, par["coef"].numpy(), par["noise_var"].item()], ref.params,
                       rtol=2e-3, atol=2e-3)


def _exog_data(rng, length, p=2):
    intercept, coef = CASES[p]
    x = np.column_stack([np.sin(np.arange(length) / 5.0), rng.normal(size=length) * 3.0])
    beta = np.array([2.0, -0.7])
    y = x @ beta + _simulate(coef, intercept, NOISE_VAR, length, rng)
    return y, x, beta


@pytest.mark.parametrize("gaps", [False, True])
def test_regression_with_ar_errors_equals_arima_exog(gaps):
    p = 2
    intercept, coef = CASES[p]
    rng = np.random.default_rng(50)
    y, x, beta = _exog_data(rng, 200)
    if gaps:
        y = _gappy(y, rng, "scattered")
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR, exog_coef=beta)
    mean = intercept / (1 - sum(coef))
    ref_model = _arima(y, p, exog=x)
    params = np.r_[mean, beta, coef, NOISE_VAR]
    assert m.log_prob(y, exog=x).item() == pytest.approx(ref_model.loglike(params), rel=1e-10)
    assert np.allclose(m.log_prob_steps(y, exog=x).numpy(), ref_model.loglikeobs(params),
                       rtol=1e-9, atol=1e-10)
    # The fit: statsmodels' exact maximum likelihood.
    fitted = AutoRegressive(order=p).fit(y, exog=x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ref_model.fit()
    par = fitted.params
    ours = np.r_[par["intercept"].item() / (1 - par["coef"].sum().item()),
                 par["exog_coef"].numpy(), par["coef"].numpy(), par["noise_var"].item()]
    assert fitted.log_prob(y, exog=x).item() >= ref.llf - 1e-7
    assert np.allclose(ours, ref.params, rtol=2e-3, atol=2e-3)
    assert fitted.num_params == p + 2 + 2
    with pytest.raises(ValueError, match="pass exog="):
        fitted.log_prob(y)
    with pytest.raises(ValueError, match="fitted with 2"):
        fitted.log_prob(y, exog=x[:, :1])


@pytest.mark.parametrize("scale", [1e-6, 1e3])
def test_exact_fit_is_scale_equivariant(scale):
    rng = np.random.default_rng(60)
    y, x, _ = _exog_data(rng, 150)
    y = _gappy(y, rng, "scattered")
    base = AutoRegressive(order=2).fit(y, exog=x)
    scaled = AutoRegressive(order=2).fit(scale * y, exog=x / scale)
    b, s = base.params, scaled.params
    assert s["intercept"].item() == pytest.approx(scale * b["intercept"].item(), rel=1e-5)
    assert np.allclose(s["coef"].numpy(), b["coef"].numpy(), rtol=1e-5, atol=1e-7)
    assert np.allclose(s["exog_coef"].numpy(), scale**2 * b["exog_coef"].numpy(), rtol=1e-5)
    n_obs = int((~np.isnan(y)).sum())
    assert scaled.log_prob(scale * y, exog=x / scale).item() == pytest.approx(
        base.log_prob(y, exog=x).item() - n_obs * np.log(scale), rel=1e-7)


def test_bad_exact_fit_inputs():
    rng = np.random.default_rng(61)
    y, x, _ = _exog_data(rng, 60)
    with pytest.raises(ValueError, match="covariate 1 is constant"):
        AutoRegressive(order=1).fit(y, exog=np.column_stack([x[:, 0], np.ones(60)]))
    with pytest.raises(ValueError, match="exact linear function of the covariates"):
        AutoRegressive(order=1).fit(3.0 + 2.0 * x[:, 0] - 0.5 * x[:, 1], exog=x)
    with pytest.raises(ValueError, match="method='cls' needs complete data"):
        AutoRegressive(order=1).fit(y, exog=x, method="cls")
    with pytest.raises(ValueError, match="exactly predictable"):
        AutoRegressive(order=1).fit(np.r_[np.ones(30), np.nan, np.ones(30)])
    # Exactly predictable series with gaps are refused as without gaps (their exact
    # likelihood grows without bound towards a unit root).
    for kind in ("linear", "geometric", "alternating", "quadratic"):
        gappy = DEGENERATE[kind](80)
        gappy[[3, 40]] = np.nan
        with pytest.raises(ValueError, match="exactly predictable by an AR"):
            AutoRegressive(order=2).fit(gappy)
    sine = np.sin(0.3 * np.arange(80.0))
    sine[[3, 40]] = np.nan
    with pytest.raises(ValueError, match="exactly predictable by an AR"):
        AutoRegressive(order=2).fit(sine)
    # A sine plus a little noise is a sensible (persistent) stationary AR(2).
    noisy = sine + 1e-3 * rng.normal(size=80)
    m = AutoRegressive(order=2).fit(noisy)
    assert m.params["noise_var"].item() > 1e-8 and np.isfinite(m.log_prob(noisy).item())
    with pytest.raises(ValueError, match="no_such_option"):
        AutoRegressive(order=1).fit(y, no_such_option=3)


def test_gappy_prefix_is_filled_from_its_conditional():
    p = 2
    intercept, coef = CASES[p]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    prefix = np.array([0.5, np.nan, 1.5, np.nan, np.nan, 2.0, np.nan])
    n = 20_000
    s = m.sample(n, 9, prefix=prefix, seed=3).values.numpy()
    obs = ~np.isnan(prefix)
    assert np.array_equal(s[:, :7][:, obs], np.broadcast_to(prefix[obs], (n, obs.sum())))
    # The missing values (and the two new steps) given the observed ones: dense Gaussian
    # conditioning with statsmodels' autocovariances.
    gamma = _acov(coef, NOISE_VAR, 9)
    cov = gamma[np.abs(np.subtract.outer(np.arange(9), np.arange(9)))]
    mu = intercept / (1 - sum(coef))
    o = np.flatnonzero(obs)
    u = np.setdiff1d(np.arange(9), o)
    gain = np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, u)]).T
    cond_mean = mu + gain @ (prefix[o] - mu)
    cond_cov = cov[np.ix_(u, u)] - gain @ cov[np.ix_(o, u)]
    sd = np.sqrt(np.diag(cond_cov))
    assert np.abs(s[:, u].mean(0) - cond_mean).max() < 5 * sd.max() / np.sqrt(n)
    assert np.abs(np.cov(s[:, u].T) - cond_cov).max() < 5 * cond_cov.max() * np.sqrt(2 / n)


# ------------------------------------------------------------------ predictive distributions
def _forecast_reference(y, p, params, exog=None, future=None, horizon=12):
    res = _arima(y, p, exog=exog).filter(params)
    fc = res.get_forecast(horizon, exog=future)
    return fc.predicted_mean, fc.var_pred_mean


@pytest.mark.parametrize("case", ["plain", "gaps", "exog", "short"])
def test_forecast_equals_statsmodels_get_forecast(case):
    p = 3
    intercept, coef = CASES[p]
    rng = np.random.default_rng(70)
    mean = intercept / (1 - sum(coef))
    if case == "exog":
        y, x_all, beta = _exog_data(rng, 92, p)
        y, x, future = _gappy(y[:80], rng, "scattered"), x_all[:80], x_all[80:]
        m = AutoRegressive.from_params(intercept, coef, NOISE_VAR, exog_coef=beta)
        params = np.r_[mean, beta, coef, NOISE_VAR]
    else:
        y = _simulate(coef, intercept, NOISE_VAR, 2 if case == "short" else 80, rng)
        if case == "gaps":
            y[[10, 77, 79]] = np.nan
        x = future = x_all = None
        m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
        params = np.r_[mean, coef, NOISE_VAR]
    ref_mean, ref_var = _forecast_reference(y, p, params, x, future)
    seqs = Sequences.from_list([y])
    ex = None if x_all is None else torch.from_numpy(x_all[None])
    dist = m._forecast(seqs, 12, exog=ex)
    assert dist.batch_shape == (1, 12)
    assert np.allclose(dist.mean[0].numpy(), ref_mean, rtol=1e-9, atol=1e-9)
    assert np.allclose(dist.variance[0].numpy(), ref_var, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("gaps", [False, True])
def test_step_predictive_scores_the_steps(gaps):
    intercept, coef = CASES[3]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    rng = np.random.default_rng(80)
    batch = [_simulate(coef, intercept, NOISE_VAR, int(n), rng) for n in (30, 2, 9)]
    if gaps:
        batch[0][[1, 2, 20]] = np.nan
    seqs = Sequences.from_list(batch)
    dist = m._step_predictive(seqs)
    assert dist.batch_shape == (3, 30)
    scores = torch.where(seqs.observed, dist.log_prob(seqs.values), 0.0)
    torch.testing.assert_close(scores, m.log_prob_steps(seqs), rtol=1e-10, atol=1e-10)


def test_co2_with_its_gaps_equals_arima():
    """The real weekly CO2 series (2,284 values, 59 NaN): the exact fit, its likelihood and
    per-step scores, and its forecasts against statsmodels' ARIMA Kalman filter."""
    from probseq.datasets import co2

    y = co2().to_numpy()
    assert np.isnan(y).sum() == 59
    m = AutoRegressive(order=2).fit(y)
    par = m.params
    params = np.r_[par["intercept"].item() / (1 - par["coef"].sum().item()),
                   par["coef"].numpy(), par["noise_var"].item()]
    model = _arima(y, 2)
    lp = m.log_prob(y).item()
    assert lp == pytest.approx(model.loglike(params), rel=1e-11)
    assert np.allclose(m.log_prob_steps(y).numpy(), model.loglikeobs(params), rtol=1e-9,
                       atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = model.fit()
    assert lp >= ref.llf - 1e-6  # statsmodels stops earlier near the unit root here
    mean, var = _forecast_reference(y, 2, params)
    dist = m._forecast(Sequences.from_list([y]), 12)
    assert np.allclose(dist.mean[0].numpy(), mean, rtol=1e-10)
    assert np.allclose(dist.variance[0].numpy(), var, rtol=1e-8)


def test_sample_with_covariates_continues_the_regression():
    rng = np.random.default_rng(90)
    y, x, beta = _exog_data(rng, 12)
    intercept, coef = CASES[2]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR, exog_coef=beta)
    n = 20_000
    s = m.sample(n, 12, prefix=y[:10], exog=x, seed=5).values.numpy()
    assert np.array_equal(s[:, :10], np.broadcast_to(y[:10], (n, 10)))
    u = y - x @ beta
    expected = x[10] @ beta + intercept + coef[0] * u[9] + coef[1] * u[8]
    assert abs(s[:, 10].mean() - expected) < 5 * np.sqrt(NOISE_VAR / n)
    assert abs(s[:, 10].var() - NOISE_VAR) < 5 * NOISE_VAR * np.sqrt(2 / n)
    with pytest.raises(ValueError, match="pass exog="):
        m.sample(2, 5)


def test_forecast_of_a_ragged_gappy_batch_equals_one_by_one():
    intercept, coef = CASES[2]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR)
    rng = np.random.default_rng(95)
    batch = [_simulate(coef, intercept, NOISE_VAR, int(n), rng) for n in (30, 1, 7, 15)]
    batch[0][[28, 29]] = np.nan  # trailing gaps: forecast targets of the filter
    batch[2][[0, 3]] = np.nan
    dist = m._forecast(Sequences.from_list(batch), 5)
    for i, y in enumerate(batch):
        one = m._forecast(Sequences.from_list([y]), 5)
        torch.testing.assert_close(dist.mean[i], one.mean[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dist.stddev[i], one.stddev[0], rtol=1e-12, atol=1e-12)
    mean, var = _forecast_reference(batch[0], 2, np.r_[intercept / (1 - sum(coef)), coef,
                                                       NOISE_VAR], horizon=5)
    assert np.allclose(dist.mean[0].numpy(), mean, rtol=1e-10)
    assert np.allclose(dist.variance[0].numpy(), var, rtol=1e-10)


def test_forecast_of_a_non_stationary_model_continues_the_recursion():
    # A random walk with drift (statsmodels AutoReg forecasts it; no stationary start needed
    # once p values are observed).
    m = AutoRegressive.from_params(0.5, [1.0], 2.0)
    y = np.array([1.0, 2.0, np.nan, 3.0, 4.5])
    dist = m._forecast(Sequences.from_list([y]), 4)
    assert np.allclose(dist.mean[0].numpy(), 4.5 + 0.5 * np.arange(1, 5))
    assert np.allclose(dist.variance[0].numpy(), 2.0 * np.arange(1, 5))
    explosive = AutoRegressive.from_params(0.0, [0.5, 0.6], 1.0)
    y = np.array([0.3, -0.2, 1.0])
    dist = explosive._forecast(Sequences.from_list([y]), 2)
    assert dist.mean[0, 0].item() == pytest.approx(0.5 * 1.0 + 0.6 * -0.2)
    assert dist.mean[0, 1].item() == pytest.approx(0.5 * dist.mean[0, 0].item() + 0.6 * 1.0)
    assert dist.variance[0].numpy() == pytest.approx([1.0, 1.0 + 0.25])
    with pytest.raises(ValueError, match="not stationary"):
        explosive._forecast(Sequences.from_list([np.array([0.3, np.nan, 1.0])]), 2)


def test_gappy_prefix_with_per_sample_covariates():
    rng = np.random.default_rng(96)
    intercept, coef = CASES[1]
    m = AutoRegressive.from_params(intercept, coef, NOISE_VAR, exog_coef=[1.5])
    n = 4000
    paths = rng.normal(size=(2, 8, 1))
    x = paths[np.arange(n) % 2]  # two covariate paths, alternating across the samples
    prefix = np.array([0.2, np.nan, 1.0, np.nan])
    s = m.sample(n, 8, prefix=prefix, exog=x, seed=0).values.numpy()
    assert np.array_equal(s[:, [0, 2]], np.tile([0.2, 1.0], (n, 1)))
    # Each sample's gap given its own covariates: for an AR(1) u_1 given u_0, u_2 has mean
    # mu + phi (u_0 + u_2 - 2 mu) / (1 + phi^2) and variance sigma2 / (1 + phi^2).
    mu, phi = intercept / (1 - coef[0]), coef[0]
    sd = np.sqrt(NOISE_VAR / (1 + phi**2))
    for k in range(2):
        u0, u2 = 0.2 - 1.5 * paths[k, 0, 0], 1.0 - 1.5 * paths[k, 2, 0]
        cond = mu + phi * (u0 + u2 - 2 * mu) / (1 + phi**2) + 1.5 * paths[k, 1, 0]
        draws = s[k::2, 1]
        assert abs(draws.mean() - cond) < 5 * sd / np.sqrt(n / 2)
        assert abs(draws.std() - sd) < 5 * sd / np.sqrt(n)


def test_public_forecast_and_predict_equal_statsmodels():
    """Through the public API: ``forecast`` (exact, with the pandas index continued) on the
    gappy co2 series and with covariates, and ``predict`` (one-step predictive means)."""
    import pandas as pd

    from probseq.datasets import co2

    y = co2()
    m = AutoRegressive(order=2).fit(y)
    par = m.params
    params = np.r_[par["intercept"].item() / (1 - par["coef"].sum().item()),
                   par["coef"].numpy(), par["noise_var"].item()]
    fc = m.forecast(y, 12)
    res = _arima(y.to_numpy(), 2).filter(params)
    ref = res.get_forecast(12)
    assert fc.method == "exact"
    assert np.allclose(fc.mean.numpy(), ref.predicted_mean, rtol=1e-10)
    assert np.allclose(fc.std.numpy() ** 2, ref.var_pred_mean, rtol=1e-8)
    assert fc.index[0] == y.index[-1] + y.index.freq and len(fc.index) == 12
    # One-step predictions: statsmodels' one-step-ahead forecasts, gaps included.
    pred = m.predict(y)  # a pandas Series on y's index
    assert pred.index.equals(y.index)
    pred = pred.to_numpy()
    assert np.allclose(pred, res.fittedvalues, rtol=1e-10, atol=1e-8)
    # With covariates covering the future.
    rng = np.random.default_rng(97)
    yx, x_all, beta = _exog_data(rng, 92, 2)
    intercept, coef = CASES[2]
    mx = AutoRegressive.from_params(intercept, coef, NOISE_VAR, exog_coef=beta)
    idx = pd.period_range("2000Q1", periods=92, freq="Q")
    fx = mx.forecast(pd.Series(yx[:80], index=idx[:80]), 12,
                     exog=pd.DataFrame(x_all, index=idx))
    refx = _arima(yx[:80], 2, exog=x_all[:80]).filter(
        np.r_[intercept / (1 - sum(coef)), beta, coef, NOISE_VAR]).get_forecast(
        12, exog=x_all[80:])
    assert np.allclose(fx.mean.numpy(), refx.predicted_mean, rtol=1e-10)
    assert np.allclose(fx.std.numpy() ** 2, refx.var_pred_mean, rtol=1e-10)
    assert list(fx.index) == list(idx[80:])
