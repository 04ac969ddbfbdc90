"""Shortcut suspects and repair on a tiny model trained on the planted ``shortcut`` variant: the suspect list
names the background-colour prototype, a repair silences the forbidden patches and keeps the rest, the edit
log records it, and a killed repair leaves the original untouched and no half folder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import (  # noqa: F401
    assert_one_error_line,
    one_thread,
    run_cli,
    subprocess_env,
    tiny_config,
)

from pipnet.evaluation.evaluate import quality_rows
from pipnet.evaluation.inference import build_model_data
from pipnet.evaluation.quality import quality_card
from pipnet.evaluation.quality.verdict import verdicts
from pipnet.evaluation.shortcuts import find_suspects, remove_shapes
from pipnet.model import PIPNet
from pipnet.model.losses import forbid_loss, remember_loss
from pipnet.model.run_folder import RunFolder
from pipnet.train import train
from pipnet.train.refit import read_edit_log
from pipnet.train.repair import (
    RepairSettings,
    forbidden_cells,
    prototype_maps_of,
    repair,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny PIP-Net (16 prototypes) trained on the shortcut variant: some prototype learns a background colour."""
    out = tmp_path_factory.mktemp("shortcut") / "run"
    config = tiny_config(out, epochs_pretrain=4, epochs=4, freeze_epochs=1)
    config.model.num_features = 16
    config.data.planted = dataclasses.replace(config.data.planted, variant="shortcut")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def loaded(run):
    model = PIPNet.from_pretrained(run)
    return model, build_model_data(RunFolder(run).training_config().data, model)


def _digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}


def test_forbid_and_remember_losses_by_hand():
    maps = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 1, 2)  # P = 3 at two cells
    live = torch.tensor([True, True, False])
    forbidden = torch.tensor([[[True, False]]])
    assert torch.isclose(forbid_loss(maps, forbidden, live), -torch.log(torch.tensor(1 - 0.9 + 1e-6)))
    assert forbid_loss(maps, torch.zeros_like(forbidden), live) == 0
    cells = torch.tensor([[[[False, True]]]])  # prototype 2 remembered at the second cell
    assert torch.isclose(remember_loss(maps, torch.tensor([2]), cells), -torch.log(torch.tensor(0.8 + 1e-6)))


def test_removing_shapes_keeps_the_colour_layout():
    x = torch.rand(2, 3, 32, 32)
    flat = remove_shapes(x)
    assert flat.shape == x.shape
    assert torch.allclose(flat.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)  # the colours stay ...
    assert flat.std() < x.std() / 3  # ... the shapes go


def test_the_top_suspect_follows_the_background_colour(loaded):
    model, data = loaded
    before = {k: v.clone() for k, v in model.state_dict().items()}
    suspects = find_suspects(model, data.projection)
    assert {s.prototype for s in suspects} == set(model.used_prototypes().tolist())
    assert [s.score for s in suspects] == sorted((s.score for s in suspects), reverse=True)
    top = suspects[0]
    assert top.score >= 0.5 and top.signals["colour"] >= 0.5
    assert any("colour" in line for line in top.reasons)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # evaluation changes nothing
    card = quality_card(model, data.projection, sensitivity=False)  # the report card carries the list ...
    assert card["suspects"][0]["prototype"] == top.prototype
    assert verdicts(card)[top.prototype][0].startswith("shortcut suspect")  # ... the page's and report's words
    assert any(label == f"shortcut suspect #{top.prototype}" for label, _ in quality_rows(card))  # ... evaluate's table


def test_a_repair_silences_the_forbidden_patches_and_keeps_the_kept_ones(loaded):
    model, data = loaded
    original = {k: v.clone() for k, v in model.state_dict().items()}
    forbid = [find_suspects(model, data.projection)[0].prototype]
    result = repair(model, data.projection, data.test, forbid, settings=RepairSettings(epochs=4))
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())  # the input model is unchanged
    images = torch.stack([data.projection[i][0] for i in range(len(data.projection))])
    before, after = prototype_maps_of(model, images), prototype_maps_of(result.model, images)
    cells = forbidden_cells(before, forbid)
    assert cells.any()  # not vacuous
    assert after[:, forbid].amax(dim=1)[cells].mean() < 0.5 * before[:, forbid].amax(dim=1)[cells].mean()
    assert result.forbidden_response[1] < result.forbidden_response[0]
    assert result.remembered_pairs > 0 and result.kept_response[1] >= result.kept_response[0] - 0.05
    assert result.model.config.disabled_prototypes == forbid
    assert not set(forbid) & set(result.model.used_prototypes().tolist())
    held = result.held_at_zero
    assert not (result.model.classifier_weights()[:, held] > 0).any() if held else True


def test_similar_patches_widen_the_forbidden_cells(loaded):
    model, data = loaded
    forbid = [find_suspects(model, data.projection)[0].prototype]
    plain = repair(model, data.projection, data.test, forbid, settings=RepairSettings(epochs=0))
    everything = repair(model, data.projection, data.test, forbid, settings=RepairSettings(epochs=0, similar=-1.0))
    images = torch.stack([data.projection[i][0] for i in range(len(data.projection))])
    n, _, h, w = prototype_maps_of(model, images).shape
    assert 0 < plain.forbidden_cells < everything.forbidden_cells == n * h * w  # cosine >= -1 holds everywhere


def test_the_repair_command_logs_the_edit_and_never_overwrites(run, tmp_path, capsys):
    model = PIPNet.from_pretrained(run)
    forbid = model.used_prototypes().tolist()[:1]
    out = tmp_path / "repaired"
    rc, err = run_cli(capsys, "repair", run, "--forbid", ",".join(map(str, forbid)), "--out", out, "--epochs", "1",
                      "--reason", "background colour", "--no-progress")
    assert rc == 0, err
    log = read_edit_log(out)
    assert [r["action"] for r in log[-2:]] == ["forbid", "refit"]
    assert log[-2]["prototypes"] == forbid and log[-2]["reason"] == "background colour"
    assert log[-2]["tool"] == "pipnet repair" and "forbidden_response" in log[-2]
    assert (out / "thresholds.json").is_file() and PIPNet.from_pretrained(out).config.disabled_prototypes == forbid
    assert_one_error_line(*run_cli(capsys, "repair", run, "--forbid", "0", "--out", out), "exists")
    assert_one_error_line(*run_cli(capsys, "repair", run, "--forbid", "99", "--out", tmp_path / "x"), "no prototype 99")
    assert not (tmp_path / "x").exists()


def test_a_killed_repair_leaves_the_original_untouched_and_no_half_folder(run, tmp_path):
    before = _digest(run)
    out = tmp_path / "repaired"
    forbid = str(PIPNet.from_pretrained(run).used_prototypes().tolist()[0])
    for moment in ("while writing", "at random"):
        proc = subprocess.Popen([sys.executable, "-m", "pipnet", "repair", str(run), "--forbid", forbid, "--out", str(out),
                                 "--epochs", "2", "--no-progress"], env=subprocess_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        if moment == "while writing":
            while not list(tmp_path.glob(".repaired.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(1.5)
        assert proc.poll() is None, "the repair ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not out.exists(), moment
        assert _digest(run) == before, moment
    rc = subprocess.run([sys.executable, "-m", "pipnet", "repair", str(run), "--forbid", forbid, "--out", str(out),
                         "--epochs", "1", "--no-progress"], env=subprocess_env(), capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert [f.name for f in tmp_path.iterdir()] == ["repaired"]  # the next write removed the killed one's leftovers
    assert json.loads((out / "edits.jsonl").read_text().splitlines()[-1])["action"] == "refit"
