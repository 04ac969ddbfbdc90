"""An out-of-distribution detector in the model's own terms, beside the paper's rule (`pipnet.evaluation.thresholds`).

The paper's rule thresholds the predicted class's score. On small real-photo sets most used prototypes
saturate (presence 1.0 on most images), so a score built from presences says little about whether an image
resembles anything the model was trained on. One step earlier the signal is still there: the **prototype
logits** (the add-on's output before the softmax over prototypes; with P = D, the backbone's features).

The rule (`knn`, Sun et al., "Out-of-distribution detection with deep nearest neighbors", ICML 2022,
on the model's own representation):

  f(x)  = each prototype's largest logit over the grid (the pre-softmax analogue of its presence), (P,),
          scaled to unit length;
  d(x)  = 1 - cos(f(x), its k-th nearest training image's f), k = 5 (cosine distance);
  x is **unknown** when d(x) > t, with t the smallest distance that keeps a fraction `tpr` (0.95) of the
  in-distribution test images (the ceil(tpr * n)-th smallest d, as `pipnet.evaluation.metrics.ood_thresholds`
  counts for scores).

The reference set is the training images through the evaluation transform. The decision is explained in
prototypes: the nearest training images (their files and classes) and, among the used prototypes, those
present (p >= 0.1, the inference threshold) in the image and in most of those neighbours (shared), those
present in most neighbours but not in the image (it lacks), and those present in the image but in none of
them (only it has).

Stored beside the model like `thresholds.json`: `novelty.json` (the rule, k, t, the TPR, the data, the
reference images' ids and labels) and `novelty.safetensors` (the reference features, their presences, the
standardisation).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipnet.evaluation.features import Features, margin, model_features
from pipnet.model import PRESENCE_THRESHOLD, ModelLoadError, PIPNet
from pipnet.model.run_folder import NOVELTY_FILE, NOVELTY_TENSORS, RunFolder
from pipnet.core.utils import atomic_write

__all__ = ["NOVELTY_FILE", "NOVELTY_TENSORS", "KnnDetector", "KnnExplanation", "compare_rules",
           "format_rules", "held_out_unknown", "load_knn_detector"]

RULE = ("knn: 1 - cosine similarity to the k-th nearest training image of the prototype logits, max over the grid "
        "(pool 'max'; 'mean' averages); unknown above the threshold")
POOLS = ("max", "mean")  # chosen by measurement: max without standardisation (docs/results/real-photos.md)


@dataclass(frozen=True)
class KnnExplanation:
    """Why the detector calls an image known or unknown, in prototypes (plain data; JSON via `asdict`).

    Args:
        distance: d(x), the cosine distance to the k-th nearest training image.
        threshold: t; the image is unknown when `distance > threshold` (beyond the rounding slack).
        k: the neighbour whose distance counts.
        nearest: up to k nearest training images as `{"image", "label", "distance"}`, nearest first.
        shared: used prototypes present in the image and in most of those neighbours.
        lacks: used prototypes present in most neighbours but not in the image.
        only_it_has: used prototypes present in the image but in none of the neighbours.
    """

    distance: float
    threshold: float
    k: int
    nearest: list[dict[str, Any]]
    shared: list[int]
    lacks: list[int]
    only_it_has: list[int]


@dataclass(frozen=True)
class KnnDetector:
    """The `knn` detector: reference features of the training images and a distance threshold.

    Args:
        reference: (N, P) unit-length features of the training images.
        presence: (N, P) their raw presences (for the explanation).
        mean: (P,) and `std`: a standardisation applied before the unit length (0 and 1: none, the
            default; standardising with the training images' statistics measured worse).
        threshold: t (a distance).
        k: the neighbour whose distance counts.
        tpr: the fraction of in-distribution test images t keeps.
        image_ids: the reference images' ids (file paths), for the explanation.
        labels: their labels.
        data: a description of the images t was set on.
        used: the used prototypes when fitted (the explanation speaks of these only).
        pool: how the logits were pooled over the grid (`max`).
        created: UTC time, ISO 8601.
        precision: the inference precision the features were computed in (`fp32` unless asked otherwise).
    """

    name = "knn"  # a class attribute: the detector's name in --detector and detectors.json

    reference: torch.Tensor
    presence: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    threshold: float
    k: int = 5
    tpr: float = 0.95
    image_ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    data: str = ""
    used: list[int] = field(default_factory=list)
    pool: str = "max"
    created: str = ""
    precision: str = "fp32"

    def embed(self, logits: torch.Tensor) -> torch.Tensor:
        """(M, P) pooled prototype logits -> unit-length features."""
        return F.normalize((logits.double() - self.mean.double()) / self.std.double(), dim=1)

    def distances(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(d, nearest)`: (M,) the cosine distance to the k-th nearest training image, and (M, k) the
        indices of the k nearest, nearest first (k is capped at the reference set's size)."""
        similarity = self.embed(logits) @ self.reference.double().T  # (M, N)
        k = min(self.k, similarity.shape[1])
        top, nearest = similarity.topk(k, dim=1)  # (M, k), descending similarity
        return 1.0 - top[:, -1], nearest

    @classmethod
    def fit(cls, reference: Features, calibration: Features, *, k: int = 5, tpr: float = 0.95, image_ids: list[str] | None = None,
            labels: list[int] | None = None, used: list[int] | None = None, description: str = "",
            precision: str = "fp32") -> KnnDetector:
        """The detector with `reference` (the training images) as neighbours and its threshold at `tpr`
        of `calibration` (in-distribution images), both passes pooled with `max`."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        n = len(reference.logits)
        mean, std = torch.zeros_like(reference.logits[0]), torch.ones_like(reference.logits[0])
        partial = cls(reference=F.normalize(reference.logits, dim=1), presence=reference.presence, mean=mean, std=std,
                      threshold=math.inf, k=k, tpr=tpr, image_ids=list(image_ids or [str(i) for i in range(n)]),
                      labels=list(labels or [-1] * n), used=list(used if used is not None else range(reference.logits.shape[1])),
                      pool="max", precision=precision)
        threshold = distance_threshold(partial.distances(calibration.logits)[0], tpr)
        return replace(partial, threshold=threshold, data=description or f"{len(calibration.logits)} images",
                       created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def score_samples(self, features: Features) -> torch.Tensor:
        """(N,) minus the distance: higher is more like the training images."""
        return -self.distances(features.logits)[0]

    def decision_function(self, features: Features) -> torch.Tensor:
        """(N,) threshold minus distance (with the rounding slack of `pipnet.evaluation.features.margin`):
        below 0 is unknown."""
        return self.score_samples(features) + self.threshold + margin(self.threshold)

    def predict(self, features: Features) -> torch.Tensor:
        """(N,) +1 known, -1 unknown."""
        return torch.where(self.decision_function(features) >= 0, 1, -1)

    def reasons(self, features: Features, class_names: list[str]) -> list[dict[str, Any]]:
        """Per image: the distance, threshold, nearest training images and the prototypes they share ([`explain`][pipnet.evaluation.novelty.KnnDetector.explain])."""
        return [asdict(e) for e in self.explain(features.logits, features.presence)]

    def explain(self, logits: torch.Tensor, presence: torch.Tensor) -> list[KnnExplanation]:
        """One `KnnExplanation` per image ((M, P) logits and raw presences)."""
        d, nearest = self.distances(logits)
        used = torch.tensor(self.used, dtype=torch.long) if self.used else torch.arange(presence.shape[1])
        out = []
        for i in range(len(d)):
            theirs = self.presence[nearest[i]][:, used] >= PRESENCE_THRESHOLD  # (k, U)
            mine = presence[i, used] >= PRESENCE_THRESHOLD  # (U,)
            most = theirs.float().mean(dim=0) > 0.5
            sims = 1.0 - self.embed(logits[i : i + 1]) @ self.reference[nearest[i]].double().T  # (1, k)
            out.append(KnnExplanation(
                distance=float(d[i]), threshold=self.threshold, k=self.k,
                nearest=[{"image": self.image_ids[j] if j < len(self.image_ids) else str(j),
                          "label": self.labels[j] if j < len(self.labels) else -1, "distance": float(s)}
                         for j, s in zip(nearest[i].tolist(), sims[0].tolist())],
                shared=used[mine & most].tolist(), lacks=used[~mine & most].tolist(),
                only_it_has=used[mine & ~theirs.any(dim=0)].tolist()))
        return out

    # ---- stored beside the model --------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write `novelty.json` and `novelty.safetensors` to `directory` (atomically); the json's path."""
        from safetensors.torch import save_file

        folder = RunFolder(Path(directory))
        tensors = {"reference": self.reference, "presence": self.presence, "mean": self.mean, "std": self.std}
        with atomic_write(folder.novelty_tensors) as tmp:
            save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp))
        meta = {"rule": RULE, "pool": self.pool, "threshold": self.threshold, "k": self.k, "tpr": self.tpr, "data": self.data,
                "created": self.created, "precision": self.precision, "used": self.used, "image_ids": self.image_ids, "labels": self.labels}
        with atomic_write(folder.novelty) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, allow_nan=False))
        return folder.novelty


