"""The page's shortcut repair over real HTTP: prototypes marked forbid/keep, the repair run in the background
into a new model folder (loadable, its edit log recording the repair), the page showing the repair's table and
the verdicts before and after on the image on show; the repair refused without data, and from another site.

The app runs under uvicorn in a thread (as in test_serve_visitors); a tiny model, one fine-tuning epoch.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

pytest.importorskip("uvicorn", reason="the serve extra is missing (pip install -e '.[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is missing (pip install -e '.[serve]')")

from test_serve_visitors import Client, raw, run_dir, serving  # noqa: F401 (run_dir: the tiny run folder fixture)

from pipnet import Predictor
from pipnet.model import PIPNet
from pipnet.use.serve import create_app

pytestmark = pytest.mark.slow  # a server and a fine-tuning epoch

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def marks(html: str) -> dict[int, str]:
    return {int(p): m for p, m in re.findall(r'class="mark" data-prototype="(\d+)" data-mark="(\w+)"', html)}


def test_mark_repair_in_the_background_and_compare_before_and_after(run_dir, tmp_path):
    out_dir = tmp_path / "edited"
    out_dir.mkdir()
    app = create_app(run_dir, out_dir=out_dir, device="cpu")
    with serving(app) as base:
        client = Client(base)
        assert client.post("/pick", split="test", index="0")[0] == 200
        status, html, _ = client.post("/repair", name="too-soon", epochs="1")
        assert status == 400 and "mark at least one prototype" in html and not (out_dir / "too-soon").exists()

        client.post("/mark", prototype="0", mark="forbid", back="gallery")
        client.post("/mark", prototype="4", mark="forbid", back="gallery")
        client.post("/mark", prototype="1", mark="keep", back="gallery")
        status, html, _ = client.post("/mark", prototype="4", mark="none", back="edits")
        assert status == 200 and marks(html) == {0: "forbid", 1: "keep"}
        for bad in ({"prototype": "0", "mark": "delete"}, {"prototype": "999", "mark": "forbid"}):
            status, html, _ = client.post("/mark", **bad, back="")
            assert status == 400 and marks(html) == {0: "forbid", 1: "keep"}

        # Another site's page cannot start one (the same check as every POST).
        cookie = "; ".join(f"{c.name}={c.value}" for c in client.jar)
        status, _, body = raw(base, "POST", "/repair", b"name=evil&epochs=1",
                              {**FORM, "Cookie": cookie, "Origin": "http://evil.example"})
        assert status == 403 and "cross-site" in body

        status, headers, _ = raw(base, "POST", "/repair", b"name=rep-1&reason=a+shortcut&epochs=1", {**FORM, "Cookie": cookie})
        assert status == 303
        location = headers["location"].split("#")[0]  # the page that will say how the repair ended
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, html, _ = client.request(location)  # as the page's refresh does
            if "A repair into" not in html:
                break
            assert 'http-equiv="refresh"' in html
            time.sleep(0.3)
        repaired = out_dir / "rep-1"
        assert "saved it to" in html and str(repaired) in html, html[:2000]
        assert not (out_dir / "evil").exists()

        # The new folder: loadable, the forbidden prototype switched off, the repair in its edit log.
        model = PIPNet.from_pretrained(repaired)
        assert 0 in model.config.disabled_prototypes and model.classifier.weight[:, 0].eq(0).all()
        log = [json.loads(line) for line in (repaired / "edits.jsonl").read_text().splitlines()]
        forbid = next(r for r in log if r["action"] == "forbid")
        assert forbid["prototypes"] == [0] and forbid["remembered"] == [1]
        assert forbid["tool"] == "pipnet serve" and forbid["reason"] == "a shortcut" and log[-1]["action"] == "refit"
        assert (repaired / "config.yaml").is_file() and (repaired / "thresholds.json").is_file()

        # The page: the repair's table (its numbers those of the log) and both verdicts on the image on show.
        table = re.search(r'<pre id="repair-table">(.*?)</pre>', html, re.DOTALL).group(1)
        assert "test accuracy before the repair" in table and "their presence at forbidden patches" in table
        assert f"{forbid['accuracy_original']:.2%}" in table
        rows = re.findall(r'<tr class="repair-verdict" data-kind="\w+"><th>([^<]+)</th><td><strong>([^<]+)</strong>', html)
        x = app.state.explorer.data.picker["test"][0][0]
        expected = [("before the repair", Predictor.load(run_dir, device="cpu")),
                    ("after the repair", Predictor.load(repaired, device="cpu"))]
        assert rows == [(who, p.decide(x[None])[0].predicted_class or "no class") for who, p in expected]

        status, html, _ = client.post("/pick", split="test", index="1")  # another image: compared again
        x1 = app.state.explorer.data.picker["test"][1][0]
        rows = re.findall(r'<tr class="repair-verdict" data-kind="\w+"><th>([^<]+)</th><td><strong>([^<]+)</strong>', html)
        assert rows[1] == ("after the repair", expected[1][1].decide(x1[None])[0].predicted_class or "no class")

        status, html, _ = client.post("/repair", name="rep-1", epochs="1")  # folders are never overwritten
        assert status == 400 and "exists already" in html


def test_without_data_the_repair_button_is_disabled_and_says_why(run_dir, tmp_path):
    model_only = tmp_path / "model"
    model_only.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(run_dir / name, model_only / name)
    app = create_app(model_only, out_dir=tmp_path, device="cpu")
    with serving(app) as base:
        client = Client(base)
        status, html, _ = client.post("/mark", prototype="0", mark="forbid", back="gallery")
        assert status == 200 and marks(html) == {0: "forbid"}
        assert re.search(r'id="repair-unavailable">The repair needs the training and test images', html)
        assert re.search(r'<button type="submit" disabled title="The repair needs', html)
        status, html, _ = client.post("/repair", name="no-data", epochs="1")
        assert status == 400 and "Not repaired: the repair needs" in html and not (tmp_path / "no-data").exists()
