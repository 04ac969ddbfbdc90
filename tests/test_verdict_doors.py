"""One model, one verdict: every door gives the same class, verdict and reason for the same image.

A tiny model trained in bf16 (its detectors set on fp32 scores, as training does everywhere), 47 image files
of every kind (planted test images, unrelated planted images, images with the parts of two classes, plain
colours and noise, on which it abstains), and every door run as a user runs it: ``pipnet.predict`` and
``pipnet.Predictor`` in Python, ``pipnet predict`` and ``pipnet explain`` as subprocesses, the web page over
HTTP from ``pipnet serve`` in its own process, the model exported with ``pipnet export`` and run by
``torch.jit.load`` with the deploy guide's NumPy verdict code, and ``pipnet predict`` again in a process that
computes like a CPU without native bf16 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``). Scores agree
within ``SCORE_TOLERANCE``; class, verdict, detector and sentence exactly.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import pytest
import torch

import pipnet
from pipnet.data import PlantedParts
from pipnet.train import train
from reliability_helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]
SCORE_TOLERANCE = 1e-4  # relative: fp32 kernels of one machine, in batches of different sizes (explain's printed
# scores: their 3 decimals)
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run trained in bf16 (1 + 2 epochs on 24 planted images)."""
    out = tmp_path_factory.mktemp("doors") / "run"
    config = tiny_config(out)
    config.runtime.precision = "bf16"
    config.model.num_features = 20  # 20 prototypes: a map's largest share can stay below 0.1, so some images abstain
    config.data.planted.test_per_class = 8
    config.data.planted.ood_images = 12
    config.data.planted.multi_images = 10
    torch.manual_seed(0)
    train(config)
    return out


@pytest.fixture(scope="module")
def images(run, tmp_path_factory) -> list[Path]:
    """47 files: 12 planted test images, 12 unrelated ones, 10 with two classes' parts, 5 plain colours, 8 noise."""
    folder = tmp_path_factory.mktemp("images")
    from pipnet.model.run_folder import RunFolder

    config = RunFolder(run).training_config().data.planted
    files = []
    for split, count in (("test", 12), ("ood", 12), ("multi", 10)):
        parts = PlantedParts(config, split)
        for i in range(count):
            files.append(folder / f"{split}{i:02d}.png")
            parts.image(i).save(files[-1])
    import numpy as np
    from PIL import Image

    for i in range(5):
        files.append(folder / f"plain{i:02d}.png")
        Image.new("RGB", (32, 32), (50 * i, 255 - 50 * i, (97 * i) % 256)).save(files[-1])
    rng = np.random.default_rng(0)
    for i in range(8):
        files.append(folder / f"noise{i:02d}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(files[-1])
    return files


@pytest.fixture(scope="module")
def cli_rows(run, images) -> dict[str, dict]:
    return cli_predict(run, images)


def key(path: str | Path) -> str:
    return Path(path).name


def python_doors(run: Path, images: list[Path]) -> dict[str, dict]:
    rows = {key(p.path): {"class": p.predicted_class, "score": p.score, "kind": p.verdict, "detector": p.detector,
                          "sentence": p.sentence} for p in pipnet.predict(run, images)}
    predictor = pipnet.Predictor.load(run, device="cpu")
    from PIL import Image

    decisions = predictor.decide_images([Image.open(p) for p in images], image_ids=[str(p) for p in images])
    direct = {key(d.explanation.image_id): {"class": d.predicted_class, "score": d.score, "kind": d.verdict.kind,
                                            "detector": d.verdict.detector, "sentence": d.verdict.sentence}
              for d in decisions}
    return {"pipnet.predict": rows, "Predictor": direct}


def cli_predict(run: Path, images: list[Path], **extra: str) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-m", "pipnet", "predict", str(run), *map(str, images), "--format", "jsonl",
                          "--no-progress", "--device", "cpu"], env=env(**extra), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {key(x["path"]): {"class": x["predicted_class"], "score": x["score"], "kind": x["verdict"],
                             "detector": x["detector"], "sentence": x["sentence"]} for x in lines}


