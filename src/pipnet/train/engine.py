"""The training loop of PIP-Net (spec section 4; supplementary Algorithm 1).

One loop reads the schedule declared in :mod:`pipnet.train.phases`: for every epoch it sets which
parameter groups train, builds the stage's optimisers when a stage starts, runs the steps, evaluates,
logs a CSV row and writes a resumable checkpoint. After the last epoch, prototypes never present on the
projection set are pruned and the model is saved as ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipnet import losses
from pipnet.data import DataBundle, build_data
from pipnet.data.build import resolve_source
from pipnet.data.errors import DataError, ImageLoadError
from pipnet.diagnostics import diagnose
from pipnet.evaluate import Metrics, evaluate
from pipnet.metrics import global_explanation_size, sparsity_ratio
from pipnet.model import PIPNet, create_model, load_state_dict_checked
from pipnet.projection import project, prune_everywhere_prototypes, prune_unused_prototypes
from pipnet.train.checkpoint import load_checkpoint, save_checkpoint
from pipnet.train.config import TrainConfig
from pipnet.train.distributed import (
    DistInfo,
    GlobalBatchSampler,
    all_reduce_sum,
    class_balanced_weights,
    gather_presence,
    init_distributed,
)
from pipnet.train.init import PRETRAINED_DIR, load_init_model
from pipnet.train.optim import SPARSIFIERS, StageOptim, make_stage_optim, set_trainable
from pipnet.train.phases import EpochPlan, plan_epochs
from pipnet.train.prefetch import prefetch
from pipnet.train.protocol import (
    apply_soft_threshold_steps,
    classifier_schedule_epoch,
    count_test_batches,
    steps_after_epoch,
    steps_before_epoch,
)
from pipnet.train.run_dir import RunDir
from pipnet.utils import default_device

__all__ = ["train", "TrainResult", "NonFiniteLossError", "run_epoch", "training_step_losses"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss part became NaN or Inf."""


_STOPPED = "training stopped; the checkpoint of the last completed epoch, if any, is kept"


@dataclass
class TrainResult:
    run_dir: Path
    model: PIPNet
    metrics: Metrics | None
    data: DataBundle
    history: list[dict[str, Any]] = field(default_factory=list)


# ---- one step's losses ---------------------------------------------------------------------------


def training_step_losses(
    out: Any, labels: torch.Tensor, plan: EpochPlan, multiplier: torch.Tensor, info: DistInfo = DistInfo()
) -> dict[str, torch.Tensor]:
    """The loss and its parts for one batch of two views stacked as (2B, ...).

    Returns a dict with ``loss`` (the weighted sum) and the parts that have a non-zero weight.
    """
    maps1, maps2 = out.maps.float().chunk(2)  # (B, P, h, w) each
    p1, p2 = out.presence.float().chunk(2)  # (B, P) each
    parts: dict[str, torch.Tensor] = {}
    if plan.align:
        parts["align"] = losses.alignment_loss(maps1, maps2)
    if plan.tanh:
        parts["tanh"] = (losses.tanh_loss(gather_presence(p1, info)) + losses.tanh_loss(gather_presence(p2, info))) / 2
    if plan.classification:
        parts["classification"] = losses.classification_loss(out.scores.float(), labels.repeat(2), multiplier)
    weights = plan.loss_weights
    loss = sum(weights[k] * v for k, v in parts.items())
    return {"loss": loss, **parts}


# ---- the loop -------------------------------------------------------------------------------------


def seed_epoch(seed: int, epoch_index: int) -> torch.Generator:
    """Seed every random source from (seed, epoch): a resumed run draws the same numbers."""
    s = seed * 1_000_003 + epoch_index
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def uses_channels_last(config: TrainConfig) -> bool:
    """``runtime.channels_last``, with ``auto`` = on for ResNet backbones (where it measured faster)."""
    setting = config.runtime.channels_last
    if setting == "auto":
        return config.model.backbone.removeprefix("timm/").startswith("resnet")
    return bool(setting)


