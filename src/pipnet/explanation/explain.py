"""Explanations as data (paper Figs. 2 and 3).

PIP-Net's score for a class is a sum over prototypes: score_c = sum_p p_p * relu(W)_cp (+ b_c). An explanation
lists the terms of that sum that are not zero, each with where the prototype was found (the argmax cell of its
map and the matching image box). Because the presence used here is exactly the one the classifier used
(zeroed below 0.1 at inference), the explanation is complete: a class score equals the sum of its evidence
(plus its bias). Everything here is a plain dataclass that round-trips through JSON; drawing lives in
`pipnet.explanation.render`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from pipnet.model import PRESENCE_THRESHOLD, RELEVANCE_THRESHOLD, PIPNet
from pipnet.model.patches import boxes_from_heatmaps, patch_boxes
from pipnet.evaluation.inference import eval_mode

__all__ = [
    "ClassExplanation",
    "Evidence",
    "ImageExplanation",
    "ScoringSheet",
    "SheetClass",
    "SheetEntry",
    "class_name",
    "explain",
    "scoring_sheet",
]

Box = tuple[int, int, int, int]  # (top, bottom, left, right) in model-input pixels


@dataclass(frozen=True)
class Evidence:
    """One prototype's contribution to one class: evidence = presence * weight."""

    prototype: int
    presence: float  # the presence the classifier used (0 below the threshold at inference)
    weight: float  # relu(W)[class, prototype]
    evidence: float  # presence * weight
    cell: tuple[int, int]  # (i, j): where the prototype's map is largest
    box: Box  # the cell's patch in the SxS model input: (top, bottom, left, right)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        return cls(**{**d, "cell": tuple(d["cell"]), "box": tuple(d["box"])})


@dataclass(frozen=True)
class ClassExplanation:
    """Why one class got its score: its evidence, largest first. score == sum(evidence) + bias."""

    class_index: int
    class_name: str
    score: float
    bias: float
    evidence: list[Evidence]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassExplanation:
        return cls(**{**d, "evidence": [Evidence.from_dict(e) for e in d["evidence"]]})


@dataclass(frozen=True)
class ImageExplanation:
    """The top classes of one image with their evidence. `predicted` is None when the model abstains."""

    image_id: str
    predicted: int | None
    abstained: bool  # every class score is 0 (no prototype present): no prediction
    top_classes: list[ClassExplanation]
    presence_threshold: float  # presence below this was set to 0 (0.1 at inference, 0.0 otherwise)
    input_size: tuple[int, int] = (0, 0)  # (H, W) of the model input the boxes refer to
    grid: tuple[int, int] = (0, 0)  # (h, w) of the prototype maps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageExplanation:
        return cls(
            **{
                **d,
                "top_classes": [ClassExplanation.from_dict(c) for c in d["top_classes"]],
                "input_size": tuple(d["input_size"]),
                "grid": tuple(d["grid"]),
            }
        )


def class_name(model: PIPNet, index: int) -> str:
    """The configured name of class `index`, or its number as a string."""
    names = model.config.class_names
    return names[index] if names and index < len(names) else str(index)


