"""A report card for the prototypes: does each used prototype mean something?

[`quality_card`][pipnet.evaluation.quality.quality_card] measures, on a labelled data set, the `quality` block of `metrics.json`:

- `consistency` and `stability` (Huang et al., ICCV 2023, adapted to PIP-Net: `pipnet.evaluation.quality.parts`),
  `null` when the data has no part keypoints;
- `duplicates`: pairs of used prototypes firing on the same images at the same places;
- `everywhere`: used prototypes present on >= 90% of the images of every class
  (`pipnet.evaluation.quality.overlap`);
- `sensitivity`: how much each one's presence drops on its top images when the hue, contrast,
  saturation, texture or shape of the image is changed (after Nauta et al. 2021:
  `pipnet.evaluation.quality.sensitivity`); `pipnet.evaluation.quality.verdict.verdicts` turns the block into words;
- `suspects`: every used prototype's shortcut evidence, most suspicious first
  (`pipnet.evaluation.shortcuts.find_suspects`; two more passes over the data set, three with masks).

Like [`pipnet.evaluation.evaluate.evaluate`][pipnet.evaluation.evaluate.evaluate] it is a pure function: eval mode under `torch.inference_mode()`,
the model unchanged. Only used prototypes (a relevant class weight) are carded; prototype ids are
`str(int)` keys. Cost: a projection pass unless one is given (evaluate passes its own), plus one noisy pass
over the union of the used prototypes' top-k images for stability, plus six forward passes (the original and
five perturbations) over the union of their first `sensitivity_k` top images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from pipnet.evaluation.inference import labels_of
from pipnet.model import PIPNet
from pipnet.evaluation.projection import Projection, project
from pipnet.evaluation.quality.overlap import duplicates_block, everywhere_block
from pipnet.evaluation.quality.sensitivity import can_perturb, prototype_sensitivity
from pipnet.evaluation.quality.parts import (
    CONSISTENCY_THRESHOLD,
    NOISE_SEED,
    NOISE_STD,
    REGION_FRACTION,
    consistency_block,
    evaluation_pairs,
    noisy_cells,
    part_shares,
    part_vectors,
    region_boxes,
    stability_block,
    unchanged_shares,
)

__all__ = ["QUALITY_PRESENCE", "SENSITIVITY_K", "has_parts", "quality_card", "top_images"]

QUALITY_PRESENCE = 0.5  # "present": the projection threshold every block reads
SENSITIVITY_K = 5  # top images per prototype that sensitivity perturbs (the cost: 6 passes over their union)


def has_parts(dataset: Dataset) -> bool:
    """Whether `dataset` gives part keypoints: `keypoints(i)` and `num_parts` > 0."""
    return hasattr(dataset, "keypoints") and int(getattr(dataset, "num_parts", 0) or 0) > 0


def top_images(projection: Projection, prototypes: torch.Tensor) -> dict[int, list[int]]:
    """Prototype id -> the data-set indices of its top-k images (highest first), for `prototypes`."""
    return {int(p): projection.image_index[int(p)].tolist() for p in prototypes.tolist()}


def quality_card(
    model: PIPNet,
    dataset: Dataset,
    *,
    projection: Projection | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 64,
    progress: bool = False,
    parts: bool = True,
    k: int = 10,
    sensitivity: bool = True,
    sensitivity_k: int = SENSITIVITY_K,
    suspects: bool = True,
) -> dict[str, Any]:
    """The `quality` block of `metrics.json` for the used prototypes of `model` on `dataset`.

    Args:
        model: the PIP-Net (never changed).
        dataset: labelled images (`(x, label)`, labels in [0, C)), e.g. the projection (training) set;
            with `keypoints(i)` and `num_parts` for consistency and stability.
        projection: [`pipnet.evaluation.projection.project`][pipnet.evaluation.projection.project] of `dataset` with presence threshold 0.5 (computed
            when not given).
        device: where to run (default: the model's device).
        batch_size: images per forward pass.
        progress: show progress bars.
        parts: compute consistency and stability when the data has part keypoints (else they are None).
        k: top images per prototype, when the projection is computed here.
        sensitivity: measure the `sensitivity` block.
        sensitivity_k: the first this many top images of each prototype are perturbed.
        suspects: list the shortcut suspects (the `suspects` block).

    Returns:
        `{"consistency", "stability", "duplicates", "everywhere", "sensitivity", "suspects"}` (see the module
        docstring; no `sensitivity` with `sensitivity=False` and no `suspects` with `suspects=False`, each
        None when the inputs are not RGB images); NaN marks
        undefined numbers (`null` in JSON).
    """
    if projection is None:
        projection = project(model, dataset, k=k, batch_size=batch_size, device=device,
                             presence_threshold=QUALITY_PRESENCE, progress=progress)
    n = len(dataset)  # type: ignore[arg-type]
    if projection.num_images != n:
        raise ValueError(f"the projection covers {projection.num_images} images, the data set has {n}")
    if projection.threshold != QUALITY_PRESENCE:
        raise ValueError(f"the quality card needs a projection with presence threshold {QUALITY_PRESENCE}, "
                         f"got {projection.threshold}")
    labels = labels_of(dataset)
    used = model.used_prototypes().cpu()
    card: dict[str, Any] = {"consistency": None, "stability": None}
    if parts and has_parts(dataset):
        card.update(_parts(model, dataset, projection, labels, used, device=device, batch_size=batch_size,
                           progress=progress))
    card["duplicates"] = duplicates_block(projection, used)
    card["everywhere"] = everywhere_block(model, projection, labels)
    if sensitivity:
        if sensitivity_k < 1:
            raise ValueError(f"sensitivity_k must be >= 1, got {sensitivity_k}")
        card["sensitivity"] = None  # inputs that are not RGB images (hand-built test data) cannot be perturbed
        if len(dataset) and can_perturb(tuple(dataset[0][0].shape)):  # type: ignore[arg-type]
            top = {p: images[:sensitivity_k] for p, images in top_images(projection, used).items()}
            card["sensitivity"] = prototype_sensitivity(model, dataset, top, device=device, batch_size=batch_size,
                                                        progress=progress)
    if suspects:
        from pipnet.evaluation.shortcuts import find_suspects

        card["suspects"] = None
        if len(dataset) and can_perturb(tuple(dataset[0][0].shape)):  # type: ignore[arg-type]
            found = find_suspects(model, dataset, quality=card, batch_size=batch_size, device=device)
            card["suspects"] = [s.to_dict() for s in found]
    return card


def _parts(model: PIPNet, dataset: Dataset, projection: Projection, labels: torch.Tensor, used: torch.Tensor, *,
           device: torch.device | str | None, batch_size: int, progress: bool) -> dict[str, Any]:
    """Consistency and stability from the projection's clean cells and one noisy pass."""
    proto, image, cell = evaluation_pairs(model, projection, labels, used)
    clean = part_vectors(image, region_boxes(cell, projection.grid, projection.image_size), dataset)
    # Stability: the evaluation images among each prototype's top-k, so the noisy pass covers gallery images only.
    top = (projection.image_index[proto] == image[:, None]).any(dim=1)  # (M,)
    s_proto, s_image, s_clean = proto[top], image[top], clean[top]
    union = torch.unique(s_image)  # sorted
    flat = noisy_cells(model, dataset, union.tolist(), std=NOISE_STD, seed=NOISE_SEED, batch_size=batch_size,
                       device=device, progress=progress)  # (U, P)
    noisy_flat = flat[torch.searchsorted(union, s_image), s_proto]  # (M',) each pair's cell on its noisy image
    w = projection.grid[1]
    noisy_cell = torch.stack([noisy_flat // w, noisy_flat % w], dim=-1)
    noisy = part_vectors(s_image, region_boxes(noisy_cell, projection.grid, projection.image_size), dataset)
    P = model.num_prototypes
    side = [round(REGION_FRACTION * s) for s in projection.image_size]
    common = {"region": f"{side[0]}x{side[1]} px box centred on the argmax cell's patch (72/224 of the image side)",
              "images": "the images of the classes the prototype has a weight > 1e-3 for, where its presence > 0.5",
              "presence": projection.threshold, "num_pairs": len(proto), "source": "Huang et al., ICCV 2023, adapted"}
    names = list(getattr(dataset, "part_names", []) or [])
    return {
        "consistency": consistency_block(part_shares(clean, proto, P), used, names, CONSISTENCY_THRESHOLD,
                                         {**common, "mu": CONSISTENCY_THRESHOLD}),
        "stability": stability_block(
            unchanged_shares(s_clean, noisy, s_proto, P), used,
            {**common, "images": f"the evaluation images among the prototype's top-{projection.k}",
             "num_pairs": len(s_proto), "num_images": len(union), "sigma": NOISE_STD,
             "noise": "Gaussian, added to the normalised input", "seed": NOISE_SEED}),
    }
