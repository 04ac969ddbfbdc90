"""MkDocs hook: the command-line reference, generated at build time from the parsers' own ``--help``.

``docs/reference/cli.md`` holds the marker ``<!-- pipnet-cli-reference -->``; this hook replaces it with
``pipnet --help`` and, for every subcommand, the help of the parser ``pipnet.cli.build_parser`` returns,
the same parser the command runs with. Nothing here is copied by hand, so the page cannot drift from the code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MARKER = "<!-- pipnet-cli-reference -->"
SRC = Path(__file__).resolve().parents[2] / "src"


def _import_cli():
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # document this checkout's code, not another installed copy
    from pipnet import cli

    return cli


def render_cli_reference() -> str:
    """The markdown of the CLI reference: the command list, then one section per subcommand."""
    os.environ["COLUMNS"] = "80"  # argparse wraps help to the terminal width; fix it so builds are identical
    cli = _import_cli()
    parts = ["## pipnet", "", "```text", cli._usage(), "```", ""]
    for command, summary in cli.COMMANDS.items():
        help_text = cli.build_parser(command).format_help().rstrip()
        parts += [f"## pipnet {command}", "", summary[0].upper() + summary[1:] + ".", "", "```text", help_text, "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, **_) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render_cli_reference())
    return markdown
