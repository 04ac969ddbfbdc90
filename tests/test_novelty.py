"""The knn OoD detector in the model's own terms (pipnet.evaluation.novelty): its distance, threshold and explanation by
hand, its files, and predict's unknown with it."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import pipnet
from pipnet.data import DataConfig, PlantedConfig
from pipnet.evaluation.inference import build_model_data
from pipnet.model import ModelLoadError
from pipnet.evaluation.novelty import (NOVELTY_FILE, NoveltyDetector, compare_rules, distance_threshold, fit_detector, held_out_unknown, load_detector,
                            model_features)
from pipnet.use.predict import predict


def hand_detector(k: int = 2) -> NoveltyDetector:
    # Three training images on the unit circle of a 2-d feature space (no standardisation: mean 0, std 1).
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    presence = torch.tensor([[0.9, 0.0], [0.9, 0.5], [0.0, 0.9]])  # prototype 0 present in images 0 and 1
    return NoveltyDetector(reference=reference, presence=presence, mean=torch.zeros(2), std=torch.ones(2),
                           threshold=0.5, k=k, image_ids=["a.png", "b.png", "c.png"], labels=[0, 0, 1], used=[0, 1])


def test_distance_to_the_kth_nearest_training_image_by_hand():
    det = hand_detector(k=2)
    # x along 45 degrees: cos to a and b = 1/sqrt(2), to c = -1/sqrt(2); the 2nd nearest is at 1 - 1/sqrt(2).
    d, nearest = det.distances(torch.tensor([[3.0, 3.0], [-1.0, 0.0]]))
    assert d[0].item() == pytest.approx(1 - 2 ** -0.5)
    assert sorted(nearest[0].tolist()) == [0, 1]
    # (-1, 0) is training image c itself (distance 0); its 2nd nearest is b at 90 degrees: distance 1.
    assert d[1].item() == pytest.approx(1.0) and nearest[1, 0].item() == 2
    assert det.unknown(torch.tensor([[3.0, 3.0], [-1.0, 0.0]])).tolist() == [False, True]


def test_threshold_keeps_the_ceil_of_tpr_of_the_test_images():
    d = torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    assert distance_threshold(d, 0.95) == 0.5  # ceil(4.75) = 5 kept
    assert distance_threshold(d, 0.6) == 0.3  # ceil(3.0) = 3 kept (no float drift to 4)
    assert distance_threshold(d, 0.01) == 0.1
    with pytest.raises(ValueError):
        distance_threshold(d, 0.0)


def test_explanation_names_neighbours_and_the_prototypes_they_share_and_it_lacks():
    det = hand_detector(k=2)
    # Nearest to (1, 1): a and b, both with prototype 0 present; the image has prototype 1 only.
    (e,) = det.explain(torch.tensor([[1.0, 1.0]]), torch.tensor([[0.05, 0.8]]))
    assert [n["image"] for n in sorted(e.nearest, key=lambda n: n["image"])] == ["a.png", "b.png"]
    assert e.lacks == [0] and e.shared == [] and e.only_it_has == []  # b has prototype 1 too (0.5): not "only"
    assert not e.unknown and "nearest training images" in e.sentence() and "it lacks: [0]" in e.sentence()


def test_fit_save_load_and_compare_on_a_tiny_model(tmp_path):
    torch.manual_seed(0)
    model = pipnet.create_model("efficientnet_lite0", 3, stages=3, image_size=32)
    data = build_model_data(DataConfig(source="planted", image_size=32, planted=PlantedConfig(
        num_classes=3, train_per_class=6, test_per_class=4, ood_images=6, multi_images=0)), model)
    det = fit_detector(model, data.projection, data.test, k=3)
    # The threshold keeps 95% of the test images: ceil(0.95 * 12) = 12 of 12.
    test_logits = model_features(model, data.test).logits
    assert int((det.distances(test_logits)[0] <= det.threshold).sum()) == 12
    # The reference is the training images: each is its own nearest neighbour (distance 0).
    train_logits = model_features(model, data.projection).logits
    d1 = F.normalize((train_logits - det.mean) / det.std, dim=1) @ det.reference.T
    assert torch.allclose(d1.diagonal(), torch.ones(len(d1)), atol=1e-5)
    det.save(tmp_path)
    back = load_detector(tmp_path, model.num_prototypes)
    assert back.threshold == det.threshold and back.k == 3 and torch.allclose(back.reference, det.reference.float())
    assert load_detector(tmp_path / "none") is None
    with pytest.raises(ModelLoadError, match="prototypes"):
        load_detector(tmp_path, model.num_prototypes + 1)
    rows = compare_rules(model, det, None, data.test, data.ood)
    assert rows[0]["knn_unknown"] == 0.0 and rows[0]["images"] == 12
    ood = rows[1]
    assert ood["set"] == "planted_ood" and ood["knn_fpr95"] == pytest.approx(1 - ood["knn_unknown"])
    assert 0.0 <= ood["knn_auroc"] <= 1.0 and not math.isnan(ood["paper_auroc"])


def test_predict_calls_unknown_with_the_stored_detector_and_explains_it(tmp_path):
    torch.manual_seed(0)
    model = pipnet.create_model("efficientnet_lite0", 2, stages=3, image_size=32)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    images = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 200, 30)]):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 32), colour).save(images[-1])
    with pytest.raises(FileNotFoundError, match=NOVELTY_FILE):
        predict(folder, images, detector="knn", thresholds=None)
    logits = model_features(model, torch.utils.data.TensorDataset(
        torch.stack([pipnet.evaluation.inference.input_transform(model)(Image.open(p)) for p in images[:2]]))).logits
    # A detector whose reference is the first two images and whose threshold keeps exactly those.
    ref = F.normalize(logits, dim=1)
    det = NoveltyDetector(reference=ref, presence=torch.zeros_like(ref), mean=torch.zeros(ref.shape[1]),
                          std=torch.ones(ref.shape[1]), threshold=1e-4, k=1, image_ids=["red", "blue"], labels=[0, 1])
    det.save(folder)
    out = predict(folder, images, thresholds=None)  # auto: the stored detector
    assert [p.novelty["nearest"][0]["image"] for p in out[:2]] == ["red", "blue"]
    assert [p.unknown for p in out] == [p.abstained for p in out[:2]] + [True]  # green is far from both
    assert out[2].novelty["unknown"] and "unknown: distance" in out[2].novelty["explanation"]
    assert all(p.novelty is None for p in predict(folder, images, thresholds=None, detector="paper"))
    assert json.loads((folder / NOVELTY_FILE).read_text())["k"] == 1
    # The web page's verdict for an upload: the stored detector decides and explains it (serve's page context).
    pytest.importorskip("fastapi", reason="the 'serve' extra")
    from pipnet.use.serve.session import Explorer
    from pipnet.use.serve.views import page_context

    explorer = Explorer(folder, device="cpu")
    visitor = explorer.new_visitor()
    explorer.show_upload(visitor, "green.png", images[2].read_bytes())
    unknown = page_context(explorer, visitor)["shown"]["unknown"]
    assert unknown.startswith("Unknown: distance") and unknown.lower().count("unknown") == 1  # one clean verdict
    explorer.show_upload(visitor, "red.png", images[0].read_bytes())
    assert page_context(explorer, visitor)["shown"]["unknown"] is None


def test_held_out_unknown_counts_each_half_with_the_other_halfs_thresholds():
    # 19 in-distribution images at distance 0 / score 1 and one at distance 1 / score 0.5, tpr 0.95.
    # Whatever the halving: thresholds set on the half holding the odd image keep ceil(0.95 * 10) = 10 of
    # its 10, so they reach it and call nothing of the other half unknown (0/10); thresholds set on the
    # other half (all 0 / all 1) call the odd image unknown (1/10). The mean is 0.05 for both rules.
    distances = torch.zeros(20, dtype=torch.float64)
    distances[7] = 1.0
    scores = torch.zeros(20, 2)
    scores[:, 0] = 1.0
    scores[7, 0] = 0.5
    paper, knn = held_out_unknown(scores, distances, 0.95, repeats=30, seed=3)
    assert paper == pytest.approx(0.05) and knn == pytest.approx(0.05)
    # Nothing odd: nothing is unknown.
    assert held_out_unknown(torch.ones(20, 2), torch.zeros(20), 0.95) == (0.0, 0.0)
