"""The package's folders are its layers: import-linter's contracts (pyproject.toml) hold, they break on an
upward import, an import circle or a module given no layer, and the package map page is drawn from the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the pipnet under ``root/src`` with the contracts of ``root/pyproject.toml``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([LINT, "--no-cache", "--no-logo", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("where, text, broken", [
    # an upward import: the bottom layer reaching the top
    ("core/utils.py", "from pipnet.use import predict as _upward\n", "Layers"),
    # a circle inside one folder (metrics is below evaluate)
    ("evaluation/metrics.py", "import pipnet.evaluation.evaluate as _circle\n", "No import circles"),
    # a new top-level module that no layer names
    ("stray.py", "import pipnet.core.utils\n", "Layers"),
])
def test_contracts_break(tmp_path, where, text, broken):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src" / "pipnet", tmp_path / "src" / "pipnet", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "src" / "pipnet" / where
    target.write_text((target.read_text() if target.exists() else "") + text)
    result = lint(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_package_map_is_current():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "tools" / "package_map.py"), "--check"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_pipnet_predict_is_the_function():
    import pipnet

    assert callable(pipnet.predict) and pipnet.predict is sys.modules["pipnet.use.predict"].predict
    assert pipnet.losses is sys.modules["pipnet.model.losses"]


def test_import_pipnet_is_light():
    code = "import sys, pipnet; print(any(m.startswith(('pipnet.use.serve', 'fastapi')) for m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
