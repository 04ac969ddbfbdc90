"""Shortcut repair on data with a known confounder: accuracy on clean test images before and after each repair.

Two data sets, each with a confounded training set and a test set where the confounder carries no
information about the class:

- ``planted``: the planted-parts ``shortcut`` variant (the background colour follows the class) against its
  ``deconfounded`` split; the clean model is trained on the ``unconfounded`` variant (the same tints drawn
  at random), whose test split is the same images.
- ``photos``: a real-photo image-folder tree made confounded by ``benchmarks/confound_photos.py`` (a coloured
  corner tag per class on the training images; at random on ``test``); the clean model is trained on the
  untagged photos and every model is measured on the ``test`` copy with random tags.

For every seed: train the confounded and the clean model (a shortened demo schedule), list the suspects
(``pipnet.evaluation.shortcuts``), forbid the top ones and compare the repairs: switch off + re-fit, forbid
with only the add-on fine-tuned, forbid with the backbone fine-tuned. Prints one table per data set and
the medians over seeds.

    python benchmarks/bench_shortcut.py --data planted --seeds 0 1 2 --work runs/bench-shortcut
    python benchmarks/bench_shortcut.py --data photos --root PHOTOS_CONFOUNDED --clean-root PHOTOS --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table

from pipnet.core.data_config import DataConfig, PlantedConfig
from pipnet.core.train_config import TrainConfig
from pipnet.demo import demo_config

IMAGE_SIZE = 64  # the demo's backbone at 64 px (an 8 x 8 grid) with a shortened schedule: a few minutes a run


def bench_config(out: Path, data: DataConfig, seed: int) -> TrainConfig:
    """The demo's settings at 64 px with 2 + 8 epochs instead of 5 + 16, on ``data``."""
    config = demo_config(str(out), progress=False, seed=seed)
    config.data = data
    config.schedule = dataclasses.replace(config.schedule, epochs_pretrain=2, epochs=8, classifier_only_epochs=2,
                                          freeze_epochs=2)
    return config


def planted_data(variant: str) -> DataConfig:
    return DataConfig(source="planted", image_size=IMAGE_SIZE,
                      planted=PlantedConfig(size=IMAGE_SIZE, variant=variant, ood_images=0, multi_images=0))


def folder_data(root: str) -> DataConfig:
    return DataConfig(source="folder", root=root, image_size=IMAGE_SIZE)


def train_once(out: Path, data: DataConfig, seed: int) -> float:
    """Train into ``out`` unless it holds a model already; the training's seconds (from ``timing.json``)."""
    from pipnet.train import train

    timing = out / "timing.json"
    if not (out / "model.safetensors").is_file():
        started = time.perf_counter()
        train(bench_config(out, data, seed))
        timing.write_text(json.dumps({"train_seconds": time.perf_counter() - started}))
    return json.loads(timing.read_text())["train_seconds"] if timing.is_file() else float("nan")


def confounder_labels(data: DataConfig, dataset, args) -> list[int]:
    """For every clean-test image, the class the confounder shows (its background or tag colour)."""
    if args.data == "planted":
        from pipnet.data.planted import deconfounded_background_class

        return [deconfounded_background_class(data.planted, "test", i) for i in range(len(dataset))]
    tags = json.loads((Path(args.root).parent / "tags.json").read_text())
    root = Path(data.root).resolve()
    return [tags[Path(path).resolve().relative_to(root).as_posix()] for path, _ in dataset.base.samples]


def confounder_prototypes(presence, labels, shown, model, minimum: int = 5) -> list[int]:
    """Used prototypes that follow the confounder: on the clean test images where one is present (>= 0.5), the
    colour shown is its class's more often than the image's class is (and it is present on >= ``minimum``)."""
    import torch

    weights = model.classifier_weights().detach().float().cpu()
    found = []
    for p in model.used_prototypes().tolist():
        present = presence[:, p] >= 0.5
        if int(present.sum()) < minimum:
            continue
        cls = int(weights[:, p].argmax())
        by_confounder = float((torch.as_tensor(shown)[present] == cls).float().mean())
        by_class = float((labels[present] == cls).float().mean())
        if by_confounder > by_class:
            found.append(p)
    return found


def evidence_share(presence, model, prototypes: list[int]) -> float:
    """Mean over images of the share of the predicted class's evidence (presence x weight, presence < 0.1
    counted as 0) that comes from ``prototypes``."""
    import torch

    from pipnet.model import PRESENCE_THRESHOLD

    used = torch.where(presence < PRESENCE_THRESHOLD, 0.0, presence) * model.prototype_mask.float()  # (N, P)
    weights = model.classifier_weights().detach().float().cpu()  # (C, P)
    evidence = used[:, None, :] * weights[None]  # (N, C, P)
    pred = evidence.sum(dim=2).argmax(dim=1)
    chosen = evidence[torch.arange(len(pred)), pred]  # (N, P)
    total = chosen.sum(dim=1)
    part = chosen[:, prototypes].sum(dim=1) if prototypes else torch.zeros_like(total)
    keep = total > 0
    return float((part[keep] / total[keep]).mean()) if keep.any() else 0.0


