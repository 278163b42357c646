"""Built-in data: real series bundled with statsmodels, CPython's help text (a fixed
snapshot shipped with probseq), a corpus from any text (:func:`text_corpus`), and
synthetic generators whose true models are known.

The synthetic generators use numpy only, never probseq's own models, so that they can serve
as independent references in tests.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probseq.data import Sequences

__all__ = [
    "nile",
    "sunspots",
    "python_docs_text",
    "text_corpus",
    "TextCorpus",
    "encode_text",
    "ar_process",
    "markov_symbols",
    "hmm_symbols",
    "gaussian_hmm",
    "copy_task",
    "co2",
    "co2_monthly",
    "gdp_growth",
    "DATASETS",
]


def nile() -> pd.Series:
    """Annual flow of the Nile at Aswan, 1871-1970 (10^8 m^3), 100 values.

    The classic local-level example of Durbin & Koopman; bundled with statsmodels.
    """
    from statsmodels.datasets import nile as _nile

    df = _nile.load_pandas().data
    return pd.Series(
        df["volume"].to_numpy(np.float64), index=df["year"].astype(int), name="nile"
    ).rename_axis("year")


def sunspots() -> pd.Series:
    """Yearly mean sunspot numbers, 1700-2008, 309 values; bundled with statsmodels."""
    from statsmodels.datasets import sunspots as _sun

    df = _sun.load_pandas().data
    return pd.Series(
        df["SUNACTIVITY"].to_numpy(np.float64), index=df["YEAR"].astype(int), name="sunspots"
    ).rename_axis("year")


@dataclass(frozen=True)
class TextCorpus:
    """A character-level corpus with a fixed vocabulary and a contiguous train/valid/test split.

    Attributes:
        vocab: the V characters; symbol ``i`` is ``vocab[i]``.
        train, valid, test: ``[T]`` int64 symbol arrays (80% / 10% / 10% of the text, in order).
    """

    vocab: tuple[str, ...]
    train: np.ndarray = field(repr=False)
    valid: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)

    @property
    def num_symbols(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Characters to symbols ``[T]``; an unknown character raises ``ValueError``."""
        index = {c: i for i, c in enumerate(self.vocab)}
        try:
            return np.array([index[c] for c in text], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, symbols) -> str:
        """Symbols ``[T]`` (array, tensor or list) back to a string."""
        return "".join(self.vocab[int(s)] for s in np.asarray(symbols).reshape(-1))

    def chunks(self, split: str, length: int, max_chunks: int | None = None) -> Sequences:
        """Cut a split into consecutive non-overlapping sequences of ``length`` characters.

        The last, shorter piece is kept, so the chunks cover the split exactly.
        """
        arr = getattr(self, split)
        pieces = [arr[i : i + length] for i in range(0, len(arr), length)]
        if max_chunks is not None:
            pieces = pieces[:max_chunks]
        return Sequences.from_list(pieces, kind="discrete")


