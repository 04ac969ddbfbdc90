"""A few-minute check of the CUDA path, for a machine with a GPU.

1. The training loop's own step (``pipnet.train.step.train_step``) in fp32, bf16 and fp16 (with a gradient
   scaler) on the same batch: losses finite and close to the CPU's fp32 losses (the first step from the same weights).
2. Training-step throughput per precision, with and without channels_last (table of ratios to fp32).
3. Evaluation and projection throughput against plain inference.

    python benchmarks/gpu_check.py --backbone convnext_tiny_26 --size 224 --batch 32
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

import pipnet  # noqa: E402
from pipnet.core.train_config import ScheduleConfig, TrainConfig  # noqa: E402
from pipnet.train.optim import make_stage_optim, set_trainable  # noqa: E402
from pipnet.train.phases import plan_epochs  # noqa: E402
from pipnet.train.step import train_step  # noqa: E402


def step(model, x, y, plan, precision, optim, scaler=None):
    """The training loop's own step (losses, backward, optimisers, schedules, soft threshold); its losses."""
    parts = train_step(model, model, x, y, plan, optim, precision=precision, scaler=scaler, classifier_epoch=0.0).parts
    return {k: float(v) for k, v in parts.items()}


def fresh(model, plan, config):
    """The model's trainable groups set as the plan says, and a fresh optimiser for its stage."""
    set_trainable(model, plan)
    return make_stage_optim(model, plan, config, iters=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="convnext_tiny_26")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script checks the GPU path")
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    base = pipnet.create_model(args.backbone, 10)
    config = TrainConfig(schedule=ScheduleConfig(epochs_pretrain=1, epochs=20, freeze_epochs=4))
    plan = plan_epochs(config.schedule)[-1]
    x = torch.randn(2 * args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    cpu_model = copy.deepcopy(base).train()
    cpu_parts = step(cpu_model, x[:8], y[:4], plan, "fp32", fresh(cpu_model, plan, config))  # losses before its update
    rows, speed = [], {}
    for precision in ("fp32", "bf16", "fp16"):
        for channels_last in (False, True):
            model = copy.deepcopy(base).to(cuda).train()
            if channels_last:
                model.to(memory_format=torch.channels_last)
            optim = fresh(model, plan, config)
            scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
            first = step(model, x[:8].to(cuda), y[:4].to(cuda), plan, precision, optim, scaler)  # from the CPU's weights
            xb, yb = x.to(cuda), y.to(cuda)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            step(model, xb, yb, plan, precision, optim, scaler)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                last = step(model, xb, yb, plan, precision, optim, scaler)
            torch.cuda.synchronize()
            rate = args.steps * args.batch / (time.perf_counter() - start)
            speed[(precision, channels_last)] = rate
            diff = max(abs(first[k] - cpu_parts[k]) / max(abs(cpu_parts[k]), 1e-6) for k in cpu_parts)
            rows.append([precision, channels_last, f"{rate:.1f}", f"{rate / speed[('fp32', False)]:.2f}x", f"{diff:.2e}",
                         all(map(lambda v: v == v, last.values()))])
    print_table(["precision", "channels_last", "images/s", "vs fp32", "max rel. diff of first-step losses vs CPU", "finite"], rows)
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, device {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
