"""The NUTS fit of a posterior (issue 27): wall time against a fixed budget."""

from __future__ import annotations

import warnings

from benchmarks.cases.common import local_level_series
from benchmarks.harness import Context, case, probseq_class
from benchmarks.report import Comparison
from benchmarks.timing import Timing, TimingConfig, measure

#: the budget of the goal ``bayes_nuts_local_level`` (seconds).
BUDGET_S = 60.0


@case("bayes_nuts", needs=("BayesianModel", "LinearGaussianSSM"),
      description="NUTS fit of a local level posterior on 100 points vs a 60 s budget")
def bayes_nuts(ctx: Context) -> None:
    """One NUTS chain (300 warmup, 500 draws) over the exact diffuse Kalman likelihood."""
    bayes, lgssm = probseq_class("BayesianModel"), probseq_class("LinearGaussianSSM")
    y = local_level_series(1, ctx.size(100, 40))[0]
    warmup, draws = ctx.size((300, 500), (50, 50))

    def fit() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return bayes(lgssm.local_level(), num_samples=draws,
                         warmup_steps=warmup).fit(y, seed=0)

    # one warm-up call and one timed repeat: a fit lasts seconds, not milliseconds
    config = TimingConfig(repeats=1, max_rounds=1, min_time=0.0, budget=0.0)
    ours = measure([("probseq", fit)], config, ctx.monitor)["probseq"]
    budget = Timing(f"{BUDGET_S:g} s budget", kept=[BUDGET_S], wanted=1)
    c = Comparison(ctx.case_name, f"NUTS local level, {len(y)} points, {warmup}+{draws}",
                   budget.name, ours, budget, work=float(warmup + draws), unit="iterations",
                   note="budget / probseq time >= 1 means under the budget",
                   goal_ids=() if ctx.quick else ("bayes_nuts_local_level",))
    ctx.results.comparisons.append(c)
    ctx.log(f"  {c.task}: {ours.median:.1f} s ({BUDGET_S:g} s budget: {c.status})")
