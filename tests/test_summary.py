"""model.summary(): standard errors from the observed information, against statsmodels."""

import numpy as np
import pytest
from statsmodels.tsa.arima.model import ARIMA

import probseq as ps


@pytest.mark.parametrize("method", ["mle", "cls"])
def test_ar_standard_errors_match_statsmodels_oim(method):
    y = ps.datasets.ar_process(1, 400, coef=[0.5, -0.3], intercept=1.0, noise_var=2.0,
                               seed=4)[0].numpy()
    model = ps.AutoRegressive(order=2).fit(y, method=method)
    table = model.summary()
    ref = ARIMA(y, order=(2, 0, 0), trend="c").fit(cov_type="oim")
    se = dict(zip(ref.param_names, ref.bse, strict=True))
    est = dict(zip(ref.param_names, ref.params, strict=True))
    for ours, theirs in (("coef[0]", "ar.L1"), ("coef[1]", "ar.L2"), ("noise_var", "sigma2")):
        assert table.loc[ours, "std_error"] == pytest.approx(se[theirs], rel=0.05)
        assert table.loc[ours, "estimate"] == pytest.approx(est[theirs], rel=0.05)
    assert list(table.columns) == ["estimate", "std_error", "ci_lower", "ci_upper"]
    z = 1.959963984540054
    np.testing.assert_allclose(table["ci_upper"] - table["estimate"], z * table["std_error"])
    assert table.attrs["log_lik"] == pytest.approx(float(model.log_prob(y)), rel=1e-12)
    assert table.attrs["aic"] == pytest.approx(2 * 4 - 2 * table.attrs["log_lik"])
    assert table.attrs["converged"] is True
    if method == "mle":  # the same maximum: statsmodels' log-likelihood
        assert table.attrs["log_lik"] == pytest.approx(ref.llf, abs=1e-4)


def test_summary_refusals():
    y = ps.datasets.ar_process(1, 100, coef=[0.5], seed=1)[0].numpy()
    with pytest.raises(ValueError, match="no summary"):
        ps.MarkovChain(order=1).fit([np.array([0, 1, 1, 0])]).summary()
    loaded = ps.AutoRegressive.from_params(intercept=0.0, coef=[0.5], noise_var=1.0)
    with pytest.raises(ValueError, match="needs the data"):
        loaded.summary()
    assert loaded.summary(y).shape == (3, 4)
