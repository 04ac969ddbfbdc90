"""``pipnet explain``: why a saved model decides what it does about some images (text, PNG and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from pipnet.cli.common import command_parser, device_args, model_args, out, verdict_args

DESCRIPTION = "explain the predictions of a saved model for some images (text, PNG and JSON)"


def build_parser():
    """The parser of ``pipnet explain``."""
    parser = command_parser("explain", DESCRIPTION, model_args(), verdict_args(), device_args())
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="folder for one PNG and one JSON per image (default: print only)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image")
    parser.add_argument("--box", choices=["patch", "heatmap"], default="patch", help="32x32 patch (faithful) or heat-map box")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from pipnet.data.images import load_image
    from pipnet.explanation.predictor import Predictor
    from pipnet.explanation.render.png import explanation_figure

    predictor = Predictor.load(args.model, device=args.device, precision=args.precision, detector=args.detector)
    folder = Path(args.out) if args.out else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = load_image(path)
        decision = predictor.decide_image(image, image_id=str(path), top=args.top, box=args.box)
        out(f"{path}: {decision.verdict.sentence}")
        for c in decision.explanation.top_classes:
            out(f"  {c.class_name}: score {c.score:.3f}")
            for ev in c.evidence[:5]:
                out(f"    prototype {ev.prototype}: p={ev.presence:.3f} w={ev.weight:.3f} p*w={ev.evidence:.3f} box={ev.box}")
        if folder:
            stem = Path(path).stem
            (folder / f"{stem}.json").write_text(json.dumps(decision.to_dict(), indent=2))
            explanation_figure(decision.explanation, image, verdict=decision.verdict).save(folder / f"{stem}.png")
    if folder:
        out(str(folder))
    return 0
