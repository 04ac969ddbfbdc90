"""The ``pipnet`` command: train, demo, evaluate, explain, report, convert, models.

Each subcommand is a thin layer over the library. Known failures (bad data, bad files, bad models)
end with one clear ``error:`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

log = logging.getLogger("pipnet")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

COMMANDS = {
    "train": "train a PIP-Net (YAML presets + flags; --help lists every option)",
    "demo": "generate planted-parts data, train, evaluate and write a report, offline, in minutes",
    "evaluate": "accuracy, sparsity, explanation sizes, OoD detection and purity of a saved model",
    "explain": "explain the predictions of a saved model for some images (text, PNG and JSON)",
    "predict": "predict files and folders of images into a CSV or JSON-lines table (with 'unknown')",
    "refit": "switch prototypes off and re-fit only the scoring sheet (seconds); logs the edit",
    "repair": "forbid prototypes' patches, fine-tune, re-fit the scoring sheet (a shortcut repair); logs the edit",
    "report": "write the self-contained HTML report of a run folder",
    "convert": "convert an official PIP-Net checkpoint to this project's format",
    "serve": "a local web page to explore a model and switch prototypes off",
    "export": "export a model to TorchScript or ONNX (scores and presence), checked against PyTorch",
    "models": "list the registered backbones",
}


def _known_errors() -> tuple[type[BaseException], ...]:
    from pipnet.model.backbones import BackboneError
    from pipnet.data.errors import DataError, ImageLoadError
    from pipnet.evaluation.inference import DeviceError
    from pipnet.model import ModelLoadError
    from pipnet.core.precision import PrecisionError
    from pipnet.train.checkpoint import CheckpointError
    from pipnet.train.engine import NonFiniteLossError
    from pipnet.core.utils import MissingExtraError

    # OSError: a missing or existing file, a full disk, no permission; its message names the path.
    return (BackboneError, DataError, ImageLoadError, ModelLoadError, CheckpointError, NonFiniteLossError, OSError,
            MissingExtraError, DeviceError, PrecisionError)


DEVICE_HELP = "where to run: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N"
PRECISION_HELP = ("numeric precision: auto (bf16 where this machine computes it natively: CPUs with AMX or "
                  "avx512_bf16, recent GPUs; fp32 elsewhere), fp32, bf16 or fp16 (CUDA only)")
INFERENCE_PRECISION_HELP = ("numeric precision: auto (the precision the model's thresholds.json was set in, where "
                            "this machine computes it natively; else fp32; without thresholds, as training's auto), "
                            "fp32, bf16 or fp16 (CUDA only)")
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]


def _resolve_precision(requested: str, device, model_dir: str | None = None) -> str:
    """``--precision`` resolved for ``device`` and the model folder's stored thresholds (``auto`` scores the
    way they were set; see :func:`pipnet.core.precision.resolve_inference_precision`); logged once, with why."""
    from pipnet.evaluation.thresholds import precision_for_model

    choice = precision_for_model(requested, device, model_dir)
    log.info("precision %s (%s)", choice.precision, choice.reason)
    return choice.precision


@contextlib.contextmanager
def _inference_precision(requested: str, device, model_dir: str | None = None):
    """Run the block's inference passes in the resolved ``--precision``."""
    from pipnet.core.precision import inference_precision

    with inference_precision(_resolve_precision(requested, device, model_dir)) as precision:
        yield precision


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---- train / demo --------------------------------------------------------------------------------


def train_parser():
    """The parser of ``pipnet train`` (jsonargparse, from the config dataclasses), with ``--print-config``."""
    from pipnet.core.train_config import config_parser

    parser = config_parser()
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return parser


