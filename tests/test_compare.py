"""compare(): its statistics against a hand computation."""

import math

import numpy as np
import pytest
from scipy import stats
from toy import IIDCategorical, IIDGaussian

import probseq as ps
from probseq import compare
from probseq.compare import holm


def _data():
    rng = np.random.default_rng(0)
    fit = [rng.choice(3, size=n, p=[0.6, 0.3, 0.1]) for n in (30, 40, 50)]
    test = [rng.choice(3, size=n, p=[0.6, 0.3, 0.1]) for n in (20, 25, 30, 35)]
    return fit, test


def test_compare_statistics_by_hand():
    fit, test = _data()
    good = IIDCategorical(alpha=1.0).fit(fit)
    flat = IIDCategorical(alpha=1e6).fit(fit)  # nearly uniform
    df = compare({"flat": flat, "good": good}, test, fit_data=fit)
    assert list(df.index) == ["good", "flat"]

    def ll(m, seqs):
        p = m.probs.numpy()
        return np.array([np.log(p[s]).sum() for s in seqs])

    lg, lf = ll(good, test), ll(flat, test)
    n = sum(len(s) for s in test)
    n_fit = sum(len(s) for s in fit)
    row = df.loc["flat"]
    assert row["log_lik"] == pytest.approx(lf.sum(), rel=1e-12)
    assert row["nats_per_step"] == pytest.approx(-lf.sum() / n, rel=1e-12)
    assert row["bits_per_step"] == pytest.approx(-lf.sum() / n / math.log(2), rel=1e-12)
    d = lf - lg
    assert row["delta_vs_best"] == pytest.approx(d.sum(), rel=1e-12)
    assert row["delta_se"] == pytest.approx(math.sqrt(len(d)) * d.std(ddof=1), rel=1e-12)
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    assert row["significant"] == (row["p_value"] < 0.05)
    fit_ll = ll(flat, fit).sum()
    assert row["aic"] == pytest.approx(2 * 2 - 2 * fit_ll, rel=1e-12)
    assert row["bic"] == pytest.approx(2 * math.log(n_fit) - 2 * fit_ll, rel=1e-12)
    best = df.loc["good"]
    assert best["delta_vs_best"] == 0 and best["delta_se"] == 0 and bool(best["exact"])
    assert math.isnan(best["p_value"]) and best["conditioned_on"] == 0
    assert row["p_adjusted"] == row["p_value"]  # one comparison: Holm changes nothing


