"""The layout of a run folder, in one place: every file a run or a saved model keeps, and how to read them.

    RUN/config.yaml            the resolved training configuration (its data, schedule and protocol)
    RUN/history.csv            one row per epoch (losses and parts, accuracies, sparsity, learning rates, time)
    RUN/checkpoints/last.pt    the resumable checkpoint (atomic)
    RUN/pretrained/            the model at the end of pretraining (a model folder; ``--model.init``)
    RUN/model.safetensors      the final model, with RUN/config.json (``PIPNet.from_pretrained(RUN)``)
    RUN/metrics.json           held-out metrics of the final model, written by training
    RUN/evaluation.json        the metrics of the latest ``pipnet evaluate``
    RUN/thresholds.json        per-class out-of-distribution thresholds (:mod:`pipnet.thresholds`)
    RUN/edits.json             the per-class switch-offs of an edited model (:mod:`pipnet.serve.editing`)
    RUN/edits.jsonl            the edit log, one JSON record a line (:mod:`pipnet.refit`)
    RUN/sparsity.png           sparsity and test accuracy per epoch (paper Figure 2), drawn from history.csv
    RUN/report.html            the report (``pipnet report``)

A model folder (``pipnet refit --out``, a model saved from the web page, ``pipnet convert --out``) has the
same layout with the files that apply to it. :class:`RunFolder` names these paths and reads the files;
the modules that write them (training's :class:`pipnet.train.run_dir.RunDir`, thresholds, edits) take
their paths from it. The model's own two files are named by :mod:`pipnet.model` (its save format).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipnet.model import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError
from pipnet.core.train_config import TrainConfig, load_config

__all__ = ["THRESHOLDS_FILE", "RunFolder", "config_file"]

THRESHOLDS_FILE = "thresholds.json"  # named in messages (``pipnet.thresholds`` re-exports it)


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
        """The run's ``config.yaml`` as a ``TrainConfig``, or None for a folder without one (a converted model)."""
        return load_config(str(self.config)) if self.config.is_file() else None

    def read_history(self) -> list[dict[str, Any]]:
        """The rows of ``history.csv`` (numbers parsed; [] when there is none)."""
        if not self.history.is_file():
            return []
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(self.history.read_text()))]

    def read_metrics(self) -> dict[str, Any] | None:
        """``metrics.json`` as a dict, or None before the run was evaluated."""
        return json.loads(self.metrics.read_text()) if self.metrics.is_file() else None

    def read_evaluation(self) -> dict[str, Any] | None:
        """``evaluation.json`` (the latest ``pipnet evaluate``) as a dict, or None when there is none."""
        return json.loads(self.evaluation.read_text()) if self.evaluation.is_file() else None

    def read_edits(self) -> dict[str, Any]:
        """``edits.json`` as a dict ({} for a model that was not edited per class).

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
    """The training config YAML that ``path`` names: a run folder's ``config.yaml``, or ``path`` itself.

    ``pipnet refit --data``, ``pipnet serve --data`` and the web page take either form.
    """
    path = Path(path)
    return RunFolder(path).config if path.is_dir() else path


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value
