"""`pipnet predict`: a table of a saved model's verdicts on files and folders of images."""

from __future__ import annotations

import sys
from pathlib import Path

from pipnet.cli.common import command_parser, device_args, model_args, out, progress_args, verdict_args

DESCRIPTION = "predict files and folders of images into a CSV or JSON-lines table (with the verdict: known, unknown or abstained)"
INTERRUPTED = "no table was written (--out keeps its previous file, if any); run it again"


def build_parser():
    """The parser of `pipnet predict`."""
    parser = command_parser("predict", DESCRIPTION, model_args(), verdict_args(), device_args(), progress_args())
    parser.add_argument("paths", nargs="+", help="image files and folders (folders are walked recursively)")
    parser.add_argument("--out", help="the table to write, refused when it is one of the inputs (default: print to standard output)")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="csv or jsonl (default: from --out's suffix, else csv)")
    parser.add_argument("--top", type=int, default=3, help="classes listed per image (top_classes)")
    parser.add_argument("--evidence", type=int, default=3, help="prototypes of the predicted class listed (evidence)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--skip-errors", action="store_true",
                        help="leave files that cannot be read out of the table (default: a row each, status 'error' "
                             "and the reason in the 'error' column); they are listed on standard error either way")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top < 1 or args.evidence < 0 or args.batch_size < 1:
        parser.error("--top and --batch-size must be at least 1, --evidence at least 0")
    from pipnet.use.outputs import refuse_overwriting
    from pipnet.use.predict import find_files, predict, printable_path, to_csv, to_jsonl

    if args.out:
        refuse_overwriting([args.out], [args.model, *find_files(args.paths)])
    fmt = args.format or ("jsonl" if args.out and args.out.endswith((".jsonl", ".json")) else "csv")
    predictions = predict(args.model, args.paths, top=args.top, evidence=args.evidence, batch_size=args.batch_size,
                          device=args.device, precision=args.precision, detector=args.detector,
                          progress=not args.no_progress)
    good = [p for p in predictions if p.error is None]
    bad = [p for p in predictions if p.error is not None]
    for p in bad:
        sys.stderr.write(f"cannot read {printable_path(p.path)}: {p.error}\n")
    if not predictions:
        raise FileNotFoundError(f"no files found in {' '.join(args.paths)}")
    if not good:
        raise FileNotFoundError(f"none of the {len(bad)} files could be read as an image (listed above)")
    table = (to_jsonl if fmt == "jsonl" else to_csv)(good if args.skip_errors else predictions)
    if args.out:
        from pipnet.core.utils import atomic_write

        with atomic_write(Path(args.out)) as tmp:  # an interrupted run leaves the old file, or none
            tmp.write_text(table, encoding="utf-8")
    else:
        sys.stdout.write(table)
    unknown, abstained = sum(p.unknown for p in good), sum(p.abstained for p in good)
    rows = "left out of the table (--skip-errors)" if args.skip_errors else "in the table with status 'error'"
    sys.stderr.write(f"predicted {len(good)} images ({unknown} unknown, {abstained} abstained); {len(bad)} files "
                     f"could not be read ({rows})\n")
    if args.out:
        out(args.out)
    return 0
