"""One training step (pipnet.train.step): the loss parts' weights by hand, and the per-step learning rates."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pipnet.model import create_model
from pipnet.core.train_config import ScheduleConfig, TrainConfig
from pipnet.train.optim import make_stage_optim, set_trainable
from pipnet.train.phases import plan_epochs
from pipnet.train.protocol import classifier_schedule_epoch
from pipnet.train.step import train_step, training_step_losses


def _tiny_out() -> SimpleNamespace:
    """Two views of one image (rows 0 and 1), P = 2 prototypes on a 1 x 1 grid, C = 2 classes."""
    maps = torch.tensor([[0.5, 0.5], [0.8, 0.2]]).view(2, 2, 1, 1)  # (2B, P, h, w)
    presence = torch.tensor([[0.5, 0.25], [1.0, 0.5]])  # (2B, P)
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (2B, C)
    return SimpleNamespace(maps=maps, presence=presence, scores=scores)


# By hand: L_A = -log(0.5 * 0.8 + 0.5 * 0.2) in both halves; L_T = mean over views of -mean_k log tanh(p_k) (one
# image, so the batch sum is p itself); L_C with m = 2: scores -> log(1 + s^2), log-softmax, NLL for label 0.
ALIGN = -math.log(0.5)
TANH = (-(math.log(math.tanh(0.5)) + math.log(math.tanh(0.25))) / 2 - (math.log(math.tanh(1.0)) + math.log(math.tanh(0.5))) / 2) / 2
CLASSIFICATION = (-(math.log(2) - math.log(2 + 1)) - (0 - math.log(1 + 2))) / 2


def test_the_loss_parts_are_weighted_as_the_plan_says():
    plans = plan_epochs(ScheduleConfig(epochs_pretrain=2, epochs=5, classifier_only_epochs=1, freeze_epochs=2))
    labels, multiplier = torch.tensor([0]), torch.tensor(2.0)
    expected = {
        ("pretrain", 1): {"align": ALIGN, "tanh": TANH, "loss": 0.5 * ALIGN + 5 * TANH},  # lambda_A = e / n
        ("pretrain", 2): {"align": ALIGN, "tanh": TANH, "loss": 1.0 * ALIGN + 5 * TANH},
        ("classifier_only", 1): {"classification": CLASSIFICATION, "loss": 2 * CLASSIFICATION},
        ("frozen_backbone", 2): {"align": ALIGN, "tanh": TANH, "classification": CLASSIFICATION,
                                 "loss": 5 * ALIGN + 2 * TANH + 2 * CLASSIFICATION},
        ("full", 3): {"align": ALIGN, "tanh": TANH, "classification": CLASSIFICATION,
                      "loss": 5 * ALIGN + 2 * TANH + 2 * CLASSIFICATION},
    }
    seen = set()
    for plan in plans:
        key = (plan.name, plan.epoch)
        if key not in expected:
            continue
        parts = training_step_losses(_tiny_out(), labels, plan, multiplier)
        assert {k: float(v) for k, v in parts.items()} == pytest.approx(expected[key], rel=1e-6), key
        seen.add(key)
    assert seen == set(expected)  # every row of the table was checked


def _lr_after_steps(protocol: str, epochs: int, iters: int) -> tuple[list[float], list[float]]:
    """Learning rates of the classifier and of the add-on after every step of the classification stage,
    stepping with the training loop's own step."""
    torch.manual_seed(0)
    model = create_model("resnet18", 2, num_features=4, image_size=32)
    config = TrainConfig(protocol=protocol, schedule=ScheduleConfig(epochs_pretrain=0, epochs=epochs, freeze_epochs=epochs))
    plan = plan_epochs(config.schedule)[0]
    optim = make_stage_optim(model, plan, config, iters)
    set_trainable(model, plan)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1])
    classifier, add_on = [], []
    for epoch in range(1, epochs + 1):
        for step in range(iters):
            train_step(model, model, x, y, plan, optim,
                       classifier_epoch=classifier_schedule_epoch(epoch, step, iters, protocol))
            classifier.append(optim.classifier.param_groups[0]["lr"])
            add_on.append(next(g["lr"] for g in optim.net.param_groups if g["name"] == "add_on"))
    return classifier, add_on


def _warm_restart(t: float, base: float = 0.05, floor: float = 0.001, period: int = 5) -> float:
    return floor + (base - floor) * (1 + math.cos(math.pi * (t % period) / period)) / 2


def test_per_step_learning_rates_with_warm_restarts_and_the_papers_one_step_offset():
    """The classifier's warm restarts (period 5, 0.05 -> 0.001) are set, after each step, to the fractional epoch
    reached (default) or to the one before it (``paper``: the published code stepped its schedule before the
    step, so its first two steps share the initial rate); the net's cosine decays over epochs x iters steps."""
    epochs, iters = 6, 2
    classifier, add_on = _lr_after_steps("default", epochs, iters)
    after = [e - 1 + (s + 1) / iters for e in range(1, epochs + 1) for s in range(iters)]  # 0.5, 1.0, ..., 6.0
    assert classifier == pytest.approx([_warm_restart(t) for t in after], rel=1e-9)
    assert classifier[9] == pytest.approx(0.05)  # epoch 5 done: t = 5, the restart
    total = epochs * iters
    assert add_on == pytest.approx([5e-6 + (5e-3 - 5e-6) * (1 + math.cos(math.pi * k / total)) / 2 for k in range(1, total + 1)])
    paper, _ = _lr_after_steps("paper", epochs, iters)
    before = [e - 1 + s / iters for e in range(1, epochs + 1) for s in range(iters)]  # 0.0, 0.5, ..., 5.5
    assert paper == pytest.approx([_warm_restart(t) for t in before], rel=1e-9)
    assert paper[0] == pytest.approx(0.05) and paper[1:] == pytest.approx(classifier[:-1])  # one step later