def _resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        device = default_device()
    else:
        device = torch.device(name)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    return device


class _Progress:
    """A tqdm bar on the main process only; postfix refreshed every ``every`` steps (each refresh syncs)."""

    def __init__(self, total: int, desc: str, enabled: bool, every: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)
        self.every = max(1, every)

    def update(self, step: int, sums: dict[str, torch.Tensor], count: int) -> None:
        self.bar.update(1)
        if not self.bar.disable and (step + 1) % self.every == 0:
            self.bar.set_postfix({k: f"{float(v) / max(count, 1):.3f}" for k, v in sums.items()})

    def close(self) -> None:
        self.bar.close()


_WORKER_ERROR = re.compile(r"Caught (ImageLoadError|DataError) in DataLoader worker process \d+")
_SKIP_HINT = "(data.bad_images: skip leaves unreadable images out)"


def _batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches; an image that cannot be read stops training with one line naming the file.

    PyTorch re-raises an exception from a worker process with the worker's whole traceback as its
    message (as a RuntimeError when, like ``ImageLoadError``, its type cannot be rebuilt from one
    string); the traceback's last line is the original message.
    """
    try:
        yield from loader
    except ImageLoadError as e:
        raise DataError(f"{e} {_SKIP_HINT}") from e
    except Exception as e:
        if not _WORKER_ERROR.match(str(e)):
            raise
        original = str(e).rstrip().splitlines()[-1].split(": ", 1)[-1]
        raise DataError(f"{original} {_SKIP_HINT}") from None


class _NonFiniteGuard:
    """Finds the first step whose loss is NaN or Inf without a host sync per step.

    ``record`` keeps, on the device, the first bad step and which loss parts were bad there;
    ``raise_if_bad`` (one sync) stops training with a message naming them. Steps after the bad one may
    already have run when it is seen; they are thrown away with the run, whose last checkpoint stays.
    """

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_parts: torch.Tensor | None = None
        self.names: list[str] = []

    def record(self, step: int, parts: dict[str, torch.Tensor]) -> None:
        if self.bad_parts is None:
            self.names = list(parts)
            self.bad_parts = torch.zeros(len(parts), dtype=torch.bool, device=self.first.device)
        bad = ~torch.isfinite(torch.stack([v.detach().float() for v in parts.values()]))
        new = (self.first < 0) & bad.any()
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)
        self.bad_parts = torch.where(new, bad, self.bad_parts)

    def raise_if_bad(self, plan: EpochPlan) -> None:
        step = int(self.first)
        if step < 0:
            return
        flags = self.bad_parts.tolist() if self.bad_parts is not None else []
        bad = [k for k, f in zip(self.names, flags) if f and k != "loss"] or ["loss"]
        message = f"non-finite loss at {plan.stage} epoch {plan.epoch} step {step + 1}: part(s) {bad}"
        raise NonFiniteLossError(f"{message}; {_STOPPED} (runtime.on_nonfinite: skip would skip such batches)")


def run_epoch(
    model: nn.Module,
    core: PIPNet,
    loader: DataLoader,
    plan: EpochPlan,
    optim: StageOptim,
    config: TrainConfig,
    device: torch.device,
    info: DistInfo,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, float]:
    """Train for one epoch; returns the epoch means of the loss parts and the train accuracy."""
    model.train()
    rt = config.runtime
    sparsify = SPARSIFIERS[config.optim.sparsify]
    net_trains = bool(plan.trains & {"to_train", "to_freeze", "backbone", "add_on"}) and optim.net is not None
    classifier_trains = "classifier" in plan.trains
    iters = len(loader)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    seen = skipped = images = 0
    skip = rt.on_nonfinite == "skip"
    channels_last = uses_channels_last(config)
    progress = _Progress(iters, f"{plan.name} {plan.stage} epoch {plan.epoch}", rt.progress and info.is_main, rt.log_every)
    guard = _NonFiniteGuard(device)
    for step, (x1, x2, y) in enumerate(prefetch(_batches(loader), rt.prefetch)):
        x = torch.cat([x1, x2]).to(device, non_blocking=True)  # (2B, 3, S, S)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # A skipped batch must not leave its NaNs in BatchNorm's running statistics.
        buffers = [b.detach().clone() for b in core.buffers()] if skip else []
        with _autocast(device, rt.precision):
            out = model(x)
        parts = training_step_losses(out, y, plan, core.classifier.multiplier, info)
        if not skip:
            # Record the first non-finite step on the device (no host sync); looked at every log_every steps.
            guard.record(step, parts)
            if (step + 1) % rt.log_every == 0:  # and once more after the last step
                guard.raise_if_bad(plan)
        elif not torch.isfinite(parts["loss"]):  # skipping needs the answer now: one sync per step
            bad = [k for k, v in parts.items() if k != "loss" and not torch.isfinite(v)]
            message = f"non-finite loss at {plan.stage} epoch {plan.epoch} step {step + 1}: part(s) {bad or ['loss']}"
            with torch.no_grad():
                for b, saved in zip(core.buffers(), buffers, strict=True):
                    b.copy_(saved)
            skipped += 1
            log.warning("%s; batch skipped", message)
            continue
        for opt in (optim.net, optim.classifier):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        (scaler.scale(parts["loss"]) if scaler else parts["loss"]).backward()
        for opt, trains in ((optim.net, net_trains), (optim.classifier, classifier_trains)):
            if trains:
                if scaler:
                    scaler.step(opt)
                else:
                    opt.step()
        if scaler:
            scaler.update()
        if net_trains and optim.net_schedule is not None:
            optim.net_schedule.step()
        if plan.stage == "classify":
            if optim.classifier_schedule is not None:
                optim.classifier_schedule.step(classifier_schedule_epoch(plan.epoch, step, iters, config.protocol))
            sparsify(core.classifier, optim.decrement)
        for k, v in parts.items():
            sums[k] = sums.get(k, torch.zeros((), device=device)) + v.detach()
        correct += (out.scores.detach().argmax(dim=1) == y.repeat(2)).sum()
        seen += 1
        images += len(y)
        progress.update(step, sums, seen)
    progress.close()
    guard.raise_if_bad(plan)
    if skipped and not seen:
        raise NonFiniteLossError(f"every batch of {plan.stage} epoch {plan.epoch} had a non-finite loss; {_STOPPED}")
    counts = torch.tensor([float(images), float(seen)], device=device)
    totals = all_reduce_sum(torch.cat([torch.stack([*sums.values(), correct]), counts]), info)
    steps = max(float(totals[-1]), 1.0)  # summed over processes, like the loss sums
    row = {k: float(v) / steps for k, v in zip(sums, totals[: len(sums)])}
    # Both views of every image count.
    row["train_accuracy"] = float(totals[-3]) / max(1.0, 2 * float(totals[-2])) if plan.stage == "classify" else math.nan
    row["steps"] = seen  # optimizer steps of this process (every process takes the same number)
    return row


def _loader(dataset, batch_size: int, config: TrainConfig, generator: torch.Generator, info: DistInfo, device):
    """The epoch's loader: the same global batches for any number of processes (each takes its slice)."""
    rt = config.runtime
    weights = None
    if config.data.balanced:  # spec 10.6: draws with replacement, each image weighted 1 / (its class's size)
        if not hasattr(dataset, "targets"):
            raise DataError("data.balanced needs a data set that knows its labels (targets)")
        weights = class_balanced_weights(dataset.targets)
    sampler = GlobalBatchSampler(len(dataset), batch_size, generator, info.rank, info.world_size, weights)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=rt.num_workers,
        generator=generator,
        worker_init_fn=_worker_init,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _build_model(config: TrainConfig, num_classes: int, classes: list[str], pretrained: bool | str) -> PIPNet:
    m = config.model
    return create_model(
        m.backbone,
        num_classes,
        pretrained=pretrained,
        num_features=m.num_features,
        bias=m.bias,
        image_size=config.data.image_size,
        class_names=list(classes),
        **m.backbone_kwargs,
    )


