"""Views of an image source for training and evaluation, and the one place keypoints meet the model input.

Every source (planted, folders, CUB) is an `ImageSource`: untransformed PIL images, labels and, where known,
part keypoints in the image's own pixels. `TwoViewDataset` gives training items `(view1, view2, label)`;
`EvalDataset` gives `(x, label)` through the plain S x S resize and maps keypoints into that S x S frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from PIL import Image
from torch.utils.data import Dataset

from pipnet.data.augment import IMAGENET, Normalization, Preset, TwoViewTransform, eval_transform

__all__ = ["ImageSource", "TwoViewDataset", "EvalDataset", "scale_keypoints"]


@runtime_checkable
class ImageSource(Protocol):
    """What the wrappers need from a source (`PlantedParts`, `ImageList`, `CUB`)."""

    classes: list[str]
    targets: list[int]
    part_names: list[str]

    @property
    def num_parts(self) -> int: ...

    def __len__(self) -> int: ...

    def image(self, i: int) -> Image.Image: ...

    def keypoints(self, i: int) -> torch.Tensor: ...

    def image_size(self, i: int) -> tuple[int, int]: ...


def scale_keypoints(keypoints: torch.Tensor, size: tuple[int, int], image_size: int) -> torch.Tensor:
    """Map `[part_id, x, y]` rows from an image of `size = (width, height)` into the S x S model input.

    The evaluation transform is a plain resize to S x S, so x scales by S / width and y by S / height.

    Args:
        keypoints: (K, 3) float `[part_id, x, y]` in the source image's pixels.
        size: (width, height) of the source image.
        image_size: S.
    """
    width, height = size
    out = keypoints.to(torch.float32).clone()
    out[:, 1] *= image_size / width
    out[:, 2] *= image_size / height
    return out


class _SourceView(Dataset):
    """Shared attributes of the wrappers: everything describing the source is forwarded."""

    def __init__(self, base: ImageSource) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    @property
    def classes(self) -> list[str]:
        return self.base.classes

    @property
    def targets(self) -> list[int]:
        return self.base.targets

    @property
    def num_parts(self) -> int:
        return self.base.num_parts

    @property
    def part_names(self) -> list[str]:
        return self.base.part_names

    def raw_image(self, i: int) -> Image.Image:
        """The untransformed image `i` (RGB), for drawing explanations."""
        return self.base.image(i)

    def raw_image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of the untransformed image `i`."""
        return self.base.image_size(i)


class TwoViewDataset(_SourceView):
    """Training items `(view1, view2, label)`: two aligned, differently coloured views of one image.

    Args:
        base: the image source.
        transform: the two-view augmentation.
    """

    def __init__(self, base: ImageSource, transform: TwoViewTransform) -> None:
        super().__init__(base)
        self.transform = transform
        self.seed: int | None = None

    def set_seed(self, seed: int | None) -> None:
        """Draw item i's augmentation from its own seed (`seed`, i) instead of the running random state.

        Training sets this every epoch, so an image's views depend only on (seed, epoch, index): not on
        the order, the number of DataLoader workers, a prefetch thread or how many processes share the batch.
        """
        self.seed = seed

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.base.image(i)
        if self.seed is None:
            view1, view2 = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 2_654_435_761 + i) % 2**63)
                view1, view2 = self.transform(image)
        return view1, view2, self.base.targets[i]


class EvalDataset(_SourceView):
    """Evaluation items `(x, label)` through the plain S x S resize, with keypoints in that frame.

    Args:
        base: the image source.
        image_size: S.
        preset: augmentation preset (only `grayscale` changes the evaluation transform).
        normalization: the backbone's input normalisation (ImageNet's by default).
    """

    def __init__(self, base: ImageSource, image_size: int, preset: Preset | str = "default",
                 normalization: Normalization = IMAGENET) -> None:
        super().__init__(base)
        self.input_size = image_size
        self.normalization = normalization
        self.transform = eval_transform(image_size, preset, normalization)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.base.image(i)), self.base.targets[i]

    def image_size(self, i: int) -> tuple[int, int]:
        """(S, S): the frame of `keypoints(i)`, as a source's `image_size(i)` is the frame of its keypoints."""
        return self.input_size, self.input_size

    def keypoints(self, i: int) -> torch.Tensor:
        """(K, 3) float `[part_id, x, y]` in the S x S model input's pixels (empty without part annotations)."""
        kp = self.base.keypoints(i)
        if kp.numel() == 0:
            return kp.reshape(0, 3).to(torch.float32)
        return scale_keypoints(kp, self.base.image_size(i), self.input_size)

    @property
    def has_masks(self) -> bool:
        """Whether the source has an object mask per image (`--data.masks`)."""
        return hasattr(self.base, "mask")

    def mask(self, i: int) -> torch.Tensor:
        """Bool (S, S): the object mask of image `i` in the model input's frame (True = object)."""
        if not self.has_masks:
            raise AttributeError("this data set has no object masks (give --data.masks)")
        return self.base.mask(i, self.input_size)

    def classes_present(self, i: int) -> Sequence[int]:
        """The classes shown in image `i`: several for multi-object images, none for out-of-distribution ones."""
        present = getattr(self.base, "classes_present", None)
        if present is not None:
            return present(i)
        label = self.base.targets[i]
        return (label,) if label >= 0 else ()
