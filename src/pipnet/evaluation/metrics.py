"""Evaluation metrics of PIP-Net as pure functions on tensors (Faithfulness page, 'Evaluation').

Nothing here sees a model: scores, presences, weights and boxes go in, numbers come out. Conventions:

- An image *abstains* when all its class scores are 0 (as in the paper); its prediction is -1 and it is never
  counted correct. Otherwise the prediction is the argmax, ties going to the lower class index.
- Weights are used as the classifier uses them, relu(W); a weight is relevant when > 1e-3.
- Undefined values (a rate with an empty denominator) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from pipnet.model.losses import output_logits

from pipnet.model import RELEVANCE_THRESHOLD
from pipnet.model.patches import PATCH_SIZE, central_boxes, patch_boxes

__all__ = [
    "auroc",
    "binary_metrics",
    "confusion_matrix",
    "fpr_at_tpr",
    "global_explanation_size",
    "keypoint_table",
    "local_explanation_sizes",
    "on_object",
    "part_membership",
    "patch_centres",
    "ood_thresholds",
    "predictions",
    "presence_share_per_class",
    "present_everywhere",
    "ood_thresholds_paper",
    "purity",
    "purity_all_patches",
    "purity_summary",
    "sparsity_ratio",
    "topk_accuracy",
]


# ---- classification ----------------------------------------------------------------------------------


def predictions(scores: torch.Tensor) -> torch.Tensor:
    """Predicted class of each row of `scores` (N, C): argmax (lowest index on ties), -1 when all are 0."""
    pred = scores.argmax(dim=1)
    return torch.where(scores.amax(dim=1) <= 0, torch.full_like(pred, -1), pred)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of images whose true class is among the k highest scores, for each k in `ks`.

    Ties rank the lower class index first (so top-1 agrees with `predictions`); an image that
    abstains (all scores 0) is never correct. With k >= C every non-abstaining image is correct.

    Args:
        scores: (N, C) class scores.
        labels: (N,) true classes in [0, C).
        ks: the k values.
    """
    N, C = scores.shape
    labels = labels.long().to(scores.device)
    if N and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"labels must be in [0, {C}) for accuracy")
    true = scores.gather(1, labels[:, None])  # (N, 1)
    classes = torch.arange(C, device=scores.device)
    rank = (scores > true).sum(dim=1) + ((scores == true) & (classes < labels[:, None])).sum(dim=1)  # (N,)
    answered = scores.amax(dim=1) > 0
    return {k: ((rank < k) & answered).double().mean().item() if N else math.nan for k in ks}


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts, rows = true class, columns = predicted; entries with a -1 (abstained, OoD) are left out."""
    pred, labels = pred.long().flatten(), labels.long().flatten().to(pred.device)
    keep = (pred >= 0) & (labels >= 0)
    flat = labels[keep] * num_classes + pred[keep]
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


def binary_metrics(scores: torch.Tensor, labels: torch.Tensor, multiplier: float = 2.0) -> dict[str, float]:
    """F1, sensitivity, specificity, balanced accuracy and AUC of a two-class task; class 1 is positive.

    An abstaining image counts as a negative prediction. The AUC ranks images by the model's
    probability of class 1, softmax(log(out^m + 1))[1], which orders them as o_1 - o_0 with
    o = log(out^m + 1); tied values count one half (Mann-Whitney).

    Args:
        scores: (N, 2) class scores.
        labels: (N,) in {0, 1}.
        multiplier: m of the score transform (2 in the paper).
    """
    if scores.shape[1] != 2:
        raise ValueError(f"binary metrics need 2 classes, got {scores.shape[1]}")
    labels = labels.long().to(scores.device)
    positive_pred, positive = predictions(scores) == 1, labels == 1
    tp = int((positive_pred & positive).sum())
    fp = int((positive_pred & ~positive).sum())
    fn = int((~positive_pred & positive).sum())
    tn = int((~positive_pred & ~positive).sum())
    sensitivity, specificity = _rate(tp, tp + fn), _rate(tn, tn + fp)
    o = output_logits(scores.double(), multiplier)  # (N, 2)
    margin = o[:, 1] - o[:, 0]
    return {
        "f1": _rate(2 * tp, 2 * tp + fp + fn),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "auc": auroc(margin[positive], margin[~positive]),
    }


def auroc(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> float:
    """Area under the ROC curve = P(positive score > negative score) + P(equal) / 2.

    Computed from average ranks (Mann-Whitney U), so ties are exact. For OoD detection pass the
    in-distribution max scores as positives and the OoD max scores as negatives.
    """
    pos, neg = positive_scores.double().flatten(), negative_scores.double().flatten()
    n_pos, n_neg = pos.numel(), neg.numel()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    values, inverse, counts = torch.unique(torch.cat([pos, neg]), return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based first rank of each distinct value
    average_rank = first.double() + (counts.double() + 1) / 2  # 1-based average rank of each value
    rank_sum = average_rank[inverse[:n_pos]].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


# ---- sparsity and explanation size -------------------------------------------------------------------


def sparsity_ratio(weight: torch.Tensor) -> float:
    """Fraction of classifier weights <= 1e-3 (negative raw weights count: relu makes them 0)."""
    return (weight <= RELEVANCE_THRESHOLD).double().mean().item()


def global_explanation_size(weight: torch.Tensor, mask: torch.Tensor | None = None) -> int:
    """Number of prototypes with a relevant weight (relu(W) > 1e-3) to any class.

    Args:
        weight: (C, P) classifier weights.
        mask: optional (P,) prototype mask (0 = switched off).
    """
    w = weight.clamp(min=0)
    if mask is not None:
        w = w * mask
    return int((w > RELEVANCE_THRESHOLD).any(dim=0).sum())


def local_explanation_sizes(
    presence: torch.Tensor, weight: torch.Tensor, pred: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image explanation sizes (the paper's local explanation size).

    Args:
        presence: (N, P) presence as the classifier used it at inference (p < 0.1 already set to 0).
        weight: (C, P) classifier weights (relu is applied here; mask switched-off prototypes beforehand).
        pred: (N,) predicted classes, -1 for an abstaining image.

    Returns:
        (N,) number of prototypes with p * W > 1e-3 for the predicted class (0 for abstaining images),
        (N,) the same for any class, and (N,) number of prototypes with p > 1e-3.
    """
    w = weight.clamp(min=0).to(presence.dtype)
    pred = pred.long()
    for_pred = presence * w[pred.clamp(min=0)]  # (N, P)
    size_pred = ((for_pred > RELEVANCE_THRESHOLD) & (pred >= 0)[:, None]).sum(dim=1)
    size_any = (presence * w.amax(dim=0) > RELEVANCE_THRESHOLD).sum(dim=1)  # p >= 0: max over classes of p * W
    present = (presence > RELEVANCE_THRESHOLD).sum(dim=1)
    return size_pred, size_any, present