def train(config: TrainConfig, data: DataBundle | None = None) -> TrainResult:
    """Train a PIP-Net as the config says, writing everything to a run folder.

    Args:
        config: the run's configuration (``config.resume`` continues an earlier run from its folder).
        data: optional pre-built data (otherwise built from ``config.data``).
    """
    rt = config.runtime
    info = init_distributed("cuda" if rt.device.startswith("cuda") or (rt.device == "auto" and torch.cuda.is_available()) else "cpu")
    resuming = bool(config.resume)
    if resuming:
        run = RunDir.resume(config.resume)
        config = run.config  # the resumed run's own settings (its ``resume`` field is cleared)
        rt = config.runtime
    seed_epoch(rt.seed, 0)
    if data is None:
        config.data.source = resolve_source(config.data)  # config.yaml records the detected source
    data = data if data is not None else build_data(config.data, config.protocol)  # bad data fails before a folder is made
    initial = None
    if config.model.init and not resuming:
        initial = load_init_model(config.model.init, backbone=config.model.backbone, image_size=config.data.image_size,
                                  num_classes=len(data.classes), class_names=data.classes)
        _describe_model(config, initial)  # config.yaml describes the architecture that was loaded
    if not resuming:
        run = RunDir.create(config.out, config, main=info.is_main)
    if rt.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = _resolve_device(rt.device, info)
    checkpoint = load_checkpoint(run.checkpoint_path) if resuming else None
    if initial is not None:
        model = initial
    else:
        pretrained = False if (checkpoint or config.model.init) else config.model.pretrained
        model = _build_model(config, len(data.classes), data.classes, pretrained)
    if checkpoint:
        load_state_dict_checked(model, checkpoint["model"], source=str(run.checkpoint_path))
    model.to(device)
    if uses_channels_last(config):
        model.to(memory_format=torch.channels_last)
    plans = plan_epochs(config.schedule, pretrained_pipnet=bool(config.model.init))
    start = int(checkpoint["epochs_done"]) if checkpoint else 0
    history = run.read_history()[:start]
    scaler = torch.amp.GradScaler(device.type) if rt.precision == "fp16" else None
    optim: StageOptim | None = None
    stage = None
    log.info("run folder %s: %d epochs (%d done), device %s, %s", run.path, len(plans), start, device, rt.precision)
    writer = _tensorboard(run.path) if rt.tensorboard and info.is_main else None
    for index in range(start, len(plans)):
        plan = plans[index]
        generator = seed_epoch(rt.seed, index + 1)
        dataset = data.pretrain if plan.stage == "pretrain" else data.train
        batch = config.schedule.batch_size_pretrain if plan.stage == "pretrain" else config.schedule.batch_size
        if hasattr(dataset, "set_seed"):  # per-image augmentation seeds (see TwoViewDataset.set_seed)
            dataset.set_seed(generator.initial_seed())
        loader = _loader(dataset, batch, config, generator, info, device)
        if plan.stage != stage:
            optim = make_stage_optim(model, plan.stage, config, len(loader))
            if checkpoint and checkpoint["stage"] == plan.stage and index == start:
                optim.load_state_dict(checkpoint["optim"])
                if scaler and checkpoint.get("scaler"):
                    scaler.load_state_dict(checkpoint["scaler"])
            stage = plan.stage
        set_trainable(model, plan)
        wrapped = _wrap(model, info, rt.compile, device)
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": index + 1, "stage": plan.stage, "stage_epoch": plan.epoch, "phase": plan.name}
        extra_before, extra_after = _paper_extra_steps(config, plan, data)
        apply_soft_threshold_steps(model.classifier, extra_before, _decrement_per_step(config, optim))
        row.update(run_epoch(wrapped, model, loader, plan, optim, config, device, info, scaler))
        apply_soft_threshold_steps(model.classifier, extra_after, _decrement_per_step(config, optim))
        row.update(_sparsify_counts(history, config, plan, row["steps"], extra_before + extra_after, optim))
        row.update(_lrs(optim))
        row.update(_scoring_sheet_stats(model))
        every = config.schedule.eval_every
        if plan.stage == "classify" and data.test is not None and every and (plan.epoch % every == 0 or index == len(plans) - 1):
            m = evaluate(model, data.test, batch_size=batch, device=device, protocol=config.protocol)
            row.update(test_accuracy=m.top1_accuracy, local_size=m.local_size, abstained=m.abstained)
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        if info.is_main:
            run.append_history(history)
            if writer is not None:
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key not in ("epoch", "stage_epoch") and not math.isnan(value):
                        writer.add_scalar(f"{plan.stage}/{key}", value, index + 1)
                writer.flush()
            save_checkpoint(
                run.checkpoint_path,
                {"epochs_done": index + 1, "stage": plan.stage, "model": model.state_dict(), "optim": optim.state_dict(),
                 "scaler": scaler.state_dict() if scaler else None},
            )
            log.info("epoch %d/%d %s: %s", index + 1, len(plans), plan.name, _short(row))
            if plan.stage == "pretrain" and (index + 1 == len(plans) or plans[index + 1].stage != "pretrain"):
                model.save_pretrained(run.path / PRETRAINED_DIR)  # "pretrain once, classify many times"
                log.info("end-of-pretraining model saved in %s", run.path / PRETRAINED_DIR)
    return _finish(run, model, data, config, device, info, history, optim)


