"""Pictures of PIP-Net's explanations (paper Figures 2, 3 and 4), drawn with PIL.

Every function takes data (an [`ImageExplanation`][pipnet.explanation.explain.ImageExplanation], a
[`Projection`][pipnet.evaluation.projection.Projection], a training history) and returns a new image; nothing is computed
with the model here. Patches are cropped from the data set's untransformed originals (`raw_image(i)`),
the model-input box scaled to the original's size (paper supplementary Sec. 1.2), so they keep their full resolution
whatever the original's shape or colour mode.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pipnet.data.images import to_rgb
from pipnet.explanation.explain import ImageExplanation, ScoringSheet
from pipnet.model.patches import patch_box, scale_box, upsample_map
from pipnet.evaluation.detectors import ABSTAINED, Verdict
from pipnet.evaluation.projection import Projection

__all__ = [
    "draw_boxes",
    "explanation_figure",
    "heatmap_overlay",
    "prototype_gallery",
    "prototype_patches",
    "scoring_sheet_figure",
    "sparsity_curve",
]

Box = tuple[int, int, int, int]  # (top, bottom, left, right)
Colour = tuple[int, int, int]

PALETTE: tuple[Colour, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)  # fmt: skip
BACKGROUND: Colour = (255, 255, 255)
INK: Colour = (20, 20, 20)
MUTED: Colour = (110, 110, 110)
GAP = 6


class RawImageDataset(Protocol):
    def raw_image(self, index: int) -> Image.Image: ...


# --------------------------------------------------------------------------------------------------
# Building blocks


@lru_cache(maxsize=8)
def font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at `size` pixels (the fixed-size bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sizes
        return ImageFont.load_default()


def text_block(lines: Sequence[str], *, size: int = 13, colour: Colour = INK, width: int | None = None) -> Image.Image:
    """Lines of text on a white background, as narrow as the text unless `width` is given."""
    f = font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), line or " ", font=f) for line in lines]
    line_h = max([b[3] for b in boxes] + [size]) + 3
    w = width or max([b[2] for b in boxes] + [1]) + 2
    out = Image.new("RGB", (w, line_h * len(lines) + 2), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for n, line in enumerate(lines):
        draw.text((1, 1 + n * line_h), line, fill=colour, font=f)
    return out


def hstack(images: Sequence[Image.Image], gap: int = GAP, align: str = "top") -> Image.Image:
    """Images side by side on white, aligned at the top or the middle."""
    if not images:
        return Image.new("RGB", (1, 1), BACKGROUND)
    h = max(im.height for im in images)
    out = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), h), BACKGROUND)
    x = 0
    for im in images:
        out.paste(im, (x, (h - im.height) // 2 if align == "middle" else 0))
        x += im.width + gap
    return out


def vstack(images: Sequence[Image.Image], gap: int = GAP) -> Image.Image:
    """Images one below the other on white, left-aligned."""
    if not images:
        return Image.new("RGB", (1, 1), BACKGROUND)
    w, h = max(im.width for im in images), sum(im.height for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), BACKGROUND)
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + gap
    return out


def pad(image: Image.Image, margin: int = 10) -> Image.Image:
    out = Image.new("RGB", (image.width + 2 * margin, image.height + 2 * margin), BACKGROUND)
    out.paste(image, (margin, margin))
    return out


def fit(image: Image.Image, longest: int) -> Image.Image:
    """Resize so that the longer side is `longest` pixels, keeping the aspect ratio."""
    scale = longest / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)


def draw_boxes(
    image: Image.Image, boxes: Iterable[Box], colors: Sequence[Colour] | None = None, width: int | None = None
) -> Image.Image:
    """A copy of `image` (as RGB) with rectangles drawn on it.

    Args:
        image: any PIL image.
        boxes: (top, bottom, left, right) in the image's pixels, bottom and right exclusive.
        colors: one colour per box (default: the palette, in turn).
        width: line width (default: about 1/80 of the image's longer side, at least 2).
    """
    out = to_rgb(image).copy()
    draw = ImageDraw.Draw(out)
    width = width or max(2, max(out.size) // 80)
    for n, (top, bottom, left, right) in enumerate(boxes):
        colour = tuple(colors[n]) if colors is not None else PALETTE[n % len(PALETTE)]
        draw.rectangle((left, top, max(left, right - 1), max(top, bottom - 1)), outline=colour, width=width)
    return out


def _colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 along dark blue, red, yellow (a small hand-made 'hot' map)."""
    anchors = np.array([0.0, 0.35, 0.7, 1.0])
    rgb = np.array([[0, 0, 80], [200, 0, 40], [255, 140, 0], [255, 255, 160]], dtype=np.float64)
    return np.stack([np.interp(values, anchors, rgb[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def heatmap_overlay(image: Image.Image, map_hw: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """`image` blended with a prototype map (h, w), upsampled bilinearly to the image's size.

    The map is shown relative to its own maximum (its peak is the brightest colour).
    """
    rgb = to_rgb(image)
    up = upsample_map(torch.as_tensor(map_hw, dtype=torch.float32), (rgb.height, rgb.width)).numpy()  # (H, W)
    peak = float(up.max())
    heat = Image.fromarray(_colour_map(up / peak if peak > 0 else up))
    return Image.blend(rgb, heat, alpha)


# --------------------------------------------------------------------------------------------------
# Prototypes: their typical patches (Figure 4)


class OriginalImages:
    """`dataset.raw_image` as RGB, each image decoded once per drawing."""

    def __init__(self, dataset: RawImageDataset):
        self.dataset, self.cache = dataset, {}

    def __call__(self, index: int) -> Image.Image:
        if index not in self.cache:
            self.cache[index] = to_rgb(self.dataset.raw_image(index))
        return self.cache[index]


def crop_patch(original: Image.Image, box: Box, input_size: tuple[int, int], patch_px: int) -> Image.Image:
    """The patch of an original image under a model-input box, resized to `patch_px` square."""
    top, bottom, left, right = scale_box(box, input_size, (original.height, original.width))
    return original.crop((left, top, right, bottom)).resize((patch_px, patch_px), Image.BILINEAR)


def prototype_patches(
    projection: Projection,
    dataset: RawImageDataset,
    prototype: int,
    k: int = 10,
    patch_px: int = 64,
    *,
    originals: OriginalImages | None = None,
) -> list[tuple[Image.Image, float]]:
    """The top-k patches of one prototype, cropped from the originals, with their presences."""
    originals = originals or OriginalImages(dataset)
    grid_h, grid_w = projection.grid
    out = []
    for r in range(min(k, projection.k)):
        i, j = (int(v) for v in projection.cell[prototype, r])
        box = patch_box(i, j, grid_h, grid_w, projection.image_size)
        original = originals(int(projection.image_index[prototype, r]))
        patch = crop_patch(original, box, projection.image_size, patch_px)
        out.append((patch, float(projection.presence[prototype, r])))
    return out


def prototype_row(
    projection: Projection,
    dataset: RawImageDataset,
    prototype: int,
    k: int = 10,
    patch_px: int = 64,
    *,
    label: bool = True,
    originals: OriginalImages | None = None,
) -> Image.Image:
    """One row: the prototype's id, then its top-k patches with their presence underneath."""
    cells = [
        vstack([patch, text_block([f"{p:.2f}"], size=10, colour=MUTED)], gap=1)
        for patch, p in prototype_patches(projection, dataset, prototype, k, patch_px, originals=originals)
    ]
    head = [text_block([f"#{prototype}"], size=14, width=60)] if label else []
    return hstack(head + cells, gap=3, align="top")


def prototype_gallery(
    projection: Projection, dataset: RawImageDataset, prototypes: Iterable[int], k: int = 10, patch_px: int = 64
) -> Image.Image:
    """Paper Figure 4: one row of top-k patches per prototype (its id on the left, presences below).

    Args:
        projection: [`pipnet.evaluation.projection.project`][pipnet.evaluation.projection.project] of `dataset`.
        dataset: the projected data set; needs `raw_image(index) -> PIL.Image`.
        prototypes: which prototypes, in this order (e.g. `model.used_prototypes().tolist()`).
        k: patches per row (at most the projection's k).
        patch_px: side of each patch in the picture.
    """
    originals = OriginalImages(dataset)
    rows = [prototype_row(projection, dataset, int(p), k, patch_px, originals=originals) for p in prototypes]
    return pad(vstack(rows or [text_block(["(no prototypes)"])], gap=4))


# --------------------------------------------------------------------------------------------------
# One image's explanation (Figure 3) and the scoring sheet


def explanation_figure(
    explanation: ImageExplanation,
    image: Image.Image,
    projection: Projection | None = None,
    dataset: RawImageDataset | None = None,
    *,
    max_prototypes: int = 3,
    k: int = 5,
    image_px: int = 160,
    patch_px: int = 48,
    verdict: Verdict | None = None,
) -> Image.Image:
    """Paper Figure 3: the top classes with their scores; per contributing prototype the patch boxed on the
    image, presence p, weight w, evidence p·w, and (with a projection) the prototype's typical patches.

    Args:
        explanation: from [`pipnet.explanation.explain.explain`][pipnet.explanation.explain.explain].
        image: the explained image, at any size (its original, say); boxes are scaled to it.
        projection: optional projection, for the typical patches beside each prototype.
        dataset: the projected data set (with `raw_image`).
        max_prototypes: prototypes shown per class, largest evidence first (the rest are summed in one line).
        k: typical patches per prototype.
        image_px: longer side of the image thumbnails.
        patch_px: side of the typical patches.
        verdict: the model's verdict on the image ([Predictor][pipnet.Predictor]); its sentence heads the
            figure (without it, the predicted class or that the model abstains).
    """
    thumb = fit(to_rgb(image), image_px)
    originals = OriginalImages(dataset) if dataset is not None else None
    if verdict is not None:
        heading = textwrap.wrap(verdict.sentence, 90)
    elif explanation.abstained:
        heading = [ABSTAINED]
    else:
        top = explanation.top_classes[0]
        heading = [f"predicted: {top.class_name} (score {top.score:.3f})"]
    blocks = [text_block([f"image {explanation.image_id}", *heading], size=15)]
    if explanation.abstained:
        blocks.append(thumb)
    for rank, cls in enumerate(explanation.top_classes, start=1):
        bias = f" + bias {cls.bias:.3f}" if cls.bias else ""
        terms = f"sum of {len(cls.evidence)} evidence terms{bias}"
        blocks.append(text_block([f"{rank}. {cls.class_name}: score {cls.score:.3f} = {terms}"], size=14))
        for n, ev in enumerate(cls.evidence[:max_prototypes]):
            box = scale_box(ev.box, explanation.input_size, (thumb.height, thumb.width))
            colour = PALETTE[n % len(PALETTE)]
            facts = [f"prototype #{ev.prototype}", f"p = {ev.presence:.3f}", f"w = {ev.weight:.3f}"]
            facts.append(f"p·w = {ev.evidence:.3f}")
            row = [draw_boxes(thumb, [box], [colour]), text_block(facts, size=12, width=120)]
            if projection is not None and originals is not None:
                row.append(prototype_row(projection, dataset, ev.prototype, k, patch_px, label=False, originals=originals))
            blocks.append(hstack(row, align="middle"))
        rest = cls.evidence[max_prototypes:]
        if rest:
            more = f"+ {len(rest)} more prototypes, evidence {sum(e.evidence for e in rest):.3f} together"
            blocks.append(text_block([more], size=12, colour=MUTED))
    return pad(vstack(blocks))


def scoring_sheet_figure(
    sheet: ScoringSheet,
    projection: Projection | None = None,
    dataset: RawImageDataset | None = None,
    *,
    max_prototypes: int = 8,
    patch_px: int = 48,
) -> Image.Image:
    """The scoring sheet: per class, its relevant prototypes (largest weight first) with their weights and,
    with a projection, each prototype's most typical patch."""
    originals = OriginalImages(dataset) if dataset is not None else None
    rows = []
    for cls in sheet.classes:
        cells = [text_block([cls.class_name, f"{len(cls.prototypes)} prototypes"], size=13, width=140)]
        for entry in cls.prototypes[:max_prototypes]:
            label = text_block([f"#{entry.prototype}", f"w={entry.weight:.2f}"], size=11, width=patch_px)
            if projection is not None and originals is not None:
                patch = prototype_patches(projection, dataset, entry.prototype, 1, patch_px, originals=originals)
                cells.append(vstack([patch[0][0], label] if patch else [label], gap=1))
            else:
                cells.append(label)
        if len(cls.prototypes) > max_prototypes:
            cells.append(text_block([f"+{len(cls.prototypes) - max_prototypes} more"], size=11, colour=MUTED))
        rows.append(hstack(cells, gap=4))
    return pad(vstack(rows or [text_block(["(no classes)"])], gap=8))


# --------------------------------------------------------------------------------------------------
# Training history (Figure 2)

EPOCH_KEYS = ("epoch",)
SPARSITY_KEYS = ("sparsity", "sparsity_ratio")
ACCURACY_KEYS = ("test_top1", "test_accuracy", "test_acc", "val_top1", "top1", "accuracy")


History = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]


def _column(history: History, keys: Sequence[str]) -> tuple[str, list[float]] | None:
    """The first column named in `keys` as floats (blank cells -> NaN), from rows or from a dict of lists."""
    if isinstance(history, Mapping):
        columns = {k: list(v) for k, v in history.items()}
    else:
        names = dict.fromkeys(k for row in history for k in row)
        columns = {k: [row.get(k) for row in history] for k in names}
    for key in keys:
        if key in columns:
            return key, [float(v) if v not in (None, "") else float("nan") for v in columns[key]]
    return None


def sparsity_curve(history: History) -> bytes:
    """Paper Figure 2: sparsity ratio and test accuracy per epoch, as PNG bytes (600 x 320, drawn with PIL).

    Args:
        history: per-epoch rows (dicts, e.g. from `csv.DictReader`) or a dict of columns. Read columns:
            `epoch` (else 1, 2, ...), sparsity from the first of `sparsity` / `sparsity_ratio`, accuracy
            from the first of `test_top1` / `test_accuracy` / `test_acc` / `val_top1` / `top1` /
            `accuracy`. Values in [0, 1] or percent, as given; a blank cell leaves a gap in its line.
    """
    sparsity, accuracy = _column(history, SPARSITY_KEYS), _column(history, ACCURACY_KEYS)
    length = max(len(c[1]) for c in (sparsity, accuracy) if c) if (sparsity or accuracy) else 0
    epochs_col = _column(history, EPOCH_KEYS)
    epochs = epochs_col[1] if epochs_col else [float(e) for e in range(1, length + 1)]
    lines = [(c, colour, label) for c, colour, label in ((sparsity, (31, 119, 180), "sparsity ratio"),
                                                         (accuracy, (255, 127, 14), "test accuracy")) if c is not None]

    image = Image.new("RGB", (600, 320), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 50, 32, 585, 280  # the plot area
    draw.text((300, 8), "Sparsity of the scoring sheet and test accuracy per epoch", fill=INK, font=font(13), anchor="mt")
    draw.text(((left + right) // 2, 312), "epoch", fill=INK, font=font(12), anchor="mb")
    draw.rectangle((left, top, right, bottom), outline=MUTED)
    values = [v for c, _, _ in lines for v in c[1] if not np.isnan(v)]
    xs = [e for e in epochs[:length] if not np.isnan(e)]
    if not values or not xs:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no sparsity or accuracy column in the history", fill=MUTED,
                  font=font(12), anchor="mm")
        return _png(image)
    y_max = 100.0 if max(values) > 1.0 else 1.0
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left), bottom - y / y_max * (bottom - top)

    for i in range(6):  # horizontal grid and y labels
        y = y_max * i / 5
        _, py = at(x_lo, y)
        draw.line((left, py, right, py), fill=(225, 225, 225))
        draw.text((left - 5, py), f"{y:g}", fill=INK, font=font(11), anchor="rm")
    step = max(1, int(np.ceil((x_hi - x_lo) / 10)))
    for x in np.arange(x_lo, x_hi + 1e-9, step):  # x ticks
        px, _ = at(float(x), 0.0)
        draw.line((px, bottom, px, bottom + 4), fill=MUTED)
        draw.text((px, bottom + 6), f"{x:g}", fill=INK, font=font(11), anchor="mt")
    for (name, column), colour, _ in lines:
        points = [at(x, y) if not (np.isnan(x) or np.isnan(y)) else None for x, y in zip(epochs, column)]
        for a, b in zip(points, points[1:]):
            if a is not None and b is not None:  # a blank cell breaks the line
                draw.line((a, b), fill=colour, width=2)
        for point in points:
            if point is not None:
                draw.ellipse((point[0] - 2.5, point[1] - 2.5, point[0] + 2.5, point[1] + 2.5), fill=colour)
    for row, ((name, _), colour, label) in enumerate(reversed(lines)):  # legend, lower right
        y = bottom - 14 - 18 * row
        draw.line((right - 200, y, right - 180, y), fill=colour, width=2)
        draw.text((right - 175, y), f"{label} ({name})", fill=INK, font=font(11), anchor="lm")
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
