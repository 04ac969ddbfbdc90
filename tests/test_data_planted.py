"""The planted-parts data set: determinism, ground truth on the parts, the ood and multi splits, learnability."""

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipnet.data import DataConfig, EvalDataset, PlantedConfig, PlantedParts, build_data
from pipnet.data.planted import (
    COLOURS,
    class_background,
    class_part_types,
    deconfounded_background_class,
    generate_image,
    part_styles,
    part_type_style,
    twin_part_types,
)
from pipnet.data.wrappers import scale_keypoints

SATURATED = {name: c for name, c in COLOURS.items() if name != "white"}


def _near(pixels: np.ndarray, colour: tuple[int, int, int], tol: int) -> np.ndarray:
    return (np.abs(pixels.astype(np.int16) - np.array(colour, dtype=np.int16)) <= tol).all(-1)


def test_same_seed_same_bytes_and_other_seed_other_images():
    config = PlantedConfig(seed=3)
    a, b = PlantedParts(config, "train"), PlantedParts(PlantedConfig(seed=3), "train")
    for i in (7, 0, 31):  # any access order: image i is a function of (seed, split, i)
        assert a.image(i).tobytes() == b.image(i).tobytes()
        assert torch.equal(a.keypoints(i), b.keypoints(i))
    assert generate_image(config, "train", 7).image.tobytes() == a.image(7).tobytes()
    other = PlantedParts(PlantedConfig(seed=4), "train")
    assert all(other.image(i).tobytes() != a.image(i).tobytes() for i in range(5))
    test = PlantedParts(config, "test")
    assert all(test.image(i).tobytes() != a.image(i).tobytes() for i in range(5))


def test_classes_are_distinct_combinations_that_share_part_types():
    config = PlantedConfig()
    combos = class_part_types(config)
    assert len(combos) == config.num_classes
    assert len(set(combos)) == len(combos)
    assert all(len(set(c)) == config.parts_per_class for c in combos)
    usage = Counter(t for c in combos for t in c)
    assert set(usage) == set(range(config.num_part_types))  # the whole pool is used ...
    assert max(usage.values()) >= 2  # ... and some part types are shared between classes
    styles = {part_type_style(t) for t in range(config.num_part_types)}
    assert len(styles) == config.num_part_types
    ds = PlantedParts(config, "train")
    assert ds.classes[0].startswith("class_0: ") and "+" in ds.classes[0]
    assert len(ds.part_names) == ds.num_parts == config.num_part_types


def test_a_large_pool_still_gives_distinct_part_types_and_classes():
    config = PlantedConfig(num_part_types=128, num_classes=40, parts_per_class=3)
    assert len({part_type_style(t) for t in range(128)}) == 128
    assert len(set(class_part_types(config))) == 40
    with pytest.raises(ValueError, match="num_classes"):
        class_part_types(PlantedConfig(num_part_types=4, parts_per_class=2, num_classes=7))


def test_keypoints_sit_on_the_parts_of_the_class():
    config = PlantedConfig()
    ds = PlantedParts(config, "train")
    combos = class_part_types(config)
    for i in range(0, len(ds), 4):
        image, label = ds[i]
        kp = ds.keypoints(i)
        assert kp.shape == (config.parts_per_class, 3)
        assert sorted(kp[:, 0].long().tolist()) == sorted(combos[label])
        assert ((kp[:, 1:] >= 0) & (kp[:, 1:] < config.size)).all()
        assert ds.image_size(i) == image.size == (config.size, config.size)
        pixels = np.asarray(image)
        for part, x, y in kp.tolist():
            colour = COLOURS[part_type_style(int(part))[1]]
            pixel = pixels[int(y), int(x)]
            assert _near(pixel[None], colour, 50).all(), (i, part, pixel, colour)
            distances = {name: np.abs(pixel.astype(int) - c).max() for name, c in COLOURS.items()}
            assert min(distances, key=distances.get) == part_type_style(int(part))[1]


