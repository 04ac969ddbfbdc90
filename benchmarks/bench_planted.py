"""Generation speed of the built-in planted-parts images (was a wall-clock test; a benchmark prints instead).

    python benchmarks/bench_planted.py --images 100 --sizes 64 128 224
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, print_table  # noqa: E402

from pipnet.core.data_config import PlantedConfig  # noqa: E402
from pipnet.data.planted import generate_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100, help="images generated per timing")
    ap.add_argument("--sizes", nargs="+", type=int, default=[PlantedConfig().size], help="image sides in pixels")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        config = PlantedConfig(seed=11, size=size)
        t = median_seconds(lambda: [generate_image(config, "train", i) for i in range(args.images)], args.repeats)
        rows.append([size, args.images, 1000 * t / args.images])
    print_table(["size", "images", "ms per image"], rows)


if __name__ == "__main__":
    main()
