"""probseq: probabilistic sequence models behind one API.

Every model exposes the exact joint log-likelihood ``log_prob``, the per-step conditionals
``log_prob_steps`` and ``sample``; :func:`compare` ranks fitted models on the same data.

The public names are imported on first use (``import probseq`` itself loads neither torch
nor Pyro, statsmodels or numba), so that the command line's ``--help`` and scripts that use
one family start quickly.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it (a module itself where the value is None).
_PUBLIC: dict[str, str | None] = {
    "Sequences": "probseq.data",
    "SequenceModel": "probseq.base",
    "NotFittedError": "probseq.base",
    "load": "probseq.base",
    "LinearGaussianSSM": "probseq.lgssm",
    "MarkovChain": "probseq.markov",
    "HiddenMarkovModel": "probseq.hmm",
    "HiddenSemiMarkovModel": "probseq.hsmm",
    "InputOutputHMM": "probseq.iohmm",
    "ARIMA": "probseq.arima",
    "AutoRegressive": "probseq.autoregressive",
    "VectorAutoRegressive": "probseq.autoregressive",
    "DeepMarkovModel": "probseq.deep_markov",
    "RecurrentModel": "probseq.recurrent",
    "SwitchingAutoRegressive": "probseq.switching",
    "BayesianModel": "probseq.bayes",
    "compare": "probseq.compare",
    "backtest": "probseq.backtest",
    "Forecast": "probseq.forecast",
    "datasets": None,
    "diagnostics": None,
    "distributed": None,
    "plots": None,
    "pretrained": None,
    "selection": None,
}

__all__ = [
    "Sequences",
    "SequenceModel",
    "NotFittedError",
    "load",
    "LinearGaussianSSM",
    "MarkovChain",
    "HiddenMarkovModel",
    "HiddenSemiMarkovModel",
    "InputOutputHMM",
    "AutoRegressive",
    "ARIMA",
    "VectorAutoRegressive",
    "DeepMarkovModel",
    "RecurrentModel",
    "SwitchingAutoRegressive",
    "BayesianModel",
    "compare",
    "backtest",
    "Forecast",
    "datasets",
    "diagnostics",
    "distributed",
    "plots",
    "pretrained",
    "selection",
]

if TYPE_CHECKING:  # what static tools and IDEs see
    from probseq import datasets, diagnostics, distributed, plots, pretrained, selection
    from probseq.arima import ARIMA
    from probseq.autoregressive import AutoRegressive, VectorAutoRegressive
    from probseq.backtest import backtest
    from probseq.base import NotFittedError, SequenceModel, load
    from probseq.bayes import BayesianModel
    from probseq.compare import compare
    from probseq.data import Sequences
    from probseq.deep_markov import DeepMarkovModel
    from probseq.forecast import Forecast
    from probseq.hmm import HiddenMarkovModel
    from probseq.hsmm import HiddenSemiMarkovModel
    from probseq.iohmm import InputOutputHMM
    from probseq.lgssm import LinearGaussianSSM
    from probseq.markov import MarkovChain
    from probseq.recurrent import RecurrentModel
    from probseq.switching import SwitchingAutoRegressive


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'probseq' has no attribute {name!r}")
    where = _PUBLIC[name]
    if where is None:
        value = importlib.import_module(f"probseq.{name}")
    else:
        value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``probseq.compare`` and ``probseq.backtest`` name functions, not the modules that
    define them: importing those modules (which sets them as attributes of the package)
    binds the functions instead, as an eager ``from probseq.compare import compare`` did."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _PUBLIC.get(name) == f"probseq.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
