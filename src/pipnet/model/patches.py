"""Where a latent cell is in the image: grid cell -> pixel box (paper supplementary Sec. 1.2), heat maps and their boxes.

Every box is `(top, bottom, left, right)` in pixels of the model's input, half-open like a slice:
`image[..., top:bottom, left:right]` is the patch, and a point (x, y) lies inside when
`top <= y < bottom` and `left <= x < right`.

Faithful mapping (`patch_box`, `patch_boxes`). For an S x S input and an h x w grid,
skip = round((S - 32) / (h - 1)) (Python's round, half to even); cell i covers [i * skip, i * skip + 32)
clipped to the image, and the last row / column ends at the image border (so it can be taller than 32:
189..224 on the 28x28 ResNet grid at 224). On the 26x26 ConvNeXt grid the outer cells see less of the image:
cell i starts at max(0, (i - 1) * skip + 4), still 32 tall, and the last one ends at S.

Option (`box_from_heatmap`): the box of the region where the prototype actually fires, from its map
upsampled bilinearly to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "PATCH_SIZE",
    "box_from_heatmap",
    "boxes_from_heatmaps",
    "central_boxes",
    "patch_box",
    "patch_boxes",
    "patch_boxes_paper",
    "scale_box",
    "upsample_map",
]

PATCH_SIZE = 32  # every latent cell corresponds to a 32x32 patch of a 224x224 image (supplement 1.2)
CONVNEXT_GRID = (26, 26)  # the grid whose outer cells get the shifted mapping (paper supplementary Sec. 1.2)
CONVNEXT_OFFSET = 4

Box = tuple[int, int, int, int]


def _pair(size: int | tuple[int, int] | torch.Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _spans(index: torch.Tensor, cells: int, size: int, patch_size: int, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end (exclusive) pixel of cells `index` along one axis of `cells` cells and `size` pixels."""
    skip = round((size - patch_size) / (cells - 1)) if cells > 1 else 0
    start = (index - 1) * skip + CONVNEXT_OFFSET if shifted else index * skip
    start = start.clamp(0, size)
    end = (start + patch_size).clamp(max=size)
    end = torch.where(index == cells - 1, torch.full_like(end, size), end)  # the last cell ends at the border
    return start, end


def patch_boxes(
    cells: torch.Tensor, grid: tuple[int, int], image_size: int | tuple[int, int], patch_size: int = PATCH_SIZE
) -> torch.Tensor:
    """The faithful image box of many latent cells at once.

    Args:
        cells: (..., 2) integer tensor of (i, j) = (row, column) grid cells.
        grid: (h, w), the latent grid size.
        image_size: S or (H, W), the model's input size.
        patch_size: the nominal patch size (32).

    Returns:
        (..., 4) long tensor of (top, bottom, left, right).
    """
    grid_h, grid_w = grid
    height, width = _pair(image_size)
    cells = cells.long()
    shifted = (grid_h, grid_w) == CONVNEXT_GRID
    top, bottom = _spans(cells[..., 0], grid_h, height, patch_size, shifted)
    left, right = _spans(cells[..., 1], grid_w, width, patch_size, shifted)
    return torch.stack([top, bottom, left, right], dim=-1)


def patch_boxes_paper(
    cells: torch.Tensor, grid: tuple[int, int], image_size: int | tuple[int, int], patch_size: int = PATCH_SIZE
) -> torch.Tensor:
    """The image boxes of the published code (Faithfulness page, 'The published code', item 4): never longer than `patch_size`.

    As `patch_boxes`, except that a box reaching the image border (the last row / column always
    does) is the last `patch_size` pixels, [S - 32, S): 192..224 for the last cell at 224 on both the
    28x28 and the 26x26 grid, where `patch_boxes` gives 189..224 and 196..224.

    Args:
        cells: (..., 2) integer tensor of (i, j) = (row, column) grid cells.
        grid: (h, w), the latent grid size.
        image_size: S or (H, W), the model's input size.
        patch_size: the nominal patch size (32).

    Returns:
        (..., 4) long tensor of (top, bottom, left, right).
    """
    boxes = patch_boxes(cells, grid, image_size, patch_size)
    height, width = _pair(image_size)
    out = boxes.clone()
    for lo, hi, size in ((0, 1, height), (2, 3, width)):
        border = boxes[..., hi] >= size
        out[..., lo] = torch.where(border, torch.full_like(boxes[..., lo], max(size - patch_size, 0)), boxes[..., lo])
        out[..., hi] = torch.where(border, torch.full_like(boxes[..., hi], size), boxes[..., hi])
    return out


