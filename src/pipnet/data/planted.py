"""The built-in planted-parts data set: synthetic images whose classes are defined by known, localised parts.

A pool of part types (shape x colour x texture) is shared by the classes; each class is a fixed combination
of `parts_per_class` part types, and no two classes have the same combination. An image is a cluttered,
muted background, the parts of its class at random non-overlapping positions and scales, and a few grey
outlined distractor shapes that are no part type. Every image records the centre of each planted part, so
prototype purity and part localisation have known answers.

Image `i` of a split is a pure function of `(seed, split, i)`: nothing is stored on disk, and the same
seed gives the same images byte for byte. Splits: `train`, `test`, `ood` (background and distractors
only), `multi` (the parts of two classes in one image, for multi-object explanations) and `deconfounded`
(the `test` images with the `shortcut` variant's background colour drawn at random, independently of the
class; the same images as `test` in every other variant).

Variants (`PlantedConfig.variant`) plant one more known fact, so that metrics of prototype quality have
certain answers; every variant draws the same random numbers as `standard`, so image `i` keeps its layout:

- `standard`: the parts only (the images above, byte for byte).
- `colour`: classes 0 and 1 differ only in colour: each part type of class 1 that class 0 lacks is redrawn
  with the shape and texture of a part of class 0 and a new saturated colour (`part_styles`).
- `shortcut`: the background of each image is mixed 30:70 with a muted colour set by its class
  (`class_background`), so the background alone predicts the class; `ood` images keep plain backgrounds.
  In the `deconfounded` split the colour is that of a class drawn uniformly at random from a separate
  random stream (`deconfounded_background_class`), so the background carries no information about the
  class and a model that learnt the shortcut is caught out.
- `unconfounded`: the shortcut's clean control: every split's background is tinted as in `shortcut` with
  the colour of a class drawn at random (`deconfounded_background_class`), so a model trained on it sees the
  same kind of images without the shortcut; its `test` split is the `shortcut` variant's `deconfounded`
  split byte for byte.
- `twins`: two part types are drawn identically (`twin_part_types`), chosen so that every class still
  looks different from every other.
"""

from __future__ import annotations

import colorsys
import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from pipnet.core.data_config import PlantedConfig
from pipnet.data.shapes import draw_shape

__all__ = [
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "PlantedSample",
    "PlantedParts",
    "part_type_names",
    "part_styles",
    "twin_part_types",
    "class_background",
    "deconfounded_background_class",
    "part_type_style",
    "class_part_types",
    "generate_image",
]

Split = Literal["train", "test", "ood", "multi", "deconfounded"]
_SPLIT_CODES = {"train": 0, "test": 1, "ood": 2, "multi": 3, "deconfounded": 1}  # deconfounded: test's layouts
_BACKGROUND_STREAM = 4  # the deconfounded split's own random stream for the background class

SHAPES = ("disc", "square", "triangle", "cross", "bullseye", "diamond", "star", "bar")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 70, 235),
    "yellow": (250, 225, 20),
    "magenta": (225, 40, 225),
    "cyan": (20, 215, 230),
    "orange": (250, 135, 10),
    "white": (250, 250, 250),
}
TEXTURES = ("solid", "striped")
_DISTRACTOR_SHAPES = ("disc", "square", "triangle", "diamond", "hexagon", "star")
_MAX_PART_TYPES = len(SHAPES) * len(COLOURS) * len(TEXTURES)
_VARIANTS = ("standard", "colour", "shortcut", "unconfounded", "twins")


# ---------------------------------------------------------------------------------------------------------
# The part pool and the classes
# ---------------------------------------------------------------------------------------------------------


