"""Seasonal ARIMA: exact likelihoods against statsmodels' SARIMAX and a brute-force Gaussian,
fits against statsmodels' optimum, forecasts against ``get_forecast``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from statsmodels.tsa.arima_process import arma_acovf
from statsmodels.tsa.statespace.sarimax import SARIMAX

import probseq as ps
from probseq.datasets import co2

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning",
                                        "ignore:Non-:UserWarning")


@pytest.fixture(scope="module")
def monthly() -> np.ndarray:
    """Monthly means of the weekly Mauna Loa CO2 series (its few empty months interpolated)."""
    series = co2().resample("MS").mean().interpolate()
    return series.to_numpy()[:240]


def _sarimax(y, order, seasonal_order, trend="n", exog=None, **kw) -> SARIMAX:
    """statsmodels' SARIMAX without its steady-state shortcut (``tolerance = 0``): once the
    predicted covariance changes by less than 1e-19 it freezes the gain, which moves the
    per-step densities of series far from their mean by up to 1e-7."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SARIMAX(y, exog=exog, order=order, seasonal_order=seasonal_order, trend=trend,
                        **kw)
    model.ssm.tolerance = 0.0
    return model


def test_airline_equals_simple_differencing_per_step(monthly):
    model = ps.ARIMA.from_params(order=(0, 1, 1), seasonal_order=(0, 1, 1, 12), ma=[-0.35],
                                 seasonal_ma=[-0.85], noise_var=0.09)
    assert model.num_diffuse_steps == 13
    ref = _sarimax(monthly, (0, 1, 1), (0, 1, 1, 12), simple_differencing=True)
    expected = ref.loglikeobs([-0.35, -0.85, 0.09])
    steps = model.log_prob_steps(monthly).numpy()
    assert np.all(steps[:13] == 0)
    np.testing.assert_allclose(steps[13:], expected, atol=1e-9, rtol=0)
    assert abs(float(model.log_prob(monthly)) - expected.sum()) < 1e-9
    # ... which is the exact diffuse likelihood of the integrated model after its diffuse steps
    diffuse = _sarimax(monthly, (0, 1, 1), (0, 1, 1, 12), use_exact_diffuse=True)
    np.testing.assert_allclose(steps[13:], diffuse.loglikeobs([-0.35, -0.85, 0.09])[13:],
                               atol=1e-8, rtol=0)


@pytest.mark.parametrize(("order", "seasonal_order", "trend", "params"), [
    ((2, 0, 1), (1, 0, 0, 4), "c", dict(ar=[0.5, 0.2], ma=[0.3], seasonal_ar=[-0.2],
                                       intercept=2.0, noise_var=1.3)),
    ((1, 0, 0), (0, 0, 0, 0), "c", dict(ar=[0.9], intercept=0.4, noise_var=0.5)),
    ((0, 0, 2), (0, 0, 0, 0), "n", dict(ma=[0.6, -0.3], noise_var=0.7)),
    ((1, 1, 1), (1, 1, 1, 12), "n", dict(ar=[0.4], ma=[-0.5], seasonal_ar=[0.3],
                                        seasonal_ma=[-0.6], noise_var=0.1)),
    ((2, 1, 0), (0, 1, 1, 6), "c", dict(ar=[0.3, -0.2], seasonal_ma=[0.4], intercept=0.02,
                                       noise_var=0.2)),
    ((0, 2, 1), (0, 0, 0, 0), "n", dict(ma=[-0.7], noise_var=0.05)),
])
def test_orders_equal_sarimax(monthly, order, seasonal_order, trend, params):
    y = monthly[:150] - 330.0
    model = ps.ARIMA.from_params(order=order, seasonal_order=seasonal_order, **params)
    vec = [params["intercept"]] if "intercept" in params else []
    for k in ("ar", "ma", "seasonal_ar", "seasonal_ma"):
        vec += list(params.get(k, []))
    vec.append(params["noise_var"])
    ref = _sarimax(y, order, seasonal_order, trend=trend, simple_differencing=True)
    expected = ref.loglikeobs(np.array(vec, dtype=float))
    nd = model.num_diffuse_steps
    assert nd == order[1] + seasonal_order[1] * seasonal_order[3]
    np.testing.assert_allclose(model.log_prob_steps(y).numpy()[nd:], expected, atol=1e-9,
                               rtol=0)
    assert abs(model.intercept - params.get("intercept", 0.0)) < 1e-12


