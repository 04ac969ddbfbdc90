"""The layout of a run folder, in one place: every file a run or a saved model keeps, and how to read them.

    RUN/config.yaml            the resolved training configuration (its data, schedule and protocol)
    RUN/history.csv            one row per epoch (losses and parts, accuracies, sparsity, learning rates, time)
    RUN/checkpoints/last.pt    the resumable checkpoint (atomic)
    RUN/pretrained/            the model at the end of pretraining (a model folder; `--model.init`)
    RUN/model.safetensors      the final model, with RUN/config.json (`PIPNet.from_pretrained(RUN)`)
    RUN/metrics.json           held-out metrics of the final model, written by training
    RUN/evaluation.json        the metrics of the latest `pipnet evaluate`
    RUN/thresholds.json        per-class out-of-distribution thresholds (`pipnet.evaluation.thresholds`)
    RUN/novelty.json           the `knn` out-of-distribution detector, with RUN/novelty.safetensors
                               (`pipnet.evaluation.novelty`)
    RUN/detectors.json         which detector decides a verdict, or why the folder has none
                               ([`pipnet.evaluation.detectors`][pipnet.evaluation.detectors])
    RUN/edits.json             the per-class switch-offs of an edited model (`pipnet.use.serve.editing`)
    RUN/edits.jsonl            the edit log, one JSON record a line (`pipnet.train.refit`)
    RUN/sparsity.png           sparsity and test accuracy per epoch (paper Figure 2), drawn from history.csv
    RUN/report.html            the report (`pipnet report`)

A model folder (`pipnet refit --out`, a model saved from the web page, `pipnet convert --out`) has the
same layout with the files that apply to it. It is written all or nothing by `write_model_folder`: into
a hidden temporary folder beside it, renamed into place once complete, so that a folder under its final name
is always a whole model; what a killed write leaves behind is hidden, never blocks a name, and is removed by
the next write beside it. [`RunFolder`][pipnet.model.run_folder.RunFolder] names these paths and reads the files;
the modules that write them (training's `pipnet.train.training_run.TrainingRun`, thresholds, edits) take
their paths from it. The model's own two files are named by `pipnet.model` (its save format).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipnet.model.saving import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError
from pipnet.core.train_config import TrainConfig, load_config

__all__ = ["NOVELTY_FILE", "NOVELTY_TENSORS", "THRESHOLDS_FILE", "RunFolder", "config_file", "remove_partial_folders", "write_model_folder"]

THRESHOLDS_FILE = "thresholds.json"  # named in messages (`pipnet.evaluation.thresholds` re-exports it)
NOVELTY_FILE, NOVELTY_TENSORS = "novelty.json", "novelty.safetensors"  # `pipnet.evaluation.novelty` re-exports them


@dataclass(frozen=True)
class RunFolder:
    """A run folder or model folder; its files are properties, reading them is a method.

    Args:
        path: the folder (it need not exist yet).
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ---- the layout --------------------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def pretrained(self) -> Path:
        return self.path / "pretrained"

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def model_config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation.json"

    @property
    def thresholds(self) -> Path:
        return self.path / THRESHOLDS_FILE

    @property
    def novelty(self) -> Path:
        return self.path / NOVELTY_FILE

    @property
    def novelty_tensors(self) -> Path:
        return self.path / NOVELTY_TENSORS

    @property
    def detectors(self) -> Path:
        return self.path / "detectors.json"

    @property
    def edits(self) -> Path:
        return self.path / "edits.json"

    @property
    def edit_log(self) -> Path:
        return self.path / "edits.jsonl"

    @property
    def sparsity_plot(self) -> Path:
        return self.path / "sparsity.png"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    # ---- reading -----------------------------------------------------------------------------------------

    def training_config(self) -> TrainConfig | None:
        """The run's `config.yaml` as a `TrainConfig`, or None for a folder without one (a converted model)."""
        return load_config(str(self.config)) if self.config.is_file() else None

    def read_history(self) -> list[dict[str, Any]]:
        """The rows of `history.csv` (numbers parsed; [] when there is none)."""
        if not self.history.is_file():
            return []
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(self.history.read_text()))]

    def read_metrics(self) -> dict[str, Any] | None:
        """`metrics.json` as a dict, or None before the run was evaluated."""
        return json.loads(self.metrics.read_text()) if self.metrics.is_file() else None

    def read_evaluation(self) -> dict[str, Any] | None:
        """`evaluation.json` (the latest `pipnet evaluate`) as a dict, or None when there is none."""
        return json.loads(self.evaluation.read_text()) if self.evaluation.is_file() else None

    def read_edits(self) -> dict[str, Any]:
        """`edits.json` as a dict ({} for a model that was not edited per class).

        Raises:
            ModelLoadError: the file is not a JSON object.
        """
        if not self.edits.is_file():
            return {}
        try:
            raw = json.loads(self.edits.read_text())
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{self.edits} is not a valid record of edits: {e}") from e
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{self.edits} is not a valid record of edits: not a JSON object")
        return raw


def config_file(path: str | Path) -> Path:
    """The training config YAML that `path` names: a run folder's `config.yaml`, or `path` itself.

    `pipnet refit --data`, `pipnet serve --data` and the web page take either form.
    """
    path = Path(path)
    return RunFolder(path).config if path.is_dir() else path


# ---- writing a model folder all or nothing ----------------------------------------------------------------

_PARTIAL = re.compile(r"^\..+\.partial-(\d+)-[0-9a-f]+$")  # .NAME.partial-PID-RANDOM


@contextlib.contextmanager
def write_model_folder(path: str | Path, *, exist_ok: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path` to fill; when the block ends without error it becomes `path`.

    The one way this project writes a model folder (a model saved from the web page, a refit, training's
    final model). A new folder is renamed into place in one step, so `path` either does not exist or holds
    every file. Into an existing folder (`exist_ok`: a run folder, which also holds the run's config and
    checkpoints) the files are moved one by one with the weights last: the model's old weights are removed
    first, so that until the new ones arrive the folder is not a model at all rather than a mix of two.
    A failure or interruption leaves the hidden temporary folder `.NAME.partial-PID-RANDOM`: it blocks no
    name, and the next write beside it removes it once process PID has ended.

    Args:
        path: the model folder.
        exist_ok: allow `path` to exist (then its model files are replaced); else it must be new.

    Raises:
        FileExistsError: `path` exists and `exist_ok` is false (checked before and after the block).
    """
    path = Path(path)
    if not exist_ok and path.exists():
        raise FileExistsError(f"{path} exists already: choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_partial_folders(path.parent)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        _fsync(tmp)
        if path.exists() and exist_ok:
            _move_files_into(tmp, path)
            tmp.rmdir()
        else:
            if path.exists():  # made while this one was being written
                raise FileExistsError(f"{path} exists already: choose another name")
            os.rename(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_partial_folders(parent: str | Path) -> list[Path]:
    """Remove the temporary folders that killed `write_model_folder` calls left in `parent`.

    Only folders whose writing process has ended are removed (one still running may be writing its own).

    Returns:
        The folders removed.
    """
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _move_files_into(tmp: Path, path: Path) -> None:
    """Move `tmp`'s files into the existing folder `path`; the weights file goes last (the commit)."""
    weights = RunFolder(path).weights
    weights.unlink(missing_ok=True)
    names = sorted(f.name for f in tmp.iterdir())
    for name in [n for n in names if n != weights.name] + [n for n in names if n == weights.name]:
        target = path / name
        if (tmp / name).is_dir():
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp / name, target)
        else:
            os.replace(tmp / name, target)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value
