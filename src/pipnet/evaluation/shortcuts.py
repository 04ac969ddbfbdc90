"""Shortcut suspects: prototypes that may answer to the background or a mark rather than to the object.

A prototype that the scoring sheet uses is a *suspect* when it is tied to one class and its presence
behaves like a confounder's, not like an object part's. Every image is scored twice: as it is, and with its
shapes removed (a 4 x 4 box average upsampled back, which keeps only the image's coarse colour layout; with
object masks, the object is also painted over with the mean colour of the background). Per used prototype
`p` over the images where it is present (presence >= 0.5):

- `class_share`: the share of those images that belong to its most frequent class (1 = one class only);
- `colour`: mean of min(1, presence without shapes / presence): near 1 when it fires on the colour alone,
  as a background-colour prototype does (also "insensitive to removing the object");
- `border`: the share of its peak cells in the outer ring of the latent grid, rescaled so that 0 is what a
  uniform position gives and 1 is "always on the border" (a corner tag, a frame, a ruler);
- `off_object` (with masks): the share of its peak cells outside the object mask;
- `object_removed` (with masks): mean of min(1, presence with the object painted over / presence);
- `inconsistent` (with part keypoints and the report card): 1 when the report card finds it inconsistent.

The suspicion score is `class_share * max(colour, border, off_object, object_removed, inconsistent)`:
a prototype of one class whose evidence survives the loss of the object. Suspects are ranked by it (ties:
the larger share of the sheet's weight first), and each comes with its evidence in plain words.
`find_suspects` only reads the model (inference mode) and returns frozen dataclasses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model import PIPNet

__all__ = ["PRESENT", "SUSPICION_FLAG", "Suspect", "find_suspects", "remove_shapes", "suspect_rows"]

PRESENT = 0.5  # a prototype is present in an image from this presence on
SUSPICION_FLAG = 0.5  # a signal at or above this is put into words
_COARSE = 4  # the side of the grid a "shapes removed" image keeps


@dataclass(frozen=True)
class Suspect:
    """One used prototype's shortcut evidence.

    Args:
        prototype: its index.
        score: class_share x the strongest signal, in [0, 1].
        class_index: the class it is most often present in.
        class_share: the share of its images that are of that class.
        images: images it is present in (presence >= 0.5).
        weight_share: its share of the scoring sheet's total weight.
        signals: `colour`, `border` and, where measurable, `off_object`, `object_removed`, `inconsistent`.
        reasons: the evidence in plain words (signals >= 0.5).
    """

    prototype: int
    score: float
    class_index: int
    class_share: float
    images: int
    weight_share: float
    signals: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def remove_shapes(x: torch.Tensor) -> torch.Tensor:
    """The coarse colour layout of a batch (B, 3, S, S): a 4 x 4 box average upsampled bilinearly back to S."""
    coarse = F.adaptive_avg_pool2d(x, _COARSE)
    return F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _paint_over(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`x` (B, 3, S, S) with the object (masks (B, S, S) True) filled with the mean colour of the rest."""
    m = masks[:, None].to(x.dtype)  # (B, 1, S, S)
    background = (x * (1 - m)).sum(dim=(2, 3)) / (1 - m).sum(dim=(2, 3)).clamp(min=1)  # (B, 3)
    return x * (1 - m) + background[:, :, None, None] * m


def _border_ring(h: int, w: int) -> torch.Tensor:
    ring = torch.ones(h, w, dtype=torch.bool)
    if h > 2 and w > 2:
        ring[1:-1, 1:-1] = False
    return ring


