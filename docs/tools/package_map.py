"""Draw the package map of ``pipnet`` from the code into ``docs/design/package-map.md``.

The layers come from the import-linter contract in ``pyproject.toml``; the modules and the imports between
them from the source (grimp, the graph import-linter checks). Nothing in the page is written by hand:
``python docs/tools/package_map.py`` rewrites it, ``--check`` exits 1 when the committed page is out of date
(tests/test_layers.py runs it).
"""

from __future__ import annotations

import argparse
import ast
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
PACKAGE = "pipnet"


def layers_of(pyproject: Path = ROOT / "pyproject.toml") -> list[list[str]]:
    """The layers of the contract, top first; each a list of sibling folders or modules (``model | data``)."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.split("|")] for layer in contract["layers"]]


def summary(module: str) -> str:
    """The first line of a module's docstring (empty when it has none)."""
    doc = ast.get_docstring(ast.parse(_source(module).read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n")[0].rstrip()


def _source(module: str) -> Path:
    rel = Path(*module.split("."))
    src = ROOT / "src"
    return src / rel / "__init__.py" if (src / rel).is_dir() else src / rel.with_suffix(".py")


def render() -> str:
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
        "`tests/test_layers.py` fails when this page is out of date). The layers are the import-linter contract "
        "in `pyproject.toml`, top first: a folder imports only the folders below it (`model` and `data` not each "
        "other), and no folder's modules import each other in a circle (`lint-imports` checks both).",
        "",
        "```mermaid",
        "flowchart TD",
    ]
    for name in owner:
        out.append(f"    {name}[\"{PACKAGE}.{name}\"]")
    for (a, b), n in sorted(edges.items(), key=lambda kv: (list(owner).index(kv[0][0]), list(owner).index(kv[0][1]))):
        out.append(f"    {a} -->|{n}| {b}")
    out += ["```", "", "An arrow reads \"imports\"; its number counts the module-to-module imports.", ""]

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

    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed page differs from the code")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python docs/tools/package_map.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
