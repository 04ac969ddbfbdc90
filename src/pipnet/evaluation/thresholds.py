"""Per-class out-of-distribution thresholds, kept with the model as ``thresholds.json`` (spec section 6).

Evaluation measures OoD detection with one score threshold per class (:func:`pipnet.evaluation.metrics.ood_thresholds`:
the largest t that keeps a fraction ``tpr`` of the in-distribution images predicted as the class at a max
score >= t). This module computes those same thresholds, saves them beside the model with the TPR they were
set at and the data they came from, and applies them: an image is **unknown** when the model abstains (every
score 0) or when its max score is below the threshold of its predicted class. A class that no image was
predicted as has no threshold (+inf, ``null`` in the file): every prediction of it is unknown.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipnet.evaluation import metrics as M
from pipnet.model import ModelLoadError, PIPNet
from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model.run_folder import THRESHOLDS_FILE, RunFolder
from pipnet.core.precision import PrecisionChoice, current_inference_precision, resolve_inference_precision
from pipnet.core.utils import atomic_write

__all__ = ["THRESHOLDS_FILE", "Thresholds", "fit_thresholds", "load_thresholds", "unknown_mask", "warn_without_thresholds",
           "describe_data", "precision_for_model"]

log = logging.getLogger(__name__)

RULE = "metrics.ood_thresholds: per class, the ceil(tpr * n)-th highest max score of the n images predicted as it"


@dataclass(frozen=True)
class Thresholds:
    """One max-score threshold per class, with where it came from.

    Args:
        values: (C,) thresholds; +inf for a class that no image was predicted as.
        tpr: the fraction of in-distribution images each threshold keeps.
        data: a description of the in-distribution images they were set on.
        num_images: how many images that was.
        num_predicted: (C,) images predicted as each class (abstaining images count for none).
        class_names: the model's class names, for the reader of the file.
        created: UTC time of computation, ISO 8601.
        precision: the inference precision the scores were computed in (``fp32``, ``bf16``, ``fp16``);
            ``auto`` in the commands computes new scores the same way where the machine can
            (:func:`pipnet.core.precision.resolve_inference_precision`). Files without it were fp32.
    """

    values: list[float]
    tpr: float
    data: str
    num_images: int
    num_predicted: list[int]
    class_names: list[str] = field(default_factory=list)
    created: str = ""
    precision: str = "fp32"

    def tensor(self) -> torch.Tensor:
        """(C,) float64 thresholds."""
        return torch.tensor(self.values, dtype=torch.float64)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = [v if math.isfinite(v) else None for v in self.values]  # JSON has no infinity
        return {"rule": RULE, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["values"] = [math.inf if v is None else float(v) for v in known["values"]]
        return cls(**known)

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/thresholds.json`` (atomically) and return its path."""
        path = RunFolder(directory).thresholds
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        return path


def precision_for_model(requested: str, device: torch.device | str, directory: str | Path | None) -> PrecisionChoice:
    """``--precision`` of an inference command on the model folder ``directory``: ``auto`` scores the way its
    stored thresholds were set (:func:`pipnet.core.precision.resolve_inference_precision`)."""
    thresholds = load_thresholds(directory) if directory is not None and requested == "auto" else None
    return resolve_inference_precision(requested, device, thresholds.precision if thresholds else None)


def load_thresholds(directory: str | Path, num_classes: int | None = None) -> Thresholds | None:
    """``directory/thresholds.json``, or None when the model has none.

    Raises:
        ModelLoadError: the file is not valid, or it holds a different number of classes than ``num_classes``.
    """
    path = RunFolder(directory).thresholds
    if not path.is_file():
        return None
    try:
        thresholds = Thresholds.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{path} is not a valid thresholds file: {e}") from e
    if num_classes is not None and len(thresholds.values) != num_classes:
        raise ModelLoadError(f"{path} has {len(thresholds.values)} thresholds but the model has {num_classes} classes")
    return thresholds


def unknown_mask(scores: torch.Tensor, thresholds: Thresholds | torch.Tensor | None) -> torch.Tensor:
    """(N,) True where an image is unknown: it abstains, or its max score is below its class's threshold.

    Without thresholds only abstaining images (every score 0) are unknown.

    Args:
        scores: (N, C) inference scores (``model.predict``).
        thresholds: per-class thresholds, or None.
    """
    pred = M.predictions(scores)  # (N,), -1 = abstained
    unknown = pred < 0
    if thresholds is None:
        return unknown
    t = thresholds.tensor() if isinstance(thresholds, Thresholds) else thresholds.double()
    below = scores.amax(dim=1).double().cpu() < t[pred.clamp(min=0).cpu()]
    return unknown | below.to(unknown.device)


def fit_thresholds(
    model: PIPNet,
    data: Dataset | DataLoader,
    *,
    tpr: float = 0.95,
    description: str = "",
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Thresholds:
    """Per-class thresholds of ``model`` on in-distribution images, by the rule evaluation uses.

    One batched ``model.predict`` pass, like :func:`pipnet.evaluation.evaluate.evaluate`; the model is not changed.

    Args:
        model: the PIP-Net.
        data: in-distribution images, items ``(x, label)`` or ``x`` (labels are not used).
        tpr: fraction of the images predicted as each class to keep, in (0, 1].
        description: what ``data`` is (recorded in the file), e.g. "test split of planted (60 images)".
        batch_size: images per forward pass.
        device: where to run (default: the model's device).
        progress: show a progress bar.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    scores = []
    with eval_mode(model, device) as dev:
        for batch in tqdm(make_loader(data, batch_size), desc="thresholds", disable=not progress, leave=False):
            scores.append(model.predict(inputs_of(batch).to(dev)).scores.float().cpu())
    if not scores:
        raise ValueError("fit_thresholds() got an empty data set")
    scores_all = torch.cat(scores)  # (N, C)
    pred = M.predictions(scores_all)
    C = model.num_classes
    values = M.ood_thresholds(scores_all.amax(dim=1), pred, C, tpr=tpr)
    names = [model.config.class_names[c] if model.config.class_names else str(c) for c in range(C)]
    return Thresholds(
        values=values.tolist(),
        tpr=tpr,
        data=description or f"{len(scores_all)} images",
        num_images=len(scores_all),
        num_predicted=torch.bincount(pred[pred >= 0], minlength=C).tolist(),
        class_names=names,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        precision=current_inference_precision(),
    )


def describe_data(source: str, root: str | None, split: str, num_images: int) -> str:
    """How ``thresholds.json`` names the data its thresholds were set on."""
    where = f" at {root}" if root else ""
    return f"{split} split of the {source} data{where} ({num_images} images)"


def warn_without_thresholds(source: str) -> None:
    """Say once per call site that a model has no thresholds and only all-zero scores count as unknown."""
    log.warning("%s has no %s (run `pipnet evaluate` on it to store them): only images whose every score "
                "is 0 count as unknown", source, THRESHOLDS_FILE)
