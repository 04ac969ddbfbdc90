"""ImageFolder-style sources: `root/train/<class>/*`, optional `root/test/<class>/*` and `root/projection/`.

With no `test/` folder, `train/` is split per class (stratified) by a seeded `val_fraction`. Images load
lazily through `load_image`, so a bad file raises an error naming it; with `bad_images="skip"` every image
is decoded once up front and the unreadable ones are left out, with a warning and a count (`skipped`).
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
from pipnet.data.images import IMAGE_EXTENSIONS, is_image_file, load_image

__all__ = ["ImageList", "FolderSource", "find_classes", "list_images", "class_samples", "stratified_split",
           "load_folder_source", "image_tree"]

log = logging.getLogger(__name__)

BadImages = Literal["error", "skip"]


class ImageList(Dataset):
    """A data set over a list of `(path, label)`; items are `(image, label)` (RGB PIL images).

    Args:
        samples: image files and their labels (-1 for out-of-distribution images).
        classes: the class names that labels index.
        bad_images: `error` (an unreadable file raises `ImageLoadError` when read) or `skip` (decode every
            file now, leave out those that fail, warn, and count them in `skipped`).
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], bad_images: BadImages = "error") -> None:
        if bad_images not in ("error", "skip"):
            raise ValueError(f"bad_images must be 'error' or 'skip', got {bad_images!r}")
        self.classes = classes
        self.skipped = 0
        if bad_images == "skip":
            samples = self._readable(samples)
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.part_names: list[str] = []

    def _readable(self, samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
        kept = []
        for path, label in samples:
            try:
                load_image(path)
            except ImageLoadError as e:
                self.skipped += 1
                log.warning("skipping unreadable image: %s", e)
                continue
            kept.append((path, label))
        if self.skipped:
            log.warning("skipped %d of %d images that could not be read", self.skipped, len(samples))
        return kept

    @property
    def num_parts(self) -> int:
        """No part annotations: 0."""
        return 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return self.image(i), self.targets[i]

    def image(self, i: int) -> Image.Image:
        """The untransformed RGB image `i`."""
        return load_image(self.samples[i][0])

    def keypoints(self, i: int) -> torch.Tensor:
        """No part annotations: an empty (0, 3) tensor."""
        return torch.zeros(0, 3)

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of image `i`, read from the file's header."""
        path = self.samples[i][0]
        try:
            with Image.open(path) as img:
                return img.size
        except (OSError, ValueError) as e:
            raise ImageLoadError(path, f"cannot read the header ({e})") from e


def find_classes(folder: Path) -> list[str]:
    """Sorted names of the class subfolders of `folder` (hidden folders ignored)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder: Path) -> list[str]:
    """All image files under `folder`, recursively, sorted; hidden files and folders are ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in filenames if is_image_file(f) and not f.startswith(".")]
    return sorted(found)


def class_samples(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes and `(path, label)` samples of one `<split>/<class>/*` tree.

    Args:
        split_dir: the split folder (e.g. `root/train`).
        classes: the expected class names (those of `train/`); a different set raises.

    Raises:
        DataError: no class folders, a class folder with no images, or classes that differ from `classes`.
    """
    found = find_classes(split_dir)
    if not found:
        loose = list_images(split_dir)
        detail = f" ({len(loose)} images lie directly in it; put them in one folder per class)" if loose else ""
        raise DataError(f"no images: {split_dir} has no class subfolders{detail}")
    if classes is not None and found != classes:
        raise DataError(f"the classes of {split_dir} differ from those of train/: found {found}, "
                        f"expected {classes} (missing: {sorted(set(classes) - set(found))}, "
                        f"extra: {sorted(set(found) - set(classes))})")
    samples = []
    for label, name in enumerate(found):
        files = list_images(split_dir / name)
        if not files:
            raise DataError(f"class folder {split_dir / name} has no images "
                            f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
        samples += [(f, label) for f in files]
    return found, samples


def stratified_split(samples: list[tuple[str, int]], val_fraction: float,
                     seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Split samples per class into (train, held out), reproducibly from `seed`.

    Each class with at least two images keeps at least one for training and, when `val_fraction > 0`,
    holds out at least one; otherwise `round(n * val_fraction)`. Each class is shuffled by its own
    generator, so one class's split does not depend on the others.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_class: dict[int, list[tuple[str, int]]] = {}
    for sample in sorted(samples):
        by_class.setdefault(sample[1], []).append(sample)
    train, held = [], []
    for label in sorted(by_class):
        items = by_class[label]
        n = len(items)
        n_held = round(n * val_fraction)
        if val_fraction > 0 and n >= 2:
            n_held = max(n_held, 1)
        n_held = min(n_held, n - 1)
        order = np.random.default_rng([seed, label]).permutation(n)
        held += [items[j] for j in sorted(order[:n_held])]
        train += [items[j] for j in sorted(order[n_held:])]
    return train, held


@dataclass
class FolderSource:
    """The untransformed image lists of a folder source.

    Args:
        classes: the class names (the subfolders of `train/`).
        train: the training images (without the held-out part when `test/` is absent).
        test: `test/`, or the held-out part of `train/`, or None when `val_fraction` is 0.
        projection: `projection/` if present, else the training images.
    """

    classes: list[str]
    train: ImageList
    test: ImageList | None
    projection: ImageList


def load_folder_source(root: str | os.PathLike[str], val_fraction: float = 0.2, seed: int = 0,
                       bad_images: BadImages = "error") -> FolderSource:
    """Index `root/train`, `root/test` and `root/projection` (no image is decoded unless skipping).

    Args:
        root: the data folder.
        val_fraction: with no `test/` folder, the fraction of each class of `train/` held out as test.
        seed: seed of that split.
        bad_images: `error` or `skip` (see `ImageList`).

    Raises:
        DataError: a missing root or `train/`, an empty class, or split folders whose classes differ.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (expected {root}/train/<class>/<images>)")
    if not (root / "train").is_dir():
        raise DataError(f"{root} has no train/ folder (expected {root}/train/<class>/<images>)")
    classes, train = class_samples(root / "train")
    if (root / "test").is_dir():
        test: list[tuple[str, int]] | None = class_samples(root / "test", classes)[1]
    else:
        train, test = stratified_split(train, val_fraction, seed)
        test = test or None
        log.info("no test/ folder in %s: held out %d of %d training images (seed %d)",
                 root, len(test or []), len(train) + len(test or []), seed)
    projection = class_samples(root / "projection", classes)[1] if (root / "projection").is_dir() else None

    train_list = ImageList(train, classes, bad_images=bad_images)
    if not train_list.samples:
        raise DataError(f"no readable training images under {root / 'train'}")
    return FolderSource(
        classes=classes,
        train=train_list,
        test=ImageList(test, classes, bad_images=bad_images) if test else None,
        projection=ImageList(projection, classes, bad_images=bad_images) if projection else train_list,
    )


def image_tree(folder: str | os.PathLike[str], bad_images: BadImages = "error") -> ImageList:
    """All images under `folder` (recursively), labelled -1: an out-of-distribution set.

    Raises:
        DataError: the folder is missing or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"out-of-distribution folder {folder} does not exist")
    files = list_images(folder)
    if not files:
        raise DataError(f"out-of-distribution folder {folder} has no images "
                        f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return ImageList([(f, -1) for f in files], classes=[], bad_images=bad_images)
