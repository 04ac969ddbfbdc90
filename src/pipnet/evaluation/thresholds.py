"""Per-class out-of-distribution thresholds, kept with the model as `thresholds.json` (the paper's out-of-distribution detection).

Evaluation measures OoD detection with one score threshold per class (`pipnet.evaluation.metrics.ood_thresholds`:
the largest t that keeps a fraction `tpr` of the in-distribution images predicted as the class at a max
score >= t). This module computes those same thresholds, saves them beside the model with the TPR they were
set at and the data they came from, and applies them: an image is **unknown** when its max score is below
the threshold of its predicted class (the `paper` detector of [`pipnet.evaluation.detectors`][pipnet.evaluation.detectors], which
fits it and turns its answer into a verdict). A class that no image was predicted as has no threshold
(+inf, `null` in the file): every prediction of it is unknown.
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

from pipnet.core.utils import atomic_write
from pipnet.evaluation import metrics as M
from pipnet.evaluation.features import Features, margin
from pipnet.model import ModelLoadError
from pipnet.model.run_folder import THRESHOLDS_FILE, RunFolder

__all__ = ["THRESHOLDS_FILE", "Thresholds", "describe_data", "load_thresholds"]

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
        precision: the inference precision the scores were computed in (`fp32` unless the fitting asked
            otherwise); `auto` in the commands computes new scores the same way
            (`pipnet.core.precision.resolve_inference_precision`).
    """

    name = "paper"  # a class attribute: the detector's name in --detector and detectors.json

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

    @classmethod
    def fit(cls, calibration: Features, *, tpr: float = 0.95, description: str = "", class_names: list[str] | None = None,
            precision: str = "fp32") -> Thresholds:
        """The thresholds that keep `tpr` of the in-distribution images `calibration` predicts as each class
        (the rule evaluation uses, `pipnet.evaluation.metrics.ood_thresholds`).

        Args:
            calibration: one model pass over in-distribution images.
            tpr: fraction of the images predicted as each class to keep, in (0, 1].
            description: what the images are (recorded in the file).
            class_names: the model's class names, for the reader of the file.
            precision: the precision the pass ran in (recorded).
        """
        if not 0.0 < tpr <= 1.0:
            raise ValueError(f"tpr must be in (0, 1], got {tpr}")
        scores = calibration.scores.float()  # (N, C)
        pred = M.predictions(scores)
        C = scores.shape[1]
        values = M.ood_thresholds(scores.amax(dim=1), pred, C, tpr=tpr)
        return cls(values=values.tolist(), tpr=tpr, data=description or f"{len(scores)} images", num_images=len(scores),
                   num_predicted=torch.bincount(pred[pred >= 0], minlength=C).tolist(),
                   class_names=list(class_names or [str(c) for c in range(C)]),
                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), precision=precision)

    def score_samples(self, features: Features) -> torch.Tensor:
        """(N,) float64 max class score: higher is more like the in-distribution images."""
        return features.scores.double().amax(dim=1).cpu()

    def decision_function(self, features: Features) -> torch.Tensor:
        """(N,) max score minus the predicted class's threshold (with the rounding slack of
        `pipnet.evaluation.features.margin`): below 0 is unknown; -inf where the model abstains."""
        scores = features.scores.double().cpu()
        pred = M.predictions(scores)
        t = self.tensor()[pred.clamp(min=0)]  # (N,)
        slack = torch.where(torch.isfinite(t), margin(t.nan_to_num(posinf=0.0)), torch.zeros_like(t))
        out = self.score_samples(features) - t + slack
        return torch.where(pred < 0, torch.full_like(out, -math.inf), out)

    def predict(self, features: Features) -> torch.Tensor:
        """(N,) +1 known, -1 unknown (an image on which the model abstains is unknown here)."""
        return torch.where(self.decision_function(features) >= 0, 1, -1)

    def reasons(self, features: Features, class_names: list[str]) -> list[dict[str, Any]]:
        """Per image: the predicted class's `threshold` (None: a class never predicted when they were set) and `tpr`."""
        pred = M.predictions(features.scores.double().cpu()).clamp(min=0).tolist()
        return [{"threshold": self.values[p] if math.isfinite(self.values[p]) else None, "tpr": self.tpr} for p in pred]

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
        """Write `directory/thresholds.json` (atomically) and return its path."""
        path = RunFolder(directory).thresholds
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        return path


def load_thresholds(directory: str | Path, num_classes: int | None = None) -> Thresholds | None:
    """`directory/thresholds.json`, or None when the model has none.

    Raises:
        ModelLoadError: the file is not valid, or it holds a different number of classes than `num_classes`.
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


def describe_data(source: str, root: str | None, split: str, num_images: int) -> str:
    """How `thresholds.json` names the data its thresholds were set on."""
    where = f" at {root}" if root else ""
    return f"{split} split of the {source} data{where} ({num_images} images)"
