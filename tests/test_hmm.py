"""HiddenMarkovModel against independent references: hmmlearn, Pyro's DiscreteHMM, brute-force
enumeration of sequences and state paths, numerical integration, and statistical checks."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import permuted_labels

from probseq import HiddenMarkovModel, Sequences, load
from probseq.hmm import compiled, inference

hmm = pytest.importorskip("hmmlearn.hmm")

F64 = torch.float64



def _random_params(k: int, v: int, seed: int, sticky: float = 0.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dirichlet = torch._sample_dirichlet
    initial = dirichlet(torch.ones(k, dtype=F64), generator=g)
    transition = dirichlet(torch.ones(k, k, dtype=F64) + sticky * torch.eye(k, dtype=F64),
                           generator=g)
    emission = dirichlet(torch.ones(k, v, dtype=F64), generator=g)
    return {"initial": initial, "transition": transition, "emission": emission}


def _categorical(k=3, v=4, seed=0, **kw) -> HiddenMarkovModel:
    return HiddenMarkovModel.from_params(**_random_params(k, v, seed, **kw))


def _gaussian(covariance_type="full", seed=0, k=3, d=2) -> HiddenMarkovModel:
    p = _random_params(k, 2, seed)
    g = torch.Generator().manual_seed(seed + 100)
    means = 2.0 * torch.randn(k, d, dtype=F64, generator=g)
    a = torch.randn(k, d, d, dtype=F64, generator=g)
    cov = a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=F64)
    if covariance_type == "diag":
        cov = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    return HiddenMarkovModel.from_params(initial=p["initial"], transition=p["transition"],
                                         means=means, covariances=cov,
                                         covariance_type=covariance_type)


def _poisson(seed=0, k=3) -> HiddenMarkovModel:
    p = _random_params(k, 2, seed)
    return HiddenMarkovModel.from_params(initial=p["initial"], transition=p["transition"],
                                         rates=torch.tensor([0.5, 3.0, 9.0][:k], dtype=F64))


def _hmmlearn(model: HiddenMarkovModel):
    p = model.params
    k = model.num_states
    if model.emission == "categorical":
        ref = hmm.CategoricalHMM(k, implementation="scaling")
        ref.n_features = p["emission"].shape[1]
        ref.emissionprob_ = p["emission"].numpy()
    elif model.emission == "gaussian":
        ref = hmm.GaussianHMM(k, covariance_type=model.covariance_type, implementation="scaling")
        ref.means_ = p["means"].numpy()
        cov = p["covariances"].numpy()
        # hmmlearn's covars_ setter takes [K, D] diagonals for "diag", [K, D, D] for "full".
        ref.covars_ = np.diagonal(cov, axis1=1, axis2=2) if model.covariance_type == "diag" else cov
    else:
        ref = hmm.PoissonHMM(k, implementation="scaling")
        ref.lambdas_ = p["rates"].numpy()[:, None]
    ref.startprob_ = p["initial"].numpy()
    ref.transmat_ = p["transition"].numpy()
    return ref


def _concat(seqs: Sequences) -> tuple[np.ndarray, list[int]]:
    xs = [s.numpy() for s in seqs.to_list()]
    x = np.concatenate([a.reshape(a.shape[0], -1) for a in xs])
    return x, [a.shape[0] for a in xs]


MODELS = {
    "categorical": lambda: _categorical(3, 4, 0),
    "gaussian_full": lambda: _gaussian("full"),
    "gaussian_diag": lambda: _gaussian("diag"),
    "poisson": lambda: _poisson(),
}


# ------------------------------------------------------------------------ references
@pytest.mark.parametrize("name", list(MODELS))
def test_matches_hmmlearn(name):
    model = MODELS[name]()
    seqs = model.sample(6, 40, seed=1)
    seqs = Sequences.from_list([s[: 10 + 5 * i] for i, s in enumerate(seqs.to_list())])
    ref = _hmmlearn(model)
    x, lengths = _concat(seqs)
    lp = model.log_prob(seqs)
    ref_lp = [ref.score(x[sum(lengths[:i]): sum(lengths[: i + 1])]) for i in range(len(lengths))]
    np.testing.assert_allclose(lp.numpy(), ref_lp, rtol=1e-10, atol=1e-8)
    paths = model.most_likely_states(seqs)
    post = model.smoother(seqs)
    ref_post = ref.predict_proba(x, lengths)
    ref_path = ref.decode(x, lengths, algorithm="viterbi")[1]
    mask = seqs.mask
    np.testing.assert_array_equal(paths[mask].numpy(), ref_path)
    np.testing.assert_allclose(post[mask].numpy(), ref_post, atol=1e-8)
    assert (paths[~mask] == -1).all() and (post[~mask] == 0).all()


def _pyro_discrete_hmm(model: HiddenMarkovModel, steps: int):
    """Pyro's DiscreteHMM at the same parameters.

    Pyro's ``initial_logits`` are of the state BEFORE the first observation: it draws z_0 from
    them, then z_1 ~ transition[z_0], then x_1 ~ emission(z_1). Our ``initial`` is of z_1. So
    the first of T time-dependent transition matrices has every row equal to ``initial``
    (z_1 ~ initial whatever z_0 is), and the other T-1 are the model's transition matrix.
    """
    import pyro.distributions as dist

    p = model.params
    k = model.num_states
    trans = torch.log(p["transition"]).expand(steps, k, k).clone()
    trans[0] = torch.log(p["initial"]).expand(k, k)
    if model.emission == "categorical":
        obs = dist.Categorical(probs=p["emission"])
    elif model.emission == "gaussian":
        obs = dist.MultivariateNormal(p["means"], covariance_matrix=p["covariances"])
    else:
        obs = dist.Poisson(p["rates"])
    return dist.DiscreteHMM(torch.zeros(k, dtype=F64), trans, obs)


@pytest.mark.parametrize("name", list(MODELS))
def test_matches_pyro_discrete_hmm(name):
    model = MODELS[name]()
    seqs = model.sample(4, 30, seed=2)
    ref = _pyro_discrete_hmm(model, 30)
    values = seqs.values.to(F64) if model.emission == "poisson" else seqs.values
    torch.testing.assert_close(model.log_prob(seqs), ref.log_prob(values), rtol=1e-10, atol=1e-9)


def test_discrete_probabilities_sum_to_one():
    model = _categorical(3, 3, seed=4)
    all_seqs = Sequences.from_padded(
        np.array(list(itertools.product(range(3), repeat=4)), dtype=np.int64))
    total = torch.logsumexp(model.log_prob(all_seqs), 0)
    assert abs(float(total)) < 1e-12


def _enumerate_paths(model: HiddenMarkovModel, x: torch.Tensor):
    """Brute force over all K^T state paths: joint log p(z, x) per path."""
    p = model.params
    k, steps = model.num_states, x.shape[0]
    paths = torch.tensor(list(itertools.product(range(k), repeat=steps)))
    log_e = torch.log(p["emission"])[:, x]  # [K, T]
    lj = torch.log(p["initial"])[paths[:, 0]] + log_e[paths[:, 0], 0]
    for t in range(1, steps):
        lj = lj + torch.log(p["transition"])[paths[:, t - 1], paths[:, t]] + log_e[paths[:, t], t]
    return paths, lj


def test_path_enumeration_log_prob_filter_smoother_viterbi():
    model = _categorical(3, 4, seed=5)
    x = torch.tensor([0, 3, 1, 1, 2])
    paths, lj = _enumerate_paths(model, x)
    torch.testing.assert_close(model.log_prob(x), torch.logsumexp(lj, 0), rtol=1e-12, atol=0)
    post = torch.exp(lj - torch.logsumexp(lj, 0))
    smooth = torch.stack([torch.zeros(3, dtype=F64).index_add_(0, paths[:, t], post)
                          for t in range(5)])
    torch.testing.assert_close(model.smoother(x), smooth, rtol=0, atol=1e-12)
    filt = []
    for t in range(5):
        sub_paths, sub_lj = _enumerate_paths(model, x[: t + 1])
        w = torch.exp(sub_lj - torch.logsumexp(sub_lj, 0))
        filt.append(torch.zeros(3, dtype=F64).index_add_(0, sub_paths[:, t], w))
    torch.testing.assert_close(model.filter(x), torch.stack(filt), rtol=0, atol=1e-12)
    assert model.most_likely_states(x).tolist() == paths[int(lj.argmax())].tolist()
    steps = model.log_prob_steps(x)
    prefix_lp = [float(torch.logsumexp(_enumerate_paths(model, x[: t + 1])[1], 0))
                 for t in range(5)]
    np.testing.assert_allclose(steps.numpy(), np.diff([0.0] + prefix_lp), rtol=1e-12)


def test_gaussian_t2_density_integrates_to_one():
    model = HiddenMarkovModel.from_params(
        initial=[0.3, 0.7], transition=[[0.8, 0.2], [0.4, 0.6]], means=[-1.0, 2.5],
        covariances=[0.7, 1.8])
    grid = np.linspace(-14.0, 17.0, 400)
    x1, x2 = np.meshgrid(grid, grid, indexing="ij")
    pairs = np.stack([x1.ravel(), x2.ravel()], 1)
    dens = torch.exp(model.log_prob(Sequences.from_padded(pairs))).numpy().reshape(400, 400)
    integral = np.trapezoid(np.trapezoid(dens, grid, axis=1), grid)
    assert abs(integral - 1.0) < 1e-8


# ------------------------------------------------------------------------ fast paths
@pytest.mark.parametrize("sticky", [0.0, 500.0])
def test_chunked_scans_equal_plain_recursion(sticky):
    # sticky=500 makes a chain that barely forgets, so the speculative scan must fall back.
    model = _categorical(4, 5, seed=6, sticky=sticky)
    p = model.params
    x = torch.randint(5, (3, 3000), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([3000, 2100, 777])
    log_lik = torch.log(p["emission"]).T[x]
    plain, filt = inference.hmm_filter(p["initial"], p["transition"], log_lik, lengths, 0)
    for method in ("speculative", "products"):
        b, m = inference.emission_scale(log_lik, inference._mask(lengths, 3000))
        u, c = inference.scan(p["initial"], p["transition"], b, 64, lengths, method)
        steps = torch.where(inference._mask(lengths, 3000), torch.log(c) + m, 0.0)
        torch.testing.assert_close(steps, plain, rtol=1e-12, atol=1e-12)
        mask = inference._mask(lengths, 3000)
        torch.testing.assert_close(u[mask], filt[mask], rtol=0, atol=1e-12)
    post0 = inference.hmm_posteriors(p["initial"], p["transition"], log_lik, lengths, 0)
    post1 = inference.hmm_posteriors(p["initial"], p["transition"], log_lik, lengths, 100)
    for key in ("smoothed", "transition_counts", "initial_counts", "log_prob"):
        torch.testing.assert_close(post1[key], post0[key], rtol=1e-10, atol=1e-10)


def test_long_sequence_finite_and_exact():
    model = _categorical(4, 6, seed=7)
    x = torch.randint(6, (100_000,), generator=torch.Generator().manual_seed(1))
    lp = model.log_prob(x)
    assert torch.isfinite(lp)
    ref = _hmmlearn(model).score(x.numpy()[:, None])
    assert abs(float(lp) - ref) < 1e-9 * abs(ref)
    steps = model.log_prob_steps(x)
    assert abs(float(steps.sum() - lp)) < 1e-9 * abs(ref)
    model.chunk_size = 300
    p = model.params
    log_lik = torch.log(p["emission"]).T[x[None]]
    b, m = inference.emission_scale(log_lik, torch.ones(1, 100_000, dtype=torch.bool))
    _, c = inference.scan(p["initial"], p["transition"], b, 300, None, "products")
    torch.testing.assert_close(steps, (torch.log(c) + m)[0], rtol=1e-12, atol=1e-12)


def test_zeros_in_parameters():
    model = HiddenMarkovModel.from_params(
        initial=[1.0, 0.0, 0.0],
        transition=[[0.0, 1.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]],
        emission=[[1.0, 0.0, 0.0], [0.0, 0.6, 0.4], [0.0, 0.0, 1.0]])
    # Possible sequences: exact against path enumeration.
    for x in ([0, 1, 2, 2], [0, 2, 2, 0, 1], [0, 1, 1]):
        xt = torch.tensor(x)
        _, lj = _enumerate_paths(model, xt)
        assert float(model.log_prob(xt)) == pytest.approx(float(torch.logsumexp(lj, 0)),
                                                          rel=1e-12)
        torch.testing.assert_close(model.smoother(xt).sum(-1), torch.ones(len(x), dtype=F64))
    # Impossible sequences: -inf, never NaN, in every output.
    bad = [torch.tensor([1, 1, 2]), torch.tensor([0, 0, 1, 2])]
    lp = model.log_prob(bad)
    assert torch.isneginf(lp).all()
    steps = model.log_prob_steps(bad)
    assert not torch.isnan(steps).any() and torch.isneginf(steps[0, 0]) and steps[1, 0] == 0
    for out in (model.filter(bad), model.smoother(bad)):
        assert not torch.isnan(out).any()
    # The same through the chunked scan on a long sequence impossible near its end.
    long = torch.tensor([0] + [1, 2, 2, 0] * 1500 + [1, 1, 0])
    lp_long = model.log_prob(long)
    assert torch.isneginf(lp_long)
    assert torch.isfinite(model.log_prob(long[:-1]))


# ------------------------------------------------------------------------ protocol
def test_steps_sum_padding_order_and_batching():
    model = _gaussian("full", seed=8)
    seqs = model.sample(5, 30, seed=3).to_list()
    seqs = [s[: 8 + 4 * i] for i, s in enumerate(seqs)]
    batch = model.log_prob(seqs)
    steps = model.log_prob_steps(seqs)
    torch.testing.assert_close(steps.sum(-1), batch, rtol=1e-12, atol=1e-12)
    one_by_one = torch.stack([model.log_prob(s) for s in seqs])
    torch.testing.assert_close(batch, one_by_one, rtol=1e-12, atol=1e-12)
    rev = model.log_prob(seqs[::-1])
    torch.testing.assert_close(rev, batch.flip(0), rtol=1e-12, atol=1e-12)
    values = Sequences.from_list(seqs).values.clone()
    noisy = values + 1e6 * (~Sequences.from_list(seqs).mask)[..., None]
    lengths = [s.shape[0] for s in seqs]
    torch.testing.assert_close(model.log_prob(Sequences.from_padded(noisy, lengths)), batch,
                               rtol=0, atol=0)
    torch.testing.assert_close(model.smoother(Sequences.from_padded(noisy, lengths)),
                               model.smoother(seqs), rtol=0, atol=1e-12)


def test_bad_input_and_bad_params():
    model = _categorical(3, 4)
    with pytest.raises(ValueError, match="symbol 7"):
        model.log_prob([0, 1, 7])
    with pytest.raises(ValueError, match="integer"):
        model.log_prob(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        model.log_prob([np.array([], dtype=np.int64)])
    with pytest.raises(ValueError, match="sum to 1"):
        HiddenMarkovModel.from_params(initial=[0.5, 0.6], transition=np.eye(2),
                                      emission=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="negative"):
        HiddenMarkovModel.from_params(initial=[1.5, -0.5], transition=np.eye(2),
                                      emission=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="transition"):
        HiddenMarkovModel.from_params(initial=[0.5, 0.5], transition=np.eye(3) / 1.0,
                                      emission=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite"):
        HiddenMarkovModel.from_params(initial=[0.5, 0.5], transition=np.eye(2),
                                      means=np.zeros((2, 2)),
                                      covariances=np.stack([np.eye(2), -np.eye(2)]))
    with pytest.raises(ValueError, match="symmetric"):
        HiddenMarkovModel.from_params(initial=[0.5, 0.5], transition=np.eye(2),
                                      means=np.zeros((2, 2)),
                                      covariances=np.array([[[1.0, 0.5], [0.0, 1.0]]] * 2))
    with pytest.raises(ValueError, match="non-negative"):
        HiddenMarkovModel.from_params(initial=[0.5, 0.5], transition=np.eye(2), rates=[1, -1])
    with pytest.raises(ValueError, match="emission"):
        HiddenMarkovModel(2, emission="binomial")
    gauss = _gaussian("full")
    with pytest.raises(ValueError, match="D=2"):
        gauss.log_prob(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="inf"):  # NaN is a missing value, inf is refused
        gauss.log_prob(np.array([[0.0, np.inf], [1.0, 2.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="non-negative|negative"):
        _poisson().log_prob([1, -2, 3])


def test_save_load_reproduces(tmp_path):
    for name, make in MODELS.items():
        model = make()
        seqs = model.sample(3, 20, seed=4)
        model.save(tmp_path / f"{name}.pt")
        again = load(tmp_path / f"{name}.pt")
        assert torch.equal(again.log_prob(seqs), model.log_prob(seqs))
        assert again.num_params == model.num_params


def test_num_params():
    assert _categorical(3, 4).num_params == 2 + 6 + 9
    assert _gaussian("full", k=3, d=2).num_params == 2 + 6 + 3 * (2 + 3)
    assert _gaussian("diag", k=3, d=2).num_params == 2 + 6 + 3 * (2 + 2)
    assert _poisson(k=3).num_params == 2 + 6 + 3


# ------------------------------------------------------------------------ sampling
def test_sampler_frequencies_match_log_prob():
    model = _categorical(2, 2, seed=9)
    seqs = model.sample(20_000, 3, seed=5)
    codes = (seqs.values * torch.tensor([4, 2, 1])).sum(-1)
    freq = torch.bincount(codes, minlength=8).to(F64) / 20_000
    all_seqs = Sequences.from_padded(np.array(list(itertools.product(range(2), repeat=3))))
    probs = torch.exp(model.log_prob(all_seqs))
    assert 0.5 * float((freq - probs).abs().sum()) < 0.03


def test_sample_with_prefix_and_states():
    model = _categorical(3, 4, seed=10, sticky=3.0)
    prefix = torch.tensor([0, 2, 2, 1])
    seqs, states = model.sample(4000, 6, prefix=prefix, seed=6, return_states=True)
    assert (seqs.values[:, :4] == prefix).all()
    assert states.shape == (4000, 6) and states.dtype == torch.int64
    # The state at the prefix's end follows the filtered distribution there.
    freq = torch.bincount(states[:, 3], minlength=3).to(F64) / 4000
    torch.testing.assert_close(freq, model.filter(prefix)[-1], rtol=0, atol=0.03)
    # The next observation follows the one-step predictive distribution.
    pred = model.filter(prefix)[-1] @ model.params["transition"] @ model.params["emission"]
    freq_x = torch.bincount(seqs.values[:, 4], minlength=4).to(F64) / 4000
    torch.testing.assert_close(freq_x, pred, rtol=0, atol=0.03)
    gauss, gstates = _gaussian("full").sample(3, 5, seed=1, return_states=True)
    assert gauss.values.shape == (3, 5, 2) and gstates.shape == (3, 5)


# ------------------------------------------------------------------------ fitting
@pytest.mark.parametrize("name", list(MODELS))
def test_em_never_decreases(name):
    truth = MODELS[name]()
    seqs = truth.sample(20, 60, seed=7)
    model = HiddenMarkovModel(3, truth.emission, covariance_type=truth.covariance_type)
    model._prepare_data_shape(seqs)
    torch.manual_seed(0)
    params = model._random_params(seqs)
    lls = []
    for _ in range(25):
        stats = model.expected_stats(seqs, params)
        lls.append(float(stats["log_lik"]))
        params = model.maximize(stats, params)
    diffs = np.diff(lls)
    assert (diffs >= -1e-9 * abs(lls[-1])).all(), diffs.min()
    assert lls[-1] > lls[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(seqs, seed=1, num_restarts=1, max_epochs=30, tol=0.0)
    assert np.all(np.diff(model.history_) > 0)


def test_em_reaches_true_held_out_likelihood():
    truth = HiddenMarkovModel.from_params(
        initial=[0.6, 0.4], transition=[[0.9, 0.1], [0.2, 0.8]],
        emission=[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    train = truth.sample(100, 100, seed=11)
    test = truth.sample(100, 100, seed=12)
    model = HiddenMarkovModel(2).fit(train, seed=0, num_restarts=2)
    per_step = float(model.log_prob(test).sum()) / test.num_steps
    true_per_step = float(truth.log_prob(test).sum()) / test.num_steps
    assert per_step > true_per_step - 0.01
    assert model.restart_log_likelihoods_ and len(model.restart_log_likelihoods_) == 2


def test_gaussian_and_poisson_fit_recover_truth():
    truth = _gaussian("full", seed=3, k=2)
    train = truth.sample(30, 100, seed=1)
    test = truth.sample(30, 100, seed=2)
    model = HiddenMarkovModel(2, "gaussian").fit(train, seed=0, num_restarts=2)
    gap = (float(truth.log_prob(test).sum()) - float(model.log_prob(test).sum())) / 3000
    assert gap < 0.01
    ptruth = _poisson(k=2)
    ptrain = ptruth.sample(30, 100, seed=3)
    pm = HiddenMarkovModel(2, "poisson").fit(ptrain, seed=0)
    torch.testing.assert_close(pm.params["rates"].sort().values, ptruth.params["rates"],
                               rtol=0.15, atol=0.0)


def test_gradient_fit_matches_em():
    truth = _categorical(2, 3, seed=12)
    seqs = truth.sample(20, 40, seed=1)
    em = HiddenMarkovModel(2).fit(seqs, seed=0, num_restarts=2)
    for optimizer, epochs, lr in (("lbfgs", 30, None), ("adam", 80, 0.1)):
        gd = HiddenMarkovModel(2).fit(seqs, seed=0, method="gradient", optimizer=optimizer,
                                      max_epochs=epochs, num_restarts=1, learning_rate=lr)
        gap = (float(em.log_prob(seqs).sum()) - float(gd.log_prob(seqs).sum())) / seqs.num_steps
        assert gap < 0.01


def test_degenerate_fits_stay_finite():
    const = [np.zeros(30, dtype=np.int64) for _ in range(3)]
    model = HiddenMarkovModel(4, num_symbols=3).fit(const, seed=0, num_restarts=2)
    assert all(torch.isfinite(v).all() for v in model.params.values())
    assert float(model.log_prob(const).sum()) == pytest.approx(0.0, abs=1e-9)
    x = [np.r_[np.zeros(20), np.linspace(0, 1, 20)] for _ in range(2)]
    g = HiddenMarkovModel(3, "gaussian").fit(x, seed=0, num_restarts=1, max_epochs=40)
    assert all(torch.isfinite(v).all() for v in g.params.values())
    assert torch.isfinite(g.log_prob(x)).all()


@pytest.mark.slow
def test_pyro_svi_map_is_meaningful():
    import pyro
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoDelta, init_to_sample

    truth = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.1, 0.9]],
        emission=[[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    data = truth.sample(10, 40, seed=3)
    model = HiddenMarkovModel(2, num_symbols=3)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoDelta(model.pyro_model, init_loc_fn=init_to_sample)  # breaks state symmetry
    svi = SVI(model.pyro_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(300)]
    assert losses[-1] < losses[0]
    est = guide.median()
    fitted = HiddenMarkovModel.from_params(**{k: est[k].detach() for k in
                                              ("initial", "transition", "emission")})
    gap = (float(truth.log_prob(data).sum()) - float(fitted.log_prob(data).sum()))
    assert gap / data.num_steps < 0.01


# ------------------------------------------------------------------------ NumPy kernels
def _torch_reference(model: HiddenMarkovModel, seqs: Sequences) -> dict[str, torch.Tensor]:
    """The per-step normalised torch recursions (the slow reference of the kernels)."""
    p = model.params
    return inference.hmm_posteriors(p["initial"], p["transition"],
                                    model._log_lik(p, seqs), seqs.lengths, 0)


def _kernel_rows_ok(model, seqs):
    """Which rows (by decreasing length) the NumPy forward kernel accepts on its fast path."""
    p = model.params
    scaled = model._scaled(p, seqs)
    order = np.argsort(-scaled.lengths, kind="stable")
    _, ok, _ = inference.kernels.forward_log_mass(
        p["initial"].numpy(), p["transition"].numpy(), scaled.time_major(order),
        scaled.lengths[order])
    return ok


@pytest.mark.parametrize("compiled_route", [True, False])
@pytest.mark.parametrize("name", ["categorical", "gaussian_full", "gaussian_diag", "poisson"])
def test_kernels_match_per_step_recursion_on_ragged_batch(name, compiled_route, monkeypatch):
    # Lengths in no order, with ties, a length 1 and lengths that are not multiples of the
    # kernels' block, so that rows drop out mid-block and the segments are exercised. The
    # log-likelihood by both routes (the compiled loop and the NumPy batch recursion).
    monkeypatch.setattr(inference, "_use_compiled", lambda lengths, k: compiled_route)
    model = MODELS[name]()
    raw = model.sample(7, 90, seed=13).to_list()
    lengths = [90, 1, 37, 16, 90, 17, 64]
    seqs = Sequences.from_list([s[:n] for s, n in zip(raw, lengths, strict=True)])
    p = model.params
    ok = _kernel_rows_ok(model, seqs)
    assert ok.all()  # the fast path itself is what is compared below
    ref = _torch_reference(model, seqs)
    torch.testing.assert_close(model.log_prob(seqs), ref["log_prob"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.log_prob_steps(seqs), ref["steps"], rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(model.filter(seqs), ref["filtered"], rtol=0, atol=1e-12)
    torch.testing.assert_close(model.smoother(seqs), ref["smoothed"], rtol=0, atol=1e-12)
    stats = model.expected_stats(seqs, p)
    for key in ("transition_counts", "initial_counts"):
        torch.testing.assert_close(stats[key], ref[key], rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(stats["log_lik"], ref["log_prob"].sum(), rtol=1e-12, atol=0)
    # Emission statistics against the slow definition: sums over the real steps.
    mask = seqs.mask
    w = ref["smoothed"][mask]  # [M, K]
    if model.emission == "categorical":
        onehot = torch.nn.functional.one_hot(seqs.values[mask], 4).to(F64)
        torch.testing.assert_close(stats["emission_counts"], w.T @ onehot, rtol=1e-11,
                                   atol=1e-11)
    elif model.emission == "gaussian":
        x = seqs.values3d()[mask]
        torch.testing.assert_close(stats["sum_x"], w.T @ x, rtol=1e-11, atol=1e-10)
        torch.testing.assert_close(stats["sum_xx"], torch.einsum("mk,mi,mj->kij", w, x, x),
                                   rtol=1e-11, atol=1e-10)
    else:
        torch.testing.assert_close(stats["sum_x"], w.T @ seqs.values[mask].to(F64),
                                   rtol=1e-11, atol=1e-10)


@pytest.mark.parametrize("compiled_route", [True, False])
@pytest.mark.parametrize("name", ["gaussian_full", "gaussian_diag"])
def test_packed_gaussian_equal_lengths_in_both_orders(name, compiled_route, monkeypatch):
    # Equal lengths take the packed emissions' shortcut (no gather), row after row for the
    # compiled loop and time-major for the NumPy recursion; the same Scaled object may be
    # read in both orders (log_prob by one route, then the smoother by the compiled loop).
    monkeypatch.setattr(inference, "_use_compiled", lambda lengths, k: compiled_route)
    model = MODELS[name]()
    seqs = model.sample(6, 40, seed=3)
    p = model.params
    ref = _torch_reference(model, seqs)
    scaled = model._scaled(p, seqs)
    lp = inference.hmm_log_prob(p["initial"], p["transition"], scaled)
    torch.testing.assert_close(lp, ref["log_prob"], rtol=1e-12, atol=1e-12)
    got = inference.hmm_forward_backward(p["initial"], p["transition"], scaled)
    torch.testing.assert_close(got["smoothed"], ref["smoothed"], rtol=0, atol=1e-12)
    torch.testing.assert_close(got["steps"], ref["steps"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compiled_route", [True, False])
def test_underflow_guard_sends_rows_to_the_per_step_recursion(compiled_route, monkeypatch):
    # Two sticky states that each nearly never emit the other's symbol: on alternating
    # symbols every other step has probability ~1e-30, so a block of 16 steps has mass
    # ~1e-240, under the kernels' guard (1e-150): that row must be refused and recomputed.
    eps = 1e-30
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[1 - eps, eps], [eps, 1 - eps]],
        emission=[[1 - eps, eps], [eps, 1 - eps]])
    seqs = Sequences.from_list([np.arange(40) % 2, np.zeros(50, dtype=np.int64),
                                np.r_[np.zeros(20, dtype=np.int64), np.arange(9) % 2]])
    p = model.params
    monkeypatch.setattr(inference, "_use_compiled", lambda lengths, k: compiled_route)
    ok = _kernel_rows_ok(model, seqs)
    assert ok.tolist() == [True, False, True]  # rows by decreasing length: 50, 40, 29
    ref = _torch_reference(model, seqs)
    lp = model.log_prob(seqs)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, ref["log_prob"], rtol=1e-12, atol=0)
    ref_hl = _hmmlearn(model)
    for i, s in enumerate(seqs.to_list()):
        assert float(lp[i]) == pytest.approx(ref_hl.score(s.numpy()[:, None]), rel=1e-10)
    torch.testing.assert_close(model.log_prob_steps(seqs), ref["steps"], rtol=1e-12, atol=0)
    torch.testing.assert_close(model.smoother(seqs), ref["smoothed"], rtol=0, atol=1e-12)
    stats = model.expected_stats(seqs, p)
    torch.testing.assert_close(stats["transition_counts"], ref["transition_counts"],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sticky", [0.0, 500.0])
def test_long_sequences_log_prob_matches_sequential_recursion(sticky):
    # Two long sequences of different lengths take the compiled loop; sticky=500 barely
    # forgets. Against the per-step torch recursion and hmmlearn.
    model = _categorical(4, 5, seed=14, sticky=sticky)
    p = model.params
    g = torch.Generator().manual_seed(3)
    seqs = Sequences.from_list([torch.randint(5, (5000,), generator=g),
                                torch.randint(5, (3333,), generator=g)])
    scaled = model._scaled(p, seqs)
    assert inference._use_compiled(scaled.lengths, 4)
    ref = inference.hmm_filter(p["initial"], p["transition"], model._log_lik(p, seqs),
                               seqs.lengths, 0, filtered=False)[0].sum(-1)
    lp = inference.hmm_log_prob(p["initial"], p["transition"], scaled)
    torch.testing.assert_close(lp, ref, rtol=1e-12, atol=0)
    ref_hl = _hmmlearn(model)
    for i, x in enumerate(seqs.to_list()):
        assert float(lp[i]) == pytest.approx(ref_hl.score(x.numpy()[:, None]), rel=1e-11)


def test_em_iteration_runs_one_e_step(monkeypatch):
    model = _categorical(3, 4, seed=15)
    seqs = model.sample(10, 50, seed=2)
    calls = []
    original = HiddenMarkovModel.expected_stats

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HiddenMarkovModel, "expected_stats", counting)
    model.fit(seqs, init="params", max_epochs=1, tol=0.0, progress=False)
    assert len(calls) == 1
    # history_ holds the log-likelihood of the starting parameters (as hmmlearn records)...
    assert model.history_ == [pytest.approx(float(_categorical(3, 4, seed=15).log_prob(seqs)
                                                  .sum()), rel=1e-12)]
    # ...and the result is one M-step from them, as hmmlearn's fit(n_iter=1) gives.
    ref = _hmmlearn(_categorical(3, 4, seed=15))
    ref.n_iter, ref.tol, ref.init_params, ref.params = 1, 0.0, "", "ste"
    x, lengths = _concat(seqs)
    ref.fit(x, lengths)
    np.testing.assert_allclose(model.params["transition"].numpy(), ref.transmat_, rtol=1e-9)
    np.testing.assert_allclose(model.params["emission"].numpy(), ref.emissionprob_, rtol=1e-9)
    np.testing.assert_allclose(model.params["initial"].numpy(), ref.startprob_, rtol=1e-9,
                               atol=1e-12)


def test_viterbi_kernel_on_ragged_batch_matches_enumeration():
    model = _categorical(3, 4, seed=16, sticky=1.0)
    g = torch.Generator().manual_seed(4)
    xs = [torch.randint(4, (n,), generator=g) for n in (5, 1, 7, 5, 3)]
    p = model.params
    seqs = Sequences.from_list(xs)
    paths, log_joint = inference.hmm_viterbi(p["initial"], p["transition"],
                                             model._log_lik(p, seqs), seqs.lengths)
    for i, x in enumerate(xs):
        all_paths, lj = _enumerate_paths(model, x)
        assert paths[i, : len(x)].tolist() == all_paths[int(lj.argmax())].tolist()
        assert (paths[i, len(x):] == -1).all()
        assert float(log_joint[i]) == pytest.approx(float(lj.max()), rel=1e-12)


@pytest.mark.parametrize("d", [1, 3])
def test_diagonal_gaussian_log_lik_matches_scipy(d):
    # The elementwise path for diagonal covariances against scipy's multivariate normal.
    from scipy import stats

    g = torch.Generator().manual_seed(5)
    means = torch.randn(3, d, dtype=F64, generator=g)
    var = 0.2 + torch.rand(3, d, dtype=F64, generator=g)
    model = HiddenMarkovModel.from_params(initial=[0.2, 0.3, 0.5], transition=np.eye(3),
                                          means=means, covariances=torch.diag_embed(var))
    x = 2 * torch.randn(4, 6, d, dtype=F64, generator=g)
    seqs = Sequences.from_padded(x[..., 0] if d == 1 else x)
    ll = model._log_lik(model.params, seqs)
    for k in range(3):
        ref = stats.multivariate_normal(means[k].numpy(), np.diag(var[k].numpy())).logpdf(
            x.reshape(-1, d).numpy()).reshape(4, 6)
        np.testing.assert_allclose(ll[..., k].numpy(), ref, rtol=1e-13, atol=1e-13)


def _subnormal(x: np.ndarray) -> np.ndarray:
    return (x != 0) & (np.abs(x) < np.finfo(np.float64).tiny)


def _tiny_parameter_model() -> HiddenMarkovModel:
    """Transitions of 1e-160 and emissions of 1e-150, as EM reaches them on real data: their
    products (1e-310) are subnormal."""
    tiny_a, tiny_e = 1e-160, 1e-150
    transition = np.array([[0.9, 0.1 - tiny_a, tiny_a], [0.3, 0.7 - tiny_a, tiny_a],
                           [0.2, 0.3, 0.5]])
    emission = np.array([[0.6, 0.4 - tiny_e, tiny_e], [0.5 - tiny_e, 0.5, tiny_e],
                         [tiny_e, 0.5, 0.5 - tiny_e]])
    return HiddenMarkovModel.from_params(initial=[0.5, 0.5 - 1e-200, 1e-200],
                                         transition=transition, emission=emission)


def test_kernels_form_no_subnormals_at_tiny_parameters():
    # Parameters as EM reaches them on real data: transitions of 1e-160 and emissions of
    # 1e-150 whose products (1e-310) are subnormal, which x86 computes ~100x more slowly.
    # The kernels must choose the flushing mode, form no subnormal, and stay exact.
    model = _tiny_parameter_model()
    raw = model.sample(5, 70, seed=6).to_list()
    xs = [s[:n] for s, n in zip(raw, (70, 33, 70, 1, 48), strict=True)]
    seqs = Sequences.from_list(xs)
    p = model.params
    scaled = model._scaled(p, seqs)
    init, a = p["initial"].numpy(), p["transition"].numpy()
    assert inference.kernels.needs_flush(init, a, scaled.min_positive())
    assert not inference.kernels.needs_flush(MODELS["categorical"]().params["initial"].numpy(),
                                             MODELS["categorical"]().params["transition"]
                                             .numpy(), 1e-3)
    order = np.argsort(-scaled.lengths, kind="stable")
    b, _, index, _, _ = scaled.row_major()
    flushed = [np.where(x < inference.kernels.FLUSH, 0.0, x) for x in (init, a, b)]
    for backward in (False, True):
        res = compiled.forward_backward(*flushed, index, scaled.lengths, backward=backward,
                                        flush=True, min_mass=inference.kernels.MIN_MASS_FLUSH)
        assert res["ok"].all()
        assert not _subnormal(res["post"]).any()
    _, ok, trace = inference.kernels.forward_log_mass(init, a, scaled.time_major(order),
                                                      scaled.lengths[order], states=True,
                                                      flush=True)
    assert ok.all()
    assert not any(_subnormal(v).any() for _, _, _, v in trace)
    # The unflushed recursion does meet subnormals here (so the check above can fail)...
    plain = compiled.forward_backward(init, a, b, index, scaled.lengths)
    assert _subnormal(plain["post"]).any()
    # ...and the flushed results equal the per-step recursion and hmmlearn.
    ref = _torch_reference(model, seqs)
    lp = model.log_prob(seqs)
    torch.testing.assert_close(lp, ref["log_prob"], rtol=1e-12, atol=0)
    torch.testing.assert_close(model.log_prob_steps(seqs), ref["steps"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.smoother(seqs), ref["smoothed"], rtol=0, atol=1e-12)
    torch.testing.assert_close(model.filter(seqs), ref["filtered"], rtol=0, atol=1e-12)
    stats = model.expected_stats(seqs, p)
    torch.testing.assert_close(stats["transition_counts"], ref["transition_counts"],
                               rtol=1e-11, atol=1e-11)
    ref_hl = _hmmlearn(model)
    for i, x in enumerate(xs):
        assert float(lp[i]) == pytest.approx(ref_hl.score(x.numpy()[:, None]), rel=1e-10)


# ------------------------------------------------------------------------ scale and config
def _two_regime_series(t: int = 400, d: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.cumsum(rng.random(t) < 0.05) % 2
    x = np.where(z[:, None] == 1, 3.0, 0.0) + rng.normal(size=(t, d)) * np.where(
        z[:, None] == 1, 0.5, 1.0)
    if d > 1:
        x[:, 1] += 0.5 * x[:, 0]
    return x[:, 0] if d == 1 else x


@pytest.mark.parametrize("d", [1, 2])
def test_gaussian_fit_is_scale_equivariant(d):
    """Fitting c * x gives the model fitted to x, rescaled: covariances times c^2 and the
    log-likelihood shifted by -T * D * log c. With the old absolute floor (1e-6 in data
    units) the fit at c = 1e-6 collapsed to the floor."""
    x = _two_regime_series(300, d)
    t = x.shape[0]
    base = HiddenMarkovModel(2, "gaussian").fit(x, seed=0, num_restarts=2)
    y = _two_regime_series(100, d, seed=1)
    ll = float(base.log_prob(y))
    for c in (1e-6, 1e-3, 1e3, 1e6):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no floor, no warning blaming numerics
            m = HiddenMarkovModel(2, "gaussian").fit(c * x, seed=0, num_restarts=2)
        # Same EM path up to rounding: parameters agree to ~1e-10 relative.
        np.testing.assert_allclose(m.params["covariances"].numpy() / c**2,
                                   base.params["covariances"].numpy(), rtol=1e-7)
        np.testing.assert_allclose(m.params["means"].numpy() / c, base.params["means"].numpy(),
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(float(m.log_prob(c * y)) + y.shape[0] * d * np.log(c), ll,
                                   rtol=1e-9)
        np.testing.assert_allclose(m.history_[-1] + t * d * np.log(c), base.history_[-1],
                                   rtol=1e-9)
        s = m.sample(2, 50, seed=3).values
        s0 = base.sample(2, 50, seed=3).values
        np.testing.assert_allclose(s.numpy() / c, s0.numpy(), rtol=1e-6, atol=1e-9)


def test_covariance_floor_regularises_with_a_warning():
    # A state on repeated values collapses; the floor (relative to the data's variance)
    # keeps it finite, and the fit says so.
    x = [np.r_[np.zeros(20), np.linspace(0, 1, 20)] * 1e-5 for _ in range(2)]
    with pytest.warns(RuntimeWarning, match="regularised"):
        g = HiddenMarkovModel(3, "gaussian").fit(x, seed=0, num_restarts=1, max_epochs=40)
    var = float(np.var(np.concatenate(x)))
    assert float(torch.linalg.eigvalsh(g.params["covariances"]).min()) >= 0.9e-6 * var


def test_too_few_steps_for_a_covariance_or_constant_data_is_refused():
    with pytest.raises(ValueError, match="more observed steps than dimensions"):
        # One sequence of 5 steps in dimension 100, given unambiguously (in a list).
        HiddenMarkovModel(2, "gaussian").fit([np.random.default_rng(0).normal(size=(5, 100))])
    with pytest.raises(ValueError, match="constant in dimension 1"):
        HiddenMarkovModel(2, "gaussian").fit(np.c_[np.arange(10.0), np.ones(10)])


def test_fit_keeps_the_constructor_config():
    m = HiddenMarkovModel(2)
    config = m.get_config()
    m.fit([np.array([0, 1, 2, 1, 0] * 4)], seed=0, num_restarts=1)
    assert m.get_config() == config and m.num_symbols == 3
    big = [np.array([0, 1, 2, 3, 4, 5] * 4)]
    m.fit(big, seed=0, num_restarts=1)  # a larger alphabet the second time
    assert m.params["emission"].shape == (2, 6) and m.get_config() == config
    fixed = HiddenMarkovModel(2, num_symbols=8)
    fixed.fit(big, seed=0, num_restarts=1)
    assert fixed.get_config()["num_symbols"] == 8 and fixed.params["emission"].shape == (2, 8)
    g = HiddenMarkovModel(2, "gaussian")
    config = g.get_config()
    g.fit(np.random.default_rng(0).normal(size=(50, 2)), seed=0, num_restarts=1)
    g.fit(np.random.default_rng(1).normal(size=(50, 3)), seed=0, num_restarts=1)
    assert g.params["means"].shape == (2, 3) and g.get_config() == config


def test_restart_log_likelihoods_survive_save_load(tmp_path):
    m = HiddenMarkovModel(2).fit([np.array([0, 1, 1, 0, 2] * 5)], seed=0, num_restarts=3)
    assert len(m.restart_log_likelihoods_) == 3
    m.save(tmp_path / "m.pt")
    again = load(tmp_path / "m.pt")
    assert again.restart_log_likelihoods_ == m.restart_log_likelihoods_
    assert again.history_ == m.history_ and again.get_config() == m.get_config()


def test_covariance_checks_are_relative_to_the_scale():
    tiny = 1e-14 * np.array([[[1.0, 0.5], [0.5, 1.0]]] * 2)
    ok = HiddenMarkovModel.from_params(initial=[0.5, 0.5], transition=np.eye(2),
                                       means=np.zeros((2, 2)), covariances=tiny)
    assert torch.isfinite(ok.log_prob(np.zeros((3, 2)))).all()
    skew = 1e-14 * np.array([[[1.0, 0.5], [0.0, 1.0]]] * 2)
    with pytest.raises(ValueError, match="symmetric"):
        HiddenMarkovModel.from_params(initial=[0.5, 0.5], transition=np.eye(2),
                                      means=np.zeros((2, 2)), covariances=skew)


@pytest.mark.parametrize("covariance_type,d", [("full", 1), ("full", 3), ("diag", 2)])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_scaled_gaussian_emissions_match_scipy(covariance_type, d, scale):
    """The direct time-major path (whitening by one matrix product) against scipy, on a
    ragged batch with far-off means (the centring must keep the subtraction accurate)."""
    from scipy import stats

    model = _gaussian(covariance_type, seed=7, k=3, d=d)
    p = model.params
    offset = 1e3 * scale  # data far from the origin relative to their spread
    means, cov = p["means"] * scale + offset, p["covariances"] * scale**2
    scaled = HiddenMarkovModel.from_params(initial=p["initial"], transition=p["transition"],
                                           means=means, covariances=cov)
    raw = model.sample(4, 9, seed=2).values3d() * scale + offset
    lengths = torch.tensor([9, 3, 1, 6])
    x = raw if d > 1 else raw[..., 0]
    seqs = Sequences(x.clone(), lengths)
    sc = scaled._scaled(scaled.params, seqs)
    b, m = sc.b_tm, sc.m_tm  # the padded form, built from the packed real steps
    mask = seqs.mask.T.numpy()
    assert (b[~mask] == 1).all() and (m[~mask] == 0).all()
    got = np.log(b) + m[..., None]  # [T, N, K]
    for k in range(3):
        ref = stats.multivariate_normal(means[k].numpy(), cov[k].numpy()).logpdf(
            raw.transpose(0, 1).reshape(-1, d).numpy()).reshape(9, 4)
        # Log-densities shift by -d log(scale); compare at the precision of the values.
        tol = 1e-9 * (1 + abs(d * np.log(scale)))
        np.testing.assert_allclose(got[..., k][mask], ref[mask], rtol=0, atol=tol)


# ------------------------------------------------------------------------ missing values
def test_missing_symbols_marginalised_by_enumeration():
    model = _categorical(2, 3, seed=4)
    x = np.array([0, 2, 1, 1, 0, 2, 2])
    gaps = [1, 4, 5]
    gappy = np.ma.masked_array(x, mask=np.isin(np.arange(7), gaps))
    fills = []
    for vals in itertools.product(range(3), repeat=len(gaps)):
        y = x.copy()
        y[gaps] = vals
        fills.append(y)
    lps = model.log_prob(Sequences.from_list(fills))
    ref = torch.logsumexp(lps, 0)
    assert float(model.log_prob(gappy)) == pytest.approx(float(ref), rel=1e-12)
    steps = model.log_prob_steps(gappy)
    assert (steps[gaps] == 0).all()
    assert float(steps.sum()) == pytest.approx(float(ref), rel=1e-12)
    # Smoothed marginals: P(z_t | x_obs) = sum over fills of P(z_t, x_fill) / P(x_obs).
    w = torch.softmax(lps, 0)
    post = model.smoother(Sequences.from_list(fills))
    torch.testing.assert_close(model.smoother(gappy), (w[:, None, None] * post).sum(0),
                               rtol=0, atol=1e-12)
    # Filter at the last step = smoother there; Viterbi = the best path over fills' joint.
    torch.testing.assert_close(model.filter(gappy)[-1], model.smoother(gappy)[-1],
                               rtol=0, atol=1e-12)
    li, la, le = (np.log(model.params[n].numpy()) for n in ("initial", "transition", "emission"))
    best = max(
        (li[z[0]] + sum(la[z[t - 1], z[t]] for t in range(1, 7))
         + sum(le[z[t], x[t]] for t in range(7) if t not in gaps), z)
        for z in itertools.product(range(2), repeat=7))
    assert model.most_likely_states(gappy).tolist() == list(best[1])


def test_missing_counts_marginalised_by_summation():
    model = _poisson(seed=2)
    x = np.array([1, 4, 0, 7, 2])
    gappy = np.ma.masked_array(x, mask=[0, 1, 0, 0, 1])
    total = []
    for a in range(60):
        for b in range(60):
            y = x.copy()
            y[1], y[4] = a, b
            total.append(y)
    ref = torch.logsumexp(model.log_prob(Sequences.from_list(total)), 0)
    assert float(model.log_prob(gappy)) == pytest.approx(float(ref), rel=1e-10)


def test_missing_reals_marginalised_by_integration():
    from scipy import integrate

    model = _gaussian("full", seed=3, k=2, d=2)
    x = model.sample(1, 4, seed=5).values[0].numpy()
    y = x.copy()
    y[1, 0] = np.nan  # one coordinate missing: integrate it out
    y[2] = np.nan  # a whole step missing: factor 1
    lp = float(model.log_prob(y))

    def density(v: float) -> float:
        z = x.copy()
        z[1, 0] = v
        return float(torch.exp(_joint_skip(model, z)))

    val, _ = integrate.quad(density, -30, 30, epsabs=0, epsrel=1e-11, limit=200)
    assert lp == pytest.approx(np.log(val), rel=1e-8)
    steps = model.log_prob_steps(y)
    assert float(steps[2]) == 0 and float(steps.sum()) == pytest.approx(lp, rel=1e-12)
    # Univariate: one NaN integrated out.
    uni = HiddenMarkovModel.from_params(initial=[0.3, 0.7], transition=[[0.9, 0.1], [0.2, 0.8]],
                                        means=[-1.0, 2.0], covariances=[0.5, 2.0])
    u = np.array([0.3, np.nan, 1.5])

    def dens1(v: float) -> float:
        return float(torch.exp(uni.log_prob(np.array([0.3, v, 1.5]))))

    val, _ = integrate.quad(dens1, -40, 40, epsabs=0, epsrel=1e-11, limit=200)
    assert float(uni.log_prob(u)) == pytest.approx(np.log(val), rel=1e-9)


def _joint_skip(model: HiddenMarkovModel, z: np.ndarray) -> torch.Tensor:
    """log p(x) of a sequence whose step 2 carries no emission, by path enumeration."""
    from scipy import stats

    p = model.params
    k, t = model.num_states, z.shape[0]
    dens = np.array([[0.0 if s == 2 else stats.multivariate_normal(
        p["means"][j].numpy(), p["covariances"][j].numpy()).logpdf(z[s]) for j in range(k)]
        for s in range(t)])
    total = []
    for path in itertools.product(range(k), repeat=t):
        lp = np.log(p["initial"][path[0]].item()) + sum(
            np.log(p["transition"][path[s - 1], path[s]].item()) for s in range(1, t))
        total.append(lp + sum(dens[s, path[s]] for s in range(t)))
    return torch.logsumexp(torch.tensor(total), 0)


def test_trailing_gaps_equal_hmmlearn_on_the_observed_steps():
    model = _gaussian("full", seed=1)
    x = model.sample(1, 30, seed=2).values[0].numpy()
    y = x.copy()
    y[25:] = np.nan
    ref = _hmmlearn(model).score(x[:25])
    assert float(model.log_prob(y)) == pytest.approx(ref, rel=1e-11)
    np.testing.assert_allclose(model.smoother(y)[:25].numpy(),
                               _hmmlearn(model).predict_proba(x[:25]), atol=1e-9)


@pytest.mark.parametrize("name", list(MODELS))
def test_em_on_gappy_data(name):
    """EM with missing values never decreases the marginal likelihood (the E-step's
    expectations over missing coordinates are exact), and data without gaps give the same
    statistics as before."""
    model = MODELS[name]()
    seqs = model.sample(4, 60, seed=8)
    rng = np.random.default_rng(0)
    obs = torch.from_numpy(rng.random(tuple(seqs.values.shape)) > 0.2)
    gappy = Sequences(seqs.values.clone(), seqs.lengths, observed=obs)
    assert gappy.has_missing
    fresh = HiddenMarkovModel(3, model.emission, covariance_type=model.covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.fit(gappy, seed=0, num_restarts=1, max_epochs=25, tol=0)
    h = np.array(fresh.history_)
    assert (np.diff(h) >= -1e-9 * np.abs(h[1:])).all()
    # history_[-1] is at the parameters before the last M-step, which cannot lower it.
    assert float(fresh.log_prob(gappy).sum()) >= h[-1] - 1e-9 * abs(h[-1])
    # Only the observed emissions enter: dropping a fully missing sequence changes nothing.
    blank = Sequences(seqs.values[:2].clone(), seqs.lengths[:2],
                      observed=torch.cat([obs[:1], torch.zeros_like(obs[1:2])]))
    s1 = fresh.expected_stats(blank, fresh.params)
    s0 = fresh.expected_stats(gappy[:1], fresh.params)
    for key in s0:
        if key not in ("num_sequences", "initial_counts", "transition_counts"):
            torch.testing.assert_close(s1[key], s0[key], rtol=1e-10, atol=1e-10)


def test_sample_after_a_gappy_prefix_keeps_the_observed_values():
    model = _gaussian("full", seed=2)
    pre = model.sample(1, 6, seed=1).values[0].numpy()
    pre[2, 1] = np.nan
    pre[4] = np.nan
    out = model.sample(5, 10, prefix=pre, seed=3).values
    obs = ~np.isnan(pre)
    assert np.array_equal(out[:, :6].numpy()[:, obs], np.broadcast_to(pre[obs], (5, obs.sum())))
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------ differential fuzzing
_FUZZ = settings(max_examples=15, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


def _fuzz_chain(rng: np.random.Generator, k: int, stay: float) -> tuple[np.ndarray, np.ndarray]:
    """An initial distribution and a transition matrix that stays with probability ``stay``
    (up to 1 - 1e-9: nearly deterministic)."""
    initial = rng.dirichlet(np.ones(k))
    off = rng.dirichlet(np.ones(max(k - 1, 1)), size=k)
    a = np.zeros((k, k))
    for i in range(k):
        a[i, i] = stay if k > 1 else 1.0
        others = [j for j in range(k) if j != i]
        a[i, others] = (1 - stay) * off[i, : len(others)]
    return initial, a / a.sum(1, keepdims=True)


@_FUZZ
@given(seed=st.integers(0, 10**6), k=st.integers(1, 3), d=st.integers(1, 3),
       log_scale=st.floats(-6, 6), log_cond=st.floats(0, 6), log_leave=st.floats(-9, -0.1))
def test_fuzz_gaussian_against_hmmlearn(seed, k, d, log_scale, log_cond, log_leave):
    """Random Gaussian HMMs over 12 orders of magnitude of scale, condition numbers up to
    1e6 and nearly deterministic chains, against hmmlearn's score. Tolerance: both sides
    round at ~cond * 1e-16 relative per step; 1e-7 of the sum of absolute per-step terms
    leaves room for that at the worst condition number drawn."""
    rng = np.random.default_rng(seed)
    scale = 10.0**log_scale
    initial, a = _fuzz_chain(rng, k, 1 - 10.0**log_leave)
    means = scale * 3 * rng.standard_normal((k, d))
    cov = np.empty((k, d, d))
    for j in range(k):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        eig = scale**2 * 10.0 ** (-log_cond * rng.random(d))
        eig[0] = scale**2
        cov[j] = (q * eig) @ q.T
        cov[j] = 0.5 * (cov[j] + cov[j].T)
    model = HiddenMarkovModel.from_params(initial=initial, transition=a, means=means,
                                          covariances=cov, covariance_type="full")
    seqs = model.sample(2, 25, seed=seed % 1000)
    ref = hmm.GaussianHMM(k, covariance_type="full", implementation="scaling")
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = initial, a, means, cov
    x, lengths = _concat(seqs)
    ours = model.log_prob(seqs).numpy()
    steps = model.log_prob_steps(seqs).abs().sum(-1).numpy()
    for i, (lp, n) in enumerate(zip(ours, lengths, strict=True)):
        theirs = ref.score(x[sum(lengths[:i]): sum(lengths[:i]) + n])
        assert abs(lp - theirs) <= 1e-7 * (steps[i] + n), (lp, theirs)


@_FUZZ
@given(seed=st.integers(0, 10**6), k=st.integers(1, 3), v=st.integers(1, 4),
       log_leave=st.floats(-9, -0.05), log_floor=st.floats(-12, -1))
def test_fuzz_categorical_against_path_enumeration(seed, k, v, log_leave, log_floor):
    """Nearly deterministic transitions and emission probabilities down to 1e-12, against
    the brute-force sum over all K^T state paths (relative error 1e-10)."""
    rng = np.random.default_rng(seed)
    initial, a = _fuzz_chain(rng, k, 1 - 10.0**log_leave)
    e = rng.dirichlet(np.ones(v), size=k) + 10.0**log_floor
    e /= e.sum(1, keepdims=True)
    model = HiddenMarkovModel.from_params(initial=initial, transition=a, emission=e)
    x = rng.integers(0, v, size=6)
    total = []
    for path in itertools.product(range(k), repeat=6):
        lp = np.log(initial[path[0]]) + sum(np.log(a[path[t - 1], path[t]]) for t in range(1, 6))
        total.append(lp + sum(np.log(e[path[t], x[t]]) for t in range(6)))
    ref = float(np.logaddexp.reduce(total))
    assert float(model.log_prob(x)) == pytest.approx(ref, rel=1e-10, abs=1e-10)


@_FUZZ
@given(seed=st.integers(0, 10**6), k=st.integers(1, 3), log_rate=st.floats(-3, 3),
       log_leave=st.floats(-9, -0.1))
def test_fuzz_poisson_against_hmmlearn(seed, k, log_rate, log_leave):
    rng = np.random.default_rng(seed)
    initial, a = _fuzz_chain(rng, k, 1 - 10.0**log_leave)
    rates = 10.0 ** (log_rate + rng.uniform(-1, 1, size=k))
    model = HiddenMarkovModel.from_params(initial=initial, transition=a, rates=rates)
    x = model.sample(1, 30, seed=seed % 1000).values[0].numpy()
    ref = hmm.PoissonHMM(k, implementation="scaling")
    ref.startprob_, ref.transmat_, ref.lambdas_ = initial, a, rates[:, None]
    lp = float(model.log_prob(x))
    assert lp == pytest.approx(ref.score(x[:, None]), rel=1e-9, abs=1e-9)


def _path_log_joint(log_init, log_a, log_lik, path):
    """log p(x, z) of one state path ``z [T]`` with its sequence's ``log_lik [T, K]``."""
    t = np.arange(len(path))
    return float(log_init[path[0]] + log_a[path[:-1], path[1:]].sum() + log_lik[t, path].sum())


