"""A saved model's out-of-distribution detectors and its verdict on an image: one interface, one decision.

Two detectors say whether an image looks like the model's training data, both in the style of
scikit-learn's outlier detectors (`sklearn.neighbors.LocalOutlierFactor(novelty=True)`):

- `paper` ([Thresholds][pipnet.evaluation.thresholds.Thresholds], `thresholds.json`): the paper's
  per-class thresholds on the predicted class's score;
- `knn` ([KnnDetector][pipnet.evaluation.novelty.KnnDetector], `novelty.json`): the distance
  to the k-th nearest training image in prototype logits.

Each has `fit` (a class method here: the fitted detector is a frozen record), `score_samples` (higher =
more like the in-distribution images), `decision_function` (below 0: unknown), `predict` (+1 known,
-1 unknown), `reasons` (why, as data), `save` and `load`. All read the `Features` (`pipnet.evaluation.features`)
of one model pass.

[fit_detectors][pipnet.evaluation.detectors.fit_detectors] is the one place detectors are fitted (training,
`pipnet evaluate`, `pipnet refit` and the web page call it), in fp32 unless asked otherwise, so that a
model folder gives the same verdicts on every machine. The folder records which detector decides
(`detectors.json`: `knn` where stored, else `paper`), or says that it has none.

[verdicts][pipnet.evaluation.detectors.verdicts] is the one place an image is called `known`,
`unknown` or `abstained`, and [Verdict][pipnet.evaluation.detectors.Verdict] carries the reason as data
and as one sentence, the sentence every door prints.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from pipnet.core.precision import inference_precision
from pipnet.core.utils import atomic_write
from pipnet.evaluation.features import Features, model_features
from pipnet.evaluation.novelty import KnnDetector, load_knn_detector
from pipnet.evaluation.thresholds import Thresholds, describe_data, load_thresholds
from pipnet.model import ModelLoadError, PIPNet
from pipnet.model.run_folder import RunFolder

__all__ = ["ABSTAINED", "CHOICES", "CHOICES_HELP", "DETECTORS", "Detector", "StoredDetectors", "Verdict", "describe_data", "fit_detectors",
           "load_detectors", "verdicts"]

log = logging.getLogger(__name__)

DETECTORS = ("knn", "paper")  # the detectors a model folder can store, the preferred first
CHOICES = ("auto", *DETECTORS)  # what --detector accepts: auto = the folder's stored choice
CHOICES_HELP = ("what calls an image unknown: knn (distance to the nearest training images in prototype logits, "
                "novelty.json), paper (per-class score thresholds, thresholds.json), auto (the model folder's "
                "stored choice: knn where it stores one, else paper)")  # --help of every door's --detector
VERDICTS = ("known", "unknown", "abstained")
ABSTAINED = "abstained: no prototype is present, every class scores 0"  # the sentence of every abstention


class Detector(Protocol):
    """What every detector offers (scikit-learn's outlier-detector interface)."""

    name: str
    precision: str

    def score_samples(self, features: Features) -> torch.Tensor: ...  # (N,) higher = more in-distribution

    def decision_function(self, features: Features) -> torch.Tensor: ...  # (N,) < 0: unknown

    def predict(self, features: Features) -> torch.Tensor: ...  # (N,) +1 known, -1 unknown

    def reasons(self, features: Features, class_names: list[str]) -> list[dict[str, Any]]: ...

    def save(self, directory: str | Path) -> Path: ...


@dataclass(frozen=True)
class Verdict:
    """A model's verdict on one image.

    Args:
        kind: `known` (a class, and the detector finds the image like the training data), `unknown`
            (the detector does not) or `abstained` (no prototype is present: every class scores 0).
        detector: the detector that decided (`knn`, `paper`), or None when the model folder has none.
        reason: why, as data (the score and threshold, or the distance, threshold and nearest images).
        sentence: the same in one sentence, the one every door prints.
    """

    kind: str
    detector: str | None
    reason: dict[str, Any]
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detector": self.detector, "reason": self.reason, "sentence": self.sentence}


def verdicts(features: Features, detector: Detector | None, class_names: list[str]) -> list[Verdict]:
    """The verdict on every image of `features`: the one place an image is called unknown.

    An image on which the model abstains (every class score 0) is `abstained`, whatever the detector says;
    otherwise `detector.predict` decides between `known` and `unknown`. Without a detector every other
    image is `known`, and the sentence says so.

    Args:
        features: one model pass over the images ([model_features][pipnet.evaluation.features.model_features]).
        detector: the deciding detector, or None.
        class_names: the model's class names.
    """
    scores = features.scores.float()
    top, predicted = scores.max(dim=1)
    abstained = (top <= 0).tolist()
    known = (detector.predict(features) > 0).tolist() if detector is not None else [True] * len(top)
    reasons = detector.reasons(features, class_names) if detector is not None else [{} for _ in abstained]
    out = []
    for i, (gave_up, ok, reason) in enumerate(zip(abstained, known, reasons)):
        name, score = class_names[int(predicted[i])], float(top[i])
        if gave_up:
            out.append(Verdict("abstained", detector.name if detector else None, {}, ABSTAINED))
            continue
        kind = "known" if ok else "unknown"
        out.append(Verdict(kind, detector.name if detector else None, {"class": name, "score": score, **reason},
                           _sentence(kind, name, score, detector, reason)))
    return out


def _sentence(kind: str, name: str, score: float, detector: Detector | None, reason: dict[str, Any]) -> str:
    """The verdict in words (the one formatter: predict's table, explain, the page and the report print it)."""
    head = f"{kind}: {name} (score {score:.3f})"
    if detector is None:
        return f"{head}; this model folder stores no detector, so no image is called unknown"
    if detector.name == "paper" and reason["threshold"] is None:
        return f"{head}; unknown because no in-distribution image was predicted as {name} when the thresholds were set"
    if detector.name == "paper":
        cmp = ">=" if kind == "known" else "<"
        return (f"{head}, {cmp} the {name} threshold {reason['threshold']:.3f} (the paper's rule: "
                f"{reason['tpr']:.0%} of in-distribution images of the class reach it)")
    cmp = "<=" if kind == "known" else ">"
    names = ", ".join(Path(n["image"]).name for n in reason["nearest"][:3])
    return (f"{head}; distance {reason['distance']:.3f} {cmp} {reason['threshold']:.3f} to its {reason['k']}th nearest "
            f"training image (knn); nearest: {names}; prototypes they share: {reason['shared'] or 'none'}; "
            f"it lacks: {reason['lacks'] or 'none'}; only it has: {reason['only_it_has'] or 'none'}")


@dataclass(frozen=True)
class StoredDetectors:
    """The detectors a model folder carries and which one decides (`detectors.json`).

    Args:
        detectors: by name (`knn`, `paper`); may be empty.
        decides: the stored choice (`knn` where stored, else `paper`), or None without detectors.
        note: why there are none (e.g. a model saved from the web page without its data), for the reader.
    """

    detectors: dict[str, Detector] = field(default_factory=dict)
    decides: str | None = None
    note: str = ""

    def choose(self, requested: str = "auto") -> Detector | None:
        """The detector that decides: the stored choice (`auto`) or the one asked for.

        Raises:
            ModelLoadError: the detector asked for is not stored.
        """
        if requested not in CHOICES:
            raise ValueError(f"detector must be one of {CHOICES}, got {requested!r}")
        name = self.decides if requested == "auto" else requested
        if name is None:
            return None
        if name not in self.detectors:
            raise ModelLoadError(f"the model folder stores no {name} detector (it has: {', '.join(self.detectors) or 'none'}); "
                                 "run `pipnet evaluate` on it to fit them")
        return self.detectors[name]

    @property
    def precision(self) -> str | None:
        """The precision the deciding detector was set in (None without detectors)."""
        chosen = self.detectors.get(self.decides) if self.decides else None
        return chosen.precision if chosen is not None else None

    def save(self, directory: str | Path) -> Path:
        """Write every detector's files and `detectors.json` (the choice) to `directory`."""
        for detector in self.detectors.values():
            detector.save(directory)
        path = RunFolder(directory).detectors
        record = {"decides": self.decides, "stored": sorted(self.detectors), "note": self.note,
                  "precision": self.precision}
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(record, indent=2))
        return path


