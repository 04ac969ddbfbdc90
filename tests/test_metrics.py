"""Metric functions against values computed by hand on tiny tensors (spec section 6)."""

import math

import pytest
import torch

from pipnet.evaluation import metrics as M


def test_predictions_abstain_and_tie_to_lower_class():
    scores = torch.tensor([[3.0, 1.0, 2.0], [1.0, 3.0, 2.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    assert M.predictions(scores).tolist() == [0, 1, 0, -1]


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[3.0, 1.0, 2.0], [1.0, 3.0, 2.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 1, 0])
    # ranks of the true class: 0; 1; 1 (tie with class 0 ranks class 0 first); abstained (never correct)
    acc = M.topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert acc == {1: 0.25, 2: 0.75, 5: 0.75}
    # top-1 agrees with the predictions
    assert acc[1] == (M.predictions(scores) == labels).float().mean().item()
    with pytest.raises(ValueError):
        M.topk_accuracy(scores, torch.tensor([0, 1, 2, -1]))


def test_confusion_matrix_leaves_out_abstained():
    pred = torch.tensor([0, 1, 0, -1, 2])
    labels = torch.tensor([0, 2, 1, 0, 2])
    assert M.confusion_matrix(pred, labels, 3).tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]


def test_binary_metrics_by_hand():
    scores = torch.tensor(
        [
            [0.0, 3.0],  # positive, TP
            [0.0, 2.0],  # positive, TP
            [1.0, 4.0],  # positive, TP
            [2.0, 0.0],  # positive, FN
            [0.0, 0.0],  # positive, abstains: FN
            [1.0, 0.0],  # negative, TN
            [3.0, 0.0],  # negative, TN
            [0.0, 0.0],  # negative, abstains: TN
            [0.0, 1.0],  # negative, FP
        ]
    )
    labels = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0])
    m = M.binary_metrics(scores, labels)
    assert m["sensitivity"] == pytest.approx(3 / 5)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((0.6 + 0.75) / 2)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    # margins o1 - o0: positives log10, log5, log8.5, -log5, 0; negatives -log2, -log10, 0, log2.
    # pairs won: 4 + 4 + 4 + 1 + (2 + a tie) = 15.5 of 20
    assert m["auc"] == pytest.approx(15.5 / 20)


def test_auroc_with_ties_and_degenerate_cases():
    assert M.auroc(torch.tensor([0.9, 0.8, 0.5, 0.5]), torch.tensor([0.5, 0.1, 0.0])) == pytest.approx(11 / 12)
    assert M.auroc(torch.ones(3), torch.ones(5)) == pytest.approx(0.5)
    assert M.auroc(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0
    assert M.auroc(torch.tensor([1.0]), torch.tensor([2.0])) == 0.0
    assert math.isnan(M.auroc(torch.tensor([1.0]), torch.tensor([])))


def test_auroc_equals_pairwise_count_on_random_ties():
    torch.manual_seed(0)
    a, b = torch.randint(0, 5, (40,)).float(), torch.randint(0, 5, (30,)).float()
    pairs = (a[:, None] > b[None]).float() + 0.5 * (a[:, None] == b[None]).float()
    assert M.auroc(a, b) == pytest.approx(pairs.mean().item())


def test_sparsity_ratio_counts_negative_and_small_weights():
    weight = torch.tensor([[-0.5, 0.0005, 0.0011], [0.0, 2.0, 1e-4]])
    assert M.sparsity_ratio(weight) == pytest.approx(4 / 6)


def test_global_explanation_size_with_mask():
    weight = torch.tensor([[0.0, 0.5, -1.0, 0.0], [0.002, 0.0, 0.0005, 0.0]])
    assert M.global_explanation_size(weight) == 2  # prototypes 0 and 1
    assert M.global_explanation_size(weight, torch.tensor([1.0, 0.0, 1.0, 1.0])) == 1


def test_local_explanation_sizes_by_hand():
    presence = torch.tensor([[0.9, 0.0, 0.5, 0.002], [0.0, 0.0, 0.0, 0.0], [0.2, 0.3, 0.0, 0.6]])
    weight = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 2.0, 0.001, -3.0]])
    pred = torch.tensor([0, -1, 1])
    size_pred, size_any, present = M.local_explanation_sizes(presence, weight, pred)
    # image 0, class 0: 0.9, 0, 0, 0.002 -> 2; any class: protos 0 and 3 (proto 2: 0.5 * 0.001 = 5e-4) -> 2
    # image 1 abstains -> 0; image 2, class 1: 0, 0.6, 0, 0 -> 1; any class: 0.2, 0.6, -, 0.6 -> 3
    assert size_pred.tolist() == [2, 0, 1]
    assert size_any.tolist() == [2, 0, 3]
    assert present.tolist() == [3, 0, 3]


