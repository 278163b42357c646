"""Neural autoregressive sequence models: RNN, LSTM, GRU and a causal transformer."""

from probseq.recurrent.model import RecurrentModel

__all__ = ["RecurrentModel"]
