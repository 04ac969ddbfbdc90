"""Consistency and stability of prototypes on part keypoints (Huang et al., ICCV 2023, adapted to PIP-Net).

Huang et al. ("Evaluation and improvement of interpretability for self-explainable part-prototype
networks") score a part-prototype network with two numbers from part annotations. We could not read the
paper's own text here (only summaries of it), so the definitions below are those we understood; every
parameter is stated and can be changed.

- The *region* of a prototype in an image is a box of fixed size (`REGION_FRACTION` = 72/224 of the
  image side: 72 x 72 pixels at 224) centred on its highest activation: the centre pixel of the faithful
  patch of its argmax cell (`pipnet.evaluation.metrics.patch_centres`), clipped to the image.
- Its *part vector* in that image says which annotated parts have a (visible) keypoint in the region
  (half-open box test, parts merged by `part_groups` as for purity: `pipnet.evaluation.metrics.part_membership`).
- *Consistency*: a prototype is consistent when one part is in its region on at least `mu` = 0.8 of its
  evaluation images; the score is the share of consistent prototypes.
- *Stability*: Gaussian noise (`sigma` = 0.2 in the model's normalised input, about 0.045 of the [0, 1]
  pixel range under the ImageNet std) is added to the evaluation images; a prototype's stability is the
  share of them whose part vector is unchanged (the argmax is taken again on the noisy image); the score
  is the mean over prototypes.

Adaptation to PIP-Net. Huang et al. evaluate ProtoPNet's class-specific prototypes on the images of their
class. PIP-Net's prototypes are shared between classes and absent from most images (presence near 0,
where the argmax cell means nothing), so a prototype's *evaluation images* here are the images of the
classes it has a relevant weight for (relu(W) > 1e-3) on which it is present (presence > 0.5: the
`above_*` rows of a [`Projection`][pipnet.evaluation.projection.Projection], which therefore also give the clean cells).
A prototype with no evaluation image gets no score and is counted in neither number (`unscored`).
Stability uses only the evaluation images among the prototype's top-k (its gallery, k = 10), so that its
noisy pass covers the same union of gallery images as the other perturbations of the card
(`pipnet.evaluation.quality.sensitivity`); consistency uses them all.
Only used prototypes are scored. Note that consistency is purity's all-patches variant
(`pipnet.evaluation.metrics.purity_all_patches`) with a larger box and these evaluation images, so the two agree
in spirit but not in value.

Cost: the clean part vectors come from the projection (no pass); stability costs one batched forward pass
over the union of the gallery images with noise added.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from pipnet.evaluation import metrics as M
from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model import PIPNet
from pipnet.evaluation.projection import Projection, best_cells

__all__ = [
    "CONSISTENCY_THRESHOLD",
    "NOISE_STD",
    "REGION_FRACTION",
    "consistency_block",
    "evaluation_pairs",
    "noisy_cells",
    "part_shares",
    "part_vectors",
    "region_boxes",
    "stability_block",
    "unchanged_shares",
]

REGION_FRACTION = 72 / 224  # region side / image side (72 x 72 pixels at 224)
CONSISTENCY_THRESHOLD = 0.8  # mu: share of evaluation images on which one part must be in the region
NOISE_STD = 0.2  # sigma of the Gaussian noise, in the model's normalised input
NOISE_SEED = 0


def region_boxes(cells: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int],
                 fraction: float = REGION_FRACTION) -> torch.Tensor:
    """The region of each argmax cell: a box `fraction` of the image side, centred on the cell's patch centre.

    Side `round(fraction * H)` x `round(fraction * W)`; top = centre_y - side_h // 2 (left likewise),
    then clipped to the image (a region at the border is smaller, never shifted).

    Args:
        cells: (M, 2) (row, column) argmax cells.
        grid: (h, w), the latent grid.
        image_size: (H, W) of the model input.
        fraction: region side over image side.

    Returns:
        (M, 4) long (top, bottom, left, right).
    """
    height, width = image_size
    side_h, side_w = max(1, round(fraction * height)), max(1, round(fraction * width))
    centre = M.patch_centres(cells.reshape(-1, 2), grid, image_size)  # (M, 2) y, x
    top, left = centre[:, 0] - side_h // 2, centre[:, 1] - side_w // 2
    return torch.stack([top.clamp(0, height), (top + side_h).clamp(0, height),
                        left.clamp(0, width), (left + side_w).clamp(0, width)], dim=-1)


def evaluation_pairs(model: PIPNet, projection: Projection, labels: torch.Tensor,
                     prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (prototype, image, clean argmax cell) of every evaluation image of `prototypes` (module docstring).

    The rows of `projection.above_*` (presence > `projection.threshold`) whose image's class has a
    relevant weight (> 1e-3) for the prototype; ordered by prototype, then image.

    Returns:
        (M,) prototype, (M,) image index, (M, 2) cell.
    """
    labels = torch.as_tensor(labels).long().cpu()
    relevant = model.relevant_weights().cpu()  # (C, P)
    proto, image = projection.above_prototype, projection.above_image
    keep = torch.isin(proto, prototypes.long().cpu()) & relevant[labels[image], proto]
    return proto[keep], image[keep], projection.above_cell[keep]


