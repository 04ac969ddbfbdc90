"""Repair a shortcut: forbid some prototypes' patches, remember the others', fine-tune, re-fit the scoring sheet.

A person who sees a prototype fire on the background, a ruler or a corner tag marks it *forbidden*; the
prototypes to keep are *remembered* (by default every other prototype the scoring sheet uses). The repair
(after ProtoPDebug, Bontempelli et al., ICLR 2023, adapted to PIP-Net's softmax maps) then:

1. runs the unrepaired model once over the training images and fixes two sets of latent cells: the
   *forbidden* cells Omega_F, where some forbidden prototype's presence reaches `forbid_threshold` (0.1, the
   presence that counts at inference), and the *remembered* pairs Omega_K, where a kept prototype k reached
   `remember_threshold` (0.5) on a cell that is not forbidden;
2. fine-tunes the add-on (and, unless `train_backbone` is off, the backbone; batch norm statistics stay
   fixed) on L = lambda_F L_F + lambda_R L_R, with
   L_F = -1/|Omega_F| sum_{(n,h,w) in Omega_F} log(1 - sum_{p in L} a_p(x_n)[h,w] + eps) over the *live*
   prototypes L (the forbidden and the remembered ones; when they are all the prototypes there are, the
   forbidden ones are left out of L and keep the forbidden patches, a quarantine), and
   L_R = -1/|Omega_K| sum_{(n,k,h,w) in Omega_K} log(a_k(x_n)[h,w] + eps)
   (`pipnet.model.losses.forbid_loss` / `remember_loss`);
3. switches the forbidden prototypes off and holds at weight 0 every other prototype that took over the
   forbidden cells (presence >= 0.1 on at least `sink_share` of them): the softmax has to put a patch's
   mass somewhere, and these *sinks* now carry the shortcut;
4. re-fits the scoring sheet on the fine-tuned presences ([`pipnet.train.refit.refit`][pipnet.train.refit.refit]).

`save_repair` writes the result all-or-nothing, re-sets the OoD thresholds and the `knn` detector
(whose distances change with the prototypes) and appends to the edit log. The cheaper repairs are
`refit` alone (switch off + re-fit) and `repair` with `train_backbone=False` (only the add-on moves).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipnet.evaluation.inference import eval_mode, inputs_of, make_loader
from pipnet.model import PRESENCE_THRESHOLD, PIPNet
from pipnet.model.losses import forbid_loss, remember_loss
from pipnet.model.run_folder import RunFolder, write_model_folder
from pipnet.train.refit import RefitResult, append_edits, refit

__all__ = ["RepairResult", "RepairSettings", "forbidden_cells", "prototype_maps_of", "repair", "save_repair"]


@dataclass(frozen=True)
class RepairSettings:
    """How a repair fine-tunes and re-fits.

    Args:
        epochs: passes over the training images while fine-tuning (0: no fine-tuning, only switch off + re-fit).
        batch_size: images per fine-tuning step and per forward pass.
        lr_backbone: AdamW learning rate of the backbone.
        lr_head: AdamW learning rate of the add-on.
        train_backbone: fine-tune the backbone too (False: only the add-on, the cheaper repair).
        forbid_weight: lambda_F.
        remember_weight: lambda_R.
        forbid_threshold: a cell is forbidden where a forbidden prototype's presence reaches this.
        remember_threshold: a kept prototype is remembered where its presence reaches this.
        similar: also forbid the cells whose backbone feature has at least this cosine similarity to the mean
            feature of some forbidden prototype's own patches (its presence >= 0.5); None: off.
        sink_share: a prototype present (>= 0.1) on at least this share of the forbidden cells after the
            fine-tuning is held at weight 0 by the re-fit.
        refit_epochs: passes of the scoring-sheet fit.
        refit_lr: its learning rate.
        seed: seed of the shuffling.
    """

    epochs: int = 4
    batch_size: int = 16
    lr_backbone: float = 1e-4
    lr_head: float = 2e-3
    train_backbone: bool = True
    forbid_weight: float = 1.0
    remember_weight: float = 1.0
    forbid_threshold: float = PRESENCE_THRESHOLD
    remember_threshold: float = 0.5
    similar: float | None = None
    sink_share: float = 0.1
    refit_epochs: int = 30
    refit_lr: float = 0.05
    seed: int = 0


@dataclass(frozen=True, eq=False)
class RepairResult:
    """A repaired model and what the repair did.

    Args:
        model: the new PIP-Net (the input model is unchanged).
        forbidden: the prototypes marked forbidden (now switched off).
        remembered: the prototypes kept.
        held_at_zero: other prototypes the re-fit kept at weight 0 because they took over the forbidden cells.
        refit: the scoring sheet's re-fit (its `accuracy_before` is the fine-tuned model with the old sheet).
        accuracy_original: top-1 test accuracy of the model as given.
        forbidden_cells: how many training-image cells were forbidden.
        remembered_pairs: how many (prototype, cell) pairs were remembered.
        forbidden_response: mean presence of the forbidden prototypes at the forbidden cells, (before, after).
        live_response: mean live mass (forbidden + kept + used prototypes) at the forbidden cells, (before, after).
        kept_response: mean presence of the kept prototypes at their remembered cells, (before, after).
        history: one dict per fine-tuning epoch (`loss`, `forbid`, `remember`).
        seconds_fine_tune: time of the fine-tuning.
        seconds: time of the whole repair.
        settings: the settings used.
    """

    model: PIPNet
    forbidden: list[int]
    remembered: list[int]
    held_at_zero: list[int]
    refit: RefitResult
    accuracy_original: float
    forbidden_cells: int
    remembered_pairs: int
    forbidden_response: tuple[float, float]
    live_response: tuple[float, float]
    kept_response: tuple[float, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_fine_tune: float = 0.0
    seconds: float = 0.0
    settings: RepairSettings = field(default_factory=RepairSettings)

    def summary(self) -> dict[str, Any]:
        """The numbers, for the edit log and the command's table."""
        return {
            "accuracy_original": self.accuracy_original,
            "accuracy_fine_tuned_old_sheet": self.refit.accuracy_before,
            "accuracy_repaired": self.refit.accuracy_refit,
            "train_accuracy_repaired": self.refit.train_accuracy_refit,
            "held_at_zero": self.held_at_zero,
            "forbidden_cells": self.forbidden_cells,
            "remembered_pairs": self.remembered_pairs,
            "forbidden_response": [round(v, 4) for v in self.forbidden_response],
            "live_response": [round(v, 4) for v in self.live_response],
            "kept_response": [round(v, 4) for v in self.kept_response],
            "global_size": self.refit.global_size,
            "seconds_fine_tune": round(self.seconds_fine_tune, 2),
            "seconds": round(self.seconds, 2),
        }