def test_one_sequence_pairs_steps_by_default_and_never_gives_a_silent_nan():
    m1 = IIDCategorical(alpha=1).fit([[0, 1, 1, 2]])
    m2 = IIDCategorical(alpha=50).fit([[0, 1, 1, 2]])
    x = [0, 1, 1, 1, 2, 1, 1, 0]
    for start in (0, 3):  # whole series, and a held-out tail
        df = compare({"a": m1, "b": m2}, x, start=start)
        assert df.attrs["units"] == "steps"
        d = (m2.log_prob_steps(x) - m1.log_prob_steps(x))[start:].numpy()
        assert df.loc["b", "delta_se"] == pytest.approx(math.sqrt(len(d)) * d.std(ddof=1))
        assert df.loc["b", "p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
        assert np.isfinite(df[["delta_vs_best", "delta_se"]].to_numpy(dtype=float)).all()
        assert df.loc["a", "scored_steps"] == len(x) - start
    with pytest.raises(ValueError, match="units='steps'"):
        compare({"a": m1, "b": m2}, x, start=3, units="sequences")


def test_start_scores_only_the_tail():
    m = IIDCategorical(alpha=1).fit([[0, 1, 1, 2]])
    x = [0, 1, 2, 2, 1]
    df = compare({"m": m}, x, start=2)
    assert df.loc["m", "log_lik"] == pytest.approx(float(m.log_prob_steps(x)[2:].sum()))
    assert df.loc["m", "nats_per_step"] == pytest.approx(-df.loc["m", "log_lik"] / 3)
    assert df.loc["m", "conditioned_on"] == 2 and df.attrs["conditioned_on"] == 2
    with pytest.raises(ValueError, match="start=5 leaves nothing to score in sequence 0"):
        compare({"m": m}, x, start=5)


class DiffuseGaussian(IIDGaussian):
    """A stub declaring one diffuse initial step, like a local level model."""

    num_diffuse_steps = 1


class BoundGaussian(IIDGaussian):
    """A stub whose scores are lower bounds, like the deep Markov model."""

    exact_likelihood = False


class ApproxGaussian(IIDGaussian):
    score_kind = "approximate"
    exact_likelihood = False


def _series(seed, n=60):
    return np.random.default_rng(seed).normal(1.0, 2.0, size=n)


def test_every_model_is_conditioned_on_the_largest_number_of_diffuse_steps():
    train, test = [_series(0), _series(1, 40)], [_series(2, 30), _series(3, 25), _series(4, 9)]
    plain = IIDGaussian().fit(train)
    diffuse = DiffuseGaussian().fit(train)
    df = compare({"plain": plain, "diffuse": diffuse}, test, fit_data=train)
    assert df.attrs["conditioned_on"] == 1 and df.attrs["num_diffuse_steps"] == 1
    assert (df["conditioned_on"] == 1).all() and (df["scored_steps"] == 29 + 24 + 8).all()
    for name, m in (("plain", plain), ("diffuse", diffuse)):
        per_seq = m.log_prob_steps(test)[:, 1:].sum(-1).numpy()
        assert df.loc[name, "log_lik"] == pytest.approx(per_seq.sum(), rel=1e-13)
        fit_ll = float(m.log_prob_steps(train)[:, 1:].sum())
        n_fit = 59 + 39
        assert df.loc[name, "aic"] == pytest.approx(2 * 2 - 2 * fit_ll, rel=1e-13)
        assert df.loc[name, "bic"] == pytest.approx(2 * math.log(n_fit) - 2 * fit_ll, rel=1e-13)
    assert "conditioning on the first step of each sequence" in df.attrs["verdict"]
    assert "diffuse" in df.attrs["verdict"]
    # start beyond the diffuse steps wins; without a diffuse model nothing is conditioned.
    assert compare({"plain": plain, "diffuse": diffuse}, test, start=3).attrs[
        "conditioned_on"] == 3
    assert compare({"plain": plain}, test).attrs["conditioned_on"] == 0
    with pytest.raises(ValueError, match="diffuse"):
        compare({"plain": plain, "diffuse": diffuse}, [_series(5, 1), _series(6, 5)])


def test_holm_adjustment_by_hand():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    # Sorted finite: 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, 0.09, max(0.09, 0.08), 0.5.
    assert np.allclose(holm(p), [0.04, np.nan, 0.09, 0.09, 0.5], equal_nan=True)
    assert np.isnan(holm(np.array([np.nan]))).all()


def _symbols(seed, n, length, p):
    rng = np.random.default_rng(seed)
    return [rng.choice(len(p), size=length, p=p) for _ in range(n)]


class RichCategorical(IIDCategorical):
    """The same predictions as IIDCategorical, counted as a model with 12 parameters."""

    @property
    def num_params(self):
        return 12


def test_verdict_names_the_indistinguishable_set_and_the_simplest():
    p = [0.5, 0.3, 0.2]
    train, test = _symbols(0, 30, 40, p), _symbols(1, 40, 30, p)
    rich = RichCategorical(alpha=0.0).fit(train)  # the maximum-likelihood probabilities
    good = IIDCategorical(alpha=1.0).fit(train)  # nearly the same
    flat = IIDCategorical(alpha=1e6).fit(train)  # nearly uniform: clearly worse
    df = compare({"flat": flat, "good": good, "rich": rich}, test, fit_data=train)
    assert list(df.index) == ["rich", "good", "flat"]
    # The two p-values are Holm-adjusted as a family of two comparisons.
    raw = df["p_value"].to_numpy()
    assert np.allclose(df["p_adjusted"].to_numpy(), holm(raw), equal_nan=True)
    assert df.loc["flat", "p_adjusted"] == pytest.approx(2 * df.loc["flat", "p_value"])
    assert bool(df.loc["flat", "significant"]) and not df.loc["flat", "indistinguishable"]
    assert not df.loc["good", "significant"] and bool(df.loc["good", "indistinguishable"])
    assert df.attrs["indistinguishable"] == ["rich", "good"]
    # The best scores highest, but the simplest adequate model is named.
    assert df.attrs["best"] == "rich" and df.attrs["simplest"] == "good"
    assert bool(df.loc["good", "simplest"]) and df["simplest"].sum() == 1
    verdict = df.attrs["verdict"]
    assert "cannot separate rich and good" in verdict
    assert "simplest of them is good (2 parameters)" in verdict and "Holm" in verdict
    assert "significantly better" not in verdict
    assert not df["params_exceed_data"].any()
    # A clear winner is called one.
    df = compare({"good": good, "flat": flat}, test)
    assert df.attrs["indistinguishable"] == ["good"] and df.attrs["simplest"] == "good"
    assert "significantly better than every other model" in df.attrs["verdict"]


def test_flags_more_parameters_than_fitted_values():
    train = [[0, 1, 2, 0, 1], [2, 2, 1]]
    big = ps.MarkovChain(order=1, num_symbols=3, smoothing="additive").fit(train)
    many = ps.MarkovChain.from_params(np.full(30, 1 / 30), np.full((30, 30), 1 / 30))
    test = [[0, 1, 2], [1, 1, 0, 2]]
    df = compare({"big": big, "many": many}, test, fit_data=train)
    assert bool(df.loc["many", "params_exceed_data"])  # 899 parameters, 8 fitted values
    assert not df.loc["big", "params_exceed_data"]
    assert "more parameters than fitted values" in df.attrs["verdict"]


def test_score_kinds_exact_bound_and_approximate():
    train, test = [_series(0), _series(1)], [_series(2, 30), _series(3, 25), _series(4, 20)]
    models = {"exact": IIDGaussian().fit(train), "bound": BoundGaussian().fit(train),
              "approx": ApproxGaussian().fit(train)}
    df = compare(models, test, fit_data=train)
    assert df.loc["exact", "score_kind"] == "exact" and bool(df.loc["exact", "exact"])
    assert df.loc["bound", "score_kind"] == "bound" and not df.loc["bound", "exact"]
    assert df.loc["approx", "score_kind"] == "approximate"
    # AIC and BIC only where the score is an exact likelihood.
    assert np.isfinite(df.loc["exact", ["aic", "bic"]].to_numpy(dtype=float)).all()
    assert df.loc[["bound", "approx"], ["aic", "bic"]].isna().all().all()
    assert "bound (bound), approx (approximate)" in df.attrs["verdict"]
    # A held-out tail of a bound-based model is a difference of bounds: approximate.
    tail = compare(models, test, start=5)
    assert tail.loc["bound", "score_kind"] == "approximate"
    assert tail.loc["exact", "score_kind"] == "exact"


def test_local_level_and_ar1_on_the_nile_are_scored_on_steps_2_to_100():
    try:
        declared = getattr(ps.LinearGaussianSSM.local_level(), "num_diffuse_steps", 0)
    except ValueError:  # a property that needs a fitted model: checked below
        declared = None
    if declared == 0:
        pytest.xfail("LinearGaussianSSM does not declare num_diffuse_steps yet (exact "
                     "diffuse initialisation lands with the state-space work)")
    sm = pytest.importorskip("statsmodels.api")
    y = ps.datasets.nile().to_numpy()
    level = ps.LinearGaussianSSM.local_level().fit(y)
    assert level.num_diffuse_steps == 1
    ar1 = ps.AutoRegressive(order=1).fit(y)
    df = compare({"local_level": level, "ar1": ar1}, y)
    assert df.attrs["conditioned_on"] == 1 and (df["scored_steps"] == 99).all()
    assert df.loc["ar1", "log_lik"] == pytest.approx(float(ar1.log_prob_steps(y)[1:].sum()),
                                                     rel=1e-12)
    obs_var = float(level.params["observation_cov"].reshape(()))
    level_var = float(level.params["transition_cov"].reshape(()))
    # Durbin and Koopman's maximum-likelihood variances (15099, 1469.1).
    assert obs_var == pytest.approx(15099, rel=2e-3) and level_var == pytest.approx(1469.1,
                                                                                   rel=2e-2)
    res = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True).smooth(
        [obs_var, level_var])
    # statsmodels' exact diffuse log-likelihood counts -log(2 pi)/2 for the diffuse step;
    # the steps 2..100 are the rest.
    assert df.loc["local_level", "log_lik"] == pytest.approx(res.llf_obs[1:].sum(), rel=1e-9)
    assert df.loc["local_level", "log_lik"] == pytest.approx(
        res.llf + 0.5 * math.log(2 * math.pi), rel=1e-9)


