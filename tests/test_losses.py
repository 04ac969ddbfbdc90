"""The three losses and the classifier against values computed by hand (spec section 3)."""

import math

import pytest
import torch

from pipnet.model import losses
from pipnet.model import NonNegativeLinear, output_probabilities


def _maps(rows):
    """(N, P) rows -> (N, P, 1, 1) maps."""
    return torch.tensor(rows, dtype=torch.float32)[:, :, None, None]


def test_alignment_loss_value():
    # z' = [0.5, 0.5], z'' = [1, 0]: the dot product is 0.5 in both halves, so L_A = -log(0.5).
    m1, m2 = _maps([[0.5, 0.5]]), _maps([[1.0, 0.0]])
    assert losses.alignment_loss(m1, m2).item() == pytest.approx(math.log(2), rel=1e-6)


def test_alignment_loss_stop_gradient():
    # d/dz' of -log(z'.sg(z''))/2 = -z''/(2*0.5) = [-1, 0]; the second half sees z' detached.
    # Without the stop-gradient z' would also get -z''/(2*0.5) from the second half: [-2, 0].
    m1 = _maps([[0.5, 0.5]]).requires_grad_()
    m2 = _maps([[1.0, 0.0]]).requires_grad_()
    losses.alignment_loss(m1, m2).backward()
    assert m1.grad.flatten().tolist() == pytest.approx([-1.0, 0.0])
    assert m2.grad.flatten().tolist() == pytest.approx([-0.5, -0.5])


def test_alignment_loss_averages_over_cells_and_images():
    # Two cells: dot products 1 and 0.25 -> L_A = -(log 1 + log 0.25)/2 = log(2).
    m = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]]]])  # (1, 2, 1, 2): cell 0 = [1,0], cell 1 = [0.5,0.5]
    assert losses.alignment_loss(m, m).item() == pytest.approx(-(0 + math.log(0.5)) / 2, rel=1e-6)


def test_tanh_loss_value_sums_over_the_batch():
    p = torch.tensor([[0.5, 0.0], [0.5, 0.0]])  # batch sums: [1, 0]
    expected = -(math.log(math.tanh(1.0) + 1e-8) + math.log(0.0 + 1e-8)) / 2
    assert losses.tanh_loss(p).item() == pytest.approx(expected, rel=1e-6)


def test_classification_loss_value():
    # o = log(out^2 + 1) = [log 2, 0]; -log_softmax(o)[0] = log(3) - log(2) = log(1.5).
    scores, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    assert losses.classification_loss(scores, labels).item() == pytest.approx(math.log(1.5), rel=1e-6)


def test_classification_loss_uses_the_multiplier():
    scores, labels = torch.tensor([[2.0, 1.0]]), torch.tensor([1])
    o = torch.tensor([math.log(2.0**3 + 1), math.log(1.0**3 + 1)])
    expected = -torch.log_softmax(o, 0)[1].item()
    assert losses.classification_loss(scores, labels, multiplier=3.0).item() == pytest.approx(expected, rel=1e-6)


def test_classifier_uses_relu_of_weights():
    layer = NonNegativeLinear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
    out = layer(torch.tensor([[0.2, 0.3]]))
    assert out.flatten().tolist() == pytest.approx([0.2, 0.2 * 0.5 + 0.3 * 2.0])
    assert layer.multiplier.item() == 2.0 and not layer.multiplier.requires_grad


def test_classifier_init_and_bias():
    torch.manual_seed(0)
    layer = NonNegativeLinear(500, 40, bias=True)
    assert layer.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert layer.weight.std().item() == pytest.approx(0.1, abs=0.01)
    assert torch.equal(layer.bias, torch.zeros(40))


def test_output_probabilities():
    p = output_probabilities(torch.tensor([[1.0, 0.0]]))
    assert p.flatten().tolist() == pytest.approx([2 / 3, 1 / 3])
