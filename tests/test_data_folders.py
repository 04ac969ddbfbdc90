"""Image-folder sources and robust image loading, on tiny real files written by PIL."""

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipnet.data import DataConfig, DataError, ImageLoadError, build_data, load_image
from pipnet.data.folders import ImageList, list_images, load_folder_source, stratified_split


def _write(path: Path, colour=(200, 30, 30), size=(12, 10), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def _tree(root: Path, split: str = "train", classes=("cat", "dog", "fox"), n: int = 10) -> Path:
    for k, name in enumerate(classes):
        for j in range(n):
            _write(root / split / name / f"img_{j:02d}.png", colour=(40 * k, 10 * j, 100))
    return root


def test_seeded_split_is_stratified_and_reproducible(tmp_path):
    source = load_folder_source(_tree(tmp_path), val_fraction=0.2, seed=1)
    assert source.classes == ["cat", "dog", "fox"]
    assert np.bincount(source.test.targets).tolist() == [2, 2, 2]
    assert np.bincount(source.train.targets).tolist() == [8, 8, 8]
    train_paths = {p for p, _ in source.train.samples}
    test_paths = {p for p, _ in source.test.samples}
    assert not train_paths & test_paths and len(train_paths | test_paths) == 30
    again = load_folder_source(tmp_path, val_fraction=0.2, seed=1)
    assert again.test.samples == source.test.samples
    other = load_folder_source(tmp_path, val_fraction=0.2, seed=2)
    assert other.test.samples != source.test.samples
    assert source.projection is source.train


def test_split_keeps_at_least_one_image_on_each_side():
    samples = [("a0", 0), ("a1", 0), ("b0", 1), ("b1", 1), ("b2", 1), ("c0", 2)]
    train, held = stratified_split(samples, 0.1, seed=0)
    assert sorted(label for _, label in held) == [0, 1]  # one of each class with >= 2 images
    assert sorted(label for _, label in train) == [0, 1, 1, 2]
    assert stratified_split(samples, 0.0, seed=0) == (sorted(samples), [])


def test_test_and_projection_folders_are_used(tmp_path):
    _tree(tmp_path, "train")
    _tree(tmp_path, "test", n=2)
    _tree(tmp_path, "projection", n=3)
    source = load_folder_source(tmp_path)
    assert len(source.train) == 30 and len(source.test) == 6 and len(source.projection) == 9


def test_missing_root_and_train_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder_source(tmp_path / "nowhere")
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="no train/ folder"):
        load_folder_source(tmp_path)


def test_no_images_at_all_and_empty_class(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_folder_source(tmp_path)
    _tree(tmp_path, classes=("cat",), n=2)
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"train/dog has no images"):
        load_folder_source(tmp_path)


def test_mismatched_test_classes_name_both_lists(tmp_path):
    _tree(tmp_path, "train", classes=("cat", "dog"), n=2)
    _tree(tmp_path, "test", classes=("cat", "emu"), n=2)
    with pytest.raises(DataError) as err:
        load_folder_source(tmp_path)
    message = str(err.value)
    assert "['cat', 'emu']" in message and "['cat', 'dog']" in message


def test_extensions_are_matched_case_insensitively(tmp_path):
    _write(tmp_path / "a.JPG", fmt="JPEG")
    _write(tmp_path / "b.TiFf", fmt="TIFF")
    _write(tmp_path / "sub" / "c.webp", fmt="WEBP")
    (tmp_path / "notes.txt").write_text("x")
    assert [Path(p).name for p in list_images(tmp_path)] == ["a.JPG", "b.TiFf", "c.webp"]


def _bad_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = _write(folder / "good.jpg", size=(64, 64), fmt="JPEG")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "text.jpg"
    text.write_text("this is not an image")
    return [truncated, empty, text]


def test_corrupt_files_raise_an_error_naming_the_file(tmp_path):
    for bad in _bad_files(tmp_path):
        with pytest.raises(ImageLoadError) as err:
            load_image(bad)
        assert bad.name in str(err.value) and err.value.path == str(bad)
    assert load_image(tmp_path / "good.jpg").size == (64, 64)
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_error_mode_raises_on_access_and_skip_mode_counts(tmp_path, caplog):
    _tree(tmp_path, classes=("cat", "dog"), n=3)
    _bad_files(tmp_path / "train" / "dog")
    source = load_folder_source(tmp_path, val_fraction=0.0)
    names = [Path(p).name for p, _ in source.train.samples]
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        source.train[names.index("truncated.jpg")]
    with caplog.at_level("WARNING"):
        skipping = load_folder_source(tmp_path, val_fraction=0.0, bad_images="skip")
    assert skipping.train.skipped == 3
    assert len(skipping.train) == len(source.train) - 3
    assert "skipped 3" in caplog.text
    assert all(isinstance(skipping.train[i][0], Image.Image) for i in range(len(skipping.train)))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "I"])
