"""One training step of PIP-Net (paper supplementary Algorithm 1): forward both views, the weighted losses, the update.

`train_step` is the step the training loop, the benchmarks and `benchmarks/gpu_check.py` run:
forward under the run's precision, `training_step_losses` (a dict with `loss` and its parts, as
the epoch's plan weighs them), backward, the optimisers of the groups that train, the net's cosine
schedule, and in the classification stage the classifier's warm restarts and sparsification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipnet.model import losses
from pipnet.model import PIPNet
from pipnet.core.precision import autocast
from pipnet.train.distributed import DistInfo, gather_presence
from pipnet.train.optim import StageOptim, soft_threshold_
from pipnet.train.phases import EpochPlan

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "StepResult", "train_step", "training_step_losses"]

STOPPED = "training stopped; the checkpoint of the last completed epoch, if any, is kept"


class NonFiniteLossError(RuntimeError):
    """A loss part became NaN or Inf."""


def training_step_losses(
    out: Any, labels: torch.Tensor, plan: EpochPlan, multiplier: torch.Tensor, info: DistInfo = DistInfo()
) -> dict[str, torch.Tensor]:
    """The loss and its parts for one batch of two views stacked as (2B, ...).

    Returns a dict with `loss` (the weighted sum) and the parts that have a non-zero weight.
    """
    maps1, maps2 = out.maps.float().chunk(2)  # (B, P, h, w) each
    p1, p2 = out.presence.float().chunk(2)  # (B, P) each
    parts: dict[str, torch.Tensor] = {}
    if plan.align:
        parts["align"] = losses.alignment_loss(maps1, maps2)
    if plan.tanh:
        parts["tanh"] = (losses.tanh_loss(gather_presence(p1, info)) + losses.tanh_loss(gather_presence(p2, info))) / 2
    if plan.classification:
        parts["classification"] = losses.classification_loss(out.scores.float(), labels.repeat(2), multiplier)
    weights = plan.loss_weights
    loss = sum(weights[k] * v for k, v in parts.items())
    return {"loss": loss, **parts}


@dataclass(frozen=True)
class StepResult:
    """What one step returns: the loss parts (`loss` first), the correct predictions over both views
    (a device tensor, no sync), and whether the step was skipped for a non-finite loss."""

    parts: dict[str, torch.Tensor]
    correct: torch.Tensor
    skipped: bool = False


def train_step(
    model: nn.Module,
    core: PIPNet,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: EpochPlan,
    optim: StageOptim,
    *,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    info: DistInfo = DistInfo(),
    classifier_epoch: float | None = None,
    sparsify: Callable[[nn.Module, float], None] = soft_threshold_,
    skip_nonfinite: bool = False,
) -> StepResult:
    """One optimisation step on two views of a batch.

    Args:
        model: what to call (`core`, or `core` wrapped in DDP / `torch.compile`).
        core: the PIP-Net itself (its classifier is sparsified, its buffers restored on a skip).
        x: both views stacked, (2B, 3, S, S), on the model's device.
        y: labels, (B,).
        plan: the epoch's plan (loss weights, what trains, whether to sparsify and step warm restarts).
        optim: the stage's optimisers and schedules.
        precision: `fp32`, `bf16` or `fp16` (with `scaler`).
        scaler: the fp16 gradient scaler, else None.
        info: the process group (the tanh loss gathers presence over processes).
        classifier_epoch: the fractional epoch the classifier's warm-restart schedule is set to after the
            step (see `pipnet.train.protocol.classifier_schedule_epoch`); used when the plan steps it.
        sparsify: the classifier's sparsifier (soft or hard threshold), applied when the plan sparsifies.
        skip_nonfinite: a non-finite loss skips the update (one host sync) and restores BatchNorm's
            running statistics; otherwise the caller watches the returned parts.
    """
    # A skipped batch must not leave its NaNs in BatchNorm's running statistics.
    buffers = [b.detach().clone() for b in core.buffers()] if skip_nonfinite else []
    with autocast(x.device, precision):
        out = model(x)
    parts = training_step_losses(out, y, plan, core.classifier.multiplier, info)
    correct = (out.scores.detach().argmax(dim=1) == y.repeat(2)).sum()
    if skip_nonfinite and not torch.isfinite(parts["loss"]):
        with torch.no_grad():
            for b, saved in zip(core.buffers(), buffers, strict=True):
                b.copy_(saved)
        return StepResult(parts, correct, skipped=True)
    net_trains = plan.trains_net and optim.net is not None
    classifier_trains = "classifier" in plan.trains
    for opt in (optim.net, optim.classifier):
        if opt is not None:
            opt.zero_grad(set_to_none=True)
    (scaler.scale(parts["loss"]) if scaler else parts["loss"]).backward()
    for opt, trains in ((optim.net, net_trains), (optim.classifier, classifier_trains)):
        if trains:
            if scaler:
                scaler.step(opt)
            else:
                opt.step()
    if scaler:
        scaler.update()
    if net_trains and optim.net_schedule is not None:
        optim.net_schedule.step()
    if plan.classifier_schedule and optim.classifier_schedule is not None and classifier_epoch is not None:
        optim.classifier_schedule.step(classifier_epoch)
    if plan.sparsify:
        sparsify(core.classifier, optim.decrement)
    return StepResult(parts, correct)


class NonFiniteGuard:
    """Finds the first step whose loss is NaN or Inf without a host sync per step.

    `record` keeps, on the device, the first bad step and which loss parts were bad there;
    `raise_if_bad` (one sync) stops training with a message naming them. Steps after the bad one may
    already have run when it is seen; they are thrown away with the run, whose last checkpoint stays.
    """

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_parts: torch.Tensor | None = None
        self.names: list[str] = []

    def record(self, step: int, parts: dict[str, torch.Tensor]) -> None:
        if self.bad_parts is None:
            self.names = list(parts)
            self.bad_parts = torch.zeros(len(parts), dtype=torch.bool, device=self.first.device)
        bad = ~torch.isfinite(torch.stack([v.detach().float() for v in parts.values()]))
        new = (self.first < 0) & bad.any()
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)
        self.bad_parts = torch.where(new, bad, self.bad_parts)

    def raise_if_bad(self, plan: EpochPlan) -> None:
        step = int(self.first)
        if step < 0:
            return
        flags = self.bad_parts.tolist() if self.bad_parts is not None else []
        bad = [k for k, f in zip(self.names, flags) if f and k != "loss"] or ["loss"]
        message = f"non-finite loss at {plan.stage} epoch {plan.epoch} step {step + 1}: part(s) {bad}"
        raise NonFiniteLossError(f"{message}; {STOPPED} (runtime.on_nonfinite: skip would skip such batches)")
