"""The two-view augmentation of PIP-Net (paper supplementary Sec. 1.3), the plain evaluation transform, and the input
normalisation both end with (`Normalization`: the per-channel mean and std a backbone's weights were
trained with; ImageNet's unless given, which is what the paper's backbones expect).

Per image, `T1` (location) runs once and `T2` (colour) twice, so the two views show the same patch
at the same place and differ only in colour and a few pixels of crop jitter. Both TrivialAugment stages
are torchvision's `TrivialAugmentWide` with a restricted op space: the ops themselves are torchvision's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import v2

from pipnet.core.normalization import IMAGENET, IMAGENET_MEAN, IMAGENET_STD, Normalization

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENET",
    "Normalization",
    "Preset",
    "LocationTrivialAugment",
    "ColourTrivialAugment",
    "StrongColourTrivialAugment",
    "TwoViewTransform",
    "eval_transform",
    "denormalize",
]


Preset = Literal["default", "birds", "cars", "pets", "grayscale"]
PRESETS: tuple[str, ...] = ("default", "birds", "cars", "pets", "grayscale")

# An op: (num_bins, height, width) -> magnitudes (or None for a parameter-free op), and whether to flip the sign.
_OpSpace = dict[str, tuple[Callable[[int, int, int], torch.Tensor | None], bool]]


def _linear(top: float) -> Callable[[int, int, int], torch.Tensor]:
    """Magnitudes 0..top in `num_bins` equal steps."""
    return lambda num_bins, height, width: torch.linspace(0.0, top, num_bins)


def _no_magnitude(num_bins: int, height: int, width: int) -> None:
    return None


def _posterize_bits(num_bins: int, height: int, width: int) -> torch.Tensor:
    """Bits kept by posterize: 8 (no change) down to 2."""
    return (8 - torch.arange(num_bins) / ((num_bins - 1) / 6)).round().int()


def _solarize_threshold(num_bins: int, height: int, width: int) -> torch.Tensor:
    """Solarize threshold as a fraction of the maximum: 1 (no change) down to 0."""
    return torch.linspace(1.0, 0.0, num_bins)


class LocationTrivialAugment(v2.TrivialAugmentWide):
    """TrivialAugment over the location ops only: identity, shear <= 0.5, translate <= 16 px, rotate <= 60 deg."""

    _AUGMENTATION_SPACE: _OpSpace = {
        "Identity": (_no_magnitude, False),
        "ShearX": (_linear(0.5), True),
        "ShearY": (_linear(0.5), True),
        "TranslateX": (_linear(16.0), True),
        "TranslateY": (_linear(16.0), True),
        "Rotate": (_linear(60.0), True),
    }


class ColourTrivialAugment(v2.TrivialAugmentWide):
    """TrivialAugment over the colour ops: brightness / contrast / sharpness <= 0.5, colour <= 0.02,
    posterize 8 -> 2 bits, autocontrast, equalize (and identity)."""

    _AUGMENTATION_SPACE: _OpSpace = {
        "Identity": (_no_magnitude, False),
        "Brightness": (_linear(0.5), True),
        "Contrast": (_linear(0.5), True),
        "Sharpness": (_linear(0.5), True),
        "Color": (_linear(0.02), True),
        "Posterize": (_posterize_bits, False),
        "AutoContrast": (_no_magnitude, False),
        "Equalize": (_no_magnitude, False),
    }


class StrongColourTrivialAugment(v2.TrivialAugmentWide):
    """The colour ops for data whose colour carries no class information (cars): colour <= 0.5 and solarize."""

    _AUGMENTATION_SPACE: _OpSpace = {
        **ColourTrivialAugment._AUGMENTATION_SPACE,
        "Color": (_linear(0.5), True),
        "Solarize": (_solarize_threshold, False),
    }


def _check(image_size: int, preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; expected one of {PRESETS}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")


def _to_three_channels(preset: str) -> list[v2.Transform]:
    """RGB conversion first; the grayscale preset also makes every image gray (three equal channels)."""
    steps: list[v2.Transform] = [v2.Lambda(_ensure_rgb)]
    if preset == "grayscale":
        steps.append(v2.Grayscale(num_output_channels=3))
    return steps


def _ensure_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def _to_normalized_tensor(normalization: Normalization) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(normalization.mean), std=list(normalization.std)),
    ]


class TwoViewTransform:
    """PIL image -> two aligned, differently coloured views `(view1, view2)`, float tensors (3, S, S).

    Args:
        image_size: S, the side of each view.
        preset: augmentation preset; `cars` widens the colour ops, `grayscale` makes images gray.
        delta: T1 first resizes to (S + delta) x (S + delta); 8 for CUB classification, else 32.
        crop_margin: T1's random resized crop is (S + crop_margin) square, so the views shift by up to
            that many pixels: 4 (paper supplementary Sec. 1.3), 8 for PETS under the paper protocol.
        location_interpolation: `bilinear` (default) or `nearest` (the published code, spec 10.5)
            for the location TrivialAugment.
        normalization: the backbone's input normalisation (ImageNet's by default).
    """

    def __init__(
        self,
        image_size: int,
        preset: Preset | str = "default",
        delta: int = 32,
        *,
        crop_margin: int = 4,
        location_interpolation: Literal["bilinear", "nearest"] = "bilinear",
        normalization: Normalization = IMAGENET,
    ) -> None:
        _check(image_size, preset)
        if delta < 0 or crop_margin < 0:
            raise ValueError(f"delta and crop_margin must be >= 0, got {delta} and {crop_margin}")
        self.image_size, self.preset, self.delta = image_size, preset, delta
        self.crop_margin, self.location_interpolation = crop_margin, location_interpolation
        self.normalization = normalization
        side = image_size + delta
        modes = {"bilinear": v2.InterpolationMode.BILINEAR, "nearest": v2.InterpolationMode.NEAREST}
        interpolation = modes[location_interpolation]
        self.t1 = v2.Compose(
            [
                *_to_three_channels(preset),
                v2.Resize((side, side)),
                LocationTrivialAugment(interpolation=interpolation),
                v2.RandomHorizontalFlip(),
                v2.RandomResizedCrop(image_size + crop_margin, scale=(0.95, 1.0)),
            ]
        )
        colour = StrongColourTrivialAugment() if preset == "cars" else ColourTrivialAugment()
        self.t2 = v2.Compose([colour, v2.RandomCrop(image_size), *_to_normalized_tensor(normalization)])

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        located = self.t1(img)
        return self.t2(located), self.t2(located)

    def __repr__(self) -> str:
        return (f"TwoViewTransform(image_size={self.image_size}, preset={self.preset!r}, delta={self.delta}, "
                f"crop_margin={self.crop_margin}, location_interpolation={self.location_interpolation!r}, "
                f"normalization={self.normalization})")


def eval_transform(
    image_size: int, preset: Preset | str = "default", normalization: Normalization = IMAGENET
) -> Callable[[Image.Image], torch.Tensor]:
    """The test / projection transform: RGB, resize to S x S, tensor, the backbone's normalisation.

    Args:
        image_size: S.
        preset: only `grayscale` changes anything (gray, three channels).
        normalization: the backbone's input normalisation (ImageNet's by default).
    """
    _check(image_size, preset)
    steps = [*_to_three_channels(preset), v2.Resize((image_size, image_size)), *_to_normalized_tensor(normalization)]
    return v2.Compose(steps)


def denormalize(x: torch.Tensor, normalization: Normalization = IMAGENET) -> torch.Tensor:
    """Undo a normalisation (ImageNet's by default): (..., 3, H, W) -> values in [0, 1], for rendering."""
    return normalization.invert(x)