@pytest.mark.parametrize("leave", [0.3, 1e-4, 0.0])
def test_viterbi_matches_hmmlearn_on_long_ragged_batch(leave):
    """Long sequences of a ragged batch, from forgetful chains to one that never moves
    between states. The path's own log joint must equal hmmlearn's best (these emissions
    have exact ties, so the paths themselves may differ there)."""
    k = 3
    a = np.full((k, k), leave / (k - 1)) + np.eye(k) * (1 - leave - leave / (k - 1))
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.3, 0.2], transition=a,
        emission=[[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]])
    xs = [model.sample(1, n, seed=n).values[0] for n in (3000, 2500, 700, 2049)]
    seqs = Sequences.from_list(xs)
    p = model.params
    paths, joint = inference.hmm_viterbi(p["initial"], p["transition"],
                                         model._log_lik(p, seqs), seqs.lengths)
    ref = _hmmlearn(model)
    with np.errstate(divide="ignore"):
        log_a, log_init = np.log(p["transition"].numpy()), np.log(p["initial"].numpy())
    for i, x in enumerate(xs):
        best, _ = ref.decode(x.numpy()[:, None], algorithm="viterbi")
        assert float(joint[i]) == pytest.approx(best, rel=1e-11)
        ours = paths[i, : len(x)].numpy()
        assert (paths[i, len(x):] == -1).all()
        assert ((ours >= 0) & (ours < k)).all()
        log_lik = model._log_lik(p, Sequences.from_list([x])).numpy()[0]
        assert _path_log_joint(log_init, log_a, log_lik, ours) == pytest.approx(best, rel=1e-11)


