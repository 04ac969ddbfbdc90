"""The card end to end: `pipnet train` writes the quality block into metrics.json, `pipnet evaluate --no-quality` skips it."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import run_cli  # noqa: E402
from test_train_cli import TINY  # noqa: E402

from pipnet.evaluation.evaluate import Metrics, format_metrics_table  # noqa: E402

PLANTED = ["--data.source", "planted", "--data.planted.num_classes", "3", "--data.planted.train_per_class", "4",
           "--data.planted.test_per_class", "2", "--data.planted.ood_images", "0", "--data.planted.multi_images", "0",
           "--data.planted.size", "48"]


def test_train_writes_the_card_and_evaluate_can_skip_it(tmp_path, capsys):
    run = tmp_path / "run"
    rc, err = run_cli(capsys, "train", "--out", str(run), *TINY, *PLANTED, "--data.planted.variant", "twins")
    assert rc == 0, err
    quality = json.loads((run / "metrics.json").read_text())["quality"]
    assert set(quality) >= {"consistency", "stability", "duplicates", "everywhere"}
    assert set(quality["sensitivity"]["prototypes"]) == set(quality["sensitivity"]["dominant"])  # every used one carded
    assert quality["consistency"]["params"]["mu"] == 0.8 and quality["stability"]["params"]["sigma"] == 0.2
    assert quality["consistency"]["num_prototypes"] + quality["consistency"]["unscored"] > 0
    table = format_metrics_table(Metrics.from_dict(json.loads((run / "metrics.json").read_text())))
    assert "duplicate pairs (train)" in table and "consistency (train)" in table
    rc, err = run_cli(capsys, "evaluate", str(run), "--no-quality", "--out", str(tmp_path / "e.json"))
    assert rc == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["quality"] is None
