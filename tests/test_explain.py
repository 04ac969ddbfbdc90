"""Explanations as data: completeness (score == summed evidence + bias), abstention, JSON, the scoring sheet."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

import pipnet
from pipnet.explanation.explain import ImageExplanation, ScoringSheet, explain, scoring_sheet
from pipnet.evaluation.metrics import predictions
from pipnet.model.patches import patch_box

NUM_CLASSES, NUM_PROTOTYPES, SIZE = 4, 16, 48


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return pipnet.create_model(
        "resnet18", num_classes=NUM_CLASSES, num_features=NUM_PROTOTYPES, bias=True, class_names=["a", "b", "c", "d"]
    ).eval()


def _randomise_classifier(model, seed: int, density: float, bias: bool) -> None:
    """Sparse weights with negative entries (relu'd away) and tiny ones (below the relevance threshold)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(NUM_CLASSES, NUM_PROTOTYPES, generator=g).abs() * 2
        w *= (torch.rand(NUM_CLASSES, NUM_PROTOTYPES, generator=g) < density).float()
        w[torch.rand(NUM_CLASSES, NUM_PROTOTYPES, generator=g) < 0.1] = -0.5
        w[0, 0] = 5e-4
        model.classifier.weight.copy_(w)
        model.classifier.bias.copy_(torch.rand(NUM_CLASSES, generator=g) if bias else torch.zeros(NUM_CLASSES))


@pytest.mark.parametrize("inference", [True, False])
def test_completeness_over_random_inputs_and_sparse_weights(model, inference):
    explained_terms = 0
    for seed in range(4):
        _randomise_classifier(model, seed, density=[0.2, 0.5, 0.9, 1.0][seed], bias=seed % 2 == 1)
        x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(100 + seed)) * (1 + seed)
        with torch.no_grad():
            out = model.predict(x) if inference else model(x)
            used = torch.where(out.presence < 0.1, 0.0, out.presence) if inference else out.presence
            weight = F.relu(model.classifier.weight)
        grid = tuple(out.maps.shape[-2:])
        cells = out.maps.flatten(2).argmax(dim=2).tolist()  # (B, P)

        explanations = explain(model, x, top_classes=3, inference=inference)

        pred = predictions(out.scores)
        for b, e in enumerate(explanations):
            assert e.presence_threshold == (0.1 if inference else 0.0)
            assert e.predicted == (None if pred[b] < 0 else int(pred[b]))
            assert [c.score for c in e.top_classes] == sorted((c.score for c in e.top_classes), reverse=True)
            assert len(e.top_classes) == 3
            for c in e.top_classes:
                assert c.score == pytest.approx(float(out.scores[b, c.class_index]), abs=1e-6)
                assert c.bias == pytest.approx(float(model.classifier.bias.detach()[c.class_index]))
                # Completeness: the score is exactly the sum of the listed evidence plus the bias.
                assert math.fsum(ev.evidence for ev in c.evidence) + c.bias == pytest.approx(c.score, rel=1e-5, abs=1e-5)
                # Every non-zero term is listed once, largest first, and is presence * weight.
                expected = (used[b] * weight[c.class_index] > 0).nonzero().flatten().tolist()
                assert sorted(ev.prototype for ev in c.evidence) == expected
                assert [ev.evidence for ev in c.evidence] == sorted((ev.evidence for ev in c.evidence), reverse=True)
                for ev in c.evidence:
                    assert ev.presence == pytest.approx(float(used[b, ev.prototype]))
                    assert ev.weight == pytest.approx(float(weight[c.class_index, ev.prototype]))
                    assert ev.evidence == pytest.approx(ev.presence * ev.weight, rel=1e-6)
                    assert (not inference) or ev.presence >= 0.1
                    assert ev.cell == divmod(cells[b][ev.prototype], grid[1])
                    assert ev.box == patch_box(*ev.cell, *grid, SIZE)
                explained_terms += len(c.evidence)
    assert explained_terms > 0  # the property was not checked vacuously


def test_abstaining_image_has_no_prediction_and_no_evidence():
    torch.manual_seed(0)
    m = pipnet.create_model("resnet18", num_classes=3, num_features=32).eval()
    with torch.no_grad():  # a constant add-on output: every presence is 1/32 < 0.1
        m.add_on.weight.zero_()
        m.add_on.bias.zero_()
    x = torch.randn(2, 3, 32, 32)
    (e, _) = explain(m, x, image_ids=["ood-0", "ood-1"])
    assert e.image_id == "ood-0"
    assert e.abstained and e.predicted is None and e.top_classes == []
    # Without the inference threshold the same image has evidence for every class.
    (t, _) = explain(m, x, inference=False)
    assert not t.abstained and t.predicted is not None
    assert all(len(c.evidence) == 32 for c in t.top_classes)


