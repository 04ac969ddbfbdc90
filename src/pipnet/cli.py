"""The ``pipnet`` command: train, demo, evaluate, explain, report, convert, models.

Each subcommand is a thin layer over the library. Known failures (bad data, bad files, bad models)
end with one clear ``error:`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
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
    "report": "write the self-contained HTML report of a run folder",
    "convert": "convert an official PIP-Net checkpoint to this project's format",
    "serve": "a local web page to explore a model and switch prototypes off",
    "models": "list the registered backbones",
}


def _known_errors() -> tuple[type[BaseException], ...]:
    from pipnet.backbones import BackboneError
    from pipnet.data.errors import DataError, ImageLoadError
    from pipnet.model import ModelLoadError
    from pipnet.train.checkpoint import CheckpointError
    from pipnet.train.engine import NonFiniteLossError

    # OSError: a missing or existing file, a full disk, no permission; its message names the path.
    return (BackboneError, DataError, ImageLoadError, ModelLoadError, CheckpointError, NonFiniteLossError, OSError)


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---- train / demo --------------------------------------------------------------------------------


def cmd_train(argv: list[str]) -> int:
    from pipnet.train.config import config_from_namespace, config_parser, dump_config
    from pipnet.train.engine import train

    print_config = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    parser = config_parser()
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    config = config_from_namespace(parser, parser.parse_args(argv))
    if print_config:
        _out(dump_config(config).rstrip())
        return 0
    result = train(config)
    if result.metrics is not None:
        from pipnet.evaluate import format_metrics_table

        _out(format_metrics_table(result.metrics))
    _out(str(result.run_dir))
    return 0


def cmd_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipnet demo", description=COMMANDS["demo"])
    parser.add_argument("--out", help="run folder to write (default: a new folder under ./runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    args = parser.parse_args(argv)
    import time

    from pipnet.demo import demo_config
    from pipnet.evaluate import format_metrics_table
    from pipnet.train.engine import train

    started = time.perf_counter()
    config = demo_config(args.out, progress=not args.no_progress)
    result = train(config)
    _out(format_metrics_table(result.metrics))
    if not args.no_report:
        from pipnet.report import build_report

        _out(f"report: {build_report(result.run_dir)}")
    _out(f"demo finished in {time.perf_counter() - started:.0f} s; model, metrics.json, history.csv and report in:")
    _out(str(result.run_dir))
    return 0


# ---- evaluate ------------------------------------------------------------------------------------


def _model_dir(path: str) -> Path:
    return Path(path)


def cmd_evaluate(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from pipnet.data.config import DataConfig

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
    raw = parser.parse_args(argv)
    import torch

    from pipnet.data import build_data
    from pipnet.evaluate import evaluate, format_metrics_table
    from pipnet.model import ModelLoadError, PIPNet

    model = PIPNet.from_pretrained(raw.model)
    data_given = any(a.startswith("--data") for a in argv)
    run_config = Path(raw.model) / "config.yaml"
    protocol = raw.protocol or "default"
    if run_config.is_file():
        from pipnet.train.config import load_config

        saved = load_config(str(run_config))
        protocol = raw.protocol or saved.protocol
    if not data_given and run_config.is_file():
        data_config = saved.data
    else:
        data_config = parser.instantiate(raw).data
    data_config.ood = list(data_config.ood) + list(raw.ood)
    data = build_data(data_config)
    if len(data.classes) != model.num_classes:
        raise ModelLoadError(f"{raw.model} has {model.num_classes} classes but the data has {len(data.classes)}; "
                             "give the model's own data with --data.source / --data.root")
    if data.test is None:
        raise FileNotFoundError("the data has no test split to evaluate on")
    purity = {"train": data.projection, "test": data.test_projection or data.test} if raw.parts and data.num_parts else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate(model, data.test, ood=data.ood or None, purity_sets=purity, batch_size=raw.batch_size, device=device,
                       progress=True, protocol=protocol)
    _out(format_metrics_table(metrics))
    out = Path(raw.out) if raw.out else Path(raw.model) / "evaluation.json"
    out.write_text(metrics.to_json())
    _out(str(out))
    return 0


# ---- explain / report / convert / models -----------------------------------------------------------


def cmd_explain(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipnet explain", description=COMMANDS["explain"])
    parser.add_argument("model", help="a model folder (model.safetensors + config.json)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="folder for one PNG and one JSON per image (default: print only)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image")
    parser.add_argument("--box", choices=["patch", "heatmap"], default="patch", help="32x32 patch (faithful) or heat-map box")
    args = parser.parse_args(argv)
    import torch

    from pipnet.data.augment import eval_transform
    from pipnet.data.images import load_image
    from pipnet.explain import explain
    from pipnet.model import PIPNet
    from pipnet.render.png import explanation_figure

    model = PIPNet.from_pretrained(args.model).eval()
    transform = eval_transform(model.config.image_size, "default")
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = load_image(path)
        with torch.inference_mode():
            (e,) = explain(model, transform(image)[None], top_classes=args.top, image_ids=[str(path)], box=args.box)
        _out(f"{path}: " + ("abstains (no prototype present: all scores 0)" if e.abstained else ""))
        for c in e.top_classes:
            _out(f"  {c.class_name}: score {c.score:.3f}")
            for ev in c.evidence[:5]:
                _out(f"    prototype {ev.prototype}: p={ev.presence:.3f} w={ev.weight:.3f} p*w={ev.evidence:.3f} box={ev.box}")
        if out:
            stem = Path(path).stem
            (out / f"{stem}.json").write_text(json.dumps(e.to_dict(), indent=2))
            explanation_figure(e, image).save(out / f"{stem}.png")
    if out:
        _out(str(out))
    return 0


def cmd_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipnet report", description=COMMANDS["report"])
    parser.add_argument("run_dir", help="a finished run folder")
    parser.add_argument("--out", help="path of the HTML file (default: RUN_DIR/report.html)")
    parser.add_argument("--samples", type=int, default=6, help="test images to explain")
    args = parser.parse_args(argv)
    from pipnet.report import build_report

    _out(str(build_report(args.run_dir, args.out, samples=args.samples, progress=True)))
    return 0


def cmd_convert(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipnet convert", description=COMMANDS["convert"])
    parser.add_argument("checkpoint", help="the authors' checkpoint file (e.g. net_trained_last)")
    parser.add_argument("--backbone", required=True, help="the backbone it was trained with, e.g. convnext_tiny_26")
    parser.add_argument("--image-size", type=int, default=224, help="the input size it was trained at")
    parser.add_argument("--out", required=True, help="folder to write model.safetensors + config.json to")
    args = parser.parse_args(argv)
    from pipnet.official import load_official_checkpoint

    model = load_official_checkpoint(args.checkpoint, backbone=args.backbone, image_size=args.image_size)
    _out(str(model.save_pretrained(args.out)))
    return 0


def cmd_models(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="pipnet models", description=COMMANDS["models"]).parse_args(argv)
    from pipnet.backbones import list_models

    for name in list_models():
        _out(name)
    _out("timm/<any timm model name>  (e.g. --model.backbone_kwargs '{output_stride: 16}')")
    return 0


def cmd_serve(argv: list[str]) -> int:
    try:
        from pipnet.serve import main as serve_main
    except ImportError as e:
        raise FileNotFoundError(f"the web page needs the 'serve' extra: pip install 'pipnet[serve]' ({e})") from e
    return serve_main(argv)


HANDLERS = {
    "train": cmd_train,
    "demo": cmd_demo,
    "evaluate": cmd_evaluate,
    "explain": cmd_explain,
    "report": cmd_report,
    "convert": cmd_convert,
    "serve": cmd_serve,
    "models": cmd_models,
}


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
        sys.stderr.write(f"pipnet {command}: interrupted; a run can continue with --resume RUN_DIR\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
