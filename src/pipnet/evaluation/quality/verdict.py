"""Plain-language verdicts on each prototype, read from the `quality` block of `metrics.json`.

The report card's numbers ([`pipnet.evaluation.quality.quality_card`][pipnet.evaluation.quality.quality_card]) turned into short lines a reader can act
on, each line carrying the numbers it rests on ("fires on 98% of the images of every class: likely
background", "mostly about colour: presence drops 80% when the hue is turned 180 degrees"). Nothing is
computed here beyond formatting and the thresholds the blocks themselves record; a block that is missing
or null (older `metrics.json` files have no `quality`; data without part keypoints has no consistency
or stability) simply adds no line.

Lines come in a fixed order, the most telling first: shortcut suspect, present everywhere, duplicate,
consistency, stability, then what the prototype looks at (sensitivity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["verdicts"]

# How each perturbation is named in a verdict: (aspect, what was done to the image).
_ASPECT = {
    "hue": ("colour", "when the hue is turned {hue}"),
    "saturation": ("colour", "when the image is made gray"),
    "contrast": ("contrast", "when the contrast is scaled by {contrast}"),
    "texture": ("texture", "when the image is blurred"),
    "shape": ("shape", "when the image's tiles are shuffled"),
}
_ORDER = ("hue", "saturation", "contrast", "texture", "shape")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _param(params: Mapping[str, Any], key: str, default: float) -> float:
    value = _number(params.get(key))
    return default if value is None else value


def _pct(value: float) -> str:
    return f"{value:.0%}"


def verdicts(quality: Mapping[str, Any] | None, *, num_classes: int | None = None) -> dict[int, list[str]]:
    """Plain-language lines per prototype, each with its numbers.

    Args:
        quality: the `quality` block (see [`pipnet.evaluation.quality.quality_card`][pipnet.evaluation.quality.quality_card]); None or missing keys
            are fine.
        num_classes: the model's number of classes, to say "each of the 6 classes" (optional).

    Returns:
        prototype id -> lines, in increasing id; only prototypes that some block mentions.
    """
    quality = quality or {}
    lines: dict[int, list[str]] = {}

    def add(prototype: Any, line: str) -> None:
        lines.setdefault(int(prototype), []).append(line)

    for entry in quality.get("suspects") or []:  # the same bar as the suspect list's (SUSPICION_FLAG)
        score = _number((entry or {}).get("score"))
        if score is not None and score >= 0.5 and entry.get("prototype") is not None:
            add(entry["prototype"], f"shortcut suspect (score {score:.2f}): " + "; ".join(entry.get("reasons") or []))

    everywhere = (quality.get("everywhere") or {}).get("prototypes") or {}
    for p, entry in everywhere.items():
        share = _number((entry or {}).get("share_min"))
        per_class = [v for v in ((entry or {}).get("per_class") or []) if _number(v) is not None]
        classes = f"each of the {num_classes} classes" if num_classes else "every class"
        share_text = f"at least {_pct(share)}" if share is not None else "most"
        spread = f" (per class {_pct(min(per_class))} to {_pct(max(per_class))})" if per_class else ""
        add(p, f"fires on {share_text} of the images of {classes}{spread}: carries no class information, "
               "likely background or a colour")

    for pair in (quality.get("duplicates") or {}).get("pairs") or []:
        a, b = pair.get("a"), pair.get("b")
        if a is None or b is None:
            continue
        overlap, both, either = (_number(pair.get(k)) for k in ("overlap", "both", "either"))
        if overlap is not None and both is not None and either is not None:
            suffix = (f": both fire at the same place in {_pct(overlap)} of the images where either is present "
                      f"({int(both)} of {int(either)})")
        else:  # other numbers, as they come
            numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in pair.items() if k not in ("a", "b") and _number(v) is not None)
            suffix = f" ({numbers})" if numbers else ""
        add(a, f"duplicate of prototype {int(b)}{suffix}")
        add(b, f"duplicate of prototype {int(a)}{suffix}")

    consistency = quality.get("consistency") or {}
    threshold = _number(consistency.get("threshold"))
    for p, entry in (consistency.get("per_prototype") or {}).items():
        score, part = _number((entry or {}).get("score")), (entry or {}).get("part")
        if score is None:
            continue
        where = f"part '{part}'" if part else "one part"
        bar = f" (threshold {_pct(threshold)})" if threshold is not None else ""
        if threshold is None or score >= threshold:
            add(p, f"consistent: on {where} in {_pct(score)} of its images{bar}")
        else:
            most = f"its most frequent part, '{part}'," if part else "its most frequent part"
            add(p, f"not consistent: {most} in only {_pct(score)} of its images{bar}")

    for p, score in ((quality.get("stability") or {}).get("per_prototype") or {}).items():
        score = _number(score)
        if score is not None:
            add(p, f"stability {_pct(score)}: the same part with and without added noise in {_pct(score)} of its images")

    sensitivity = quality.get("sensitivity") or {}
    params = sensitivity.get("params") or {}
    dominant = sensitivity.get("dominant") or {}
    words = {"hue": f"{abs(_param(params, 'hue_shift', 0.5)) * 360:g} degrees",
             "contrast": f"{_param(params, 'contrast_factor', 0.5):g}"}
    min_drop = _param(params, "dominant_drop", 0.3)
    for p, drops in (sensitivity.get("prototypes") or {}).items():
        known = {k: _number(v) for k, v in (drops or {}).items() if _number(v) is not None}
        if not known:
            add(p, "what it looks at is unknown: not present (p >= 0.1) on its top images")
            continue
        main = dominant.get(str(p), dominant.get(p))
        numbers = ", ".join(f"{k} {_pct(known[k])}" for k in _ORDER if k in known)
        if main in known:
            aspect, action = _ASPECT.get(main, (main, f"under '{main}'"))
            add(p, f"mostly about {aspect}: presence drops {_pct(known[main])} {action.format(**words)} "
                   f"(drops: {numbers})")
        elif max(known.values()) < min_drop:
            add(p, f"robust to every perturbation tried: no drop reaches {_pct(min_drop)} (drops: {numbers})")
        else:
            strong = [k for k in _ORDER if k in known and known[k] >= min_drop]
            add(p, f"depends on several aspects at once ({', '.join(strong)}): no single one stands out (drops: {numbers})")
    return dict(sorted(lines.items()))


def _fmt(value: Any) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    return str(int(number)) if number == int(number) and abs(number) >= 1 else f"{number:.2f}"
