"""What the commands share: argument groups (`parents=`), their help texts, and writing one result line.

Each command module builds its parser from these groups, so `--device` or `--precision` reads the same in
every `--help`, and calls the library once (torchvision's `references/`: `get_args_parser()` +
`main(args)`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

log = logging.getLogger("pipnet")

DEVICE_HELP = "where to run: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N"
PRECISION_HELP = ("numeric precision: auto (bf16 where this machine computes it natively: CPUs with AMX or "
                  "avx512_bf16, recent GPUs; fp32 elsewhere), fp32, bf16 or fp16 (CUDA only)")
INFERENCE_PRECISION_HELP = ("numeric precision: auto (the precision the model folder's detectors were set in: fp32 "
                            "unless their fitting asked otherwise, so every machine gives the same verdict), fp32, "
                            "bf16 or fp16 (CUDA only)")
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
MODEL_HELP = "a model folder (model.safetensors + config.json), e.g. a run folder"


def model_args() -> argparse.ArgumentParser:
    """The positional MODEL folder."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("model", help=MODEL_HELP)
    return parser


def device_args() -> argparse.ArgumentParser:
    """`--device`."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    return parser


def progress_args() -> argparse.ArgumentParser:
    """`--no-progress`."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def training_precision_args() -> argparse.ArgumentParser:
    """`--precision` of a command that trains."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    return parser


def detector_choices() -> tuple[tuple[str, ...], str]:
    """`--detector`'s choices and help (the library's, which the web page's parser uses too)."""
    from pipnet.evaluation.detectors import CHOICES, CHOICES_HELP

    return CHOICES, CHOICES_HELP


def verdict_args() -> argparse.ArgumentParser:
    """`--precision` and `--detector` of a command that gives a saved model's verdicts."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=INFERENCE_PRECISION_HELP)
    choices, help_text = detector_choices()
    parser.add_argument("--detector", choices=choices, default="auto", help=help_text)
    return parser


def inference_precision_args() -> argparse.ArgumentParser:
    """`--precision` of a command that computes scores of a saved model but gives no verdict."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=INFERENCE_PRECISION_HELP)
    return parser


def edit_args(what: str) -> argparse.ArgumentParser:
    """`--out`, `--reason` and `--data` of a command that writes an edited model to a new folder."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", required=True, help=f"a new folder for the {what} model (never overwritten)")
    parser.add_argument("--reason", help="why, recorded in the edit log (edits.jsonl)")
    parser.add_argument("--data", help="a run folder or training config YAML whose data to use (default: MODEL/config.yaml)")
    return parser


def command_parser(name: str, description: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser of `pipnet NAME` over the shared groups `parents`."""
    return argparse.ArgumentParser(prog=f"pipnet {name}", description=description, parents=list(parents))


def out(line: str = "") -> None:
    """Write one line of the command's result to standard output (logging goes to standard error)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def resolve_precision(requested: str, device, model_dir: str | None = None) -> str:
    """`--precision` resolved for `device` and the model folder (`auto`: the precision its deciding
    detector was set in, fp32 without one); logged once, with why."""
    from pipnet.core.precision import resolve_inference_precision
    from pipnet.evaluation.detectors import load_detectors
    from pipnet.model import PIPNet

    recorded = None
    if model_dir is not None and requested == "auto":
        recorded = load_detectors(model_dir, PIPNet.from_pretrained(model_dir)).precision
    choice = resolve_inference_precision(requested, device, recorded)
    log.info("precision %s (%s)", choice.precision, choice.reason)
    return choice.precision


@contextlib.contextmanager
def inference_precision(requested: str, device, model_dir: str | None = None):
    """Run the block's inference passes in the resolved `--precision`."""
    from pipnet.core.precision import inference_precision as block

    with block(resolve_precision(requested, device, model_dir)) as precision:
        yield precision