@torch.inference_mode()
def explain(
    model: PIPNet,
    images: torch.Tensor,
    *,
    top_classes: int = 3,
    image_ids: list[str] | None = None,
    box: Literal["patch", "heatmap"] = "patch",
    heatmap_threshold: float = 0.5,
    inference: bool = True,
) -> list[ImageExplanation]:
    """Explain a batch of images with one forward pass.

    Args:
        model: a PIP-Net; run in eval mode (its training flags are restored afterwards), never modified.
        images: (B, 3, S, S) model inputs, normalised as in training.
        top_classes: how many of the highest-scoring classes to explain per image.
        image_ids: one name per image (default: "0", "1", ...).
        box: "patch" maps the argmax cell to the faithful 32x32 patch (paper supplementary Sec. 1.2); "heatmap" (option)
            boxes the region where the upsampled prototype map exceeds `heatmap_threshold` of its maximum.
        heatmap_threshold: see `box`.
        inference: use `model.predict` (presence < 0.1 zeroed, as deployed) or the training forward.

    Returns:
        One [`ImageExplanation`][pipnet.explanation.explain.ImageExplanation] per image.
    """
    if box not in ("patch", "heatmap"):
        raise ValueError(f"box must be 'patch' or 'heatmap', not {box!r}")
    batch = images.shape[0]
    if image_ids is None:
        image_ids = [str(i) for i in range(batch)]
    if len(image_ids) != batch:
        raise ValueError(f"{len(image_ids)} image_ids for {batch} images")

    with eval_mode(model) as device:  # batch norm must not use (or update) batch statistics
        images = images.to(device)
        out = model.predict(images) if inference else model(images)
    threshold = PRESENCE_THRESHOLD if inference else 0.0
    used = out.presence  # (B, P) exactly the presence the classifier saw (PIPNet.classifier_input)
    weight = model.classifier_weights()  # (C, P)
    bias = model.classifier.bias  # (C,) or None

    k = min(top_classes, model.num_classes)
    order = torch.sort(out.scores, dim=1, descending=True, stable=True).indices[:, :k]  # (B, k), ties: low index
    evidence = used[:, None, :] * weight[order]  # (B, k, P)
    evidence_sorted, proto_order = torch.sort(evidence, dim=2, descending=True, stable=True)  # (B, k, P)
    counts = (evidence_sorted > 0).sum(dim=2)  # (B, k)
    abstained = out.scores.amax(dim=1) <= 0  # (B,) all scores 0: no prediction (as metrics.predictions)

    grid_h, grid_w = out.maps.shape[-2:]
    input_size = (int(images.shape[-2]), int(images.shape[-1]))
    cell_flat = out.maps.flatten(2).argmax(dim=2)  # (B, P)
    cells = torch.stack([cell_flat // grid_w, cell_flat % grid_w], dim=-1)  # (B, P, 2)
    boxes = _boxes(out.maps, cells, (evidence > 0).any(dim=1), input_size, box, heatmap_threshold)  # (B, P, 4)

    # One transfer to the CPU, then plain Python to build the records.
    scores_l, order_l = out.scores.cpu().tolist(), order.cpu().tolist()
    ev_l, proto_l, counts_l = evidence_sorted.cpu().tolist(), proto_order.cpu().tolist(), counts.cpu().tolist()
    used_l, weight_l = used.cpu().tolist(), weight.cpu().tolist()
    cells_l, boxes_l = cells.cpu().tolist(), boxes.cpu().tolist()
    bias_l = bias.cpu().tolist() if bias is not None else [0.0] * model.num_classes
    abstained_l = abstained.cpu().tolist()

    explanations = []
    for b in range(batch):
        classes = []
        if not abstained_l[b]:
            for r, c in enumerate(order_l[b]):
                items = []
                for n in range(counts_l[b][r]):
                    p = proto_l[b][r][n]
                    cell, where = tuple(cells_l[b][p]), tuple(boxes_l[b][p])
                    items.append(Evidence(p, used_l[b][p], weight_l[c][p], ev_l[b][r][n], cell, where))
                classes.append(ClassExplanation(c, class_name(model, c), scores_l[b][c], bias_l[c], items))
        explanations.append(
            ImageExplanation(
                image_id=image_ids[b],
                predicted=None if abstained_l[b] else order_l[b][0],
                abstained=abstained_l[b],
                top_classes=classes,
                presence_threshold=threshold,
                input_size=input_size,
                grid=(int(grid_h), int(grid_w)),
            )
        )
    return explanations


def _boxes(
    maps: torch.Tensor,
    cells: torch.Tensor,
    needed: torch.Tensor,
    input_size: tuple[int, int],
    kind: str,
    threshold: float,
    chunk: int = 256,
) -> torch.Tensor:
    """Image boxes (B, P, 4) of the (image, prototype) pairs in `needed` (B, P); -1 elsewhere."""
    boxes = torch.full((*needed.shape, 4), -1, dtype=torch.long, device=maps.device)
    b, p = needed.nonzero(as_tuple=True)  # (N,), (N,)
    if kind == "patch":
        boxes[b, p] = patch_boxes(cells[b, p], tuple(maps.shape[-2:]), input_size).to(maps.device)
    else:  # upsampling every map would not fit in memory: only the needed ones, a chunk at a time
        for start in range(0, len(b), chunk):
            bb, pp = b[start : start + chunk], p[start : start + chunk]
            boxes[bb, pp] = boxes_from_heatmaps(maps[bb, pp], input_size, threshold).to(maps.device)
    return boxes


# --------------------------------------------------------------------------------------------------
# The scoring sheet: the global explanation (which prototypes count for which class, and how much).


@dataclass(frozen=True)
class SheetEntry:
    prototype: int
    weight: float


@dataclass(frozen=True)
class SheetClass:
    class_index: int
    class_name: str
    bias: float
    prototypes: list[SheetEntry]  # relevant weights (> 1e-3), largest first


@dataclass(frozen=True)
class ScoringSheet:
    """For every class, its prototypes with a relevant weight. score_c = sum_p presence_p * weight_cp + bias_c."""

    classes: list[SheetClass]
    used_prototypes: list[int]
    relevance_threshold: float = RELEVANCE_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoringSheet:
        classes = [
            SheetClass(**{**c, "prototypes": [SheetEntry(**e) for e in c["prototypes"]]}) for c in d["classes"]
        ]
        return cls(classes, list(d["used_prototypes"]), d["relevance_threshold"])


@torch.inference_mode()
def scoring_sheet(model: PIPNet) -> ScoringSheet:
    """The model's scoring sheet: per class, its relevant prototypes and weights, largest first."""
    weight = model.classifier_weights()  # (C, P)
    relevant = model.relevant_weights()  # (C, P)
    sorted_w, order = torch.sort(weight, dim=1, descending=True, stable=True)  # (C, P)
    counts = relevant.sum(dim=1).tolist()
    sorted_l, order_l = sorted_w.cpu().tolist(), order.cpu().tolist()
    bias = model.classifier.bias
    bias_l = bias.cpu().tolist() if bias is not None else [0.0] * model.num_classes
    classes = [
        SheetClass(
            class_index=c,
            class_name=class_name(model, c),
            bias=bias_l[c],
            prototypes=[SheetEntry(order_l[c][n], sorted_l[c][n]) for n in range(counts[c])],
        )
        for c in range(model.num_classes)
    ]
    return ScoringSheet(classes=classes, used_prototypes=model.used_prototypes().cpu().tolist())
