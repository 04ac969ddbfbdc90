"""Optimisers, parameter groups and the classifier's sparsification (paper supplementary Sec. 1.1).

AdamW per stage with the paper's groups and learning rates, the cosine schedules, and the soft threshold
applied after every classification step (with the hard threshold as a named option).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipnet.model import PIPNet
from pipnet.core.train_config import TrainConfig
from pipnet.train.phases import GROUPS, EpochPlan

__all__ = ["SPARSIFIERS", "StageOptim", "hard_threshold_", "make_stage_optim", "parameter_groups", "sparsify_amount", "set_trainable", "soft_threshold_"]


# ---- the classifier's sparsification (after every classification step) ---------------------------


@torch.no_grad()
def soft_threshold_(classifier: nn.Module, threshold: float = 1e-3) -> None:
    """Faithful: W <- max(W - 1e-3, 0) for every weight, every step; m <- max(m, 1); b <- max(b, 0).

    Subtracting the threshold from *every* weight is a soft threshold: weights that the classification
    loss does not keep pushing up drift to exactly 0.
    """
    classifier.weight.sub_(threshold).clamp_(min=0.0)
    classifier.multiplier.clamp_(min=1.0)
    if classifier.bias is not None:
        classifier.bias.clamp_(min=0.0)


@torch.no_grad()
def hard_threshold_(classifier: nn.Module, threshold: float = 1e-3) -> None:
    """Option: only weights below the threshold become 0; the others are left as they are."""
    classifier.weight.masked_fill_(classifier.weight < threshold, 0.0)
    classifier.multiplier.clamp_(min=1.0)
    if classifier.bias is not None:
        classifier.bias.clamp_(min=0.0)


SPARSIFIERS = {"soft_threshold": soft_threshold_, "hard_threshold": hard_threshold_}


# ---- optimisers and schedules per stage -----------------------------------------------------------


@dataclass
class StageOptim:
    net: torch.optim.Optimizer | None
    classifier: torch.optim.Optimizer
    net_schedule: torch.optim.lr_scheduler.LRScheduler | None
    classifier_schedule: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts | None
    decrement: float = 1e-3  # the sparsifier's threshold after every classification step

    def state_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k).state_dict() if getattr(self, k) is not None else None
            for k in ("net", "classifier", "net_schedule", "classifier_schedule")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            if v is not None and getattr(self, k) is not None:
                getattr(self, k).load_state_dict(v)


def parameter_groups(model: PIPNet) -> dict[str, list[nn.Parameter]]:
    """The model's parameters by group: to_train, to_freeze, backbone, add_on, classifier, never."""
    groups: dict[str, list[nn.Parameter]] = {g: [] for g in (*GROUPS, "never")}
    for name, p in model.backbone.named_parameters():
        groups[model.backbone.group_of(name) or "never"].append(p)
    groups["add_on"] = list(model.add_on.parameters())
    groups["classifier"] = [model.classifier.weight] + ([model.classifier.bias] if model.classifier.bias is not None else [])
    return groups


def sparsify_amount(config: TrainConfig, iters: int) -> float:
    """The sparsifier's per-step threshold: `sparsify_threshold`, or for the soft threshold with
    `soft_threshold_total` set, that total spread over the classification phase's `epochs x iters` steps."""
    o, s = config.optim, config.schedule
    if o.soft_threshold_total is None or o.sparsify != "soft_threshold":
        return o.sparsify_threshold
    return o.soft_threshold_total / max(1, s.epochs * iters)


def make_stage_optim(model: PIPNet, plan: EpochPlan, config: TrainConfig, iters: int) -> StageOptim:
    """Fresh AdamW optimisers and cosine schedules for the stage that `plan` starts (paper supplementary Sec. 1.1).

    The net's cosine schedule spans the stage's `plan.stage_epochs x iters` steps and ends at 1/100 of
    `plan.net_lr_floor`; the classifier gets warm restarts (period 5, or 10 beyond 30 epochs) when
    `plan.classifier_schedule`.
    """
    o = config.optim
    g = parameter_groups(model)
    net_groups = [
        {"params": g["to_train"], "lr": o.lr_block, "name": "to_train"},
        {"params": g["to_freeze"], "lr": o.lr_block, "name": "to_freeze"},
        {"params": g["backbone"], "lr": o.lr_net, "name": "backbone"},
        {"params": g["add_on"], "lr": o.lr_block * 10, "name": "add_on"},
    ]
    net_groups = [grp for grp in net_groups if grp["params"]]
    # fused=True: one kernel for all parameters (CPU and CUDA); several times faster than the per-tensor loop.
    net = torch.optim.AdamW(net_groups, weight_decay=o.weight_decay, fused=True) if net_groups else None
    classifier = torch.optim.AdamW(
        [{"params": g["classifier"], "lr": o.lr, "name": "classifier"}], weight_decay=o.weight_decay, fused=True
    )
    floor = getattr(o, plan.net_lr_floor) / 100
    net_schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(net, T_max=max(1, plan.stage_epochs * iters), eta_min=floor) if net else None
    )
    if not plan.classifier_schedule:
        return StageOptim(net, classifier, net_schedule, None)
    period = 5 if plan.stage_epochs <= 30 else 10
    classifier_schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(classifier, T_0=period, eta_min=0.001)
    return StageOptim(net, classifier, net_schedule, classifier_schedule, sparsify_amount(config, iters))


def set_trainable(model: PIPNet, plan: EpochPlan) -> None:
    """requires_grad per group, as the epoch's plan says; stem groups never train."""
    for group, params in parameter_groups(model).items():
        for p in params:
            p.requires_grad_(group in plan.trains)