def cmd_train(argv: list[str]) -> int:
    from pipnet.core.train_config import config_from_namespace, dump_config, resume_flag_error
    from pipnet.train.engine import train

    print_config = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    parser = train_parser()
    config = config_from_namespace(parser, parser.parse_args(argv))
    resume_runtime = None
    if config.resume:
        refusal = resume_flag_error(argv)
        if refusal:
            parser.error(refusal)
        given = {a.split("=", 1)[0].removeprefix("--runtime.") for a in argv if a.startswith("--runtime.")}
        resume_runtime = {name: getattr(config.runtime, name) for name in given}
    if print_config:
        _out(dump_config(config).rstrip())
        return 0
    result = train(config, resume_runtime=resume_runtime)
    _draw_curve(result.run_dir)
    if result.metrics is not None:
        from pipnet.evaluation.evaluate import format_metrics_table

        _out(format_metrics_table(result.metrics))
    _out(str(result.run_dir))
    return 0


def _draw_curve(run_dir: Path) -> None:
    """RUN/sparsity.png from the history training wrote (training itself draws nothing)."""
    from pipnet.explanation.report import write_sparsity_plot

    write_sparsity_plot(run_dir)


def demo_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet demo``."""
    parser = argparse.ArgumentParser(prog="pipnet demo", description=COMMANDS["demo"])
    parser.add_argument("--out", help="run folder to write (default: a new folder under ./runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, the batches and every augmentation (the generated images stay the same)")
    return parser


def cmd_demo(argv: list[str]) -> int:
    parser = demo_parser()
    args = parser.parse_args(argv)
    import time

    from pipnet.demo import demo_config
    from pipnet.evaluation.evaluate import format_metrics_table
    from pipnet.core.precision import inference_precision
    from pipnet.train.engine import train

    started = time.perf_counter()
    config = demo_config(args.out, progress=not args.no_progress, precision=args.precision, device=args.device,
                         seed=args.seed)
    result = train(config)  # resolves --precision, logs it and records it in config.yaml
    _draw_curve(result.run_dir)
    _out(format_metrics_table(result.metrics))
    if not args.no_report:
        from pipnet.explanation.report import build_report

        with inference_precision(config.runtime.precision):
            _out(f"report: {build_report(result.run_dir, progress=not args.no_progress)}")
    _out(f"demo finished in {time.perf_counter() - started:.0f} s; model, metrics.json, history.csv and report in:")
    _out(str(result.run_dir))
    return 0


# ---- evaluate ------------------------------------------------------------------------------------


def evaluate_parser():
    """The parser of ``pipnet evaluate`` (jsonargparse: ``--data.*`` takes the training data's options)."""
    from jsonargparse import ArgumentParser

    from pipnet.core.data_config import DataConfig

    parser = ArgumentParser(prog="pipnet evaluate", description=COMMANDS["evaluate"])
    parser.add_argument("model", help="a model folder (model.safetensors + config.json), e.g. a run folder")
    parser.add_class_arguments(DataConfig, "data", help="the data to evaluate on (default: the run's own data)")
    parser.add_argument("--ood", action="append", default=[], metavar="DIR",
                        help="an image folder to use as an out-of-distribution set (repeat for several)")
    parser.add_argument("--protocol", choices=["default", "paper"], default=None,
                        help="default (spec section 6) or paper (the published OoD rule and purity conventions, "
                             "spec section 10); default: the run's own protocol, else default")
    parser.add_argument("--parts", type=bool, default=True, help="compute prototype purity when the data has part keypoints")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--out", default=None, help="where to write metrics.json (default: MODEL/evaluation.json)")
    parser.add_argument("--tpr", type=float, default=0.95,
                        help="true-positive rate of the per-class OoD thresholds stored in MODEL/thresholds.json")
    parser.add_argument("--novelty-k", type=int, default=5,
                        help="k of the knn OoD detector stored in MODEL/novelty.json (distance to the k-th nearest "
                             "training image in prototype logits; pipnet.evaluation.novelty), used by predict --detector knn")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=INFERENCE_PRECISION_HELP)
    parser.add_argument("--no-quality", action="store_true",
                        help="skip the prototype report card (consistency, stability, duplicates, everywhere, sensitivity)")
    return parser


