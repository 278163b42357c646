"""Posteriors over model parameters through Pyro (NUTS or SVI), used as models.

:class:`BayesianModel` wraps a family with a ``pyro_model``; :func:`psis` is
Pareto-smoothed importance sampling, used for leave-future-out scoring.
"""

from probseq.bayes.model import MONTE_CARLO, BayesianModel
from probseq.bayes.psis import psis

__all__ = ["BayesianModel", "MONTE_CARLO", "psis"]