def _finish(
    run: RunDir, model: PIPNet, data: DataBundle, config: TrainConfig, device, info: DistInfo, history, optim: StageOptim | None
) -> TrainResult:
    """Prune never-present prototypes, save the model, evaluate on held-out data, write metrics.json."""
    batch = config.schedule.batch_size
    projection = project(model, data.projection, k=10, batch_size=batch, device=device, progress=config.runtime.progress and info.is_main)
    pruned = prune_unused_prototypes(model, projection, threshold=config.optim.prune_threshold)
    log.info("pruned %d prototypes never present above %.2f on the projection set", len(pruned), config.optim.prune_threshold)
    if config.optim.prune_everywhere:
        everywhere = prune_everywhere_prototypes(model, projection, torch.as_tensor(data.projection.targets))
        log.info("pruned %d prototypes present on >= 90%% of the images of every class (--optim.prune_everywhere): %s",
                 len(everywhere), everywhere)
    if config.protocol == "paper" and data.test is not None:  # the published final evaluation's steps (spec 10.1)
        steps = count_test_batches(len(data.test), batch)
        apply_soft_threshold_steps(model.classifier, steps, _decrement_per_step(config, optim))
        log.info("paper protocol: %d soft-threshold steps after the final pruning (one per test batch)", steps)
    metrics = None
    if info.is_main:
        model.save_pretrained(run.path)
        if data.test is not None:
            purity = {}
            if data.num_parts > 0:
                purity = {"train": data.projection, "test": data.test_projection or data.test}
            metrics = evaluate(model, data.test, ood=data.ood or None, purity_sets=purity or None, batch_size=batch, device=device,
                               progress=config.runtime.progress, mask_sets=data.mask_sets() or None,
                               train_set=data.projection, protocol=config.protocol)
            run.write_metrics(metrics)
            _save_thresholds(run.path, model, data, config, device)
        for finding in diagnose(history, config, metrics, num_train_images=len(data.train)):
            (log.warning if finding.level == "warning" else log.info)("diagnostics: %s", finding.message)
        run.write_plot(history)
    return TrainResult(run.path, model, metrics, data, history)


