"""The pass criteria of the benchmarks, written before they are measured.

Every goal is a :class:`Goal`: what is compared, the rule that judges it and why it exists.
A rule is never edited to fit a result: a changed rule is a new goal that names the goal it
replaces and the reason (the old one stays listed, judged on the same measurement, marked as
replaced). The report prints each rule with :meth:`RatioRule.describe` /
:meth:`LinearRule.describe`, the same objects that judge, so the text cannot drift from the
code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RatioRule", "LinearRule", "Goal", "GOALS", "SCALING_RULE", "loglog_slope"]


def loglog_slope(sizes: list[float], seconds: list[float]) -> float:
    """Least-squares slope of ``log(seconds)`` against ``log(sizes)`` (1 = linear)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float))
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


@dataclass(frozen=True)
class RatioRule:
    """PASS when ``peer median time / probseq median time >= minimum``.

    A goal "probseq at most ``f`` times the peer's time" is ``minimum = 1 / f``.
    """

    minimum: float

    def judge(self, ratio: float) -> str:
        if not math.isfinite(ratio):
            return "FAIL"
        return "PASS" if ratio >= self.minimum else "FAIL"

    def describe(self) -> str:
        if self.minimum >= 1:
            return f"peer time / probseq time >= {self.minimum:g}"
        return (f"peer time / probseq time >= {self.minimum:.3g} (probseq at most "
                f"{1 / self.minimum:.3g}x the peer's time)")


