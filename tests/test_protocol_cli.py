"""The command line around the protocol switch: a data root without a source, `--ood` repeated, `--protocol`,
and the report showing the latest `pipnet evaluate`."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import image_folder, run_cli  # noqa: E402
from test_data_cub import cub_root  # noqa: E402,F401  (the fixture writes a tiny CUB in its format)
from test_train_cli import TINY  # noqa: E402

from pipnet.data import DataConfig  # noqa: E402
from pipnet.data.build import resolve_source  # noqa: E402
from pipnet.data.errors import DataError  # noqa: E402


def test_resolve_source_detects_layouts_and_refuses_the_rest(tmp_path, cub_root):  # noqa: F811
    assert resolve_source(DataConfig()) == "planted"
    assert resolve_source(DataConfig(root=str(cub_root))) == "cub"
    assert resolve_source(DataConfig(root=str(image_folder(tmp_path / "flowers")))) == "folder"
    assert resolve_source(DataConfig(source="folder", root=str(cub_root))) == "folder"  # explicit wins
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither CUB-200-2011"):
        resolve_source(DataConfig(root=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="takes no root"):
        resolve_source(DataConfig(source="planted", root=str(cub_root)))


def test_train_on_a_root_alone_then_evaluate_with_two_ood_folders_and_report(tmp_path, capsys):
    root = image_folder(tmp_path / "flowers", classes=("rose", "tulip", "daisy"), n=6, size=(40, 30))
    ood1 = image_folder(tmp_path / "cars", classes=("a",), n=3, size=(40, 30)) / "train"
    ood2 = image_folder(tmp_path / "pets", classes=("b",), n=2, size=(40, 30)) / "train"
    run = tmp_path / "run"
    rc, err = run_cli(capsys, "train", "--data.root", str(root), "--out", str(run), *TINY)
    assert rc == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["source"] == "folder"
    assert json.loads((run / "metrics.json").read_text())["num_images"] == 3  # the flowers, not planted data
    rc, err = run_cli(capsys, "evaluate", str(run), "--ood", str(ood1), "--ood", str(ood2), "--ood", f"{ood1}/",
                      "--protocol", "paper")
    assert rc == 0, err
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["protocol"] == "paper"
    # the same folder named twice (here with a trailing slash) is one set
    assert {k: v["num_images"] for k, v in evaluation["ood"].items()} == {"train": 3, "train_2": 2}
    rc, err = run_cli(capsys, "report", str(run), "--samples", "1")
    assert rc == 0, err
    html = (run / "report.html").read_text()
    assert "latest pipnet evaluate / ood / train_2 / fpr95" in html


def test_a_root_of_unknown_layout_stops_with_one_line(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    rc, err = run_cli(capsys, "train", "--data.root", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), *TINY)
    assert rc == 2 and err.count("\n") == 1 and "neither CUB-200-2011" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


PAPER_CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_configs_load_with_the_paper_protocol_and_rates(path):
    from pipnet.core.train_config import load_config

    config = load_config(str(path))
    assert config.protocol == "paper" and config.optim.lr == 0.05
    assert (config.schedule.epochs_pretrain, config.schedule.epochs) == (10, 60)
    assert (config.schedule.batch_size_pretrain, config.schedule.batch_size) == (128, 64)
    # Backbone rates of spec section 9: 1e-4 for CUB-ResNet50 and PETS, 5e-4 for CARS and CUB-ConvNeXt.
    slow = path.stem in ("cub-resnet50", "pets-convnext", "pets-resnet50")
    assert config.optim.lr_block == config.optim.lr_net == (1e-4 if slow else 5e-4)


def test_one_paper_config_per_table_row():
    assert [p.stem for p in PAPER_CONFIGS] == [f"{d}-{b}" for d in ("cars", "cub", "pets") for b in ("convnext", "resnet50")]
