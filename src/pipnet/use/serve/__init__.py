"""`pipnet serve`: a local web page to explore a PIP-Net and edit it.

Upload an image (or pick one of the data set's) and see why the model decides what it does; browse the
prototypes and the scoring sheet; switch prototypes off, for every class or for one, and see at once how
the explanation and the test accuracy change; save the edited model as a new folder; mark prototypes
forbid or keep and repair a shortcut, comparing the model before and after. Needs the `serve`
extra (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipnet.core.precision import PRECISIONS
from pipnet.data.images import max_pixels, megapixels
from pipnet.evaluation.detectors import CHOICES, CHOICES_HELP
from pipnet.use.serve.app import LOCAL_HOSTS, MAX_UPLOAD_BYTES, create_app

__all__ = ["create_app", "main", "serve_parser"]

log = logging.getLogger(__name__)


def serve_parser() -> argparse.ArgumentParser:
    """The parser of `pipnet serve`."""
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
    parser.add_argument(
        "--max-megapixels", type=float,
        help="largest image accepted, in millions of pixels (width x height), refused from its header before "
             f"decoding; raises or lowers Pillow's own limit (default: Pillow's, {megapixels(max_pixels())})",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="threads that decode, explain and draw pages (refits run in one more)")
    parser.add_argument("--max-visitors", type=int, default=32,
                        help="visitors whose state (edits, image, messages) is kept at once; the least recent is forgotten first")
    parser.add_argument("--idle-minutes", type=float, default=60.0, help="a visitor's state is forgotten after this long idle")
    parser.add_argument("--device", help="where to run the model (default: CUDA when present, else the CPU)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="numeric precision of the explanations and verdicts: auto (the precision the model "
                             "folder's detectors were set in: fp32 unless their fitting asked otherwise, so every "
                             "machine gives the same verdict), fp32, bf16 or fp16 (CUDA)")
    parser.add_argument("--detector", choices=CHOICES, default="auto", help=CHOICES_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the web app until interrupted (`pipnet serve --help` lists the options)."""
    parser = serve_parser()
    args = parser.parse_args(argv)
    if args.workers < 1 or args.max_visitors < 1 or args.idle_minutes <= 0 or (args.max_megapixels or 1) <= 0:
        parser.error("--workers and --max-visitors must be at least 1, --idle-minutes and --max-megapixels positive")
    import uvicorn

    from pipnet.core.precision import set_default_inference_precision

    local = args.host in LOCAL_HOSTS
    app = create_app(
        Path(args.model),
        args.data,
        out_dir=args.out_dir,
        device=args.device,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_megapixels * 1e6) if args.max_megapixels is not None else None,
        workers=args.workers,
        max_visitors=args.max_visitors,
        idle_minutes=args.idle_minutes,
        allowed_hosts=LOCAL_HOSTS if local else ["*"],
        detector=args.detector,
        precision=args.precision,
    )
    predictor = app.state.explorer.predictor  # the page's explanations in the precision of its verdicts
    log.info("precision %s (%s)", predictor.precision, predictor.precision_reason)
    set_default_inference_precision(predictor.precision)
    if not local:
        log.warning("listening on %s: anyone who can reach it can use the page and save models under %s",
                    args.host, app.state.explorer.out_dir)
    log.info("open http://%s:%d/ in a browser (Ctrl+C stops)", "127.0.0.1" if local else args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
