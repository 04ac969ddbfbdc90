"""Training: the schedule as data (phases), the loop (engine), run folders and resumable checkpoints."""

from pipnet.train.config import TrainConfig
from pipnet.train.engine import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
