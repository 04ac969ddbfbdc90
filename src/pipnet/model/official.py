"""Import the checkpoints published by the PIP-Net authors.

Their files are `torch.save` dicts `{"model_state_dict": ...}` of an `nn.DataParallel` model:

    module._net.<torchvision backbone keys>          -> backbone.<same keys>
    module._add_on.0.weight / .bias (add-on conv)    -> add_on.weight / .bias
    module._classification.weight (C, P)             -> classifier.weight
    module._classification.bias (optional)           -> classifier.bias
    module._classification.normalization_multiplier -> classifier.multiplier (m)
    module._multiplier                               -> (the same m; dropped)

Nothing is unpickled beyond tensors (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipnet.model.backbones import create_backbone
from pipnet.model.config import PIPNetConfig
from pipnet.model.pipnet import PIPNet
from pipnet.model.saving import ModelLoadError, load_state_dict_checked
from pipnet.core.utils import load_tensors

__all__ = ["load_official_checkpoint", "official_to_pipnet_state", "pipnet_to_official_state"]

_RENAMES = {
    "_add_on.0.": "add_on.",
    "_classification.normalization_multiplier": "classifier.multiplier",
    "_classification.": "classifier.",
    "_net.": "backbone.",
}


def official_to_pipnet_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official state dict's keys to this project's (accepts the wrapper and `module.`)."""
    if "model_state_dict" in state and isinstance(state["model_state_dict"], dict):
        state = state["model_state_dict"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key == "_multiplier":
            continue  # a second copy of m
        for old, new in _RENAMES.items():
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        else:
            raise ModelLoadError(f"unexpected key in the official checkpoint: {key!r}")
        out[key] = value
    if "classifier.multiplier" in out:
        out["classifier.multiplier"] = out["classifier.multiplier"].reshape(())
    return out


def pipnet_to_official_state(model: PIPNet) -> dict[str, torch.Tensor]:
    """The inverse mapping: a state dict laid out like the authors' checkpoints (used by tests)."""
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            state["module._net." + key.removeprefix("backbone.")] = value
        elif key.startswith("add_on."):
            state["module._add_on.0." + key.removeprefix("add_on.")] = value
        elif key == "classifier.multiplier":
            state["module._classification.normalization_multiplier"] = value.reshape(1)
            state["module._multiplier"] = value.reshape(1)
        else:
            state["module._classification." + key.removeprefix("classifier.")] = value
    return {"model_state_dict": state}


def load_official_checkpoint(
    checkpoint: str | Path | dict[str, torch.Tensor], backbone: str, *, image_size: int = 224
) -> PIPNet:
    """Build a PIP-Net from an official checkpoint; classes and prototypes are inferred from its shapes.

    Args:
        checkpoint: a path to the authors' file (e.g. `net_trained_last`) or its loaded state dict.
        backbone: the backbone it was trained with (e.g. `convnext_tiny_26`, `resnet50`).
        image_size: the input size it was trained at.
    """
    if not isinstance(checkpoint, dict):
        path = Path(checkpoint)
        if not path.is_file():
            raise ModelLoadError(f"checkpoint not found: {path}")
        try:
            checkpoint = load_tensors(path)
        except Exception as e:  # noqa: BLE001 - pickle errors, truncation, refused globals
            raise ModelLoadError(f"cannot read {path} as a PyTorch checkpoint: {e}") from e
    state = official_to_pipnet_state(checkpoint)
    if "classifier.weight" not in state:
        raise ModelLoadError("the checkpoint has no _classification.weight: not a PIP-Net checkpoint")
    num_classes, num_prototypes = state["classifier.weight"].shape
    num_features = state["add_on.weight"].shape[0] if "add_on.weight" in state else 0
    config = PIPNetConfig(
        backbone=backbone,
        num_classes=int(num_classes),
        num_features=int(num_features),
        bias="classifier.bias" in state,
        image_size=image_size,
    )
    model = PIPNet(config, create_backbone(backbone, pretrained=False))
    if num_features == 0 and num_prototypes != model.num_prototypes:
        raise ModelLoadError(
            f"the checkpoint has {num_prototypes} prototypes but {backbone} gives {model.num_prototypes}: "
            "wrong --backbone?"
        )
    load_state_dict_checked(model, state, source=f"official checkpoint ({backbone})")
    return model
