"""Bad images (issue #8): every file decodes to RGB or fails with one clear error naming it, in any process."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import assert_one_error_line, image_folder, one_thread, run_cli, tiny_config, write_image  # noqa: F401 (one_thread: autouse)

from pipnet.data import ImageLoadError, load_image
from pipnet.data.augment import TwoViewTransform, eval_transform
from pipnet.core.train_config import dump_config


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with one empty data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file of each kind that cannot be decoded, keyed by what is wrong with it."""
    folder.mkdir(parents=True, exist_ok=True)
    png = write_image(folder / "good.png", size=(64, 48)).read_bytes()
    jpeg = write_image(folder / "good.jpg", size=(64, 48)).read_bytes()
    files = {
        "truncated png": (folder / "truncated.png", png[: len(png) // 2]),
        "truncated jpeg": (folder / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "zero bytes": (folder / "empty.png", b""),
        "text": (folder / "notes.jpg", b"these are my notes, not a photo\n"),
        "html": (folder / "page.png", b"<!doctype html><html><body>404</body></html>"),
        "bomb header": (folder / "bomb.png", _png_header_only(40_000, 40_000)),  # 1.6 G pixels
    }
    for path, data in files.values():
        path.write_bytes(data)
    # A real, valid 1-bit PNG of 10000 x 9000 = 90 M pixels: just over PIL's limit, a few kB on disk.
    Image.new("1", (10_000, 9_000)).save(folder / "large.png")
    return {**{k: p for k, (p, _) in files.items()}, "decompression bomb": folder / "large.png"}


def test_undecodable_files_raise_an_error_naming_the_file(tmp_path):
    for kind, path in _bad_files(tmp_path).items():
        with pytest.raises(ImageLoadError) as err:
            load_image(path)
        assert err.value.path == str(path) and path.name in str(err.value), kind
    assert "decompression bomb" in str(pytest.raises(ImageLoadError, load_image, tmp_path / "large.png").value)
    assert "empty" in str(pytest.raises(ImageLoadError, load_image, tmp_path / "empty.png").value)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # the global guard is left as it was


def _modes(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    images = {
        "L.png": rgb.convert("L"),
        "1.png": rgb.convert("1"),
        "P.gif": rgb.convert("P"),
        "RGBA.png": rgb.convert("RGBA"),
        "LA.png": rgb.convert("LA"),
        "CMYK.jpg": rgb.convert("CMYK"),
        "I16.png": Image.fromarray(rng.integers(0, 65536, (10, 12), dtype=np.uint16)),
        "F.tif": Image.fromarray(rng.random((10, 12), dtype=np.float32)),
        "1x1.png": rgb.resize((1, 1)),
        "3x2.jpg": rgb.resize((3, 2)),
        "2x3.bmp": rgb.resize((2, 3)),
        "1x40.webp": rgb.resize((1, 40)),
    }
    paths = {}
    for name, img in images.items():
        paths[name] = folder / name
        img.save(paths[name])
    transparent = rgb.convert("P")
    transparent.info["transparency"] = 0
    transparent.save(folder / "P-transparent.png", transparency=0)
    paths["P-transparent.png"] = folder / "P-transparent.png"
    return paths


def test_unusual_modes_and_tiny_images_decode_and_transform(tmp_path):
    two_views, plain = TwoViewTransform(32, "default", delta=8), eval_transform(32)
    for name, path in _modes(tmp_path).items():
        img = load_image(path)
        assert img.mode == "RGB" and img.size == Image.open(path).size, name
        view1, view2 = two_views(img)
        assert view1.shape == view2.shape == plain(img).shape == (3, 32, 32), name


def _train_args(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    cfg = tiny_config(tmp_path / "run", epochs_pretrain=1, epochs=1)
    (tmp_path / "run.yaml").write_text(dump_config(cfg))
    return ["train", "--config", str(tmp_path / "run.yaml"), "--data.source", "folder", "--data.root", str(root),
            "--data.val_fraction", "0", *extra]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_image_in_a_loader_worker_reaches_the_user_as_one_line_naming_it(tmp_path, capsys, workers):
    root = image_folder(tmp_path / "data", n=4)
    (root / "train" / "dog" / "img_2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    rc, err = run_cli(capsys, *_train_args(tmp_path, root, "--runtime.num_workers", str(workers)))
    assert_one_error_line(rc, err, "img_2.png", "bad_images")
    assert "DataLoader worker" not in err


def test_skip_mode_leaves_bad_images_out_and_logs_the_count(tmp_path, capsys, caplog):
    root = image_folder(tmp_path / "data", n=4)
    for path in list(_bad_files(tmp_path / "bad").values())[:3]:
        path.rename(root / "train" / "dog" / path.name)
    with caplog.at_level(logging.WARNING):
        rc, err = run_cli(capsys, *_train_args(tmp_path, root, "--data.bad_images", "skip", "--runtime.num_workers", "1"))
    assert rc == 0, err
    assert "skipped 3 of 11 images" in caplog.text
    assert "truncated.png" in caplog.text and (tmp_path / "run" / "model.safetensors").is_file()
