"""Evaluate a PIP-Net: accuracy, sparsity, explanation sizes, OoD detection, purity (the paper's metrics).

[`evaluate`][pipnet.evaluation.evaluate.evaluate] is a pure function: it runs under `torch.inference_mode()` in eval mode, restores the
model's training flags, never changes a weight (unlike the published code, which sparsified the model on
every test batch), and returns a frozen [`Metrics`][pipnet.evaluation.evaluate.Metrics] that serialises to `metrics.json`.

Two protocols (`protocol=`), recorded in the metrics:

- `default` (the paper's text): OoD thresholds on the scores of `model.predict` (presence < 0.1 set to
  0) by the per-class ceil rule of `pipnet.evaluation.metrics.ood_thresholds`; purity of the prototypes with a
  weight > 1e-3, with the faithful boxes of `pipnet.model.patches.patch_boxes` and a half-open keypoint test.
- `paper` (how the published code made the published numbers): OoD thresholds and FPR on the
  unclamped training-time scores by `pipnet.evaluation.metrics.ood_thresholds_paper` (5th percentile, then the
  x0.999 loop), AUROC on the same scores; purity of the prototypes with a weight > 1e-5, with
  `pipnet.model.patches.patch_boxes_paper` (border boxes [S-32, S)) and a closed keypoint test.

Both report purity with the paper's denominator (per part, over the images that show it) under
`purity` and the stricter all-patches variant under `purity_all_patches`. The published
evaluation's weight decrements (Faithfulness page, 'The published code', item 1) are not done here: evaluation never changes the model;
training under the `paper` protocol applies them as an explicit step of its loop.

Cost: one batched pass over the test data (everything but purity comes from it), one per OoD set, and one
projection pass per purity set. With a training set, the prototype report card (`quality`:
[`pipnet.evaluation.quality.quality_card`][pipnet.evaluation.quality.quality_card]) reuses that set's projection and adds one noisy pass for stability.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipnet.evaluation import metrics as M
from pipnet.evaluation.metrics import keypoint_table
from pipnet.model import PRESENCE_THRESHOLD, PIPNet
from pipnet.model.patches import patch_boxes, patch_boxes_paper
from pipnet.evaluation.inference import eval_mode, inputs_of, labels_of, make_loader
from pipnet.evaluation.projection import Projection, everywhere_prototypes, project
from pipnet.evaluation.quality import quality_card

__all__ = ["Metrics", "evaluate", "format_metrics_table", "keypoint_table", "on_object_of_projection",
           "purity_of_projection"]

OOD_TPR = 0.95
PURITY_PRESENCE = 0.5
PROTOCOLS = ("default", "paper")
# A prototype enters purity when some class weight exceeds this (1e-3 in the paper's text; 1e-5 in the published code).
PURITY_WEIGHT = {"default": 1e-3, "paper": 1e-5}


@dataclass(frozen=True)
class Metrics:
    """Everything `evaluate` measures; the field names are the keys of `metrics.json`.

    Accuracies are fractions in [0, 1]. Sizes are means over the test images. `ood` maps a set's name to
    `{"fpr95", "auroc", "num_images"}`; `purity` maps a variant (`"<set>_top10"`,
    `"<set>_presence0.5"`) to `{"mean", "std", "count_above_0.5", "num_prototypes"}` (denominator: the
    patches in images that show the part); `purity_all_patches` holds the same variants divided by all
    patches. `protocol` is the protocol that produced the numbers (`default` or `paper`). `on_object`
    maps a set with object masks to `{"top10", "chance", "num_patches", "num_prototypes"}` (see
    `on_object_of_projection`); `everywhere` lists the used prototypes present (> 0.5) on >= 90% of
    the images of every class of the training set (`{"prototypes", "share", "presence", "num_used"}`);
    `saturation` counts the used prototypes whose k-th best presence on the training set is >= 0.99
    (`{"saturated", "num_used", "share", "presence", "rank"}`). `quality` is the prototype report card
    of the training set (`pipnet.evaluation.quality.quality_card`: consistency, stability, duplicates,
    everywhere), None when not computed.
    Undefined values are NaN here and `null` in JSON.
    """

    top1_accuracy: float
    top5_accuracy: float
    sparsity_ratio: float
    global_size: int
    local_size: float
    local_size_all_classes: float
    num_present: float
    abstained: int
    num_images: int
    ood: dict[str, dict[str, float | int]] = field(default_factory=dict)
    purity: dict[str, dict[str, float | int]] = field(default_factory=dict)
    binary: dict[str, float] | None = None
    confusion_matrix: list[list[int]] = field(default_factory=list)
    on_object: dict[str, dict[str, float | int]] = field(default_factory=dict)
    everywhere: dict[str, Any] = field(default_factory=dict)
    saturation: dict[str, float | int] = field(default_factory=dict)
    purity_all_patches: dict[str, dict[str, float | int]] = field(default_factory=dict)
    protocol: str = "default"
    quality: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None)."""
        return _nan_to_none(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        """Read back [`to_dict`][pipnet.evaluation.evaluate.Metrics.to_dict] (None becomes NaN again)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        binary = known.pop("binary", None)  # None here means "not a binary task"
        protocol = known.pop("protocol", "default")
        quality = known.pop("quality", None)  # kept as read: its nulls mean "not measured" (no part keypoints)
        return cls(**_none_to_nan(known), binary=_none_to_nan(binary) if binary is not None else None, protocol=protocol,
                   quality=quality)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _none_to_nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _none_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_none_to_nan(v) for v in value]
    return value


# ---- passes over data ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Pass:
    """What one pass over a data set keeps per image (all on the CPU)."""

    scores: torch.Tensor  # (N, C) of model.predict
    raw_scores: torch.Tensor | None  # (N, C) of the training-time forward (no clamp), when asked for
    labels: torch.Tensor  # (N,)
    size_pred: torch.Tensor  # (N,)
    size_any: torch.Tensor  # (N,)
    present: torch.Tensor  # (N,)


def _run(
    model: PIPNet, loader: DataLoader, weight: torch.Tensor, dev: torch.device, desc: str, progress: bool, raw: bool = False
) -> _Pass:
    scores, raw_scores, labels, size_pred, size_any, present = [], [], [], [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        x = inputs_of(batch).to(dev, non_blocking=True)
        out = model.predict(x)  # out.presence: what the classifier saw
        sizes = M.local_explanation_sizes(out.presence.float(), weight, M.predictions(out.scores))
        scores.append(out.scores.float())
        if raw:  # the training-time scores of the same pass: the classifier on the unclamped presence
            raw_scores.append(model.classifier(model.classifier_input(out.maps)).float())
        labels.append(torch.as_tensor(batch[1]).reshape(-1))
        for acc, s in zip((size_pred, size_any, present), sizes):
            acc.append(s)
    if not scores:
        raise ValueError("evaluate() got an empty data set")
    cat = lambda xs: torch.cat(xs).cpu()  # noqa: E731
    return _Pass(cat(scores), cat(raw_scores) if raw else None, cat(labels).long(), cat(size_pred), cat(size_any), cat(present))


def purity_of_projection(
    projection: Projection,
    dataset: Dataset,
    prototypes: torch.Tensor,
    *,
    metric: Callable[..., torch.Tensor] = M.purity,
    protocol: str = "default",
) -> dict[str, dict[str, float | int]]:
    """Purity summaries of `prototypes` for the top-k patches and for every patch above the threshold.

    Keys: `top{k}` and `presence{threshold}` (e.g. `top10`, `presence0.5`). The data set gives
    `keypoints(i)`, `num_parts` and optionally `part_groups` (part id -> merged part, e.g. left/right).

    Args:
        projection: the projection of `dataset`.
        dataset: the projected data set, with part keypoints in the model's input frame.
        prototypes: the prototypes to summarise.
        metric: `pipnet.evaluation.metrics.purity` (the paper's denominator) or
            `pipnet.evaluation.metrics.purity_all_patches`.
        protocol: `default` (boxes of `patch_boxes`, half-open keypoint test) or `paper`
            (`patch_boxes_paper`, closed test).
    """
    boxes_of = patch_boxes_paper if protocol == "paper" else patch_boxes
    prototypes = prototypes.long().cpu()
    P = projection.presence.shape[0]
    num_parts = int(dataset.num_parts)
    groups = getattr(dataset, "part_groups", None)
    variants = {
        f"top{projection.k}": (
            prototypes[:, None].expand(-1, projection.k).flatten(),
            projection.image_index[prototypes].flatten(),
            projection.cell[prototypes].reshape(-1, 2),
        ),
    }
    chosen = torch.isin(projection.above_prototype, prototypes)
    variants[f"presence{projection.threshold:g}"] = (
        projection.above_prototype[chosen],
        projection.above_image[chosen],
        projection.above_cell[chosen],
    )
    out = {}
    for name, (proto, image, cell) in variants.items():
        boxes = boxes_of(cell, projection.grid, projection.image_size)  # (M, 4)
        values = metric(proto, image, boxes, keypoint_table(dataset, image), P, num_parts, groups, closed=protocol == "paper")
        out[name] = M.purity_summary(values[prototypes])
    return out


def on_object_of_projection(
    projection: Projection, dataset: Dataset, prototypes: torch.Tensor
) -> dict[str, float | int]:
    """How often the top-k patches of `prototypes` are centred on the object, against chance.

    Keys: `top{k}` (share of those patches whose centre pixel is object in the image's mask),
    `chance` (the share a grid cell drawn at random in the same images would get), `num_patches` and
    `num_prototypes`; see `pipnet.evaluation.metrics.on_object`. The data set gives `mask(i)`: the bool
    (S, S) object mask of image i in the model input's frame.
    """
    prototypes = prototypes.long().cpu()
    images = projection.image_index[prototypes].flatten()  # (M,)
    cells = projection.cell[prototypes].reshape(-1, 2)  # (M, 2)
    masks = {i: dataset.mask(i) for i in torch.unique(images).tolist()}
    for i, mask in masks.items():
        if tuple(mask.shape) != tuple(projection.image_size):
            raise ValueError(f"the mask of image {i} is {tuple(mask.shape)}, the model input {projection.image_size}")
    stacked = torch.stack([masks[i] for i in images.tolist()]) if len(images) else torch.zeros(0, *projection.image_size, dtype=torch.bool)
    result = M.on_object(stacked, cells, projection.grid, projection.image_size)
    return {f"top{projection.k}": result["share"], "chance": result["chance"], "num_patches": result["num_patches"],
            "num_prototypes": len(prototypes)}


SATURATED_PRESENCE = 0.99


def saturation_of_projection(projection: Projection, prototypes: torch.Tensor) -> dict[str, float | int]:
    """How many of `prototypes` have their k-th best presence >= 0.99: their top-k are all (almost) 1.

    For such a prototype presence no longer tells its typical images apart (the gallery is ranked by
    log-odds, see `pipnet.evaluation.projection`); many of them mean the softmax over prototypes has saturated.
    """
    prototypes = prototypes.long().cpu()
    kth = projection.presence[prototypes, -1] if len(prototypes) else torch.zeros(0)
    saturated = int((kth >= SATURATED_PRESENCE).sum())
    return {"saturated": saturated, "num_used": len(prototypes),
            "share": saturated / len(prototypes) if len(prototypes) else math.nan,
            "presence": SATURATED_PRESENCE, "rank": projection.k}


# ---- the evaluation -------------------------------------------------------------------------------------


def evaluate(
    model: PIPNet,
    data: Dataset | DataLoader,
    *,
    ood: dict[str, Dataset | DataLoader] | None = None,
    purity_sets: dict[str, Dataset] | None = None,
    mask_sets: dict[str, Dataset] | None = None,
    train_set: Dataset | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    k: int = 10,
    num_workers: int = 0,
    progress: bool = False,
    protocol: str = "default",
    quality: bool = True,
) -> Metrics:
    """Measure a trained PIP-Net (the paper's metrics) without changing it.

    Args:
        model: the PIP-Net.
        data: the in-distribution test set, yielding `(x, label)` with labels in [0, C).
        ood: out-of-distribution sets by name (labels are ignored).
        purity_sets: sets with part keypoints by name (e.g. `{"train": ..., "test": ...}`); purity is
            computed for the used prototypes on the top-k patches and on every patch with presence > 0.5.
        mask_sets: sets with object masks by name (`mask(i)`, e.g. `{"train": ..., "test": ...}`): the
            share of the used prototypes' top-k patches centred on the object, and its chance level.
        train_set: the labelled training (projection) images: find the used prototypes present on
            most images of every class (`Metrics.everywhere`) and those saturated (`Metrics.saturation`).
        batch_size: images per forward pass.
        device: where to run (default: the model's device).
        k: patches per prototype for purity (10 in the paper).
        num_workers: data loader workers.
        progress: show progress bars.
        protocol: `default` or `paper` (the published OoD rule and purity conventions; see the module
            docstring). Neither changes the model.
        quality: with `train_set`, also measure the prototype report card on it (`Metrics.quality`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    paper = protocol == "paper"
    C = model.num_classes
    for name, dataset in (purity_sets or {}).items():
        if not (hasattr(dataset, "keypoints") and hasattr(dataset, "num_parts")):
            raise ValueError(f"purity set {name!r} has no part annotations (needs keypoints(i) and num_parts)")
    for name, dataset in (mask_sets or {}).items():
        if not (hasattr(dataset, "mask") and getattr(dataset, "has_masks", True)):
            raise ValueError(f"mask set {name!r} has no object masks (needs mask(i))")
    with eval_mode(model, device) as dev:
        pin = dev.type == "cuda"
        weight = model.classifier_weights().float()  # (C, P) as used
        raw = paper and bool(ood)
        test = _run(model, make_loader(data, batch_size, num_workers, pin), weight, dev, "evaluate", progress, raw)
        pred = M.predictions(test.scores)
        accuracy = M.topk_accuracy(test.scores, test.labels, ks=(1, 5))
        ood_scores = test.raw_scores if raw else test.scores  # the scores OoD detection looks at
        max_scores = ood_scores.amax(dim=1)
        if not ood:
            thresholds = None
        elif paper:  # the published rule: plain argmax on the unclamped scores
            thresholds = M.ood_thresholds_paper(max_scores, ood_scores.argmax(dim=1), C, tpr=OOD_TPR)
        else:
            thresholds = M.ood_thresholds(max_scores, pred, C, tpr=OOD_TPR)
        ood_results = {}
        for name, ood_data in (ood or {}).items():
            o = _run(model, make_loader(ood_data, batch_size, num_workers, pin), weight, dev, f"ood {name}", progress, raw)
            o_scores = o.raw_scores if raw else o.scores
            o_max = o_scores.amax(dim=1)
            o_pred = o_scores.argmax(dim=1) if paper else M.predictions(o_scores)
            ood_results[name] = {
                "fpr95": M.fpr_at_tpr(o_max, o_pred, thresholds),
                "auroc": M.auroc(max_scores, o_max),
                "num_images": len(o_max),
            }
        purity_results, purity_all = {}, {}
        used = model.used_prototypes().cpu()
        purity_used = (model.classifier_weights() > PURITY_WEIGHT[protocol]).any(dim=0).nonzero().flatten().cpu()
        projections: dict[int, Projection] = {}  # one projection pass per data set, shared by the metrics

        def projection_of(dataset: Dataset) -> Projection:
            if id(dataset) not in projections:
                projections[id(dataset)] = project(
                    model, dataset, k=k, batch_size=batch_size, device=dev, presence_threshold=PURITY_PRESENCE,
                    num_workers=num_workers, progress=progress,
                )  # fmt: skip
            return projections[id(dataset)]

        for name, dataset in (purity_sets or {}).items():
            projection = projection_of(dataset)
            for metric, results in ((M.purity, purity_results), (M.purity_all_patches, purity_all)):
                for variant, summary in purity_of_projection(projection, dataset, purity_used, metric=metric, protocol=protocol).items():
                    results[f"{name}_{variant}"] = summary
        on_object = {name: on_object_of_projection(projection_of(d), d, used) for name, d in (mask_sets or {}).items()}
        everywhere, saturation = {}, {}
        if train_set is not None:
            found, _ = everywhere_prototypes(model, projection_of(train_set), labels_of(train_set), M.EVERYWHERE_SHARE)
            everywhere = {"prototypes": found, "share": M.EVERYWHERE_SHARE, "presence": PURITY_PRESENCE, "num_used": len(used)}
            saturation = saturation_of_projection(projection_of(train_set), used)
        card = None
        if quality and train_set is not None:
            card = quality_card(model, train_set, projection=projection_of(train_set), device=dev, batch_size=batch_size,
                                progress=progress)
        sparsity = M.sparsity_ratio(weight)
        global_size = M.global_explanation_size(weight)
    return Metrics(
        top1_accuracy=accuracy[1],
        top5_accuracy=accuracy[5],
        sparsity_ratio=sparsity,
        global_size=global_size,
        local_size=test.size_pred.double().mean().item(),
        local_size_all_classes=test.size_any.double().mean().item(),
        num_present=test.present.double().mean().item(),
        abstained=int((pred < 0).sum()),
        num_images=len(pred),
        ood=ood_results,
        purity=purity_results,
        binary=M.binary_metrics(test.scores, test.labels, float(model.classifier.multiplier)) if C == 2 else None,
        confusion_matrix=M.confusion_matrix(pred, test.labels, C).tolist(),
        on_object=on_object,
        everywhere=everywhere,
        saturation=saturation,
        purity_all_patches=purity_all,
        protocol=protocol,
        quality=card,
    )


def format_metrics_table(metrics: Metrics) -> str:
    """A plain-text table of the metrics for the command line."""
    rows: list[tuple[str, str]] = [
        ("protocol", metrics.protocol),
        ("top-1 accuracy", f"{metrics.top1_accuracy:.2%}"),
        ("top-5 accuracy", f"{metrics.top5_accuracy:.2%}"),
        ("images / abstained", f"{metrics.num_images} / {metrics.abstained}"),
        ("sparsity ratio", f"{metrics.sparsity_ratio:.4f}"),
        ("global explanation size", str(metrics.global_size)),
        ("local size (predicted class)", f"{metrics.local_size:.2f}"),
        ("local size (any class)", f"{metrics.local_size_all_classes:.2f}"),
        ("present prototypes (p > 1e-3)", f"{metrics.num_present:.2f}"),
    ]
    for name, value in (metrics.binary or {}).items():
        rows.append((f"binary {name}", f"{value:.4f}"))
    for name, o in metrics.ood.items():
        rows.append((f"OoD {name}: FPR@95 / AUROC", f"{o['fpr95']:.4f} / {o['auroc']:.4f} ({o['num_images']} images)"))
    rows += _purity_rows("purity", metrics.purity)
    for name, o in metrics.on_object.items():
        key = next(k for k in o if k.startswith("top"))
        rows.append((f"on object {name}: {key} / chance", f"{o[key]:.3f} / {o['chance']:.3f} ({o['num_patches']} patches)"))
    if metrics.saturation:
        sat = metrics.saturation
        rows.append((f"saturated (train, {sat['rank']}th presence >= {sat['presence']})", f"{sat['saturated']} of {sat['num_used']} used"))
    if metrics.everywhere:
        found = metrics.everywhere["prototypes"]
        rows.append(("present everywhere (train)", f"{len(found)} of {metrics.everywhere['num_used']} used"
                     + (f": {', '.join(f'#{p}' for p in found)}" if found else "")))
    rows += quality_rows(metrics.quality)
    width = max(len(label) for label, _ in rows)
    text = "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
    strict = _purity_rows("purity", metrics.purity_all_patches)
    if strict:  # another denominator: a table of its own, never beside the paper's
        width = max(len(label) for label, _ in strict)
        text += "\n\nall-patches purity (stricter: divides by every patch, visible part or not)\n"
        text += "\n".join(f"{label:<{width}}  {value}" for label, value in strict)
    return text


def quality_rows(quality: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The report card's rows of the terminal table: scores and counts (the everywhere row is already above)."""
    if not quality:
        return []
    rows = []
    for name in ("consistency", "stability"):
        block = quality.get(name)
        if block is None:
            rows.append((f"{name} (train)", "n/a (no part keypoints)"))
            continue
        score = "n/a" if block["score"] is None or math.isnan(block["score"]) else f"{block['score']:.3f}"
        detail = (f"{block['consistent']} of {block['num_prototypes']} consistent (mu {block['threshold']:g})"
                  if name == "consistency" else f"mean of {block['num_prototypes']} prototypes (sigma {block['params']['sigma']:g})")
        rows.append((f"{name} (train)", f"{score}, {detail}"))
    dup = quality.get("duplicates")
    if dup is not None:
        shown = ", ".join(f"#{p['a']}=#{p['b']}" for p in dup["pairs"][:5]) + (", ..." if dup["count"] > 5 else "")
        chance = dup.get("params", {}).get("chance")
        chance = f" (chance share {chance:.2f})" if isinstance(chance, float) and not math.isnan(chance) else ""
        rows.append(("duplicate pairs (train)", f"{dup['count']}{chance}" + (f": {shown}" if dup["count"] else "")))
    if quality.get("suspects") is not None:
        from pipnet.evaluation.shortcuts import suspect_rows

        rows += suspect_rows(quality["suspects"])
    return rows


def _purity_rows(label: str, table: dict[str, dict[str, float | int]]) -> list[tuple[str, str]]:
    return [
        (f"{label} {name}", f"{p['mean']:.3f} ± {p['std']:.3f}, {p['count_above_0.5']} > 0.5 of {p['num_prototypes']}")
        for name, p in table.items()
    ]
