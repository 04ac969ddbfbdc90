"""`pipnet report`: the self-contained HTML report of a run folder."""

from __future__ import annotations

from pipnet.cli.common import command_parser, inference_precision, out, progress_args, verdict_args

DESCRIPTION = "write the self-contained HTML report of a run folder"


def build_parser():
    """The parser of `pipnet report`."""
    parser = command_parser("report", DESCRIPTION, progress_args(), verdict_args())
    parser.add_argument("run_dir", help="a finished run folder")
    parser.add_argument("--out", help="path of the HTML file (default: RUN_DIR/report.html)")
    parser.add_argument("--samples", type=int, default=6, help="test images to explain")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from pipnet.explanation.report import build_report
    from pipnet.use.outputs import refuse_overwriting

    refuse_overwriting([args.out] if args.out else [], [args.run_dir])
    with inference_precision(args.precision, torch.device("cpu"), args.run_dir):  # the report explains samples on the CPU
        out(str(build_report(args.run_dir, args.out, samples=args.samples, progress=not args.no_progress,
                             detector=args.detector, precision=args.precision)))
    return 0
