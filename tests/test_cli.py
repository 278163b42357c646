"""The command line: the main job's outputs, its options and its refusals."""

import subprocess
import sys

import pandas as pd
import pytest

from probseq.cli import DEFAULT_MODELS, build_parser, main


def test_compare_writes_table_report_and_figures(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["compare", "--dataset", "nile", "--models", "ar1,local_level",
                 "--out", str(out), "--seed", "1"]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert set(table.index) == {"ar1", "local_level"}
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
    assert "Training stopped before convergence: none." in report
    printed = capsys.readouterr().out
    assert "markov3 fits best and is significantly better" in printed


def test_main_job_defaults():
    args = build_parser().parse_args(["compare"])
    assert args.dataset == "text" and args.models is None
    # Markov orders and a small recurrent net.
    assert "markov6" in DEFAULT_MODELS["discrete"] and "gru" in DEFAULT_MODELS["discrete"]


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
