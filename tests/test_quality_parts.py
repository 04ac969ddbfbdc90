"""Consistency and stability (pipnet.evaluation.quality.parts): regions and shares by hand, a hand-built model with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from eval_helpers import KeypointDataset, pooled_logit_model, set_weights

from pipnet.evaluation import metrics as M
from pipnet.evaluation.projection import project
from pipnet.evaluation.quality import quality_card
from pipnet.evaluation.quality.parts import (
    consistency_block,
    evaluation_pairs,
    noisy_cells,
    part_shares,
    region_boxes,
    stability_block,
    unchanged_shares,
)

S, STRIDE = 224, 8  # a 28 x 28 grid; cell i's faithful patch is [7i, 7i + 32), its centre 7i + 16


def centre(i: int, j: int) -> tuple[float, float]:
    """(x, y) pixel of the centre of cell (i, j)'s patch."""
    return 7.0 * j + 16, 7.0 * i + 16


def test_region_boxes_by_hand():
    cells = torch.tensor([[10, 10], [0, 0], [27, 27]])
    boxes = region_boxes(cells, (28, 28), (S, S))  # side 72: centre 86 -> 50..122; centre 16 -> -20..52, clipped
    # the last patch is 189..224, centre 206: 170..242, clipped to 170..224
    assert boxes.tolist() == [[50, 122, 50, 122], [0, 52, 0, 52], [170, 224, 170, 224]]
    assert region_boxes(cells[:1], (28, 28), (S, S), fraction=0.5).tolist() == [[30, 142, 30, 142]]


def test_part_membership_half_open_and_groups():
    boxes = torch.tensor([[0, 10, 0, 10], [0, 10, 0, 10]])
    keypoints = torch.tensor([[0, 0, 5.0, 5.0], [0, 1, 10.0, 5.0], [1, 2, 9.9, 9.9]], dtype=torch.float64)
    contains, visible = M.part_membership(torch.tensor([0, 1]), boxes, keypoints, num_parts=3)
    assert contains.tolist() == [[True, False, False], [False, False, True]]  # x = 10 is outside [0, 10)
    assert visible.tolist() == [[True, True, False], [False, False, True]]
    merged, _ = M.part_membership(torch.tensor([0, 1]), boxes, keypoints, num_parts=3, part_groups=[0, 1, 0])
    assert merged.tolist() == [[True, False], [True, False]]


def test_shares_and_blocks_by_hand():
    contains = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 0], [0, 0]], dtype=torch.bool)
    proto = torch.tensor([0, 0, 0, 2, 2])
    shares = part_shares(contains, proto, num_prototypes=3)
    assert shares[0].tolist() == pytest.approx([2 / 3, 1 / 3]) and shares[2].tolist() == [0.5, 0.0]
    assert all(math.isnan(v) for v in shares[1].tolist())
    block = consistency_block(shares, torch.tensor([0, 1, 2]), ["beak", "wing"], threshold=0.6)
    assert block["per_prototype"] == {"0": {"score": pytest.approx(2 / 3), "part": "beak"}, "2": {"score": 0.5, "part": "beak"}}
    assert (block["score"], block["consistent"], block["num_prototypes"], block["unscored"]) == (0.5, 1, 2, 1)
    noisy = contains.clone()
    noisy[1] = torch.tensor([True, True])  # image 1 of prototype 0 changed
    unchanged = unchanged_shares(contains, noisy, proto, 3)
    assert unchanged[0].item() == pytest.approx(2 / 3) and unchanged[2].item() == 1.0 and math.isnan(unchanged[1].item())
    assert stability_block(unchanged, torch.tensor([0, 1, 2]))["score"] == pytest.approx((2 / 3 + 1) / 2)


