"""Training and transfer learning: ``edgecnn train``."""

from edgecnn.train.config import OptimizerName, SchedulerName, TrainConfig, TrainResult
from edgecnn.train.loop import apply_freeze, backbone_blocks, evaluate, train

__all__ = [
    "OptimizerName",
    "SchedulerName",
    "TrainConfig",
    "TrainResult",
    "apply_freeze",
    "backbone_blocks",
    "evaluate",
    "train",
]
