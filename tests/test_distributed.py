"""Data parallelism: three CPU processes (gloo on loopback) against one process."""

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


WORKERS = ["spine", "hmm", "gru", "gru_few", "dmm"]
WORLD = 3


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """One launch of three processes runs every worker (process start-up dominates); three
    ranks so that some shards are empty (two sequences, one long series)."""
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(dist_workers.run, args=(WORLD, _free_port(), WORKERS, str(out)), nprocs=WORLD,
             join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_sharded_log_prob_and_collectives(ranks):
    m = IIDCategorical(alpha=1.0).fit([[0, 1, 2, 2], [1, 1]])
    data = [[0, 1], [2, 2, 2], [1], [0, 0, 1, 2], [2]]
    for r in (r["spine"] for r in ranks):
        assert torch.equal(r["log_prob"], m.log_prob(data))
        assert torch.equal(r["steps"], m.log_prob_steps(data))
        assert torch.equal(r["few"], m.log_prob([[0, 1], [2]]))
        assert torch.equal(r["one_shard_empty"], m.log_prob([[0, 1, 1]]))
        assert torch.equal(r["local"], m.log_prob(data))
        assert r["sum"].item() == 6.0 and r["broadcast"].item() == 0.0


def test_data_parallel_gru_matches_single_process_fit(ranks):
    from probseq import RecurrentModel

    r0, *others = (r["gru"] for r in ranks)
    for r in others:
        for k, v in r0["state"].items():
            assert torch.equal(v, r["state"][k]), f"ranks disagree on {k}"
        assert torch.equal(r0["test_log_prob"], r["test_log_prob"])
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
    r0, *others = (r["dmm"] for r in ranks)
    for r in others:
        for k, v in r0["state"].items():
            assert torch.equal(v, r["state"][k]), f"ranks disagree on {k}"
        assert torch.equal(r0["log_prob"], r["log_prob"])
    assert torch.isfinite(r0["log_prob"]).all()


def test_distributed_em_equals_single_process_em(ranks):
    from probseq import HiddenMarkovModel

    r0, r1, r2 = (r["hmm"] for r in ranks)
    single = HiddenMarkovModel(num_states=3, emission="categorical").fit(
        dist_workers._hmm_data(), **dist_workers.HMM_FIT)
    assert len(r0["history"]) == len(single.history_) == 12
    for name, value in single.params.items():
        assert torch.equal(r0["params"][name], r1["params"][name])
        assert torch.equal(r0["params"][name], r2["params"][name])
        torch.testing.assert_close(r0["params"][name], value, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(r0["history"]), torch.tensor(single.history_),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["two", "one"])
def test_data_parallel_fit_with_empty_shards_equals_one_process(ranks, name):
    """Two sequences (one held out: ranks 1 and 2 get no training sequence) and one long
    series (cut into 9 streams of training windows, 3 per rank). Each window's gradient is
    the sum of the ranks' gradients over the global number of steps, so three ranks with
    batch_size=4 take the steps of one process with batch_size=12, up to float32 summation
    order (agreement to ~1e-6 after a few dozen steps; tolerance 1e-4)."""
    from probseq import RecurrentModel

    results = [r["gru_few"][name] for r in ranks]
    for r in results[1:]:
        for k, v in results[0]["state"].items():
            assert torch.equal(v, r["state"][k]), f"ranks disagree on {k}"
    two, series, test = dist_workers._few_data()
    data, extra = (two, {}) if name == "two" else (series, {"window_length": 20})
    single = RecurrentModel(cell="gru", hidden_size=8).fit(
        data, **{**dist_workers.FEW_FIT, "batch_size": 12}, **extra)
    assert results[0]["steps"] == single.history_["steps"]
    for k, v in single._state_tensors().items():
        torch.testing.assert_close(results[0]["state"][k], v, rtol=0, atol=1e-4)
    torch.testing.assert_close(results[0]["log_prob"], single.log_prob(test), rtol=1e-4,
                               atol=0)
