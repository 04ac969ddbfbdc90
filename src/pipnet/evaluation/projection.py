"""Projection: each prototype's most typical image patches over a data set (paper Fig. 4).

One batched pass over the data keeps, for every prototype, its top-k images in memory O(P * k). A
prototype's patch in an image is the argmax cell of its map there (its presence p is the max over cells),
so an image appears at most once per prototype: the row of distinct images the paper shows. The same pass
collects every (prototype, image) whose presence exceeds a threshold (0.5 for the second purity variant),
memory proportional to their number.

Images are ranked by the prototype's log-odds at its best cell (`model.prototype_log_odds` of the logits),
not by the presence itself: the two order cells and images identically, but presence rounds to 1.0 in
float32 once a prototype dominates a cell, and then the "top-10" of a saturated prototype would be decided
by image order. Real ties (equal log-odds) are broken deterministically: lower image index first; inside
one map, the lowest flattened cell index (row-major) among equal maxima. `Projection.tied` marks the
prototypes whose k-th and (k+1)-th images tie, i.e. whose row still depends on the image order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipnet.evaluation import metrics as M
from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model import PRESENCE_THRESHOLD, PIPNet, prototype_log_odds

__all__ = ["Projection", "best_cells", "everywhere_prototypes", "project",
           "prune_everywhere_prototypes", "prune_unused_prototypes"]


@dataclass(frozen=True, eq=False)
class Projection:
    """The result of `project` (all tensors on the CPU).

    Attributes:
        presence: (P, k) the presences of every prototype's top-k images, highest first.
        image_index: (P, k) long, index in the data set of the image of each entry.
        cell: (P, k, 2) long, (i, j) argmax cell of the prototype's map in that image.
        grid: (h, w) latent grid size.
        image_size: (H, W) of the model's input.
        max_presence: (P,) highest presence of each prototype over the data set.
        num_images: number of images projected.
        threshold: the presence threshold of the `above_*` rows.
        above_prototype: (M,) long, prototype of each (prototype, image) pair with presence > threshold,
            sorted by prototype, then image index.
        above_image: (M,) long, its image index.
        above_cell: (M, 2) long, its argmax cell.
        above_presence: (M,) its presence.
        score: (P, k) the log-odds the top-k are ranked by (`prototype_log_odds` at the cell), highest first.
        tied: (P,) bool, the k-th image ties with the next one (the row's last image was chosen by image order).
    """

    presence: torch.Tensor
    image_index: torch.Tensor
    cell: torch.Tensor
    grid: tuple[int, int]
    image_size: tuple[int, int]
    max_presence: torch.Tensor
    num_images: int
    threshold: float
    above_prototype: torch.Tensor
    above_image: torch.Tensor
    above_cell: torch.Tensor
    above_presence: torch.Tensor
    score: torch.Tensor
    tied: torch.Tensor

    @property
    def k(self) -> int:
        return self.presence.shape[1]

    def above_threshold(self, prototype: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image_index (n,), cell (n, 2), presence (n,)) of every image where `prototype` exceeds the threshold."""
        lo, hi = torch.searchsorted(self.above_prototype, torch.tensor([prototype, prototype + 1])).tolist()
        return self.above_image[lo:hi], self.above_cell[lo:hi], self.above_presence[lo:hi]


def merge_topk(
    score: torch.Tensor, presence: torch.Tensor, image: torch.Tensor, cell: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the k best columns of (P, n) candidates: higher score first, ties to the earlier column.

    Columns must be ordered so that ties should go to the earlier one (running top-k first, then new images
    in increasing index). A stable descending sort gives exactly that; `torch.topk` does not promise any
    order among ties.
    """
    order = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]  # (P, k)
    return score.gather(1, order), presence.gather(1, order), image.gather(1, order), cell.gather(1, order)


def best_cells(logits: torch.Tensor, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prototype's best cell in each image and its log-odds there: (B, P, h, w) -> (B, P), (B, P) flat cell.

    The log-odds are computed in float64 and rounded to float32, so that equal logits in a different
    channel order give equal scores (real ties stay ties); the first maximal cell wins a tie inside a map.
    `chunk` images at a time bound the float64 temporaries.
    """
    scores, cells = [], []
    for part in logits.split(chunk):
        score, cell = prototype_log_odds(part.double()).float().flatten(2).max(dim=2)
        scores.append(score)
        cells.append(cell)
    return torch.cat(scores), torch.cat(cells)


def project(
    model: PIPNet,
    data: Dataset | DataLoader,
    *,
    k: int = 10,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    presence_threshold: float = 0.5,
    num_workers: int = 0,
    progress: bool = False,
) -> Projection:
    """Find every prototype's top-k images (and argmax cells) over `data` in one batched pass.

    Runs under `torch.inference_mode()` in eval mode and never changes the model.

    Args:
        model: a PIP-Net.
        data: a data set yielding `(x, label)` (x normalised (3, S, S)), or a non-shuffling loader of it.
        k: how many images to keep per prototype (fewer when the data set is smaller).
        batch_size: images per forward pass (when `data` is a data set).
        device: where to run (default: the model's device).
        presence_threshold: also collect every (prototype, image) with presence above this.
        num_workers: loader workers (when `data` is a data set).
        progress: show a progress bar.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with eval_mode(model, device, precision="fp32") as dev:  # galleries rank: bf16 logits would tie
        loader = make_loader(data, batch_size, num_workers, pin_memory=dev.type == "cuda")
        P = model.num_prototypes
        top_s = torch.empty(P, 0, device=dev)
        top_p = torch.empty(P, 0, device=dev)
        top_img = torch.empty(P, 0, dtype=torch.long, device=dev)
        top_cell = torch.empty(P, 0, dtype=torch.long, device=dev)
        above: list[torch.Tensor] = []  # rows (prototype, image, cell) per batch
        above_p: list[torch.Tensor] = []
        seen, grid, image_size = 0, (0, 0), (0, 0)
        for batch in tqdm(loader, desc="projection", disable=not progress, leave=False):
            x = inputs_of(batch).to(dev, non_blocking=True)
            logits = model.prototype_logits(model.forward_features(x)).float()  # (B, P, h, w)
            B, _, h, w = logits.shape
            grid, image_size = (h, w), (int(x.shape[-2]), int(x.shape[-1]))
            score, cell = best_cells(logits)  # (B, P) each
            presence = torch.softmax(logits, dim=1).flatten(2).gather(2, cell[..., None])[..., 0]  # (B, P)
            image = torch.arange(seen, seen + B, device=dev)  # (B,)
            top_s, top_p, top_img, top_cell = merge_topk(  # k + 1 kept, to see whether the k-th ties with the next
                torch.cat([top_s, score.T], dim=1),
                torch.cat([top_p, presence.T], dim=1),
                torch.cat([top_img, image.expand(P, B)], dim=1),
                torch.cat([top_cell, cell.T], dim=1),
                k + 1,
            )
            b, p = (presence > presence_threshold).nonzero(as_tuple=True)  # ordered by image, then prototype
            above.append(torch.stack([p, image[b], cell[b, p]], dim=1))  # (m, 3)
            above_p.append(presence[b, p])
            seen += B
    if seen == 0:
        raise ValueError("project() got an empty data set")
    rows = torch.cat(above).cpu()  # (M, 3)
    rows_p = torch.cat(above_p).cpu()  # (M,)
    by_proto = torch.sort(rows[:, 0], stable=True).indices  # keeps image order inside each prototype
    rows, rows_p = rows[by_proto], rows_p[by_proto]
    kept = min(k, seen)
    top_s = top_s.cpu()
    tied = top_s[:, kept] == top_s[:, kept - 1] if top_s.shape[1] > kept else torch.zeros(P, dtype=torch.bool)
    top_s, top_p, top_img, top_cell = (t[:, :kept].cpu() for t in (top_s, top_p, top_img, top_cell))
    return Projection(
        presence=top_p,
        image_index=top_img.cpu(),
        cell=torch.stack([top_cell // grid[1], top_cell % grid[1]], dim=-1),
        grid=grid,
        image_size=image_size,
        max_presence=top_p[:, 0].clone(),
        num_images=seen,
        threshold=presence_threshold,
        above_prototype=rows[:, 0].clone(),
        above_image=rows[:, 1].clone(),
        above_cell=torch.stack([rows[:, 2] // grid[1], rows[:, 2] % grid[1]], dim=-1),
        above_presence=rows_p,
        score=top_s,
        tied=tied,
    )


def prune_unused_prototypes(model: PIPNet, projection: Projection, threshold: float = PRESENCE_THRESHOLD) -> list[int]:
    """Zero all classifier weights of prototypes whose top-k presence never exceeds `threshold`.

    The last step of training (paper supplementary Sec. 1.1), run on a projection of the training
    images without augmentation. Unlike evaluation, this changes the model.

    Args:
        model: the trained PIP-Net (modified in place).
        projection: [`project`][pipnet.evaluation.projection.project] of the projection set.
        threshold: presence that a prototype must exceed somewhere (0.1).

    Returns:
        The indices of those prototypes (whether or not they had non-zero weights).
    """
    if projection.max_presence.shape[0] != model.num_prototypes:
        raise ValueError(f"projection has {projection.max_presence.shape[0]} prototypes, model {model.num_prototypes}")
    idle = (projection.max_presence <= threshold).nonzero().flatten()
    with torch.no_grad():
        model.classifier.weight[:, idle.to(model.classifier.weight.device)] = 0.0
    return idle.tolist()


def everywhere_prototypes(
    model: PIPNet, projection: Projection, labels: torch.Tensor, share: float = M.EVERYWHERE_SHARE
) -> tuple[list[int], torch.Tensor]:
    """The used prototypes present (above `projection.threshold`, 0.5) on >= `share` of every class's images.

    Args:
        model: the PIP-Net (only read: which prototypes are used).
        projection: [`project`][pipnet.evaluation.projection.project] of a labelled set (the projection / training images).
        labels: (N,) the class of each projected image.
        share: the fraction of every class's images (0.9).

    Returns:
        The prototype indices (sorted) and the (P, C) share matrix of `pipnet.evaluation.metrics.presence_share_per_class`.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if len(labels) != projection.num_images:
        raise ValueError(f"{len(labels)} labels for {projection.num_images} projected images")
    shares = M.presence_share_per_class(projection.above_prototype, projection.above_image, labels,
                                        model.num_prototypes, model.num_classes)
    used = torch.zeros(model.num_prototypes, dtype=torch.bool)
    used[model.used_prototypes().cpu()] = True
    return (M.present_everywhere(shares, share) & used).nonzero().flatten().tolist(), shares


def prune_everywhere_prototypes(model: PIPNet, projection: Projection, labels: torch.Tensor,
                                share: float = M.EVERYWHERE_SHARE) -> list[int]:
    """Zero all classifier weights of the used prototypes present on most images of every class (an option).

    Not in the paper (`--optim.prune_everywhere`): run after `prune_unused_prototypes` on the same
    projection of the training images. Unlike evaluation, this changes the model.

    Returns:
        The pruned prototype indices (see `everywhere_prototypes`).
    """
    pruned, _ = everywhere_prototypes(model, projection, labels, share)
    with torch.no_grad():
        model.classifier.weight[:, torch.tensor(pruned, dtype=torch.long, device=model.classifier.weight.device)] = 0.0
    return pruned
