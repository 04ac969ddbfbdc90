"""Building a PIP-Net by backbone name: [`create_model`][pipnet.create_model] (timm's `create_model`, for this one architecture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipnet.model.backbones import create_backbone
from pipnet.model.config import PIPNetConfig
from pipnet.model.pipnet import PIPNet

__all__ = ["create_model"]


def create_model(
    backbone: str = "convnext_tiny_26",
    num_classes: int = 200,
    *,
    pretrained: bool | str | Path = False,
    num_features: int = 0,
    bias: bool = False,
    image_size: int = 224,
    class_names: list[str] | None = None,
    preset: str | None = None,
    grid: str = "stride",
    **backbone_kwargs: Any,
) -> PIPNet:
    """Build a PIP-Net.

    Args:
        backbone: a name from `pipnet.list_models()` or `timm/<name>`.
        num_classes: number of classes C.
        pretrained: False, True (ImageNet weights; offline for `efficientnet_lite0`), or a weights file.
        num_features: 0 for no add-on conv (P = D), else the number of prototypes of a 1x1 add-on conv.
        bias: give the classifier a non-negative bias (off in the paper).
        image_size: the input size the model is meant for (recorded in the config).
        class_names: optional class names, saved with the model.
        preset: the data preset the model is trained with (recorded; decides its inputs' colour handling).
        grid: `stride` (the paper's) or `dilate`: how the backbone reaches its grid (`pipnet.model.backbones`).
        **backbone_kwargs: passed to the backbone builder (e.g. `output_stride=16` for timm models).

    Examples:
        A ResNet-18 with random weights and 4 prototypes (an add-on conv) for two classes:

        >>> import torch
        >>> import pipnet
        >>> model = pipnet.create_model("resnet18", num_classes=2, num_features=4, image_size=64).eval()
        >>> model.num_prototypes
        4
        >>> out = model.predict(torch.rand(1, 3, 64, 64))
        >>> out.maps.shape, out.presence.shape, out.scores.shape
        (torch.Size([1, 4, 8, 8]), torch.Size([1, 4]), torch.Size([1, 2]))
    """
    config = PIPNetConfig(
        backbone=backbone,
        num_classes=num_classes,
        num_features=num_features,
        bias=bias,
        image_size=image_size,
        backbone_kwargs=dict(backbone_kwargs),
        class_names=class_names,
        preset=preset,
        grid=grid,
    )
    return PIPNet(config, create_backbone(backbone, pretrained=pretrained, grid=grid, **backbone_kwargs))
