"""The shared check of probability vectors: valid to rounding is accepted and projected once;
a real violation is refused with a message naming the entry or the row, by every model's
``from_params``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from probseq import HiddenMarkovModel, MarkovChain, Sequences, SwitchingAutoRegressive
from probseq.validation import NEGATIVE_TOLERANCE, SUM_TOLERANCE, probability_vectors

TRANS = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.0, 0.4, 0.6]])


def _rounded() -> np.ndarray:
    """TRANS as a reference library might return it: a structural zero at -3e-17 (row 0) and
    rows off 1 by 1e-12 and 1e-10."""
    t = TRANS.copy()
    t[0, 2] = -3e-17
    t[1] += np.array([1e-12, 0.0, 0.0])
    t[2] -= np.array([0.0, 1e-10, 0.0])
    return t


def test_rounding_is_accepted_and_projected_onto_the_simplex():
    given = _rounded()
    before = given.copy()
    out = probability_vectors(given, "transition")
    np.testing.assert_array_equal(given, before)  # the caller's array is not modified
    assert (out >= 0).all() and out[0, 2] == 0.0
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=0, atol=4 * np.finfo(float).eps)
    np.testing.assert_allclose(out, TRANS, rtol=0, atol=2e-10)
    # the relative tolerance: a row whose largest entry is 1 takes -0.5e-12, not -2e-12
    assert probability_vectors(np.array([1.0 + 5e-13, -5e-13]), "initial")[1] == 0.0
    with pytest.raises(ValueError, match=r"initial has negative entries: initial\[1\] = -2e-12"):
        probability_vectors(np.array([1.0 + 2e-12, -2e-12]), "initial")
    # sums within SUM_TOLERANCE are rescaled; a valid vector is returned unchanged
    np.testing.assert_allclose(probability_vectors(np.array([0.5, 0.5 + 0.9e-6]), "initial"),
                               [0.5 / (1 + 0.9e-6), (0.5 + 0.9e-6) / (1 + 0.9e-6)], rtol=1e-15)
    np.testing.assert_array_equal(probability_vectors(TRANS, "transition"), TRANS)
    assert NEGATIVE_TOLERANCE == 1e-12 and SUM_TOLERANCE == 1e-6


@pytest.mark.parametrize("given,message", [
    ([[0.9, 0.1], [1.1, -0.1]], r"transition has negative entries: transition\[1, 1\] = -0.1 "
                                r"\(probabilities are >= 0\)"),
    ([[0.9, 0.1], [0.5, 0.5 + 2e-6]], r"row 1 of transition sums to 1.000002: transition rows "
                                      r"must sum to 1 within 1e-6"),
    ([[0.0, 0.0], [0.5, 0.5]], r"row 0 of transition sums to 0"),
    ([0.5, 0.6], r"^transition sums to 1.1: transition must sum to 1 within 1e-6$"),
    ([[[0.5, 0.5]], [[0.5, 0.6]]], r"row \[1, 0\] of transition sums to 1.1"),
    (np.float64(1.0), r"probability vectors \[..., V\]"),
])
def test_real_violations_are_refused(given, message):
    with pytest.raises(ValueError, match=message):
        probability_vectors(np.asarray(given, dtype=np.float64), "transition")


def test_every_model_accepts_rounding_and_refuses_violations():
    init = np.array([0.5, 0.5 - 1e-11, 1e-11 - 4e-18])
    emission = np.array([[1.0, -1e-16], [0.3, 0.7], [0.5, 0.5]])
    builders = {
        "markov": lambda tr, ini: MarkovChain.from_params(ini, tr),
        "hmm": lambda tr, ini: HiddenMarkovModel.from_params(initial=ini, transition=tr,
                                                             emission=emission),
        "switching": lambda tr, ini: SwitchingAutoRegressive.from_params(
            transition=tr, initial=ini, means=[0.0, 1.0, 2.0], coef=[0.5], noise_var=1.0),
    }
    for name, build in builders.items():
        model = build(_rounded(), init)
        trans = model.params["transition"]
        assert (trans >= 0).all(), name
        torch.testing.assert_close(trans.sum(-1), torch.ones(3, dtype=torch.float64),
                                   rtol=0, atol=1e-15)
        torch.testing.assert_close(trans, torch.from_numpy(TRANS), rtol=0, atol=2e-10)
        bad = TRANS.copy()
        bad[0] = [1.01, 0.0, -0.01]
        with pytest.raises(ValueError, match=r"transition has negative entries: "
                                             r"transition\[0, 2\] = -0.01"):
            build(bad, init)
        with pytest.raises(ValueError, match="initial sums to 1.1: initial must sum to 1"):
            build(TRANS, [0.5, 0.5, 0.1])
    hmm = builders["hmm"](TRANS, init)
    assert hmm.params["emission"][0, 1] == 0.0
    # a chain built from rounded probabilities is exactly normalised: all V**T sequences
    chain = builders["markov"](_rounded(), init)
    seqs = torch.tensor(list(itertools.product(range(3), repeat=4)))
    total = torch.logsumexp(chain.log_prob(Sequences.from_padded(seqs)), 0)
    assert float(total) == pytest.approx(0.0, abs=1e-14)