def test_packed_gaussian_rows_refused_by_the_guard_go_to_the_per_step_recursion():
    """A regime switch under a chain that almost never switches drops one row's mass below
    the kernels' guard: that row is recomputed by the per-step recursion from the packed
    Gaussian emissions (materialised on demand), the others stay on the fast path."""
    leave = 1e-200
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.5], transition=[[1 - leave, leave], [leave, 1 - leave]],
        means=[-5.0, 5.0], covariances=[1.0, 1.0])
    rng = np.random.default_rng(0)
    switch = np.r_[-5 + rng.normal(size=40), 5 + rng.normal(size=30)]
    xs = [switch, -5 + rng.normal(size=25), 5 + rng.normal(size=50), np.array([0.3])]
    seqs = Sequences.from_list(xs)
    ok = _kernel_rows_ok(model, seqs)
    assert not ok.all() and ok.any()  # both paths are exercised
    ref = _torch_reference(model, seqs)
    torch.testing.assert_close(model.log_prob(seqs), ref["log_prob"], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(model.log_prob_steps(seqs), ref["steps"], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(model.smoother(seqs), ref["smoothed"], rtol=0, atol=1e-12)
    stats = model.expected_stats(seqs, model.params)
    torch.testing.assert_close(stats["transition_counts"], ref["transition_counts"],
                               rtol=1e-10, atol=1e-10)
    w = ref["smoothed"][seqs.mask]
    torch.testing.assert_close(stats["sum_x"], w.T @ seqs.values3d()[seqs.mask], rtol=1e-10,
                               atol=1e-10)


def _per_step_reference(model, seqs, backward):
    """The exact per-step normalised torch recursions (padded outputs)."""
    p = model.params
    scaled = model._scaled(p, seqs)
    return inference._torch_passes(p["initial"], p["transition"], scaled,
                                   np.arange(len(seqs)), backward, True, 0)


def _gappy(seqs: Sequences, seed: int) -> Sequences:
    """The same sequences with about one step in eight missing (every coordinate)."""
    g = torch.Generator().manual_seed(seed)
    drop = (torch.rand(seqs.mask.shape, generator=g) < 0.125) & seqs.mask
    obs = seqs.mask & ~drop
    if seqs.values.ndim == 3:
        obs = obs[..., None].expand_as(seqs.values)
    values = torch.where(obs, seqs.values, torch.zeros((), dtype=seqs.values.dtype))
    return Sequences(values, seqs.lengths, observed=obs)


@pytest.mark.parametrize("name,missing", [(n, False) for n in MODELS]
                         + [("categorical", True), ("gaussian_full", True)])
def test_forward_backward_matches_per_step_recursion(name, missing, monkeypatch):
    """The compiled forward-backward on a ragged batch (long and short rows in no order, a
    length 1), with missing values too: smoothed and filtered marginals, per-step
    conditionals, transition and initial counts and the packed EM weights equal the exact
    per-step torch recursion, and no row falls back to it."""
    model = MODELS[name]()
    lengths = [700, 50, 301, 1, 129, 128, 255, 64]
    seqs = model.sample(len(lengths), max(lengths), seed=21)
    seqs = Sequences.from_list([s[:n] for s, n in zip(seqs.to_list(), lengths, strict=True)])
    if missing:
        seqs = _gappy(seqs, seed=4)
    p = model.params
    scaled = model._scaled(p, seqs)
    refs = {bw: _per_step_reference(model, seqs, bw) for bw in (True, False)}

    def refuse(*args, **kwargs):
        raise AssertionError("a row fell back to the torch recursions")

    monkeypatch.setattr(inference, "_torch_passes", refuse)
    for bw, tm in ((True, True), (True, False), (False, False)):
        ref = refs[bw]
        got = inference.hmm_forward_backward(p["initial"], p["transition"], scaled, backward=bw,
                                             time_major=tm)
        torch.testing.assert_close(got["log_prob"], ref["steps"].sum(-1), rtol=1e-12,
                                   atol=1e-10)
        if not tm:
            torch.testing.assert_close(got["steps"], ref["steps"], rtol=1e-12, atol=1e-12)
            key = "smoothed" if bw else "filtered"
            torch.testing.assert_close(got[key], ref[key], rtol=0, atol=1e-12)
        else:  # packed weights: compare them placed at their (sequence, step)
            full = torch.zeros(len(seqs), seqs.max_length, 3, dtype=torch.float64)
            full[got["index"][0], got["index"][1]] = got["weights"]
            torch.testing.assert_close(full, ref["smoothed"], rtol=0, atol=1e-12)
            assert got["weights"].shape[0] == int(seqs.lengths.sum())
        if bw:
            for key in ("transition_counts", "initial_counts"):
                torch.testing.assert_close(got[key], ref[key], rtol=1e-11, atol=1e-11)


def test_forward_backward_of_a_chain_that_barely_forgets():
    # Long sequences under a very sticky chain: the same per-step recursion.
    model = _categorical(4, 5, seed=14, sticky=500.0)
    p = model.params
    g = torch.Generator().manual_seed(5)
    seqs = Sequences.from_list([torch.randint(5, (n,), generator=g) for n in (900, 333, 40)])
    got = inference.hmm_forward_backward(p["initial"], p["transition"], model._scaled(p, seqs))
    ref = _per_step_reference(model, seqs, True)
    torch.testing.assert_close(got["smoothed"], ref["smoothed"], rtol=0, atol=1e-12)
    torch.testing.assert_close(got["steps"], ref["steps"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["transition_counts"], ref["transition_counts"], rtol=1e-11,
                               atol=1e-11)


def _viterbi_stored_backpointers(log_init, log_a, log_lik):
    """Textbook Viterbi of one sequence ``[T, K]``: backpointers stored at every step, the
    first maximiser taken (lowest state index on ties)."""
    delta = log_init + log_lik[0]
    back = []
    for t in range(1, log_lik.shape[0]):
        s = delta[:, None] + log_a  # [from, to]
        back.append(s.argmax(0))
        delta = s.max(0) + log_lik[t]
    path = [int(delta.argmax())]
    for bp in reversed(back):
        path.append(int(bp[path[-1]]))
    return path[::-1], float(delta.max())


def test_viterbi_ties_resolve_as_stored_backpointers():
    # Exact ties everywhere: two identical states and probabilities that are powers of two,
    # on a ragged batch (the recomputed backpointers must pick the same first maximiser).
    half = [0.5, 0.25, 0.25]
    model = HiddenMarkovModel.from_params(
        initial=torch.tensor([0.25, 0.25, 0.5], dtype=F64),
        transition=torch.tensor([half, [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]], dtype=F64),
        emission=torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.25, 0.75]], dtype=F64))
    g = torch.Generator().manual_seed(8)
    xs = [torch.randint(2, (n,), generator=g) for n in (40, 7, 1, 23)]
    paths = model.most_likely_states(Sequences.from_list(xs))
    p = model.params
    log_e = torch.log(p["emission"]).T.numpy()
    for i, x in enumerate(xs):
        ref, _ = _viterbi_stored_backpointers(np.log(p["initial"].numpy()),
                                              np.log(p["transition"].numpy()), log_e[x.numpy()])
        assert paths[i, : len(x)].tolist() == ref


