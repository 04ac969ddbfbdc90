"""What the page shows, as plain dicts for the template: the explanation, the gallery, the scoring sheet.

Pictures of the image on show (the evidence boxed on it, each prototype's heat map) are embedded as
`data:` URIs and drawn once per image; the prototypes' typical patches are separate PNGs served by the app.
"""

from __future__ import annotations

import time
from typing import Any

from PIL import Image

from pipnet.explanation.explain import ClassExplanation, ImageExplanation, class_name, scoring_sheet
from pipnet.model.patches import scale_box
from pipnet.evaluation.quality.verdict import verdicts
from pipnet.train.repair import RepairSettings
from pipnet.use.serve.repairing import verdicts_before_after
from pipnet.explanation.render.html import data_uri
from pipnet.explanation.render.png import PALETTE, draw_boxes, fit, heatmap_overlay
from pipnet.use.serve.session import Explorer, Visitor

__all__ = ["page_context"]

THUMB_PX = 150
MAX_EVIDENCE = 6  # evidence rows shown per class; the rest are summed in one line


def page_context(explorer: Explorer, visitor: Visitor) -> dict[str, Any]:
    """Everything `index.html.j2` shows to one visitor (call with `visitor.lock` held)."""
    model, editor = visitor.editor.model, visitor.editor
    sheet = scoring_sheet(editor.original)  # the unedited sheet: edited entries stay visible, marked off
    return {
        "model": {
            "name": explorer.model_dir.name,
            "path": str(explorer.model_dir),
            "backbone": model.config.describe_backbone(),
            "image_size": model.config.image_size,
            "num_classes": model.num_classes,
            "num_prototypes": model.num_prototypes,
            "used": len(sheet.used_prototypes),
            "used_now": len(model.used_prototypes()),
        },
        "data": _data(explorer),
        "accuracy": _accuracy(explorer, visitor),
        "edits": _edits(visitor),
        "shown": _shown(explorer, visitor),
        "gallery": _gallery(explorer, visitor, sheet),
        "sheet": _sheet(visitor, sheet),
        "class_names": [class_name(model, c) for c in range(model.num_classes)],
        "suggested_name": explorer.suggested_name(),
        "refit_name": explorer.suggested_name("refit"),
        "can_refit": explorer.data is not None and explorer.data.test is not None,
        "edit_log": _edit_log(explorer, visitor),
        "refit_running": _refit_running(visitor),
        "marks": [{"prototype": p, "mark": m} for p, m in sorted(visitor.marks.items())],
        "repair": _repair(explorer, visitor),
        "thresholds": _thresholds(explorer),
        "out_dir": str(explorer.out_dir),
        "has_patches": explorer.data is not None,
        "has_cards": explorer.quality is not None,
    }


def _data(explorer: Explorer) -> dict[str, Any] | None:
    if explorer.data is None:
        return None
    return {
        "config": str(explorer.data.config_path) if explorer.data.config_path else "given in Python",
        "source": explorer.data.config.source,
        "splits": [{"name": name, "size": len(ds)} for name, ds in explorer.data.picker.items()],
        "projected": explorer.data.projection.num_images,
    }


def _accuracy(explorer: Explorer, visitor: Visitor) -> dict[str, Any] | None:
    metrics = explorer.accuracy(visitor)
    if metrics is None:
        return None
    before, after = metrics
    return {
        "before": f"{before.top1_accuracy:.1%}",
        "after": f"{after.top1_accuracy:.1%}",
        "change": f"{100 * (after.top1_accuracy - before.top1_accuracy):+.1f} points",
        "abstained_before": before.abstained,
        "abstained_after": after.abstained,
        "num_images": after.num_images,
        "edited": visitor.editor.edited,
    }


def _edits(visitor: Visitor) -> list[dict[str, Any]]:
    editor = visitor.editor
    rows = [{"prototype": p, "class_index": "", "what": "off for every class"} for p in editor.disabled]
    for (c, p), e in sorted(editor.class_edits.items()):
        what = f"off for class {e.class_name} (weight was {e.weight:.3f})"
        rows.append({"prototype": p, "class_index": c, "what": what})
    return rows