def _batch(data: Dataset, idx: torch.Tensor) -> torch.Tensor:
    """The inputs of images `idx` of `data` stacked: (B, 3, S, S)."""
    return torch.stack([data[int(i)][0] for i in idx])


def prototype_maps_of(model: PIPNet, images: torch.Tensor, *, batch_size: int = 64, device=None) -> torch.Tensor:
    """The softmax prototype maps of `images` (N, 3, S, S) -> (N, P, h, w), float32 on the CPU, switched-off
    prototypes included (raw maps, not masked)."""
    out = []
    with eval_mode(model, device) as dev:
        for x in images.split(batch_size):
            out.append(model.prototype_maps(model.forward_features(x.to(dev))).float().cpu())
    return torch.cat(out)


def forbidden_cells(maps: torch.Tensor, forbidden: list[int], threshold: float = PRESENCE_THRESHOLD) -> torch.Tensor:
    """(N, h, w) bool: the cells where some forbidden prototype's presence reaches `threshold` in `maps` (N, P, h, w)."""
    if not forbidden:
        return torch.zeros(maps.shape[0], *maps.shape[2:], dtype=torch.bool)
    return maps[:, forbidden].amax(dim=1) >= threshold


class _Responses:
    """Running sums over batches: the forbidden prototypes' mean presence and the live mass at the forbidden
    cells, the kept prototypes' mean presence at their remembered cells, and per prototype how many forbidden
    cells it is present (>= 0.1) at."""

    def __init__(self, num_prototypes: int) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64)
        self.counts = torch.zeros(2, dtype=torch.float64)
        self.present_at_forbidden = torch.zeros(num_prototypes, dtype=torch.float64)

    def add(self, maps: torch.Tensor, forbid: list[int], kept: list[int], live: torch.Tensor, omega_f: torch.Tensor,
            omega_k: torch.Tensor) -> None:
        if omega_f.any():
            self.sums[0] += float(maps[:, forbid].mean(dim=1)[omega_f].sum())
            self.sums[1] += float((maps * live[None, :, None, None]).sum(dim=1)[omega_f].sum())
            self.counts[0] += float(omega_f.sum())
            self.present_at_forbidden += (maps >= PRESENCE_THRESHOLD).permute(1, 0, 2, 3)[:, omega_f].sum(dim=1).double()
        if kept and omega_k.any():
            self.sums[2] += float(maps[:, kept][omega_k].sum())
            self.counts[1] += float(omega_k.sum())

    def means(self) -> tuple[float, float, float]:
        f, k = max(float(self.counts[0]), 1.0), max(float(self.counts[1]), 1.0)
        return float(self.sums[0]) / f, float(self.sums[1]) / f, float(self.sums[2]) / k

    def share_present(self) -> torch.Tensor:
        """(P,) the share of the forbidden cells each prototype is present at."""
        return self.present_at_forbidden / max(float(self.counts[0]), 1.0)


