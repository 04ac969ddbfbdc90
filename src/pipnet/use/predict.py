"""Batch prediction: run a saved PIP-Net on files, folders or a data set, one record per image.

Each [`Prediction`][pipnet.Prediction] holds what the model folder's [Predictor][pipnet.Predictor] decides: the predicted
class and its score, the verdict (`known`, `unknown` or `abstained`) with the detector that gave it and
its reason in one sentence, the top classes with their scores, and the evidence for the predicted class
(prototype, presence p, weight w, p·w), largest first. The web page, `pipnet explain` and the report ask
the same predictor, so they never disagree with the table. Every file found gets one record: one that
cannot be read (not an image, another format, truncated, unreadable, a broken link, not a regular file) has
`error` set to the reason and no prediction; the others are predicted in batches. Tables give each record
a `status` (`ok`, `unknown`, `abstained` or `error`) and write any file name, even one that is not
valid UTF-8 (its odd bytes escaped as `\\xNN`).
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
from pipnet.explanation.predictor import Decision, Predictor
from pipnet.model import PIPNet

__all__ = ["CSV_COLUMNS", "Prediction", "find_files", "predict", "printable_path", "to_csv", "to_jsonl"]

CSV_COLUMNS = ("path", "status", "error", "predicted_class", "score", "verdict", "detector", "reason", "top_classes",
               "evidence")  # fmt: skip


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image.

    Args:
        path: the file (or `"<index>"` for a data-set item).
        predicted_class: the class name, None when the model abstains or the file could not be read.
        predicted_index: its index, or None.
        score: the predicted class's score (0 when abstaining).
        verdict: `known`, `unknown` or `abstained` (None for a file that could not be read).
        detector: the detector that decided (`knn`, `paper`; None when the model folder stores none).
        reason: why, as data (`pipnet.evaluation.detectors.Verdict`).
        sentence: why, in one sentence.
        top_classes: up to `top` (class name, score) pairs, highest first (empty when abstaining).
        evidence: the predicted class's largest terms `{"prototype", "presence", "weight", "evidence"}`.
        error: why the file could not be read (then nothing else is filled in).
    """

    path: str
    predicted_class: str | None = None
    predicted_index: int | None = None
    score: float = 0.0
    verdict: str | None = None
    detector: str | None = None
    reason: dict[str, Any] = field(default_factory=dict)
    sentence: str = ""
    top_classes: list[tuple[str, float]] = field(default_factory=list)
    evidence: list[dict[str, float | int]] = field(default_factory=list)
    error: str | None = None

    @property
    def abstained(self) -> bool:
        """The model abstains: no prototype is present, every class scores 0."""
        return self.verdict == "abstained"

    @property
    def unknown(self) -> bool:
        """The deciding detector finds the image unlike the training images."""
        return self.verdict == "unknown"

    @property
    def status(self) -> str:
        """`error` (the file could not be read), `unknown`, `abstained` or `ok`."""
        return "error" if self.error is not None else "ok" if self.verdict == "known" else str(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = printable_path(self.path)
        d["status"] = self.status
        d["top_classes"] = [{"class": name, "score": score} for name, score in self.top_classes]
        return d

    @classmethod
    def of(cls, decision: Decision, evidence: int = 3) -> Prediction:
        """The record of a [Predictor][pipnet.Predictor]'s decision, with `evidence` terms of the predicted class."""
        e, v = decision.explanation, decision.verdict
        common = {"path": e.image_id, "verdict": v.kind, "detector": v.detector, "reason": v.reason, "sentence": v.sentence}
        if e.abstained:
            return cls(**common)
        best = e.top_classes[0]
        return cls(**common, predicted_class=best.class_name, predicted_index=best.class_index, score=best.score,
                   top_classes=[(c.class_name, c.score) for c in e.top_classes],
                   evidence=[{"prototype": ev.prototype, "presence": ev.presence, "weight": ev.weight, "evidence": ev.evidence}
                             for ev in best.evidence[:evidence]])


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
    """`path` as text that any UTF-8 writer accepts: bytes of a name that were not UTF-8 become `\\xNN`."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def predict(
    model: Predictor | PIPNet | str | Path,
    inputs: Sequence[str | Path] | str | Path | Dataset,
    *,
    detector: str = "auto",
    precision: str = "auto",
    top: int = 3,
    evidence: int = 3,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> list[Prediction]:
    """Predict images in batches; the model is not changed.

    Args:
        model: a [Predictor][pipnet.Predictor], the folder of a saved model (loaded with its stored
            detectors) or a PIP-Net (no detectors: only abstaining images get no class).
        inputs: image files and folders (walked recursively), or a data set of `(x, label)` model inputs.
        detector: a folder only: `auto` (its stored choice: `knn` where stored, else `paper`), `knn`
            or `paper` ([`pipnet.evaluation.detectors`][pipnet.evaluation.detectors]).
        precision: a folder only: `auto` (the precision its detectors were set in, fp32 unless asked
            otherwise), `fp32`, `bf16` or `fp16`.
        top: classes listed per image.
        evidence: prototypes listed for the predicted class.
        batch_size: images per forward pass.
        device: where to run a model loaded from a folder (default `auto`: CUDA when present); a model
            given runs where it is.
        progress: show a progress bar.

    Returns:
        One [`Prediction`][pipnet.Prediction] per input, in order (files that cannot be read have `error` set).

    Examples:
        A folder of photos through a saved model (here an untrained one), one row per file:

        >>> from pathlib import Path
        >>> from PIL import Image
        >>> import pipnet
        >>> model = pipnet.create_model("resnet18", num_classes=2, num_features=4, class_names=["cat", "dog"])
        >>> _ = model.save_pretrained("my-model")
        >>> Path("photos").mkdir()
        >>> Image.new("RGB", (320, 240), "orange").save("photos/a.jpg")
        >>> Path("photos/notes.jpg").write_text("not an image")
        12
        >>> rows = pipnet.predict("my-model", ["photos"], device="cpu")
        >>> [(Path(r.path).name, r.verdict) for r in rows]
        [('a.jpg', 'known'), ('notes.jpg', None)]
        >>> rows[1].error  # doctest: +ELLIPSIS
        '...'
    """
    if isinstance(model, PIPNet):
        predictor = Predictor(model, device=None)
    elif isinstance(model, Predictor):
        predictor = model
    else:
        predictor = Predictor.load(model, device=device or "auto", precision=precision, detector=detector)
    if isinstance(inputs, Dataset):
        batches = _dataset_batches(inputs, batch_size)
        total = -(-len(inputs) // batch_size)  # type: ignore[arg-type]
    else:
        files = find_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
        batches = _file_batches(files, predictor.transform, batch_size)
        total = -(-len(files) // batch_size)
    results: list[Prediction] = []
    for ids, x, errors in tqdm(batches, total=total, desc="predict", disable=not progress, unit="batch"):
        decided = iter(predictor.decide(x, image_ids=ids, top=top))
        for path, error in errors:  # keep the input order: readable ones come from `decided`
            results.append(Prediction(path=path, error=error) if error else Prediction.of(next(decided), evidence))
    return results


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
        "verdict": p.verdict or "",
        "detector": p.detector or "",
        "reason": p.sentence,
        "top_classes": json.dumps(d["top_classes"]),
        "evidence": json.dumps(p.evidence),
    }


def to_csv(predictions: Sequence[Prediction]) -> str:
    """CSV text with `CSV_COLUMNS`; `top_classes` and `evidence` cells hold JSON lists.

    A cell that a spreadsheet would run as a formula (a file or class named `=HYPERLINK(...)`) starts with a
    single quote (`spreadsheet_safe`); `to_jsonl` keeps every name as it is.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in predictions:
        writer.writerow({k: spreadsheet_safe(v) for k, v in _cells(p).items()})
    return buffer.getvalue()


def to_jsonl(predictions: Sequence[Prediction]) -> str:
    """One JSON object per line (the fields of [`Prediction`][pipnet.Prediction], with `status`)."""
    return "".join(json.dumps(p.to_dict()) + "\n" for p in predictions)
