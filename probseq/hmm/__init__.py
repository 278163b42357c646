"""Hidden Markov models: the model class and the exact recursions it runs on."""

from probseq.hmm.model import HiddenMarkovModel

__all__ = ["HiddenMarkovModel"]
