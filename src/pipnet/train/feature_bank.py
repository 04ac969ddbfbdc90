"""A feature bank: the frozen first part of the backbone run once per stored view, not once per epoch.

While the `backbone` parameter group is frozen (`schedule.freeze_epochs >= schedule.epochs`), the
output of the backbone's first modules (those with no parameter that any epoch trains) depends only on
the augmented view of the image. With `schedule.feature_bank_views` N > 0, training computes that output
once for N augmented views of every training image, keeps it in memory, and trains the rest of the
model over it::

    view v of image i ──prefix (frozen, eval mode)──▶ bank[v, i]    (N, n, 2, D', h', w'), built once
    epoch e: bank[choice_e(i), i] ──rest of the backbone──▶ z ──add-on, max-pool, scoring sheet──▶ scores

What stays as without the bank: the schedule (phases, loss weights, optimisers, learning rates, the soft
threshold), the batches and their order (the same shuffle from the same epoch seed), the two views of an
item (stored as a pair, so they share their crop and flip as always) and every evaluation (which runs the
whole model). What changes:

- **which views are seen**: epoch e reads, for every image, one of its N stored views, each view once
  per N epochs in an order drawn per image (view v is the view epoch v + 1 would have drawn without
  the bank); without the bank every epoch draws a fresh one;
- **the frozen part's BatchNorm**: it normalises with its stored (pretrained) statistics, as at test
  time. Without the bank the whole model is in training mode, so the frozen stages normalise each batch
  by its own statistics and their running statistics drift towards the training images.

Both the pretraining stage and the classification stage read the bank (they train the same groups at
most); a data set whose pretraining images differ from its training images gets a second bank.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipnet.core.precision import autocast
from pipnet.core.train_config import TrainConfig
from pipnet.model import PIPNet, PIPNetOutput
from pipnet.model.backbones import BackboneError
from pipnet.train.batches import batches, epoch_seed
from pipnet.train.phases import EpochPlan
from pipnet.train.prefetch import prefetch

__all__ = ["BankedForward", "BankedTraining", "FeatureBank", "FeatureBankError", "check_schedule", "split_frozen"]

log = logging.getLogger(__name__)


class FeatureBankError(BackboneError):
    """A feature bank cannot serve this model or schedule (a backbone group trains, or no frozen prefix)."""


def check_schedule(views: int, plans: Sequence[EpochPlan]) -> None:
    """Refuse, before anything is built, a bank that the schedule cannot use.

    Raises:
        FeatureBankError: `views` < 0, or an epoch trains the `backbone` group.
    """
    if views < 0:
        raise FeatureBankError(f"schedule.feature_bank_views must be 0 (no bank) or more, got {views}")
    full = [p for p in plans if "backbone" in p.trains]
    if views and full:
        raise FeatureBankError(
            "schedule.feature_bank_views needs the early backbone frozen in every epoch: set schedule.freeze_epochs "
            f">= schedule.epochs (classification epoch {full[0].epoch} trains the backbone group)")


def split_frozen(model: PIPNet, plans: Sequence[EpochPlan]) -> tuple[nn.Sequential, nn.Sequential]:
    """The backbone's longest first part that no epoch of `plans` trains, and the rest.

    Args:
        model: the PIP-Net.
        plans: every epoch the bank serves.

    Returns:
        (prefix, rest): `rest(prefix(x))` equals `model.forward_features(x)`.

    Raises:
        FeatureBankError: an epoch trains the `backbone` group, the backbone is not a chain of modules,
            or its first module already trains.
    """
    check_schedule(1, plans)
    sequence = model.backbone.sequence()
    if sequence is None:
        raise FeatureBankError(f"schedule.feature_bank_views: the backbone {model.config.backbone!r} is not a chain of "
                               "modules that can be cut (efficientnet_lite0, the ResNets and ConvNeXt are)")
    trained = frozenset().union(*(p.trains for p in plans))
    cut = 0
    for name, module in sequence:
        if any(model.backbone.group_of(f"{name}.{p}") in trained for p, _ in module.named_parameters()):
            break
        cut += 1
    if not any(model.backbone.group_of(f"{name}.{p}") == "backbone" for name, m in sequence[:cut] for p, _ in m.named_parameters()):
        raise FeatureBankError(f"schedule.feature_bank_views: no frozen backbone stage comes first in {model.config.backbone!r}")
    return nn.Sequential(*(m for _, m in sequence[:cut])), nn.Sequential(*(m for _, m in sequence[cut:]))


class BankedForward(nn.Module):
    """The PIP-Net after its frozen prefix: stored features (2B, D', h', w') -> the training forward's output."""

    def __init__(self, core: PIPNet, rest: nn.Sequential):
        super().__init__()
        self.core, self.rest = core, rest

    def forward(self, z: torch.Tensor) -> PIPNetOutput:
        return self.core.forward_head(self.core.prototype_maps(self.rest(z)))  # as PIPNet.forward after the prefix


class _BankEpoch(Dataset):
    """One epoch's items `(z1, z2, label)`: image i's stored view pair `choice[i]`."""

    def __init__(self, features: torch.Tensor, choice: torch.Tensor, targets: list[int]):
        self.features, self.choice, self.targets = features, choice.tolist(), targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        pair = self.features[self.choice[i], i]  # (2, D', h', w')
        return pair[0], pair[1], self.targets[i]


class FeatureBank:
    """The frozen prefix's output for `views` augmented view pairs of every image of a two-view data set.

    Args:
        features: (views, n, 2, D', h', w'), in the dtype the prefix computed it in.
        targets: the n labels.
        seed: the run's seed (the per-epoch choice of views is drawn from it).
    """

    def __init__(self, features: torch.Tensor, targets: Sequence[int], seed: int):
        self.features, self.targets, self.seed = features, list(targets), seed

    @property
    def views(self) -> int:
        return self.features.shape[0]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()

    @classmethod
    @torch.inference_mode()
    def build(cls, prefix: nn.Module, dataset, *, views: int, seed: int, batch_size: int, device: torch.device,
              precision: str = "fp32", channels_last: bool = False, prefetch_depth: int = 0) -> FeatureBank:
        """Run `prefix` in eval mode on `views` seeded view pairs of every image of `dataset`.

        View v of image i is the pair the data set gives with the seed of epoch v + 1 (`set_seed`), so
        view 0 is the first epoch's. The prefix's training flags are restored afterwards.
        """
        if views < 1:
            raise FeatureBankError(f"schedule.feature_bank_views must be >= 0, got {views}")
        if not hasattr(dataset, "set_seed"):
            raise FeatureBankError("schedule.feature_bank_views needs a training set with seeded views (TwoViewDataset)")
        flags = [m.training for m in prefix.modules()]
        prefix.eval()
        n, features = len(dataset), None
        try:
            for v in range(views):
                dataset.set_seed(epoch_seed(seed, v + 1))
                loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
                start = 0
                for x1, x2, _ in prefetch(batches(loader), prefetch_depth):
                    x = torch.cat([x1, x2]).to(device)  # (2b, 3, S, S)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with autocast(device, precision):
                        z = prefix(x)  # (2b, D', h', w')
                    if features is None:
                        features = cls._allocate(views, n, z)
                    b = len(x1)
                    features[v, start:start + b] = torch.stack(z.chunk(2), dim=1)  # (b, 2, D', h', w')
                    start += b
        finally:
            dataset.set_seed(None)
            for m, flag in zip(prefix.modules(), flags):
                m.training = flag
        return cls(features, dataset.targets, seed)

    @staticmethod
    def _allocate(views: int, n: int, z: torch.Tensor) -> torch.Tensor:
        shape = (views, n, 2, *z.shape[1:])
        need = z[0].numel() * z.element_size() * 2 * views * n
        if z.device.type == "cpu":
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else None
            if free is not None and need > free // 2:
                raise FeatureBankError(f"schedule.feature_bank_views {views}: the bank needs {need / 2**20:.0f} MiB, more "
                                       f"than half the free memory ({free / 2**20:.0f} MiB); use fewer views")
        return torch.empty(shape, dtype=z.dtype, device=z.device)

    def choice(self, epoch_index: int) -> torch.Tensor:
        """The stored view each image reads in epoch `epoch_index` (0-based over the run): (n,) ints.

        Epochs `c * views ... (c + 1) * views - 1` read every view of an image once, in an order drawn
        per image from (seed, c).
        """
        cycle, position = divmod(epoch_index, self.views)
        g = torch.Generator().manual_seed(epoch_seed(self.seed, -1 - cycle) % 2**63)
        order = torch.argsort(torch.rand(len(self.targets), self.views, generator=g), dim=1)  # (n, views)
        return order[:, position]

    def epoch(self, epoch_index: int) -> Dataset:
        """The data set of epoch `epoch_index`: items `(z1, z2, label)` from the stored views."""
        return _BankEpoch(self.features, self.choice(epoch_index), self.targets)


def build_logged(prefix: nn.Module, dataset, views: int, **kwargs) -> FeatureBank:
    """`FeatureBank.build` with a log line of its size and time."""
    started = time.perf_counter()
    bank = FeatureBank.build(prefix, dataset, views=views, **kwargs)
    log.info("feature bank: %d views x %d images, %s %s (%.1f MiB) in %.1f s", views, len(dataset),
             tuple(bank.features.shape[3:]), str(bank.features.dtype).removeprefix("torch."), bank.nbytes / 2**20,
             time.perf_counter() - started)
    return bank


class BankedTraining:
    """What the training loop asks of the bank: each epoch's data set and the module to train.

    Args:
        model: the PIP-Net being trained.
        plans: every epoch of the run.
        config: the run's configuration (`schedule.feature_bank_views`, seed, precision, batch sizes).
        device: where the bank is computed and kept.
    """

    def __init__(self, model: PIPNet, plans: Sequence[EpochPlan], config: TrainConfig, device: torch.device,
                 *, channels_last: bool = False):
        self.prefix, rest = split_frozen(model, plans)
        self.forward = BankedForward(model, rest)
        self.config, self.device, self.channels_last = config, device, channels_last
        self._banks: dict[int, FeatureBank] = {}

    def dataset(self, source, epoch_index: int, batch_size: int) -> Dataset:
        """Epoch `epoch_index`'s items from the bank of `source` (built on first use, with the global
        random state left as it was, so the rest of the run draws what it draws without the bank)."""
        key = id(source)
        if key not in self._banks:
            rt = self.config.runtime
            with torch.random.fork_rng(devices=[]):
                self._banks[key] = build_logged(
                    self.prefix, source, self.config.schedule.feature_bank_views, seed=rt.seed, batch_size=batch_size,
                    device=self.device, precision=rt.precision, channels_last=self.channels_last, prefetch_depth=rt.prefetch)
        return self._banks[key].epoch(epoch_index)
