"""`pipnet train`: train a PIP-Net from YAML presets and flags (the config dataclasses are the parser)."""

from __future__ import annotations

from pathlib import Path

from pipnet.cli.common import out

DESCRIPTION = "train a PIP-Net (YAML presets + flags; --help lists every option)"
INTERRUPTED = "the run continues from its last epoch with pipnet train --resume RUN_DIR"


def build_parser():
    """The parser of `pipnet train` (jsonargparse, from the config dataclasses), with `--print-config`."""
    from pipnet.core.train_config import config_parser

    parser = config_parser()
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return parser


def main(argv: list[str]) -> int:
    from pipnet.core.train_config import config_from_namespace, dump_config, resume_flag_error
    from pipnet.train.engine import train

    print_config = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    parser = build_parser()
    config = config_from_namespace(parser, parser.parse_args(argv))
    resume_runtime = None
    if config.resume:
        refusal = resume_flag_error(argv)
        if refusal:
            parser.error(refusal)
        given = {a.split("=", 1)[0].removeprefix("--runtime.") for a in argv if a.startswith("--runtime.")}
        resume_runtime = {name: getattr(config.runtime, name) for name in given}
    if print_config:
        out(dump_config(config).rstrip())
        return 0
    result = train(config, resume_runtime=resume_runtime)
    draw_curve(result.run_dir)
    if result.metrics is not None:
        from pipnet.evaluation.evaluate import format_metrics_table

        out(format_metrics_table(result.metrics))
    out(str(result.run_dir))
    return 0


def draw_curve(run_dir: Path) -> None:
    """RUN/sparsity.png from the history training wrote (training itself draws nothing)."""
    from pipnet.explanation.report import write_sparsity_plot

    write_sparsity_plot(run_dir)