def load_knn_detector(directory: str | Path, num_prototypes: int | None = None) -> KnnDetector | None:
    """The detector stored in `directory`, or None when it has none.

    Raises:
        ModelLoadError: the files are not valid, or they are for another number of prototypes.
    """
    from safetensors.torch import load_file

    folder = RunFolder(Path(directory))
    meta_path, tensor_path = folder.novelty, folder.novelty_tensors
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
        detector = KnnDetector(
            reference=tensors["reference"], presence=tensors["presence"], mean=tensors["mean"], std=tensors["std"],
            threshold=float(meta["threshold"]), k=int(meta["k"]), tpr=float(meta["tpr"]), data=str(meta["data"]),
            created=str(meta["created"]), precision=str(meta["precision"]), used=[int(u) for u in meta["used"]], pool=str(meta["pool"]),
            image_ids=[str(i) for i in meta["image_ids"]], labels=[int(y) for y in meta["labels"]])
    except Exception as e:  # noqa: BLE001 - any decoding failure is a bad file for the user
        raise ModelLoadError(f"{meta_path} (with {tensor_path.name}) is not a valid novelty detector: {e}") from e
    if num_prototypes is not None and detector.reference.shape[1] != num_prototypes:
        raise ModelLoadError(f"{meta_path} is for {detector.reference.shape[1]} prototypes, the model has {num_prototypes}")
    return detector