def test_long_forward_backward_flushes_at_tiny_parameters(monkeypatch):
    # The parameters of test_kernels_form_no_subnormals_at_tiny_parameters on longer
    # sequences through the model's route: flushing mode, no subnormal, no fallback, and
    # still the per-step recursion.
    model = _tiny_parameter_model()
    raw = model.sample(3, 400, seed=6).to_list()
    seqs = Sequences.from_list([s[:n] for s, n in zip(raw, (400, 150, 9), strict=True)])
    p = model.params
    scaled = model._scaled(p, seqs)
    ref = _per_step_reference(model, seqs, True)
    seen = []
    original = compiled.forward_backward

    def checked(*args, **kwargs):
        assert kwargs["flush"]
        out = original(*args, **kwargs)
        seen.append(out["ok"].all() and not _subnormal(out["post"]).any())
        return out

    monkeypatch.setattr(compiled, "forward_backward", checked)
    monkeypatch.setattr(inference, "_torch_passes", None)  # no row may be refused
    got = inference.hmm_forward_backward(p["initial"], p["transition"], scaled)
    assert seen and all(seen)
    torch.testing.assert_close(got["smoothed"], ref["smoothed"], rtol=0, atol=1e-12)
    torch.testing.assert_close(got["steps"], ref["steps"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_compiled_viterbi_equals_the_textbook_recursion(seed):
    """The compiled max-product (backpointers recomputed along the chosen path) against the
    textbook recursion with stored backpointers, on ragged batches: random chains from
    forgetful to very sticky, impossible moves (``-inf``), Gaussian emissions (no ties)."""
    from probseq.hmm import compiled

    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 7))
    stay = [0.5, 0.9, 0.99, 0.999][seed % 4]
    a = rng.dirichlet(np.ones(k), size=k) * (1 - stay) + np.eye(k) * stay
    if k > 2 and seed % 2:
        a[0, 1] = 0.0  # an impossible move
        a /= a.sum(1, keepdims=True)
    init = rng.dirichlet(np.ones(k))
    lengths = np.array([int(v) for v in rng.integers(1, 400, size=5)] + [400, 1])
    log_lik = rng.normal(scale=1.5, size=(len(lengths), 400, k))
    with np.errstate(divide="ignore"):
        log_a, log_init = np.log(a), np.log(init)
    original = log_lik.copy()
    paths, best = compiled.viterbi(log_init, log_a, log_lik, lengths)
    np.testing.assert_array_equal(log_lik, original)  # inputs untouched
    for i, n in enumerate(lengths):
        ref, ref_best = _viterbi_stored_backpointers(log_init, log_a, log_lik[i, :n])
        assert paths[i, :n].tolist() == ref
        assert (paths[i, n:] == -1).all()
        assert best[i] == ref_best  # the same sums, maximised exactly


