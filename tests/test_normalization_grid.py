"""Each backbone's own input normalisation (declared, recorded, used by every input path) and the named grid
option (``stride`` | ``dilate``): what they declare is what their weights declare, and models keep both."""

import json

import pytest
import torch
from PIL import Image

import pipnet
from pipnet.model.backbones import BackboneError, backbone_normalization, create_backbone
from pipnet.data import DataConfig, PlantedConfig
from pipnet.data.augment import IMAGENET, Normalization, TwoViewTransform, eval_transform
from pipnet.evaluation.inference import build_model_data, input_transform
from pipnet.model import PIPNet

# Where each registered backbone's weights say what they expect, read from the installed libraries (no
# download): torchvision's weight enums carry their transforms, timm its pretrained configs.


def _torchvision(enum_name: str) -> Normalization:
    import torchvision.models as tvm

    t = getattr(tvm, enum_name).IMAGENET1K_V1.transforms()
    return Normalization.of(t.mean, t.std)


def _timm(name: str) -> Normalization:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return Normalization.of(cfg.mean, cfg.std)


DECLARED_BY_WEIGHTS = {
    "convnext_tiny_26": lambda: _torchvision("ConvNeXt_Tiny_Weights"),
    "convnext_tiny_13": lambda: _torchvision("ConvNeXt_Tiny_Weights"),
    "resnet18": lambda: _torchvision("ResNet18_Weights"),
    "resnet34": lambda: _torchvision("ResNet34_Weights"),
    "resnet50": lambda: _torchvision("ResNet50_Weights"),
    "resnet101": lambda: _torchvision("ResNet101_Weights"),
    "resnet152": lambda: _torchvision("ResNet152_Weights"),
    # BBN's iNaturalist checkpoint carries no metadata; its training code and the paper's feed ImageNet's.
    "resnet50_inat": lambda: _torchvision("ResNet50_Weights"),
    # The offline package ships Google's TF weights, which timm describes as tf_efficientnet_lite0.
    "efficientnet_lite0": lambda: _timm("tf_efficientnet_lite0"),
}


def test_every_registered_backbone_declares_what_its_weights_expect():
    assert set(DECLARED_BY_WEIGHTS) == set(pipnet.list_models())  # a new backbone needs its source here
    for name, declared in DECLARED_BY_WEIGHTS.items():
        assert backbone_normalization(name) == declared(), name
    assert backbone_normalization("efficientnet_lite0") == Normalization((0.5,) * 3, (0.5,) * 3)  # [-1, 1]
    assert backbone_normalization("resnet50") == IMAGENET  # the paper's backbones: nothing changes
    assert backbone_normalization("timm/tf_efficientnet_lite0") == _timm("tf_efficientnet_lite0")
    assert backbone_normalization("timm/resnet18") == _timm("resnet18")
    with pytest.raises(BackboneError, match="unknown backbone"):
        backbone_normalization("nope")


