"""Duplicates and everywhere-prototypes (pipnet.quality.overlap): the rule by hand and on hand-built models."""

from __future__ import annotations

import math

import pytest
import torch
from eval_helpers import logit_model, pooled_logit_model, set_weights
from torch.utils.data import TensorDataset

from pipnet.projection import project
from pipnet.quality import quality_card, top_images
from pipnet.quality.overlap import duplicate_pairs


def test_duplicate_rule_by_hand():
    # prototype 0 in images 0-4; 1 in 0-4 at the same or a neighbouring cell but image 4 two cells away;
    # 2 in images 0-1 only; 3 in 0-4 at other places; 4 like 0 but unused.
    rows = [(0, n, (3, 3)) for n in range(5)]
    rows += [(1, n, (3, 4) if n < 4 else (5, 3)) for n in range(5)]
    rows += [(2, n, (3, 3)) for n in range(2)]
    rows += [(3, n, (9, 9)) for n in range(5)]
    rows += [(4, n, (3, 3)) for n in range(5)]
    proto = torch.tensor([r[0] for r in rows])
    image = torch.tensor([r[1] for r in rows])
    cell = torch.tensor([r[2] for r in rows])
    used = torch.tensor([0, 1, 2, 3])
    pairs = duplicate_pairs(proto, image, cell, used, num_images=6, min_overlap=0.8)
    assert pairs == [{"a": 0, "b": 1, "overlap": 0.8, "both": 4, "either": 5}]  # 4 of 5 at the same place
    assert duplicate_pairs(proto, image, cell, used, num_images=6, min_overlap=0.81) == []
    loose = duplicate_pairs(proto, image, cell, used, num_images=6, min_overlap=0.4)
    # 2 fires on a subset of the images of 0 and 1, next to both: 2 of the 5 images where either is present
    assert [(p["a"], p["b"], p["overlap"]) for p in loose] == [(0, 1, 0.8), (0, 2, 0.4), (1, 2, 0.4)]
    far = duplicate_pairs(proto, image, cell, used, num_images=6, min_overlap=0.8, max_cells=2)
    assert far[0]["overlap"] == 1.0  # image 4's cells are 2 rows apart
    every = duplicate_pairs(proto, image, cell, torch.arange(5), num_images=6)
    assert {(p["a"], p["b"]) for p in every} == {(0, 1), (0, 4), (1, 4)}  # 4 duplicates 0 once it is used
    assert duplicate_pairs(proto, image, cell, torch.tensor([0]), num_images=6) == []


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
    assert dup["count"] == 1 and dup["pairs"] == [{"a": 0, "b": 1, "overlap": 1.0, "both": 12, "either": 12}]
    assert "80%" in dup["rule"] and dup["params"]["max_cells"] == 1
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
    assert card["consistency"] is None and card["duplicates"]["count"] == 0


def test_top_images_for_the_sensitivity_block():
    model, data = twin_channels()
    projection = project(model, data, k=3, presence_threshold=0.5)
    top = top_images(projection, model.used_prototypes())
    assert set(top) == {0, 1, 2, 3} and all(len(v) == 3 for v in top.values())
    assert set(top[3]) <= {1, 3, 5, 7, 9, 11}
    with pytest.raises(ValueError, match="covers 12 images"):
        quality_card(model, torch.utils.data.Subset(data, range(5)), projection=projection)
