"""``pipnet serve`` end to end, in a real headless browser (Debian's chromium driven by Playwright).

The server runs in a thread on a free local port, on a tiny run folder: an untrained ResNet-18 with a
hand-set sparse scoring sheet (so every image has evidence) and the planted-parts data of its config.yaml.
Skipped when /usr/bin/chromium or the Python packages (playwright, the ``serve`` extra) are missing:
``apt-get install -y chromium`` and ``pip install -e '.[serve]' playwright`` (never ``playwright install``).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow  # a real browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install playwright)")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is missing (pip install -e '.[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is missing (pip install -e '.[serve]')")

from pipnet import create_model  # noqa: E402
from pipnet.data import build_data  # noqa: E402
from pipnet.core.data_config import DataConfig, PlantedConfig  # noqa: E402
from pipnet.model import PIPNet  # noqa: E402
from pipnet.evaluation.projection import project  # noqa: E402
from pipnet.evaluation.quality.sensitivity import ASPECTS, prototype_sensitivity  # noqa: E402
from pipnet.use.serve import create_app  # noqa: E402
from pipnet.use.serve.editing import ModelEditor  # noqa: E402
from pipnet.use.serve.session import Explorer  # noqa: E402
from pipnet.evaluation.thresholds import Thresholds  # noqa: E402
from pipnet.core.train_config import ModelOptions, RuntimeConfig, ScheduleConfig, TrainConfig, dump_config  # noqa: E402

BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SCORING_SHEET = {0: {0: 2.0, 3: 1.0, 6: 0.5}, 1: {1: 2.0, 4: 1.0, 7: 0.5}, 2: {2: 2.0, 5: 1.0}}  # class -> {prototype: w}


def _config(out: Path) -> TrainConfig:
    return TrainConfig(
        out=str(out),
        model=ModelOptions(backbone="resnet18", pretrained=False, num_features=8),
        data=DataConfig(
            image_size=64,
            planted=PlantedConfig(num_classes=3, train_per_class=8, test_per_class=4, ood_images=0, multi_images=0, size=64),
        ),
        schedule=ScheduleConfig(epochs_pretrain=0, epochs=1, batch_size=8),
        runtime=RuntimeConfig(precision="fp32", progress=False),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as training leaves it (model + config.yaml), with a sparse hand-set scoring sheet."""
    run = tmp_path_factory.mktemp("run")
    config = _config(run)
    classes = build_data(config.data).classes
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, num_features=8, image_size=64, class_names=classes)
    with torch.no_grad():
        model.classifier.weight.zero_()
        for c, row in SCORING_SHEET.items():
            for p, w in row.items():
                model.classifier.weight[c, p] = w
    model.save_pretrained(run)
    (run / "config.yaml").write_text(dump_config(config))
    # Thresholds no score reaches: every image the model does not abstain on is "unknown".
    Thresholds([1e9] * 3, 0.95, "hand-set for the test", 12, [4, 4, 4]).save(run)
    # A report card measured on this model and its training images, as metrics.json holds it.
    train = build_data(config.data).projection
    top = project(model, train, k=4).image_index
    sensitivity = prototype_sensitivity(model, train, {p: top[p].tolist() for p in range(8)}, batch_size=8)
    (run / "metrics.json").write_text(json.dumps({"top1_accuracy": 0.5, "quality": {"sensitivity": sensitivity}}))
    return run


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory):
    """The app on a free port of 127.0.0.1, in a thread: yields (base URL, output folder)."""
    out_dir = tmp_path_factory.mktemp("edited")
    app = create_app(run_dir, out_dir=out_dir, device="cpu")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", out_dir
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(server[0])
    yield page
    page.close()


def submit(page, button) -> None:
    """Click a form's button and wait for the page the server answers with."""
    with page.expect_navigation():
        button.click()


def upload(page, name: str, content: bytes, mime: str = "image/png") -> None:
    page.set_input_files("#upload-form input[name=image]", files=[{"name": name, "mimeType": mime, "buffer": content}])
    submit(page, page.locator("#upload-form button[type=submit]"))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def evidence_prototypes(page, class_block) -> list[int]:
    return [int(p) for p in class_block.locator("tr.evidence").evaluate_all("rows => rows.map(r => r.dataset.prototype)")]


