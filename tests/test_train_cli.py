"""`pipnet train` end to end on an ImageFolder tree and on a CUB-200-2011 layout, then evaluate and explain."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import image_folder, run_cli  # noqa: E402
from test_data_cub import cub_root  # noqa: E402,F401  (the fixture writes a tiny CUB in its format)

from pipnet import PIPNet  # noqa: E402

TINY = ["--model.backbone", "timm/test_convnext", "--model.pretrained", "false", "--model.num_features", "8",
        "--schedule.epochs_pretrain", "1", "--schedule.epochs", "2", "--schedule.freeze_epochs", "1",
        "--schedule.batch_size_pretrain", "4", "--schedule.batch_size", "4", "--runtime.progress", "false",
        "--data.image_size", "32"]


def test_train_on_an_image_folder_then_evaluate_and_explain(tmp_path, capsys):
    root = image_folder(tmp_path / "flowers", classes=("rose", "tulip", "daisy"), n=6, size=(40, 30))
    run = tmp_path / "run"
    rc, err = run_cli(capsys, "train", "--data.source", "folder", "--data.root", str(root), "--out", str(run), *TINY)
    assert rc == 0, err
    model = PIPNet.from_pretrained(run)
    assert model.config.class_names == ["daisy", "rose", "tulip"]
    assert (run / "sparsity.png").is_file()  # drawn by the command from history.csv
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 3  # one held-out image per class (val_fraction 0.2, at least one)
    rc, err = run_cli(capsys, "evaluate", str(run))
    assert rc == 0, err
    assert json.loads((run / "evaluation.json").read_text())["num_images"] == 3
    # --data takes a run's config.yaml (or the run folder) whole, model settings and all, as documented.
    for given in (str(run / "config.yaml"), str(run)):
        out = tmp_path / "again.json"
        rc, err = run_cli(capsys, "evaluate", str(run), "--data", given, "--no-quality", "--out", str(out))
        assert rc == 0, err
        assert json.loads(out.read_text())["num_images"] == 3
    stored = json.loads((run / "detectors.json").read_text())
    assert stored["decides"] == "knn" and stored["precision"] == "fp32" and stored["stored"] == ["knn", "paper"]
    image = next((root / "train" / "rose").iterdir())
    rc, err = run_cli(capsys, "explain", str(run), str(image), "--out", str(tmp_path / "explained"))
    assert rc == 0, err
    assert (tmp_path / "explained" / f"{image.stem}.json").is_file() and (tmp_path / "explained" / f"{image.stem}.png").is_file()


def test_train_on_a_cub_layout(tmp_path, capsys, cub_root):  # noqa: F811
    run = tmp_path / "run"
    rc, err = run_cli(capsys, "train", "--data.source", "cub", "--data.root", str(cub_root), "--out", str(run), *TINY)
    assert rc == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 3  # CUB's own split: the even image ids
    assert any(k.startswith("test_top") for k in metrics["purity"])  # CUB parts give purity (top-k, k <= images)
    assert PIPNet.from_pretrained(run).num_classes == 3


def test_resume_accepts_only_runtime_options_that_do_not_change_results(tmp_path, capsys):
    from pipnet.core.train_config import RESUME_RUNTIME, resume_flag_error

    assert resume_flag_error(["--resume", "RUN", "--runtime.device", "cpu", "--runtime.progress=false"]) is None
    assert set(RESUME_RUNTIME) == {"device", "num_workers", "prefetch", "progress", "log_every", "tensorboard"}
    for flag in ("--schedule.epochs", "--runtime.seed", "--runtime.precision", "--config", "--data.root"):
        assert flag in resume_flag_error(["--resume", "RUN", flag, "3"])
    rc, err = run_cli(capsys, "train", "--resume", str(tmp_path), "--schedule.epochs", "3")
    assert rc == 2
    assert "--schedule.epochs cannot be given with --resume" in err and "Traceback" not in err
