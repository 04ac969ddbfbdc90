"""`pipnet export`: a saved model as TorchScript or ONNX, checked against PyTorch."""

from __future__ import annotations

from pipnet.cli.common import command_parser, detector_choices, model_args, out

DESCRIPTION = "export a model to TorchScript or ONNX (scores, presence, logits), checked against PyTorch, verdicts included"


def build_parser():
    """The parser of `pipnet export`."""
    parser = command_parser("export", DESCRIPTION, model_args())
    parser.add_argument("--format", choices=["torchscript", "onnx"], required=True,
                        help="torchscript (built in) or onnx (pip install 'pipnet[export]')")
    parser.add_argument("--out", required=True, help="the file to write, e.g. model.onnx or model.pt")
    parser.add_argument("--batch-size", type=int, default=None, help="a fixed batch size (default: any batch size)")
    choices, help_text = detector_choices()
    parser.add_argument("--detector", choices=choices, default="auto", help=help_text + "; the check compares its verdicts")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference from PyTorch accepted when the file is checked on test images")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    from pipnet.explanation.predictor import Predictor
    from pipnet.model import ModelLoadError
    from pipnet.use.export import ExportError, check_export, check_images, export_model, export_verdicts, run_export
    from pipnet.use.outputs import refuse_overwriting

    refuse_overwriting([args.out], [args.model])
    predictor = Predictor.load(args.model, device="cpu", precision="fp32", detector=args.detector)
    model = predictor.model
    try:
        path = export_model(model, args.out, format=args.format, batch_size=args.batch_size)
        images, what = check_images(args.model, model, args.batch_size or 8)
        diff = check_export(model, path, images, format=args.format)
        exported = export_verdicts(run_export(path, images, format=args.format), predictor.detector, predictor.class_names)
    except ExportError as e:
        raise ModelLoadError(str(e)) from e
    out(f"checked on {len(images)} {what} with {'torch.jit.load' if args.format == 'torchscript' else 'onnxruntime'}: "
        f"max |difference| scores {diff['scores']:.2e}, presence {diff['presence']:.2e}, logits {diff['logits']:.2e}")
    if max(diff.values()) > args.tolerance:
        raise ModelLoadError(f"the exported {path} differs from PyTorch by {max(diff.values()):.2e} (> {args.tolerance:g})")
    wanted = [d.verdict for d in predictor.decide(images)]
    differ = sum((a.kind, a.reason.get("class")) != (b.kind, b.reason.get("class")) for a, b in zip(exported, wanted))
    by = predictor.detector.name if predictor.detector is not None else "no detector (none stored)"
    out(f"verdicts ({by}): {len(wanted) - differ} of {len(wanted)} the same as pipnet predict's")
    if differ:
        raise ModelLoadError(f"the exported {path} gives another verdict than PyTorch on {differ} of {len(wanted)} images")
    norm = model.normalization
    out(f"inputs: RGB in [0, 1] resized to {model.config.image_size} x {model.config.image_size}, then "
        f"(x - mean) / std with mean {list(norm.mean)}, std {list(norm.std)} (config.json: normalization)")
    out(str(path))
    return 0
