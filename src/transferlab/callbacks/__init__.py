"""Lightning callbacks of transferlab (``callbacks.<name>._target_: transferlab.callbacks.<Class>``)."""

from transferlab.callbacks.checkpoint import ResumableModelCheckpoint
from transferlab.callbacks.gradual_unfreezing import GradualUnfreezing
from transferlab.callbacks.image_logging import ValidationImageLogger
from transferlab.callbacks.performance import PerformanceTuning
from transferlab.callbacks.source_forgetting import SourceForgetting

__all__ = [
    "GradualUnfreezing",
    "PerformanceTuning",
    "ResumableModelCheckpoint",
    "SourceForgetting",
    "ValidationImageLogger",
]
