"""Neural autoregressive sequence models: RNN, LSTM, GRU and a causal transformer."""

from probseq.recurrent.long_range import (
    LongRangeResult,
    exploding_gradient_norms,
    hidden_gradient_norms,
    long_range_experiment,
    long_range_task,
    recall_scores,
    sgd_step,
    untrained_model,
)
from probseq.recurrent.model import RecurrentModel

__all__ = [
    "RecurrentModel",
    "long_range_experiment",
    "long_range_task",
    "hidden_gradient_norms",
    "exploding_gradient_norms",
    "recall_scores",
    "untrained_model",
    "sgd_step",
    "LongRangeResult",
]