def part_type_style(part_type: int) -> tuple[str, str, str]:
    """(shape, colour, texture) of a part type.

    Types 0..7 differ in both shape and colour; later types reuse shapes and colours in new pairs
    (the colour index is shifted by `type // 8`), then add stripes, so every type is a distinct combination.
    """
    if not 0 <= part_type < _MAX_PART_TYPES:
        raise ValueError(f"part type {part_type} outside 0..{_MAX_PART_TYPES - 1}")
    n_shapes, n_colours = len(SHAPES), len(COLOURS)
    shape = part_type % n_shapes
    colour = (shape + (part_type // n_shapes) % n_colours) % n_colours
    texture = part_type // (n_shapes * n_colours)
    return SHAPES[shape], list(COLOURS)[colour], TEXTURES[texture]


def part_type_names(num_part_types: int, styles: list[tuple[str, str, str]] | None = None) -> list[str]:
    """Readable names of the first `num_part_types` part types, e.g. `red disc` or `striped blue star`.

    Args:
        num_part_types: how many part types.
        styles: `part_styles(config)` for a variant (default: the standard pool). A style met a second time
            (the `twins` variant) is named with ` (twin)` appended, so names stay unique.
    """
    styles = [part_type_style(t) for t in range(num_part_types)] if styles is None else styles
    names: list[str] = []
    for shape, colour, texture in styles[:num_part_types]:
        name = f"{colour} {shape}" if texture == "solid" else f"{texture} {colour} {shape}"
        names.append(f"{name} (twin)" if name in names else name)
    return names


def _validate(config: PlantedConfig) -> None:
    n, k, m = config.num_part_types, config.parts_per_class, config.num_classes
    if not 1 <= n <= _MAX_PART_TYPES:
        raise ValueError(f"num_part_types must be in 1..{_MAX_PART_TYPES}, got {n}")
    if not 1 <= k <= n:
        raise ValueError(f"parts_per_class must be in 1..num_part_types={n}, got {k}")
    if not 1 <= m <= math.comb(n, k):
        raise ValueError(f"num_classes={m} needs 1..{math.comb(n, k)} distinct combinations of {k} of {n} part types")
    if not 0.0 <= config.difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {config.difficulty}")
    if config.size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {config.size}")
    if config.seed < 0:
        raise ValueError(f"seed must be non-negative, got {config.seed}")
    if config.variant not in _VARIANTS:
        raise ValueError(f"unknown planted variant {config.variant!r}; expected one of {_VARIANTS}")
    if config.variant == "colour" and m < 2:
        raise ValueError("the colour variant needs at least two classes")
    if config.variant == "twins" and n < 2:
        raise ValueError("the twins variant needs at least two part types")


def class_part_types(config: PlantedConfig) -> list[tuple[int, ...]]:
    """The part types of each class: distinct combinations, chosen deterministically from the seed.

    Each class takes the still-unused combination whose part types have been used least so far (ties broken
    by a seeded shuffle): the pool is covered first, after which classes necessarily share part types.
    """
    _validate(config)
    n, k = config.num_part_types, config.parts_per_class
    rng = np.random.default_rng([config.seed, 1000])
    if math.comb(n, k) <= 5000:
        candidates = list(itertools.combinations(range(n), k))
        candidates = [candidates[j] for j in rng.permutation(len(candidates))]
    else:  # too many to list: a seeded sample of distinct combinations
        seen: dict[tuple[int, ...], None] = {}
        while len(seen) < max(5000, config.num_classes):
            seen.setdefault(tuple(sorted(int(t) for t in rng.choice(n, size=k, replace=False))), None)
        candidates = list(seen)
    usage = np.zeros(n, dtype=np.int64)
    chosen: list[tuple[int, ...]] = []
    for _ in range(config.num_classes):
        best = min(range(len(candidates)), key=lambda j: (int(usage[list(candidates[j])].sum()), j))
        combo = candidates.pop(best)
        usage[list(combo)] += 1
        chosen.append(combo)
    return chosen


def twin_part_types(config: PlantedConfig) -> tuple[int, int]:
    """The twins variant's pair `(a, b)`: part type `b` is drawn exactly like part type `a`.

    The first pair in lexicographic order (`a < b`) that leaves every class a different multiset of
    appearances, so the classes stay separable; `ValueError` if no pair does.
    """
    combos = class_part_types(config)
    for a, b in itertools.combinations(range(config.num_part_types), 2):
        looks = {tuple(sorted(a if t == b else t for t in combo)) for combo in combos}
        if len(looks) == len(combos):
            return a, b
    raise ValueError("the twins variant found no pair of part types whose merging keeps the classes distinct")


def _hue_distance(a: str, b: str) -> float:
    """Distance on the colour wheel (0..0.5 of a turn) between the hues of two named colours."""
    ha = colorsys.rgb_to_hsv(*(v / 255 for v in COLOURS[a]))[0]
    hb = colorsys.rgb_to_hsv(*(v / 255 for v in COLOURS[b]))[0]
    return min(abs(ha - hb), 1 - abs(ha - hb))


def part_styles(config: PlantedConfig) -> list[tuple[str, str, str]]:
    """(shape, colour, texture) of every part type under `config.variant`.

    `standard`, `shortcut` and `unconfounded`: `part_type_style`. `twins`: type `b` of `twin_part_types` takes the
    style of type `a`. `colour`: the types of class 1 that class 0 lacks are paired, in sorted order, with
    the types of class 0 that class 1 lacks; each takes its partner's shape and texture and, of the saturated
    colours (not white) that no other type has with that shape and texture, the one whose hue is farthest
    from the partner's (ties: `COLOURS` order), so the two classes differ by a large hue shift. Every style
    stays unique, so no other pair of classes is merged.
    """
    combos = class_part_types(config)
    styles = [part_type_style(t) for t in range(config.num_part_types)]
    if config.variant == "twins":
        a, b = twin_part_types(config)
        styles[b] = styles[a]
    elif config.variant == "colour":
        first, second = combos[0], combos[1]
        only_first = sorted(set(first) - set(second))
        only_second = sorted(set(second) - set(first))
        for partner, t in zip(only_first, only_second):
            shape, colour, texture = styles[partner]
            taken = set(styles[:t] + styles[t + 1:])
            free = [c for c in COLOURS if c != "white" and (shape, c, texture) not in taken]
            if not free:
                raise ValueError(f"the colour variant found no free colour for a {texture} {shape}")
            styles[t] = (shape, max(free, key=lambda c: _hue_distance(c, colour)), texture)
    return styles


def class_background(config: PlantedConfig, label: int) -> tuple[int, int, int]:
    """The shortcut variant's background colour of class `label`: hue `label / num_classes` of the
    colour wheel at HSV saturation 0.5 and value 0.6 (muted: less saturated than any part colour)."""
    r, g, b = colorsys.hsv_to_rgb(label / config.num_classes, 0.5, 0.6)
    return int(round(255 * r)), int(round(255 * g)), int(round(255 * b))


def deconfounded_background_class(config: PlantedConfig, split: str, index: int) -> int:
    """The class whose background colour image `index` of `split` gets where the colour is drawn at random
    (the `deconfounded` split, every split of the `unconfounded` variant): uniform over the classes, from a
    random stream of its own (`[seed, 4, split code, index]`, the `deconfounded` split using `test`'s code),
    so it is independent of the image's class and the image's layout is unchanged."""
    stream = [config.seed, _BACKGROUND_STREAM, _SPLIT_CODES[split], index]
    return int(np.random.default_rng(stream).integers(config.num_classes))


# ---------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------


def _draw_part(img: Image.Image, style: tuple[str, str, str], cx: float, cy: float, r: float, angle: float,
               colour: tuple[int, int, int]) -> None:
    """Draw one part: filled with its colour and a thin black outline, or filled with stripes."""
    shape, _, texture = style
    if texture == "solid":
        draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, angle, fill=colour, outline=(0, 0, 0))
        return
    # Striped: the shape as a mask over a patch of diagonal stripes (the colour and a dark shade of it).
    side = int(2 * r + 4)
    x0, y0 = int(cx - side / 2), int(cy - side / 2)
    mask = Image.new("L", (side, side), 0)
    draw_shape(ImageDraw.Draw(mask), shape, cx - x0, cy - y0, r, angle, fill=255, outline=255)
    yy, xx = np.mgrid[:side, :side]
    dark = ((xx + yy) // 3) % 2 == 1
    patch = np.empty((side, side, 3), dtype=np.uint8)
    patch[:] = colour
    patch[dark] = (np.asarray(colour) * 0.35).astype(np.uint8)
    img.paste(Image.fromarray(patch), (x0, y0), mask)


def _background(rng: np.random.Generator, size: int, difficulty: float) -> Image.Image:
    """Smooth, muted noise with low-contrast blobs, drawn at quarter resolution and upsampled."""
    low = max(8, size // 4)
    gray = rng.uniform(70, 170)
    tint = rng.uniform(-18, 18, size=3)
    grid = gray + tint + rng.normal(0.0, 12 + 20 * difficulty, size=(4, 4, 3))
    canvas = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8)).resize((low, low), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 3 + round(6 * difficulty)))):
        w, h = rng.uniform(0.1, 0.35, size=2) * low
        x, y = rng.uniform(0, low, size=2)
        colour = tuple(int(v) for v in np.clip(gray + tint + rng.uniform(-30, 30, size=3), 0, 255))
        draw.ellipse((x - w, y - h, x + w, y + h), fill=colour)
    return canvas.resize((size, size), Image.Resampling.BILINEAR)


