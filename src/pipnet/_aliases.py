"""The module paths of releases before the layered folders (``pipnet.evaluate``, ``pipnet.quality``, ...).

Each old name is an alias of its new module: ``import pipnet.evaluate`` returns the very module object
``pipnet.evaluation.evaluate``, so attributes set on one are seen through the other (and an old package's
submodules are never loaded twice). The finder goes first on ``sys.meta_path`` and answers only the old names,
which no file provides any more. Not part of the layers.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old path -> new path; an old package's submodules follow it (pipnet.quality.parts -> pipnet.evaluation.quality.parts)
MOVED = {
    "pipnet.utils": "pipnet.core.utils",
    "pipnet.data.config": "pipnet.core.data_config",
    "pipnet.train.config": "pipnet.core.train_config",
    "pipnet.backbones": "pipnet.model.backbones",
    "pipnet.losses": "pipnet.model.losses",
    "pipnet.official": "pipnet.model.official",
    "pipnet.patches": "pipnet.model.patches",
    "pipnet.run_folder": "pipnet.model.run_folder",
    "pipnet.inference": "pipnet.evaluation.inference",
    "pipnet.evaluate": "pipnet.evaluation.evaluate",
    "pipnet.metrics": "pipnet.evaluation.metrics",
    "pipnet.projection": "pipnet.evaluation.projection",
    "pipnet.thresholds": "pipnet.evaluation.thresholds",
    "pipnet.quality": "pipnet.evaluation.quality",
    "pipnet.diagnostics": "pipnet.train.diagnostics",
    "pipnet.refit": "pipnet.train.refit",
    "pipnet.explain": "pipnet.explanation.explain",
    "pipnet.render": "pipnet.explanation.render",
    "pipnet.report": "pipnet.explanation.report",
    "pipnet.predict": "pipnet.use.predict",
    "pipnet.export": "pipnet.use.export",
    "pipnet.serve": "pipnet.use.serve",
}


def new_name(name: str) -> str | None:
    """The current module path of an old one, or None when ``name`` did not move."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.spec = module.__spec__  # the import machinery stamps the alias's spec on it next: put it back after
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Answer the old names from now on (``pipnet/__init__`` calls it before its own imports)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


def register_loaded() -> None:
    """Enter the old names of the modules loaded so far (``pipnet/__init__`` calls it after its imports).

    Loading an alias later would set it as an attribute of its parent package, and ``pipnet.predict`` is the
    function there, not the module: entered now, ``import pipnet.predict`` leaves the function in place.
    """
    for old, new in MOVED.items():
        parent, child = old.rsplit(".", 1)
        if new in sys.modules and old not in sys.modules and parent in sys.modules:
            sys.modules[old] = sys.modules[new]
            if child not in vars(sys.modules[parent]):
                setattr(sys.modules[parent], child, sys.modules[new])
