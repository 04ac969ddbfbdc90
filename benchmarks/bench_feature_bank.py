"""Training with and without the feature bank (``--schedule.feature_bank_views``): time and accuracy.

Runs ``pipnet train --config configs/cpu-small.yaml`` on an image folder once per number of stored views
(0 = no bank, today's recipe), seed and CPU setting, each as its own process, one after the other, and
prints one Markdown row per run: the precision it resolved to, the seconds spent building the bank, the
median seconds of a classification epoch (history.csv, the test evaluation after each epoch included),
the whole command's wall time, and the final test top-1, sparsity and local size (metrics.json); the
ratio columns compare with the run without a bank of the same set, seed and CPU setting.

``--isa avx2`` runs with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (the kernels an AVX2-only CPU
computes with; ``precision auto`` reads those variables and resolves to fp32 there; the table names the
precision each run used). Without ``--root`` the synthetic planted-parts data is
used. ``--epochs`` / ``--epochs-pretrain`` shorten the schedule for a timing-only run.

Examples:
    python benchmarks/bench_feature_bank.py --root DATA/gcompris-photos --views 0 4 8 --seeds 0
    python benchmarks/bench_feature_bank.py --root DATA/gcompris-photos --views 0 8 --isa native avx2 --epochs 6
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_model_name, print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}



def train_once(args: argparse.Namespace, views: int, seed: int, isa: str, out: Path) -> dict[str, object]:
    """One ``pipnet train`` process; its timings and metrics."""
    command = [sys.executable, "-m", "pipnet", "train", "--config", str(REPO / "configs" / "cpu-small.yaml"),
               "--schedule.feature_bank_views", str(views), "--runtime.seed", str(seed), "--runtime.progress", "false",
               "--out", str(out)]
    if args.root:
        command += ["--data.source", "folder", "--data.root", str(args.root)]
    if args.epochs is not None:
        command += ["--schedule.epochs", str(args.epochs), "--schedule.freeze_epochs", str(args.epochs)]
    if args.epochs_pretrain is not None:
        command += ["--schedule.epochs_pretrain", str(args.epochs_pretrain)]
    command += args.extra
    env = {**os.environ, **(AVX2 if isa == "avx2" else {})}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"error: the run failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    rows = list(csv.DictReader((out / "history.csv").open()))
    # The epochs that train the prototypes and the scoring sheet (27 of cpu-small's 30); else every classification epoch.
    classify = [float(r["seconds"]) for r in rows if r["phase"] == "frozen_backbone"] or \
        [float(r["seconds"]) for r in rows if r["stage"] == "classify"]
    bank = sum(float(r.get("bank_seconds") or 0) for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    precision = next((line.split(":", 1)[1].strip() for line in (out / "config.yaml").read_text().splitlines()
                      if line.strip().startswith("precision:")), "?")
    return {"views": views, "seed": seed, "isa": isa, "precision": precision, "bank_s": bank,
            "epoch_s": statistics.median(classify), "total_s": wall, "top1": metrics["top1_accuracy"],
            "sparsity": metrics["sparsity_ratio"], "local_size": metrics["local_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="an image folder with train/ and test/ (default: the synthetic data)")
    parser.add_argument("--views", type=int, nargs="+", default=[0, 4, 8], help="stored views per image (0: no bank)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--isa", nargs="+", choices=("native", "avx2"), default=["native"],
                        help="CPU setting: native, or avx2 (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)")
    parser.add_argument("--epochs", type=int, help="classification epochs (default: the recipe's 30), all frozen")
    parser.add_argument("--epochs-pretrain", type=int, help="pretraining epochs (default: the recipe's 5)")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="more `pipnet train` flags, after --")
    args = parser.parse_args()
    print(f"# feature bank: {args.root.name if args.root else 'planted (synthetic)'}, {cpu_model_name()}, "
          f"{os.cpu_count()} cores, {date.today()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.keep or Path(tmp)
        for seed in args.seeds:
            for isa in args.isa:
                for views in args.views:
                    out = runs / f"seed{seed}-{isa}-views{views}"
                    results.append(train_once(args, views, seed, isa, out))
                    r = results[-1]
                    print(f"# done: seed {seed} {isa} views {views}: {r['total_s']:.0f} s, top-1 {r['top1']:.3f}", flush=True)
    base = {(r["seed"], r["isa"]): r for r in results if r["views"] == 0}
    rows = []
    for r in results:
        b = base.get((r["seed"], r["isa"]))
        ratio = (lambda k: f"{b[k] / r[k]:.2f}x" if b and r[k] else "-")
        rows.append([r["seed"], r["isa"], r["precision"], r["views"], f"{r['bank_s']:.1f}", f"{r['epoch_s']:.2f}",
                     ratio("epoch_s"), f"{r['total_s']:.0f}", ratio("total_s"), f"{r['top1']:.3f}",
                     f"{r['sparsity']:.3f}", f"{r['local_size']:.1f}"])
    print_table(["seed", "CPU setting", "precision", "views", "bank s", "classify epoch s (median)", "epoch speed-up",
                 "total s", "total speed-up", "top-1", "sparsity", "local size"], rows)


if __name__ == "__main__":
    main()
