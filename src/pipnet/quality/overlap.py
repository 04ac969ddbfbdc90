"""Prototypes that overlap: duplicates (two prototypes, one detector) and prototypes present everywhere.

Both read a :class:`~pipnet.projection.Projection` (its ``above_*`` rows: every (prototype, image) with
presence > 0.5 and the argmax cell there); neither runs the model.

- *Duplicates*: two used prototypes are duplicates when, over the images where either is present
  (> 0.5), at least ``DUPLICATE_OVERLAP`` = 0.8 have both present with argmax cells at most
  ``DUPLICATE_CELLS`` = 1 grid cell apart (Chebyshev distance: the same cell or one of its 8
  neighbours). That share is a Jaccard index of "present here" events, so a prototype that fires on a
  subset of another's images, or at other places on the same images, is no duplicate. Not in the paper;
  the rule is ours.
- *Everywhere*: used prototypes present (> 0.5) on at least 90% of the images of every class
  (:func:`pipnet.projection.everywhere_prototypes`): they carry no class information and usually encode
  background or colour.
"""

from __future__ import annotations

from typing import Any

import torch

from pipnet import metrics as M
from pipnet.model import PIPNet
from pipnet.projection import Projection, everywhere_prototypes

__all__ = ["DUPLICATE_CELLS", "DUPLICATE_OVERLAP", "duplicate_pairs", "duplicates_block", "everywhere_block"]

DUPLICATE_OVERLAP = 0.8
DUPLICATE_CELLS = 1


def duplicate_pairs(
    prototype: torch.Tensor,
    image: torch.Tensor,
    cell: torch.Tensor,
    prototypes: torch.Tensor,
    num_images: int,
    *,
    min_overlap: float = DUPLICATE_OVERLAP,
    max_cells: int = DUPLICATE_CELLS,
) -> list[dict[str, Any]]:
    """Pairs of ``prototypes`` that fire on the same images at the same places (module docstring).

    For prototypes a < b: ``either`` = images where a or b is present, ``both`` = images where both are
    present with argmax cells at most ``max_cells`` apart in row and in column, ``overlap`` =
    both / either. A pair is kept when overlap >= ``min_overlap`` (and either > 0).

    Args:
        prototype: (M,) prototype of each present (prototype, image) row, each pair at most once.
        image: (M,) its image.
        cell: (M, 2) its argmax (row, column).
        prototypes: the candidate prototypes (the used ones).
        num_images: N, images in the data set.
        min_overlap: the share that makes a duplicate.
        max_cells: the largest row or column distance that counts as the same place.

    Returns:
        ``{"a", "b", "overlap", "both", "either"}`` per pair, highest overlap first (ties: by a, then b).
    """
    candidates = prototypes.long().cpu().unique()
    U = len(candidates)
    if U < 2:
        return []
    slot = torch.full((int(max(int(candidates.max()), int(prototype.max()) if len(prototype) else 0)) + 1,), -1)
    slot[candidates] = torch.arange(U)
    keep = slot[prototype.long().cpu()] >= 0 if len(prototype) else torch.zeros(0, dtype=torch.bool)
    rows, cols = slot[prototype.long().cpu()[keep]], image.long().cpu()[keep]
    present = torch.zeros(U, num_images, dtype=torch.bool)
    present[rows, cols] = True
    where = torch.zeros(U, num_images, 2, dtype=torch.long)
    where[rows, cols] = cell.long().cpu()[keep]
    # Co-presence bounds the overlap from above: only pairs that pass it are checked cell by cell.
    count = present.sum(dim=1).double()  # (U,)
    co = present.double() @ present.double().T  # (U, U)
    either = count[:, None] + count[None, :] - co
    bound = torch.where(either > 0, co / either.clamp(min=1), torch.zeros_like(co))
    a_idx, b_idx = torch.triu(bound >= min_overlap, diagonal=1).nonzero(as_tuple=True)
    pairs = []
    for a, b in zip(a_idx.tolist(), b_idx.tolist()):
        both_present = present[a] & present[b]
        near = (where[a] - where[b]).abs().amax(dim=1) <= max_cells  # (N,)
        both = int((both_present & near).sum())
        total = int(either[a, b])
        if both / total >= min_overlap:
            pairs.append({"a": int(candidates[a]), "b": int(candidates[b]), "overlap": both / total,
                          "both": both, "either": total})
    return sorted(pairs, key=lambda p: (-p["overlap"], p["a"], p["b"]))


def duplicates_block(projection: Projection, prototypes: torch.Tensor, *, min_overlap: float = DUPLICATE_OVERLAP,
                     max_cells: int = DUPLICATE_CELLS) -> dict[str, Any]:
    """The ``duplicates`` entry of the quality block: the rule in words, the number of pairs and the pairs."""
    pairs = duplicate_pairs(projection.above_prototype, projection.above_image, projection.above_cell, prototypes,
                            projection.num_images, min_overlap=min_overlap, max_cells=max_cells)
    rule = (f"two used prototypes whose presence > {projection.threshold:g} falls, on at least {min_overlap:.0%} of the "
            f"images where either is present, on the same image with argmax cells at most {max_cells} cell apart")
    return {"rule": rule, "count": len(pairs), "pairs": pairs,
            "params": {"min_overlap": min_overlap, "max_cells": max_cells, "presence": projection.threshold,
                       "num_images": projection.num_images}}


def everywhere_block(model: PIPNet, projection: Projection, labels: torch.Tensor,
                     share: float = M.EVERYWHERE_SHARE) -> dict[str, Any]:
    """The ``everywhere`` entry of the quality block (:func:`pipnet.projection.everywhere_prototypes`).

    Each found prototype maps to ``share_min`` (its smallest share over classes with images) and
    ``per_class`` (its share of each class's images; NaN for a class without images).
    """
    found, shares = everywhere_prototypes(model, projection, labels, share)
    known = ~torch.isnan(shares[0]) if shares.numel() else torch.zeros(0, dtype=torch.bool)
    prototypes = {str(p): {"share_min": float(shares[p, known].min()), "per_class": shares[p].tolist()} for p in found}
    rule = (f"used prototypes present (> {projection.threshold:g}) on at least {share:.0%} of the images of every class: "
            "no class information, usually background or colour")
    return {"rule": rule, "count": len(found), "prototypes": prototypes,
            "params": {"share": share, "presence": projection.threshold}}