def find_suspects(
    model: PIPNet,
    data: Dataset,
    *,
    quality: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> list[Suspect]:
    """Every used prototype's shortcut evidence on `data`, most suspicious first.

    Args:
        model: the PIP-Net (never changed).
        data: labelled images `(x, label)` through the evaluation transform, e.g. the training images (where
            a shortcut is learnt); with `mask(i)` (`has_masks`) the object signals are measured too.
        quality: the report card of `data` (`pipnet.evaluation.quality.quality_card`), for `inconsistent`.
        batch_size: images per forward pass.
        device: where to run.

    Returns:
        One [Suspect][pipnet.evaluation.shortcuts.Suspect] per used prototype, sorted by `score` (descending).

    Examples:
        >>> for s in find_suspects(model, data.projection)[:5]:  # doctest: +SKIP
        ...     print(s.prototype, f"{s.score:.2f}", "; ".join(s.reasons))
    """
    used = model.used_prototypes().cpu()
    if len(used) == 0:
        return []
    has_masks = bool(getattr(data, "has_masks", False))
    presence, presence_flat, presence_painted, peaks, labels, off = [], [], [], [], [], []
    index = 0
    with eval_mode(model, device) as dev:
        for batch in make_loader(data, batch_size):
            x = inputs_of(batch).to(dev)
            maps = model.prototype_maps(model.forward_features(x))[:, used].float()  # (B, U, h, w)
            b, u, h, w = maps.shape
            flat_maps = model.prototype_maps(model.forward_features(remove_shapes(x)))[:, used].float()
            presence.append(maps.amax(dim=(2, 3)).cpu())
            presence_flat.append(flat_maps.amax(dim=(2, 3)).cpu())
            peak = maps.flatten(2).argmax(dim=2).cpu()  # (B, U) cell index
            peaks.append(peak)
            labels.append(torch.as_tensor(batch[1]).reshape(-1).cpu())
            if has_masks:
                masks = torch.stack([data.mask(index + i) for i in range(b)]).to(dev)  # (B, S, S)
                painted = model.prototype_maps(model.forward_features(_paint_over(x, masks)))[:, used].float()
                presence_painted.append(painted.amax(dim=(2, 3)).cpu())
                cell_masks = F.adaptive_max_pool2d(masks[:, None].float(), (h, w))[:, 0].flatten(1).cpu() > 0  # (B, h*w)
                off.append(~torch.gather(cell_masks, 1, peak))  # (B, U) peak cell off the object
            index += b
    p, p_flat, peak, y = torch.cat(presence), torch.cat(presence_flat), torch.cat(peaks), torch.cat(labels)
    ring = _border_ring(h, w).flatten()
    chance_border = float(ring.float().mean())
    on_border = ring[peak]  # (N, U)
    off_all = torch.cat(off) if has_masks else None  # (N, U)
    p_painted = torch.cat(presence_painted) if has_masks else None  # (N, U)
    weights = model.classifier_weights().detach().float().cpu()[:, used]  # (C, U)
    total_weight = float(weights.sum()) or 1.0
    inconsistent = _inconsistent(quality)
    names = list(model.config.class_names or [])

    suspects = []
    for j, proto in enumerate(used.tolist()):
        present = p[:, j] >= PRESENT  # (N,)
        count = int(present.sum())
        weight_share = float(weights[:, j].sum()) / total_weight
        if count == 0:
            suspects.append(Suspect(proto, 0.0, int(weights[:, j].argmax()), 0.0, 0, weight_share))
            continue
        counts = torch.bincount(y[present].clamp(min=0), minlength=model.num_classes)
        cls = int(counts.argmax())
        class_share = float(counts[cls]) / count
        signals = {
            "colour": float((p_flat[present, j] / p[present, j]).clamp(max=1).mean()),
            "border": max(0.0, (float(on_border[present, j].float().mean()) - chance_border) / (1 - chance_border))
            if chance_border < 1 else 0.0,
        }
        if has_masks:
            signals["off_object"] = float(off_all[present, j].float().mean())
            signals["object_removed"] = float((p_painted[present, j] / p[present, j]).clamp(max=1).mean())
        if proto in inconsistent:
            signals["inconsistent"] = 1.0
        score = class_share * max(signals.values())
        cls_name = names[cls] if cls < len(names) else f"class {cls}"
        suspects.append(Suspect(proto, score, cls, class_share, count, weight_share, signals,
                                _reasons(signals, class_share, cls_name, count)))
    return sorted(suspects, key=lambda s: (-s.score, -s.weight_share, s.prototype))


def _inconsistent(quality: Mapping[str, Any] | None) -> set[int]:
    block = (quality or {}).get("consistency") or {}
    per, threshold = block.get("per_prototype") or {}, block.get("threshold")
    if threshold is None:
        return set()
    scores = {int(p): (v.get("score") if isinstance(v, Mapping) else v) for p, v in per.items()}
    return {p for p, v in scores.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and v < threshold}


def _reasons(signals: Mapping[str, float], class_share: float, cls_name: str, count: int) -> list[str]:
    lines = [f"present on {count} images, {class_share:.0%} of them {cls_name}"]
    words = {
        "colour": "still fires with the shapes blurred away ({:.0%} of its presence): the colour, not the object",
        "border": "peaks on the image border far more than chance ({:.0%} above): a mark, frame or corner",
        "off_object": "peaks off the object mask on {:.0%} of its images",
        "object_removed": "keeps {:.0%} of its presence with the object painted over",
        "inconsistent": "inconsistent: no single object part explains it (report card)",
    }
    for name, value in signals.items():
        if value >= SUSPICION_FLAG:
            lines.append(words[name].format(value) if "{" in words[name] else words[name])
    return lines


def suspect_rows(suspects: list[dict[str, Any]] | list[Suspect], top: int = 5) -> list[tuple[str, str]]:
    """Rows of a terminal table: the `top` suspects with a score >= 0.5, one line each."""
    rows = []
    for s in suspects[:top]:
        s = s.to_dict() if isinstance(s, Suspect) else s
        if s["score"] >= SUSPICION_FLAG:
            rows.append((f"shortcut suspect #{s['prototype']}", f"{s['score']:.2f}: " + "; ".join(s["reasons"])))
    return rows or [("shortcut suspects", "none with a score >= 0.5")]
