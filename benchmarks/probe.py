"""A black-box baseline for a folder of images: a linear probe on a frozen, pretrained backbone.

Multinomial logistic regression on the globally average-pooled feature map z (B, D, h, w) -> (B, D) of
one of pipnet's registered backbones, with pipnet's own evaluation transform (RGB, resize to S x S,
ImageNet normalisation). With the same ``--backbone``, ``--backbone-kwargs`` and ``--image-size`` as a
PIP-Net run, it sees exactly the features that PIP-Net's prototypes are built on, so its test accuracy
says what the interpretable model costs or gains against a black box on the same data.

The L2 penalty is chosen on a seeded, stratified part of the training split only (``--holdout``); the
probe is then refitted on the whole training split with that penalty and scored once on the test split.
Features are standardised with the training split's mean and standard deviation. The fit is full-batch
L-BFGS in float64 (no scikit-learn needed).

    python benchmarks/probe.py /data/photos --backbone efficientnet_lite0 --backbone-kwargs '{"stages": 4}' --image-size 128
    python benchmarks/probe.py /data/photos                 # the full EfficientNet-Lite0 at 224 px
    python benchmarks/probe.py /data/photos --ood /data/unrelated-photos   # + how well a black box rejects them

With ``--ood FOLDER`` (repeatable) it also says how well the black box rejects images of no class, by the
rule ``pipnet evaluate`` uses (FPR at 95% TPR: per predicted class, the threshold that keeps 95% of the
test images predicted as that class; ``pipnet.metrics.ood_thresholds``), for three scores: the probe's
maximum softmax probability, its maximum logit, and the cosine similarity of the image's pooled
feature vector to its nearest training image (a class-agnostic feature-space score). This is the
reference for PIP-Net's FPR95 on the same data: the backbone's features bound what any head on them can
reject.

The folder is read as ``pipnet train --data.source folder`` reads it: ``train/<class>/*`` and
``test/<class>/*``, or a held-out ``--val-fraction`` of ``train/`` when there is no ``test/`` (same seed,
same split).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

from pipnet.model.backbones import BackboneError, create_backbone  # noqa: E402
from pipnet.data.errors import DataError  # noqa: E402
from pipnet.data.folders import image_tree, load_folder_source  # noqa: E402
from pipnet.evaluation import metrics as M  # noqa: E402
from pipnet.data.wrappers import EvalDataset  # noqa: E402

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@torch.no_grad()
def pooled_features(backbone: torch.nn.Module, data: EvalDataset, batch_size: int, precision: str) -> torch.Tensor:
    """(N, D) float32: the backbone's feature map averaged over the grid, for every image in data-set order."""
    backbone.eval()
    out = []
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
        with autocast:
            z = backbone(x)  # (B, D, h, w)
        out.append(z.float().mean(dim=(2, 3)))  # (B, D)
    return torch.cat(out)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: minimise mean cross-entropy + l2 / 2 * ||W||^2 (bias not penalised).

    Args:
        x: (N, D) standardised features.
        y: (N,) long labels.
        num_classes: C.
        l2: the penalty.
        max_iter: L-BFGS iterations.

    Returns:
        W (D, C) and b (C,), float64.
    """
    x = x.double()
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return float(((x.double() @ w + b).argmax(dim=1) == y).double().mean())


def holdout_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, held out): per class, a seeded ``fraction`` (at least one image when the class has two)."""
    fit, held = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten().numpy()
        idx = idx[np.random.default_rng([seed, c]).permutation(len(idx))]
        n_held = min(max(round(len(idx) * fraction), 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held += idx[:n_held].tolist()
        fit += idx[n_held:].tolist()
    return torch.tensor(sorted(fit)), torch.tensor(sorted(held))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the data folder: train/<class>/* and optionally test/<class>/*")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="a registered backbone name (pipnet.list_models())")
    parser.add_argument("--backbone-kwargs", default="{}", help='JSON arguments of the backbone builder, e.g. \'{"stages": 4}\'')
    parser.add_argument("--pretrained", default="true",
                        help="'true' (ImageNet weights; offline for efficientnet_lite0), 'false', or a weights file")
    parser.add_argument("--image-size", type=int, default=224, help="S: images are resized to S x S")
    parser.add_argument("--preset", default="default", help="augmentation preset (only 'grayscale' changes the test transform)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="feature extraction precision (CPU autocast)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="test split when the folder has no test/ (as pipnet train)")
    parser.add_argument("--holdout", type=float, default=0.25, help="part of the training split that chooses the L2 penalty")
    parser.add_argument("--l2", type=float, nargs="+", default=list(L2_GRID), help="candidate L2 penalties")
    parser.add_argument("--ood", action="append", default=[], metavar="FOLDER",
                        help="a folder of images of no class (repeatable): report FPR95 and AUROC of three scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        kwargs = json.loads(args.backbone_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        parser.error(f"--backbone-kwargs must be a JSON object, e.g. '{{\"stages\": 4}}' ({e})")
    pretrained: bool | str = {"true": True, "false": False}.get(args.pretrained.lower(), args.pretrained)

    start = time.perf_counter()
    try:
        source = load_folder_source(args.root, args.val_fraction, args.seed)
        backbone = create_backbone(args.backbone, pretrained=pretrained, **kwargs)
    except (DataError, BackboneError) as e:
        parser.error(str(e))
    if source.test is None:
        parser.error(f"{args.root} has no test split (no test/ folder and --val-fraction 0)")
    num_classes = len(source.classes)

    train = EvalDataset(source.train, args.image_size, args.preset)
    test = EvalDataset(source.test, args.image_size, args.preset)
    x_train = pooled_features(backbone, train, args.batch_size, args.precision)
    x_test = pooled_features(backbone, test, args.batch_size, args.precision)
    y_train, y_test = torch.tensor(source.train.targets), torch.tensor(source.test.targets)
    seconds_features = time.perf_counter() - start

    def standardise(fit_x: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
        mean, std = fit_x.mean(dim=0), fit_x.std(dim=0).clamp_min(1e-6)
        return [(t - mean) / std for t in (fit_x, *others)]

    # The penalty: best held-out accuracy on a part of the training split (ties: the lower held-out loss).
    fit_i, held_i = holdout_split(y_train, args.holdout, args.seed)
    rows, best = [], None
    for l2 in args.l2:
        xf, xh = standardise(x_train[fit_i], x_train[held_i])
        w, b = fit_logistic(xf, y_train[fit_i], num_classes, l2)
        held_acc = accuracy(xh, y_train[held_i], w, b)
        held_loss = float(F.cross_entropy(xh.double() @ w + b, y_train[held_i]))
        rows.append([f"{l2:g}", accuracy(xf, y_train[fit_i], w, b), held_acc, held_loss])
        if best is None or (held_acc, -held_loss) > best[1:]:
            best = (l2, held_acc, -held_loss)
    assert best is not None
    xtr, xte = standardise(x_train, x_test)
    w, b = fit_logistic(xtr, y_train, num_classes, best[0])
    seconds = time.perf_counter() - start

    print(f"{args.root}: {num_classes} classes, {len(y_train)} training and {len(y_test)} test images; "
          f"{args.backbone} {kwargs or ''} at {args.image_size} px, D = {x_train.shape[1]}, {args.precision}")
    print(f"L2 chosen on {len(held_i)} held-out training images (fitted on {len(fit_i)}):")
    print_table(["l2", "fit accuracy", "held-out accuracy", "held-out loss"], rows)
    print()
    print_table(["backbone", "kwargs", "size", "D", "l2", "train accuracy", "test accuracy", "seconds"],
                [[args.backbone, json.dumps(kwargs), args.image_size, int(x_train.shape[1]), f"{best[0]:g}",
                  accuracy(xtr, y_train, w, b), accuracy(xte, y_test, w, b), f"{seconds:.1f}"]])
    print(f"(features {seconds_features:.1f} s of {seconds:.1f} s)")
    if args.ood:
        print()
        rows = []
        for folder in args.ood:
            try:
                ood = EvalDataset(image_tree(folder), args.image_size, args.preset)
            except DataError as e:
                parser.error(str(e))
            x_ood = pooled_features(backbone, ood, args.batch_size, args.precision)
            for name, test_scores, ood_scores in ood_scores_table(x_train, x_test, x_ood, w, b):
                rows.append([Path(folder).name, len(ood), name, *ood_rates(test_scores, ood_scores, num_classes)])
        print("Rejecting images of no class (thresholds keep 95% of the test images of each predicted class):")
        print_table(["ood set", "images", "score", "FPR95", "AUROC"], rows)


def ood_scores_table(x_train: torch.Tensor, x_test: torch.Tensor, x_ood: torch.Tensor, w: torch.Tensor,
                     b: torch.Tensor) -> list[tuple[str, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
    """(score name, (test scores, test predictions), (ood scores, ood predictions)) for the three scores.

    The features are standardised with the training split's statistics (as the probe was fitted); the
    nearest-neighbour score is the cosine similarity to the closest training image.
    """
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).clamp_min(1e-6)
    tr, te, oo = ((t - mean) / std for t in (x_train, x_test, x_ood))
    out = []
    logits = {split: x.double() @ w + b for split, x in (("test", te), ("ood", oo))}
    preds = {k: v.argmax(dim=1) for k, v in logits.items()}
    for name, fn in (("max softmax", lambda z: z.softmax(dim=1).amax(dim=1)), ("max logit", lambda z: z.amax(dim=1))):
        out.append((name, (fn(logits["test"]), preds["test"]), (fn(logits["ood"]), preds["ood"])))
    bank = F.normalize(tr.double(), dim=1)
    nearest = {k: (F.normalize(x.double(), dim=1) @ bank.T).amax(dim=1) for k, x in (("test", te), ("ood", oo))}
    out.append(("nearest training image", (nearest["test"], preds["test"]), (nearest["ood"], preds["ood"])))
    return out


def ood_rates(test: tuple[torch.Tensor, torch.Tensor], ood: tuple[torch.Tensor, torch.Tensor], num_classes: int) -> tuple[float, float]:
    """(FPR at 95% TPR with per-class thresholds, AUROC) of in-distribution test scores against OoD scores."""
    thresholds = M.ood_thresholds(test[0], test[1], num_classes, 0.95)
    return M.fpr_at_tpr(ood[0], ood[1], thresholds), M.auroc(test[0], ood[0])


if __name__ == "__main__":
    main()
