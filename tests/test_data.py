"""Sequences and input coercion: every accepted form, every documented refusal."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probseq import Sequences
from probseq.data import as_sequences, check_sequences


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
        ([np.array([1.0, np.nan])], None, "sequence 0 contains NaN"),
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
