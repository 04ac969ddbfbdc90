"""Build a real-photo data set with a known confounder: a coloured corner tag that follows the class in training.

From an image-folder tree ``SRC/{train,test}/<class>/<image>`` it writes three trees under ``OUT``:

- ``confounded/``: ``train`` images carry the tag colour of their own class (the shortcut); ``test`` images
  carry the colour of a class drawn at random, independently of the image's class (the de-confounded test);
- ``unconfounded/``: the clean control: ``train`` images carry a random class's colour too, ``test`` is the
  same as ``confounded/test`` byte for byte;
- ``untagged/``: plain copies of the originals (the clean test copy);
- ``tags.json``: the class whose colour each randomly tagged image got (``{"train/<class>/<stem>.png": c}``).

The tag is a filled square in the top-left corner, ``--tag`` of the shorter side (default 0.15), with a thin
white rim, in a saturated colour per class (hue c / C). Every draw is a pure function of ``--seed`` and the
image's path, so the same command builds the same trees.

    python benchmarks/confound_photos.py SRC OUT --tag 0.15 --seed 0
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def tag_colour(label: int, num_classes: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(label / num_classes, 1.0, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def random_class(seed: int, relative: str, num_classes: int) -> int:
    digest = hashlib.sha256(f"{seed}:{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % num_classes


def tagged(path: Path, colour: tuple[int, int, int], share: float) -> Image.Image:
    img = Image.open(path).convert("RGB")
    side = max(4, int(round(share * min(img.size))))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, side, side), fill=(255, 255, 255))
    rim = max(1, side // 10)
    draw.rectangle((rim, rim, side - rim, side - rim), fill=colour)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="an image-folder tree with train/ and test/")
    ap.add_argument("out", type=Path, help="where to write confounded/, unconfounded/ and untagged/ (must not exist)")
    ap.add_argument("--tag", type=float, default=0.15, help="the tag's side as a share of the image's shorter side")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random tag colours")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists already")
    classes = sorted(d.name for d in (args.src / "train").iterdir() if d.is_dir())
    counts = {"train": 0, "test": 0}
    drawn_classes: dict[str, int] = {}
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            for path in sorted((args.src / split / name).glob("*")):
                if path.suffix.lower() not in EXTENSIONS:
                    continue
                relative = f"{split}/{name}/{path.name}"
                drawn = random_class(args.seed, relative, len(classes))
                own = tagged(path, tag_colour(c, len(classes)), args.tag)
                other = tagged(path, tag_colour(drawn, len(classes)), args.tag)
                stem = Path(relative).with_suffix(".png")
                drawn_classes[stem.as_posix()] = drawn
                for tree, img in (("confounded", own if split == "train" else other), ("unconfounded", other)):
                    target = args.out / tree / stem
                    target.parent.mkdir(parents=True, exist_ok=True)
                    img.save(target)
                target = args.out / "untagged" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                counts[split] += 1
    (args.out / "tags.json").write_text(json.dumps(drawn_classes, indent=0))
    print(f"{len(classes)} classes, {counts['train']} training and {counts['test']} test images -> {args.out}")


if __name__ == "__main__":
    main()
