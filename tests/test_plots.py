"""Figures (forecast fans: model argument, level, title, y-scales) and training progress."""

import matplotlib.pyplot as plt
import numpy as np

import probseq as ps


def test_plot_forecast_takes_one_model_and_says_its_level():
    y = ps.datasets.nile()
    ar = ps.AutoRegressive(order=1).fit(y[:80])
    fig = ps.plots.plot_forecast(ar, y[:80], 5)  # a single model, not a dict
    assert [ax.get_title() for ax in fig.axes] == ["AutoRegressive"]
    assert "95% intervals" in fig._suptitle.get_text()  # the default level everywhere
    plt.close(fig)


def test_plot_forecast_shares_the_y_scale_only_between_comparable_ranges():
    y = ps.datasets.nile()
    wide = ps.AutoRegressive.from_params(intercept=900.0, coef=[0.0], noise_var=1e8)
    narrow = ps.AutoRegressive.from_params(intercept=900.0, coef=[0.0], noise_var=100.0)
    fig = ps.plots.plot_forecast({"wide": wide, "narrow": narrow}, y[:80], 5)
    lims = [ax.get_ylim() for ax in fig.axes[:2]]
    assert lims[0] != lims[1]  # the wide fan does not flatten the narrow one
    plt.close(fig)
    ll = ps.LinearGaussianSSM.local_level().fit(y[:80])
    fig = ps.plots.plot_forecast({"ar": ps.AutoRegressive(order=1).fit(y[:80]), "ll": ll},
                                 y[:80], 5, level=0.8)
    lims = [ax.get_ylim() for ax in fig.axes[:2]]
    assert np.allclose(lims[0], lims[1]) and "80% intervals" in fig._suptitle.get_text()
    plt.close(fig)


def test_network_training_logs_its_progress(caplog):
    import logging

    y = ps.datasets.ar_process(4, 60, seed=0)
    with caplog.at_level(logging.INFO, logger="probseq"):
        ps.RecurrentModel(cell="gru", hidden_size=4, emission="gaussian").fit(
            y, max_epochs=2, min_steps=0, patience=None, progress=False)
    epochs = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert len(epochs) == 2 and "validation loss" in epochs[0] and "s left" in epochs[0]


def test_calibration_draws_one_pit_panel_per_model_and_keeps_coverage_inside():
    y = ps.datasets.nile()
    models = {"ar1": ps.AutoRegressive(order=1).fit(y[:80]),
              "narrow": ps.AutoRegressive.from_params(intercept=900.0, coef=[0.0],
                                                      noise_var=100.0)}
    fig = ps.plots.plot_calibration(models, y, start=50)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["PIT: ar1", "PIT: narrow", "Interval coverage"]
    cov_ax = fig.axes[2]
    low, high = cov_ax.get_ylim()
    lines = [ln for ln in cov_ax.get_lines() if ln.get_label() in models]
    assert len(lines) == 2
    for line in lines:
        assert np.all((line.get_ydata() >= low) & (line.get_ydata() <= high))
    plt.close(fig)


def test_residual_plot_shows_the_tests_it_names():
    """Four panels; the titles carry the Ljung-Box and Jarque-Bera p-values of
    ``residual_diagnostics``; the ACF panel's stems are its autocorrelations; gaps and the
    diffuse first step are left out of the residual line."""
    y = ps.datasets.nile().copy()
    y.iloc[[30, 31]] = np.nan
    model = ps.LinearGaussianSSM.local_level().fit(y)
    fig = ps.plots.plot_residuals(model, y, lags=6)
    table = model.residual_diagnostics(y, lags=6)
    titles = [ax.get_title() for ax in fig.axes]
    assert f"{table['lb_pvalue'].iloc[-1]:.3g} at lag 6" in titles[3]
    assert f"{table.attrs['jarque_bera_pvalue']:.3g}" in titles[1]
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == len(y) - 3
    r = model.residuals(y).to_numpy()[1:]
    stems = fig.axes[3].get_lines()[0].get_ydata()
    np.testing.assert_allclose(stems, ps.diagnostics.autocorrelations(r, 6))
    plt.close(fig)