def test_ood_thresholds_on_known_lists():
    scores = torch.cat([torch.arange(1, 21).float(), torch.arange(1, 11).float() / 10, torch.tensor([0.0, 0.0])])
    preds = torch.cat([torch.zeros(20), torch.ones(10), torch.full((2,), -1)]).long()
    t = M.ood_thresholds(scores, preds, num_classes=3, tpr=0.95)
    # class 0: n = 20, keep ceil(19) = 19 -> the 19th highest score is 2 (19 of 20 are >= 2; 18 are >= 3)
    # class 1: n = 10, keep ceil(9.5) = 10 -> the lowest score 0.1; class 2: no images -> +inf
    assert t[0].item() == 2.0
    assert t[1].item() == pytest.approx(0.1)
    assert math.isinf(t[2].item())
    assert M.ood_thresholds(scores, preds, 3, tpr=0.5)[0].item() == 11.0  # keep 10 of 20: 11..20
    ood_scores = torch.tensor([25.0, 1.5, 0.1, 5.0, 0.0])
    ood_preds = torch.tensor([0, 0, 1, 2, -1])
    # reached: 25 >= 2 yes; 1.5 >= 2 no; 0.1 >= 0.1 yes; class 2 never; abstained never -> 2 / 5
    assert M.fpr_at_tpr(ood_scores, ood_preds, t) == pytest.approx(0.4)


def _box(cx: float, cy: float) -> list[int]:
    """A 32x32 box (top, bottom, left, right) whose top-left corner is (cx, cy)."""
    return [int(cy), int(cy) + 32, int(cx), int(cx) + 32]


