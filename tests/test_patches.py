"""Latent cell -> image box (spec section 7), heat-map boxes and box scaling, against hand-computed values."""

import pytest
import torch

from pipnet.model.patches import (
    box_from_heatmap,
    boxes_from_heatmaps,
    central_boxes,
    patch_box,
    patch_boxes,
    scale_box,
    upsample_map,
)

# Hand-computed at S = 224:
#   26x26 (ConvNeXt): skip = round(192 / 25) = round(7.68) = 8; start = max(0, (i - 1) * 8 + 4); last ends at 224.
#   13x13:            skip = round(192 / 12) = 16; start = 16 i.
#   28x28 (ResNet):   skip = round(192 / 27) = round(7.11) = 7; start = 7 i; last (27) = 189..224, 35 tall.
SPEC_CASES = [
    (26, 0, (0, 32)),
    (26, 1, (4, 36)),
    (26, 13, (100, 132)),
    (26, 24, (188, 220)),
    (26, 25, (196, 224)),
    (13, 0, (0, 32)),
    (13, 6, (96, 128)),
    (13, 11, (176, 208)),
    (13, 12, (192, 224)),
    (28, 0, (0, 32)),
    (28, 14, (98, 130)),
    (28, 26, (182, 214)),
    (28, 27, (189, 224)),
]


@pytest.mark.parametrize("grid, index, span", SPEC_CASES)
def test_patch_box_matches_hand_computed_spans(grid, index, span):
    # Rows and columns follow the same rule: (i, 0) gives the span as rows, (0, i) as columns.
    first = SPEC_CASES[[c[0] for c in SPEC_CASES].index(grid)][2]
    assert patch_box(index, 0, grid, grid, 224) == (*span, *first)
    assert patch_box(0, index, grid, grid, 224) == (*first, *span)


def test_vectorised_boxes_equal_scalar_boxes():
    for grid in (26, 13, 28, 7):
        ii, jj = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        cells = torch.stack([ii, jj], dim=-1)  # (g, g, 2)
        boxes = patch_boxes(cells, (grid, grid), 224)
        assert boxes.shape == (grid, grid, 4) and boxes.dtype == torch.long
        for i, j in [(0, 0), (1, grid - 1), (grid // 2, 3), (grid - 1, grid - 1)]:
            assert tuple(boxes[i, j].tolist()) == patch_box(i, j, grid, grid, 224)
        assert (boxes >= 0).all() and (boxes <= 224).all()


def test_non_square_input_and_grid():
    # (H, W) = (224, 112), grid 28 x 14: columns use skip = round(80 / 13) = 6.
    assert patch_box(27, 13, 28, 14, (224, 112)) == (189, 224, 78, 112)
    assert patch_box(2, 1, 28, 14, (224, 112)) == (14, 46, 6, 38)


def test_out_of_grid_cell_is_an_error():
    with pytest.raises(IndexError):
        patch_box(26, 0, 26, 26, 224)


def test_central_boxes_shrink_only_large_sides():
    boxes = torch.tensor([[189, 224, 0, 32], [196, 224, 188, 220], [0, 40, 10, 43]])
    assert central_boxes(boxes, 32).tolist() == [[190, 222, 0, 32], [196, 224, 188, 220], [4, 36, 10, 42]]


def test_upsample_map_shapes_and_constant():
    m = torch.full((3, 5, 4, 4), 0.25)
    assert upsample_map(m, 32).shape == (3, 5, 32, 32)
    assert torch.allclose(upsample_map(m[0, 0], (16, 8)), torch.full((16, 8), 0.25))


def test_box_from_heatmap_covers_the_firing_region():
    m = torch.zeros(3, 3)
    m[1, 1] = 1.0
    top, bottom, left, right = box_from_heatmap(m, 224, threshold=0.5)
    # Symmetric around the centre, inside the middle third's neighbourhood, and smaller than the image.
    assert (top, left) == (224 - bottom, 224 - right)
    assert 60 < top < 112 < bottom < 164
    corner = torch.zeros(4, 4)
    corner[0, 3] = 1.0
    t, b, l, r = box_from_heatmap(corner, 64, threshold=0.5)
    assert t == 0 and r == 64 and b <= 32 and l >= 32
    # A higher threshold gives a box inside the lower threshold's box.
    t2, b2, l2, r2 = box_from_heatmap(m, 224, threshold=0.9)
    assert top <= t2 and b2 <= bottom and left <= l2 and r2 <= right and (b2 - t2) < (bottom - top)


def test_box_from_constant_map_is_the_whole_image_and_batched_matches():
    assert box_from_heatmap(torch.full((5, 5), 0.3), 40) == (0, 40, 0, 40)
    maps = torch.rand(6, 7, 7)
    batched = boxes_from_heatmaps(maps, 56, threshold=0.7)
    assert [tuple(b) for b in batched.tolist()] == [box_from_heatmap(m, 56, 0.7) for m in maps]
    # brute force: the bounding box of the thresholded upsampled map
    up = upsample_map(maps[2], 56)
    ys, xs = (up >= 0.7 * up.max()).nonzero(as_tuple=True)
    assert tuple(batched[2].tolist()) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)


def test_scale_box_rounds_outwards():
    assert scale_box((0, 32, 96, 128), 224, 448) == (0, 64, 192, 256)
    # 224 -> (500, 300): 189 * 500 / 224 = 421.9 -> 421 (down); 224 -> 500; 32 * 300 / 224 = 42.9 -> 43 (up)
    assert scale_box((189, 224, 0, 32), 224, (500, 300)) == (421, 500, 0, 43)


def test_paper_border_boxes_are_the_last_32_pixels():
    # Spec 10.4: a box reaching the border is [S - 32, S). 28x28: the last cell 189..224 -> 192..224;
    # 26x26: 196..224 -> 192..224; 13x13: 192..224 already. Other cells are unchanged.
    from pipnet.model.patches import patch_boxes_paper

    cases = [(28, 27, (192, 224)), (28, 26, (182, 214)), (26, 25, (192, 224)), (26, 24, (188, 220)),
             (26, 0, (0, 32)), (13, 12, (192, 224)), (28, 0, (0, 32))]  # fmt: skip
    for grid, index, span in cases:
        box = patch_boxes_paper(torch.tensor([index, 0]), (grid, grid), 224)
        assert tuple(box.tolist()) == (*span, 0, 32)
        box = patch_boxes_paper(torch.tensor([0, index]), (grid, grid), 224)
        assert tuple(box.tolist()) == (0, 32, *span)
    # Non-square: columns of a 14-wide grid at W = 112: the last (78..112) becomes 80..112.
    assert tuple(patch_boxes_paper(torch.tensor([27, 13]), (28, 14), (224, 112)).tolist()) == (192, 224, 80, 112)
    every = torch.stack(torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij"), dim=-1)
    boxes = patch_boxes_paper(every, (28, 28), 224)
    assert ((boxes[..., 1] - boxes[..., 0]) == 32).all() and ((boxes[..., 3] - boxes[..., 2]) == 32).all()