def _save_thresholds(directory: Path, model: PIPNet, data: DataBundle, config: TrainConfig, device) -> None:
    """Store the per-class OoD thresholds (95% TPR on the test data) beside the model, for ``pipnet predict``."""
    from pipnet.thresholds import describe_data, fit_thresholds

    description = describe_data(config.data.source, config.data.root, "test", len(data.test))
    fit_thresholds(model, data.test, batch_size=config.schedule.batch_size, device=device, description=description).save(directory)
def _describe_model(config: TrainConfig, model: PIPNet) -> None:
    """Copy a loaded model's architecture into ``config.model`` (a resumed run rebuilds it from there)."""
    m = model.config
    config.model.backbone, config.model.num_features, config.model.bias = m.backbone, m.num_features, m.bias
    config.model.backbone_kwargs = dict(m.backbone_kwargs)


def _decrement_per_step(config: TrainConfig, optim: StageOptim | None) -> float:
    """What one soft-threshold step of the classification phase subtracts from every classifier weight
    (``optim.sparsify_threshold``, or its share of ``optim.soft_threshold_total``)."""
    return optim.decrement if optim is not None and optim.classifier_schedule is not None else config.optim.sparsify_threshold


def _paper_extra_steps(config: TrainConfig, plan: EpochPlan, data: DataBundle) -> tuple[int, int]:
    """Soft-threshold steps the ``paper`` protocol adds before and after this epoch (spec section 10.1)."""
    if config.protocol != "paper":
        return 0, 0
    num_test = len(data.test) if data.test is not None else 0
    return steps_before_epoch(plan, config.schedule.epochs), steps_after_epoch(plan, num_test, config.schedule.batch_size)


