"""``pipnet serve`` under load: many visitors at once, mixed requests, some 80-megapixel images.

Starts ``python -m pipnet serve`` in its own process (on a model folder given with ``--model``, else a small
random-weight ResNet-18 at 64 px on the planted-parts data that this script writes, since the page's cost
is the model's forward pass and drawing, not its accuracy) and drives it with C client threads, each a
separate browser (its own cookie jar), at C = 1, 4 and 16. Each client repeats: upload a small PNG under a
name of its own (and read the page the redirect gives), switch its own prototype off or on, read the page.
Every page must show that client's image and edit and nothing else: a page showing another visitor's state
is counted as "wrong". At the last level, ``--large`` of the uploads are 80-megapixel PNGs (solid colour,
~240 KB each, decoded in full by the server: PNG has no reduced decoding).
The server's resident memory (VmRSS) is sampled every 20 ms: before, peak during the level, and 3 s after.

Beside the clients of the last level, ``--flood-threads`` threads send requests without a cookie until the
clients are done, as another site's page makes a browser send them (the cookie is SameSite=Strict) and as a
script that keeps no cookie would: pages, ``/favicon.ico`` and other 404s, a foreign ``Host``, POSTs with a
foreign ``Origin`` or (without one) a foreign ``Referer``, and cookie-less POSTs with neither (each makes a
visitor that never comes back). The server keeps ``--max-visitors`` states, fewer than the flood's requests.
A client whose page no longer shows its own image or edit, or says that its work was forgotten, is "lost".

    python benchmarks/bench_serve.py --requests 200 200 1000 --large 40
"""

from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

MB = 2**20


def small_model(folder: Path) -> Path:
    import torch

    from pipnet import create_model
    from pipnet.data import build_data
    from pipnet.core.data_config import DataConfig, PlantedConfig
    from pipnet.core.train_config import ModelOptions, TrainConfig, dump_config

    config = TrainConfig(out=str(folder), model=ModelOptions(backbone="resnet18", pretrained=False, num_features=16),
                         data=DataConfig(image_size=64, planted=PlantedConfig(num_classes=3, train_per_class=8, test_per_class=4,
                                                                              ood_images=0, multi_images=0, size=64)))  # fmt: skip
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, num_features=16, image_size=64, pretrained=False,
                         class_names=build_data(config.data).classes)  # fmt: skip
    with torch.no_grad():
        model.classifier.weight.zero_()
        for c in range(3):
            model.classifier.weight[c, [c, c + 3, c + 6]] = torch.tensor([2.0, 1.0, 0.5])
    model.save_pretrained(folder)
    (folder / "config.yaml").write_text(dump_config(config))
    return folder


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Client:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, path: str, data: bytes | None = None, ctype: str | None = None) -> tuple[int, str, float]:
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": ctype} if ctype else {})
        started = time.perf_counter()
        try:
            with self.opener.open(req, timeout=300) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode()
        except OSError as e:
            status, body = 0, str(e)
        return status, body, time.perf_counter() - started

    def upload(self, name: str, content: bytes) -> tuple[int, str, float]:
        b = uuid.uuid4().hex
        body = (f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\nContent-Type: image/png\r\n\r\n'
                ).encode() + content + f"\r\n--{b}--\r\n".encode()  # fmt: skip
        return self.request("/upload", body, f"multipart/form-data; boundary={b}")


def png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


FLOOD = [  # (what, method, path, headers, body): requests that carry no cookie
    ("page", "GET", "/", {}, None),
    ("favicon 404", "GET", "/favicon.ico", {}, None),
    ("404", "GET", "/no/such/page", {}, None),
    ("foreign Host", "GET", "/", {"Host": "evil.example"}, None),
    ("foreign Origin POST", "POST", "/edit", {"Origin": "http://evil.example"}, b"prototype=0&action=off"),
    ("foreign Referer POST", "POST", "/upload", {"Referer": "http://evil.example/page.html"}, b"x"),
    ("script POST", "POST", "/edit", {}, b"prototype=0&action=off"),
]


def flood(base: str, stop: threading.Event, counts: dict, lock: threading.Lock) -> None:
    """Cookie-less requests, one kind after another, until ``stop``; ``counts[(what, status)]`` += 1."""
    host, port = base.removeprefix("http://").split(":")
    n = 0
    while not stop.is_set():
        what, method, path, headers, body = FLOOD[n % len(FLOOD)]
        n += 1
        if body is not None:
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        connection = http.client.HTTPConnection(host, int(port), timeout=300)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        except OSError:
            status = 0
        finally:
            connection.close()
        with lock:
            counts[(what, status)] = counts.get((what, status), 0) + 1