def test_parts_are_the_only_saturated_objects_and_ood_has_none():
    config = PlantedConfig()
    train, ood = PlantedParts(config, "train"), PlantedParts(config, "ood")
    assert len(ood) == config.ood_images
    for i in range(12):
        assert ood[i][1] == -1
        assert ood.keypoints(i).shape == (0, 3)
        assert ood.classes_present(i) == ()
        pixels = np.asarray(ood.image(i))
        assert sum(int(_near(pixels, c, 40).sum()) for c in SATURATED.values()) < 5, i
    part_pixels = [sum(int(_near(np.asarray(train.image(i)), c, 40).sum()) for c in SATURATED.values())
                   for i in range(12)]
    assert min(part_pixels) > 30  # the control: real parts are found by the same measure


def test_multi_images_hold_the_parts_of_two_classes():
    config = PlantedConfig()
    ds = PlantedParts(config, "multi")
    combos = class_part_types(config)
    assert len(ds) == config.multi_images
    for i in range(len(ds)):
        first, second = ds.classes_present(i)
        assert first != second and ds[i][1] == first
        expected = sorted(combos[first] + combos[second])
        assert sorted(ds.keypoints(i)[:, 0].long().tolist()) == expected


def test_parts_do_not_overlap_and_stay_inside_even_when_crowded():
    config = PlantedConfig(num_part_types=20, parts_per_class=6, num_classes=4, distractors=6, difficulty=1.0)
    ds = PlantedParts(config, "multi")
    for i in range(len(ds)):
        xy = ds.keypoints(i)[:, 1:]
        assert len(xy) == 12
        gaps = torch.cdist(xy, xy) + torch.eye(len(xy)) * 1e3
        assert gaps.min() > 4
        assert ((xy > 0) & (xy < config.size)).all()


def test_purity_sets_are_the_projection_images_and_the_test_images():
    planted = PlantedConfig(num_classes=2, train_per_class=2, test_per_class=1, ood_images=0, multi_images=0, size=32)
    data = build_data(DataConfig(image_size=32, planted=planted))
    assert data.purity_sets() == {"train": data.projection, "test": data.test}
    assert data.purity_sets()["test"] is data.test_projection is data.test
    no_test = build_data(DataConfig(image_size=32, planted=PlantedConfig(**{**planted.__dict__, "test_per_class": 0})))
    assert no_test.purity_sets() == {"train": no_test.projection}


def test_evaluation_view_and_caching():
    ds = PlantedParts(PlantedConfig(), "test")
    x, label = EvalDataset(ds, 32)[5]
    assert x.shape == (3, 32, 32) and label == 5 % 6
    image, label = ds[5]  # a source's items are untransformed images
    assert image.size == (PlantedConfig().size, PlantedConfig().size) and label == 5 % 6
    assert ds.sample(5) is ds.sample(5)
    with pytest.raises(IndexError):
        ds.sample(len(ds))


def test_scale_keypoints_by_hand():
    kp = torch.tensor([[2.0, 10.0, 30.0], [0.0, 0.0, 59.0]])
    out = scale_keypoints(kp, (40, 60), 20)  # x * 20/40, y * 20/60
    assert torch.allclose(out, torch.tensor([[2.0, 5.0, 10.0], [0.0, 0.0, 59 / 3]]))


def test_bundle_maps_keypoints_into_the_model_input():
    config = DataConfig(source="planted", image_size=48, planted=PlantedConfig(train_per_class=4, test_per_class=2))
    bundle = build_data(config)
    view1, view2, label = bundle.train[3]
    assert view1.shape == view2.shape == (3, 48, 48) and label == 3
    assert bundle.pretrain is bundle.train
    x, label = bundle.projection[3]
    assert x.shape == (3, 48, 48)
    raw = bundle.projection.base.keypoints(3)
    assert torch.allclose(bundle.projection.keypoints(3)[:, 1:], raw[:, 1:] * 48 / 96)
    assert bundle.projection.image_size(3) == (48, 48) and bundle.projection.raw_image_size(3) == (96, 96)
    assert bundle.projection.raw_image(3).size == (96, 96)
    assert bundle.num_parts == 8 and len(bundle.part_names) == 8
    assert bundle.ood["planted_ood"][0][1] == -1
    assert len(bundle.multi.classes_present(0)) == 2
    assert bundle.test_projection is bundle.test and len(bundle.test) == 12


