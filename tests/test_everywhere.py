"""Prototypes present everywhere: the shares by hand, evaluate()'s report, and the prune option."""

from __future__ import annotations

import math

import pytest
import torch
from eval_helpers import logit_model, set_weights
from torch.utils.data import TensorDataset

from pipnet.evaluation import metrics as M
from pipnet.evaluation.evaluate import evaluate
from pipnet.evaluation.projection import everywhere_prototypes, project, prune_everywhere_prototypes


def test_presence_shares_and_everywhere_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 1])
    # prototype 0 in every image, 1 in images 0 and 1 (class 0 only), 2 in images 0, 2 and 3
    proto = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    image = torch.tensor([0, 1, 2, 3, 4, 0, 1, 0, 2, 3])
    shares = M.presence_share_per_class(proto, image, labels, num_prototypes=3, num_classes=3)
    assert torch.allclose(shares[:, :2], torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.5, 2 / 3]], dtype=torch.float64))
    assert all(math.isnan(v) for v in shares[:, 2].tolist())  # class 2 has no images: ignored
    assert M.present_everywhere(shares).tolist() == [True, False, False]
    assert M.present_everywhere(shares, share=0.5).tolist() == [True, False, True]


def everywhere_data():
    """P = 4 on a 1 x 2 grid. Cell 0: prototype 0 (or 3) dominates; cell 1: the image's class prototype (1 or 2).

    Prototype 0 is present (~1) in every image but image 9; prototype 3 in image 9 only.
    """
    n, labels = 10, torch.tensor([0] * 5 + [1] * 5)
    x = torch.zeros(n, 4, 1, 2)
    x[:, 0, 0, 0] = 10.0
    x[9, 0, 0, 0], x[9, 3, 0, 0] = 0.0, 10.0
    x[labels == 0, 1, 0, 1] = 10.0
    x[labels == 1, 2, 0, 1] = 10.0
    return TensorDataset(x, labels)


def test_evaluate_reports_used_prototypes_present_everywhere():
    model = logit_model(4, num_classes=2)
    set_weights(model, [[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    data = everywhere_data()
    m = evaluate(model, data, train_set=data)
    # prototype 0: class 0 5 of 5, class 1 4 of 5 = 0.8 < 0.9 -> not everywhere
    assert m.everywhere == {"prototypes": [], "share": 0.9, "presence": 0.5, "num_used": 4}
    x = data.tensors[0].clone()
    x[9, 0, 0, 0], x[9, 3, 0, 0] = 10.0, 0.0  # now prototype 0 is in all 10 images
    full = TensorDataset(x, data.tensors[1])
    assert evaluate(model, full, train_set=full).everywhere["prototypes"] == [0]
    set_weights(model, [[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])  # unused prototypes are not reported
    assert evaluate(model, full, train_set=full).everywhere["prototypes"] == []


def test_prune_everywhere_zeroes_only_those_prototypes():
    model = logit_model(4, num_classes=2)
    set_weights(model, [[1.0, 1.0, 0.0, 1.0], [2.0, 0.0, 1.0, 0.0]])
    x, labels = everywhere_data().tensors
    x = x.clone()
    x[9, 0, 0, 0], x[9, 3, 0, 0] = 10.0, 0.0
    projection = project(model, TensorDataset(x, labels))
    found, shares = everywhere_prototypes(model, projection, labels)
    assert found == [0] and shares[0].tolist() == [1.0, 1.0]
    assert prune_everywhere_prototypes(model, projection, labels) == [0]
    assert model.classifier.weight.tolist() == [[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="labels"):
        everywhere_prototypes(model, projection, labels[:3])


def test_train_option_prune_everywhere(tmp_path):
    """Two identical 1-epoch runs, the second with --optim.prune_everywhere: only those prototypes lose their weights."""
    from test_train import tiny_config

    from pipnet.train import train

    runs = []
    for prune in (False, True):
        config = tiny_config(tmp_path / f"prune-{prune}", epochs_pretrain=0, epochs=1)
        config.optim.prune_everywhere = prune
        config.data.planted.ood_images = 0
        runs.append(train(config))
    plain, pruned = runs
    found = plain.metrics.everywhere["prototypes"]
    assert found, "the check below would be vacuous"
    w_plain, w_pruned = plain.model.classifier.weight.detach(), pruned.model.classifier.weight.detach()
    assert (w_pruned[:, found] == 0).all()
    others = [p for p in range(w_plain.shape[1]) if p not in found]
    assert torch.equal(w_plain[:, others], w_pruned[:, others])
    assert pruned.metrics.everywhere["prototypes"] == []


def test_report_marks_prototypes_present_everywhere():
    from pipnet.explanation.render.html import gallery_notes

    metrics = {"everywhere": {"prototypes": [3], "share": 0.9, "presence": 0.5, "num_used": 5}}
    assert "present everywhere" in gallery_notes(3, None, metrics)[0]
    assert gallery_notes(2, None, metrics) == [] and gallery_notes(3, None, None) == []


def test_saturation_counts_used_prototypes_whose_kth_presence_rounds_to_one():
    model = logit_model(4, num_classes=2)
    set_weights(model, [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])  # used: 0, 1, 2
    x, labels = everywhere_data().tensors
    # k = 3: prototype 0 has presence ~1 in 9 images; 1 and 2 in 5 images each (their class); 3 is unused.
    m = evaluate(model, TensorDataset(x, labels), train_set=TensorDataset(x, labels), k=3)
    assert m.saturation == {"saturated": 3, "num_used": 3, "share": 1.0, "presence": 0.99, "rank": 3}
    m = evaluate(model, TensorDataset(x, labels), train_set=TensorDataset(x, labels), k=6)
    assert m.saturation["saturated"] == 1  # only prototype 0 has 6 images at ~1
