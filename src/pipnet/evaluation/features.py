"""What the out-of-distribution detectors read of a model for every image, computed in one pass.

The class scores (the paper's per-class thresholds read the predicted class's score), the prototype logits
pooled over the grid (the `knn` detector's features) and the raw presences (the `knn` detector's
explanation). Fitting a detector and deciding about new images both go through [`model_features`][pipnet.evaluation.features.model_features],
so a verdict is computed from the same numbers the detector was set on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model import PIPNet

__all__ = ["Features", "ROUNDING", "margin", "model_features"]


class Features(NamedTuple):
    logits: torch.Tensor  # (N, P) prototype logits pooled over the grid (max or mean)
    presence: torch.Tensor  # (N, P) raw presence (max of each softmax map; switched-off prototypes 0)
    scores: torch.Tensor  # (N, C) inference scores (model.predict)


def model_features(model: PIPNet, data: Dataset | DataLoader, *, batch_size: int = 64, pool: str = "max",
                   device: torch.device | str | None = None, progress: bool = False) -> Features:
    """The detector's inputs (and the class scores) for every image, in data-set order, in one pass under
    `torch.inference_mode()`; the model is not changed."""
    logits, presence, scores = [], [], []
    with eval_mode(model, device) as dev:
        for batch in tqdm(make_loader(data, batch_size), desc="novelty", disable=not progress, leave=False):
            a = model.prototype_logits(model.forward_features(inputs_of(batch).to(dev)))  # (B, P, h, w)
            maps = torch.softmax(a, dim=1)  # (B, P, h, w)
            logits.append((a.float().amax(dim=(2, 3)) if pool == "max" else a.float().mean(dim=(2, 3))).cpu())
            presence.append(model.raw_presence(maps).float().cpu())
            scores.append(model.forward_head(maps, inference=True).scores.float().cpu())  # as model.predict
    if not logits:
        raise ValueError("the detector got an empty data set")
    return Features(torch.cat(logits), torch.cat(presence), torch.cat(scores))




ROUNDING = 1e-5  # how far fp32 numbers of one image may move between machines (kernels round differently)


def margin(threshold: torch.Tensor | float) -> torch.Tensor:
    """The slack a detector grants a threshold: `ROUNDING * max(1, |t|)`.

    A threshold is itself the score (or distance) of one calibration image, and another CPU's fp32 kernels
    compute that image's number a few units in the last place away (measured: about 1e-7 relative), so
    without slack the image a threshold was set on could change verdict from one machine to the next.
    """
    t = torch.as_tensor(threshold, dtype=torch.float64)
    return ROUNDING * t.abs().clamp(min=1.0)