def test_regression_with_sarima_errors_equals_sarimax(monthly):
    y = monthly[:120] - 330.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    model = ps.ARIMA.from_params(order=(1, 1, 1), seasonal_order=(0, 1, 1, 12), ar=[0.2],
                                 ma=[-0.4], seasonal_ma=[-0.7], noise_var=0.1,
                                 exog_coef=[0.5, -1.0])
    ref = _sarimax(y, (1, 1, 1), (0, 1, 1, 12), exog=x, simple_differencing=True)
    expected = ref.loglikeobs([0.5, -1.0, 0.2, -0.4, -0.7, 0.1])
    np.testing.assert_allclose(model.log_prob_steps(y, exog=x).numpy()[13:], expected,
                               atol=1e-9, rtol=0)


def _brute_force(y, observed, mean, ar_poly, ma_poly, noise_var):
    """The Gaussian density of the observed values from the ARMA autocovariances."""
    t = len(y)
    gamma = arma_acovf(ar_poly, ma_poly, nobs=t, sigma2=noise_var)
    cov = gamma[np.abs(np.arange(t)[:, None] - np.arange(t)[None, :])]
    keep = np.flatnonzero(observed)
    return multivariate_normal(np.full(keep.size, mean), cov[np.ix_(keep, keep)]).logpdf(
        y[keep])


def test_missing_values_against_brute_force():
    rng = np.random.default_rng(1)
    model = ps.ARIMA.from_params(order=(1, 0, 1), seasonal_order=(1, 0, 1, 4), ar=[0.5],
                                 ma=[0.4], seasonal_ar=[-0.3], seasonal_ma=[0.5],
                                 noise_var=0.8, mean=1.5)
    y = model.sample(3, 40, seed=0).to_list()
    ar_poly = np.convolve([1, -0.5], [1, 0, 0, 0, 0.3])
    ma_poly = np.convolve([1, 0.4], [1, 0, 0, 0, 0.5])
    data = []
    expected = []
    for i, seq in enumerate(y):
        seq = seq.numpy()[: 25 + 5 * i].copy()
        observed = rng.random(seq.size) > 0.3
        observed[0] = i != 1  # a gap at the first step too
        expected.append(_brute_force(seq, observed, 1.5, ar_poly, ma_poly, 0.8))
        seq[~observed] = np.nan
        data.append(seq)
    got = model.log_prob(data).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9, rtol=0)
    steps = model.log_prob_steps(data)
    np.testing.assert_allclose(steps.sum(1).numpy(), got, atol=1e-10, rtol=0)
    assert np.all(steps.numpy()[1, :1] == 0)


def test_gaps_with_differencing_equal_exact_diffuse(monthly):
    """With gaps, a differencing model is filtered in its integrated form with an exact
    diffuse start: its scored steps equal statsmodels' exact diffuse filter per step, and
    the steps that only resolve the d + D*s integration constants score 0."""
    y = monthly[:120].copy()
    gaps = [3, 20, 21, 60, 119]
    y[gaps] = np.nan
    params = [0.4, -0.35, -0.85, 0.09]
    model = ps.ARIMA.from_params(order=(1, 1, 1), seasonal_order=(0, 1, 1, 12), ar=[0.4],
                                 ma=[-0.35], seasonal_ma=[-0.85], noise_var=0.09)
    steps = model.log_prob_steps(y).numpy()
    ref = _sarimax(y, (1, 1, 1), (0, 1, 1, 12), use_exact_diffuse=True)
    expected = ref.loglikeobs(params)
    diffuse = (steps == 0) & ~np.isnan(y)
    assert diffuse.sum() == 13 and diffuse[:16].sum() == 13  # the gap at 3 lengthens it
    np.testing.assert_allclose(steps[~diffuse], expected[~diffuse], atol=1e-9, rtol=0)
    # the same model scores complete rows by the differenced series in the same batch
    batch = model.log_prob([y, monthly[:100]]).numpy()
    assert abs(batch[0] - steps.sum()) < 1e-9
    assert abs(batch[1] - float(model.log_prob(monthly[:100]))) < 1e-12
    # forecasts after the gap at the last step
    fc = model.forecast(y, 6)
    want = ref.smooth(params).get_forecast(6)
    np.testing.assert_allclose(fc.mean.numpy(), want.predicted_mean, atol=1e-8)
    np.testing.assert_allclose(fc.std.numpy() ** 2, want.var_pred_mean, rtol=1e-8)


