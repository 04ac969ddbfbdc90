"""The README's demo, end to end: generate, train, evaluate, report (the longest test: a few minutes).

It runs where the demo takes about two minutes: on a GPU, or on a CPU that computes bf16 natively (AMX or
avx512_bf16). On a CPU without (fp32) the demo takes 5-6 minutes, a third of the whole suite, which would
put CI over its time limit; ``PIPNET_DEMO_TEST=1`` runs it there too.
"""

import json
import os
import re

import pytest
import torch

from pipnet import PIPNet
from pipnet.cli import main
from pipnet.core.precision import native_bf16

FAST, WHY = (True, "a GPU") if torch.cuda.is_available() else native_bf16(torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.skipif(not FAST and os.environ.get("PIPNET_DEMO_TEST") != "1",
                    reason=f"the demo takes 5-6 minutes here ({WHY}); PIPNET_DEMO_TEST=1 runs it")
def test_demo_learns_and_writes_its_run_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out)  # the last line is the run folder
    metrics = json.loads((out / "metrics.json").read_text())
    # Chance is 1/6. These are issue #4's targets for the demo model; the README records the measured
    # values (seeds 0/1/2 on the 2-core machine: top-1 1.00/1.00/0.975, FPR95 0.00 each, test top-10
    # purity 0.890/0.907/0.900, local size 2.7/3.3/2.3).
    assert metrics["top1_accuracy"] >= 0.90
    assert metrics["local_size"] <= 10
    assert metrics["ood"]["planted_ood"]["fpr95"] <= 0.05
    assert metrics["purity"]["test_top10"]["mean"] >= 0.8
    assert metrics["purity"]["test_top10"]["num_prototypes"] == metrics["global_size"]
    model = PIPNet.from_pretrained(out)
    html = (out / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "efficientnet_lite0 (stages=4)" in html
    for p in model.used_prototypes().tolist():
        assert f"#{p}" in html or f"prototype {p}" in html.lower()
