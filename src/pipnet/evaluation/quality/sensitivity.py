"""What each prototype looks at: how much its presence drops when hue, contrast, saturation, texture or shape change.

After Nauta et al. 2021, "This looks like that, because ... Explaining prototypes for interpretable image
recognition" (arXiv 2011.02863), which explain a prototype by the visual characteristics its similarity
depends on, measured by perturbing images one characteristic at a time. The perturbations and the score
here are our own, stated below; the idea is theirs.

For every used prototype and each of its top images (e.g. a [`Projection`][pipnet.evaluation.projection.Projection]'s
row), the image is perturbed in five ways, one at a time, and the prototype's presence (the max of its map,
[`raw_presence`][pipnet.PIPNet.raw_presence]) is measured again, anywhere in the image: the prototype may
fire at another place after the change. The score of a perturbation is the mean relative drop
`(p - p') / p` over the top images where the prototype is present (p >= 0.1, the inference threshold);
it is 1 when the presence vanishes, 0 when nothing changes and negative when the presence rises.

The perturbations act on the RGB image in [0, 1] (S x S, the model's input before its normalisation). Every
pipnet data set yields normalised inputs, so the image is recovered by undoing the model's normalisation
(`model.normalization.invert`), perturbed, and normalised again; the unperturbed presence goes
through the same round trip. Parameters (`Perturbations`):

- `hue`: the hue turned by half a circle (180 degrees; red becomes cyan), `adjust_hue(x, 0.5)`.
- `saturation`: all colour removed (the ITU-R 601-2 gray of each pixel), `adjust_saturation(x, 0)`.
- `contrast`: contrast halved, each pixel blended halfway to the image's mean gray, `adjust_contrast(x, 0.5)`.
- `texture`: fine detail removed by a Gaussian blur with sigma = S / 48 pixels (4.7 px at S = 224;
  a stripe pattern of period S / 16 keeps about a tenth of its amplitude), kernel 2 * ceil(3 sigma) + 1.
- `shape`: the image cut into an 8 x 8 grid of tiles that are moved by one fixed permutation (the same
  for every image) that leaves no tile in place and no two neighbouring tiles side by side
  (`shuffle_tiles`); colour and texture inside each tile are kept, outlines larger than a tile are
  broken. With S not a multiple of 8 the last S mod 8 rows and columns stay where they are.

Cost: one batched pass over the union of the top images, six forward passes per batch (the original and
five perturbations): no per-image or per-pixel Python loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model import PRESENCE_THRESHOLD, PIPNet

__all__ = ["ASPECTS", "DOMINANT_DROP", "DOMINANT_MARGIN", "Perturbations", "can_perturb", "dominant_aspect",
           "prototype_sensitivity", "shuffle_tiles"]

ASPECTS = ("hue", "contrast", "saturation", "texture", "shape")
# Hue and saturation both ask "is it about colour": they do not compete for the dominant aspect.
_SAME_ASPECT = {"hue": "colour", "saturation": "colour"}
DOMINANT_DROP = 0.3  # the dominant perturbation lowers presence by at least this much ...
DOMINANT_MARGIN = 0.1  # ... and by this much more than any perturbation of another aspect


@dataclass(frozen=True)
class Perturbations:
    """The five perturbations and their parameters (see the module docstring).

    Args:
        hue_shift: turn of the hue, in full circles (0.5 = 180 degrees), in [-0.5, 0.5].
        saturation_factor: 0 = gray, 1 = unchanged.
        contrast_factor: 0 = a flat mean gray, 1 = unchanged.
        blur_sigma: Gaussian blur sigma as a fraction of the image side S.
        shuffle_grid: the shape perturbation's tiles per side (even, >= 8; see `shuffle_tiles`).
    """

    hue_shift: float = 0.5
    saturation_factor: float = 0.0
    contrast_factor: float = 0.5
    blur_sigma: float = 1 / 48
    shuffle_grid: int = 8

    def __post_init__(self) -> None:
        if not -0.5 <= self.hue_shift <= 0.5:
            raise ValueError(f"hue_shift must be in [-0.5, 0.5], got {self.hue_shift}")
        if self.saturation_factor < 0 or self.contrast_factor < 0:
            raise ValueError("saturation_factor and contrast_factor must be >= 0")
        if self.blur_sigma <= 0:
            raise ValueError(f"blur_sigma must be > 0, got {self.blur_sigma}")
        if self.shuffle_grid < 8 or self.shuffle_grid % 2:
            raise ValueError(f"shuffle_grid must be even and >= 8, got {self.shuffle_grid}")

    def describe(self, image_size: int) -> dict[str, str]:
        """Each perturbation in plain words, with its parameters at input size `image_size`."""
        sigma, kernel = self.blur(image_size)
        tile = image_size // self.shuffle_grid
        return {
            "hue": f"hue turned by {abs(self.hue_shift) * 360:g} degrees (colours swapped for their opposites)",
            "contrast": f"contrast scaled by {self.contrast_factor:g} (pixels blended towards the image's mean gray)",
            "saturation": f"saturation scaled by {self.saturation_factor:g}"
                          + (" (the image made gray)" if self.saturation_factor == 0 else ""),
            "texture": f"Gaussian blur, sigma {sigma:.2g} px (S / {1 / self.blur_sigma:g}), kernel {kernel} px: "
                       "fine texture removed",
            "shape": f"{self.shuffle_grid} x {self.shuffle_grid} tiles of {tile} px moved apart (no tile keeps its "
                     "place or a neighbour): outlines larger than a tile broken, colour and texture kept",
        }

    def blur(self, image_size: int) -> tuple[float, int]:
        """(sigma in pixels, odd kernel size) of the texture perturbation at input size `image_size`."""
        sigma = self.blur_sigma * image_size
        return sigma, 2 * math.ceil(3 * sigma) + 1

    def apply(self, name: str, rgb: torch.Tensor) -> torch.Tensor:
        """Perturb images `rgb` (B, 3, S, S) in [0, 1] by perturbation `name` (one of `ASPECTS`)."""
        if name == "hue":
            return TF.adjust_hue(rgb, self.hue_shift)
        if name == "saturation":
            return TF.adjust_saturation(rgb, self.saturation_factor)
        if name == "contrast":
            return TF.adjust_contrast(rgb, self.contrast_factor)
        if name == "texture":
            sigma, kernel = self.blur(rgb.shape[-1])
            return TF.gaussian_blur(rgb, [kernel, kernel], [sigma, sigma])
        if name == "shape":
            return shuffle_tiles(rgb, self.shuffle_grid)
        raise ValueError(f"unknown perturbation {name!r}; expected one of {ASPECTS}")


def shuffle_tiles(images: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """Move the tiles of a `grid` x `grid` cut of every image so that no tile stays and no neighbours stay.

    Tile (r, c) moves to ((r + 2c + 3) mod g, (2r + 5c + 3) mod g). The map is a bijection (its matrix
    [[1, 2], [2, 5]] has determinant 1); for even g no tile stays in place ((2c, 2r + 4c) is even, -3 is
    odd); and tiles that touched (side by side or one above the other) end up at least two tiles apart in
    some direction (steps (2, 5) and (1, 2) mod g, for g >= 8), so no outline longer than a tile survives
    in one piece. A random permutation would not promise that: with 64 tiles it leaves a few neighbours
    side by side. Tiles are (H // g) x (W // g); the last H mod g rows and W mod g columns stay.

    Args:
        images: (B, C, H, W).
        grid: tiles per side, even and >= 8.
    """
    if grid < 8 or grid % 2:
        raise ValueError(f"grid must be even and >= 8, got {grid}")
    B, C, H, W = images.shape
    th, tw = H // grid, W // grid
    if th == 0 or tw == 0:
        raise ValueError(f"a {H} x {W} image has no room for {grid} x {grid} tiles")
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    target = ((r + 2 * c + 3) % grid) * grid + (2 * r + 5 * c + 3) % grid  # (g, g) new flat position of each tile
    source = torch.empty(grid * grid, dtype=torch.long)
    source[target.flatten()] = torch.arange(grid * grid)  # the tile that lands on each position
    inner = images[..., : grid * th, : grid * tw]
    tiles = inner.reshape(B, C, grid, th, grid, tw).permute(0, 1, 2, 4, 3, 5).reshape(B, C, grid * grid, th, tw)
    moved = tiles[:, :, source.to(images.device)]
    out = images.clone()
    out[..., : grid * th, : grid * tw] = (
        moved.reshape(B, C, grid, grid, th, tw).permute(0, 1, 2, 4, 3, 5).reshape(B, C, grid * th, grid * tw)
    )
    return out


def dominant_aspect(drops: Mapping[str, float | None]) -> str | None:
    """The perturbation a prototype depends on most, or None when none stands out.

    Rule: the perturbation with the largest drop, when that drop is at least `DOMINANT_DROP` (0.3)
    and exceeds by at least `DOMINANT_MARGIN` (0.1) every drop of another aspect (hue and saturation
    are one aspect, colour, so a colour prototype that loses both is still "about colour"). Ties go to the
    earlier name in `ASPECTS`.
    """
    known = {k: v for k, v in drops.items() if v is not None and not math.isnan(v)}
    if not known:
        return None
    best = max(known, key=lambda k: (known[k], -ASPECTS.index(k) if k in ASPECTS else 0))
    group = _SAME_ASPECT.get(best, best)
    others = [v for k, v in known.items() if _SAME_ASPECT.get(k, k) != group]
    if known[best] < DOMINANT_DROP or any(known[best] - v < DOMINANT_MARGIN for v in others):
        return None
    return best


def can_perturb(shape: Sequence[int], perturbations: Perturbations = Perturbations()) -> bool:
    """Whether inputs of `shape` (C, H, W) are images the perturbations apply to: RGB, at least one pixel per tile."""
    return len(shape) == 3 and shape[0] == 3 and min(shape[1:]) >= perturbations.shuffle_grid


def _checked_top(top: Mapping[int, Sequence[int]], num_prototypes: int, num_images: int) -> dict[int, list[int]]:
    checked = {}
    for p, images in top.items():
        p = int(p)
        if not 0 <= p < num_prototypes:
            raise ValueError(f"prototype {p} outside 0..{num_prototypes - 1}")
        images = [int(i) for i in images]
        bad = [i for i in images if not 0 <= i < num_images]
        if bad:
            raise ValueError(f"top images of prototype {p} outside the data set's 0..{num_images - 1}: {bad[:5]}")
        checked[p] = images
    return checked


def prototype_sensitivity(
    model: PIPNet,
    dataset: Dataset,
    top: Mapping[int, Sequence[int]],
    *,
    device: torch.device | str | None = None,
    batch_size: int = 64,
    progress: bool = False,
    perturbations: Perturbations = Perturbations(),
) -> dict:
    """The `sensitivity` block of the prototype report card: each prototype's presence drop per perturbation.

    Runs under `torch.inference_mode()` in eval mode and never changes the model.

    Args:
        model: a PIP-Net.
        dataset: items `(x, label)` with x the model's input ((3, S, S), normalised with
            `model.normalization`), as every pipnet evaluation data set built for the model yields them.
        top: prototype id -> indices in `dataset` of its top images (e.g. a projection's row).
        device: where to run (default: the model's device).
        batch_size: images per forward pass.
        progress: show a progress bar.
        perturbations: the perturbations' parameters.

    Returns:
        `{"perturbations": {name: plain words}, "prototypes": {"12": {name: drop or None}},
        "dominant": {"12": name or None}, "params": {...}}` with prototype ids as strings (JSON keys).
        A drop is None when the prototype is present (p >= 0.1) on none of its top images.
    """
    top = _checked_top(top, model.num_prototypes, len(dataset))
    if len(dataset) and not can_perturb(tuple(dataset[0][0].shape), perturbations):
        raise ValueError(f"sensitivity needs RGB images (3, S, S) with S >= {perturbations.shuffle_grid}, "
                         f"got inputs of shape {tuple(dataset[0][0].shape)}")
    union = sorted({i for images in top.values() for i in images})
    row_of = {image: r for r, image in enumerate(union)}
    prototypes = sorted(top)
    columns = torch.tensor(prototypes, dtype=torch.long)
    presence = torch.zeros(1 + len(ASPECTS), len(union), len(prototypes))  # (original + 5, images, prototypes)
    image_size = model.config.image_size
    if union:
        with eval_mode(model, device, precision="fp32") as dev:  # rankings: bf16 logits would tie
            loader = make_loader(Subset(dataset, union), batch_size, pin_memory=dev.type == "cuda")
            start = 0
            for batch in tqdm(loader, desc="sensitivity", disable=not progress, leave=False):
                rgb = model.normalization.invert(inputs_of(batch).to(dev, non_blocking=True).float())  # (B, 3, S, S) in [0, 1]
                image_size = rgb.shape[-1]
                versions = [rgb] + [perturbations.apply(name, rgb) for name in ASPECTS]
                for v, images in enumerate(versions):
                    maps = model.prototype_maps(model.forward_features(model.normalization(images)))  # (B, P, h, w)
                    presence[v, start : start + len(rgb)] = model.raw_presence(maps).float()[:, columns.to(dev)].cpu()
                start += len(rgb)
    drops: dict[str, dict[str, float | None]] = {}
    for column, p in enumerate(prototypes):
        rows = torch.tensor([row_of[i] for i in top[p]], dtype=torch.long)
        base = presence[0, rows, column]  # (k,)
        present = base >= PRESENCE_THRESHOLD
        drops[str(p)] = {}
        for v, name in enumerate(ASPECTS, start=1):
            if not bool(present.any()):
                drops[str(p)][name] = None
                continue
            relative = (base - presence[v, rows, column]) / base  # (k,)
            drops[str(p)][name] = float(relative[present].double().mean())
    sigma, kernel = perturbations.blur(image_size)
    return {
        "perturbations": perturbations.describe(image_size),
        "prototypes": drops,
        "dominant": {p: dominant_aspect(d) for p, d in drops.items()},
        "params": {
            **asdict(perturbations),
            "blur_sigma_px": sigma,
            "blur_kernel_px": kernel,
            "image_size": image_size,
            "min_presence": PRESENCE_THRESHOLD,
            "dominant_drop": DOMINANT_DROP,
            "dominant_margin": DOMINANT_MARGIN,
            "num_images": len(union),
            "drop": "mean over the top images with p >= min_presence of (p - p') / p, p' the presence after "
                    "the perturbation (anywhere in the image)",
        },
    }
