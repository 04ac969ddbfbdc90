"""The `Examples:` sections of the public entry points run as written (doctests), each in a fresh folder.

They are what the API pages show, so an example that no longer runs fails here. Tiny random-weight
backbones, no download; each example writes only under its own temporary folder.
"""

from __future__ import annotations

import doctest

import pytest

import pipnet
from pipnet.explanation.predictor import Predictor
from pipnet.model.factory import create_model
from pipnet.model.pipnet import PIPNet
from pipnet.model.saving import Pretrained
from pipnet.train import engine
from pipnet.use import predict as predict_module

#: name -> the object whose docstring holds the example (the public name in the API pages first).
EXAMPLES = {
    "pipnet.create_model": create_model,
    "pipnet.PIPNet.predict": PIPNet.predict,
    "pipnet.PIPNet.save_pretrained": Pretrained.save_pretrained,
    "pipnet.PIPNet.from_pretrained": Pretrained.from_pretrained,
    "pipnet.Predictor": Predictor,
    "pipnet.Predictor.load": Predictor.load,
    "pipnet.Predictor.decide_image": Predictor.decide_image,
    "pipnet.predict": predict_module.predict,
    "pipnet.train.train": engine.train,
}


def test_the_examples_are_those_of_the_public_names():
    assert pipnet.create_model is create_model and pipnet.PIPNet is PIPNet and pipnet.Predictor is Predictor
    assert pipnet.predict is predict_module.predict and pipnet.PIPNet.from_pretrained.__func__ is Pretrained.from_pretrained.__func__
    from pipnet.train import train

    assert train is engine.train


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "pipnet.train.train" else n for n in EXAMPLES])
def test_example_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    obj = EXAMPLES[name]
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f"{name} has no Examples section"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in examples:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
