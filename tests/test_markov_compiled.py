"""The compiled dense n-gram count against the NumPy key route it replaces."""

import numpy as np
import pytest

import probseq as ps
from probseq.markov import counting
from probseq.markov.compiled import count_ngrams_dense


def _assert_dense_count_equals_the_key_route(lengths: list[int], order: int, v: int,
                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths, dtype=np.int64)
    values = rng.integers(0, v, size=(lengths.size, lengths.max()))
    keys = counting.ngram_keys(values, lengths, order, v)
    want = counting.count_keys(keys, (v + 1) ** (order + 1))
    got = count_ngrams_dense(values, lengths, order, v)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[1].sum() == lengths.sum()


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_dense_count_equals_the_key_route(order):
    # some rows shorter than the order
    _assert_dense_count_equals_the_key_route([1, 2, 3, 40, 7, 1, 25], order, 5, seed=order)


def test_fit_by_either_route_gives_the_same_chain(monkeypatch):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 4, size=n) for n in (50, 3, 120)]
    dense = ps.MarkovChain(order=2, num_symbols=4).fit(seqs)
    monkeypatch.setattr(counting, "dense_key_space", lambda space, n: False)
    keyed = ps.MarkovChain(order=2, num_symbols=4).fit(seqs)
    for name in ("ngram_keys", "ngram_counts", "ctx_keys", "ctx_totals"):
        np.testing.assert_array_equal(dense._tables[2][name], keyed._tables[2][name])
    np.testing.assert_array_equal(dense.log_prob(seqs).numpy(), keyed.log_prob(seqs).numpy())


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("parts", [2, 3, 7])
def test_count_in_parallel_parts_equals_the_key_route(monkeypatch, order, parts):
    # Parts cut rows in the middle (a part's first keys read their context from the part
    # before): the summed tables must equal the key route exactly.
    from probseq.markov import compiled

    monkeypatch.setattr(compiled, "PARALLEL_MIN_STEPS", 1)
    monkeypatch.setattr(compiled, "num_threads", lambda: parts)
    _assert_dense_count_equals_the_key_route([1, 300, 2, 3, 41, 7, 1, 250, 5], order, 6,
                                             seed=10 + order)


@pytest.mark.parametrize("parallel", [False, True])
def test_symbol_out_of_range_is_refused_by_the_count(monkeypatch, parallel):
    # The count checks every symbol it reads (never counts out of bounds); the fit names
    # the sequence and the step, wherever the symbol lies (here in the last part).
    from probseq.markov import compiled

    if parallel:
        monkeypatch.setattr(compiled, "PARALLEL_MIN_STEPS", 1)
    rows = [np.zeros(50, dtype=np.int64), np.arange(400) % 3]
    rows[1][390] = 3
    assert count_ngrams_dense(np.stack([np.pad(rows[0], (0, 350)), rows[1]]),
                              np.array([50, 400]), 1, 3) is None
    with pytest.raises(ValueError, match="sequence 1 contains symbol 3 at step 390"):
        ps.MarkovChain(order=1, num_symbols=3).fit(rows)
