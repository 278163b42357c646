"""Train a character-level network on CPython's documentation text (``python_docs_text``).

The corpus is the fixed snapshot of CPython 3.11.7's help text that ships with probseq,
the same on every Python.

The recipe (``python -m probseq.recurrent.train_text --help``): the training text cut into
chunks of 256 characters, at ``--offsets`` evenly spaced offsets (overlapping chunks: more
distinct windows per epoch); the held-out text is scored in chunks of 256 characters, each
from the start input, as every model in the comparison is. A one-layer network (RNN, LSTM or
GRU) with a small character embedding and dropout before the output layer, Adam with a
cosine learning-rate schedule and gradient clipping, validation after every epoch (the best
epoch's weights are kept). It prints the validation and test bits per character, saves the
model with :meth:`~probseq.base.SequenceModel.save` (loadable by :func:`probseq.load`) and
writes a JSON summary beside it (command, time, best epoch, bits per character, Python
version, vocabulary), which is what :mod:`probseq.pretrained` ships.

Measured on the 2-core development machine (one torch thread each, two runs at a time; test
bits per character on the test chunks; the order-8 modified Kneser-Ney chain reaches 1.756):

- ``--hidden-size 512 --embedding-dim 64 --dropout 0.5 --offsets 4 --max-steps 1500`` (the
  shipped networks): LSTM 1.747 (23 min, best epoch 5 of 9), GRU 1.751 (23 min, epoch 4),
  vanilla RNN 1.953 (10 min, epoch 5). Validation NLL turns up after about five epochs of
  four offsets each: the corpus is small, and the networks overfit.
- the same with ``--hidden-size 768 --max-steps 1200``: LSTM 1.732 (34 min, epoch 4).
- ``--dropout 0.3 --max-steps 5500`` (LSTM 512): validation NLL 1.179 nats/char after 4
  epochs, then overfitting at a learning rate still high (stopped).
- the first recipe (LSTM 256, dropout 0.1, 18 epochs of one offset, 820 optimiser steps):
  1.882, underfitting.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

import probseq as ps


def _offset_chunks(corpus: ps.datasets.TextCorpus, length: int, offsets: int) -> ps.Sequences:
    """The training text cut into chunks of ``length`` at ``offsets`` evenly spaced offsets."""
    text = corpus.train
    pieces = []
    for k in range(offsets):
        start = k * length // offsets
        pieces += [text[i : i + length] for i in range(start, len(text) - 1, length)]
    return ps.Sequences.from_list(pieces, kind="discrete")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=4e-3)
    parser.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine",
                                                                     "plateau"])
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--offsets", type=int, default=1,
                        help="cut the training text into chunks at this many evenly spaced "
                             "offsets (more, overlapping training chunks)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimiser steps (default: epochs x steps per epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="text_lstm.pt")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    corpus = ps.datasets.python_docs_text()
    train = _offset_chunks(corpus, args.chunk, args.offsets)
    valid = corpus.chunks("valid", args.chunk)
    test = corpus.chunks("test", args.chunk)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    model = ps.RecurrentModel(
        cell=args.cell, hidden_size=args.hidden_size, num_layers=args.num_layers,
        embedding_dim=args.embedding_dim, dropout=args.dropout, num_symbols=corpus.num_symbols,
        device="cpu",
    )
    tic = time.perf_counter()
    model.fit(
        train, validation_data=valid, max_epochs=args.epochs,
        max_steps=args.max_steps or args.epochs * steps_per_epoch, batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
        weight_decay=args.weight_decay, patience=None, seed=args.seed, progress=True,
    )
    seconds = time.perf_counter() - tic
    bits = {}
    for name, data in (("valid", valid), ("test", test)):
        bits[name] = -float(model.log_prob(data).sum()) / data.num_steps / math.log(2)
    print(f"{args}\nfit {seconds:.0f} s, best epoch {model.best_epoch_}; valid "
          f"{bits['valid']:.4f} bits/char, test {bits['test']:.4f} bits/char")
    print("valid nats/char per epoch:", [round(v, 4) for v in model.history_["valid"]])
    model.save(args.out)
    summary = {
        "command": "python -m probseq.recurrent.train_text " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "fit_seconds": round(seconds),
        "torch_threads": args.threads,
        "best_epoch": model.best_epoch_,
        "valid_bits_per_char": round(bits["valid"], 4),
        "test_bits_per_char": round(bits["test"], 4),
        "python": platform.python_version(),
        "vocab": "".join(corpus.vocab),
    }
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"saved {args.out} and its summary {Path(args.out).with_suffix('.json')}")


if __name__ == "__main__":
    main()