# ---- out-of-distribution detection -------------------------------------------------------------------


def ood_thresholds(max_scores: torch.Tensor, preds: torch.Tensor, num_classes: int, tpr: float = 0.95) -> torch.Tensor:
    """Per-class score thresholds that keep a fraction `tpr` of in-distribution images (the paper's FPR at 95 % TPR).

    For class c with n in-distribution images predicted as c, the threshold is the largest t such that at
    least `tpr` of them have max score >= t: the m-th highest of their scores with m = ceil(tpr * n) (no
    interpolation). A class that no image was predicted as gets +inf; abstaining images (-1) are ignored.

    Args:
        max_scores: (N,) max class score of each in-distribution image.
        preds: (N,) predicted class (-1 = abstained).
        num_classes: C.
        tpr: the true-positive rate to keep, in (0, 1].

    Returns:
        (C,) float64 thresholds.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    keep = preds >= 0
    scores, classes = max_scores[keep].double().cpu(), preds[keep].long().cpu()
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(classes[order], stable=True).indices]  # by class, scores descending inside
    sorted_scores = scores[order]
    counts = torch.bincount(classes, minlength=num_classes)  # (C,)
    first = torch.cumsum(counts, 0) - counts
    # ceil(tpr * n) with a tolerance, so 0.95 * 20 = 19.000000000000004 gives 19, not 20.
    m = torch.ceil(counts.double() * tpr - 1e-9).long().clamp(min=1)
    pick = (first + m - 1).clamp(max=max(sorted_scores.numel() - 1, 0))
    picked = sorted_scores[pick] if sorted_scores.numel() else torch.zeros(num_classes, dtype=torch.float64)
    return torch.where(counts > 0, picked, torch.full_like(picked, math.inf))


def ood_thresholds_paper(
    max_scores: torch.Tensor, preds: torch.Tensor, num_classes: int, tpr: float = 0.95
) -> torch.Tensor:
    """Per-class thresholds by the published rule (Faithfulness page, 'The published code', item 2), for the unclamped training-time scores.

    1. Class c's threshold is the (1 - tpr) percentile, with linear interpolation (`torch.quantile`'s
       default, as numpy's), of the max scores of the in-distribution images predicted as c.
    2. A class no image was predicted as gets the mean of the other classes' thresholds.
    3. While fewer than `tpr` of all images reach the threshold of their predicted class (score >=
       threshold), every threshold is multiplied by 0.999.

    Predictions here are a plain argmax (ties to the lower class, and an all-zero row is class 0), as the
    published code takes them. Step 3 cannot end while more than 1 - `tpr` of the images score exactly
    0 before the thresholds underflow to 0; that is answered at once with zero thresholds.

    Args:
        max_scores: (N,) max class score of each in-distribution image (no 0.1 presence clamp).
        preds: (N,) argmax class of each image.
        num_classes: C.
        tpr: the fraction of in-distribution images to keep, in (0, 1].

    Returns:
        (C,) float64 thresholds (NaN when there are no images).
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    scores, classes = max_scores.double().cpu(), preds.long().cpu()
    if scores.numel() == 0:
        return torch.full((num_classes,), math.nan, dtype=torch.float64)
    thresholds = torch.zeros(num_classes, dtype=torch.float64)
    predicted = torch.zeros(num_classes, dtype=torch.bool)
    for c in torch.unique(classes).tolist():
        thresholds[c] = torch.quantile(scores[classes == c], 1.0 - tpr)
        predicted[c] = True
    thresholds[~predicted] = thresholds[predicted].mean()
    if ((scores > 0).double().mean() < tpr).item():
        return torch.zeros(num_classes, dtype=torch.float64)  # what the loop reaches once 0.999^n underflows
    while ((scores >= thresholds[classes]).double().mean() < tpr).item():
        thresholds = thresholds * 0.999
    return thresholds


