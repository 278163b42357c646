"""One registry of every model, many generic checks of the protocol (docs/protocol.md).

Each entry builds a model fitted on small data of its kind. The checks loop over the whole
registry (torch's test_distributions.py style); capability flags select the checks that
apply (exact likelihood, discrete or continuous, univariate or not).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate

import probseq as ps
from probseq import Sequences
from probseq.datasets import gaussian_hmm, hmm_symbols

V = 3


def _symbols(seed=0) -> list[np.ndarray]:
    seqs, _ = hmm_symbols(24, 30, [0.6, 0.4], [[0.8, 0.2], [0.3, 0.7]],
                          [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], seed=seed)
    rng = np.random.default_rng(seed)
    return [s[: rng.integers(8, 31)].numpy() for s in seqs]


def _reals(seed=0) -> list[np.ndarray]:
    seqs, _ = gaussian_hmm(24, 40, seed=seed)
    rng = np.random.default_rng(seed)
    return [s[: rng.integers(10, 41)].numpy() for s in seqs]


def _reals2(seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n in rng.integers(10, 41, size=20):
        z = np.cumsum(rng.normal(0, 0.3, size=(n, 1)), axis=0)
        out.append(np.hstack([z, -z]) + rng.normal(0, 0.5, size=(n, 2)))
    return out


def _counts(seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(rng.choice([1.0, 6.0], size=n)) for n in rng.integers(10, 31, size=20)]


@dataclass
class Entry:
    name: str
    build: Any  # () -> unfitted model
    data: Any  # seed -> list of arrays
    fit_kw: dict = field(default_factory=dict)
    univariate: bool = True

    @property
    def kind(self) -> str:
        return "continuous" if self.data in (_reals, _reals2) else "discrete"


def _entries() -> list[Entry]:
    quick_rnn = {"max_epochs": 3, "batch_size": 8, "seed": 0, "progress": False}
    quick_switching = {"num_restarts": 2, "max_epochs": 30, "seed": 0, "progress": False}
    out = [
        Entry("markov1", lambda: ps.MarkovChain(order=1, alpha=0.5), _symbols),
        Entry("markov2_kn", lambda: ps.MarkovChain(order=2, smoothing="kneser-ney"), _symbols),
        Entry("ar2", lambda: ps.AutoRegressive(order=2), _reals),
        Entry("hmm_categorical", lambda: ps.HiddenMarkovModel(2, emission="categorical"),
              _symbols, {"seed": 0, "max_epochs": 20}),
        Entry("hmm_gaussian", lambda: ps.HiddenMarkovModel(2, emission="gaussian"), _reals,
              {"seed": 0, "max_epochs": 20}),
        Entry("hmm_gaussian_2d_diag",
              lambda: ps.HiddenMarkovModel(2, emission="gaussian", covariance_type="diag"),
              _reals2, {"seed": 0, "max_epochs": 20}, univariate=False),
        Entry("hmm_poisson", lambda: ps.HiddenMarkovModel(2, emission="poisson"), _counts,
              {"seed": 0, "max_epochs": 20}),
        Entry("hsmm_categorical",
              lambda: ps.HiddenSemiMarkovModel(2, emission="categorical", max_duration=8),
              _symbols, {"seed": 0, "max_epochs": 10, "num_restarts": 2}),
        Entry("hsmm_gaussian_poisson_durations",
              lambda: ps.HiddenSemiMarkovModel(2, emission="gaussian", duration="poisson",
                                               max_duration=10),
              _reals, {"seed": 0, "max_epochs": 10, "num_restarts": 2}),
        Entry("hsmm_counts_negbin_durations",
              lambda: ps.HiddenSemiMarkovModel(2, emission="poisson",
                                               duration="negative_binomial", max_duration=10),
              _counts, {"seed": 0, "max_epochs": 10, "num_restarts": 2}),
        Entry("local_level", lambda: ps.LinearGaussianSSM.local_level(), _reals),
        Entry("structural_seasonal4", lambda: ps.LinearGaussianSSM.structural(seasonal=4),
              _reals),
        Entry("lgssm_2d", lambda: ps.LinearGaussianSSM(state_dim=1, obs_dim=2), _reals2,
              {"max_epochs": 20, "seed": 0}, univariate=False),
        Entry("dmm", lambda: ps.DeepMarkovModel(latent_dim=2, hidden_dim=8, rnn_dim=8),
              _reals, {"max_epochs": 2, "seed": 0, "progress": False}),
    ]
    for cell in ("rnn", "lstm", "gru", "transformer"):
        out.append(Entry(f"{cell}_categorical",
                         lambda c=cell: ps.RecurrentModel(cell=c, hidden_size=8), _symbols,
                         quick_rnn))
    out += [
        Entry("gru_gaussian",
              lambda: ps.RecurrentModel(cell="gru", hidden_size=8, emission="gaussian"),
              _reals, quick_rnn),
        Entry("lstm_mixture_2d",
              lambda: ps.RecurrentModel(cell="lstm", hidden_size=8, emission="mixture"),
              _reals2, quick_rnn, univariate=False),
        Entry("switching_ar", lambda: ps.SwitchingAutoRegressive(2, 1), _reals, quick_switching),
        Entry("arhmm_2d", lambda: ps.SwitchingAutoRegressive(2, 1, switching="intercept"),
              _reals2, quick_switching, univariate=False),
        Entry("iohmm_gaussian", lambda: ps.InputOutputHMM(2, emission="gaussian"), _reals,
              {"seed": 0, "max_epochs": 20, "progress": False}),
    ]
    out.append(Entry("var1_2d", lambda: ps.VectorAutoRegressive(order=1), _reals2,
                     univariate=False))
    out.append(Entry("ar1_exact_mle", lambda: ps.AutoRegressive(order=1), _reals,
                     {"method": "mle"}))
    # a posterior (NUTS, deliberately short: its warnings of low ESS are expected)
    out.append(Entry("bayes_markov1", lambda: ps.BayesianModel(
        ps.MarkovChain(order=1), num_samples=30, warmup_steps=30), _symbols, {"seed": 0}))
    out.append(Entry("arma11", lambda: ps.ARIMA((1, 0, 1)), _reals))
    out.append(Entry("sarima_diffuse", lambda: ps.ARIMA((0, 1, 1), (0, 1, 1, 3)), _reals))
    return out


ENTRIES = {e.name: e for e in _entries()}
_FITTED: dict[str, Any] = {}


def fitted(name: str):
    """The registry's model, fitted once per session (fits are deterministic)."""
    if name not in _FITTED:
        e = ENTRIES[name]
        _FITTED[name] = e.build().fit(e.data(0), **e.fit_kw)
    return _FITTED[name]


