"""The run folder: everything one training run writes.

    RUN/config.yaml          the resolved configuration
    RUN/history.csv          one row per epoch (losses and parts, accuracies, sparsity, learning rates, time)
    RUN/checkpoints/last.pt  the resumable checkpoint (atomic)
    RUN/pretrained/          the model at the end of pretraining (``PIPNet.from_pretrained``; ``--model.init``)
    RUN/model.safetensors    the final model, with RUN/config.json (``PIPNet.from_pretrained(RUN)``)
    RUN/metrics.json         held-out metrics of the final model
    RUN/sparsity.png         sparsity ratio and test accuracy per epoch (paper Figure 2), drawn from history.csv
                             by ``pipnet train`` / ``pipnet report`` (:func:`pipnet.report.write_sparsity_plot`)
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

from pipnet.train.checkpoint import CHECKPOINT_NAME, CheckpointError
from pipnet.train.config import TrainConfig, dump_config, load_config
from pipnet.utils import atomic_write

__all__ = ["RunDir", "read_history"]

log = logging.getLogger(__name__)


class RunDir:
    def __init__(self, path: Path, config: TrainConfig):
        self.path = path
        self.config = config

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / CHECKPOINT_NAME

    @classmethod
    def create(cls, out: str | None, config: TrainConfig, main: bool = True) -> RunDir:
        """A new run folder (``out``, or ``runs/<time>`` by default); refuses to overwrite another run."""
        path = Path(out) if out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        if (path / "checkpoints" / CHECKPOINT_NAME).exists() or (path / "model.safetensors").exists():
            raise FileExistsError(f"{path} already holds a run; use --resume {path} to continue it, or another --out")
        if main:
            (path / "checkpoints").mkdir(parents=True, exist_ok=True)
            with atomic_write(path / "config.yaml") as tmp:
                tmp.write_text(dump_config(config))
        return cls(path, config)

    @classmethod
    def resume(cls, path: str | Path) -> RunDir:
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise CheckpointError(f"{path} is not a run folder (no config.yaml)")
        if not (path / "checkpoints" / CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"{path} has no checkpoint yet (checkpoints/{CHECKPOINT_NAME}); start it again")
        config = load_config(str(path / "config.yaml"))
        config.resume = None
        config.out = str(path)
        return cls(path, config)

    def read_history(self) -> list[dict[str, Any]]:
        return read_history(self.path)

    def append_history(self, history: list[dict[str, Any]]) -> None:
        """Rewrite history.csv with every row (atomic; columns are the union over rows)."""
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        with atomic_write(self.path / "history.csv") as tmp:
            tmp.write_text(buf.getvalue())

    def write_metrics(self, metrics) -> None:
        with atomic_write(self.path / "metrics.json") as tmp:
            tmp.write_text(metrics.to_json())


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``RUN/history.csv`` (numbers parsed; [] when there is none)."""
    f = run_dir / "history.csv"
    if not f.is_file():
        return []
    return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(f.read_text()))]


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value
