"""Parameter groups and learning-rate schedules, built from what is trainable."""

from transferlab.optim.param_groups import split_weight_decay
from transferlab.optim.schedulers import constant, cosine_with_warmup, one_cycle, step_decay

__all__ = [
    "constant",
    "cosine_with_warmup",
    "one_cycle",
    "split_weight_decay",
    "step_decay",
]