def _refit_running(visitor: Visitor) -> dict[str, Any] | None:
    if visitor.refit is None:
        return None
    path, started = visitor.refit
    return {"kind": visitor.refit_kind, "path": str(path), "seconds": f"{time.monotonic() - started:.0f}"}


def _repair(explorer: Explorer, visitor: Visitor) -> dict[str, Any]:
    """The repair form's state (why it cannot run, if so) and the last repair's table and verdicts before/after."""
    data = explorer.data is not None and explorer.data.test is not None
    repaired = visitor.repaired
    return {
        "name": explorer.suggested_name("repaired"),
        "epochs": RepairSettings().epochs,
        "unavailable": None if data else "The repair needs the training and test images: start the page with --data RUN_OR_CONFIG.",
        "done": {"path": str(repaired.path), "lines": repaired.lines} if repaired is not None else None,
        "verdicts": verdicts_before_after(explorer, visitor),
    }


def _edit_log(explorer: Explorer, visitor: Visitor) -> list[dict[str, Any]]:
    """The loaded model's `edits.jsonl` followed by this session's edits, oldest first."""
    rows = []
    for r, session in [(r, False) for r in explorer.history] + [(r, True) for r in visitor.session_edits]:
        cls = r.get("class_index")
        what = ", ".join(f"#{p}" for p in r.get("prototypes", [])) or "-"
        if cls is not None:
            what += f" for class {class_name(explorer.model, int(cls))}"
        if r.get("action") == "refit" and r.get("accuracy_refit") is not None:
            what += (f": test accuracy {r['accuracy_before']:.1%} before, {r['accuracy_switched_off']:.1%} switched off, "
                     f"{r['accuracy_refit']:.1%} refit")  # fmt: skip
        rows.append({"time": r.get("time", ""), "user": r.get("user") or "", "action": r.get("action", ""),
                     "what": what, "reason": r.get("reason") or "", "session": session})  # fmt: skip
    return rows


def _thresholds(explorer: Explorer) -> dict[str, Any] | None:
    """The detector that gives the verdicts, or None when the model folder stores none."""
    d = explorer.predictor.detector
    return None if d is None else {"name": d.name, "tpr": f"{d.tpr:.0%}", "data": d.data, "precision": explorer.predictor.precision}


# ---- the image on show -----------------------------------------------------------------------------


def _shown(explorer: Explorer, visitor: Visitor) -> dict[str, Any] | None:
    pair = explorer.explanations(visitor)
    if pair is None:
        return None
    shown, (now, before) = visitor.shown, pair
    thumb = fit(shown.image, THUMB_PX)
    before_scores = {c.class_index: c.score for c in before.top_classes}
    now_scores = {c.class_index: c.score for c in now.top_classes}

    def overview() -> str:  # the predicted class's patches, in the palette colours of its rows
        big = fit(shown.image, 2 * THUMB_PX)
        top = now.top_classes[0].evidence[:MAX_EVIDENCE] if now.top_classes else []
        return data_uri(draw_boxes(big, [_box(ev.box, now, big) for ev in top]), "jpeg")

    return {
        "title": shown.title,
        "split": shown.split,
        "index": shown.index,
        "overview": visitor.cached(("overview", shown.serial, visitor.editor.version), overview, one_of_kind=True),
        "verdict": _verdict(now),
        "judgement": visitor.cached(("judgement", shown.serial, visitor.editor.version),
                                    lambda: _judgement(explorer, visitor, shown.x), one_of_kind=True),
        "verdict_before": _verdict(before),
        "changed": _verdict(now) != _verdict(before) or now_scores != before_scores,
        "classes": [_class(explorer, visitor, thumb, now, c, before_scores.get(c.class_index)) for c in now.top_classes],
    }


def _verdict(e: ImageExplanation) -> str:
    if e.abstained:
        return "no prediction: no prototype is present, every class scores 0"
    top = e.top_classes[0]
    return f"{top.class_name} (score {top.score:.3f})"


def _judgement(explorer: Explorer, visitor: Visitor, x) -> dict[str, str]:
    """The verdict on the image as the model now stands (the visitor's edits applied), from the same
    [Predictor][pipnet.Predictor] as `pipnet predict`: its kind and its sentence."""
    (decision,) = explorer.predictor.for_model(visitor.editor.model).decide(x[None])
    return {"kind": decision.verdict.kind, "sentence": decision.verdict.sentence}


