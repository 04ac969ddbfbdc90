"""Starting from a saved PIP-Net (spec section 10.7): `--model.init`, RUN/pretrained/, the untrained-classifier test."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_official import _official_resnet18_state  # noqa: E402
from test_train import tiny_config  # noqa: E402

from pipnet.model import NonNegativeLinear, PIPNet  # noqa: E402
from pipnet.train import train  # noqa: E402
from pipnet.train.init import classifier_looks_untrained, load_init_model, reinitialise_classifier_  # noqa: E402


def _layer(values: list[float]) -> NonNegativeLinear:
    layer = NonNegativeLinear(len(values), 1, bias=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


def test_untrained_classifier_test_by_hand():
    assert classifier_looks_untrained(_layer([1.5] * 10))  # mean 1.5, all above 1e-5
    assert not classifier_looks_untrained(_layer([1.0] * 10))  # mean exactly 1: not in (1, 3)
    assert not classifier_looks_untrained(_layer([3.0] * 10))
    assert not classifier_looks_untrained(_layer([2.0] * 8 + [0.0] * 2))  # mean 1.6, but only 80% above 1e-5
    assert classifier_looks_untrained(_layer([2.0] * 9 + [0.0]))  # 90% above
    layer = _layer([5.0] * 10)
    with torch.no_grad():
        layer.multiplier.fill_(3.0)
        layer.bias.fill_(1.0)
    reinitialise_classifier_(layer)
    assert layer.multiplier.item() == 2.0 and layer.bias.tolist() == [0.0]
    assert abs(layer.weight.mean().item() - 1.0) < 0.2


def test_pretrain_once_then_classify_from_the_saved_pretrained_model(tmp_path):
    first = train(tiny_config(tmp_path / "pre", epochs_pretrain=2, epochs=0))  # pretraining only
    pretrained = PIPNet.from_pretrained(tmp_path / "pre" / "pretrained")  # the end-of-pretraining model
    assert pretrained.num_classes == 3 and first.history[1]["stage"] == "pretrain"
    config = tiny_config(tmp_path / "cls", epochs_pretrain=0, epochs=4)
    config.model.init = str(tmp_path / "pre" / "pretrained")
    config.runtime.seed = 1  # a fresh model would have other random weights
    second = train(config)
    assert [r["phase"] for r in second.history] == ["classifier_only"] * 3 + ["frozen_backbone"]
    assert not (tmp_path / "cls" / "pretrained").exists()
    # The stem never trains: it is the loaded model's, not a fresh random one.
    assert torch.equal(second.model.backbone.conv1.weight, pretrained.backbone.conv1.weight)
    # A run folder works as well (its final model).
    model = load_init_model(tmp_path / "pre", backbone="resnet18", image_size=32, num_classes=3, class_names=["a", "b", "c"])
    assert torch.equal(model.backbone.conv1.weight, first.model.backbone.conv1.weight)


def test_official_checkpoint_as_init_with_another_class_count(tmp_path):
    ckpt, _ = _official_resnet18_state(5)
    torch.save(ckpt, tmp_path / "net_pretrained")
    model = load_init_model(tmp_path / "net_pretrained", backbone="resnet18", image_size=32, num_classes=3,
                            class_names=["a", "b", "c"])
    assert model.num_classes == 3 and model.classifier.weight.shape == (3, 512)
    assert model.config.class_names == ["a", "b", "c"]
