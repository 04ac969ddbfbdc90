"""Renderers: boxes, heat maps, prototype galleries from non-square / grayscale originals, the HTML report."""

import csv
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

import pipnet
from pipnet.data.augment import eval_transform
from pipnet.explanation.explain import explain, scoring_sheet
from pipnet.evaluation.projection import project
from pipnet.explanation.render import (
    draw_boxes,
    explanation_figure,
    heatmap_overlay,
    prototype_gallery,
    render_report,
    scoring_sheet_figure,
    sparsity_curve,
    write_report,
)
from pipnet.explanation.render.png import crop_patch

SIZE = 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class TinyImages:
    """Eval data set over in-memory originals of different shapes and modes (RGB, grayscale, RGBA)."""

    def __init__(self, n: int = 6, size: int = SIZE):
        rng = np.random.default_rng(0)
        shapes = [(50, 90), (70, 40), (64, 64)]  # (H, W)
        self.originals = []
        for i in range(n):
            h, w = shapes[i % 3]
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            self.originals.append(image.convert(["RGB", "L", "RGBA"][i % 3]))
        self.transform = eval_transform(size)

    def __len__(self):
        return len(self.originals)

    def __getitem__(self, i):
        return self.transform(self.originals[i]), i % 3

    def raw_image(self, i):
        return self.originals[i]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = pipnet.create_model(
        "resnet18", num_classes=3, num_features=12, image_size=SIZE, class_names=["cat", "dog", "<b>bird&</b>"]
    ).eval()
    with torch.no_grad():  # a sparse scoring sheet: prototypes 0 and 1 are unused
        w = model.classifier.weight
        w.mul_((torch.rand_like(w) < 0.5).float())
        w[:, :2] = 0.0
        w[:, 2] = 1.0
    data = TinyImages()
    projection = project(model, data, k=4)
    x = torch.stack([data[i][0] for i in range(len(data))])
    explanations = explain(model, x, image_ids=[f"img{i}" for i in range(len(data))])
    return model, data, projection, explanations


