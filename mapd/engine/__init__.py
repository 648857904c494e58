"""Training engine: device-resident data, batched augmentation, trajectory recording.

Names are imported on first use (``mapd.engine.method`` alone stays light).
"""

from __future__ import annotations

from mapd._lazy import lazy_attributes

_WHERE = {
    "Method": "mapd.engine.method",
    "TensorSource": "mapd.engine.augment",
    "channel_stats": "mapd.engine.augment",
    "TrainResult": "mapd.engine.trainer",
    "TrainSettings": "mapd.engine.trainer",
    "Trainer": "mapd.engine.trainer",
    "pick_device": "mapd.engine.trainer",
}

__all__ = sorted(_WHERE)


__getattr__ = lazy_attributes(__name__, _WHERE)
