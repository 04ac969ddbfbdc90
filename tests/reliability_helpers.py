"""Shared pieces of the reliability tests (issue #8): running the command line and tiny runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipnet.core.data_config import DataConfig, PlantedConfig
from pipnet.core.train_config import ModelOptions, RuntimeConfig, ScheduleConfig, TrainConfig

#: A tiny timm test network: a run of a few epochs takes seconds on a CPU and its checkpoint ~3 MB.
TINY_BACKBONE = "timm/test_convnext"
#: The same with BatchNorm (running statistics that a NaN batch could poison).
TINY_BN_BACKBONE = "timm/test_resnet"


def tiny_config(out: Path, backbone: str = TINY_BACKBONE, **schedule) -> TrainConfig:
    """A planted-parts run of 3 classes x 8 images at 32 x 32, deterministic, without progress bars."""
    return TrainConfig(
        out=str(out),
        model=ModelOptions(backbone=backbone, pretrained=False, num_features=8),
        data=DataConfig(
            image_size=32,
            planted=PlantedConfig(num_classes=3, train_per_class=8, test_per_class=2, ood_images=0, multi_images=0, size=32),
        ),
        schedule=ScheduleConfig(
            **{"epochs_pretrain": 1, "epochs": 2, "freeze_epochs": 1, "classifier_only_epochs": 1,
               "batch_size_pretrain": 8, "batch_size": 8, **schedule}
        ),
        runtime=RuntimeConfig(precision="fp32", progress=False, deterministic=True),  # the same numbers on every CPU kind
    )


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """``pipnet ARGS`` in this process: (exit status, stderr). A traceback would fail the calling test."""
    from pipnet.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse / jsonargparse usage errors
        rc = e.code if isinstance(e.code, int) else 1
    return rc, capsys.readouterr().err


def assert_one_error_line(rc: int, err: str, *needles: str) -> str:
    """Exit status 2, no traceback, exactly one ``error:`` line, which contains every needle; returns it."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write_image(path: Path, size: tuple[int, int] = (16, 16), seed: int = 0, fmt: str | None = None) -> Path:
    """A small random RGB image (format from the suffix unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def image_folder(root: Path, classes=("cat", "dog"), n: int = 4, size=(16, 16)) -> Path:
    """``root/train/<class>/img_j.png``: a valid ImageFolder tree."""
    for k, name in enumerate(classes):
        for j in range(n):
            write_image(root / "train" / name / f"img_{j}.png", size=size, seed=10 * k + j)
    return root


def subprocess_env() -> dict[str, str]:
    """The environment of a ``python -m pipnet`` child: unbuffered output, one CPU thread (see ``one_thread``)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny models run ~10x faster on a shared 2-core machine, and runs compare exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
