"""The published training trajectory's extra soft-threshold steps, as explicit steps.

(Item 1 of 'The published code' on the Faithfulness page.) The published code evaluated the model on the
test set after every classification epoch, and that evaluation subtracted 1e-3 (clamped at 0) from every
classifier weight once per test batch; it did so again in the evaluation after the final pruning, and once
more before the classification epochs numbered
30, 60, ... (every multiple of 30) and the last one. The published numbers (paper Tables 1-3) include
those steps. Here evaluation never changes the model: under `protocol: paper` the training loop takes
the same steps itself, counted from the test set's batch count, and logs them in `history.csv`
(`sparsify_steps`, `decrement_total`). The epoch's test accuracy is then measured once, after all of
its steps (the published evaluation scored test batch b after b + 1 of them), and the saved model and
`metrics.json` include the steps after the final pruning.

Also here: the published code stepped the classifier's warm-restart schedule with the fractional epoch
*before* each step (Faithfulness page, 'The published code', item 9), so its second step still used the initial rate.
"""

from __future__ import annotations

import math

from typing import Any

from torch import nn

from pipnet.core.train_config import TrainConfig
from pipnet.train.optim import StageOptim, soft_threshold_
from pipnet.train.phases import EpochPlan

__all__ = [
    "PAPER_EXTRA_EVERY",
    "apply_soft_threshold_steps",
    "classifier_schedule_epoch",
    "count_test_batches",
    "decrement_per_step",
    "paper_extra_steps",
    "sparsify_counts",
    "steps_after_epoch",
    "steps_before_epoch",
]

PAPER_EXTRA_EVERY = 30  # one extra step before classification epochs 30, 60, ...


def count_test_batches(num_images: int, batch_size: int) -> int:
    """Batches of one pass over `num_images` test images (the last one may be smaller): ceil(n / b)."""
    return math.ceil(num_images / batch_size) if num_images > 0 else 0


def steps_before_epoch(plan: EpochPlan, epochs: int) -> int:
    """Extra steps before an epoch: 1 before classification epochs 30, 60, ... and the last one, else 0.

    An epoch that is both (the last one being a multiple of 30) gets one step, not two.

    Args:
        plan: the epoch.
        epochs: the number of classification epochs.
    """
    if not plan.sparsify:  # only the classification stage sparsifies
        return 0
    return int(plan.epoch % PAPER_EXTRA_EVERY == 0 or plan.epoch == epochs)


def steps_after_epoch(plan: EpochPlan, num_test_images: int, batch_size: int) -> int:
    """Extra steps after an epoch: one per test batch after every epoch of an evaluating (classification) stage, else 0."""
    return count_test_batches(num_test_images, batch_size) if plan.evaluate else 0


def apply_soft_threshold_steps(classifier: nn.Module, steps: int, threshold: float = 1e-3) -> None:
    """`steps` soft-threshold steps in a row, each W <- max(W - threshold, 0) (as the published evaluation)."""
    for _ in range(steps):
        soft_threshold_(classifier, threshold)


def classifier_schedule_epoch(epoch: int, step: int, iters: int, protocol: str = "default") -> float:
    """The fractional epoch the classifier's warm-restart schedule is set to after step `step` (0-based).

    Default: the epoch reached after the step, epoch - 1 + (step + 1) / iters. `paper`: the one before
    it, epoch - 1 + step / iters, as the published code (its first two steps share the initial rate).

    Args:
        epoch: the 1-based classification epoch.
        step: the 0-based step within the epoch.
        iters: steps per epoch.
        protocol: `default` or `paper`.
    """
    done = step if protocol == "paper" else step + 1
    return epoch - 1 + done / iters


# ---- the soft-threshold bookkeeping of a run (history.csv's sparsify_steps, decrement_total) ---------


def decrement_per_step(config: TrainConfig, optim: StageOptim | None) -> float:
    """What one soft-threshold step of the classification phase subtracts from every classifier weight
    (`optim.sparsify_threshold`, or its share of `optim.soft_threshold_total`)."""
    return optim.decrement if optim is not None and optim.classifier_schedule is not None else config.optim.sparsify_threshold


def paper_extra_steps(config: TrainConfig, plan: EpochPlan, num_test: int) -> tuple[int, int]:
    """Soft-threshold steps the `paper` protocol adds before and after this epoch (Faithfulness page, 'The published code', item 1)."""
    if config.protocol != "paper":
        return 0, 0
    return steps_before_epoch(plan, config.schedule.epochs), steps_after_epoch(plan, num_test, config.schedule.batch_size)


def sparsify_counts(
    history: list[dict[str, Any]], config: TrainConfig, plan: EpochPlan, steps: int, extra: int, optim: StageOptim
) -> dict[str, Any]:
    """Cumulative `sparsify_steps` and `decrement_total` of the run after this epoch.

    Training steps of the classification phase sparsify once each (soft or hard threshold); the
    `paper` protocol's extra steps are soft thresholds. `decrement_total` sums what the soft-threshold
    steps subtracted from every weight (a hard threshold subtracts nothing).
    """
    previous = history[-1] if history else {}
    train_steps = steps if plan.sparsify else 0
    soft_steps = (train_steps if config.optim.sparsify == "soft_threshold" else 0) + extra
    return {
        "sparsify_steps": int(previous.get("sparsify_steps", 0)) + train_steps + extra,
        "decrement_total": float(previous.get("decrement_total", 0.0)) + soft_steps * decrement_per_step(config, optim),
    }
