"""Typed configuration of the data (one dataclass per source), read by `pipnet.data.build_data`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class PlantedConfig:
    """The built-in planted-parts data set (`pipnet.data.planted`).

    Args:
        num_classes: number of classes; each is a fixed combination of `parts_per_class` part types.
        num_part_types: size of the shared pool of part types (shapes x textures x colours).
        parts_per_class: part types that define a class.
        train_per_class: training images per class.
        test_per_class: held-out test images per class.
        ood_images: images of the out-of-distribution variant (background and distractors only).
        distractors: maximum number of distractor shapes (not part types of any class) per image.
        difficulty: 0..1; scales clutter, scale jitter and colour noise.
        seed: the generator's seed; the same seed gives the same images, byte for byte.
        size: side in pixels of the generated (square) images, before any transform.
        multi_images: images of the multi-object variant (the parts of two classes in one image).
        variant: what is planted besides the parts, to give prototype-quality metrics known answers:
            `standard` (the parts only), `colour` (classes 0 and 1 differ only in the colour of their
            parts), `shortcut` (the background is tinted with a colour set by the class: a deliberate
            shortcut), `unconfounded` (the same tints drawn at random, independently of the class: the
            shortcut's clean control) or `twins` (two part types are drawn identically). See
            `pipnet.data.planted`.
    """

    num_classes: int = 6
    num_part_types: int = 8
    parts_per_class: int = 2
    train_per_class: int = 40
    test_per_class: int = 20
    ood_images: int = 60
    distractors: int = 2
    difficulty: float = 0.5
    seed: int = 0
    size: int = 96
    multi_images: int = 24
    variant: Literal["standard", "colour", "shortcut", "unconfounded", "twins"] = "standard"


@dataclass
class DataConfig:
    """Where the images come from and how they are augmented.

    Args:
        source: `auto` (default: with `root`, CUB-200-2011's layout or an image-folder tree, detected and
            logged; without, the built-in planted data), `planted` (built in, no files; takes no
            `root`), `folder` (ImageFolder trees) or `cub` (CUB-200-2011).
        root: the data folder (`folder`: holds `train/` and optionally `test/`, `projection/`;
            `cub`: the extracted `CUB_200_2011` folder).
        image_size: S, the square input size.
        preset: augmentation preset: `default`, `birds`, `cars` (colour ops incl. strong colour and
            solarize), `pets` or `grayscale`.
        val_fraction: with no `test/` folder, hold out this fraction of `train/` (seeded, per class).
        seed: seed of the split.
        bad_images: `error` (stop, naming the file) or `skip` (warn, count, and leave it out).
        ood: extra image folders used as out-of-distribution sets in evaluation.
        masks: `folder` source only: a folder of object masks laid out like `root`
            (`masks/<split>/<class>/<stem>.png`, 255 = object) for the `on_object` metric.
        balanced: class-balanced sampling for pretraining and classification (as the published code
            samples, on the authors' advice for imbalanced and two-class data): each epoch draws as many images as the
            training set holds, with replacement, each with weight 1 / (size of its class).
        planted: settings of the planted-parts data set.
    """

    source: Literal["auto", "planted", "folder", "cub"] = "auto"
    root: str | None = None
    image_size: int = 224
    preset: Literal["default", "birds", "cars", "pets", "grayscale"] = "default"
    val_fraction: float = 0.2
    seed: int = 0
    bad_images: Literal["error", "skip"] = "error"
    ood: list[str] = field(default_factory=list)
    masks: str | None = None
    balanced: bool = False
    planted: PlantedConfig = field(default_factory=PlantedConfig)