def encode_text(text: str, vocab: str | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Encode a string as symbols over ``vocab`` (sorted characters of ``text`` by default)."""
    chars = tuple(sorted(set(text))) if vocab is None else tuple(vocab)
    index = {c: i for i, c in enumerate(chars)}
    missing = set(text) - set(index)
    if missing:
        raise ValueError(f"characters {sorted(missing)[:5]} are not in the vocabulary")
    return np.array([index[c] for c in text], dtype=np.int64), chars


#: the shipped snapshot of CPython 3.11.7's help text (see :mod:`probseq.data_files`) and the
#: sha256 of its UTF-8 characters; :func:`python_docs_text` checks it on every load.
PYTHON_DOCS_FILE = "python_docs_3.11.7.txt.gz"
PYTHON_DOCS_SHA256 = "37d06970fc926e60c16dff401e441b84752446a36b6b64516c229fdec77e992c"


def python_docs_text() -> TextCorpus:
    """The English help text of CPython 3.11.7 (``pydoc_data.topics``), as a fixed corpus.

    A snapshot ships with probseq (:data:`PYTHON_DOCS_FILE`, under the Python Software
    Foundation License), so the characters, the vocabulary and the split are the same on
    every Python: 464,970 characters (the topics joined in sorted order of their names), a
    vocabulary of the V = 103 characters that occur, and the contiguous split of
    :func:`text_corpus`: the first 80% train (371,976), the next 10% validation (46,497),
    the last 10% test (46,497).

    Raises:
        ValueError: the shipped file is not the snapshot (its sha256 differs).
    """
    import gzip
    import hashlib
    from importlib.resources import files

    raw = gzip.decompress((files("probseq.data_files") / PYTHON_DOCS_FILE).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != PYTHON_DOCS_SHA256:
        raise ValueError(f"probseq/data_files/{PYTHON_DOCS_FILE} is damaged: its sha256 is "
                         f"{digest}, not {PYTHON_DOCS_SHA256}; reinstall probseq")
    return text_corpus(raw.decode("utf-8"))


def text_corpus(
    text: str | os.PathLike | None = None,
    *,
    path: str | os.PathLike | None = None,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    vocab: str | None = None,
    encoding: str = "utf-8",
) -> TextCorpus:
    """A character-level corpus from any text: the object :func:`python_docs_text` returns.

    Give the text itself (a ``str``) or a file (``path=``, or a :class:`pathlib.Path` as the
    first argument); a ``str`` first argument is always the text, never a file name. The
    text is cut, in order, into train, validation and test parts of the fractions ``split``
    (boundaries at ``int(split[0] * T)`` and ``int((split[0] + split[1]) * T)``).

    Args:
        text: the text, or a :class:`os.PathLike` naming a file.
        path: a text file to read instead (``str`` or path).
        split: the train, validation and test fractions, each > 0, summing to 1.
        vocab: the V characters, in symbol order (default: the sorted characters of the
            text); a character of the text outside it raises ``ValueError``.
        encoding: the file's encoding.

    Returns:
        A :class:`TextCorpus`; ``corpus.chunks("train", 256)`` gives ``[N, T]`` sequences.

    Raises:
        ValueError: neither or both of ``text`` and ``path``, an unreadable or undecodable
            file, a bad ``split``, a text too short to give every part a character, or a
            character outside ``vocab``.

    Example:
        >>> corpus = text_corpus("abracadabra " * 20)
        >>> corpus.vocab, len(corpus.train), len(corpus.valid), len(corpus.test)
        ((' ', 'a', 'b', 'c', 'd', 'r'), 192, 24, 24)
    """
    if isinstance(text, os.PathLike):
        text, path = (None, text) if path is None else (text, path)
    if (text is None) == (path is None):
        raise ValueError("text_corpus needs exactly one of text (a str) and path (a file)")
    source = "the text"
    if path is not None:
        source = f"file {os.fspath(path)!r}"
        try:
            with open(path, encoding=encoding, newline="") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read {source}: {err}") from None
    if not isinstance(text, str):
        raise ValueError(f"text must be a str (or a path), not {type(text).__name__}")
    fractions = tuple(float(f) for f in split)
    if (len(fractions) != 3 or not all(0.0 < f < 1.0 for f in fractions)
            or abs(math.fsum(fractions) - 1.0) > 1e-9):
        raise ValueError(f"split must be three fractions > 0 summing to 1, not {split!r}")
    n = len(text)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    if not 0 < a < b < n:
        raise ValueError(f"{source} has {n} characters: too few to give the train, validation "
                         f"and test parts of split {split!r} a character each")
    if vocab is not None and len(set(vocab)) != len(vocab):
        raise ValueError("vocab repeats a character; give each character once")
    try:
        symbols, chars = encode_text(text, vocab)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return TextCorpus(chars, symbols[:a], symbols[a:b], symbols[b:])


# ------------------------------------------------------------------ synthetic generators
def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def ar_process(
    num_sequences: int,
    length: int,
    coef=(0.6, -0.2),
    intercept: float = 0.0,
    noise_var: float = 1.0,
    seed: int | None = 0,
) -> Sequences:
    """Gaussian AR(p) series started from their stationary distribution (a long burn-in).

    Returns:
        ``[N, T]`` float64 sequences.
    """
    rng = _rng(seed)
    coef = np.asarray(coef, dtype=np.float64)
    p = len(coef)
    burn = 500
    x = np.zeros((num_sequences, burn + length))
    eps = rng.normal(0.0, np.sqrt(noise_var), size=x.shape)
    for t in range(p, x.shape[1]):
        x[:, t] = intercept + x[:, t - p : t][:, ::-1] @ coef + eps[:, t]
    return Sequences.from_padded(x[:, burn:])


def markov_symbols(
    num_sequences: int,
    length: int,
    transition,
    initial=None,
    seed: int | None = 0,
) -> Sequences:
    """First-order Markov chain samples; ``transition [V, V]`` rows are "from" states."""
    trans = np.asarray(transition, dtype=np.float64)
    v = trans.shape[0]
    init = np.full(v, 1.0 / v) if initial is None else np.asarray(initial, dtype=np.float64)
    x = _hmm_states(_rng(seed), num_sequences, length, init, trans)
    return Sequences.from_padded(x)


def _hmm_states(rng, num_sequences, length, initial, transition) -> np.ndarray:
    k = len(initial)
    z = np.zeros((num_sequences, length), dtype=np.int64)
    z[:, 0] = rng.choice(k, size=num_sequences, p=initial)
    cum = np.cumsum(transition, axis=1)
    for t in range(1, length):
        u = rng.random(num_sequences)
        z[:, t] = np.minimum((u[:, None] > cum[z[:, t - 1]]).sum(1), k - 1)
    return z


def hmm_symbols(
    num_sequences: int,
    length: int,
    initial,
    transition,
    emission,
    seed: int | None = 0,
) -> tuple[Sequences, np.ndarray]:
    """Categorical HMM samples.

    Args:
        initial: ``[K]``; transition: ``[K, K]``; emission: ``[K, V]``.

    Returns:
        ``(observations [N, T], states [N, T])``.
    """
    rng = _rng(seed)
    initial, transition, emission = (np.asarray(a, np.float64) for a in (initial, transition,
                                                                         emission))
    z = _hmm_states(rng, num_sequences, length, initial, transition)
    cum = np.cumsum(emission, axis=1)
    u = rng.random(z.shape)
    x = np.minimum((u[..., None] > cum[z]).sum(-1), emission.shape[1] - 1)
    return Sequences.from_padded(x.astype(np.int64)), z


def gaussian_hmm(
    num_sequences: int,
    length: int,
    initial=(0.5, 0.5),
    transition=((0.95, 0.05), (0.1, 0.9)),
    means=(-1.0, 2.0),
    stds=(0.5, 1.0),
    seed: int | None = 0,
) -> tuple[Sequences, np.ndarray]:
    """Univariate Gaussian HMM samples (regime-switching levels).

    Returns:
        ``(observations [N, T] float64, states [N, T])``.
    """
    rng = _rng(seed)
    z = _hmm_states(rng, num_sequences, length, np.asarray(initial, np.float64),
                    np.asarray(transition, np.float64))
    x = np.asarray(means)[z] + np.asarray(stds)[z] * rng.standard_normal(z.shape)
    return Sequences.from_padded(x), z


def copy_task(
    num_sequences: int,
    lag: int,
    num_symbols: int = 4,
    seed: int | None = 0,
) -> Sequences:
    """A long-range memory task: remember the first symbol across ``lag`` steps of noise.

    Each sequence is ``[s, 0, 0, ..., 0, s]`` of length ``lag + 2``: the first symbol ``s``
    is uniform over ``1..num_symbols-1``, followed by ``lag`` blanks (symbol 0) and ``s``
    again. Only a model that carries ``s`` across the lag predicts the last symbol; the
    best memoryless prediction costs ``log(num_symbols - 1)`` nats there.
    """
    if num_symbols < 3:
        raise ValueError("copy_task needs num_symbols >= 3 (a blank and at least two symbols)")
    rng = _rng(seed)
    s = rng.integers(1, num_symbols, size=num_sequences)
    x = np.zeros((num_sequences, lag + 2), dtype=np.int64)
    x[:, 0] = s
    x[:, -1] = s
    return Sequences.from_padded(x)


#: names accepted by ``python -m probseq compare --dataset``.
DATASETS = ("nile", "sunspots", "text", "regimes", "gdp", "co2", "co2_monthly")


def co2() -> pd.Series:
    """Weekly atmospheric CO2 at Mauna Loa, March 1958 - December 2001 (ppm), 2,284 values
    with 59 missing (NaN); bundled with statsmodels.

    A real series with gaps: models with ``supports_missing`` marginalise them exactly.
    """
    from statsmodels.datasets import co2 as _co2

    df = _co2.load_pandas().data
    return pd.Series(df["co2"].to_numpy(np.float64), index=df.index, name="co2").rename_axis(
        "week"
    )


def co2_monthly() -> pd.Series:
    """Monthly atmospheric CO2 at Mauna Loa, March 1958 - December 2001 (ppm), 526 values
    with 5 missing (NaN): the monthly means of the weekly :func:`co2` (a month without any
    weekly value is missing); the index holds the months' first days.

    A seasonal series (period 12) with a trend and gaps, the classic data of structural
    time-series models.
    """
    weekly = co2()
    monthly = weekly.resample("MS").mean()
    return monthly.rename("co2").rename_axis("month")


def gdp_growth() -> pd.Series:
    """Quarterly growth of US real GDP, 1959Q2-2009Q3, in percent (202 values).

    ``100 * log(realgdp_t / realgdp_(t-1))`` of statsmodels' bundled ``macrodata`` (real GDP
    in billions of chained 2005 dollars, seasonally adjusted); the index holds the quarters.
    The classic data of Markov-switching models of the business cycle.
    """
    from statsmodels.datasets import macrodata

    df = macrodata.load_pandas().data
    gdp = df["realgdp"].to_numpy(np.float64)
    index = pd.PeriodIndex.from_fields(year=df["year"].astype(int).to_numpy(),
                                       quarter=df["quarter"].astype(int).to_numpy(), freq="Q")
    growth = 100.0 * np.diff(np.log(gdp))
    return pd.Series(growth, index=index[1:], name="gdp_growth").rename_axis("quarter")
