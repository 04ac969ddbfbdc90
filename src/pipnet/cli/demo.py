"""`pipnet demo`: generate the planted-parts data, train, evaluate and write a report, offline."""

from __future__ import annotations

from pipnet.cli.common import command_parser, device_args, out, progress_args, training_precision_args
from pipnet.cli.train import draw_curve

DESCRIPTION = "generate planted-parts data, train, evaluate and write a report, offline, in minutes"
INTERRUPTED = "run pipnet demo again"


def build_parser():
    """The parser of `pipnet demo`."""
    parser = command_parser("demo", DESCRIPTION, progress_args(), training_precision_args(), device_args())
    parser.add_argument("--out", help="run folder to write (default: a new folder under ./runs)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, the batches and every augmentation (the generated images stay the same)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import time

    from pipnet.core.precision import inference_precision
    from pipnet.demo import demo_config
    from pipnet.evaluation.evaluate import format_metrics_table
    from pipnet.train.engine import train

    started = time.perf_counter()
    config = demo_config(args.out, progress=not args.no_progress, precision=args.precision, device=args.device,
                         seed=args.seed)
    result = train(config)  # resolves --precision, logs it and records it in config.yaml
    draw_curve(result.run_dir)
    out(format_metrics_table(result.metrics))
    if not args.no_report:
        from pipnet.explanation.report import build_report

        with inference_precision(config.runtime.precision):
            out(f"report: {build_report(result.run_dir, progress=not args.no_progress)}")
    out(f"demo finished in {time.perf_counter() - started:.0f} s; model, metrics.json, history.csv and report in:")
    out(str(result.run_dir))
    return 0
