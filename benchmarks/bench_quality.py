"""Cost of the prototype report card (``pipnet.evaluation.quality``) as a ratio to one ``evaluate`` pass.

The data is the built-in planted set (test, OoD, and the training images for projection, purity and
"present everywhere", as training's final evaluation uses them); the model a randomly initialised
PIP-Net with a hand-set sparse scoring sheet (``--used`` prototypes per class), so that a realistic number
of prototypes is carded. The evaluate pass is ``evaluate(model, test, ood=..., purity_sets=..., train_set=...)``
exactly as the training engine calls it, with ``quality=False``. Timed against it: the sensitivity block
alone on the first k top images (:func:`pipnet.evaluation.quality.sensitivity.prototype_sensitivity`), and the whole
card (``quality_card``) with the projection given (as ``evaluate`` gives its own) and computing its own.
Runs alternate inside each round; medians of ``--repeats`` rounds.

    python benchmarks/bench_quality.py --size 64 --prototypes 32 --used 4 --repeats 3
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

import pipnet
from pipnet.model.backbones import backbone_normalization
from pipnet.data import build_data
from pipnet.core.data_config import DataConfig
from pipnet.evaluation.evaluate import evaluate
from pipnet.evaluation.projection import project
from pipnet.evaluation.quality import QUALITY_PRESENCE, SENSITIVITY_K, quality_card
from pipnet.evaluation.quality.sensitivity import prototype_sensitivity

from common import print_table, timed_round_robin



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--prototypes", type=int, default=32)
    parser.add_argument("--used", type=int, default=4, help="prototypes with a weight, per class")
    parser.add_argument("--k", type=int, nargs="+", default=[SENSITIVITY_K, 10],
                        help="top images per prototype for the sensitivity-only rows")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = build_data(DataConfig(source="planted", image_size=args.size), normalization=backbone_normalization(args.model))
    C = len(data.classes)
    model = pipnet.create_model(args.model, num_classes=C, num_features=args.prototypes, image_size=args.size).eval()
    with torch.no_grad():  # class c uses prototypes c * used ... (c + 1) * used - 1 (mod P)
        model.classifier.weight.zero_()
        for c in range(C):
            for j in range(args.used):
                model.classifier.weight[c, (c * args.used + j) % args.prototypes] = 1.0
    used = model.used_prototypes().tolist()
    purity = {"train": data.projection, "test": data.test_projection or data.test} if data.num_parts else None
    b = args.batch_size

    def evaluate_pass() -> None:  # without the card (quality=False): the pass the card is compared with
        evaluate(model, data.test, ood=data.ood or None, purity_sets=purity, train_set=data.projection, batch_size=b,
                 quality=False)

    projection = project(model, data.projection, k=10, batch_size=b, presence_threshold=QUALITY_PRESENCE)
    runs: dict[str, Callable[[], object]] = {"evaluate": evaluate_pass}
    unions = {}
    for k in args.k:
        def sensitivity(k: int = k) -> dict:  # reusing the projection, as evaluate's card does
            top = {p: projection.image_index[p, :k].tolist() for p in used}
            return prototype_sensitivity(model, data.projection, top, batch_size=b)

        runs[f"sensitivity only, k={k}"] = sensitivity
        unions[f"sensitivity only, k={k}"] = sensitivity()["params"]["num_images"]
    runs["card, projection given (as in evaluate)"] = lambda: quality_card(model, data.projection, projection=projection,
                                                                           batch_size=b)
    runs["card, own projection"] = lambda: quality_card(model, data.projection, batch_size=b)
    seconds = timed_round_robin(runs, args.repeats)
    images = len(data.test) + sum(len(d) for d in (data.ood or {}).values()) + len(data.projection)
    print(f"{args.model}, planted data at {args.size} px ({len(data.test)} test, {len(data.projection)} train images), "
          f"{len(used)} of {args.prototypes} prototypes used, batch {b}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    rows = [["evaluate", f"{images}+ (test, OoD, purity/everywhere projections)", seconds["evaluate"], 1.0]]
    for name, s in seconds.items():
        if name != "evaluate":
            rows.append([name, str(unions.get(name, "")), s, s / seconds["evaluate"]])
    print_table(["run", "images (sensitivity: union of top images)", "seconds", "ratio to evaluate"], rows)


if __name__ == "__main__":
    main()
