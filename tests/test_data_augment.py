"""The two-view augmentation (spec section 5): restricted op spaces, aligned views, the evaluation transform."""

import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import v2

from pipnet.data.augment import (
    IMAGENET_MEAN,
    ColourTrivialAugment,
    LocationTrivialAugment,
    StrongColourTrivialAugment,
    TwoViewTransform,
    denormalize,
    eval_transform,
)

S = 64


def _square_image(size: int = 96) -> Image.Image:
    """Black image with one white square off the centre (so flips and rotations move it)."""
    img = Image.new("RGB", (size, size), (0, 0, 0))
    ImageDraw.Draw(img).rectangle((20, 26, 36, 42), fill=(255, 255, 255))
    return img


def _gradient_image(size: int) -> Image.Image:
    """A low-contrast colour gradient with a square: every colour and location op changes it."""
    ramp = torch.linspace(60, 180, size)
    rgb = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                       torch.full((size, size), 100.0)], dim=-1)
    img = Image.fromarray(rgb.to(torch.uint8).numpy())
    ImageDraw.Draw(img).rectangle((10, 12, 20, 22), fill=(150, 70, 90))
    return img


def _centroid(view: torch.Tensor) -> torch.Tensor:
    """(x, y) centroid of the bright pixels of a normalised (3, H, W) view."""
    gray = denormalize(view).mean(0)
    mask = gray > (gray.max() + gray.min()) / 2
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.float().mean(), ys.float().mean()])


def _magnitude_top(cls, op: str) -> float:
    return float(cls._AUGMENTATION_SPACE[op][0](31, S, S).abs().max())


def test_location_op_space_is_exactly_the_location_ops():
    space = LocationTrivialAugment._AUGMENTATION_SPACE
    assert set(space) == {"Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
    assert _magnitude_top(LocationTrivialAugment, "ShearX") == pytest.approx(0.5)
    assert _magnitude_top(LocationTrivialAugment, "ShearY") == pytest.approx(0.5)
    assert _magnitude_top(LocationTrivialAugment, "TranslateX") == pytest.approx(16.0)
    assert _magnitude_top(LocationTrivialAugment, "TranslateY") == pytest.approx(16.0)
    assert _magnitude_top(LocationTrivialAugment, "Rotate") == pytest.approx(60.0)
    assert all(space[op][1] for op in space if op != "Identity")  # signed
    assert len(space["Rotate"][0](31, S, S)) == 31


def test_colour_op_space_is_exactly_the_colour_ops():
    space = ColourTrivialAugment._AUGMENTATION_SPACE
    assert set(space) == {"Identity", "Brightness", "Contrast", "Sharpness", "Color", "Posterize",
                          "AutoContrast", "Equalize"}
    for op in ("Brightness", "Contrast", "Sharpness"):
        assert _magnitude_top(ColourTrivialAugment, op) == pytest.approx(0.5)
    assert _magnitude_top(ColourTrivialAugment, "Color") == pytest.approx(0.02)
    bits = space["Posterize"][0](31, S, S)
    assert int(bits.max()) == 8 and int(bits.min()) == 2


def test_cars_preset_adds_strong_colour_and_solarize():
    space = StrongColourTrivialAugment._AUGMENTATION_SPACE
    assert set(space) == set(ColourTrivialAugment._AUGMENTATION_SPACE) | {"Solarize"}
    assert _magnitude_top(StrongColourTrivialAugment, "Color") == pytest.approx(0.5)
    assert isinstance(TwoViewTransform(S, "cars").t2.transforms[0], StrongColourTrivialAugment)
    assert isinstance(TwoViewTransform(S, "default").t2.transforms[0], ColourTrivialAugment)
    assert not isinstance(TwoViewTransform(S, "default").t2.transforms[0], StrongColourTrivialAugment)


@pytest.mark.parametrize("cls", [LocationTrivialAugment, StrongColourTrivialAugment])
def test_every_op_is_a_working_torchvision_op(cls):
    # Each op alone, applied by torchvision's TrivialAugmentWide: a typo in an op name would raise here.
    assert issubclass(cls, v2.TrivialAugmentWide)
    img = _gradient_image(48)
    for op, entry in cls._AUGMENTATION_SPACE.items():
        single = type("Single", (cls,), {"_AUGMENTATION_SPACE": {op: entry}})()
        changed = any(single(img).tobytes() != img.tobytes() for _ in range(8))
        assert changed == (op != "Identity"), op


@pytest.mark.parametrize("preset", ["default", "birds", "cars", "pets", "grayscale"])
def test_views_are_float_tensors_of_the_input_size(preset):
    img = Image.new("RGB", (50, 70), (200, 40, 10))
    v1, v2_ = TwoViewTransform(S, preset)(img)
    assert v1.shape == v2_.shape == (3, S, S)
    assert v1.dtype == v2_.dtype == torch.float32
    if preset == "grayscale":
        rgb = denormalize(v1)
        assert torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)


