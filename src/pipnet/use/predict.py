"""Batch prediction: run a saved PIP-Net on files, folders or a data set, one record per image.

Each :class:`Prediction` holds the predicted class and its score, whether the model abstained (every score
0) or calls the image **unknown** (abstained, or max score below its class's OoD threshold; see
:mod:`pipnet.evaluation.thresholds`), the top classes with their scores, and the evidence for the predicted class
(prototype, presence p, weight w, p·w), largest first. The numbers are those of :func:`pipnet.explanation.explain.explain`
on the same batch, so a prediction and an explanation never disagree. Every file found gets one record:
one that cannot be read (not an image, another format, truncated, unreadable, a broken link, not a regular
file) has ``error`` set to the reason and no prediction; the others are predicted in batches. Tables give
each record a ``status`` (``ok``, ``unknown`` or ``error``) and write any file name, even one that is not
valid UTF-8 (its odd bytes escaped as ``\\xNN``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pipnet.core.utils import spreadsheet_safe
from pipnet.data.errors import ImageLoadError
from pipnet.data.images import load_image
from pipnet.explanation.explain import explain
from pipnet.evaluation.inference import choose_device, input_transform
from pipnet.model import PIPNet
from pipnet.evaluation.thresholds import Thresholds, load_thresholds, warn_without_thresholds

__all__ = ["CSV_COLUMNS", "Prediction", "find_files", "predict", "printable_path", "to_csv", "to_jsonl"]

CSV_COLUMNS = ("path", "status", "error", "predicted_class", "score", "abstained", "unknown", "threshold", "top_classes",
               "evidence", "novelty")  # fmt: skip


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image.

    Args:
        path: the file (or ``"<index>"`` for a data-set item).
        predicted_class: the class name, None when the model abstains or the file could not be read.
        predicted_index: its index, or None.
        score: the predicted class's score (0 when abstaining).
        abstained: every class score is 0 (no prototype present).
        unknown: abstained, or ``score`` is below the predicted class's threshold.
        threshold: that threshold (None without thresholds; +inf for a class never predicted when they were set).
        top_classes: up to ``top`` (class name, score) pairs, highest first (empty when abstaining).
        evidence: the predicted class's largest terms ``{"prototype", "presence", "weight", "evidence"}``.
        novelty: with the ``knn`` detector (:mod:`pipnet.evaluation.novelty`), which then decides ``unknown`` instead of
            the threshold: its distance, threshold, nearest training images and the prototypes they share /
            the image lacks, and ``explanation`` in words; None otherwise.
        error: why the file could not be read (then nothing else is filled in).
    """

    path: str
    predicted_class: str | None = None
    predicted_index: int | None = None
    score: float = 0.0
    abstained: bool = False
    unknown: bool = False
    threshold: float | None = None
    top_classes: list[tuple[str, float]] = field(default_factory=list)
    evidence: list[dict[str, float | int]] = field(default_factory=list)
    novelty: dict[str, Any] | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        """``error`` (the file could not be read), ``unknown`` or ``ok``."""
        return "error" if self.error is not None else "unknown" if self.unknown else "ok"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = printable_path(self.path)
        d["status"] = self.status
        d["top_classes"] = [{"class": name, "score": score} for name, score in self.top_classes]
        if d["threshold"] is not None and d["threshold"] == float("inf"):
            d["threshold"] = None  # JSON has no infinity; "unknown" already says what it means
        return d


def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to predict: files as given, folders walked recursively (sorted; hidden entries skipped).

    Every entry in a folder that is not a folder is taken, whatever its name or kind: one that is not an
    image, a broken or looping link, a FIFO, is reported with its reason, never left out. Links to folders
    are followed, each real folder once (a link back up the tree is not walked twice).

    Raises:
        FileNotFoundError: a path does not exist.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(_walk(path, path, set()))
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise FileNotFoundError(f"{printable_path(str(path))}: no such file or folder")
    return files


