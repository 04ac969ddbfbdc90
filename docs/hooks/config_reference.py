"""MkDocs hook: the training config keys with their defaults, generated from the config dataclasses.

``docs/reference/config.md`` holds the marker ``<!-- pipnet-config-reference -->``; this hook replaces it
with one table per section of :class:`pipnet.core.train_config.TrainConfig` (key, default, type, meaning),
reading each field's default from the dataclass and its meaning from the class docstring's ``Args:``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

MARKER = "<!-- pipnet-config-reference -->"
SRC = Path(__file__).resolve().parents[2] / "src"


def _docstring_args(cls) -> dict[str, str]:
    """``{field: description}`` from a Google-style ``Args:`` section (continuation lines joined)."""
    doc = inspect.getdoc(cls) or ""
    if "Args:" not in doc:
        return {}
    described: dict[str, str] = {}
    name = None
    for line in doc.split("Args:", 1)[1].splitlines():
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            name = match.group(1)
            described[name] = match.group(2).strip()
        elif name and line.startswith("        "):
            described[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return described


def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _cell(text: str) -> str:
    """Prose for a table cell: reST's double backticks become markdown's, a pipe is escaped."""
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """A code span for a table cell (the tables extension reads pipes inside backticks as text)."""
    return "`" + text.replace("\n", " ") + "`"


def _tables(cls, prefix: str, out: list[str]) -> None:
    described = _docstring_args(cls)
    nested = []
    rows = []
    for f in dataclasses.fields(cls):
        default = _default(f)
        if dataclasses.is_dataclass(default):
            nested.append((f, default))
            continue
        key = f"{prefix}{f.name}"
        rows.append(f"| {_code(key)} | {_code(_yaml(default))} | {_code(str(f.type))} | {_cell(described.get(f.name, ''))} |")
    title = prefix.rstrip(".") or "top level"
    out += [f"### `{title}`", "", _cell(inspect.getdoc(cls).split("\n", 1)[0]), ""]
    if rows:
        out += ["| key (flag: `--KEY`) | default | type | meaning |", "|---|---|---|---|", *rows, ""]
    for f, default in nested:
        _tables(type(default), f"{prefix}{f.name}.", out)


def render_config_reference() -> str:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from pipnet.core.train_config import TrainConfig

    out: list[str] = []
    _tables(TrainConfig, "", out)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, **_) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render_config_reference())
    return markdown