def test_purity_by_hand():
    # Keypoints (image, part, x, y) of five images; boxes are 32x32 with a given top-left corner.
    keypoints = torch.tensor(
        [
            [0, 3, 10.0, 10.0],  # image 0: part 3 at (10, 10)
            [1, 3, 50.0, 50.0],  # image 1: part 3 at (50, 50), part 1 at (100, 100)
            [1, 1, 100.0, 100.0],
            [2, 1, 5.0, 5.0],  # image 2: part 1 and part 2 near the origin
            [2, 2, 20.0, 20.0],
            [3, 2, 0.0, 0.0],  # image 3: part 2 at the very corner
            [4, 4, 40.0, 40.0],  # image 4: left variant (4) and right variant (5) of one part
            [4, 5, 140.0, 140.0],
        ]
    )
    patches = [
        # prototype 0: four patches, all containing part 3 -> purity 1
        (0, 0, _box(0, 0)),
        (0, 1, _box(40, 40)),
        (0, 0, _box(5, 5)),
        (0, 1, _box(30, 30)),
        # prototype 1: parts 1 and 2 are each in 2 of its 4 patches -> 0.5
        (1, 1, _box(90, 90)),  # holds part 1
        (1, 2, _box(0, 0)),  # holds parts 1 and 2
        (1, 3, _box(0, 0)),  # holds part 2
        (1, 1, _box(150, 150)),  # holds nothing
        # prototype 3: part 3, part 3, nothing -> 2 / 3
        (3, 0, _box(0, 0)),
        (3, 1, _box(49, 49)),
        (3, 1, _box(51, 51)),  # part 3 at x = 50 < left = 51: outside
        # prototype 4: left variant in one patch, right variant in the other
        (4, 4, _box(30, 30)),
        (4, 4, _box(130, 130)),
    ]
    proto = torch.tensor([p[0] for p in patches])
    image = torch.tensor([p[1] for p in patches])
    boxes = torch.tensor([p[2] for p in patches])
    values = M.purity_all_patches(proto, image, boxes, keypoints, num_prototypes=5, num_parts=6)
    assert values[0].item() == 1.0
    assert values[1].item() == 0.5
    assert math.isnan(values[2].item())
    assert values[3].item() == pytest.approx(2 / 3)
    assert values[4].item() == 0.5
    merged = M.purity_all_patches(proto, image, boxes, keypoints, 5, 6, part_groups=[0, 1, 2, 3, 4, 4])
    assert merged[4].item() == 1.0 and merged[1].item() == 0.5
    # The paper's denominator: per part, only the patches in images that show it. Prototype 1: part 2 is
    # visible in images 2 and 3 only, and both of those patches hold it -> 2 / 2 (part 1: 2 of its 3
    # patches in images 1 and 2). Prototype 3: part 3 is visible in all three images -> 2 / 3 again.
    paper = M.purity(proto, image, boxes, keypoints, num_prototypes=5, num_parts=6)
    assert paper[0].item() == 1.0 and paper[1].item() == 1.0 and math.isnan(paper[2].item())
    assert paper[3].item() == pytest.approx(2 / 3) and paper[4].item() == 0.5
    merged = M.purity(proto, image, boxes, keypoints, 5, 6, part_groups=[0, 1, 2, 3, 4, 4])
    assert merged[4].item() == 1.0

    summary = M.purity_summary(values)
    expected = torch.tensor([1.0, 0.5, 2 / 3, 0.5], dtype=torch.float64)
    assert summary["mean"] == pytest.approx(expected.mean().item())
    assert summary["std"] == pytest.approx(expected.std(correction=0).item())
    assert summary["count_above_0.5"] == 2  # 0.5 itself does not count
    assert summary["num_prototypes"] == 4


def test_purity_shrinks_large_boxes_to_their_centre():
    # The last row of the 28x28 grid at 224 spans 189..224; its central 32 rows are 190..222.
    boxes = torch.tensor([[189, 224, 0, 32]] * 4)
    ys = [189.5, 190.0, 200.0, 222.0]  # out (shrunk away), in (top is inside), in, out (bottom is exclusive)
    keypoints = torch.tensor([[i, 0, 10.0, y] for i, y in enumerate(ys)])
    values = M.purity(torch.zeros(4), torch.arange(4), boxes, keypoints, num_prototypes=1, num_parts=1)
    assert values[0].item() == 0.5
    assert M.purity(torch.zeros(4), torch.arange(4), boxes, keypoints, 1, 1, patch_size=64)[0].item() == 1.0


def test_purity_without_keypoints_is_zero():
    values = M.purity(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([_box(0, 0)] * 2), torch.zeros(0, 4), 1, 3)
    assert values.tolist() == [0.0]


def test_purity_of_no_patches_is_nan_and_summary_is_empty():
    values = M.purity(torch.zeros(0), torch.zeros(0), torch.zeros(0, 4), torch.tensor([[0, 0, 1.0, 1.0]]), 3, 2)
    assert values.shape == (3,) and torch.isnan(values).all()
    summary = M.purity_summary(values)
    assert summary["num_prototypes"] == 0 and summary["count_above_0.5"] == 0 and math.isnan(summary["mean"])


