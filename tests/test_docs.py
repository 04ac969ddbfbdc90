"""The documentation cannot rot: the site builds strictly and offline, every documented flag exists, the site
renders in a real browser.

- ``mkdocs build --strict`` (once per session, into a temporary folder, in a subprocess that has no way out to
  the internet) fails on a broken link, a page missing from the nav or an API name mkdocstrings cannot resolve.
- Every ``pipnet COMMAND --flag [value]`` written in a shell code block or an inline code span of README.md and
  docs/**/*.md is checked against the parser that command runs with (``pipnet.cli.build_parser``): the flag
  must exist and its value, when one is written, must parse.
- Debian's chromium (driven by Playwright, as in tests/test_serve.py) opens every built page from the disk, with
  every request that is neither a file nor localhost aborted, and fails on a request that failed or went
  outside, on text that looks like an unrendered Markdown table or code fence, and on a literal Sphinx role
  (``:func:`x```, double backticks). Search works from files, the package map is a picture, the navigation is there.
- docs/tools/docstrings.py, the tool that converts the docstrings of src/ from Sphinx roles to Markdown, is run
  on a copy of src/: it leaves no role and its output is stable.

Needs the ``docs`` extra (in ``dev``): mkdocs, mkdocs-material, mkdocstrings[python].
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
pytest.importorskip("mkdocs", reason="the docs extra is missing (pip install -e '.[docs]')")
pytest.importorskip("material", reason="the docs extra is missing (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is missing (pip install -e '.[docs]')")

from pipnet.cli import COMMANDS, build_parser  # noqa: E402

sys.path.insert(0, str(DOCS / "tools"))
import docstrings  # noqa: E402  (docs/tools/docstrings.py)

# Any attempt to reach the internet during the build goes to a closed local port and fails.
OFFLINE_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The site, built once per session with ``mkdocs build --strict`` (a broken link or API name fails it)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, **OFFLINE_ENV, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_strict_build_writes_every_page_and_loads_nothing_from_outside(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    for page in ["index.html", "guides/quick-start.html", "reference/api.html", "reference/cli.html", "reference/config.html"]:
        assert page in pages
    outside = re.compile(r"""<(?:link|script|img)[^>]+(?:href|src)=["'](?:https?:)?//""")
    for page in pages:
        html = (site / page).read_text(encoding="utf-8")
        assert not outside.search(html), f"{page} loads something from another machine: {outside.search(html).group(0)}"


def test_api_reference_is_generated_from_the_docstrings(site):
    html = (site / "reference" / "api.html").read_text(encoding="utf-8")
    import pipnet

    for name in pipnet.__all__:
        assert f'id="pipnet.{name}"' in html, f"pipnet.{name} has no entry in the API reference"
    assert "from_pretrained" in html and "save_pretrained" in html  # members, from the class's docstrings


def test_cli_reference_is_every_parsers_own_help(site):
    html = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    for command in COMMANDS:
        parser = build_parser(command)
        assert f"usage: pipnet {command}" in html
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in html, f"pipnet {command} {flag} is missing from the CLI reference"


def test_cli_reference_says_what_each_command_is_for_with_examples_before_its_flags(site):
    sys.path.insert(0, str(DOCS / "hooks"))
    import cli_reference

    written = cli_reference.examples()
    html = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    for command in COMMANDS:
        assert command in written, f"docs/hooks/cli_examples.md has no section for pipnet {command}"
        purpose, _, rest = written[command].partition("```")
        assert len(purpose.split()) >= 8, f"pipnet {command}: say what it is for"
        assert re.search(rf"^pipnet {command}\b", rest, re.M), f"pipnet {command}: no example runs it"
        section = html[html.index(f'id="pipnet-{command}"'):]
        assert section.index("Examples") < section.index("Usage")  # then the flags, read from the parser
    assert set(written) == set(COMMANDS)


