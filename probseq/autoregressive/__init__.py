"""Gaussian autoregressive models with exact stationary joint likelihoods: AR(p) of
univariate series and VAR(p) of multivariate ones."""

from probseq.autoregressive.model import AutoRegressive
from probseq.autoregressive.var_model import VectorAutoRegressive

__all__ = ["AutoRegressive", "VectorAutoRegressive"]
