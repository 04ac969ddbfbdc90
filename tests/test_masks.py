"""Object masks: the data (``--data.masks``), the ``on_object`` metric by hand, and evaluate() end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import pooled_logit_model, set_weights
from PIL import Image
from torch.utils.data import TensorDataset

from pipnet.evaluation import metrics as M
from pipnet.data import DataConfig, DataError, build_data
from pipnet.evaluation.evaluate import evaluate


def test_on_object_by_hand():
    # 64 x 64 input, 2 x 2 grid: skip = 32, cells cover [0, 32) and [32, 64), centres at 16 and 48.
    a = torch.zeros(64, 64, dtype=torch.bool)
    a[:32, :32] = True  # image A: object in the top-left quadrant only
    b = torch.ones(64, 64, dtype=torch.bool)  # image B: object everywhere
    masks = torch.stack([a, a, b])
    cells = torch.tensor([[0, 0], [1, 1], [0, 1]])  # A on the object, A off it, B on it
    result = M.on_object(masks, cells, (2, 2), 64)
    assert result["share"] == pytest.approx(2 / 3)
    assert result["chance"] == pytest.approx((1 / 4 + 1 / 4 + 1) / 3)  # A: 1 of 4 cell centres, B: 4 of 4
    assert result["num_patches"] == 3
    assert M.patch_centres(torch.tensor([[0, 1]]), (2, 2), 64).tolist() == [[16, 48]]
    empty = M.on_object(masks[:0], cells[:0], (2, 2), 64)
    assert np.isnan(empty["share"]) and empty["num_patches"] == 0


def _tree(tmp_path, with_missing: bool = False):
    root, masks = tmp_path / "data", tmp_path / "masks"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            (masks / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (20, 10), (200, 10 + 100 * i, 30)).save(root / split / cls / f"img{i}.jpg")
                mask = np.zeros((10, 20), dtype=np.uint8)
                mask[:, :10] = 255  # the left half of the image is the object
                if not (with_missing and split == "test" and cls == "b" and i == 1):
                    Image.fromarray(mask).save(masks / split / cls / f"img{i}.png")
    return root, masks


def test_folder_masks_at_the_input_size(tmp_path):
    root, masks = _tree(tmp_path)
    data = build_data(DataConfig(source="folder", root=str(root), masks=str(masks), image_size=8))
    assert set(data.mask_sets()) == {"train", "test"}
    mask = data.test.mask(3)
    assert mask.dtype == torch.bool and mask.shape == (8, 8)
    assert mask[:, :4].all() and not mask[:, 4:].any()  # the left half, after the plain resize to 8 x 8
    assert data.projection.has_masks and data.projection.mask(0).shape == (8, 8)
    plain = build_data(DataConfig(source="folder", root=str(root), image_size=8))
    assert plain.mask_sets() == {} and not plain.test.has_masks


def test_missing_masks_and_wrong_sources_are_one_line_errors(tmp_path):
    root, masks = _tree(tmp_path, with_missing=True)
    with pytest.raises(DataError, match=r"1 of 4 images have no mask .*img1\.png"):
        build_data(DataConfig(source="folder", root=str(root), masks=str(masks), image_size=8))
    with pytest.raises(DataError, match="does not exist"):
        build_data(DataConfig(source="folder", root=str(root), masks=str(tmp_path / "nowhere"), image_size=8))
    with pytest.raises(DataError, match="folder source only"):
        build_data(DataConfig(source="planted", masks=str(masks)))


class MaskedTensors(TensorDataset):
    def __init__(self, images, labels, masks):
        super().__init__(images, labels)
        self.masks = masks

    def mask(self, i: int) -> torch.Tensor:
        return self.masks[i]


def test_evaluate_on_object_end_to_end():
    # 224 px, 28 x 28 grid (stride 8): skip = 7, cell i spans [7i, 7i + 32) (the last [189, 224)), so the
    # centre of cell i is 7i + 16 (the last 206). Prototype 0 fires at cell (2, 3), centre (30, 37), in all
    # 4 images; prototype 1 is unused.
    grid = torch.zeros(4, 2, 28, 28)
    for n in range(4):
        grid[n, 0, 2, 3] = 10.0 - 0.1 * n
    images = grid.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    masks = torch.zeros(4, 224, 224, dtype=torch.bool)
    masks[:2, :64, :64] = True  # images 0, 1: the object holds (30, 37); 7 of 28 centres per axis are < 64
    masks[2:, 112:, :] = True  # images 2, 3: the bottom half; centres >= 112: cells 14..27, 14 of 28 rows
    model = pooled_logit_model(2, num_classes=2, stride=8, image_size=224)
    set_weights(model, [[1.0, 0.0], [1.0, 0.0]])
    data = MaskedTensors(images, torch.tensor([0, 0, 1, 1]), masks)
    m = evaluate(model, data, mask_sets={"test": data}, k=4, batch_size=2)
    result = m.on_object["test"]
    assert result["top4"] == pytest.approx(2 / 4)
    assert result["chance"] == pytest.approx((2 * 49 / 784 + 2 * (14 * 28) / 784) / 4)
    assert result["num_patches"] == 4 and result["num_prototypes"] == 1
    with pytest.raises(ValueError, match="no object masks"):
        evaluate(model, TensorDataset(images, torch.tensor([0, 0, 1, 1])), mask_sets={"x": TensorDataset(images)})
