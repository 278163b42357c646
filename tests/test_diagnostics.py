"""Residual diagnostics: quantile residuals and Ljung-Box, against statsmodels and numpy."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import probseq as ps


def test_ar_residuals_and_ljung_box_equal_statsmodels():
    """For a Gaussian predictive the quantile residual is the standardised one-step error:
    equal to statsmodels' ARIMA ``standardized_forecasts_error`` (exact likelihood, no burn),
    and the Ljung-Box table to ``test_serial_correlation``."""
    from statsmodels.tsa.arima.model import ARIMA

    y = ps.datasets.ar_process(1, 300, coef=[0.5, -0.3], intercept=1.0, noise_var=2.0,
                               seed=0)[0].numpy()
    model = ps.AutoRegressive.from_params(intercept=1.0, coef=[0.5, -0.3], noise_var=2.0)
    res = ARIMA(y, order=(2, 0, 0), trend="c").filter(np.r_[1.0 / 0.8, 0.5, -0.3, 2.0])
    sfe = res.standardized_forecasts_error[0]
    np.testing.assert_allclose(model.residuals(y).numpy(), sfe, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.residuals(y, kind="standardized").numpy(), sfe, atol=1e-10)
    table = model.residual_diagnostics(y, lags=8)
    ref = res.test_serial_correlation("ljungbox", lags=8)[0]
    np.testing.assert_allclose(table["lb_stat"], ref[0], rtol=1e-10)
    np.testing.assert_allclose(table["lb_pvalue"], ref[1], rtol=1e-8)
    assert list(table.index) == list(range(1, 9))
    assert table.attrs["num_residuals"] == 300
    jb = stats.jarque_bera(sfe)
    assert table.attrs["jarque_bera"] == pytest.approx(jb.statistic)


def test_local_level_residuals_skip_the_diffuse_step_and_gaps():
    """The exact diffuse local level on the Nile: statsmodels (``use_exact_diffuse=True``)
    at the same variances, with and without gaps; the diffuse first step and the missing
    steps have no residual (NaN); a pandas series keeps its index."""
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    nile = ps.datasets.nile()
    y = nile.to_numpy(float)
    model = ps.LinearGaussianSSM.local_level().fit(nile)
    params = np.r_[float(model.params["observation_cov"][0, 0]),
                   float(model.params["transition_cov"][0, 0])]
    r = model.residuals(nile)
    assert isinstance(r, pd.Series) and r.index.equals(nile.index) and np.isnan(r.iloc[0])
    res = UnobservedComponents(y, "llevel", use_exact_diffuse=True).filter(params)
    np.testing.assert_allclose(r.to_numpy()[1:], res.standardized_forecasts_error[0, 1:],
                               atol=1e-10)
    table = model.residual_diagnostics(nile, lags=10)
    ref = res.test_serial_correlation("ljungbox", lags=10)[0]
    np.testing.assert_allclose(table["lb_stat"], ref[0], rtol=1e-8)

    gappy = y.copy()
    gappy[[20, 21, 50, 70]] = np.nan
    r = model.residuals(gappy).numpy()
    assert np.isnan(r[[0, 20, 21, 50, 70]]).all() and np.isfinite(r).sum() == 95
    res = UnobservedComponents(gappy, "llevel", use_exact_diffuse=True).filter(params)
    ok = np.isfinite(r)
    np.testing.assert_allclose(r[ok], res.standardized_forecasts_error[0, ok], atol=1e-10)
    # With gaps: autocorrelations of the pairs both observed (a direct numpy formula).
    table = model.residual_diagnostics(gappy, lags=4)
    z = r[1:] - np.nanmean(r[1:])
    n = np.isfinite(z).sum()
    denom = np.nansum(z * z)
    rho = [np.nansum(z[:-k] * z[k:]) / denom for k in range(1, 5)]
    q = n * (n + 2) * np.cumsum(np.square(rho) / (n - np.arange(1, 5)))
    np.testing.assert_allclose(table["lb_stat"], q, rtol=1e-10)


def test_hmm_quantile_residuals_equal_a_numpy_forward_filter():
    """A Gaussian HMM's one-step predictive is a mixture: its quantile residual is
    ``Phi^-1(sum_k P(z_t = k | past) Phi((x_t - mu_k) / sd_k))``, computed here by a numpy
    forward filter; under the true model the residuals look N(0, 1), and the pooled
    Ljung-Box of 4 sequences has 4 degrees of freedom per lag."""
    init, trans = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])
    mu, sd = np.array([-1.0, 2.0]), np.array([1.0, 0.7])
    model = ps.HiddenMarkovModel.from_params(initial=init, transition=trans, means=mu[:, None],
                                             covariances=(sd ** 2)[:, None, None])
    y = model.sample(4, 250, seed=1).values.numpy()
    r = model.residuals(list(y)).numpy()
    for i in range(4):
        pred, ref = init, []
        for x in y[i]:
            ref.append(stats.norm.ppf(pred @ stats.norm.cdf((x - mu) / sd)))
            post = pred * stats.norm.pdf(x, mu, sd)
            pred = (post / post.sum()) @ trans
        np.testing.assert_allclose(r[i], ref, atol=1e-9)
    assert stats.kstest(r.ravel(), "norm").pvalue > 0.01
    table = model.residual_diagnostics(list(y), lags=3)
    assert list(table["df"]) == [4, 8, 12]


def test_residuals_refuse_what_has_no_continuous_cdf():
    chain = ps.MarkovChain(order=1).fit([np.array([0, 1, 1, 0, 1, 0, 0, 1])])
    with pytest.raises(ValueError, match="univariate real data or counts"):
        chain.residuals([np.array([0, 1, 1, 0])])
    var = ps.VectorAutoRegressive(1).fit(np.random.default_rng(0).normal(size=(50, 2)))
    with pytest.raises(ValueError, match="multivariate"):
        var.residuals(np.random.default_rng(1).normal(size=(20, 2)))
    ar = ps.AutoRegressive.from_params(intercept=0.0, coef=[0.5], noise_var=1.0)
    with pytest.raises(ValueError, match="kind"):
        ar.residuals(np.zeros(10), kind="pearson")
    with pytest.raises(ValueError, match="sequence 0 has 10 residuals"):
        ar.residual_diagnostics(np.random.default_rng(2).normal(size=10), lags=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ar.residual_diagnostics(np.random.default_rng(3).normal(size=60))


def test_poisson_hmm_randomised_quantile_residuals_are_normal_under_the_model():
    """Counts: randomised quantile residuals (Dunn & Smyth) of the true Poisson HMM are
    N(0, 1) (Kolmogorov-Smirnov) and reproducible; standardized residuals are refused."""
    model = ps.HiddenMarkovModel.from_params(initial=[0.5, 0.5],
                                             transition=[[0.9, 0.1], [0.2, 0.8]],
                                             rates=[1.0, 7.0])
    counts = list(model.sample(5, 200, seed=2).values.numpy())
    r = model.residuals(counts).numpy()
    assert np.isfinite(r).all()
    assert stats.kstest(r.ravel(), "norm").pvalue > 0.01
    np.testing.assert_array_equal(r, model.residuals(counts).numpy())
    with pytest.raises(ValueError, match="standardized residuals of counts"):
        model.residuals(counts, kind="standardized")
