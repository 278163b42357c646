"""The command line: the main job's outputs, its options and its refusals."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from probseq.cli import DEFAULT_MODELS, build_parser, main


def test_compare_writes_table_report_and_figures(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["compare", "--dataset", "nile", "--models", "ar1,local_level",
                 "--out", str(out), "--seed", "1"]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert set(table.index) == {"ar1", "local_level"}
    assert table.index.name == "name" and "model" not in table  # one name column (issue 26)
    for col in ("log_lik", "nats_per_step", "aic", "bic", "delta_vs_best", "delta_se", "exact",
                "p_adjusted", "indistinguishable", "simplest", "params_exceed_data",
                "score_kind", "conditioned_on"):
        assert col in table
    assert table["delta_vs_best"].iloc[0] == 0 and table["delta_vs_best"].iloc[1] <= 0
    # One series of 100 values: the held-out tail is paired step by step, never NaN.
    assert table["delta_se"].notna().all() and table["p_value"].notna().iloc[1]
    report = (out / "report.md").read_text()
    assert "## Verdict" in report and "comparison.png" in report
    assert "Diebold-Mariano" in report and "Conditioning:" in report
    # On 20 held-out values the two are not separable: no winner is announced.
    assert not table["significant"].any()
    assert "Best model" not in report and "Indistinguishable from the best" in report
    assert "Simplest adequate model" in report
    for fig in ("comparison.png", "step_log_lik.png", "samples.png", "forecast.png"):
        assert (out / fig).stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "ar1" in printed and "local_level" in printed


def test_compare_on_text_with_markov_models(tmp_path, capsys):
    out = tmp_path / "text"
    assert main(["compare", "--models", "markov1,markov3,markov5_additive",
                 "--out", str(out), "--no-plots"]) == 0  # text is the default dataset
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert "bits_per_step" in table and table.index[0] == "markov3"
    # 182 held-out chunks separate the orders: a winner, significant after Holm.
    assert table["significant"].iloc[1:].all() and table["simplest"].iloc[0]
    report = (out / "report.md").read_text()
    assert "Best model: **markov3**, significantly better than every other model" in report
    assert "Holm-corrected for 2 comparisons" in report
    assert "## Models" in report and "smoothing='additive'" in report
    assert "Left out of the ranking: none." in report
    printed = capsys.readouterr().out
    assert "markov3 fits best and is significantly better" in printed


def test_main_job_defaults():
    args = build_parser().parse_args(["compare"])
    assert args.dataset is None and args.data is None and args.models is None
    # Markov orders beside the shipped networks; no network is fitted live.
    assert "markov6" in DEFAULT_MODELS["discrete"] and "lstm_shipped" in DEFAULT_MODELS["discrete"]
    assert "gru" not in DEFAULT_MODELS["discrete"]


def test_main_job_scores_the_shipped_networks_beside_the_chains(tmp_path, capsys):
    # The fast path of the main job: every default model, the first 8 held-out chunks.
    out = tmp_path / "main"
    assert main(["compare", "--max-chunks", "8", "--no-plots", "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    networks = [n for n in table.index if n.endswith("_shipped")]
    chains = [n for n in table.index if n.startswith("markov")]
    assert sorted(networks) == ["gru_shipped", "lstm_shipped", "rnn_shipped"]
    assert len(chains) == 6 and table["scored_steps"].iloc[0] == 8 * 256
    # A trained network scores below (better than) the best chain on the same chunks.
    assert table.loc[networks, "bits_per_step"].min() < table.loc[chains, "bits_per_step"].min()
    report = (out / "report.md").read_text()
    assert "Left out of the ranking: none." in report
    assert "shipped with the package (probseq.pretrained.text_network('lstm'))" in report
    assert "on the judged data: the shipped networks' training text is not rescored" in report


def _text_file(path, extra=""):
    from probseq.datasets import python_docs_text

    corpus = python_docs_text()
    path.write_text(corpus.decode(corpus.test[:3000]) + extra, encoding="utf-8")
    return path


def test_a_live_network_that_does_not_converge_is_left_out(tmp_path, monkeypatch, capsys):
    import probseq as ps
    from probseq import _cli_common

    def factories(kind, num_symbols=None):
        return {
            "markov1": lambda: (ps.MarkovChain(order=1, num_symbols=num_symbols), {}),
            "gru": lambda: (ps.RecurrentModel(cell="gru", hidden_size=4, num_symbols=num_symbols),
                            {"max_steps": 2, "min_steps": 0, "patience": 50, "progress": False}),
        }

    monkeypatch.setattr(_cli_common, "model_factories", factories)
    out = tmp_path / "live"
    with pytest.warns(RuntimeWarning, match="did not converge"):
        assert main(["compare", "--data", str(_text_file(tmp_path / "t.txt")), "--models",
                     "markov1,gru", "--no-plots", "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(table.index) == ["markov1"]
    report = (out / "report.md").read_text()
    assert "gru (left out of the ranking: training did not converge" in report
    assert "gru: left out of the ranking" in capsys.readouterr().out


def _run_cli(*argv, cwd):
    """``python -m probseq *argv`` in ``cwd``, in this process (the entry point itself is
    tested as a subprocess in test_module_entry_point_help_and_listings): its exit status
    and printed output."""
    import contextlib
    import io
    import os
    from types import SimpleNamespace

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's refusals
                code = exc.code
    finally:
        os.chdir(here)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_compare_and_backtest_read_a_csv_with_gaps(tmp_path):
    rng = np.random.default_rng(0)
    y = np.zeros(90)
    for t in range(1, 90):
        y[t] = 5 + 0.6 * (y[t - 1] - 5) + rng.normal() if t > 1 else 5.0
    df = pd.DataFrame({"month": pd.date_range("2001-01-01", periods=90, freq="MS"),
                       "sales": y, "other": -y})
    df.loc[7, "sales"] = np.nan  # an empty cell
    df = df.drop(index=[20])  # a missing month
    df.to_csv(tmp_path / "shop.csv", index=False)
    res = _run_cli("compare", "--data", "shop.csv", "--column", "sales", "--models",
                   "ar1,local_level,gru", "--no-plots", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "report" / "shop"  # named after the data
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert set(table.index) == {"ar1", "local_level"}
    assert table["scored_steps"].iloc[0] == 90 - 72  # the last 20% of 90 months, one step ahead
    report = (out / "report.md").read_text()
    assert "with 2 missing values" in report and "2001-01-01 to 2008-06-01" in report
    assert "gru (not fitted: the data has 2 missing values" in report
    # A second run never overwrites the first one's report.
    again = _run_cli("compare", "--data", "shop.csv", "--column", "sales", "--models", "ar1",
                     "--no-plots", cwd=tmp_path)
    assert again.returncode == 0 and "writing to report/shop-2" in again.stderr
    assert len(pd.read_csv(out / "comparison.csv")) == 2
    assert (tmp_path / "report" / "shop-2" / "report.md").exists()
    bt = _run_cli("backtest", "--data", "shop.csv", "--column", "sales", "--models", "ar1",
                  "--horizon", "2", "--no-plots", cwd=tmp_path)
    assert bt.returncode == 0, bt.stderr
    summary = pd.read_csv(tmp_path / "backtest" / "shop" / "summary.csv")
    assert set(summary["h"]) == {1, 2}
    bt_report = (tmp_path / "backtest" / "shop" / "report.md").read_text()
    assert "1 to 2 steps ahead" in bt_report and "one step ahead" not in bt_report
    assert "coverage at the 95% level" in bt_report
    table = pd.read_csv(tmp_path / "backtest" / "shop" / "backtest.csv")
    assert list(table.columns).count("model") == 1 and "name" not in table
    # Several value columns need --column.
    res = _run_cli("compare", "--data", "shop.csv", cwd=tmp_path)
    assert res.returncode == 2 and "choose one with --column" in res.stderr


def test_compare_reads_a_text_file(tmp_path):
    _text_file(tmp_path / "notes.txt")
    res = _run_cli("compare", "--data", "notes.txt", "--models",
                   "markov1,markov2,lstm_shipped", "--no-plots", "--out", "mine", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "mine" / "comparison.csv", index_col=0)
    assert set(table.index) == {"markov1", "markov2", "lstm_shipped"}
    # A character outside the shipped vocabulary: the networks are left out, with the reason.
    _text_file(tmp_path / "euro.txt", extra="5 \u20ac")
    res = _run_cli("compare", "--data", "euro.txt", "--models", "markov1,lstm_shipped",
                   "--no-plots", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "report" / "euro" / "comparison.csv", index_col=0)
    assert list(table.index) == ["markov1"]
    assert "not in the vocabulary the shipped networks were trained on" in res.stdout


def test_help_imports_no_heavy_library():
    code = ("import sys, probseq, probseq.cli\n"
            "probseq.cli.build_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'pyro', 'statsmodels', 'numba', 'matplotlib') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--models", "nonsense"], "unknown model"),
        (["compare", "--dataset", "nope"], "invalid choice"),
        (["compare", "--seed", "x"], "invalid int"),
        (["compare", "--dataset", "text", "--models", "ar1"], "unknown model"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_options_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_module_entry_point_help_and_listings(capsys):
    res = subprocess.run([sys.executable, "-m", "probseq", "--help"], capture_output=True,
                         text=True, check=True)
    for command in ("compare", "models", "datasets"):
        assert command in res.stdout
    assert main(["models"]) == 0 and main(["datasets"]) == 0
    listed = capsys.readouterr().out
    assert "continuous:" in listed and "markov1" in listed and "nile" in listed


def test_lazy_public_names_load_on_first_use():
    code = ("import sys, probseq\n"
            "assert 'torch' not in sys.modules\n"
            "import probseq.backtest\n"
            "assert callable(probseq.backtest) and callable(probseq.compare)\n"
            "m = probseq.load('probseq/pretrained/text_rnn.pt')  # registers its class itself\n"
            "print(type(m).__name__)")
    from pathlib import Path

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "RecurrentModel"


def test_names_listed_without_building_match_the_factories():
    from probseq import _cli_common, datasets

    for kind in ("continuous", "discrete"):
        assert _cli_common.model_names(kind) == list(_cli_common.model_factories(kind))
    assert _cli_common.DATASETS == datasets.DATASETS


def test_out_dot_writes_here_then_numbers_the_folder(tmp_path, monkeypatch):
    # "--out ." crashed on a second run (Path(".").with_name: "has an empty name").
    here = tmp_path / "runs"
    here.mkdir()
    monkeypatch.chdir(here)
    args = ["compare", "--dataset", "nile", "--models", "ar1", "--no-plots", "--out", "."]
    assert main(args) == 0 and (here / "comparison.csv").exists()
    assert main(args) == 0 and (tmp_path / "runs-2" / "comparison.csv").exists()
