"""Deep Markov model: a nonlinear state-space model fitted by stochastic variational inference."""

from probseq.deep_markov.model import DeepMarkovModel

__all__ = ["DeepMarkovModel"]
