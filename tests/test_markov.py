"""MarkovChain: exact normalisation by enumeration, hand counts, an independent dict-based
Kneser-Ney, sparse storage at scale, the sampler against log_prob, parameters and files."""

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

import probseq
from probseq import MarkovChain, Sequences

V = 3


def _corpus(seed=0, n=25, max_len=9, v=V):
    rng = np.random.default_rng(seed)
    # A skewed alphabet so that some contexts are frequent and some are never seen.
    p = np.array([0.6, 0.3, 0.1])[:v] if v == 3 else rng.dirichlet(np.ones(v))
    return [rng.choice(v, size=rng.integers(1, max_len + 1), p=p) for _ in range(n)]


def _all_sequences(v, length):
    return [list(s) for s in itertools.product(range(v), repeat=length)]


SMOOTHINGS = [
    {"smoothing": "additive"},
    {"smoothing": "additive", "alpha": 0.0},
    {"smoothing": "additive", "alpha": 2.0},
    {"smoothing": "kneser-ney"},
    {"smoothing": "modified-kneser-ney"},
    {},  # the default: modified Kneser-Ney
]


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("options", SMOOTHINGS)
def test_probabilities_sum_to_one_by_enumeration(order, options):
    m = MarkovChain(order=order, **options).fit(_corpus())
    for length in range(1, 6):
        lp = m.log_prob(_all_sequences(V, length))
        assert abs(torch.logsumexp(lp, 0).item()) < 1e-12, (order, options, length)


def test_from_params_sums_to_one_by_enumeration():
    rng = np.random.default_rng(1)
    m = MarkovChain.from_params(rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4), size=4))
    for length in range(1, 6):
        assert abs(torch.logsumexp(m.log_prob(_all_sequences(4, length)), 0).item()) < 1e-12


@pytest.mark.parametrize("options", SMOOTHINGS)
def test_steps_sum_and_padding_and_batch_order_change_nothing(options):
    m = MarkovChain(order=2, **options).fit(_corpus())
    test = _corpus(seed=5, n=12)
    lp = m.log_prob(test)
    steps = m.log_prob_steps(test)
    finite = torch.isfinite(lp)
    assert torch.allclose(steps.sum(-1)[finite], lp[finite], rtol=0, atol=1e-12)
    one_by_one = torch.stack([m.log_prob(s) for s in test])
    assert torch.equal(one_by_one, lp)
    perm = np.random.default_rng(2).permutation(len(test))
    assert torch.equal(m.log_prob([test[i] for i in perm]), lp[perm])
    # Padding values are ignored: a padded array whose padding holds other symbols.
    lengths = [len(s) for s in test]
    padded = np.full((len(test), max(lengths) + 3), 2, dtype=np.int64)
    for i, s in enumerate(test):
        padded[i, : len(s)] = s
    assert torch.equal(m.log_prob(Sequences.from_padded(padded, lengths)), lp)
    assert torch.equal(m.log_prob_steps(Sequences.from_padded(padded, lengths))[:, :steps.shape[1]],
                       steps)