def fpr_at_tpr(ood_max_scores: torch.Tensor, ood_preds: torch.Tensor, thresholds: torch.Tensor) -> float:
    """Fraction of OoD images whose max score reaches the threshold of their predicted class.

    Abstaining OoD images (prediction -1) are never false positives.
    """
    preds = ood_preds.long().cpu()
    if preds.numel() == 0:
        return math.nan
    reached = ood_max_scores.double().cpu() >= thresholds.double().cpu()[preds.clamp(min=0)]
    return ((preds >= 0) & reached).double().mean().item()


# ---- purity ---------------------------------------------------------------------------------------------


def part_membership(
    image: torch.Tensor,
    boxes: torch.Tensor,
    keypoints: torch.Tensor,
    num_parts: int,
    part_groups: Sequence[int] | torch.Tensor | None = None,
    closed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which merged parts lie in each box, and which its image shows: the part vectors of purity and consistency.

    A part is in a box when one of its keypoints lies inside (half-open: top <= y < bottom,
    left <= x < right; `closed=True` also counts the far edges). Parts mapped to the same group count as
    one part, in the box when either keypoint is.

    Args:
        image: (M,) image index of each box.
        boxes: (M, 4) (top, bottom, left, right), in the keypoints' coordinates.
        keypoints: (K, 4) rows (image index, part id, x, y) of every annotated keypoint (visible ones).
        num_parts: number of part ids.
        part_groups: optional (num_parts,) group of each part id.
        closed: count keypoints on the bottom and right edges too.

    Returns:
        (M, G) bool: the box contains the part; (M, G) bool: the box's image shows the part.
    """
    device = boxes.device
    image = image.long().to(device)
    groups = torch.arange(num_parts) if part_groups is None else torch.as_tensor(part_groups).long()
    groups = groups.to(device)
    num_groups = int(groups.max()) + 1 if groups.numel() else 0
    keypoints = keypoints.to(device=device, dtype=torch.float64)
    kp_image = keypoints[:, 0].long()

    # Pair every box with every keypoint of its image (a ragged join, no Python loop).
    kp_order = torch.sort(kp_image, stable=True).indices
    num_images = int(max(int(image.max()) if image.numel() else -1, int(kp_image.max()) if kp_image.numel() else -1)) + 1
    per_image = torch.bincount(kp_image, minlength=num_images)  # (I,)
    offset = torch.cumsum(per_image, 0) - per_image  # (I,)
    per_patch = per_image[image]  # (M,)
    patch_of_pair = torch.repeat_interleave(torch.arange(len(image), device=device), per_patch)  # (R,)
    pair_start = torch.repeat_interleave(torch.cumsum(per_patch, 0) - per_patch, per_patch)  # (R,)
    within = torch.arange(len(patch_of_pair), device=device) - pair_start
    kp = keypoints[kp_order[offset[image[patch_of_pair]] + within]]  # (R, 4)
    box = boxes[patch_of_pair].double()  # (R, 4)
    x, y = kp[:, 2], kp[:, 3]
    if closed:  # the published rule: a keypoint on the box edge counts
        inside = (box[:, 0] <= y) & (y <= box[:, 1]) & (box[:, 2] <= x) & (x <= box[:, 3])
    else:
        inside = (box[:, 0] <= y) & (y < box[:, 1]) & (box[:, 2] <= x) & (x < box[:, 3])
    part_of_pair = groups[kp[:, 1].long()]  # (R,)

    contains = torch.zeros(len(image), num_groups, dtype=torch.bool, device=device)  # (M, G)
    contains[patch_of_pair[inside], part_of_pair[inside]] = True
    visible = torch.zeros(len(image), num_groups, dtype=torch.bool, device=device)  # (M, G) part shown in the image
    visible[patch_of_pair, part_of_pair] = True
    return contains, visible


def _part_counts(
    prototype: torch.Tensor,
    image: torch.Tensor,
    boxes: torch.Tensor,
    keypoints: torch.Tensor,
    num_prototypes: int,
    num_parts: int,
    part_groups: Sequence[int] | torch.Tensor | None,
    patch_size: int,
    closed: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per prototype and merged part: patches containing the part, patches in images where it is visible.

    Returns:
        (P, G) float64 patches that contain each part, (P, G) float64 patches whose image shows each part,
        and (P,) float64 patches of each prototype.
    """
    device = boxes.device
    prototype = prototype.long().to(device)
    contains, visible = part_membership(image, central_boxes(boxes, patch_size), keypoints, num_parts, part_groups, closed)
    num_groups = contains.shape[1]
    per_part = torch.zeros(num_prototypes, num_groups, dtype=torch.float64, device=device)
    per_part.index_add_(0, prototype, contains.double())  # (P, G) patches containing each part
    shown = torch.zeros(num_prototypes, num_groups, dtype=torch.float64, device=device)
    shown.index_add_(0, prototype, visible.double())  # (P, G) patches in images that show each part
    patches = torch.bincount(prototype, minlength=num_prototypes).double()  # (P,)
    return per_part, shown, patches


def purity(
    prototype: torch.Tensor,
    image: torch.Tensor,
    boxes: torch.Tensor,
    keypoints: torch.Tensor,
    num_prototypes: int,
    num_parts: int,
    part_groups: Sequence[int] | torch.Tensor | None = None,
    patch_size: int = PATCH_SIZE,
    closed: bool = False,
) -> torch.Tensor:
    """Purity as the paper computed it (supplementary Sec. 1.4; Faithfulness page, 'The published code', item 3): per part, over images showing the part.

    For each part, the fraction of the prototype's patches *in images where that part is visible* (has a
    keypoint) that contain it; the prototype's purity is the largest fraction over parts. A part visible
    in none of the prototype's images gives no fraction; a prototype whose images show no part at all
    scores 0. A part is in a patch when one of its keypoints lies in the patch box (half-open:
    top <= y < bottom, left <= x < right; `closed=True`, the published rule, also counts the far
    edges); boxes larger than `patch_size` are first shrunk to their central `patch_size` pixels.
    Parts mapped to the same group (left/right variants) count as one part, visible when either is, and
    present when either keypoint is inside. `purity_all_patches` is the stricter variant.

    Args:
        prototype: (M,) prototype of each patch.
        image: (M,) image index of each patch.
        boxes: (M, 4) (top, bottom, left, right) of each patch, in the keypoints' coordinates.
        keypoints: (K, 4) rows (image index, part id, x, y) of every annotated keypoint (visible ones).
        num_prototypes: P.
        num_parts: number of part ids.
        part_groups: optional (num_parts,) group of each part id (e.g. CUB's 15 parts -> 12).
        patch_size: the patch size boxes are shrunk to.
        closed: count keypoints on the bottom and right edges too (the published test).

    Returns:
        (P,) float64 purity, NaN for prototypes without patches.
    """
    per_part, shown, patches = _part_counts(
        prototype, image, boxes, keypoints, num_prototypes, num_parts, part_groups, patch_size, closed
    )
    fraction = torch.where(shown > 0, per_part / shown.clamp(min=1), torch.zeros_like(per_part))  # (P, G)
    best = fraction.amax(dim=1) if fraction.shape[1] else torch.zeros_like(patches)
    return torch.where(patches > 0, best, torch.full_like(best, math.nan))


def purity_all_patches(
    prototype: torch.Tensor,
    image: torch.Tensor,
    boxes: torch.Tensor,
    keypoints: torch.Tensor,
    num_prototypes: int,
    num_parts: int,
    part_groups: Sequence[int] | torch.Tensor | None = None,
    patch_size: int = PATCH_SIZE,
    closed: bool = False,
) -> torch.Tensor:
    """Stricter purity: the largest fraction of *all* of a prototype's patches that contain one same part.

    As `purity` (same arguments and inside test), but every patch counts in the denominator,
    including those in images where the part is not visible; so it is never above `purity`.
    Never mix the two in one table.

    Returns:
        (P,) float64 purity, NaN for prototypes without patches.
    """
    per_part, _, patches = _part_counts(
        prototype, image, boxes, keypoints, num_prototypes, num_parts, part_groups, patch_size, closed
    )
    best = per_part.amax(dim=1) if per_part.shape[1] else torch.zeros_like(patches)
    return torch.where(patches > 0, best / patches.clamp(min=1), torch.full_like(best, math.nan))


def purity_summary(purities: torch.Tensor) -> dict[str, float | int]:
    """Mean, population std, number above 0.5 (strictly) and number of the non-NaN purities given."""
    values = purities[~torch.isnan(purities)].double()
    n = values.numel()
    return {
        "mean": values.mean().item() if n else math.nan,
        "std": values.std(correction=0).item() if n else math.nan,
        "count_above_0.5": int((values > 0.5).sum()),
        "num_prototypes": n,
    }


# ---- patches on the object (object masks) ------------------------------------------------------------------


def patch_centres(cells: torch.Tensor, grid: tuple[int, int], image_size: int | tuple[int, int]) -> torch.Tensor:
    """(..., 2) long (y, x) pixel of the centre of each cell's faithful patch box: ((top + bottom) // 2, ...).

    Args:
        cells: (..., 2) (row, column) grid cells.
        grid: (h, w).
        image_size: S or (H, W) of the model input.
    """
    box = patch_boxes(cells, grid, image_size)  # (..., 4) top, bottom, left, right
    return torch.stack([(box[..., 0] + box[..., 1]) // 2, (box[..., 2] + box[..., 3]) // 2], dim=-1)


def on_object(
    masks: torch.Tensor, cells: torch.Tensor, grid: tuple[int, int], image_size: int | tuple[int, int]
) -> dict[str, float | int]:
    """Share of patch centres on the object, beside the chance level of a random grid cell in the same images.

    `share` is the fraction of the M patches whose centre pixel (`patch_centres`) is object in its
    image's mask. `chance` is what a cell drawn uniformly from the h x w grid of the same image would
    score: the fraction of the image's h * w cell centres that are object, averaged over the M patches (an
    image that holds several of the patches counts as often). Both NaN when M = 0.

    Args:
        masks: (M, H, W) bool, the object mask of the image of each patch (True = object).
        cells: (M, 2) (row, column) of each patch.
        grid: (h, w), the latent grid.
        image_size: S or (H, W), the model input (the masks' frame).
    """
    M = len(cells)
    if M == 0:
        return {"share": math.nan, "chance": math.nan, "num_patches": 0}
    centre = patch_centres(cells, grid, image_size)  # (M, 2)
    hit = masks[torch.arange(M), centre[:, 0], centre[:, 1]]  # (M,)
    h, w = grid
    every = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), dim=-1).reshape(-1, 2)
    every = patch_centres(every, grid, image_size)  # (h*w, 2)
    chance = masks[:, every[:, 0], every[:, 1]].double().mean(dim=1)  # (M,)
    return {"share": hit.double().mean().item(), "chance": chance.mean().item(), "num_patches": M}


# ---- prototypes present everywhere ----------------------------------------------------------------------

EVERYWHERE_SHARE = 0.9  # "present on most images of every class"


def presence_share_per_class(
    prototype: torch.Tensor, image: torch.Tensor, labels: torch.Tensor, num_prototypes: int, num_classes: int
) -> torch.Tensor:
    """(P, C) fraction of each class's images in which each prototype is present.

    Args:
        prototype: (M,) prototype of each (prototype, image) pair where it is present (e.g. presence > 0.5;
            `Projection.above_prototype`); each pair at most once.
        image: (M,) the image of each pair.
        labels: (N,) class of every image of the data set.
        num_prototypes: P.
        num_classes: C.

    Returns:
        float64 (P, C); NaN for a class without images.
    """
    labels = labels.long().cpu()
    counts = torch.zeros(num_prototypes, num_classes, dtype=torch.float64)
    counts.index_put_((prototype.long().cpu(), labels[image.long().cpu()]), torch.ones(len(prototype), dtype=torch.float64),
                      accumulate=True)
    images = torch.bincount(labels, minlength=num_classes).double()  # (C,)
    return torch.where(images > 0, counts / images.clamp(min=1), torch.full_like(counts, math.nan))


def present_everywhere(shares: torch.Tensor, share: float = EVERYWHERE_SHARE) -> torch.Tensor:
    """(P,) bool: prototypes present in at least `share` of the images of every class (classes with images).

    Such a prototype adds about the same evidence to every image whatever its class, so it carries no class
    information (typically background, or a texture all photos share).

    Args:
        shares: (P, C) from `presence_share_per_class`.
        share: the fraction, 0.9 by default.
    """
    known = ~torch.isnan(shares[0]) if shares.numel() else torch.zeros(0, dtype=torch.bool)
    if not known.any():
        return torch.zeros(shares.shape[0], dtype=torch.bool)
    return (shares[:, known] >= share).all(dim=1)


def keypoint_table(dataset: Dataset, images: torch.Tensor) -> torch.Tensor:
    """(K, 4) rows (image index, part id, x, y) of the keypoints of `images`, from `dataset.keypoints(i)`."""
    rows = []
    for i in torch.unique(images).tolist():
        kp = torch.as_tensor(dataset.keypoints(i), dtype=torch.float64).reshape(-1, 3)  # (K_i, 3)
        rows.append(torch.cat([torch.full((len(kp), 1), float(i), dtype=torch.float64), kp], dim=1))
    return torch.cat(rows) if rows else torch.zeros(0, 4, dtype=torch.float64)
