"""Hidden semi-Markov models: the model class, its duration families and the sparse
countdown recursions it runs on."""

from probseq.hsmm.model import HiddenSemiMarkovModel

__all__ = ["HiddenSemiMarkovModel"]