def cmd_evaluate(argv: list[str]) -> int:
    parser = evaluate_parser()
    raw = parser.parse_args(argv)
    if not 0.0 < raw.tpr <= 1.0:
        parser.error(f"--tpr must be in (0, 1], got {raw.tpr}")
    if raw.novelty_k < 1:
        parser.error(f"--novelty-k must be at least 1, got {raw.novelty_k}")
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
    with _inference_precision(raw.precision, device, raw.model):
        metrics = evaluate(model, data.test, ood=data.ood or None, purity_sets=purity or None, batch_size=raw.batch_size, device=device,
                           progress=not raw.no_progress, protocol=protocol, mask_sets=data.mask_sets() or None,
                           train_set=data.projection, quality=not raw.no_quality)
        _out(format_metrics_table(metrics))
        out = Path(raw.out) if raw.out else folder.evaluation
        out.write_text(metrics.to_json())
        _out(str(out))
        from pipnet.evaluation.thresholds import describe_data, fit_thresholds

        thresholds = fit_thresholds(model, data.test, tpr=raw.tpr, batch_size=raw.batch_size, device=device,
                                    description=describe_data(data_config.source, data_config.root, "test", len(data.test)))
        _out(str(thresholds.save(raw.model)))
        from pipnet.evaluation.novelty import compare_rules, fit_detector, format_rules

        detector = fit_detector(model, data.projection, data.test, k=raw.novelty_k, tpr=raw.tpr, batch_size=raw.batch_size,
                                device=device, description=thresholds.data)
        rows = compare_rules(model, detector, thresholds, data.test, data.ood, batch_size=raw.batch_size, device=device)
    _out(f"OoD detectors (thresholds keep {raw.tpr:g} of the test images): the paper's rule (per-class score "
         f"thresholds) and knn (k = {raw.novelty_k} nearest training images in prototype logits)\n" + format_rules(rows))
    evaluation = json.loads(out.read_text())
    out.write_text(json.dumps({**evaluation, "novelty": {"k": raw.novelty_k, "threshold": detector.threshold, "rows": rows}},
                              indent=2))
    _out(str(detector.save(raw.model)))
    return 0


# ---- explain / report / convert / models -----------------------------------------------------------


def explain_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet explain``."""
    parser = argparse.ArgumentParser(prog="pipnet explain", description=COMMANDS["explain"])
    parser.add_argument("model", help="a model folder (model.safetensors + config.json)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="folder for one PNG and one JSON per image (default: print only)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image")
    parser.add_argument("--box", choices=["patch", "heatmap"], default="patch", help="32x32 patch (faithful) or heat-map box")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=INFERENCE_PRECISION_HELP)
    return parser


def cmd_explain(argv: list[str]) -> int:
    parser = explain_parser()
    args = parser.parse_args(argv)
    import torch

    from pipnet.data.images import load_image
    from pipnet.explanation.explain import explain
    from pipnet.evaluation.inference import input_transform
    from pipnet.model import PIPNet
    from pipnet.core.precision import inference_precision
    from pipnet.explanation.render.png import explanation_figure

    from pipnet.evaluation.thresholds import load_thresholds, warn_without_thresholds

    model = PIPNet.from_pretrained(args.model).eval()
    thresholds = load_thresholds(args.model, model.num_classes)
    if thresholds is None:
        warn_without_thresholds(args.model)
    transform = input_transform(model, fallback_preset=_run_preset(args.model))
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    precision = _resolve_precision(args.precision, next(model.parameters()).device, args.model)
    for path in args.images:
        image = load_image(path)
        with torch.inference_mode(), inference_precision(precision):
            (e,) = explain(model, transform(image)[None], top_classes=args.top, image_ids=[str(path)], box=args.box)
        threshold = thresholds.values[e.predicted] if thresholds is not None and e.predicted is not None else None
        unknown = e.abstained or (threshold is not None and e.top_classes[0].score < threshold)
        _out(f"{path}: {_verdict(e, threshold)}")
        for c in e.top_classes:
            _out(f"  {c.class_name}: score {c.score:.3f}")
            for ev in c.evidence[:5]:
                _out(f"    prototype {ev.prototype}: p={ev.presence:.3f} w={ev.weight:.3f} p*w={ev.evidence:.3f} box={ev.box}")
        if out:
            stem = Path(path).stem
            record = {**e.to_dict(), "unknown": unknown, "threshold": threshold if threshold != float("inf") else None}
            (out / f"{stem}.json").write_text(json.dumps(record, indent=2))
            explanation_figure(e, image).save(out / f"{stem}.png")
    if out:
        _out(str(out))
    return 0


def _verdict(e, threshold: float | None) -> str:
    """What ``pipnet explain`` says after an image's path: the predicted class, unknown, or that it abstains."""
    if e.abstained:
        return "no prototype is present: the model abstains (every class scores 0)"
    top = e.top_classes[0]
    if threshold is not None and top.score < threshold:
        return f"unknown (score {top.score:.3f} below the {top.class_name} threshold {threshold:.3f})"
    return f"predicted {top.class_name} (score {top.score:.3f})"


