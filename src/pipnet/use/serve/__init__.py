"""``pipnet serve``: a local web page to explore a PIP-Net and edit it.

Upload an image (or pick one of the data set's) and see why the model decides what it does; browse the
prototypes and the scoring sheet; switch prototypes off, for every class or for one, and see at once how
the explanation and the test accuracy change; save the edited model as a new folder. Needs the ``serve``
extra (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipnet.core.precision import PRECISIONS
from pipnet.use.serve.app import LOCAL_HOSTS, MAX_UPLOAD_BYTES, create_app

__all__ = ["create_app", "main", "serve_parser"]

log = logging.getLogger(__name__)


def serve_parser() -> argparse.ArgumentParser:
    """The parser of ``pipnet serve``."""
    parser = argparse.ArgumentParser(prog="pipnet serve", description="a local web page to explore a model and switch prototypes off")
    parser.add_argument("model", help="a model folder (model.safetensors + config.json), e.g. a run folder")
    parser.add_argument(
        "--data", help="a run folder or training config YAML whose data to use (default: the model's own config.yaml)"
    )
    parser.add_argument(
        "--out-dir", help="where edited models are saved, each in a new folder (default: beside the model)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20, help="largest image file accepted"
    )
    parser.add_argument("--device", help="where to run the model (default: CUDA when present, else the CPU)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="numeric precision of the explanations: auto (the precision the model's thresholds "
                             "were set in where this machine computes it natively, else fp32), fp32, bf16 or fp16 (CUDA)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the web app until interrupted (``pipnet serve --help`` lists the options)."""
    args = serve_parser().parse_args(argv)
    import uvicorn

    from pipnet.core.precision import resolve_inference_precision, set_default_inference_precision
    from pipnet.evaluation.inference import choose_device
    from pipnet.evaluation.thresholds import load_thresholds

    thresholds = load_thresholds(args.model) if args.precision == "auto" else None
    choice = resolve_inference_precision(args.precision, choose_device(args.device), thresholds.precision if thresholds else None)
    log.info("precision %s (%s)", choice.precision, choice.reason)
    set_default_inference_precision(choice.precision)

    local = args.host in LOCAL_HOSTS
    app = create_app(
        Path(args.model),
        args.data,
        out_dir=args.out_dir,
        device=args.device,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        allowed_hosts=LOCAL_HOSTS if local else ["*"],
    )
    if not local:
        log.warning("listening on %s: anyone who can reach it can use the page and save models under %s",
                    args.host, app.state.explorer.out_dir)
    log.info("open http://%s:%d/ in a browser (Ctrl+C stops)", "127.0.0.1" if local else args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