def test_compiled_viterbi_of_an_impossible_sequence():
    """A sequence of probability zero (an emission no state can give) has log joint -inf and
    still a well-formed path; the other rows are unaffected."""
    from probseq.hmm import compiled

    log_lik = np.zeros((2, 5, 2))
    log_lik[0, 3] = -np.inf
    paths, best = compiled.viterbi(np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.1, 0.9]]),
                                   log_lik, np.array([5, 4]))
    assert best[0] == -np.inf and np.isfinite(best[1])
    assert ((paths[0] >= 0) & (paths[0] < 2)).all()
    assert paths[1, 4] == -1


# ---------------------------------------------------------------- partly labelled states
def _labelled_brute_force(model: HiddenMarkovModel, x: np.ndarray, labels: np.ndarray):
    """Posterior marginals P(z_t | x, known states) and the best path through the known
    states, by enumerating every state path (scipy densities, independent of the model)."""
    from scipy import stats

    p = {n: v.numpy() for n, v in model.params.items()}
    k, t_len = p["initial"].shape[0], x.shape[0]
    sd = np.sqrt(p["covariances"][:, 0, 0])
    weights, paths = [], []
    for z in itertools.product(range(k), repeat=t_len):
        if any(lab >= 0 and lab != s for lab, s in zip(labels, z, strict=True)):
            continue
        lp = np.log(p["initial"][z[0]]) + sum(np.log(p["transition"][a, b])
                                               for a, b in itertools.pairwise(z))
        lp += stats.norm(p["means"][list(z), 0], sd[list(z)]).logpdf(x).sum()
        weights.append(lp)
        paths.append(z)
    w = np.exp(np.array(weights) - np.logaddexp.reduce(weights))
    marg = np.zeros((t_len, k))
    for wi, z in zip(w, paths, strict=True):
        marg[np.arange(t_len), list(z)] += wi
    return marg, np.array(paths[int(np.argmax(weights))])


