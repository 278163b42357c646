"""Neural autoregressive sequence models: RNN, LSTM, GRU and a causal transformer."""

from probseq.recurrent.long_range import (
    LongRangeResult,
    hidden_gradient_norms,
    long_range_experiment,
    long_range_task,
)
from probseq.recurrent.model import RecurrentModel

__all__ = [
    "RecurrentModel",
    "long_range_experiment",
    "long_range_task",
    "hidden_gradient_norms",
    "LongRangeResult",
]