@dataclass(frozen=True)
class LinearRule:
    """PASS when time grows linearly over the whole measured range: the log-log slope over
    all sizes AND the slope over the larger half of the sizes (at least three) both lie in
    ``[low, high]``. The second condition catches a curve that steepens at the largest sizes
    (a cache cliff) while the overall fit still looks linear."""

    low: float = 0.8
    high: float = 1.2

    @staticmethod
    def upper_half(sizes: list[float], seconds: list[float]) -> float:
        k = max(3, (len(sizes) + 1) // 2)
        return loglog_slope(sizes[-k:], seconds[-k:])

    def judge(self, sizes: list[float], seconds: list[float]) -> str:
        slopes = (loglog_slope(sizes, seconds), self.upper_half(sizes, seconds))
        if all(math.isfinite(s) and self.low <= s <= self.high for s in slopes):
            return "PASS"
        return "FAIL"

    def describe(self) -> str:
        return (f"log-log slope over all sizes and over the larger half both in "
                f"{self.low:g}..{self.high:g}")


#: the rule of every scaling curve (issue 16: judged over the whole measured range including
#: its largest sizes; it replaces round one's rule, which judged the upper-half slope alone
#: and was then changed to the whole-range slope alone after the results came in).
SCALING_RULE = LinearRule(0.8, 1.2)


@dataclass(frozen=True)
class Goal:
    """A pass criterion for one measured line (a comparison, matched by its goal id).

    Attributes:
        id: what cases put in ``Peer(goal_ids=...)``.
        what: the work compared, in words.
        rule: the criterion.
        reason: why this goal exists (the issue that asked for it).
        replaces: the id of the goal this one replaces, if any (that one stays listed).
    """

    id: str
    what: str
    rule: RatioRule
    reason: str
    replaces: str | None = None


GOALS: dict[str, Goal] = {g.id: g for g in [
    Goal("hmm_categorical_log_prob_r1", "categorical HMM log_prob, K=16 V=32, 200 x 1000, "
         "vs hmmlearn scaling", RatioRule(2.0), "round one"),
    Goal("hmm_categorical_log_prob", "categorical HMM log_prob, K=16 V=32, 200 x 1000, "
         "vs hmmlearn scaling", RatioRule(3.0), "issue 16: keep >= 3x hmmlearn",
         replaces="hmm_categorical_log_prob_r1"),
    Goal("hmm_long_log_prob", "categorical HMM log_prob, one sequence of 10^5, vs hmmlearn "
         "scaling", RatioRule(1.0), "round one"),
    Goal("hmm_em_r1", "one categorical HMM EM iteration (fit, max_epochs=1), K=16 V=32, "
         "100 x 1000, vs hmmlearn fit(n_iter=1)", RatioRule(1.0), "round one"),
    Goal("hmm_em", "one categorical HMM EM iteration (fit, max_epochs=1), K=16 V=32, "
         "100 x 1000, vs hmmlearn fit(n_iter=1)", RatioRule(3.0),
         "issue 16: keep >= 3x hmmlearn", replaces="hmm_em_r1"),
    Goal("hmm_gaussian_d1", "Gaussian HMM log_prob, K=8 D=1, 200 x 1000, vs hmmlearn "
         "GaussianHMM scaling", RatioRule(2.0), "issue 16"),
    Goal("hmm_gaussian_d4", "Gaussian HMM log_prob, K=8 D=4 full covariance, 200 x 1000, vs "
         "hmmlearn GaussianHMM scaling", RatioRule(2.0), "issue 16"),
    Goal("hmm_ragged_em", "HMM EM iteration on a ragged batch (log-normal lengths, max/mean "
         "~25) vs the same total steps in equal-length rows", RatioRule(1 / 1.5), "issue 16"),
    Goal("hmm_viterbi_long", "Viterbi, K=16, one sequence of 10^5, vs hmmlearn decode",
         RatioRule(1.0), "issue 16"),
    Goal("hmm_viterbi_batch", "Viterbi, K=16, 200 x 1000, vs hmmlearn decode",
         RatioRule(1.0), "issue 16"),
    Goal("hmm_smoother_long", "smoother, K=16, one sequence of 10^5, vs hmmlearn "
         "predict_proba", RatioRule(1.0), "issue 16"),
    Goal("hmm_smoother_batch", "smoother, K=16, 200 x 1000, vs hmmlearn predict_proba",
         RatioRule(1.0), "issue 16"),
    Goal("ar_fit_ols", "AR(5) pooled fit, 500 x 1000, vs statsmodels OLS on the same pooled "
         "design (design built inside the timing on both sides)", RatioRule(1.0),
         "issue 16: same work (replaces round one's comparison with a loop of AutoReg fits, "
         "which is different work and is now shown for information only)"),
    Goal("ar_fit_lstsq", "AR(5) pooled fit, 500 x 1000, vs np.linalg.lstsq on the same "
         "pooled design", RatioRule(1.0), "issue 16: same work"),
    Goal("ar_exact_log_prob", "AR(5) exact log_prob, 10^5 values, vs statsmodels "
         "ARIMA.loglike", RatioRule(20.0), "round one"),
    Goal("hsmm_log_prob", "hidden semi-Markov log_prob, K=4 D=50, categorical V=8, "
         "20 x 1000, vs hmmlearn CategoricalHMM score on the equivalent expanded-state HMM "
         "(K*D = 200 countdown states, scaling)", RatioRule(10.0),
         "issue 28: HSMM log_prob >= 10x hmmlearn on the equivalent expanded-state HMM"),
    # The state-space lines are measured in benchmarks/cases/lgssm.py, which attaches these
    # ids; until it does they are listed as not measured.
    Goal("lgssm_local_level_fit", "local level MLE on the Nile vs statsmodels "
         "UnobservedComponents.fit (wall time, same optimum)", RatioRule(1.0), "issue 16"),
    Goal("lgssm_trend_fit", "local linear trend MLE on co2 without gaps vs statsmodels "
         "UnobservedComponents.fit (wall time, same optimum)", RatioRule(1.0), "issue 16"),
    Goal("lgssm_smoother_1e5", "Kalman smoother, one series of 10^5, vs statsmodels smooth",
         RatioRule(1.0), "issue 16"),
    Goal("lgssm_smoother_1e6", "Kalman smoother, one series of 10^6, vs statsmodels smooth",
         RatioRule(1.0), "issue 16"),
    # An absolute budget, written as a ratio against a fixed 60 s "peer" (budget / time >= 1):
    # measured in benchmarks/cases/bayes.py.
    Goal("bayes_nuts_local_level", "BayesianModel NUTS fit of the local level (exact diffuse "
         "Kalman likelihood) on 100 points, 1 chain, 300 warmup + 500 draws, against a 60 s "
         "budget", RatioRule(1.0), "issue 27: under a minute on 2 cores"),
    # Goals that lived in the cases as a line's own ``goal=`` until issue 28 gave each line
    # a registered goal to replace (same ratios as before).
    Goal("lgssm_batched", "local level log_prob, 500 x 1000, vs a statsmodels loglike loop",
         RatioRule(20.0), "round one"),
    Goal("markov_counts", "order-1 Markov fit, 10^7 symbols, V=256, vs np.bincount",
         RatioRule(0.5), "round one"),
    Goal("recurrent_train", "RecurrentModel(lstm) training vs a plain torch loop "
         "of the same network", RatioRule(0.8), "round one"),
    # Issue 28 (round three), transcribed from the issue as filed, before any run judged by
    # them: first the turn-1 figures that round two's code fell below ("every line at or
    # above its turn-1 figure": the lower end of the issue's turn-1 range), then the raised
    # goals, each replacing the goal of its line.
    Goal("hmm_categorical_log_prob_turn1", "categorical HMM log_prob, K=16 V=32, 200 x 1000, "
         "vs hmmlearn scaling", RatioRule(3.81), "issue 28: back at the turn-1 figure"),
    Goal("hmm_long_log_prob_turn1", "categorical HMM log_prob, one sequence of 10^5, vs "
         "hmmlearn scaling", RatioRule(3.76), "issue 28: back at the turn-1 figure"),
    Goal("lgssm_batched_turn1", "local level log_prob, 500 x 1000, proper prior, vs a "
         "statsmodels loglike loop", RatioRule(29.1), "issue 28: back at the turn-1 figure"),
    Goal("ar_exact_log_prob_turn1", "AR(5) exact log_prob, 10^5 values, vs statsmodels "
         "ARIMA.loglike", RatioRule(42.7), "issue 28: back at the turn-1 figure"),
    Goal("markov_counts_turn1", "order-1 Markov fit, 10^7 symbols, V=256, vs np.bincount",
         RatioRule(0.62), "issue 28: back at the turn-1 figure"),
    Goal("recurrent_train_turn1", "RecurrentModel(lstm) training vs a plain torch loop of "
         "the same network", RatioRule(0.83), "issue 28: back at the turn-1 figure"),
    Goal("hmm_categorical_log_prob_r3", "categorical HMM log_prob, K=16 V=32, 200 x 1000, "
         "vs hmmlearn scaling", RatioRule(8.0), "issue 28: raised goal",
         replaces="hmm_categorical_log_prob"),
    Goal("hmm_long_log_prob_r3", "categorical HMM log_prob, one sequence of 10^5, vs "
         "hmmlearn scaling", RatioRule(8.0), "issue 28: raised goal",
         replaces="hmm_long_log_prob"),
    Goal("hmm_em_r3", "one categorical HMM EM iteration (fit, max_epochs=1), K=16 V=32, "
         "100 x 1000, vs hmmlearn fit(n_iter=1)", RatioRule(8.0), "issue 28: raised goal",
         replaces="hmm_em"),
    Goal("lgssm_batched_r3", "local level log_prob, 500 x 1000, proper prior, vs a "
         "statsmodels loglike loop", RatioRule(50.0), "issue 28: raised goal",
         replaces="lgssm_batched"),
    Goal("ar_exact_log_prob_r3", "AR(5) exact log_prob, 10^5 values, vs statsmodels "
         "ARIMA.loglike", RatioRule(100.0), "issue 28: raised goal",
         replaces="ar_exact_log_prob"),
    Goal("markov_counts_r3", "order-1 Markov fit, 10^7 symbols, V=256, vs np.bincount",
         RatioRule(1.0), "issue 28: raised goal (a count is a bincount)",
         replaces="markov_counts"),
    Goal("recurrent_train_r3", "RecurrentModel(lstm) training vs a plain torch loop of the "
         "same network", RatioRule(0.95), "issue 28: raised goal",
         replaces="recurrent_train"),
    # An absolute budget like the NUTS line's: measured in benchmarks/cases/main_job.py.
    Goal("main_job", "the main job (python -m probseq compare with its defaults, a fresh "
         "process) against a 60 s budget", RatioRule(1.0),
         "issue 28 (and 26): the main job under 60 s"),
    # Seasonal ARIMA (benchmarks/cases/arima.py), written before the first measurement.
    Goal("arima_log_prob_batch", "exact SARIMA(0,1,1)(0,1,1,12) log_prob over 200 monthly "
         "series of 144 values vs a loop of statsmodels SARIMAX(simple_differencing=True)"
         ".loglike (models built outside the timing)", RatioRule(10.0), "issues 24 and 28"),
    Goal("arima_fit_airline", "SARIMA(0,1,1)(0,1,1,12) MLE on monthly co2 (526 values) vs "
         "statsmodels SARIMAX(simple_differencing=True).fit (wall time, model built inside "
         "the timing on both sides; probseq's optimum at least as high)", RatioRule(1.0),
         "issues 24 and 28"),
]}
