"""The `pipnet` command: one module per subcommand, each a thin call into the library.

Every module has `DESCRIPTION`, `build_parser()` (the shared argument groups of
[pipnet.cli.common][] plus its own) and `main(argv)`. Known failures (bad data, bad files, bad models)
end with one clear `error:` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

from pipnet.cli import (convert, demo, evaluate, explain, export, models, predict, refit, repair, report, serve,  # noqa: E402
                        train)

__all__ = ["COMMANDS", "build_parser", "main"]

_MODULES = {"train": train, "demo": demo, "evaluate": evaluate, "explain": explain, "predict": predict, "refit": refit,
            "repair": repair, "report": report, "convert": convert, "serve": serve, "export": export, "models": models}
#: Each command and what it does (`pipnet --help`).
COMMANDS = {name: module.DESCRIPTION for name, module in _MODULES.items()}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _known_errors() -> tuple[type[BaseException], ...]:
    from pipnet.core.precision import PrecisionError
    from pipnet.core.utils import MissingExtraError
    from pipnet.data.errors import DataError, ImageLoadError
    from pipnet.evaluation.inference import DeviceError
    from pipnet.model import ModelLoadError
    from pipnet.model.backbones import BackboneError
    from pipnet.train.checkpoint import CheckpointError
    from pipnet.train.engine import NonFiniteLossError

    # OSError: a missing or existing file, a full disk, no permission; its message names the path.
    return (BackboneError, DataError, ImageLoadError, ModelLoadError, CheckpointError, NonFiniteLossError, OSError,
            MissingExtraError, DeviceError, PrecisionError)


def build_parser(command: str):
    """The argument parser of `pipnet COMMAND`, built without running the command.

    The documentation renders its CLI reference from these parsers' `--help` and checks every
    `pipnet COMMAND --flag` it shows against them.

    Args:
        command: a subcommand name, one of `COMMANDS`.
    """
    if command not in _MODULES:
        raise KeyError(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)}")
    return _MODULES[command].build_parser()


def _usage() -> str:
    lines = ["usage: pipnet COMMAND [options]   (pipnet COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `pipnet COMMAND ...`; returns the exit status (0, 2 for a known error, 130 when interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage() + "\n")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in _MODULES:
        sys.stderr.write(f"pipnet: unknown command {command!r}\n\n{_usage()}\n")
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    else:
        logging.basicConfig(level=logging.WARNING)
    module = _MODULES[command]
    try:
        return module.main(rest)
    except _known_errors() as e:
        message = " ".join(_ANSI.sub("", str(e)).split())  # one line, even when a library's message has several
        sys.stderr.write(f"pipnet {command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        left = getattr(module, "INTERRUPTED", "nothing more was written")  # what Ctrl+C leaves
        sys.stderr.write(f"pipnet {command}: interrupted; {left}\n")
        return 130
