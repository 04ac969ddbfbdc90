"""`pipnet convert`: an official PIP-Net checkpoint into this project's model folder."""

from __future__ import annotations

from pipnet.cli.common import command_parser, out

DESCRIPTION = "convert an official PIP-Net checkpoint to this project's format"


def build_parser():
    """The parser of `pipnet convert`."""
    parser = command_parser("convert", DESCRIPTION)
    parser.add_argument("checkpoint", help="the authors' checkpoint file (e.g. net_trained_last)")
    parser.add_argument("--backbone", required=True, help="the backbone it was trained with, e.g. convnext_tiny_26")
    parser.add_argument("--image-size", type=int, default=224, help="the input size it was trained at")
    parser.add_argument("--out", required=True, help="folder to write model.safetensors + config.json to")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from pipnet.model.official import load_official_checkpoint

    model = load_official_checkpoint(args.checkpoint, backbone=args.backbone, image_size=args.image_size)
    out(str(model.save_pretrained(args.out)))
    return 0