def _place(rng: np.random.Generator, placed: list[tuple[float, float, float]], r: float, size: int,
           tries: int = 100) -> tuple[float, float] | None:
    """A centre for a shape of radius `r`, fully inside and clear of every placed shape; None if none found."""
    for _ in range(tries):
        cx, cy = rng.uniform(r + 1, size - r - 2, size=2)
        if all((cx - px) ** 2 + (cy - py) ** 2 > (r + pr + 2) ** 2 for px, py, pr in placed):
            return float(cx), float(cy)
    return None


@dataclass(frozen=True)
class PlantedSample:
    """One generated image with its ground truth.

    Args:
        image: the RGB image, `size` x `size`.
        label: the class (the first class for `multi`; -1 for `ood`).
        keypoints: (K, 3) float `[part_type, x, y]`, the centre of each planted part in pixels.
        classes_present: the classes whose parts are in the image.
    """

    image: Image.Image
    label: int
    keypoints: torch.Tensor
    classes_present: tuple[int, ...]


def _sample_classes(rng: np.random.Generator, config: PlantedConfig, split: str, index: int) -> tuple[int, ...]:
    m = config.num_classes
    if split == "ood":
        return ()
    if split == "multi":
        if m < 2:
            raise ValueError("the multi split needs at least two classes")
        first = index % m
        return first, int((first + 1 + rng.integers(m - 1)) % m)
    return (index % m,)


