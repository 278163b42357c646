"""Structural time-series models (LinearGaussianSSM.structural) against statsmodels'
UnobservedComponents with exact diffuse initialisation."""

import functools
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch

import probseq as ps
from probseq import LinearGaussianSSM


def _co2_monthly(n: int | None = None) -> np.ndarray:
    y = ps.datasets.co2_monthly().to_numpy()
    return y if n is None else y[:n]


# name -> (our keywords, statsmodels keywords, statsmodels params, diffuse states)
CASES = {
    "trend_seasonal12": (
        dict(trend=True, seasonal=12, obs_var=0.1, level_var=0.05, slope_var=1e-4,
             seasonal_var=0.01),
        dict(level="local linear trend", seasonal=12), [0.1, 0.05, 1e-4, 0.01], 13),
    "level_trig": (
        dict(freq_seasonal=[{"period": 12, "harmonics": 3}], obs_var=0.1, level_var=0.05,
             freq_seasonal_var=0.001),
        dict(level="local level", freq_seasonal=[{"period": 12, "harmonics": 3}]),
        [0.1, 0.05, 0.001], 7),
    "trend_two_trig_noninteger": (
        dict(trend=True, freq_seasonal=[{"period": 365.25 / 30.4, "harmonics": 2},
                                        {"period": 6.5, "harmonics": 1}],
             obs_var=0.1, level_var=0.05, slope_var=1e-3, freq_seasonal_var=[1e-3, 2e-3]),
        dict(level="local linear trend",
             freq_seasonal=[{"period": 365.25 / 30.4, "harmonics": 2},
                            {"period": 6.5, "harmonics": 1}]),
        [0.1, 0.05, 1e-3, 1e-3, 2e-3], 8),
    "trend_damped_cycle": (
        dict(trend=True, cycle=True, cycle_period=30.0, cycle_damping=0.9, obs_var=0.1,
             level_var=0.05, slope_var=1e-3, cycle_var=0.3),
        dict(level="local linear trend", cycle=True, damped_cycle=True, stochastic_cycle=True),
        [0.1, 0.05, 1e-3, 0.3, 2 * math.pi / 30.0, 0.9], 4),
    "level_seasonal4_ar2": (
        dict(seasonal=4, autoregressive=2, ar_coef=[0.5, 0.2], obs_var=0.1, level_var=0.05,
             seasonal_var=0.01, ar_var=0.3),
        dict(level="local level", seasonal=4, autoregressive=2),
        [0.1, 0.05, 0.01, 0.3, 0.5, 0.2], 4),
    "deterministic_trend_fixed_seasonal": (
        dict(trend=True, stochastic_level=False, stochastic_trend=False, seasonal=12,
             stochastic_seasonal=False, obs_var=0.3),
        dict(level="deterministic trend", seasonal=12, stochastic_seasonal=False), [0.3], 13),
    "smooth_trend_seasonal": (
        dict(trend=True, stochastic_level=False, seasonal=12, obs_var=0.3, slope_var=1e-4,
             seasonal_var=0.01),
        dict(level="smooth trend", seasonal=12), [0.3, 1e-4, 0.01], 13),
}


def _reference(y, case):
    kw, smkw, p, _ = CASES[case]
    mod = sm.tsa.UnobservedComponents(y, use_exact_diffuse=True, **smkw)
    mod.ssm.tolerance = 0.0  # statsmodels' own steady-state switch
    return LinearGaussianSSM.structural(**kw), mod, np.array(p)