def test_purity_divides_by_the_patches_in_images_that_show_the_part():
    # One prototype, five patches in five images. Part 0 is visible in images 0 and 1 and inside both
    # boxes; images 2-4 show only part 1, outside the boxes. Paper: part 0 -> 2 / 2 = 1.0 (part 1 -> 0 / 3);
    # all patches: 2 / 5 = 0.4.
    keypoints = torch.tensor([[0, 0, 5.0, 5.0], [1, 0, 10.0, 10.0], [2, 1, 90.0, 90.0], [3, 1, 90.0, 90.0], [4, 1, 90.0, 90.0]])
    boxes = torch.tensor([_box(0, 0)] * 5)
    args = (torch.zeros(5), torch.arange(5), boxes, keypoints, 1, 2)
    assert M.purity(*args).tolist() == [1.0]
    assert M.purity_all_patches(*args).tolist() == [0.4]
    # Images that show no part at all give no fraction; a prototype only there scores 0.
    only_bare = (torch.zeros(2), torch.tensor([5, 6]), boxes[:2], keypoints, 1, 2)
    assert M.purity(*only_bare).tolist() == [0.0] and M.purity_all_patches(*only_bare).tolist() == [0.0]


def test_purity_closed_keypoint_test_counts_the_far_edges():
    # Box rows 0..32, columns 0..32; keypoints on the bottom edge (y = 32), right edge (x = 32), just outside.
    keypoints = torch.tensor([[0, 0, 10.0, 32.0], [1, 0, 32.0, 10.0], [2, 0, 32.5, 10.0]])
    args = (torch.zeros(3), torch.arange(3), torch.tensor([_box(0, 0)] * 3), keypoints, 1, 1)
    assert M.purity(*args).tolist() == [0.0]  # half-open: none inside
    assert M.purity(*args, closed=True).tolist() == [pytest.approx(2 / 3)]


def test_paper_ood_thresholds_by_hand():
    # Class 0: scores 1..5 -> 5th percentile, linear: 1 + 0.05 * 4 * (2 - 1) = 1.2. Class 1: scores 10, 20
    # -> 10 + 0.05 * 10 = 10.5. Class 2 never predicted -> mean (1.2 + 10.5) / 2 = 5.85.
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0])
    preds = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    # Reached at first: 2, 3, 4, 5 and 20 -> 5 of 7 < 0.95. Multiplying by 0.999 until 1 >= 1.2 * 0.999^n
    # and 10 >= 10.5 * 0.999^n: n = ceil(log(1 / 1.2) / log(0.999)) = 183 (10.5 needs only 49).
    t = M.ood_thresholds_paper(scores, preds, num_classes=3)
    n = math.ceil(math.log(1 / 1.2) / math.log(0.999))
    assert n == 183
    expected = torch.tensor([1.2, 10.5, 5.85], dtype=torch.float64)
    for _ in range(n):
        expected = expected * 0.999
    assert torch.allclose(t, expected, rtol=1e-12)
    assert (scores.double() >= t[preds]).all()
    # One multiplication fewer would leave image 0 (score 1) below its class's threshold.
    assert 1.0 < (t[0] / 0.999).item()
    # OoD: an image reaching its class's threshold counts; no abstention under this rule.
    ood_scores, ood_preds = torch.tensor([0.5, 1.0, 6.0, 9.0]), torch.tensor([0, 0, 2, 1])
    # 0.5 < t0 ~ 0.999; 1.0 >= t0; 6.0 >= t2 ~ 4.87; 9.0 >= t1 ~ 8.74 -> 3 of 4
    assert M.fpr_at_tpr(ood_scores, ood_preds, t) == pytest.approx(0.75)


def test_paper_ood_thresholds_with_ties_and_zero_scores():
    # Ties: class 0 has five equal scores: the percentile is that score, and all of them reach it.
    t = M.ood_thresholds_paper(torch.tensor([2.0] * 5), torch.zeros(5, dtype=torch.long), 2)
    assert t.tolist() == [2.0, 2.0]  # class 1 never predicted: the mean of the others
    # More than 5% of the images score 0: the loop could only end by underflow; thresholds are 0.
    t = M.ood_thresholds_paper(torch.tensor([0.0, 0.0, 1.0, 2.0]), torch.tensor([0, 0, 0, 1]), 2)
    assert t.tolist() == [0.0, 0.0]
    assert torch.isnan(M.ood_thresholds_paper(torch.zeros(0), torch.zeros(0, dtype=torch.long), 2)).all()