def test_transforms_normalise_with_the_given_normalisation():
    lite = backbone_normalization("efficientnet_lite0")
    img = Image.new("RGB", (20, 30), (255, 0, 128))
    x = eval_transform(16, normalization=lite)(img)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-5)  # [-1, 1]
    assert torch.allclose(lite.invert(x)[:, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]), atol=1e-5)
    v1, v2 = TwoViewTransform(16, normalization=lite)(Image.new("RGB", (40, 40), (255, 255, 255)))
    assert v1.max() <= 1.0 + 1e-6 and v1.min() >= -1.0 - 1e-6 and v2.max() <= 1.0 + 1e-6
    with pytest.raises(ValueError):
        Normalization((0.5, 0.5), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        Normalization.from_dict({"mean": [0.5] * 3})


def test_model_records_its_normalisation_and_grid_and_every_input_path_uses_it(tmp_path):
    model = pipnet.create_model("efficientnet_lite0", 3, stages=3, image_size=32, grid="dilate")
    assert model.normalization == backbone_normalization("efficientnet_lite0")
    model.save_pretrained(tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3} and raw["grid"] == "dilate"
    loaded = PIPNet.from_pretrained(tmp_path / "m")
    assert loaded.normalization == model.normalization and loaded.config.grid == "dilate"
    # predict / explain / serve build inputs with input_transform; evaluate / refit / report with build_model_data.
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    assert torch.allclose(input_transform(loaded)(white), torch.ones(3, 32, 32))
    data = build_model_data(DataConfig(source="planted", image_size=32,
                                       planted=PlantedConfig(train_per_class=2, test_per_class=1, num_classes=3)), loaded)
    for dataset in (data.projection, data.test, *data.ood.values()):
        assert dataset.normalization == loaded.normalization
    assert data.train.transform.normalization == loaded.normalization


def test_a_config_without_normalisation_gets_its_backbones_and_a_bad_one_is_refused(tmp_path):
    model = pipnet.create_model("efficientnet_lite0", 3, stages=3, image_size=32)
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["normalization"], raw["grid"]  # a hand-written config.json: the defaults are filled in
    (tmp_path / "config.json").write_text(json.dumps(raw))
    loaded = PIPNet.from_pretrained(tmp_path)
    assert loaded.normalization == model.normalization != IMAGENET and loaded.config.grid == "stride"
    raw["normalization"] = {"mean": [0.5] * 3, "std": [0.0] * 3}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(pipnet.model.ModelLoadError, match="normalisation"):
        PIPNet.from_pretrained(tmp_path)


@pytest.mark.parametrize("name, kwargs", [("efficientnet_lite0", {"stages": 5}), ("resnet50", {})])
def test_dilate_gives_the_same_grid_as_stride_and_trains(name, kwargs):
    torch.manual_seed(0)
    shapes = {}
    for grid in ("stride", "dilate"):
        model = pipnet.create_model(name, 3, grid=grid, **kwargs)
        out = model(torch.randn(2, 3, 32, 32))
        shapes[grid] = out.maps.shape
        out.scores.sum().backward()
        grads = [p.grad for n, p in model.named_parameters() if n.startswith("backbone.") and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    assert shapes["stride"] == shapes["dilate"]
    # Dilation keeps the weights' shapes: the same state dict loads into either grid.
    stride = create_backbone(name, grid="stride", **kwargs)
    create_backbone(name, grid="dilate", **kwargs).load_state_dict(stride.state_dict())


def test_dilate_uses_dilated_convolutions_and_stride_none():
    dilated = create_backbone("efficientnet_lite0", grid="dilate", stages=5)
    strided = create_backbone("efficientnet_lite0", grid="stride", stages=5)
    dil = [m.dilation for m in dilated.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation != (1, 1)]
    assert dil and not [m for m in strided.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation != (1, 1)]


@pytest.mark.parametrize("grid", ["stride", "dilate"])
def test_lite0_output_stride_16_halves_the_grid_of_8(grid):
    # 64 px: stride 8 gives 8x8, stride 16 gives 4x4, the unmodified network (stride 32) 2x2.
    x = torch.randn(1, 3, 64, 64)
    for stages, output_stride, side in ((6, 8, 8), (6, 16, 4), (7, 16, 4)):
        net = create_backbone("efficientnet_lite0", grid=grid, stages=stages, output_stride=output_stride).eval()
        assert net(x).shape[-2:] == (side, side), (stages, output_stride)
    assert create_backbone("efficientnet_lite0", grid="native", stages=6).eval()(x).shape[-2:] == (2, 2)
    with pytest.raises(BackboneError, match="output_stride must be 8 or 16"):
        create_backbone("efficientnet_lite0", output_stride=32)


@pytest.mark.parametrize("name", ["convnext_tiny_26", "resnet18", "timm/resnet18"])
def test_backbones_without_a_dilated_grid_say_so(name):
    with pytest.raises(BackboneError, match="grid"):
        create_backbone(name, grid="dilate")


def test_unknown_grid_is_refused():
    with pytest.raises(BackboneError, match="grid must be one of"):
        create_backbone("resnet18", grid="holes")


def test_training_builds_the_configured_grid():
    from pipnet.core.train_config import TrainConfig
    from pipnet.train.engine import _build_model

    config = TrainConfig()
    config.model.backbone, config.model.backbone_kwargs, config.model.grid = "efficientnet_lite0", {"stages": 4}, "dilate"
    model = _build_model(config, 2, ["a", "b"], pretrained=False)
    assert model.config.grid == "dilate" and model.normalization == backbone_normalization("efficientnet_lite0")
    assert any(m.dilation != (1, 1) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_the_cpu_small_recipe_builds_its_10x10_dilated_grid_and_saves_it(tmp_path):
    # configs/cpu-small.yaml (random weights here): Lite0 cut after 6 stages, P = D = 192, output stride 16
    # by dilation at 160 px -> 10x10; the backbone group frozen for the whole classification phase.
    from pathlib import Path

    from pipnet.core.train_config import load_config
    from pipnet.train.engine import _build_model

    config = load_config(str(Path(__file__).parent.parent / "configs" / "cpu-small.yaml"))
    assert config.schedule.freeze_epochs >= config.schedule.epochs
    model = _build_model(config, 3, ["a", "b", "c"], pretrained=False)
    size = config.data.image_size
    out = model(torch.randn(1, 3, size, size))
    assert out.maps.shape[1:] == (192, 10, 10) and model.config.grid == "dilate"
    model.save_pretrained(tmp_path)
    back = PIPNet.from_pretrained(tmp_path)
    assert back.config.backbone_kwargs == {"stages": 6, "output_stride": 16}
    assert back(torch.randn(1, 3, size, size)).maps.shape[1:] == (192, 10, 10)