def test_refuses_mixing_discrete_and_continuous():
    d = IIDCategorical().fit([[0, 1]])
    c = IIDGaussian().fit([0.1, 0.5, 0.2])
    with pytest.raises(ValueError, match="discrete"):
        compare({"d": d, "c": c}, [[0, 1]])
    with pytest.raises(ValueError, match="non-empty"):
        compare({}, [[0, 1]])
    with pytest.raises(ValueError, match="not fitted"):
        compare({"u": IIDCategorical()}, [[0, 1]])


def test_steps_units_pair_one_step_ahead_scores():
    m1 = IIDCategorical(alpha=1).fit([[0, 1, 1, 2]])
    m2 = IIDCategorical(alpha=20).fit([[0, 1, 1, 2]])
    x = [0, 1, 1, 1, 2, 1, 0, 1, 1]
    df = compare({"a": m1, "b": m2}, x, start=3, units="steps")
    d = (m2.log_prob_steps(x) - m1.log_prob_steps(x))[3:].numpy()
    loser = df.index[1]
    sign = 1 if loser == "b" else -1
    assert df.loc[loser, "delta_vs_best"] == pytest.approx(sign * d.sum())
    assert df.loc[loser, "delta_se"] == pytest.approx(math.sqrt(len(d)) * d.std(ddof=1))
    assert df.loc[loser, "p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    with pytest.raises(ValueError, match="units"):
        compare({"a": m1}, x, units="bogus")


def test_models_with_and_without_covariates_side_by_side():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 1))
    y = 0.5 + 2.0 * x[:, 0] + rng.normal(0, 0.5, size=120)
    ar = ps.AutoRegressive(order=1).fit(y[:80])
    arx = ps.AutoRegressive(order=1).fit(y[:80], exog=x[:80])
    table = ps.compare({"ar1": ar, "arx": arx}, y, exog=x, start=80)
    assert table.index[0] == "arx"
    assert np.isclose(table.loc["arx", "log_lik"],
                      float(arx.log_prob_steps(y, exog=x)[80:].sum()), rtol=1e-12)
    assert np.isclose(table.loc["ar1", "log_lik"], float(ar.log_prob_steps(y)[80:].sum()),
                      rtol=1e-12)
    assert np.isfinite(table["crps"]).all()


