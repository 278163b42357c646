"""RecurrentModel: exactness (enumeration, numerical integration), ragged batches, the
Jacobian of standardisation, learning a known source, sampling, save/load, bad input, the
training loop's guards, and the last step of the hidden-state gradient norms (the
long-range memory experiment is tested in test_long_range.py).

References are independent of the code under test: brute-force enumeration of all V^T
sequences, scipy's Simpson rule on a grid, a forward recursion for the source HMM written
here, torch.distributions for the emission densities, scipy.stats for the sampler.
"""

import ast
import itertools
import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import probseq
from probseq import NotFittedError, Sequences
from probseq.recurrent import RecurrentModel, hidden_gradient_norms
from probseq.recurrent import model as recurrent_model
from probseq.recurrent.emissions import MIN_SCALE
from probseq.recurrent.training import PaddedData, ShuffleSampler, train_network

CELLS = ["rnn", "lstm", "gru", "transformer"]



def _symbols(n, lo, hi, v=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    return [torch.randint(0, v, (int(t),), generator=g) for t in lengths]


def _ar1(n, t, seed=0, phi=0.8, dim=None):
    """Stationary AR(1) sequences (mean 3, std 2): a strong dependence on the past."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, t) if dim is None else (n, t, dim)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.empty(shape, dtype=torch.float64)
    x[:, 0] = eps[:, 0]
    for s in range(1, t):
        x[:, s] = phi * x[:, s - 1] + math.sqrt(1 - phi**2) * eps[:, s]
    return list(3.0 + 2.0 * x)


def _small(cell, **kw):
    heads = {"num_heads": 2} if cell == "transformer" else {}
    return RecurrentModel(cell=cell, hidden_size=8, **heads, **kw)


@pytest.fixture(scope="module")
def discrete_models():
    """One briefly trained categorical model per cell (V=3)."""
    data = _symbols(60, 2, 8)
    return {c: _small(c).fit(data, max_epochs=3, seed=0, progress=False) for c in CELLS}


# ------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("cell", CELLS)
def test_probabilities_sum_to_one_by_enumeration(cell, discrete_models):
    m = discrete_models[cell]
    # Every sequence of length 1, 2 and 3, shuffled into one ragged batch.
    seqs = [torch.tensor(s) for t in (1, 2, 3) for s in itertools.product(range(3), repeat=t)]
    order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(1)).tolist()
    seqs = [seqs[i] for i in order]
    p = m.log_prob(seqs).exp()
    for t in (1, 2, 3):
        total = sum(float(p[i]) for i, s in enumerate(seqs) if len(s) == t)
        assert abs(total - 1.0) < 1e-12, (cell, t, total)
    # Non-trivial: the probabilities differ across sequences of the same length.
    assert p.max() - p.min() > 1e-3


@pytest.mark.parametrize("emission", ["gaussian", "mixture"])
def test_two_step_density_integrates_to_one(emission):
    data = _ar1(300, 6)
    m = RecurrentModel(cell="gru", hidden_size=8, emission=emission).fit(
        data, max_epochs=10, learning_rate=1e-2, seed=0, progress=False
    )
    # Simpson's rule on a grid of +-10 standard deviations of the data (mean 3, std 2).
    grid = np.linspace(3 - 20, 3 + 20, 401)
    x1, x2 = np.meshgrid(grid, grid, indexing="ij")
    pairs = torch.from_numpy(np.stack([x1.ravel(), x2.ravel()], axis=1))
    # The internal constructor: 160k full-length rows, no per-row conversion.
    batch = Sequences(pairs, torch.full((len(pairs),), 2))
    dens = m.log_prob(batch).exp().reshape(len(grid), len(grid)).numpy()
    total = integrate.simpson(integrate.simpson(dens, x=grid, axis=1), x=grid)
    assert abs(total - 1.0) < 1e-6, total
    first = m.log_prob(Sequences.from_padded(torch.from_numpy(grid[:, None]))).exp().numpy()
    assert abs(integrate.simpson(first, x=grid) - 1.0) < 1e-6
    # Non-trivial: E[x_2 | x_1] moves with x_1 (the source's moves by 0.8 * 4 = 3.2).
    cond = dens / first[:, None]
    mean_given = integrate.simpson(cond * grid[None, :], x=grid, axis=1)
    lo, hi = np.searchsorted(grid, [1.0, 5.0])
    assert mean_given[hi] - mean_given[lo] > 1.0


# ------------------------------------------------------------------------ ragged batches
@pytest.fixture(scope="module")
def mixture_model():
    return RecurrentModel(cell="lstm", hidden_size=8, emission="mixture", num_components=2).fit(
        _ar1(30, 7, dim=2), max_epochs=2, seed=0, progress=False
    )


def _ragged_checks(m, seqs, garbage):
    steps = m.log_prob_steps(seqs)
    total = m.log_prob(seqs)
    torch.testing.assert_close(steps.sum(-1), total, rtol=0, atol=1e-10)
    assert steps[~seqs.mask].eq(0).all()
    one_by_one = torch.stack([m.log_prob(seqs[i]) for i in range(len(seqs))])
    torch.testing.assert_close(one_by_one, total, rtol=0, atol=1e-10)
    perm = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(m.log_prob(seqs[perm]), total[perm], rtol=0, atol=1e-10)
    # Anything stored past the lengths (the internal constructor keeps it) changes nothing.
    dirty = seqs.values.clone()
    dirty[~seqs.mask] = garbage(int((~seqs.mask).sum()))
    torch.testing.assert_close(
        m.log_prob_steps(Sequences(dirty, seqs.lengths.clone())), steps, rtol=0, atol=0
    )


@pytest.mark.parametrize("cell", CELLS)
def test_ragged_batches_symbols(cell, discrete_models):
    seqs = Sequences.from_list(_symbols(12, 1, 9, seed=3))
    _ragged_checks(discrete_models[cell], seqs, lambda k: torch.randint(0, 3, (k,)))


def test_ragged_batches_multivariate_mixture(mixture_model):
    seqs = Sequences.from_list([x[: 2 + i % 5] for i, x in enumerate(_ar1(9, 7, seed=4, dim=2))])
    _ragged_checks(mixture_model, seqs, lambda k: 1e6 * torch.randn(k, 2, dtype=torch.float64))


def test_windowed_evaluation_carries_the_state(discrete_models, monkeypatch):
    """Long sequences are scored in time windows with the RNN state carried across."""
    seqs = Sequences.from_list(_symbols(7, 1, 11, seed=5))
    for cell in ("lstm", "gru"):
        full = discrete_models[cell].log_prob_steps(seqs)
        monkeypatch.setattr(recurrent_model, "_EVAL_WINDOW", 3)
        monkeypatch.setattr(recurrent_model, "_EVAL_TOKENS", 6)
        torch.testing.assert_close(discrete_models[cell].log_prob_steps(seqs), full,
                                   rtol=0, atol=1e-12)
        monkeypatch.undo()


# ------------------------------------------------------------------------ the Jacobian
@pytest.mark.parametrize("emission", ["gaussian", "mixture"])
def test_density_is_of_the_raw_data(emission):
    """log_prob equals a manual computation: the network on standardised data, the emission
    density from torch.distributions, minus sum(log std) per step."""
    data = _ar1(20, 5, dim=2)
    m = RecurrentModel(cell="gru", hidden_size=8, emission=emission, num_components=2).fit(
        data, max_epochs=2, seed=0, progress=False
    )
    x = torch.stack(data[:4])  # [N, T, D]
    mean, std = m._mean, m._std
    net = m._eval_network()
    with torch.no_grad():
        params, _ = net((x - mean) / std)
    z = (x - mean) / std
    d = torch.distributions
    if emission == "gaussian":
        dist = d.Independent(d.Normal(params[..., :2], torch.nn.functional.softplus(
            params[..., 2:]) + MIN_SCALE), 1)
    else:
        k = 2
        means = params[..., k: k + 2 * k].unflatten(-1, (k, 2))
        scales = torch.nn.functional.softplus(params[..., 3 * k:]).unflatten(-1, (k, 2))
        dist = d.MixtureSameFamily(
            d.Categorical(logits=params[..., :k]),
            d.Independent(d.Normal(means, scales + MIN_SCALE), 1),
        )
    manual = (dist.log_prob(z) - torch.log(std).sum()).sum(-1)
    torch.testing.assert_close(m.log_prob(list(x)), manual, rtol=0, atol=1e-10)
    # The data's std is 2 per dimension, so the Jacobian is not negligible.
    assert abs(float(torch.log(std).sum()) - 2 * math.log(2)) < 0.3


@pytest.mark.parametrize("emission,dim", [("gaussian", None), ("mixture", 2)])
def test_scale_equivariance(emission, dim):
    """Fitting c * x gives the model fitted to x, rescaled, for c in 1e-6..1e6: log_prob of
    c * y is log_prob of y minus T * D * log(c), and samples scale by c.

    Standardisation maps c * x to (x - m) / s up to float64 rounding (~1e-16 relative),
    and training reads it in float32, so with one seed the two fits run through the same
    float32 arithmetic unless a value sits on a float32 rounding boundary (probability
    ~1e-9 per value); float64 evaluation then differs by rounding only. Measured: 1e-15
    relative. Tolerance 1e-9 relative on log_prob (tens to hundreds of nats); a real
    dependence on the scale (an absolute floor on a standard deviation, a missing Jacobian)
    is >= 1e-3."""
    data, test = _ar1(8, 6, dim=dim), _ar1(3, 6, seed=9, dim=dim)
    fit = {"max_epochs": 2, "patience": None, "seed": 0, "progress": False}

    def make():
        return RecurrentModel(cell="lstm", hidden_size=8, emission=emission)

    a = make().fit(data, **fit)
    sa = a.sample(2, 5, seed=1).values
    d = 1 if dim is None else dim
    for c in (1e-6, 1e-3, 1e3, 1e6):
        b = make().fit([c * x for x in data], **fit)
        expect = a.log_prob(test) - 6 * d * math.log(c)
        torch.testing.assert_close(b.log_prob([c * x for x in test]), expect, rtol=1e-9,
                                   atol=0)
        torch.testing.assert_close(b.sample(2, 5, seed=1).values, c * sa, rtol=1e-9, atol=0)


# ------------------------------------------------------------------------ learning
def _hmm_sample(n, t, g, init, trans, emit):
    z = torch.multinomial(init, n, replacement=True, generator=g)
    xs = []
    for _ in range(t):
        xs.append(torch.multinomial(emit[z], 1, generator=g).squeeze(-1))
        z = torch.multinomial(trans[z], 1, generator=g).squeeze(-1)
    return torch.stack(xs, 1)


def _hmm_log_prob(x, init, trans, emit):
    """Scaled forward recursion, written independently of probseq.hmm."""
    alpha = init * emit[:, x[:, 0]].T  # [N, K]
    total = alpha.sum(-1).log()
    alpha = alpha / alpha.sum(-1, keepdim=True)
    for s in range(1, x.shape[1]):
        alpha = (alpha @ trans) * emit[:, x[:, s]].T
        total += alpha.sum(-1).log()
        alpha = alpha / alpha.sum(-1, keepdim=True)
    return total


@pytest.mark.slow
def test_learns_a_hidden_markov_source():
    init = torch.tensor([0.5, 0.5], dtype=torch.float64)
    trans = torch.tensor([[0.95, 0.05], [0.1, 0.9]], dtype=torch.float64)
    emit = torch.tensor([[0.8, 0.15, 0.05], [0.1, 0.2, 0.7]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    train, test = _hmm_sample(400, 40, g, init, trans, emit), _hmm_sample(300, 40, g, init,
                                                                            trans, emit)
    m = RecurrentModel(cell="gru", hidden_size=16).fit(
        Sequences.from_padded(train), max_epochs=25, learning_rate=1e-2, seed=0, progress=False
    )
    steps = test.numel()
    model_nats = -float(m.log_prob(Sequences.from_padded(test)).sum()) / steps
    true_nats = -float(_hmm_log_prob(test, init, trans, emit).sum()) / steps
    unigram = torch.bincount(train.ravel(), minlength=3).double() / train.numel()
    unigram_nats = -float(unigram.log()[test].sum()) / steps
    assert unigram_nats - true_nats > 0.1  # the source's memory is worth learning...
    assert model_nats - true_nats < 0.02, (model_nats, true_nats)  # ...and the GRU learns it


# ------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("cell", ["gru", "transformer"])
def test_samples_follow_log_prob(cell, discrete_models):
    """Chi-square: the empirical law of x_3 given a prefix (x_1, x_2) against
    exp(log_prob(x_1..x_3) - log_prob(x_1, x_2))."""
    m = discrete_models[cell]
    s = m.sample(6000, 3, prefix=[2, 0], seed=1)
    assert s.values[:, :2].eq(torch.tensor([2, 0])).all()
    observed = torch.bincount(s.values[:, 2], minlength=3).numpy()
    cond = (m.log_prob([[2, 0, v] for v in range(3)]) - m.log_prob([2, 0])).exp().numpy()
    assert abs(cond.sum() - 1) < 1e-12
    assert stats.chisquare(observed, 6000 * cond).pvalue > 1e-3
    # Without a prefix: the pairs (x_1, x_2).
    s = m.sample(6000, 2, seed=2)
    observed = torch.bincount(3 * s.values[:, 0] + s.values[:, 1], minlength=9).numpy()
    probs = m.log_prob([list(p) for p in itertools.product(range(3), repeat=2)]).exp().numpy()
    assert stats.chisquare(observed, 6000 * probs).pvalue > 1e-3


@pytest.mark.parametrize("emission", ["gaussian", "mixture"])
def test_continuous_samples_follow_the_density(emission):
    """Kolmogorov-Smirnov: x_2 sampled after the prefix x_1 against the CDF of
    exp(log_prob(x_1, x_2) - log_prob(x_1)) integrated on a grid."""
    m = RecurrentModel(cell="rnn", hidden_size=8, emission=emission).fit(
        _ar1(30, 5), max_epochs=3, seed=0, progress=False)
    s = m.sample(3000, 2, prefix=[5.0], seed=3)
    assert s.values[:, 0].eq(5.0).all()
    grid = np.linspace(3 - 30, 3 + 30, 20001)
    pairs = torch.from_numpy(np.stack([np.full_like(grid, 5.0), grid], 1))
    dens = (m.log_prob(Sequences.from_padded(pairs)) - m.log_prob([5.0])).exp().numpy()
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0.0)
    assert abs(cdf[-1] - 1) < 1e-6
    assert stats.kstest(s.values[:, 1].numpy(), lambda v: np.interp(v, grid, cdf)).pvalue > 1e-3


def test_multivariate_samples_and_temperature(mixture_model):
    m = mixture_model
    prefix = torch.tensor([[3.0, 2.0], [4.0, 1.0]], dtype=torch.float64)
    s = m.sample(50, 6, prefix=prefix, seed=0)
    assert s.values.shape == (50, 6, 2) and torch.equal(s.values[:, :2], prefix.expand(50, 2, 2))
    assert torch.isfinite(m.log_prob(s)).all()
    cold = m.sample(2000, 3, seed=1, temperature=0.1).values
    warm = m.sample(2000, 3, seed=1).values
    assert float(cold[:, 2].std(0).max()) < float(warm[:, 2].std(0).min())


def test_same_seed_same_fit_and_same_samples():
    data = _symbols(30, 3, 9)
    fit = {"max_epochs": 3, "seed": 7, "progress": False}
    a = RecurrentModel(cell="lstm", hidden_size=8, dropout=0.2, num_layers=2).fit(data, **fit)
    b = RecurrentModel(cell="lstm", hidden_size=8, dropout=0.2, num_layers=2).fit(data, **fit)
    assert a.history_ == b.history_
    for k, v in a._state_tensors().items():
        assert torch.equal(v, b._state_tensors()[k]), k
    assert a.sample(5, 10, prefix=[1], seed=3) == b.sample(5, 10, prefix=[1], seed=3)
    assert a.sample(5, 10, seed=3) != a.sample(5, 10, seed=4)


# ------------------------------------------------------------------------ files, size
@pytest.mark.parametrize("make", [
    lambda: _small("transformer").fit(_symbols(20, 2, 6), max_epochs=1, seed=0, progress=False),
    lambda: RecurrentModel(cell="gru", hidden_size=8, emission="gaussian").fit(
        _ar1(10, 5), max_epochs=1, seed=0, progress=False),
    lambda: RecurrentModel(cell="rnn", hidden_size=8, emission="mixture").fit(
        _ar1(10, 5, dim=3), max_epochs=1, seed=0, progress=False),
])
def test_save_load_reproduces_exactly(make, tmp_path):
    m = make()
    path = tmp_path / "model.pt"
    m.save(path)
    loaded = probseq.load(path)
    data = m.sample(6, 5, seed=0)
    assert torch.equal(loaded.log_prob(data), m.log_prob(data))
    assert loaded.sample(3, 5, seed=1) == m.sample(3, 5, seed=1)
    assert loaded.num_params == m.num_params and loaded.history_ == m.history_


def test_num_params_matches_a_hand_count():
    v, e, h = 5, 4, 6
    m = RecurrentModel(cell="lstm", hidden_size=h, embedding_dim=e).fit(
        [[0, 1, 2, 3, 4]], max_epochs=1, seed=0, progress=False)
    lstm = 4 * h * (e + h) + 2 * 4 * h
    assert m.num_params == v * e + e + lstm + h * v + v
    m = RecurrentModel(cell="gru", hidden_size=h, emission="mixture", num_components=2).fit(
        _ar1(3, 4, dim=2), max_epochs=1, seed=0, progress=False)
    d, k = 2, 2
    gru = 3 * h * (d + h) + 2 * 3 * h
    assert m.num_params == d + gru + h * k * (1 + 2 * d) + k * (1 + 2 * d)


# ------------------------------------------------------------------------ bad input
def test_bad_input_raises_value_error(discrete_models, mixture_model):
    m = discrete_models["gru"]
    with pytest.raises(ValueError, match="float values but symbols are expected"):
        m.log_prob([0.0, 1.0])
    with pytest.raises(ValueError, match="sequence 1 contains symbol 3"):
        m.log_prob([[0, 1], [1, 3]])
    with pytest.raises(ValueError, match="missing value.*cannot marginalise"):
        mixture_model.log_prob(np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="dimension D=2"):
        mixture_model.log_prob(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="dimension D=2"):
        mixture_model.sample(2, 4, prefix=[1.0, 2.0])
    with pytest.raises(NotFittedError):
        RecurrentModel().log_prob([0, 1])
    with pytest.raises(ValueError, match="temperature"):
        m.sample(2, 3, temperature=0.0)
    with pytest.raises(ValueError, match="max_length=8"):
        discrete_models["transformer"].log_prob(list(range(3)) * 3)
    with pytest.raises(ValueError, match="max_length=8"):
        discrete_models["transformer"].sample(1, 9)
    with pytest.raises(ValueError, match="contains symbol 5"):
        RecurrentModel(num_symbols=4).fit([[0, 5]])
    with pytest.raises(ValueError, match="validation_data has D=2"):
        RecurrentModel(emission="gaussian").fit(_ar1(2, 3, dim=3),
                                                validation_data=_ar1(2, 3, dim=2))
    with pytest.raises(ValueError, match="float values"):
        RecurrentModel().fit([[0, 1]], validation_data=[[0.5, 1.0]])
    with pytest.raises(ValueError, match="max_epochs"):
        RecurrentModel().fit([[0, 1]], max_epochs=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"cell": "elman"}, "cell must be one of"),
    ({"emission": "poisson"}, "emission must be one of"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"dropout": 1.0}, "dropout"),
    ({"emission": "gaussian", "num_symbols": 3}, "num_symbols is for"),
    ({"cell": "transformer", "hidden_size": 10, "num_heads": 4}, "multiple of num_heads"),
    ({"device": "nonsense"}, "not a torch device"),
])
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecurrentModel(**kwargs)


def test_the_caller_data_is_not_modified():
    data = _ar1(5, 6)
    copy = [x.clone() for x in data]
    RecurrentModel(emission="gaussian", hidden_size=4).fit(data, max_epochs=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(data, copy, strict=True))


# ------------------------------------------------------------------------ training loop
def test_early_stopping_keeps_the_best_epoch():
    data = _symbols(40, 5, 10)
    m = RecurrentModel(cell="gru", hidden_size=16).fit(
        data[:30], validation_data=data[30:], max_epochs=40, learning_rate=0.05, patience=3,
        min_steps=0, seed=0, progress=False)
    valid = m.history_["valid"]
    assert len(valid) < 40  # random symbols: it overfits and stops early
    assert m.best_epoch_ == int(np.argmin(valid)) + 1
    # 30 sequences in batches of 32: one optimiser step per epoch, so patience=3 steps
    assert m.history_["steps"] == list(range(1, len(valid) + 1))
    assert len(valid) == m.best_epoch_ + 3
    assert m.fit_result_["converged"] and m.fit_result_["stopped"] == "early_stopping"
    # The kept weights are those of the best epoch: re-scoring the validation data agrees.
    steps = sum(len(x) for x in data[30:])
    rescored = -float(m.log_prob(data[30:]).sum()) / steps
    assert abs(rescored - min(valid)) < 1e-5


def test_hold_out_without_validation_data():
    m = RecurrentModel(cell="rnn", hidden_size=4).fit(_symbols(20, 3, 5), max_epochs=2,
                                                     seed=0, progress=False)
    assert len(m.history_["valid"]) == 2 and all(np.isfinite(m.history_["valid"]))
    # One long sequence: validated on its last 10% of steps, trained on chunks.
    one = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(0))
    m = RecurrentModel(cell="gru", hidden_size=4).fit(one, max_epochs=2, chunk_length=30,
                                                     seed=0, progress=False)
    assert all(np.isfinite(m.history_["valid"]))
    m = RecurrentModel(cell="gru", hidden_size=4).fit(one, max_epochs=2, seed=0,
                                                     validation_fraction=0.0, progress=False)
    assert all(np.isnan(m.history_["valid"])) and m.best_epoch_ == 2


def test_one_short_series_trains_in_windows_and_converges():
    """The Nile (one series of 100): cut into 16-step windows (6 optimiser steps an epoch),
    stopped by validation after at least min_steps=300 steps, it beats an i.i.d. Gaussian
    in-sample. Before training windows it stopped after ~11-25 steps (one step an epoch)."""
    x = probseq.datasets.nile().to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "did not converge" warning
        m = RecurrentModel(cell="lstm", hidden_size=32, emission="gaussian").fit(
            x, seed=0, progress=False)
    result = m.fit_result_
    assert result["converged"] and result["stopped"] == "early_stopping"
    assert result["window_length"] == 16 and result["iterations"] >= 300
    assert np.all(np.diff([0, *m.history_["steps"]]) == 6)
    iid = stats.norm(x.mean(), x.std()).logpdf(x).sum()  # the i.i.d. Gaussian MLE
    assert float(m.log_prob(x)) > iid + 3.0, (float(m.log_prob(x)), iid)
    # The held-out tail (last 10 steps) was scored given the 90 steps before it: the best
    # epoch's validation NLL is the float64 conditional score of the tail (float32 training).
    tail = -float(m.log_prob_steps(x)[90:].sum()) / 10
    assert abs(tail - m.history_["valid"][m.best_epoch_ - 1]) < 1e-4


def test_a_fit_cut_short_warns_that_it_did_not_converge():
    x = torch.randn(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="did not converge.*max_steps"):
        m = RecurrentModel(cell="gru", hidden_size=4, emission="gaussian").fit(
            x, max_steps=5, seed=0, progress=False)
    assert not m.fit_result_["converged"] and m.fit_result_["iterations"] == 5
    assert m.fit_result_["stopped"] == "max_steps"
    # one series of 270 training steps, batch 32: windows of ceil(270 / 8) = 34 steps;
    # streams must be at least 4 windows long, so one stream walked in 8 windows
    m = RecurrentModel(cell="gru", hidden_size=4, emission="gaussian").fit(
        x, max_epochs=2, patience=None, seed=0, progress=False)
    assert m.fit_result_["window_length"] == 34 and m.history_["steps"] == [8, 16]
    # a longer series is also cut into streams: 1100 training steps, windows of 138,
    # 1100 // (4 * 138) = 1 stream; with window_length=20: 13 streams of ~85 steps, one
    # batch walked in 5 windows
    y = torch.randn(1222, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = RecurrentModel(cell="gru", hidden_size=4, emission="gaussian").fit(
        y, max_epochs=1, window_length=20, patience=None, seed=0, progress=False)
    assert m.history_["steps"] == [5]


def test_min_steps_is_a_floor_for_early_stopping():
    data = _symbols(40, 5, 10)
    m = RecurrentModel(cell="gru", hidden_size=16).fit(
        data[:30], validation_data=data[30:], max_epochs=40, learning_rate=0.05, patience=3,
        min_steps=25, seed=0, progress=False)
    assert len(m.history_["valid"]) >= 25


def _driven(n, t, seed):
    """x_t = 3 + 2 u_t + 0.3 e_t: the covariate u (an AR(1)) drives the series."""
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(n, t, dtype=torch.float64)
    e = torch.randn(n, t, generator=g, dtype=torch.float64)
    w = torch.randn(n, t, generator=g, dtype=torch.float64)
    for s in range(1, t):
        u[:, s] = 0.5 * u[:, s - 1] + w[:, s]
    return Sequences.from_padded(3 + 2 * u + 0.3 * e), u[..., None]


def test_covariates_that_drive_the_series_improve_held_out_scores(tmp_path):
    x, u = _driven(24, 40, seed=0)
    x_test, u_test = _driven(10, 40, seed=1)
    fit = {"max_steps": 150, "learning_rate": 1e-2, "seed": 0, "progress": False,
           "patience": None}
    with_u = RecurrentModel(cell="gru", hidden_size=8, emission="gaussian").fit(
        x, exog=u, **fit)
    without = RecurrentModel(cell="gru", hidden_size=8, emission="gaussian").fit(x, **fit)
    steps = x_test.num_steps
    nats_with = -float(with_u.log_prob(x_test, exog=u_test).sum()) / steps
    nats_without = -float(without.log_prob(x_test).sum()) / steps
    # the noise alone has entropy 0.5 log(2 pi e 0.09) = 0.22 nats; x without u has
    # stationary std ~2.3 (1.25 nats) of which the past explains little
    assert nats_with < nats_without - 0.5, (nats_with, nats_without)
    # steps sum to the total; the covariates are needed, and of the right width
    steps_lp = with_u.log_prob_steps(x_test, exog=u_test)
    torch.testing.assert_close(steps_lp.sum(-1), with_u.log_prob(x_test, exog=u_test))
    with pytest.raises(ValueError, match="fitted with 1 covariate"):
        with_u.log_prob(x_test)
    with pytest.raises(ValueError, match="without covariates"):
        without.log_prob(x_test, exog=u_test)
    with pytest.raises(ValueError, match="E=2"):
        with_u.log_prob(x_test, exog=torch.cat([u_test, u_test], -1))
    # the one-step predictive reads the covariates too; forecasts need the future ones
    pred = with_u._step_predictive(x_test, exog=u_test)
    torch.testing.assert_close(pred.log_prob(x_test.values), steps_lp)
    future = torch.cat([u_test[0], torch.full((3, 1), 2.0, dtype=torch.float64)]).numpy()
    fc = with_u.forecast(x_test[0].numpy(), 3, exog=future, seed=0)
    assert torch.all((fc.mean - (3 + 2 * 2.0)).abs() < 1.0), fc.mean
    # samples follow the covariate path they are given
    path = torch.linspace(-2, 2, 40, dtype=torch.float64)[:, None]
    draws = with_u.sample(200, 40, exog=path, seed=0).values
    slope = np.polyfit(path[:, 0].numpy(), draws.mean(0).numpy(), 1)[0]
    assert abs(slope - 2.0) < 0.3, slope
    # a long series with covariates is cut into streams with them; save/load keeps them
    one = RecurrentModel(cell="gru", hidden_size=4, emission="gaussian").fit(
        x.values.reshape(-1).numpy(), exog=u.reshape(-1, 1).numpy(), max_epochs=1,
        window_length=16, patience=None, seed=0, progress=False)
    one.save(tmp_path / "m.pt")
    back = probseq.load(tmp_path / "m.pt")
    assert torch.equal(back.log_prob(x_test, exog=u_test), one.log_prob(x_test, exog=u_test))


def _toy_training(nan_from_epoch):
    net = torch.nn.Linear(1, 1)
    calls = {"epoch": 0}
    sampler = ShuffleSampler(4, seed=0)

    def loss_fn(network, values, mask, state, previous, has_previous, exog):
        nll = ((network(values) - 1.0) ** 2).sum()
        return (nll * math.nan if sampler.epoch >= nan_from_epoch else nll), None

    g = torch.Generator().manual_seed(0)
    data = PaddedData.build(torch.randn(4, 3, 1, generator=g), torch.full((4,), 3),
                            torch.device("cpu"))
    snapshots = []

    class Recorder(ShuffleSampler):
        def set_epoch(self, epoch):
            snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
            sampler.set_epoch(epoch)
            super().set_epoch(epoch)

    calls["result"] = train_network(
        net, loss_fn, data, None, sampler=Recorder(4, seed=0), max_epochs=5, batch_size=2,
        learning_rate=0.1, patience=None, clip_norm=1.0, progress=False)
    return net, snapshots, calls["result"]


def test_a_nan_loss_restores_the_last_good_weights():
    with pytest.warns(RuntimeWarning, match="diverged .* epoch 3.*weights of epoch 2"):
        net, snapshots, result = _toy_training(nan_from_epoch=3)
    assert result.stopped == "diverged" and result.best_epoch == 2
    # snapshots[2] is the state at the start of epoch 3, i.e. after epoch 2.
    assert all(torch.equal(v, snapshots[2][k]) for k, v in net.state_dict().items())
    with pytest.raises(FloatingPointError, match="before any epoch finished"):
        _toy_training(nan_from_epoch=1)


def test_sampler_order_depends_on_seed_and_epoch_only():
    a, b = ShuffleSampler(50, seed=3), ShuffleSampler(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)


# ------------------------------------------------------------------------ long range
def test_hidden_gradient_norms_last_step_by_hand(discrete_models):
    """At the last state the gradient has a closed form: loss_T = -log softmax(W h + b)[x_T]
    gives d loss_T / d h = W^T (softmax(W h + b) - onehot(x_T))."""
    m = discrete_models["gru"]
    x = torch.tensor([[0, 2, 1, 1, 0], [1, 1, 2, 0, 2]])
    norms = hidden_gradient_norms(m, Sequences.from_padded(x))
    assert norms.shape == (5,) and np.all(norms > 0)
    net = m._eval_network()
    with torch.no_grad():
        _, h = net.core(torch.cat([net.start_inputs(2), net.embed(x[:, :-1])], 1))
        w, b = net.head.weight, net.head.bias
        p = torch.softmax(h[-1] @ w.T + b, -1)
        grad = (p - torch.nn.functional.one_hot(x[:, -1], 3).double()) @ w
    assert abs(norms[-1] - float(grad.norm(dim=-1).mean())) < 1e-12
    with pytest.raises(ValueError, match="transformer"):
        hidden_gradient_norms(discrete_models["transformer"], x[:1, 0])


@pytest.mark.parametrize("cls", [RecurrentModel, probseq.DeepMarkovModel])
def test_public_fit_documents_every_option_and_refuses_unknown_ones(cls):
    """Every keyword of the public fit (= every option _fit takes) appears in its
    docstring's Args with its default; an unknown one is refused naming the valid ones."""
    import inspect

    params = inspect.signature(cls.fit).parameters
    options = [n for n, p in params.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "exog"]
    hook = inspect.signature(cls._fit).parameters
    assert set(options) == {n for n in hook if n not in ("self", "seqs", "exog")}
    doc = inspect.getdoc(cls.fit)
    for name in options:
        entry = re.search(rf"\n    {name}: (.*?)(?=\n    \w+: |\n    \*\*|$)", doc, re.S)
        assert entry, f"{name} is not documented"
        stated = re.search(r"[Dd]efault ([^\s:;,)]+)", entry.group(1))
        assert stated, f"{name}: no default stated"
        value = ast.literal_eval(stated.group(1).strip("`").replace("``", ""))
        assert value == params[name].default, (name, value, params[name].default)
    data = [[0, 1, 2]] if cls is RecurrentModel else [[0.0, 1.0, 2.0]]
    with pytest.raises(ValueError, match="unknown option.*'n_iter'.*valid options: .*max_epochs"):
        cls().fit(data, n_iter=3)


def test_not_converged_message_says_still_improving_only_when_it_is():
    # issue 26: the message claimed "still improving (best at step 3)" after 9 steps.
    from probseq.recurrent.training import TrainingResult

    def message(valid, train, stopped="max_steps"):
        steps = [3 * (i + 1) for i in range(len(train))]
        result = TrainingResult(history={"train": train, "valid": valid, "steps": steps},
                                best_epoch=len(train), best_step=steps[-1],
                                num_steps=steps[-1], stopped=stopped, converged=False)
        return recurrent_model._fit_result(result, None, 20,
                                          validated=valid[0] == valid[0])["message"]

    nan = math.nan
    early = message([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert "still improving" not in early
    assert "best at step 3 of 9 and the later steps did not improve" in early
    assert "still improving (best at the last step, 9)" in message([3.0, 2.0, 1.0],
                                                                  [1.0, 2.0, 3.0])
    # Training loss monitored (no validation): the best is read from the training history,
    # not the last step that ``best_step`` reports without validation.
    assert "best at step 3 of 9" in message([nan] * 3, [1.0, 2.0, 3.0])
    assert "still improving" in message([nan] * 3, [3.0, 2.0, 1.0])


def test_repr_lists_only_the_settings_that_apply():
    gru = repr(RecurrentModel(cell="gru", emission="gaussian"))
    assert gru.startswith("RecurrentModel(cell='gru'") and "gate_init" in gru
    for absent in ("num_heads", "num_components", "max_length", "num_symbols"):
        assert absent not in gru
    tf = repr(RecurrentModel(cell="transformer", hidden_size=8, emission="mixture"))
    assert "num_heads=4" in tf and "num_components=3" in tf and "gate_init" not in tf
    assert "num_symbols" in repr(RecurrentModel(cell="rnn", emission="categorical"))
