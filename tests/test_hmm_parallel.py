"""The compiled forward log-likelihood (:func:`probseq.hmm.compiled.log_prob`): its parallel
route against its serial route, and both against the per-step normalised torch recursion
and hmmlearn, on ragged batches (issue 28)."""

from __future__ import annotations

import warnings

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


def _serial_and_parallel(args) -> np.ndarray:
    """The compiled log-likelihoods by one thread and by several: every row accepted, and
    equal bit for bit (each row is the same loop whichever thread runs it, and how the work
    is cut depends on the lengths only)."""
    serial, ok_s = compiled.log_prob(*args, block=kernels.BLOCK, min_mass=kernels.MIN_MASS,
                                     parallel=False)
    par, ok_p = compiled.log_prob(*args, block=kernels.BLOCK, min_mass=kernels.MIN_MASS,
                                  parallel=True)
    assert ok_s.all() and ok_p.all()
    np.testing.assert_array_equal(par, serial)
    return par


@pytest.mark.parametrize("k,v", [(2, 3), (4, 5), (16, 32)])
def test_parallel_equals_serial_on_ragged_batch(k, v):
    model = _model(k, v, seed=k)
    _serial_and_parallel(_flat_args(model, _ragged(v, LENGTHS, seed=k)))


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
    # 0, inside a lockstep group of three rows), recomputed as -inf; the other rows are
    # untouched: bit for bit what the same batch gives with that symbol possible.
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]],
        emission=[[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(2, (n,), generator=g) for n in (12000, 9000, 30)]
    possible = model.log_prob(Sequences.from_list(rows))
    rows[1] = rows[1].clone()
    rows[1][4000] = 2
    lp = model.log_prob(Sequences.from_list(rows))
    assert lp[1] == -torch.inf
    torch.testing.assert_close(lp[[0, 2]], possible[[0, 2]], rtol=0, atol=0)
    # Alone, a row runs its own loop instead of a lockstep group: equal to rounding.
    alone = torch.stack([model.log_prob(r) for r in (rows[0], rows[2])])
    torch.testing.assert_close(lp[[0, 2]], alone, rtol=1e-14, atol=0)


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


def _split_row_reference(model: HiddenMarkovModel, seqs: Sequences) -> torch.Tensor:
    p = model.params
    return inference.hmm_filter(p["initial"], p["transition"], model._log_lik(p, seqs),
                                seqs.lengths, 0, filtered=False)[0].sum(-1)


@pytest.mark.parametrize("k,v", [(2, 3), (16, 32)])
def test_long_row_split_in_halves_is_exact(k, v):
    # A row of at least PARALLEL_MIN_STEPS steps and half the batch is split: forward loop
    # over its first half, backward loop over its second, joined in the middle. Equal to the
    # per-step normalised recursion and to hmmlearn, serial and parallel alike (the split
    # depends on the lengths only, so the two routes agree bit for bit).
    model = _model(k, v, seed=20 + k)
    lengths = [compiled.PARALLEL_MIN_STEPS + 1001, 50, 1, 17]
    seqs = _ragged(v, lengths, seed=k)
    par = _serial_and_parallel(_flat_args(model, seqs))
    torch.testing.assert_close(torch.from_numpy(par), _split_row_reference(model, seqs),
                               rtol=1e-12, atol=0)
    ref_hl = hmm.CategoricalHMM(k, implementation="scaling")
    ref_hl.n_features = v
    p = model.params
    ref_hl.startprob_, ref_hl.transmat_, ref_hl.emissionprob_ = (
        p["initial"].numpy(), p["transition"].numpy(), p["emission"].numpy())
    long_row = seqs.to_list()[0].numpy()[:, None]
    assert float(par[0]) == pytest.approx(ref_hl.score(long_row), rel=1e-12)
    # Through the model, one sequence alone (the benchmark's case).
    alone = model.log_prob(seqs.to_list()[0])
    assert float(alone) == pytest.approx(float(par[0]), rel=1e-13)


def test_split_row_guard_in_the_backward_half_is_recomputed():
    # Two sticky states that nearly never emit the other's symbol: a first half of one
    # symbol passes, a second half alternating the symbols has a block mass ~1e-240, below
    # the guard, in the backward loop only; the row is refused and recomputed exactly.
    eps = 1e-30
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[1 - eps, eps], [eps, 1 - eps]],
        emission=[[1 - eps, eps], [eps, 1 - eps]])
    half = compiled.PARALLEL_MIN_STEPS
    row = np.concatenate([np.zeros(half, dtype=np.int64), np.arange(half) % 2])
    seqs = Sequences.from_list([row])
    args = _flat_args(model, seqs)
    b, m, index, starts = args[2:6]
    # the forward loop alone over the first half passes the guard
    first, ok_first = compiled.log_prob(args[0], args[1], b, m, index, starts,
                                        np.array([half]), block=kernels.BLOCK,
                                        min_mass=kernels.MIN_MASS)
    assert ok_first.all()
    _, ok = compiled.log_prob(*args, block=kernels.BLOCK, min_mass=kernels.MIN_MASS)
    assert not ok.any()
    lp = model.log_prob(seqs)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, _split_row_reference(model, seqs), rtol=1e-12, atol=0)