def patch_box(
    i: int, j: int, grid_h: int, grid_w: int, image_size: int | tuple[int, int], patch_size: int = PATCH_SIZE
) -> Box:
    """The faithful image box `(top, bottom, left, right)` of latent cell (i, j) (paper supplementary Sec. 1.2).

    Args:
        i: row of the cell, 0 <= i < grid_h.
        j: column of the cell, 0 <= j < grid_w.
        grid_h: latent grid height h.
        grid_w: latent grid width w.
        image_size: S or (H, W), the model's input size.
        patch_size: the nominal patch size (32).
    """
    if not (0 <= i < grid_h and 0 <= j < grid_w):
        raise IndexError(f"cell ({i}, {j}) is outside the {grid_h}x{grid_w} grid")
    box = patch_boxes(torch.tensor([i, j]), (grid_h, grid_w), image_size, patch_size)
    return tuple(int(v) for v in box.tolist())  # type: ignore[return-value]


def central_boxes(boxes: torch.Tensor, size: int = PATCH_SIZE) -> torch.Tensor:
    """Shrink boxes taller or wider than `size` to their central `size` pixels (smaller sides are kept).

    The start moves by floor((extent - size) / 2): a 35-pixel span 189..224 becomes 190..222.

    Args:
        boxes: (..., 4) (top, bottom, left, right).
        size: the largest extent kept.
    """
    boxes = boxes.long()
    out = boxes.clone()
    for lo, hi in ((0, 1), (2, 3)):
        extent = boxes[..., hi] - boxes[..., lo]
        excess = (extent - size).clamp(min=0)
        out[..., lo] = boxes[..., lo] + excess // 2
        out[..., hi] = out[..., lo] + torch.minimum(extent, torch.full_like(extent, size))
    return out


def upsample_map(map_hw: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of a map (h, w), or of maps (..., h, w), to `size`.

    Args:
        map_hw: (h, w) or (..., h, w) prototype map(s).
        size: S or (H, W).
    """
    lead = map_hw.shape[:-2]
    flat = map_hw.reshape(-1, 1, *map_hw.shape[-2:]).float()  # (N, 1, h, w)
    up = F.interpolate(flat, size=_pair(size), mode="bilinear", align_corners=False)  # (N, 1, H, W)
    return up.reshape(*lead, *up.shape[-2:])


def boxes_from_heatmaps(maps: torch.Tensor, image_size: int | tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Option: boxes covering where each prototype fires, for maps (N, h, w).

    Each map is upsampled bilinearly to the input size; the box is the bounding box of the pixels whose
    value is at least `threshold` times that upsampled map's maximum (so it is never empty; a constant map
    gives the whole image).

    Args:
        maps: (N, h, w) presence maps.
        image_size: S or (H, W).
        threshold: fraction of the maximum, in [0, 1].

    Returns:
        (N, 4) long tensor of (top, bottom, left, right).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    up = upsample_map(maps, image_size)  # (N, H, W)
    peak = up.flatten(1).amax(dim=1)  # (N,)
    hot = up >= threshold * peak[:, None, None]  # (N, H, W)
    rows, cols = hot.any(dim=2), hot.any(dim=1)  # (N, H), (N, W)

    def first_last(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = mask.int().argmax(dim=1)  # argmax gives the first maximal index
        last = mask.shape[1] - mask.flip(1).int().argmax(dim=1)  # exclusive end
        return first, last

    (top, bottom), (left, right) = first_last(rows), first_last(cols)
    return torch.stack([top, bottom, left, right], dim=1).long()


def box_from_heatmap(map_hw: torch.Tensor, image_size: int | tuple[int, int], threshold: float = 0.5) -> Box:
    """Option: the box `(top, bottom, left, right)` covering where one prototype map (h, w) fires.

    See `boxes_from_heatmaps`.
    """
    box = boxes_from_heatmaps(map_hw[None], image_size, threshold)[0]
    return tuple(int(v) for v in box.tolist())  # type: ignore[return-value]


def scale_box(box: Box, from_size: int | tuple[int, int], to_size: int | tuple[int, int]) -> Box:
    """Map a box from the model's input (S x S) to an image of another size, e.g. the original photo.

    Starts are rounded down and ends up (exact integer arithmetic), so the scaled box covers the
    region the input box covered.

    Args:
        box: (top, bottom, left, right) in `from_size` pixels.
        from_size: S or (H, W) of the input the box refers to.
        to_size: (H, W) (or one int for a square) of the target image.
    """
    top, bottom, left, right = (int(v) for v in box)
    (fh, fw), (th, tw) = _pair(from_size), _pair(to_size)
    return (top * th // fh, -(-bottom * th // fh), left * tw // fw, -(-right * tw // fw))
