"""MkDocs hook: the command-line reference, generated at build time from the parsers themselves.

``docs/reference/cli.md`` holds the marker ``<!-- pipnet-cli-reference -->``; this hook replaces it with one
section per command, written the way scikit-learn and Lightning write theirs: what the command is for and
two or three examples (from ``docs/hooks/cli_examples.md``, keyed by command name), then its usage line and
a table of its flags read from the parser ``pipnet.cli.build_parser`` returns, the same parser the command
runs with. The flags cannot drift from the code; a command without purpose and examples fails the strict
build.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import sys
from pathlib import Path

MARKER = "<!-- pipnet-cli-reference -->"
HOOKS = Path(__file__).resolve().parent
SRC = HOOKS.parents[1] / "src"
EXAMPLES = HOOKS / "cli_examples.md"
log = logging.getLogger("mkdocs.hooks.cli_reference")  # a warning here fails `mkdocs build --strict`


def _import_cli():
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # document this checkout's code, not another installed copy
    from pipnet import cli

    return cli


def examples(path: Path = EXAMPLES) -> dict[str, str]:
    """Command name -> its Markdown (purpose, then examples) from ``cli_examples.md``."""
    text = re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)
    parts = re.split(r"^## +(\S+) *$", text, flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}


def _cell(text: str) -> str:
    """Help text as one table cell: one line, code spans kept, everything else shown as written."""
    text = " ".join(text.split())
    pieces = re.split(r"(``.+?``|`[^`]+`)", text)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:  # a code span: Markdown shows it as code; only the table's bar needs escaping
            out.append(piece.replace("|", "\\|"))
        else:
            piece = html.escape(piece, quote=False)
            out.append(re.sub(r"([\\*_\[\]|])", r"\\\1", piece))
    return "".join(out)


def _flag(action: argparse.Action) -> str:
    """The flag and, where it has a fixed set, its choices (the default column shows what a value looks like)."""
    names = ", ".join(action.option_strings) or action.metavar or action.dest
    if action.option_strings and action.choices and action.nargs != 0:
        names += f" {{{','.join(map(str, action.choices))}}}"
    return f"`{names}`"


def _default(action: argparse.Action) -> str:
    default = action.default
    if default in (None, argparse.SUPPRESS) or action.nargs == 0 or not action.option_strings:
        return ""
    return f"`{default}`" if str(default) else '`""`'


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    try:  # fill in %(default)s and the like, as argparse does (not jsonargparse's "(type: ..., default: ...)")
        return action.help % {**vars(action), "prog": parser.prog}
    except (KeyError, TypeError, ValueError):
        return action.help


FOLD = 6  # a group of more flags than this is folded (the nested config groups of train and evaluate)


def flags_table(parser: argparse.ArgumentParser) -> list[str]:
    """The parser's arguments as Markdown tables, one per argument group that has any; long groups folded."""
    out = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS and "-h" not in a.option_strings]
        if not actions:
            continue
        title = _cell((group.title or "options")[0].upper() + (group.title or "options")[1:])
        table = ["| Argument | Default | Description |", "|---|---|---|"]
        table += [f"| {_flag(a)} | {_default(a)} | {_cell(_help(parser, a))} |" for a in actions]
        if len(actions) > FOLD:
            out += [f'??? note "{title.replace(chr(34), chr(39))} ({len(actions)} flags)"', ""]
            out += [f"    {line}" for line in table]
        else:
            out += [f"**{title}**", "", *table]
        out.append("")
    return out


def usage(parser: argparse.ArgumentParser, most_lines: int = 6) -> str:
    """The parser's usage line; past ``most_lines`` lines (train's nested flags), its short form."""
    full = parser.format_usage().strip()
    if full.count("\n") < most_lines:
        return full
    positionals = [a.metavar or a.dest for a in parser._actions if not a.option_strings]
    return " ".join([f"usage: {parser.prog} [options]", *map(str, positionals)]) + "   (the options: below)"


def render_cli_reference() -> str:
    """The Markdown of the CLI reference: the command list, then one section per command."""
    os.environ["COLUMNS"] = "80"  # argparse wraps the usage line to the terminal width: fix it
    cli = _import_cli()
    written = examples()
    parts = ["| Command | What it does |", "|---|---|"]
    parts += [f"| [`pipnet {c}`](#pipnet-{c}) | {_cell(summary)} |" for c, summary in cli.COMMANDS.items()]
    parts.append("")
    for command, summary in cli.COMMANDS.items():
        parser = cli.build_parser(command)
        parts += [f"## pipnet {command}", ""]
        if command in written:
            purpose, fence, rest = written[command].partition("```")
            parts += [purpose.strip(), "", "**Examples**", "", fence + rest, ""] if fence else [purpose.strip(), ""]
        else:
            log.warning("pipnet %s has no purpose and examples in %s", command, EXAMPLES.name)
            parts += [_cell(summary[0].upper() + summary[1:]) + ".", ""]
        parts += ["**Usage**", "", "```text", usage(parser), "```", ""]
        parts += flags_table(parser)
    for command in sorted(set(written) - set(cli.COMMANDS)):
        log.warning("%s has examples for pipnet %s, which is no command", EXAMPLES.name, command)
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, **_) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render_cli_reference())
    return markdown
