"""The data pipeline against the model: two-view augmentation throughput and the time the loop waits.

1. images/s of ``TwoViewTransform`` on one worker (planted-parts images, decoded in memory);
2. images/s the training step consumes for a backbone at the same size;
3. in a loop shaped like training (DataLoader with the default workers, then a training step), the
   fraction of wall time spent waiting for the next batch.

    python benchmarks/bench_data.py --backbone efficientnet_lite0 --size 64 --workers 0 1
    python benchmarks/bench_data.py --stages 4 --num-features 32 --size 112 --batch 16 --precision bf16   # the demo's settings
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

import pipnet  # noqa: E402
from pipnet.data.augment import TwoViewTransform  # noqa: E402
from pipnet.core.data_config import PlantedConfig  # noqa: E402
from pipnet.data.planted import PlantedParts  # noqa: E402
from pipnet.data.wrappers import TwoViewDataset  # noqa: E402
from pipnet.train.prefetch import prefetch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prefetch", type=int, nargs="+", default=[0, 2],
                    help="batches prepared ahead in a background thread (runtime.prefetch), each measured")
    ap.add_argument("--stages", type=int, default=7, help="efficientnet_lite0 only: keep the first N stages")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--num-features", type=int, default=0, help="prototypes through an add-on conv (0: none, paper)")
    args = ap.parse_args()
    base = PlantedParts(PlantedConfig(train_per_class=40, size=max(96, args.size)), "train")
    for i in range(len(base)):
        base.image(i)  # generate once: measure augmentation, not generation
    transform = TwoViewTransform(args.size)
    images = [base.image(i) for i in range(len(base))]
    start = time.perf_counter()
    for img in images:
        transform(img)
    aug_rate = len(images) / (time.perf_counter() - start)

    kwargs = {"stages": args.stages} if args.stages != 7 else {}
    model = pipnet.create_model(args.backbone, len(base.classes), num_features=args.num_features, **kwargs).train()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    x = torch.randn(2 * args.batch, 3, args.size, args.size)
    start = time.perf_counter()
    for _ in range(3):
        with autocast():
            out = model(x)
        (out.scores.sum() + out.maps.mean()).backward()
    model_rate = 3 * args.batch / (time.perf_counter() - start)

    name = args.backbone + (f" (stages {args.stages})" if kwargs else "")
    rows = [["augmentation, 1 worker", f"{aug_rate:.0f} images/s"], [f"{name} training step, {args.precision}", f"{model_rate:.1f} images/s"],
            ["augmentation / model", f"{aug_rate / model_rate:.0f}x"]]
    for workers, depth in [(w, d) for w in args.workers for d in args.prefetch]:
        data = DataLoader(TwoViewDataset(base, transform), batch_size=args.batch, shuffle=True, num_workers=workers, drop_last=True)
        waited, total, steps = 0.0, time.perf_counter(), 0
        it = prefetch(data, depth)
        while steps < args.steps:
            t = time.perf_counter()
            try:
                x1, x2, _ = next(it)
            except StopIteration:
                it = prefetch(data, depth)
                continue
            waited += time.perf_counter() - t
            with autocast():
                out = model(torch.cat([x1, x2]))
            (out.scores.sum() + out.maps.mean()).backward()
            steps += 1
        total = time.perf_counter() - total
        rows.append([f"loop waits for data, {workers} workers, prefetch {depth}",
                     f"{100 * waited / total:.1f}% of {total:.1f} s ({args.steps} steps)"])
    print_table(["measure", "value"], rows)


if __name__ == "__main__":
    main()