def _concepts(model: PIPNet, data: Dataset, batch_size: int, dev, forbid: list[int]) -> torch.Tensor:
    """(F, D) unit mean backbone feature of each forbidden prototype's own patches (presence >= 0.5)."""
    sums = None
    with eval_mode(model, dev) as device:
        for batch in make_loader(data, batch_size):
            z = model.forward_features(inputs_of(batch).to(device)).float()  # (B, D, h, w)
            maps = model.prototype_maps(z)[:, forbid] >= 0.5  # (B, F, h, w)
            zn = F.normalize(z, dim=1)
            part = torch.einsum("bfhw,bdhw->fd", maps.float(), zn).cpu()  # (F, D)
            sums = part if sums is None else sums + part
    return F.normalize(sums, dim=1)


def _scan(model: PIPNet, data: Dataset, batch_size: int, dev, forbid: list[int], kept: list[int], live: torch.Tensor,
          settings: RepairSettings, cells: tuple[torch.Tensor, torch.Tensor] | None = None):
    """One inference pass over `data`: the cells (computed here when `cells` is None) and the responses."""
    responses = _Responses(model.num_prototypes)
    omega_f, omega_k = [], []
    concepts = _concepts(model, data, batch_size, dev, forbid) if cells is None and settings.similar is not None else None
    start = 0
    with eval_mode(model, dev) as device:
        for batch in make_loader(data, batch_size):
            z = model.forward_features(inputs_of(batch).to(device))
            maps = model.prototype_maps(z).float().cpu()
            stop = start + len(maps)
            if cells is None:
                f = forbidden_cells(maps, forbid, settings.forbid_threshold)  # (B, h, w)
                if concepts is not None:  # patches like the forbidden prototypes' own
                    cos = torch.einsum("bdhw,fd->bfhw", F.normalize(z.float(), dim=1).cpu(), concepts)
                    f |= cos.amax(dim=1) >= settings.similar
                k = (maps[:, kept] >= settings.remember_threshold) & ~f[:, None]  # (B, K, h, w)
                omega_f.append(f)
                omega_k.append(k)
            else:
                f, k = cells[0][start:stop], cells[1][start:stop]
            responses.add(maps, forbid, kept, live.float(), f, k)
            start = stop
    if cells is None:
        cells = (torch.cat(omega_f), torch.cat(omega_k))
    return cells, responses


def _trainable(model: PIPNet, settings: RepairSettings) -> list[dict[str, Any]]:
    head = [p for p in model.add_on.parameters()]
    groups = [{"params": head, "lr": settings.lr_head}] if head else []
    if settings.train_backbone:
        groups.append({"params": list(model.backbone.parameters()), "lr": settings.lr_backbone})
    if not groups:
        raise ValueError("a repair without the backbone needs an add-on layer (num_features > 0) to fine-tune")
    return groups


