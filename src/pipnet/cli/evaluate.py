"""`pipnet evaluate`: the metrics of a saved model, and the detectors stored beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipnet.cli.common import (detector_choices, device_args, inference_precision, inference_precision_args, model_args, out, progress_args,
                               resolve_precision)

DESCRIPTION = "accuracy, sparsity, explanation sizes, OoD detection and purity of a saved model"


def build_parser():
    """The parser of `pipnet evaluate` (jsonargparse: `--data.*` takes the training data's options)."""
    from jsonargparse import ArgumentParser

    from pipnet.core.data_config import DataConfig

    parser = ArgumentParser(prog="pipnet evaluate", description=DESCRIPTION,
                            parents=[model_args(), progress_args(), device_args(), inference_precision_args()])
    parser.add_class_arguments(DataConfig, "data", help="the data to evaluate on (default: the run's own data); "
                               "--data RUN_OR_CONFIG takes a run folder's or a training config YAML's data")
    parser.add_argument("--ood", action="append", default=[], metavar="DIR",
                        help="an image folder to use as an out-of-distribution set (repeat for several)")
    parser.add_argument("--protocol", choices=["default", "paper"], default=None,
                        help="default (the paper's text) or paper (the OoD rule and purity conventions of the published "
                             "code); default: the run's own protocol, else default")
    parser.add_argument("--parts", type=bool, default=True, help="compute prototype purity when the data has part keypoints")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--out", default=None, help="where to write metrics.json (default: MODEL/evaluation.json)")
    parser.add_argument("--tpr", type=float, default=0.95,
                        help="true-positive rate of the per-class OoD thresholds stored in MODEL/thresholds.json")
    parser.add_argument("--novelty-k", type=int, default=5,
                        help="k of the knn OoD detector stored in MODEL/novelty.json (distance to the k-th nearest "
                             "training image in prototype logits; pipnet.evaluation.novelty), used by predict --detector knn")
    parser.add_argument("--detector", choices=detector_choices()[0], default="auto",
                        help="the detector the model folder's verdicts use from now on (stored in MODEL/detectors.json): "
                             "knn, paper (the per-class score thresholds), auto (knn)")
    parser.add_argument("--no-quality", action="store_true",
                        help="skip the prototype report card (consistency, stability, duplicates, everywhere, sensitivity)")
    return parser


def _data_config_argument(argv: list[str]) -> tuple[list[str], Path | None]:
    """`--data RUN_OR_CONFIG` (a run folder or a training config YAML) taken out of `argv`: its `data`
    block is read whole, model settings and all (the `--data.*` options stay with the parser)."""
    from pipnet.model.run_folder import config_file

    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--data" and i + 1 < len(argv) else arg[7:] if arg.startswith("--data=") else None
        if value is None:
            continue
        path = config_file(value)
        if Path(value).is_dir() and not path.is_file():
            raise FileNotFoundError(f"{value} has no config.yaml to take the data from")
        if path.is_file() and _is_training_config(path):  # else a file of data options, for jsonargparse
            return argv[:i] + argv[i + (2 if arg == "--data" else 1):], path
    return argv, None


def _is_training_config(path: Path) -> bool:
    """Whether `path` is a YAML file with a top-level `data` block (a run's config.yaml, a training preset)."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(loaded, dict) and isinstance(loaded.get("data"), dict)


def main(argv: list[str]) -> int:
    parser = build_parser()
    argv, given_config = _data_config_argument(argv)
    raw = parser.parse_args(argv)
    if not 0.0 < raw.tpr <= 1.0:
        parser.error(f"--tpr must be in (0, 1], got {raw.tpr}")
    if raw.novelty_k < 1:
        parser.error(f"--novelty-k must be at least 1, got {raw.novelty_k}")
    from pipnet.use.outputs import refuse_overwriting

    refuse_overwriting([raw.out] if raw.out else [], [raw.model])
    from pipnet.evaluation.evaluate import evaluate, format_metrics_table
    from pipnet.evaluation.inference import build_model_data, choose_device
    from pipnet.model import ModelLoadError, PIPNet
    from pipnet.model.run_folder import RunFolder

    device = choose_device(raw.device)
    model = PIPNet.from_pretrained(raw.model)
    folder = RunFolder(raw.model)
    saved = folder.training_config()
    protocol = raw.protocol or (saved.protocol if saved is not None else "default")
    data_given = any(a.startswith("--data") for a in argv)
    if given_config is not None:
        from pipnet.core.train_config import load_config

        data_config = load_config(str(given_config)).data
    else:
        data_config = saved.data if saved is not None and not data_given else parser.instantiate(raw).data
    # --ood adds to the run's own OoD folders; a folder named twice (same real path) is evaluated once.
    ood_dirs: dict[str, str] = {}
    for ood_dir in [*data_config.ood, *raw.ood]:
        ood_dirs.setdefault(os.path.realpath(ood_dir), ood_dir)
    data_config.ood = list(ood_dirs.values())
    data = build_model_data(data_config, model)
    if len(data.classes) != model.num_classes:
        raise ModelLoadError(f"{raw.model} has {model.num_classes} classes but the data has {len(data.classes)}; "
                             "give the model's own data with --data.source / --data.root")
    if data.test is None:
        raise FileNotFoundError("the data has no test split to evaluate on")
    purity = data.purity_sets() if raw.parts else {}
    with inference_precision(raw.precision, device, raw.model):
        metrics = evaluate(model, data.test, ood=data.ood or None, purity_sets=purity or None, batch_size=raw.batch_size, device=device,
                           progress=not raw.no_progress, protocol=protocol, mask_sets=data.mask_sets() or None,
                           train_set=data.projection, quality=not raw.no_quality)
        out(format_metrics_table(metrics))
        path = Path(raw.out) if raw.out else folder.evaluation
        path.write_text(metrics.to_json())
        out(str(path))
    from pipnet.core.precision import inference_precision as precision_block
    from pipnet.evaluation.detectors import describe_data, fit_detectors
    from pipnet.evaluation.novelty import compare_rules, format_rules

    # The detectors are set on fp32 scores (the same verdict on every machine) unless --precision asks otherwise.
    fit_precision = "fp32" if raw.precision == "auto" else resolve_precision(raw.precision, device)
    stored = fit_detectors(model, data.projection, data.test, tpr=raw.tpr, k=raw.novelty_k, batch_size=raw.batch_size,
                           device=device, progress=not raw.no_progress, precision=fit_precision,
                           decides="knn" if raw.detector == "auto" else raw.detector,
                           description=describe_data(data_config.source, data_config.root, "test", len(data.test)))
    knn, paper = stored.detectors["knn"], stored.detectors["paper"]
    with precision_block(fit_precision):
        rows = compare_rules(model, knn, paper, data.test, data.ood, batch_size=raw.batch_size, device=device)
    out(f"OoD detectors (thresholds keep {raw.tpr:g} of the test images): the paper's rule (per-class score "
        f"thresholds) and knn (k = {raw.novelty_k} nearest training images in prototype logits)\n" + format_rules(rows))
    evaluation = json.loads(path.read_text())
    path.write_text(json.dumps({**evaluation, "novelty": {"k": raw.novelty_k, "threshold": knn.threshold, "rows": rows}},
                               indent=2))
    out(str(stored.save(raw.model)))
    return 0
