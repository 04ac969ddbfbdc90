"""A training run writing its run folder: create or resume it, rewrite `history.csv`, write `metrics.json`.

The layout (which file is where) and the reading belong to [`pipnet.model.run_folder.RunFolder`][pipnet.model.run_folder.RunFolder]; the picture
`sparsity.png` is drawn from `history.csv` by `pipnet train` / `pipnet report`
([`pipnet.explanation.report.write_sparsity_plot`][pipnet.explanation.report.write_sparsity_plot]), not by training.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

from pipnet.model.run_folder import RunFolder
from pipnet.train.checkpoint import CheckpointError
from pipnet.core.train_config import TrainConfig, dump_config
from pipnet.core.utils import atomic_write, spreadsheet_safe

__all__ = ["TrainingRun"]

log = logging.getLogger(__name__)


class TrainingRun:
    """A training run: its [`RunFolder`][pipnet.model.run_folder.RunFolder] (the one name of the folder) and its config.

    Args:
        path: the run folder.
        config: the run's configuration.
    """

    def __init__(self, path: Path, config: TrainConfig):
        self.folder = RunFolder(path)
        self.config = config

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def checkpoint_path(self) -> Path:
        return self.folder.checkpoint

    @classmethod
    def create(cls, out: str | None, config: TrainConfig, main: bool = True) -> TrainingRun:
        """A new run folder (`out`, or `runs/<time>` by default); refuses to overwrite another run."""
        folder = RunFolder(Path(out) if out else Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        if folder.checkpoint.exists() or folder.weights.exists():
            raise FileExistsError(f"{folder.path} already holds a run; use --resume {folder.path} to continue it, or another --out")
        if main:
            folder.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(folder.config) as tmp:
                tmp.write_text(dump_config(config))
        return cls(folder.path, config)

    @classmethod
    def resume(cls, path: str | Path) -> TrainingRun:
        folder = RunFolder(path)
        config = folder.training_config()
        if config is None:
            raise CheckpointError(f"{folder.path} is not a run folder (no {folder.config.name})")
        if not folder.checkpoint.is_file():
            raise CheckpointError(f"{folder.path} has no checkpoint yet "
                                  f"({folder.checkpoint.relative_to(folder.path)}); start it again")
        config.resume = None
        config.out = str(folder.path)
        return cls(folder.path, config)

    def read_history(self) -> list[dict[str, Any]]:
        return self.folder.read_history()

    def append_history(self, history: list[dict[str, Any]]) -> None:
        """Rewrite history.csv with every row (atomic; columns are the union over rows)."""
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) if isinstance(v, str) else v for k, v in row.items()} for row in history)
        with atomic_write(self.folder.history) as tmp:
            tmp.write_text(buf.getvalue())

    def write_metrics(self, metrics, into: Path | None = None) -> None:
        """Write `metrics.json` into the run folder, or into `into` (the final model's folder being written)."""
        with atomic_write(RunFolder(into).metrics if into is not None else self.folder.metrics) as tmp:
            tmp.write_text(metrics.to_json())
