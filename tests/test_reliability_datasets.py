"""Bad data sets (issue #8), through the real command line: exit status 2 and one line saying what is
wrong and what was expected, before any training starts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image
from reliability_helpers import assert_one_error_line, image_folder, one_thread, run_cli, tiny_config, write_image  # noqa: F401 (one_thread: autouse)

from pipnet.data import read_cub
from pipnet.model import create_model
from pipnet.core.train_config import dump_config


def _train(capsys, tmp_path: Path, source: str, root: Path) -> tuple[int, str]:
    (tmp_path / "run.yaml").write_text(dump_config(tiny_config(tmp_path / "run")))
    return run_cli(capsys, "train", "--config", tmp_path / "run.yaml", "--data.source", source, "--data.root", root)


# ---- image folders -----------------------------------------------------------------------------------


def test_missing_data_folder(tmp_path, capsys):
    rc, err = _train(capsys, tmp_path, "folder", tmp_path / "nowhere")
    assert_one_error_line(rc, err, "nowhere does not exist", "expected", "train/<class>/<images>")
    assert not (tmp_path / "run").exists()  # bad data fails before a run folder is made


def test_missing_train_folder(tmp_path, capsys):
    (tmp_path / "data" / "training").mkdir(parents=True)
    rc, err = _train(capsys, tmp_path, "folder", tmp_path / "data")
    assert_one_error_line(rc, err, "has no train/ folder", "expected")


def test_images_without_class_folders(tmp_path, capsys):
    write_image(tmp_path / "data" / "train" / "a.png")
    rc, err = _train(capsys, tmp_path, "folder", tmp_path / "data")
    assert_one_error_line(rc, err, "no class subfolders", "1 images lie directly in it", "one folder per class")


def test_empty_class_folder(tmp_path, capsys):
    root = image_folder(tmp_path / "data")
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "readme.txt").write_text("photos to come")
    rc, err = _train(capsys, tmp_path, "folder", root)
    assert_one_error_line(rc, err, str(root / "train" / "emu"), "has no images", ".jpg")


def test_test_classes_differ_from_train(tmp_path, capsys):
    root = image_folder(tmp_path / "data", classes=("cat", "dog"))
    write_image(root / "test" / "cat" / "a.png")
    write_image(root / "test" / "cow" / "b.png")
    rc, err = _train(capsys, tmp_path, "folder", root)
    assert_one_error_line(rc, err, "differ from those of train/", "expected ['cat', 'dog']", "missing: ['dog']",
                          "extra: ['cow']")


# ---- CUB-200-2011 ------------------------------------------------------------------------------------

PARTS = ["back", "beak", "left eye", "right eye"]


def _cub(root: Path, locs: dict[tuple[int, int], tuple[float, float]] | None = None) -> Path:
    """A 4-image, 2-class CUB folder; ``locs`` overrides visible part locations {(image, part): (x, y)}."""
    (root / "parts").mkdir(parents=True)
    files: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes", "locs")}
    for image_id in range(1, 5):
        rel = f"00{(image_id + 1) // 2}.bird/b{image_id}.jpg"
        write_image(root / "images" / rel, size=(40, 30), seed=image_id)
        files["images"].append(f"{image_id} {rel}")
        files["labels"].append(f"{image_id} {(image_id + 1) // 2}")
        files["split"].append(f"{image_id} {image_id % 2}")
        files["boxes"].append(f"{image_id} 5.0 4.0 20.0 15.0")
        for part_id in range(1, len(PARTS) + 1):
            x, y = (locs or {}).get((image_id, part_id), (6.0 + part_id, 8.0))
            files["locs"].append(f"{image_id} {part_id} {x} {y} 1")
    (root / "images.txt").write_text("\n".join(files["images"]) + "\n")
    (root / "classes.txt").write_text("1 001.bird\n2 002.bird\n")
    (root / "image_class_labels.txt").write_text("\n".join(files["labels"]) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(files["split"]) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(files["boxes"]) + "\n")
    (root / "parts" / "parts.txt").write_text("".join(f"{k + 1} {p}\n" for k, p in enumerate(PARTS)))
    (root / "parts" / "part_locs.txt").write_text("\n".join(files["locs"]) + "\n")
    return root


@pytest.mark.parametrize("name", ["images.txt", "classes.txt", "bounding_boxes.txt", "parts/part_locs.txt"])
def test_cub_missing_text_file(tmp_path, capsys, name):
    root = _cub(tmp_path / "CUB_200_2011")
    (root / name).unlink()
    rc, err = _train(capsys, tmp_path, "cub", root)
    assert_one_error_line(rc, err, str(root / name), "is missing", "expected '<")


def test_cub_missing_image_file(tmp_path, capsys):
    root = _cub(tmp_path / "CUB_200_2011")
    (root / "images" / "002.bird" / "b3.jpg").unlink()
    rc, err = _train(capsys, tmp_path, "cub", root)
    assert_one_error_line(rc, err, "002.bird/b3.jpg", "images.txt", "missing")


def test_cub_keypoint_with_a_negative_or_non_numeric_coordinate(tmp_path, capsys):
    root = _cub(tmp_path / "a", locs={(2, 3): (-12.0, 8.0)})
    rc, err = _train(capsys, tmp_path, "cub", root)
    assert_one_error_line(rc, err, "part_locs.txt", "image 2, part 3", "(-12.0, 8.0)", "expected")
    root = _cub(tmp_path / "b")
    locs = root / "parts" / "part_locs.txt"
    locs.write_text(locs.read_text().replace("3 2 8.0 8.0 1", "3 2 8.0 eight 1"))
    rc, err = _train(capsys, tmp_path, "cub", root)
    assert_one_error_line(rc, err, "part_locs.txt", "eight", "expected")


def test_cub_malformed_number(tmp_path, capsys):
    root = _cub(tmp_path / "CUB_200_2011")
    (root / "bounding_boxes.txt").write_text((root / "bounding_boxes.txt").read_text().replace("3 5.0", "3 five"))
    rc, err = _train(capsys, tmp_path, "cub", root)
    assert_one_error_line(rc, err, "bounding_boxes.txt, line 3", "'3 five 4.0 20.0 15.0'", "expected '<image_id> <x>")


def test_cub_skip_mode_leaves_out_missing_and_corrupt_images(tmp_path, caplog):
    root = _cub(tmp_path / "CUB_200_2011")
    (root / "images" / "002.bird" / "b3.jpg").unlink()
    (root / "images" / "002.bird" / "b4.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with caplog.at_level(logging.WARNING):
        meta = read_cub(root, bad_images="skip")
    assert meta.paths == ["001.bird/b1.jpg", "001.bird/b2.jpg"] and meta.labels == [0, 0]
    assert "skipped 2 of 4 CUB images" in caplog.text and "b4.jpg" in caplog.text


def test_cub_keypoint_of_an_unknown_image(tmp_path, capsys):
    root = _cub(tmp_path / "CUB_200_2011")
    with (root / "parts" / "part_locs.txt").open("a") as f:
        f.write("9 1 5.0 5.0 1\n")
    rc, err = _train(capsys, tmp_path, "cub", root)
    assert_one_error_line(rc, err, "part_locs.txt", "image 9", "images.txt")


def test_cub_keypoint_outside_its_image(tmp_path, capsys):
    """Found when the part purity of a model is computed (the image's size is read then)."""
    root = _cub(tmp_path / "CUB_200_2011", locs={(4, 2): (41.5, 8.0)})  # image 4 is 40 x 30
    model = create_model("timm/test_convnext", 2, num_features=8, image_size=32)
    model.save_pretrained(tmp_path / "model")
    rc, err = run_cli(capsys, "evaluate", tmp_path / "model", "--data.source", "cub", "--data.root", root,
                      "--data.image_size", "32")
    assert_one_error_line(rc, err, "part_locs.txt", "002.bird/b4.jpg", "(41.5, 8.0)", "40 x 30")
    assert Image.open(root / "images" / "002.bird" / "b4.jpg").size == (40, 30)
