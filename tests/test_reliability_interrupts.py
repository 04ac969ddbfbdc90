"""Interruptions (issue #8): SIGKILL at random moments always leaves a resumable run that finishes with the
weights of an uninterrupted one; a full disk while saving keeps the previous checkpoint and says so."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import TINY_BACKBONE, assert_one_error_line, one_thread, subprocess_env, tiny_config  # noqa: F401 (one_thread: autouse)
from safetensors.torch import load_file

from pipnet.train import TrainConfig, train
from pipnet.train.checkpoint import load_checkpoint, save_checkpoint
from pipnet.core.train_config import dump_config

EPOCHS = {"epochs_pretrain": 2, "epochs": 4, "freeze_epochs": 2}  # 6 epochs, every phase of the schedule


def _rows(run: Path) -> int:
    history = run / "history.csv"
    return max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0


def _kill_when(args: list[str], ready, delay: float) -> None:
    """Start ``pipnet ARGS``, wait until ``ready()``, sleep ``delay`` s and SIGKILL it (it must still run)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipnet", *args], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_three_sigkills_at_random_moments_then_resume_gives_identical_weights(tmp_path):
    rng = random.Random(int(os.environ.get("PIPNET_KILL_SEED", "0")))
    train(tiny_config(tmp_path / "straight", **EPOCHS))
    run = tmp_path / "killed"
    (tmp_path / "killed.yaml").write_text(dump_config(tiny_config(run, **EPOCHS)))
    resume = ["train", "--resume", str(run)]

    # 1: during the second epoch.
    _kill_when(["train", "--config", str(tmp_path / "killed.yaml")], lambda: _rows(run) >= 1, rng.uniform(0, 0.3))
    done = load_checkpoint(run / "checkpoints" / "last.pt")["epochs_done"]
    assert done >= 1
    # 2: while starting: importing, reading the run folder, building the model, or in the first epoch.
    _kill_when(resume, lambda: True, rng.uniform(0.2, 2.5))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epochs_done"] >= done
    # 3: just after history.csv was rewritten, that is, while the checkpoint is being written.
    stamp = (run / "history.csv").stat().st_mtime_ns
    _kill_when(resume, lambda: (run / "history.csv").stat().st_mtime_ns != stamp, rng.uniform(0, 0.05))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epochs_done"] < 6
    assert not (run / "model.safetensors").exists()

    resumed = train(TrainConfig(resume=str(run)))
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert _rows(run) == 6


def test_a_save_removes_the_temporary_file_of_a_killed_save(tmp_path):
    stale = tmp_path / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "last.pt", {"epochs_done": 1, "stage": "pretrain", "model": {}, "optim": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


_DRIVER = """
import logging, os, shutil, sys
from pathlib import Path
import torch
from pipnet.cli import main
from pipnet.model import create_model
from pipnet.model.official import pipnet_to_official_state

disk, out = Path(sys.argv[1]), Path(sys.argv[2])

class FillDisk(logging.Handler):
    # Once epoch 1 is saved, fill the disk but for 256 kB: enough for history.csv, not for a checkpoint.
    def emit(self, record):
        if record.getMessage().startswith("epoch 1/"):
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            (disk / "filler").write_bytes(bytes(free - 256 * 1024))

logging.getLogger("pipnet.train.engine").addHandler(FillDisk())
rc = main(["train", "--config", sys.argv[3]])
shutil.copytree(disk / "run", out / "run")
torch.save(pipnet_to_official_state(create_model("{backbone}", 2, num_features=8)), out / "official.pt")
rc_convert = main(["convert", str(out / "official.pt"), "--backbone", "{backbone}", "--out", str(disk / "converted")])
(out / "rc").write_text(f"{{rc}} {{rc_convert}}")
"""


@pytest.mark.skipif(not shutil.which("unshare") or not sys.platform.startswith("linux"), reason="needs Linux unshare")
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    """A real full disk: a 32 MB tmpfs mounted in a private mount namespace (needs root or user namespaces)."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir(), out.mkdir()
    (tmp_path / "run.yaml").write_text(dump_config(tiny_config(disk / "run", **EPOCHS)))
    (tmp_path / "driver.py").write_text(textwrap.dedent(_DRIVER).format(backbone=TINY_BACKBONE))
    script = (f"mount -t tmpfs -o size=32m tmpfs {disk} || exit 77; "
              f"exec {sys.executable} {tmp_path / 'driver.py'} {disk} {out} {tmp_path / 'run.yaml'}")
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    proc = subprocess.run([*unshare, "sh", "-c", script], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode == 77 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[-200:]})")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rc_train, rc_convert = (int(v) for v in (out / "rc").read_text().split())
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert_one_error_line(rc_train, lines[0], "pipnet train: error: could not write the checkpoint",
                          "last.pt (No space left on device)", "the previous checkpoint is intact")
    assert_one_error_line(rc_convert, lines[1], "pipnet convert: error: could not write",
                          "model.safetensors", "No space left on device")
    checkpoint = load_checkpoint(out / "run" / "checkpoints" / "last.pt")
    assert checkpoint["epochs_done"] == 1
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == ["last.pt"]  # no temporary left
    assert _rows(out / "run") == 2  # epoch 2's row was written; resuming drops it (checkpoint: 1 epoch done)
