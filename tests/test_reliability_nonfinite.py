"""Numerical failure (issue #8): a real NaN or Inf loss stops training with a message naming the loss part
and keeps the last good checkpoint; ``on_nonfinite="skip"`` skips such batches without poisoning the model."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from reliability_helpers import TINY_BN_BACKBONE, assert_one_error_line, one_thread, run_cli, tiny_config  # noqa: F401 (one_thread: autouse)
from torch.utils.data import Dataset

from pipnet.data import build_data
from pipnet.train import train
from pipnet.train.checkpoint import load_checkpoint
from pipnet.core.train_config import dump_config
from pipnet.train.engine import NonFiniteLossError


class NaNViews(Dataset):
    """Training items of ``base``; once ``after`` items have been read, the images ``bad`` come out as NaN."""

    def __init__(self, base: Dataset, bad: set[int], after: int = 0):
        self.base, self.bad, self.after, self.reads = base, bad, after, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        view1, view2, label = self.base[i]
        self.reads += 1
        if i in self.bad and self.reads > self.after:
            view1, view2 = torch.full_like(view1, float("nan")), torch.full_like(view2, float("inf"))
        return view1, view2, label


def _bundle(config, bad: set[int] | None = None, after: int = 0):
    data = build_data(config.data)
    views = NaNViews(data.train, set(range(len(data.train))) if bad is None else bad, after)
    return dataclasses.replace(data, train=views, pretrain=views)


def _finite(tensors) -> bool:
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_nan_images_after_an_epoch_stop_training_and_keep_the_last_checkpoint(tmp_path):
    config = tiny_config(tmp_path / "run", epochs_pretrain=2)
    data = _bundle(config, after=24)  # the first epoch reads all 24 images, then every image is NaN
    with pytest.raises(NonFiniteLossError) as err:
        train(config, data=data)
    message = str(err.value)
    assert "pretrain epoch 2 step 1" in message and "'align'" in message and "'tanh'" in message, message
    assert "checkpoint" in message and "on_nonfinite" in message
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert checkpoint["epochs_done"] == 1 and _finite(checkpoint["model"].values())
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 1 + 1
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_huge_learning_rate_stops_training_through_the_cli(tmp_path, capsys):
    """A learning rate of 1e38 turns weights into inf at the first step: the next step's loss is NaN."""
    (tmp_path / "run.yaml").write_text(dump_config(tiny_config(tmp_path / "run")))
    rc, err = run_cli(capsys, "train", "--config", tmp_path / "run.yaml", "--optim.lr_block", "1e38")
    assert_one_error_line(rc, err, "non-finite loss at pretrain epoch 1 step 2", "'align'", "on_nonfinite")


def test_skip_mode_skips_nan_batches_without_poisoning_batchnorm(tmp_path, caplog):
    config = tiny_config(tmp_path / "run", backbone=TINY_BN_BACKBONE, epochs=1)
    config.runtime.on_nonfinite = "skip"
    with caplog.at_level(logging.WARNING):
        result = train(config, data=_bundle(config, bad={0}))  # the batch holding image 0 is NaN, every epoch
    skipped = [r for r in caplog.records if "batch skipped" in r.getMessage()]
    assert len(skipped) == 2  # one per epoch
    model = result.model
    assert _finite(model.parameters()) and _finite(model.buffers())
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    assert result.metrics is not None and result.metrics.top1_accuracy == result.metrics.top1_accuracy  # not NaN


def test_skip_mode_stops_when_a_whole_epoch_is_non_finite(tmp_path):
    config = tiny_config(tmp_path / "run", epochs_pretrain=2)
    config.runtime.on_nonfinite = "skip"
    with pytest.raises(NonFiniteLossError, match="every batch of pretrain epoch 2"):
        train(config, data=_bundle(config, after=24))
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epochs_done"] == 1



def test_the_guard_names_the_first_bad_step_and_its_parts():
    """The stop mode records bad steps on the device and looks only every log_every steps."""
    from pipnet.train.step import NonFiniteGuard as _NonFiniteGuard
    from pipnet.train.phases import plan_epochs

    plan = plan_epochs(tiny_config("unused").schedule)[0]
    guard = _NonFiniteGuard(torch.device("cpu"))
    one, nan, inf = torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))
    guard.record(0, {"loss": one, "align": one, "tanh": one})
    guard.raise_if_bad(plan)  # all finite so far: nothing to say
    guard.record(1, {"loss": nan, "align": one, "tanh": nan})
    guard.record(2, {"loss": inf, "align": inf, "tanh": one})
    with pytest.raises(NonFiniteLossError, match=r"pretrain epoch 1 step 2: part\(s\) \['tanh'\]"):
        guard.raise_if_bad(plan)
