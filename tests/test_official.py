"""Importing the authors' checkpoint format (module._net..., module._classification...)."""

import pytest
import torch
import torchvision

import pipnet
from pipnet.model import ModelLoadError
from pipnet.model.official import pipnet_to_official_state


def _official_resnet18_state(num_classes: int) -> dict:
    """An official-layout state dict written directly from a torchvision ResNet18 (not via our mapping)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    state = {f"module._net.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state["module._classification.weight"] = torch.rand(num_classes, 512)
    state["module._classification.normalization_multiplier"] = torch.tensor([2.0])
    state["module._multiplier"] = torch.tensor([2.0])
    return {"model_state_dict": state}, net


def test_official_resnet_loads_with_the_same_weights(tmp_path):
    ckpt, net = _official_resnet18_state(5)
    torch.save(ckpt, tmp_path / "net_trained_last")
    model = pipnet.load_official_checkpoint(tmp_path / "net_trained_last", backbone="resnet18").eval()
    assert model.num_classes == 5 and model.num_prototypes == 512
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, net.layer4[1].bn2.running_var)
    assert torch.equal(model.classifier.weight, ckpt["model_state_dict"]["module._classification.weight"])
    # The published forward: features -> softmax over channels -> max -> relu(W).
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        z = model.backbone(x)
        expected = torch.softmax(z, 1).amax(dim=(2, 3)) @ torch.relu(model.classifier.weight).T
        assert torch.allclose(model(x).scores, expected, atol=1e-5)


@pytest.mark.parametrize("backbone,num_features,bias", [("resnet18", 0, False), ("convnext_tiny_13", 32, True)])
def test_round_trip_through_the_official_layout(tmp_path, backbone, num_features, bias):
    torch.manual_seed(0)
    model = pipnet.create_model(backbone, num_classes=3, num_features=num_features, bias=bias).eval()
    with torch.no_grad():
        model.classifier.weight.uniform_(0, 1)
    state = pipnet_to_official_state(model)
    # Without the wrapper and without the DataParallel prefix too.
    bare = {k.removeprefix("module."): v for k, v in state["model_state_dict"].items()}
    for ckpt in (state, bare):
        loaded = pipnet.load_official_checkpoint(ckpt, backbone=backbone).eval()
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(loaded(x).scores, model(x).scores)
        assert loaded.config.num_features == num_features and loaded.config.bias == bias


def test_wrong_backbone_and_bad_files(tmp_path):
    ckpt, _ = _official_resnet18_state(2)
    with pytest.raises(ModelLoadError, match="wrong --backbone"):
        pipnet.load_official_checkpoint(ckpt, backbone="resnet50")
    with pytest.raises(ModelLoadError, match="not found"):
        pipnet.load_official_checkpoint(tmp_path / "missing", backbone="resnet18")
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        pipnet.load_official_checkpoint(tmp_path / "junk", backbone="resnet18")