names = pytest.mark.parametrize("name", list(ENTRIES))


def _exact(name):
    return fitted(name).exact_likelihood


# ------------------------------------------------------------------------ batches, padding
@names
def test_batch_equals_one_by_one(name):
    m, data = fitted(name), ENTRIES[name].data(1)[:6]
    batch = m.log_prob(data)
    single = torch.stack([m.log_prob(x) for x in data])
    torch.testing.assert_close(batch, single, rtol=1e-10, atol=1e-9)
    assert batch.dtype == torch.float64 and batch.shape == (6,)


@names
def test_padding_values_and_order_change_nothing(name):
    m, data = fitted(name), ENTRIES[name].data(2)[:6]
    seqs = Sequences.from_list(data)
    ref = m.log_prob(seqs)
    garbage = seqs.values.clone()
    fill = 2 if seqs.is_discrete else 1e6
    garbage[~seqs.mask] = fill
    padded = Sequences(garbage, seqs.lengths.clone())  # bypass zero padding on purpose
    torch.testing.assert_close(m.log_prob(padded), ref, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(m.log_prob_steps(padded), m.log_prob_steps(seqs),
                               rtol=1e-10, atol=1e-9)
    perm = [3, 0, 5, 1, 4, 2]
    torch.testing.assert_close(m.log_prob([data[i] for i in perm]), ref[perm],
                               rtol=1e-10, atol=1e-9)


@names
def test_steps_sum_to_log_prob(name):
    m, data = fitted(name), ENTRIES[name].data(3)[:6]
    steps = m.log_prob_steps(data)
    lengths = [len(x) for x in data]
    assert steps.shape == (6, max(lengths))
    for i, n in enumerate(lengths):
        assert steps[i, n:].eq(0).all()
    torch.testing.assert_close(steps.sum(-1), m.log_prob(data), rtol=1e-10, atol=1e-8)


# ------------------------------------------------------------------------ sampling
@names
def test_samples_shape_prefix_and_finite_scores(name):
    m, e = fitted(name), ENTRIES[name]
    s = m.sample(4, 12, seed=0)
    assert isinstance(s, Sequences) and len(s) == 4 and s.lengths.eq(12).all()
    if e.kind == "continuous" and not e.univariate:
        assert s.values.shape == (4, 12, 2)
    else:
        assert s.values.shape == (4, 12)
    assert torch.isfinite(m.log_prob(s)).all()
    prefix = e.data(4)[0][:5]
    c = m.sample(3, 9, prefix=prefix, seed=1)
    torch.testing.assert_close(c.values[:, :5], torch.as_tensor(prefix).expand_as(c.values[:, :5])
                               .to(c.values.dtype), rtol=0, atol=0)


@names
def test_same_seed_same_samples(name):
    m = fitted(name)
    assert m.sample(3, 7, seed=11) == m.sample(3, 7, seed=11)
    assert m.sample(3, 7, seed=11) != m.sample(3, 7, seed=12)


# ------------------------------------------------------------------------ normalisation
def _discrete(name):
    return ENTRIES[name].kind == "discrete" and ENTRIES[name].data is _symbols


@pytest.mark.parametrize("name", [n for n in ENTRIES if _discrete(n)])
def test_discrete_probabilities_sum_to_one(name):
    m = fitted(name)
    for t in (1, 2, 3):
        all_seqs = [np.array(x) for x in itertools.product(range(V), repeat=t)]
        total = torch.logsumexp(m.log_prob(all_seqs), 0)
        assert abs(float(total)) < 1e-9, f"T={t}: log total {float(total)}"


def _integrate_1d(log_density, samples: np.ndarray) -> float:
    """Integrate a univariate density on a fine grid covering 12 sample s.d. either side."""
    centre, spread = samples.mean(), samples.std()
    grid = np.linspace(centre - 12 * spread, centre + 12 * spread, 4001)
    return float(integrate.simpson(np.exp(log_density(grid)), x=grid))


@pytest.mark.parametrize(
    "name", [n for n in ENTRIES if ENTRIES[n].kind == "continuous" and ENTRIES[n].univariate]
)
def test_continuous_density_integrates_to_one_at_t2(name):
    """p(x1, x2) = p(x1) p(x2 | x1): p(x1) integrates to 1, and so does p(x2 | x1) at five
    values of x1 (grids placed by the model's own samples, so diffuse priors are covered)."""
    m = fitted(name)
    if not m.exact_likelihood:
        pytest.skip("the likelihood is a bound, not a density")
    if m.num_diffuse_steps > 1:
        pytest.skip("both steps are diffuse (not scored)")
    first = m.sample(4000, 1, seed=0).values[:, 0].numpy()
    if not m.num_diffuse_steps:  # a diffuse first step is not scored: check p(x2 | x1) only
        total = _integrate_1d(lambda g: m.log_prob(Sequences.from_padded(g[:, None])).numpy(),
                              first)
        assert abs(total - 1) < 1e-4, f"p(x1) integrates to {total}"
    else:
        first = np.quantile(first, [0.4, 0.6])
    for x1 in np.quantile(first, [0.02, 0.25, 0.5, 0.75, 0.98]):
        second = m.sample(4000, 2, prefix=[float(x1)], seed=1).values[:, 1].numpy()

        def cond(g, x1=x1):
            pairs = np.stack([np.full_like(g, x1), g], axis=1)
            return m.log_prob_steps(Sequences.from_padded(pairs))[:, 1].numpy()

        total = _integrate_1d(cond, second)
        assert abs(total - 1) < 1e-4, f"p(x2 | x1={x1:.3g}) integrates to {total}"


@pytest.mark.parametrize("name", [n for n in ENTRIES if _discrete(n)])
def test_sampler_frequencies_agree_with_log_prob(name):
    m = fitted(name)
    n = 20_000
    s = m.sample(n, 3, seed=5).values.numpy()
    codes = s @ np.array([V * V, V, 1])
    freq = np.bincount(codes, minlength=V**3) / n
    all_seqs = [np.array(x) for x in itertools.product(range(V), repeat=3)]
    p = m.log_prob(all_seqs).exp().numpy()
    tv = 0.5 * np.abs(freq - p).sum()
    assert tv < 0.03, tv


# ------------------------------------------------------------------------ files, seeds, inputs
@names
def test_save_load_reproduces_exactly(name, tmp_path):
    m, data = fitted(name), ENTRIES[name].data(5)[:5]
    m.save(tmp_path / "m.pt")
    m2 = ps.load(tmp_path / "m.pt")
    assert type(m2) is type(m) and m2.num_params == m.num_params
    assert torch.equal(m.log_prob(data), m2.log_prob(data))
    assert m.sample(2, 5, seed=3) == m2.sample(2, 5, seed=3)


@names
def test_same_seed_same_fit_and_caller_data_untouched(name):
    e = ENTRIES[name]
    data = e.data(0)
    before = [x.copy() for x in data]
    m2 = e.build().fit(data, **e.fit_kw)
    for a, b in zip(data, before, strict=True):
        np.testing.assert_array_equal(a, b)
    probe = e.data(6)[:4]
    # Same seed, same fit, to rounding: a BLAS or SIMD reduction may round differently with
    # the memory alignment of its buffers (seen: the 2-D AR-HMM's EM differs in the last
    # bits in about one run in five), which says nothing about reproducibility; a different
    # draw of initial values would differ by far more than 1e-12.
    torch.testing.assert_close(fitted(name).log_prob(probe), m2.log_prob(probe),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "name", [n for n in ENTRIES if ENTRIES[n].kind == "continuous"]
)
def test_float32_input_is_scored_as_its_float64_value(name):
    m, data = fitted(name), ENTRIES[name].data(7)[:4]
    f32 = [x.astype(np.float32) for x in data]
    f64 = [x.astype(np.float64) for x in f32]
    assert torch.equal(m.log_prob(f32), m.log_prob(f64))


def _bad_inputs(e: Entry, m) -> list[tuple[Any, str]]:
    good = e.data(0)[0]
    cases: list[tuple[Any, str]] = [
        ([good, good[:0]], "sequence 1 is empty"),
        ([good, "abc"], "sequence 1"),
    ]
    if e.kind == "discrete":
        cases += [
            ([good, good.astype(float)], "sequence 1 has float values"),
            ([good, np.array([0, -1, 1])], "sequence 1 contains a negative symbol"),
        ]
        if not m.supports_missing:
            gap = np.ma.MaskedArray(good, mask=np.arange(len(good)) == 1)
            cases.append(([good, gap], "sequence 1 has a missing value"))
        if m.num_symbols is not None and m.data_kind == "discrete":
            cases.append(([good, np.array([0, m.num_symbols])], "sequence 1 contains symbol"))
    else:
        nan = good.copy()
        nan[1] = np.nan
        inf = good.copy()
        inf[0] = np.inf
        cases.append(([inf], "sequence 0 contains inf"))
        if not m.supports_missing:
            cases.append(([good, nan], "sequence 1 has a missing value"))
        if e.univariate:
            cases.append(([np.stack([good, good], axis=-1)], "2-D|dimension|D="))
        else:
            cases.append(([good[:, 0]], "dimension|D=|1-D"))
    if m.min_length > 1:
        cases.append(([good[: m.min_length - 1]], "needs at least"))
    return cases


@names
def test_bad_input_raises_value_error_naming_problem(name):
    e, m = ENTRIES[name], fitted(name)
    for data, message in _bad_inputs(e, m):
        for method in (m.log_prob, m.log_prob_steps):
            with pytest.raises(ValueError, match=message):
                method(data)
    for data, message in _bad_inputs(e, m)[:1]:
        with pytest.raises(ValueError, match=message):
            e.build().fit(data, **e.fit_kw)


@names
def test_unfitted_model_refuses(name):
    m = ENTRIES[name].build()
    with pytest.raises(ValueError, match="not fitted"):
        m.log_prob(ENTRIES[name].data(0)[0])
    with pytest.raises(ValueError, match="not fitted"):
        m.sample(1, 3)


# ------------------------------------------------------------------------ long sequences
def _long_data(e: Entry, t: int) -> np.ndarray:
    """One long sequence of the entry's kind, drawn with numpy (sampling 10^5 steps from a
    sequential sampler would dominate the test)."""
    rng = np.random.default_rng(0)
    if e.data is _symbols:
        return rng.integers(0, V, size=t)
    if e.data is _counts:
        return rng.poisson(3.0, size=t)
    noise = rng.normal(size=(t, 1 if e.univariate else 2))
    x = 0.3 * np.cumsum(noise, axis=0) / np.sqrt(np.arange(1, t + 1))[:, None] + noise
    return x[:, 0] if e.univariate else x


@pytest.mark.parametrize(
    "name", [n for n in ENTRIES if n != "dmm" and not n.startswith("transformer")]
)
def test_long_sequence_is_finite_and_steps_agree(name):
    """T = 10^5 for the exact classical models (2 * 10^4 for the neural ones and the
    IO-HMM, whose time-varying transitions run a per-step torch loop)."""
    m, e = fitted(name), ENTRIES[name]
    stepwise = name.startswith(("lstm", "gru", "rnn", "iohmm"))
    x = _long_data(e, 20_000 if stepwise else 100_000)
    lp = m.log_prob(x)
    assert torch.isfinite(lp)
    torch.testing.assert_close(m.log_prob_steps(x).sum(), lp, rtol=1e-9, atol=1e-6)


# ------------------------------------------------------------------------ property-based
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.integers(0, V - 1), min_size=1, max_size=15), min_size=1,
                max_size=5),
       st.sampled_from(["markov1", "markov2_kn", "hmm_categorical", "gru_categorical"]))