def run_level(base: str, pid: int, clients: int, requests: int, large: int, big: bytes, flood_threads: int = 0) -> dict:
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    wrong = [0]
    lost: set[int] = set()
    flooded: dict[tuple[str, int], int] = {}
    peak = [rss_mb(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.02)

    per_client = [requests // clients + (c < requests % clients) for c in range(clients)]
    large_at = {c: large // clients + (c < large % clients) for c in range(clients)}

    def visit(c: int) -> None:
        client, tag, done, off, bigs = Client(base), uuid.uuid4().hex[:8], 0, False, 0
        mine, shown = c % 8, None
        while done < per_client[c]:
            kind = done % 3
            if kind == 0:
                if bigs < large_at[c]:
                    bigs += 1
                    name = f"big-{tag}-{done}.png"
                    status, body, dt = client.upload(name, big)
                    shown = name if status == 200 else shown
                    check_image = True
                else:
                    shown = f"{tag}-{done}.png"
                    status, body, dt = client.upload(shown, png((c * 13 % 256, done % 256, 90), (48, 48)))
                    check_image = True
            elif kind == 1:
                off = not off
                fields = f"prototype={mine}&action={'off' if off else 'on'}&class_index=&back=edits".encode()
                status, body, dt = client.request("/edit", fields, "application/x-www-form-urlencoded")
                check_image = True
            else:
                status, body, dt = client.request("/")
                check_image = True
            done += 1
            edits = set(re.findall(r'<tr class="edit" data-prototype="(\d+)"', body))
            titles = set(re.findall(r"uploaded image ((?:big-)?[0-9a-f]{8}-\d+\.png)", body))
            bad = status == 200 and ((edits != ({str(mine)} if off else set())) or (check_image and shown and titles != {shown})
                                     or any(tag not in t for t in titles))  # fmt: skip
            gone = status == 200 and ("forgot your earlier work" in body or (off and not edits) or (shown and not titles))
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(dt)
                wrong[0] += bad
                if gone:
                    lost.add(c)

    sampler = threading.Thread(target=sample, daemon=True)
    before = rss_mb(pid)
    sampler.start()
    flood_stop = threading.Event()
    flooders = [threading.Thread(target=flood, args=(base, flood_stop, flooded, lock), daemon=True)
                for _ in range(flood_threads)]  # fmt: skip
    started = time.perf_counter()
    for thread in flooders:
        thread.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(visit, range(clients)))
    seconds = time.perf_counter() - started
    flood_stop.set()
    for thread in flooders:
        thread.join()
    time.sleep(3)
    stop.set()
    sampler.join()
    latencies.sort()
    return {
        "clients": clients, "requests": len(latencies), "large": large, "statuses": statuses, "wrong": wrong[0],
        "p50": latencies[len(latencies) // 2], "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "rps": len(latencies) / seconds, "before": before, "peak": peak[0], "after": rss_mb(pid),
        "lost": len(lost), "flood": flooded,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model folder with its data (default: a small random-weight one written here)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, nargs="+", default=[200, 200, 1000], help="requests per level")
    parser.add_argument("--large", type=int, default=40, help="80-megapixel uploads in the last level")
    parser.add_argument("--megapixels", type=float, default=80.0, help="size of the large uploads")
    parser.add_argument("--workers", type=int, default=2, help="pipnet serve --workers")
    parser.add_argument("--max-visitors", type=int, default=64, help="pipnet serve --max-visitors")
    parser.add_argument("--flood-threads", type=int, default=2,
                        help="threads sending cookie-less requests beside the last level's clients (0: none)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = Path(args.model) if args.model else small_model(tmp / "model")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    server = subprocess.Popen([sys.executable, "-m", "pipnet", "serve", str(model), "--port", str(port), "--out-dir", str(tmp / "out"),
                               "--workers", str(args.workers), "--max-visitors", str(args.max_visitors)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if Client(base).request("/")[0] == 200:
                break
            time.sleep(0.5)
        side = int((args.megapixels * 1e6) ** 0.5)
        big = png((200, 120, 40), (side, side))
        baseline = rss_mb(server.pid)
        rows, floods = [], []
        for n, (clients, requests) in enumerate(zip(args.clients, args.requests)):
            last = n == len(args.clients) - 1
            r = run_level(base, server.pid, clients, requests, args.large if last else 0, big,
                          args.flood_threads if last else 0)  # fmt: skip
            flooded = sum(r["flood"].values())
            floods.append(r["flood"])
            rows.append([r["clients"], r["requests"], r["large"], " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items())),
                         r["wrong"], flooded, r["lost"], f"{1000 * r['p50']:.0f}", f"{1000 * r['p95']:.0f}", f"{r['rps']:.1f}",
                         f"{r['before']:.0f}", f"{r['peak']:.0f}", f"{r['after']:.0f}", f"{r['after'] - baseline:+.0f}"])  # fmt: skip
            print(f"level {clients}: {r}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nmodel: {model} ({'given' if args.model else 'random-weight ResNet-18, 64 px, planted data'}); "
          f"large uploads: {side} x {side} PNG, {len(big) / 1024:.0f} KB; workers {args.workers}")
    print_table(["clients", "requests", "large images", "statuses", "wrong state", "cookie-less requests", "visitors lost",
                 "p50 ms", "p95 ms", "req/s", "RSS before MB", "peak MB", "after MB", "after - first baseline MB"],
                rows)  # fmt: skip
    counts: dict[tuple[str, int], int] = {}
    for level in floods:
        for key, count in level.items():
            counts[key] = counts.get(key, 0) + count
    if counts:
        print(f"\ncookie-less requests (--max-visitors {args.max_visitors}):")
        print_table(["request", "status", "count"], [[what, status, n] for (what, status), n in sorted(counts.items())])


if __name__ == "__main__":
    main()
