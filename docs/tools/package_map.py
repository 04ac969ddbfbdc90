"""Draw the package map of ``pipnet`` from the code into ``docs/design/package-map.md`` and its picture.

The layers come from the import-linter contract in ``pyproject.toml``; the modules and the imports between
them from the source (grimp, the graph import-linter checks). Nothing in the page or the picture
(``docs/design/package-map.svg``, a plain SVG file: it needs no script and nothing from the network) is
written by hand: ``python docs/tools/package_map.py`` rewrites both, ``--check`` exits 1 when either is out of
date (tests/test_layers.py runs it).
"""

from __future__ import annotations

import argparse
import ast
import html
import math
import re
import sys
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import grimp

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "design" / "package-map.md"
PICTURE = PAGE.with_suffix(".svg")
PACKAGE = "pipnet"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docstrings import ISSUE, SPEC, convert  # noqa: E402  (the same tool that converts the docstrings)


def layers_of(pyproject: Path = ROOT / "pyproject.toml") -> list[list[str]]:
    """The layers of the contract, top first; each a list of sibling folders or modules (``model | data``)."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.split("|")] for layer in contract["layers"]]


def summary(module: str) -> str:
    """The first line of a module's docstring (empty when it has none), in Markdown, without the notes a reader
    outside the project cannot follow (a section of the internal specification, an issue number)."""
    doc = ast.get_docstring(ast.parse(_source(module).read_text(encoding="utf-8"))) or ""
    return _public(convert(doc.strip().split("\n")[0].rstrip()))


def _public(line: str) -> str:
    """``line`` without the parts of its parentheses that cite the internal specification or an issue."""

    def keep(match: re.Match) -> str:
        parts = [p.strip() for p in match.group(1).split(";")]
        parts = [p for p in parts if not (SPEC.fullmatch(p) or ISSUE.fullmatch(p) or SPEC.match(p) and "," in p)]
        return f" ({'; '.join(parts)})" if parts else ""

    return re.sub(r"\s*\(([^()]*)\)", keep, line)


def _source(module: str) -> Path:
    rel = Path(*module.split("."))
    src = ROOT / "src"
    return src / rel / "__init__.py" if (src / rel).is_dir() else src / rel.with_suffix(".py")


def render() -> tuple[str, str]:
    """The page's Markdown and its picture's SVG."""
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    layers = layers_of()
    owner = {}  # top-level child of pipnet -> the layer's label
    for layer in layers:
        for name in layer:
            owner[name] = " | ".join(layer)

    def child(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None

    edges: Counter[tuple[str, str]] = Counter()  # (importer child, imported child) -> module imports
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = child(importer), child(imported)
            if a in owner and b in owner and a != b:
                edges[a, b] += 1

    out = [
        "# Package map",
        "",
        "Generated from the code by `python docs/tools/package_map.py` (do not edit by hand; "
        "`tests/test_layers.py` fails when this page or its picture is out of date). The layers are the "
        "import-linter contract in `pyproject.toml`, top first: a folder imports only the folders below it "
        "(`model` and `data` not each other), and no folder's modules import each other in a circle "
        "(`lint-imports` checks both).",
        "",
        f"![The layers of {PACKAGE}, top first, with an arc from each folder to every folder it imports]"
        f"({PICTURE.name})",
        "",
        "Each arc runs down from a folder to a folder it imports; its number counts the module-to-module imports.",
        "",
    ]
    out += ["## Layers", "", "| Layer (top first) | Imports from | Modules |", "|---|---|---|"]
    for layer in layers:
        for name in layer:
            uses = sorted({b for (a, b) in edges if a == name}, key=list(owner).index)
            modules = sorted(m for m in graph.modules if m == f"{PACKAGE}.{name}" or m.startswith(f"{PACKAGE}.{name}."))
            out.append(f"| `{PACKAGE}.{name}` | {', '.join(f'`{u}`' for u in uses) or '-'} | {len(modules)} |")
    out.append("")

    out += ["## Modules", ""]
    for layer in layers:
        for name in layer:
            out += [f"### `{PACKAGE}.{name}`", ""]
            modules = sorted(m for m in graph.modules if m == f"{PACKAGE}.{name}" or m.startswith(f"{PACKAGE}.{name}."))
            for module in modules:
                line = summary(module)
                out.append(f"- `{module}`" + (f": {line}" if line else ""))
            out.append("")

    return "\n".join(out) + "\n", picture(owner, edges)


def picture(owner: dict[str, str], edges: Counter[tuple[str, str]]) -> str:
    """The layers as an SVG: one box per folder, top first, and an arc from each importer to what it imports."""
    names = list(owner)
    row, box_w, box_h, left, top = 44, 190, 30, 150, 20
    arcs_right = left + box_w
    y = {name: top + i * row for i, name in enumerate(names)}
    spans = [names.index(b) - names.index(a) for a, b in edges]
    width = arcs_right + 30 + 34 * max(spans, default=1) + 10
    height = top + len(names) * row
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="13" role="img">',
        f"<title>The layers of {PACKAGE} and the imports between them</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
        'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#00796b"/></marker></defs>',
    ]
    layer_rows: dict[str, list[str]] = {}
    for name, layer in owner.items():
        layer_rows.setdefault(layer, []).append(name)
    for i, (layer, members) in enumerate(layer_rows.items()):
        y0, y1 = y[members[0]] - 6, y[members[-1]] + box_h + 6
        fill = "#f3f7f7" if i % 2 == 0 else "#ffffff"
        out.append(f'<rect x="4" y="{y0}" width="{arcs_right + 8}" height="{y1 - y0}" rx="6" fill="{fill}" '
                   'stroke="#d0dcdc"/>')
        label = "layer " + str(i + 1) if len(members) == 1 else f"layer {i + 1} (siblings)"
        out.append(f'<text x="14" y="{(y0 + y1) / 2 + 4:.0f}" fill="#555">{html.escape(label)}</text>')
    for name in names:
        out.append(f'<rect x="{left}" y="{y[name]}" width="{box_w}" height="{box_h}" rx="4" fill="#e0f2f1" '
                   'stroke="#00796b"/>')
        out.append(f'<text x="{left + box_w / 2:.0f}" y="{y[name] + 20}" text-anchor="middle" '
                   f'font-family="monospace">{PACKAGE}.{html.escape(name)}</text>')
    order = sorted(edges.items(), key=lambda kv: (names.index(kv[0][0]), names.index(kv[0][1])))
    outgoing = {a: [e for e, _ in order if e[0] == a] for a in names}
    incoming = {b: sorted((e for e, _ in order if e[1] == b), key=lambda e: -names.index(e[0])) for b in names}

    def fan(edge, edges_here, y0):  # spread a box's arcs over its right edge, so each can be told apart
        k, n = edges_here.index(edge), len(edges_here)
        return y0 + box_h * (k + 1) / (n + 1)

    for (a, b), n in order:
        span = names.index(b) - names.index(a)
        start, end = fan((a, b), outgoing[a], y[a]), fan((a, b), incoming[b], y[b])
        reach = arcs_right + 30 + 34 * span
        stroke = 0.8 + 0.6 * math.log2(n)
        out.append(f'<path d="M{arcs_right},{start:.0f} C{reach},{start:.0f} {reach},{end:.0f} {arcs_right + 2},'
                   f'{end:.0f}" fill="none" stroke="#00796b" stroke-opacity="0.6" stroke-width="{stroke:.1f}" '
                   'marker-end="url(#arrow)"/>')
        mid_x = arcs_right + 0.75 * (reach - arcs_right)
        out.append(f'<text x="{mid_x:.0f}" y="{(start + end) / 2 + 4:.0f}" font-size="11" text-anchor="middle" '
                   f'fill="#004d40" stroke="#ffffff" stroke-width="3" paint-order="stroke">{n}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed page differs from the code")
    args = parser.parse_args(argv)
    files = dict(zip((PAGE, PICTURE), render()))
    if args.check:
        stale = [path for path, text in files.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python docs/tools/package_map.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
