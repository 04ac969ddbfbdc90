"""The feature bank: stored outputs of the frozen backbone prefix, training over them, and its refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pipnet.core.data_config import DataConfig, PlantedConfig
from pipnet.core.train_config import ScheduleConfig
from pipnet.data import build_data
from pipnet.model import create_model
from pipnet.train import train
from pipnet.train.batches import epoch_seed
from pipnet.train.feature_bank import FeatureBank, FeatureBankError, check_schedule, split_frozen
from pipnet.train.phases import plan_epochs

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import run_cli  # noqa: E402
from test_train import tiny_config  # noqa: E402

PLANTED = PlantedConfig(num_classes=3, train_per_class=4, test_per_class=2, ood_images=0, multi_images=0, size=48)
FROZEN = ScheduleConfig(epochs_pretrain=2, epochs=4, freeze_epochs=4, batch_size_pretrain=4, batch_size=4)


def _lite0(image_size: int):
    return create_model("efficientnet_lite0", 3, pretrained=False, image_size=image_size, grid="dilate", stages=6,
                        output_stride=16)


def _resnet18(image_size: int):
    return create_model("resnet18", 3, pretrained=False, image_size=image_size, num_features=8)


@pytest.mark.parametrize("build, frozen_names", [(_lite0, ["conv_stem", "bn1", "blocks.0", "blocks.3"]),
                                                 (_resnet18, ["conv1", "bn1", "layer1", "layer2"])])
def test_bank_holds_the_frozen_prefix_output_of_each_seeded_view(build, frozen_names):
    data = build_data(DataConfig(image_size=64, planted=PLANTED))
    model = build(64)
    model.train()
    prefix, rest = split_frozen(model, plan_epochs(FROZEN))
    names = {id(m): n for n, m in model.backbone.named_modules()}
    cut = [names[id(m)].removeprefix("net.") for m in prefix]
    assert all(n in cut for n in frozen_names) and cut[-1] == frozen_names[-1]  # every module up to the last frozen one
    assert all(model.backbone.group_of(f"{names[id(m)]}.{p}") in (None, "backbone") for m in prefix for p, _ in m.named_parameters())
    bank = FeatureBank.build(prefix, data.train, views=2, seed=5, batch_size=5, device=torch.device("cpu"))
    assert bank.features.shape[:3] == (2, len(data.train), 2)
    assert all(m.training for m in model.modules())  # the build put the prefix in eval mode and back
    model.eval()
    checked = 0
    for v in range(2):
        data.train.set_seed(epoch_seed(5, v + 1))  # the view epoch v + 1 would draw without the bank
        for i in (0, 6, len(data.train) - 1):
            x1, x2, y = data.train[i]
            with torch.no_grad():
                z = prefix(torch.stack([x1, x2]))
                torch.testing.assert_close(bank.features[v, i], z, rtol=1e-4, atol=1e-5)
                # prefix then rest is the whole backbone
                torch.testing.assert_close(rest(z), model.forward_features(torch.stack([x1, x2])), rtol=1e-4, atol=1e-5)
            item = bank.epoch(0)[i]
            assert item[2] == y == data.train.targets[i]
            checked += 1
    assert checked == 6
    assert not torch.equal(bank.features[0], bank.features[1])  # two views differ


def test_each_stored_view_is_read_once_per_cycle_of_epochs():
    bank = FeatureBank(torch.zeros(4, 10, 2, 1, 1, 1), targets=list(range(10)), seed=3)
    choices = torch.stack([bank.choice(e) for e in range(8)])  # (epochs, images)
    for cycle in (choices[:4], choices[4:]):
        assert (cycle.sort(dim=0).values == torch.arange(4)[:, None]).all()  # every view once per image
    assert not torch.equal(choices[:4], choices[4:])  # a new order in the next cycle
    assert len({tuple(choices[:, i].tolist()) for i in range(10)}) > 1  # and its own order per image
    assert torch.equal(FeatureBank(bank.features, bank.targets, seed=3).choice(5), choices[5])  # deterministic (resume)


def test_training_over_the_bank_learns_and_leaves_the_prefix_untouched(tmp_path):
    cfg = tiny_config(tmp_path / "run", epochs=6, freeze_epochs=6, feature_bank_views=3)
    cfg.optim.sparsify_threshold = 0.06  # a coarse threshold so that a short run shows sparsity
    plans = plan_epochs(cfg.schedule)
    initial = _prefix_state(tmp_path, cfg, plans)
    result = train(cfg)
    rows = result.history
    assert len(rows) == len(plans) and all("bank_seconds" in r for r in rows)
    pre = [r for r in rows if r["stage"] == "pretrain"]
    joint = [r for r in rows if r["phase"] == "frozen_backbone"]
    assert pre[-1]["tanh"] < pre[0]["tanh"] and pre[-1]["align"] < pre[0]["align"]
    assert joint[-1]["align"] < joint[0]["align"]
    assert joint[-1]["classification"] < joint[0]["classification"]
    assert rows[-1]["sparsity_ratio"] > 0.1, rows[-1]["sparsity_ratio"]  # weights pruned
    # The prefix's weights and BatchNorm statistics are those it started with; the rest trained.
    prefix, _ = split_frozen(result.model, plans)
    after = {k: v for k, v in prefix.state_dict().items()}
    assert after.keys() == initial.keys() and all(torch.equal(after[k], initial[k]) for k in after)
    assert (tmp_path / "run" / "model.safetensors").is_file() and result.metrics is not None


def _prefix_state(tmp_path, cfg, plans):
    """The prefix's state at the start of a run of ``cfg``: the same seeded initialisation as ``train``."""
    from pipnet.train.batches import seed_epoch
    from pipnet.train.engine import _build_model

    seed_epoch(cfg.runtime.seed, 0)
    data = build_data(cfg.data)
    model = _build_model(cfg, len(data.classes), data.classes, cfg.model.pretrained)
    prefix, _ = split_frozen(model, plans)
    return {k: v.clone() for k, v in prefix.state_dict().items()}


