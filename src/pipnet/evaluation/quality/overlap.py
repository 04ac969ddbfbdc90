"""Prototypes that overlap: duplicates (two prototypes, one detector) and prototypes present everywhere.

Both read a [`Projection`][pipnet.evaluation.projection.Projection]; neither runs the model.

- *Duplicates*: two used prototypes are duplicates when at least `DUPLICATE_SHARE` = half of their
  top-k images (k = 10: the projection's galleries) are the same images, where both have presence
  > 0.1 (the inference threshold: below it the classifier ignores a prototype) and argmax cells at most
  `DUPLICATE_CELLS` = 1 grid cell apart (Chebyshev distance: the same cell or one of its 8 neighbours).
  Why the galleries and not "both present (> 0.5) at the same place": presence is a softmax over
  prototypes at each cell, so two copies of one detector split it (about 0.5 each) and are never both
  present at one cell; their rankings of images and cells, though, coincide. Not in the paper; the
  rule is ours. `chance` in the block is the share two unrelated prototypes would reach (random top-k
  images, random cells): near 1 when k is close to the number of images and the grid is tiny, where the
  rule cannot tell prototypes apart.
- *Everywhere*: used prototypes present (> 0.5) on at least 90% of the images of every class
  (`pipnet.evaluation.projection.everywhere_prototypes`): they carry no class information and usually encode
  background or colour.
"""

from __future__ import annotations

from typing import Any

import torch

from pipnet.evaluation import metrics as M
from pipnet.model import PRESENCE_THRESHOLD, PIPNet
from pipnet.evaluation.projection import Projection, everywhere_prototypes

__all__ = ["DUPLICATE_CELLS", "DUPLICATE_SHARE", "chance_share", "duplicate_pairs", "duplicates_block", "everywhere_block"]

DUPLICATE_SHARE = 0.5
DUPLICATE_CELLS = 1


def duplicate_pairs(
    image_index: torch.Tensor,
    cell: torch.Tensor,
    presence: torch.Tensor,
    prototypes: torch.Tensor,
    *,
    min_share: float = DUPLICATE_SHARE,
    max_cells: int = DUPLICATE_CELLS,
    min_presence: float = PRESENCE_THRESHOLD,
) -> list[dict[str, Any]]:
    """Pairs of `prototypes` whose top-k images and argmax cells coincide (module docstring).

    For prototypes a < b: `shared` = images in both top-k rows where both presences exceed
    `min_presence` and the two argmax cells are at most `max_cells` apart in row and in column;
    `share` = shared / k. A pair is kept when share >= `min_share`. Each image is at most once in a
    row, so `shared` is symmetric.

    Args:
        image_index: (P, k) the top-k images of every prototype (`Projection.image_index`).
        cell: (P, k, 2) their argmax (row, column) (`Projection.cell`).
        presence: (P, k) the presence there (`Projection.presence`).
        prototypes: the candidate prototypes (the used ones).
        min_share: the share of the k images that makes a duplicate.
        max_cells: the largest row or column distance that counts as the same place.
        min_presence: the presence both need on a shared image.

    Returns:
        `{"a", "b", "share", "shared", "k"}` per pair, highest share first (ties: by a, then b).
    """
    candidates = prototypes.long().cpu().unique()
    k = image_index.shape[1]
    if len(candidates) < 2 or k == 0:
        return []
    img, pos = image_index[candidates].cpu(), cell[candidates].cpu()  # (U, k), (U, k, 2)
    img = torch.where(presence[candidates].cpu() > min_presence, img, torch.full_like(img, -1))  # -1: not counted
    pairs = []
    for u in range(len(candidates) - 1):  # one vectorised comparison of u's row against every later row
        same_image = (img[u][None, :, None] == img[u + 1:][:, None, :]) & (img[u] >= 0)[None, :, None]  # (V, k, k)
        near = (pos[u][None, :, None, :] - pos[u + 1:][:, None, :, :]).abs().amax(dim=-1) <= max_cells  # (V, k, k)
        shared = (same_image & near).any(dim=2).sum(dim=1)  # (V,)
        for v in (shared >= min_share * k).nonzero().flatten().tolist():
            n = int(shared[v])
            pairs.append({"a": int(candidates[u]), "b": int(candidates[u + 1 + v]), "share": n / k, "shared": n, "k": k})
    return sorted(pairs, key=lambda p: (-p["share"], p["a"], p["b"]))


def chance_share(k: int, num_images: int, grid: tuple[int, int], max_cells: int = DUPLICATE_CELLS) -> float:
    """The expected share of `duplicate_pairs` for two unrelated prototypes.

    Each top-k image of one is in the other's top-k with probability k / N, and two cells drawn uniformly
    from the h x w grid are at most `max_cells` apart in row and column with probability
    P(|r1 - r2| <= m) * P(|c1 - c2| <= m); the share's expectation is their product (presence ignored).
    """
    if num_images == 0:
        return float("nan")
    near = 1.0
    for size in grid:
        index = torch.arange(size)
        near *= float(((index[:, None] - index[None, :]).abs() <= max_cells).double().mean())
    return min(k, num_images) / num_images * near


def duplicates_block(projection: Projection, prototypes: torch.Tensor, *, min_share: float = DUPLICATE_SHARE,
                     max_cells: int = DUPLICATE_CELLS) -> dict[str, Any]:
    """The `duplicates` entry of the quality block: the rule in words, the number of pairs and the pairs."""
    pairs = duplicate_pairs(projection.image_index, projection.cell, projection.presence, prototypes,
                            min_share=min_share, max_cells=max_cells)
    rule = (f"two used prototypes sharing at least {min_share:.0%} of their top-{projection.k} images, both present "
            f"(> {PRESENCE_THRESHOLD:g}) there with argmax cells at most {max_cells} cell apart")
    return {"rule": rule, "count": len(pairs), "pairs": pairs,
            "params": {"min_share": min_share, "max_cells": max_cells, "k": projection.k, "presence": PRESENCE_THRESHOLD,
                       "chance": chance_share(projection.k, projection.num_images, projection.grid, max_cells)}}


def everywhere_block(model: PIPNet, projection: Projection, labels: torch.Tensor,
                     share: float = M.EVERYWHERE_SHARE) -> dict[str, Any]:
    """The `everywhere` entry of the quality block (`pipnet.evaluation.projection.everywhere_prototypes`).

    Each found prototype maps to `share_min` (its smallest share over classes with images) and
    `per_class` (its share of each class's images; NaN for a class without images).
    """
    found, shares = everywhere_prototypes(model, projection, labels, share)
    known = ~torch.isnan(shares[0]) if shares.numel() else torch.zeros(0, dtype=torch.bool)
    prototypes = {str(p): {"share_min": float(shares[p, known].min()), "per_class": shares[p].tolist()} for p in found}
    rule = (f"used prototypes present (> {projection.threshold:g}) on at least {share:.0%} of the images of every class: "
            "no class information, usually background or colour")
    return {"rule": rule, "count": len(found), "prototypes": prototypes,
            "params": {"share": share, "presence": projection.threshold}}