def test_config_reference_lists_every_key_with_its_default(site):
    import dataclasses

    from pipnet.core.train_config import TrainConfig

    html = (site / "reference" / "config.html").read_text(encoding="utf-8")

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                yield from keys(type(default), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    for key in keys(TrainConfig):
        assert f"<code>{key}</code>" in html, f"config key {key} is missing from the config reference"
    assert "<code>convnext_tiny_26</code>" in html  # a default, read from the dataclass


# ---- one current number per fact; nothing a reader outside the project cannot follow ------------------------

def markdown_tables(text: str) -> list[dict[str, dict[str, str]]]:
    """Each pipe table of ``text`` as {row label: {column header: cell}}, bold marks removed."""
    tables, lines = [], text.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            def cells(line):
                return [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
            header, rows = cells(lines[i]), {}
            for line in lines[i + 2:]:
                if not line.startswith("|"):
                    break
                row = cells(line)
                rows[row[0]] = dict(zip(header[1:], row[1:]))
            tables.append(rows)
    return tables


def _column(row: dict[str, str], cpu: str) -> str:
    (value,) = [cell for header, cell in row.items() if header.startswith(cpu)]
    return value


def test_readme_quick_start_and_results_quote_the_same_demo_run():
    current = (DOCS / "results" / "demo.md").read_text(encoding="utf-8").split("## Current figures")[1].split("\n## ")[0]
    (figures,) = markdown_tables(current)
    readme = next(t for t in markdown_tables((ROOT / "README.md").read_text(encoding="utf-8")) if "`make demo` (wall time)" in t)
    quick = next(t for t in markdown_tables((DOCS / "guides" / "quick-start.md").read_text(encoding="utf-8"))
                 if "wall time" in t)
    for cpu in ["AMD EPYC Zen 4", "AMD EPYC Zen 1"]:
        assert _column(readme["`make demo` (wall time)"], cpu) == _column(figures["wall time"], cpu), cpu
        for label, row in quick.items():
            assert _column(row, cpu) == _column(figures[label], cpu), (label, cpu)
    assert len(quick) >= 5


INTERNAL = re.compile(r"spec\s+sections?\s+[0-9]|[Ii]ssue\s+#?[0-9]+")  # across a line break too
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|home|root|mnt)/[\w.-]")
WRITTEN = ["README.md", "CHANGELOG.md", "CITATION.cff", "configs/**/*.yaml", "docs/**/*.md", "docs/**/*.yml"]


def test_written_docs_cite_no_internal_note_and_no_machine_path():
    found = []
    for pattern in WRITTEN:
        for path in sorted(ROOT.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            for match in [*INTERNAL.finditer(text), *MACHINE_PATH.finditer(text)]:
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    assert not found, "a reader outside the project cannot follow these:\n" + "\n".join(found)


def test_the_internal_reference_check_catches_what_it_should():
    assert INTERNAL.search("the grid (spec section 7)") and INTERNAL.search("round 2 (issue 23)")
    assert INTERNAL.search("the box of its grid cell (spec\nsection 7)")
    assert MACHINE_PATH.search("built into /work/devsets/x") and MACHINE_PATH.search("--out /tmp/demo")
    assert not (INTERNAL.search("the paper's Section 3") or MACHINE_PATH.search("runs/demo and src/pipnet/x.py"))


@pytest.mark.slow
def test_no_page_cites_an_internal_note_or_a_machine_path(rendered):
    """Every rendered page, the ones generated from src/ (API, modules, CLI) included."""
    found = {name: INTERNAL.findall(r["all_text"]) + MACHINE_PATH.findall(r["all_text"]) for name, r in rendered.items()}
    found = {name: hits for name, hits in found.items() if hits}
    assert not found, f"pages that cite an internal note or a machine path: {found}"


# ---- every documented command line is accepted by its parser ----------------------------------------------

FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
SHELL = {"", "bash", "sh", "shell", "console", "text"}
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
PLACEHOLDER = re.compile(r"^[\[\]'\"]*[A-Z][A-Z0-9_./-]*(\.\.\.)?[\[\]'\"]*$")  # DIR, RUN_DIR, N, '[PHOTOS_DIR]'


def documented_command_lines() -> list[tuple[str, str]]:
    """``(where, command line)`` for every line that runs ``pipnet`` in a shell block or inline code span."""
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT).as_posix()
        for match in FENCE.finditer(text):
            if match.group(1) in SHELL:
                for line in match.group(2).replace("\\\n", " ").splitlines():
                    found.append((where, line))
                    comment = line.split("#", 1)[1] if "#" in line else ""
                    if re.search(rf"\bpipnet ({'|'.join(COMMANDS)})\b", comment):  # `make demo  # or: pipnet demo --out D`
                        found.append((where, comment))
        prose = FENCE.sub("", text)
        found += [(where, span) for span in INLINE.findall(prose)]
    return [(where, line) for where, line in found if re.search(r"(^|[\s/])pipnet\s+[a-z]", line)]


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose
        return line.split()


def _dummy_command_line(parser, skip_flag: str) -> list[str]:
    """Positional arguments and required options, filled in so that one flag can be parsed on its own."""
    args = []
    for action in parser._actions:
        if not action.option_strings and action.nargs not in ("?", "*") and action.dest != "help":
            args.append("X")
        elif action.option_strings and getattr(action, "required", False) and skip_flag not in action.option_strings:
            args += [action.option_strings[0], action.choices[0] if action.choices else "1"]
    return args


def _parse_error(parser, argv: list[str]) -> str | None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {e.code}"
    return None


def _pipnet_arguments(line: str) -> list[str]:
    """The words after ``pipnet`` (or ``.venv/bin/pipnet``, ``-m pipnet``) in a command line, or []."""
    tokens = _tokens(line)
    starts = [i for i, t in enumerate(tokens) if t.rsplit("/", 1)[-1] == "pipnet" and i + 1 < len(tokens)]
    return tokens[starts[0] + 1:] if starts else []


def check_command_line(line: str) -> list[str]:
    """What is wrong with one documented ``pipnet ...`` line: unknown commands, flags, or values."""
    rest = _pipnet_arguments(line)
    if not rest:
        return []
    command, args = rest[0], rest[1:]
    if PLACEHOLDER.match(command) or command.endswith(":"):  # `pipnet COMMAND --help`, `pipnet demo: error: ...`
        return []
    if command not in COMMANDS:
        return [f"unknown command {command!r}"]
    parser = build_parser(command)
    actions = {flag: action for action in parser._actions for flag in action.option_strings}
    problems = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token in ("...", "|", ">", "&&", ";") or not token.startswith("--"):
            if token in ("|", ">", "&&", ";"):
                break
            continue
        flag, _, inline_value = token.partition("=")
        action = actions.get(flag)
        if action is None:
            problems.append(f"pipnet {command} has no flag {flag}")
            continue
        takes_value = action.nargs != 0
        value = inline_value or None
        if takes_value and value is None and i < len(args) and not args[i].startswith("--") and args[i] != "...":
            value = args[i]
            i += 1
        if flag in ("-h", "--help", "--config") or value is None or PLACEHOLDER.match(value):
            continue  # --config loads a file; placeholders (DIR, N) have no value to check
        for alternative in value.split("|"):  # `--format torchscript|onnx` documents two choices
            error = _parse_error(parser, [*_dummy_command_line(parser, flag), flag, alternative])
            if error:
                problems.append(f"pipnet {command} {flag} {alternative}: {error}")
    return problems


def test_the_documents_run_pipnet_often_enough_for_this_check_to_matter():
    lines = [line for _, line in documented_command_lines() if _pipnet_arguments(line)]
    commands = {_pipnet_arguments(line)[0] for line in lines}
    assert len(lines) > 40 and {"train", "demo", "evaluate", "predict", "refit", "export", "serve"} <= commands


def test_every_documented_flag_is_accepted_by_its_command():
    problems = [f"{where}: `{line.strip()}`: {problem}"
                for where, line in documented_command_lines() for problem in check_command_line(line)]
    assert not problems, "documented flags that the commands do not accept:\n" + "\n".join(problems)


@pytest.mark.parametrize("line, wrong", [
    ("pipnet evaluate RUN --oood DIR", "has no flag --oood"),
    ("pipnet train --data.rot /data", "has no flag --data.rot"),
    ("pipnet export RUN --format zip --out m.zip", "--format zip"),
    ("pipnet train --schedule.epochs many", "--schedule.epochs many"),
    ("pipnet trian --config x.yaml", "unknown command 'trian'"),
])  # fmt: skip
def test_the_flag_check_catches_what_it_should(line, wrong):
    problems = check_command_line(line)
    assert problems and wrong in problems[0], problems


def test_the_flag_check_accepts_correct_lines():
    for line in ["pipnet train --config configs/cpu-small.yaml --data.root DIR --model.backbone_kwargs '{stages: 6}'",
                 "pipnet evaluate RUN_DIR --ood /data/cub --protocol paper --no-quality",
                 "torchrun --nproc_per_node=4 -m pipnet train --runtime.precision bf16",
                 "pipnet refit RUN --disable 12,40 --out NEW  # a comment --not-a-flag"]:
        assert check_command_line(line) == [], line


# ---- the site in a real browser, offline ----------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


def _browser(sync_api, pw):
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)


