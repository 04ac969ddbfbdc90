"""Plain-language verdicts from a hand-written ``quality`` block: every line and its numbers."""

from __future__ import annotations

import json

import torch

from pipnet.evaluation.quality.verdict import verdicts

ZERO = {"hue": 0.0, "contrast": 0.0, "saturation": 0.0, "texture": 0.0, "shape": 0.0}


def block() -> dict:
    return {
        "consistency": {"score": 0.5, "consistent": 1, "num_prototypes": 2, "threshold": 0.8,
                        "per_prototype": {"3": {"score": 0.92, "part": "beak"}, "7": {"score": 0.4, "part": "wing"}},
                        "params": {}},
        "stability": {"score": 0.7, "per_prototype": {"3": 0.85, "7": 0.55}, "params": {}},
        "duplicates": {"rule": "words", "count": 1, "pairs": [{"a": 7, "b": 9, "overlap": 0.95, "both": 38, "either": 40}]},
        "everywhere": {"rule": "words", "count": 1,
                       "prototypes": {"12": {"share_min": 0.98, "per_class": [0.98, 1.0, 0.99]}}},
        "sensitivity": {
            "perturbations": {},
            "prototypes": {
                "3": {**ZERO, "hue": 0.8, "saturation": 0.7, "contrast": 0.2},
                "7": {**ZERO, "shape": 0.05},
                "9": {**ZERO, "hue": 0.6, "texture": 0.65},
                "12": {k: None for k in ZERO},
            },
            "dominant": {"3": "hue", "7": None, "9": None, "12": None},
            "params": {"hue_shift": 0.5, "contrast_factor": 0.5, "dominant_drop": 0.3},
        },
    }


def test_every_line_with_its_numbers():
    v = verdicts(json.loads(json.dumps(block())), num_classes=3)  # as read back from metrics.json
    assert list(v) == [3, 7, 9, 12]
    assert v[3] == [
        "consistent: on part 'beak' in 92% of its images (threshold 80%)",
        "stability 85%: the same part with and without added noise in 85% of its images",
        "mostly about colour: presence drops 80% when the hue is turned 180 degrees "
        "(drops: hue 80%, saturation 70%, contrast 20%, texture 0%, shape 0%)",
    ]
    assert v[7][0] == ("duplicate of prototype 9: both fire at the same place in 95% of the images where either is "
                       "present (38 of 40)")
    assert v[7][1] == "not consistent: its most frequent part, 'wing', in only 40% of its images (threshold 80%)"
    assert v[7][3].startswith("robust to every perturbation tried: no drop reaches 30% (drops: hue 0%")
    assert v[9][0].startswith("duplicate of prototype 7: both fire at the same place in 95%")
    assert v[9][1].startswith("depends on several aspects at once (hue, texture)")
    assert v[12] == [
        "fires on at least 98% of the images of each of the 3 classes (per class 98% to 100%): carries no class "
        "information, likely background or a colour",
        "what it looks at is unknown: not present (p >= 0.1) on its top images",
    ]


def test_missing_and_null_blocks_add_nothing():
    assert verdicts(None) == {}
    assert verdicts({}) == {}
    older = {"consistency": None, "stability": None, "duplicates": {"pairs": []}, "everywhere": {"prototypes": {}}}
    assert verdicts(older) == {}
    odd = verdicts({"duplicates": {"pairs": [{"a": 1, "b": 2, "distance": 0.5}]}})  # unknown numbers, as they come
    assert odd == {1: ["duplicate of prototype 2 (distance 0.50)"], 2: ["duplicate of prototype 1 (distance 0.50)"]}
    only = {"sensitivity": {"prototypes": {"4": {**ZERO, "saturation": 0.9}}, "dominant": {"4": "saturation"}}}
    assert verdicts(only) == {4: ["mostly about colour: presence drops 90% when the image is made gray "
                                  "(drops: hue 0%, saturation 90%, contrast 0%, texture 0%, shape 0%)"]}
    # without num_classes or per-class shares the everywhere line still gives the number
    assert verdicts({"everywhere": {"prototypes": {"2": {"share_min": 0.95}}}})[2][0].startswith(
        "fires on at least 95% of the images of every class: ")


def test_report_shows_a_card_beside_each_carded_gallery_row():
    from eval_helpers import logit_model, set_weights

    from pipnet.explanation.render.html import render_report

    model = logit_model(13, num_classes=3)
    weights = torch.zeros(3, 13)
    weights[0, 3], weights[1, 7], weights[2, 9], weights[2, 12], weights[0, 5] = 1.0, 1.0, 1.0, 1.0, 1.0
    set_weights(model, weights.tolist())
    metrics = {"top1_accuracy": 0.5, "quality": block(),
               "everywhere": {"prototypes": [12], "share": 0.9, "presence": 0.5, "num_used": 5}}
    html = render_report(model=model, metrics=metrics)
    row = html[html.index('<tr id="prototype-3">'):]
    row = row[: row.index("</tr>")]
    assert "<th>report card</th>" in html
    assert "<li>consistent: on part &#39;beak&#39; in 92% of its images (threshold 80%)</li>" in row
    assert "mostly about colour: presence drops 80% when the hue is turned 180 degrees" in row
    assert "not carded" in html[html.index('<tr id="prototype-5">'):]  # used, but in no block
    # the card says "fires on ..." for 12, so the older present-everywhere note is not repeated
    assert "fires on at least 98%" in html and "present everywhere: p &gt;" not in html
    # the metrics table summarises the block; the per-prototype numbers are on the cards only
    assert "quality / consistency" in html and "1 of 2 prototypes consistent" in html
    assert "quality / duplicates</td><td class=\"num\">1 pairs of duplicate prototypes" in html
    assert "quality / sensitivity (prototypes mostly about)</td><td class=\"num\">hue: 1, none stands out: 3" in html
    assert "per_prototype" not in html and "sensitivity / prototypes" not in html
    plain = render_report(model=model, metrics={"top1_accuracy": 0.5})  # an older metrics.json: no card column
    assert "report card" not in plain and "present everywhere" not in plain
