"""Markov-switching autoregressions (Hamilton's model and the AR-HMM)."""

from probseq.switching.model import SwitchingAutoRegressive

__all__ = ["SwitchingAutoRegressive"]
