"""``pipnet explain``: why a saved model decides what it does about some images (text, PNG and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from pipnet.cli.common import command_parser, inference_precision_args, model_args, out, resolve_precision

DESCRIPTION = "explain the predictions of a saved model for some images (text, PNG and JSON)"


def build_parser():
    """The parser of ``pipnet explain``."""
    parser = command_parser("explain", DESCRIPTION, model_args(), inference_precision_args())
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="folder for one PNG and one JSON per image (default: print only)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image")
    parser.add_argument("--box", choices=["patch", "heatmap"], default="patch", help="32x32 patch (faithful) or heat-map box")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from pipnet.core.precision import inference_precision
    from pipnet.data.images import load_image
    from pipnet.evaluation.inference import input_transform
    from pipnet.evaluation.thresholds import load_thresholds, warn_without_thresholds
    from pipnet.explanation.explain import explain
    from pipnet.explanation.render.png import explanation_figure
    from pipnet.model import PIPNet

    model = PIPNet.from_pretrained(args.model).eval()
    thresholds = load_thresholds(args.model, model.num_classes)
    if thresholds is None:
        warn_without_thresholds(args.model)
    transform = input_transform(model)
    folder = Path(args.out) if args.out else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(args.precision, next(model.parameters()).device, args.model)
    for path in args.images:
        image = load_image(path)
        with torch.inference_mode(), inference_precision(precision):
            (e,) = explain(model, transform(image)[None], top_classes=args.top, image_ids=[str(path)], box=args.box)
        threshold = thresholds.values[e.predicted] if thresholds is not None and e.predicted is not None else None
        unknown = e.abstained or (threshold is not None and e.top_classes[0].score < threshold)
        out(f"{path}: {_verdict(e, threshold)}")
        for c in e.top_classes:
            out(f"  {c.class_name}: score {c.score:.3f}")
            for ev in c.evidence[:5]:
                out(f"    prototype {ev.prototype}: p={ev.presence:.3f} w={ev.weight:.3f} p*w={ev.evidence:.3f} box={ev.box}")
        if folder:
            stem = Path(path).stem
            record = {**e.to_dict(), "unknown": unknown, "threshold": threshold if threshold != float("inf") else None}
            (folder / f"{stem}.json").write_text(json.dumps(record, indent=2))
            explanation_figure(e, image).save(folder / f"{stem}.png")
    if folder:
        out(str(folder))
    return 0


def _verdict(e, threshold: float | None) -> str:
    """What ``pipnet explain`` says after an image's path: the predicted class, unknown, or that it abstains."""
    if e.abstained:
        return "no prototype is present: the model abstains (every class scores 0)"
    top = e.top_classes[0]
    if threshold is not None and top.score < threshold:
        return f"unknown (score {top.score:.3f} below the {top.class_name} threshold {threshold:.3f})"
    return f"predicted {top.class_name} (score {top.score:.3f})"