@pytest.mark.slow
def test_fit_with_gaps_and_differencing_reaches_statsmodels_optimum(monthly):
    """statsmodels' exact diffuse log-likelihood adds a constant to ours (the terms of the
    diffuse steps depend on the differencing only), so the optima coincide."""
    y = monthly[:120].copy()
    y[[3, 20, 21, 60, 119]] = np.nan
    fitted = ps.ARIMA((1, 1, 1), (0, 1, 1, 12)).fit(y)
    ref = _sarimax(y, (1, 1, 1), (0, 1, 1, 12), use_exact_diffuse=True)
    best = ref.fit(disp=False, maxiter=500)
    steps = fitted.log_prob_steps(y).numpy()
    diffuse = (steps == 0) & ~np.isnan(y)
    const = ref.loglikeobs(best.params)[diffuse].sum()
    assert float(fitted.log_prob(y)) >= best.llf - const - 1e-6


@pytest.mark.parametrize("c", [1e-3, 1.0, 1e3])
def test_scale_equivariance(c):
    kw = dict(order=(1, 1, 1), seasonal_order=(0, 1, 1, 12), ar=[0.3], ma=[-0.4],
              seasonal_ma=[-0.6])
    base = ps.ARIMA.from_params(**kw, noise_var=0.1)
    scaled = ps.ARIMA.from_params(**kw, noise_var=0.1 * c * c)
    y = base.sample(1, 100, seed=0)[0].numpy() + 300.0
    n = 100 - 13
    lp0, lp1 = float(base.log_prob(y)), float(scaled.log_prob(c * y))
    assert abs(lp1 - (lp0 - n * np.log(c))) < 1e-9 * max(1.0, abs(lp0))
    fit0 = ps.ARIMA((1, 1, 1), (0, 1, 1, 12)).fit(y)
    fit1 = ps.ARIMA((1, 1, 1), (0, 1, 1, 12)).fit(c * y)
    # the maximised likelihood is equivariant to the optimiser's precision; the estimates
    # agree to the flatness of the optimum
    ll0, ll1 = float(fit0.log_prob(y)), float(fit1.log_prob(c * y))
    assert abs(ll1 - (ll0 - n * np.log(c))) < 1e-7 * max(1.0, abs(ll0))
    for k in ("ar", "ma", "seasonal_ma"):
        np.testing.assert_allclose(fit1.params[k], fit0.params[k], atol=1e-4)
    assert abs(float(fit1.params["noise_var"]) / c**2 / float(fit0.params["noise_var"]) - 1) < 1e-4


def _best_of(model: SARIMAX) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(disp=False, maxiter=500).llf


def test_airline_fit_reaches_statsmodels_optimum(monthly):
    fitted = ps.ARIMA((0, 1, 1), (0, 1, 1, 12)).fit(monthly)
    ref = _best_of(_sarimax(monthly, (0, 1, 1), (0, 1, 1, 12), simple_differencing=True))
    assert float(fitted.log_prob(monthly)) >= ref - 1e-6
    assert fitted.num_params == 3


@pytest.mark.slow
@pytest.mark.parametrize(("order", "seasonal_order", "trend"), [
    ((2, 1, 1), (1, 1, 0, 12), "n"),
    ((1, 0, 1), (1, 0, 1, 12), "c"),
    ((3, 1, 0), (0, 1, 2, 12), "n"),
])
def test_fits_reach_statsmodels_optimum(monthly, order, seasonal_order, trend):
    fitted = ps.ARIMA(order, seasonal_order, trend=trend).fit(monthly)
    ref = _best_of(_sarimax(monthly, order, seasonal_order, trend=trend,
                            simple_differencing=True))
    assert float(fitted.log_prob(monthly)) >= ref - 1e-6


def test_fit_with_exog_reaches_statsmodels_optimum(monthly):
    y = monthly[:120]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 1))
    y = y + 2.0 * x[:, 0]
    fitted = ps.ARIMA((1, 1, 0), (0, 1, 1, 12)).fit(y, exog=x)
    ref = _best_of(_sarimax(y, (1, 1, 0), (0, 1, 1, 12), exog=x, simple_differencing=True))
    assert float(fitted.log_prob(y, exog=x)) >= ref - 1e-6
    assert abs(float(fitted.params["exog_coef"][0]) - 2.0) < 0.1
    assert fitted.num_params == 4


