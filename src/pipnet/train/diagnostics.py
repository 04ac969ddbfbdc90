"""Training diagnostics: what a finished run's log and metrics say about how it went, in plain words.

`diagnose` is a pure function from the history rows (`history.csv`), the run's config and its
metrics (`metrics.json`) to a list of `Finding`: each a level, a sentence with the numbers, and the
numbers themselves. The training log prints them at the end of a run and the HTML report shows them. The
checks come from what went wrong on small real-photo sets:

- `steps`: classification steps and the soft threshold's total decrement (steps x 1e-3) against the
  paper's CUB run (60 epochs x 94 steps x 1e-3 = 5.64): with a few hundred images the decrement is tiny
  and the scoring sheet stays dense.
- `saturation`: used prototypes whose 10th-best presence on the training images is >= 0.99.
- `everywhere`: used prototypes present on most images of every class (no class information).
- `train_accuracy`: train accuracy still rising over the last epochs (training stopped too early).
- `ood`: out-of-distribution images (natural photos) not rejected, as FPR at 95% TPR.
- `on_object`: with object masks, how much more often than chance the top patches lie on the object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from pipnet.train.phases import classification_rows

__all__ = ["Finding", "PAPER_DECREMENT", "classification_steps", "diagnose"]

# The paper's CUB run (paper supplementary Sec. 1.1): 60 classification epochs of ceil(5994 / 64) = 94 steps.
PAPER_EPOCHS, PAPER_STEPS_PER_EPOCH = 60, 94
PAPER_DECREMENT = PAPER_EPOCHS * PAPER_STEPS_PER_EPOCH * 1e-3  # 5.64

LOW_DECREMENT = 0.5  # a total decrement below half the paper's is worth a warning
SATURATED_SHARE = 0.5  # warn when half the used prototypes or more are saturated
RISING = 0.02  # train accuracy gained over the last epochs that counts as "still rising"
RISING_WINDOW = 3  # epochs compared: the last 3 against the 3 before them
OOD_FPR = 0.3  # FPR95 above this: the natural photos are not rejected
ON_OBJECT_MARGIN = 0.2  # on-object share less than this above chance: prototypes barely prefer the object

Level = Literal["ok", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One diagnostic: `key` names the check, `message` says it in plain words with the numbers."""

    key: str
    level: Level
    message: str
    values: dict[str, Any] = field(default_factory=dict)


def _get(config: Any, path: str, default: Any = None) -> Any:
    """`config.a.b` for a dataclass config or `config["a"]["b"]` for a dict (a run's config.yaml)."""
    value = config
    for name in path.split("."):
        value = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
        if value is None:
            return default
    return value


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def classification_steps(history: Sequence[Mapping[str, Any]], config: Any, num_train_images: int | None) -> tuple[int | None, float | None, str]:
    """(steps, total decrement, where the numbers come from) of the soft threshold over a run.

    Read from the history's cumulative `sparsify_steps` / `decrement_total` columns when present;
    otherwise derived: classification epochs done x (N // batch size) steps (the loader drops the last
    partial batch), each subtracting `optim.sparsify_threshold` under `soft_threshold`, or, with
    `optim.soft_threshold_total` set, that total spread over `schedule.epochs` x steps per epoch
    (`hard_threshold` subtracts nothing). None when neither is possible.
    """
    rows = classification_rows(history)
    last = rows[-1] if rows else (history[-1] if history else {})
    steps, total = _number(last.get("sparsify_steps")), _number(last.get("decrement_total"))
    if not math.isnan(steps) and not math.isnan(total):
        return int(steps), total, "history.csv"
    if num_train_images is None:
        return None, None, "unknown"
    batch = int(_get(config, "schedule.batch_size", 64))
    per_epoch = num_train_images // max(1, min(batch, num_train_images))
    steps_done = len(rows) * per_epoch
    threshold = float(_get(config, "optim.sparsify_threshold", 1e-3))
    soft = _get(config, "optim.sparsify", "soft_threshold") == "soft_threshold"
    chosen_total = _get(config, "optim.soft_threshold_total")
    if soft and chosen_total is not None:
        threshold = float(chosen_total) / max(1, int(_get(config, "schedule.epochs", len(rows))) * per_epoch)
    return steps_done, steps_done * threshold if soft else 0.0, f"{len(rows)} epochs x {per_epoch} steps"


