"""Built-in datasets and synthetic generators."""

import gzip
import hashlib
import sys
from importlib.resources import files

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


def test_shipped_help_text_is_the_python_3_11_7_snapshot_on_every_python():
    # The checksums are of the file as committed: the compressed bytes and the UTF-8 text
    # (the text's is also checked by python_docs_text on every load). The numbers are the
    # ones measured on Python 3.11.7 from pydoc_data.topics when the snapshot was taken.
    raw = (files("probseq.data_files") / datasets.PYTHON_DOCS_FILE).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == (
        "e1ab65ff04bca125ce8723e8beab9d44e3f7f098847674b4019fd7b1619ce4e5")
    text = gzip.decompress(raw).decode("utf-8")
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == datasets.PYTHON_DOCS_SHA256
    assert len(text) == 464_970 and len(set(text)) == 103
    assert text.startswith('The "assert" statement\n')
    c = datasets.python_docs_text()
    assert (len(c.train), len(c.valid), len(c.test)) == (371_976, 46_497, 46_497)
    assert c.decode(np.concatenate([c.train, c.valid, c.test])) == text
    assert c.vocab == tuple(sorted(set(text)))


@pytest.mark.skipif(sys.version_info[:3] != (3, 11, 7), reason="the snapshot's own Python")
def test_snapshot_equals_this_pythons_pydoc_topics():
    from pydoc_data.topics import topics

    c = datasets.python_docs_text()
    text = "".join(topics[k] for k in sorted(topics))
    assert c.decode(np.concatenate([c.train, c.valid, c.test])) == text


def test_damaged_snapshot_is_refused(monkeypatch):
    monkeypatch.setattr(datasets, "PYTHON_DOCS_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="is damaged: its sha256 is 37d06970"):
        datasets.python_docs_text()


def test_text_corpus_from_a_string_and_a_file_agree(tmp_path):
    text = "the cat sat on the mat.\nthe dog sat on the log.\n" * 10
    c = datasets.text_corpus(text)
    n = len(text)
    assert c.vocab == tuple(sorted(set(text)))
    assert (len(c.train), len(c.valid), len(c.test)) == (int(0.8 * n), int(0.9 * n)
                                                          - int(0.8 * n), n - int(0.9 * n))
    assert c.decode(np.concatenate([c.train, c.valid, c.test])) == text
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))  # line ends kept as written
    with_crlf = text.replace("\n", "\r\n")
    for from_file in (datasets.text_corpus(path=path), datasets.text_corpus(path=str(path)),
                      datasets.text_corpus(path)):
        assert from_file.decode(np.concatenate([from_file.train, from_file.valid,
                                                from_file.test])) == with_crlf
        assert "\r" in from_file.vocab
    other = datasets.text_corpus(text, split=(0.5, 0.25, 0.25),
                                 vocab="abcdefghijklmnopqrstuvwxyz .\n")
    assert other.num_symbols == 29 and len(other.train) == n // 2
    assert other.encode("cat").tolist() == [2, 0, 19]
    seqs = other.chunks("train", 64)
    assert seqs.num_steps == n // 2 and int(seqs.lengths.max()) == 64


def test_text_corpus_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="exactly one of text"):
        datasets.text_corpus()
    with pytest.raises(ValueError, match="exactly one of text"):
        datasets.text_corpus("abc", path=tmp_path / "x.txt")
    with pytest.raises(ValueError, match="cannot read file .*missing.txt"):
        datasets.text_corpus(path=tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 10)
    with pytest.raises(ValueError, match="cannot read file .*latin1.txt.*utf-8"):
        datasets.text_corpus(path=bad)
    assert datasets.text_corpus(path=bad, encoding="latin-1").num_symbols == 5
    with pytest.raises(ValueError, match="too few to give the train, validation and test"):
        datasets.text_corpus("abcd")
    with pytest.raises(ValueError, match="too few"):
        datasets.text_corpus(path=_empty(tmp_path))
    for split in [(0.8, 0.2), (0.8, 0.3, 0.1), (1.0, 0.0, 0.0), (0.9, -0.1, 0.2)]:
        with pytest.raises(ValueError, match="split must be three fractions"):
            datasets.text_corpus("abc" * 50, split=split)
    with pytest.raises(ValueError, match=r"the text: characters \['c'\] are not in the vocab"):
        datasets.text_corpus("abc" * 50, vocab="ab")
    with pytest.raises(ValueError, match="vocab repeats a character"):
        datasets.text_corpus("abc" * 50, vocab="abca")
    with pytest.raises(ValueError, match="must be a str"):
        datasets.text_corpus(b"abc" * 50)


def _empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    return path


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
