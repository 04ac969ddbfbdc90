"""CUB-200-2011 in its native layout (Wah et al. 2011), with bounding-box crops and merged part keypoints.

The root holds `images.txt`, `classes.txt`, `image_class_labels.txt`, `train_test_split.txt`,
`bounding_boxes.txt`, `parts/parts.txt`, `parts/part_locs.txt` and `images/<class>/<file>.jpg`.
As in the PIP-Net paper, classification uses images cropped to their bounding box, while pretraining and
projection use full images. CUB's 15 parts become 12: left and right eye, leg and wing are merged (both
keypoints are kept, with the merged id). Only visible keypoints are kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipnet.data.errors import DataError, ImageLoadError
from pipnet.data.images import load_image

__all__ = ["CUBMetadata", "read_cub", "merge_part_names", "CUB"]

log = logging.getLogger(__name__)

_EXPECTED = {
    "images.txt": "'<image_id> <class_folder>/<file>.jpg' per line",
    "classes.txt": "'<class_id> <class_name>' per line",
    "image_class_labels.txt": "'<image_id> <class_id>' per line",
    "train_test_split.txt": "'<image_id> <is_training_image 0/1>' per line",
    "bounding_boxes.txt": "'<image_id> <x> <y> <width> <height>' per line",
    "parts/parts.txt": "'<part_id> <part name>' per line",
    "parts/part_locs.txt": "'<image_id> <part_id> <x> <y> <visible>' per line",
}


@dataclass(frozen=True)
class CUBMetadata:
    """Everything CUB's text files say, indexed by image position (images.txt order).

    Args:
        root: the `CUB_200_2011` folder.
        classes: class names (`classes.txt` order).
        paths: image paths relative to `root/images`.
        labels: 0-based class of each image.
        is_train: whether each image belongs to the training split.
        boxes: (N, 4) float `x, y, width, height` bounding boxes.
        part_names: the merged part names (12 for CUB).
        keypoints: per image, (K, 3) float `[merged_part_id, x, y]` of the visible parts, full-image pixels.
    """

    root: Path
    classes: list[str]
    paths: list[str]
    labels: list[int]
    is_train: list[bool]
    boxes: np.ndarray
    part_names: list[str]
    keypoints: list[torch.Tensor]


def _is_number(text: str, kind: type) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _rows(root: Path, name: str, min_fields: int, max_split: int = -1, ints: int = 1, floats: int = 0) -> list[list[str]]:
    """The non-empty lines of `root/name` split on whitespace; raises `DataError` naming the file and line.

    The first `ints` fields of each line must be integers and the next `floats` numbers.
    """
    path = root / name
    if not path.is_file():
        raise DataError(f"CUB file {path} is missing (expected {_EXPECTED[name]})")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            fields = line.split(maxsplit=max_split) if max_split > 0 else line.split()
            numbers = [_is_number(f, int) for f in fields[:ints]]
            numbers += [_is_number(f, float) for f in fields[ints:ints + floats]]
            if len(fields) < min_fields or not all(numbers):
                raise DataError(f"{path}, line {n}: {line!r} does not match the expected {_EXPECTED[name]}")
            rows.append(fields)
    return rows


def _by_image(root: Path, name: str, rows: list[list[str]], ids: list[int]) -> dict[int, list[str]]:
    table = {int(r[0]): r[1:] for r in rows}
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(f"{root / name} has no line for {len(missing)} image ids (first: {missing[:5]}); "
                        f"expected {_EXPECTED[name]}")
    return table


def merge_part_names(names: list[str]) -> tuple[list[str], list[int]]:
    """Merge left/right variants: returns the merged names (first-seen order) and each original's merged id.

    `["back", "left eye", "right eye"]` -> `(["back", "eye"], [0, 1, 1])`.
    """
    merged: list[str] = []
    index = []
    for name in names:
        base = name.removeprefix("left ").removeprefix("right ")
        if base not in merged:
            merged.append(base)
        index.append(merged.index(base))
    return merged, index


def _readable(root: Path, paths: list[str]) -> list[int]:
    """Positions of the images that decode; the others are logged and counted."""
    keep = []
    for k, rel in enumerate(paths):
        try:
            load_image(root / "images" / rel)
        except ImageLoadError as e:
            log.warning("skipping unreadable image: %s", e)
            continue
        keep.append(k)
    if len(keep) < len(paths):
        log.warning("skipped %d of %d CUB images that could not be read", len(paths) - len(keep), len(paths))
    return keep


def read_cub(root: str | os.PathLike[str], bad_images: Literal["error", "skip"] = "error") -> CUBMetadata:
    """Parse CUB's text files (images are not opened, except to skip bad ones).

    Args:
        root: the extracted `CUB_200_2011` folder.
        bad_images: `error` (a listed image that is missing raises now, one that does not decode when
            read) or `skip` (decode every image now and leave out those that fail, with a warning and a count).

    Raises:
        DataError: a missing folder or file, a malformed line or number, an image without a label, split or
            box, a negative part location or one of an unlisted image, or (`error`) missing images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CUB folder {root} does not exist (expected the extracted CUB_200_2011 folder)")
    if not (root / "images").is_dir():
        raise DataError(f"CUB folder {root} has no images/ folder (expected images/<class_folder>/<file>.jpg)")
    images = _rows(root, "images.txt", 2, max_split=1)
    ids = [int(r[0]) for r in images]
    class_rows = _rows(root, "classes.txt", 2, max_split=1)
    class_ids = {int(r[0]): k for k, r in enumerate(class_rows)}
    labels_by_id = _by_image(root, "image_class_labels.txt", _rows(root, "image_class_labels.txt", 2, ints=2), ids)
    split_by_id = _by_image(root, "train_test_split.txt", _rows(root, "train_test_split.txt", 2, ints=2), ids)
    boxes_by_id = _by_image(root, "bounding_boxes.txt", _rows(root, "bounding_boxes.txt", 5, floats=4), ids)
    part_rows = _rows(root, "parts/parts.txt", 2, max_split=1)
    part_names, merged_id = merge_part_names([r[1].strip() for r in part_rows])
    part_index = {int(r[0]): merged_id[k] for k, r in enumerate(part_rows)}

    locs_path = root / "parts/part_locs.txt"
    if not locs_path.is_file():
        raise DataError(f"CUB file {locs_path} is missing (expected {_EXPECTED['parts/part_locs.txt']})")
    try:
        values = np.array(locs_path.read_text(encoding="utf-8").split(), dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{locs_path} holds a value that is not a number ({e}); "
                        f"expected {_EXPECTED['parts/part_locs.txt']}") from e
    if values.size % 5:
        raise DataError(f"{locs_path} does not have 5 numbers per line (expected {_EXPECTED['parts/part_locs.txt']})")
    locs = values.reshape(-1, 5)
    locs = locs[locs[:, 4] > 0]  # visible only
    known_ids = set(ids)
    by_image: dict[int, list[list[float]]] = {}
    for image_id, part_id, x, y, _ in locs.tolist():
        where = f"{locs_path}: image {int(image_id)}, part {int(part_id)}"
        if int(part_id) not in part_index:
            raise DataError(f"{locs_path}: part id {int(part_id)} is not listed in {root / 'parts/parts.txt'}")
        if int(image_id) not in known_ids:
            raise DataError(f"{where}: image {int(image_id)} is not listed in {root / 'images.txt'}")
        if not (np.isfinite(x) and np.isfinite(y) and x >= 0 and y >= 0):
            raise DataError(f"{where} has coordinates ({x}, {y}); expected pixels of the full image, x, y >= 0")
        by_image.setdefault(int(image_id), []).append([float(part_index[int(part_id)]), x, y])
    paths = [r[1].strip() for r in images]
    if bad_images == "skip":
        keep = _readable(root, paths)
        ids, paths = [ids[k] for k in keep], [paths[k] for k in keep]
    else:
        missing = [rel for rel in paths if not (root / "images" / rel).is_file()]
        if missing:
            raise DataError(f"{len(missing)} images listed in {root / 'images.txt'} are missing from "
                            f"{root / 'images'} (first: {missing[:3]})")

    log.info("CUB %s: %d images, %d classes, %d visible part locations", root, len(ids), len(class_rows), len(locs))
    labels = []
    for i in ids:
        class_id = int(labels_by_id[i][0])
        if class_id not in class_ids:
            raise DataError(f"{root / 'image_class_labels.txt'}: image {i} has class {class_id}, "
                            f"which {root / 'classes.txt'} does not list")
        labels.append(class_ids[class_id])
    return CUBMetadata(
        root=root,
        classes=[r[1].strip() for r in class_rows],
        paths=paths,
        labels=labels,
        is_train=[split_by_id[i][0] == "1" for i in ids],
        boxes=np.array([[float(v) for v in boxes_by_id[i][:4]] for i in ids], dtype=np.float64).reshape(-1, 4),
        part_names=part_names,
        keypoints=[torch.tensor(by_image.get(i, []), dtype=torch.float32).reshape(-1, 3) for i in ids],
    )