def _steps(history, config, num_train_images) -> Finding | None:
    steps, total, source = classification_steps(history, config, num_train_images)
    if steps is None or total is None:
        return None
    values = {"steps": steps, "decrement_total": total, "paper_decrement": PAPER_DECREMENT, "source": source}
    paper = f"the paper's CUB run subtracts about {PAPER_DECREMENT:.1f} ({PAPER_EPOCHS} epochs x {PAPER_STEPS_PER_EPOCH} steps x 0.001)"
    if _get(config, "optim.sparsify", "soft_threshold") != "soft_threshold":
        return Finding("steps", "info", f"{steps} classification steps with the hard threshold, which subtracts nothing; {paper}.", values)
    message = (f"{steps} classification steps ({source}): the soft threshold subtracted {total:.3g} in total from "
               f"every classifier weight; {paper}.")
    if total < LOW_DECREMENT * PAPER_DECREMENT:
        optim = _get(config, "optim")
        option = " (--optim.soft_threshold_total sets the total)" if (
            "soft_threshold_total" in optim if isinstance(optim, Mapping) else hasattr(optim, "soft_threshold_total")) else ""
        return Finding("steps", "warning", message + " Weights it does not push to zero stay in the scoring sheet, so "
                       "expect a denser sheet (lower sparsity, more prototypes per decision) than the paper's: more "
                       "classification steps (more epochs, smaller batches) or a larger decrement per step"
                       f"{option} close the gap.", values)
    return Finding("steps", "ok", message, values)


def _saturation(metrics: Mapping[str, Any]) -> Finding | None:
    sat = metrics.get("saturation") or {}
    if not sat or not sat.get("num_used"):
        return None
    share = _number(sat.get("share"))
    if not sat["saturated"]:
        return Finding("saturation", "ok", f"None of the {sat['num_used']} used prototypes is saturated (its "
                       f"{sat['rank']}th-best presence on the training images >= {sat['presence']}).", dict(sat))
    message = (f"{sat['saturated']} of {sat['num_used']} used prototypes ({share:.0%}) are saturated: their "
               f"{sat['rank']}th-best presence on the training images is >= {sat['presence']}, so presence no "
               "longer ranks their typical images (the gallery ranks by log-odds instead).")
    level: Level = "warning" if share >= SATURATED_SHARE else "ok"
    return Finding("saturation", level, message, dict(sat))


def _everywhere(metrics: Mapping[str, Any], config: Any) -> Finding | None:
    ev = metrics.get("everywhere") or {}
    if not ev:
        return None
    found = list(ev.get("prototypes") or [])
    pruned = bool(_get(config, "optim.prune_everywhere", False))
    if not found:
        text = "No used prototype is present on most images of every class."
        if pruned:
            text += " (--optim.prune_everywhere removed those there were.)"
        return Finding("everywhere", "ok", text, dict(ev))
    names = ", ".join(f"#{p}" for p in found)
    return Finding("everywhere", "warning",
                   f"{len(found)} of {ev['num_used']} used prototypes ({names}) are present (p > {ev['presence']}) on at "
                   f"least {ev['share']:.0%} of the training images of every class: they add the same evidence to "
                   "every class and carry no class information (often background). --optim.prune_everywhere true "
                   "removes them after training.", dict(ev))


