"""Repair after editing: re-train only the scoring sheet with some prototypes switched off, and log every edit.

Switching a prototype off (`PIPNet.disable_prototypes`) removes its evidence, and the classes that relied on
it lose score. [`refit`][pipnet.train.refit.refit] re-fits the classifier W (C, P) to what is left, the way the classification
phase trains it (paper supplementary Sec. 1.1): the loss L_C = NLL(log_softmax(log(out^m + 1))) on the training-time
presence (no 0.1 cut), AdamW without weight decay, and after every step the soft threshold
W <- max(W - 1e-3, 0) (bias kept >= 0), so the sheet stays non-negative and sparse. The backbone and the
prototypes do not change, so the presences of the training images are computed once (one batched pass) and
the fit runs on that (N, P) table: seconds, not a training run. It starts from the model's own weights.

Every edit is appended to `edits.jsonl` beside the model (one JSON object per line: what, when, by whom, an
optional reason, and for a refit its accuracies), and a model derived from another carries its log along.
"""

from __future__ import annotations

import copy
import getpass
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipnet.evaluation import metrics as M
from pipnet.model import PRESENCE_THRESHOLD, PIPNet
from pipnet.model.losses import classification_loss
from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model.run_folder import RunFolder, write_model_folder

__all__ = [
    "RefitResult",
    "append_edits",
    "class_edit_mask",
    "edit_data",
    "edit_record",
    "fit_scoring_sheet",
    "presence_table",
    "read_edit_log",
    "refit",
    "save_refit",
    "sheet_accuracy",
]

SOFT_THRESHOLD = 1e-3  # the faithful per-step subtraction (paper supplementary Sec. 1.1)


@dataclass(frozen=True, eq=False)
class RefitResult:
    """A refit model and what the edit did to its test accuracy.

    Args:
        model: a new PIP-Net: the prototypes switched off, the scoring sheet re-fitted (the input is unchanged).
        disabled: every prototype switched off in `model`.
        accuracy_before: top-1 test accuracy of the model as given.
        accuracy_switched_off: the same with the prototypes switched off, before the refit.
        accuracy_refit: after the refit.
        train_accuracy_refit: top-1 accuracy on the training images after the refit (what the fit saw).
        num_train: training images the sheet was fitted on.
        num_test: test images of the accuracies.
        global_size: prototypes with a relevant weight after the refit.
        seconds: time of the whole refit (presence passes included).
    """

    model: PIPNet
    disabled: list[int]
    accuracy_before: float
    accuracy_switched_off: float
    accuracy_refit: float
    train_accuracy_refit: float
    num_train: int
    num_test: int
    global_size: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The numbers, for the edit log and the report."""
        return {
            "accuracy_before": self.accuracy_before,
            "accuracy_switched_off": self.accuracy_switched_off,
            "accuracy_refit": self.accuracy_refit,
            "train_accuracy_refit": self.train_accuracy_refit,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "global_size": self.global_size,
            "seconds": round(self.seconds, 2),
        }


def presence_table(
    model: PIPNet, data: Dataset | DataLoader, *, batch_size: int = 64, device=None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Presence of every prototype in every image, ignoring the model's switched-off mask, and the labels.

    Returns:
        (N, P) float32 presence (max of each prototype map) and (N,) labels, on the CPU.
    """
    presences, labels = [], []
    with eval_mode(model, device) as dev:
        for batch in tqdm(make_loader(data, batch_size), desc="presence", disable=not progress, leave=False):
            x = inputs_of(batch).to(dev)
            presences.append(model.prototype_maps(model.forward_features(x)).amax(dim=(2, 3)).float().cpu())  # (B, P)
            labels.append(torch.as_tensor(batch[1]).reshape(-1))
    if not presences:
        raise ValueError("presence_table() got an empty data set")
    return torch.cat(presences), torch.cat(labels).long()


def sheet_accuracy(
    presence: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None
) -> float:
    """Top-1 accuracy of a scoring sheet at inference (presence < 0.1 set to 0; abstaining is wrong).

    Args:
        presence: (N, P) unmasked presence.
        labels: (N,) classes.
        weight: (C, P) raw classifier weights (relu is applied).
        mask: (P,) 1 = on, 0 = switched off.
        bias: (C,) or None.
    """
    used = torch.where(presence < PRESENCE_THRESHOLD, 0.0, presence) * mask  # (N, P)
    scores = used @ weight.clamp(min=0).T + (bias.clamp(min=0) if bias is not None else 0.0)  # (N, C)
    return M.topk_accuracy(scores, labels, ks=(1,))[1]


