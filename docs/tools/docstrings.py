"""Rewrite the docstrings of ``src/pipnet`` from Sphinx roles into the Markdown the site and ``--help`` render.

One convention for every docstring (STYLE.md: Google style, Markdown cross-references, no Sphinx roles), so
the same text reads well in an editor, on the documentation site (mkdocstrings) and in ``pipnet ... --help``
(jsonargparse prints the ``Args:`` of the config dataclasses). What it rewrites, in string literals and comments:

- ``` ``x`` ``` (a reStructuredText literal) becomes `` `x` `` (a Markdown code span).
- ``:func:`x```, ``:meth:``, ``:class:``, ``:attr:``, ``:mod:``, ``:data:``, ``:exc:``, ``:obj:`` (with the
  ``~`` prefix, which shows only the last name, and the ``text <target>`` form) become a cross-reference
  ``[`x`][pipnet.full.path]`` when the target is an object the site documents (a ``::: name`` of
  ``docs/**/*.md`` or a public member of one), resolved the way Sphinx would (as written, then in the current
  class, then in the current module; the old module paths of ``pipnet._aliases`` count); otherwise the code
  span `` `x` ``. Strings that end up in ``--help`` get code spans only: the docstrings of dataclasses (the
  config types jsonargparse reads), every string that is not a docstring (``help=...``) and comments.

It also reports, without changing them, the mentions of the internal specification (the word "spec" with a
section number) and of issue numbers, in docstrings, strings and comments, with the paper's section or the
faithfulness page (``docs/design/faithfulness.md``) that a reader can follow instead: a person rewords those.

Usage (from the repository root, with the package importable, e.g. ``PYTHONPATH=src``)::

    python docs/tools/docstrings.py            # rewrite src/pipnet in place, print what changed and the report
    python docs/tools/docstrings.py --check    # change nothing; exit 1 when some file would change
    python docs/tools/docstrings.py --src COPY/src/pipnet        # another tree (its parent must be importable)

After a rewrite, ``mkdocs build --strict`` fails on any cross-reference the site cannot resolve.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import io
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pipnet"

ROLE = re.compile(r":(?:py:)?(func|meth|class|attr|mod|data|exc|obj|const):`([^`]+)`")
LITERAL = re.compile(r"``(?!`)((?:(?!``).)+?)``(?!`)", re.S)
SPEC = re.compile(r"spec(?:ification)?\s+sections?\s+[0-9][0-9.,\- and]*", re.I)  # across a line break too
ISSUE = re.compile(r"[Ii]ssue\s+#?[0-9]+")
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.M)  # the name, its indented options
INHERITED = re.compile(r"inherited_members:\s*\[([^\]]*)\]")

# Where a reader outside the project finds what each section of the internal specification covers.
SPEC_SECTIONS = {
    "1": "the model (paper Fig. 2; docs: Faithfulness, 'The model')",
    "2": "the backbones (docs: Faithfulness, 'Backbones')",
    "3": "the losses (paper Eq. 1-3; docs: Faithfulness, 'Losses')",
    "4": "the training schedule (paper supplementary Sec. 1.1 and Algorithm 1; docs: Faithfulness, 'Training')",
    "5": "the augmentation (paper supplementary Sec. 1.3; docs: Faithfulness, 'Augmentation')",
    "6": "the evaluation (paper Sec. on evaluation, supplementary Sec. 1.4; docs: Faithfulness, 'Evaluation')",
    "7": "latent cell -> image patch (paper supplementary Sec. 1.2; docs: Faithfulness, 'Patches')",
    "8": "the paper's figures (paper Figs. 3 and 4)",
    "9": "the published results (paper Tables 1-3)",
    "10": "the published code's protocol (docs: Faithfulness, 'The published code')",
}


# ---- what the site documents ---------------------------------------------------------------------------------

def _import(path: str):
    """The object at dotted ``path``, found as griffe finds it: an attribute of its parent first (``pipnet.predict``
    is the function the package exports, not the module of that name), else a submodule; None when missing."""
    parts = path.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except Exception:  # noqa: BLE001 - not importable: not a target
        return None
    for i, name in enumerate(parts[1:], 2):
        if hasattr(obj, name):
            obj = getattr(obj, name)
            continue
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001
            return None
    return obj


def _canonical(obj, fallback: str) -> str:
    if inspect.ismodule(obj):
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        return f"{module}.{qualname}"
    return fallback


def _has_doc(obj) -> bool:
    return bool(getattr(obj, "__doc__", None))


def documented(docs: Path) -> dict[str, str]:
    """Canonical path -> the identifier the site renders it under, for every ``::: name`` and its members."""
    out: dict[str, str] = {}
    for page in sorted(docs.rglob("*.md")):
        for ident, options in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            obj = _import(ident)
            if obj is None:
                continue
            out.setdefault(_canonical(obj, ident), ident)
            if inspect.isclass(obj):
                inherited = INHERITED.search(options)
                shown = {n.strip(" '\"") for n in inherited.group(1).split(",")} if inherited else set()
                for klass in obj.__mro__:  # its own members, and the inherited ones the page lists
                    for name, member in vars(klass).items():
                        if name.startswith("_") or (klass is not obj and name not in shown):
                            continue
                        target = getattr(member, "fget", None) or getattr(member, "__func__", None) or member
                        if callable(target) and _has_doc(target):
                            out.setdefault(f"{_canonical(klass, ident)}.{name}", f"{ident}.{name}")
                            out.setdefault(f"{_canonical(obj, ident)}.{name}", f"{ident}.{name}")
            elif inspect.ismodule(obj):
                names = getattr(obj, "__all__", None) or [n for n in vars(obj) if not n.startswith("_")]
                for name in names:
                    member = getattr(obj, name, None)
                    if (inspect.isfunction(member) or inspect.isclass(member)) and member.__module__ == obj.__name__ \
                            and _has_doc(member):
                        out.setdefault(_canonical(member, f"{ident}.{name}"), f"{ident}.{name}")
    return out


@dataclass
class Resolver:
    """Turns a role's target, seen from one module (and class), into the identifier the site renders, or None."""

    targets: dict[str, str]
    cache: dict[tuple[str, str, str], str | None] = field(default_factory=dict)

    def __call__(self, target: str, module: str, cls: str) -> str | None:
        key = (target, module, cls)
        if key not in self.cache:
            self.cache[key] = self._resolve(target, module, cls)
        return self.cache[key]

    def _resolve(self, target: str, module: str, cls: str) -> str | None:
        candidates = [target]
        if cls:
            candidates.append(f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
        if not target.startswith(f"{PACKAGE}."):
            candidates.append(f"{PACKAGE}.{target}")
        for candidate in candidates:
            if candidate in self.targets:
                return self.targets[candidate]
            obj = _import(candidate)
            if obj is None:
                continue
            parent = _import(candidate.rsplit(".", 1)[0]) if "." in candidate else None
            name = candidate.rsplit(".", 1)[-1]
            fallback = f"{_canonical(parent, candidate.rsplit('.', 1)[0])}.{name}" if parent else candidate
            canonical = _canonical(obj, fallback)
            return self.targets.get(canonical)  # found the object: documented on the site or not
        return None


# ---- the rewrite ---------------------------------------------------------------------------------------------

def convert(text: str, resolve=None, module: str = "", cls: str = "") -> str:
    """``text`` with its Sphinx roles and reST literals in Markdown: cross-references where ``resolve`` finds
    the target on the site, code spans otherwise (``resolve=None``: code spans only)."""

    def role(match: re.Match) -> str:
        body = match.group(2).strip()
        explicit = re.fullmatch(r"(.+?)\s*<([^>]+)>", body, re.S)
        if explicit:
            shown, target = explicit.group(1).strip(), explicit.group(2).strip().lstrip("~")
        else:
            target = body.lstrip("~").lstrip(".")
            shown = target.rsplit(".", 1)[-1] if body.startswith("~") else target
        ident = resolve(target, module, cls) if resolve else None
        return f"[`{shown}`][{ident}]" if ident else f"`{shown}`"

    def literal(match: re.Match) -> str:
        body = match.group(1)
        if "`" in body or re.search(r"\n\s*\n", body):
            return match.group(0)  # Markdown reads ``a`b`` as code already; never join paragraphs
        return f"`{body}`"

    return LITERAL.sub(literal, ROLE.sub(role, text))


def _module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstring_contexts(tree: ast.Module) -> dict[tuple[int, int], tuple[str, bool]]:
    """(line, column) of each docstring -> (enclosing class qualname, whether it ends up in ``--help``)."""
    out: dict[tuple[int, int], tuple[str, bool]] = {}

    def is_dataclass(node: ast.ClassDef) -> bool:
        return any("dataclass" in ast.unparse(d) for d in node.decorator_list)

    def visit(node, classes: list[str], help_text: bool):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            out[body[0].value.lineno, body[0].value.col_offset] = (".".join(classes), help_text)
        if isinstance(node, ast.ClassDef):
            # attribute docstrings (a string after a field) are read by jsonargparse too
            for stmt in node.body[1:]:
                value = stmt.value if isinstance(stmt, ast.Expr) else None
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    out[value.lineno, value.col_offset] = (".".join(classes + [node.name]), is_dataclass(node))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, classes + [child.name], is_dataclass(child))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, classes, False)
            else:
                visit(child, classes, help_text)

    visit(tree, [], False)
    return out


