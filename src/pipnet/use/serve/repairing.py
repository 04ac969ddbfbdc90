"""The page's shortcut repair: prototypes a visitor marks `forbid` or `keep`, repaired in the background into a
new model folder, and the model before and after the repair on the same images.

The repair itself is [`repair`][pipnet.train.repair.repair] (fine-tune so that no prototype answers to the
forbidden prototypes' patches any more, then re-fit the scoring sheet) and
[`save_repair`][pipnet.train.repair.save_repair] (a new folder, all or nothing, with the edit log), run on
the page's data, as `pipnet repair` runs them on a model folder's. The verdicts before and after come from
[`Predictor`][pipnet.explanation.predictor.Predictor]: the page's for the model as loaded, and one loaded
from the new folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipnet.evaluation.detectors import describe_data
from pipnet.explanation.predictor import Predictor
from pipnet.train.refit import class_edit_mask
from pipnet.train.repair import RepairSettings, repair, repair_records, save_repair
from pipnet.train.repair_folder import repair_lines

if TYPE_CHECKING:
    from pipnet.use.serve.session import Explorer, Visitor

__all__ = ["MARKS", "Repaired", "mark", "repair_job", "repair_message", "verdicts_before_after"]

MARKS = ("forbid", "keep")  # what a visitor can mark a prototype as; "none" takes a mark away
MAX_EPOCHS = 50  # the most fine-tuning passes the page starts


@dataclass(frozen=True, eq=False)
class Repaired:
    """A repair the page finished: the new folder, the command's table, and the repaired model's predictor."""

    path: Path
    lines: list[str]
    forbidden: list[int]
    predictor: Predictor


def mark(visitor: Visitor, prototype: int, what: str, num_prototypes: int) -> None:
    """Mark `prototype` `forbid` or `keep` for the visitor's next repair (`none`: no mark).

    Raises:
        ValueError: another mark, or a prototype out of range.
    """
    if what not in (*MARKS, "none"):
        raise ValueError("mark must be 'forbid', 'keep' or 'none'")
    if not 0 <= prototype < num_prototypes:
        raise ValueError(f"the model has prototypes 0 to {num_prototypes - 1}, not {prototype}")
    if what == "none":
        visitor.marks.pop(prototype, None)
    else:
        visitor.marks[prototype] = what


def repair_job(explorer: Explorer, visitor: Visitor, path: Path, *, reason: str | None = None,
               epochs: int = RepairSettings().epochs) -> Callable[[], Repaired]:
    """The visitor's repair into the new folder `path`: the marks are read now; the returned function does the work.

    The repair starts from the model as loaded (the visitor's switch-offs are not part of it; per-class
    switch-offs saved with the model stay at 0). Prototypes marked `keep` are remembered; without any, every
    used prototype not forbidden is.

    Raises:
        ValueError: no data (the repair needs the training images and a test set), no prototype marked
            `forbid`, or epochs out of range.
    """
    if explorer.data is None or explorer.data.test is None:
        raise ValueError("the repair needs the run's training and test images: start with --data RUN_OR_CONFIG")
    forbid = sorted(p for p, m in visitor.marks.items() if m == "forbid")
    keep = sorted(p for p, m in visitor.marks.items() if m == "keep")
    if not forbid:
        raise ValueError("mark at least one prototype 'forbid' first (in the prototype gallery)")
    if not 0 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"epochs must be 0 to {MAX_EPOCHS}, not {epochs}")
    data, original, device = explorer.data, explorer.editor.original, explorer.device
    settings = RepairSettings(epochs=epochs)

    def run() -> Repaired:
        keep_zero = class_edit_mask(explorer.model_dir, original.num_classes, original.num_prototypes)
        result = repair(original, data.projection_set, data.test, forbid, keep or None, settings=settings,
                        keep_zero=keep_zero, device=device)
        config = data.config
        save_repair(result, path, source=explorer.model_dir, train_data=data.projection_set, test_data=data.test,
                    data_description=describe_data(config.source, config.root, "test", len(data.test)),
                    records=repair_records(result, source=str(explorer.model_dir), reason=reason, tool="pipnet serve"),
                    config_path=data.config_path, tpr=explorer.threshold_tpr(), batch_size=settings.batch_size, device=device)
        predictor = Predictor.load(path, device=device, precision=explorer.predictor.precision)
        return Repaired(path, repair_lines(result), result.forbidden, predictor)

    return run


def repair_message(repaired: Repaired, started: float) -> str:
    """The notice of a finished repair (its table is on the page, in the edits area)."""
    return (f"Repaired the model without the patches of prototypes {repaired.forbidden} and saved it to "
            f"{repaired.path} ({time.monotonic() - started:.0f} s): the table and the verdicts before and after "
            "are in the edits area.")


def verdicts_before_after(explorer: Explorer, visitor: Visitor) -> list[dict[str, str]] | None:
    """The verdict on the image on show of the model as loaded and of the repaired one, or None."""
    repaired, shown = visitor.repaired, visitor.shown
    if repaired is None or shown is None:
        return None

    def decide() -> list[dict[str, str]]:
        rows = []
        for who, predictor in (("before the repair", explorer.predictor), ("after the repair", repaired.predictor)):
            (decision,) = predictor.decide(shown.x[None], image_ids=[shown.title])
            rows.append({"who": who, "kind": decision.verdict.kind, "sentence": decision.verdict.sentence,
                         "predicted": decision.predicted_class or "no class"})
        return rows

    return visitor.cached(("repair verdicts", shown.serial, str(repaired.path)), decide, one_of_kind=True)

