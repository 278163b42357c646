"""Rolling-origin backtests against compare(start=) and against refitting by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import probseq as ps
from probseq.backtest import backtest


def _series(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in (40, 33, 47):
        x = np.zeros(n)
        for t in range(1, n):
            x[t] = 0.7 * x[t - 1] + rng.normal()
        out.append(x + 2.0)
    return out


def _models():
    data = _series(1)
    return {
        "hmm": ps.HiddenMarkovModel(2, emission="gaussian").fit(data, seed=0, max_epochs=15),
        "ar1": ps.AutoRegressive(order=1).fit(data),
    }


@pytest.mark.slow
def test_one_step_backtest_reproduces_compare_with_start():
    models, data = _models(), _series(2)
    table, summary = backtest(models, data, initial=10)
    ref = ps.compare(models, data, start=10)
    for name in models:
        rows = table[table["model"] == name]
        assert len(rows) == sum(len(x) - 10 for x in data)
        assert rows["log_score"].sum() == pytest.approx(ref.loc[name, "log_lik"], rel=1e-12)
    # the HMM has one-step predictives: CRPS as in compare's column
    hmm = table[table["model"] == "hmm"]
    assert hmm["crps"].mean() == pytest.approx(ref.loc["hmm", "crps"], rel=1e-12)
    assert set(summary.columns) >= {"model", "h", "n", "log_score", "crps", "rmse", "mae",
                                    "coverage", "delta_vs_best", "delta_se"}
    best = summary.loc[summary["log_score"].idxmax()]
    assert best["delta_vs_best"] == 0.0


def test_slow_path_equals_one_step_pass_and_h_step_exact_scores():
    """Forecasting origin by origin (horizon 2) gives the same h = 1 rows as the one pass."""
    m = {"hmm": _models()["hmm"]}
    data = _series(3)
    fast, _ = backtest(m, data, initial=30, step=4)
    slow, summary = backtest(m, data, initial=30, step=4, horizon=2)
    one = slow[slow["h"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(one, fast, rtol=1e-10, atol=1e-12)
    two = slow[slow["h"] == 2]
    # h = 2 log scores are the exact 2-step marginal densities
    row = two.iloc[0]
    x = data[int(row["sequence"])]
    fc = m["hmm"].forecast(x[: int(row["origin"])], 2)
    o = int(row["origin"])
    lp = fc.distribution.log_prob(torch.tensor([[x[o], x[o + 1]]], dtype=torch.float64))
    assert float(lp[0, 1]) == pytest.approx(row["log_score"], rel=1e-12)
    assert list(summary["h"]) == [1, 2]


def test_refit_matches_fitting_by_hand():
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 3, size=n) for n in (30, 25)]
    chain = ps.MarkovChain(order=1)
    table, _ = backtest({"mc": chain}, data, initial=20, step=3, refit=True)
    for t in (20, 23):
        by_hand = ps.MarkovChain(order=1).fit([x[:t] for x in data])
        for i, x in enumerate(data):
            if len(x) <= t:
                continue
            row = table[(table["origin"] == t) & (table["sequence"] == i)].iloc[0]
            want = math.log(float(by_hand.conditional(x[:t])[x[t]]))
            assert row["log_score"] == pytest.approx(want, rel=1e-12)
    # refit every 2 origins: origins 20 and 23 share the fit at 20, 26 refits
    every2, _ = backtest({"mc": chain}, data, initial=20, step=3, refit=2)
    at20 = ps.MarkovChain(order=1).fit([x[:20] for x in data])
    row = every2[(every2["origin"] == 23) & (every2["sequence"] == 0)].iloc[0]
    assert row["log_score"] == pytest.approx(math.log(float(at20.conditional(data[0][:23])[
        data[0][23]])), rel=1e-12)
    assert not chain._is_fitted()  # the caller's model is untouched
    assert set(table.columns) == {"model", "sequence", "origin", "h", "log_score", "brier",
                                  "error", "covered"}


def test_sampled_steps_have_crps_but_no_log_score():
    data = _series(4)
    rnn = ps.RecurrentModel(cell="gru", hidden_size=4, emission="gaussian").fit(
        data, max_epochs=1, seed=0, progress=False)
    table, summary = backtest({"gru": rnn}, data, initial=40, horizon=2, step=5,
                              num_samples=200)
    h2 = table[table["h"] == 2]
    assert len(h2) > 0 and h2["log_score"].isna().all()
    assert np.isfinite(h2["crps"]).all() and (h2["crps"] > 0).all()
    assert np.isfinite(table[table["h"] == 1]["log_score"]).all()
    assert len(summary) == 2


def test_bad_arguments_raise():
    models = {"ar1": _models()["ar1"]}
    for kw, match in (({"initial": 0}, "initial"), ({"initial": 10, "horizon": 0}, "horizon"),
                      ({"initial": 10, "refit": -1}, "refit"),
                      ({"initial": 10, "level": 1.0}, "level")):
        with pytest.raises(ValueError, match=match):
            backtest(models, _series(), **kw)
    with pytest.raises(ValueError, match="non-empty"):
        backtest({}, _series(), initial=3)


def _hmm_fixed():
    return ps.HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]],
        means=[[1.0], [3.0]], covariances=[[[1.0]], [[0.5]]])


def test_origins_split_across_ranks_give_the_single_process_table(monkeypatch):
    """Each rank's share of the origins (rank, world patched; rows gathered by hand)."""
    import importlib

    bt = importlib.import_module("probseq.backtest")  # the module, not the function

    kw = {"initial": 30, "step": 3, "horizon": 2}
    single, _ = backtest({"hmm": _hmm_fixed()}, _series(5), **kw)
    parts = []
    for r in range(2):
        monkeypatch.setattr(bt.distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(bt.distributed, "world_size", lambda: 2)
        part, _ = backtest({"hmm": _hmm_fixed()}, _series(5), **kw)
        assert 0 < len(part) < len(single)
        parts.append(part)
    merged = pd.concat(parts).sort_values(["model", "sequence", "origin", "h"], kind="stable")
    pd.testing.assert_frame_equal(merged.reset_index(drop=True), single)


def test_cli_backtest_writes_tables_and_report(tmp_path, capsys):
    from probseq.cli import main

    out = tmp_path / "bt"
    assert main(["backtest", "--dataset", "nile", "--models", "hmm2,ar1", "--horizon", "2",
                 "--num-samples", "100", "--no-plots", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["model"]) == {"hmm2", "ar1"} and set(summary["h"]) == {1, 2}
    table = pd.read_csv(out / "backtest.csv")
    assert len(table[(table["model"] == "hmm2") & (table["h"] == 1)]) == 20  # 100 - 80 origins
    assert "# probseq backtest: nile" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        main(["backtest", "--dataset", "nile", "--models", "nope", "--out", str(out)])


def test_compare_brier_column_for_symbols_matches_backtest():
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 3, size=40) for _ in range(4)]
    test = [rng.integers(0, 3, size=n) for n in (30, 22, 27)]
    models = {"mc1": ps.MarkovChain(order=1).fit(train),
              "mc2": ps.MarkovChain(order=2, smoothing="kneser-ney").fit(train)}
    ref = ps.compare(models, test, start=10)
    table, _ = backtest(models, test, initial=10)
    for name in models:
        rows = table[table["model"] == name]
        assert rows["brier"].mean() == pytest.approx(ref.loc[name, "brier"], rel=1e-12)
        assert rows["log_score"].sum() == pytest.approx(ref.loc[name, "log_lik"], rel=1e-12)
    best = ref.index[0]
    other = ref.index[1]
    d = (table[table["model"] == other].groupby("sequence")["brier"].sum().to_numpy()
         - table[table["model"] == best].groupby("sequence")["brier"].sum().to_numpy())
    n = len(table[table["model"] == best])
    assert ref.loc[other, "brier_se"] == pytest.approx(d.std(ddof=1) * math.sqrt(3) / n,
                                                       rel=1e-10)
    assert "crps" not in ref.columns


