"""Resumable checkpoints: plain tensors and numbers that load with ``torch.load(weights_only=True)``.

Written atomically after every epoch (a temporary file, fsync, rename), so an interruption at any
moment leaves the last good checkpoint readable. Random states need not be saved: every epoch reseeds
from (seed, epoch), so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipnet.utils import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "CHECKPOINT_NAME"]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.pt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A resume checkpoint is missing, corrupt or from another run."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (epoch counters, state dicts) to ``path``.

    A failure (a full disk) leaves the previous checkpoint intact and says so.
    """
    try:
        with atomic_write(path) as tmp:
            torch.save({"format": FORMAT_VERSION, **state}, tmp)
    except OSError as e:
        raise CheckpointError(
            f"could not write the checkpoint {path} ({e.strerror or e}); the previous checkpoint is intact"
        ) from e


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without unpickling anything but tensors."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, refused globals, ...
        raise CheckpointError(f"the checkpoint {path} is corrupt or truncated: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pipnet training checkpoint")
    return state
