"""The report card on the planted variants, with a model built from the data's own part styles (known answers).

The model knows each planted part type's colour exactly (as a perfectly trained PIP-Net would): prototype t
fires where the pixels have part type t's colour, with weight on the classes that contain t. Extra
prototypes encode the things the variants plant: the class-tinted backgrounds of ``shortcut`` and a
grey-background detector. The data decide the answers:

- ``standard``: every part type has its own colour, so every part prototype is consistent and stable, no
  two are duplicates, and only the grey-background prototype is present everywhere;
- ``twins``: two part types look alike, so their two prototypes are one detector (a duplicate pair) and at
  least one of them lands on the other twin often enough to be inconsistent;
- ``shortcut``: the background-tint prototypes (a deliberate shortcut) are inconsistent, the part
  prototypes stay consistent, and a prototype tied to one class is never "everywhere".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipnet.model.backbones import Backbone, ParameterGroups
from pipnet.data import EvalDataset, PlantedConfig, PlantedParts
from pipnet.data.augment import IMAGENET_MEAN, IMAGENET_STD
from pipnet.data.planted import COLOURS, class_background, twin_part_types
from pipnet.model import PIPNet, PIPNetConfig
from pipnet.evaluation.quality import quality_card

S = 224  # 32-pixel blocks every 7 pixels: a 28 x 28 grid whose cells are exactly the faithful 32 x 32 patches
GREY = None  # the kind of a detector of unsaturated, not white, pixels (the planted backgrounds)


class StyleBackbone(Backbone):
    """Per pixel, how well its colour matches each prototype's colour; per cell, the share of matching pixels.

    Logits: ``gain`` x the mean match over the cell's 32 x 32 block; a last "nothing" channel holds
    ``gain * floor`` so that a prototype is present (> 0.5) only where it covers more than ``floor`` of a block.
    """

    def __init__(self, colours: list[tuple[int, int, int] | None], spread: float = 40.0, gain: float = 30.0,
                 floor: float = 0.15):
        super().__init__()
        self.num_features = len(colours) + 1
        self.groups = ParameterGroups((), (), ())
        self.grey = [c is GREY for c in colours]
        self.register_buffer("centres", torch.tensor([c or (0, 0, 0) for c in colours], dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.spread, self.gain, self.floor = spread, gain, floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x * self.std + self.mean  # (B, 3, S, S) in 0..255
        d2 = ((rgb[:, None] - self.centres[None, :, :, None, None]) ** 2).sum(2)  # (B, P, S, S)
        saturation = (rgb.amax(1) - rgb.amin(1))[:, None]  # (B, 1, S, S)
        dim = (rgb.amax(1) < 200)[:, None]  # grey, not white (white is a part colour)
        grey = torch.tensor(self.grey, device=x.device)[None, :, None, None]
        match = torch.where(grey, torch.exp(-saturation**2 / (2 * 25.0**2)) * dim, torch.exp(-d2 / (2 * self.spread**2)))
        cover = F.avg_pool2d(match, 32, stride=7)  # (B, P, 28, 28)
        nothing = torch.full_like(cover[:, :1], self.floor)
        return self.gain * torch.cat([cover, nothing], dim=1)


NEVER = (-999, -999, -999)  # a colour no pixel has: a prototype that never fires


def style_model(dataset: PlantedParts, extra: list[tuple[tuple[int, int, int] | None, list[int]]], merge: tuple[int, int] | None = None):
    """A PIP-Net whose prototype t detects part type t's colour (weight on the classes containing t), then
    one prototype per ``(colour, classes)`` of ``extra``, then the unused "nothing" channel. ``merge = (a, b)``:
    one prototype for both (a's, weighted for the classes of a and of b); b's never fires."""
    colours = [COLOURS[style[1]] for style in dataset.styles] + [c for c, _ in extra]
    if merge is not None:
        colours[merge[1]] = NEVER
    backbone = StyleBackbone(colours)
    model = PIPNet(PIPNetConfig(backbone="test", num_classes=len(dataset.combos), image_size=S), backbone=backbone)
    weight = torch.zeros(model.num_classes, model.num_prototypes)
    for c, combo in enumerate(dataset.combos):
        weight[c, list(combo)] = 1.0
        if merge is not None and merge[1] in combo:
            weight[c, merge[0]], weight[c, merge[1]] = 1.0, 0.0
    for k, (_, classes) in enumerate(extra):
        weight[classes, len(dataset.styles) + k] = 1.0
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
    return model


def card_of(variant: str, extra=(), merge=None):
    config = PlantedConfig(variant=variant, train_per_class=10, test_per_class=1, ood_images=0, multi_images=0)
    source = PlantedParts(config, "train")
    model = style_model(source, list(extra), merge)
    return quality_card(model, EvalDataset(source, S), batch_size=20), source


def test_standard_every_part_prototype_is_consistent_stable_and_unique():
    card, source = card_of("standard", extra=[(GREY, list(range(6)))])
    parts = [str(t) for t in range(source.num_parts)]
    cons, stab = card["consistency"], card["stability"]
    for t in parts:
        assert cons["per_prototype"][t]["part"] == source.part_names[int(t)]
        assert cons["per_prototype"][t]["score"] >= 0.8, (t, cons["per_prototype"][t])
        assert stab["per_prototype"][t] >= 0.9, (t, stab["per_prototype"][t])
    assert card["duplicates"]["count"] == 0
    assert list(card["everywhere"]["prototypes"]) == ["8"]  # the grey-background prototype, only
    assert card["everywhere"]["prototypes"]["8"]["share_min"] >= 0.9


def test_twins_their_prototypes_are_duplicates():
    card, source = card_of("twins")
    a, b = twin_part_types(source.config)
    assert [(p["a"], p["b"]) for p in card["duplicates"]["pairs"]] == [(a, b)]
    assert card["duplicates"]["pairs"][0]["share"] == 1.0
    # Two copies of one detector split the softmax (presence ~0.5 each): neither is ever present above 0.5,
    # so neither gets a consistency score, while every other part prototype stays consistent.
    per = card["consistency"]["per_prototype"]
    assert str(a) not in per and str(b) not in per and card["consistency"]["unscored"] == 2
    assert all(per[str(t)]["score"] >= 0.8 for t in range(source.num_parts) if t not in (a, b))


def test_twins_one_prototype_for_both_is_inconsistent():
    """One prototype for the shared look, weighted for the classes of both twins: it lands on part a in
    a's classes and on part b in b's, so no single annotated part reaches 0.8 (at most 20 of 30 images)."""
    config = PlantedConfig(variant="twins")
    a, b = twin_part_types(config)
    card, source = card_of("twins", merge=(a, b))
    entry = card["consistency"]["per_prototype"][str(a)]
    assert entry["score"] <= 2 / 3 + 1e-9, entry
    assert card["duplicates"]["count"] == 0
    standard, _ = card_of("standard", merge=(a, b))  # the same model on the standard data: red is part a alone
    assert standard["consistency"]["per_prototype"][str(a)]["score"] >= 0.8


def test_shortcut_background_prototypes_are_inconsistent_and_part_prototypes_are_not():
    config = PlantedConfig(variant="shortcut")
    tints = [(tuple(round(0.3 * 120 + 0.7 * v) for v in class_background(config, k)), [k]) for k in range(6)]
    card, source = card_of("shortcut", extra=tints)
    per = card["consistency"]["per_prototype"]
    background = [str(source.num_parts + k) for k in range(6)]
    assert all(per[p]["score"] < 0.5 for p in background), {p: per[p] for p in background}
    assert all(per[str(t)]["score"] >= 0.8 for t in range(source.num_parts))
    assert card["consistency"]["consistent"] == source.num_parts
    assert card["everywhere"]["count"] == 0  # each tint prototype fires on its own class only


def test_colour_variant_the_prototypes_that_tell_class_1_from_class_0_are_about_colour():
    """On ``colour`` the parts of class 1 that class 0 lacks have class 0's shapes and textures and a far hue:
    whatever tells the two classes apart is colour, and the card must say so for those prototypes."""
    card, source = card_of("colour")
    combos = [set(c) for c in source.combos]
    recoloured = sorted(combos[1] - combos[0])
    sens = card["sensitivity"]
    assert recoloured and sens is not None
    for t in recoloured:
        drops = sens["prototypes"][str(t)]
        assert sens["dominant"][str(t)] in ("hue", "saturation"), (t, drops)
        assert drops["hue"] >= 0.5 and drops["texture"] < 0.3, (t, drops)
