"""The training schedule as data (spec section 4).

Every epoch of a run is one :class:`EpochPlan`: which stage it belongs to (pretraining or
classification), which parameter groups train, and the loss weights. :func:`plan_epochs` declares the
whole schedule once; the training loop only reads it.

| stage          | epochs                      | trains                                       | loss                          |
|----------------|-----------------------------|----------------------------------------------|-------------------------------|
| pretrain       | 1..epochs_pretrain          | to_train, to_freeze, add_on                  | (e/n)*L_A + 5*L_T             |
| classify       | 1..classifier_only_epochs   | classifier                                   | 2*L_C                         |
| classify       | ..freeze_epochs             | to_train, to_freeze, add_on, classifier      | 5*L_A + 2*L_T + 2*L_C         |
| classify       | later                       | + backbone                                   | 5*L_A + 2*L_T + 2*L_C         |
"""

from __future__ import annotations

from dataclasses import dataclass

from pipnet.train.config import ScheduleConfig

__all__ = ["EpochPlan", "plan_epochs", "GROUPS"]

# The parameter groups of a PIP-Net: three backbone groups, the add-on conv and the classifier.
GROUPS = ("to_train", "to_freeze", "backbone", "add_on", "classifier")

_PRETRAIN_GROUPS = frozenset({"to_train", "to_freeze", "add_on"})
_CLASSIFIER_ONLY = frozenset({"classifier"})
_FROZEN_BACKBONE = frozenset({"to_train", "to_freeze", "add_on", "classifier"})
_EVERYTHING = frozenset(GROUPS)


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch does.

    Args:
        stage: ``pretrain`` or ``classify`` (each stage has its own optimisers and schedules).
        epoch: 1-based epoch within its stage.
        name: a short label for logs (``pretrain``, ``classifier_only``, ``frozen_backbone``, ``full``).
        trains: the parameter groups with requires_grad = True.
        align: weight of L_A.
        tanh: weight of L_T.
        classification: weight of L_C.
    """

    stage: str
    epoch: int
    name: str
    trains: frozenset[str]
    align: float
    tanh: float
    classification: float

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"align": self.align, "tanh": self.tanh, "classification": self.classification}


def plan_epochs(schedule: ScheduleConfig, pretrained_pipnet: bool = False) -> list[EpochPlan]:
    """Every epoch of a run, in order.

    Args:
        schedule: epochs of each phase.
        pretrained_pipnet: a PIP-Net checkpoint was loaded (the classifier-only epochs then run even
            without pretraining).
    """
    n = schedule.epochs_pretrain
    plans = [
        EpochPlan("pretrain", e, "pretrain", _PRETRAIN_GROUPS, align=e / n, tanh=5.0, classification=0.0)
        for e in range(1, n + 1)
    ]
    classifier_only = schedule.classifier_only_epochs if (n > 0 or pretrained_pipnet) else 0
    for e in range(1, schedule.epochs + 1):
        if e <= classifier_only:
            plans.append(EpochPlan("classify", e, "classifier_only", _CLASSIFIER_ONLY, 0.0, 0.0, 2.0))
        elif e <= schedule.freeze_epochs:
            plans.append(EpochPlan("classify", e, "frozen_backbone", _FROZEN_BACKBONE, 5.0, 2.0, 2.0))
        else:
            plans.append(EpochPlan("classify", e, "full", _EVERYTHING, 5.0, 2.0, 2.0))
    return plans
