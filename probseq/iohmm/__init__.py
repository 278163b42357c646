"""Input-output hidden Markov models: transitions driven by covariates."""

from probseq.iohmm.model import InputOutputHMM

__all__ = ["InputOutputHMM"]