def _run_preset(model_dir: str) -> str:
    """The augmentation preset of a run folder's data, or ``default``: the fallback for a model saved before
    config.json recorded its preset (see :func:`pipnet.evaluation.inference.input_transform`)."""
    from pipnet.model.run_folder import RunFolder

    config = RunFolder(model_dir).training_config()
    return config.data.preset if config is not None else "default"


def predict_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet predict``."""
    parser = argparse.ArgumentParser(prog="pipnet predict", description=COMMANDS["predict"])
    parser.add_argument("model", help="a model folder (model.safetensors + config.json), e.g. a run folder")
    parser.add_argument("paths", nargs="+", help="image files and folders (folders are walked recursively)")
    parser.add_argument("--out", help="the table to write (default: print to standard output)")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="csv or jsonl (default: from --out's suffix, else csv)")
    parser.add_argument("--top", type=int, default=3, help="classes listed per image (top_classes)")
    parser.add_argument("--evidence", type=int, default=3, help="prototypes of the predicted class listed (evidence)")
    parser.add_argument("--detector", choices=["auto", "paper", "knn"], default="auto",
                        help="what calls an image unknown: paper (per-class score thresholds, thresholds.json), knn "
                             "(distance to the nearest training images in prototype logits, novelty.json; explained "
                             "in the novelty column), auto (knn when the model folder stores it, else paper)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--skip-errors", action="store_true",
                        help="leave files that cannot be read out of the table (default: a row each, status 'error' "
                             "and the reason in the 'error' column); they are listed on standard error either way")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=INFERENCE_PRECISION_HELP)
    return parser


def cmd_predict(argv: list[str]) -> int:
    parser = predict_parser()
    args = parser.parse_args(argv)
    if args.top < 1 or args.evidence < 0 or args.batch_size < 1:
        parser.error("--top and --batch-size must be at least 1, --evidence at least 0")
    from pipnet.evaluation.inference import choose_device
    from pipnet.use.predict import predict, printable_path, to_csv, to_jsonl

    fmt = args.format or ("jsonl" if args.out and args.out.endswith((".jsonl", ".json")) else "csv")
    with _inference_precision(args.precision, choose_device(args.device), args.model):
        predictions = predict(
            args.model, args.paths, top=args.top, evidence=args.evidence, batch_size=args.batch_size,
            preset=_run_preset(args.model), device=args.device, progress=not args.no_progress, detector=args.detector,
        )  # fmt: skip
    good = [p for p in predictions if p.error is None]
    bad = [p for p in predictions if p.error is not None]
    for p in bad:
        sys.stderr.write(f"cannot read {printable_path(p.path)}: {p.error}\n")
    if not predictions:
        raise FileNotFoundError(f"no files found in {' '.join(args.paths)}")
    if not good:
        raise FileNotFoundError(f"none of the {len(bad)} files could be read as an image (listed above)")
    table = (to_jsonl if fmt == "jsonl" else to_csv)(good if args.skip_errors else predictions)
    if args.out:
        from pipnet.core.utils import atomic_write

        with atomic_write(Path(args.out)) as tmp:  # an interrupted run leaves the old file, or none
            tmp.write_text(table, encoding="utf-8")
    else:
        sys.stdout.write(table)
    unknown = sum(p.unknown for p in good)
    rows = "left out of the table (--skip-errors)" if args.skip_errors else "in the table with status 'error'"
    sys.stderr.write(f"predicted {len(good)} images ({unknown} unknown); {len(bad)} files could not be read ({rows})\n")
    if args.out:
        _out(args.out)
    return 0


def _prototype_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected prototype numbers separated by commas, e.g. 12,40; got {text!r}") from None


def refit_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet refit``."""
    parser = argparse.ArgumentParser(prog="pipnet refit", description=COMMANDS["refit"])
    parser.add_argument("model", help="a model folder (model.safetensors + config.json), e.g. a run folder")
    parser.add_argument("--disable", type=_prototype_list, required=True, help="prototypes to switch off, e.g. 12,40")
    parser.add_argument("--out", required=True, help="a new folder for the refit model (never overwritten)")
    parser.add_argument("--reason", help="why, recorded in the edit log (edits.jsonl)")
    parser.add_argument("--data", help="a run folder or training config YAML whose data to use (default: MODEL/config.yaml)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the cached training presences")
    parser.add_argument("--lr", type=float, default=0.05, help="AdamW learning rate of the scoring sheet (paper: 0.05)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass and presences per step")
    parser.add_argument("--tpr", type=float, default=0.95, help="TPR of the OoD thresholds re-set for the refit model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=INFERENCE_PRECISION_HELP)
    return parser


def cmd_refit(argv: list[str]) -> int:
    parser = refit_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.lr <= 0 or args.batch_size < 1 or not 0 < args.tpr <= 1:
        parser.error("--epochs and --batch-size must be at least 1, --lr positive, --tpr in (0, 1]")
    from pipnet.data.errors import DataError
    from pipnet.evaluation.inference import build_model_data, choose_device
    from pipnet.model import ModelLoadError, PIPNet
    from pipnet.train.refit import class_edit_mask, edit_record, read_edit_log, refit, save_refit
    from pipnet.model.run_folder import config_file
    from pipnet.evaluation.thresholds import describe_data
    from pipnet.core.train_config import load_config

    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out} exists already: give a new folder to --out (nothing is overwritten)")
    model = PIPNet.from_pretrained(args.model)
    bad = [p for p in args.disable if not 0 <= p < model.num_prototypes]
    if bad:
        raise ModelLoadError(f"{args.model} has prototypes 0..{model.num_prototypes - 1}; no prototype {bad[0]}")
    device = choose_device(args.device)
    data_config = config_file(args.data or args.model)
    if not data_config.is_file():
        raise DataError(f"no data config at {data_config}: the refit needs the training images (give --data RUN_OR_CONFIG)")
    config = load_config(str(data_config)).data
    data = build_model_data(config, model)
    if data.test is None:
        raise DataError(f"the data of {data_config} has no test split for the accuracies")
    # Prototypes switched off for one class in the web page stay off for it.
    keep_zero = class_edit_mask(args.model, model.num_classes, model.num_prototypes)
    with _inference_precision(args.precision, device, args.model):  # the presences; the refit itself is fp32
        result = refit(model, data.projection, data.test, args.disable, keep_zero=keep_zero, epochs=args.epochs, lr=args.lr,
                       batch_size=args.batch_size, device=device, progress=not args.no_progress)
        settings = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
        records = [
            edit_record("switch_off", prototypes=args.disable, reason=args.reason, tool="pipnet refit", source=str(args.model)),
            edit_record("refit", prototypes=result.disabled, reason=args.reason, tool="pipnet refit", source=str(args.model),
                        **result.summary(), settings=settings),
        ]
        save_refit(result, out, source=args.model, test_data=data.test, records=records, config_path=data_config, tpr=args.tpr,
                   data_description=describe_data(config.source, config.root, "test", len(data.test)),
                   batch_size=args.batch_size, device=device)
    rows = [
        ("test accuracy before the edit", f"{result.accuracy_before:.2%}"),
        (f"switched off {','.join(map(str, args.disable))}", f"{result.accuracy_switched_off:.2%}"),
        ("after the refit", f"{result.accuracy_refit:.2%}"),
        ("train accuracy after the refit", f"{result.train_accuracy_refit:.2%}"),
        ("global explanation size", str(result.global_size)),
        ("images (train / test)", f"{result.num_train} / {result.num_test}"),
        ("seconds", f"{result.seconds:.1f}"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        _out(f"{label:<{width}}  {value}")
    _out("edit log:")
    for r in read_edit_log(out):
        _out(f"  {r['time']} {r.get('user') or '?'} {r['action']} {r['prototypes']}" + (f": {r['reason']}" if r.get("reason") else ""))
    _out(str(out))
    return 0


def repair_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet repair``."""
    parser = argparse.ArgumentParser(prog="pipnet repair", description=COMMANDS["repair"])
    parser.add_argument("model", help="a model folder with its training config (config.yaml), e.g. a run folder")
    parser.add_argument("--forbid", type=_prototype_list, required=True,
                        help="prototypes whose patches no prototype may answer to any more, e.g. 12,40 (switched off)")
    parser.add_argument("--remember", type=_prototype_list, default=None,
                        help="prototypes that must keep their response (default: every used one not forbidden)")
    parser.add_argument("--out", required=True, help="a new folder for the repaired model (never overwritten)")
    parser.add_argument("--reason", help="why, recorded in the edit log (edits.jsonl)")
    parser.add_argument("--data", help="a run folder or training config YAML whose data to use (default: MODEL/config.yaml)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning passes over the training images (0: switch off + re-fit only)")
    parser.add_argument("--no-backbone", action="store_true", help="fine-tune only the add-on layer (cheaper; needs num_features > 0)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of the backbone")
    parser.add_argument("--lr-head", type=float, default=2e-3, help="AdamW learning rate of the add-on layer")
    parser.add_argument("--similar", type=float, default=None,
                        help="also forbid patches whose backbone feature has at least this cosine similarity to the "
                             "forbidden prototypes' own patches, e.g. 0.6 (default: only the patches they answer to)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per fine-tuning step and forward pass")
    parser.add_argument("--tpr", type=float, default=0.95, help="TPR of the OoD thresholds re-set for the repaired model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    return parser


def cmd_repair(argv: list[str]) -> int:
    parser = repair_parser()
    args = parser.parse_args(argv)
    if args.epochs < 0 or args.batch_size < 1 or args.lr <= 0 or args.lr_head <= 0 or not 0 < args.tpr <= 1:
        parser.error("--epochs must be at least 0, --batch-size at least 1, --lr and --lr-head positive, --tpr in (0, 1]")
    from pipnet.train.repair import RepairSettings
    from pipnet.train.repair_folder import repair_lines, repair_model_folder

    settings = RepairSettings(epochs=args.epochs, batch_size=args.batch_size, lr_backbone=args.lr, lr_head=args.lr_head,
                              train_backbone=not args.no_backbone, similar=args.similar)
    result = repair_model_folder(args.model, args.out, forbid=args.forbid, remember=args.remember, settings=settings,
                                 data=args.data, reason=args.reason, tpr=args.tpr, device=args.device,
                                 progress=not args.no_progress)
    _out("\n".join([*repair_lines(result), args.out]))
    return 0


def report_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet report``."""
    parser = argparse.ArgumentParser(prog="pipnet report", description=COMMANDS["report"])
    parser.add_argument("run_dir", help="a finished run folder")
    parser.add_argument("--out", help="path of the HTML file (default: RUN_DIR/report.html)")
    parser.add_argument("--samples", type=int, default=6, help="test images to explain")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=INFERENCE_PRECISION_HELP)
    return parser


def cmd_report(argv: list[str]) -> int:
    parser = report_parser()
    args = parser.parse_args(argv)
    import torch

    from pipnet.explanation.report import build_report

    with _inference_precision(args.precision, torch.device("cpu"), args.run_dir):  # the report explains samples on the CPU
        _out(str(build_report(args.run_dir, args.out, samples=args.samples, progress=not args.no_progress)))
    return 0


def convert_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet convert``."""
    parser = argparse.ArgumentParser(prog="pipnet convert", description=COMMANDS["convert"])
    parser.add_argument("checkpoint", help="the authors' checkpoint file (e.g. net_trained_last)")
    parser.add_argument("--backbone", required=True, help="the backbone it was trained with, e.g. convnext_tiny_26")
    parser.add_argument("--image-size", type=int, default=224, help="the input size it was trained at")
    parser.add_argument("--out", required=True, help="folder to write model.safetensors + config.json to")
    return parser


def cmd_convert(argv: list[str]) -> int:
    parser = convert_parser()
    args = parser.parse_args(argv)
    from pipnet.model.official import load_official_checkpoint

    model = load_official_checkpoint(args.checkpoint, backbone=args.backbone, image_size=args.image_size)
    _out(str(model.save_pretrained(args.out)))
    return 0


def export_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet export``."""
    parser = argparse.ArgumentParser(prog="pipnet export", description=COMMANDS["export"])
    parser.add_argument("model", help="a model folder (model.safetensors + config.json), e.g. a run folder")
    parser.add_argument("--format", choices=["torchscript", "onnx"], required=True,
                        help="torchscript (built in) or onnx (pip install 'pipnet[export]')")
    parser.add_argument("--out", required=True, help="the file to write, e.g. model.onnx or model.pt")
    parser.add_argument("--batch-size", type=int, default=None, help="a fixed batch size (default: any batch size)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference from PyTorch accepted when the file is checked on test images")
    return parser


def cmd_export(argv: list[str]) -> int:
    parser = export_parser()
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    import torch

    from pipnet.use.export import ExportError, check_export, export_model
    from pipnet.model import ModelLoadError, PIPNet

    model = PIPNet.from_pretrained(args.model)
    try:
        path = export_model(model, args.out, format=args.format, batch_size=args.batch_size)
        images, what = _check_images(args.model, model, args.batch_size or 8)
        diff = check_export(model, path, images, format=args.format)
    except ExportError as e:
        raise ModelLoadError(str(e)) from e
    _out(f"checked on {len(images)} {what} with {'torch.jit.load' if args.format == 'torchscript' else 'onnxruntime'}: "
         f"max |difference| scores {diff['scores']:.2e}, presence {diff['presence']:.2e}")
    if max(diff.values()) > args.tolerance:
        raise ModelLoadError(f"the exported {path} differs from PyTorch by {max(diff.values()):.2e} (> {args.tolerance:g})")
    norm = model.normalization
    _out(f"inputs: RGB in [0, 1] resized to {model.config.image_size} x {model.config.image_size}, then "
         f"(x - mean) / std with mean {list(norm.mean)}, std {list(norm.std)} (config.json: normalization)")
    _out(str(path))
    return 0


def _check_images(model_dir: str, model, count: int):
    """Up to ``count`` test images of the model's run (its config.yaml), else seeded random inputs."""
    import torch

    from pipnet.model.run_folder import RunFolder

    run_config = RunFolder(model_dir).training_config()
    if run_config is not None:
        from pipnet.evaluation.inference import build_model_data

        config = run_config.data
        config.image_size = model.config.image_size
        test = build_model_data(config, model).test
        if test is not None and len(test) >= count:
            return torch.stack([test[i][0] for i in range(count)]), "test images"
    S = model.config.image_size
    return torch.randn(count, 3, S, S, generator=torch.Generator().manual_seed(0)), "random inputs"


def models_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet models``."""
    return argparse.ArgumentParser(prog="pipnet models", description=COMMANDS["models"])


def cmd_models(argv: list[str]) -> int:
    models_parser().parse_args(argv)
    from pipnet.model.backbones import list_models

    for name in list_models():
        _out(name)
    _out("timm/<any timm model name>  (e.g. --model.backbone_kwargs '{output_stride: 16}')")
    return 0


def serve_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet serve`` (needs the ``serve`` extra)."""
    from pipnet.use.serve import serve_parser as build

    return build()


def cmd_serve(argv: list[str]) -> int:
    try:
        from pipnet.use.serve import main as serve_main
    except ImportError as e:
        from pipnet.core.utils import MissingExtraError

        raise MissingExtraError(f"the web page needs the 'serve' extra: pip install 'pipnet[serve]' ({e})") from e
    return serve_main(argv)


HANDLERS = {
    "train": cmd_train,
    "demo": cmd_demo,
    "evaluate": cmd_evaluate,
    "explain": cmd_explain,
    "predict": cmd_predict,
    "refit": cmd_refit,
    "repair": cmd_repair,
    "report": cmd_report,
    "convert": cmd_convert,
    "serve": cmd_serve,
    "models": cmd_models,
    "export": cmd_export,
}


#: What Ctrl+C leaves, per command (the rest: "nothing more was written").
INTERRUPTED = {
    "train": "the run continues from its last epoch with pipnet train --resume RUN_DIR",
    "demo": "run pipnet demo again",
    "predict": "no table was written (--out keeps its previous file, if any); run it again",
    "refit": "no model folder was written (a refit's folder appears only when complete); run it again",
    "repair": "no model folder was written (a repair's folder appears only when complete); run it again",
}


PARSERS = {
    "train": train_parser,
    "demo": demo_parser,
    "evaluate": evaluate_parser,
    "explain": explain_parser,
    "predict": predict_parser,
    "refit": refit_parser,
    "repair": repair_parser,
    "report": report_parser,
    "convert": convert_parser,
    "serve": serve_parser,
    "models": models_parser,
    "export": export_parser,
}


def build_parser(command: str):
    """The argument parser of ``pipnet COMMAND``, built without running the command.

    The documentation renders its CLI reference from these parsers' ``--help`` and checks every
    ``pipnet COMMAND --flag`` it shows against them.

    Args:
        command: a subcommand name, one of ``COMMANDS``.
    """
    if command not in PARSERS:
        raise KeyError(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)}")
    return PARSERS[command]()


def _usage() -> str:
    lines = ["usage: pipnet COMMAND [options]   (pipnet COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _out(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in HANDLERS:
        sys.stderr.write(f"pipnet: unknown command {command!r}\n\n{_usage()}\n")
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    else:
        logging.basicConfig(level=logging.WARNING)
    try:
        return HANDLERS[command](rest)
    except _known_errors() as e:
        message = " ".join(_ANSI.sub("", str(e)).split())  # one line, even when a library's message has several
        sys.stderr.write(f"pipnet {command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"pipnet {command}: interrupted; {INTERRUPTED.get(command, 'nothing more was written')}\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
