"""Bad models, checkpoints and configs (issue #8), through the real command line; nothing untrusted is
ever unpickled."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from reliability_helpers import TINY_BACKBONE, assert_one_error_line, one_thread, run_cli, tiny_config, write_image  # noqa: F401 (one_thread: autouse)

from pipnet.model import create_model
from pipnet.model.official import pipnet_to_official_state
from pipnet.train.checkpoint import save_checkpoint
from pipnet.core.train_config import dump_config
from pipnet.train.training_run import TrainingRun

SRC = Path(__file__).resolve().parents[1] / "src" / "pipnet"


@pytest.fixture
def saved_model(tmp_path) -> Path:
    create_model(TINY_BACKBONE, 2, num_features=8, image_size=32).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def image(tmp_path) -> Path:
    return write_image(tmp_path / "bird.png", size=(40, 30))


def _edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **changes}))


# ---- backbones and saved models ------------------------------------------------------------------------


def test_unknown_backbone_lists_the_known_ones(tmp_path, capsys, saved_model, image):
    (tmp_path / "run.yaml").write_text(dump_config(tiny_config(tmp_path / "run")))
    rc, err = run_cli(capsys, "train", "--config", tmp_path / "run.yaml", "--model.backbone", "resnet19")
    assert_one_error_line(rc, err, "unknown backbone 'resnet19'", "known:", "resnet18", "convnext_tiny_26", "timm/<name>")
    _edit_config(saved_model, backbone="resnet19")
    rc, err = run_cli(capsys, "explain", saved_model, image)
    assert_one_error_line(rc, err, "unknown backbone 'resnet19'", "resnet50")


@pytest.mark.parametrize("command", ["evaluate", "explain"])
@pytest.mark.parametrize("change, needles", [
    ({"num_classes": 5}, ["does not fit this model", "classifier.weight: (2, 8) vs (5, 8)"]),
    ({"backbone": "timm/test_resnet"}, ["does not fit this model", "missing keys", "unexpected keys"]),
    ({"num_classes": "two"}, ["config.json", "num_classes", "'two'"]),
    ({"image_size": -3}, ["config.json", "image_size", "-3"]),
])
def test_a_model_of_another_architecture_or_class_count(capsys, saved_model, image, command, change, needles):
    _edit_config(saved_model, **change)
    rc, err = run_cli(capsys, command, saved_model, *([image] if command == "explain" else []))
    assert_one_error_line(rc, err, *needles)


def test_evaluating_on_data_with_another_class_count(capsys, saved_model):
    rc, err = run_cli(capsys, "evaluate", saved_model, "--data.image_size", "32", "--data.planted.num_classes", "3",
                      "--data.planted.train_per_class", "2", "--data.planted.test_per_class", "2")
    assert_one_error_line(rc, err, "has 2 classes but the data has 3")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "json"])
def test_corrupt_model_files(capsys, saved_model, image, damage):
    weights = saved_model / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(bytes(range(256)) * 8)
    else:
        (saved_model / "config.json").write_text('{"backbone": "timm/test_convnext", "num_cl')
    rc, err = run_cli(capsys, "explain", saved_model, image)
    assert_one_error_line(rc, err, "config.json is not valid JSON" if damage == "json" else "model.safetensors is corrupt")


# ---- resume checkpoints --------------------------------------------------------------------------------


def _run_folder(tmp_path: Path, model_state: dict) -> Path:
    config = tiny_config(tmp_path / "run")
    run = TrainingRun.create(config.out, config)
    save_checkpoint(run.checkpoint_path, {"epochs_done": 1, "stage": "pretrain", "model": model_state, "optim": {}})
    return run.path


def test_resume_from_a_checkpoint_of_another_model(tmp_path, capsys):
    other = create_model(TINY_BACKBONE, 3, num_features=4, image_size=32)
    run = _run_folder(tmp_path, other.state_dict())
    rc, err = run_cli(capsys, "train", "--resume", run)
    assert_one_error_line(rc, err, "last.pt does not fit this model", "shape mismatches")


def test_resume_from_a_truncated_or_foreign_checkpoint(tmp_path, capsys):
    run = _run_folder(tmp_path, create_model(TINY_BACKBONE, 3, num_features=8, image_size=32).state_dict())
    checkpoint = run / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    rc, err = run_cli(capsys, "train", "--resume", run)
    assert_one_error_line(rc, err, "last.pt is corrupt, truncated or unsafe")
    torch.save({"format": 1, "weights": torch.zeros(3)}, checkpoint)
    rc, err = run_cli(capsys, "train", "--resume", run)
    assert_one_error_line(rc, err, "last.pt", "lacks", "epochs_done")


# ---- config files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("yaml, needles", [
    ("model:\n  backbone: resnet18\n  colour: blue\n", ["'model' does not accept option 'colour'"]),
    ("schedule:\n  epochs: many\n", ['"schedule.epochs"']),
    ("runtime:\n  on_nonfinite: ignore\n", ['"runtime.on_nonfinite"']),
    ("model: [unclosed\n", ["Problems parsing config"]),
])
def test_config_file_with_an_unknown_key_or_a_wrong_type(tmp_path, capsys, yaml, needles):
    (tmp_path / "bad.yaml").write_text(yaml)
    rc, err = run_cli(capsys, "train", "--config", tmp_path / "bad.yaml")
    assert_one_error_line(rc, err, *needles)


# ---- untrusted pickles -----------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint could do with any function."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _malicious(path: Path, marker: Path, wrap=lambda payload: {"model_state_dict": {"x": payload}}) -> Path:
    torch.save(wrap(_Payload(marker)), path)
    return path


def test_the_payload_would_run_if_unpickled(tmp_path):
    """Check that the malicious files below are real: plain unpickling creates the marker file."""
    marker = tmp_path / "pwned"
    torch.load(_malicious(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_malicious_checkpoints_are_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    rc, err = run_cli(capsys, "convert", _malicious(tmp_path / "net_trained_last", marker), "--backbone", "resnet18",
                      "--out", tmp_path / "converted")
    assert_one_error_line(rc, err, "net_trained_last", "cannot read")
    weights = _malicious(tmp_path / "weights.pth", marker, wrap=lambda payload: {"conv1.weight": payload})
    (tmp_path / "run.yaml").write_text(dump_config(tiny_config(tmp_path / "run")))
    rc, err = run_cli(capsys, "train", "--config", tmp_path / "run.yaml", "--model.pretrained", weights)
    assert_one_error_line(rc, err, "weights.pth")
    run = _run_folder(tmp_path / "resumed", {})
    _malicious(run / "checkpoints" / "last.pt", marker, wrap=lambda payload: {"format": 1, "model": payload})
    rc, err = run_cli(capsys, "train", "--resume", run)
    assert_one_error_line(rc, err, "last.pt is corrupt, truncated or unsafe", "Unsupported global", "refusing to unpickle")
    assert not marker.exists()


def test_official_checkpoints_still_convert(tmp_path, capsys):
    model = create_model("resnet18", 2, num_features=4, image_size=32)
    torch.save(pipnet_to_official_state(model), tmp_path / "net_trained_last")
    rc, err = run_cli(capsys, "convert", tmp_path / "net_trained_last", "--backbone", "resnet18", "--image-size", "32",
                      "--out", tmp_path / "converted")
    assert rc == 0, err
    assert (tmp_path / "converted" / "model.safetensors").is_file()


def test_every_torch_load_in_the_code_refuses_pickled_objects():
    """torch.load(..., weights_only=True) everywhere; no pickle, dill or joblib loads."""
    torch_loads = 0
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            assert not (owner in ("pickle", "dill", "joblib", "cloudpickle") and "load" in node.func.attr), where
            assert node.func.attr != "Unpickler", where
            if owner == "torch" and node.func.attr == "load":
                torch_loads += 1
                flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, f"{where}: torch.load without weights_only=True"
    assert torch_loads >= 2  # utils.load_tensors and the efficientnet-lite0 package file
