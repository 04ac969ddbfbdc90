"""evaluate(): known answers on planted models, purity end to end, and a model that stays untouched."""

import json
import math

import pytest
import torch
from eval_helpers import KeypointDataset, logit_model, pooled_logit_model, set_weights, tiny_conv_model
from torch.utils.data import DataLoader, TensorDataset

from pipnet.evaluation.evaluate import Metrics, evaluate, format_metrics_table

METRIC_KEYS = [
    "top1_accuracy", "top5_accuracy", "sparsity_ratio", "global_size", "local_size", "local_size_all_classes",
    "num_present", "abstained", "num_images", "ood", "purity", "binary", "confusion_matrix", "on_object", "everywhere", "saturation",
    "purity_all_patches", "protocol", "quality",
]  # fmt: skip


def one_hot_logits(rows: list[dict[int, float]], num_prototypes: int) -> torch.Tensor:
    """(N, P, 1, 1) logits: each row gives {prototype: logit}, others 0."""
    x = torch.zeros(len(rows), num_prototypes, 1, 1)
    for n, row in enumerate(rows):
        for p, value in row.items():
            x[n, p] = value
    return x


def test_evaluate_planted_answers():
    # P = 4 prototypes on a 1x1 grid, C = 2; prototype 3 has no weight. A logit of 10 gives presence
    # s = e^10 / (e^10 + 3) ~ 1; two logits of 5 give ~0.497 each; the rest ~0.003 < 0.1 (ignored).
    model = logit_model(4, num_classes=2)
    set_weights(model, [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    x = one_hot_logits([{0: 10}, {1: 10}, {1: 5, 2: 5}, {0: 10}, {3: 10}], 4)
    labels = torch.tensor([0, 1, 1, 1, 0])
    # predictions: 0 (right), 1 (right), 1 (right, two prototypes), 0 (wrong), abstains (prototype 3 only)
    ood = one_hot_logits([{0: 10}, {3: 10}], 4)
    m = evaluate(model, TensorDataset(x, labels), ood={"other": TensorDataset(ood, torch.full((2,), -1))}, batch_size=2)
    assert m.top1_accuracy == pytest.approx(3 / 5)
    assert m.top5_accuracy == pytest.approx(4 / 5)  # C = 2 < 5, but an abstaining image is never correct
    assert m.abstained == 1 and m.num_images == 5
    assert m.local_size == pytest.approx((1 + 1 + 2 + 1 + 0) / 5)
    assert m.local_size_all_classes == pytest.approx((1 + 1 + 2 + 1 + 0) / 5)
    assert m.num_present == pytest.approx((1 + 1 + 2 + 1 + 1) / 5)  # prototype 3 is present, just unused
    assert m.sparsity_ratio == pytest.approx(5 / 8)
    assert m.global_size == 3
    assert m.confusion_matrix == [[1, 0], [1, 2]]
    # binary: TP = 2, FN = 1 (image 3), TN = 2 (image 0 and the abstaining image 4), FP = 0
    assert m.binary["sensitivity"] == pytest.approx(2 / 3)
    assert m.binary["specificity"] == 1.0
    assert m.binary["f1"] == pytest.approx(4 / 5)
    # OoD: the class-0 threshold is s (images 0 and 3); OoD image 0 reaches it, OoD image 1 abstains.
    assert m.ood["other"]["fpr95"] == pytest.approx(0.5)
    assert m.ood["other"]["num_images"] == 2
    # AUROC: in-distribution max scores (s, s, 0.993, s, 0) vs OoD (s, 0): 1.5 + 4.5 of 10 pairs
    assert m.ood["other"]["auroc"] == pytest.approx(0.6)
    assert m.purity == {}


def test_disabled_prototypes_count_as_absent():
    model = logit_model(4, num_classes=2)
    set_weights(model, [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    model.disable_prototypes([2])
    x = one_hot_logits([{1: 5, 2: 5}], 4)
    m = evaluate(model, TensorDataset(x, torch.tensor([1])))
    assert m.local_size == 1.0 and m.global_size == 2 and m.sparsity_ratio == pytest.approx(6 / 8)


def planted_purity_set():
    """6 images of 224x224 "logit pixels" for a 28x28 grid (stride 8); P = 4, prototype 3 is background.

    Prototype 0 fires at cell (2, 3) (box rows 14..46, cols 21..53) in images 0-3, whose keypoint there is
    part 1 (images 0-2) or part 2 (image 3). Prototype 1 fires at cell (27, 27) (box 189..224, shrunk to
    190..222) in images 4-5, each with part 0 at (200, 200).
    """
    grid = torch.zeros(6, 4, 28, 28)
    grid[:, 3] = 5.0  # background prototype everywhere
    for n in range(4):
        grid[n, 0, 2, 3] = 10.0 - 0.1 * n
    for n in (4, 5):
        grid[n, 1, 27, 27] = 10.0
    images = grid.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # (6, 4, 224, 224)
    kp = [torch.tensor([[1, 30.0, 30.0]])] * 3 + [torch.tensor([[2, 30.0, 30.0]])] + [torch.tensor([[0, 200.0, 200.0]])] * 2
    return KeypointDataset(images, torch.tensor([0, 0, 0, 0, 1, 1]), kp, num_parts=3)


def test_purity_end_to_end():
    model = pooled_logit_model(4, num_classes=2, stride=8, image_size=224)
    set_weights(model, [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # used prototypes: 0 and 1
    data = planted_purity_set()
    m = evaluate(model, data, purity_sets={"test": data}, k=4, batch_size=4)
    # All patches: top-4: prototype 0 -> parts 1, 1, 1, 2 = 0.75; prototype 1 -> images 4, 5 (part 0) and
    # two weak images (0 and 1, ties go to the lower index) whose argmax is cell (0, 0), box 0..32, which
    # misses part 0 -> 0.5. Presence > 0.5: 0.75 and 1.0.
    top = m.purity_all_patches["test_top4"]
    assert top["mean"] == pytest.approx(0.625) and top["std"] == pytest.approx(0.125)
    assert top["count_above_0.5"] == 1 and top["num_prototypes"] == 2
    above = m.purity_all_patches["test_presence0.5"]
    assert above["mean"] == pytest.approx(0.875) and above["count_above_0.5"] == 2
    # The paper's denominator: prototype 0's part 1 is visible in images 0-2 only, and there in all 3
    # patches -> 1.0; prototype 1's part 0 is visible in images 4 and 5 only -> 2 / 2 = 1.0.
    assert m.purity["test_top4"]["mean"] == 1.0 and m.purity["test_top4"]["num_prototypes"] == 2
    assert m.purity["test_presence0.5"]["mean"] == 1.0
    assert m.top1_accuracy == 1.0 and m.protocol == "default"


def test_paper_protocol_purity_weights_boxes_and_keypoint_test():
    # As planted_purity_set, but part 0 of images 4 and 5 is at (191, 191), and prototype 2 has a weight of
    # 1e-4 (counts under paper: > 1e-5; not by default: > 1e-3). Top-2 patches.
    data = planted_purity_set()
    data._keypoints[4] = data._keypoints[5] = torch.tensor([[0, 191.0, 191.0]])
    model = pooled_logit_model(4, num_classes=2, stride=8, image_size=224)
    set_weights(model, [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1e-4, 0.0]])
    default = evaluate(model, data, purity_sets={"test": data}, k=2, batch_size=4)
    paper = evaluate(model, data, purity_sets={"test": data}, k=2, batch_size=4, protocol="paper")
    # Default: prototype 0 -> images 0, 1, part 1 -> 1.0. Prototype 1 -> images 4, 5 at cell (27, 27): box
    # 189..224 shrunk to 190..222 holds (191, 191) -> 1.0.
    assert default.purity["test_top2"] == {"mean": 1.0, "std": 0.0, "count_above_0.5": 2, "num_prototypes": 2}
    # Paper: prototype 1's box is 192..224 and misses (191, 191) -> 0.0; prototype 2 enters, its top-2 are
    # weak images 0 and 1 at cell (0, 0), box 0..32 (closed) holding part 1 at (30, 30) -> 1.0.
    top = paper.purity["test_top2"]
    assert top["num_prototypes"] == 3 and top["mean"] == pytest.approx(2 / 3) and top["count_above_0.5"] == 2
    # Presence > 0.5: prototype 0 in images 0-3 (part 1 visible in 0-2, all inside) -> 1.0; prototype 1 -> 0.0;
    # prototype 2 is never above 0.5.
    assert paper.purity["test_presence0.5"]["mean"] == pytest.approx(0.5)
    assert paper.purity["test_presence0.5"]["num_prototypes"] == 2
    assert paper.protocol == "paper" and json.loads(paper.to_json())["protocol"] == "paper"


def test_paper_protocol_ood_uses_unclamped_scores_and_the_percentile_rule():
    # P = 3 prototypes on a 1x1 grid, C = 2, prototype 2 unweighted. In-distribution: {0: 10} and {1: 10}
    # (presence s ~ 0.9999), and {2: 3}, whose presences 1 / (2 + e^3) ~ 0.045 of prototypes 0 and 1 are
    # below 0.1: it abstains in predict, but scores 0.045 for class 0 without the clamp.
    model = logit_model(3, num_classes=2)
    set_weights(model, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = one_hot_logits([{0: 10}, {1: 10}, {2: 3}], 3)
    data = TensorDataset(x, torch.tensor([0, 1, 0]))
    # OoD: {0: 4, 1: 4} scores e^4 / (2 e^4 + 1) ~ 0.496 (class 0 on the tie), {1: 1} scores e / (e + 2) ~ 0.576
    # for class 1, {2: 10} scores ~ 5e-5.
    ood = {"o": TensorDataset(one_hot_logits([{0: 4, 1: 4}, {1: 1}, {2: 10}], 3), torch.full((3,), -1))}
    default = evaluate(model, data, ood=ood)
    paper = evaluate(model, data, ood=ood, protocol="paper")
    # Default: thresholds s and s (the abstaining image is left out): no OoD image reaches them.
    assert default.ood["o"]["fpr95"] == 0.0
    # Paper: class 0 gets the 5th percentile of (0.045, s) ~ 0.093, class 1 s; only 2 of 3 images reach
    # theirs, so both shrink by 0.999 until 0.045 is reached (a factor ~ 0.49): t0 ~ 0.045, t1 ~ 0.49.
    # {0: 4, 1: 4} (0.496 >= t0) and {1: 1} (0.576 >= t1) count; {2: 10} does not -> 2 / 3.
    assert paper.ood["o"]["fpr95"] == pytest.approx(2 / 3)
    assert paper.top1_accuracy == default.top1_accuracy  # accuracy is the same under both protocols


def test_evaluate_never_changes_the_model_and_is_repeatable():
    torch.manual_seed(0)
    model = tiny_conv_model(num_classes=3, channels=8).train()
    model.backbone.conv.eval()  # a mixed state that must come back exactly
    flags = {name: m.training for name, m in model.named_modules()}
    before = {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}
    x, labels = torch.randn(12, 3, 32, 32), torch.randint(0, 3, (12,))
    kp = [torch.tensor([[0, 5.0, 5.0], [1, 20.0, 20.0]])] * 12
    data = KeypointDataset(x, labels, kp, num_parts=2)
    ood = {"noise": TensorDataset(torch.randn(5, 3, 32, 32) * 3, torch.full((5,), -1))}
    runs = [evaluate(model, data, ood=ood, purity_sets={"train": data}, batch_size=5, k=3) for _ in range(2)]
    paper = [evaluate(model, data, ood=ood, purity_sets={"train": data}, batch_size=5, k=3, protocol="paper") for _ in range(2)]
    after = {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}
    assert before == after
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert runs[0].to_json() == runs[1].to_json()
    assert paper[0].to_json() == paper[1].to_json() and paper[0].protocol == "paper"
    assert set(runs[0].purity) == {"train_top3", "train_presence0.5"}
    # a loader gives the same numbers as the data set
    assert evaluate(model, DataLoader(data, batch_size=4)).top1_accuracy == runs[0].top1_accuracy


def test_metrics_json_keys_and_round_trip():
    model = logit_model(3, num_classes=3)
    x = one_hot_logits([{0: 10}, {1: 10}, {2: 1}], 3)
    m = evaluate(model, TensorDataset(x, torch.tensor([0, 2, 1])), ood={"empty-ish": TensorDataset(x[:1], torch.zeros(1))})
    d = json.loads(m.to_json())
    assert list(d) == METRIC_KEYS
    assert set(d["ood"]["empty-ish"]) == {"fpr95", "auroc", "num_images"}
    assert d["binary"] is None and len(d["confusion_matrix"]) == 3
    assert all(0.0 <= d[k] <= 1.0 for k in ("top1_accuracy", "top5_accuracy", "sparsity_ratio"))
    assert Metrics.from_dict(d) == m
    with pytest.raises(AttributeError):
        m.top1_accuracy = 1.0  # frozen
    table = format_metrics_table(m)
    assert "top-1 accuracy" in table and "OoD empty-ish" in table


def test_undefined_values_become_null_in_json():
    model = logit_model(2, num_classes=2)
    x = one_hot_logits([{0: 10}], 2)  # only negatives: sensitivity and AUC are undefined
    m = evaluate(model, TensorDataset(x, torch.tensor([0])))
    assert math.isnan(m.binary["sensitivity"]) and math.isnan(m.binary["auc"])
    d = json.loads(m.to_json())
    assert d["binary"]["sensitivity"] is None and d["binary"]["specificity"] == 1.0
    back = Metrics.from_dict(d)
    assert math.isnan(back.binary["auc"]) and back.binary["specificity"] == 1.0


def test_purity_set_without_keypoints_is_refused_before_any_pass():
    model = logit_model(2, num_classes=2)
    data = TensorDataset(one_hot_logits([{0: 10}], 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="part annotations"):
        evaluate(model, data, purity_sets={"test": data})
