"""Data parallelism: two CPU processes (gloo on loopback) against one process."""

from __future__ import annotations

import socket

import dist_workers
import pytest
import torch
import torch.multiprocessing as mp
from toy import IIDCategorical

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKERS = ["spine", "hmm", "gru", "dmm"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """One launch of two processes runs every worker (process start-up dominates)."""
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(dist_workers.run, args=(2, _free_port(), WORKERS, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_sharded_log_prob_and_collectives(ranks):
    r0, r1 = (r["spine"] for r in ranks)
    m = IIDCategorical(alpha=1.0).fit([[0, 1, 2, 2], [1, 1]])
    data = [[0, 1], [2, 2, 2], [1], [0, 0, 1, 2], [2]]
    for r in (r0, r1):
        assert torch.equal(r["log_prob"], m.log_prob(data))
        assert torch.equal(r["steps"], m.log_prob_steps(data))
        assert torch.equal(r["few"], m.log_prob([[0, 1], [2]]))
        assert torch.equal(r["one_shard_empty"], m.log_prob([[0, 1, 1]]))
        assert torch.equal(r["local"], m.log_prob(data))
        assert r["sum"].item() == 3.0 and r["broadcast"].item() == 0.0


def test_data_parallel_gru_matches_single_process_fit(ranks):
    from probseq import RecurrentModel

    r0, r1 = (r["gru"] for r in ranks)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), f"ranks disagree on {k}"
    assert torch.equal(r0["test_log_prob"], r1["test_log_prob"])
    train, test = dist_workers._gru_data()
    single = RecurrentModel(cell="gru", hidden_size=16).fit(train, seed=0,
                                                            **dist_workers.GRU_FIT)
    steps = test.num_steps
    nats_dist = -float(r0["test_log_prob"].sum()) / steps
    nats_single = -float(single.log_prob(test).sum()) / steps
    # Different shards and batch compositions give different optimisation paths; both must
    # reach the same held-out quality within noise (about 0.005 nats/step here).
    assert abs(nats_dist - nats_single) < 0.02, (nats_dist, nats_single)


def test_data_parallel_deep_markov_ranks_agree(ranks):
    r0, r1 = (r["dmm"] for r in ranks)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), f"ranks disagree on {k}"
    assert torch.equal(r0["log_prob"], r1["log_prob"])
    assert torch.isfinite(r0["log_prob"]).all()


def test_distributed_em_equals_single_process_em(ranks):
    from probseq import HiddenMarkovModel

    r0, r1 = (r["hmm"] for r in ranks)
    single = HiddenMarkovModel(num_states=3, emission="categorical").fit(
        dist_workers._hmm_data(), **dist_workers.HMM_FIT)
    assert len(r0["history"]) == len(single.history_) == 12
    for name, value in single.params.items():
        assert torch.equal(r0["params"][name], r1["params"][name])
        torch.testing.assert_close(r0["params"][name], value, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(r0["history"]), torch.tensor(single.history_),
                               rtol=1e-12, atol=0)
