"""``pipnet serve`` with many visitors at once (issue 24): each browser has its own state (cookie), pages and
uploads are answered while a refit runs, the security headers are sent, and a cut-off form is named.

Real HTTP: the app runs under uvicorn in a thread on a free port; each client is a urllib opener with its
own cookie jar (a separate browser), many of them in threads.
"""

from __future__ import annotations

import http.cookiejar
import io
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image
from reliability_helpers import TINY_BACKBONE, tiny_config

uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is missing (pip install -e '.[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is missing (pip install -e '.[serve]')")

from pipnet import create_model  # noqa: E402
from pipnet.data import build_data  # noqa: E402
from pipnet.model import PIPNet  # noqa: E402
from pipnet.use.serve import create_app  # noqa: E402
from pipnet.core.train_config import dump_config  # noqa: E402

pytestmark = pytest.mark.slow  # a server and many clients


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny run folder (model + config.yaml) whose every class has weight on a few prototypes."""
    run = tmp_path_factory.mktemp("run")
    config = tiny_config(run)
    classes = build_data(config.data).classes
    torch.manual_seed(0)
    model = create_model(TINY_BACKBONE, num_classes=3, num_features=8, image_size=32, class_names=classes, pretrained=False)
    with torch.no_grad():
        model.classifier.weight.zero_()
        for c in range(3):
            model.classifier.weight[c, [c, c + 3]] = torch.tensor([2.0, 1.0])
    model.save_pretrained(run)
    (run / "config.yaml").write_text(dump_config(config))
    return run


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory):
    """(base URL, output folder, app) of the app on a free port of 127.0.0.1, in a thread."""
    out_dir = tmp_path_factory.mktemp("edited")
    app = create_app(run_dir, out_dir=out_dir, device="cpu", workers=2, max_visitors=64, max_pixels=2_000_000)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", out_dir, app
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


class Client:
    """One browser: its own cookie jar; follows the 303 redirects like a browser does."""

    def __init__(self, base: str):
        self.base, self.jar = base, http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str, dict]:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=60) as r:
                return r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}

    def post(self, path: str, **fields: str) -> tuple[int, str, dict]:
        body = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in fields.items()).encode()
        return self.request(path, body, {"Content-Type": "application/x-www-form-urlencoded"})

    def upload(self, name: str, content: bytes, close: bool = True) -> tuple[int, str, dict]:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
        if not close:
            body = body[: -len(f"--{boundary}--\r\n")]
        return self.request("/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def png(colour: tuple[int, int, int], size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def shown_title(html: str) -> str | None:
    found = re.search(r"uploaded image (client-\d+-\d+\.png)", html)
    return found.group(1) if found else None


def edited_prototypes(html: str) -> set[int]:
    return {int(p) for p in re.findall(r'<tr class="edit" data-prototype="(\d+)"', html)}


def test_concurrent_visitors_never_see_or_save_each_others_state(server):
    base, out_dir, _ = server
    clients, rounds = 16, 6
    wrong, errors = [], []

    def visit(c: int) -> None:
        client = Client(base)
        mine = c % 8
        status, html, _ = client.post("/edit", prototype=mine, action="off", class_index="", back="edits")
        if status != 200 or edited_prototypes(html) != {mine}:
            (errors if status != 200 else wrong).append((c, "edit", status))
        for r in range(rounds):
            name = f"client-{c}-{r}.png"
            status, html, _ = client.upload(name, png((c * 15, r * 40, 100)))
            if status != 200:
                errors.append((c, r, status, html[:200]))
            elif shown_title(html) != name or edited_prototypes(html) != {mine}:
                wrong.append((c, r, shown_title(html), edited_prototypes(html)))
            status, html, _ = client.request("/")
            if status != 200 or shown_title(html) != name or edited_prototypes(html) != {mine}:
                (errors if status != 200 else wrong).append((c, r, "page", status))
        status, html, _ = client.post("/save", name=f"saved-by-{c}")
        notices = re.findall(r'id="notice" role="status">([^<]*)<', html)
        if status != 200 or notices != [f"Saved the edited model to {out_dir / f'saved-by-{c}'}"]:
            (errors if status != 200 else wrong).append((c, "save", status, notices))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(visit, range(clients)))
    assert errors == [] and wrong == []
    # Each saved model holds its visitor's edit and no other.
    for c in range(clients):
        assert PIPNet.from_pretrained(out_dir / f"saved-by-{c}").config.disabled_prototypes == [c % 8]
    assert not list(out_dir.glob(".*"))  # no leftovers


def test_headers_cookie_bad_forms_and_pixel_limit(server):
    base, _, _ = server
    client = Client(base)
    status, html, headers = client.request("/")
    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"] and "<script>" not in html
    assert '<script src="/page.js">' in html and client.request("/page.js")[0] == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert len(next(iter(client.jar)).value) >= 40  # 32 random bytes
    status, html, _ = client.upload("x.png", png((1, 2, 3)), close=False)
    assert status == 400 and "closing boundary is missing" in html
    status, html, _ = client.upload("big.png", png((1, 2, 3), size=1500))  # 2.25 MP, the limit here is 2
    assert status == 400 and "too many pixels" in html and "--max-megapixels" in html
    status, html, _ = client.upload("fine.png", png((1, 2, 3)))
    assert status == 200 and "uploaded image fine.png" in html


def test_pages_and_uploads_are_answered_while_a_refit_runs(server, monkeypatch):
    base, out_dir, app = server
    explorer, gate = app.state.explorer, threading.Event()
    real = explorer._refit
    monkeypatch.setattr(explorer, "_refit", lambda *a: (gate.wait(60), real(*a))[1])  # hold the refit until told
    client, other = Client(base), Client(base)
    client.post("/edit", prototype=1, action="off", class_index="", back="edits")
    status, html, _ = client.post("/refit", name="held-refit", reason="test")
    assert status == 200 and "A refit into" in html and 'http-equiv="refresh"' in html
    started = time.monotonic()
    assert client.upload("during.png", png((9, 9, 9)))[0] == 200  # the visitor's own page works meanwhile
    status, html, _ = other.request("/")  # and another visitor's
    assert status == 200 and "A refit into" not in html
    assert time.monotonic() - started < 20 and not (out_dir / "held-refit").exists()
    gate.set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, html, _ = client.request("/")
        if "A refit into" not in html:
            break
        time.sleep(0.2)
    assert "saved it to" in html and str(out_dir / "held-refit") in html
    refit = PIPNet.from_pretrained(out_dir / "held-refit")
    assert refit.config.disabled_prototypes == [1]
    assert (out_dir / "held-refit" / "thresholds.json").is_file()