def generate_image(config: PlantedConfig, split: Split, index: int,
                   combos: list[tuple[int, ...]] | None = None,
                   styles: list[tuple[str, str, str]] | None = None) -> PlantedSample:
    """Generate image `index` of `split`: a pure function of `(config, split, index)`.

    Args:
        config: the data set's settings.
        split: `train`, `test`, `ood`, `multi` or `deconfounded`.
        index: the image's index in its split.
        combos: `class_part_types(config)`, passed in to avoid recomputing it per image.
        styles: `part_styles(config)`, likewise.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(_SPLIT_CODES)}")
    combos = class_part_types(config) if combos is None else combos
    styles = part_styles(config) if styles is None else styles
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
    size, d = config.size, config.difficulty
    classes = _sample_classes(rng, config, split, index)
    parts = [t for c in classes for t in combos[c]]
    parts = [parts[j] for j in rng.permutation(len(parts))]
    img = _background(rng, size, d)
    if config.variant in ("shortcut", "unconfounded") and classes:  # tinted, not redrawn: standard's random numbers
        random_tint = split == "deconfounded" or config.variant == "unconfounded"
        shown = deconfounded_background_class(config, split, index) if random_tint else classes[0]
        tint = Image.new("RGB", img.size, class_background(config, shown))
        img = Image.blend(img, tint, 0.7)

    placed: list[tuple[float, float, float]] = []
    keypoints: list[tuple[float, float, float]] = []
    shrink = 1.0
    for part_type in parts:
        centre = None
        while centre is None:
            r = shrink * size * rng.uniform(0.17 - 0.05 * d, 0.17 + 0.05 * d) / 2
            centre = _place(rng, placed, r, size)
            if centre is None:  # crowded: make the remaining parts smaller
                shrink *= 0.85
        colour = tuple(int(v) for v in np.clip(np.array(COLOURS[styles[part_type][1]])
                                               + rng.uniform(-30, 30, size=3) * d, 0, 255))
        angle = float(rng.uniform(-45, 45) * d)
        _draw_part(img, styles[part_type], centre[0], centre[1], r, angle, colour)
        placed.append((centre[0], centre[1], r))
        keypoints.append((float(part_type), centre[0], centre[1]))

    n_distract = int(rng.integers(0, config.distractors + 1)) + (config.parts_per_class if split == "ood" else 0)
    draw = ImageDraw.Draw(img)
    for _ in range(n_distract):
        r = size * rng.uniform(0.12, 0.22) / 2
        centre = _place(rng, placed, r, size, tries=20)
        if centre is None:
            continue
        level = rng.uniform(40, 215)
        grey = tuple(int(v) for v in np.clip(level + rng.uniform(-10, 10, size=3), 0, 255))
        shape = _DISTRACTOR_SHAPES[int(rng.integers(len(_DISTRACTOR_SHAPES)))]
        draw_shape(draw, shape, centre[0], centre[1], r, float(rng.uniform(-45, 45)), fill=None, outline=grey)
        placed.append((centre[0], centre[1], r))

    pixels = np.asarray(img, dtype=np.int16) + rng.normal(0.0, 3 + 6 * d, size=(size, size, 3)).astype(np.int16)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    kp = torch.tensor(keypoints, dtype=torch.float32).reshape(-1, 3)
    return PlantedSample(img, classes[0] if classes else -1, kp, classes)


# ---------------------------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------------------------


class PlantedParts(Dataset):
    """One split of the planted-parts data set, generated on first access and kept in memory.

    Items are `(image, label)` (PIL images); the label is -1 for `ood`.

    Args:
        config: the data set's settings.
        split: `train`, `test`, `ood`, `multi` or `deconfounded` (as many images as `test`).
    """

    def __init__(self, config: PlantedConfig, split: Split) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(_SPLIT_CODES)}")
        self.config, self.split = config, split
        self.combos = class_part_types(config)
        self.styles = part_styles(config)
        self.part_names = part_type_names(config.num_part_types, self.styles)
        self.classes = [f"class_{c}: " + "+".join(self.part_names[t] for t in combo)
                        for c, combo in enumerate(self.combos)]
        self._length = {
            "train": config.num_classes * config.train_per_class,
            "test": config.num_classes * config.test_per_class,
            "deconfounded": config.num_classes * config.test_per_class,
            "ood": config.ood_images,
            "multi": config.multi_images,
        }[split]
        m = config.num_classes
        self.targets = [-1] * self._length if split == "ood" else [i % m for i in range(self._length)]
        self._cache: dict[int, PlantedSample] = {}

    @property
    def num_parts(self) -> int:
        """Number of part types (the ids in `keypoints`)."""
        return self.config.num_part_types

    def __len__(self) -> int:
        return self._length

    def sample(self, i: int) -> PlantedSample:
        """The generated image `i` with its ground truth (cached)."""
        if not 0 <= i < self._length:
            raise IndexError(f"index {i} out of range for the {self.split} split of {self._length} images")
        if i not in self._cache:
            self._cache[i] = generate_image(self.config, self.split, i, self.combos, self.styles)
        return self._cache[i]

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        s = self.sample(i)
        return s.image, s.label

    def image(self, i: int) -> Image.Image:
        """The untransformed image (a copy)."""
        return self.sample(i).image.copy()

    def keypoints(self, i: int) -> torch.Tensor:
        """(K, 3) float `[part_type, x, y]` in the generated image's pixels."""
        return self.sample(i).keypoints.clone()

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of the generated image."""
        return self.config.size, self.config.size

    def classes_present(self, i: int) -> tuple[int, ...]:
        """The classes whose parts image `i` contains (two for `multi`, none for `ood`)."""
        return self.sample(i).classes_present
