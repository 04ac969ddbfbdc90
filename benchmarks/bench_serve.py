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

    python benchmarks/bench_serve.py --requests 200 200 1000 --large 40
"""

from __future__ import annotations

import argparse
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


def run_level(base: str, pid: int, clients: int, requests: int, large: int, big: bytes) -> dict:
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    wrong = [0]
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
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(dt)
                wrong[0] += bad

    sampler = threading.Thread(target=sample, daemon=True)
    before = rss_mb(pid)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(visit, range(clients)))
    seconds = time.perf_counter() - started
    time.sleep(3)
    stop.set()
    sampler.join()
    latencies.sort()
    return {
        "clients": clients, "requests": len(latencies), "large": large, "statuses": statuses, "wrong": wrong[0],
        "p50": latencies[len(latencies) // 2], "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "rps": len(latencies) / seconds, "before": before, "peak": peak[0], "after": rss_mb(pid),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model folder with its data (default: a small random-weight one written here)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, nargs="+", default=[200, 200, 1000], help="requests per level")
    parser.add_argument("--large", type=int, default=40, help="80-megapixel uploads in the last level")
    parser.add_argument("--megapixels", type=float, default=80.0, help="size of the large uploads")
    parser.add_argument("--workers", type=int, default=2, help="pipnet serve --workers")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = Path(args.model) if args.model else small_model(tmp / "model")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    server = subprocess.Popen([sys.executable, "-m", "pipnet", "serve", str(model), "--port", str(port), "--out-dir", str(tmp / "out"),
                               "--workers", str(args.workers), "--max-visitors", "64"], env=env,
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
        rows = []
        for n, (clients, requests) in enumerate(zip(args.clients, args.requests)):
            large = args.large if n == len(args.clients) - 1 else 0
            r = run_level(base, server.pid, clients, requests, large, big)
            rows.append([r["clients"], r["requests"], r["large"], " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items())),
                         r["wrong"], f"{1000 * r['p50']:.0f}", f"{1000 * r['p95']:.0f}", f"{r['rps']:.1f}",
                         f"{r['before']:.0f}", f"{r['peak']:.0f}", f"{r['after']:.0f}", f"{r['after'] - baseline:+.0f}"])  # fmt: skip
            print(f"level {clients}: {r}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nmodel: {model} ({'given' if args.model else 'random-weight ResNet-18, 64 px, planted data'}); "
          f"large uploads: {side} x {side} PNG, {len(big) / 1024:.0f} KB; workers {args.workers}")
    print_table(["clients", "requests", "large images", "statuses", "wrong state", "p50 ms", "p95 ms", "req/s",
                 "RSS before MB", "peak MB", "after MB", "after - first baseline MB"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