def test_grayscale_and_palette_inputs_become_three_channels():
    for mode in ("L", "P", "RGBA"):
        img = Image.new(mode, (40, 40))
        v1, _ = TwoViewTransform(S)(img)
        assert v1.shape == (3, S, S)
        assert eval_transform(S)(img).shape == (3, S, S)


def test_views_share_location_and_differ_only_by_crop_jitter():
    transform = TwoViewTransform(S, delta=32)
    img = _square_image()
    first_views = []
    for seed in range(20):
        torch.manual_seed(seed)
        v1, v2_ = transform(img)
        # RandomCrop(S) of an (S + 4)-sided image: each view is shifted by 0..4 pixels per axis.
        assert (_centroid(v1) - _centroid(v2_)).abs().max() <= 4.5, seed
        first_views.append(_centroid(v1))
    # The location ops did act: the square lands in different places for different seeds.
    spread = torch.stack(first_views).std(0).max()
    assert spread > 3.0


def test_independent_location_draws_would_not_be_aligned():
    # Control for the test above: two separate T1 draws move the square apart for some seed.
    transform = TwoViewTransform(S, delta=32)
    img = _square_image()
    gaps = []
    for seed in range(20):
        torch.manual_seed(seed)
        a = transform.t2(transform.t1(img))
        b = transform.t2(transform.t1(img))
        gaps.append(float((_centroid(a) - _centroid(b)).abs().max()))
    assert max(gaps) > 4.5


def test_colour_differs_between_views_for_some_seeds():
    img = Image.new("RGB", (96, 96), (90, 120, 160))
    ImageDraw.Draw(img).rectangle((30, 30, 60, 60), fill=(220, 60, 30))
    transform = TwoViewTransform(S)
    gaps = []
    for seed in range(20):
        torch.manual_seed(seed)
        v1, v2_ = transform(img)
        gaps.append(float((denormalize(v1).mean() - denormalize(v2_).mean()).abs()))
    assert max(gaps) > 0.05
    assert min(gaps) < 0.01  # e.g. identity on both: the crop jitter alone barely changes the mean


def test_delta_sets_the_first_resize():
    assert TwoViewTransform(S, delta=8).t1.transforms[1].size == [S + 8, S + 8]
    assert TwoViewTransform(S).t1.transforms[1].size == [S + 32, S + 32]


def test_eval_transform_resizes_and_normalises():
    mean_colour = tuple(round(255 * m) for m in IMAGENET_MEAN)
    x = eval_transform(S)(Image.new("RGB", (30, 50), mean_colour))
    assert x.shape == (3, S, S)
    assert x.abs().max() < 0.02  # the ImageNet mean colour normalises to ~0
    y = eval_transform(S)(Image.new("RGB", (30, 50), (255, 0, 128)))
    assert torch.allclose(denormalize(y)[:, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]), atol=1e-3)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="preset"):
        TwoViewTransform(S, "sepia")
    with pytest.raises(ValueError, match="preset"):
        eval_transform(S, "sepia")