def test_ragged_batches_property(lists, name):
    m = fitted(name)
    batch = m.log_prob(Sequences.from_list(lists))
    single = torch.stack([m.log_prob(np.array(x)) for x in lists])
    torch.testing.assert_close(batch, single, rtol=1e-10, atol=1e-9)
    assert torch.isfinite(batch).all()


# ------------------------------------------------------------------------ missing values
def _with_gap(x: np.ndarray, step: int, coord: int | None = None):
    """``x`` with one missing value: a masked symbol, or NaN (one coordinate if given)."""
    if x.dtype.kind in "iu":
        return np.ma.MaskedArray(x, mask=np.arange(len(x)) == step)
    y = x.astype(float).copy()
    if coord is None:
        y[step] = np.nan
    else:
        y[step, coord] = np.nan
    return y


def _filled(x: np.ndarray, step: int, value, coord: int | None = None) -> np.ndarray:
    y = x.copy()
    if coord is None:
        y[step] = value
    else:
        y[step, coord] = value
    return y


@pytest.mark.parametrize("name", [n for n in ENTRIES if ENTRIES[n].build().supports_missing])
@pytest.mark.parametrize("step", [0, 2, 5])
def test_missing_value_is_marginalised_exactly(name, step):
    """log p(x without x_step) equals the sum (symbols) or integral (reals) of the joint over
    the missing value, and the per-step scores are 0 there and still sum to log_prob."""
    e, m = ENTRIES[name], fitted(name)
    if 0 < step < m.num_diffuse_steps:
        # A gap inside the diffuse period changes which observations locate the diffuse
        # state (a seasonal's unobserved season stays diffuse until it recurs): log_prob
        # conditions on other steps than the integral of the gap-free density does, and the
        # dropped -log(2 pi F_inf) / 2 terms differ. The identity holds after the diffuse
        # period (step 5 here) and wherever every F_inf is 1 (the local level).
        pytest.skip("a gap inside the diffuse period changes what log_prob conditions on")
    x = e.data(3)[0][:6]
    coord = None if e.univariate or e.kind == "discrete" else 1
    gappy = _with_gap(x, step, coord)
    got = float(m.log_prob(gappy))
    steps = m.log_prob_steps(gappy)
    assert abs(float(steps.sum()) - got) < 1e-9 * max(1.0, abs(got))
    if coord is None:
        assert float(steps[step]) == 0.0
    if e.kind == "discrete":
        top = m.num_symbols if m.data_kind == "discrete" else 200
        ref = torch.logsumexp(torch.stack([m.log_prob(_filled(x, step, v)) for v in range(top)]),
                              0)
        assert abs(got - float(ref)) < 1e-9 * max(1.0, abs(got))
    else:
        samples = m.sample(200, len(x), seed=0).values.numpy()
        col = samples[:, step] if coord is None else samples[:, step, coord]
        if m.num_diffuse_steps:  # samples from the stored diffuse-like prior are too wide;
            # a grid of +-60 data s.d. still covers a predictive that sits far from x[step]
            col = x[step] + 5 * x.std() * np.random.default_rng(0).normal(size=200)
        observed_value = x[step] if coord is None else x[step, coord]
        ref_val = float(m.log_prob(x))

        def log_density(grid):  # log p(x with the gap filled by each grid value) - ref_val
            batch = np.repeat(x[None].astype(float), len(grid), axis=0)
            if coord is None:
                batch[:, step] = grid
            else:
                batch[:, step, coord] = grid
            return m.log_prob(Sequences.from_padded(batch)).numpy() - ref_val

        total = _integrate_1d(log_density, np.append(col, observed_value))
        assert abs(got - ref_val - np.log(total)) < 1e-4