def test_arma_with_mean_fit_and_missing_values():
    truth = ps.ARIMA.from_params(order=(1, 0, 1), ar=[0.6], ma=[0.3], noise_var=1.0, mean=5.0)
    y = truth.sample(1, 300, seed=2)[0].numpy().copy()
    y[[10, 11, 50, 200]] = np.nan
    fitted = ps.ARIMA((1, 0, 1)).fit(y)
    ref = _sarimax(y - 5.0, (1, 0, 1), (0, 0, 0, 0), trend="c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ref.fit(disp=False)
    assert float(fitted.log_prob(y)) >= res.llf - 1e-6
    assert abs(float(fitted.params["mean"]) - 5.0 - res.params[0] / (1 - res.params[1])) < 1e-3


@pytest.mark.parametrize(("order", "seasonal_order", "params", "kw"), [
    ((2, 0, 1), (1, 0, 0, 4), dict(ar=[0.5, 0.2], ma=[0.3], seasonal_ar=[-0.2], mean=3.0,
                                   noise_var=1.3), dict(trend="c")),
    ((1, 1, 1), (0, 1, 1, 12), dict(ar=[0.4], ma=[-0.5], seasonal_ma=[-0.6], noise_var=0.1),
     dict(use_exact_diffuse=True)),
])
def test_forecast_equals_get_forecast(monthly, order, seasonal_order, params, kw):
    y = monthly[:100] - 330.0
    model = ps.ARIMA.from_params(order=order, seasonal_order=seasonal_order, **params)
    fc = model.forecast(y, 24)
    a = np.convolve([1, -0.5, -0.2], [1, 0, 0, 0, 0.2])
    vec = {"trend": [3.0 * a.sum()], "use_exact_diffuse": []}[next(iter(kw))]
    for k in ("ar", "ma", "seasonal_ar", "seasonal_ma"):
        vec += list(params.get(k, []))
    vec.append(params["noise_var"])
    ref = _sarimax(y, order, seasonal_order, **kw).smooth(np.array(vec)).get_forecast(24)
    np.testing.assert_allclose(fc.mean.numpy(), ref.predicted_mean, atol=1e-8, rtol=1e-10)
    np.testing.assert_allclose(fc.std.numpy() ** 2, ref.var_pred_mean, rtol=1e-8)


def test_forecast_with_gaps_and_predict(monthly):
    model = ps.ARIMA.from_params(order=(2, 0, 0), ar=[0.5, 0.3], noise_var=0.5, mean=1.0)
    y = model.sample(1, 60, seed=4)[0].numpy().copy()
    y[[5, 58]] = np.nan
    fc = model.forecast(y, 5)
    ref = _sarimax(y, (2, 0, 0), (0, 0, 0, 0), trend="c").smooth(
        [0.2, 0.5, 0.3, 0.5]).get_forecast(5)
    np.testing.assert_allclose(fc.mean.numpy(), ref.predicted_mean, atol=1e-9)
    np.testing.assert_allclose(fc.std.numpy() ** 2, ref.var_pred_mean, rtol=1e-9)
    # predict: the one-step predictive means of statsmodels' filter
    pred = model.predict(y).numpy()
    filt = _sarimax(y, (2, 0, 0), (0, 0, 0, 0), trend="c").filter([0.2, 0.5, 0.3, 0.5])
    np.testing.assert_allclose(pred, filt.forecasts[0], atol=1e-9)


def test_predict_with_differencing(monthly):
    y = monthly[:80]
    model = ps.ARIMA.from_params(order=(0, 1, 1), seasonal_order=(0, 1, 1, 12), ma=[-0.3],
                                 seasonal_ma=[-0.7], noise_var=0.1)
    dist = model._step_predictive(ps.Sequences.from_list([y]))
    assert torch.isinf(dist.scale[0, :13]).all()
    lp = dist.log_prob(torch.from_numpy(y)[None])[0, 13:]
    np.testing.assert_allclose(lp.numpy(), model.log_prob_steps(y).numpy()[13:], atol=1e-10)


def test_sample_moments_and_prefix():
    model = ps.ARIMA.from_params(order=(1, 0, 1), ar=[0.7], ma=[0.4], noise_var=2.0, mean=-1.0)
    draws = model.sample(4000, 3, seed=0).values.numpy()
    gamma = arma_acovf([1, -0.7], [1, 0.4], nobs=3, sigma2=2.0)
    cov = np.cov(draws.T)
    se = gamma[0] * np.sqrt(2.0 / 4000)  # sd of a sample variance of a Gaussian
    assert abs(draws.mean() + 1.0) < 5 * np.sqrt(gamma[0] / 4000) * 3
    np.testing.assert_allclose(np.diag(cov), gamma[0], atol=5 * se)
    assert abs(cov[0, 1] - gamma[1]) < 5 * se
    airline = ps.ARIMA.from_params(order=(0, 1, 1), seasonal_order=(0, 1, 1, 12), ma=[-0.3],
                                   seasonal_ma=[-0.7], noise_var=0.1)
    prefix = airline.sample(1, 30, seed=5)[0].numpy() + 300.0
    out = airline.sample(5, 40, prefix=prefix, seed=1)
    np.testing.assert_array_equal(out.values.numpy()[:, :30], np.tile(prefix, (5, 1)))
    assert torch.isfinite(airline.log_prob(out)).all()
    # the continuations have the exact h-step predictive distributions (mean and variance)
    many = airline.sample(4000, 36, prefix=prefix, seed=2).values.numpy()[:, 30:]
    fc = airline.forecast(prefix, 6)
    mean, sd = fc.mean.numpy(), fc.std.numpy()
    assert np.all(np.abs(many.mean(0) - mean) < 5 * sd / np.sqrt(4000))
    assert np.all(np.abs(many.var(0) / sd**2 - 1) < 5 * np.sqrt(2 / 4000))


def test_params_save_load(tmp_path, monthly):
    model = ps.ARIMA.from_params(order=(1, 1, 1), seasonal_order=(1, 1, 0, 12), ar=[0.2],
                                 ma=[-0.4], seasonal_ar=[-0.3], noise_var=0.1)
    assert set(model.params) == {"ar", "ma", "seasonal_ar", "seasonal_ma", "noise_var"}
    path = tmp_path / "arima.pt"
    model.save(path)
    loaded = ps.load(path)
    assert loaded.order == (1, 1, 1) and loaded.seasonal_order == (1, 1, 0, 12)
    assert torch.equal(loaded.log_prob(monthly), model.log_prob(monthly))


@pytest.mark.parametrize(("kw", "match"), [
    (dict(ar=[1.2], noise_var=1.0), "not stationary"),
    (dict(order=(1, 0, 0), seasonal_order=(1, 0, 0, 12), ar=[0.5], seasonal_ar=[1.0],
          noise_var=1.0), "not stationary"),
    (dict(order=(2, 0, 0), ar=[0.5], noise_var=1.0), "ar has 1 coefficient"),
    (dict(ar=[0.5], noise_var=0.0), "noise_var must be > 0"),
    (dict(ar=[0.5], noise_var=1.0, mean=1.0, intercept=1.0), "not both"),
    (dict(seasonal_ar=[0.5], noise_var=1.0), "seasonal_order"),
    (dict(ar=[np.nan], noise_var=1.0), "NaN"),
])
def test_from_params_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        ps.ARIMA.from_params(**kw)


def test_constructor_validation():
    with pytest.raises(ValueError, match="period"):
        ps.ARIMA((1, 0, 0), (1, 0, 0, 1))
    with pytest.raises(ValueError, match="order"):
        ps.ARIMA((1, 0))
    with pytest.raises(ValueError, match="trend"):
        ps.ARIMA((1, 0, 0), trend="ct")
    assert ps.ARIMA((1, 1, 0)).trend == "n" and ps.ARIMA((1, 0, 0)).trend == "c"


def test_non_invertible_ma_is_scored_exactly():
    """theta and 1/theta give the same exact likelihood (with the variance rescaled)."""
    y = ps.ARIMA.from_params(order=(0, 0, 1), ma=[0.5], noise_var=1.0).sample(1, 50, seed=0)[0]
    inv = ps.ARIMA.from_params(order=(0, 0, 1), ma=[0.5], noise_var=1.0)
    non = ps.ARIMA.from_params(order=(0, 0, 1), ma=[2.0], noise_var=0.25)
    assert abs(float(inv.log_prob(y)) - float(non.log_prob(y))) < 1e-9


def test_ar_errors_equal_autoregressive():
    """ARIMA(p, 0, 0) and AutoRegressive compute the same exact likelihood two ways (the
    Kalman filter here, the stationary conditionals and banded precision there), gaps and
    covariates included: a test keeps the two from drifting apart."""
    rng = np.random.default_rng(5)
    ar = ps.AutoRegressive.from_params(intercept=0.6, coef=[0.5, -0.3], noise_var=0.8,
                                       exog_coef=[1.5])
    arima = ps.ARIMA.from_params(order=(2, 0, 0), ar=[0.5, -0.3], noise_var=0.8,
                                 intercept=0.6, exog_coef=[1.5])
    data = [rng.normal(size=n) for n in (5, 30, 47)]
    data[1][[0, 7, 8]] = np.nan
    x = [rng.normal(size=(len(d), 1)) for d in data]
    xs = np.zeros((3, 47, 1))
    for i, xi in enumerate(x):
        xs[i, : len(xi)] = xi
    np.testing.assert_allclose(arima.log_prob(data, exog=xs).numpy(),
                               ar.log_prob(data, exog=xs).numpy(), atol=1e-9)
    np.testing.assert_allclose(arima.log_prob_steps(data, exog=xs).numpy(),
                               ar.log_prob_steps(data, exog=xs).numpy(), atol=1e-9)


def test_select_arima_order_by_aicc_and_heldout():
    truth = ps.ARIMA.from_params(order=(0, 1, 1), seasonal_order=(0, 1, 1, 12), ma=[-0.4],
                                 seasonal_ma=[-0.6], noise_var=1.0)
    y = truth.sample(1, 180, seed=3)[0].numpy() + 50.0 * np.sin(np.arange(180) * np.pi / 6)
    sel = ps.selection.select_arima_order(y, period=12, max_p=1, max_q=1)
    assert sel.details["d"] == 1 and sel.details["seasonal_d"] == 1
    assert "KPSS" in sel.description and "seasonal strength" in sel.description
    assert "AICc" in sel.description and sel.criterion == "aicc"
    table = sel.table
    n = 180 - 13
    k = table["num_params"]
    np.testing.assert_allclose(table["aicc"], table["aic"] + 2 * k * (k + 1) / (n - k - 1))
    label = table["aicc"].idxmin()
    assert sel.best == ((int(label[1]), 1, int(label[5])), (int(label[8]), 1, int(label[12]), 12))
    assert sel.model is sel.models[sel.best]
    assert float(sel.model.log_prob(y)) == pytest.approx(table.loc[label, "log_lik"])
    assert sel.best[1][2] == 1  # the seasonal MA of the truth is found
    held = ps.selection.select_arima_order(y, period=12, max_p=1, max_q=0, max_seasonal_p=0,
                                           d=1, seasonal_d=1, criterion="crossval")
    assert held.criterion == "crossval" and "held-out tail" in held.description
    assert "(given)" in held.description


def test_stationary_state_cov_solves_lyapunov():
    """The doubling sum against a direct solve of the r^2 linear equations, near a unit
    root too."""
    from scipy.linalg import solve_discrete_lyapunov

    from probseq.arima import inference

    for ar, ma, sar, sma in [([0.5, 0.2], [0.3, 0.1], [0.4], [-0.5]),
                             ([0.99], [], [0.95], [0.9]), ([], [0.4], [], [-0.85])]:
        a, b = inference.reduced_polynomials(np.array(ar), np.array(ma), np.array(sar),
                                             np.array(sma), 12)
        first, rvec = inference.transition_first_column(a, b)
        got = inference.stationary_state_cov(first, rvec)
        tm = np.zeros((len(first), len(first)))
        tm[:, 0] = first
        tm[np.arange(len(first) - 1), np.arange(1, len(first))] = 1.0
        want = solve_discrete_lyapunov(tm, np.outer(rvec, rvec), method="direct")
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()


def test_compare_conditions_on_the_diffuse_steps(monthly):
    y = monthly[:120]
    models = {"airline": ps.ARIMA((0, 1, 1), (0, 1, 1, 12)).fit(y),
              "ar2": ps.AutoRegressive(order=2).fit(y)}
    table = ps.compare(models, y)
    assert table.index[0] == "airline"
    # both scored on the steps after the airline model's 13 diffuse ones
    ar_steps = models["ar2"].log_prob_steps(y).numpy()[13:].sum()
    assert abs(table.loc["ar2", "log_lik"] - ar_steps) < 1e-6


def test_predict_with_exog_and_gaps_equals_sarimax_filter():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 1))
    model = ps.ARIMA.from_params(order=(1, 0, 0), ar=[0.5], noise_var=1.0, mean=2.0,
                                 exog_coef=[3.0])
    y = model.sample(1, 60, seed=1, exog=x)[0].numpy().copy()
    y[[10, 30]] = np.nan
    filt = _sarimax(y, (1, 0, 0), (0, 0, 0, 0), trend="c", exog=x).filter([1.0, 3.0, 0.5, 1.0])
    np.testing.assert_allclose(model.predict(y, exog=x).numpy(), filt.forecasts[0], atol=1e-9)
    assert float(model.log_prob(y, exog=x)) == pytest.approx(filt.llf, abs=1e-9)