def distance_threshold(distances: torch.Tensor, tpr: float) -> float:
    """The smallest t with at least ceil(tpr * n) of the n `distances` <= t (the same count as
    `pipnet.evaluation.metrics.ood_thresholds`, with the same float tolerance on ceil)."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    n = len(distances)
    keep = max(1, math.ceil(tpr * n - 1e-9))
    return float(distances.double().sort().values[keep - 1])


def compare_rules(model: PIPNet, detector: KnnDetector, thresholds: Any, test: Dataset, ood: dict[str, Dataset], *,
                  batch_size: int = 64, device: torch.device | str | None = None) -> list[dict[str, Any]]:
    """The `knn` detector beside the paper's rule (per-class score thresholds, `pipnet.evaluation.thresholds`).

    Returns:
        One row per set: `{"set", "images", "paper_unknown", "knn_unknown"}` (the share each rule calls
        unknown) for the in-distribution `test` set, with `paper_unknown_held_out` and
        `knn_unknown_held_out` (`held_out_unknown`), and for each OoD set also `paper_fpr95`,
        `paper_auroc` (max score, as `pipnet evaluate`) and `knn_fpr95`, `knn_auroc` (FPR = the share of
        OoD images not called unknown; AUROC of -distance).
    """
    from pipnet.evaluation import metrics as M

    def rule_outputs(data: Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f = model_features(model, data, batch_size=batch_size, pool=detector.pool, device=device)
        d = detector.distances(f.logits)[0]
        return f.scores.amax(dim=1), thresholds.predict(f) < 0, d, detector.predict(f) < 0, f.scores

    test_max, test_paper, test_d, test_knn, test_scores = rule_outputs(test)
    held_paper, held_knn = held_out_unknown(test_scores, test_d, detector.tpr)
    rows = [{"set": "test (in-distribution)", "images": len(test_max), "paper_unknown": test_paper.double().mean().item(),
             "knn_unknown": test_knn.double().mean().item(),
             "paper_unknown_held_out": held_paper, "knn_unknown_held_out": held_knn}]
    for name, data in ood.items():
        ood_max, ood_paper, ood_d, ood_knn, _ = rule_outputs(data)
        rows.append({"set": name, "images": len(ood_max), "paper_unknown": ood_paper.double().mean().item(),
                     "knn_unknown": ood_knn.double().mean().item(),
                     "paper_fpr95": 1.0 - ood_paper.double().mean().item(), "paper_auroc": M.auroc(test_max, ood_max),
                     "knn_fpr95": 1.0 - ood_knn.double().mean().item(), "knn_auroc": M.auroc(-test_d, -ood_d)})
    return rows


def held_out_unknown(scores: torch.Tensor, distances: torch.Tensor, tpr: float, *, repeats: int = 50,
                     seed: int = 0) -> tuple[float, float]:
    """The share of in-distribution images each rule calls unknown when its threshold was **not** set on them.

    Both rules set their thresholds on the images they are then checked on, which gives 1 - `tpr` by
    construction. Here the images are halved at random `repeats` times; the thresholds are set on one
    half (the paper's per-class score thresholds, `pipnet.evaluation.metrics.ood_thresholds`; the
    knn distance threshold, `distance_threshold`) and the share called unknown is counted on the
    other half, both ways round.

    Args:
        scores: (N, C) inference scores of the in-distribution images.
        distances: (N,) their knn distances.
        tpr: the fraction the thresholds keep.
        repeats: random halvings.
        seed: of the halvings.

    Returns:
        (paper rule, knn): the mean held-out share called unknown.
    """
    from pipnet.evaluation.thresholds import Thresholds

    n = len(distances)
    if n < 4:
        return math.nan, math.nan
    generator = torch.Generator().manual_seed(seed)
    scores, distances = scores.float().cpu(), distances.double().cpu()
    paper, knn = [], []
    for _ in range(repeats):
        order = torch.randperm(n, generator=generator)
        for fit, check in ((order[: n // 2], order[n // 2:]), (order[n // 2:], order[: n // 2])):
            rule = Thresholds.fit(Features(scores[fit], scores[fit], scores[fit]), tpr=tpr)
            paper.append((rule.predict(Features(scores[check], scores[check], scores[check])) < 0).double().mean().item())
            t = distance_threshold(distances[fit], tpr)
            knn.append((distances[check] > t + margin(t)).double().mean().item())
    return sum(paper) / len(paper), sum(knn) / len(knn)


def format_rules(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of `compare_rules`' rows."""
    def cell(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.3f}" if key in row else "-"

    lines = ["set | images | unknown: paper rule / knn | FPR95: paper / knn | AUROC: paper / knn"]
    for r in rows:
        lines.append(f"{r['set']} | {r['images']} | {cell(r, 'paper_unknown')} / {cell(r, 'knn_unknown')} | "
                     f"{cell(r, 'paper_fpr95')} / {cell(r, 'knn_fpr95')} | {cell(r, 'paper_auroc')} / {cell(r, 'knn_auroc')}")
        if "knn_unknown_held_out" in r:
            lines.append(f"  ... with thresholds set on the other half of the test images (50 random halvings): "
                         f"{cell(r, 'paper_unknown_held_out')} / {cell(r, 'knn_unknown_held_out')}")
    return "\n".join(lines)