def test_crps_counts_only_observed_steps():
    rng = np.random.default_rng(4)
    y = np.cumsum(rng.normal(size=150)) * 0.1 + rng.normal(size=150)
    gappy = y.copy()
    gappy[[100, 120, 121]] = np.nan
    m = ps.AutoRegressive(order=1).fit(gappy[:90])
    full = ps.compare({"ar": m}, y, start=90)
    gap = ps.compare({"ar": m}, gappy, start=90)
    from probseq.scoring import step_scores

    seqs = ps.Sequences.from_list([gappy])
    s = step_scores(m, seqs, 90)["crps"][0]
    assert float(s[100]) == 0.0 and float(s[121]) == 0.0
    assert np.isclose(gap.loc["ar", "crps"], float(s.sum()) / 57, rtol=1e-12)
    assert gap.loc["ar", "crps"] != full.loc["ar", "crps"]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_gaps_before_the_diffuse_state_is_located_give_no_free_score(scale):
    """Issue 23.2: with y[0] missing the local level is located by y[1], so every model is
    conditioned on steps 0 and 1 of that sequence (not on step 0 only, which scored step 1
    as 0 for the local level and -6.5 for the AR); the local linear trend with y[1] missing
    likewise on steps 0..2. The scores are statsmodels' exact diffuse conditionals."""
    pytest.importorskip("statsmodels.api")
    y = ps.datasets.nile().to_numpy() * scale
    y[0] = np.nan
    level = ps.LinearGaussianSSM.local_level(level_var=1469.1 * scale**2,
                                             obs_var=15099.0 * scale**2)
    ar1 = ps.AutoRegressive(order=1).fit(np.nan_to_num(y, nan=float(np.nanmean(y))))
    assert int(level.diffuse_steps(y)) == 2
    df = compare({"local_level": level, "ar1": ar1}, y)
    assert df.attrs["conditioned_steps"] == [2] and (df["scored_steps"] == 98).all()
    assert "In 1 sequence gaps come before a diffuse state is located" in df.attrs["verdict"]
    ref = _uc(y, "llevel").smooth(
        [15099.0 * scale**2, 1469.1 * scale**2])
    assert df.loc["local_level", "log_lik"] == pytest.approx(ref.llf_obs[2:].sum(), rel=1e-9)
    assert df.loc["ar1", "log_lik"] == pytest.approx(
        float(ar1.log_prob_steps(y)[2:].sum()), rel=1e-12)
    delta = df.loc["local_level", "log_lik"] - df.loc["ar1", "log_lik"]
    assert abs(abs(df["delta_vs_best"]).max() - abs(delta)) < 1e-9 * abs(delta)
    tail = compare({"local_level": level, "ar1": ar1}, y, start=1)
    assert tail.attrs["conditioned_steps"] == [2]
    assert np.isfinite(tail["crps"]).all() and np.isfinite(tail["crps_se"]).all()
    assert np.isfinite(tail["delta_se"]).all()
    # local linear trend, y[1] missing: located by y[0] and y[2]
    z = ps.datasets.nile().to_numpy() * scale
    z[1] = np.nan
    trend = ps.LinearGaussianSSM.local_linear_trend(
        level_var=1400.0 * scale**2, slope_var=10.0 * scale**2, obs_var=15000.0 * scale**2)
    df = compare({"trend": trend, "level": level}, [z, y])
    assert df.attrs["conditioned_steps"] == [3, 3]  # y needs y[1], y[2] for the trend
    ref = _uc(z, "lltrend").smooth(
        [15000.0 * scale**2, 1400.0 * scale**2, 10.0 * scale**2])
    trend_ll = ref.llf_obs[3:].sum() + float(trend.log_prob_steps(y)[3:].sum())
    assert df.loc["trend", "log_lik"] == pytest.approx(trend_ll, rel=1e-9)
    # a sequence never located leaves nothing to score: refused, not scored for free
    with pytest.raises(ValueError, match="sequence 1 of data has no observed value left"):
        compare({"trend": trend, "level": level}, [z, [np.nan, np.nan, 3.0 * scale, np.nan]])


def _uc(y, kind):
    """statsmodels' exact diffuse structural model, its steady-state switch off (it is an
    absolute tolerance: at small scales it stops the recursion early)."""
    import statsmodels.api as sm

    mod = sm.tsa.UnobservedComponents(y, kind, use_exact_diffuse=True)
    mod.ssm.tolerance = 0.0
    return mod