@pytest.mark.parametrize("gaps", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_per_step_densities_match_unobserved_components(case, gaps):
    y = _co2_monthly(200)  # gaps at months 3, 7 (inside the diffuse period) and 71-73
    if not gaps:
        y = np.where(np.isnan(y), np.nanmean(y), y)
    model, mod, p = _reference(y, case)
    assert model.num_diffuse_steps == CASES[case][3]
    res = mod.filter(p)
    ours = model.log_prob_steps(y).numpy()
    ref = np.where(np.isnan(y), 0.0, res.llf_obs)
    nd = res.nobs_diffuse  # statsmodels' diffuse period (gaps lengthen it)
    assert nd == (CASES[case][3] if not gaps else nd) and nd >= model.num_diffuse_steps
    np.testing.assert_allclose(ours[nd:], ref[nd:], rtol=1e-8, atol=1e-10)
    # inside the diffuse period: the steps with F_inf = 0 are densities and match; the others
    # (statsmodels' -log(2 pi F_inf) / 2) are not scored
    scored = ours[:nd] != 0
    np.testing.assert_allclose(ours[:nd][scored], ref[:nd][scored], rtol=1e-8, atol=1e-10)
    assert (~scored).sum() - np.isnan(y[:nd]).sum() == CASES[case][3]
    assert model.log_prob(y).item() == pytest.approx(ours.sum(), rel=1e-12)


def _components(res, spec):
    """statsmodels' smoothed components by our names."""
    out = {}
    if spec.level:
        out["level"] = res.level
    if spec.trend:
        out["slope"] = res.trend
    if spec.seasonal:
        out["seasonal"] = res.seasonal
    if spec.freq_seasonal:
        for i, comp in enumerate(res.freq_seasonal):
            out["freq_seasonal" if len(res.freq_seasonal) == 1 else f"freq_seasonal.{i}"] = comp
    if spec.cycle:
        out["cycle"] = res.cycle
    if spec.autoregressive:
        out["autoregressive"] = res.autoregressive
    return out


@pytest.mark.parametrize("case", ["trend_seasonal12", "trend_two_trig_noninteger",
                                  "trend_damped_cycle", "level_seasonal4_ar2"])
def test_smoothed_components_and_forecasts_match_statsmodels(case):
    y = _co2_monthly(160)
    model, mod, p = _reference(y, case)
    res = mod.smooth(p)
    dec = model.decompose(y)
    ref = _components(res, mod)
    assert set(dec.names) == set(ref)
    d = res.nobs_diffuse  # the diffuse period (months 3 and 7 are missing: it is longer)
    weights = dict(model.structure["components"])
    P = res.smoothed_state_cov  # [S, S, T]
    for name, comp in ref.items():
        mean, var = dec.mean[name].numpy(), dec.var[name].numpy()
        scale = float(np.abs(comp["smoothed"]).max()) + 1.0
        # the exact variance w' P w of the component from statsmodels' smoothed state
        # covariances (statsmodels' own freq_seasonal "smoothed_cov" sums the harmonics'
        # variances and leaves out their covariances; the others equal w' P w)
        w = np.array(weights[name])
        ref_var = np.einsum("s,srt,r->t", w, P, w)
        if name != "freq_seasonal.0":
            np.testing.assert_allclose(ref_var, comp["smoothed_cov"], rtol=1e-12)
        comp = {"smoothed": comp["smoothed"], "smoothed_cov": ref_var}
        vscale = float(ref_var.max())
        np.testing.assert_allclose(mean[d:], comp["smoothed"][d:], rtol=1e-8, atol=1e-9 * scale,
                                   err_msg=name)
        np.testing.assert_allclose(var[d:], comp["smoothed_cov"][d:], rtol=1e-7,
                                   atol=1e-9 * vscale, err_msg=name)
        # the diffuse steps: the exact diffuse smoother (Durbin & Koopman 2012, 5.3); up to
        # 1.4e-7 relative from statsmodels' own exact diffuse smoother with two
        # non-integer trigonometric harmonics or a cycle (measured; 1e-12 elsewhere)
        np.testing.assert_allclose(mean[:d], comp["smoothed"][:d], rtol=1e-6, atol=1e-9 * scale,
                                   err_msg=name)
        np.testing.assert_allclose(var[:d], comp["smoothed_cov"][:d], rtol=1e-6,
                                   atol=1e-9 * vscale, err_msg=name)
    fc = model.forecast(y, horizon=24)
    ref_fc = res.get_forecast(24)
    np.testing.assert_allclose(fc.mean.numpy(), ref_fc.predicted_mean, rtol=1e-9)
    np.testing.assert_allclose(fc.std.numpy() ** 2, ref_fc.var_pred_mean, rtol=1e-8)


def test_decompose_pandas_and_frame():
    series = ps.datasets.co2_monthly().iloc[:120]
    model = LinearGaussianSSM.structural(trend=True, seasonal=12, obs_var=0.05,
                                         level_var=0.05, slope_var=1e-5, seasonal_var=1e-4)
    dec = model.decompose(series)
    assert isinstance(dec.mean["level"], pd.Series)
    assert dec.mean["level"].index.equals(series.index)
    frame = dec.to_frame()
    assert list(frame.columns) == ["level", "level_std", "slope", "slope_std", "seasonal",
                                   "seasonal_std"]
    assert frame.index.equals(series.index)
    # the observation components and the smoothed irregular add up to the observed data
    obs = series.notna().to_numpy()
    fitted = (frame["level"] + frame["seasonal"]).to_numpy()
    assert np.abs(fitted[obs] - series.to_numpy()[obs]).max() < 1.5
    with pytest.raises(ValueError, match="structural"):
        LinearGaussianSSM.local_level(1.0, 1.0).decompose(series)


def test_fit_reaches_statsmodels_optimum():
    y = _co2_monthly(240)
    kw = dict(freq_seasonal=[{"period": 12, "harmonics": 2}])
    model = LinearGaussianSSM.structural(**kw).fit(y)
    mod = sm.tsa.UnobservedComponents(y, "local level", use_exact_diffuse=True, **kw)
    ref = mod.fit(disp=0)
    steps = mod.loglikeobs(ref.params)
    ours = model.log_prob_steps(y).numpy()
    nd = mod.filter(ref.params).nobs_diffuse
    unscored = np.r_[ours[:nd] == 0, np.zeros(len(y) - nd, bool)] & ~np.isnan(y)
    sm_llf = ref.llf - steps[unscored].sum()  # statsmodels' llf on the steps we score
    assert model.log_prob(y).item() >= sm_llf - 1e-6
    assert model.num_params == 3
    var = [model.params["observation_cov"].item(), *model.params["transition_cov"].diagonal()[:2]]
    # the seasonal variance is at its lower bound in both (about 1e-11 of the others)
    np.testing.assert_allclose(var, ref.params, rtol=2e-2, atol=1e-8)


@pytest.mark.slow
def test_fit_trend_seasonal_reaches_statsmodels_optimum_on_co2_monthly():
    y = _co2_monthly()
    model = LinearGaussianSSM.structural(trend=True, seasonal=12).fit(y)
    mod = sm.tsa.UnobservedComponents(y, "local linear trend", seasonal=12,
                                      use_exact_diffuse=True)
    ref = mod.fit(disp=0)
    ours = model.log_prob_steps(y).numpy()
    ref_steps = mod.loglikeobs(ref.params)
    sm_llf = ref_steps[ours != 0].sum()  # the steps we score
    assert model.log_prob(y).item() >= sm_llf - 1e-6


_SCALE_KW = dict(freq_seasonal=[{"period": 12, "harmonics": 2}])


@functools.cache
def _scale_base() -> LinearGaussianSSM:
    return LinearGaussianSSM.structural(**_SCALE_KW).fit(_co2_monthly(150))


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_scale_equivariance(c):
    y = _co2_monthly(150)
    base = _scale_base()
    scaled = LinearGaussianSSM.structural(**_SCALE_KW).fit(c * y)
    n = int((base.log_prob_steps(y) != 0).sum())
    assert scaled.log_prob(c * y).item() == pytest.approx(
        base.log_prob(y).item() - n * math.log(c), abs=1e-6)
    # a variance at its lower bound (here the seasonal's) is compared on the others' scale
    top = float(base.params["transition_cov"].max())
    for key in ("observation_cov", "transition_cov"):
        np.testing.assert_allclose(scaled.params[key].numpy(), c * c * base.params[key].numpy(),
                                   rtol=1e-4, atol=1e-7 * c * c * top)


def test_exog_fit_matches_statsmodels():
    g = np.random.default_rng(3)
    T = 120
    X = g.normal(size=(T, 1)).cumsum(0) * 0.5
    season = np.tile([1.0, -0.5, 0.3, -0.8], T // 4)
    y = np.cumsum(g.normal(scale=0.3, size=T)) + season + 1.5 * X[:, 0] + g.normal(size=T)
    y[[20, 21, 60]] = np.nan
    model = LinearGaussianSSM.structural(seasonal=4, stochastic_seasonal=False)
    model.fit(y, exog=X)
    mod = sm.tsa.UnobservedComponents(y, "local level", seasonal=4, stochastic_seasonal=False,
                                      exog=X, use_exact_diffuse=True)
    ref = mod.fit(disp=0)
    ours = model.log_prob_steps(y, exog=X).numpy()
    sm_llf = mod.loglikeobs(ref.params)[ours != 0].sum()
    assert model.log_prob(y, exog=X).item() >= sm_llf - 1e-6
    assert model.params["exog_coef"].item() == pytest.approx(ref.params[-1], rel=1e-2)
    # per step at statsmodels' optimum
    p = ref.params
    fixed = LinearGaussianSSM.structural(seasonal=4, stochastic_seasonal=False, obs_var=p[0],
                                         level_var=p[1])
    fixed._params["exog_coef"] = torch.tensor([[p[2]]], dtype=torch.float64)
    steps = fixed.log_prob_steps(y, exog=X).numpy()
    np.testing.assert_allclose(steps[steps != 0], mod.loglikeobs(p)[steps != 0], rtol=1e-9)
    dec = model.decompose(y, exog=X)
    np.testing.assert_allclose(dec.mean["regression"].numpy(),
                               X[:, 0] * model.params["exog_coef"].item())


def test_save_load_round_trip(tmp_path):
    y = _co2_monthly(100)
    model = LinearGaussianSSM.structural(seasonal=4, autoregressive=1, ar_coef=[0.6],
                                         obs_var=0.1, level_var=0.05, seasonal_var=0.01,
                                         ar_var=0.2)
    model.save(tmp_path / "m")
    back = ps.load(tmp_path / "m")
    assert torch.equal(back.log_prob_steps(y), model.log_prob_steps(y))
    assert back.decompose(y).names == ["level", "seasonal", "autoregressive"]


def test_sample_and_shapes():
    model = LinearGaussianSSM.structural(trend=True, freq_seasonal={"period": 365.25 / 7,
                                                                    "harmonics": 1},
                                         obs_var=0.1, level_var=0.01, slope_var=1e-6,
                                         freq_seasonal_var=1e-4)
    assert model.num_diffuse_steps == 4 and model.state_dim == 4
    prefix = _co2_monthly(60)
    s = model.sample(3, 80, prefix=np.nan_to_num(prefix, nan=320.0), seed=0)
    assert len(s) == 3 and torch.isfinite(s.values).all()
    batch = model.log_prob([prefix, prefix[:40]])
    assert batch[1].item() == pytest.approx(model.log_prob(prefix[:40]).item(), rel=1e-12)


def test_refusals():
    S = LinearGaussianSSM.structural
    with pytest.raises(ValueError, match="cycle_period"):
        S(cycle=True)
    with pytest.raises(ValueError, match="ar_coef"):
        S(autoregressive=2, ar_coef=[0.5])
    with pytest.raises(ValueError, match="not stationary"):
        S(autoregressive=1, ar_coef=[1.0])
    with pytest.raises(ValueError, match="harmonics"):
        S(freq_seasonal=[{"period": 12, "harmonics": 6}])
    # weekly data: a trend beside two yearly harmonics is numerically not identified by the
    # exact diffuse filter (statsmodels stays diffuse for the whole series there)
    with pytest.raises(ValueError, match="collinear"):
        S(trend=True, freq_seasonal=[{"period": 365.25 / 7, "harmonics": 2}])
    with pytest.raises(ValueError, match="irregular"):
        S(irregular=False)
    with pytest.raises(ValueError, match="deterministic"):
        S(stochastic_level=False, level_var=1.0)
    with pytest.raises(ValueError, match="needs a level"):
        S(level=False, trend=True)
    with pytest.raises(ValueError, match="seasonal"):
        S(seasonal=1)
    with pytest.raises(ValueError, match="without seasonal"):
        S(seasonal_var=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        S(level_var=-1.0)
    # an AR component alone is stationary: no diffuse state, a proper start
    ar = S(level=False, autoregressive=1, ar_coef=[0.5], obs_var=1.0, ar_var=1.0)
    assert ar.initialization == "proper" and ar.num_diffuse_steps == 0
    mod = sm.tsa.UnobservedComponents(np.zeros(5) + 1.0, "irregular", autoregressive=1)
    y = np.array([1.0, 0.3, -0.5, 2.0, 0.1])
    mod = sm.tsa.UnobservedComponents(y, "irregular", autoregressive=1)
    np.testing.assert_allclose(ar.log_prob_steps(y).numpy(),
                               mod.loglikeobs(np.array([1.0, 1.0, 0.5])), rtol=1e-10)


def test_plot_decomposition():
    import matplotlib

    matplotlib.use("Agg")
    from probseq.plots import plot_decomposition

    series = ps.datasets.co2_monthly().iloc[:120]
    model = LinearGaussianSSM.structural(trend=True, seasonal=12, obs_var=0.05,
                                         level_var=0.05, slope_var=1e-5, seasonal_var=1e-4)
    fig = plot_decomposition(model, series)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["data", "slope", "seasonal", "irregular"]
    level_line = fig.axes[0].get_lines()[1].get_ydata()
    np.testing.assert_allclose(level_line, model.decompose(series).mean["level"].to_numpy())
    irregular = fig.axes[3].get_lines()[0].get_ydata()
    assert np.isnan(irregular[series.isna().to_numpy()]).all()
    import matplotlib.pyplot as plt

    plt.close(fig)


def _ar_cycle_data():
    g = np.random.default_rng(0)
    T = 160
    e = np.zeros(T)
    for t in range(2, T):
        e[t] = 0.6 * e[t - 1] + 0.2 * e[t - 2] + g.normal()
    level = np.cumsum(g.normal(scale=0.3, size=T))
    y = level + e + g.normal(scale=0.5, size=T)
    x = level + 2 * np.sin(2 * np.pi * np.arange(T) / 25) + g.normal(scale=0.5, size=T)
    y[[30, 31, 100]] = np.nan
    return y, x


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
def test_fit_estimates_ar_coefficients_and_cycle_damping_like_statsmodels():
    y, x = _ar_cycle_data()
    ar = LinearGaussianSSM.structural(autoregressive=2).fit(y)
    assert ar.num_params == 5  # obs, level, ar variances and two coefficients
    mod = sm.tsa.UnobservedComponents(y, "local level", autoregressive=2,
                                      use_exact_diffuse=True)
    ref = mod.fit(disp=0)
    ours = ar.log_prob_steps(y).numpy()
    assert ar.log_prob(y).item() >= mod.loglikeobs(ref.params)[ours != 0].sum() - 1e-6
    np.testing.assert_allclose(ar.params["transition_matrix"][1, 1:].numpy(), ref.params[3:],
                               rtol=1e-3)
    # a damped cycle of known period (statsmodels with the frequency fixed)
    cyc = LinearGaussianSSM.structural(cycle=True, cycle_period=25.0, cycle_damping=None)
    cyc.fit(x)
    mod = sm.tsa.UnobservedComponents(x, "local level", cycle=True, damped_cycle=True,
                                      stochastic_cycle=True, use_exact_diffuse=True)
    with mod.fix_params({"frequency.cycle": 2 * math.pi / 25.0}):
        ref = mod.fit(disp=0)
    ours = cyc.log_prob_steps(x).numpy()
    assert cyc.log_prob(x).item() >= mod.loglikeobs(ref.params)[ours != 0].sum() - 1e-6
    B = cyc.params["transition_matrix"][1:3, 1:3].numpy()
    assert 2 * math.pi / math.atan2(B[0, 1], B[0, 0]) == pytest.approx(25.0)
    # statsmodels' optimiser does not converge here: check our optimum in its likelihood
    q = cyc.params["transition_cov"].diagonal().numpy()
    mine = np.array([cyc.params["observation_cov"].item(), q[0], q[1], 2 * math.pi / 25.0,
                     math.sqrt(np.linalg.det(B))])
    np.testing.assert_allclose(ours[ours != 0], mod.loglikeobs(mine)[ours != 0], rtol=1e-8)
