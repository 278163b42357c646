"""Built-in datasets and synthetic generators."""

import numpy as np
import pytest
import statsmodels.api as sm

from probseq import datasets


def test_real_series_match_statsmodels():
    nile = datasets.nile()
    assert len(nile) == 100 and nile.index[0] == 1871 and nile.dtype == np.float64
    np.testing.assert_array_equal(nile.to_numpy(), sm.datasets.nile.load_pandas().data["volume"])
    sun = datasets.sunspots()
    assert len(sun) == 309 and sun.index[-1] == 2008


def test_python_docs_text_split_and_round_trip():
    c = datasets.python_docs_text()
    n = len(c.train) + len(c.valid) + len(c.test)
    assert n > 100_000 and abs(len(c.train) / n - 0.8) < 1e-3
    assert 50 < c.num_symbols < 200
    assert all(a.dtype == np.int64 and a.min() >= 0 and a.max() < c.num_symbols
               for a in (c.train, c.valid, c.test))
    text = c.decode(c.test[:200])
    np.testing.assert_array_equal(c.encode(text), c.test[:200])
    chunks = c.chunks("valid", 256)
    assert chunks.num_steps == len(c.valid) and int(chunks.lengths.max()) == 256
    with pytest.raises(ValueError, match="not in the vocabulary"):
        c.encode("\x00")


def test_ar_process_moments():
    x = datasets.ar_process(200, 400, coef=(0.5,), intercept=1.0, noise_var=1.0, seed=1)
    v = x.values.numpy()
    assert abs(v.mean() - 2.0) < 0.05  # mean c / (1 - phi)
    assert abs(v.var() - 1 / (1 - 0.25)) < 0.05
    lag1 = np.corrcoef(v[:, 1:].ravel(), v[:, :-1].ravel())[0, 1]
    assert abs(lag1 - 0.5) < 0.02


def test_markov_and_hmm_generators_frequencies():
    trans = np.array([[0.9, 0.1], [0.3, 0.7]])
    s = datasets.markov_symbols(500, 200, trans, seed=2).values.numpy()
    prev, nxt = s[:, :-1].ravel(), s[:, 1:].ravel()
    est = np.array([[np.mean(nxt[prev == i] == j) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(est, trans, atol=0.01)
    x, z = datasets.hmm_symbols(300, 100, [1.0, 0.0], [[0.5, 0.5], [0.5, 0.5]],
                                [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], seed=3)
    xv = x.values.numpy()
    assert (xv[z == 0] == 0).all() and (xv[z == 1] > 0).all() and (z[:, 0] == 0).all()


def test_copy_task_layout():
    x = datasets.copy_task(50, lag=10, num_symbols=4, seed=0).values.numpy()
    assert x.shape == (50, 12)
    assert (x[:, 0] == x[:, -1]).all() and (x[:, 1:-1] == 0).all() and (x[:, 0] >= 1).all()
    with pytest.raises(ValueError):
        datasets.copy_task(5, 3, num_symbols=2)
