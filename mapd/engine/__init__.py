"""Training engine: device-resident data, batched augmentation, trajectory recording."""

from mapd.engine.augment import TensorSource, channel_stats
from mapd.engine.trainer import Method, Trainer, TrainResult, TrainSettings, pick_device

__all__ = [
    "Method",
    "TensorSource",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "channel_stats",
    "pick_device",
]
