"""`pipnet explain`: why a saved model decides what it does about some images (text, PNG and JSON)."""

from __future__ import annotations

from pipnet.cli.common import command_parser, device_args, model_args, out, verdict_args

DESCRIPTION = "explain the predictions of a saved model for some images (text, PNG and JSON)"


def build_parser():
    """The parser of `pipnet explain`."""
    parser = command_parser("explain", DESCRIPTION, model_args(), verdict_args(), device_args())
    parser.epilog = ("exit status: 0 every image explained, 1 some files could not be read (the others explained), "
                     "2 none could be read or another error")
    parser.add_argument("images", nargs="+", help="image files (one that cannot be read is reported, the rest explained)")
    parser.add_argument("--out", help="folder for NAME.png and NAME.json per image, NAME the file's stem, or as much of "
                                      "its path as tells it apart from the other images; refused when that would "
                                      "write over an input (default: print only)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image")
    parser.add_argument("--box", choices=["patch", "heatmap"], default="patch", help="32x32 patch (faithful) or heat-map box")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from pipnet.explanation.predictor import Predictor
    from pipnet.explanation.render.png import explanation_figure
    from pipnet.use.explain_files import ExplanationFolder, finish, read_images, report_error

    folder = ExplanationFolder(args.out, args.images, protect=[args.model]) if args.out else None
    predictor = Predictor.load(args.model, device=args.device, precision=args.precision, detector=args.detector)
    failed = []
    for item in read_images(args.images):
        if item.error is not None:
            report_error(item)
            failed.append(item)
            if folder:
                folder.write_error(item)
            continue
        image = item.image
        decision = predictor.decide_image(image, image_id=str(item.path), top=args.top, box=args.box)
        out(f"{item.printable}: {decision.verdict.sentence}")
        for c in decision.explanation.top_classes:
            out(f"  {c.class_name}: score {c.score:.3f}")
            for ev in c.evidence[:5]:
                out(f"    prototype {ev.prototype}: p={ev.presence:.3f} w={ev.weight:.3f} p*w={ev.evidence:.3f} box={ev.box}")
        if folder:
            folder.write(item, decision.to_dict(), explanation_figure(decision.explanation, image, verdict=decision.verdict))
    if folder:
        out(str(folder.path))
    return finish(failed, len(args.images))
