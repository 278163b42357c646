"""Covariates of the future alone, pandas in and pandas out."""

import numpy as np
import pandas as pd
import pytest
import torch

import probseq as ps


def _ar_with_exog():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(72, 2))
    e = np.zeros(72)
    for t in range(1, 72):
        e[t] = 0.5 * e[t - 1] + rng.normal()
    y = 1.0 + x @ np.array([2.0, -1.0]) + e
    idx = pd.date_range("2010-01-01", periods=72, freq="MS")
    return pd.Series(y, index=idx, name="y"), pd.DataFrame(x, index=idx, columns=["a", "b"])


def test_future_only_covariates_equal_history_plus_future():
    y, x = _ar_with_exog()
    hist, h = y[:60], 12
    model = ps.AutoRegressive(order=1).fit(hist, exog=x[:60])
    both = model.forecast(hist, h, exog=x)
    for future in (x[60:], x[60:].to_numpy(), torch.tensor(x[60:].to_numpy())):
        alone = model.forecast(hist, h, exog=future)
        torch.testing.assert_close(alone.mean, both.mean, rtol=0, atol=0)
        torch.testing.assert_close(alone.std, both.std, rtol=0, atol=0)
    assert alone.index.equals(x.index[60:])
    # pandas rows are aligned by label, not by position
    shuffled = model.forecast(hist, h, exog=x[60:].iloc[::-1])
    torch.testing.assert_close(shuffled.mean, both.mean, rtol=0, atol=0)
    with pytest.raises(ValueError, match="lines up neither"):
        model.forecast(hist, h, exog=x[61:])
    # the history's covariates come from the fit: other data needs history + future
    with pytest.raises(ValueError, match="fitted on other data"):
        model.forecast(hist[:50], h, exog=x[50:62].to_numpy())


def test_exog_for_a_model_fitted_without_covariates_is_refused_clearly():
    y, x = _ar_with_exog()
    model = ps.AutoRegressive(order=1).fit(y[:60])
    for call in (lambda: model.forecast(y[:60], 12, exog=x[60:]),
                 lambda: model.log_prob(y[:60], exog=x[:60])):
        with pytest.raises(ValueError, match="fitted without covariates"):
            call()