def test_a_tiny_cnn_learns_the_classes():
    """Learnability: a three-layer CNN trained for 150 steps on 32 x 32 inputs classifies the test set."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = PlantedConfig()
        train = EvalDataset(PlantedParts(config, "train"), 32)
        test = EvalDataset(PlantedParts(config, "test"), 32)
        x, y = torch.stack([train[i][0] for i in range(len(train))]), torch.tensor(train.targets)
        xt, yt = torch.stack([test[i][0] for i in range(len(test))]), torch.tensor(test.targets)
        net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(32, config.num_classes),
        )
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(150):
            idx = torch.randint(len(x), (32,))
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accuracy = (net(xt).argmax(1) == yt).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert accuracy > 0.9


# ---------------------------------------------------------------------------------------------------------
# Variants: one more planted fact each, for the prototype-quality metrics (pipnet.evaluation.quality)
# ---------------------------------------------------------------------------------------------------------


def _mean_colours(ds: PlantedParts) -> np.ndarray:
    return np.stack([np.asarray(ds.image(i), dtype=np.float64).reshape(-1, 3).mean(0) for i in range(len(ds))])


def test_every_variant_keeps_the_layout_of_standard():
    """Variants draw the same random numbers: the same parts at the same places, so only appearance changes."""
    base = PlantedParts(PlantedConfig(), "train")
    for variant in ("standard", "colour", "shortcut", "unconfounded", "twins"):
        ds = PlantedParts(PlantedConfig(variant=variant), "train")
        assert ds.combos == base.combos
        for i in range(0, len(ds), 9):
            assert torch.equal(ds.keypoints(i), base.keypoints(i)), (variant, i)
        same = [ds.image(i).tobytes() == base.image(i).tobytes() for i in range(12)]
        assert all(same) if variant == "standard" else not all(same), variant
    with pytest.raises(ValueError, match="unknown planted variant"):
        PlantedParts(PlantedConfig(variant="stripes"), "train")


def test_colour_variant_classes_0_and_1_differ_only_in_colour():
    config = PlantedConfig(variant="colour")
    styles, combos = part_styles(config), class_part_types(config)
    first, second = [sorted(styles[t] for t in combos[c]) for c in (0, 1)]
    assert [(s, x) for s, _, x in first] == [(s, x) for s, _, x in second]  # same shapes and textures ...
    assert [c for _, c, _ in first] != [c for _, c, _ in second]  # ... other colours
    assert len(set(styles)) == config.num_part_types  # no two part types look alike
    looks = {tuple(sorted(styles[t] for t in combo)) for combo in combos}
    assert len(looks) == config.num_classes
    standard = [part_type_style(t) for t in range(config.num_part_types)]
    changed = [t for t in range(config.num_part_types) if styles[t] != standard[t]]
    assert changed and set(changed) <= set(combos[1]) - set(combos[0])
    ds = PlantedParts(config, "train")
    for i in range(1, len(ds), config.num_classes):  # class 1: the pixel at each part has the new colour
        for part, x, y in ds.keypoints(i).tolist():
            pixel = np.asarray(ds.image(i))[int(y), int(x)].astype(int)
            distances = {name: np.abs(pixel - c).max() for name, c in COLOURS.items()}
            assert min(distances, key=distances.get) == styles[int(part)][1]


def test_shortcut_variant_background_alone_predicts_the_class():
    """A nearest-centroid rule on the mean colour of the whole image: near chance on standard, perfect here."""
    accuracy = {}
    for variant in ("standard", "shortcut"):
        config = PlantedConfig(variant=variant)
        train, test = PlantedParts(config, "train"), PlantedParts(config, "test")
        x, y = _mean_colours(train), np.array(train.targets)
        centroids = np.stack([x[y == c].mean(0) for c in range(config.num_classes)])
        xt, yt = _mean_colours(test), np.array(test.targets)
        guess = np.linalg.norm(xt[:, None] - centroids[None], axis=-1).argmin(1)
        accuracy[variant] = float((guess == yt).mean())
    assert accuracy["shortcut"] == 1.0 and accuracy["standard"] < 0.6, accuracy
    config = PlantedConfig(variant="shortcut")
    assert len({class_background(config, c) for c in range(config.num_classes)}) == config.num_classes
    ood, plain = PlantedParts(config, "ood"), PlantedParts(PlantedConfig(), "ood")
    assert all(ood.image(i).tobytes() == plain.image(i).tobytes() for i in range(5))  # no class, no tint


def test_deconfounded_split_keeps_test_layouts_and_breaks_the_background_shortcut():
    """The deconfounded split is the test split with the background colour of a class drawn at random: the same
    parts at the same places, the nearest-background-centroid rule falls to chance, and outside the shortcut
    variant it is the test split byte for byte."""
    config = PlantedConfig(variant="shortcut")
    train, test, shifted = (PlantedParts(config, s) for s in ("train", "test", "deconfounded"))
    assert len(shifted) == len(test) and shifted.targets == test.targets
    for i in range(0, len(test), 7):
        assert torch.equal(shifted.keypoints(i), test.keypoints(i))
    drawn = np.array([deconfounded_background_class(config, "deconfounded", i) for i in range(len(shifted))])
    assert len(set(drawn.tolist())) == config.num_classes  # every colour is used ...
    assert (drawn != np.array(shifted.targets)).mean() > 0.6  # ... and mostly not the class's own
    x, y = _mean_colours(train), np.array(train.targets)
    centroids = np.stack([x[y == c].mean(0) for c in range(config.num_classes)])
    guess = np.linalg.norm(_mean_colours(shifted)[:, None] - centroids[None], axis=-1).argmin(1)
    assert float((guess == drawn).mean()) > 0.9  # the colour follows the drawn class ...
    assert float((guess == np.array(shifted.targets)).mean()) < 0.4  # ... not the image's class
    control = PlantedConfig(variant="unconfounded")  # the clean control: its test split is this split
    assert all(PlantedParts(control, "test").image(i).tobytes() == shifted.image(i).tobytes() for i in range(0, 120, 11))
    guess = np.linalg.norm(_mean_colours(PlantedParts(control, "train"))[:, None] - centroids[None], axis=-1).argmin(1)
    assert float((guess == y).mean()) < 0.4  # its training backgrounds do not predict the class either
    plain = PlantedConfig()
    assert all(PlantedParts(plain, "deconfounded").image(i).tobytes() == PlantedParts(plain, "test").image(i).tobytes()
               for i in range(4))


def test_twins_variant_draws_two_part_types_alike_and_keeps_classes_apart():
    config = PlantedConfig(variant="twins")
    a, b = twin_part_types(config)
    styles = part_styles(config)
    assert styles[a] == styles[b] and len(set(styles)) == config.num_part_types - 1
    ds = PlantedParts(config, "train")
    assert ds.part_names[b] == ds.part_names[a] + " (twin)" and len(set(ds.part_names)) == config.num_part_types
    looks = {tuple(sorted(styles[t] for t in combo)) for combo in ds.combos}
    assert len(looks) == config.num_classes
    seen = 0
    for i in range(len(ds)):  # both twins are drawn in the colour of type a
        for part, x, y in ds.keypoints(i).tolist():
            if int(part) in (a, b):
                pixel = np.asarray(ds.image(i))[int(y), int(x)].astype(int)
                assert np.abs(pixel - COLOURS[styles[a][1]]).max() <= 50
                seen += int(part) == b
    assert seen > 10  # the twin really occurs
    with pytest.raises(ValueError, match="twins"):
        part_styles(PlantedConfig(variant="twins", num_part_types=1, parts_per_class=1, num_classes=1))
