"""compare(): its statistics against a hand computation."""

import math

import numpy as np
import pytest
from scipy import stats
from toy import IIDCategorical, IIDGaussian

from probseq import compare


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


def test_single_sequence_has_nan_standard_error():
    m1 = IIDCategorical(alpha=1).fit([[0, 1, 1, 2]])
    m2 = IIDCategorical(alpha=50).fit([[0, 1, 1, 2]])
    df = compare({"a": m1, "b": m2}, [0, 1, 1, 1, 2])
    assert math.isnan(df["delta_se"].iloc[1]) and not df["significant"].any()


def test_start_scores_only_the_tail():
    m = IIDCategorical(alpha=1).fit([[0, 1, 1, 2]])
    x = [0, 1, 2, 2, 1]
    df = compare({"m": m}, x, start=2)
    assert df.loc["m", "log_lik"] == pytest.approx(float(m.log_prob_steps(x)[2:].sum()))
    assert df.loc["m", "nats_per_step"] == pytest.approx(-df.loc["m", "log_lik"] / 3)


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
