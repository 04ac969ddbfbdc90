"""The run folder's one owner (:mod:`pipnet.model.run_folder`): its documented layout, what training writes there,
reading a folder that lacks files, and the edits of the web page recorded once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import pipnet.model.run_folder as run_folder_module
from pipnet.model import ModelLoadError, PIPNet, create_model
from pipnet.train.refit import class_edit_mask
from pipnet.model.run_folder import RunFolder, config_file
from pipnet.train.checkpoint import CheckpointError
from pipnet.train.training_run import TrainingRun

from reliability_helpers import TINY_BACKBONE, tiny_config

PATH_PROPERTIES = ["config", "history", "checkpoint", "pretrained", "weights", "model_config", "metrics", "evaluation",
                   "thresholds", "novelty", "novelty_tensors", "detectors", "edits", "edit_log", "sparsity_plot", "report"]


def test_every_documented_file_is_a_property_and_every_property_is_documented(tmp_path):
    documented = {p.rstrip("/") for p in re.findall(r"RUN/(\S+)", run_folder_module.__doc__)}
    folder = RunFolder(tmp_path)
    named = {getattr(folder, name).relative_to(tmp_path).as_posix() for name in PATH_PROPERTIES}
    assert named == documented
    assert len(named) == len(PATH_PROPERTIES) == 16  # no two properties name the same file
    assert folder.checkpoint.relative_to(tmp_path).as_posix() == "checkpoints/last.pt"
    assert (folder.weights.name, folder.model_config.name) == ("model.safetensors", "config.json")
    assert RunFolder(str(tmp_path)).path == tmp_path  # a string is taken as a path


def test_training_writes_where_the_folder_says_and_reads_back(tmp_path):
    config = tiny_config(tmp_path / "run")
    run = TrainingRun.create(config.out, config)
    folder = RunFolder(tmp_path / "run")
    assert run.folder == folder and folder.config.is_file()
    assert folder.training_config().data.image_size == 32
    rows = [{"epoch": 1, "stage": "pretrain", "loss": 0.5}, {"epoch": 2, "stage": "classify", "loss": 0.25, "lr": 1e-3}]
    run.append_history(rows)
    # Numbers come back as numbers; a column a row lacks comes back empty.
    assert folder.read_history() == [{"epoch": 1, "stage": "pretrain", "loss": 0.5, "lr": ""},
                                     {"epoch": 2, "stage": "classify", "loss": 0.25, "lr": 0.001}]
    with pytest.raises(CheckpointError, match=r"has no checkpoint yet \(checkpoints/last.pt\)"):
        TrainingRun.resume(folder.path)
    folder.checkpoint.write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a run"):
        TrainingRun.create(config.out, config)
    with pytest.raises(CheckpointError, match=r"is not a run folder \(no config.yaml\)"):
        TrainingRun.resume(tmp_path)


def test_a_folder_without_the_files_reads_as_empty(tmp_path):
    folder = RunFolder(tmp_path / "converted")
    assert folder.training_config() is None
    assert folder.read_history() == [] and folder.read_metrics() is None and folder.read_evaluation() is None
    assert folder.read_edits() == {}
    folder.path.mkdir()
    folder.metrics.write_text('{"top1_accuracy": 0.5}')
    assert folder.read_metrics() == {"top1_accuracy": 0.5}
    folder.edits.write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="edits.json is not a valid record of edits"):
        folder.read_edits()


def test_config_file_takes_a_run_folder_or_a_yaml(tmp_path):
    assert config_file(tmp_path) == tmp_path / "config.yaml"
    assert config_file(str(tmp_path)) == tmp_path / "config.yaml"
    assert config_file(tmp_path / "cub.yaml") == tmp_path / "cub.yaml"  # a file, existing or not


def test_edits_json_holds_the_switch_offs_once_and_old_files_still_load(tmp_path):
    pytest.importorskip("fastapi", reason="pipnet.use.serve needs the serve extra")
    from pipnet.use.serve.editing import ModelEditor

    torch.manual_seed(0)
    model = create_model(TINY_BACKBONE, 3, num_features=8, image_size=32)
    editor = ModelEditor(model, source="somewhere")
    editor.switch_off([1])  # for every class: recorded in config.json
    editor.switch_off([2], class_index=0)  # for class 0 only: recorded in edits.json
    saved = editor.save(tmp_path / "edited")
    record = json.loads(RunFolder(saved).edits.read_text())
    assert "disabled_prototypes" not in record
    assert [(e["class_index"], e["prototype"]) for e in record["class_edits"]] == [(0, 2)]
    assert PIPNet.from_pretrained(saved).config.disabled_prototypes == [1]

    # A file written before held a copy of the switch-offs; it still loads, and config.json is what counts.
    RunFolder(saved).edits.write_text(json.dumps({**record, "disabled_prototypes": [1, 5]}))
    reloaded = ModelEditor.from_folder(saved)
    assert reloaded.disabled == [1] and set(reloaded.class_edits) == {(0, 2)}
    assert reloaded.source == "somewhere"
    mask = class_edit_mask(saved, 3, 8)
    assert mask.nonzero().tolist() == [[0, 2]]
    assert class_edit_mask(tmp_path, 3, 8) is None  # no edits.json


def test_a_pretrained_subfolder_is_found_by_model_init(tmp_path):
    from pipnet.train.init import load_init_model

    run = RunFolder(tmp_path / "run")
    create_model(TINY_BACKBONE, 3, num_features=8, image_size=32).save_pretrained(run.pretrained)
    model = load_init_model(run.path, backbone=TINY_BACKBONE, image_size=32, num_classes=3, class_names=list("abc"))
    assert model.num_prototypes == 8
    with pytest.raises(ModelLoadError, match=r"holds no saved PIP-Net \(model.safetensors, or pretrained/model.safetensors\)"):
        load_init_model(tmp_path, backbone=TINY_BACKBONE, image_size=32, num_classes=3, class_names=list("abc"))


def test_report_refuses_a_folder_without_config(tmp_path):
    from pipnet.explanation.report import build_report

    create_model(TINY_BACKBONE, 2, num_features=8, image_size=32).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a run folder: config.yaml is missing"):
        build_report(Path(tmp_path))
