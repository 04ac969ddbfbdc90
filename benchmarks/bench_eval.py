"""Throughput of ``evaluate`` and ``project`` relative to plain batched inference (``model.predict``).

All three read the same random tensors through the same kind of loader, with a randomly initialised model,
so the ratios show the cost of the bookkeeping (top-k merging, explanation sizes, score collection) on top
of the forward pass. Each number is the median of several timed repetitions after one warm-up.

    python benchmarks/bench_eval.py --model resnet18 --sizes 112 224 --images 128
    python benchmarks/bench_eval.py --protocols      # also evaluate + OoD under the default and paper protocols
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import pipnet
from pipnet.evaluation.evaluate import evaluate
from pipnet.evaluation.inference import choose_device
from pipnet.evaluation.projection import project

sys.path.insert(0, str(Path(__file__).parent))
from common import timed_round_robin  # noqa: E402


def plain_inference(model: pipnet.PIPNet, data: TensorDataset, batch_size: int, device: torch.device) -> None:
    model.eval()
    with torch.inference_mode():
        for x, _ in DataLoader(data, batch_size=batch_size, pin_memory=device.type == "cuda"):
            model.predict(x.to(device, non_blocking=True))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--protocols", action="store_true",
                        help="also time evaluate with an OoD set (the same images) under protocol default and paper")
    args = parser.parse_args()
    device = choose_device(args.device)
    torch.manual_seed(0)

    print(f"{args.model}, {args.images} random images, batch {args.batch_size}, {device}, median of {args.repeats}")
    print(f"{'size':>5}  {'grid':>7}  {'P':>5}  {'method':<18}{'images/s':>10}{'ratio':>8}")
    for size in args.sizes:
        model = pipnet.create_model(args.model, num_classes=args.classes, image_size=size).to(device)
        data = TensorDataset(torch.randn(args.images, 3, size, size), torch.randint(0, args.classes, (args.images,)))
        with torch.inference_mode():
            grid = tuple(model.eval().predict(data[0][0][None].to(device)).maps.shape[-2:])
        runs = {
            "plain predict": lambda: plain_inference(model, data, args.batch_size, device),
            "evaluate": lambda: evaluate(model, data, batch_size=args.batch_size),
            "project (k=10)": lambda: project(model, data, k=10, batch_size=args.batch_size),
        }
        if args.protocols:
            ood = {"ood": data}
            runs["eval+OoD default"] = lambda: evaluate(model, data, ood=ood, batch_size=args.batch_size)
            runs["eval+OoD paper"] = lambda: evaluate(model, data, ood=ood, batch_size=args.batch_size, protocol="paper")
        rates = {name: args.images / t for name, t in timed_round_robin(runs, args.repeats, lambda: sync(device)).items()}
        base = rates["plain predict"]
        for name, rate in rates.items():
            shape = f"{grid[0]}x{grid[1]}"
            print(f"{size:>5}  {shape:>7}  {model.num_prototypes:>5}  {name:<18}{rate:>10.1f}{rate / base:>8.2f}")


if __name__ == "__main__":
    main()