def test_long_row_in_flushing_mode_is_not_split_and_exact():
    a = np.array([[1 - 1e-300, 1e-300, 0.0], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    model = HiddenMarkovModel.from_params(
        initial=[0.2, 0.3, 0.5], transition=a,
        emission=[[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    seqs = _ragged(2, [compiled.PARALLEL_MIN_STEPS + 500], seed=8)
    torch.testing.assert_close(model.log_prob(seqs), _split_row_reference(model, seqs),
                               rtol=1e-12, atol=0)


def _child_log_prob(queue) -> None:  # run in a forked child
    model = _model(4, 5, seed=3)
    queue.put(model.log_prob(_ragged(5, [30_000, 30_000], seed=2)).tolist())


def test_threads_are_remade_in_a_forked_child():
    # The pool's threads do not survive a fork; a child that inherits the pool must make its
    # own rather than wait forever on threads that do not exist.
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    model = _model(4, 5, seed=3)
    here = model.log_prob(_ragged(5, [30_000, 30_000], seed=2))  # the parent's pool is used
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_log_prob, args=(queue,))
    with warnings.catch_warnings():  # Python >= 3.12 warns of fork beside live threads
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=60)
    assert got == here.tolist()


@pytest.mark.parametrize("parallel", [False, True])
def test_emission_counts_summed_in_the_pass_equal_the_posteriors(monkeypatch, parallel):
    # EM's categorical statistics are summed by symbol inside the compiled pass; against
    # the torch per-step posteriors summed over observed steps: a ragged batch with missing
    # symbols (row V of the table, left out), runs in parallel threads or not, and a row
    # refused by the pass's guard (alternating symbols under two sticky states that nearly
    # never emit the other's symbol) whose recomputed posteriors must be counted too.
    eps = 1e-70  # small enough for the flushing mode, whose guard refuses rows
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[1 - eps, eps], [eps, 1 - eps]],
        emission=[[1 - 1e-30, 1e-30], [1e-30, 1 - 1e-30]])
    g = np.random.default_rng(4)
    rows = [np.zeros(6000, dtype=np.int64), np.arange(40) % 2, np.zeros(9000, dtype=np.int64),
            np.ones(5000, dtype=np.int64), np.zeros(1, dtype=np.int64)]
    rows = [np.ma.masked_array(x, mask=g.random(x.size) < 0.1) for x in rows]
    seqs = Sequences.from_list(rows)
    assert seqs.has_missing
    original = compiled.forward_backward
    refused = []

    def spy(*args, **kwargs):
        kwargs["parallel"] = parallel
        out = original(*args, **kwargs)
        assert "by_source" in out
        refused.append(np.nonzero(~out["ok"])[0].tolist())
        return out

    monkeypatch.setattr(compiled, "forward_backward", spy)
    p = model.params
    stats = model.expected_stats(seqs, p)
    assert refused == [[1]]
    ref = inference.hmm_posteriors(p["initial"], p["transition"], model._log_lik(p, seqs),
                                   seqs.lengths, 0)
    observed = seqs.observed & seqs.mask
    onehot = torch.nn.functional.one_hot(seqs.values, 2).to(torch.float64)
    want = torch.einsum("ntk,ntv->kv", ref["smoothed"] * observed[..., None], onehot)
    torch.testing.assert_close(stats["emission_counts"], want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(stats["transition_counts"], ref["transition_counts"],
                               rtol=1e-10, atol=1e-10)


def test_viterbi_rows_in_parallel_threads_equal_one_thread(monkeypatch):
    # Rows in threads (a batch above PARALLEL_MIN_STEPS): each row is the same sequential
    # loop, so paths and scores equal the one-thread run exactly.
    model = _model(5, 6, seed=40, sticky=3.0)
    seqs = _ragged(6, [9000, 3, 700, 12000, 1, 4000], seed=41)
    p = model.params
    args = (np.log(p["initial"].numpy()), np.log(p["transition"].numpy()),
            model._log_lik(p, seqs).numpy(), seqs.lengths.numpy())
    paths, best = compiled.viterbi(*args)
    monkeypatch.setattr(compiled, "num_threads", lambda: 1)
    one_paths, one_best = compiled.viterbi(*args)
    np.testing.assert_array_equal(paths, one_paths)
    np.testing.assert_array_equal(best, one_best)
    np.testing.assert_array_equal(model.most_likely_states(seqs).numpy(), paths)
