"""``pipnet serve`` with many visitors at once: each browser has its own state (cookie), made by its first
action and never by a request without a cookie; a full table forgets the visitors who lose least first and
tells them; pages and uploads are answered while a refit runs; the security headers are sent; a cut-off
form is named and a client that goes away is a line in the log.

Real HTTP: the app runs under uvicorn in a thread on a free port; each client is a urllib opener with its
own cookie jar (a separate browser), many of them in threads.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import io
import os
import re
import socket
import subprocess
import sys
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


@contextlib.contextmanager
def serving(app):
    """The app on a free port of 127.0.0.1, in a thread: yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory):
    """(base URL, output folder, app) of the app on a free port of 127.0.0.1, in a thread."""
    out_dir = tmp_path_factory.mktemp("edited")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    app = create_app(run_dir, out_dir=out_dir, device="cpu", workers=2, max_visitors=64, max_pixels=2_000_000)
    with serving(app) as base:
        yield base, out_dir, app
    Image.MAX_IMAGE_PIXELS = pillow_limit  # the limit is the process's: give the other tests theirs back


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


def raw(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
    """One request, redirects not followed: (status, headers with lower-case names, body)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


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
    assert "set-cookie" not in headers and not list(client.jar)  # a visit makes no state: the first action does
    status, headers, _ = raw(base, "POST", "/edit", b"prototype=1&action=off&class_index=&back=edits",
                             {"Content-Type": "application/x-www-form-urlencoded"})
    cookie = headers["set-cookie"]
    assert status == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert len(cookie.split(";")[0].split("=", 1)[1]) >= 40  # 32 random bytes
    status, html, _ = client.upload("x.png", png((1, 2, 3)), close=False)
    assert status == 400 and "closing boundary is missing" in html
    assert "at most 10 MB and 2 megapixels)" in html  # the limit in force, as set
    status, html, _ = client.upload("big.png", png((1, 2, 3), size=1500))  # 2.25 MP, the limit here is 2
    assert status == 400 and "too many pixels" in html and "more than the limit of 2 " in html and "--max-megapixels" in html
    status, html, _ = client.upload("fine.png", png((1, 2, 3)))
    assert status == 200 and "uploaded image fine.png" in html


def test_pages_and_uploads_are_answered_while_a_refit_runs(server, monkeypatch):
    base, out_dir, app = server
    explorer, gate = app.state.explorer, threading.Event()
    real = explorer._refit
    monkeypatch.setattr(explorer, "_refit", lambda *a: (gate.wait(60), real(*a))[1])  # hold the refit until told
    client, other = Client(base), Client(base)
    client.post("/edit", prototype=1, action="off", class_index="", back="edits")
    cookie = "; ".join(f"{c.name}={c.value}" for c in client.jar)
    status, headers, _ = raw(base, "POST", "/refit", b"name=held-refit&reason=test",
                             {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    location = headers["location"].split("#")[0]  # the page that will say how the refit ended
    status, html, _ = client.request(location)
    assert status == 200 and "A refit into" in html and f'http-equiv="refresh" content="2; url={location}"' in html
    started = time.monotonic()
    assert client.upload("during.png", png((9, 9, 9)))[0] == 200  # the visitor's own page works meanwhile
    status, html, _ = other.request("/")  # and another visitor's
    assert status == 200 and "A refit into" not in html
    assert time.monotonic() - started < 20 and not (out_dir / "held-refit").exists()
    gate.set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, html, _ = client.request(location)  # as the page's refresh does
        if "A refit into" not in html:
            break
        time.sleep(0.2)
    assert "saved it to" in html and str(out_dir / "held-refit") in html
    refit = PIPNet.from_pretrained(out_dir / "held-refit")
    assert refit.config.disabled_prototypes == [1]
    assert (out_dir / "held-refit" / "thresholds.json").is_file()


def test_requests_without_a_cookie_make_no_visitor_and_forget_no_one(run_dir, tmp_path):
    """What another site's page makes a browser send (no cookie: it is SameSite=Strict), a 404, a refused
    request: none makes a visitor, so none pushes out the one who is working, however many there are."""
    app = create_app(run_dir, out_dir=tmp_path, device="cpu", max_visitors=2)
    with serving(app) as base:
        client = Client(base)
        client.post("/edit", prototype=2, action="off", class_index="", back="edits")
        client.upload("mine.png", png((10, 200, 30)))
        assert len(app.state.visitors) == 1
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        body = b"prototype=1&action=off&class_index=&back=edits"
        for n in range(12):  # six times the table
            for path in ("/", "/favicon.ico", "/no/such/page", "/?notice=abc"):
                status, headers, _ = raw(base, "GET", path)
                assert status in (200, 404) and "set-cookie" not in headers
            assert raw(base, "GET", "/", headers={"Host": "evil.example"})[0] == 400
            for foreign in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                            {"Referer": "http://evil.example/page.html"}):  # no Origin, a foreign Referer
                status, headers, text = raw(base, "POST", "/edit", body, {**form, **foreign})
                assert (status, text) == (403, "cross-site request refused") and "set-cookie" not in headers
        assert len(app.state.visitors) == 1
        status, html, _ = client.request("/")
        assert status == 200 and "uploaded image mine.png" in html and edited_prototypes(html) == {2}
        # The page's own forms send a Referer of the same host (Referrer-Policy: same-origin): accepted.
        status, _, _ = client.request("/edit", b"prototype=4&action=off&class_index=&back=edits",
                                      {**form, "Referer": f"{base}/"})
        assert status == 200 and edited_prototypes(client.request("/")[1]) == {2, 4}


def test_a_full_table_forgets_cookieless_then_saved_then_edited_visitors_and_says_so(run_dir, tmp_path):
    app = create_app(run_dir, out_dir=tmp_path, device="cpu", max_visitors=3)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with serving(app) as base:
        editing, viewing = Client(base), Client(base)
        editing.post("/edit", prototype=1, action="off", class_index="", back="edits")  # unsaved edits
        viewing.upload("view.png", png((1, 2, 3)))  # an image, no edits
        for _ in range(6):  # a client that keeps no cookie: each action makes a visitor that never comes back
            assert raw(base, "POST", "/edit", b"prototype=0&action=off", form)[0] == 303
        assert edited_prototypes(editing.request("/")[1]) == {1}
        assert "uploaded image view.png" in viewing.request("/")[1]  # the table: [cookieless, editing, viewing]
        Client(base).upload("new.png", png((4, 5, 6)))  # the cookieless one goes: [editing, viewing, new]
        second = Client(base)
        second.upload("second.png", png((7, 8, 9)))  # every one came back: the least recent without edits goes
        status, html, _ = viewing.request("/")
        assert status == 200 and "This page forgot your earlier work (the image on show): more than 3 visitors" in html
        assert "--max-visitors" in html and "uploaded image view.png" not in html
        assert "forgot" not in viewing.request("/")[1]  # said once (the dead cookie is deleted)
        second.post("/edit", prototype=6, action="off", class_index="", back="edits")  # [editing, new, second]
        saver = Client(base)
        saver.post("/edit", prototype=5, action="off", class_index="", back="edits")  # new goes
        assert "Saved the edited model" in saver.post("/save", name="kept")[1]
        Client(base).post("/edit", prototype=7, action="off", class_index="", back="edits")  # saved edits go first
        assert edited_prototypes(saver.request("/")[1]) == set()
        assert edited_prototypes(editing.request("/")[1]) == {1}
        Client(base).post("/edit", prototype=4, action="off", class_index="", back="edits")  # only unsaved edits left:
        html = second.request("/")[1]  # the least recent goes, and is told
        assert "This page forgot your earlier work (the image on show and unsaved edits): more than 3" in html
        assert edited_prototypes(html) == set() and edited_prototypes(editing.request("/")[1]) == {1}


def test_a_notice_is_shown_by_the_tab_whose_action_it_answers(server):
    """Tabs of one browser share its state; "Saved to ..." appears in the tab that saved, not in another."""
    base, out_dir, _ = server
    client = Client(base)
    client.post("/edit", prototype=3, action="off", class_index="", back="edits")
    cookie = "; ".join(f"{c.name}={c.value}" for c in client.jar)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    status, headers, _ = raw(base, "POST", "/save", b"name=tab-save", form)
    assert status == 303 and headers["location"].startswith("/?notice=")
    status, html, _ = client.request("/")  # another tab loads the page before the first one follows the redirect
    assert status == 200 and 'id="notice"' not in html and edited_prototypes(html) == {3}  # the same state
    location = headers["location"].split("#")[0]  # a browser keeps the #fragment to itself
    status, _, html = raw(base, "GET", location, headers={"Cookie": cookie})
    assert status == 200 and f"Saved the edited model to {out_dir / 'tab-save'}" in html
    assert 'id="notice"' not in raw(base, "GET", location, headers={"Cookie": cookie})[2]  # once


def test_a_client_that_disconnects_mid_upload_is_one_log_line(run_dir, tmp_path):
    """``pipnet serve`` as a real process: uploads and forms cut off by the client leave a line each, no traceback."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    server = subprocess.Popen([sys.executable, "-m", "pipnet", "serve", str(run_dir), "--port", str(port),
                               "--out-dir", str(tmp_path), "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)  # fmt: skip
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if raw(base, "GET", "/page.js")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        for path in ("/upload", "/edit"):
            with socket.create_connection(("127.0.0.1", port)) as connection:
                connection.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 1000000\r\n"
                    "Content-Type: multipart/form-data; boundary=B\r\n\r\n--B\r\nContent-Disposition: form-data; "
                    'name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + bytes(20_000)
                )  # fmt: skip
                time.sleep(0.3)  # the server is reading the body when the client goes
        time.sleep(1.0)
        assert raw(base, "GET", "/")[0] == 200  # and it goes on serving
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    for path in ("/upload", "/edit"):
        assert len(re.findall(rf"POST {path}: 127\.0\.0\.1:\d+ disconnected before its request was read", log)) == 1, log


def test_a_visitor_whose_first_upload_is_still_being_read_is_not_pushed_out(run_dir):
    """A browser's first action (a large upload takes seconds) makes its visitor before the browser has the cookie:
    cookie-less actions arriving meanwhile push out others first."""
    from pipnet.use.serve.editing import ModelEditor
    from pipnet.use.serve.session import Visitor, Visitors

    model = PIPNet.from_pretrained(run_dir)
    visitors = Visitors(lambda: Visitor(uuid.uuid4().hex, ModelEditor(model)), limit=2)
    uploading = visitors.create()  # its request is still being answered
    for _ in range(5):  # a script's cookie-less actions, each answered at once
        visitors.answered(visitors.create())
    assert visitors.find(uploading.key) is uploading and len(visitors) == 2