@pytest.mark.parametrize("name", [n for n in ENTRIES if ENTRIES[n].build().supports_missing])
def test_no_missing_values_means_the_same_scores(name):
    e, m = ENTRIES[name], fitted(name)
    data = e.data(4)[:4]
    as_masked = [np.ma.MaskedArray(x, mask=np.zeros(x.shape, bool)) for x in data]
    torch.testing.assert_close(m.log_prob(as_masked), m.log_prob(data), rtol=0, atol=0)


# ------------------------------------------------------------------------ covariates, options
@pytest.mark.parametrize("name", [n for n in ENTRIES if not ENTRIES[n].build().supports_exog])
def test_exog_refused_by_models_without_covariates(name):
    e, m = ENTRIES[name], fitted(name)
    x = e.data(0)[0]
    with pytest.raises(ValueError, match="does not take covariates.*models that do"):
        m.log_prob(x, exog=np.ones((len(x), 1)))


@names
def test_unknown_fit_option_is_refused_naming_it(name):
    e = ENTRIES[name]
    with pytest.raises(ValueError, match="no_such_option"):
        e.build().fit(e.data(0), **e.fit_kw, no_such_option=1)


# ------------------------------------------------------------------------ scale equivariance
SCALES = (1e-6, 1e-3, 1e3, 1e6)


