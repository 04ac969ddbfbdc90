"""The published training trajectory's extra soft-threshold steps (spec section 10.1), as explicit steps.

The published code evaluated the model on the test set after every classification epoch, and that
evaluation subtracted 1e-3 (clamped at 0) from every classifier weight once per test batch; it did so
again in the evaluation after the final pruning, and once more before the classification epochs numbered
30, 60, ... (every multiple of 30) and the last one. The published numbers (spec section 9) include
those steps. Here evaluation never changes the model: under ``protocol: paper`` the training loop takes
the same steps itself, counted from the test set's batch count, and logs them in ``history.csv``
(``sparsify_steps``, ``decrement_total``). The epoch's test accuracy is then measured once, after all of
its steps (the published evaluation scored test batch b after b + 1 of them), and the saved model and
``metrics.json`` include the steps after the final pruning.

Also here: the published code stepped the classifier's warm-restart schedule with the fractional epoch
*before* each step (spec section 10.9), so its second step still used the initial rate.
"""

from __future__ import annotations

import math

from torch import nn

from pipnet.train.optim import soft_threshold_
from pipnet.train.phases import EpochPlan

__all__ = [
    "PAPER_EXTRA_EVERY",
    "apply_soft_threshold_steps",
    "classifier_schedule_epoch",
    "count_test_batches",
    "steps_after_epoch",
    "steps_before_epoch",
]

PAPER_EXTRA_EVERY = 30  # one extra step before classification epochs 30, 60, ...


def count_test_batches(num_images: int, batch_size: int) -> int:
    """Batches of one pass over ``num_images`` test images (the last one may be smaller): ceil(n / b)."""
    return math.ceil(num_images / batch_size) if num_images > 0 else 0


def steps_before_epoch(plan: EpochPlan, epochs: int) -> int:
    """Extra steps before an epoch: 1 before classification epochs 30, 60, ... and the last one, else 0.

    An epoch that is both (the last one being a multiple of 30) gets one step, not two.

    Args:
        plan: the epoch.
        epochs: the number of classification epochs.
    """
    if plan.stage != "classify":
        return 0
    return int(plan.epoch % PAPER_EXTRA_EVERY == 0 or plan.epoch == epochs)


def steps_after_epoch(plan: EpochPlan, num_test_images: int, batch_size: int) -> int:
    """Extra steps after an epoch: one per test batch after every classification epoch, else 0."""
    return count_test_batches(num_test_images, batch_size) if plan.stage == "classify" else 0


def apply_soft_threshold_steps(classifier: nn.Module, steps: int, threshold: float = 1e-3) -> None:
    """``steps`` soft-threshold steps in a row, each W <- max(W - threshold, 0) (as the published evaluation)."""
    for _ in range(steps):
        soft_threshold_(classifier, threshold)


def classifier_schedule_epoch(epoch: int, step: int, iters: int, protocol: str = "default") -> float:
    """The fractional epoch the classifier's warm-restart schedule is set to after step ``step`` (0-based).

    Default: the epoch reached after the step, epoch - 1 + (step + 1) / iters. ``paper``: the one before
    it, epoch - 1 + step / iters, as the published code (its first two steps share the initial rate).

    Args:
        epoch: the 1-based classification epoch.
        step: the 0-based step within the epoch.
        iters: steps per epoch.
        protocol: ``default`` or ``paper``.
    """
    done = step if protocol == "paper" else step + 1
    return epoch - 1 + done / iters
