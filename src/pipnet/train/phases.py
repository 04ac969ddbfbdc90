"""The training schedule as data (paper supplementary Sec. 1.1 and Algorithm 1).

Every epoch of a run is one `EpochPlan`: which stage it belongs to, which data and batch size it
reads, which parameter groups train, the loss weights, and whether it sparsifies the classifier, steps
the classifier's warm-restart schedule and evaluates. `plan_epochs` declares the whole schedule
once, as the table below; the training loop only reads it.

| phase           | epochs                      | trains                                  | loss                  | data     |
|-----------------|-----------------------------|-----------------------------------------|-----------------------|----------|
| pretrain        | 1..epochs_pretrain          | to_train, to_freeze, add_on             | (e/n)*L_A + 5*L_T     | pretrain |
| classifier_only | 1..classifier_only_epochs   | classifier                              | 2*L_C                 | train    |
| frozen_backbone | ..freeze_epochs             | to_train, to_freeze, add_on, classifier | 5*L_A + 2*L_T + 2*L_C | train    |
| full            | later                       | + backbone                              | 5*L_A + 2*L_T + 2*L_C | train    |

The three classification phases form one stage (`classify`): one set of optimisers and schedules, the
soft threshold after every step, the classifier's warm restarts, and a test evaluation per epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pipnet.core.train_config import ScheduleConfig

__all__ = ["EpochPlan", "plan_epochs", "classification_rows", "GROUPS", "NET_GROUPS", "PRETRAIN", "CLASSIFY"]

# The parameter groups of a PIP-Net: three backbone groups, the add-on conv and the classifier.
GROUPS = ("to_train", "to_freeze", "backbone", "add_on", "classifier")
# The groups the "net" optimiser holds (everything but the classifier).
NET_GROUPS = frozenset(GROUPS) - {"classifier"}

# The two stages (each has its own optimisers and schedules); history.csv's `stage` column.
PRETRAIN = "pretrain"
CLASSIFY = "classify"

_PRETRAIN_GROUPS = frozenset({"to_train", "to_freeze", "add_on"})
_CLASSIFIER_ONLY = frozenset({"classifier"})
_FROZEN_BACKBONE = frozenset({"to_train", "to_freeze", "add_on", "classifier"})
_EVERYTHING = frozenset(GROUPS)


@dataclass(frozen=True, kw_only=True)
class EpochPlan:
    """What one epoch does.

    Args:
        stage: `pretrain` or `classify`; a new stage starts with fresh optimisers and schedules.
        epoch: 1-based epoch within its stage.
        stage_epochs: the number of epochs of the stage (the length of its cosine schedules).
        name: the phase, a short label for logs (`pretrain`, `classifier_only`, `frozen_backbone`, `full`).
        data: which training set of the `DataBundle` the epoch reads (`pretrain` or `train`).
        batch_size: images per batch (each gives two views).
        trains: the parameter groups with requires_grad = True.
        align: weight of L_A.
        tanh: weight of L_T.
        classification: weight of L_C (when > 0, the epoch's train accuracy is measured).
        net_lr_floor: the learning rate (`lr_block` or `lr_net`) whose 1/100 ends the net's cosine schedule.
        sparsify: sparsify the classifier after every step (soft or hard threshold).
        classifier_schedule: the classifier's learning rate follows warm restarts, stepped after every step.
        evaluate: measure test accuracy after the epoch (every `eval_every` epochs and after the last).
        saves_model_at_end: the last epoch of this stage saves the model (RUN/pretrained, for `--model.init`).
    """

    stage: str
    epoch: int
    stage_epochs: int
    name: str
    data: Literal["pretrain", "train"]
    batch_size: int
    trains: frozenset[str]
    align: float
    tanh: float
    classification: float
    net_lr_floor: Literal["lr_block", "lr_net"]
    sparsify: bool
    classifier_schedule: bool
    evaluate: bool
    saves_model_at_end: bool = False

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"align": self.align, "tanh": self.tanh, "classification": self.classification}

    @property
    def trains_net(self) -> bool:
        """Some group of the net optimiser (backbone or add-on) trains."""
        return bool(self.trains & NET_GROUPS)


def plan_epochs(schedule: ScheduleConfig, pretrained_pipnet: bool = False) -> list[EpochPlan]:
    """Every epoch of a run, in order.

    Args:
        schedule: epochs and batch sizes of each phase.
        pretrained_pipnet: a PIP-Net checkpoint was loaded (the classifier-only epochs then run even
            without pretraining).
    """
    n, m = schedule.epochs_pretrain, schedule.epochs
    pretrain = dict(stage=PRETRAIN, stage_epochs=n, name="pretrain", data="pretrain", batch_size=schedule.batch_size_pretrain,
                    trains=_PRETRAIN_GROUPS, tanh=5.0, classification=0.0, net_lr_floor="lr_block",
                    sparsify=False, classifier_schedule=False, evaluate=False, saves_model_at_end=True)
    classify = dict(stage=CLASSIFY, stage_epochs=m, data="train", batch_size=schedule.batch_size, net_lr_floor="lr_net",
                    sparsify=True, classifier_schedule=True, evaluate=True)
    classifier_only = dict(classify, name="classifier_only", trains=_CLASSIFIER_ONLY, align=0.0, tanh=0.0, classification=2.0)
    frozen_backbone = dict(classify, name="frozen_backbone", trains=_FROZEN_BACKBONE, align=5.0, tanh=2.0, classification=2.0)
    full = dict(classify, name="full", trains=_EVERYTHING, align=5.0, tanh=2.0, classification=2.0)

    plans = [EpochPlan(**pretrain, epoch=e, align=e / n) for e in range(1, n + 1)]
    classifier_only_epochs = schedule.classifier_only_epochs if (n > 0 or pretrained_pipnet) else 0
    for e in range(1, m + 1):
        phase = classifier_only if e <= classifier_only_epochs else frozen_backbone if e <= schedule.freeze_epochs else full
        plans.append(EpochPlan(**phase, epoch=e))
    return plans


def classification_rows(history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `history.csv` that belong to the classification stage."""
    return [r for r in history if r.get("stage") == CLASSIFY]