def test_labelled_smoother_and_viterbi_equal_enumeration():
    model = HiddenMarkovModel.from_params(
        initial=[0.5, 0.3, 0.2], transition=[[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]],
        means=[-1.0, 0.5, 2.0], covariances=[1.0, 0.6, 1.5])
    rng = np.random.default_rng(0)
    x = rng.normal(size=6)
    labels = np.array([-1, 2, -1, -1, 0, -1])
    marg, best = _labelled_brute_force(model, x, labels)
    np.testing.assert_allclose(model.smoother(x, states=labels).numpy(), marg, atol=1e-12)
    np.testing.assert_array_equal(model.most_likely_states(x, states=labels).numpy(), best)
    masked = np.ma.MaskedArray([0, 2, 0, 0, 0, 0], mask=labels < 0)
    np.testing.assert_allclose(model.smoother(x, states=masked).numpy(), marg, atol=1e-12)
    as_list = [None if v < 0 else int(v) for v in labels]
    np.testing.assert_allclose(model.smoother([x], states=[as_list])[0].numpy(), marg,
                               atol=1e-12)
    with pytest.raises(ValueError, match="5 labels"):
        model.smoother(x, states=labels[:5])
    with pytest.raises(ValueError, match=r"-1\.\.2"):
        model.smoother(x, states=np.array([3, -1, -1, -1, -1, -1]))


def test_four_percent_labelled_steps_fix_the_numbering():
    """Labels on 4% of the steps, in a numbering that permutes the simulation's: every
    restart seed fits states numbered as the labels are."""
    truth = HiddenMarkovModel.from_params(
        initial=[1 / 3] * 3, transition=[[0.9, 0.05, 0.05], [0.05, 0.9, 0.05],
                                         [0.05, 0.05, 0.9]],
        means=[-3.0, 0.0, 3.0], covariances=[1.0, 1.0, 1.0])
    data, z = truth.sample(10, 100, seed=0, return_states=True)
    perm = np.array([2, 0, 1])  # true state s is labelled perm[s]
    labels = permuted_labels(z.numpy(), perm)
    means = np.array([-3.0, 0.0, 3.0])
    for seed in range(3):
        model = HiddenMarkovModel(3, emission="gaussian").fit(
            data, states=labels, num_restarts=1, seed=seed, progress=False)
        fitted = model.params["means"][:, 0].numpy()
        np.testing.assert_allclose(fitted[perm], means, atol=0.25)
    with pytest.raises(ValueError, match="EM"):
        HiddenMarkovModel(3, emission="gaussian").fit(data, states=labels, method="gradient")
