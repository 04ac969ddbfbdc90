"""A full PIP-Net training step against its floor (the bare backbone's forward + backward), per variant.

Both loops read the same 2B images (two views of B) from the same loader. The PIP-Net step is the
engine's own ``run_epoch`` (softmax maps, all losses, both optimisers, schedules, sparsification,
progress bookkeeping); the floor is ``backbone(x).mean().backward()`` plus zero_grad. A variant is a
precision with optional ``+cl`` (channels_last) and ``+compile`` (``torch.compile``), e.g. ``bf16+cl``;
every variant is also timed against the first one of the list (``speed-up``). Ratios are medians over
repetitions inside one run. ``--loss-check N`` also trains N classification steps from the same weights
and batches in every variant and prints the largest relative difference of the losses to the first variant.

    python benchmarks/bench_train_step.py --backbones resnet18 resnet50 convnext_tiny_26 efficientnet_lite0 --sizes 112 224
    python benchmarks/bench_train_step.py --backbones convnext_tiny_26 --variants fp32 bf16 bf16+cl --batch 16 --loss-check 5
    python benchmarks/bench_train_step.py --backbones efficientnet_lite0 --backbone-kwargs '{"stages": 6, "output_stride": 16}' \
        --grid dilate --sizes 160 --batch 16 --phase frozen_backbone --variants fp32 fp32+cl    # cpu-small's step
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, print_table  # noqa: E402

import pipnet  # noqa: E402
from pipnet.core.train_config import RuntimeConfig, ScheduleConfig, TrainConfig  # noqa: E402
from pipnet.train.distributed import DistInfo  # noqa: E402
from pipnet.train.engine import run_epoch  # noqa: E402
from pipnet.train.optim import make_stage_optim, set_trainable  # noqa: E402
from pipnet.train.phases import plan_epochs  # noqa: E402

CPU = torch.device("cpu")
HEADERS = ["backbone", "size", "batch", "variant", "floor s/step", "pretrain / floor", "classify s/step",
           "classify / floor", "speed-up"]


@dataclass(frozen=True)
class Variant:
    precision: str
    channels_last: bool
    compile: bool

    @classmethod
    def parse(cls, text: str) -> Variant:
        precision, *flags = text.split("+")
        if precision not in ("fp32", "bf16") or not set(flags) <= {"cl", "compile"}:
            raise argparse.ArgumentTypeError(f"bad variant {text!r}: fp32 or bf16, then optional +cl, +compile")
        return cls(precision, "cl" in flags, "compile" in flags)

    def __str__(self) -> str:
        return "+".join([self.precision] + ["cl"] * self.channels_last + ["compile"] * self.compile)

    def config(self) -> TrainConfig:
        return TrainConfig(schedule=ScheduleConfig(epochs_pretrain=1, epochs=20, freeze_epochs=4),
                           runtime=RuntimeConfig(precision=self.precision, progress=False,
                                                 channels_last=self.channels_last, compile=self.compile))


def loader(batch: int, size: int, steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = batch * steps
    data = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g),
                         torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch, drop_last=True)


def build(name: str, variant: Variant, grid: str = "stride", backbone_kwargs: dict | None = None
          ) -> tuple[pipnet.PIPNet, torch.nn.Module]:
    """The model (same random weights for every variant) and what the loop calls (compiled or not)."""
    torch.manual_seed(0)
    model = pipnet.create_model(name, 10, grid=grid, **(backbone_kwargs or {}))
    if variant.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, torch.compile(model) if variant.compile else model


def floor_epoch(model: pipnet.PIPNet, backbone: torch.nn.Module, data: DataLoader, variant: Variant) -> None:
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    for x1, x2, _ in data:
        x = torch.cat([x1, x2])
        if variant.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16) if variant.precision == "bf16" else contextlib.nullcontext():
            z = backbone(x)
        z.float().mean().backward()
        model.zero_grad(set_to_none=True)


def time_variant(name: str, size: int, batch: int, steps: int, repeats: int, variant: Variant,
                 phase: str = "full", grid: str = "stride", backbone_kwargs: dict | None = None) -> list[object]:
    model, wrapped = build(name, variant, grid, backbone_kwargs)
    data = loader(batch, size, steps)
    config = variant.config()
    backbone = torch.compile(model.backbone) if variant.compile else model.backbone
    floor = median_seconds(lambda: floor_epoch(model, backbone, data, variant), repeats)
    row: list[object] = [name, size, batch, str(variant), floor / steps]
    plans = plan_epochs(config.schedule)
    classify = next(p for p in plans if p.name == phase)
    for plan in (plans[0], classify):  # pretraining; classification in the chosen phase
        optim = make_stage_optim(model, plan, config, len(data))
        set_trainable(model, plan)
        t = median_seconds(lambda: run_epoch(wrapped, model, data, plan, optim, config, CPU, DistInfo(), None), repeats)
        row += [t / steps, t / floor] if plan.classification else [t / floor]
    return row


def loss_curve(name: str, size: int, batch: int, steps: int, variant: Variant, grid: str = "stride",
               backbone_kwargs: dict | None = None) -> list[float]:
    """Total loss of ``steps`` successive classification steps (all groups trained) from the same weights."""
    model, wrapped = build(name, variant, grid, backbone_kwargs)
    config = variant.config()
    plan = plan_epochs(config.schedule)[-1]
    data = loader(batch, size, steps)
    optim = make_stage_optim(model, plan, config, len(data))
    set_trainable(model, plan)
    losses = []
    for x1, x2, y in data:  # one-step epochs, so that every step's loss comes back
        one = DataLoader(TensorDataset(x1, x2, y), batch_size=batch)
        losses.append(run_epoch(wrapped, model, one, plan, optim, config, CPU, DistInfo(), None)["loss"])
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50", "convnext_tiny_26", "efficientnet_lite0"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[112])
    ap.add_argument("--variants", nargs="+", type=Variant.parse, default=[Variant.parse("fp32")],
                    help="precision[+cl][+compile], e.g. fp32 bf16 bf16+cl bf16+compile (the first is the reference)")
    ap.add_argument("--batch", type=int, default=8, help="images per batch (each gives two views)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--phase", choices=["full", "frozen_backbone"], default="full",
                    help="the classification phase timed: everything trained (full, the default) or the early "
                         "backbone frozen (frozen_backbone, all of cpu-small's classification)")
    ap.add_argument("--grid", choices=["stride", "dilate"], default="stride", help="how the backbone keeps its grid")
    ap.add_argument("--backbone-kwargs", type=json.loads, default={}, metavar="JSON",
                    help='the backbone builder\'s arguments, e.g. \'{"stages": 6, "output_stride": 16}\' (cpu-small\'s)')
    ap.add_argument("--loss-check", type=int, default=0, metavar="N",
                    help="also compare the losses of N classification steps of every variant with the first")
    args = ap.parse_args()
    rows, checks = [], []
    for name in args.backbones:
        for size in args.sizes:
            reference = None
            for variant in args.variants:
                row = time_variant(name, size, args.batch, args.steps, args.repeats, variant, args.phase, args.grid,
                                   args.backbone_kwargs)
                reference = reference or row[6]
                rows.append(row + [reference / row[6]])
                print_table(HEADERS, rows[-1:])
            if args.loss_check:
                curves = [loss_curve(name, size, args.batch, args.loss_check, v, args.grid, args.backbone_kwargs)
                          for v in args.variants]
                for variant, curve in zip(args.variants[1:], curves[1:]):
                    diff = max(abs(a - b) / abs(b) for a, b in zip(curve, curves[0]))
                    checks.append([name, size, str(variant), " ".join(f"{v:.4f}" for v in curve),
                                   " ".join(f"{v:.4f}" for v in curves[0]), f"{diff:.1e}"])
    print()
    print(f"batch {args.batch} images (x2 views), {args.steps} steps, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads; speed-up = classify s/step of {args.variants[0]} / this variant's")
    print_table(HEADERS, rows)
    if checks:
        print()
        print_table(["backbone", "size", "variant", "losses", f"{args.variants[0]} losses", "max relative difference"], checks)


if __name__ == "__main__":
    main()
