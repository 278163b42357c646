"""The fused compiled total of the AR(p) exact log-likelihood
(:func:`probseq.autoregressive.likelihood.log_prob_totals`) against the NumPy steps and
their sequential sum, bit for bit, and against statsmodels (issue 28)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probseq import AutoRegressive, Sequences
from probseq.autoregressive import likelihood


def _series(n: int, t: int, coef: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, t + 200))
    for s in range(len(coef), t + 200):
        x[:, s] = 0.3 + x[:, s - len(coef):s][:, ::-1] @ coef + rng.standard_normal(n)
    return x[:, 200:]


@pytest.mark.parametrize("coef", [np.array([0.5, -0.2, 0.1, 0.05, -0.05]), np.array([0.7]),
                                  np.zeros(0)])
def test_totals_equal_cumsum_of_steps_bit_for_bit(coef):
    # Ragged rows, with lengths below, at and above p, padding holding garbage.
    lengths = np.array([300, 1, 2, 5, 6, 299, 37])
    values = _series(len(lengths), 300, coef, seed=len(coef))
    for i, n in enumerate(lengths):
        values[i, n:] = 1e300 * (i + 1)  # padding must not be read
    steps = likelihood.log_prob_steps(values, lengths, 0.3, coef, 1.3)
    want = np.cumsum(steps, axis=1)[:, -1]
    got = likelihood.log_prob_totals(values, lengths, 0.3, coef, 1.3)
    np.testing.assert_array_equal(got, want)


def test_model_log_prob_matches_statsmodels_and_padding_invariance():
    from statsmodels.tsa.arima.model import ARIMA

    coef = np.array([0.5, -0.2, 0.1, 0.05, -0.05])
    y = _series(1, 3000, coef, seed=9)[0]
    model = AutoRegressive.from_params(intercept=0.3, coef=coef, noise_var=1.2)
    params = np.concatenate([[0.3 / (1 - coef.sum())], coef, [1.2]])
    ref = ARIMA(y, order=(5, 0, 0), trend="c").loglike(params)
    assert float(model.log_prob(y)) == pytest.approx(ref, rel=1e-10)
    # In a batch beside a longer row (trailing padding) the total is the same bit for bit.
    batch = Sequences.from_list([torch.from_numpy(y), torch.from_numpy(_series(1, 5000, coef,
                                                                               seed=1)[0])])
    assert float(model.log_prob(batch)[0]) == float(model.log_prob(y))
