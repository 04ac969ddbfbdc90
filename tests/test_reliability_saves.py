"""All-or-nothing model folders (issue 24): saves and refits killed at random moments never leave a folder
that is incomplete or blocks its name; ``write_model_folder`` is the one writer of model folders."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import TINY_BACKBONE, one_thread, subprocess_env  # noqa: F401 (one_thread: autouse)

from pipnet import create_model
from pipnet.model import PIPNet
from pipnet.model.run_folder import remove_partial_folders, write_model_folder
from pipnet.use.serve.editing import ModelEditor

SAVED_FILES = {"model.safetensors", "config.json", "edits.json", "edits.jsonl"}
REFIT_FILES = {"model.safetensors", "config.json", "config.yaml", "thresholds.json", "novelty.json", "novelty.safetensors",
               "detectors.json", "edits.jsonl"}

# Imports once, then forks one writer per "go" line: each writer saves edited models and refits in a loop
# until it is killed (fork keeps a kill cheap: no interpreter start per kill).
WRITER = textwrap.dedent(
    """
    import os, sys, torch
    torch.set_num_threads(1)
    from torch.utils.data import TensorDataset
    from pipnet import create_model
    from pipnet.train.refit import edit_record, refit, save_refit
    from pipnet.use.serve.editing import ModelEditor

    out, config_yaml = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = create_model("BACKBONE", num_classes=3, num_features=8, image_size=32, pretrained=False)
    data = TensorDataset(torch.rand(12, 3, 32, 32), torch.arange(12) % 3)
    for line in sys.stdin:
        pid = os.fork()
        if pid:
            print(pid, flush=True)
            os.waitpid(pid, 0)
            continue
        n = 0
        while True:
            n += 1
            name = os.path.join(out, f"{os.getpid()}-{n}")
            if n % 2:
                editor = ModelEditor(model, source="original")
                editor.switch_off([n % 8])
                editor.switch_off([1], class_index=2)
                editor.save(name + "-saved", edit_log=[edit_record("switch_off", prototypes=[n % 8])])
            else:
                result = refit(model, data, data, [n % 8], epochs=2)
                save_refit(result, name + "-refit", source="original", test_data=data, train_data=data, data_description="random",
                           records=[edit_record("refit", prototypes=[n % 8])], config_path=config_yaml)
    """
).replace("BACKBONE", TINY_BACKBONE)


def _complete(folder: Path) -> None:
    """The folder holds every file of its kind and loads as a model."""
    files = {f.name for f in folder.iterdir()}
    expected = SAVED_FILES if folder.name.endswith("-saved") else REFIT_FILES
    assert files == expected, (folder, files)
    PIPNet.from_pretrained(folder)
    if "edits.json" in files:
        ModelEditor.from_folder(folder)
    for line in (folder / "edits.jsonl").read_text().splitlines():
        json.loads(line)


@pytest.mark.slow
def test_twenty_sigkills_during_saves_and_refits_leave_only_complete_folders(tmp_path):
    rng = random.Random(int(os.environ.get("PIPNET_KILL_SEED", "0")))
    out = tmp_path / "models"
    out.mkdir()
    (tmp_path / "config.yaml").write_text("data: {}\n")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    zygote = subprocess.Popen([sys.executable, str(script), str(out), str(tmp_path / "config.yaml")], env=subprocess_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    mid_write, blocked, checked = {"saved": 0, "refit": 0}, [], set()
    try:
        for i in range(20):
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            if i % 3:  # while a save (or a refit) is being written, so that both kinds are surely hit
                kind = "saved" if i % 3 == 1 else "refit"
                deadline = time.monotonic() + 30
                while not list(out.glob(f".{pid}-*-{kind}.partial-*")) and time.monotonic() < deadline:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.01))
            else:  # at a random moment
                time.sleep(rng.uniform(0.1, 0.8))
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)  # the zygote reaps it
            for leftover in out.glob(f".{pid}-*.partial-{pid}-*"):  # the next writer removes it
                mid_write["refit" if "-refit." in leftover.name else "saved"] += 1
                blocked.append(leftover.name[1:].split(".partial-")[0])
            for folder in out.iterdir():  # after every kill, every visible folder is whole
                if not folder.name.startswith(".") and folder.name not in checked:
                    _complete(folder)
                    checked.add(folder.name)
    finally:
        zygote.kill()
        zygote.wait()
    # Not vacuous: kills landed in the middle of both kinds of writes, and whole folders were written too.
    print("mid-write kills:", mid_write, "whole folders:", len(checked))
    assert mid_write["saved"] >= 2 and mid_write["refit"] >= 2, mid_write
    assert any(f.endswith("-saved") for f in checked) and any(f.endswith("-refit") for f in checked)

    # The names the killed writes were writing are free; the next write beside them removes any leftover.
    model = create_model(TINY_BACKBONE, num_classes=3, num_features=8, image_size=32, pretrained=False)
    for name in blocked:
        assert not (out / name).exists()
        ModelEditor(model).save(out / name, edit_log=[])
        PIPNet.from_pretrained(out / name)
    assert not list(out.glob(".*.partial-*"))


def test_a_failed_write_leaves_nothing_and_an_existing_folder_is_never_overwritten(tmp_path):
    model = create_model(TINY_BACKBONE, num_classes=3, num_features=8, image_size=32, pretrained=False)
    with pytest.raises(RuntimeError), write_model_folder(tmp_path / "m") as tmp:
        model.save_pretrained(tmp)
        raise RuntimeError("disk full, say")
    assert list(tmp_path.iterdir()) == []
    ModelEditor(model).save(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError):
        ModelEditor(model).save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m"]


def test_into_an_existing_run_folder_the_weights_come_last(tmp_path, monkeypatch):
    """Training's final model goes into the run folder: until its weights arrive the folder is no model."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("kept")
    model = create_model(TINY_BACKBONE, num_classes=3, num_features=8, image_size=32, pretrained=False)
    with pytest.raises(KeyboardInterrupt), write_model_folder(run, exist_ok=True) as tmp:
        model.save_pretrained(tmp)
        raise KeyboardInterrupt
    assert sorted(f.name for f in run.iterdir()) == ["config.yaml"]
    moved, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(Path(b).name), replace(a, b)))
    with write_model_folder(run, exist_ok=True) as tmp:
        model.save_pretrained(tmp)
        (tmp / "thresholds.json").write_text("{}")
    assert sorted(f.name for f in run.iterdir()) == ["config.json", "config.yaml", "model.safetensors", "thresholds.json"]
    assert moved[-3:] == ["config.json", "thresholds.json", "model.safetensors"]
    assert torch.equal(PIPNet.from_pretrained(run).classifier.weight, model.classifier.weight)


def test_leftovers_of_a_live_process_are_kept(tmp_path):
    mine = tmp_path / f".m.partial-{os.getpid()}-abcd"
    dead = tmp_path / ".m.partial-999999999-abcd"  # no such process
    mine.mkdir()
    dead.mkdir()
    assert remove_partial_folders(tmp_path) == [dead]
    assert mine.is_dir()
