"""`pipnet serve`: the local web page (needs the `serve` extra; the parser lives with the app)."""

from __future__ import annotations

DESCRIPTION = "a local web page to explore a model and switch prototypes off"


def build_parser():
    """The parser of `pipnet serve` (needs the `serve` extra)."""
    from pipnet.use.serve import serve_parser

    return serve_parser()


def main(argv: list[str]) -> int:
    try:
        from pipnet.use.serve import main as serve_main
    except ImportError as e:
        from pipnet.core.utils import MissingExtraError

        raise MissingExtraError(f"the web page needs the 'serve' extra: pip install 'pipnet[serve]' ({e})") from e
    return serve_main(argv)
