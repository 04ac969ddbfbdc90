"""`pipnet repair` as a library call: a model folder in, a repaired model folder out, the edit logged.

The command line only parses its flags and calls `repair_model_folder`, which reads the model and its
training data, runs `pipnet.train.repair.repair`, writes the new folder all-or-nothing with
`pipnet.train.repair.save_repair` and returns what to print.
"""

from __future__ import annotations

from pathlib import Path

from pipnet.train.repair import (
    RepairResult,
    RepairSettings,
    repair,
    repair_records,
    save_repair,
)

__all__ = ["repair_lines", "repair_model_folder"]


def repair_model_folder(
    model_dir: str | Path,
    out: str | Path,
    *,
    forbid: list[int],
    remember: list[int] | None = None,
    settings: RepairSettings = RepairSettings(),
    data: str | Path | None = None,
    reason: str | None = None,
    tpr: float = 0.95,
    device: str = "auto",
    progress: bool = False,
    tool: str = "pipnet repair",
) -> RepairResult:
    """Repair the model in `model_dir` and write it to the NEW folder `out`.

    Args:
        model_dir: a model folder with its training config (`config.yaml`), e.g. a run folder.
        out: the new folder (must not exist; it appears only when complete).
        forbid: the prototypes whose patches no prototype may answer to any more.
        remember: the prototypes to keep (default: every used one not forbidden).
        settings: the repair's settings.
        data: a run folder or training config YAML whose data to use (default: `model_dir`'s).
        reason: why, for the edit log.
        tpr: TPR of the re-set OoD thresholds.
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        progress: show progress bars.
        tool: the edit log's `tool` field.

    Raises:
        FileExistsError: `out` exists.
        DataError: no data config, or its data has no test split.
        ModelLoadError: a prototype out of range.
    """
    from pipnet.evaluation.inference import choose_device
    from pipnet.model import ModelLoadError, PIPNet
    from pipnet.train.refit import class_edit_mask, edit_data

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists already: give a new folder to --out (nothing is overwritten)")
    model = PIPNet.from_pretrained(model_dir)
    bad = [p for p in [*forbid, *(remember or [])] if not 0 <= p < model.num_prototypes]
    if bad:
        raise ModelLoadError(f"{model_dir} has prototypes 0..{model.num_prototypes - 1}; no prototype {bad[0]}")
    both = sorted(set(forbid) & set(remember or []))
    if both:
        raise ModelLoadError(f"prototype {both[0]} is both forbidden and remembered")
    if not forbid:
        raise ModelLoadError("give at least one prototype to --forbid")
    if not settings.train_backbone and model.config.num_features == 0:
        raise ModelLoadError(f"{model_dir} has no add-on layer (num_features 0): a repair without the backbone has "
                             "nothing to fine-tune; leave out --no-backbone")
    bundle = edit_data(model_dir, model, data, purpose="repair")
    dev = choose_device(device)
    keep_zero = class_edit_mask(model_dir, model.num_classes, model.num_prototypes)  # per-class switch-offs stay
    result = repair(model, bundle.train, bundle.test, forbid, remember, settings=settings, keep_zero=keep_zero,
                    device=dev, progress=progress)
    save_repair(result, out, source=model_dir, train_data=bundle.train, test_data=bundle.test,
                data_description=bundle.description,
                records=repair_records(result, source=str(model_dir), reason=reason, tool=tool),
                config_path=bundle.config_path, tpr=tpr, batch_size=settings.batch_size, device=dev)
    return result


def repair_lines(result: RepairResult) -> list[str]:
    """The command's table: accuracies, responses before and after, what was held at zero, the time."""
    f_before, f_after = result.forbidden_response
    k_before, k_after = result.kept_response
    rows = [
        ("test accuracy before the repair", f"{result.accuracy_original:.2%}"),
        ("after fine-tuning (old sheet)", f"{result.refit.accuracy_before:.2%}"),
        ("after the repair (sheet re-fitted)", f"{result.refit.accuracy_refit:.2%}"),
        ("forbidden prototypes", ",".join(map(str, result.forbidden))),
        ("their presence at forbidden patches", f"{f_before:.3f} -> {f_after:.3f} ({result.forbidden_cells} patches)"),
        ("kept prototypes' presence at their patches", f"{k_before:.3f} -> {k_after:.3f} ({result.remembered_pairs} pairs)"),
        ("held at weight 0 (took the forbidden patches)", ",".join(map(str, result.held_at_zero)) or "none"),
        ("global explanation size", str(result.refit.global_size)),
        ("seconds (fine-tuning / all)", f"{result.seconds_fine_tune:.1f} / {result.seconds:.1f}"),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  {value}" for label, value in rows]