class CUB(Dataset):
    """One split of CUB-200-2011, full images or cropped to the bounding box.

    Items are `(image, label)` (RGB PIL images).

    Args:
        root: the `CUB_200_2011` folder, or metadata already read by `read_cub` (to share it).
        split: `train` or `test`.
        crop: crop each image to its bounding box (keypoints follow the crop; those outside are dropped).
    """

    def __init__(self, root: str | os.PathLike[str] | CUBMetadata, split: Literal["train", "test"],
                 crop: bool) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.meta = root if isinstance(root, CUBMetadata) else read_cub(root)
        self.split, self.crop = split, crop
        self.indices = [k for k, t in enumerate(self.meta.is_train) if t == (split == "train")]
        if not self.indices:
            raise DataError(f"{self.meta.root / 'train_test_split.txt'} lists no {split} images")
        self.classes = self.meta.classes
        self.part_names = self.meta.part_names
        self.targets = [self.meta.labels[k] for k in self.indices]
        self._sizes: dict[int, tuple[int, int]] = {}

    @property
    def num_parts(self) -> int:
        """Number of (merged) part types: 12 for CUB."""
        return len(self.part_names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return self.image(i), self.targets[i]

    def path(self, i: int) -> Path:
        """The image file of item `i`."""
        return self.meta.root / "images" / self.meta.paths[self.indices[i]]

    def crop_box(self, i: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) integer pixel box of item `i`'s bounding box."""
        x, y, w, h = self.meta.boxes[self.indices[i]]
        left, top = int(round(x)), int(round(y))
        return left, top, max(left + 1, int(round(x + w))), max(top + 1, int(round(y + h)))

    def image(self, i: int) -> Image.Image:
        """The untransformed RGB image `i` (cropped when `crop`)."""
        img = load_image(self.path(i))
        return img.crop(self.crop_box(i)) if self.crop else img

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of `image(i)`: the box's size when cropping, else read from the file's header."""
        if self.crop:
            left, top, right, bottom = self.crop_box(i)
            return right - left, bottom - top
        if i not in self._sizes:
            try:
                with Image.open(self.path(i)) as img:
                    self._sizes[i] = img.size
            except (OSError, ValueError) as e:
                raise ImageLoadError(str(self.path(i)), f"cannot read the header ({e})") from e
        return self._sizes[i]

    def keypoints(self, i: int) -> torch.Tensor:
        """(K, 3) float `[part_id, x, y]` of the visible parts in `image(i)`'s pixels.

        When cropping, coordinates are shifted by the box's corner and parts outside the box are dropped.
        """
        kp = self.meta.keypoints[self.indices[i]].clone()
        if not self.crop:
            self._check_inside(i, kp)
            return kp
        left, top, right, bottom = self.crop_box(i)
        kp[:, 1] -= left
        kp[:, 2] -= top
        inside = (kp[:, 1] >= 0) & (kp[:, 1] < right - left) & (kp[:, 2] >= 0) & (kp[:, 2] < bottom - top)
        return kp[inside]

    def _check_inside(self, i: int, kp: torch.Tensor) -> None:
        """Raise `DataError` when a keypoint of full image `i` lies outside it (a mismatched part_locs.txt)."""
        width, height = self.image_size(i)
        outside = (kp[:, 1] > width) | (kp[:, 2] > height)
        if outside.any():
            _, x, y = kp[outside][0].tolist()
            raise DataError(f"{self.meta.root / 'parts/part_locs.txt'}: image {self.meta.paths[self.indices[i]]} "
                            f"is {width} x {height} pixels but has a part at ({x}, {y}); expected coordinates "
                            "inside the full image")
