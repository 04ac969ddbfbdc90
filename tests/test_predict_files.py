"""``pipnet predict`` accounts for every file (issue 24): one row per file found, with a status and the reason
for each that cannot be read, any file name written safely, and the table written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from reliability_helpers import TINY_BACKBONE, one_thread  # noqa: F401 (one_thread: autouse)

from pipnet import create_model
from pipnet.cli import main
from pipnet.data.errors import ImageLoadError
from pipnet.data.images import load_image, max_pixels, megapixels, set_max_pixels

ROOT = os.geteuid() == 0  # root reads any file: "permission denied" cannot be made real with chmod


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    create_model(TINY_BACKBONE, num_classes=3, num_features=8, image_size=32, pretrained=False).save_pretrained(folder)
    return folder


def _mixed_folder(folder: Path, good: int) -> dict[bytes, str | None]:
    """``good`` small images and one file of each bad kind; returns {file name as bytes: expected reason or None}."""
    folder.mkdir()
    expected: dict[bytes, str | None] = {}
    for i in range(good):
        name = f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.new("RGB", (24 + i % 9, 20 + i % 7), (i % 256, 80, 160)).save(folder / name)
        expected[name.encode()] = None
    png = (folder / "img001.png").read_bytes()
    bad = {
        b"cut.png": (png[: len(png) // 2], "truncated"),
        b"notes.png": (b"just some notes\n", "not an image"),
        b"empty.jpg": (b"", "empty"),
        b"drawing.png": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unsupported format (EPS)"),
        b"caf\xe9-bad.png": (png, None),  # a Latin-1 name: not valid UTF-8, a good image
        b"caf\xe9-cut.png": (png[: len(png) // 2 + 1], "truncated"),
    }
    for name, (content, reason) in bad.items():
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(content)
        expected[name] = reason
    os.symlink(folder / "gone.png", folder / "dangling.png")
    expected[b"dangling.png"] = "broken symlink"
    os.symlink(folder / "loop.png", folder / "loop.png")
    expected[b"loop.png"] = "broken symlink (a loop"
    os.mkfifo(folder / "pipe.png")  # opening it to read would wait forever
    expected[b"pipe.png"] = "not a regular file: a FIFO"
    (folder / "sub").mkdir()
    os.symlink(folder, folder / "sub" / "up")  # a link back up the tree: walked once, not forever
    locked = folder / "locked.png"
    locked.write_bytes(png)
    locked.chmod(0)
    expected[b"locked.png"] = None if ROOT else "permission denied"
    (folder / ".hidden.png").write_bytes(png)  # hidden entries are skipped, as documented
    return expected


def test_predict_over_a_mixed_folder_gives_one_row_per_file(model_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    expected = _mixed_folder(folder, good=290)
    assert len(expected) == 300
    out = tmp_path / "table.csv"
    out.write_text("the previous table\n")
    assert main(["predict", str(model_dir), str(folder), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == len(expected) == 300  # exactly one row per file
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert len(by_name) == 300
    for raw, reason in expected.items():
        shown = raw.decode("utf-8", errors="backslashreplace")  # b"caf\xe9" is written as the text caf\xe9
        row = by_name[shown]
        if reason is None:
            assert row["status"] in ("ok", "unknown", "abstained") and row["error"] == "", row
            assert row["predicted_class"] or row["status"] == "abstained", row
        else:
            assert row["status"] == "error" and reason in row["error"] and row["predicted_class"] == "", (raw, row)
    assert "caf\\xe9-bad.png" in by_name and "cannot read" in err and "caf\\xe9-cut.png" in err

    # --skip-errors leaves the bad ones out; JSON lines carry the status too.
    assert main(["predict", str(model_dir), str(folder), "--skip-errors", "--format", "jsonl", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == sum(r is None for r in expected.values())
    assert {x["status"] for x in lines} <= {"ok", "unknown", "abstained"}


@pytest.mark.skipif(ROOT, reason="root reads a file whatever its permissions")
def test_an_unreadable_file_says_permission_denied(tmp_path):
    path = tmp_path / "locked.png"
    Image.new("RGB", (8, 8)).save(path)
    path.chmod(0)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(path)


def test_large_images_are_reduced_while_decoding_and_the_pixel_limit_is_checked_first(tmp_path):
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(tmp_path / "big.jpg", quality=80)
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(tmp_path / "big.png")
    for name, full in (("big.jpg", (4000, 3000)), ("big.png", (3000, 2000))):  # JPEG: draft mode; PNG: Image.reduce
        image = load_image(tmp_path / name, reduce_to=256)
        assert 256 <= min(image.size) < 512 and abs(image.width / image.height - full[0] / full[1]) < 0.01, image.size
        assert image.getpixel((5, 5)) == pytest.approx((10, 200, 30), abs=3)
    assert load_image(tmp_path / "big.png").size == (3000, 2000)  # no reduction unless asked


def test_the_pixel_limit_is_pillows_guard_raised_or_lowered(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # put back after the test
    assert megapixels(89_478_485) == "89.48" and megapixels(200_000_000) == "200"  # Pillow's default, shown as it is
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(big)  # 6 megapixels
    set_max_pixels(5_000_000)  # lowered: refused from the header, with the real numbers
    assert max_pixels() == Image.MAX_IMAGE_PIXELS == 5_000_000
    with pytest.raises(ImageLoadError, match=r"3000 x 2000 = 6.0 megapixels, more than the limit of 5 "):
        load_image(big)
    Image.MAX_IMAGE_PIXELS = 2_500_000  # as if Pillow's own limit were this: 6 MP is more than twice it,
    with pytest.raises(ImageLoadError, match=r"6.0 megapixels, more than the limit of 2.5 "):  # which Pillow
        load_image(big)  # itself refuses while opening
    set_max_pixels(7_000_000)  # raised above it: accepted, decoded whole
    assert load_image(big).size == (3000, 2000)
