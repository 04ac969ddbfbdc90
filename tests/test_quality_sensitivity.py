"""Prototype sensitivity: each perturbation by hand, and hand-built detectors whose dominant aspect is certain.

Each detector model has two prototypes: 0 a constant (logit 0 everywhere), 1 a hand-set detector with
logit ``gain * (response - offset)``, so prototype 1's presence in a cell is sigmoid of that logit. The
responses are computed on the RGB image in [0, 1] (the backbone undoes the ImageNet normalisation), pooled
over 8 x 8 cells of a 64 x 64 image; the shape perturbation's tiles are the same 8 x 8 cells.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from pipnet.model.backbones import Backbone, ParameterGroups
from pipnet.data import build_data
from pipnet.data.augment import IMAGENET_MEAN, IMAGENET_STD, denormalize
from pipnet.core.data_config import DataConfig, PlantedConfig
from pipnet.model import PIPNet, PIPNetConfig
from pipnet.evaluation.projection import project
from pipnet.evaluation.quality.sensitivity import ASPECTS, Perturbations, dominant_aspect, prototype_sensitivity, shuffle_tiles

S = 64


def normalize(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


class DetectorBackbone(Backbone):
    """z = [0, gain * (response(rgb) - offset)] pooled over 8 x 8 cells: prototype 1 is a hand-set detector."""

    def __init__(self, response, gain: float, offset: float):
        super().__init__()
        self.num_features = 2
        self.groups = ParameterGroups((), (), ())
        self.register_buffer("unused", torch.zeros(1))
        self.response, self.gain, self.offset = response, gain, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = denormalize(x)
        r = self.response(rgb)  # (B, 1, h, w) per 8 x 8 cell
        return torch.cat([torch.zeros_like(r), self.gain * (r - self.offset)], dim=1)


def detector(response, gain: float, offset: float) -> PIPNet:
    model = PIPNet(PIPNetConfig(backbone="test", num_classes=1, image_size=S), backbone=DetectorBackbone(response, gain, offset))
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor([[0.0, 1.0]]))
    return model.eval()


def redness(rgb: torch.Tensor) -> torch.Tensor:
    """R - (G + B) / 2, averaged per cell."""
    return F.avg_pool2d(rgb[:, :1] - rgb[:, 1:].mean(dim=1, keepdim=True), 8)


def stripes(rgb: torch.Tensor) -> torch.Tensor:
    """Mean |horizontal difference| of the gray image per cell: fine vertical texture."""
    gray = rgb.mean(dim=1, keepdim=True)
    dx = (gray[..., 1:] - gray[..., :-1]).abs()
    return F.avg_pool2d(F.pad(dx, (0, 1)), 8)


def long_edges(rgb: torch.Tensor) -> torch.Tensor:
    """An unbroken horizontal edge 24 px long: the least, over 24 columns, of the gray-level change across 5 rows."""
    gray = rgb.mean(dim=1, keepdim=True)
    dy = F.pad((gray[..., 1:, :] - gray[..., :-1, :]).abs(), (0, 0, 0, 1))
    crossed = F.avg_pool2d(dy, (5, 1), stride=1, padding=(2, 0)) * 5  # (B, 1, S, S) change across rows y-2..y+2
    run = -F.max_pool2d(-crossed, (1, 24), stride=1)  # (B, 1, S, S - 23) weakest column of each run of 24
    return F.adaptive_max_pool2d(run, 8)


def red_square() -> torch.Tensor:
    rgb = torch.full((3, S, S), 0.5)
    rgb[:, 16:48, 16:48] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    return rgb


def gray_stripes() -> torch.Tensor:
    """Vertical stripes of period 4 (2 px at 0.25, 2 px at 0.75): mean |dx| = 0.25 by hand."""
    column = torch.tensor([0.25, 0.25, 0.75, 0.75]).repeat(S // 4)
    return column.expand(3, S, S).clone()


def white_bar() -> torch.Tensor:
    """A white bar, rows 28..35 and columns 8..55, on black: two horizontal edges 48 px long."""
    rgb = torch.zeros(3, S, S)
    rgb[:, 28:36, 8:56] = 1.0
    return rgb


def as_data(*images: torch.Tensor) -> TensorDataset:
    return TensorDataset(torch.stack([normalize(x) for x in images]), torch.zeros(len(images), dtype=torch.long))


# ---- the perturbations by hand --------------------------------------------------------------------------


def test_hue_turns_red_into_cyan_and_saturation_zero_makes_gray():
    red = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    p = Perturbations()
    assert torch.allclose(p.apply("hue", red)[0, :, 0, 0], torch.tensor([0.1, 0.9, 0.9]), atol=1e-5)
    gray = p.apply("saturation", red)[0, :, 0, 0]
    assert torch.allclose(gray, torch.full((3,), 0.2989 * 0.9 + 0.587 * 0.1 + 0.114 * 0.1), atol=1e-5)  # ITU-R 601-2 luma
    # contrast 0.5: halfway to the image's mean gray (the image is uniform, so its mean gray is that gray)
    assert torch.allclose(p.apply("contrast", red)[0, :, 0, 0], (red[0, :, 0, 0] + gray) / 2, atol=1e-5)


def test_blur_keeps_flat_images_and_removes_fine_stripes():
    p = Perturbations()
    assert p.blur(224) == (pytest.approx(224 / 48), 2 * math.ceil(3 * 224 / 48) + 1)
    flat = torch.full((1, 3, S, S), 0.3)
    assert torch.allclose(p.apply("texture", flat), flat, atol=1e-6)
    blurred = p.apply("texture", gray_stripes()[None])
    # period 4 with sigma 4/3 px: the fundamental keeps exp(-2 pi^2 sigma^2 / 16) = 11% of its amplitude
    amplitude = blurred[0, 0, 32, 16:48].max() - blurred[0, 0, 32, 16:48].min()
    assert amplitude < 0.2 * 0.5


def test_shuffle_moves_every_tile_apart_and_keeps_every_pixel():
    x = torch.arange(2 * 3 * 41 * 40, dtype=torch.float32).reshape(2, 3, 41, 40)  # 41 rows: the last one stays
    out = shuffle_tiles(x, grid=8)
    assert torch.equal(out.flatten().sort().values, x.flatten().sort().values)
    assert torch.equal(out[..., 40:, :], x[..., 40:, :])
    ids = torch.arange(64.0).reshape(1, 1, 8, 8)
    moved = shuffle_tiles(ids, grid=8)[0, 0]  # tile ids, one pixel per tile
    assert (moved != ids[0, 0]).all(), "a tile stayed in place"
    where = {int(t): (r, c) for r in range(8) for c in range(8) for t in [moved[r, c]]}
    for t in range(64):
        r, c = divmod(t, 8)
        for n in ([t + 1] if c < 7 else []) + ([t + 8] if r < 7 else []):  # its right and lower neighbours
            (r1, c1), (r2, c2) = where[t], where[n]
            assert abs(r1 - r2) + abs(c1 - c2) > 1, f"tiles {t} and {n} still touch"
    assert torch.equal(shuffle_tiles(x, 8), out)  # one fixed permutation
    with pytest.raises(ValueError, match="no room"):
        shuffle_tiles(torch.zeros(1, 3, 4, 4), grid=8)
    with pytest.raises(ValueError, match="even and >= 8"):
        shuffle_tiles(x, grid=5)


def test_dominant_rule():
    d = {"hue": 0.9, "saturation": 0.85, "contrast": 0.5, "texture": 0.1, "shape": 0.0}
    assert dominant_aspect(d) == "hue"  # saturation is the same aspect (colour): it does not compete
    assert dominant_aspect({**d, "contrast": 0.85}) is None  # within the 0.1 margin of another aspect
    assert dominant_aspect({k: 0.2 for k in d}) is None  # nothing drops by 0.3
    assert dominant_aspect({k: None for k in d}) is None
    assert dominant_aspect({"shape": 0.6, "texture": 0.4, "hue": None}) == "shape"


def test_bad_parameters_and_top_images_are_refused():
    with pytest.raises(ValueError, match="hue_shift"):
        Perturbations(hue_shift=0.7)
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbations().apply("sharpness", torch.zeros(1, 3, 8, 8))
    model, data = detector(redness, 20.0, 0.3), as_data(red_square())
    with pytest.raises(ValueError, match="prototype 5 outside"):
        prototype_sensitivity(model, data, {5: [0]})
    with pytest.raises(ValueError, match=r"outside the data set's 0\.\.0: \[3\]"):
        prototype_sensitivity(model, data, {1: [0, 3]})
    logits = TensorDataset(torch.zeros(2, 4, 1, 2), torch.zeros(2, dtype=torch.long))  # not RGB images
    with pytest.raises(ValueError, match=r"needs RGB images \(3, S, S\) with S >= 8, got inputs of shape \(4, 1, 2\)"):
        prototype_sensitivity(model, logits, {1: [0]})


# ---- hand-built detectors: the dominant aspect is known ----------------------------------------------------


def test_colour_detector_is_about_colour():
    model = detector(redness, 20.0, 0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = prototype_sensitivity(model, as_data(red_square(), red_square().flip(-1)), {1: [0, 1]})
    drops = out["prototypes"]["1"]
    # hue: redness 0.8 -> -0.8 and saturation: -> 0; presence sigmoid(20 * 0.5) ~ 1 -> ~0
    assert drops["hue"] > 0.99 and drops["saturation"] > 0.99
    # contrast: redness (0.9 - 0.1) / 2 = 0.4 inside the square -> sigmoid(2) = 0.88
    assert drops["contrast"] == pytest.approx(1 - torch.sigmoid(torch.tensor(2.0)).item() / torch.sigmoid(torch.tensor(10.0)).item(), abs=0.05)
    assert abs(drops["texture"]) < 1e-4 and abs(drops["shape"]) < 1e-4  # inner cells untouched, tiles = cells
    assert out["dominant"] == {"1": "hue"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_texture_detector_is_about_texture():
    # response 0.25 on the stripes (by hand); offset 0.1 puts the halved contrast (0.125) still above it
    model = detector(stripes, 60.0, 0.1)
    out = prototype_sensitivity(model, as_data(gray_stripes()), {1: [0]})
    drops = out["prototypes"]["1"]
    assert drops["texture"] > 0.9
    assert abs(drops["hue"]) < 1e-3 and abs(drops["saturation"]) < 1e-3  # a gray image has no colour to change
    assert abs(drops["shape"]) < 1e-4  # the period (4) divides the tile (8): shuffled stripes are the same stripes
    assert drops["contrast"] < 0.3
    assert out["dominant"] == {"1": "texture"}


def test_shape_detector_is_about_shape():
    # the bar's edges give response 1; half contrast 0.5, the blur about 0.95 (the 5 rows hold most of the
    # blurred edge); tiles of 8 px leave no unbroken 24 px edge: 0. Offset 0.3 with gain 40 separates them.
    model = detector(long_edges, 40.0, 0.3)
    out = prototype_sensitivity(model, as_data(white_bar()), {1: [0]})
    drops = out["prototypes"]["1"]
    assert drops["shape"] > 0.5
    assert max(abs(drops[k]) for k in ("hue", "saturation", "contrast", "texture")) < 0.1
    assert out["dominant"] == {"1": "shape"}


def test_block_lists_every_parameter_and_handles_absent_prototypes():
    model = detector(redness, 20.0, 0.3)
    gray = torch.full((3, S, S), 0.5)
    out = prototype_sensitivity(model, as_data(red_square(), gray), {1: [1], 0: [0, 1]})
    assert out["prototypes"]["1"] == {k: None for k in ASPECTS}  # not present (p < 0.1) on its only image
    assert out["dominant"]["1"] is None
    assert set(out["perturbations"]) == set(ASPECTS)
    assert out["params"]["num_images"] == 2 and out["params"]["image_size"] == S
    assert out["params"]["blur_sigma_px"] == pytest.approx(S / 48)
    assert "180 degrees" in out["perturbations"]["hue"]
    assert prototype_sensitivity(model, as_data(gray), {})["prototypes"] == {}


def test_planted_images_red_parts_are_about_colour():
    """The hand-built colour detector on the planted data: its top images are those with red parts."""
    config = DataConfig(source="planted", image_size=S,
                        planted=PlantedConfig(num_classes=4, train_per_class=6, test_per_class=2, ood_images=0,
                                              multi_images=0, size=S))
    data = build_data(config).projection
    model = detector(redness, 20.0, 0.3)
    projection = project(model, data, k=5)
    top = {1: projection.image_index[1].tolist()}
    assert projection.presence[1].min() > 0.5, "the planted data should have red parts"
    out = prototype_sensitivity(model, data, top, batch_size=4)
    drops = out["prototypes"]["1"]
    assert drops["hue"] > 0.8 and drops["saturation"] > 0.8
    assert out["dominant"]["1"] in ("hue", "saturation")
