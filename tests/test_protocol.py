"""The ``paper`` protocol's training trajectory (spec section 10.1): extra soft-threshold steps, counted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train import tiny_config  # noqa: E402

from pipnet.model import NonNegativeLinear  # noqa: E402
from pipnet.train import train  # noqa: E402
from pipnet.core.train_config import ScheduleConfig  # noqa: E402
from pipnet.train.phases import plan_epochs  # noqa: E402
from pipnet.train.protocol import (  # noqa: E402
    apply_soft_threshold_steps,
    count_test_batches,
    steps_after_epoch,
    steps_before_epoch,
)


def test_extra_steps_per_epoch_by_hand():
    plans = plan_epochs(ScheduleConfig(epochs_pretrain=10, epochs=60))
    before = [steps_before_epoch(p, 60) for p in plans]
    assert sum(before) == 2 and before[10 + 29] == 1 and before[10 + 59] == 1  # epochs 30 and 60 (= last): once
    plans = plan_epochs(ScheduleConfig(epochs_pretrain=10, epochs=65))
    assert [p.epoch for p in plans if steps_before_epoch(p, 65)] == [30, 60, 65]
    assert all(steps_before_epoch(p, 65) == 0 for p in plans if p.stage == "pretrain")
    # One step per test batch: CUB's 5794 test images in batches of 64 -> 91 (90 full + one of 34).
    assert count_test_batches(5794, 64) == 91 and count_test_batches(64, 64) == 1 and count_test_batches(65, 64) == 2
    assert count_test_batches(0, 64) == 0
    assert steps_after_epoch(plans[10], 5794, 64) == 91 and steps_after_epoch(plans[0], 5794, 64) == 0


def test_apply_soft_threshold_steps_by_hand():
    layer = NonNegativeLinear(3, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0105, 0.0025, -0.5]]))
    apply_soft_threshold_steps(layer, 3, 1e-3)
    assert layer.weight.tolist()[0] == pytest.approx([0.0075, 0.0, 0.0])


def test_paper_protocol_adds_the_evaluation_steps_to_the_trajectory(tmp_path):
    # 3 classes x 8 training images in batches of 8: 3 steps per classification epoch; 12 test images in
    # batches of 8: 2 extra steps after each of the 5 classification epochs, and 1 before the last one.
    # A decrement of 0.05 per step (instead of 1e-3) makes the difference visible in 5 short epochs.
    runs = {}
    for protocol in ("default", "paper"):
        config = tiny_config(tmp_path / protocol)
        config.protocol, config.optim.sparsify_threshold = protocol, 0.05
        runs[protocol] = train(config)
    default, paper = runs["default"], runs["paper"]
    d, p = default.history, paper.history
    assert [r["sparsify_steps"] for r in d] == [0, 0, 3, 6, 9, 12, 15]
    assert [r["sparsify_steps"] for r in p] == [0, 0, 5, 10, 15, 20, 26]
    assert p[-1]["decrement_total"] == pytest.approx(26 * 0.05) and d[-1]["decrement_total"] == pytest.approx(15 * 0.05)
    assert p[-1]["sparsity_ratio"] > d[-1]["sparsity_ratio"]
    assert paper.metrics.protocol == "paper" and default.metrics.protocol == "default"
    header = (tmp_path / "paper" / "history.csv").read_text().splitlines()[0].split(",")
    assert "sparsify_steps" in header and "decrement_total" in header


def test_class_balanced_weights_and_sampler_by_hand():
    from pipnet.train.distributed import GlobalBatchSampler, class_balanced_weights

    targets = [0, 0, 0, 1]  # class 0 has 3 images, class 1 one
    assert class_balanced_weights(targets).tolist() == [1 / 3, 1 / 3, 1 / 3, 1.0]
    # Over many draws each class is drawn about half the time (unweighted: a quarter for class 1).
    big = [0] * 90 + [1] * 10
    sampler = GlobalBatchSampler(100, 10, torch.Generator().manual_seed(0), weights=class_balanced_weights(big))
    drawn = torch.tensor([i for _ in range(50) for batch in sampler for i in batch])
    assert len(drawn) == 5000 and abs((drawn >= 90).double().mean().item() - 0.5) < 0.03
    # The same seed gives the same batches (resume), and 2 processes' slices make the 1-process batches.
    weights = class_balanced_weights(big)
    one = list(GlobalBatchSampler(100, 10, torch.Generator().manual_seed(7), weights=weights))
    assert one == list(GlobalBatchSampler(100, 10, torch.Generator().manual_seed(7), weights=weights))
    ranks = [list(GlobalBatchSampler(100, 10, torch.Generator().manual_seed(7), r, 2, weights)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == one
    assert len({i for batch in one for i in batch}) < 100  # with replacement: some images twice, some never


def test_balanced_training_runs_and_draws_other_batches(tmp_path):
    config = tiny_config(tmp_path / "balanced", epochs_pretrain=1, epochs=1)
    config.data.balanced = True
    balanced = train(config)
    plain = train(tiny_config(tmp_path / "plain", epochs_pretrain=1, epochs=1))
    assert balanced.history[0]["loss"] != plain.history[0]["loss"]  # other images were drawn
    assert "balanced: true" in (tmp_path / "balanced" / "config.yaml").read_text()


def test_paper_augmentation_nearest_location_ops_and_pets_sizes():
    from torchvision.transforms import v2

    from pipnet.data import build_data
    from pipnet.core.data_config import DataConfig, PlantedConfig

    small = PlantedConfig(num_classes=2, train_per_class=2, test_per_class=1, ood_images=0, multi_images=0, size=40)
    default = build_data(DataConfig(image_size=32, planted=small)).train.transform
    paper = build_data(DataConfig(image_size=32, planted=small), protocol="paper").train.transform
    pets = build_data(DataConfig(image_size=32, preset="pets", planted=small), protocol="paper").train.transform
    location = [t for t in paper.t1.transforms if isinstance(t, v2.TrivialAugmentWide)][0]
    assert location.interpolation == v2.InterpolationMode.NEAREST
    assert (default.delta, default.crop_margin, default.location_interpolation) == (32, 4, "bilinear")
    assert (paper.delta, paper.crop_margin) == (32, 4)
    assert (pets.delta, pets.crop_margin) == (48, 8)  # resize to S + 48, random resized crop to S + 8
    crop = [t for t in pets.t1.transforms if isinstance(t, v2.RandomResizedCrop)][0]
    assert tuple(crop.size) == (40, 40)
    from PIL import Image

    v1, v2_ = pets(Image.new("RGB", (50, 60)))
    assert v1.shape == v2_.shape == (3, 32, 32)


def test_classifier_schedule_epoch_by_hand():
    from pipnet.train.protocol import classifier_schedule_epoch

    assert classifier_schedule_epoch(1, 0, 10) == pytest.approx(0.1)
    assert classifier_schedule_epoch(1, 0, 10, "paper") == 0.0  # the second step keeps the initial rate
    assert classifier_schedule_epoch(3, 9, 10) == pytest.approx(3.0)
    assert classifier_schedule_epoch(3, 9, 10, "paper") == pytest.approx(2.9)
