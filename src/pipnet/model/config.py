"""What rebuilds a PIP-Net's architecture: [`PIPNetConfig`][pipnet.PIPNetConfig], saved beside the weights as `config.json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PIPNetConfig"]


@dataclass
class PIPNetConfig:
    """Everything needed to rebuild a PIP-Net's architecture (saved as `config.json`).

    Args:
        backbone: registered backbone name (see `pipnet.list_models()`) or `timm/<name>`.
        num_classes: C.
        num_features: 0 = no add-on conv (P = D, the default); n > 0 = a 1x1 conv to n prototypes.
        bias: whether the classifier has a (non-negative) bias; off in the paper.
        image_size: the input size S the model was trained at.
        backbone_kwargs: extra arguments of the backbone builder (e.g. `output_stride` for timm).
        class_names: optional names of the C classes.
        disabled_prototypes: prototypes switched off (their presence is zeroed before the classifier).
        preset: the input contract's colour handling: the data preset the model was trained with
            (`grayscale` turns inputs gray; every other preset feeds RGB). None: RGB inputs; see
            `pipnet.evaluation.inference.input_transform`.
        grid: how the backbone reaches its grid: `stride` (the paper's), `dilate` or `native` (see
            `pipnet.model.backbones`).
        normalization: the input normalisation `{"mean": [r, g, b], "std": [r, g, b]}` the model is fed
            with (`PIPNet.normalization`). None: the backbone's declared one is filled in when the
            model is built.
    """

    backbone: str = "convnext_tiny_26"
    num_classes: int = 200
    num_features: int = 0
    bias: bool = False
    image_size: int = 224
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    disabled_prototypes: list[int] = field(default_factory=list)
    preset: str | None = None
    grid: str = "stride"
    normalization: dict[str, list[float]] | None = None

    def describe_backbone(self) -> str:
        """The backbone's name with its builder arguments, e.g. `efficientnet_lite0 (stages=4)`."""
        args = ", ".join(f"{k}={v}" for k, v in sorted(self.backbone_kwargs.items()))
        return f"{self.backbone} ({args})" if args else self.backbone
