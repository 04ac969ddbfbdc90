"""What ``--optim.prune_everywhere`` would change in a finished run, without training again.

The option acts after training only (on the saved model's projection of the training images), so
evaluating a run's model as saved and again with the prototypes present everywhere pruned gives exactly
what a run with the option would have reported. Prints one table row per variant: accuracy, sparsity,
explanation sizes, each OoD set's FPR95 / AUROC and, with masks, the on-object share.

    python benchmarks/prune_everywhere.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

from pipnet.evaluation.inference import build_model_data  # noqa: E402
from pipnet.evaluation.evaluate import Metrics, evaluate  # noqa: E402
from pipnet.model import PIPNet  # noqa: E402
from pipnet.evaluation.projection import project, prune_everywhere_prototypes  # noqa: E402
from pipnet.model.run_folder import RunFolder  # noqa: E402


def row(run: str, variant: str, m: Metrics) -> list[object]:
    ood = "; ".join(f"{name} {o['fpr95']:.2f} / {o['auroc']:.2f}" for name, o in m.ood.items()) or "-"
    on = "; ".join(f"{name} {o['top10']:.2f} (chance {o['chance']:.2f})" for name, o in m.on_object.items()) or "-"
    return [run, variant, m.top1_accuracy, m.sparsity_ratio, m.global_size, round(m.local_size, 2), ood, on]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (model.safetensors, config.yaml)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        model = PIPNet.from_pretrained(run)
        config = RunFolder(run).training_config()
        if config is None:
            parser.error(f"{run}: not a run folder (no config.yaml)")
        data = build_model_data(config.data, model)
        if data.test is None:
            parser.error(f"{run}: the data has no test split")

        def measure() -> Metrics:
            return evaluate(model, data.test, ood=data.ood or None, mask_sets=data.mask_sets() or None,
                            train_set=data.projection, batch_size=args.batch_size)

        rows.append(row(run, "as trained", measure()))
        projection = project(model, data.projection, k=10, batch_size=args.batch_size)
        pruned = prune_everywhere_prototypes(model, projection, torch.as_tensor(data.projection.targets))
        rows.append(row(run, f"pruned {len(pruned)} everywhere", measure()))
    print_table(["run", "variant", "top-1", "sparsity", "global size", "local size", "OoD FPR95 / AUROC", "on object"], rows)


if __name__ == "__main__":
    main()
