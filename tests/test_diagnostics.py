"""Training diagnostics (pipnet.train.diagnostics.diagnose) on hand-made histories, configs and metrics."""

from __future__ import annotations

import pytest

from pipnet.train.diagnostics import PAPER_DECREMENT, classification_steps, diagnose
from pipnet.core.train_config import OptimConfig, ScheduleConfig, TrainConfig


def config(batch: int = 16, sparsify: str = "soft_threshold", prune_everywhere: bool = False) -> TrainConfig:
    return TrainConfig(schedule=ScheduleConfig(batch_size=batch),
                       optim=OptimConfig(sparsify=sparsify, prune_everywhere=prune_everywhere))


def history(train_accuracy: list[float], pretrain: int = 2, **columns: list[float]) -> list[dict]:
    rows = [{"epoch": e + 1, "stage": "pretrain", "train_accuracy": float("nan")} for e in range(pretrain)]
    for e, acc in enumerate(train_accuracy):
        row = {"epoch": pretrain + e + 1, "stage": "classify", "train_accuracy": acc}
        row.update({k: v[e] for k, v in columns.items()})
        rows.append(row)
    return rows


def by_key(findings):
    return {f.key: f for f in findings}


def test_paper_decrement_is_60_epochs_of_94_steps():
    assert PAPER_DECREMENT == pytest.approx(5.64)


def test_steps_derived_from_the_config_and_data_size():
    # 132 images at batch 16: 132 // 16 = 8 steps per epoch (the last partial batch is dropped); 30 epochs.
    rows = history([0.5] * 30)
    steps, total, source = classification_steps(rows, config(16), num_train_images=132)
    assert (steps, total) == (240, pytest.approx(0.24)) and source == "30 epochs x 8 steps"
    f = by_key(diagnose(rows, config(16), None, num_train_images=132))["steps"]
    assert f.level == "warning" and "240 classification steps" in f.message and "0.24" in f.message and "5.6" in f.message
    assert classification_steps(rows, config(16), None)[0] is None
    assert "steps" not in by_key(diagnose(rows, config(16), None))  # nothing to say without a data size
    # A batch larger than the data set still gives one step per epoch.
    assert classification_steps(history([0.5] * 3), config(64), num_train_images=10)[0] == 3


def test_steps_read_from_history_columns_when_present():
    rows = history([0.5, 0.6], sparsify_steps=[3000, 6000], decrement_total=[3.0, 6.0])
    steps, total, source = classification_steps(rows, config(16), num_train_images=132)
    assert (steps, total, source) == (6000, 6.0, "history.csv")
    assert by_key(diagnose(rows, config(16), None, num_train_images=132))["steps"].level == "ok"


def test_hard_threshold_subtracts_nothing():
    rows = history([0.5] * 4)
    assert classification_steps(rows, config(16, "hard_threshold"), 64)[1] == 0.0
    f = by_key(diagnose(rows, config(16, "hard_threshold"), None, num_train_images=64))["steps"]
    assert f.level == "info" and "hard threshold" in f.message


def test_train_accuracy_still_rising_or_levelled():
    rising = by_key(diagnose(history([0.4, 0.5, 0.55, 0.6, 0.66, 0.71]), config(), None))["train_accuracy"]
    assert rising.level == "warning" and "0.48 -> 0.66" in rising.message  # means (0.4, 0.5, 0.55) vs (0.6, 0.66, 0.71)
    flat = by_key(diagnose(history([0.9, 0.91, 0.9, 0.91, 0.9, 0.91]), config(), None))["train_accuracy"]
    assert flat.level == "ok"
    short = by_key(diagnose(history([0.3, 0.6]), config(), None))["train_accuracy"]
    assert short.level == "info" and "0.60" in short.message