def measure_seed(work: Path, seed: int, args) -> list[list]:
    """The rows of one seed: the confounded model, each repair and the clean model on the clean test images."""
    from pipnet.evaluation.inference import build_model_data
    from pipnet.evaluation.shortcuts import find_suspects
    from pipnet.model import PIPNet
    from pipnet.model.run_folder import RunFolder
    from pipnet.train.refit import presence_table, refit, sheet_accuracy
    from pipnet.train.repair import RepairSettings, repair

    run, clean_run = work / f"confounded-{seed}", work / f"clean-{seed}"
    train_seconds = json.loads((run / "timing.json").read_text())["train_seconds"]
    model = PIPNet.from_pretrained(run)
    data = build_model_data(RunFolder(run).training_config().data, model)
    clean_config = (planted_data("unconfounded") if args.data == "planted" else folder_data(args.clean_root))
    clean_test = build_model_data(clean_config, model).test
    shown = confounder_labels(clean_config, clean_test, args)

    def row(name: str, m: PIPNet, forbidden: list[int], seconds: float) -> list:
        presence, labels = presence_table(m, clean_test)
        bias = m.classifier.bias.detach().float() if m.classifier.bias is not None else None
        accuracy = sheet_accuracy(presence, labels, m.classifier.weight.detach().float(), m.prototype_mask.float(), bias)
        confounders = confounder_prototypes(presence, labels, shown, m)
        return [name, accuracy, evidence_share(presence, m, confounders), evidence_share(presence, m, forbidden),
                seconds, seconds / train_seconds]

    suspects = find_suspects(model, data.projection)
    forbid = [s.prototype for s in suspects[: args.forbid] if s.score >= args.min_score]
    presence, labels = presence_table(model, clean_test)
    truth = confounder_prototypes(presence, labels, shown, model)
    top5 = [s.prototype for s in suspects[:5]]
    print(f"seed {seed}: confounder prototypes {truth}; top-5 suspects {top5} "
          f"(scores {[round(s.score, 2) for s in suspects[:5]]}); forbidden {forbid}; "
          f"recall of the confounder prototypes in the top 5: {len(set(truth) & set(top5))}/{len(truth)}", flush=True)
    rows = [row("confounded", model, forbid, train_seconds)]
    if forbid:
        started = time.perf_counter()
        switched = refit(model, data.projection, clean_test, forbid)
        rows.append(row("switch off + refit", switched.model, forbid, time.perf_counter() - started))
        for name, settings in (("forbid, add-on only", RepairSettings(train_backbone=False, similar=args.similar)),
                               ("forbid + fine-tune", RepairSettings(similar=args.similar))):
            started = time.perf_counter()
            result = repair(model, data.projection, clean_test, forbid, settings=settings)
            rows.append(row(name, result.model, forbid, time.perf_counter() - started))
            print(f"seed {seed} {name}: {result.summary()}", flush=True)
    if not (clean_run / "model.safetensors").is_file():
        return rows
    clean = PIPNet.from_pretrained(clean_run)
    clean_seconds = json.loads((clean_run / "timing.json").read_text())["train_seconds"]
    rows.append(row("clean (trained without the confounder)", clean, [], clean_seconds))
    lost = rows[-1][1] - rows[0][1]
    for r in rows[1:-1]:
        ratio = f"{r[1] / rows[-1][1]:.2f}x" if rows[-1][1] > 0 else "n/a"
        print(f"seed {seed} {r[0]}: {ratio} the clean model's accuracy; recovers "
              + (f"{(r[1] - rows[0][1]) / lost:.0%}" if lost > 0 else "n/a (nothing lost)")
              + " of the accuracy lost to the confounder", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["planted", "photos"], default="planted")
    ap.add_argument("--root", help="photos: the confounded image-folder tree (confound_photos.py's output)")
    ap.add_argument("--clean-root", help="photos: the original tree (the clean model trains on it)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--work", default="runs/bench-shortcut", help="where the trained runs are kept (reused when present)")
    ap.add_argument("--forbid", type=int, default=5, help="how many of the top suspects to forbid")
    ap.add_argument("--min-score", type=float, default=0.5, help="forbid only suspects scoring at least this")
    ap.add_argument("--similar", type=float, default=None,
                    help="also forbid patches this cosine-similar to the forbidden prototypes' own (RepairSettings.similar)")
    ap.add_argument("--train-only", action="store_true", help="train the runs and stop")
    ap.add_argument("--only", choices=["confounded", "clean"], help="train only these models (measuring skips missing ones)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work) / args.data
    for seed in args.seeds:
        if args.data == "planted":
            confounded, clean = planted_data("shortcut"), planted_data("unconfounded")
        else:
            confounded, clean = folder_data(args.root), folder_data(args.clean_root)
        for name, data in (("confounded", confounded), ("clean", clean)):
            if args.only not in (None, name):
                continue
            seconds = train_once(work / f"{name}-{seed}", data, seed)
            print(f"trained {name} seed {seed}: {seconds:.0f} s", flush=True)
    if args.train_only:
        return
    rows, medians = [], {}
    for seed in args.seeds:
        for row in measure_seed(work, seed, args):
            rows.append([seed, *row])
            medians.setdefault(row[0], []).append(row[1:])
    headers = ["seed", "model", "clean-test acc", "confounder evidence", "forbidden evidence", "seconds", "x training"]
    print_table(headers, rows)
    print()
    print_table(["model (median of seeds)", *headers[2:]],
                [[name, *[statistics.median(v[i] for v in values) for i in range(len(values[0]))]]
                 for name, values in medians.items()])


if __name__ == "__main__":
    main()