def _box(box: tuple[int, int, int, int], e: ImageExplanation, thumb: Image.Image) -> tuple[int, int, int, int]:
    return scale_box(box, e.input_size, (thumb.height, thumb.width))


def _class(
    explorer: Explorer, visitor: Visitor, thumb: Image.Image, e: ImageExplanation, c: ClassExplanation, before: float | None
) -> dict[str, Any]:
    rows = []
    for n, ev in enumerate(c.evidence[:MAX_EVIDENCE]):
        boxed, heat = _pictures(visitor, thumb, e, ev.prototype, ev.box)
        rows.append(
            {
                "prototype": ev.prototype,
                "presence": f"{ev.presence:.3f}",
                "weight": f"{ev.weight:.3f}",
                "evidence": f"{ev.evidence:.3f}",
                "colour": "#%02x%02x%02x" % PALETTE[n % len(PALETTE)] if c is e.top_classes[0] else "#444",
                "boxed": boxed,
                "heat": heat,
            }
        )
    rest = c.evidence[MAX_EVIDENCE:]
    return {
        "index": c.class_index,
        "name": c.class_name,
        "score": f"{c.score:.3f}",
        "score_before": f"{before:.3f}" if before is not None and abs(before - c.score) > 1e-6 else None,
        "bias": f"{c.bias:.3f}" if c.bias else None,
        "count": len(c.evidence),
        "evidence": rows,
        "more": {"count": len(rest), "sum": f"{sum(r.evidence for r in rest):.3f}"} if rest else None,
    }


def _pictures(
    visitor: Visitor, thumb: Image.Image, e: ImageExplanation, prototype: int, box: tuple[int, ...]
) -> tuple[str, str]:
    """(image with the prototype's patch boxed, its heat map with the same box) as data URIs, cached per image."""

    def draw() -> tuple[str, str]:
        where, colour = [_box(box, e, thumb)], [(255, 230, 0)]
        boxed = draw_boxes(thumb, where, colour)
        heat = draw_boxes(heatmap_overlay(thumb, shown.maps[prototype]), where, colour)
        return data_uri(boxed, "jpeg"), data_uri(heat, "jpeg")

    shown = visitor.shown
    return visitor.cached(("pictures", shown.serial, prototype, tuple(box)), draw)


# ---- the model as a whole ----------------------------------------------------------------------------


def _gallery(explorer: Explorer, visitor: Visitor, sheet) -> list[dict[str, Any]]:
    editor = visitor.editor
    uses: dict[int, list[dict[str, Any]]] = {}
    for cls in sheet.classes:
        for entry in cls.prototypes:
            status = editor.status(entry.prototype, cls.class_index)
            uses.setdefault(entry.prototype, []).append(
                {"name": cls.class_name, "weight": f"{entry.weight:.2f}", "status": status}
            )
    projection = explorer.data.projection if explorer.data else None
    cards = verdicts(explorer.quality, num_classes=explorer.model.num_classes)  # metrics.json of the unedited model
    return [
        {
            "id": p,
            "status": editor.status(p),
            "max_presence": f"{float(projection.max_presence[p]):.3f}" if projection is not None else None,
            "classes": uses.get(p, []),
            "filter": " ".join([f"#{p}"] + [u["name"].lower() for u in uses.get(p, [])]),
            "card": cards.get(p, []),
            "mark": visitor.marks.get(p),
        }
        for p in sheet.used_prototypes
    ]


def _sheet(visitor: Visitor, sheet) -> list[dict[str, Any]]:
    status, rows = visitor.editor.status, []
    for cls in sheet.classes:
        entries = [
            {"prototype": e.prototype, "weight": f"{e.weight:.3f}", "status": status(e.prototype, cls.class_index)}
            for e in cls.prototypes
        ]
        rows.append(
            {
                "index": cls.class_index,
                "name": cls.class_name,
                "bias": f"{cls.bias:.3f}" if cls.bias else None,
                "entries": entries,
                "filter": " ".join([cls.class_name.lower()] + [f"#{e.prototype}" for e in cls.prototypes]),
            }
        )
    return rows
