"""The protocol's shared machinery (validation, seeding, save/load) on a toy model."""

import os
import pickle

import numpy as np
import pytest
import torch
from toy import IIDCategorical, IIDGaussian, IIDRegression

import probseq
from probseq import NotFittedError, Sequences


def test_single_sequence_drops_the_batch_axis():
    m = IIDCategorical().fit([[0, 1, 2], [2, 2]])
    assert m.log_prob([0, 1]).shape == ()
    assert m.log_prob([[0, 1], [1]]).shape == (2,)
    assert m.log_prob_steps([0, 1, 1]).shape == (3,)
    steps = m.log_prob_steps([[0, 1, 1], [2]])
    assert steps.shape == (2, 3) and steps[1, 1:].eq(0).all()


def test_unfitted_model_refuses_with_value_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        IIDCategorical().log_prob([0, 1])
    assert issubclass(NotFittedError, ValueError)


def test_symbols_outside_alphabet_after_fit():
    m = IIDCategorical().fit([[0, 1, 2]])
    with pytest.raises(ValueError, match="sequence 1 contains symbol 3"):
        m.log_prob([[0], [3]])


def test_sample_prefix_seed_and_validation():
    m = IIDCategorical().fit([[0, 1, 2, 1]])
    a = m.sample(5, 6, prefix=[2, 2], seed=3)
    b = m.sample(5, 6, prefix=[2, 2], seed=3)
    assert a == b and a.values.shape == (5, 6) and a.values[:, :2].eq(2).all()
    state = torch.random.get_rng_state()
    m.sample(2, 2, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    with pytest.raises(ValueError, match="more than length"):
        m.sample(1, 1, prefix=[0, 1])
    with pytest.raises(ValueError, match="num_sequences"):
        m.sample(0, 3)
    with pytest.raises(ValueError, match="prefix must be one sequence"):
        m.sample(1, 3, prefix=[[0], [1]])


def test_save_load_round_trip_exact(tmp_path):
    m = IIDGaussian().fit(np.random.default_rng(0).normal(size=50))
    path = tmp_path / "m.pt"
    m.save(path)
    m2 = probseq.load(path)
    x = np.random.default_rng(1).normal(size=(3, 7))
    assert torch.equal(m.log_prob(list(x)), m2.log_prob(list(x)))
    assert [p for p in os.listdir(tmp_path)] == ["m.pt"]  # no temporary left behind


def test_load_refuses_foreign_truncated_and_pickled_code(tmp_path):
    m = IIDCategorical().fit([[0, 1]])
    good = tmp_path / "good.pt"
    m.save(good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:100])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    text = tmp_path / "text.pt"
    text.write_text("hello")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    for path in (trunc, foreign, text, evil, tmp_path / "missing.pt"):
        with pytest.raises(ValueError):
            probseq.load(path)
    assert not (tmp_path / "pwned").exists()


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    m = IIDCategorical().fit([[0, 1]])
    path = tmp_path / "m.pt"
    m.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        IIDCategorical().fit([[1, 1, 0]]).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pt"]


def test_fit_does_not_modify_caller_data():
    x = np.array([0, 1, 1, 2])
    t = torch.tensor([2, 2, 0])
    seqs = Sequences.from_list([x, t])
    before = seqs.values.clone()
    IIDCategorical().fit([x, t])
    IIDCategorical().fit(seqs)
    assert x.tolist() == [0, 1, 1, 2] and t.tolist() == [2, 2, 0]
    assert torch.equal(seqs.values, before)


def test_hint_for_real_data_given_to_a_symbol_model_names_the_fix():
    import probseq as ps

    x = ps.datasets.sunspots().to_numpy()
    with pytest.raises(ValueError, match='emission="gaussian"'):
        ps.HiddenMarkovModel(2).fit(x)
    with pytest.raises(ValueError, match="continuous model"):
        ps.MarkovChain(order=1).fit(x)


def test_missing_values_refusal_names_the_models_that_can():
    import probseq as ps

    m = ps.RecurrentModel(cell="gru", hidden_size=4, emission="gaussian")
    with pytest.raises(ValueError, match="sequence 0 has a missing value at step 1.*can"):
        m.fit(np.array([1.0, np.nan, 2.0, 3.0]), max_epochs=1, progress=False)


def test_exog_and_missing_values_reach_the_hooks():
    rng = np.random.default_rng(0)
    ex = rng.normal(size=(200, 1))
    y = 1.0 + 3.0 * ex[:, 0] + rng.normal(0, 0.1, size=200)
    y_gap = y.copy()
    y_gap[[5, 50]] = np.nan
    m = IIDRegression().fit(y_gap, exog=ex)
    assert abs(float(m.beta[0]) - 3.0) < 0.05
    steps = m.log_prob_steps(y_gap, exog=ex)
    assert steps[5] == 0 and steps[50] == 0
    full = m.log_prob_steps(y, exog=ex)
    keep = np.ones(200, bool)
    keep[[5, 50]] = False
    torch.testing.assert_close(steps[keep], full[keep])
    assert torch.isclose(m.log_prob(y_gap, exog=ex), steps.sum())
    with pytest.raises(ValueError, match="needs 200"):
        m.log_prob(y, exog=ex[:100])
    s = m.sample(4, 10, exog=np.zeros((10, 1)), prefix=np.array([1.0, np.nan]), seed=0)
    assert s.values.shape == (4, 10) and torch.all(s.values[:, 0] == 1.0)
    assert torch.all(s.values[:, 1] != s.values[0, 1]) or len(set(s.values[:, 1].tolist())) > 1
    with pytest.raises(ValueError, match="unknown option.*'shrinkage'.*valid options: shrink"):
        IIDRegression().fit(y, exog=ex, shrinkage=0.1)
    with pytest.raises(ValueError, match="does not take covariates"):
        IIDGaussian().fit(y, exog=ex)
