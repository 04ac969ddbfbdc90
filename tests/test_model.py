"""The model: prototype maps, presence, scores, predict, save/load (spec section 1)."""

import json

import pytest
import torch

import pipnet
from pipnet.model import ModelLoadError, PIPNet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return pipnet.create_model("resnet18", num_classes=4).eval()


def test_output_shapes_and_ranges(model):
    out = model(torch.randn(2, 3, 64, 64))
    assert out.maps.shape == (2, 512, 8, 8)
    assert out.presence.shape == (2, 512) and out.scores.shape == (2, 4)
    assert torch.allclose(out.maps.sum(dim=1), torch.ones(2, 8, 8), atol=1e-5)  # softmax over prototypes
    assert torch.equal(out.presence, out.maps.amax(dim=(2, 3)))
    assert (out.scores >= 0).all()
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 512, 8, 8)


def test_predict_zeroes_presence_below_threshold(model):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    out, pred = model(x), model.predict(x)
    kept = torch.where(out.presence < 0.1, 0.0, out.presence)
    assert torch.allclose(pred.scores, model.classifier(kept))
    # predict's presence is what the classifier saw (as the published model returns it); the raw maps stay
    assert torch.equal(pred.presence, kept) and (pred.presence == 0).any() and (pred.presence > 0).any()
    assert torch.equal(model.raw_presence(pred.maps), out.presence)
    assert torch.equal(model.classifier_weights(), torch.relu(model.classifier.weight))


def test_all_absent_image_abstains():
    # An add-on with many prototypes makes every softmax value small: all presences < 0.1.
    torch.manual_seed(0)
    m = pipnet.create_model("resnet18", num_classes=3, num_features=64).eval()
    with torch.no_grad():
        m.add_on.weight.zero_()
        m.add_on.bias.zero_()  # uniform softmax: every presence = 1/64 < 0.1
        pred = m.predict(torch.randn(2, 3, 32, 32))
    assert (pred.presence < 0.1).all()
    assert torch.equal(pred.scores, torch.zeros(2, 3))


def test_add_on_conv(model):
    m = pipnet.create_model("resnet18", num_classes=2, num_features=16)
    out = m(torch.randn(1, 3, 32, 32))
    assert out.maps.shape[1] == 16 and m.classifier.weight.shape == (2, 16)
    assert m.add_on.bias is not None


def test_disable_prototypes_zeroes_their_contribution(model):
    torch.manual_seed(2)
    m = pipnet.create_model("resnet18", num_classes=2)
    x = torch.randn(1, 3, 32, 32)
    before = m(x)
    top = int(before.presence[0].argmax())
    m.disable_prototypes([top])
    after = m(x)
    assert after.presence[0, top] == 0 and m.config.disabled_prototypes == [top]
    assert torch.allclose(after.scores, before.scores - before.presence[0, top] * torch.relu(m.classifier.weight[:, top]))
    m.enable_prototypes([top])
    assert torch.equal(m(x).scores, before.scores)
    with pytest.raises(IndexError):
        m.disable_prototypes([10_000])


def test_save_and_load_round_trip(tmp_path, model):
    torch.manual_seed(3)
    m = pipnet.create_model("resnet18", num_classes=3, num_features=8, bias=True, class_names=["a", "b", "c"])
    m.disable_prototypes([1])
    m.eval()
    x = torch.randn(2, 3, 32, 32)
    m.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = PIPNet.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == m.config
    assert torch.equal(loaded(x).scores, m(x).scores)
    assert torch.equal(loaded.predict(x).scores, m.predict(x).scores)


def test_load_errors(tmp_path, model):
    with pytest.raises(ModelLoadError, match="missing"):
        PIPNet.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    # Another class count: a clear message naming the mismatch.
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "num_classes": 7}))
    with pytest.raises(ModelLoadError, match="shape"):
        PIPNet.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "colour": 1}))
    with pytest.raises(ModelLoadError, match="unknown keys"):
        PIPNet.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(ModelLoadError, match="corrupt"):
        PIPNet.from_pretrained(tmp_path / "m")


def test_used_prototypes_and_relevance():
    m = pipnet.create_model("resnet18", num_classes=2, num_features=4)
    with torch.no_grad():
        m.classifier.weight.copy_(torch.tensor([[0.0, 0.5, 1e-4, 0.0], [0.0, 0.0, 2e-3, -1.0]]))
    assert m.used_prototypes().tolist() == [1, 2]
