"""Starting a run from a saved PIP-Net (as the published code allows): `--model.init PATH`.

PATH is a model folder (`model.safetensors` + `config.json`), a run folder (its final model, or its
`pretrained/` model when the run has not finished), or an official checkpoint file of the authors.
Like the published code, a classifier that looks untrained is re-initialised; with
`--schedule.epochs_pretrain 0` the run skips pretraining and still runs the classifier-only epochs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipnet.model import ModelLoadError, NonNegativeLinear, PIPNet
from pipnet.model.run_folder import RunFolder

__all__ = ["classifier_looks_untrained", "load_init_model", "reinitialise_classifier_"]

log = logging.getLogger(__name__)


def classifier_looks_untrained(classifier: NonNegativeLinear) -> bool:
    """The published test: mean weight strictly between 1 and 3, and more than 80% of weights above 1e-5."""
    w = classifier.weight.detach().double()
    mean = w.mean().item()
    return 1.0 < mean < 3.0 and (w > 1e-5).double().mean().item() > 0.8


@torch.no_grad()
def reinitialise_classifier_(classifier: NonNegativeLinear) -> None:
    """W ~ N(1, 0.1), m = 2, bias 0 (the classifier of a fresh PIP-Net)."""
    classifier.weight.normal_(1.0, 0.1)
    classifier.multiplier.fill_(2.0)
    if classifier.bias is not None:
        classifier.bias.zero_()


def _model_folder(path: Path) -> Path:
    """`path` when it holds a saved model, else its `pretrained/` (a run folder that has not finished)."""
    run = RunFolder(path)
    for folder in (run.path, run.pretrained):
        if RunFolder(folder).weights.is_file():
            return folder
    raise ModelLoadError(f"{path} holds no saved PIP-Net ({run.weights.name}, or {run.pretrained.name}/{run.weights.name})")


def load_init_model(path: str | Path, *, backbone: str, image_size: int, num_classes: int, class_names: list[str]) -> PIPNet:
    """The PIP-Net a run starts from.

    Args:
        path: a model folder, a run folder, or an official checkpoint file.
        backbone: the backbone of an official checkpoint (it does not record it).
        image_size: the run's input size (for an official checkpoint).
        num_classes: the run's number of classes; a classifier for another number is replaced by a fresh one.
        class_names: the run's class names.

    Raises:
        ModelLoadError: nothing loadable at `path`.
    """
    path = Path(path)
    if path.is_dir():
        model = PIPNet.from_pretrained(_model_folder(path))
    elif path.is_file():
        from pipnet.model.official import load_official_checkpoint

        model = load_official_checkpoint(path, backbone=backbone, image_size=image_size)
    else:
        raise ModelLoadError(f"model.init: {path} does not exist")
    if model.num_classes != num_classes:
        log.info("model.init %s has %d classes, the data %d: a fresh classifier", path, model.num_classes, num_classes)
        model.classifier = NonNegativeLinear(model.num_prototypes, num_classes, bias=model.config.bias)
        model.config.num_classes = num_classes
    elif classifier_looks_untrained(model.classifier):
        log.info("model.init %s: its classifier looks untrained; re-initialised N(1, 0.1)", path)
        reinitialise_classifier_(model.classifier)
    model.config.class_names = list(class_names)
    model.config.image_size = image_size
    return model