def test_image_modes_decode_to_rgb(tmp_path, mode):
    if mode in ("I;16", "I"):
        values = np.array([[0, 65535], [32896, 65535]], dtype=np.uint16)
        img = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32), mode="I")
        expected = [[0, 255], [128, 255]]
    else:
        img = Image.new("RGB", (2, 2), (128, 128, 128))
        img = img.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else img.convert(mode)
        expected = [[128, 128], [128, 128]]
    if mode in ("RGBA", "LA"):
        img.putpixel((1, 0), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))  # transparent -> white
        expected[0][1] = 255
    path = tmp_path / {"CMYK": "image.jpg", "I": "image.tif"}.get(mode, "image.png")
    img.save(path, quality=100) if mode == "CMYK" else img.save(path)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (2, 2)
    gray = np.asarray(rgb).astype(int)
    assert np.abs(gray - np.array(expected)[..., None]).max() <= 3, (mode, gray[..., 0])


def _png_16bit_rgb(path: Path, pixels: np.ndarray) -> None:
    """Write an (H, W, 3) uint16 array as a 16-bit RGB PNG by hand (PIL cannot write one)."""
    height, width, _ = pixels.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_palette_with_transparency_and_16_bit_rgb(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255])
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    img.save(tmp_path / "p.png", transparency=1)
    assert np.asarray(load_image(tmp_path / "p.png")).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    _png_16bit_rgb(tmp_path / "rgb16.png", np.array([[[65535, 0, 32896], [0, 65535, 0]]], dtype=np.uint16))
    assert Image.open(tmp_path / "rgb16.png").size == (2, 1)
    rgb = np.asarray(load_image(tmp_path / "rgb16.png")).astype(int)
    assert np.abs(rgb - np.array([[[255, 0, 128], [0, 255, 0]]])).max() <= 1


def test_decompression_bombs_are_errors_without_changing_the_global_limit(tmp_path, monkeypatch):
    _write(tmp_path / "big.png", size=(12, 12))  # 144 pixels
    _write(tmp_path / "huge.png", size=(20, 20))  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match="big.png.*decompression bomb"):
        load_image(tmp_path / "big.png")  # PIL only warns between 1x and 2x the limit
    with pytest.raises(ImageLoadError, match="huge.png.*decompression bomb"):
        load_image(tmp_path / "huge.png")
    assert Image.MAX_IMAGE_PIXELS == 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Image.open(tmp_path / "big.png").load()  # outside load_image, PIL's own behaviour is untouched
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)


def test_build_data_from_folders(tmp_path):
    _tree(tmp_path / "data", classes=("cat", "dog"), n=5)
    _write(tmp_path / "ood" / "a" / "x.png")
    _write(tmp_path / "ood" / "b" / "deep" / "y.jpg", fmt="JPEG")
    config = DataConfig(source="folder", root=str(tmp_path / "data"), image_size=32, val_fraction=0.2,
                        ood=[str(tmp_path / "ood")])
    bundle = build_data(config)
    assert bundle.classes == ["cat", "dog"]
    view1, view2, label = bundle.train[0]
    assert view1.shape == view2.shape == (3, 32, 32) and label == 0
    x, label = bundle.test[0]
    assert x.shape == (3, 32, 32) and len(bundle.test) == 2
    assert len(bundle.projection) == len(bundle.train) == 8
    assert bundle.num_parts == 0 and bundle.multi is None
    assert bundle.purity_sets() == {}  # no part keypoints: no purity
    assert bundle.projection.keypoints(0).shape == (0, 3)
    assert bundle.projection.raw_image(0).size == (12, 10)
    ood = bundle.ood["ood"]
    assert len(ood) == 2 and [ood[i][1] for i in range(2)] == [-1, -1]
    assert isinstance(ood[1][0], torch.Tensor)
    no_test = build_data(DataConfig(source="folder", root=str(tmp_path / "data"), image_size=32, val_fraction=0.0))
    assert no_test.test is None and len(no_test.train) == 10


def test_build_data_needs_a_root():
    with pytest.raises(DataError, match="root"):
        build_data(DataConfig(source="folder"))
    with pytest.raises(DataError, match="does not exist"):
        build_data(DataConfig(source="folder", ood=[], root="/nonexistent/data"))


def test_image_list_reports_header_sizes(tmp_path):
    path = _write(tmp_path / "a.png", size=(7, 5))
    images = ImageList([(str(path), 0)], ["a"])
    assert images.image_size(0) == (7, 5) and images.num_parts == 0
