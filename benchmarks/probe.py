"""A black-box baseline for a folder of images: linear probes on a frozen, pretrained backbone.

Multinomial logistic regression on the globally average-pooled feature map z (B, D, h, w) -> (B, D) of
one of pipnet's registered backbones, with pipnet's own evaluation transform (RGB, resize to S x S, the
normalisation the backbone's weights expect). Per data set it probes three black boxes (``--references``):

  (a) the unmodified pretrained network at its native size (``--native-size``, 224): what a user who only
      wants a classifier would pick;
  (b) the unmodified network cut where the recipe cuts it (``stages``), at the recipe's size;
  (c) the backbone as PIP-Net uses it (``--grid``: strides removed, or dilated), at the recipe's size:
      exactly the features PIP-Net's prototypes are built on.

and names the best. PIP-Net's accuracy is quoted as a ratio to that best black box, not to (c) alone:
(c) already pays for the grid change and would flatter PIP-Net.

The L2 penalty is chosen on a seeded, stratified part of the training split only (``--holdout``); the
probe is then refitted on the whole training split with that penalty and scored once on the test split.
Features are standardised with the training split's mean and standard deviation. The fit is full-batch
L-BFGS in float64 (no scikit-learn needed).

    python benchmarks/probe.py /data/photos --backbone efficientnet_lite0 --backbone-kwargs '{"stages": 5}' --image-size 128
    python benchmarks/probe.py /data/photos --references c --normalization imagenet   # the old single probe
    python benchmarks/probe.py /data/photos --ood /data/unrelated-photos   # + how well a black box rejects them

With ``--ood FOLDER`` (repeatable) it also says how well the black box rejects images of no class, by the
rule ``pipnet evaluate`` uses (FPR at 95% TPR: per predicted class, the threshold that keeps 95% of the
test images predicted as that class; ``pipnet.evaluation.metrics.ood_thresholds``), for three scores: the probe's
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

from pipnet.model.backbones import BackboneError, backbone_normalization, create_backbone  # noqa: E402
from pipnet.data.augment import IMAGENET  # noqa: E402
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


@dataclass(frozen=True)
class Reference:
    """One black box of the honest reference: a backbone built with these arguments, probed at this size."""

    name: str  # "a", "b" or "c"
    what: str
    kwargs: dict
    grid: str
    size: int


def references(kwargs: dict, image_size: int, grid: str, native_size: int, which: str = "abc") -> list[Reference]:
    """The black boxes PIP-Net is measured against, in the order (a), (b), (c) (those named in ``which``).

    (a) the unmodified pretrained network at its native size: the backbone's arguments without the cut
    (``stages``) or its grid (``output_stride``), grid ``native``, ``native_size`` px; (b) the unmodified
    network cut where the recipe cuts it, at the recipe's size: the same arguments but the grid's, grid
    ``native``, ``image_size``; (c) the backbone as PIP-Net uses it: the same arguments and ``grid`` at
    ``image_size``.
    """
    unmodified = {k: v for k, v in kwargs.items() if k != "output_stride"}  # a native grid has no output stride
    full = {k: v for k, v in unmodified.items() if k != "stages"}
    rows = {
        "a": Reference("a", "unmodified, native size", full, "native", native_size),
        "b": Reference("b", "unmodified, recipe's cut and size", unmodified, "native", image_size),
        "c": Reference("c", f"as PIP-Net uses it (grid {grid})", dict(kwargs), grid, image_size),
    }
    return [rows[k] for k in which]


def best_reference(test_accuracies: dict[str, float]) -> tuple[str, float]:
    """(name, accuracy) of the best black box: the highest test accuracy; ties go to the earlier name."""
    name = max(sorted(test_accuracies), key=lambda k: (test_accuracies[k], -ord(k[0])))
    return name, test_accuracies[name]


def fit_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, num_classes: int,
              l2_grid: list[float], holdout: float, seed: int) -> tuple[float, list[list], torch.Tensor, torch.Tensor]:
    """Choose the L2 penalty on a held-out part of the training split, refit on all of it.

    Returns:
        (the penalty, the table rows of the choice, W, b) for features standardised with the training split's
        statistics.
    """

    def standardise(fit_x: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
        mean, std = fit_x.mean(dim=0), fit_x.std(dim=0).clamp_min(1e-6)
        return [(t - mean) / std for t in (fit_x, *others)]

    # The penalty: best held-out accuracy on a part of the training split (ties: the lower held-out loss).
    fit_i, held_i = holdout_split(y_train, holdout, seed)
    rows, best = [], None
    for l2 in l2_grid:
        xf, xh = standardise(x_train[fit_i], x_train[held_i])
        w, b = fit_logistic(xf, y_train[fit_i], num_classes, l2)
        held_acc = accuracy(xh, y_train[held_i], w, b)
        held_loss = float(F.cross_entropy(xh.double() @ w + b, y_train[held_i]))
        rows.append([f"{l2:g}", accuracy(xf, y_train[fit_i], w, b), held_acc, held_loss])
        if best is None or (held_acc, -held_loss) > best[1:]:
            best = (l2, held_acc, -held_loss)
    assert best is not None
    xtr, _ = standardise(x_train, x_test)
    w, b = fit_logistic(xtr, y_train, num_classes, best[0])
    return best[0], rows, w, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the data folder: train/<class>/* and optionally test/<class>/*")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="a registered backbone name (pipnet.list_models())")
    parser.add_argument("--backbone-kwargs", default="{}", help='JSON arguments of the backbone builder, e.g. \'{"stages": 4}\'')
    parser.add_argument("--grid", choices=("stride", "dilate"), default="stride",
                        help="the grid of reference (c), as the PIP-Net run's --model.grid")
    parser.add_argument("--pretrained", default="true",
                        help="'true' (ImageNet weights; offline for efficientnet_lite0), 'false', or a weights file")
    parser.add_argument("--image-size", type=int, default=224, help="S: images are resized to S x S (references b, c)")
    parser.add_argument("--native-size", type=int, default=224,
                        help="the size reference (a) probes the unmodified network at (224: ImageNet's)")
    parser.add_argument("--references", default="abc",
                        help="which black boxes to probe: any of a (unmodified, native size), b (unmodified, the "
                             "recipe's cut and size), c (as PIP-Net uses it), e.g. 'c' for the old single probe")
    parser.add_argument("--normalization", choices=("own", "imagenet"), default="own",
                        help="'own': the normalisation the backbone's weights expect (pipnet.model.backbones."
                             "backbone_normalization), as PIP-Net feeds it; 'imagenet': ImageNet's, for comparison")
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
    if not args.references or set(args.references) - set("abc"):
        parser.error(f"--references takes letters of 'abc', got {args.references!r}")
    pretrained: bool | str = {"true": True, "false": False}.get(args.pretrained.lower(), args.pretrained)

    try:
        source = load_folder_source(args.root, args.val_fraction, args.seed)
        norm = IMAGENET if args.normalization == "imagenet" else backbone_normalization(args.backbone)
        oods = {folder: image_tree(folder) for folder in args.ood}
    except (DataError, BackboneError) as e:
        parser.error(str(e))
    if source.test is None:
        parser.error(f"{args.root} has no test split (no test/ folder and --val-fraction 0)")
    num_classes = len(source.classes)
    y_train, y_test = torch.tensor(source.train.targets), torch.tensor(source.test.targets)
    print(f"{args.root}: {num_classes} classes, {len(y_train)} training and {len(y_test)} test images; "
          f"{args.backbone}, normalisation mean {list(norm.mean)} std {list(norm.std)} ({args.normalization}), "
          f"{args.precision}")

    rows, ood_rows, tested = [], [], {}
    for ref in references(kwargs, args.image_size, args.grid, args.native_size, "".join(dict.fromkeys(args.references))):
        start = time.perf_counter()
        try:
            backbone = create_backbone(args.backbone, pretrained=pretrained, grid=ref.grid, **ref.kwargs)
        except BackboneError as e:
            parser.error(str(e))
        features = {split: pooled_features(backbone, EvalDataset(images, ref.size, args.preset, norm), args.batch_size,
                                           args.precision) for split, images in (("train", source.train), ("test", source.test))}
        l2, choice, w, b = fit_probe(features["train"], y_train, features["test"], num_classes, args.l2, args.holdout, args.seed)
        mean, std = features["train"].mean(dim=0), features["train"].std(dim=0).clamp_min(1e-6)
        xtr, xte = ((features[k] - mean) / std for k in ("train", "test"))
        tested[ref.name] = accuracy(xte, y_test, w, b)
        rows.append([f"({ref.name}) {ref.what}", args.backbone, json.dumps(ref.kwargs), ref.grid, ref.size,
                     int(features["train"].shape[1]), f"{l2:g}", accuracy(xtr, y_train, w, b), tested[ref.name],
                     f"{time.perf_counter() - start:.1f}"])
        print(f"({ref.name}) L2 chosen on the held-out part of the training split:")
        print_table(["l2", "fit accuracy", "held-out accuracy", "held-out loss"], choice)
        for folder, images in oods.items():
            x_ood = pooled_features(backbone, EvalDataset(images, ref.size, args.preset, norm), args.batch_size, args.precision)
            for name, test_scores, ood_scores in ood_scores_table(features["train"], features["test"], x_ood, w, b):
                ood_rows.append([f"({ref.name})", Path(folder).name, len(images), name,
                                 *ood_rates(test_scores, ood_scores, num_classes)])
    print()
    print_table(["reference", "backbone", "kwargs", "grid", "size", "D", "l2", "train accuracy", "test accuracy", "seconds"],
                rows)
    name, best = best_reference(tested)
    print(f"best black box: ({name}) test accuracy {best:.3f}; quote PIP-Net's accuracy as a ratio to it")
    if ood_rows:
        print()
        print("Rejecting images of no class (thresholds keep 95% of the test images of each predicted class):")
        print_table(["reference", "ood set", "images", "score", "FPR95", "AUROC"], ood_rows)


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