def _sparsify_counts(
    history: list[dict[str, Any]], config: TrainConfig, plan: EpochPlan, steps: int, extra: int, optim: StageOptim
) -> dict[str, Any]:
    """Cumulative ``sparsify_steps`` and ``decrement_total`` of the run after this epoch.

    Training steps of the classification phase sparsify once each (soft or hard threshold); the
    ``paper`` protocol's extra steps are soft thresholds. ``decrement_total`` sums what the soft-threshold
    steps subtracted from every weight (a hard threshold subtracts nothing).
    """
    previous = history[-1] if history else {}
    train_steps = steps if plan.stage == "classify" else 0
    soft_steps = (train_steps if config.optim.sparsify == "soft_threshold" else 0) + extra
    return {
        "sparsify_steps": int(previous.get("sparsify_steps", 0)) + train_steps + extra,
        "decrement_total": float(previous.get("decrement_total", 0.0)) + soft_steps * _decrement_per_step(config, optim),
    }


def _tensorboard(path: Path):
    """A TensorBoard writer logging to RUN/tensorboard (needs the ``tensorboard`` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise FileNotFoundError("--runtime.tensorboard needs TensorBoard: pip install 'pipnet[tensorboard]'") from e
    return SummaryWriter(log_dir=str(path / "tensorboard"))


def _wrap(model: PIPNet, info: DistInfo, compile_model: bool, device: torch.device) -> nn.Module:
    """DDP around the model (rebuilt per epoch, since the set of trained parameters changes), then compile."""
    wrapped: nn.Module = model
    if info.enabled and any(p.requires_grad for p in model.parameters()):
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=True
        )
    if compile_model:
        wrapped = torch.compile(wrapped)
    return wrapped


def _lrs(optim: StageOptim) -> dict[str, float]:
    out = {}
    for opt in (optim.net, optim.classifier):
        if opt is not None:
            for g in opt.param_groups:
                out[f"lr_{g['name']}"] = g["lr"]
    return out


@torch.no_grad()
def _scoring_sheet_stats(model: PIPNet) -> dict[str, float]:
    w = model.classifier_weights()
    return {"sparsity_ratio": float(sparsity_ratio(w)), "global_size": int(global_explanation_size(w))}


def _short(row: dict[str, Any]) -> str:
    keys = ("loss", "align", "tanh", "classification", "train_accuracy", "test_accuracy", "sparsity_ratio", "seconds")
    return ", ".join(f"{k}={row[k]:.4g}" for k in keys if k in row and isinstance(row[k], float) and not math.isnan(row[k]))