def repair(
    model: PIPNet,
    train_data: Dataset,
    test_data: Dataset | DataLoader,
    forbid: list[int],
    remember: list[int] | None = None,
    *,
    settings: RepairSettings = RepairSettings(),
    keep_zero: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> RepairResult:
    """Fine-tune `model` so no live prototype responds to the forbidden patches, then re-fit its scoring sheet.

    `model` is not changed. See the module docstring for the losses and the steps.

    Args:
        model: the PIP-Net.
        train_data: the training images through the evaluation transform (`(x, label)`, indexable: the
            fine-tuning draws shuffled batches of it). Only boolean cell masks are kept per image
            (N x h x w and N x K x h x w), never the images or their maps.
        test_data: held-out `(x, label)` for the accuracies.
        forbid: the forbidden prototypes (switched off in the result).
        remember: the prototypes to keep; None: every used prototype that is not forbidden.
        settings: epochs, learning rates, weights and thresholds.
        keep_zero: optional (C, P) bool of weights the re-fit must hold at 0 besides (per-class switch-offs).
        device: where to run.
        progress: show progress bars.

    Returns:
        A [RepairResult][pipnet.train.repair.RepairResult].

    Raises:
        ValueError: an empty `forbid`, a prototype out of range or both forbidden and remembered.

    Examples:
        >>> result = repair(model, data.projection, data.test, forbid=[3, 17])  # doctest: +SKIP
        >>> result.refit.accuracy_refit, result.forbidden_response  # doctest: +SKIP
    """
    started = time.perf_counter()
    forbid = sorted({int(p) for p in forbid})
    if not forbid:
        raise ValueError("a repair needs at least one forbidden prototype")
    used = [int(p) for p in model.used_prototypes().tolist()]
    kept = sorted({int(p) for p in (remember if remember is not None else used)} - set(forbid))
    bad = [p for p in forbid + kept if not 0 <= p < model.num_prototypes]
    if bad:
        raise ValueError(f"the model has prototypes 0..{model.num_prototypes - 1}; no prototype {bad[0]}")
    if remember is not None and set(remember) & set(forbid):
        raise ValueError(f"prototypes both forbidden and remembered: {sorted(set(remember) & set(forbid))}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    live = torch.zeros(model.num_prototypes, dtype=torch.bool)
    live[forbid + kept] = True
    if live.all():  # no free prototype to take the forbidden patches: the forbidden ones keep them (quarantine)
        live[forbid] = False
    (omega_f, omega_k), responses = _scan(model, train_data, settings.batch_size, dev, forbid, kept, live, settings)
    before = responses.means()

    tuned = copy.deepcopy(model).to(dev)
    tuned.eval()  # batch norm statistics and dropout stay as trained; gradients still flow
    for p in tuned.parameters():
        p.requires_grad_(False)
    groups = _trainable(tuned, settings)
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    history: list[dict[str, float]] = []
    tune_started = time.perf_counter()
    if settings.epochs > 0:
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        generator = torch.Generator().manual_seed(settings.seed)
        kept_t, live_d = torch.tensor(kept, dtype=torch.long, device=dev), live.to(dev)
        for _ in tqdm(range(settings.epochs), desc="repair", disable=not progress, leave=False):
            sums = torch.zeros(3, device=dev)  # loss, forbid, remember: summed on the device, read once per epoch
            steps = 0
            for idx in torch.randperm(len(omega_f), generator=generator).split(settings.batch_size):
                if not omega_f[idx].any() and not omega_k[idx].any():
                    continue  # nothing to forbid or remember in these images
                maps = tuned.prototype_maps(tuned.forward_features(_batch(train_data, idx).to(dev)))  # (B, P, h, w)
                l_f = forbid_loss(maps, omega_f[idx].to(dev), live_d)
                l_r = remember_loss(maps, kept_t, omega_k[idx].to(dev)) if kept else maps.sum() * 0.0
                loss = settings.forbid_weight * l_f + settings.remember_weight * l_r
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums += torch.stack([v.detach().float() for v in (loss, l_f, l_r)])
                steps += 1
            means = (sums / max(steps, 1)).tolist()
            history.append(dict(zip(("loss", "forbid", "remember"), means)))
    seconds_fine_tune = time.perf_counter() - tune_started
    for p in tuned.parameters():
        p.requires_grad_(False)
    tuned = tuned.cpu()

    _, responses = _scan(tuned, train_data, settings.batch_size, dev, forbid, kept, live, settings, (omega_f, omega_k))
    after = responses.means()
    share = responses.share_present()
    sinks = [p for p in range(model.num_prototypes)
             if p not in forbid and p not in kept and float(share[p]) >= settings.sink_share]
    hold = torch.zeros(model.num_classes, model.num_prototypes, dtype=torch.bool)
    hold[:, sinks] = True
    if keep_zero is not None:
        hold |= keep_zero.bool().cpu()
    fitted = refit(tuned, train_data, test_data, forbid, keep_zero=hold, epochs=settings.refit_epochs, lr=settings.refit_lr,
                   batch_size=settings.batch_size, seed=settings.seed, device=dev)
    from pipnet.train.refit import presence_table, sheet_accuracy

    test_p, test_y = presence_table(model, test_data, batch_size=settings.batch_size, device=dev)
    bias = model.classifier.bias.detach().float().cpu() if model.classifier.bias is not None else None
    accuracy_original = sheet_accuracy(test_p, test_y, model.classifier.weight.detach().float().cpu(),
                                       model.prototype_mask.float().cpu(), bias)
    return RepairResult(
        model=fitted.model, forbidden=forbid, remembered=kept, held_at_zero=sinks, refit=fitted,
        accuracy_original=accuracy_original, forbidden_cells=int(omega_f.sum()), remembered_pairs=int(omega_k.sum()),
        forbidden_response=(before[0], after[0]), live_response=(before[1], after[1]), kept_response=(before[2], after[2]),
        history=history, seconds_fine_tune=seconds_fine_tune, seconds=time.perf_counter() - started, settings=settings,
    )  # fmt: skip


def repair_records(result: RepairResult, *, source: str, reason: str | None = None, tool: str = "pipnet repair") -> list[dict[str, Any]]:
    """The edit-log lines of a repair: `forbid` (with the kept prototypes, the settings and the numbers) and `refit`."""
    from pipnet.train.refit import edit_record

    return [
        edit_record("forbid", prototypes=result.forbidden, reason=reason, tool=tool, source=source,
                    remembered=result.remembered, settings=asdict(result.settings), **result.summary()),
        edit_record("refit", prototypes=result.refit.disabled, reason=reason, tool=tool, source=source,
                    **result.refit.summary()),
    ]  # fmt: skip


def save_repair(
    result: RepairResult,
    directory: str | Path,
    *,
    source: str | Path,
    train_data: Dataset,
    test_data: Dataset,
    data_description: str,
    records: list[dict[str, Any]],
    config_path: str | Path | None = None,
    tpr: float = 0.95,
    batch_size: int = 64,
    device=None,
) -> Path:
    """Write a repaired model to a NEW folder, all or nothing: the model, its data config, its detectors fitted
    again ([fit_detectors][pipnet.evaluation.detectors.fit_detectors]: the prototypes moved; the knn detector
    keeps the source's `k` where it had one) and the edit log with `records` appended.

    Raises:
        FileExistsError: `directory` exists.
    """
    import shutil

    from pipnet.evaluation.detectors import fit_detectors
    from pipnet.evaluation.novelty import load_knn_detector

    directory = Path(directory)
    old = load_knn_detector(source, None)
    with write_model_folder(directory) as tmp:
        result.model.save_pretrained(tmp)
        if config_path is not None:
            shutil.copyfile(config_path, RunFolder(tmp).config)
        fit_detectors(result.model, train_data, test_data, tpr=tpr, k=old.k if old is not None else 5,
                      description=data_description, batch_size=batch_size, device=device).save(tmp)
        append_edits(tmp, records, inherited_from=source)
    return directory
