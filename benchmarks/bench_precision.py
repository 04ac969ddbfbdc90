"""fp32 against bf16 per training phase on this machine, and what ``runtime.precision: auto`` picks here.

For the demo's model (EfficientNet-Lite0 cut after stage 4, 112 px, 32 prototypes through an add-on, batch
16) and ``configs/cpu-small.yaml``'s (cut after stage 5, 128 px, P = D = 112, batch 16), optionally others
(``--models resnet18``), the seconds per step of: a pretraining step, a classification step (every group
trained; both are the engine's own ``run_epoch``), and an evaluation pass (``pipnet.evaluation.evaluate``'s class
scores, batched ``model.predict`` under :func:`pipnet.evaluation.inference.eval_mode`). Variants are timed round-robin
inside one run (medians), so ratios are comparable even on a noisy machine; ``+cl`` (channels_last) is added
for ResNets, where it applies. The last column says whether ``auto`` chose the faster precision of the
training steps.

    python benchmarks/bench_precision.py                   # this machine as it is
    python benchmarks/bench_precision.py --emulate-avx2    # the same machine computing like an AVX2-only CPU

``--emulate-avx2`` re-runs the script with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (read when
torch starts), which makes an AMX or avx512_bf16 machine compute like the AVX2 kind, where bf16 is emulated.
Random weights and inputs (speed does not depend on them); the Lite0 architecture is built without weights.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MODELS = {  # name: (backbone, backbone kwargs, num_features, image size, batch)
    "demo": ("efficientnet_lite0", {"stages": 4}, 32, 112, 16),
    "cpu-small": ("efficientnet_lite0", {"stages": 5}, 0, 128, 16),
    "resnet18": ("resnet18", {}, 0, 112, 16),
}



def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "?"
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return " ".join(shown) or "none of avx2/avx512/amx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["demo", "cpu-small"], choices=list(MODELS))
    ap.add_argument("--steps", type=int, default=3, help="steps per timed epoch")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the round-robin (medians)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--emulate-avx2", action="store_true", help="run as an AVX2-only CPU (see the module docstring)")
    args = ap.parse_args()
    if args.emulate_avx2 and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        argv = [a for a in sys.argv[1:] if a != "--emulate-avx2"]
        sys.exit(subprocess.call([sys.executable, __file__, *argv], env={**os.environ, **AVX2}))
    run(args)


def run(args: argparse.Namespace) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, str(Path(__file__).parent))
    from common import cpu_model_name, print_table, timed_round_robin

    import pipnet
    from pipnet.evaluation.inference import eval_mode
    from pipnet.core.precision import inference_precision, resolve_precision
    from pipnet.core.train_config import RuntimeConfig, ScheduleConfig, TrainConfig
    from pipnet.train.distributed import DistInfo
    from pipnet.train.engine import run_epoch
    from pipnet.train.optim import make_stage_optim, set_trainable
    from pipnet.train.phases import plan_epochs

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    print(f"CPU: {cpu_model_name()}; flags: {cpu_flags()}; torch {torch.__version__}, kernels "
          f"{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}, "
          f"{torch.get_num_threads()} threads")
    print(f"auto picks {auto.precision}: {auto.reason}\n")

    rows = []
    for name in args.models:
        backbone, kwargs, features, size, batch = MODELS[name]
        variants = ["fp32", "bf16"] + (["fp32+cl", "bf16+cl"] if backbone.startswith("resnet") else [])
        g = torch.Generator().manual_seed(0)
        n = batch * args.steps
        data = DataLoader(TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g),
                                        torch.randint(0, 10, (n,), generator=g)), batch_size=batch)
        evaluation = torch.randn(n, 3, size, size, generator=g)
        runs = {}
        for variant in variants:
            precision, cl = variant.split("+")[0], variant.endswith("+cl")
            torch.manual_seed(0)
            model = pipnet.create_model(backbone, 10, pretrained=False, num_features=features, image_size=size, **kwargs)
            if cl:
                model.to(memory_format=torch.channels_last)
            config = TrainConfig(schedule=ScheduleConfig(epochs_pretrain=1, epochs=20, freeze_epochs=4),
                                 runtime=RuntimeConfig(precision=precision, progress=False, channels_last=cl))
            plans = plan_epochs(config.schedule)
            for phase, plan in (("pretrain", plans[0]), ("classify", plans[-1])):
                optim = make_stage_optim(model, plan, config, len(data))

                def step(model=model, plan=plan, optim=optim, config=config):
                    set_trainable(model, plan)
                    run_epoch(model, model, data, plan, optim, config, cpu, DistInfo(), None)

                runs[(variant, phase)] = step

            def evaluate(model=model, precision=precision):
                with inference_precision(precision), eval_mode(model):
                    for i in range(0, n, batch):
                        model.predict(evaluation[i:i + batch])

            runs[(variant, "evaluate")] = evaluate
        times = timed_round_robin(runs, args.repeats)
        per_step = {key: t / args.steps for key, t in times.items()}
        train_time = {v: per_step[(v, "pretrain")] + per_step[(v, "classify")] for v in variants}
        faster = min(("fp32", "bf16"), key=lambda v: train_time[v])
        for variant in variants:
            ratio = {phase: per_step[("fp32", phase)] / per_step[(variant, phase)] for phase in ("pretrain", "classify", "evaluate")}
            rows.append([name, size, batch, variant, per_step[(variant, "pretrain")], per_step[(variant, "classify")],
                         per_step[(variant, "evaluate")], f"{ratio['pretrain']:.2f}x", f"{ratio['classify']:.2f}x",
                         f"{ratio['evaluate']:.2f}x",
                         (f"auto: {auto.precision} ({'the faster' if auto.precision == faster else 'NOT the faster'})"
                          if variant == auto.precision else "")])
    print_table(["model", "size", "batch", "variant", "pretrain s/step", "classify s/step", "evaluate s/batch",
                 "pretrain speed-up", "classify speed-up", "evaluate speed-up", "auto"], rows)
    print("\nspeed-up = fp32 time / the variant's time (medians of round-robin rounds in this run); > 1 is faster.")


if __name__ == "__main__":
    main()
