"""Gaussian AR(5): pooled fit and exact log-likelihood against statsmodels."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.harness import Context, Peer, Unavailable, case, peer_available, probseq_class

COEF = np.array([0.5, -0.2, 0.1, 0.05, -0.05])
INTERCEPT, NOISE_VAR = 0.3, 1.2


def ar_series(n: int, t: int, seed: int = 0) -> np.ndarray:
    """``[N, T]`` stationary AR(5) series (after a burn-in of 500 steps)."""
    rng = np.random.default_rng(seed)
    p, burn = len(COEF), 500
    x = np.zeros((n, burn + t))
    eps = np.sqrt(NOISE_VAR) * rng.standard_normal(x.shape)
    for s in range(p, x.shape[1]):
        x[:, s] = INTERCEPT + x[:, s - p : s][:, ::-1] @ COEF + eps[:, s]
    return x[:, burn:]


def _pooled_least_squares(x: np.ndarray, p: int) -> np.ndarray:
    """Reference pooled conditional least squares: ``[intercept, phi_1..phi_p]``."""
    rows = [np.column_stack([np.ones(x.shape[1] - p)]
                            + [y[p - j : len(y) - j] for j in range(1, p + 1)]) for y in x]
    design = np.concatenate(rows)
    target = np.concatenate([y[p:] for y in x])
    return np.linalg.lstsq(design, target, rcond=None)[0]


def _statsmodels() -> Any:
    if not peer_available("statsmodels"):
        raise Unavailable("statsmodels is not installed")
    import statsmodels.tsa.api as tsa

    return tsa


def pooled_design(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The pooled conditional least-squares problem of ``[N, T]`` series: design ``[N (T -
    p), p + 1]`` (a constant, then lags 1..p) and target ``[N (T - p)]``, built vectorised."""
    n, t = x.shape
    lags = [x[:, p - j : t - j].reshape(-1) for j in range(1, p + 1)]
    design = np.column_stack([np.ones(n * (t - p))] + lags)
    return design, x[:, p:].reshape(-1)


@case("ar_fit", needs=("AutoRegressive",),
      description="AR(5) pooled fit over 500 x 1000 vs statsmodels OLS and lstsq (same design)")
def ar_fit(ctx: Context) -> None:
    """The same pooled regression on both sides: probseq's fit against statsmodels OLS and
    np.linalg.lstsq on the pooled design, the design built inside the timing on every side.
    A loop of one AutoReg fit per series is shown for information: it is different work (N
    separate regressions)."""
    from probseq import Sequences

    tsa = _statsmodels()
    import statsmodels.api as sm

    cls = probseq_class("AutoRegressive")
    n, t = ctx.size((500, 1000), (10, 100))
    p = len(COEF)
    x = ar_series(n, t)
    seqs = Sequences.from_padded(x)
    fitted = cls(order=p).fit(seqs).params
    got = np.concatenate([[float(fitted["intercept"])], np.asarray(fitted["coef"])])
    ctx.check_close("pooled AR coefficients vs numpy least squares", got,
                    _pooled_least_squares(x, p), rtol=1e-8, atol=1e-10)
    design, target = pooled_design(x, p)
    ctx.check_close("pooled AR coefficients vs statsmodels OLS", got,
                    sm.OLS(target, design).fit().params, rtol=1e-8, atol=1e-10)
    single = cls(order=p).fit(x[0]).params
    ref = tsa.AutoReg(x[0], lags=p, trend="c").fit().params
    ctx.check_close("one-series AR coefficients vs AutoReg",
                    np.concatenate([[float(single["intercept"])], np.asarray(single["coef"])]),
                    ref, rtol=1e-8, atol=1e-10)

    def ols() -> object:
        d, y = pooled_design(x, p)
        return sm.OLS(y, d).fit()

    def lstsq() -> object:
        d, y = pooled_design(x, p)
        return np.linalg.lstsq(d, y, rcond=None)

    def autoreg_loop() -> object:
        return [tsa.AutoReg(y, lags=p, trend="c").fit() for y in x]

    ctx.compare(f"AR({p}) pooled fit {n}x{t}", lambda: cls(order=p).fit(seqs), [
        Peer("statsmodels OLS, same pooled design", ols, goal_ids=("ar_fit_ols",),
             note="design built inside the timing; probseq also validates and computes the "
             "noise variance"),
        Peer("np.linalg.lstsq, same pooled design", lstsq, goal_ids=("ar_fit_lstsq",),
             note="design built inside the timing"),
        Peer("statsmodels AutoReg loop (different work)", autoreg_loop,
             note="DIFFERENT WORK, for information: N separate regressions (one per series) "
             "against one pooled regression"),
    ], work=n * t)


@case("ar_log_prob", needs=("AutoRegressive",),
      description="AR(5) exact log_prob on 10^5 values vs statsmodels ARIMA(5,0,0).loglike")
def ar_log_prob(ctx: Context) -> None:
    """The exact stationary joint likelihood against statsmodels' state-space ARIMA."""
    tsa = _statsmodels()
    cls = probseq_class("AutoRegressive")
    t = ctx.size(100_000, 2_000)
    y = ar_series(1, t, seed=1)[0]
    model = cls.from_params(intercept=INTERCEPT, coef=COEF, noise_var=NOISE_VAR)
    arima = tsa.ARIMA(y, order=(len(COEF), 0, 0), trend="c")
    # statsmodels' ARIMA constant is the process mean, not the intercept.
    params = np.concatenate([[INTERCEPT / (1 - COEF.sum())], COEF, [NOISE_VAR]])
    ctx.check_close("log-likelihood vs ARIMA.loglike", float(model.log_prob(y)),
                    arima.loglike(params), rtol=1e-9)
    ctx.compare(f"AR({len(COEF)}) exact log_prob, {t} values", lambda: model.log_prob(y),
                [Peer("statsmodels ARIMA.loglike", lambda: arima.loglike(params),
                      goal_ids=("ar_exact_log_prob", "ar_exact_log_prob_turn1",
                                "ar_exact_log_prob_r3"),
                      note="ARIMA model built outside the timing")], work=t)