def part_vectors(image: torch.Tensor, boxes: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    """(M, G) bool: the merged parts with a keypoint inside each box (`dataset.keypoints`, model-input frame)."""
    groups = getattr(dataset, "part_groups", None)
    contains, _ = M.part_membership(image, boxes, M.keypoint_table(dataset, image), int(dataset.num_parts), groups)
    return contains


def part_shares(contains: torch.Tensor, prototype: torch.Tensor, num_prototypes: int) -> torch.Tensor:
    """(P, G) float64: the share of each prototype's evaluation images whose region holds each part.

    Rows of prototypes without evaluation images are NaN.

    Args:
        contains: (M, G) bool part vectors.
        prototype: (M,) the prototype of each row.
        num_prototypes: P.
    """
    prototype = prototype.long().cpu()
    counts = torch.zeros(num_prototypes, contains.shape[1], dtype=torch.float64)
    counts.index_add_(0, prototype, contains.cpu().double())
    images = torch.bincount(prototype, minlength=num_prototypes).double()[:, None]  # (P, 1)
    return torch.where(images > 0, counts / images.clamp(min=1), torch.full_like(counts, math.nan))


def unchanged_shares(clean: torch.Tensor, noisy: torch.Tensor, prototype: torch.Tensor, num_prototypes: int) -> torch.Tensor:
    """(P,) float64: the share of each prototype's evaluation images whose part vector noise left unchanged.

    NaN for prototypes without evaluation images.

    Args:
        clean: (M, G) bool part vectors on the clean images.
        noisy: (M, G) bool part vectors on the noisy images.
        prototype: (M,) the prototype of each row.
        num_prototypes: P.
    """
    prototype = prototype.long().cpu()
    same = (clean.cpu() == noisy.cpu()).all(dim=1).double()  # (M,)
    hits = torch.zeros(num_prototypes, dtype=torch.float64).index_add_(0, prototype, same)
    images = torch.bincount(prototype, minlength=num_prototypes).double()
    return torch.where(images > 0, hits / images.clamp(min=1), torch.full_like(hits, math.nan))


def noisy_cells(model: PIPNet, dataset: Dataset, images: Sequence[int], *, std: float = NOISE_STD,
                seed: int = NOISE_SEED, batch_size: int = 64, device: torch.device | str | None = None,
                progress: bool = False) -> torch.Tensor:
    """Every prototype's argmax cell on each of `images` after adding Gaussian noise to the model input.

    The noise of image i is drawn from a generator seeded with `(seed, i)`, so it does not depend on the
    batch size or on which other images are scored. The argmax is the one of `pipnet.evaluation.projection.best_cells`
    (log-odds; the first maximal cell wins a tie). One batched pass under `torch.inference_mode()` in eval
    mode; the model is not changed.

    Args:
        model: the PIP-Net.
        dataset: yields `(x, label)` with x the normalised model input.
        images: the indices to score, in the order of the returned rows.
        std: sigma of the noise, in the normalised input.
        seed: the noise seed.
        batch_size: images per forward pass.
        device: where to run (default: the model's device).
        progress: show a progress bar.

    Returns:
        (len(images), P) long flat cell index (row * w + column).
    """
    images = [int(i) for i in images]
    rows: list[torch.Tensor] = []
    with eval_mode(model, device, precision="fp32") as dev:  # rankings: bf16 logits would tie
        loader = make_loader(Subset(dataset, images), batch_size)
        done = 0
        for batch in tqdm(loader, desc="stability", disable=not progress, leave=False):
            x = inputs_of(batch).float()
            noise = torch.stack([
                torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
                for i in images[done:done + len(x)]
            ])  # (B, 3, H, W): one generator per image, not per pixel
            x = (x + std * noise).to(dev, non_blocking=True)
            _, cell = best_cells(model.prototype_logits(model.forward_features(x)).float())  # (B, P)
            rows.append(cell.cpu())
            done += len(x)
    return torch.cat(rows) if rows else torch.zeros(0, model.num_prototypes, dtype=torch.long)


def consistency_block(shares: torch.Tensor, prototypes: torch.Tensor, part_names: Sequence[str],
                      threshold: float = CONSISTENCY_THRESHOLD, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `consistency` entry of the quality block from `part_shares`.

    `per_prototype` maps each scored prototype (str id) to its best share and that part's name (the
    first part on ties); `score` is the share of scored prototypes whose best share is >= `threshold`
    (NaN when none is scored).
    """
    per, consistent = {}, 0
    for p in prototypes.tolist():
        row = shares[p]
        if row.numel() == 0 or torch.isnan(row).all():
            continue
        best = int(row.argmax())
        per[str(p)] = {"score": float(row[best]), "part": str(part_names[best]) if best < len(part_names) else str(best)}
        consistent += float(row[best]) >= threshold
    n = len(per)
    return {"score": consistent / n if n else math.nan, "consistent": int(consistent), "num_prototypes": n,
            "unscored": len(prototypes) - n, "threshold": threshold, "per_prototype": per, "params": params or {}}


def stability_block(unchanged: torch.Tensor, prototypes: torch.Tensor, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `stability` entry of the quality block from `unchanged_shares`: mean over scored prototypes."""
    per = {str(p): float(unchanged[p]) for p in prototypes.tolist() if not math.isnan(float(unchanged[p]))}
    return {"score": sum(per.values()) / len(per) if per else math.nan, "num_prototypes": len(per),
            "per_prototype": per, "params": params or {}}