def load_detectors(directory: str | Path, model: PIPNet) -> StoredDetectors:
    """The detectors stored in a model folder and its choice (default: `knn` where stored, else `paper`).

    Raises:
        ModelLoadError: a detector file is not valid or does not fit the model.
    """
    stored: dict[str, Detector] = {}
    knn = load_knn_detector(directory, model.num_prototypes)
    paper = load_thresholds(directory, model.num_classes)
    if knn is not None:
        stored["knn"] = knn
    if paper is not None:
        stored["paper"] = paper
    record: dict[str, Any] = {}
    path = RunFolder(directory).detectors
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{path} is not valid JSON: {e}") from e
    decides = record.get("decides", next((name for name in DETECTORS if name in stored), None))
    if decides is not None and decides not in stored:
        raise ModelLoadError(f"{path} names the {decides} detector, which the folder does not store")
    if decides is None:
        why = f" ({record['note']})" if record.get("note") else ""
        log.warning("%s stores no out-of-distribution detector%s; run `pipnet evaluate` on it: until then no image is "
                    "called unknown, only those without any prototype get no class (abstained)", directory, why)
    return StoredDetectors(stored, decides, str(record.get("note", "")))


def fit_detectors(model: PIPNet, train: Dataset, test: Dataset, *, tpr: float = 0.95, k: int = 5, description: str = "",
                  decides: str = "knn", batch_size: int = 64, device: torch.device | str | None = None,
                  precision: str = "fp32", progress: bool = False) -> StoredDetectors:
    """Fit both detectors of `model`: the one place detectors are fitted.

    Both read the same two passes: `train` (the training images through the evaluation transform) is the
    `knn` reference, `test` (in-distribution images) sets both thresholds at `tpr`.

    Args:
        model: the PIP-Net (not changed).
        train: items `(x, label)`; file ids from `train.base.samples` when it has them.
        test: items `(x, label)`.
        tpr: the fraction of `test` each detector keeps.
        k: the `knn` detector's neighbour.
        description: what `test` is, recorded.
        decides: the detector the folder's verdicts use by default.
        batch_size: images per forward pass.
        device: where to run.
        precision: the precision of the passes (fp32: the scores every machine reproduces).
        progress: show progress bars.

    Examples:
        >>> stored = fit_detectors(model, data.projection, data.test)  # doctest: +SKIP
        >>> stored.save("runs/my-run")  # doctest: +SKIP
    """
    if decides not in DETECTORS:
        raise ValueError(f"decides must be one of {DETECTORS}, got {decides!r}")
    with inference_precision(precision):
        reference = model_features(model, train, batch_size=batch_size, device=device, progress=progress)
        calibration = model_features(model, test, batch_size=batch_size, device=device, progress=progress)
    names = [model.config.class_names[c] if model.config.class_names else str(c) for c in range(model.num_classes)]
    description = description or f"{len(calibration.scores)} images"
    paper = Thresholds.fit(calibration, tpr=tpr, description=description, class_names=names, precision=precision)
    samples = getattr(getattr(train, "base", None), "samples", None)
    ids = ([str(s[0]) for s in samples] if samples is not None and len(samples) == len(reference.scores)
           else [str(i) for i in range(len(reference.scores))])
    labels = [int(y) for y in getattr(train, "targets", [])] or [-1] * len(ids)
    knn = KnnDetector.fit(reference, calibration, k=k, tpr=tpr, image_ids=ids, labels=labels,
                              used=model.used_prototypes().tolist(), description=description, precision=precision)
    log.info("fitted the OoD detectors in %s: knn (k = %d, distance threshold %.4f) and the paper's per-class score "
             "thresholds; %s decides", precision, k, knn.threshold, decides)
    return StoredDetectors({"knn": knn, "paper": paper}, decides)
