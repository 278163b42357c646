"""Worker functions for tests/test_distributed.py, run in spawned processes (gloo, CPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def run(rank: int, world: int, port: int, fn_names: list[str], out_dir: str) -> None:
    """Join a gloo group on loopback, run each named function, save its results per rank."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {name: globals()[name]() for name in fn_names}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def spine() -> dict:
    """Collectives and sharded log_prob of the toy model."""
    from toy import IIDCategorical

    from probseq import distributed

    m = IIDCategorical(alpha=1.0).fit([[0, 1, 2, 2], [1, 1]])
    data = [[0, 1], [2, 2, 2], [1], [0, 0, 1, 2], [2]]
    total = distributed.all_reduce_sum({"r": torch.tensor([float(distributed.rank() + 1)])})
    t = torch.tensor([float(distributed.rank())])
    distributed.broadcast_tensors({"t": t})
    with distributed.local():
        local_lp = m.log_prob(data)
    return {
        "log_prob": m.log_prob(data),
        "steps": m.log_prob_steps(data),
        "few": m.log_prob([[0, 1], [2]]),  # N = W
        "one_shard_empty": m.log_prob([[0, 1, 1]]),
        "local": local_lp,
        "sum": total["r"],
        "broadcast": t,
    }


def _gru_data():
    from probseq.datasets import hmm_symbols

    params = ([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.8, 0.1, 0.1], [0.1, 0.2, 0.7]])
    train, _ = hmm_symbols(96, 40, *params, seed=10)
    test, _ = hmm_symbols(200, 40, *params, seed=11)
    return train, test


GRU_FIT = {"max_epochs": 8, "batch_size": 16, "learning_rate": 1e-2, "progress": False}


def gru() -> dict:
    """A data-parallel GRU fit (no seed given: the ranks must agree on one by themselves)."""
    from probseq import RecurrentModel

    train, test = _gru_data()
    m = RecurrentModel(cell="gru", hidden_size=16).fit(train, **GRU_FIT)
    return {"state": m._state_tensors(), "test_log_prob": m.log_prob(test)}


FEW_FIT = {"max_epochs": 2, "batch_size": 4, "learning_rate": 1e-2, "seed": 5,
           "patience": None, "progress": False}


def _few_data():
    """Two sequences (fewer than the ranks once one is held out) and one long series."""
    train, test = _gru_data()
    return [train[0], train[1]], torch.cat([train[i] for i in range(20)]), test[:5]


def gru_few() -> dict:
    """Data-parallel fits where some ranks have no sequence: two sequences (one trains),
    and one long series cut into training streams shared by the ranks."""
    from probseq import RecurrentModel

    two, series, test = _few_data()
    out = {}
    for name, data, extra in (("two", two, {}), ("one", series, {"window_length": 20})):
        m = RecurrentModel(cell="gru", hidden_size=8).fit(data, **FEW_FIT, **extra)
        out[name] = {"state": m._state_tensors(), "log_prob": m.log_prob(test),
                     "steps": m.history_["steps"], "valid": m.history_["valid"]}
    return out


def _dmm_data():
    from probseq.datasets import gaussian_hmm

    train, _ = gaussian_hmm(24, 20, seed=20)
    return train


DMM_FIT = {"max_epochs": 2, "batch_size": 6, "seed": 3, "progress": False}


def dmm() -> dict:
    """A data-parallel deep Markov model fit: the ranks must end identical."""
    from probseq import DeepMarkovModel

    m = DeepMarkovModel(latent_dim=2, hidden_dim=8, rnn_dim=8, num_particles=8)
    m.fit(_dmm_data(), **DMM_FIT)
    return {"state": m._state_tensors(), "log_prob": m.log_prob(_dmm_data()[:5])}


def _hmm_data():
    from probseq.datasets import hmm_symbols

    params = ([0.6, 0.3, 0.1], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
              [[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.0, 0.1, 0.3, 0.6]])
    seqs, _ = hmm_symbols(41, 60, *params, seed=30)
    return seqs


HMM_FIT = {"max_epochs": 12, "num_restarts": 2, "tol": 0.0, "seed": 4, "progress": False}


def hmm() -> dict:
    """Data-parallel Baum-Welch: statistics of each rank's shard, summed over ranks."""
    from probseq import HiddenMarkovModel

    m = HiddenMarkovModel(num_states=3, emission="categorical").fit(_hmm_data(), **HMM_FIT)
    return {"params": m.params, "history": m.history_}
