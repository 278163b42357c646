"""The compiled forward log-likelihood (:func:`probseq.hmm.compiled.log_prob`): its parallel
route against its serial route, and both against the per-step normalised torch recursion
and hmmlearn, on ragged batches (issue 28)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hmmlearn import hmm

from probseq import HiddenMarkovModel, Sequences
from probseq.hmm import compiled, inference, kernels

F64 = torch.float64


def _model(k: int, v: int, seed: int, sticky: float = 0.0) -> HiddenMarkovModel:
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.ones(k), size=k) + sticky * np.eye(k)
    return HiddenMarkovModel.from_params(initial=rng.dirichlet(np.ones(k)),
                                         transition=a / a.sum(1, keepdims=True),
                                         emission=rng.dirichlet(np.full(v, 0.5), size=k))


def _ragged(v: int, lengths: list[int], seed: int) -> Sequences:
    g = torch.Generator().manual_seed(seed)
    return Sequences.from_list([torch.randint(v, (n,), generator=g) for n in lengths])


def _flat_args(model: HiddenMarkovModel, seqs: Sequences):
    p = model.params
    scaled = model._scaled(p, seqs)
    b, m, index, starts = scaled.flat()
    return (p["initial"].numpy(), p["transition"].numpy(), b, m, index, starts,
            scaled.lengths)


# Lengths in no order, with ties, a length 1, lengths below, at and above the block of 16,
# and one long row, so that threads get rows of very different cost.
LENGTHS = [90, 1, 37, 16, 90, 17, 64, 2000, 15, 33, 1, 250]


@pytest.mark.parametrize("k,v", [(2, 3), (4, 5), (16, 32)])
def test_parallel_equals_serial_on_ragged_batch(k, v):
    model = _model(k, v, seed=k)
    args = _flat_args(model, _ragged(v, LENGTHS, seed=k))
    serial, ok_s = compiled.log_prob(*args, block=kernels.BLOCK, min_mass=kernels.MIN_MASS,
                                     parallel=False)
    par, ok_p = compiled.log_prob(*args, block=kernels.BLOCK, min_mass=kernels.MIN_MASS,
                                  parallel=True)
    assert ok_s.all() and ok_p.all()
    # Each row is the same sequential loop whichever thread runs it: equal bit for bit.
    np.testing.assert_array_equal(par, serial)


@pytest.mark.parametrize("sticky", [0.0, 50.0])
def test_compiled_log_prob_matches_per_step_recursion_and_hmmlearn(sticky):
    model = _model(4, 5, seed=3, sticky=sticky)
    seqs = _ragged(5, LENGTHS, seed=4)
    p = model.params
    ref = inference.hmm_filter(p["initial"], p["transition"], model._log_lik(p, seqs),
                               seqs.lengths, 0, filtered=False)[0].sum(-1)
    args = _flat_args(model, seqs)
    for parallel in (False, True):
        lp, ok = compiled.log_prob(*args, block=kernels.BLOCK, min_mass=kernels.MIN_MASS,
                                   parallel=parallel)
        assert ok.all()
        torch.testing.assert_close(torch.from_numpy(lp), ref, rtol=1e-12, atol=1e-12)
    # Through the model (the cost model sends K = 4 to the compiled loop).
    assert inference._use_compiled(np.asarray(LENGTHS), 4)
    lp = model.log_prob(seqs)
    torch.testing.assert_close(lp, ref, rtol=1e-12, atol=1e-12)
    ref_hl = hmm.CategoricalHMM(4, implementation="scaling")
    ref_hl.n_features = 5
    ref_hl.startprob_, ref_hl.transmat_, ref_hl.emissionprob_ = (
        p["initial"].numpy(), p["transition"].numpy(), p["emission"].numpy())
    for i, x in enumerate(seqs.to_list()):
        assert float(lp[i]) == pytest.approx(ref_hl.score(x.numpy()[:, None]), rel=1e-11)


def test_guard_refuses_rows_in_both_routes_and_model_recomputes_them():
    # Alternating symbols under two sticky states that nearly never emit the other's symbol:
    # a block of 16 steps has mass ~1e-240, below the guard; that row must be refused by
    # the serial and the parallel loop alike, and the model's answer is still exact.
    eps = 1e-30
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[1 - eps, eps], [eps, 1 - eps]],
        emission=[[1 - eps, eps], [eps, 1 - eps]])
    rows = [np.zeros(50, dtype=np.int64), np.arange(40) % 2, np.zeros(3000, dtype=np.int64)]
    seqs = Sequences.from_list(rows)
    args = _flat_args(model, seqs)
    for parallel in (False, True):
        _, ok = compiled.log_prob(*args, block=kernels.BLOCK, min_mass=kernels.MIN_MASS,
                                  parallel=parallel)
        assert ok.tolist() == [True, False, True]
    p = model.params
    ref = inference.hmm_filter(p["initial"], p["transition"], model._log_lik(p, seqs),
                               seqs.lengths, 0, filtered=False)[0].sum(-1)
    lp = model.log_prob(seqs)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, ref, rtol=1e-12, atol=0)


def test_impossible_sequence_is_minus_inf_in_parallel_batch():
    # A symbol no state emits makes its row impossible: refused by the compiled loop (mass
    # 0), recomputed as -inf; the other rows are untouched.
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]],
        emission=[[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(2, (n,), generator=g) for n in (12000, 9000, 30)]
    rows[1][4000] = 2
    seqs = Sequences.from_list(rows)
    lp = model.log_prob(seqs)
    assert lp[1] == -torch.inf
    alone = torch.stack([model.log_prob(Sequences.from_list([r]))[0] for r in (rows[0],
                                                                                rows[2])])
    torch.testing.assert_close(lp[[0, 2]], alone, rtol=0, atol=0)


def test_flushing_mode_matches_per_step_recursion():
    # Transition probabilities of 1e-300 make the kernels flush tiny values; the result is
    # still the exact recursion's (to rounding) in both routes.
    a = np.array([[1 - 1e-300, 1e-300, 0.0], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    model = HiddenMarkovModel.from_params(
        initial=[0.2, 0.3, 0.5], transition=a,
        emission=[[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    seqs = _ragged(2, [700, 3, 129, 64], seed=7)
    p = model.params
    scaled = model._scaled(p, seqs)
    assert kernels.needs_flush(p["initial"].numpy(), p["transition"].numpy(),
                               scaled.min_positive())
    ref = inference.hmm_filter(p["initial"], p["transition"], model._log_lik(p, seqs),
                               seqs.lengths, 0, filtered=False)[0].sum(-1)
    torch.testing.assert_close(model.log_prob(seqs), ref, rtol=1e-12, atol=1e-12)


def test_forward_backward_parallel_equals_serial_and_reference():
    # Enough steps for several runs of rows (each with its own transition counts): the
    # parallel loop equals the serial one bit for bit (the runs depend on the lengths only),
    # and the expected statistics match the per-step torch recursion.
    model = _model(4, 5, seed=11)
    lengths = LENGTHS * 12
    seqs = _ragged(5, lengths, seed=12)
    p = model.params
    scaled = model._scaled(p, seqs)
    b, _, index, _, _ = scaled.row_major()
    bounds = compiled.row_chunks(scaled.lengths)
    assert bounds.shape[0] > 2  # several runs
    assert bounds[0] == 0 and bounds[-1] == len(lengths) and (np.diff(bounds) > 0).all()
    args = (p["initial"].numpy(), p["transition"].numpy(), b, index, scaled.lengths)
    serial = compiled.forward_backward(*args, parallel=False)
    par = compiled.forward_backward(*args, parallel=True)
    for key in ("post", "log_c", "xi", "ok"):
        np.testing.assert_array_equal(par[key], serial[key])
    ref = inference.hmm_posteriors(p["initial"], p["transition"], model._log_lik(p, seqs),
                                   seqs.lengths, 0)
    torch.testing.assert_close(torch.from_numpy(serial["xi"]), ref["transition_counts"],
                               rtol=1e-11, atol=1e-11)
    stats = model.expected_stats(seqs, p)
    torch.testing.assert_close(stats["transition_counts"], ref["transition_counts"],
                               rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(stats["log_lik"], ref["log_prob"].sum(), rtol=1e-12, atol=0)


def test_parallel_loops_use_the_workqueue_layer():
    # The OpenMP layer's spinning threads slowed later calls tenfold on two cores; unless
    # the user chose a layer, probseq's parallel loops run on workqueue.
    import os

    import numba

    if "NUMBA_THREADING_LAYER" in os.environ:
        pytest.skip("the user chose a threading layer")
    model = _model(2, 3, seed=1)
    compiled.log_prob(*_flat_args(model, _ragged(3, LENGTHS, seed=1)), block=kernels.BLOCK,
                      min_mass=kernels.MIN_MASS, parallel=True)
    assert numba.threading_layer() == "workqueue"