def test_the_bank_refuses_a_schedule_that_trains_the_early_backbone(tmp_path, capsys):
    with pytest.raises(FeatureBankError, match="freeze_epochs"):
        check_schedule(4, plan_epochs(ScheduleConfig(epochs=5, freeze_epochs=3)))
    check_schedule(0, plan_epochs(ScheduleConfig(epochs=5, freeze_epochs=3)))  # no bank, no refusal
    with pytest.raises(FeatureBankError, match=">= 0|or more"):
        check_schedule(-1, plan_epochs(FROZEN))
    rc, err = run_cli(capsys, "train", "--model.backbone", "resnet18", "--model.pretrained", "false",
                      "--data.image_size", "32", "--data.planted.train_per_class", "2", "--schedule.epochs_pretrain", "1",
                      "--schedule.epochs", "5", "--schedule.freeze_epochs", "4",
                      "--schedule.feature_bank_views", "4", "--runtime.progress", "false", "--out", str(tmp_path / "run"))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipnet train: error: schedule.feature_bank_views needs"), err
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


@pytest.mark.parametrize("name, kwargs", [("efficientnet_lite0", {}), ("resnet18", {}), ("convnext_tiny_13", {})])
def test_each_chain_backbone_is_its_sequence(name, kwargs):
    model = create_model(name, 2, pretrained=False, image_size=64, **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    z = x
    with torch.no_grad():
        for _, module in model.backbone.sequence():
            z = module(z)
        torch.testing.assert_close(z, model.forward_features(x))


def test_a_backbone_that_is_not_a_chain_is_refused():
    model = create_model("timm/test_convnext", 2, pretrained=False, image_size=32)
    with pytest.raises(FeatureBankError, match="not a chain"):
        split_frozen(model, plan_epochs(FROZEN))