def cli_explain(run: Path, images: list[Path], folder: Path) -> dict[str, dict]:
    """What ``pipnet explain`` prints for every image; its JSON files (written for a few, with their PNGs) say the same."""
    out = subprocess.run([sys.executable, "-m", "pipnet", "explain", str(run), *map(str, images), "--device", "cpu"],
                         env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows: dict[str, dict] = {}
    for line in out.stdout.splitlines():
        if not line.startswith(" "):  # "PATH: SENTENCE", then "  CLASS: score S" per top class
            path, sentence = line.split(": ", 1)
            rows[key(path)] = {"sentence": sentence, "kind": sentence.split(":", 1)[0], "class": None, "score": 0.0}
            current = rows[key(path)]
        elif line.startswith("  ") and not line.startswith("    ") and current["class"] is None and current["kind"] != "abstained":
            name, score = line.strip().rsplit(": score ", 1)
            current["class"], current["score"], current["printed"] = name, float(score), 5e-4  # printed to 3 decimals
    few = images[:: len(images) // 4][:4]
    done = subprocess.run([sys.executable, "-m", "pipnet", "explain", str(run), *map(str, few), "--out", str(folder),
                           "--device", "cpu"], env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for p in few:
        record = json.loads((folder / f"{p.stem}.json").read_text())
        assert record["verdict"]["sentence"] == rows[key(p)]["sentence"] and (folder / f"{p.stem}.png").is_file()
    return rows


def page(run: Path, images: list[Path]) -> dict[str, dict]:
    """Each image uploaded to ``pipnet serve`` (its own process, a free port) and the page's verdict read back."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-m", "pipnet", "serve", str(run), "--port", str(port), "--device", "cpu"],
                              env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                opener.open(base + "/", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None and time.monotonic() < deadline, "pipnet serve did not start"
                time.sleep(0.2)
        rows = {}
        for p in images:
            boundary = uuid.uuid4().hex
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{p.name}\"\r\n"
                    f"Content-Type: image/png\r\n\r\n").encode() + p.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
            req = urllib.request.Request(base + "/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
            text = opener.open(req, timeout=60).read().decode()
            found = re.search(r'id="judgement" data-kind="(\w+)">([^<]*)</p>', text)
            assert found, text[:2000]
            verdict = re.search(r'<strong id="verdict">([^<]*)</strong>', text).group(1)
            name = None if found.group(1) == "abstained" else html.unescape(verdict).rsplit(" (score ", 1)[0]
            rows[key(p)] = {"class": name, "kind": found.group(1), "sentence": html.unescape(found.group(2))}
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def exported(run: Path, images: list[Path], tmp_path: Path) -> dict[str, dict]:
    """``pipnet export`` (TorchScript), the file run on the images by ``torch.jit.load``, and the verdicts reached
    from its outputs by the deploy guide's NumPy code (executed from the page as written)."""
    path = tmp_path / "model.pt"
    done = subprocess.run([sys.executable, "-m", "pipnet", "export", str(run), "--format", "torchscript", "--out", str(path)],
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "the same as pipnet predict's" in done.stdout
    predictor = pipnet.Predictor.load(run, device="cpu")
    from PIL import Image

    x = torch.stack([predictor.transform(Image.open(p)) for p in images])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still runs
        scores, _, logits = torch.jit.load(str(path))(x)
    guide = (ROOT / "docs" / "guides" / "deploy.md").read_text()
    code = re.search(r"<!-- verdict-from-export -->\n```python\n(.*?)```", guide, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "deploy.md", "exec"), namespace)  # noqa: S102 - the guide's own code, run as a reader would
    kinds = namespace["verdicts"](str(run), scores.detach().numpy(), logits.detach().numpy())
    names = predictor.class_names
    return {key(p): {"class": None if k == "abstained" else names[int(scores[i].argmax())], "score": float(scores[i].max()),
                     "kind": str(k)} for i, (p, k) in enumerate(zip(images, kinds))}


def disagreements(reference: dict[str, dict], other: dict[str, dict], fields: tuple[str, ...]) -> list[tuple]:
    out = []
    for name, want in reference.items():
        got = other[name]
        for f in fields:
            if f == "score" and "score" in got:
                tolerance = max(SCORE_TOLERANCE * max(1.0, abs(want["score"])), got.get("printed", 0.0))
                if abs(got["score"] - want["score"]) > tolerance:
                    out.append((name, f, want[f], got[f]))
            elif f in got and got[f] != want[f]:
                out.append((name, f, want[f], got[f]))
    return out


def test_every_door_gives_the_same_verdict(run, images, cli_rows, tmp_path):
    doors = python_doors(run, images)
    reference = doors["pipnet.predict"]
    assert len(reference) == len(images) >= 40
    kinds = {r["kind"] for r in reference.values()}
    print("verdicts:", {k: sum(r["kind"] == k for r in reference.values()) for k in sorted(kinds)})
    assert kinds == {"known", "unknown", "abstained"}, kinds  # not vacuous: every verdict occurs
    assert {r["detector"] for r in reference.values()} == {"knn"}  # the folder's stored choice
    doors["pipnet predict"] = cli_rows
    doors["pipnet explain"] = cli_explain(run, images, tmp_path / "explained")
    doors["web page"] = page(run, images)
    doors["exported"] = exported(run, images, tmp_path)
    fields = ("class", "score", "kind", "detector", "sentence")
    found = {door: disagreements(reference, rows, fields) for door, rows in doors.items()}
    assert all(not d for d in found.values()), found


def test_a_cpu_without_native_bf16_gives_the_same_verdicts(run, images, cli_rows):
    # The folder was trained in bf16 (natively here when the CPU has it); its detectors were set on fp32
    # scores, so a process that computes as an AVX2-only CPU decides the same.
    here = cli_rows
    avx2 = cli_predict(run, images, **AVX2)
    assert not disagreements(here, avx2, ("class", "score", "kind", "detector")), disagreements(here, avx2, ("class", "score", "kind", "detector"))
    stored = json.loads((run / "detectors.json").read_text())
    assert stored["precision"] == "fp32" and stored["decides"] == "knn"
    assert "precision: bf16" in (run / "config.yaml").read_text()  # trained in bf16
