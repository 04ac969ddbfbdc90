"""CUB-200-2011 in its native layout, on a tiny fixture written in CUB's format (3 classes, 6 JPEG images)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pipnet.data import CUB, DataConfig, DataError, EvalDataset, build_data, read_cub

CUB_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]
MERGED = ["back", "beak", "belly", "breast", "crown", "forehead", "eye", "leg", "wing", "nape", "tail", "throat"]
CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
BOX = (10.0, 8.0, 30.0, 24.0)  # x, y, width, height of image 1


def _box(image_id: int) -> tuple[float, float, float, float]:
    x, y, w, h = BOX
    return x + image_id, y, w, h + image_id


@pytest.fixture
def cub_root(tmp_path) -> Path:
    root = tmp_path / "CUB_200_2011"
    (root / "parts").mkdir(parents=True)
    images, labels, split, boxes, locs = [], [], [], [], []
    for image_id in range(1, 7):
        label = (image_id - 1) // 2 + 1
        rel = f"{CLASSES[label - 1]}/bird_{image_id}.jpg"
        (root / "images" / CLASSES[label - 1]).mkdir(parents=True, exist_ok=True)
        x, y, w, h = _box(image_id)
        img = Image.new("RGB", (60 + 5 * image_id, 50), (0, 0, 220))
        ImageDraw.Draw(img).rectangle((x, y, x + w - 1, y + h - 1), fill=(220, 0, 0))
        img.save(root / "images" / rel, quality=95)
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {label}")
        split.append(f"{image_id} {image_id % 2}")  # odd ids train
        boxes.append(f"{image_id} {x} {y} {w} {h}")
        visible = {1: (5.0, 5.0), 7: (x + 4, y + 3), 11: (x + 9, y + 3), 8: (x + 12.5, y + 20)}  # back is outside
        for part_id in range(1, 16):
            px, py = visible.get(part_id, (0.0, 0.0))
            locs.append(f"{image_id} {part_id} {px} {py} {int(part_id in visible)}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "classes.txt").write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(CLASSES)))
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "parts" / "parts.txt").write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(CUB_PARTS)))
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    return root


def test_parsing_classes_split_and_merged_parts(cub_root):
    meta = read_cub(cub_root)
    assert meta.classes == CLASSES
    assert meta.labels == [0, 0, 1, 1, 2, 2]
    assert meta.is_train == [True, False, True, False, True, False]
    assert meta.part_names == MERGED
    assert meta.boxes[2].tolist() == list(_box(3))
    kp = meta.keypoints[0]  # image 1: back, left eye, left leg, right eye (visible only), merged ids
    assert sorted(kp[:, 0].long().tolist()) == [0, 6, 6, 7]
    eyes = kp[kp[:, 0] == 6][:, 1].tolist()
    assert sorted(eyes) == [11 + 4, 11 + 9]  # both eyes kept under the merged id


def test_splits_and_full_images(cub_root):
    train, test = CUB(cub_root, "train", crop=False), CUB(cub_root, "test", crop=False)
    assert len(train) == len(test) == 3
    assert train.targets == [0, 1, 2] and test.targets == [0, 1, 2]
    assert train.num_parts == 12 and train.classes == CLASSES
    img, label = train[1]
    assert img.size == (60 + 5 * 3, 50) == train.image_size(1) and label == 1
    assert torch.allclose(train.keypoints(0), read_cub(cub_root).keypoints[0])


def test_bbox_crop_and_keypoints_through_crop_and_resize(cub_root):
    cropped = CUB(cub_root, "train", crop=True)
    x, y, w, h = _box(1)
    img = cropped.image(0)
    assert img.size == (w, h) == cropped.image_size(0)
    pixels = np.asarray(img).astype(int)
    assert np.abs(pixels[2:-2, 2:-2] - [220, 0, 0]).max() < 40  # only the red box is left
    kp = cropped.keypoints(0)
    assert sorted(kp[:, 0].long().tolist()) == [6, 6, 7]  # the back lay outside the box: dropped
    assert torch.allclose(kp[kp[:, 0] == 7][0, 1:], torch.tensor([12.5, 20.0]))
    assert sorted(kp[kp[:, 0] == 6][:, 1].tolist()) == [4.0, 9.0]
    resized = EvalDataset(cropped, image_size=20).keypoints(0)
    leg = resized[resized[:, 0] == 7][0, 1:]
    assert torch.allclose(leg, torch.tensor([12.5 * 20 / w, 20.0 * 20 / h]))
    full = EvalDataset(CUB(cub_root, "train", crop=False), image_size=20).keypoints(0)
    back = full[full[:, 0] == 0][0, 1:]
    assert torch.allclose(back, torch.tensor([5.0 * 20 / 65, 5.0 * 20 / 50]))


@pytest.mark.parametrize("name", ["bounding_boxes.txt", "images.txt", "parts/part_locs.txt", "parts/parts.txt",
                                  "train_test_split.txt"])
def test_missing_file_is_named(cub_root, name):
    (cub_root / name).unlink()
    with pytest.raises(DataError) as err:
        read_cub(cub_root)
    assert name in str(err.value) and "expected" in str(err.value)


def test_incomplete_and_malformed_files(cub_root):
    lines = (cub_root / "bounding_boxes.txt").read_text().splitlines()
    (cub_root / "bounding_boxes.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"bounding_boxes.txt has no line for 1 image ids \(first: \[6\]\)"):
        read_cub(cub_root)
    (cub_root / "bounding_boxes.txt").write_text("\n".join(lines[:-1] + ["6 1 2"]) + "\n")
    with pytest.raises(DataError, match="line 6"):
        read_cub(cub_root)
    with pytest.raises(DataError, match="does not exist"):
        read_cub(cub_root / "missing")


def test_build_data_uses_crops_for_classification_and_full_images_elsewhere(cub_root):
    bundle = build_data(DataConfig(source="cub", root=str(cub_root), image_size=32, preset="birds"))
    assert bundle.classes == CLASSES and bundle.num_parts == 12 and bundle.part_names == MERGED
    assert bundle.train.base.crop and bundle.train.transform.delta == 8
    assert not bundle.pretrain.base.crop and bundle.pretrain.transform.delta == 32
    assert not bundle.projection.base.crop and bundle.projection.base.split == "train"
    assert bundle.test.base.crop and not bundle.test_projection.base.crop
    purity = bundle.purity_sets()  # purity is measured on full images, train and test
    assert purity.keys() == {"train", "test"}
    assert purity["train"] is bundle.projection and purity["test"] is bundle.test_projection
    view1, view2, label = bundle.train[2]
    assert view1.shape == view2.shape == (3, 32, 32) and label == 2
    x, label = bundle.test[0]
    assert x.shape == (3, 32, 32) and label == 0
    assert bundle.test_projection.raw_image(0).size == (60 + 5 * 2, 50)
    assert bundle.test.keypoints(0).shape[1] == 3
