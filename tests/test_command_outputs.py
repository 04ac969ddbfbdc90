"""What the commands write under hostile use: no input or other output written over, a bad file one error entry
among explained ones, and no CSV cell that a spreadsheet would run. Real files, real commands (in-process)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from reliability_helpers import TINY_BACKBONE, assert_one_error_line, one_thread, run_cli  # noqa: F401 (one_thread: autouse)

from pipnet import create_model
from pipnet.cli import main
from pipnet.core.utils import FORMULA_STARTS, spreadsheet_safe
from pipnet.use.outputs import unique_names

HOSTILE_CLASS = "=cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model whose every class has weight on every prototype, so an image's top class is never empty;
    one class name is a spreadsheet formula."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = create_model(TINY_BACKBONE, num_classes=2, num_features=8, image_size=32, pretrained=False,
                         class_names=[HOSTILE_CLASS, "@SUM(1+1)"])  # fmt: skip
    with torch.no_grad():
        model.classifier.weight.fill_(1.0)
    model.save_pretrained(folder)
    return folder


def _image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def _runs_in_a_spreadsheet(cell: str) -> bool:
    if not cell.startswith(FORMULA_STARTS):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


def test_output_names_are_unique_per_input_path():
    assert unique_names(["photo.jpg"]) == ["photo"]
    assert unique_names(["a/x.png", "b/x.png", "a/x.jpg", "b/y.png"]) == ["a_x.png", "b_x.png", "x.jpg", "y"]
    assert unique_names(["a/X.png", "b/x.png"]) == ["a_X.png", "b_x.png"]  # a case difference is no difference
    assert unique_names(["a/x.png", "a/x.png"]) == ["x", "x-2"]  # one path given twice
    names = unique_names([f"d{i % 3}/e{i % 2}/img.png" for i in range(6)])
    assert len({n.casefold() for n in names}) == 6


def test_explain_writes_one_result_per_input_path(model_dir, tmp_path, capsys):
    images = [_image(tmp_path / "a" / "x.png", (200, 0, 0)), _image(tmp_path / "b" / "x.png", (0, 200, 0)),
              _image(tmp_path / "a" / "x.jpg", (0, 0, 200))]  # fmt: skip
    out = tmp_path / "explained"
    rc, err = run_cli(capsys, "explain", model_dir, *images, "--out", out)
    assert rc == 0, err
    records = sorted(out.glob("*.json"))
    assert len(records) == 3 and len(list(out.glob("*.png"))) == 3
    assert sorted(json.loads(r.read_text())["image_id"] for r in records) == sorted(map(str, images))


def test_explain_refuses_an_out_that_would_write_over_an_input(model_dir, tmp_path, capsys):
    image = _image(tmp_path / "photos" / "x.png", (10, 20, 30))
    before = image.read_bytes()
    rc, err = run_cli(capsys, "explain", model_dir, image, "--out", tmp_path / "photos")  # x.png would be the picture
    assert_one_error_line(rc, err, "--out would write over the input", str(image))
    assert image.read_bytes() == before and not (tmp_path / "photos" / "x.json").exists()
    config = _image(tmp_path / "config.png", (1, 2, 3))  # config.json would replace the model's
    rc, err = run_cli(capsys, "explain", model_dir, config, "--out", model_dir)
    assert_one_error_line(rc, err, "--out would write over the input", "config.json")
    assert json.loads((model_dir / "config.json").read_text())["class_names"][0] == HOSTILE_CLASS


@pytest.mark.parametrize("command, args, name", [
    ("export", ["--format", "torchscript"], "model.safetensors"),
    ("evaluate", [], "config.json"),
    ("report", [], "thresholds.json"),  # a file the model folder would be read from, even before it exists
])
def test_commands_refuse_an_out_that_is_a_file_of_the_model(model_dir, capsys, command, args, name):
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    rc, err = run_cli(capsys, command, model_dir, *args, "--out", model_dir / name)
    assert_one_error_line(rc, err, "--out would write over the input", name)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before


def test_explain_into_the_model_folder_writes_beside_its_files_and_again(model_dir, tmp_path, capsys):
    image = _image(tmp_path / "photo.png", (5, 50, 150))
    for _ in range(2):  # its own outputs of a first run are no inputs of the second
        rc, err = run_cli(capsys, "explain", model_dir, image, "--out", model_dir)
        assert rc == 0, err
    assert (model_dir / "photo.json").is_file() and (model_dir / "photo.png").is_file()
    (model_dir / "photo.json").unlink()
    (model_dir / "photo.png").unlink()


def test_predict_refuses_an_out_that_is_an_input(model_dir, tmp_path, capsys):
    image = _image(tmp_path / "photos" / "x.png", (10, 20, 30))
    before = image.read_bytes()
    rc, err = run_cli(capsys, "predict", model_dir, tmp_path / "photos", "--out", image, "--no-progress")
    assert_one_error_line(rc, err, "--out would write over the input", str(image))
    rc, err = run_cli(capsys, "predict", model_dir, image, "--out", model_dir / "config.json", "--no-progress")
    assert_one_error_line(rc, err, "--out would write over the input", "config.json")
    assert image.read_bytes() == before and json.loads((model_dir / "config.json").read_text())["num_classes"] == 2


def test_explain_reports_a_bad_file_and_explains_the_rest(model_dir, tmp_path, capsys):
    good = _image(tmp_path / "good.png", (90, 90, 200))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    latin1 = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")  # a name that is not UTF-8, a good image
    with open(latin1, "wb") as f:
        f.write(good.read_bytes())
    latin1 = os.fsdecode(latin1)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["explain", str(model_dir), str(cut), latin1, str(good), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    reason = json.loads((out / "cut.json").read_text())["error"]  # the error entry
    assert reason and f"cannot read {cut}: {reason}" in captured.err
    assert "explained 2 images; 1 files could not be read" in captured.err
    lines = captured.out.splitlines()  # each explained image: "PATH: VERDICT SENTENCE", the path escaped as predict does
    assert sum("caf\\xe9.png: " in line for line in lines) == 1
    assert sum(line.startswith(f"{good}: ") for line in lines) == 1
    assert json.loads((out / "cut.json").read_text())["image_id"] == str(cut)
    assert (out / "good.png").is_file() and (out / "good.json").is_file()
    assert os.path.exists(os.path.join(os.fsencode(out), b"caf\xe9.png"))  # the picture, under the same odd name
    # Nothing readable at all: the one error line (and each file's reason above it).
    rc, err = run_cli(capsys, "explain", model_dir, cut, tmp_path / "missing.png")
    assert_one_error_line(rc, err, "none of the 2 files could be read")
    assert "missing.png: no such file" in err


def test_spreadsheet_safe_follows_the_owasp_rule():
    for start in FORMULA_STARTS:
        assert spreadsheet_safe(f"{start}cmd") == f"'{start}cmd"
    for plain in ("photos/a.png", "rose", "", "'quoted", "-0.25", "+3", "-inf", "1e-3"):
        assert spreadsheet_safe(plain) == plain


def test_predict_csv_escapes_formulas_and_jsonl_keeps_the_names(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ['=HYPERLINK("evil.example","x").png', "+1+1.png", "-2-1.png", "@SUM(A1).png", "plain.png"]
    for n, name in enumerate(names):
        _image(tmp_path / name, (40 * n, 100, 50))
    rc, err = run_cli(capsys, "predict", model_dir, "--out", "table.csv", "--no-progress", "--", *names)
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text(encoding="utf-8"))))
    assert [r["path"] for r in rows] == ["'" + n for n in names[:4]] + ["plain.png"]
    classes = {r["predicted_class"] for r in rows}
    assert classes and classes <= {"'" + HOSTILE_CLASS, "'@SUM(1+1)"}
    assert not [cell for row in rows for cell in row.values() if _runs_in_a_spreadsheet(cell)]
    rc, err = run_cli(capsys, "predict", model_dir, "--out", "table.jsonl", "--no-progress", "--", *names)
    assert rc == 0, err
    lines = [json.loads(line) for line in (tmp_path / "table.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["path"] for x in lines] == names and {x["predicted_class"] for x in lines} == {c[1:] for c in classes}


def test_history_csv_quotes_text_a_spreadsheet_would_run_and_keeps_numbers(tmp_path):
    from pipnet.core.train_config import TrainConfig
    from pipnet.model.run_folder import RunFolder
    from pipnet.train.training_run import TrainingRun as RunDir

    run = RunDir(tmp_path, TrainConfig(out=str(tmp_path)))
    run.append_history([{"epoch": 1, "phase": "=cmd|' /C calc'!A0", "loss": -0.25}, {"epoch": 2, "phase": "joint", "loss": 0.5}])
    rows = list(csv.DictReader(io.StringIO(run.folder.history.read_text())))
    assert [r["phase"] for r in rows] == ["'=cmd|' /C calc'!A0", "joint"] and rows[0]["loss"] == "-0.25"
    assert RunFolder(tmp_path).read_history()[0]["loss"] == -0.25  # numbers read back as numbers
