"""`pipnet refit`: switch prototypes off and re-fit only the scoring sheet, into a new model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipnet.cli.common import (command_parser, device_args, edit_args, inference_precision, inference_precision_args,
                               model_args, out, progress_args)

DESCRIPTION = "switch prototypes off and re-fit only the scoring sheet (seconds); logs the edit"
INTERRUPTED = "no model folder was written (a refit's folder appears only when complete); run it again"


def prototype_list(text: str) -> list[int]:
    """`12,40` -> `[12, 40]` (an argparse type)."""
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected prototype numbers separated by commas, e.g. 12,40; got {text!r}") from None


def build_parser():
    """The parser of `pipnet refit`."""
    parser = command_parser("refit", DESCRIPTION, model_args(), edit_args("refit"), progress_args(), device_args(), inference_precision_args())
    parser.add_argument("--disable", type=prototype_list, required=True, help="prototypes to switch off, e.g. 12,40")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the cached training presences")
    parser.add_argument("--lr", type=float, default=0.05, help="AdamW learning rate of the scoring sheet (paper: 0.05)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass and presences per step")
    parser.add_argument("--tpr", type=float, default=0.95, help="TPR of the OoD thresholds re-set for the refit model")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.lr <= 0 or args.batch_size < 1 or not 0 < args.tpr <= 1:
        parser.error("--epochs and --batch-size must be at least 1, --lr positive, --tpr in (0, 1]")
    from pipnet.evaluation.inference import choose_device
    from pipnet.model import ModelLoadError, PIPNet
    from pipnet.train.refit import class_edit_mask, edit_data, edit_record, read_edit_log, refit, save_refit

    target = Path(args.out)
    if target.exists():
        raise FileExistsError(f"{target} exists already: give a new folder to --out (nothing is overwritten)")
    model = PIPNet.from_pretrained(args.model)
    bad = [p for p in args.disable if not 0 <= p < model.num_prototypes]
    if bad:
        raise ModelLoadError(f"{args.model} has prototypes 0..{model.num_prototypes - 1}; no prototype {bad[0]}")
    device = choose_device(args.device)
    data = edit_data(args.model, model, args.data, purpose="refit")
    # Prototypes switched off for one class in the web page stay off for it.
    keep_zero = class_edit_mask(args.model, model.num_classes, model.num_prototypes)
    with inference_precision(args.precision, device, args.model):  # the presences; the refit itself is fp32
        result = refit(model, data.train, data.test, args.disable, keep_zero=keep_zero, epochs=args.epochs, lr=args.lr,
                       batch_size=args.batch_size, device=device, progress=not args.no_progress)
        settings = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
        records = [
            edit_record("switch_off", prototypes=args.disable, reason=args.reason, tool="pipnet refit", source=str(args.model)),
            edit_record("refit", prototypes=result.disabled, reason=args.reason, tool="pipnet refit", source=str(args.model),
                        **result.summary(), settings=settings),
        ]
        save_refit(result, target, source=args.model, test_data=data.test, train_data=data.train, records=records,
                   config_path=data.config_path, tpr=args.tpr, data_description=data.description,
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
        out(f"{label:<{width}}  {value}")
    out("edit log:")
    for r in read_edit_log(target):
        out(f"  {r['time']} {r.get('user') or '?'} {r['action']} {r['prototypes']}" + (f": {r['reason']}" if r.get("reason") else ""))
    out(str(target))
    return 0
