"""Write the unrelated-image sets the real-photo measurements use as out-of-distribution inputs.

    python benchmarks/ood_sets.py OUT

makes three folders of PNG files, each a valid ``--ood`` / ``--data.ood`` folder (one sub-folder of images):

- ``OUT/natural/photos``: 14 photos bundled with scikit-image and scikit-learn (astronaut, coffee, rocket,
  camera, motorcycle, flower, retina, immunohistochemistry, cell, page, moon, brick, grass, gravel; gray
  ones as RGB);
- ``OUT/fashion-mnist/images``: the first 10 test images of each of Fashion-MNIST's 10 classes (28x28
  gray, as RGB), from Debian's ``dataset-fashion-mnist`` (``apt install dataset-fashion-mnist``);
- ``OUT/faces/images``: the 100 face crops of scikit-image's ``lfw_subset`` (25x25 gray, as RGB).

Everything is local (bundled with the libraries or a Debian package): nothing is downloaded. Needs
``pip install scikit-image scikit-learn`` (not among pipnet's extras).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SKIMAGE_PHOTOS = ("astronaut", "coffee", "rocket", "camera", "stereo_motorcycle", "retina",
                  "immunohistochemistry", "cell", "page", "moon", "brick", "grass", "gravel")


def as_rgb(array: np.ndarray) -> Image.Image:
    """A gray or colour array (uint8 or float in [0, 1]) as an RGB image."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3]).convert("RGB")


def natural(out: Path) -> int:
    try:
        from skimage import data
        from sklearn.datasets import load_sample_image
    except ImportError as error:
        sys.exit(f"error: {error.name} is missing: pip install scikit-image scikit-learn (their bundled photos)")

    folder = out / "natural" / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE_PHOTOS:
        array = getattr(data, name)()
        if name == "stereo_motorcycle":
            array = array[0]  # the left view
        as_rgb(array).save(folder / f"{name.removeprefix('stereo_')}.png")
    as_rgb(load_sample_image("flower.jpg")).save(folder / "flower.png")
    return len(SKIMAGE_PHOTOS) + 1


def fashion_mnist(out: Path, per_class: int = 10) -> int:
    images_file, labels_file = FASHION_MNIST / "t10k-images-idx3-ubyte.gz", FASHION_MNIST / "t10k-labels-idx1-ubyte.gz"
    if not images_file.is_file():
        sys.exit(f"error: {images_file} not found: apt install dataset-fashion-mnist")
    with gzip.open(images_file) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_file) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    folder = out / "fashion-mnist" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for label in range(10):
        for index in np.flatnonzero(labels == label)[:per_class]:
            as_rgb(images[index]).save(folder / f"class{label}-{index:05d}.png")
            count += 1
    return count


def faces(out: Path) -> int:
    from skimage import data

    folder = out / "faces" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    crops = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for index, crop in enumerate(crops):
        as_rgb(crop).save(folder / f"face{index:03d}.png")
    return len(crops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write natural/, fashion-mnist/ and faces/ into")
    args = parser.parse_args()
    for name, make in (("natural", natural), ("fashion-mnist", fashion_mnist), ("faces", faces)):
        print(f"{name}: {make(args.out)} images in {args.out / name}")


if __name__ == "__main__":
    main()