def test_explain_switch_off_see_the_change_save_and_reload(page, server, run_dir):
    expect = sync_api.expect
    url, out_dir = server
    expect(page.locator("#gallery tr.prototype")).to_have_count(8)  # every prototype has a weight
    expect(page.locator("#sheet tr.sheet-class")).to_have_count(3)
    expect(page.locator("#accuracy")).to_contain_text("Test accuracy (12 images)")

    # Upload an image: the top-3 classes with their evidence, each with its pictures and typical patches.
    data = build_data(_config(run_dir).data)
    upload(page, "planted.png", png_bytes(data.test.raw_image(0)))
    expect(page.locator("#verdict")).to_be_visible()
    blocks = page.locator("#explanation .class-block")
    expect(blocks).to_have_count(3)
    top = blocks.first
    predicted = int(top.get_attribute("data-class"))
    assert page.locator("#verdict").inner_text().startswith(data.classes[predicted])
    before = evidence_prototypes(page, top)
    assert before and set(before) <= set(SCORING_SHEET[predicted])
    assert top.locator("tr.evidence").first.locator("img").count() == 3  # boxed image, heat map, typical patches
    score_before = float(top.locator(".score").inner_text())
    # Below the stored threshold: the page's verdict and sentence are the paper detector's, as pipnet predict's.
    expect(page.locator("#judgement")).to_have_attribute("data-kind", "unknown")
    expect(page.locator("#judgement")).to_contain_text("the paper's rule")
    expect(page.locator("#verdict-before")).to_have_count(0)  # nothing edited yet

    # Switch the strongest prototype off for every class: it leaves the explanation, the score drops.
    off = before[0]
    submit(page, top.locator(f'tr.evidence[data-prototype="{off}"] button', has_text="all classes"))
    expect(page.locator(f'#edit-list tr.edit[data-prototype="{off}"]')).to_contain_text("off for every class")
    expect(page.locator("#verdict-before")).to_contain_text("Unedited model")
    for block in page.locator("#explanation .class-block").all():
        assert off not in evidence_prototypes(page, block)
    top_now = page.locator(f'#explanation .class-block[data-class="{predicted}"]')
    if top_now.count():
        assert float(top_now.locator(".score").inner_text()) < score_before
    expect(page.locator(f"#prototype-{off} .badge")).to_have_text("off")
    expect(page.locator("#accuracy")).to_contain_text("unedited")

    # Switch one prototype off for one class only, from the scoring sheet.
    entry = page.locator('#sheet tr.sheet-class[data-class="2"] .sheet-entry').filter(has=page.locator("button.off")).first
    one = int(entry.get_attribute("data-prototype"))
    submit(page, entry.locator("button.off"))
    expect(page.locator(f'#edit-list tr.edit[data-prototype="{one}"][data-class="2"]')).to_be_visible()

    # Save under a hostile name: it is sanitised and created under the output folder, never elsewhere.
    page.fill("#save-form input[name=name]", "edited by test/../x")
    submit(page, page.locator("#save-form button"))
    saved = out_dir / "edited-by-test-x"
    expect(page.locator("#notice")).to_contain_text(str(saved))
    edited = PIPNet.from_pretrained(saved)
    original = PIPNet.from_pretrained(run_dir)
    assert edited.config.disabled_prototypes == [off]
    assert edited.classifier.weight[2, one].item() == 0.0
    changed = (edited.classifier.weight != original.classifier.weight).nonzero().tolist()
    assert changed == [[2, one]]
    assert original.config.disabled_prototypes == []  # the original folder is untouched
    record = json.loads((saved / "edits.json").read_text())
    assert [(e["class_index"], e["prototype"]) for e in record["class_edits"]] == [(2, one)]
    assert record["class_edits"][0]["weight"] == SCORING_SHEET[2][one]
    # Reloaded, the saved folder gives back the unedited model and the edits, so they can be undone.
    editor = ModelEditor.from_folder(saved)
    assert editor.disabled == [off] and set(editor.class_edits) == {(2, one)}
    assert torch.equal(editor.original.classifier.weight, original.classifier.weight)
    assert torch.equal(editor.model.classifier.weight, edited.classifier.weight)
    assert Explorer(saved, device="cpu").data.config_path == run_dir / "config.yaml"  # the data it was edited with
    submit(page, page.locator("#save-form button"))  # the suggested name is new each time
    expect(page.locator("#notice")).to_contain_text(f"{run_dir.name}-edited-1")

    # Refit the scoring sheet without the switched-off prototypes, with a reason: a new folder, the three
    # accuracies, and the edit log (this session's switches, then the refit) in the page and in edits.jsonl.
    page.fill("#refit-form input[name=reason]", "a shortcut")
    submit(page, page.locator("#refit-form button"))
    refit_dir = out_dir / f"{run_dir.name}-refit-1"
    expect(page.locator("#notice")).to_contain_text(f"saved it to {refit_dir}", timeout=90_000)  # runs in the background; the page reloads itself
    expect(page.locator("#notice")).to_contain_text("before the edit")
    refitted = PIPNet.from_pretrained(refit_dir)
    assert refitted.config.disabled_prototypes == [off]
    assert refitted.classifier.weight[:, off].eq(0).all() and refitted.classifier.weight[2, one].item() == 0.0
    log = [json.loads(line) for line in (refit_dir / "edits.jsonl").read_text().splitlines()]
    assert [(r["action"], r["prototypes"], r["class_index"]) for r in log] == [
        ("switch_off", [off], None), ("switch_off", [one], 2), ("refit", [off], None)]
    assert log[-1]["reason"] == "a shortcut" and log[-1]["tool"] == "pipnet serve"
    numbers = [f"{log[-1][k]:.1%}" for k in ("accuracy_before", "accuracy_switched_off", "accuracy_refit")]
    expect(page.locator("#notice")).to_contain_text(f"{numbers[0]} before the edit, {numbers[1]} switched off, {numbers[2]} after")
    expect(page.locator("#edit-log tr.log-entry")).to_have_count(2)  # the session's two switches (the refit went to the new folder)
    assert (refit_dir / "thresholds.json").is_file() and (refit_dir / "config.yaml").is_file()

    # Undo everything; pick a data-set image by index; filter the sheet by class name.
    submit(page, page.locator("form[action='/reset'] button"))
    expect(page.locator("#edit-list")).to_have_count(0)
    page.select_option("#pick-form select[name=split]", "test")
    page.fill("#pick-form input[name=index]", "3")
    submit(page, page.locator("#pick-form button:not([name])"))
    expect(page.locator("#explanation h2")).to_contain_text(f"test image 3 (class {data.classes[data.test.targets[3]]})")
    page.fill("#filter", data.classes[1].lower())
    expect(page.locator("#sheet tr.sheet-class:visible")).to_have_count(1)


