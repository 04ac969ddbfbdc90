"""One self-contained HTML report of a trained PIP-Net (paper Figures 2, 3, 4 and the scoring sheet).

The report is a single file: every picture is embedded as a base64 `data:` URI, the CSS is inline, there
is no script and no external reference, so it can be mailed or archived as is. The template is
`pipnet/explanation/templates/report.html.j2` (Jinja2, autoescaped); this module only prepares what it shows.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from pipnet.evaluation import metrics as M
from pipnet.train.diagnostics import Finding
from pipnet.explanation.explain import ImageExplanation, scoring_sheet
from pipnet.model import PIPNet
from pipnet.evaluation.projection import Projection
from pipnet.evaluation.quality.verdict import verdicts
from pipnet.explanation.render.png import OriginalImages, RawImageDataset, explanation_figure, prototype_row, sparsity_curve
from pipnet.core.utils import atomic_write

__all__ = ["SECTIONS", "gallery_notes", "quality_rows", "render_report", "write_report"]

# Known sections of explained images: (title, what a newcomer should look for).
SECTIONS: dict[str, tuple[str, str]] = {
    "test": (
        "Explained test images",
        "For each image, its top classes with their scores. Each row below a class is one prototype found in "
        "the image: the box marks where, p is how strongly it is present (0 to 1), w its weight for the class, "
        "and p·w its contribution. The contributions add up exactly to the class score. Check that the boxed "
        "patch looks like the prototype's typical patches to its right: if it does not, the prototype fires on "
        "something you would not expect.",
    ),
    "ood": (
        "Out-of-distribution images",
        "Images from outside the training classes. PIP-Net should find few of its prototypes in them, so every "
        "class score is near zero, or the model abstains (no prototype present, no prediction). A clearly "
        "positive score here means the model recognised a familiar part: look at which patch it boxed.",
    ),
    "multi": (
        "Multi-object images",
        "Images that show several objects. Each class is scored from its own prototypes, so several classes "
        "can get high scores at once; their boxes should land on different objects.",
    ),
}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("pipnet.explanation", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def data_uri(image: Image.Image | bytes, fmt: str = "png") -> str:
    """A `data:` URI of a PIL image (encoded as `fmt`: png, or jpeg for photos) or of PNG bytes."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
        image = buffer.getvalue()
    return f"data:image/{fmt};base64," + base64.b64encode(image).decode("ascii")


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def metric_rows(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested metrics (`ood`, `purity`, ...) into (name, formatted value) rows; skips matrices."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(metric_rows(value, prefix=f"{name} / "))
        elif isinstance(value, (list, tuple)):
            continue  # the confusion matrix is too big for a summary table
        else:
            rows.append((name, _format(value)))
    return rows


def quality_rows(quality: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The `quality` block's summary for the metrics table (the per-prototype numbers go on the cards)."""
    if not quality:
        return []
    rows = []
    consistency = quality.get("consistency")
    if "consistency" in quality:
        rows.append(("quality / consistency", "n/a (no part keypoints)" if not consistency else
                     f"{_format(consistency.get('score'))} ({consistency.get('consistent')} of "
                     f"{consistency.get('num_prototypes')} prototypes consistent)"))
    if "stability" in quality:
        stability = quality.get("stability")
        rows.append(("quality / stability", "n/a (no part keypoints)" if not stability else _format(stability.get("score"))))
    for key, what in (("duplicates", "pairs of duplicate prototypes"), ("everywhere", "prototypes present everywhere")):
        if quality.get(key):
            rows.append((f"quality / {key}", f"{quality[key].get('count')} {what}"))
    dominant = (quality.get("sensitivity") or {}).get("dominant")
    if dominant is not None:
        counts: dict[str, int] = {}
        for aspect in dominant.values():
            counts[aspect or "none stands out"] = counts.get(aspect or "none stands out", 0) + 1
        rows.append(("quality / sensitivity (prototypes mostly about)",
                     ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no prototype"))
    return rows


def _summary(model: PIPNet, used: list[int]) -> list[tuple[str, str]]:
    names = model.config.class_names
    classes = str(model.num_classes)
    if names:
        classes += ": " + ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    return [
        ("backbone", model.config.describe_backbone()),
        ("input size", f"{model.config.image_size} x {model.config.image_size}"),
        ("classes", classes),
        ("prototypes", str(model.num_prototypes)),
        ("prototypes used (relevant weight to some class)", str(len(used))),
        ("disabled prototypes", str(len(model.config.disabled_prototypes))),
        ("sparsity ratio (weights <= 1e-3)", f"{M.sparsity_ratio(model.classifier_weights().detach()):.4f}"),
    ]


def _explained(
    item: tuple, projection: Projection | None, dataset: RawImageDataset | None
) -> dict[str, Any]:
    explanation, image, _, *rest = item  # (explanation, image, section[, verdict])
    verdict = rest[0] if rest else None
    classes = [
        {
            "name": c.class_name,
            "score": f"{c.score:.3f}",
            "count": len(c.evidence),
            "top": ", ".join(
                f"#{e.prototype} ({e.presence:.2f} × {e.weight:.2f} = {e.evidence:.3f})" for e in c.evidence[:5]
            ),
        }
        for c in explanation.top_classes
    ]
    return {
        "id": explanation.image_id,
        "abstained": explanation.abstained,
        "predicted": explanation.top_classes[0].class_name if not explanation.abstained else None,
        "verdict": verdict.sentence if verdict is not None else None,
        "figure": data_uri(explanation_figure(explanation, image, projection, dataset, verdict=verdict), "jpeg"),
        "classes": classes,
    }


def gallery_notes(prototype: int, projection: Projection | None, metrics: Mapping[str, Any] | None) -> list[str]:
    """Plain-words warnings shown beside a prototype's gallery row (present everywhere; ties that decided it)."""
    notes = []
    everywhere = (metrics or {}).get("everywhere") or {}
    carded = str(prototype) in (((metrics or {}).get("quality") or {}).get("everywhere") or {}).get("prototypes", {})
    if prototype in (everywhere.get("prototypes") or []) and not carded:  # else the card says it, with its shares
        notes.append(f"present everywhere: p > {everywhere['presence']:g} on at least {everywhere['share']:.0%} of the "
                     "training images of every class, so it tells the classes apart little")
    if projection is not None and bool(projection.tied[prototype]):
        notes.append(f"tie: its {projection.k}th and next-best images score the same, so the row's last "
                     "image was picked by image order")
    return notes


def render_report(
    *,
    model: PIPNet,
    metrics: Mapping[str, Any] | Any | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    projection: Projection | None = None,
    projection_dataset: RawImageDataset | None = None,
    explanations: Sequence[tuple[ImageExplanation, Image.Image, str]] = (),
    title: str = "PIP-Net report",
    gallery_k: int = 10,
    patch_px: int = 64,
    edits: Sequence[Mapping[str, Any]] = (),
    diagnostics: Sequence[Finding] = (),
) -> str:
    """The report as one HTML string.

    Args:
        model: the trained PIP-Net (only read).
        metrics: `Metrics.to_dict()` (or a `Metrics`), shown as a table; nested OoD and purity included.
        history: per-epoch rows of the training log, for the sparsity curve (see `sparsity_curve`).
        projection: [`pipnet.evaluation.projection.project`][pipnet.evaluation.projection.project] of `projection_dataset`, for the prototype gallery.
        projection_dataset: the projected data set, with `raw_image(index)`.
        explanations: (explanation, image to draw on, section) triples; sections `test`, `ood` and
            `multi` get a title and a caption, any other name is shown under its own name.
        title: the page title.
        gallery_k: patches per prototype in the gallery.
        patch_px: side of a gallery patch.
        edits: the model's edit log (records of `edits.jsonl`), shown as a table when not empty.
        diagnostics: findings of `pipnet.train.diagnostics.diagnose`, shown in plain words.
    """
    if metrics is not None and hasattr(metrics, "to_dict"):
        metrics = metrics.to_dict()
    sheet = scoring_sheet(model)
    used = sheet.used_prototypes
    can_draw = projection is not None and projection_dataset is not None
    originals = OriginalImages(projection_dataset) if can_draw else None
    classes_of: dict[int, list[str]] = {}
    for c in sheet.classes:
        for e in c.prototypes:
            classes_of.setdefault(e.prototype, []).append(c.class_name)
    cards = verdicts((metrics or {}).get("quality"), num_classes=model.num_classes)

    def row(p: int) -> str | None:
        if not can_draw:
            return None
        picture = prototype_row(projection, projection_dataset, p, gallery_k, patch_px, label=False, originals=originals)
        return data_uri(picture, "jpeg")

    gallery = [
        {
            "id": p,
            "row": row(p),
            "max_presence": f"{float(projection.max_presence[p]):.3f}" if projection is not None else "n/a",
            "classes": ", ".join(classes_of.get(p, [])),
            "notes": gallery_notes(p, projection, metrics),
            "card": cards.get(p, []),
        }
        for p in used
    ]
    sections: dict[str, dict[str, Any]] = {}
    for item in explanations:
        key = item[2]
        heading, caption = SECTIONS.get(key, (key, ""))
        section = sections.setdefault(key, {"key": key, "title": heading, "caption": caption, "items": []})
        section["items"].append(_explained(item, projection, projection_dataset if can_draw else None))
    return _ENV.get_template("report.html.j2").render(
        title=title,
        summary=_summary(model, used),
        metrics=(metric_rows({k: v for k, v in metrics.items() if k != "quality"}) + quality_rows(metrics.get("quality"))
                 if metrics else []),
        has_cards=bool(cards),
        curve=data_uri(sparsity_curve(history)) if history else None,
        gallery=gallery,
        gallery_k=min(gallery_k, projection.k) if projection is not None else gallery_k,
        sheet=sheet.classes,
        sections=list(sections.values()),
        edits=[_edit_row(r) for r in edits],
        diagnostics=list(diagnostics),
    )


def _edit_row(r: Mapping[str, Any]) -> dict[str, str]:
    what = ", ".join(f"#{p}" for p in r.get("prototypes", [])) or "-"
    if r.get("class_index") is not None:
        what += f" for class {r['class_index']}"
    if r.get("action") == "refit" and r.get("accuracy_refit") is not None:
        what += (f": test accuracy {r['accuracy_before']:.1%} before, {r['accuracy_switched_off']:.1%} switched off, "
                 f"{r['accuracy_refit']:.1%} refit")  # fmt: skip
    return {"time": str(r.get("time", "")), "user": str(r.get("user") or ""), "action": str(r.get("action", "")),
            "what": what, "reason": str(r.get("reason") or "")}  # fmt: skip


def write_report(path: str | Path, **report: Any) -> Path:
    """Render the report (keyword arguments of `render_report`) and write it atomically to `path`."""
    path = Path(path)
    html = render_report(**report)
    with atomic_write(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
