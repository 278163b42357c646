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


def test_pandas_in_pandas_out_keeps_the_index():
    y, _ = _ar_with_exog()
    ar = ps.AutoRegressive(order=2).fit(y)
    steps = ar.log_prob_steps(y)
    assert isinstance(steps, pd.Series) and steps.index.equals(y.index)
    np.testing.assert_array_equal(steps.to_numpy(), ar.log_prob_steps(y.to_numpy()).numpy())
    pred = ar.predict(y)
    assert isinstance(pred, pd.Series) and pred.index.equals(y.index)
    # tensors in, tensors out
    assert isinstance(ar.log_prob_steps(torch.tensor(y.to_numpy())), torch.Tensor)
    # samples continue the prefix's index
    samples = ar.sample(3, 80, prefix=y, seed=0)
    assert isinstance(samples, ps.Sequences) and samples.index.equals(samples.to_frame().index)
    paths = samples.to_frame()
    assert isinstance(paths, pd.DataFrame) and paths.shape == (80, 3)
    assert paths.index[:72].equals(y.index) and paths.index[-1] == pd.Timestamp("2016-08-01")
    np.testing.assert_array_equal(paths.iloc[:72, 0].to_numpy(), y.to_numpy())

    hmm = ps.HiddenMarkovModel(num_states=2, emission="gaussian").fit(y, seed=0)
    states = hmm.most_likely_states(y)
    assert isinstance(states, pd.Series) and states.index.equals(y.index)
    np.testing.assert_array_equal(states.to_numpy(), hmm.most_likely_states(y.to_numpy()).numpy())
    for marginals in (hmm.filter(y), hmm.smoother(y)):
        assert isinstance(marginals, pd.DataFrame) and list(marginals) == ["state_0", "state_1"]
        assert marginals.index.equals(y.index)
        np.testing.assert_allclose(marginals.sum(axis=1), 1.0, atol=1e-12)
    assert isinstance(hmm.filter(y.to_numpy()), torch.Tensor)

    ll = ps.LinearGaussianSSM.local_level().fit(y)
    post = ll.smoother(y)
    assert list(post) == ["mean_0", "std_0"] and post.index.equals(y.index)
    ref = ll.smoother(y.to_numpy())
    np.testing.assert_allclose(post["mean_0"], ref.mean[:, 0].numpy())
    np.testing.assert_allclose(post["std_0"] ** 2, ref.cov[:, 0, 0].numpy())
