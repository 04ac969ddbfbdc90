"""A full PIP-Net training step against its floor: the bare backbone's forward + backward.

Both loops read the same 2B images (two views of B) from the same loader. The PIP-Net step is the
engine's own ``run_epoch`` (softmax maps, all losses, both optimisers, schedules, sparsification,
progress bookkeeping); the floor is ``backbone(x).mean().backward()`` plus one SGD-free zero_grad.
Ratios are medians over repetitions inside one run.

    python benchmarks/bench_train_step.py --backbones resnet18 resnet50 convnext_tiny_26 efficientnet_lite0 --sizes 112 224
    python benchmarks/bench_train_step.py --precision fp32 bf16 --backbones convnext_tiny_26 --sizes 112
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, print_table  # noqa: E402

import pipnet  # noqa: E402
from pipnet.train.config import RuntimeConfig, ScheduleConfig, TrainConfig  # noqa: E402
from pipnet.train.distributed import DistInfo  # noqa: E402
from pipnet.train.engine import run_epoch  # noqa: E402
from pipnet.train.optim import make_stage_optim, set_trainable  # noqa: E402
from pipnet.train.phases import plan_epochs  # noqa: E402


def loader(batch: int, size: int, steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = batch * steps
    data = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch, drop_last=True)


def floor_epoch(model: pipnet.PIPNet, data: DataLoader, precision: str, channels_last: bool) -> None:
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    for x1, x2, _ in data:
        x = torch.cat([x1, x2])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
            z = model.backbone(x)
        z.float().mean().backward()
        model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50", "convnext_tiny_26", "efficientnet_lite0"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[112])
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--batch", type=int, default=8, help="images per batch (each gives two views)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.backbones:
        model = pipnet.create_model(name, 10)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        for size in args.sizes:
            data = loader(args.batch, size, args.steps)
            for precision in args.precision:
                config = TrainConfig(schedule=ScheduleConfig(epochs_pretrain=1, epochs=20, freeze_epochs=4),
                                     runtime=RuntimeConfig(precision=precision, progress=False, channels_last=args.channels_last))
                floor = median_seconds(lambda: floor_epoch(model, data, precision, args.channels_last), args.repeats)
                row = [name, size, precision, floor / args.steps]
                plans = plan_epochs(config.schedule)
                for plan in (plans[0], plans[-1]):  # pretraining; classification with everything trained
                    optim = make_stage_optim(model, plan.stage, config, len(data))
                    set_trainable(model, plan)
                    t = median_seconds(lambda: run_epoch(model, model, data, plan, optim, config, torch.device("cpu"), DistInfo(), None), args.repeats)
                    row += [t / args.steps, t / floor]
                rows.append(row)
                print_table(["backbone", "size", "precision", "floor s/step", "pretrain s/step", "pretrain / floor", "classify s/step", "classify / floor"], rows[-1:])
    print()
    print(f"batch {args.batch} images (x2 views), {args.steps} steps, median of {args.repeats}, {torch.get_num_threads()} threads")
    print_table(["backbone", "size", "precision", "floor s/step", "pretrain s/step", "pretrain / floor", "classify s/step", "classify / floor"], rows)


if __name__ == "__main__":
    main()
