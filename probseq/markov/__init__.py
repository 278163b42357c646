"""Markov chains of any order over discrete symbols (sparse n-gram counts)."""

from probseq.markov.model import MarkovChain

__all__ = ["MarkovChain"]
