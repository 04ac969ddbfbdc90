"""`pipnet models`: the registered backbones."""

from __future__ import annotations

from pipnet.cli.common import command_parser, out

DESCRIPTION = "list the registered backbones"


def build_parser():
    """The parser of `pipnet models`."""
    return command_parser("models", DESCRIPTION)


def main(argv: list[str]) -> int:
    build_parser().parse_args(argv)
    from pipnet.model.backbones import list_models

    for name in list_models():
        out(name)
    out("timm/<any timm model name>  (e.g. --model.backbone_kwargs '{output_stride: 16}')")
    return 0
