"""Peak memory of PIP-Net training per backbone, input size, batch size and precision.

Each configuration runs in its own process (peak resident memory only ever grows within a process):
the model is built, then two classification steps with every group trained (the most memory-hungry
phase: activations of both views, gradients of every parameter, AdamW states) run through the engine's
``run_epoch``, with the default memory format (channels_last for ResNets). On the CPU the table shows the process's peak resident set size and how much of it the
training steps added on top of the built model and its data; on CUDA, ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_memory.py --backbones resnet18 resnet50 convnext_tiny_26 efficientnet_lite0 --batch 8 16 --sizes 224
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

GIB = 2**30


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is in KiB on Linux


def measure(name: str, size: int, batch: int, precision: str, device: str) -> dict[str, float]:
    """Runs in the child process: two full classification steps, returns the peaks in GiB."""
    import pipnet
    from pipnet.core.train_config import RuntimeConfig, ScheduleConfig, TrainConfig
    from pipnet.train.distributed import DistInfo
    from pipnet.train.engine import run_epoch, uses_channels_last
    from pipnet.train.optim import make_stage_optim, set_trainable
    from pipnet.train.phases import plan_epochs
    from torch.utils.data import DataLoader, TensorDataset

    dev = torch.device(device)
    model = pipnet.create_model(name, 10).to(dev)
    n = 2 * batch
    data = DataLoader(TensorDataset(torch.randn(n, 3, size, size), torch.randn(n, 3, size, size), torch.randint(0, 10, (n,))),
                      batch_size=batch)
    config = TrainConfig(schedule=ScheduleConfig(epochs_pretrain=1, epochs=20, freeze_epochs=4),
                         runtime=RuntimeConfig(precision=precision, progress=False))
    config.model.backbone = name
    if uses_channels_last(config):  # as ``pipnet train`` does by default (ResNets)
        model.to(memory_format=torch.channels_last)
    plan = plan_epochs(config.schedule)[-1]
    optim = make_stage_optim(model, plan, config, len(data))
    set_trainable(model, plan)
    before = peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    run_epoch(model, model, data, plan, optim, config, dev, DistInfo(), None)
    result = {"peak_rss": peak_rss(), "added_rss": peak_rss() - before}
    if dev.type == "cuda":
        result["cuda_peak"] = torch.cuda.max_memory_allocated(dev) / GIB
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50", "convnext_tiny_26", "efficientnet_lite0"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[224])
    ap.add_argument("--batch", nargs="+", type=int, default=[8, 16], help="images per batch (each gives two views)")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    headers = ["backbone", "size", "batch", "precision", "peak RSS GiB", "added by training GiB"]
    headers += ["CUDA peak GiB"] if args.device.startswith("cuda") else []
    rows = []
    for name in args.backbones:
        for size in args.sizes:
            for batch in args.batch:
                for precision in args.precision:
                    spec = json.dumps([name, size, batch, precision, args.device])
                    out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
                    if out.returncode:
                        rows.append([name, size, batch, precision, "failed: " + out.stderr.strip().splitlines()[-1], ""])
                    else:
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                        rows.append([name, size, batch, precision, r["peak_rss"], r["added_rss"]]
                                    + ([r["cuda_peak"]] if "cuda_peak" in r else []))
                    print_table(headers, rows[-1:])
    print()
    print(f"two classification steps with every group trained; batch = images per step, each with two views ({args.device})")
    print_table(headers, rows)


if __name__ == "__main__":
    main()