def test_refits_keep_missing_values_and_covariates():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(90, 1))
    y = 1.0 + 1.5 * x[:, 0] + rng.normal(0, 0.3, size=90)
    y[[10, 40]] = np.nan
    m = ps.AutoRegressive(order=1).fit(y[:60], exog=x[:60])
    table, _ = ps.backtest({"arx": m}, y, initial=60, horizon=2, step=10, refit=True, exog=x,
                           progress=False)
    first = table[(table.origin == 60) & (table.h == 1)]
    ref = ps.AutoRegressive(order=1).fit(y[:60], exog=x[:60])
    fc = ref.forecast(y[:60], 1, exog=x[:61])
    assert np.isclose(float(first.error.iloc[0]), y[60] - float(fc.mean[0]), rtol=1e-9)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_origins_before_the_diffuse_state_is_located_are_not_scored(scale):
    """Issue 23.2: with y[0] missing no model forecasts from origin 1 (the local level's
    state is not located by then; it used to score log 0, crps inf); the later one-step
    log scores are statsmodels' exact diffuse conditionals."""
    pytest.importorskip("statsmodels.api")
    y = ps.datasets.nile().to_numpy() * scale
    y[0] = np.nan
    level = ps.LinearGaussianSSM.local_level(level_var=1469.1 * scale**2,
                                             obs_var=15099.0 * scale**2)
    ar1 = ps.AutoRegressive(order=1).fit(np.nan_to_num(y, nan=float(np.nanmean(y))))
    ref = _uc(y, "llevel").smooth(
        [15099.0 * scale**2, 1469.1 * scale**2])
    for horizon in (1, 2):
        res = backtest({"level": level, "ar1": ar1}, y, initial=1, horizon=horizon, step=7)
        t = res.table
        assert t["origin"].min() == 8 and np.isfinite(t["crps"]).all()
        one = t[(t["model"] == "level") & (t["h"] == 1)]
        np.testing.assert_allclose(one["log_score"], ref.llf_obs[one["origin"].to_numpy()],
                                   rtol=1e-9)
        assert np.isfinite(res.summary["delta_se"]).all()
    res = backtest({"level": level, "ar1": ar1}, y, initial=1, horizon=1)
    assert res.table["origin"].min() == 2 and np.isfinite(res.table["crps"]).all()


def _uc(y, kind):
    """statsmodels' exact diffuse structural model, its steady-state switch off (it is an
    absolute tolerance: at small scales it stops the recursion early)."""
    import statsmodels.api as sm

    mod = sm.tsa.UnobservedComponents(y, kind, use_exact_diffuse=True)
    mod.ssm.tolerance = 0.0
    return mod


def test_default_level_is_the_forecasts_095():
    # issue 26: backtest defaulted to 0.9 while forecast and plot_forecast use 0.95.
    from scipy import stats

    data = _series(2)
    ar1 = ps.AutoRegressive(order=1).fit(data)
    table = backtest({"ar1": ar1}, data, initial=20, horizon=1).table
    sd = math.sqrt(float(ar1.params["noise_var"]))
    inside = np.abs(table["error"].to_numpy()) <= stats.norm.ppf(0.975) * sd
    assert np.array_equal(table["covered"].to_numpy() == 1.0, inside)
    assert not np.array_equal(inside, np.abs(table["error"].to_numpy())
                              <= stats.norm.ppf(0.95) * sd)  # the test tells 0.9 apart
