"""Fuzzing (issue #8): random bytes and mutated real images never hang or crash ``load_image`` or
``pipnet explain``; every failure is an ``ImageLoadError`` / a line naming the file and its reason.

The suite runs 200 ``load_image`` cases and 10 ``explain`` cases. A longer run:

    PIPNET_FUZZ_CASES=5000 PIPNET_FUZZ_SEED=1 .venv/bin/pytest tests/test_reliability_fuzz.py

(``explain`` then runs one case in 20).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import random
import sys
import time

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import assert_one_error_line, one_thread, run_cli  # noqa: F401 (one_thread: autouse)

from pipnet.data import ImageLoadError, load_image
from pipnet.model import create_model

CASES = int(os.environ.get("PIPNET_FUZZ_CASES", "200"))
SEED = int(os.environ.get("PIPNET_FUZZ_SEED", "0"))
HANG_S = 30


@contextlib.contextmanager
def _watchdog():
    """A case that takes HANG_S is a hang: dump every thread's stack and exit, even from inside C code."""
    faulthandler.dump_traceback_later(HANG_S, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _seeds() -> list[tuple[str, bytes]]:
    """Real files written by PIL: (suffix, bytes), in the formats people feed to a model."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out = []
    for suffix, img, options in [
        (".png", rgb, {}), (".png", rgb.convert("P"), {}), (".png", rgb.convert("LA"), {}),
        (".jpg", rgb, {"quality": 85}), (".jpg", rgb, {"progressive": True}), (".jpg", rgb.convert("CMYK"), {}),
        (".gif", rgb.convert("P"), {}), (".bmp", rgb, {}), (".webp", rgb, {}), (".tif", rgb, {}),
    ]:
        buffer = io.BytesIO()
        img.save(buffer, format=Image.registered_extensions()[suffix], **options)
        out.append((suffix, buffer.getvalue()))
    return out


def _mutant(rng: random.Random, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes, str]:
    """(suffix, bytes, how it was made): a bit-flipped, byte-changed, truncated, spliced or random file."""
    suffix, data = rng.choice(seeds)
    data = bytearray(data)
    how = rng.choice(["bit flips", "byte changes", "truncation", "splice", "random bytes", "header + random"])
    if how == "bit flips":
        for _ in range(rng.randint(1, 8)):
            k = rng.randrange(len(data) * 8)
            data[k // 8] ^= 1 << (k % 8)
    elif how == "byte changes":
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == "truncation":
        data = data[: rng.randrange(len(data))]
    elif how == "splice":
        k = rng.randrange(len(data))
        data[k:k] = rng.randbytes(rng.randint(1, 256))
    elif how == "random bytes":
        data = bytearray(rng.randbytes(rng.randint(0, 4096)))
    else:
        data = data[: rng.choice([4, 8, 16, 64])] + bytearray(rng.randbytes(rng.randint(0, 2048)))
    return suffix, bytes(data), how


@pytest.mark.filterwarnings("ignore")  # PIL warns about some corrupt TIFF and EXIF data before failing
def test_load_image_on_random_and_mutated_files(tmp_path):
    rng, seeds = random.Random(SEED), _seeds()
    outcomes = {"decoded": 0, "refused": 0}
    slowest = 0.0
    for case in range(CASES):
        suffix, data, how = _mutant(rng, seeds)
        path = tmp_path / f"case{suffix}"
        path.write_bytes(data)
        started = time.perf_counter()
        try:
            with _watchdog():
                img = load_image(path)
        except ImageLoadError as e:
            assert e.path == str(path) and path.name in str(e), (case, how)
            outcomes["refused"] += 1
        else:
            assert img.mode == "RGB" and img.width > 0 and img.height > 0, (case, how)
            outcomes["decoded"] += 1
        slowest = max(slowest, time.perf_counter() - started)
    assert outcomes["refused"] > CASES // 4 and slowest < HANG_S, (outcomes, slowest)


@pytest.mark.filterwarnings("ignore")
def test_explain_on_random_and_mutated_files(tmp_path, capsys):
    create_model("timm/test_convnext", 2, num_features=8, image_size=32).save_pretrained(tmp_path / "model")
    rng, seeds = random.Random(SEED + 1), _seeds()
    cases = max(10, CASES // 20)
    refused = 0
    for case in range(cases):
        suffix, data, how = _mutant(rng, seeds) if case % 5 else (*rng.choice(seeds), "intact")
        path = tmp_path / f"case{case}{suffix}"
        path.write_bytes(data)
        with _watchdog():
            rc, err = run_cli(capsys, "explain", tmp_path / "model", path, "--out", tmp_path / "out")
        if rc == 0:
            assert (tmp_path / "out" / f"case{case}.png").is_file() and (tmp_path / "out" / f"case{case}.json").is_file()
        else:
            assert_one_error_line(rc, err, "none of the 1 files could be read")
            assert f"cannot read {path}: " in err and (tmp_path / "out" / f"case{case}.json").is_file()  # its error entry
            refused += 1
    assert 0 < refused < cases
