"""probseq: probabilistic sequence models behind one API.

Every model exposes the exact joint log-likelihood ``log_prob``, the per-step conditionals
``log_prob_steps`` and ``sample``; :func:`compare` ranks fitted models on the same data.
"""

from probseq import datasets, distributed, plots, pretrained, selection
from probseq.autoregressive import AutoRegressive, VectorAutoRegressive
from probseq.backtest import backtest
from probseq.base import NotFittedError, SequenceModel, load
from probseq.compare import compare
from probseq.data import Sequences
from probseq.deep_markov import DeepMarkovModel
from probseq.forecast import Forecast
from probseq.hmm import HiddenMarkovModel
from probseq.iohmm import InputOutputHMM
from probseq.lgssm import LinearGaussianSSM
from probseq.markov import MarkovChain
from probseq.recurrent import RecurrentModel
from probseq.switching import SwitchingAutoRegressive

__version__ = "0.1.0"

__all__ = [
    "Sequences",
    "SequenceModel",
    "NotFittedError",
    "load",
    "LinearGaussianSSM",
    "MarkovChain",
    "HiddenMarkovModel",
    "InputOutputHMM",
    "AutoRegressive",
    "VectorAutoRegressive",
    "DeepMarkovModel",
    "RecurrentModel",
    "SwitchingAutoRegressive",
    "compare",
    "backtest",
    "Forecast",
    "datasets",
    "distributed",
    "plots",
    "pretrained",
    "selection",
]
