"""Build the HTML report of a run folder: gallery, scoring sheet, metrics and explained images.

Sits above evaluation, explanations and rendering: it rebuilds the run's data from its saved config,
projects the training images, explains a sample of test, out-of-distribution and multi-object images,
and hands everything to `pipnet.explanation.render.html.write_report`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipnet.train.diagnostics import diagnose
from pipnet.explanation.predictor import Predictor
from pipnet.evaluation.inference import build_model_data
from pipnet.evaluation.projection import project
from pipnet.train.refit import read_edit_log
from pipnet.explanation.render.html import write_report
from pipnet.model.run_folder import RunFolder
from pipnet.train.phases import classification_rows

__all__ = ["build_report", "write_sparsity_plot"]

log = logging.getLogger(__name__)


def _sample(dataset, count: int, section: str, predictor: Predictor) -> list:
    """Decide on `count` images of an eval dataset (items (x, label), with `raw_image`), spread over it:
    (explanation, raw image, section, verdict) each."""
    if dataset is None or len(dataset) == 0:
        return []
    n = min(count, len(dataset))
    # Spread the picks over the data set so that several classes show up.
    indices = sorted({round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)})
    images = torch.stack([dataset[i][0] for i in indices])
    decisions = predictor.decide(images, image_ids=[f"{section}-{i}" for i in indices])
    return [(d.explanation, dataset.raw_image(i), section, d.verdict) for d, i in zip(decisions, indices)]


def _latest_evaluation(folder: RunFolder) -> dict | None:
    """Protocol and OoD results of `RUN/evaluation.json` (the latest `pipnet evaluate`), if newer than metrics.json."""
    path, metrics_path = folder.evaluation, folder.metrics
    if not path.is_file() or (metrics_path.is_file() and path.stat().st_mtime < metrics_path.stat().st_mtime):
        return None
    evaluation = folder.read_evaluation()
    return {"protocol": evaluation.get("protocol", "default"), "top1_accuracy": evaluation.get("top1_accuracy"),
            "ood": evaluation.get("ood", {})}


def write_sparsity_plot(run_dir: str | Path) -> Path | None:
    """Draw `RUN/sparsity.png` (paper Figure 2) from `RUN/history.csv`; None when no classification epoch ran.

    Training writes only the data (`history.csv`); `pipnet train`, `pipnet demo` and `pipnet report`
    draw the picture with this.
    """
    from pipnet.explanation.render.png import sparsity_curve
    from pipnet.core.utils import atomic_write

    folder = RunFolder(run_dir)
    rows = classification_rows(folder.read_history())
    if not rows:
        return None
    path = folder.sparsity_plot
    with atomic_write(path) as tmp:
        tmp.write_bytes(sparsity_curve(rows))
    return path


def build_report(run_dir: str | Path, out: str | Path | None = None, *, samples: int = 6, progress: bool = False,
                 detector: str = "auto", precision: str = "auto") -> Path:
    """Write `RUN_DIR/report.html` (or `out`) for a finished run and return its path.

    The explained images carry the verdicts of the run folder's [Predictor][pipnet.Predictor] (`detector`
    and `precision` as there), the same as every other door gives.
    """
    folder = RunFolder(run_dir)
    predictor = Predictor.load(folder.path, device="cpu", detector=detector, precision=precision)  # the explained images' verdicts, as every door gives them
    model = predictor.model
    config = folder.training_config()
    if config is None:
        raise FileNotFoundError(f"{folder.path} is not a run folder: {folder.config.name} is missing")
    data = build_model_data(config.data, model)
    projection = project(model, data.projection, k=10, batch_size=config.schedule.batch_size, progress=progress)
    explained = _sample(data.test, samples, "test", predictor)
    for name, ood in data.ood.items():
        explained += _sample(ood, max(2, samples // 2), "ood", predictor)
    explained += _sample(data.multi, max(2, samples // 2), "multi", predictor)
    metrics = folder.read_metrics()
    latest = _latest_evaluation(folder)
    if latest is not None:
        metrics = {**(metrics or {}), "latest pipnet evaluate": latest}
    history = folder.read_history()
    write_sparsity_plot(folder.path)
    findings = diagnose(history, config, metrics, num_train_images=len(data.train))
    path = Path(out) if out else folder.report
    write_report(
        path,
        model=model,
        metrics=metrics,
        history=classification_rows(history),
        projection=projection,
        projection_dataset=data.projection,
        explanations=explained,
        diagnostics=findings,
        title=f"PIP-Net report: {folder.path.name}",
        edits=read_edit_log(folder.path),
    )
    return path
