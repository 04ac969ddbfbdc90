"""Object masks as optional data: a second tree beside the images, one mask per image (255 = object).

For `--data.source folder --data.root ROOT --data.masks MASKS`, the mask of `ROOT/<split>/<class>/<stem>.<ext>`
is `MASKS/<split>/<class>/<stem>.png`: a grayscale image whose pixels >= 128 are the object. A mask is read
at the size of its image and mapped into the model input the way the evaluation transform maps the image (a
plain resize to S x S, nearest neighbour so it stays binary). `EvalDataset.mask(i)` gives that (S, S) mask.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipnet.data.errors import DataError

__all__ = ["MaskedSource", "load_mask", "mask_path", "with_masks"]

OBJECT_LEVEL = 128  # mask pixels at or above this are the object (the format says 255 = object, 0 = not)


def mask_path(image_path: str | os.PathLike[str], root: str | os.PathLike[str], masks: str | os.PathLike[str]) -> Path:
    """Where the mask of `image_path` (a file under `root`) lies under `masks`: same relative path, `.png`."""
    relative = Path(os.path.relpath(Path(image_path).resolve(), Path(root).resolve()))
    return Path(masks) / relative.with_suffix(".png")


def load_mask(path: str | os.PathLike[str], size: int) -> torch.Tensor:
    """The mask at `path` resized to `size` x `size` (nearest neighbour): bool (S, S), True = object.

    Raises:
        DataError: the file cannot be read as an image.
    """
    try:
        with Image.open(path) as img:
            gray = img.convert("L").resize((size, size), Image.Resampling.NEAREST)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the object mask {path}: {e}") from e
    return torch.from_numpy(np.asarray(gray) >= OBJECT_LEVEL)


class MaskedSource:
    """An image source (`ImageList`) with a mask file per image; everything else is forwarded.

    Args:
        base: the source.
        paths: the mask file of each image of `base`, in its order.
    """

    def __init__(self, base, paths: list[Path]) -> None:
        if len(paths) != len(base):
            raise ValueError(f"{len(paths)} mask paths for {len(base)} images")
        self.base, self.mask_paths = base, paths

    def __getattr__(self, name: str):
        if name in ("base", "mask_paths"):  # not yet set (e.g. while unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]

    def mask(self, i: int, size: int) -> torch.Tensor:
        """Bool (size, size): the object mask of image `i` in a size x size frame (True = object)."""
        return load_mask(self.mask_paths[i], size)


def with_masks(source, root: str | os.PathLike[str], masks: str | os.PathLike[str]) -> MaskedSource:
    """`source` (an `ImageList` of files under `root`) with the masks of its images under `masks`.

    Raises:
        DataError: the masks folder is missing, or some images have no mask (naming the first and the count).
    """
    if not Path(masks).is_dir():
        raise DataError(f"masks folder {masks} does not exist (expected {masks}/train/<class>/<stem>.png)")
    paths = [mask_path(path, root, masks) for path, _ in source.samples]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(paths)} images have no mask under {masks}, e.g. {missing[0]} "
                        "(a mask has the image's path relative to the data root, with .png)")
    return MaskedSource(source, paths)
