"""Resumable checkpoints: plain tensors and numbers that load with `torch.load(weights_only=True)`.

Written atomically after every epoch (a temporary file, fsync, rename), so an interruption at any
moment leaves the last good checkpoint readable. Random states need not be saved: every epoch reseeds
from (seed, epoch), so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipnet.core.utils import atomic_write, load_tensors

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_REQUIRED = ("epochs_done", "stage", "model", "optim")


class CheckpointError(RuntimeError):
    """A resume checkpoint is missing, corrupt or from another run."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write `state` (epoch counters, state dicts) to `path`.

    A failure (a full disk) leaves the previous checkpoint intact and says so. Temporary files left beside
    `path` by a save that was killed are removed first.
    """
    try:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # atomic_write's temporaries from a killed save
            stale.unlink(missing_ok=True)
        # Through a Python file object, so that a full disk surfaces as an OSError (torch's own
        # writer reports it as a RuntimeError about zip positions).
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
    except (OSError, RuntimeError) as e:
        disk = e if isinstance(e, OSError) else e.__context__
        reason = disk.strerror if isinstance(disk, OSError) and disk.strerror else str(e)
        raise CheckpointError(
            f"could not write the checkpoint {path} ({reason}); the previous checkpoint is intact"
        ) from e


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` without unpickling anything but tensors."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = load_tensors(path, map_location)
    except Exception as e:  # noqa: BLE001 - truncated zip, refused globals, ...
        raise CheckpointError(f"the checkpoint {path} is corrupt, truncated or unsafe: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pipnet training checkpoint")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: not a complete pipnet training checkpoint")
    return state