METRICS = {
    "saturation": {"saturated": 20, "num_used": 27, "share": 20 / 27, "presence": 0.99, "rank": 10},
    "everywhere": {"prototypes": [3, 17], "share": 0.9, "presence": 0.5, "num_used": 27},
    "ood": {"natural": {"fpr95": 0.9, "auroc": 0.61, "num_images": 20}, "planted": {"fpr95": 0.05, "auroc": 0.99, "num_images": 9}},
    "on_object": {"test": {"top10": 0.75, "chance": 0.64, "num_patches": 270, "num_prototypes": 27}},
}


def test_findings_from_metrics():
    findings = diagnose([], config(), METRICS)
    assert [f.key for f in findings] == ["saturation", "everywhere", "ood", "ood", "on_object"]
    f = by_key(findings)
    assert f["saturation"].level == "warning" and "20 of 27" in f["saturation"].message
    assert f["everywhere"].level == "warning" and "#3, #17" in f["everywhere"].message
    natural, planted = findings[2], findings[3]
    assert natural.level == "warning" and "90%" in natural.message and "does not reject" in natural.message
    assert planted.level == "ok" and planted.values["fpr95"] == 0.05
    assert f["on_object"].level == "warning" and "75%" in f["on_object"].message and "64%" in f["on_object"].message
    good = dict(METRICS, saturation=dict(METRICS["saturation"], saturated=2, share=2 / 27),
                everywhere=dict(METRICS["everywhere"], prototypes=[]),
                on_object={"test": {"top10": 0.9, "chance": 0.5}})
    assert {f.level for f in diagnose([], config(prune_everywhere=True), good) if f.key != "ood"} == {"ok"}
    assert "removed those" in by_key(diagnose([], config(prune_everywhere=True), good))["everywhere"].message


def test_config_as_a_dict_and_metrics_with_nulls():
    rows = history([0.5] * 10)
    as_dict = {"schedule": {"batch_size": 16}, "optim": {"sparsify": "soft_threshold", "sparsify_threshold": 0.001}}
    assert classification_steps(rows, as_dict, 132)[:2] == (80, pytest.approx(0.08))
    nulls = {"ood": {"x": {"fpr95": None, "auroc": None}}, "saturation": {}, "everywhere": {}}
    assert diagnose([], config(), nulls) == []


def test_a_finished_run_logs_its_diagnostics_and_the_report_shows_them(tmp_path, caplog):
    import json
    import logging

    from test_train import tiny_config

    from pipnet.explanation.report import build_report
    from pipnet.train import train

    cfg = tiny_config(tmp_path / "run", epochs_pretrain=0, epochs=1)
    with caplog.at_level(logging.INFO, logger="pipnet"):
        result = train(cfg)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("diagnostics: ")]
    # 24 planted training images at batch 8: 3 steps, 0.003 subtracted (read from history.csv's columns).
    assert any("3 classification steps (history.csv)" in m and "0.003" in m for m in logged)
    assert any("planted_ood" in m for m in logged)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert {"saturation", "everywhere"} <= set(metrics) and metrics["saturation"]["num_used"] > 0
    html = build_report(result.run_dir).read_text()
    assert "Training diagnostics" in html and "3 classification steps" in html


def test_a_chosen_total_decrement_is_spread_over_the_planned_steps():
    # optim.soft_threshold_total (the integrator's option): 6.0 over 30 planned epochs x 8 steps; 15 done.
    as_dict = {"schedule": {"batch_size": 16, "epochs": 30},
               "optim": {"sparsify": "soft_threshold", "sparsify_threshold": 0.001, "soft_threshold_total": 6.0}}
    steps, total, _ = classification_steps(history([0.5] * 15), as_dict, 132)
    assert (steps, total) == (120, pytest.approx(3.0))
    f = by_key(diagnose(history([0.5] * 30), as_dict, None, num_train_images=132))["steps"]
    assert f.level == "ok" and "6" in f.message
    low = dict(as_dict, optim=dict(as_dict["optim"], soft_threshold_total=None))
    assert "--optim.soft_threshold_total" in by_key(diagnose(history([0.5] * 30), low, None, num_train_images=132))["steps"].message