def test_json_round_trip(model):
    _randomise_classifier(model, 7, density=0.5, bias=True)
    for box in ("patch", "heatmap"):
        explanations = explain(model, torch.randn(2, 3, SIZE, SIZE), box=box, image_ids=["x", "y"])
        text = json.dumps([e.to_dict() for e in explanations])
        back = [ImageExplanation.from_dict(d) for d in json.loads(text)]
        assert back == explanations
        first = json.loads(text)[0]
        assert set(first) >= {"image_id", "predicted", "abstained", "top_classes", "presence_threshold"}
        assert set(first["top_classes"][0]["evidence"][0]) == {"prototype", "presence", "weight", "evidence", "cell", "box"}
    sheet = scoring_sheet(model)
    assert ScoringSheet.from_dict(json.loads(json.dumps(sheet.to_dict()))) == sheet


def test_heatmap_boxes_lie_in_the_image_and_cover_the_peak(model):
    _randomise_classifier(model, 3, density=1.0, bias=False)
    x = torch.randn(2, 3, SIZE, SIZE)
    grid = model(x).maps.shape[-2:]
    for e in explain(model, x, box="heatmap", inference=False):
        for ev in e.top_classes[0].evidence:
            top, bottom, left, right = ev.box
            assert 0 <= top < bottom <= SIZE and 0 <= left < right <= SIZE
            i, j = ev.cell  # the centre of the argmax cell is hot, so it is in the box
            h, w = grid
            cy, cx = (i + 0.5) * SIZE / h, (j + 0.5) * SIZE / w
            assert top <= cy <= bottom and left <= cx <= right


def test_scoring_sheet_lists_relevant_weights_largest_first(model):
    with torch.no_grad():
        w = torch.zeros(NUM_CLASSES, NUM_PROTOTYPES)
        w[0, [3, 5, 7]] = torch.tensor([0.5, 2.0, 1e-3])  # 1e-3 itself is not relevant
        w[1, [5, 9]] = torch.tensor([-1.0, 0.7])  # negative: relu'd to 0
        w[2, 11] = 0.2
        model.classifier.weight.copy_(w)
        model.classifier.bias.zero_()
    model.disable_prototypes([11])
    try:
        sheet = scoring_sheet(model)
    finally:
        model.enable_prototypes([11])
    got = {c.class_name: [(e.prototype, round(e.weight, 6)) for e in c.prototypes] for c in sheet.classes}
    assert got == {"a": [(5, 2.0), (3, 0.5)], "b": [(9, 0.7)], "c": [], "d": []}
    assert sheet.used_prototypes == [3, 5, 9]


def test_explain_never_changes_the_model():
    torch.manual_seed(0)
    m = pipnet.create_model("resnet18", num_classes=3, num_features=8).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    explain(m, torch.randn(3, 3, 32, 32) * 3)
    assert m.training and all(mod.training for mod in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # batch-norm statistics included


def test_bad_arguments(model):
    x = torch.randn(2, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="image_ids"):
        explain(model, x, image_ids=["only one"])
    with pytest.raises(ValueError, match="box"):
        explain(model, x, box="circle")


def test_explain_says_in_words_what_it_predicts_and_when_the_model_abstains(tmp_path, capsys):
    from reliability_helpers import TINY_BACKBONE, write_image

    from pipnet.cli import main

    image = write_image(tmp_path / "a.png", size=(32, 32))
    model = pipnet.create_model(TINY_BACKBONE, 2, num_features=8, image_size=32, class_names=["cat", "dog"])
    model.save_pretrained(tmp_path / "model")  # N(1, 0.1) weights: some prototype is present, a class is predicted
    with torch.no_grad():
        model.classifier.weight.zero_()  # every score 0: the model abstains
    model.save_pretrained(tmp_path / "silent")
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "model"), str(image)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    # No detector stored (a bare save_pretrained): the verdict is "known" and the sentence says why.
    assert re.fullmatch(rf"{re.escape(str(image))}: known: (cat|dog) \(score \d+\.\d{{3}}\); this model folder stores "
                        r"no detector, so no image is called unknown", first), first
    assert main(["explain", str(tmp_path / "silent"), str(image)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{image}: abstained: no prototype is present, every class scores 0"]
