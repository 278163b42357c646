"""Networks trained by a script of this repository and shipped with the package.

Training a character-level network well takes longer than a notebook should (10 to 35
minutes per network on one CPU thread), so the networks that notebook 02 compares
with the Markov chains were trained once by :mod:`probseq.recurrent.train_text` and their
weights ship here, each with a summary of how it was made (the exact command line, the
training time, the held-out bits per character it reached, the Python version and the
vocabulary of the corpus it was trained on). They load with :func:`probseq.load` like any
saved model.

The corpus, :func:`probseq.datasets.python_docs_text`, is a fixed snapshot of CPython
3.11.7's help text shipped with probseq, the same on every Python, so the networks score the
held-out text with their summaries' bits per character everywhere. :func:`text_network`
still compares a network's vocabulary with the corpus's and refuses a mismatch (a corpus
changed without retraining) rather than scoring text with the wrong symbols.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probseq.base import load
from probseq.recurrent import RecurrentModel

__all__ = ["TEXT_NETWORKS", "text_network", "text_network_summary"]

_HERE = Path(__file__).resolve().parent

#: the cells of the shipped character-level networks (``text_<cell>.pt`` here).
TEXT_NETWORKS = tuple(sorted(p.stem.removeprefix("text_") for p in _HERE.glob("text_*.pt")))


def _path(cell: str) -> Path:
    if cell not in TEXT_NETWORKS:
        raise ValueError(f"no shipped text network for cell {cell!r}; available: "
                         f"{', '.join(TEXT_NETWORKS) or 'none'}")
    return _HERE / f"text_{cell}.pt"


def text_network_summary(cell: str) -> dict[str, Any]:
    """How the shipped network of ``cell`` was trained.

    Args:
        cell: one of :data:`TEXT_NETWORKS` (``"lstm"``, ...).

    Returns:
        A dict with ``command`` (the training command line), ``fit_seconds``,
        ``torch_threads``, ``best_epoch``, ``valid_bits_per_char`` and
        ``test_bits_per_char`` (held-out chunks of 256 characters, each scored from its
        start), ``python`` (the version it was trained with) and ``vocab``.
    """
    return json.loads(_path(cell).with_suffix(".json").read_text())


def text_network(cell: str = "lstm") -> RecurrentModel:
    """The shipped character-level network of ``cell``, fitted to
    :func:`probseq.datasets.python_docs_text`'s training split.

    Args:
        cell: one of :data:`TEXT_NETWORKS` (default ``"lstm"``).

    Returns:
        A fitted :class:`~probseq.RecurrentModel` over the corpus's V symbols.

    Raises:
        ValueError: no network was shipped for ``cell``, or the corpus has another
            vocabulary than the one the network was trained on.
    """
    from probseq.datasets import python_docs_text

    path = _path(cell)
    summary = text_network_summary(cell)
    vocab = summary["vocab"]
    current = "".join(python_docs_text().vocab)
    if vocab != current:
        raise ValueError(
            f"the shipped {cell} network was trained on a corpus of {len(vocab)} characters "
            f"that differ from python_docs_text()'s {len(current)}: retrain it with "
            "python -m probseq.recurrent.train_text")
    model = load(path)
    if not isinstance(model, RecurrentModel):
        raise ValueError(f"{path} does not hold a RecurrentModel")
    return model
