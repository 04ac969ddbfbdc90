"""The one owner of a saved model's decisions: class, scores, evidence and one verdict, the same at every door.

A [Predictor][pipnet.Predictor] holds the model, its input transform and normalisation, the precision it
scores in and the model folder's stored detectors. `pipnet predict`, `pipnet explain`, the web page,
the report and [pipnet.predict][pipnet.predict] all ask it, so for the same image they give the same class,
the same verdict (`known`, `unknown` or `abstained`) and the same sentence.

The precision is fp32 unless asked otherwise (or unless the detectors were set in another precision on
request): the detectors are fitted on fp32 scores, which every CPU and GPU reproduce to rounding, so a
model folder moved between machines gives the same verdicts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import TensorDataset

from pipnet.core.precision import inference_precision, resolve_inference_precision
from pipnet.evaluation.detectors import StoredDetectors, Verdict, load_detectors, verdicts
from pipnet.evaluation.features import model_features
from pipnet.evaluation.inference import choose_device, input_transform
from pipnet.explanation.explain import ImageExplanation, explain
from pipnet.model import PIPNet

__all__ = ["Decision", "Predictor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What the model decides about one image.

    Args:
        explanation: the class scores and their evidence (`pipnet.explanation.explain.ImageExplanation`).
        verdict: known, unknown or abstained, with its reason.
    """

    explanation: ImageExplanation
    verdict: Verdict

    @property
    def predicted_class(self) -> str | None:
        """The class name, or None when the model abstains."""
        return None if self.explanation.abstained else self.explanation.top_classes[0].class_name

    @property
    def score(self) -> float:
        """The predicted class's score (0 when abstaining)."""
        return 0.0 if self.explanation.abstained else self.explanation.top_classes[0].score

    def to_dict(self) -> dict[str, Any]:
        return {**self.explanation.to_dict(), "verdict": self.verdict.to_dict()}


class Predictor:
    """A saved model with everything its verdict needs; build it with [load][pipnet.Predictor.load].

    Args:
        model: the PIP-Net (put in eval mode; never changed).
        detectors: the stored detectors and the folder's choice.
        detector: `auto` (the folder's choice), `knn` or `paper`.
        precision: `auto` (the precision the deciding detector was set in: fp32 unless asked otherwise),
            `fp32`, `bf16` or `fp16`.
        device: where to run.

    Examples:
        A model folder (here an untrained one; a trained run's folder also holds the detectors that call
        an image unknown) and a verdict on one image:

        >>> from PIL import Image
        >>> import pipnet
        >>> model = pipnet.create_model("resnet18", num_classes=2, num_features=4, image_size=64,
        ...                             class_names=["cat", "dog"])
        >>> _ = model.save_pretrained("my-model")
        >>> predictor = pipnet.Predictor.load("my-model", device="cpu")
        >>> decision = predictor.decide_image(Image.new("RGB", (320, 240), "orange"))
        >>> decision.predicted_class in {"cat", "dog"}, decision.verdict.kind
        (True, 'known')
        >>> decision.verdict.sentence  # doctest: +ELLIPSIS
        'known: ... (score ...); this model folder stores no detector, so no image is called unknown'
    """

    def __init__(self, model: PIPNet, detectors: StoredDetectors | None = None, *, detector: str = "auto",
                 precision: str = "auto", device: torch.device | str | None = "auto"):
        self.device = choose_device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.detectors = detectors if detectors is not None else StoredDetectors()
        self.detector = self.detectors.choose(detector)
        choice = resolve_inference_precision(precision, self.device, self.detector.precision if self.detector else None)
        self.precision = choice.precision
        self.precision_reason = choice.reason
        self.transform = input_transform(model)
        self.class_names = [model.config.class_names[c] if model.config.class_names else str(c)
                            for c in range(model.num_classes)]

    @classmethod
    def load(cls, folder: str | Path, *, device: torch.device | str | None = "auto", precision: str = "auto",
             detector: str = "auto") -> Predictor:
        """The model saved in `folder` with its stored detectors.

        Args:
            folder: a model folder (`model.safetensors`, `config.json` and its detectors' files).
            device: `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
            precision: see the class.
            detector: see the class.

        Raises:
            ModelLoadError: the folder is not a saved model, or a detector asked for is not stored.

        Examples:
            >>> import pipnet
            >>> _ = pipnet.create_model("resnet18", num_classes=2, num_features=4).save_pretrained("my-model")
            >>> predictor = pipnet.Predictor.load("my-model", device="cpu")
            >>> predictor.precision, predictor.detector is None  # fp32; no detector stored in this folder
            ('fp32', True)
        """
        model = PIPNet.from_pretrained(folder)
        predictor = cls(model, load_detectors(folder, model), detector=detector, precision=precision, device=device)
        log.info("precision %s (%s); verdicts by %s", predictor.precision, predictor.precision_reason,
                 predictor.detector.name if predictor.detector is not None else "no detector (none stored)")
        return predictor

    def for_model(self, model: PIPNet) -> Predictor:
        """The same detectors, precision and device for an edited copy of the model (the web page's edits)."""
        other = copy.copy(self)
        other.model = model
        return other

    @property
    def normalization(self):
        """The input normalisation the model expects (its `config.json`)."""
        return self.model.normalization

    def decide(self, x: torch.Tensor, *, image_ids: Sequence[str] | None = None, top: int = 3,
               box: str = "patch") -> list[Decision]:
        """Decisions on a batch of model inputs `x` (B, 3, S, S) (made with `transform`)."""
        if len(x) == 0:
            return []
        x = x.to(self.device)
        with torch.inference_mode(), inference_precision(self.precision):
            explained = explain(self.model, x, top_classes=top, image_ids=list(image_ids) if image_ids else None, box=box)
            features = model_features(self.model, TensorDataset(x), batch_size=len(x), device=self.device)
        return [Decision(e, v) for e, v in zip(explained, verdicts(features, self.detector, self.class_names))]

    def decide_images(self, images: Sequence[Image.Image], *, image_ids: Sequence[str] | None = None, top: int = 3,
                      box: str = "patch") -> list[Decision]:
        """Decisions on PIL images (any size; the model's transform resizes and normalises them)."""
        if not images:
            return []
        return self.decide(torch.stack([self.transform(im) for im in images]), image_ids=image_ids, top=top, box=box)

    def decide_image(self, image: Image.Image, *, image_id: str | None = None, top: int = 3, box: str = "patch") -> Decision:
        """The decision on one PIL image.

        Args:
            image: any size and mode; the model's transform resizes and normalises it.
            image_id: a name for the image in the explanation.
            top: classes listed.
            box: `patch` (the prototype's image patch) or `heatmap`.

        Examples:
            >>> from PIL import Image
            >>> import pipnet
            >>> model = pipnet.create_model("resnet18", num_classes=2, num_features=4, class_names=["cat", "dog"])
            >>> _ = model.save_pretrained("my-model")
            >>> decision = pipnet.Predictor.load("my-model", device="cpu").decide_image(Image.new("RGB", (64, 48)))
            >>> [c.class_name for c in decision.explanation.top_classes] in (["cat", "dog"], ["dog", "cat"])
            True
            >>> decision.to_dict()["verdict"]["kind"]
            'known'
        """
        return self.decide_images([image], image_ids=[image_id] if image_id else None, top=top, box=box)[0]
