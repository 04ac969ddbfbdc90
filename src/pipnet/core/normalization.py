"""The input normalisation of a model: the per-channel mean and std its backbone's weights were trained with.

It lives at the bottom of the package because the model (which records it) and the data (which applies it)
both need it; `pipnet.data.augment` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["IMAGENET", "IMAGENET_MEAN", "IMAGENET_STD", "Normalization"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """The input normalisation x = (rgb - mean) / std, rgb in [0, 1], per channel (R, G, B).

    A backbone declares the one its weights were trained with (`pipnet.model.backbones.backbone_normalization`);
    a saved model records it in its `config.json` (`PIPNet.normalization` owns it from then on).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"a normalisation needs 3 means and 3 positive stds, got {self.mean} / {self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float]) -> Normalization:
        """From any sequences (timm's and torchvision's lists or tuples)."""
        return cls(tuple(mean), tuple(std))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, list[float]]:
        """`{"mean": [...], "std": [...]}`, as recorded in a model's `config.json`."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, raw: Any) -> Normalization:
        """The inverse of `to_dict`; a `ValueError` for anything else."""
        if not isinstance(raw, dict) or set(raw) != {"mean", "std"}:
            raise ValueError(f"a normalisation is {{'mean': [r, g, b], 'std': [r, g, b]}}, got {raw!r}")
        try:
            return cls.of([float(v) for v in raw["mean"]], [float(v) for v in raw["std"]])
        except TypeError:
            raise ValueError(f"a normalisation is {{'mean': [r, g, b], 'std': [r, g, b]}}, got {raw!r}") from None

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """Normalise (..., 3, H, W) values in [0, 1]."""
        mean, std = self._view(rgb)
        return (rgb - mean) / std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Undo it: (..., 3, H, W) -> values in [0, 1] (clamped), for rendering and perturbing."""
        mean, std = self._view(x)
        return (x * std + mean).clamp(0.0, 1.0)

    def _view(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return mean, std


IMAGENET = Normalization(IMAGENET_MEAN, IMAGENET_STD)
