"""Seasonal ARIMA: the batched exact likelihood and a single fit against statsmodels'
SARIMAX (and statsforecast's ARIMA where it is installed)."""

from __future__ import annotations

import warnings

import numpy as np

from benchmarks.harness import Context, Peer, Unavailable, case, peer_available, probseq_class

#: the airline model used by both cases: (0,1,1)(0,1,1,12)
ORDER, SEASONAL = (0, 1, 1), (0, 1, 1, 12)
MA, SEASONAL_MA, NOISE_VAR = -0.4, -0.6, 0.5


def _sarimax():
    if not peer_available("statsmodels"):
        raise Unavailable("statsmodels is not installed")
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    return SARIMAX


def airline_series(n: int, t: int, seed: int = 0) -> np.ndarray:
    """``[N, T]`` series of the airline model: the MA part by a direct convolution of
    Gaussian noise (after a burn-in), then integrated by ``(1 - B)(1 - B^12)``."""
    rng = np.random.default_rng(seed)
    burn = 13
    e = np.sqrt(NOISE_VAR) * rng.standard_normal((n, t + burn))
    w = e.copy()
    w[:, 1:] += MA * e[:, :-1]
    w[:, 12:] += SEASONAL_MA * e[:, :-12]
    w[:, 13:] += MA * SEASONAL_MA * e[:, :-13]
    w = w[:, burn:]
    y = np.zeros((n, t))
    for s in range(t):  # y_t = w_t + y_(t-1) + y_(t-12) - y_(t-13)
        y[:, s] = w[:, s] + (y[:, s - 1] if s >= 1 else 0) + (y[:, s - 12] if s >= 12 else 0) \
            - (y[:, s - 13] if s >= 13 else 0)
    return 100.0 + y


@case("arima_log_prob", needs=("ARIMA",),
      description="SARIMA exact log_prob, 200 monthly series, vs a SARIMAX.loglike loop")
def arima_log_prob(ctx: Context) -> None:
    """The exact likelihood of the differenced series for a batch of series, against a loop
    of statsmodels' ``loglike`` (the same likelihood: ``simple_differencing=True``, exact
    stationary start); the peers' models and probseq's ``Sequences`` (the data in the
    container the model reads) are built outside the timing."""
    SARIMAX = _sarimax()
    cls = probseq_class("ARIMA")
    n, t = ctx.size((200, 144), (10, 60))
    y = airline_series(n, t)
    model = cls.from_params(order=ORDER, seasonal_order=SEASONAL, ma=[MA],
                            seasonal_ma=[SEASONAL_MA], noise_var=NOISE_VAR)
    params = np.array([MA, SEASONAL_MA, NOISE_VAR])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peers = [SARIMAX(row, order=ORDER, seasonal_order=SEASONAL, simple_differencing=True)
                 for row in y]
    from probseq import Sequences

    seqs = Sequences.from_padded(y)  # the data container, like the peers' models, built once
    ctx.check_close("per-series log-likelihoods vs SARIMAX.loglike",
                    model.log_prob(seqs).numpy(), [m.loglike(params) for m in peers],
                    rtol=1e-9)

    def loop() -> object:
        return [m.loglike(params) for m in peers]

    ctx.compare(f"SARIMA{ORDER}{SEASONAL} exact log_prob, {n} x {t}",
                lambda: model.log_prob(seqs), [
                    Peer("statsmodels SARIMAX.loglike loop", loop,
                         goal_ids=("arima_log_prob_batch",),
                         note="simple_differencing=True (the same exact likelihood); the "
                         "peers' models and probseq's Sequences built outside the timing")],
                work=n * t)


def _co2_monthly() -> np.ndarray:
    from probseq.datasets import co2

    return co2().resample("MS").mean().interpolate().to_numpy()


@case("arima_fit", needs=("ARIMA",),
      description="SARIMA airline MLE on monthly co2 vs SARIMAX.fit (and statsforecast)")
def arima_fit(ctx: Context) -> None:
    """One series, the airline model, maximum likelihood of the differenced series on both
    sides; the optima are compared before the timing."""
    SARIMAX = _sarimax()
    cls = probseq_class("ARIMA")
    y = _co2_monthly()
    if ctx.quick:
        y = y[:200]

    def ours() -> object:
        return cls(ORDER, SEASONAL).fit(y)

    def statsmodels_fit() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SARIMAX(y, order=ORDER, seasonal_order=SEASONAL,
                           simple_differencing=True).fit(disp=False)

    fitted = ours()
    ref = statsmodels_fit()
    llf = float(fitted.log_prob(y))
    if llf < ref.llf - 1e-6:
        ctx.note(f"WARNING: probseq's optimum {llf:.9f} is below statsmodels' {ref.llf:.9f}")
    else:
        ctx.note(f"optima: probseq {llf:.9f}, statsmodels {ref.llf:.9f} (differenced series)")
    peers = [Peer("statsmodels SARIMAX.fit", statsmodels_fit, goal_ids=("arima_fit_airline",),
                  note="simple_differencing=True (the same likelihood); model built inside "
                  "the timing")]
    if peer_available("statsforecast"):
        from statsforecast.arima import Arima

        peers.append(Peer("statsforecast Arima", lambda: Arima(
            y, order=ORDER, seasonal={"order": SEASONAL[:3], "period": 12}, method="ML"),
            note="for information: its own optimiser and likelihood approximations"))
    else:
        ctx.note("statsforecast is not installed (installing it would downgrade pandas "
                 "3.1 to 2.3), so it is not timed")
    ctx.compare(f"SARIMA{ORDER}{SEASONAL} fit, {len(y)} values", ours, peers, work=len(y))
