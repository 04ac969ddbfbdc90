"""Training: the schedule as data (phases), the loop (engine), run folders and resumable checkpoints.

`train` and `TrainResult` load the loop on first use, so that the schedule's vocabulary
(`pipnet.train.phases`, read by `pipnet.train.diagnostics` and the report) loads without the loop.
"""

from pipnet.core.train_config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from pipnet.train import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'pipnet.train' has no attribute {name!r}")
