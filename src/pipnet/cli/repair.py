"""`pipnet repair`: forbid some prototypes' patches, fine-tune, re-fit the scoring sheet, into a new model folder."""

from __future__ import annotations

from pipnet.cli.common import command_parser, device_args, edit_args, model_args, out, progress_args
from pipnet.cli.refit import prototype_list

DESCRIPTION = "forbid prototypes' patches, fine-tune, re-fit the scoring sheet (a shortcut repair); logs the edit"
INTERRUPTED = "no model folder was written (a repair's folder appears only when complete); run it again"


def build_parser():
    """The parser of `pipnet repair`."""
    parser = command_parser("repair", DESCRIPTION, model_args(), edit_args("repaired"), progress_args(), device_args())
    parser.add_argument("--forbid", type=prototype_list, required=True,
                        help="prototypes whose patches no prototype may answer to any more, e.g. 12,40 (switched off)")
    parser.add_argument("--remember", type=prototype_list, default=None,
                        help="prototypes that must keep their response (default: every used one not forbidden)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning passes over the training images (0: switch off + re-fit only)")
    parser.add_argument("--no-backbone", action="store_true", help="fine-tune only the add-on layer (cheaper; needs num_features > 0)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of the backbone")
    parser.add_argument("--lr-head", type=float, default=2e-3, help="AdamW learning rate of the add-on layer")
    parser.add_argument("--similar", type=float, default=None,
                        help="also forbid patches whose backbone feature has at least this cosine similarity to the "
                             "forbidden prototypes' own patches, e.g. 0.6 (default: only the patches they answer to)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per fine-tuning step and forward pass")
    parser.add_argument("--tpr", type=float, default=0.95, help="TPR of the OoD thresholds re-set for the repaired model")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
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
    out("\n".join([*repair_lines(result), args.out]))
    return 0