def _walk(folder: Path, top: Path, seen: set[tuple[int, int]]) -> Iterator[Path]:
    try:
        info = folder.stat()
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        entries = list(os.scandir(folder))
    except OSError:  # an unreadable folder: its files cannot be listed, the folder itself is reported
        yield folder
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()  # follows links; False for a broken or looping one
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(Path(entry.path), top, seen)
        else:
            yield Path(entry.path)


def printable_path(path: str) -> str:
    """``path`` as text that any UTF-8 writer accepts: bytes of a name that were not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def predict(
    model: PIPNet | str | Path,
    inputs: Sequence[str | Path] | str | Path | Dataset,
    *,
    thresholds: Thresholds | None | str = "auto",
    detector: str = "auto",
    top: int = 3,
    evidence: int = 3,
    batch_size: int = 32,
    preset: str = "default",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> list[Prediction]:
    """Predict images in batches; the model is not changed.

    Args:
        model: a PIP-Net, or the folder of a saved one (then its ``thresholds.json`` is used, if any).
        inputs: image files and folders (walked recursively), or a data set of ``(x, label)`` model inputs.
        thresholds: per-class OoD thresholds; ``"auto"`` = the model folder's ``thresholds.json`` when
            ``model`` is a folder, else none. Without thresholds only abstaining images are unknown (said once).
        detector: what calls an image unknown besides abstaining: ``paper`` (the thresholds), ``knn`` (the
            model folder's ``novelty.json``, stored by training and ``pipnet evaluate``: distance to the nearest training
            images in prototype logits) or ``auto`` (``knn`` when the folder stores it, else ``paper``).
        top: classes listed per image.
        evidence: prototypes listed for the predicted class.
        batch_size: images per forward pass.
        preset: files only: the evaluation preset for a model whose config.json does not record its own
            (``grayscale`` for gray data); a recorded one wins (:func:`pipnet.evaluation.inference.input_transform`).
        device: where to run a model loaded from a folder (:func:`pipnet.evaluation.inference.choose_device`; default
            ``auto``: CUDA when present); a ``PIPNet`` given runs where it is (it is never moved).
        progress: show a progress bar.

    Returns:
        One :class:`Prediction` per input, in order (files that cannot be read have ``error`` set).
    """
    source = None
    if not isinstance(model, PIPNet):
        source = Path(model)
        model = PIPNet.from_pretrained(source).to(choose_device(device))
    if thresholds == "auto":
        thresholds = load_thresholds(source, model.num_classes) if source is not None else None
        if thresholds is None:
            warn_without_thresholds(str(source) if source is not None else "the model")
    if isinstance(inputs, Dataset):
        batches = _dataset_batches(inputs, batch_size)
        total = -(-len(inputs) // batch_size)  # type: ignore[arg-type]
    else:
        files = find_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
        batches = _file_batches(files, input_transform(model, fallback_preset=preset), batch_size)
        total = -(-len(files) // batch_size)
    limits = thresholds.tensor() if isinstance(thresholds, Thresholds) else None
    knn = _knn_detector(source, model, detector)
    results: list[Prediction] = []
    for ids, x, errors in tqdm(batches, total=total, desc="predict", disable=not progress, unit="batch"):
        explained = iter(explain(model, x, top_classes=top, image_ids=ids) if len(ids) else [])
        novel = iter(_novelty(knn, model, x) if knn is not None and len(ids) else [])
        for path, error in errors:  # keep the input order: readable ones come from ``explained``
            results.append(Prediction(path=path, error=error) if error else
                           _record(next(explained), limits, evidence, next(novel, None)))
    return results


def _knn_detector(source: Path | None, model: PIPNet, detector: str):
    """The stored ``knn`` detector when ``detector`` asks for it (``auto``: when there is one), else None."""
    from pipnet.evaluation.novelty import DETECTORS, NOVELTY_FILE, load_detector

    if detector not in (*DETECTORS, "auto"):
        raise ValueError(f"detector must be one of {(*DETECTORS, 'auto')}, got {detector!r}")
    if detector == "paper":
        return None
    knn = load_detector(source, model.num_prototypes) if source is not None else None
    if knn is None and detector == "knn":
        raise FileNotFoundError(f"{source or 'the model'} has no {NOVELTY_FILE}: run `pipnet evaluate` on it first")
    return knn


def _novelty(knn, model: PIPNet, x: torch.Tensor) -> list:
    from torch.utils.data import TensorDataset

    from pipnet.evaluation.novelty import model_features

    f = model_features(model, TensorDataset(x), batch_size=len(x), pool=knn.pool)  # one batch
    return knn.explain(f.logits, f.presence)


def _record(e, limits: torch.Tensor | None, evidence: int, novel=None) -> Prediction:
    novelty = {**asdict(novel), "explanation": novel.sentence()} if novel is not None else None
    if e.abstained:
        return Prediction(path=e.image_id, abstained=True, unknown=True, novelty=novelty)
    best = e.top_classes[0]
    threshold = float(limits[best.class_index]) if limits is not None else None
    below = threshold is not None and best.score < threshold
    return Prediction(
        path=e.image_id,
        predicted_class=best.class_name,
        predicted_index=best.class_index,
        score=best.score,
        abstained=False,
        unknown=novel.unknown if novel is not None else below,
        threshold=threshold,
        top_classes=[(c.class_name, c.score) for c in e.top_classes],
        evidence=[
            {"prototype": ev.prototype, "presence": ev.presence, "weight": ev.weight, "evidence": ev.evidence}
            for ev in best.evidence[:evidence]
        ],
        novelty=novelty,
    )


Batch = tuple[list[str], torch.Tensor, list[tuple[str, str | None]]]  # readable ids, inputs, every (path, error)


def _file_batches(files: list[Path], transform, batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(files), batch_size):
        ids, xs, errors = [], [], []
        for path in files[start : start + batch_size]:
            try:
                xs.append(transform(load_image(path)))
                ids.append(str(path))
                errors.append((str(path), None))
            except ImageLoadError as e:
                errors.append((str(path), e.reason))
        yield ids, torch.stack(xs) if xs else torch.empty(0), errors


def _dataset_batches(dataset: Dataset, batch_size: int) -> Iterator[Batch]:
    n = len(dataset)  # type: ignore[arg-type]
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        xs = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
        ids = [str(i) for i in range(start, start + len(items))]
        yield ids, torch.stack(xs), [(i, None) for i in ids]


# ---- tables -------------------------------------------------------------------------------------------


def _cells(p: Prediction) -> dict[str, Any]:
    d = p.to_dict()
    return {
        "path": d["path"],
        "status": p.status,
        "error": p.error or "",
        "predicted_class": p.predicted_class if p.predicted_class is not None else "",
        "score": f"{p.score:.6g}",
        "abstained": str(p.abstained).lower(),
        "unknown": str(p.unknown).lower(),
        "threshold": "" if d["threshold"] is None else f"{p.threshold:.6g}",
        "top_classes": json.dumps(d["top_classes"]),
        "evidence": json.dumps(p.evidence),
        "novelty": p.novelty["explanation"] if p.novelty else "",
    }


def to_csv(predictions: Sequence[Prediction]) -> str:
    """CSV text with :data:`CSV_COLUMNS`; ``top_classes`` and ``evidence`` cells hold JSON lists.

    A cell that a spreadsheet would run as a formula (a file or class named ``=HYPERLINK(...)``) starts with a
    single quote (:func:`~pipnet.core.utils.spreadsheet_safe`); :func:`to_jsonl` keeps every name as it is.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in predictions:
        writer.writerow({k: spreadsheet_safe(v) for k, v in _cells(p).items()})
    return buffer.getvalue()


def to_jsonl(predictions: Sequence[Prediction]) -> str:
    """One JSON object per line (the fields of :class:`Prediction`, with ``status``)."""
    return "".join(json.dumps(p.to_dict()) + "\n" for p in predictions)
