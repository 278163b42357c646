"""The compiled dense n-gram count against the NumPy key route it replaces."""

import numpy as np
import pytest

import probseq as ps
from probseq.markov import counting
from probseq.markov.compiled import count_ngrams_dense


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_dense_count_equals_the_key_route(order):
    rng = np.random.default_rng(order)
    v = 5
    lengths = np.array([1, 2, 3, 40, 7, 1, 25], dtype=np.int64)  # some shorter than order
    values = rng.integers(0, v, size=(lengths.size, lengths.max()))
    keys = counting.ngram_keys(values, lengths, order, v)
    want = counting.count_keys(keys, (v + 1) ** (order + 1))
    got = count_ngrams_dense(values, lengths, order, v)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[1].sum() == lengths.sum()


def test_fit_by_either_route_gives_the_same_chain(monkeypatch):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 4, size=n) for n in (50, 3, 120)]
    dense = ps.MarkovChain(order=2, num_symbols=4).fit(seqs)
    monkeypatch.setattr(counting, "dense_key_space", lambda space, n: False)
    keyed = ps.MarkovChain(order=2, num_symbols=4).fit(seqs)
    for name in ("ngram_keys", "ngram_counts", "ctx_keys", "ctx_totals"):
        np.testing.assert_array_equal(dense._tables[2][name], keyed._tables[2][name])
    np.testing.assert_array_equal(dense.log_prob(seqs).numpy(), keyed.log_prob(seqs).numpy())
