"""Duplicates and everywhere-prototypes (pipnet.evaluation.quality.overlap): the rule by hand and on hand-built models."""

from __future__ import annotations

import math

import pytest
import torch
from eval_helpers import logit_model, pooled_logit_model, set_weights
from torch.utils.data import TensorDataset

from pipnet.evaluation.projection import project
from pipnet.evaluation.quality import quality_card, top_images
from pipnet.evaluation.quality.overlap import chance_share, duplicate_pairs


def test_duplicate_rule_by_hand():
    # k = 4. Prototype 1 shares images 0-3 with 0, at the same or a neighbouring cell except image 3 (2 rows off);
    # 2 shares images 0-1 with 0 at the same cell; 3 the same images as 0 at other places; 4 is a copy of 0.
    image = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [0, 1, 7, 8], [0, 1, 2, 3], [0, 1, 2, 3]])
    cell = torch.tensor([
        [(3, 3)] * 4,
        [(3, 4), (2, 2), (5, 3), (3, 3)],  # rows of images 1, 0, 3, 2: image 3 is at (5, 3), 2 rows off
        [(3, 3)] * 4,
        [(9, 9)] * 4,
        [(3, 3)] * 4,
    ])
    presence = torch.full((5, 4), 0.9)
    used = torch.tensor([0, 1, 2, 3])
    pairs = duplicate_pairs(image, cell, presence, used)  # at least half of the k = 4 images
    assert pairs[0] == {"a": 0, "b": 1, "share": 0.75, "shared": 3, "k": 4}
    assert [(p["a"], p["b"], p["share"]) for p in pairs] == [(0, 1, 0.75), (0, 2, 0.5), (1, 2, 0.5)]
    assert [(p["a"], p["b"]) for p in duplicate_pairs(image, cell, presence, used, min_share=0.6)] == [(0, 1)]
    assert duplicate_pairs(image, cell, presence, used, min_share=0.8) == []
    assert duplicate_pairs(image, cell, presence, used, max_cells=2)[0]["share"] == 1.0  # image 3 now counts
    exact = duplicate_pairs(image, cell, presence, used, max_cells=0)  # same cell only: 0 and 1 share image 2 alone
    assert [(p["a"], p["b"], p["shared"]) for p in exact] == [(0, 2, 2)]
    every = duplicate_pairs(image, cell, presence, torch.arange(5))
    assert {(p["a"], p["b"]) for p in every} >= {(0, 1), (0, 4), (1, 4)}  # 4 duplicates 0 once it is used
    assert (3, 4) not in {(p["a"], p["b"]) for p in every}
    assert duplicate_pairs(image, cell, presence, torch.tensor([0])) == []
    presence[2, 1] = 0.05  # prototype 2 hardly present on image 1: that image no longer counts for it
    assert [(p["a"], p["b"]) for p in duplicate_pairs(image, cell, presence, used)] == [(0, 1)]


def test_chance_share_by_hand():
    assert chance_share(10, 10, (1, 2)) == 1.0  # every image, every cell a neighbour
    assert chance_share(10, 100, (3, 3)) == pytest.approx(0.1 * (7 / 9) ** 2)  # 7 of 9 row pairs within 1
    assert chance_share(10, 100, (3, 3), max_cells=0) == pytest.approx(0.1 / 9)
    assert chance_share(10, 5, (2, 2)) == 1.0  # k is capped by the number of images


def twin_channels(n: int = 12):
    """P = 4 on a 28 x 28 grid (S = 224, avg-pooled by 8) in n images. Prototype 1 is a twin of 0: it peaks
    one cell below 0's peak in every image (0's presence there is 0.73, 1's ~1). Prototype 2 fires 10 rows
    below, prototype 3 in the odd images only, 10 columns to the right."""
    x = torch.zeros(n, 4, 224, 224)
    for k in range(n):
        i, j = 3 + k % 7, 4 + 2 * (k % 5)
        x[k, 0, 8 * i:8 * i + 8, 8 * j:8 * j + 8] = 10.0
        x[k, 1, 8 * i:8 * i + 8, 8 * j:8 * j + 8] = 9.0  # same place, lower logit (presence 0.73 / 0.27 there)
        x[k, 1, 8 * i + 8:8 * i + 16, 8 * j:8 * j + 8] = 10.0  # and dominant one cell below
        x[k, 2, 8 * (i + 10):8 * (i + 11), 8 * j:8 * j + 8] = 10.0
        if k % 2:
            x[k, 3, 8 * i:8 * i + 8, 8 * (j + 10):8 * (j + 11)] = 10.0
    labels = torch.tensor([k % 2 for k in range(n)])
    model = pooled_logit_model(4, num_classes=2, stride=8, image_size=224)
    set_weights(model, [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    return model, TensorDataset(x, labels)


def test_a_prototype_twin_is_found_and_distinct_ones_are_not():
    model, data = twin_channels()
    card = quality_card(model, data)
    dup = card["duplicates"]
    assert dup["count"] == 1 and dup["pairs"] == [{"a": 0, "b": 1, "share": 1.0, "shared": 10, "k": 10}]
    assert "50%" in dup["rule"] and dup["params"]["max_cells"] == 1
    # 10 of 12 images; on 28 rows, 28 + 2 * 27 of the 784 row pairs are at most 1 apart: (82 / 784) ** 2
    assert dup["params"]["chance"] == pytest.approx(10 / 12 * (82 / 784) ** 2)
    # Prototype 0 and 2 are present on every image (each class), so both are "everywhere"; 3 on half of one class.
    every = card["everywhere"]
    assert every["count"] == 3 and set(every["prototypes"]) == {"0", "1", "2"}
    assert every["prototypes"]["0"] == {"share_min": 1.0, "per_class": [1.0, 1.0]}
    set_weights(model, [[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]])  # the twin unused: no duplicate left
    assert quality_card(model, data)["duplicates"]["count"] == 0


def test_everywhere_block_reuses_the_shares():
    model = logit_model(4, num_classes=3)
    set_weights(model, [[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    x = torch.zeros(10, 4, 1, 2)
    x[:, 0, 0, 0] = 10.0  # prototype 0 everywhere
    x[:5, 1, 0, 1] = 10.0
    x[5:, 2, 0, 1] = 10.0
    labels = torch.tensor([0] * 5 + [1] * 5)  # class 2 has no images: its share is NaN, ignored
    card = quality_card(model, TensorDataset(x, labels))
    entry = card["everywhere"]["prototypes"]["0"]
    assert card["everywhere"]["count"] == 1 and entry["share_min"] == 1.0
    assert entry["per_class"][:2] == [1.0, 1.0] and math.isnan(entry["per_class"][2])
    assert card["consistency"] is None


def test_top_images_for_the_sensitivity_block():
    model, data = twin_channels()
    projection = project(model, data, k=3, presence_threshold=0.5)
    top = top_images(projection, model.used_prototypes())
    assert set(top) == {0, 1, 2, 3} and all(len(v) == 3 for v in top.values())
    assert set(top[3]) <= {1, 3, 5, 7, 9, 11}
    with pytest.raises(ValueError, match="covers 12 images"):
        quality_card(model, torch.utils.data.Subset(data, range(5)), projection=projection)
