"""Where an epoch's batches come from: per-epoch seeds, the loader, unreadable images, the progress bar.

Every epoch reseeds every random source from (seed, epoch), so a resumed run draws the same numbers;
the loader gives the same global batches for any number of processes (each takes its slice).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipnet.data.errors import DataError, ImageLoadError
from pipnet.core.train_config import TrainConfig
from pipnet.train.distributed import DistInfo, GlobalBatchSampler, class_balanced_weights

__all__ = ["Progress", "batches", "epoch_loader", "epoch_seed", "seed_epoch"]


def epoch_seed(seed: int, epoch_index: int) -> int:
    """The one number every random source of epoch `epoch_index` (0: before the first) is seeded from."""
    return seed * 1_000_003 + epoch_index


def seed_epoch(seed: int, epoch_index: int) -> torch.Generator:
    """Seed every random source from (seed, epoch): a resumed run draws the same numbers."""
    s = epoch_seed(seed, epoch_index)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def epoch_loader(dataset, batch_size: int, config: TrainConfig, generator: torch.Generator, info: DistInfo, device,
                 *, in_memory: bool = False) -> DataLoader:
    """The epoch's loader: the same global batches for any number of processes (each takes its slice).

    `in_memory`: the items are tensors already in memory (a feature bank): no worker processes, no pinning.
    """
    rt = config.runtime
    weights = None
    if config.data.balanced:  # spec 10.6: draws with replacement, each image weighted 1 / (its class's size)
        if not hasattr(dataset, "targets"):
            raise DataError("data.balanced needs a data set that knows its labels (targets)")
        weights = class_balanced_weights(dataset.targets)
    sampler = GlobalBatchSampler(len(dataset), batch_size, generator, info.rank, info.world_size, weights)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=0 if in_memory else rt.num_workers,
        generator=generator,
        worker_init_fn=_worker_init,
        pin_memory=device.type == "cuda" and not in_memory,
        persistent_workers=False,
    )


_WORKER_ERROR = re.compile(r"Caught (ImageLoadError|DataError) in DataLoader worker process \d+")
_SKIP_HINT = "(data.bad_images: skip leaves unreadable images out)"


def batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches; an image that cannot be read stops training with one line naming the file.

    PyTorch re-raises an exception from a worker process with the worker's whole traceback as its
    message (as a RuntimeError when, like `ImageLoadError`, its type cannot be rebuilt from one
    string); the traceback's last line is the original message.
    """
    try:
        yield from loader
    except ImageLoadError as e:
        raise DataError(f"{e} {_SKIP_HINT}") from e
    except Exception as e:
        if not _WORKER_ERROR.match(str(e)):
            raise
        original = str(e).rstrip().splitlines()[-1].split(": ", 1)[-1]
        raise DataError(f"{original} {_SKIP_HINT}") from None


class Progress:
    """A tqdm bar on the main process only; postfix refreshed every `every` steps (each refresh syncs)."""

    def __init__(self, total: int, desc: str, enabled: bool, every: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)
        self.every = max(1, every)

    def update(self, step: int, sums: dict[str, torch.Tensor], count: int) -> None:
        self.bar.update(1)
        if not self.bar.disable and (step + 1) % self.every == 0:
            self.bar.set_postfix({k: f"{float(v) / max(count, 1):.3f}" for k, v in sums.items()})

    def close(self) -> None:
        self.bar.close()
