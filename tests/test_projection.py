"""Projection: per-prototype top-k against brute force, deterministic ties, threshold rows, pruning."""

import math

import pytest
import torch
from eval_helpers import logit_model, tiny_conv_model
from torch.utils.data import DataLoader, TensorDataset

from pipnet.evaluation.projection import project, prune_unused_prototypes


def brute_force(maps: torch.Tensor, k: int, threshold: float, logits: torch.Tensor | None = None):
    """Per prototype: (presence, image, cell) sorted by (-log-odds, image), plus the rows above threshold.

    The ranking key is the exact order of presence: log(s / (1 - s)) of the softmax in float64 (from
    ``logits`` when given), rounded to float32 so that presences equal in exact arithmetic tie.
    """
    N, P, h, w = maps.shape
    exact = torch.softmax(logits.double(), dim=1) if logits is not None else maps.double()
    key = (torch.log(exact) - torch.log1p(-exact)).float().flatten(2)
    flat = maps.flatten(2)
    top, above = [], []
    for p in range(P):
        entries = []
        for n in range(N):
            values = key[n, p].tolist()
            best = max(values)
            cell = values.index(best)  # first maximal cell
            presence = flat[n, p, cell].item()
            entries.append((best, n, (cell // w, cell % w), presence))
            if presence > threshold:
                above.append((p, n, (cell // w, cell % w), presence))
        top.append([(e[3], e[1], e[2]) for e in sorted(entries, key=lambda e: (-e[0], e[1]))[:k]])
    return top, above


def check_against_brute_force(proj, maps, k, threshold, logits=None):
    top, above = brute_force(maps, k, threshold, logits)
    for p, entries in enumerate(top):
        assert proj.image_index[p].tolist() == [e[1] for e in entries]
        assert [tuple(c) for c in proj.cell[p].tolist()] == [e[2] for e in entries]
        assert proj.presence[p].tolist() == [e[0] for e in entries]
    assert proj.above_prototype.tolist() == [a[0] for a in above]
    assert proj.above_image.tolist() == [a[1] for a in above]
    assert [tuple(c) for c in proj.above_cell.tolist()] == [a[2] for a in above]
    assert proj.above_presence.tolist() == [a[3] for a in above]


def test_projection_equals_brute_force_on_random_maps():
    torch.manual_seed(0)
    P, N = 6, 23
    model = logit_model(P, num_classes=2)
    logits = torch.randn(N, P, 4, 5) * 3
    maps = torch.softmax(logits, dim=1)
    for batch_size in (1, 4, 23):
        proj = project(model, TensorDataset(logits, torch.zeros(N)), k=5, batch_size=batch_size, presence_threshold=0.6)
        assert proj.grid == (4, 5) and proj.image_size == (4, 5) and proj.num_images == N
        check_against_brute_force(proj, maps, k=5, threshold=0.6, logits=logits)
        assert torch.equal(proj.max_presence, proj.presence[:, 0])


def test_ties_are_broken_by_image_then_cell():
    # Logits from {0, 1, 2}: presences repeat a lot, and maps have several equal maxima.
    torch.manual_seed(1)
    P, N = 5, 30
    model = logit_model(P, num_classes=2)
    logits = torch.randint(0, 3, (N, P, 3, 3)).float()
    maps = torch.softmax(logits, dim=1)
    results = []
    for batch_size in (1, 7, 30):
        proj = project(model, TensorDataset(logits, torch.zeros(N)), k=10, batch_size=batch_size, presence_threshold=0.3)
        check_against_brute_force(proj, maps, k=10, threshold=0.3, logits=logits)
        results.append(proj)
    assert all(torch.equal(r.image_index, results[0].image_index) for r in results)


def test_identical_images_keep_the_lowest_indices_and_first_cell():
    P, N = 4, 12
    model = logit_model(P, num_classes=2)
    logits = torch.zeros(N, P, 3, 3)  # every cell of every map ties at 1 / P
    proj = project(model, TensorDataset(logits, torch.zeros(N)), k=5, batch_size=5)
    assert proj.image_index.tolist() == [[0, 1, 2, 3, 4]] * P
    assert (proj.cell == 0).all()
    assert torch.allclose(proj.presence, torch.full((P, 5), 0.25))


def test_small_data_set_gives_fewer_than_k_and_threshold_lookup():
    P = 3
    model = logit_model(P, num_classes=2)
    logits = torch.zeros(2, P, 2, 2)
    logits[1, 2, 1, 0] = 5.0  # prototype 2 fires in image 1 at cell (1, 0)
    proj = project(model, TensorDataset(logits, torch.zeros(2)), k=10)
    assert proj.k == 2 and proj.image_index.shape == (P, 2)
    assert proj.image_index[2].tolist() == [1, 0] and proj.cell[2, 0].tolist() == [1, 0]
    images, cells, presence = proj.above_threshold(2)
    assert images.tolist() == [1] and cells.tolist() == [[1, 0]] and presence.item() > 0.9
    assert proj.above_threshold(0)[0].numel() == 0


def test_projection_of_a_conv_model_matches_per_batch_brute_force_and_leaves_it_unchanged():
    torch.manual_seed(2)
    model = tiny_conv_model(num_classes=3, channels=8).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(10, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        maps = torch.cat([model(x[i : i + 3]).maps for i in range(0, 10, 3)])  # the same batches as project
        model.train()
    proj = project(model, DataLoader(TensorDataset(x, torch.zeros(10)), batch_size=3), k=4, presence_threshold=0.2)
    check_against_brute_force(proj, maps, k=4, threshold=0.2)
    assert model.training and model.backbone.bn.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shuffled_loader_is_refused():
    model = logit_model(3, num_classes=2)
    data = TensorDataset(torch.zeros(4, 3, 2, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="in order"):
        project(model, DataLoader(data, batch_size=2, shuffle=True))


def test_prune_unused_prototypes_zeroes_only_never_present_ones():
    P = 20  # with all-zero logits every presence is 1/20 = 0.05 <= 0.1
    model = logit_model(P, num_classes=3)
    logits = torch.zeros(6, P, 2, 2)
    logits[0, 3, 0, 0] = 4.0  # prototype 3 present once
    logits[5, 11, 1, 1] = 4.0  # prototype 11 present once, in the last image
    proj = project(model, TensorDataset(logits, torch.zeros(6)), k=3, batch_size=4)
    weight_before = model.classifier.weight.detach().clone()
    pruned = prune_unused_prototypes(model, proj)
    assert pruned == [p for p in range(P) if p not in (3, 11)]
    w = model.classifier.weight.detach()
    assert (w[:, pruned] == 0).all()
    assert torch.equal(w[:, [3, 11]], weight_before[:, [3, 11]])


def test_log_odds_match_the_softmax_and_do_not_saturate():
    from pipnet.model import prototype_log_odds

    torch.manual_seed(3)
    logits = torch.randn(4, 6, 3, 3, dtype=torch.float64) * 4
    s = torch.softmax(logits, dim=1)
    assert torch.allclose(prototype_log_odds(logits), torch.log(s) - torch.log1p(-s), atol=1e-10)
    # Margins of 30 and 40: both presences round to 1.0 in float32, the log-odds keep them apart.
    saturated = torch.zeros(2, 3, 1, 1)
    saturated[0, 0], saturated[1, 0] = 30.0, 40.0
    assert torch.softmax(saturated, dim=1)[:, 0].flatten().tolist() == [1.0, 1.0]
    odds = prototype_log_odds(saturated)[:, 0].flatten()
    assert odds.tolist() == pytest.approx([30 - math.log(2), 40 - math.log(2)], rel=1e-6)
    assert prototype_log_odds(torch.zeros(1, 1, 2, 2)).isinf().all()  # one prototype: always fully present


def saturated_logits(N: int = 16, P: int = 4, seed: int = 4) -> torch.Tensor:
    """Logits whose softmax rounds to 1.0 for most (image, prototype) bests: margins of 20 to 60."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, P, 3, 3, generator=g)
    winner = torch.randint(0, P, (N, 3, 3), generator=g)
    margin = 20 + 40 * torch.rand(N, 3, 3, generator=g)
    return logits + torch.nn.functional.one_hot(winner, P).permute(0, 3, 1, 2) * margin[:, None]


def test_saturated_galleries_do_not_depend_on_image_order():
    P, N = 4, 16
    model = logit_model(P, num_classes=2)
    logits = saturated_logits(N, P)
    proj = project(model, TensorDataset(logits, torch.zeros(N)), k=5, batch_size=3)
    assert (proj.presence == 1.0).sum() >= 8  # presence alone would rank these by image index
    for seed in range(3):
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
        permuted = project(model, TensorDataset(logits[perm], torch.zeros(N)), k=5, batch_size=4)
        assert torch.equal(perm[permuted.image_index], proj.image_index)  # the same images, in the same order
        assert torch.equal(permuted.cell, proj.cell) and torch.equal(permuted.presence, proj.presence)
    assert not proj.tied.any()


def test_ties_at_the_kth_image_are_flagged():
    P, N = 3, 6
    model = logit_model(P, num_classes=2)
    logits = saturated_logits(N, P)
    proj = project(model, TensorDataset(logits, torch.zeros(N)), k=3)
    assert not proj.tied.any()
    same = torch.cat([logits[:1]] * N)  # identical images: every prototype's row is chosen by image order
    tied = project(model, TensorDataset(same, torch.zeros(N)), k=3)
    assert tied.tied.all() and tied.image_index.tolist() == [[0, 1, 2]] * P
    whole = project(model, TensorDataset(same, torch.zeros(N)), k=N)  # every image shown: nothing was left out
    assert not whole.tied.any()