def planted_model_and_data():
    """P = 4 prototypes, 2 classes, 40 images whose "pixels" hold prototype logits (avg-pooled by 8 to 28 x 28).

    Part 0 is in every class-0 image, part 1 in every class-1 image, at a known cell. Answers by construction:
    - prototype 0 (class 0): peaks on part 0 in all 10 class-0 images -> consistent (1.0, part 0), stable (1.0);
      it also peaks far from any part in the class-1 images, which are not its evaluation images;
    - prototype 1 (class 0): peaks one cell right of part 0 in 7 images, 12 rows away in 3 -> 0.7 < 0.8;
    - prototype 2 (class 1): absent from images 10 and 11; in the other 28 two equal peaks, on part 1 (first in
      row-major order, so the clean argmax) and 14 rows below, so noise picks either: consistent, unstable;
    - prototype 3: peaks on part 0 everywhere but has no weight: not carded.
    """
    x = torch.zeros(40, 4, S, S)
    keypoints = []

    def peak(n: int, p: int, i: int, j: int) -> None:
        x[n, p, STRIDE * i:STRIDE * (i + 1), STRIDE * j:STRIDE * (j + 1)] = 10.0

    for n in range(40):
        i, j = 2 + (n % 5), 3 + 4 * (n % 4)  # the part's cell
        part = 0 if n < 10 else 1
        keypoints.append(torch.tensor([[part, *centre(i, j)]]))
        if n < 10:
            peak(n, 0, i, j)
            peak(n, 1, i, j + 1) if n < 7 else peak(n, 1, i + 12, j)
            peak(n, 3, i + 1, j)
        else:
            peak(n, 0, i + 20, j)
            if n >= 12:
                peak(n, 2, i, j)
                peak(n, 2, i + 14, j)
    labels = torch.tensor([0] * 10 + [1] * 30)
    data = KeypointDataset(x, labels, keypoints, num_parts=2)
    data.part_names = ["beak", "wing"]
    model = pooled_logit_model(4, num_classes=2, stride=STRIDE, image_size=S)
    set_weights(model, [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    return model, data


def test_evaluation_pairs_are_the_present_images_of_the_weighted_classes():
    model, data = planted_model_and_data()
    projection = project(model, data, k=5, presence_threshold=0.5)
    proto, image, _ = evaluation_pairs(model, projection, data.tensors[1], model.used_prototypes())
    assert image[proto == 0].tolist() == list(range(10))  # not the class-1 images where it also fires
    assert image[proto == 2].tolist() == list(range(12, 40))  # not 10, 11 (absent)
    assert set(proto.tolist()) == {0, 1, 2}


def test_consistency_and_stability_find_the_planted_answers():
    model, data = planted_model_and_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    card = quality_card(model, data, batch_size=7, k=30)  # stability on the top-30: all 28 images of prototype 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    cons, stab = card["consistency"], card["stability"]
    assert cons["per_prototype"] == {"0": {"score": 1.0, "part": "beak"}, "1": {"score": pytest.approx(0.7), "part": "beak"},
                                     "2": {"score": 1.0, "part": "wing"}}
    assert (cons["consistent"], cons["num_prototypes"], cons["threshold"]) == (2, 3, 0.8)
    assert cons["score"] == pytest.approx(2 / 3)
    assert stab["per_prototype"]["0"] == 1.0 and stab["per_prototype"]["1"] == 1.0
    assert 0.2 < stab["per_prototype"]["2"] < 0.8  # a coin flip on each of 28 images (seeded)
    assert stab["params"]["sigma"] == 0.2 and cons["params"]["mu"] == 0.8
    # The seeded noise does not depend on the batch size.
    assert quality_card(model, data, batch_size=3, k=30)["stability"] == stab


def test_noise_off_leaves_every_argmax_and_noise_moves_only_the_tie():
    model, data = planted_model_and_data()
    images = list(range(40))
    clean = noisy_cells(model, data, images, std=0.0)
    projection = project(model, data, k=40, presence_threshold=0.5)
    first = projection.cell[0][projection.image_index[0].argsort()]  # prototype 0's argmax in images 0..39
    assert torch.equal(torch.stack([clean[:, 0] // 28, clean[:, 0] % 28], dim=-1), first)
    noisy = noisy_cells(model, data, images, std=0.2)
    assert torch.equal(noisy[:10, :2], clean[:10, :2]) and torch.equal(noisy[:, 0], clean[:, 0])  # clear peaks stay
    assert (noisy[12:, 2] != clean[12:, 2]).any() and (noisy[12:, 2] == clean[12:, 2]).any()


def test_no_keypoints_no_parts_blocks():
    model, data = planted_model_and_data()
    plain = torch.utils.data.TensorDataset(*data.tensors)
    card = quality_card(model, plain)
    assert card["consistency"] is None and card["stability"] is None
    assert quality_card(model, data, parts=False)["consistency"] is None
    with pytest.raises(ValueError, match="presence threshold 0.5"):
        quality_card(model, data, projection=project(model, data, presence_threshold=0.3))


def test_evaluate_writes_the_quality_block_and_reads_it_back():
    import json

    from pipnet.evaluation.evaluate import Metrics, evaluate, format_metrics_table

    model, data = planted_model_and_data()
    m = evaluate(model, data, train_set=data, purity_sets={"train": data}, batch_size=16)
    assert m.quality is not None and m.quality == quality_card(model, data)
    saved = json.loads(m.to_json())
    assert set(saved["quality"]) == {"consistency", "stability", "duplicates", "everywhere", "sensitivity", "suspects"}
    assert saved["quality"]["consistency"]["per_prototype"]["1"]["part"] == "beak"
    back = Metrics.from_dict(saved)
    assert back.quality == saved["quality"] and back.to_dict() == saved
    table = format_metrics_table(m)
    assert any(line.startswith("consistency (train) ") and line.endswith("  0.667, 2 of 3 consistent (mu 0.8)")
               for line in table.splitlines())
    assert "duplicate pairs (train)" in table and "stability (train)" in table
    assert evaluate(model, data, train_set=data, quality=False).quality is None
    assert evaluate(model, data).quality is None  # no training set, no card
    plain = torch.utils.data.TensorDataset(*data.tensors)
    no_parts = evaluate(model, plain, train_set=plain)
    assert no_parts.quality["consistency"] is None and json.loads(no_parts.to_json())["quality"]["stability"] is None
    assert Metrics.from_dict(json.loads(no_parts.to_json())).quality["consistency"] is None  # null stays null
    assert "n/a (no part keypoints)" in format_metrics_table(no_parts)
    old = {k: v for k, v in saved.items() if k != "quality"}  # a metrics.json from before the card
    assert Metrics.from_dict(old).quality is None


def test_prototypes_never_present_are_unscored():
    model, data = planted_model_and_data()
    blank = KeypointDataset(torch.zeros_like(data.tensors[0]), data.tensors[1], data._keypoints, num_parts=2)
    card = quality_card(model, blank)  # every cell ties at presence 1/4: no evaluation image at all
    assert card["consistency"]["num_prototypes"] == 0 and card["consistency"]["unscored"] == 3
    assert math.isnan(card["consistency"]["score"]) and math.isnan(card["stability"]["score"])
    assert card["stability"]["params"]["num_images"] == 0  # no noisy pass