def _train_accuracy(history: Sequence[Mapping[str, Any]]) -> Finding | None:
    acc = [_number(r.get("train_accuracy")) for r in classification_rows(history)]
    acc = [a for a in acc if not math.isnan(a)]
    if not acc:
        return None
    values: dict[str, Any] = {"final": acc[-1]}
    if len(acc) < 2 * RISING_WINDOW:
        return Finding("train_accuracy", "info", f"Train accuracy at the end: {acc[-1]:.2f} (too few epochs to see a trend).", values)
    last = sum(acc[-RISING_WINDOW:]) / RISING_WINDOW
    before = sum(acc[-2 * RISING_WINDOW : -RISING_WINDOW]) / RISING_WINDOW
    values.update(last_mean=last, before_mean=before, gain=last - before)
    if last - before >= RISING:
        return Finding("train_accuracy", "warning",
                       f"Train accuracy was still rising at the end: {before:.2f} -> {last:.2f} (means of the "
                       f"{RISING_WINDOW} epochs before the last {RISING_WINDOW} and of the last {RISING_WINDOW}; final "
                       f"{acc[-1]:.2f}). The model underfits: train longer.", values)
    return Finding("train_accuracy", "ok", f"Train accuracy levelled off: {before:.2f} -> {last:.2f} over the last "
                   f"{2 * RISING_WINDOW} epochs (final {acc[-1]:.2f}).", values)


def _ood(metrics: Mapping[str, Any]) -> list[Finding]:
    out = []
    for name, o in (metrics.get("ood") or {}).items():
        fpr = _number(o.get("fpr95"))
        if math.isnan(fpr):
            continue
        values = {"set": name, "fpr95": fpr, "auroc": _number(o.get("auroc")), "num_images": o.get("num_images")}
        text = (f"Out-of-distribution set {name!r}: {fpr:.0%} of its images score as high as the 95% of test "
                f"images that are kept (FPR95 {fpr:.2f}, AUROC {values['auroc']:.2f}).")
        if fpr > OOD_FPR:
            out.append(Finding("ood", "warning", text + " The model does not reject these images: it finds its "
                               "prototypes in images of none of its classes.", values))
        else:
            out.append(Finding("ood", "ok", text, values))
    return out


def _on_object(metrics: Mapping[str, Any]) -> list[Finding]:
    out = []
    for name, o in (metrics.get("on_object") or {}).items():
        key = next((k for k in o if k.startswith("top")), None)
        share, chance = _number(o.get(key)), _number(o.get("chance"))
        if key is None or math.isnan(share):
            continue
        text = (f"On the object ({name}): {share:.0%} of the used prototypes' {key} patches are centred on the "
                f"object, where a random grid cell would be {chance:.0%}.")
        level: Level = "warning" if share < chance + ON_OBJECT_MARGIN else "ok"
        if level == "warning":
            text += " The prototypes barely prefer the object to the background."
        out.append(Finding("on_object", level, text, {"set": name, "share": share, "chance": chance}))
    return out


def diagnose(
    history: Sequence[Mapping[str, Any]],
    config: Any,
    metrics: Mapping[str, Any] | Any | None,
    *,
    num_train_images: int | None = None,
) -> list[Finding]:
    """The findings of a finished run.

    Args:
        history: the per-epoch rows of `history.csv` (dicts; `stage`, `train_accuracy`, and when
            present the cumulative `sparsify_steps` and `decrement_total`).
        config: the run's `TrainConfig` (or its `config.yaml` as a dict).
        metrics: `metrics.json` as a dict (or a `Metrics`), or None before evaluation.
        num_train_images: the classification training set's size, to derive the steps when the history
            lacks the `sparsify_steps` column.

    Returns:
        Findings in a fixed order: steps, train accuracy, saturation, present everywhere, OoD, on-object.
    """
    if metrics is not None and hasattr(metrics, "to_dict"):
        metrics = metrics.to_dict()
    metrics = metrics or {}
    found = [
        _steps(history, config, num_train_images),
        _train_accuracy(history),
        _saturation(metrics),
        _everywhere(metrics, config),
        *_ood(metrics),
        *_on_object(metrics),
    ]
    return [f for f in found if f is not None]
