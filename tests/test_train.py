"""Training: the schedule table, the sparsification rules, short real runs, resume (spec section 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipnet.core.data_config import DataConfig, PlantedConfig
from pipnet.train import TrainConfig, train
from pipnet.core.train_config import ModelOptions, OptimConfig, RuntimeConfig, ScheduleConfig, dump_config
from pipnet.train.optim import hard_threshold_, make_stage_optim, parameter_groups, soft_threshold_
from pipnet.train.phases import plan_epochs
from pipnet.model import NonNegativeLinear, PIPNet


def tiny_config(out: Path, **schedule) -> TrainConfig:
    return TrainConfig(
        out=str(out),
        model=ModelOptions(backbone="resnet18", pretrained=False, num_features=8),
        data=DataConfig(
            image_size=32,
            planted=PlantedConfig(num_classes=3, train_per_class=8, test_per_class=4, ood_images=6, multi_images=4, size=48),
        ),
        schedule=ScheduleConfig(
            **{"epochs_pretrain": 2, "epochs": 5, "freeze_epochs": 4, "batch_size_pretrain": 8, "batch_size": 8, **schedule}
        ),
        runtime=RuntimeConfig(precision="fp32", progress=False, deterministic=True),  # the same numbers on every CPU kind
    )


def test_schedule_table_matches_the_spec():
    plans = plan_epochs(ScheduleConfig(epochs_pretrain=10, epochs=60, freeze_epochs=10))
    assert len(plans) == 70
    pre = plans[:10]
    assert [p.align for p in pre] == pytest.approx([e / 10 for e in range(1, 11)])
    assert all(p.tanh == 5 and p.classification == 0 for p in pre)
    assert pre[0].trains == {"to_train", "to_freeze", "add_on"}
    cls = plans[10:]
    assert [p.name for p in cls[:3]] == ["classifier_only"] * 3
    assert cls[0].trains == {"classifier"} and cls[0].loss_weights == {"align": 0, "tanh": 0, "classification": 2}
    assert [p.name for p in cls[3:10]] == ["frozen_backbone"] * 7
    assert cls[3].trains == {"to_train", "to_freeze", "add_on", "classifier"}
    assert cls[3].loss_weights == {"align": 5, "tanh": 2, "classification": 2}
    assert all(p.name == "full" and "backbone" in p.trains for p in cls[10:])
    # What else each stage declares: its data, batch size, schedule length, sparsification, warm restarts, evaluation.
    assert {(p.data, p.batch_size, p.stage_epochs, p.sparsify, p.classifier_schedule, p.evaluate) for p in pre} == {
        ("pretrain", 128, 10, False, False, False)}
    assert {(p.data, p.batch_size, p.stage_epochs, p.sparsify, p.classifier_schedule, p.evaluate) for p in cls} == {
        ("train", 64, 60, True, True, True)}
    assert [p.saves_model_at_end for p in (pre[0], cls[0])] == [True, False]
    assert [p.trains_net for p in (pre[0], cls[0], cls[3])] == [True, False, True]
    # Without pretraining (and no loaded PIP-Net) there are no classifier-only epochs.
    assert plan_epochs(ScheduleConfig(epochs_pretrain=0, epochs=4))[0].name == "frozen_backbone"
    assert plan_epochs(ScheduleConfig(epochs_pretrain=0, epochs=4), pretrained_pipnet=True)[0].name == "classifier_only"


def test_soft_threshold_subtracts_from_every_weight():
    layer = NonNegativeLinear(3, 1, bias=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, 0.0005, -0.2]]))
        layer.bias.fill_(-1.0)
        layer.multiplier.fill_(0.5)
    soft_threshold_(layer)
    assert layer.weight.flatten().tolist() == pytest.approx([0.499, 0.0, 0.0])
    assert layer.bias.item() == 0.0 and layer.multiplier.item() == 1.0


def test_hard_threshold_only_zeroes_small_weights():
    layer = NonNegativeLinear(3, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, 0.0005, -0.2]]))
    hard_threshold_(layer)
    assert layer.weight.flatten().tolist() == pytest.approx([0.5, 0.0, 0.0])


def test_learning_rates_and_groups(tmp_path):
    cfg = tiny_config(tmp_path)
    from pipnet.model import create_model

    model = create_model("resnet50", 3, num_features=4)
    groups = parameter_groups(model)
    ids = {name: {id(p) for p in params} for name, params in groups.items()}
    assert {id(p) for p in model.backbone.layer4[2].parameters()} == ids["to_train"]
    assert {id(p) for p in model.backbone.layer1.parameters()} <= ids["never"]
    optim = make_stage_optim(model, plan_epochs(cfg.schedule)[-1], cfg, iters=10)
    lrs = {g["name"]: g["lr"] for g in optim.net.param_groups}
    assert lrs == {"to_train": 5e-4, "to_freeze": 5e-4, "backbone": 5e-4, "add_on": 5e-3}
    assert optim.classifier.param_groups[0]["lr"] == 0.05
    assert optim.classifier_schedule.T_0 == 5  # epochs <= 30
    assert optim.net_schedule.T_max == 5 * 10 and optim.net_schedule.eta_min == pytest.approx(5e-6)


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_short_run_trains_the_right_groups_per_phase(tmp_path):
    """Run epoch by epoch and assert which parameters changed in each (spec section 4)."""
    from pipnet.train import engine

    changed_per_epoch: list[set[str]] = []
    original = engine.run_epoch

    def spy(model, core, *args, **kwargs):
        before = _params(core)
        row = original(model, core, *args, **kwargs)
        after = _params(core)
        changed_per_epoch.append({k.split(".")[0] + ":" + (core.backbone.group_of(k[9:]) or "-") if k.startswith("backbone.") else k.split(".")[0]
                                  for k in before if not torch.equal(before[k], after[k])})
        return row

    engine.run_epoch = spy
    try:
        result = train(tiny_config(tmp_path / "run", epochs=5, freeze_epochs=4))
    finally:
        engine.run_epoch = original
    pre, cls_only, frozen, full = changed_per_epoch[0], changed_per_epoch[2], changed_per_epoch[5], changed_per_epoch[6]
    assert pre == {"backbone:to_train", "backbone:to_freeze", "add_on"}
    assert cls_only == {"classifier"}
    assert frozen == {"backbone:to_train", "backbone:to_freeze", "add_on", "classifier"}
    assert full == {"backbone:to_train", "backbone:to_freeze", "backbone:backbone", "add_on", "classifier"}
    # Classifier weights stay non-negative (the soft threshold clamps them at 0 every step).
    assert (result.model.classifier.weight >= 0).all()
    # The run folder has everything a user expects.
    run = tmp_path / "run"
    for name in ("config.yaml", "history.csv", "checkpoints/last.pt", "model.safetensors", "config.json", "metrics.json"):
        assert (run / name).is_file(), name
    # Training writes data only; the curve is drawn from history.csv by the command line and the report.
    assert not (run / "sparsity.png").exists()
    from pipnet.explanation.report import write_sparsity_plot

    assert PIPNet.from_pretrained(run).config.preset == "default"  # the input contract is recorded in config.json
    assert write_sparsity_plot(run) == run / "sparsity.png" and (run / "sparsity.png").read_bytes()[:4] == b"\x89PNG"
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    for column in ("loss", "align", "tanh", "classification", "train_accuracy", "test_accuracy", "sparsity_ratio", "seconds"):
        assert column in header
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 7
    reloaded = PIPNet.from_pretrained(run)
    assert torch.equal(reloaded.classifier.weight, result.model.classifier.weight)


def test_losses_decrease_and_weights_become_sparse(tmp_path):
    cfg = tiny_config(tmp_path / "run", epochs=8, freeze_epochs=3)
    cfg.optim = OptimConfig(sparsify_threshold=0.06)  # a coarse threshold so that a short run shows sparsity
    result = train(cfg)
    rows = result.history
    pre = [r for r in rows if r["stage"] == "pretrain"]
    joint = [r for r in rows if r["phase"] in ("frozen_backbone", "full")]
    assert pre[-1]["tanh"] < pre[0]["tanh"]
    assert pre[-1]["align"] < pre[0]["align"]
    assert joint[-1]["align"] < joint[0]["align"]
    # That classification learns is checked on learnable data by tests/test_demo.py (a random tiny
    # backbone at 32 px cannot tell the classes apart in a few epochs).
    assert rows[-1]["sparsity_ratio"] > 0.2
    assert (result.model.classifier.weight >= 0).all()


def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    """Kill a training process mid-run, resume it, and compare with an uninterrupted run."""
    cfg = tiny_config(tmp_path / "straight", epochs=4, freeze_epochs=3)
    train(cfg)
    killed = tiny_config(tmp_path / "killed", epochs=4, freeze_epochs=3)
    (tmp_path / "killed.yaml").write_text(dump_config(killed))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipnet", "train", "--config", str(tmp_path / "killed.yaml")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = tmp_path / "killed" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 1 + 3:  # 3 epochs done
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    # Result-neutral runtime options may change on resume (pipnet train --resume RUN --runtime.log_every 3).
    resumed = train(TrainConfig(resume=str(tmp_path / "killed")), resume_runtime={"log_every": 3, "progress": False})
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert len(resumed.history) == 2 + 4


def test_resume_errors(tmp_path):
    from pipnet.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="not a run folder"):
        train(TrainConfig(resume=str(tmp_path)))
    train(tiny_config(tmp_path / "done", epochs_pretrain=1, epochs=1))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path / "done", epochs_pretrain=1, epochs=1))
    with pytest.raises(ValueError, match="runtime.seed cannot change on resume"):
        train(TrainConfig(resume=str(tmp_path / "done")), resume_runtime={"seed": 1})
    (tmp_path / "done" / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(TrainConfig(resume=str(tmp_path / "done")))


def test_tensorboard_logs(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path / "run", epochs_pretrain=1, epochs=1)
    cfg.runtime.tensorboard = True
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "pretrain/align" in tags and "classify/classification" in tags
    assert [e.step for e in events.Scalars("pretrain/tanh")] == [1]


def test_bf16_training_follows_the_fp32_loss_curve():
    """The first classification steps (every group trained) from the same weights and batches: bf16
    autocast losses within 2% of fp32's (resnet18, 64 px, batch 8). Measured here over 4 data seeds: at
    most 0.24% (benchmarks/README.md: up to 5.5e-3 for resnet50 at 112 px)."""
    from torch.utils.data import DataLoader, TensorDataset

    from pipnet.model import create_model
    from pipnet.train.distributed import DistInfo
    from pipnet.train.engine import run_epoch
    from pipnet.train.optim import set_trainable

    g = torch.Generator().manual_seed(0)
    steps = [(torch.randn(8, 3, 64, 64, generator=g), torch.randn(8, 3, 64, 64, generator=g),
              torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model("resnet18", 10)
        config = TrainConfig(schedule=ScheduleConfig(epochs_pretrain=1, epochs=4, freeze_epochs=1),
                             runtime=RuntimeConfig(precision=precision, progress=False, channels_last=False))
        plan = plan_epochs(config.schedule)[-1]
        optim = make_stage_optim(model, plan, config, len(steps))
        set_trainable(model, plan)
        curves[precision] = [
            run_epoch(model, model, DataLoader(TensorDataset(*batch), batch_size=8), plan, optim, config,
                      torch.device("cpu"), DistInfo(), None)["loss"]
            for batch in steps
        ]
    relative = [abs(a - b) / abs(b) for a, b in zip(curves["bf16"], curves["fp32"])]
    assert max(relative) <= 0.02, curves


def test_channels_last_auto_is_on_for_resnets_only():
    from pipnet.core.train_config import config_from_namespace, config_parser
    from pipnet.train.engine import uses_channels_last

    parser = config_parser()

    def resolved(*args: str) -> bool:
        return uses_channels_last(config_from_namespace(parser, parser.parse_args(list(args))))

    assert resolved("--model.backbone", "resnet50") and resolved("--model.backbone", "timm/resnet18")
    assert not resolved("--model.backbone", "convnext_tiny_26") and not resolved("--model.backbone", "efficientnet_lite0")
    assert not resolved("--model.backbone", "resnet50", "--runtime.channels_last", "false")
    assert resolved("--model.backbone", "convnext_tiny_26", "--runtime.channels_last", "true")


def test_thread_prefetch_gives_the_same_weights(tmp_path):
    weights = {}
    for depth in (0, 2):
        config = tiny_config(tmp_path / f"prefetch{depth}", epochs_pretrain=1, epochs=2)
        config.runtime.prefetch = depth
        train(config)
        weights[depth] = load_file(str(tmp_path / f"prefetch{depth}" / "model.safetensors"))
    assert weights[0].keys() == weights[2].keys()
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_soft_threshold_total_spreads_over_the_classification_steps():
    cfg = tiny_config(Path("unused"), epochs=5)
    from pipnet.train.optim import sparsify_amount

    assert sparsify_amount(cfg, iters=3) == 1e-3  # the paper's: 1e-3 per step whatever the data size
    cfg.optim = OptimConfig(soft_threshold_total=0.6)
    assert sparsify_amount(cfg, iters=3) == pytest.approx(0.6 / 15)  # 5 epochs x 3 steps
    cfg.optim = OptimConfig(soft_threshold_total=0.6, sparsify="hard_threshold")
    assert sparsify_amount(cfg, iters=3) == 1e-3  # the hard threshold keeps its own threshold


def test_soft_threshold_total_is_what_a_run_subtracts(tmp_path):
    # 5 classification epochs x 3 steps (24 images, batch 8). The classifier's lr is 0, but its warm-restart
    # schedule has a floor of 0.001, so AdamW moves each weight by at most ~0.001 per step (0.015 in all);
    # the soft threshold takes 0.3 from every weight (from N(1, 0.1), none reaches 0). Without the option
    # the run would subtract 15 x 1e-3 = 0.015.
    cfg = tiny_config(tmp_path / "run", epochs_pretrain=0, epochs=5)
    cfg.optim = OptimConfig(lr=0.0, soft_threshold_total=0.3, prune_threshold=0.0)
    torch.manual_seed(0)
    before = None

    from pipnet.train import engine

    original = engine._build_model

    def remember(*args, **kwargs):
        nonlocal before
        model = original(*args, **kwargs)
        before = model.classifier.weight.detach().clone()
        return model

    engine._build_model = remember
    try:
        result = train(cfg)
    finally:
        engine._build_model = original
    after = result.model.classifier.weight.detach()
    assert torch.allclose(before - after, torch.full_like(after, 0.3), atol=0.016)