def fit_scoring_sheet(
    presence: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    multiplier: float = 2.0,
    keep_zero: torch.Tensor | None = None,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fit W (and b) to fixed presences with L_C, AdamW and the soft threshold after every step.

    Args:
        presence: (N, P) training-time presence (unmasked; `mask` is applied here).
        labels: (N,) classes.
        weight: (C, P) starting weights (not modified).
        mask: (P,) 1 = on, 0 = off; the weights of switched-off prototypes are set to 0 and stay 0.
        bias: (C,) starting bias, or None for no bias.
        multiplier: m of log(out^m + 1).
        keep_zero: optional (C, P) bool: weights held at 0 (e.g. prototypes switched off for one class).
        epochs: passes over the N presences.
        lr: AdamW learning rate (the classifier's, 0.05 in the paper).
        batch_size: presences per step.
        seed: seed of the shuffling.

    Returns:
        The new (C, P) weight and (C,) bias (or None).
    """
    frozen = (mask <= 0)[None, :].expand_as(weight).clone()  # (C, P)
    if keep_zero is not None:
        frozen |= keep_zero.bool()
    w = torch.nn.Parameter(torch.where(frozen, 0.0, weight.detach().float().clamp(min=0)))
    b = torch.nn.Parameter(bias.detach().float().clone()) if bias is not None else None
    optimizer = torch.optim.AdamW([p for p in (w, b) if p is not None], lr=lr, weight_decay=0.0)
    x_all, y_all = presence.float() * mask, labels.long()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y_all), generator=generator).split(batch_size):
            out = x_all[idx] @ torch.relu(w).T + (b if b is not None else 0.0)  # (B, C)
            loss = classification_loss(out, y_all[idx], multiplier)  # the training's L_C
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # the soft threshold of every classification step, and the edits kept
                w.sub_(SOFT_THRESHOLD).clamp_(min=0).masked_fill_(frozen, 0.0)
                if b is not None:
                    b.clamp_(min=0)
    return w.detach(), (b.detach() if b is not None else None)


def refit(
    model: PIPNet,
    train_data: Dataset | DataLoader,
    test_data: Dataset | DataLoader,
    disable: list[int],
    *,
    keep_zero: torch.Tensor | None = None,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> RefitResult:
    """Switch `disable` off (besides those already off) and re-fit the scoring sheet; `model` is unchanged.

    Args:
        model: the PIP-Net.
        train_data: the training images through the evaluation transform (`(x, label)`, e.g. the projection set).
        test_data: held-out `(x, label)` for the accuracies.
        disable: prototypes to switch off for every class.
        keep_zero: optional (C, P) bool of weights to hold at 0 (prototypes switched off for one class).
        epochs: passes over the cached training presences (see `fit_scoring_sheet`).
        lr: AdamW learning rate of the scoring sheet.
        batch_size: images per forward pass and presences per step.
        seed: seed of the shuffling.
        device: where to run the presence passes.
        progress: show progress bars.
    """
    started = time.perf_counter()
    edited = copy.deepcopy(model).cpu()
    edited.disable_prototypes(list(disable))
    train_p, train_y = presence_table(model, train_data, batch_size=batch_size, device=device, progress=progress)
    test_p, test_y = presence_table(model, test_data, batch_size=batch_size, device=device, progress=progress)
    old_mask, new_mask = model.prototype_mask.float().cpu(), edited.prototype_mask.float().cpu()
    weight = model.classifier.weight.detach().float().cpu()
    bias = model.classifier.bias.detach().float().cpu() if model.classifier.bias is not None else None
    if keep_zero is not None:
        weight = torch.where(keep_zero.bool().cpu(), 0.0, weight)
    new_w, new_b = fit_scoring_sheet(
        train_p, train_y, weight, new_mask, bias=bias, multiplier=float(model.classifier.multiplier),
        keep_zero=keep_zero.cpu() if keep_zero is not None else None, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    with torch.no_grad():
        edited.classifier.weight.copy_(new_w)
        if new_b is not None:
            edited.classifier.bias.copy_(new_b)
    return RefitResult(
        model=edited,
        disabled=list(edited.config.disabled_prototypes),
        accuracy_before=sheet_accuracy(test_p, test_y, model.classifier.weight.detach().float().cpu(), old_mask, bias),
        accuracy_switched_off=sheet_accuracy(test_p, test_y, weight, new_mask, bias),
        accuracy_refit=sheet_accuracy(test_p, test_y, new_w, new_mask, new_b),
        train_accuracy_refit=sheet_accuracy(train_p, train_y, new_w, new_mask, new_b),
        num_train=len(train_y),
        num_test=len(test_y),
        global_size=int(edited.used_prototypes().numel()),
        seconds=time.perf_counter() - started,
    )


def save_refit(
    result: RefitResult,
    directory: str | Path,
    *,
    source: str | Path,
    test_data: Dataset | DataLoader,
    data_description: str,
    records: list[dict[str, Any]],
    train_data: Dataset | None = None,
    config_path: str | Path | None = None,
    tpr: float = 0.95,
    batch_size: int = 64,
    device=None,
) -> Path:
    """Write a refit model to a NEW folder: the model, its data config, its detectors and the edit log.

    The scores change with the sheet, so the detectors are fitted again
    ([fit_detectors][pipnet.evaluation.detectors.fit_detectors]: `train_data` as the knn reference, the
    thresholds at `tpr` of `test_data`); without `train_data` the folder says it has none. The log
    starts with the source model's `edits.jsonl` and gets `records` appended.

    Args:
        result: what [`refit`][pipnet.train.refit.refit] returned.
        directory: the new folder (must not exist).
        source: the folder of the model that was refit.
        test_data: in-distribution images for the thresholds.
        data_description: what `test_data` is, for the detectors' files.
        records: edit-log records to append (e.g. the switch-offs, then the refit).
        train_data: the training images through the evaluation transform (the knn reference).
        config_path: a training config YAML to copy as `config.yaml` (so the data travels with the model).
        tpr: TPR of the thresholds.
        batch_size: images per forward pass.
        device: where to run.

    Raises:
        FileExistsError: `directory` exists.
    """
    from pipnet.evaluation.detectors import StoredDetectors, fit_detectors

    directory = Path(directory)
    with write_model_folder(directory) as tmp:  # all or nothing: a killed refit leaves no half folder
        result.model.save_pretrained(tmp)
        if config_path is not None:
            shutil.copyfile(config_path, RunFolder(tmp).config)
        if train_data is not None:
            fit_detectors(result.model, train_data, test_data, tpr=tpr, description=data_description,
                          batch_size=batch_size, device=device).save(tmp)
        else:
            StoredDetectors(note="saved without its training images, which the detectors need").save(tmp)
        append_edits(tmp, records, inherited_from=source)
    return directory


# ---- the edit log -----------------------------------------------------------------------------------------


def edit_record(action: str, *, prototypes: list[int], class_index: int | None = None, reason: str | None = None,
                tool: str = "pipnet", **extra: Any) -> dict[str, Any]:
    """One line of `edits.jsonl`: `time` (UTC), `user`, `tool`, `action`, `prototypes`, `class_index`, `reason`.

    Args:
        action: `switch_off`, `switch_on` or `refit`.
        prototypes: the prototypes concerned.
        class_index: the one class concerned, or None for every class.
        reason: why, in the editor's words (optional).
        tool: what made the edit (`pipnet refit`, `pipnet serve`, ...).
        **extra: more fields (a refit's accuracies, the source folder).
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        user = None
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "user": user,
        "tool": tool,
        "action": action,
        "prototypes": sorted(int(p) for p in prototypes),
        "class_index": class_index,
        "reason": reason or None,
        **extra,
    }


def read_edit_log(directory: str | Path) -> list[dict[str, Any]]:
    """Every record of `directory/edits.jsonl` in order ([] when there is none)."""
    path = RunFolder(directory).edit_log
    if not path.is_file():
        return []
    from pipnet.model import ModelLoadError

    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ModelLoadError(f"{path}, line {n}, is not JSON: {e}") from e
    return records


def class_edit_mask(directory: str | Path, num_classes: int, num_prototypes: int) -> torch.Tensor | None:
    """(C, P) bool of the weights the web page switched off for one class (its `edits.json`), or None."""
    from pipnet.model import ModelLoadError

    folder = RunFolder(directory)
    try:
        mask = torch.zeros(num_classes, num_prototypes, dtype=torch.bool)
        for e in folder.read_edits().get("class_edits", []):
            mask[int(e["class_index"]), int(e["prototype"])] = True
    except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
        raise ModelLoadError(f"{folder.edits} is not a valid record of edits: {e}") from e
    return mask if mask.any() else None


@dataclass(frozen=True)
class EditData:
    """The images an edit of a saved model re-fits on: its data config, the training images through the
    evaluation transform (the presences, and the knn detector's reference) and the test split."""

    config_path: Path
    train: Dataset
    test: Dataset
    description: str  # what the test split is, for the detectors' files


def edit_data(model_dir: str | Path, model: PIPNet, data: str | Path | None = None, *, purpose: str = "refit") -> EditData:
    """The data an edit of the model in `model_dir` needs: `data` (a run folder or training config YAML) or
    the model folder's own `config.yaml`.

    Raises:
        DataError: no data config there, or its data has no test split.
    """
    from pipnet.core.train_config import load_config
    from pipnet.data.errors import DataError
    from pipnet.evaluation.inference import build_model_data
    from pipnet.evaluation.thresholds import describe_data
    from pipnet.model.run_folder import config_file

    path = config_file(data or model_dir)
    if not path.is_file():
        raise DataError(f"no data config at {path}: the {purpose} needs the training images (give --data RUN_OR_CONFIG)")
    config = load_config(str(path)).data
    bundle = build_model_data(config, model)
    if bundle.test is None:
        raise DataError(f"the data of {path} has no test split for the accuracies and the detectors")
    return EditData(path, bundle.projection, bundle.test, describe_data(config.source, config.root, "test", len(bundle.test)))


def append_edits(directory: str | Path, records: list[dict[str, Any]], *, inherited_from: str | Path | None = None) -> Path:
    """Append records to `directory/edits.jsonl`, first copying the log of `inherited_from` if it is new."""
    path = RunFolder(directory).edit_log
    lines = []
    if inherited_from is not None and not path.exists():
        lines += [json.dumps(r) for r in read_edit_log(inherited_from)]
    lines += [json.dumps(r) for r in records]
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))
    return path
