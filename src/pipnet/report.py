"""Build the HTML report of a run folder: gallery, scoring sheet, metrics and explained images.

Sits above evaluation, explanations and rendering: it rebuilds the run's data from its saved config,
projects the training images, explains a sample of test, out-of-distribution and multi-object images,
and hands everything to :func:`pipnet.render.html.write_report`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from pipnet.data import build_data
from pipnet.diagnostics import diagnose
from pipnet.explain import explain
from pipnet.model import PIPNet
from pipnet.inference import eval_mode
from pipnet.projection import project
from pipnet.refit import read_edit_log
from pipnet.render.html import write_report
from pipnet.train.config import load_config
from pipnet.train.run_dir import RunDir
from pipnet.train.phases import classification_rows

__all__ = ["build_report", "write_sparsity_plot"]

log = logging.getLogger(__name__)


def _sample(dataset, count: int, section: str, model: PIPNet, device) -> list:
    """Explain the first ``count`` images of an eval dataset (items (x, label), with ``raw_image``)."""
    if dataset is None or len(dataset) == 0:
        return []
    n = min(count, len(dataset))
    # Spread the picks over the data set so that several classes show up.
    indices = sorted({round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)})
    images = torch.stack([dataset[i][0] for i in indices])
    with eval_mode(model, device) as dev:
        explanations = explain(model, images.to(dev), image_ids=[f"{section}-{i}" for i in indices])
    return [(e, dataset.raw_image(i), section) for e, i in zip(explanations, indices)]


def _latest_evaluation(run_dir: Path, metrics_path: Path) -> dict | None:
    """Protocol and OoD results of ``RUN/evaluation.json`` (the latest ``pipnet evaluate``), if newer than metrics.json."""
    path = run_dir / "evaluation.json"
    if not path.is_file() or (metrics_path.is_file() and path.stat().st_mtime < metrics_path.stat().st_mtime):
        return None
    evaluation = json.loads(path.read_text())
    return {"protocol": evaluation.get("protocol", "default"), "top1_accuracy": evaluation.get("top1_accuracy"),
            "ood": evaluation.get("ood", {})}


def write_sparsity_plot(run_dir: str | Path) -> Path | None:
    """Draw ``RUN/sparsity.png`` (paper Figure 2) from ``RUN/history.csv``; None when no classification epoch ran.

    Training writes only the data (``history.csv``); ``pipnet train``, ``pipnet demo`` and ``pipnet report``
    draw the picture with this.
    """
    from pipnet.render.png import sparsity_curve
    from pipnet.train.run_dir import read_history
    from pipnet.utils import atomic_write

    rows = classification_rows(read_history(Path(run_dir)))
    if not rows:
        return None
    path = Path(run_dir) / "sparsity.png"
    with atomic_write(path) as tmp:
        tmp.write_bytes(sparsity_curve(rows))
    return path


def build_report(run_dir: str | Path, out: str | Path | None = None, *, samples: int = 6, progress: bool = False) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``) for a finished run and return its path."""
    run_dir = Path(run_dir)
    model = PIPNet.from_pretrained(run_dir).eval()
    config = load_config(str(run_dir / "config.yaml"))
    data = build_data(config.data)
    device = torch.device("cpu")
    projection = project(model, data.projection, k=10, batch_size=config.schedule.batch_size, progress=progress)
    explained = _sample(data.test, samples, "test", model, device)
    for name, ood in data.ood.items():
        explained += _sample(ood, max(2, samples // 2), "ood", model, device)
    explained += _sample(data.multi, max(2, samples // 2), "multi", model, device)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    latest = _latest_evaluation(run_dir, metrics_path)
    if latest is not None:
        metrics = {**(metrics or {}), "latest pipnet evaluate": latest}
    history = RunDir(run_dir, config).read_history()
    write_sparsity_plot(run_dir)
    findings = diagnose(history, config, metrics, num_train_images=len(data.train))
    path = Path(out) if out else run_dir / "report.html"
    write_report(
        path,
        model=model,
        metrics=metrics,
        history=classification_rows(history),
        projection=projection,
        projection_dataset=data.projection,
        explanations=explained,
        diagnostics=findings,
        title=f"PIP-Net report: {run_dir.name}",
        edits=read_edit_log(run_dir),
    )
    return path
