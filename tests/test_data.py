"""Sequences and input coercion: every accepted form, every documented refusal."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probseq import Sequences
from probseq.data import as_exog, as_sequences, check_sequences


def test_from_list_pads_and_keeps_lengths():
    s = Sequences.from_list([[1, 2, 3], np.array([4]), torch.tensor([5, 6])])
    assert s.values.dtype == torch.int64 and s.values.shape == (3, 3)
    assert s.lengths.tolist() == [3, 1, 2]
    assert s.mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    assert s[1].tolist() == [4] and [x.tolist() for x in s.to_list()] == [[1, 2, 3], [4], [5, 6]]
    assert len(s) == 3 and s.num_steps == 6 and s.is_discrete and s.dim is None


def test_multivariate_and_float32_promoted_to_float64():
    a = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    s = Sequences.from_list([a, a[:3]])
    assert s.values.shape == (2, 5, 2) and s.values.dtype == torch.float64 and s.dim == 2
    np.testing.assert_array_equal(s[1].numpy(), a[:3].astype(np.float64))


def test_from_padded_ignores_padding_even_nan():
    v = np.array([[1.0, 2.0, np.nan], [3.0, np.inf, 7.0]])
    s = Sequences.from_padded(v, lengths=[2, 1])
    assert s.values.tolist() == [[1.0, 2.0], [3.0, 0.0]]
    assert Sequences.from_padded(np.array([[1, 2], [3, 4]])).lengths.tolist() == [2, 2]


def test_from_concatenated_hmmlearn_format():
    s = Sequences.from_concatenated(np.arange(6), [2, 4])
    assert s[0].tolist() == [0, 1] and s[1].tolist() == [2, 3, 4, 5]


def test_caller_arrays_are_copied_not_aliased():
    a = np.array([0.5, 1.5, 2.5])
    s = Sequences.from_list([a])
    s.values[0, 0] = 99.0
    assert a[0] == 0.5


@pytest.mark.parametrize(
    "data, single",
    [
        (np.array([1, 2, 3]), True),
        (torch.tensor([0.1, 0.2]), True),
        ([1, 2, 3], True),
        (pd.Series([1.0, 2.0, 3.0]), True),
        (np.zeros((4, 3)), True),
        ([np.array([1, 2]), [3, 4, 5]], False),
        ((torch.tensor([1]), torch.tensor([2, 3])), False),
    ],
)
def test_accepted_inputs(data, single):
    seqs, is_single = as_sequences(data)
    assert is_single == single and isinstance(seqs, Sequences)


@pytest.mark.parametrize(
    "data, kind, message",
    [
        ([[1.0], [2.0, np.inf]], None, "sequence 1 contains inf"),
        ([[0, 1], [1.0, 2.0]], "discrete", "sequence 1 has float values"),
        (np.array([1.0, 2.0]), "discrete", r"\.astype\(int\)"),
        ([[0, 1], [2, -3]], None, "sequence 1 contains a negative symbol -3"),
        ([[0, 1], []], None, "sequence 1 is empty"),
        ([], None, "empty list"),
        (np.zeros((3, 4), dtype=np.int64), None, "from_padded"),
        (np.zeros((2, 3, 4)), None, "from_padded"),
        ("hello", None, "string"),
        ([["a", "b"]], None, "sequence 0 holds strings"),
        ([np.zeros((3, 2)), np.zeros((3, 3))], None, "sequence 1 has D=3"),
        ([np.zeros(3), np.zeros((3, 2))], None, "sequence 1 is 2-D"),
        ([[1, 2], 3], None, "mixes scalars"),
        ([np.array([True, False])], None, "booleans"),
        (None, None, "None"),
    ],
)
def test_bad_input_names_problem_and_sequence(data, kind, message):
    with pytest.raises(ValueError, match=message):
        as_sequences(data, kind)


def test_check_sequences_symbols_dimension_length():
    s = Sequences.from_list([[0, 1], [2, 5]])
    with pytest.raises(ValueError, match=r"sequence 1 contains symbol 5 at step 1, outside 0\.\.3"):
        check_sequences(s, model="M", num_symbols=4)
    r = Sequences.from_list([np.zeros((3, 2))])
    with pytest.raises(ValueError, match="univariate"):
        check_sequences(r, model="M", dim=None)
    with pytest.raises(ValueError, match="D=3"):
        check_sequences(r, model="M", dim=3)
    check_sequences(Sequences.from_list([np.zeros(3)]), model="M", dim=1)  # univariate is D=1
    with pytest.raises(ValueError, match="sequence 1 has length 2, but M needs at least 3"):
        check_sequences(Sequences.from_list([[0, 1, 2], [0, 1]]), model="M", min_length=3)


def test_indexing_a_batch_gives_a_batch():
    s = Sequences.from_list([[1, 2, 3], [4], [5, 6]])
    sub = s[[2, 1]]
    assert isinstance(sub, Sequences) and sub.lengths.tolist() == [2, 1]
    assert sub.values.shape == (2, 2) and s[1:][0].tolist() == [4]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=12), min_size=1, max_size=6))
def test_round_trip_property(lists):
    s = Sequences.from_list(lists)
    assert [x.tolist() for x in s.to_list()] == lists
    assert s.values[~s.mask].eq(0).all()
    again = Sequences.from_padded(s.values, s.lengths)
    assert again == s


def test_negative_integers_are_fine_as_reals():
    s, _ = as_sequences([[-5, 3], [2]], "continuous")
    assert s.values.dtype == torch.float64 and s[0].tolist() == [-5.0, 3.0]
    s2, _ = as_sequences([np.array([[-1, 2], [3, -4]])], "continuous")
    assert s2.dim == 2


# ------------------------------------------------------------------------ missing values
def test_nan_reals_are_missing_values_stored_as_zero():
    x = np.array([1.0, np.nan, 3.0])
    seqs, single = as_sequences(x, "continuous")
    assert single and seqs.has_missing
    assert seqs.observed.tolist() == [[True, False, True]]
    assert seqs.values.tolist() == [[1.0, 0.0, 3.0]]
    assert np.isnan(x[1])  # the caller's array is untouched
    assert seqs.num_observed == 2 and seqs.num_steps == 3


def test_masked_and_pandas_na_symbols_are_missing():
    masked = np.ma.MaskedArray([0, 1, 2, 1], mask=[0, 1, 0, 0])
    seqs, _ = as_sequences(masked, "discrete")
    assert seqs.observed.tolist() == [[True, False, True, True]]
    assert seqs.values.dtype == torch.int64 and seqs.values[0, 1] == 0
    series = pd.Series([1, pd.NA, 2], dtype="Int64")
    seqs, _ = as_sequences(series, "discrete")
    assert seqs.observed.tolist() == [[True, False, True]]
    assert seqs.values.tolist() == [[1, 0, 2]]
    seqs, _ = as_sequences([[0, None, 1], [2]], "discrete")
    assert seqs.observed.tolist() == [[True, False, True], [True, False, False]]


def test_padding_is_separate_from_missingness():
    seqs = Sequences.from_list([np.array([1.0, np.nan]), np.array([2.0])])
    assert seqs.mask.tolist() == [[True, True], [True, False]]
    assert seqs.observed.tolist() == [[True, False], [True, False]]
    assert seqs.step_any_observed.tolist() == [[True, False], [True, False]]
    sub = seqs[[1]]
    assert not sub.has_missing and sub.observed.tolist() == [[True]]
    assert seqs[[0]].has_missing


def test_partially_observed_multivariate_steps():
    x = np.array([[1.0, 2.0], [np.nan, 3.0], [np.nan, np.nan]])
    seqs, _ = as_sequences(x, "continuous")
    assert seqs.step_observed.tolist() == [[True, False, False]]
    assert seqs.step_any_observed.tolist() == [[True, True, False]]
    assert seqs.num_observed == 2


def test_floats_with_nan_where_symbols_are_expected_point_to_masked_arrays():
    with pytest.raises(ValueError, match="numpy.ma"):
        as_sequences(np.array([0.0, np.nan]), "discrete")


# ------------------------------------------------------------------------ unchecked doors
@pytest.mark.parametrize(
    "values, lengths, message",
    [
        (torch.tensor([[0, -1, 2]]), torch.tensor([3]), "negative symbol -1"),
        (torch.tensor([[0, 1, 2]]), torch.tensor([4]), "length 4, outside 1..3"),
        (torch.tensor([[0, 1, 2]]), torch.tensor([0]), "length 0"),
        (torch.tensor([[0.0, np.inf]]), torch.tensor([2]), "inf"),
        (torch.tensor([[0, 1]]), torch.tensor([1.5]), "integers"),
        (torch.tensor([[0, 1]]), torch.tensor([2, 2]), "shape"),
    ],
)
def test_constructor_validates(values, lengths, message):
    with pytest.raises(ValueError, match=message):
        Sequences(values, lengths)


def test_constructor_reads_nan_as_missing_and_ignores_padding():
    values = torch.tensor([[1.0, np.nan, 2.0], [1.0, np.nan, 7.0]])
    seqs = Sequences(values, torch.tensor([3, 1]))
    assert seqs.observed.tolist() == [[True, False, True], [True, False, False]]
    assert seqs.values[1].tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(values[0, 1].item()) and values[1, 2] == 7.0  # caller's tensor untouched


@pytest.mark.parametrize("lengths, message", [([-1, 6], "length -1"), ([2.5, 2.5], "integers"),
                                              ([1, 1], "sum to 2")])
def test_from_concatenated_validates_lengths(lengths, message):
    with pytest.raises(ValueError, match=message):
        Sequences.from_concatenated(np.arange(5), lengths)


def test_uint64_symbols_beyond_int64_are_refused():
    with pytest.raises(ValueError, match="too large"):
        as_sequences(np.array([1, 2**63 + 3], dtype=np.uint64), "discrete")


def test_float_batch_read_as_one_short_multivariate_sequence_is_called_out():
    with pytest.raises(ValueError, match=r"ONE sequence of T=5 steps of dimension D=100"):
        as_sequences(np.random.default_rng(0).normal(size=(5, 100)), "continuous")
    seqs, _ = as_sequences([np.zeros((2, 3))], "continuous")  # explicit: one [T, D] sequence
    assert seqs.dim == 3


def test_a_dict_is_not_read_as_strings():
    with pytest.raises(ValueError, match="list\\(d.values\\(\\)\\)"):
        as_sequences({"a": [1, 2]})


# ------------------------------------------------------------------------ covariates
def test_exog_shapes_are_aligned_and_validated():
    seqs, _ = as_sequences([np.zeros(3), np.zeros(2)], "continuous")
    ex = as_exog(np.arange(12.0).reshape(2, 3, 2), seqs)
    assert ex.shape == (2, 3, 2) and ex.dtype == torch.float64
    assert ex[1, 2].tolist() == [0.0, 0.0]  # zero past the sequence's steps
    ex = as_exog([np.ones((3, 1)), np.ones((2, 1))], seqs)
    assert ex.shape == (2, 3, 1)
    with pytest.raises(ValueError, match="sequence 1 has 1 steps, but the sequence needs 2"):
        as_exog([np.ones((3, 1)), np.ones((1, 1))], seqs)
    with pytest.raises(ValueError, match="2 future steps included"):
        as_exog(np.ones((2, 3, 1)), seqs, extra_steps=2)
    with pytest.raises(ValueError, match="non-finite"):
        as_exog(np.full((2, 3, 1), np.nan), seqs)
    with pytest.raises(ValueError, match="for one sequence but the data has 2"):
        as_exog(np.ones((3, 1)), seqs)


def test_exog_pandas_index_must_line_up():
    idx = pd.period_range("2000Q1", periods=4, freq="Q")
    y = pd.Series([1.0, 2.0, 3.0, 4.0], index=idx)
    seqs, _ = as_sequences(y, "continuous")
    good = pd.DataFrame({"x": np.arange(6.0)}, index=pd.period_range("2000Q1", periods=6,
                                                                     freq="Q"))
    assert as_exog(good, seqs, data=y, extra_steps=2)[0, :, 0].tolist() == list(range(6))
    bad = pd.DataFrame({"x": np.arange(4.0)}, index=pd.period_range("1999Q1", periods=4,
                                                                    freq="Q"))
    with pytest.raises(ValueError, match="does not line up"):
        as_exog(bad, seqs, data=y)


def test_exog_as_tensors_for_a_tensor_sequence():
    seqs, _ = as_sequences(torch.zeros(4, dtype=torch.float64), "continuous")
    ex = as_exog(torch.ones(4, 2), seqs, data=torch.zeros(4))
    assert ex.shape == (1, 4, 2)


def test_to_list_and_with_gaps_give_missing_values_back():
    seqs = Sequences.from_list([np.array([1.0, np.nan, 3.0]), np.array([2.0])])
    back = seqs.to_list()
    assert np.isnan(back[0][1].item()) and back[1].tolist() == [2.0]
    sym = Sequences.from_list([np.ma.MaskedArray([0, 1, 2], mask=[0, 1, 0])])
    m = sym.with_gaps(0)
    assert isinstance(m, np.ma.MaskedArray) and m.mask.tolist() == [False, True, False]
    again = Sequences.from_list(sym.to_list())
    assert again == sym


def test_large_inputs_are_copied_in_parallel_and_checked(monkeypatch):
    # Inputs from _PARALLEL_FILL values on are copied in chunks by parallel threads, each
    # chunk's minimum checked: the same padded batch as the serial copy, the caller's arrays
    # untouched, and a negative symbol in a late chunk of a later sequence still named.
    from probseq import data

    monkeypatch.setattr(data, "_PARALLEL_FILL", 1000)
    monkeypatch.setattr(data, "_FILL_CHUNK", 97)
    g = np.random.default_rng(3)
    rows = [g.integers(0, 9, n) for n in (700, 1, 1500, 333)]
    kept = [r.copy() for r in rows]
    big = Sequences.from_list(rows)
    monkeypatch.setattr(data, "_PARALLEL_FILL", 10**12)
    small = Sequences.from_list(rows)
    assert torch.equal(big.values, small.values) and torch.equal(big.lengths, small.lengths)
    for r, k in zip(rows, kept, strict=True):
        np.testing.assert_array_equal(r, k)
    reals = [g.normal(size=n) for n in (900, 1200)]
    monkeypatch.setattr(data, "_PARALLEL_FILL", 1000)
    got = Sequences.from_list(reals)
    for i, r in enumerate(reals):
        np.testing.assert_array_equal(got.values[i, : r.size].numpy(), r)
    rows[2][1400] = -4
    with pytest.raises(ValueError, match="sequence 2 contains a negative symbol -4 at step 1400"):
        Sequences.from_list(rows)