class TagBalance(HTMLParser):
    """Checks that every opened tag is closed in order (void elements excepted)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.doctype = [], [], False

    def handle_decl(self, decl):
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check_html(html: str) -> None:
    parser = TagBalance()
    parser.feed(html)
    parser.close()
    assert parser.doctype
    assert parser.errors == [] and parser.stack == []


def test_tag_balance_checker_can_fail():
    with pytest.raises(AssertionError):
        check_html("<!DOCTYPE html><html><body><div><p>x</div></body></html>")


def test_draw_boxes_draws_on_a_copy():
    image = Image.new("L", (40, 30), 0)
    out = draw_boxes(image, [(5, 20, 10, 30)], [(255, 0, 0)], width=1)
    assert out.mode == "RGB" and out.size == (40, 30) and image.getpixel((10, 5)) == 0
    assert out.getpixel((10, 5)) == (255, 0, 0) and out.getpixel((29, 19)) == (255, 0, 0)  # top-left, bottom-right
    assert out.getpixel((20, 12)) == (0, 0, 0)  # inside is untouched


def test_heatmap_overlay_is_brightest_where_the_map_peaks():
    image = Image.new("L", (90, 50), 128)
    map_hw = torch.zeros(4, 4)
    map_hw[0, 3] = 1.0  # top-right cell
    out = heatmap_overlay(image, map_hw)
    assert out.size == (90, 50) and out.mode == "RGB"
    assert sum(out.getpixel((85, 3))) > sum(out.getpixel((3, 45))) + 100


def colours(image: Image.Image) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in np.asarray(image).reshape(-1, 3)}


def test_crop_patch_scales_the_box_to_a_non_square_original():
    original = Image.new("RGB", (100, 40), (255, 0, 0))
    original.paste((0, 0, 255), (50, 0, 100, 40))  # right half blue
    right_half = crop_patch(original, (0, SIZE, SIZE // 2, SIZE), (SIZE, SIZE), 16)
    assert right_half.size == (16, 16)
    assert colours(right_half) == {(0, 0, 255)}
    top_left = crop_patch(original, (0, 16, 0, 16), (SIZE, SIZE), 16)  # 25 x 10 pixels of the red half
    assert colours(top_left) == {(255, 0, 0)}


def test_prototype_gallery_from_grayscale_and_non_square_originals(setup):
    model, data, projection, _ = setup
    used = model.used_prototypes().tolist()
    gallery = prototype_gallery(projection, data, used, k=4, patch_px=32)
    one = prototype_gallery(projection, data, used[:1], k=4, patch_px=32)
    assert gallery.mode == "RGB" and gallery.width >= 4 * 32
    assert gallery.height > len(used) * 32 and one.height < gallery.height
    assert {data.raw_image(i).mode for i in projection.image_index[used].flatten().tolist()} >= {"L", "RGB"}


def test_explanation_and_scoring_sheet_figures(setup):
    model, data, projection, explanations = setup
    for i, e in enumerate(explanations):
        fig = explanation_figure(e, data.raw_image(i), projection, data, max_prototypes=2, k=3)
        bare = explanation_figure(e, data.raw_image(i))
        assert fig.mode == "RGB" and fig.width > bare.width  # the typical patches are beside each prototype
    sheet = scoring_sheet_figure(scoring_sheet(model), projection, data)
    assert sheet.mode == "RGB" and sheet.height > 3 * 48


def test_abstained_explanation_figure():
    torch.manual_seed(0)
    m = pipnet.create_model("resnet18", num_classes=2, num_features=32).eval()
    with torch.no_grad():
        m.add_on.weight.zero_()
        m.add_on.bias.zero_()
    (e,) = explain(m, torch.randn(1, 3, 32, 32))
    assert e.abstained
    assert explanation_figure(e, Image.new("L", (30, 60))).mode == "RGB"


def test_sparsity_curve_reads_csv_rows_and_column_dicts():
    rows = [{"epoch": str(e), "sparsity": str(1 - 0.8**e), "test_top1": "" if e == 2 else str(0.5 + e / 20)} for e in range(1, 6)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    from_csv = sparsity_curve(list(csv.DictReader(io.StringIO(text.getvalue()))))
    from_dict = sparsity_curve({"sparsity_ratio": [0.1, 0.5, 0.9], "accuracy": [0.3, 0.6, 0.7]})
    empty = sparsity_curve({"loss": [1.0, 0.5]})
    for png in (from_csv, from_dict, empty):
        assert png.startswith(PNG_SIGNATURE)
        assert Image.open(io.BytesIO(png)).size == (600, 320)
    assert from_csv != empty


def test_html_report_is_valid_self_contained_and_lists_every_used_prototype(setup, tmp_path):
    model, data, projection, explanations = setup
    items = [(e, data.raw_image(i), ["test", "ood", "multi"][i % 3]) for i, e in enumerate(explanations)]
    history = [{"epoch": e, "sparsity": 1 - 0.9**e, "test_top1": 0.4 + e / 30} for e in range(1, 8)]
    metrics = {"top1_accuracy": 0.5, "ood": {"cars": {"fpr95": 0.25, "auroc": float("nan")}}, "purity": {"test_top10": {"mean": 0.4}}}
    html = render_report(
        model=model, metrics=metrics, history=history, projection=projection, projection_dataset=data,
        explanations=items, title="tiny <PIP-Net>",
    )  # fmt: skip
    check_html(html)

    # Self-contained: every image is a data: URI, nothing is fetched from elsewhere.
    assert "http://" not in html and "https://" not in html and 'src="/' not in html
    assert "<script" not in html and "<link" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/") for s in sources)
    # curve + one gallery row per used prototype + one figure per explained image
    used = model.used_prototypes().tolist()
    assert len(sources) == 1 + len(used) + len(explanations)

    for p in used:
        assert f'<tr id="prototype-{p}">' in html and f"#{p}</th>" in html
    for p in set(range(model.num_prototypes)) - set(used):
        assert f'id="prototype-{p}"' not in html
    assert 'id="prototype-0"' not in html  # unused on purpose

    # Autoescaped names; every section with its caption; the metrics flattened.
    assert "<b>bird&</b>" not in html and "&lt;b&gt;bird&amp;&lt;/b&gt;" in html
    assert "tiny &lt;PIP-Net&gt;" in html
    for heading in ("Explained test images", "Out-of-distribution images", "Multi-object images", "Scoring sheet"):
        assert heading in html
    assert "near zero" in html and "several classes" in html
    assert "ood / cars / fpr95" in html and "purity / test_top10 / mean" in html

    path = write_report(tmp_path / "report.html", model=model, projection=projection, projection_dataset=data)
    written = path.read_text(encoding="utf-8")
    check_html(written)
    assert all(f'<tr id="prototype-{p}">' in written for p in used)


def test_gallery_rows_chosen_by_image_order_are_marked_as_ties(setup):
    model = setup[0]
    data = TinyImages(n=6)
    data.originals = [data.originals[0]] * 6  # identical images: every prototype's 4th and 5th images tie
    tied = project(model, data, k=4)
    assert tied.tied.all()
    html = render_report(model=model, projection=tied, projection_dataset=data)
    assert html.count("picked by image order") == len(model.used_prototypes())
    distinct = render_report(model=model, projection=setup[2], projection_dataset=setup[1])
    assert not setup[2].tied.any() and "picked by image order" not in distinct