def _needs_chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install playwright)")


LOCAL = ("file://", "data:", "blob:", "about:", "http://127.0.0.1", "http://localhost")
# What a reader must never see as text: Markdown that did not render, or a Sphinx role.
TABLE_ROW = re.compile(r"^\s*\|.*\|.*\|\s*$|^\s*\|?\s*:?-{3,}:?\s*\|\s*:?-{3,}", re.M)
FENCE_TEXT = re.compile(r"^\s*(```|~~~)", re.M)
SPHINX = re.compile(r":(?:py:)?(?:func|meth|class|attr|mod|data|exc|obj):`|``")  # in Markdown sources
# ... and on a page, where Markdown has turned the role's backticks into a <code> element (":func:" + "x")
SPHINX_SHOWN = re.compile(r":(?:py:)?(?:func|meth|class|attr|mod|data|exc|obj):(?=\S)|``")
ANY_FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", re.S | re.M)  # fenced blocks, in list items too


@pytest.fixture(scope="session")
def rendered(site) -> dict[str, dict]:
    """Every page of the site opened in Chromium from the disk, offline: its visible text (the article, the
    code blocks' text removed), the requests that went outside or failed, the JavaScript errors."""
    sync_api = _needs_chromium()
    out: dict[str, dict] = {}
    with sync_api.sync_playwright() as pw:
        browser = _browser(sync_api, pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(15_000)
            record: dict = {}

            def only_local(route):
                url = route.request.url
                if url.startswith(LOCAL):
                    route.continue_()
                else:
                    record["outside"].append(url)
                    route.abort()

            page.route("**/*", only_local)
            page.on("requestfailed", lambda r: record["failed"].append(f"{r.url} ({r.failure})"))
            page.on("pageerror", lambda e: record["errors"].append(str(e)))
            for html in sorted(site.rglob("*.html")):
                name = html.relative_to(site).as_posix()
                if name == "404.html":  # a server's answer to a wrong address: it links its assets from the root
                    continue
                record = {"outside": [], "failed": [], "errors": []}
                page.goto(html.as_uri(), wait_until="load")
                # prose only: code blocks may show `|` tables and ``` fences on purpose (a shell session)
                article = page.locator("article.md-content__inner")
                text = article.evaluate("a => { const c = a.cloneNode(true); "
                                        "c.querySelectorAll('pre, code').forEach(e => e.remove()); "
                                        "return c.innerText; }")
                out[name] = {**record, "text": text, "all_text": article.inner_text()}
        finally:
            browser.close()
    return out


@pytest.mark.slow
def test_every_page_loads_offline_from_files_with_nothing_failed_or_fetched_from_outside(site, rendered):
    assert len(rendered) == len(list(site.rglob("*.html"))) - 1 > 25  # all but 404.html
    problems = [f"{name}: {kind}: {items}" for name, r in rendered.items()
                for kind in ("outside", "failed", "errors") if r[kind] for items in [r[kind][:3]]]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_no_page_shows_an_unrendered_table_or_code_fence(rendered):
    problems = [f"{name}: {match.group(0).strip()[:80]!r}" for name, r in rendered.items()
                for pattern in (TABLE_ROW, FENCE_TEXT) for match in pattern.finditer(r["text"])]
    assert not problems, "Markdown shown as text:\n" + "\n".join(problems)


def test_the_markup_checks_catch_what_they_should():
    assert TABLE_ROW.search("| a | b |\n|---|---|---|") and TABLE_ROW.search("|---|---|")
    assert FENCE_TEXT.search("text\n```mermaid\nflowchart TD")
    assert SPHINX.search("see :func:`pipnet.predict`") and SPHINX.search("the ``--out`` flag")
    assert SPHINX_SHOWN.search("see :func:pipnet.predict") and SPHINX_SHOWN.search("(the ``--out`` flag)")
    assert not SPHINX_SHOWN.search("protocol: default (or paper)")
    assert not (TABLE_ROW.search("a | b, or c") or FENCE_TEXT.search("x ``` y") or SPHINX.search("`x` and [y][z]"))


def _src_keeps_sphinx_roles() -> list[str]:
    """The modules of src/pipnet whose docstrings the conversion tool would still rewrite."""
    src = ROOT / "src" / "pipnet"
    return [p.name for p in src.rglob("*.py")
            if docstrings.rewrite_source(p.read_text(encoding="utf-8"), "", None) != p.read_text(encoding="utf-8")]


@pytest.mark.slow
def test_no_page_shows_a_sphinx_role(rendered):
    """Neither hand-written pages nor the pages generated from src/ (API, modules, CLI)."""
    found = {name: SPHINX_SHOWN.findall(r["all_text"]) for name, r in rendered.items()}
    found = {name: len(roles) for name, roles in found.items() if roles}
    written = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
               if SPHINX.search(ANY_FENCE.sub("", p.read_text(encoding="utf-8")))]
    assert not written, f"hand-written pages with Sphinx roles: {written}"
    assert not found, f"pages that show Sphinx roles as text: {found}"


