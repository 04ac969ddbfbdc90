"""Tiny models and data sets for the evaluation tests (CPU, no downloads)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pipnet.model.backbones import Backbone, ParameterGroups
from pipnet.model import PIPNet, PIPNetConfig


class LogitBackbone(Backbone):
    """Passes its input through: an "image" (P, h, w) holds the prototype logits, so maps = softmax(x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.num_features = channels
        self.groups = ParameterGroups((), (), ())
        self.register_buffer("unused", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TinyConvBackbone(Backbone):
    """A strided conv with batch norm: 3 x 32 x 32 -> D x 4 x 4 (batch norm makes train mode detectable)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.num_features = channels
        self.groups = ParameterGroups(("conv",), (), ())
        self.conv = nn.Conv2d(3, channels, kernel_size=8, stride=8)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def logit_model(num_prototypes: int, num_classes: int) -> PIPNet:
    config = PIPNetConfig(backbone="test", num_classes=num_classes, image_size=4)
    return PIPNet(config, backbone=LogitBackbone(num_prototypes))


def tiny_conv_model(num_classes: int = 3, channels: int = 8) -> PIPNet:
    config = PIPNetConfig(backbone="test", num_classes=num_classes, image_size=32)
    return PIPNet(config, backbone=TinyConvBackbone(channels))


class KeypointDataset(TensorDataset):
    """(x, label) items plus part keypoints (K, 3) [part, x, y] per image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, keypoints: list[torch.Tensor], num_parts: int):
        super().__init__(images, labels)
        self._keypoints = keypoints
        self.num_parts = num_parts

    def keypoints(self, i: int) -> torch.Tensor:
        return self._keypoints[i]


class PooledLogitBackbone(Backbone):
    """Average-pools its input (P, S, S) by ``stride``: an S x S "image" whose pixels hold prototype logits."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.num_features = channels
        self.stride = stride
        self.groups = ParameterGroups((), (), ())
        self.register_buffer("unused", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, self.stride)


def pooled_logit_model(num_prototypes: int, num_classes: int, stride: int, image_size: int) -> PIPNet:
    config = PIPNetConfig(backbone="test", num_classes=num_classes, image_size=image_size)
    return PIPNet(config, backbone=PooledLogitBackbone(num_prototypes, stride))


def set_weights(model: PIPNet, weight: list[list[float]]) -> None:
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(weight))
