"""``pipnet export``: a saved model as TorchScript or ONNX, checked against PyTorch."""

from __future__ import annotations

from pipnet.cli.common import command_parser, model_args, out

DESCRIPTION = "export a model to TorchScript or ONNX (scores and presence), checked against PyTorch"


def build_parser():
    """The parser of ``pipnet export``."""
    parser = command_parser("export", DESCRIPTION, model_args())
    parser.add_argument("--format", choices=["torchscript", "onnx"], required=True,
                        help="torchscript (built in) or onnx (pip install 'pipnet[export]')")
    parser.add_argument("--out", required=True, help="the file to write, e.g. model.onnx or model.pt")
    parser.add_argument("--batch-size", type=int, default=None, help="a fixed batch size (default: any batch size)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference from PyTorch accepted when the file is checked on test images")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    from pipnet.model import ModelLoadError, PIPNet
    from pipnet.use.export import ExportError, check_export, check_images, export_model

    model = PIPNet.from_pretrained(args.model)
    try:
        path = export_model(model, args.out, format=args.format, batch_size=args.batch_size)
        images, what = check_images(args.model, model, args.batch_size or 8)
        diff = check_export(model, path, images, format=args.format)
    except ExportError as e:
        raise ModelLoadError(str(e)) from e
    out(f"checked on {len(images)} {what} with {'torch.jit.load' if args.format == 'torchscript' else 'onnxruntime'}: "
        f"max |difference| scores {diff['scores']:.2e}, presence {diff['presence']:.2e}")
    if max(diff.values()) > args.tolerance:
        raise ModelLoadError(f"the exported {path} differs from PyTorch by {max(diff.values()):.2e} (> {args.tolerance:g})")
    norm = model.normalization
    out(f"inputs: RGB in [0, 1] resized to {model.config.image_size} x {model.config.image_size}, then "
        f"(x - mean) / std with mean {list(norm.mean)}, std {list(norm.std)} (config.json: normalization)")
    out(str(path))
    return 0