def test_maximum_likelihood_equals_hand_counts():
    data = [[0, 1, 1, 0], [1, 1, 2], [0, 1]]
    m = MarkovChain(order=1, smoothing="additive", alpha=0.0).fit(data)
    # First symbols: 0, 1, 0. Transitions: 0->1 x2, 1->1 x2, 1->0, 1->2; nothing leaves 2.
    expected_initial = torch.tensor([2 / 3, 1 / 3, 0.0], dtype=torch.float64)
    expected_transition = torch.tensor(
        [[0, 1, 0], [1 / 4, 2 / 4, 1 / 4], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64
    )
    assert torch.allclose(m.params["initial"], expected_initial, atol=1e-15)
    assert torch.allclose(m.params["transition"], expected_transition, atol=1e-15)
    assert m.log_prob([0, 1, 2]).item() == pytest.approx(np.log(2 / 3 * 1 * 1 / 4), abs=1e-12)
    assert m.log_prob([2, 0]).item() == -np.inf  # the MLE gives the unseen start symbol 0
    # (symbols used - 1) x seen contexts (BOS, 0, 1; nothing leaves 2): 2 x 3.
    assert m.num_params == 6


def test_second_order_maximum_likelihood_equals_hand_counts():
    data = _corpus(seed=3, n=40)
    m = MarkovChain(order=2, smoothing="additive", alpha=0.0).fit(data)
    start1, start2, trans = Counter(), defaultdict(Counter), defaultdict(Counter)
    for s in data:
        s = [int(x) for x in s]
        start1[s[0]] += 1
        if len(s) > 1:
            start2[s[0]][s[1]] += 1
        for t in range(2, len(s)):
            trans[(s[t - 2], s[t - 1])][s[t]] += 1
    for s in _corpus(seed=4, n=30):
        s = [int(x) for x in s]
        expected = start1[s[0]] / sum(start1.values())
        if len(s) > 1:
            row = start2[s[0]]
            expected *= row[s[1]] / sum(row.values()) if row else 1 / V
        for t in range(2, len(s)):
            row = trans[(s[t - 2], s[t - 1])]
            expected *= row[s[t]] / sum(row.values()) if row else 1 / V
        assert np.exp(m.log_prob(s).item()) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def _kneser_ney_reference(corpus, order, v, modified=False):
    """Interpolated (modified) Kneser-Ney, written directly from the definition with dicts and
    tuples (Chen and Goodman 1998, section 3)."""
    bos = "<s>"
    padded = [[bos] * order + [int(x) for x in s] for s in corpus]
    counts = [dict() for _ in range(order + 1)]
    top = Counter()
    for s in padded:
        for t in range(order, len(s)):
            top[(tuple(s[t - order : t]), s[t])] += 1
    counts[order] = dict(top)
    for m in range(order):
        left = defaultdict(set)
        for s in padded:
            for t in range(order, len(s)):
                left[(tuple(s[t - m : t]), s[t])].add(s[t - m - 1])
        counts[m] = {key: len(lefts) for key, lefts in left.items()}
    discounts = []
    for m in range(order + 1):
        values = list(counts[m].values())
        n = [values.count(r) for r in range(5)]
        y = n[1] / (n[1] + 2 * n[2]) if n[1] else 0.5
        if not modified:
            discounts.append({1: y, 2: y, 3: y})
            continue
        d = {}
        for r in (1, 2, 3):
            formula = r - (r + 1) * y * n[r + 1] / n[r] if n[r] else y
            d[r] = min(formula if formula > 0 else y, r)
        discounts.append(d)

    def prob(history, w):
        history = [bos] * order + list(history)
        p = 1.0 / v
        for m in range(order + 1):
            h = tuple(history[len(history) - m :]) if m else ()
            row = {ww: c for (hh, ww), c in counts[m].items() if hh == h}
            if not row:
                continue
            total, d = sum(row.values()), discounts[m]
            gamma = sum(d[min(c, 3)] for c in row.values())
            c = row.get(w, 0)
            p = ((c - d[min(c, 3)] if c else 0.0) + gamma * p) / total
        return p

    def log_prob(seq):
        seq = [int(x) for x in seq]
        return sum(np.log(prob(seq[:t], seq[t])) for t in range(len(seq)))

    return log_prob


@pytest.mark.parametrize("smoothing", ["kneser-ney", "modified-kneser-ney"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_matches_an_independent_dict_implementation(order, smoothing):
    v = 4
    rng = np.random.default_rng(order)
    # Symbol 3 never occurs in training: unseen symbols and contexts in the test data.
    corpus = [rng.choice(3, size=rng.integers(1, 12), p=[0.5, 0.3, 0.2]) for _ in range(30)]
    m = MarkovChain(order=order, num_symbols=v, smoothing=smoothing).fit(corpus)
    reference = _kneser_ney_reference(corpus, order, v, modified=smoothing != "kneser-ney")
    test = [rng.integers(0, v, size=rng.integers(1, 10)) for _ in range(25)] + corpus[:5]
    ours = m.log_prob(test)
    assert torch.isfinite(ours).all()
    expected = torch.tensor([reference(s) for s in test], dtype=torch.float64)
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-12)


def test_kneser_ney_unseen_contexts_are_finite_and_back_off():
    m = MarkovChain(order=3, num_symbols=5, smoothing="kneser-ney").fit([[0, 1, 0, 1, 0, 1, 2]])
    unseen = [4, 4, 4, 4, 3, 3, 2]
    assert torch.isfinite(m.log_prob_steps(unseen)).all()
    additive = MarkovChain(order=3, num_symbols=5, alpha=1.0).fit([[0, 1, 0, 1, 0, 1, 2]])
    # An unseen context under additive smoothing: the uniform distribution.
    uniform = torch.full((5,), 0.2, dtype=torch.float64)
    assert torch.allclose(additive.conditional([4, 4, 4]), uniform, rtol=0, atol=1e-15)


def test_conditional_agrees_with_steps():
    m = MarkovChain(order=2, smoothing="kneser-ney").fit(_corpus())
    seq = [2, 0, 1, 1, 0]
    steps = m.log_prob_steps(seq)
    for t in range(len(seq)):
        assert m.conditional(seq[:t])[seq[t]].log().item() == pytest.approx(steps[t].item(),
                                                                           abs=1e-12)
        assert m.conditional(seq[:t]).sum().item() == pytest.approx(1.0, abs=1e-12)


@pytest.fixture(scope="module")
def text_like():
    """A million symbols of a random sparse order-2 source over V = 100 symbols (each pair
    has 5 likely successors, 5% uniform noise): long contexts repeat, many are distinct."""
    rng = np.random.default_rng(0)
    v, n = 100, 1_000_000
    succ = rng.integers(0, v, size=(v, v, 5))
    x = np.empty(n, dtype=np.int64)
    x[:2] = 0, 1
    choice = rng.integers(0, 5, size=n)
    noise = rng.random(n) < 0.05
    uniform = rng.integers(0, v, size=n)
    for t in range(2, n):  # a plain loop to make data, not to count it
        x[t] = uniform[t] if noise[t] else succ[x[t - 2], x[t - 1], choice[t]]
    return x


@pytest.mark.parametrize("smoothing", ["additive", "modified-kneser-ney"])
def test_order_six_on_a_million_symbols_is_sparse(text_like, smoothing):
    x, v = text_like, 100
    m = MarkovChain(order=6, num_symbols=v, smoothing=smoothing).fit(x[:900_000])
    stored = m.memory_bytes()
    # Dense order-6 tables would need 101**6 * 100 counts; the sparse ones hold at most one
    # key and a few numbers per distinct n-gram of each order.
    assert stored < 250e6
    positions = 900_000 * (7 if smoothing != "additive" else 1)
    # Per n-gram: key and count; per context: key, total, types, N1 and N2 (8 bytes each).
    assert stored <= positions * 8 * 7
    held_out = m.log_prob(x[900_000:])
    assert torch.isfinite(held_out)
    # Better than the uniform distribution on held-out text (the source is far from uniform).
    assert -held_out.item() / 100_000 < np.log(v)


def test_sampler_matches_log_prob():
    m = MarkovChain(order=2, smoothing="kneser-ney").fit(_corpus())
    length, n = 4, 20_000
    samples = m.sample(n, length, seed=0)
    counts = Counter(tuple(row.tolist()) for row in samples.values)
    seqs = _all_sequences(V, length)
    probs = m.log_prob(seqs).exp().numpy()
    freq = np.array([counts[tuple(s)] / n for s in seqs])
    assert 0.5 * np.abs(freq - probs).sum() < 0.03


def test_sampler_with_prefix_matches_the_conditional():
    m = MarkovChain(order=2, alpha=0.3).fit(_corpus())
    prefix = [1, 2]
    n = 20_000
    samples = m.sample(n, 4, prefix=prefix, seed=1)
    assert samples.values[:, :2].eq(torch.tensor(prefix)).all()
    counts = Counter(tuple(row[2:].tolist()) for row in samples.values)
    tails = _all_sequences(V, 2)
    lp_prefix = m.log_prob(prefix).item()
    probs = np.array([np.exp(m.log_prob(prefix + t).item() - lp_prefix) for t in tails])
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    freq = np.array([counts[tuple(t)] / n for t in tails])
    assert 0.5 * np.abs(freq - probs).sum() < 0.03


def test_sampler_never_draws_zero_probability_symbols():
    m = MarkovChain.from_params([0.0, 1.0, 0.0], [[0, 0, 1.0], [0.5, 0.0, 0.5], [0, 1.0, 0]])
    s = m.sample(500, 12, seed=3)
    assert torch.isfinite(m.log_prob(s)).all()


def test_from_params_round_trip_and_validation():
    init = np.array([0.2, 0.5, 0.3])
    trans = np.array([[0.1, 0.9, 0.0], [0.3, 0.3, 0.4], [1.0, 0.0, 0.0]])
    m = MarkovChain.from_params(init, trans)
    assert torch.allclose(m.params["initial"], torch.from_numpy(init), atol=1e-15)
    assert torch.allclose(m.params["transition"], torch.from_numpy(trans), atol=1e-15)
    assert m.log_prob([1, 2, 0, 1]).item() == pytest.approx(np.log(0.5 * 0.4 * 1.0 * 0.9))
    with pytest.raises(ValueError, match="sums to"):
        MarkovChain.from_params([0.2, 0.5, 0.31], trans)
    with pytest.raises(ValueError, match="row 1 of transition sums"):
        MarkovChain.from_params(init, [[0.1, 0.9, 0.0], [0.3, 0.3, 0.5], [1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="negative"):
        MarkovChain.from_params(init, [[1.1, -0.1, 0.0], [0.3, 0.3, 0.4], [1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        MarkovChain.from_params(init, trans[:2])
    with pytest.raises(ValueError, match="vector"):
        MarkovChain.from_params(trans, trans)
    with pytest.raises(ValueError, match="NaN"):
        MarkovChain.from_params([np.nan, 0.5, 0.5], trans)
    with pytest.raises(ValueError, match="outside 0..2"):
        m.log_prob([0, 3])


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="smoothing"):
        MarkovChain(smoothing="good-turing")
    with pytest.raises(ValueError, match="alpha"):
        MarkovChain(smoothing="kneser-ney", alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        MarkovChain(alpha=-1.0)
    with pytest.raises(ValueError, match="order"):
        MarkovChain(order=-1)
    with pytest.raises(ValueError, match="2\\*\\*62"):
        MarkovChain(order=8, num_symbols=256).fit([[0, 1]])
    with pytest.raises(ValueError, match="float"):
        MarkovChain().fit([0.0, 1.0])
    with pytest.raises(ValueError, match="sequence 1 contains symbol 5"):
        MarkovChain(num_symbols=3).fit([[0, 1], [1, 2, 5]])
    with pytest.raises(ValueError, match="order 1"):
        _ = MarkovChain(order=2).fit(_corpus()).params


@pytest.mark.parametrize("options", SMOOTHINGS)
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_num_params_is_one_definition_at_every_order(order, options):
    data = _corpus()
    m = MarkovChain(order=order, **options).fit(data)
    padded = [["<s>"] * order + [int(x) for x in s] for s in data]
    contexts = {tuple(p[t - order : t]) for p in padded for t in range(order, len(p))}
    used = {int(x) for s in data for x in s}
    assert m.num_params == (len(used) - 1) * len(contexts)


def test_num_params_of_a_full_first_order_chain_and_of_unused_symbols():
    rng = np.random.default_rng(2)
    m = MarkovChain.from_params(rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4), size=4))
    assert m.num_params == (4 - 1) + 4 * (4 - 1)  # every row of initial and transition
    # Symbols of the alphabet that never occur add nothing: the same data in V = 3 or 40.
    data = _corpus()
    counts = []
    for order in range(5):
        small = MarkovChain(order=order).fit(data)
        large = MarkovChain(order=order, num_symbols=40).fit(data)
        assert small.num_params == large.num_params
        counts.append(small.num_params)
    assert counts == sorted(counts)  # never decreases with the order


@pytest.mark.parametrize("options", SMOOTHINGS + [{"order": 0}, {"order": 4}])
def test_save_load_exact(tmp_path, options):
    m = MarkovChain(**{"order": 2, **options}).fit(_corpus())
    path = tmp_path / "chain.pt"
    m.save(path)
    loaded = probseq.load(path)
    test = _corpus(seed=9)
    assert torch.equal(loaded.log_prob(test), m.log_prob(test))
    assert loaded.get_config() == m.get_config()
    assert loaded.sample(5, 7, seed=2) == m.sample(5, 7, seed=2)


def test_save_load_from_params(tmp_path):
    m = MarkovChain.from_params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]])
    m.save(tmp_path / "p.pt")
    loaded = probseq.load(tmp_path / "p.pt")
    for key, value in m.params.items():
        assert torch.equal(loaded.params[key], value)


def test_fit_does_not_modify_input_and_refits_cleanly():
    data = np.array([0, 1, 2, 1, 0])
    before = data.copy()
    m = MarkovChain(order=2).fit(data)
    assert np.array_equal(data, before)
    m.fit([[0, 1, 4]])  # a wider alphabet on refit (num_symbols was inferred)
    assert m.num_symbols == 5


@pytest.mark.parametrize("smoothing", ["modified-kneser-ney", "kneser-ney"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_rows_sum_to_one_in_every_context_seen_or_not(order, smoothing):
    v = 4
    corpus = _corpus(seed=3, n=15, max_len=7)  # symbols 0..2 only: symbol 3 never seen
    m = MarkovChain(order=order, num_symbols=v, smoothing=smoothing).fit(corpus)
    # Every context of every length up to k + 1, BOS-padded or not: many never seen.
    for length in range(order + 2):
        for context in itertools.product(range(v), repeat=length):
            p = m.conditional(list(context))
            assert (p > 0).all()
            assert p.sum().item() == pytest.approx(1.0, abs=1e-13), context
    # The same through log_prob: all V**T sequences of length T sum to 1.
    for length in (1, 3, 4):
        lp = m.log_prob(_all_sequences(v, length))
        assert abs(torch.logsumexp(lp, 0).item()) < 1e-12


def test_modified_kneser_ney_discounts_by_hand():
    from probseq.markov import counting

    counts = np.array([1, 1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 7, 9], dtype=float)  # n1..n4 = 6,2,2,1
    y = 6 / (6 + 2 * 2)
    expected = [1 - 2 * y * 2 / 6, 2 - 3 * y * 2 / 2, 3 - 4 * y * 1 / 2]
    assert np.allclose(counting.modified_kneser_ney_discounts(counts), expected, rtol=1e-15)
    # No n-gram seen twice: D2 and D3+ have no formula, the single discount Y = 1 is used.
    d = counting.modified_kneser_ney_discounts(np.array([1.0, 1.0, 5.0]))
    assert np.allclose(d, [1.0, 1.0, 1.0])
    # Discounts stay in (0, r] whatever the counts.
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = rng.integers(1, 6, size=rng.integers(1, 30)).astype(float)
        d = counting.modified_kneser_ney_discounts(c)
        assert (d > 0).all() and (d <= [1, 2, 3]).all()


def test_unseen_contexts_back_off_when_sampling():
    # Trained on "ab" repeated; the prefix "bb" is an unseen order-2 context. Backing off to
    # the context "b" makes "a" by far the likeliest next symbol, in sampling as in
    # conditional (the lower orders hold continuation counts, so the back-off is softer than
    # the raw bigram "b -> a"); the additive chain predicts and samples uniform noise there.
    data = [0, 1] * 200
    m = MarkovChain(order=2, num_symbols=3).fit(data)
    p = m.conditional([1, 1])
    assert p[0] > 0.5 and p[0] > 2 * p[1] and p[0] > 2 * p[2]
    draws = m.sample(4000, 3, prefix=[1, 1], seed=0).values[:, 2]
    freq = torch.bincount(draws, minlength=3).double() / 4000
    assert torch.allclose(freq, p, atol=0.02)
    additive = MarkovChain(order=2, num_symbols=3, smoothing="additive").fit(data)
    assert torch.allclose(additive.conditional([1, 1]), torch.full((3,), 1 / 3,
                                                                  dtype=torch.float64))


@pytest.fixture(scope="module")
def docs_text():
    return probseq.datasets.python_docs_text()


def test_default_chain_on_held_out_docs_text_improves_with_order(docs_text):
    """Measured (test split, 46,497 characters): orders 3..7 give 2.004, 1.814, 1.757,
    1.734, 1.712 bits/char with the default smoothing."""
    c = docs_text
    bits = {}
    for order in range(3, 8):
        m = MarkovChain(order=order, num_symbols=c.num_symbols).fit(c.train)
        bits[order] = -m.log_prob(c.test).item() / len(c.test) / np.log(2)
    for order in range(4, 8):
        assert bits[order] <= bits[order - 1] + 0.02, bits
    assert bits[7] < 1.85, bits


@pytest.mark.parametrize("options", SMOOTHINGS)
@pytest.mark.parametrize("order", [0, 1, 3])
def test_degenerate_data_give_finite_correct_likelihoods(order, options):
    # An alphabet of one symbol: every sequence has probability 1.
    one = MarkovChain(order=order, **options).fit([0, 0, 0, 0])
    assert one.num_symbols == 1
    assert torch.equal(one.log_prob([[0], [0, 0, 0, 0, 0, 0]]), torch.zeros(2, dtype=torch.float64))
    assert one.num_params == 0
    assert torch.equal(one.sample(3, 4, seed=0).values, torch.zeros(3, 4, dtype=torch.int64))
    # A single repeated symbol in a larger alphabet, and sequences of length 1: still
    # normalised (enumeration) and finite where the smoothing gives every symbol mass.
    for data in ([2] * 30, [[1], [0], [1], [1]]):
        m = MarkovChain(order=order, num_symbols=3, **options).fit(data)
        for length in (1, 2, 3):
            lp = m.log_prob(_all_sequences(3, length))
            assert abs(torch.logsumexp(lp, 0).item()) < 1e-12
            if options.get("alpha", 0.5) > 0:
                assert torch.isfinite(lp).all()
    with pytest.raises(ValueError, match="empty"):
        MarkovChain(order=order, **options).fit([[0, 1], []])


def _masked(x, missing):
    x = np.asarray(x)
    return np.ma.MaskedArray(x, mask=np.isin(np.arange(len(x)), missing))


@pytest.mark.parametrize("options", SMOOTHINGS[:2] + SMOOTHINGS[3:5])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_missing_symbols_are_marginalised_exactly_by_brute_force(order, options):
    m = MarkovChain(order=order, **options).fit(_corpus())
    x = np.array([2, 0, 1, 1, 0, 2, 1, 0, 0, 1])
    # Gaps at the start, adjacent gaps, gaps closer than k apart, a gap at the end.
    for missing in ([0], [3], [1, 2], [2, 4], [0, 1, 2, 3], [5, 9], [9], [1, 3, 5, 7]):
        gappy = _masked(x, missing)
        fills = itertools.product(range(V), repeat=len(missing))
        batch = []
        for fill in fills:
            y = x.copy()
            y[missing] = fill
            batch.append(y)
        reference = torch.logsumexp(m.log_prob(np.stack(batch).tolist()), 0)
        got = m.log_prob(gappy)
        steps = m.log_prob_steps(gappy)
        assert got.item() == pytest.approx(reference.item(), abs=1e-12), missing
        assert (steps[missing] == 0).all()
        assert steps.sum().item() == pytest.approx(got.item(), abs=1e-12)
        # Each observed step is log p(x_t | the observed x_<t): a ratio of two marginals.
        t = max(set(range(len(x))) - set(missing))
        head = _masked(x[: t + 1], [j for j in missing if j <= t])
        prev = _masked(x[:t], [j for j in missing if j < t]) if t else None
        expected = m.log_prob(head) - (m.log_prob(prev) if prev is not None else 0)
        if torch.isfinite(expected):
            assert steps[t].item() == pytest.approx(expected.item(), abs=1e-12)
    # Batches mix gappy and complete sequences; padding changes nothing.
    batch = [_masked(x, [3, 4]), x[:6], _masked(x[:4], [0])]
    lp = m.log_prob(batch)
    one = torch.stack([m.log_prob(s) for s in batch])
    assert torch.allclose(lp, one, rtol=0, atol=1e-12)


def test_fit_with_missing_symbols_counts_the_complete_windows():
    x = _masked([0, 1, 1, 2, 0, 1, 2], [2])
    m = MarkovChain(order=1, smoothing="additive", alpha=0.0).fit(x)
    # n-grams kept: (BOS, 0), (0, 1), (2, 0), (0, 1), (1, 2), (1, 2)... not (1, --), (--, 2).
    assert torch.allclose(m.conditional([1]), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(m.conditional([0]), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert np.isfinite(MarkovChain(order=2).fit([x, [2, 2, 0]]).log_prob(x).item())


def test_missing_symbols_refused_where_the_forward_pass_is_too_large():
    v = 2100  # two gaps in a row at order 2: 2100 contexts x 2100 symbols > 4,000,000
    m = MarkovChain(order=2, num_symbols=v).fit([[0, 1, 2, 3]])
    assert np.isfinite(m.log_prob(_masked([0, 1, 2, 3], [1])).item())  # one gap is fine
    with pytest.raises(ValueError, match="sequence 0.*more than MarkovChain's limit"):
        m.log_prob(_masked([0, 1, 2, 3], [1, 2]))


@pytest.mark.parametrize("order", [1, 2])
def test_predictive_and_forecast_condition_on_gappy_data_exactly(order):
    m = MarkovChain(order=order).fit(_corpus())
    x = np.array([2, 0, 1, 1, 0, 2])
    gappy = _masked(x, [1, 5])  # a gap inside and a gap at the end
    # One-step predictives at observed steps reproduce log_prob_steps.
    dist = m._step_predictive(m._coerce(gappy)[0])
    steps = m.log_prob_steps(gappy)
    for t in (0, 2, 3, 4):
        assert np.log(dist.probs[0, t, x[t]].item()) == pytest.approx(steps[t].item(), abs=1e-12)
        assert dist.probs[0, t].sum().item() == pytest.approx(1.0, abs=1e-12)
    # Two-step forecast after the gappy sequence: brute force over the missing symbols.
    fc = m.forecast(gappy, 2).probs.reshape(2, V).numpy()
    base = m.log_prob(gappy).item()
    for a in range(V):
        fills = [np.concatenate([x[:1], [f1], x[2:5], [f5], [a]])
                 for f1 in range(V) for f5 in range(V)]
        assert fc[0, a] == pytest.approx(np.exp(torch.logsumexp(m.log_prob(fills), 0).item()
                                                - base), abs=1e-12)
        marginal = sum(np.exp(torch.logsumexp(m.log_prob(
            [np.concatenate([x[:1], [f1], x[2:5], [f5], [c, a]])
             for f1 in range(V) for f5 in range(V)]), 0).item() - base) for c in range(V))
        assert fc[1, a] == pytest.approx(marginal, abs=1e-12)
