"""Multi-process training on PyTorch's own engine (`torchrun`): process group, samplers, gathers.

Launch with `torchrun --nproc_per_node=N -m pipnet train ...`; torchrun sets RANK / WORLD_SIZE /
LOCAL_RANK. Single-process runs go through the same functions, which then do nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistInfo", "GlobalBatchSampler", "class_balanced_weights", "init_distributed", "gather_presence", "all_reduce_sum"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def class_balanced_weights(targets: list[int] | torch.Tensor) -> torch.Tensor:
    """Sampling weight 1 / (size of its class) for every image: each class is drawn equally often.

    Args:
        targets: (n,) class of every image.

    Returns:
        (n,) float64 weights.
    """
    labels = torch.as_tensor(targets, dtype=torch.long)
    counts = torch.bincount(labels)  # (C,)
    return 1.0 / counts[labels].double()


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun prepared (NCCL on CUDA, gloo on the CPU); no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather_presence(presence: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The presence scores of the global batch (B_global, P), with gradients flowing back to each rank.

    The tanh loss sums presence over the whole batch; gathering makes it the loss of the global batch.
    The autograd-aware all_gather sums the gradient of every rank's copy into the owner's slice, and
    DDP then averages over ranks, which gives exactly the single-process gradient.
    """
    if not info.enabled:
        return presence
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(presence), dim=0)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (for epoch statistics); identity in a single process."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
    return t


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled global batches, each split between the processes: process r takes the r-th slice.

    The shuffle is `torch.randperm(n, generator)`, drawn when iteration starts, with the generator every
    process seeds alike, so the global batches are those of a single process with the same seed (as
    `shuffle=True, drop_last=True` draws them) whatever the number of processes. With `weights`
    (class-balanced sampling, as in the published code) the order is instead `n` draws with replacement,
    `torch.multinomial(weights, n, replacement=True, generator)`, from the same shared generator.

    Args:
        n: dataset length.
        batch_size: the global batch (rounded down to a multiple of `world_size`, at least one per process).
        generator: the shared shuffle generator (the DataLoader's).
        rank, world_size: this process and the number of processes.
        weights: optional (n,) sampling weight of every image (see `class_balanced_weights`).
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1,
                 weights: torch.Tensor | None = None):
        if weights is not None and len(weights) != n:
            raise ValueError(f"{len(weights)} sampling weights for {n} images")
        self.n, self.generator, self.rank, self.world_size, self.weights = n, generator, rank, world_size, weights
        self.local = max(1, min(batch_size, n) // world_size)
        self.global_batch = self.local * world_size

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        if self.weights is None:
            order = torch.randperm(self.n, generator=self.generator).tolist()
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator).tolist()
        start = self.rank * self.local
        for b in range(len(self)):
            first = b * self.global_batch + start
            yield order[first : first + self.local]
