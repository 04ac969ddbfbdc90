"""Device choice has one owner (:func:`pipnet.evaluation.inference.choose_device`): ``auto`` and the names it accepts,
and a device the machine lacks refused with one line by every command that takes one."""

from __future__ import annotations

import pytest
import torch

from pipnet.evaluation.inference import DeviceError, choose_device
from pipnet.model import create_model

from reliability_helpers import TINY_BACKBONE, assert_one_error_line, run_cli, write_image

HAS_CUDA = torch.cuda.is_available()


def test_auto_is_cuda_when_present_else_the_cpu():
    expected = torch.device("cuda") if HAS_CUDA else torch.device("cpu")
    assert choose_device("auto") == choose_device(None) == choose_device() == expected
    assert choose_device("cpu") == choose_device(torch.device("cpu")) == torch.device("cpu")


def test_unknown_names_are_refused_in_one_line():
    for name in ("gpu", "", "cuda:x"):
        with pytest.raises(DeviceError, match="unknown device .*: give auto, cpu, cuda or cuda:N"):
            choose_device(name)


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    for name in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(DeviceError, match="this machine has no CUDA GPU"):
            choose_device(name)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_a_gpu_index_past_the_last_is_refused():
    count = torch.cuda.device_count()
    assert choose_device(f"cuda:{count - 1}") == torch.device("cuda", count - 1)
    with pytest.raises(DeviceError, match=f"has {count} CUDA GPU"):
        choose_device(f"cuda:{count}")


@pytest.mark.parametrize("command", ["evaluate", "predict", "refit", "train"])
def test_every_command_refuses_a_bad_device_with_one_line(command, tmp_path, capsys):
    create_model(TINY_BACKBONE, 2, num_features=8, image_size=32).save_pretrained(tmp_path / "model")
    image = write_image(tmp_path / "a.png")
    args = {
        "evaluate": ["evaluate", tmp_path / "model", "--device", "gpu"],
        "predict": ["predict", tmp_path / "model", image, "--device", "gpu"],
        "refit": ["refit", tmp_path / "model", "--disable", "1", "--out", tmp_path / "refit", "--device", "gpu"],
        "train": ["train", "--out", tmp_path / "run", "--runtime.device", "gpu"],
    }[command]
    rc, err = run_cli(capsys, *args)
    assert_one_error_line(rc, err, "unknown device 'gpu'")
    assert not (tmp_path / "run").exists() and not (tmp_path / "refit").exists()  # refused before anything is made
