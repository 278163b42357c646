"""Forecasts: exact h-step marginals against brute force, sampled against exact, pandas
indexes, the Forecast type."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import probseq as ps
from probseq.forecast import Forecast, distribution_quantile, future_index

TRANS = np.array([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25], [0.1, 0.3, 0.6]])


def _hmm_categorical():
    return ps.HiddenMarkovModel.from_params(
        initial=[0.6, 0.4], transition=[[0.8, 0.2], [0.3, 0.7]],
        emission=[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])


def _hmm_gaussian():
    return ps.HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]],
        means=[[-2.0], [3.0]], covariances=[[[1.0]], [[0.25]]])


def _hmm_poisson():
    return ps.HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]], rates=[1.5, 9.0])


# ------------------------------------------------------------------ exact against brute force
@pytest.mark.parametrize("order,smoothing", [(1, "additive"), (2, "kneser-ney"), (3, "additive")])
def test_markov_h_step_marginals_equal_enumeration(order, smoothing):
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 3, size=40) for _ in range(5)]
    m = ps.MarkovChain(order=order, smoothing=smoothing).fit(train)
    horizon = 4
    for seq in ([2, 0, 1, 1, 2], [1]):  # a long context and a start-of-sequence one
        fc = m.forecast(np.array(seq), horizon)
        assert fc.method == "exact" and fc.probs.shape == (horizon, 3)
        ref = np.zeros((horizon, 3))
        for path in itertools.product(range(3), repeat=horizon):
            p, ctx = 1.0, list(seq)
            for s in path:
                p *= float(m.conditional(np.array(ctx))[s])
                ctx.append(s)
            for h, s in enumerate(path):  # summing whole paths gives each step's marginal
                ref[h, s] += p
        np.testing.assert_allclose(fc.probs.numpy(), ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fc.probs.sum(-1).numpy(), 1.0, atol=1e-12)
        assert torch.equal(fc.mean, fc.probs.argmax(-1))


def _brute_force_hmm(initial, transition, like, future_emission, horizon):
    """p(x_(T+h) | x_1..x_T) by enumerating all K^(T+h) state paths.

    ``like [T, K]`` is p(x_t | z_t = k) of the observed steps; ``future_emission [K, ...]``
    the emission quantity to mix (symbol probabilities or a mean).
    """
    k, t = len(initial), like.shape[0]
    num = np.zeros((horizon, *future_emission.shape[1:]))
    den = 0.0
    for path in itertools.product(range(k), repeat=t + horizon):
        p = initial[path[0]]
        for a, b in itertools.pairwise(path):
            p *= transition[a, b]
        for s in range(t):
            p *= like[s, path[s]]
        den += p
        for h in range(horizon):
            num[h] += p * future_emission[path[t + h]]
    return num / den


def test_hmm_symbol_marginals_equal_enumeration():
    m = _hmm_categorical()
    p = {k: v.numpy() for k, v in m.params.items()}
    seq = np.array([0, 2, 2, 1, 0])
    horizon = 4
    fc = m.forecast(seq, horizon)
    ref = _brute_force_hmm(p["initial"], p["transition"], p["emission"][:, seq].T,
                           p["emission"], horizon)
    assert fc.method == "exact"
    np.testing.assert_allclose(fc.probs.numpy(), ref, rtol=0, atol=1e-13)
    # a batch gives each sequence's own forecast
    batch = m.forecast([seq, seq[:2]], horizon)
    np.testing.assert_allclose(batch.probs[0].numpy(), ref, atol=1e-13)
    assert batch.probs.shape == (2, horizon, 3)


def test_gaussian_and_poisson_hmm_mixture_forecasts_equal_enumeration():
    seq = np.array([-1.5, 2.8, 3.3, -2.2])
    m = _hmm_gaussian()
    p = {k: v.numpy() for k, v in m.params.items()}
    sd = np.sqrt(p["covariances"][:, 0, 0])
    like = stats.norm.pdf(seq[:, None], p["means"][:, 0], sd)
    horizon = 3
    # mean and second moment by enumeration
    mom = np.stack([p["means"][:, 0], p["means"][:, 0] ** 2 + sd**2], axis=1)
    ref = _brute_force_hmm(p["initial"], p["transition"], like, mom, horizon)
    fc = m.forecast(seq, horizon, level=0.9)
    np.testing.assert_allclose(fc.mean.numpy(), ref[:, 0], atol=1e-12)
    np.testing.assert_allclose(fc.std.numpy() ** 2, ref[:, 1] - ref[:, 0] ** 2, atol=1e-12)
    np.testing.assert_allclose(fc.cov[:, 0, 0].numpy(), fc.std.numpy() ** 2, atol=1e-12)
    # quantiles invert the mixture CDF (scipy)
    w = _brute_force_hmm(p["initial"], p["transition"], like, np.eye(2), horizon)
    for q, x in ((0.05, fc.lower), (0.95, fc.upper), (0.3, fc.quantile(0.3))):
        cdf = (w * stats.norm.cdf(x.numpy()[:, None], p["means"][:, 0], sd)).sum(1)
        np.testing.assert_allclose(cdf, q, atol=1e-10)
    assert fc.quantile([0.1, 0.5]).shape == (2, horizon)

    counts = np.array([0, 2, 11, 8])
    m = _hmm_poisson()
    p = {k: v.numpy() for k, v in m.params.items()}
    like = stats.poisson.pmf(counts[:, None], p["rates"])
    w = _brute_force_hmm(p["initial"], p["transition"], like, np.eye(2), horizon)
    fc = m.forecast(counts, horizon)
    np.testing.assert_allclose(fc.mean.numpy(), w @ p["rates"], atol=1e-12)
    for q in (0.025, 0.5, 0.975):
        x = fc.quantile(q).numpy()
        assert np.all(x == np.round(x))
        cdf = (w * stats.poisson.cdf(x[:, None], p["rates"])).sum(1)
        below = (w * stats.poisson.cdf(x[:, None] - 1, p["rates"])).sum(1)
        assert np.all(cdf >= q - 1e-12) and np.all(below < q)


def test_multivariate_gaussian_hmm_forecast_moments():
    cov = np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.3, -0.1], [-0.1, 0.2]]])
    m = ps.HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]],
        means=[[0.0, 1.0], [4.0, -1.0]], covariances=cov)
    fc = m.forecast(np.array([[0.1, 0.9], [3.8, -1.2]]), 2)
    w = fc.distribution.mixture_distribution.probs[0].numpy()  # [H, K]
    mu = np.array([[0.0, 1.0], [4.0, -1.0]])
    mean = w @ mu
    second = np.einsum("hk,kij->hij", w, cov + mu[:, :, None] * mu[:, None, :])
    np.testing.assert_allclose(fc.mean.numpy(), mean, atol=1e-12)
    np.testing.assert_allclose(fc.cov.numpy(), second - mean[:, :, None] * mean[:, None, :],
                               atol=1e-12)
    assert fc.lower.shape == (2, 2) and bool((fc.lower < fc.mean).all())


# ------------------------------------------------------------------ sampled against exact
def test_sampled_forecasts_agree_with_exact_within_monte_carlo_error():
    """The generic fallback (paths from sample(prefix=...)) against the exact marginals.

    Tolerance: 4.5 Monte Carlo standard errors (std / sqrt(S), sqrt(p (1 - p) / S)) per
    entry, with S = 4000 paths.
    """
    s = 4000
    seq = np.array([-1.5, 2.8, 3.3, -2.2])
    m = _hmm_gaussian()
    exact = m.forecast(seq, 5)
    seqs = ps.Sequences.from_list([seq], kind="continuous")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        draws = m._draw_continuations(seqs, 5, s)[0].numpy()  # [S, H]
    se = exact.std.numpy() / math.sqrt(s)
    assert np.all(np.abs(draws.mean(0) - exact.mean.numpy()) < 4.5 * se)
    # the sampled-path Forecast (generic builder) uses the exact step 1 and samples after
    fc = ps.forecast.build_forecast(
        m._next_step_predictive(seqs), 1, torch.from_numpy(draws)[None],
        5, 0.95, discrete=False, single=True)
    assert fc.method == "first step exact, then sampled"
    assert torch.allclose(fc.mean[0], exact.mean[0], atol=1e-12)
    assert np.all(np.abs(fc.mean.numpy() - exact.mean.numpy()) < 4.5 * se)
    var = draws.var(0, ddof=1)
    se_var = np.sqrt((((draws - draws.mean(0)) ** 4).mean(0) - var**2) / s)
    assert np.all(np.abs(var - exact.std.numpy() ** 2) < 4.5 * se_var)

    m = _hmm_categorical()
    seq = np.array([0, 2, 2, 1, 0])
    exact = m.forecast(seq, 4).probs.numpy()
    sampled = m.forecast(seq, 4, num_samples=s, seed=1).samples.numpy()  # paths drawn too
    freq = np.stack([(sampled == v).mean(0) for v in range(3)], axis=-1)
    assert np.all(np.abs(freq - exact) < 4.5 * np.sqrt(exact * (1 - exact) / s))


def test_recurrent_forecast_first_step_exact_then_sampled():
    rng = np.random.default_rng(0)
    data = [np.cumsum(rng.normal(size=30)) * 0.1 for _ in range(6)]
    m = ps.RecurrentModel(cell="gru", hidden_size=8, emission="gaussian").fit(
        data, max_epochs=2, seed=0, progress=False)
    fc = m.forecast(data[0], 3, num_samples=3000, seed=0)
    assert fc.method == "first step exact, then sampled"
    step = m._step_predictive(ps.Sequences.from_list([np.append(data[0], 0.0)]))
    assert torch.allclose(fc.mean[0], step.mean[0, 30], atol=1e-12)
    assert torch.allclose(fc.std[0], step.stddev[0, 30], atol=1e-12)
    # the sampled first step agrees with the exact one within 4.5 standard errors
    assert abs(float(fc.samples[:, 0].mean() - fc.mean[0])) < 4.5 * float(fc.std[0]) / 3000**0.5
    assert fc.samples.shape == (3000, 3) and fc.lower.shape == (3,)
    # same seed, same forecast
    again = m.forecast(data[0], 3, num_samples=3000, seed=0)
    assert torch.equal(again.samples, fc.samples)


def test_predict_is_the_one_step_predictive_mean():
    m = _hmm_gaussian()
    seqs = [np.array([-1.5, 2.8, 3.3]), np.array([0.5])]
    pred = m.predict(seqs)
    assert pred.shape == (2, 3) and float(pred[1, 1:].abs().sum()) == 0.0
    p = m.params
    first = float((p["initial"] * p["means"][:, 0]).sum())
    assert abs(float(pred[0, 0]) - first) < 1e-12
    # step 2 of a sequence = the 1-step forecast of its first step
    assert abs(float(pred[0, 1]) - float(m.forecast(seqs[0][:1], 1).mean[0])) < 1e-12
    sym = _hmm_categorical().predict(np.array([0, 1, 2]))
    assert sym.dtype == torch.int64 and sym.shape == (3,)


# ------------------------------------------------------------------ pandas, Forecast type
def test_period_index_round_trips_into_forecast_and_frame():
    idx = pd.period_range("2001-01", periods=12, freq="M")
    y = pd.Series(np.linspace(-2, 3, 12), index=idx)
    fc = _hmm_gaussian().forecast(y, 4)
    expected = pd.period_range("2002-01", periods=4, freq="M")
    assert fc.index.equals(expected)
    frame = fc.to_frame()
    assert frame.index.equals(expected)
    assert list(frame.columns) == ["h", "mean", "std", "lower", "upper"]
    np.testing.assert_allclose(frame["mean"].to_numpy(), fc.mean.numpy())
    assert y.index.equals(idx)  # the caller's data is untouched


def test_future_index_kinds():
    dates = pd.Series(np.arange(5.0), index=pd.date_range("2020-01-31", periods=5, freq="ME"))
    out = future_index(dates, 2)
    assert list(out) == list(pd.date_range("2020-06-30", periods=2, freq="ME"))
    rng = pd.Series(np.arange(5.0), index=pd.RangeIndex(10, 20, 2))
    assert list(future_index(rng, 3)) == [20, 22, 24]
    assert future_index(np.arange(5.0), 3) is None
    irregular = pd.Series(np.arange(3.0), index=pd.to_datetime(
        ["2020-01-01", "2020-01-02", "2020-01-09"]))
    with pytest.warns(UserWarning, match="regular frequency"):
        assert future_index(irregular, 2) is None


def test_forecast_validates_arguments_and_symbols_have_no_quantiles():
    m = _hmm_categorical()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="horizon"):
            m.forecast(np.array([0, 1]), bad)
    for bad in (0.0, 1.0, 1.2):
        with pytest.raises(ValueError, match="level"):
            m.forecast(np.array([0, 1]), 2, level=bad)
    with pytest.raises(ValueError, match="quantiles of symbols"):
        m.forecast(np.array([0, 1]), 2).quantile(0.5)
    with pytest.raises(ValueError, match="q must"):
        _hmm_gaussian().forecast(np.array([0.0]), 2).quantile(1.5)
    frame = m.forecast([np.array([0, 1]), np.array([2])], 2).to_frame()
    assert list(frame.columns) == ["sequence", "h", "mode", "p_0", "p_1", "p_2"]
    assert isinstance(m.forecast(np.array([0, 1]), 1), Forecast)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_mixture_quantiles_across_scales(scale):
    w = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    loc = torch.tensor([[-1.0, 2.0]], dtype=torch.float64) * scale
    sd = torch.tensor([[0.5, 1.5]], dtype=torch.float64) * scale
    d = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=w),
                                              torch.distributions.Normal(loc, sd))
    for q in (1e-4, 0.2, 0.5, 0.999):
        x = float(distribution_quantile(d, q)[0])
        cdf = 0.3 * stats.norm.cdf(x, -scale, 0.5 * scale) + 0.7 * stats.norm.cdf(
            x, 2 * scale, 1.5 * scale)
        assert abs(cdf - q) < 1e-10


# ------------------------------------------------------------------ scoring rules
def _crps_by_integration(cdf, y: float, lo: float, hi: float) -> float:
    from scipy import integrate

    left = integrate.quad(lambda x: cdf(x) ** 2, lo, y, limit=200, epsabs=0, epsrel=1e-11)[0]
    right = integrate.quad(lambda x: (cdf(x) - 1) ** 2, y, hi, limit=200, epsabs=0,
                           epsrel=1e-11)[0]
    return left + right


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_gaussian_crps_closed_form_library_and_integration_agree(scale):
    import scoringrules as sr

    from probseq.scoring import crps

    mu, sd = 0.3 * scale, 1.7 * scale
    for y in (-2.0 * scale, 0.3 * scale, 4.1 * scale):
        z = (y - mu) / sd
        closed = sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(
            math.pi))
        normal = torch.distributions.Normal(torch.tensor([mu], dtype=torch.float64), sd)
        ours = float(crps(normal, torch.tensor([y], dtype=torch.float64))[0])
        library = float(sr.crps_normal(y, mu, sd))
        integral = _crps_by_integration(lambda x: stats.norm.cdf(x, mu, sd), y,
                                        mu - 40 * sd, mu + 40 * sd)
        assert ours == pytest.approx(closed, rel=1e-10)
        assert library == pytest.approx(closed, rel=1e-10)
        assert integral == pytest.approx(closed, rel=1e-7)


def test_mixture_and_count_crps_equal_integration_and_sums():
    from probseq.scoring import brier, crps, crps_samples, pit

    fc = _hmm_gaussian().forecast(np.array([-1.5, 2.8, 3.3, -2.2]), 3)
    d = fc.distribution
    w = d.mixture_distribution.probs[0].numpy()
    y = torch.tensor([[0.5, -3.0, 2.9]], dtype=torch.float64)
    got = crps(d, y)[0].numpy()
    for h in range(3):
        def cdf(x, h=h):
            return float((w[h] * stats.norm.cdf(x, [-2.0, 3.0], [1.0, 0.5])).sum())
        ref = _crps_by_integration(cdf, float(y[0, h]), -30, 30)
        assert got[h] == pytest.approx(ref, rel=1e-7)
    np.testing.assert_allclose(pit(d, y)[0].numpy(), [
        (w[h] * stats.norm.cdf(float(y[0, h]), [-2.0, 3.0], [1.0, 0.5])).sum()
        for h in range(3)], atol=1e-12)
    # from samples, within Monte Carlo error of the closed form (S = 20000, 5 SEs ~ 0.03)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        draws = d.sample((20000,))  # [S, 1, H]
    est = crps_samples(draws[:, 0].T, y[0]).numpy()
    np.testing.assert_allclose(est, got, atol=0.03)

    fc = _hmm_poisson().forecast(np.array([0, 2, 11, 8]), 2)
    d = fc.distribution
    w = d.mixture_distribution.probs[0].numpy()
    for y in (0, 4, 30):
        obs = torch.tensor([[y, y]], dtype=torch.float64)
        got = crps(d, obs)[0].numpy()
        k = np.arange(0, 200)
        cdf = (w[:, :, None] * stats.poisson.cdf(k, np.array([1.5, 9.0])[None, :, None])).sum(1)
        ref = ((cdf - (y <= k)) ** 2).sum(-1)
        np.testing.assert_allclose(got, ref, atol=1e-12)
    probs = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    b = brier(torch.distributions.Categorical(probs=probs), torch.tensor([1]))
    assert float(b[0]) == pytest.approx(0.2**2 + 0.5**2 + 0.3**2)


def test_step_scores_shapes_and_held_out_steps():
    from probseq.scoring import step_scores

    m = _hmm_gaussian()
    seqs = ps.Sequences.from_list([np.array([-1.5, 2.8, 3.3, -2.2]), np.array([0.4, 0.1])])
    s = step_scores(m, seqs, start=1)
    assert set(s) == {"crps", "pit", "covered_90"}
    assert s["crps"].shape == (2, 4)
    assert float(s["crps"][:, 0].abs().sum()) == 0.0 and float(s["crps"][1, 2:].abs().sum()) == 0
    assert bool((s["crps"][0, 1:] > 0).all())
    assert set(step_scores(_hmm_categorical(), ps.Sequences.from_list([np.array([0, 2])]))) == {
        "brier"}


# ------------------------------------------------------------------ plots
def test_plot_forecast_uses_a_period_index_and_forecast_objects():
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    idx = pd.period_range("2001-01", periods=24, freq="M")
    y = pd.Series(np.sin(np.arange(24.0)), index=idx)
    m = _hmm_gaussian()
    fc = m.forecast(y, 6, level=0.8)
    fig = ps.plots.plot_forecast({"hmm": fc, "model": m}, y, 6, actual=np.zeros(6))
    for ax in fig.axes[:2]:
        median = [ln for ln in ax.get_lines() if ln.get_label() == "median"][0]
        xs = mdates.num2date(mdates.date2num(median.get_xdata()))
        assert [pd.Timestamp(x).strftime("%Y-%m") for x in xs] == [
            p.strftime("%Y-%m") for p in fc.index]
        np.testing.assert_allclose(median.get_ydata(), fc.quantile(0.5).numpy(), atol=1e-9)
    plt.close(fig)
    # a model without forecast hooks falls back to sampled continuations
    ar = ps.AutoRegressive(order=1).fit(_series_ar())
    plt.close(ps.plots.plot_forecast({"ar": ar}, _series_ar(), 3, num_samples=100))


def _series_ar() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.cumsum(rng.normal(size=40)) * 0.3


def test_calibration_plot_coverage_of_a_correct_model():
    import matplotlib.pyplot as plt

    m = _hmm_gaussian()
    data = m.sample(20, 100, seed=0)
    fig = ps.plots.plot_calibration({"true": m}, data, levels=(0.5, 0.9))
    cov = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "true"][0].get_ydata()
    # 2000 steps from the model itself: coverage within 4 binomial standard errors
    for lvl, c in zip((0.5, 0.9), cov, strict=True):
        assert abs(c - lvl) < 4 * math.sqrt(lvl * (1 - lvl) / 2000)
    plt.close(fig)


# ------------------------------------------------------------------ covariates and gaps
def _regression():
    from toy import IIDRegression

    class Reg(IIDRegression):
        def _step_predictive(self, seqs, exog=None):
            loc = self._loc(seqs.values.shape, exog)
            return torch.distributions.Normal(loc, self.var.sqrt().expand(loc.shape))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 1))
    y = 1.0 + 2.0 * x[:, 0] + 0.5 * rng.normal(size=60)
    return Reg().fit(y[:50], exog=x[:50]), y, x


def test_forecast_and_backtest_pass_covariates_and_handle_gaps():
    m, y, x = _regression()
    fc = m.forecast(y[:50], 3, exog=x[:53], num_samples=4000, seed=0)
    want = m.mean + torch.from_numpy(x[50:53]) @ m.beta
    assert torch.allclose(fc.mean[0], want[0], atol=1e-12)  # step 1 exact
    sd = float(m.var.sqrt())
    assert torch.all((fc.mean - want).abs() < 4.5 * sd / math.sqrt(4000))
    with pytest.raises(ValueError):
        m.forecast(y[:50], 3, exog=x[:51])  # covariates must cover the future
    with pytest.raises(ValueError, match="covariates"):
        _hmm_gaussian().forecast(y[:50], 2, exog=x[:52])
    # gaps in the history: step 1 exact, later steps sampled around the observed values
    gappy = y[:50].copy()
    gappy[[3, 49]] = np.nan
    fc = m.forecast(gappy, 2, exog=x[:52], num_samples=500, seed=0)
    assert torch.isfinite(fc.mean).all() and fc.samples.shape == (500, 2)
    fast, _ = ps.backtest({"reg": m}, y, initial=50, exog=x)
    slow, _ = ps.backtest({"reg": m}, y, initial=50, horizon=2, exog=x, num_samples=200)
    one = slow[slow["h"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(one, fast, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("c", [1e-6, 1e6])
def test_gaussian_hmm_forecast_is_scale_equivariant(c):
    """Data and parameters scaled by c: means, spreads and quantiles scale by c."""
    seq = np.array([-1.5, 2.8, 3.3, -2.2])
    base = _hmm_gaussian().forecast(seq, 3, level=0.8)
    scaled = ps.HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]],
        means=[[-2.0 * c], [3.0 * c]], covariances=[[[1.0 * c**2]], [[0.25 * c**2]]],
    ).forecast(seq * c, 3, level=0.8)
    for name in ("mean", "std", "lower", "upper"):
        torch.testing.assert_close(getattr(scaled, name) / c, getattr(base, name),
                                   rtol=1e-9, atol=1e-12)



def test_gaussian_forecast_from_moments_has_quantiles():
    """A Forecast given only Gaussian moments (as the state-space model builds it)."""
    mean = torch.tensor([1.0, 2.0], dtype=torch.float64)
    std = torch.tensor([0.5, 3.0], dtype=torch.float64)
    fc = Forecast(mean=mean, std=std, lower=None, upper=None, level=0.9, num_exact_steps=2,
                  _single=True)
    np.testing.assert_allclose(fc.quantile(0.975).numpy(),
                               stats.norm.ppf(0.975, [1.0, 2.0], [0.5, 3.0]), rtol=1e-12)
