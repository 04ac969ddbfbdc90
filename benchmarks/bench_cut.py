"""What a backbone's cut, output stride and input size cost: forward + backward, relative to the first.

Each configuration is ``STAGES/OUTPUT_STRIDE/SIZE`` of ``efficientnet_lite0`` (random weights: the cost
does not depend on them) built with ``--grid``; one step is ``backbone(x).float().mean().backward()`` on
a batch of ``--batch`` images under the chosen precision. The configurations alternate inside every
round (``common.timed_round_robin``), so a slow spell of the machine affects all alike; the table gives
each one's median seconds, its grid, and its ratio to the first configuration.

    python benchmarks/bench_cut.py                       # the cuts of docs/results/real-photos.md
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_cut.py   # as an AVX2-only CPU
    python benchmarks/bench_cut.py --configs 5/8/128 6/16/160 --grid stride
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, timed_round_robin  # noqa: E402

from pipnet.core.precision import autocast, resolve_precision  # noqa: E402
from pipnet.model.backbones import create_backbone  # noqa: E402

DEFAULT_CONFIGS = ["5/8/128", "6/8/128", "6/16/128", "6/16/160", "7/16/160", "6/8/160"]


def parse_config(text: str) -> tuple[int, int, int]:
    try:
        stages, output_stride, size = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad configuration {text!r}: STAGES/OUTPUT_STRIDE/SIZE, e.g. 6/16/160")
    return stages, output_stride, size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=parse_config, default=[parse_config(c) for c in DEFAULT_CONFIGS],
                        help="STAGES/OUTPUT_STRIDE/SIZE of each configuration; the first is the reference "
                             f"(default: {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--grid", choices=["stride", "dilate"], default="dilate",
                        help="how the grid is kept at the output stride (default: dilate, as cpu-small)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="autocast precision of the step (default: auto, bf16 where this CPU computes it "
                             "natively, else fp32, as training's)")
    parser.add_argument("--batch", type=int, default=32, help="images per step (default: 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; medians are reported (default: 3)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device).precision
    runs, grids = {}, {}
    for stages, output_stride, size in args.configs:
        backbone = create_backbone("efficientnet_lite0", pretrained=False, grid=args.grid, stages=stages,
                                   output_stride=output_stride)
        x = torch.randn(args.batch, 3, size, size)
        name = f"{stages}/{output_stride}/{size}"
        with torch.no_grad():
            grids[name] = "x".join(str(n) for n in backbone(x[:1]).shape[-2:])

        def step(backbone=backbone, x=x) -> None:
            backbone.zero_grad(set_to_none=True)
            with autocast(device, precision):
                out = backbone(x)
            out.float().mean().backward()

        runs[name] = step
    seconds = timed_round_robin(runs, args.repeats)
    first = seconds[next(iter(seconds))]
    print(f"efficientnet_lite0, grid {args.grid}, {precision}, batch {args.batch}, "
          f"median of {args.repeats} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads")
    headers = ["stages / output stride / size", "grid", "s / step", "ratio to the first"]
    print_table(headers, [[name, grids[name], s, s / first] for name, s in seconds.items()])


if __name__ == "__main__":
    main()