def rewrite_source(source: str, module: str, resolve) -> str:
    """The source of one module with every string literal converted (see `convert`)."""
    contexts = _docstring_contexts(ast.parse(source))
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.STRING, tokenize.COMMENT) or not (ROLE.search(tok.string) or "``" in tok.string):
            continue
        context = contexts.get(tok.start) if tok.type == tokenize.STRING else None
        if context is None:  # not a docstring: help=..., messages: no cross-references
            new = convert(tok.string)
        else:
            cls, help_text = context
            new = convert(tok.string, None if help_text else resolve, module, cls)
        if new != tok.string:
            start = offsets[tok.start[0] - 1] + tok.start[1]
            end = offsets[tok.end[0] - 1] + tok.end[1]
            edits.append((start, end, new))
    for start, end, new in reversed(edits):
        source = source[:start] + new + source[end:]
    return source


def mentions(path: Path, root: Path) -> list[str]:
    """``file:line: text  -> suggestion`` for each mention of the internal specification's sections or of an
    issue number in a file (a mention may run over a line break)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = []
    for match in sorted([*SPEC.finditer(text), *ISSUE.finditer(text)], key=lambda m: m.start()):
        number = text.count("\n", 0, match.start()) + 1
        said = " ".join(match.group(0).split())
        if match.re is SPEC:
            first = re.search(r"[0-9]+", said).group(0)
            hint = SPEC_SECTIONS.get(first, "the faithfulness page")
        else:
            hint = "drop it"
        out.append(f"{path.relative_to(root)}:{number}: {lines[number - 1].strip()}\n    -> {said!r}: {hint}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src" / PACKAGE, help="the package folder to rewrite")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="the docs whose ::: names are targets")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file would change")
    parser.add_argument("--quiet", action="store_true", help="no report of spec-section and issue mentions")
    args = parser.parse_args(argv)
    src = args.src.resolve()
    sys.path.insert(0, str(src.parent))  # resolve names in the tree being rewritten
    resolve = Resolver(documented(args.docs))
    changed, report = [], []
    for path in sorted(src.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        new = rewrite_source(source, _module_name(path, src), resolve)
        if new != source:
            changed.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
        report += mentions(path, src.parent)
    verb = "would change" if args.check else "rewrote"
    for path in changed:
        print(f"{verb} {path.relative_to(src.parent)}")
    print(f"{verb} {len(changed)} files")
    if report and not args.quiet:
        print(f"\n{len(report)} mentions for a person to reword (the reader has no spec and no issue tracker):")
        print("\n".join(report))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