def test_src_is_converted_and_cites_no_internal_note():
    """The sources the API pages and `--help` come from: nothing left for the conversion tool to rewrite,
    and no mention a reader outside the project cannot follow."""
    assert not _src_keeps_sphinx_roles(), "run python docs/tools/docstrings.py"
    src = ROOT / "src" / "pipnet"
    cited = [f"{p.relative_to(ROOT)}: {m.group(0)!r}" for p in sorted(src.rglob("*.py"))
             for m in INTERNAL.finditer(p.read_text(encoding="utf-8"))]
    assert not cited, "reword what python docs/tools/docstrings.py lists:\n" + "\n".join(cited)


def test_help_shows_no_sphinx_role():
    """`pipnet COMMAND --help` in the terminal: plain text, no Sphinx role or double backticks."""
    shown = {}
    for command in COMMANDS:
        roles = SPHINX_SHOWN.findall(build_parser(command).format_help())
        if roles:
            shown[command] = roles
    assert not shown, f"--help shows Sphinx roles: {shown}"


@pytest.mark.slow
def test_the_docstring_tool_converts_a_copy_of_src_completely_and_stably(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))
    tool = [sys.executable, str(DOCS / "tools" / "docstrings.py"), "--src", str(copy / "pipnet"), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(copy)}
    first = subprocess.run(tool, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*tool, "--check"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, "a second run would change more:\n" + again.stdout
    for path in copy.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        compile(text, str(path), "exec")  # still Python
        assert not docstrings.ROLE.search(text), f"{path}: {docstrings.ROLE.search(text).group(0)}"


def test_the_docstring_tool_writes_cross_references_the_site_can_resolve():
    resolve = docstrings.Resolver(docstrings.documented(DOCS))
    assert docstrings.convert(":meth:`~pipnet.PIPNet.predict` and ``x``", resolve) == \
        "[`predict`][pipnet.PIPNet.predict] and `x`"
    # a name in the current class, then the current module, as Sphinx looks it up
    assert docstrings.convert(":meth:`predict`", resolve, "pipnet.model", "PIPNet") == \
        "[`predict`][pipnet.PIPNet.predict]"
    assert docstrings.convert(":meth:`save_pretrained`", resolve, "pipnet.model", "PIPNet") == \
        "[`save_pretrained`][pipnet.PIPNet.save_pretrained]"  # listed for the page if inherited
    # an object the site does not show, or a module path that is no object: a code span, never a broken link
    assert docstrings.convert(":func:`pipnet.core.utils.nothing_here`", resolve) == "`pipnet.core.utils.nothing_here`"
    assert docstrings.convert(":class:`the model <pipnet.PIPNet>`", resolve) == "[`the model`][pipnet.PIPNet]"
    assert docstrings.convert(":func:`~pipnet.PIPNet.predict`") == "`predict`"  # --help text: code spans only
    source = ('@dataclass\nclass C:\n    """Args:\n        a: see :class:`pipnet.PIPNet`."""\n\n\n'
              'def f():\n    """:class:`pipnet.PIPNet`."""\n')
    out = docstrings.rewrite_source(source, "m", resolve)
    assert "a: see `pipnet.PIPNet`." in out and '"""[`pipnet.PIPNet`][pipnet.PIPNet]."""' in out


@contextlib.contextmanager
def served(folder: Path):
    """``folder`` over HTTP on a free local port, as a plain static file server would serve the site."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_search_works_from_files_and_from_a_server_and_the_package_map_is_a_picture(site):
    sync_api = _needs_chromium()
    with sync_api.sync_playwright() as pw, served(site) as url:
        browser = _browser(sync_api, pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(15_000)
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(LOCAL) else r.abort())
            for home in [(site / "index.html").as_uri(), f"{url}/index.html"]:
                page.goto(home)
                page.locator("label.md-search__icon, .md-search__input").first.click()
                page.locator("input.md-search__input").press_sequentially("prototype", delay=30)  # keys, as typed
                results = page.locator(".md-search-result__item")
                results.first.wait_for(state="visible")
                assert results.count() > 3, home

            page.goto((site / "design" / "package-map.html").as_uri())
            picture = page.locator("article img[src$='package-map.svg']")
            assert picture.evaluate("img => img.complete && img.naturalWidth > 200")
            assert page.locator("article .mermaid, article code.language-mermaid").count() == 0
        finally:
            browser.close()


@pytest.mark.slow
def test_home_and_api_pages_render_with_their_navigation_offline(site):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install playwright)")
    outside: list[str] = []

    def only_local(route):
        url = route.request.url
        if url.startswith(("file://", "data:", "blob:", "http://127.0.0.1", "http://localhost")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(15_000)
            page.route("**/*", only_local)
            page.goto((site / "index.html").as_uri())
            assert page.locator("h1").first.inner_text().rstrip("¶").strip() == "pipnet"
            nav = page.locator("nav.md-nav--primary")
            assert nav.is_visible()
            for section in ["Guides", "Reference", "Results", "Design"]:
                assert nav.get_by_text(section, exact=True).first.is_visible(), section
            # the theme's stylesheet applied: the header is coloured, not the browser's default transparent
            assert page.locator("header.md-header").evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
            assert page.locator("img[src$='.png']").first.evaluate("img => img.complete && img.naturalWidth > 0")

            nav.get_by_role("link", name="Python API").click()
            page.wait_for_url("**/reference/api.html")
            assert page.locator("[id='pipnet.PIPNet']").is_visible()
            assert page.locator("nav.md-nav--primary").get_by_role("link", name="Command line").is_visible()
            contents = page.locator(".md-sidebar--secondary nav.md-nav--secondary")  # this page's table of contents
            assert contents.get_by_role("link", name="PIPNet", exact=True).is_visible()
        finally:
            browser.close()
    assert outside == [], f"the site asked another machine for {outside}"
