"""The linear-probe baseline (benchmarks/probe.py): its fit, its split, and one run on a tiny folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import probe  # noqa: E402


def test_fit_logistic_separates_separable_classes_and_the_penalty_shrinks_weights():
    x = torch.cat([torch.randn(20, 3) + torch.tensor([4.0, 0, 0]), torch.randn(20, 3) - torch.tensor([4.0, 0, 0])])
    y = torch.tensor([0] * 20 + [1] * 20)
    w, b = probe.fit_logistic(x, y, 2, l2=1e-3)
    assert probe.accuracy(x, y, w, b) == 1.0
    w_strong, _ = probe.fit_logistic(x, y, 2, l2=10.0)
    assert w_strong.norm() < 0.5 * w.norm()
    # At the optimum the gradient of the objective vanishes: mean(softmax - onehot) x + l2 w = 0.
    p = torch.softmax(x.double() @ w_strong + probe.fit_logistic(x, y, 2, l2=10.0)[1], dim=1)
    grad = x.double().T @ (p - torch.nn.functional.one_hot(y, 2).double()) / len(y) + 10.0 * w_strong
    assert grad.abs().max() < 1e-5


def test_holdout_split_is_stratified_disjoint_and_seeded():
    y = torch.tensor([0] * 8 + [1] * 4 + [2] * 2)
    fit, held = probe.holdout_split(y, 0.25, seed=0)
    assert sorted(fit.tolist() + held.tolist()) == list(range(14))
    assert [int((y[held] == c).sum()) for c in range(3)] == [2, 1, 1]
    assert torch.equal(held, probe.holdout_split(y, 0.25, seed=0)[1])


def test_ood_scores_by_hand():
    # Two classes along x; the probe is w = [[1, -1]] on one feature, b = 0 (logits x, -x).
    x_train = torch.tensor([[2.0], [-2.0]])  # standardised: mean 0, std 2.828 -> +-0.707
    x_test = torch.tensor([[2.0], [4.0], [-2.0], [-4.0]])
    x_ood = torch.tensor([[0.5], [-6.0]])
    w, b = torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    table = {name: (test, ood) for name, test, ood in probe.ood_scores_table(x_train, x_test, x_ood, w, b)}
    std = 8 ** 0.5
    test_logit, test_pred = table["max logit"][0]
    assert torch.allclose(test_logit, torch.tensor([2, 4, 2, 4], dtype=torch.float64) / std)
    assert test_pred.tolist() == [0, 0, 1, 1]
    ood_logit, ood_pred = table["max logit"][1]
    assert torch.allclose(ood_logit, torch.tensor([0.5, 6.0], dtype=torch.float64) / std) and ood_pred.tolist() == [0, 1]
    # 95% of 2 test images per class keeps both: thresholds 2/std for each class. The first OoD image
    # (0.5/std) falls below class 0's; the second (6/std) reaches class 1's: FPR 1/2.
    fpr, auroc = probe.ood_rates(table["max logit"][0], table["max logit"][1], 2)
    assert fpr == 0.5
    assert auroc == 4 / 8  # of the 8 (test, OoD) pairs, the 4 with the OoD image at 0.5 are ordered right
    # One-dimensional features all have cosine +-1 with a training image: the nearest one is always 1.
    near_test, near_ood = table["nearest training image"]
    assert torch.equal(near_test[0], torch.ones(4, dtype=torch.float64))
    assert torch.equal(near_ood[0], torch.ones(2, dtype=torch.float64))


def test_probe_runs_on_a_folder_and_prints_train_and_test_accuracy(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "probe.py"), str(tmp_path), "--pretrained", "false",
         "--backbone-kwargs", '{"stages": 3}', "--image-size", "32", "--l2", "0.01", "1", "--threads", "1",
         "--ood", str(tmp_path / "test" / "red")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 classes, 12 training and 4 test images" in result.stdout
    table = result.stdout.splitlines()
    rows = {cells[0][:3]: cells for line in table if line.startswith("| (")
            and (cells := [c.strip() for c in line.strip("|").split("|")])[1] == "efficientnet_lite0"}
    assert sorted(rows) == ["(a)", "(b)", "(c)"]  # the three black boxes, each probed
    assert [rows[k][2:5] for k in ("(a)", "(b)", "(c)")] == [["{}", "native", "224"], ['{"stages": 3}', "native", "32"],
                                                             ['{"stages": 3}', "stride", "32"]]
    for cells in rows.values():
        train_acc, test_acc = float(cells[7]), float(cells[8])
        assert 0.0 <= test_acc <= 1.0 and train_acc == 1.0  # colour alone separates the classes
    best = max(float(c[8]) for c in rows.values())
    assert f"best black box: " in result.stdout and f"test accuracy {best:.3f}" in result.stdout
    assert "normalisation mean [0.5, 0.5, 0.5] std [0.5, 0.5, 0.5] (own)" in result.stdout  # Lite0's own
    ood_rows = [line for line in table if " | red | 2 |" in line]
    assert [c.strip() for c in ood_rows[0].strip("|").split("|")][3] == "max softmax" and len(ood_rows) == 9


def test_references_are_the_unmodified_network_its_cut_and_pipnets_backbone():
    a, b, c = probe.references({"stages": 5}, 128, "dilate", 224)
    assert (a.kwargs, a.grid, a.size) == ({}, "native", 224)
    assert (b.kwargs, b.grid, b.size) == ({"stages": 5}, "native", 128)
    assert (c.kwargs, c.grid, c.size) == ({"stages": 5}, "dilate", 128)
    assert [r.name for r in probe.references({}, 128, "stride", 224, "ca")] == ["c", "a"]
    # An output stride is the grid's: the unmodified references drop it, PIP-Net's backbone keeps it.
    a, b, c = probe.references({"stages": 6, "output_stride": 16}, 160, "dilate", 224)
    assert (a.kwargs, b.kwargs, c.kwargs) == ({}, {"stages": 6}, {"stages": 6, "output_stride": 16})
    # The best black box is the highest test accuracy; a tie goes to the earlier reference.
    assert probe.best_reference({"a": 0.80, "b": 0.85, "c": 0.85}) == ("b", 0.85)
    assert probe.best_reference({"c": 0.7}) == ("c", 0.7)


def test_probe_reports_a_bad_folder_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "probe.py"), str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "error: data folder" in result.stderr and "Traceback" not in result.stderr