@pytest.mark.parametrize("name", [n for n in ENTRIES if ENTRIES[n].kind == "continuous"])
def test_scale_equivariance(name):
    """Fitting c*x and scoring c*y gives the fit on x scored on y minus n*D*log(c); samples
    scale by c. Tolerance: 1e-4 nats per step. A model whose floors, jitters or tolerances
    depend on the data's units misses this by orders of magnitude; what remains is rounding in
    the iterative fits (float64 EM / L-BFGS, float32 networks on standardised inputs)."""
    e = ENTRIES[name]
    train, test = e.data(0), e.data(5)[:5]
    ref_model = fitted(name)
    ref = ref_model.log_prob(test)
    # n * D per sequence, without the diffuse steps (not scored)
    steps = np.array([x.size - ref_model.num_diffuse_steps * (x.size // len(x)) for x in test],
                     dtype=float)
    ref_samples = ref_model.sample(3, 12, seed=7).values
    for c in SCALES:
        m = e.build().fit([c * x for x in train], **e.fit_kw)
        got = m.log_prob([c * x for x in test])
        expected = ref - torch.as_tensor(steps) * np.log(c)
        err = ((got - expected).abs() / torch.as_tensor(steps)).max()
        assert err < 1e-4, f"c={c}: {err:.2e} nats/step off"
        torch.testing.assert_close(m.sample(3, 12, seed=7).values, c * ref_samples,
                                   rtol=1e-4, atol=0)


# ------------------------------------------------------------------------ degenerate data, config
@names
def test_fit_does_not_change_the_constructor_config(name):
    e = ENTRIES[name]
    m = e.build()
    before = m.get_config()
    m.fit(e.data(0), **e.fit_kw)
    assert m.get_config() == before


def _degenerate(e: Entry) -> dict[str, list[np.ndarray]]:
    if e.kind == "discrete":
        return {"one repeated symbol": [np.zeros(20, dtype=np.int64)] * 6,
                "length-1 sequences": [np.array([i % 2]) for i in range(30)]}
    d = () if e.univariate else (2,)
    t = np.arange(40.0).reshape(-1, *([1] * len(d)))
    return {"constant": [np.full((40, *d), 5.0)] * 3,
            "exactly linear": [np.broadcast_to(1.0 + 0.5 * t, (40, *d)).copy()] * 3,
            "length-1 sequences": [np.full((1, *d), float(i)) for i in range(30)]}


@names
def test_degenerate_data_fits_sensibly_or_is_refused(name):
    """Constant and exactly linear series, one repeated symbol, length-1 sequences: a model
    either refuses with a ValueError or fits one whose scores are finite and sane (no
    +165 nats on five constant values, no -6e27 for a nearby value)."""
    e = ENTRIES[name]
    for what, data in _degenerate(e).items():
        try:
            m = e.build().fit(data, **e.fit_kw)
        except ValueError:
            continue
        ll = m.log_prob(data)
        steps = torch.as_tensor([x.shape[0] for x in data], dtype=torch.float64)
        assert torch.isfinite(ll).all(), what
        if e.kind == "discrete":
            assert (ll <= 1e-9).all(), what
        else:
            near = [x + 1e-3 * np.abs(x).max() + 1e-3 for x in data]
            per_step = torch.cat([ll / steps, m.log_prob(near) / steps])
            assert torch.isfinite(per_step).all() and per_step.abs().max() < 50, (
                f"{what}: {per_step.abs().max():.3g} nats per step"
            )

# ------------------------------------------------------------------------ predictive hooks
#: families whose one-step predictive hook is not written yet (their owners add it); any
#: other family without it fails the check below.
NO_STEP_PREDICTIVE_YET = {"LinearGaussianSSM"}


def _has_step_predictive(m) -> bool:
    return type(m)._step_predictive is not ps.SequenceModel._step_predictive


@names
def test_step_predictive_matches_log_prob_steps_and_predict_shape(name):
    m, e = fitted(name), ENTRIES[name]
    if not _has_step_predictive(m):
        assert type(m).__name__ in NO_STEP_PREDICTIVE_YET, f"{name} lacks _step_predictive"
        pytest.skip(f"{type(m).__name__} has no _step_predictive yet")
    seqs = Sequences.from_list(e.data(1), kind="continuous" if e.kind == "continuous" else None)
    dist = m._step_predictive(seqs)
    assert tuple(dist.batch_shape) == tuple(seqs.values.shape[:2])
    values = seqs.values if seqs.is_discrete and m.data_kind == "discrete" else (
        seqs.values.to(torch.float64))
    scored = seqs.mask & (torch.arange(seqs.max_length) >= m.num_diffuse_steps)
    lp = torch.where(scored, dist.log_prob(values), torch.zeros((), dtype=torch.float64))
    ref = m.log_prob_steps(seqs)
    assert torch.isfinite(lp).all()
    if m.step_predictive_exact:
        torch.testing.assert_close(lp, ref, rtol=1e-9, atol=1e-9)
    else:  # an approximation (deep Markov: particle filter), reproducible call to call
        assert torch.equal(m._step_predictive(seqs).log_prob(values), dist.log_prob(values))
    pred = m.predict(seqs)
    assert pred.shape == seqs.values.shape
    assert not pred[~seqs.mask].any()
    fc = m.forecast(e.data(1)[0], 3, num_samples=50, seed=0)
    assert fc.mean.shape[0] == 3 and torch.isfinite(fc.mean.to(torch.float64)).all()
    if not m.step_predictive_exact:
        assert fc.method == "first step approximate, then sampled"