def test_gallery_shows_each_prototypes_report_card(page, run_dir):
    """Every gallery row has its card from metrics.json: the sensitivity line with the measured drops."""
    expect = sync_api.expect
    quality = json.loads((run_dir / "metrics.json").read_text())["quality"]
    expect(page.locator("#gallery th", has_text="report card")).to_have_count(1)
    measured = 0
    for p in range(8):
        card = page.locator(f"#prototype-{p} td.card li")
        drops = quality["sensitivity"]["prototypes"][str(p)]
        if all(v is None for v in drops.values()):
            expect(card).to_have_text(["what it looks at is unknown: not present (p >= 0.1) on its top images"])
            continue
        numbers = ", ".join(f"{k} {drops[k]:.0%}" for k in ("hue", "saturation", "contrast", "texture", "shape"))
        expect(card).to_have_count(1)
        expect(card).to_contain_text(f"(drops: {numbers})")
        measured += 1
        aspect = quality["sensitivity"]["dominant"][str(p)]
        if aspect is not None:
            expect(card).to_contain_text("mostly about")
    assert measured > 0, "no prototype was present on its top images: the check above was vacuous"
    assert set(ASPECTS) == set(quality["sensitivity"]["perturbations"])


def test_bad_uploads_are_refused_and_the_page_keeps_working(page, server, run_dir, monkeypatch):
    expect = sync_api.expect
    good = png_bytes(Image.new("RGB", (64, 64), (200, 30, 30)))

    upload(page, "notes.txt", b"not an image at all\n", "text/plain")
    expect(page.locator("#error")).to_contain_text("not an image")
    upload(page, "cut.png", good[: len(good) // 2])
    expect(page.locator("#error")).to_contain_text("truncated")
    upload(page, "huge.png", b"\x89PNG" + bytes(10 * 2**20 + 10))
    expect(page.locator("#error")).to_contain_text("larger than 10 MB")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 pixels are now a decompression bomb
    upload(page, "bomb.png", good)
    expect(page.locator("#error")).to_contain_text("decompression bomb")
    monkeypatch.undo()

    upload(page, "fine.png", good)
    expect(page.locator("#error")).to_have_count(0)
    expect(page.locator("#explanation h2")).to_contain_text("uploaded image fine.png")
    expect(page.locator("#verdict")).to_be_visible()


ANOTHER_SITE = """<!DOCTYPE html><html><body>
<iframe name="sink" style="display:none"></iframe>
<form id="post" method="post" action="{target}/edit" target="sink">
  <input name="prototype" value="0"><input name="action" value="off"><input name="class_index" value="">
</form>
<div id="images"></div>
<script>
  let done = 0;
  const paths = ["/favicon.ico", "/", "/no/such/page"];
  for (let i = 0; i < {count}; i++) {{
    const img = new Image();
    img.onload = img.onerror = () => {{ done += 1; document.title = "done " + done; }};
    img.src = "{target}" + paths[i % paths.length] + "?n=" + i;
    document.getElementById("images").appendChild(img);
  }}
  document.getElementById("post").submit();
</script></body></html>"""


@pytest.fixture
def another_site(server):
    """A page on another site (``localhost`` on another port: not the ``127.0.0.1`` of the app, so the browser
    sends the app's SameSite=Strict cookie with none of its requests) that fires 80 requests at the app (more than the 32 visitors it keeps)."""
    import http.server

    html = ANOTHER_SITE.format(target=server[0], count=80).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{site.server_address[1]}/"
    site.shutdown()
    site.server_close()


def test_another_sites_requests_do_not_cost_a_visitor_the_image_and_edits(browser, server, another_site):
    """More cookie-less requests than the page keeps visitors (and a cross-site form POST) leave the visitor's
    image and edits in place."""
    expect = sync_api.expect
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(server[0])
    upload(page, "kept.png", png_bytes(Image.new("RGB", (64, 64), (30, 160, 90))))
    top = page.locator("#explanation .class-block").first
    off = evidence_prototypes(page, top)[0]
    submit(page, top.locator(f'tr.evidence[data-prototype="{off}"] button', has_text="all classes"))
    expect(page.locator(f'#edit-list tr.edit[data-prototype="{off}"]')).to_be_visible()

    other = context.new_page()  # another tab of the same browser, on another site
    other.goto(another_site)
    expect(other).to_have_title("done 80", timeout=60_000)  # every request was answered (or refused)
    other.close()

    page.reload()
    expect(page.locator("#explanation h2")).to_contain_text("uploaded image kept.png")
    expect(page.locator("#edit-list tr.edit")).to_have_count(1)
    expect(page.locator(f'#edit-list tr.edit[data-prototype="{off}"]')).to_contain_text("off for every class")
    expect(page.locator("#notice")).to_have_count(0)
    context.close()


def test_mark_a_shortcut_repair_it_and_compare_the_verdicts(page, server, run_dir):
    """In the browser: forbid and keep from the gallery, the repair button, the page reloading itself until
    the repair is done, then its table and both verdicts on the image on show."""
    expect = sync_api.expect
    _, out_dir = server
    data = build_data(_config(run_dir).data)
    upload(page, "before-after.png", png_bytes(data.test.raw_image(1)))
    submit(page, page.locator('#prototype-0 button.mark-forbid'))
    submit(page, page.locator('#prototype-1 button.mark-keep'))
    expect(page.locator("#mark-list tr.mark")).to_have_count(2)
    expect(page.locator('#mark-list tr.mark[data-prototype="0"]')).to_have_attribute("data-mark", "forbid")
    expect(page.locator("#prototype-1 .marks .badge")).to_have_text("keep")
    page.fill("#repair-form input[name=epochs]", "1")
    page.fill("#repair-form input[name=reason]", "a mark, not the object")
    submit(page, page.locator("#repair-form button"))
    repaired = out_dir / f"{run_dir.name}-repaired-1"
    expect(page.locator("#notice")).to_contain_text(f"saved it to {repaired}", timeout=90_000)  # the page reloads itself
    expect(page.locator("#repair-table")).to_contain_text("test accuracy before the repair")
    expect(page.locator("#repair-verdicts tr.repair-verdict")).to_have_count(2)
    expect(page.locator("#explanation h2")).to_contain_text("uploaded image before-after.png")
    assert PIPNet.from_pretrained(repaired).config.disabled_prototypes == [0]
    log = [json.loads(line) for line in (repaired / "edits.jsonl").read_text().splitlines()]
    assert [r["action"] for r in log] == ["forbid", "refit"] and log[0]["reason"] == "a mark, not the object"
