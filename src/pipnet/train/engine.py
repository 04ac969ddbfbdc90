"""The training loop of PIP-Net (paper supplementary Sec. 1.1 and Algorithm 1).

One loop reads the schedule declared in `pipnet.train.phases`: for every epoch it takes the plan's
data and batch size, sets which parameter groups train, builds the stage's optimisers when a stage
starts, runs `train_step` on every batch, evaluates when the plan says so,
logs a CSV row and writes a resumable checkpoint. After the last epoch, prototypes never present on the
projection set are pruned and the model is saved as `model.safetensors` + `config.json`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from pipnet.model.backbones import backbone_normalization
from pipnet.data import DataBundle, build_data
from pipnet.data.build import resolve_source
from pipnet.train.diagnostics import diagnose
from pipnet.evaluation.evaluate import Metrics, evaluate
from pipnet.evaluation.inference import choose_device
from pipnet.evaluation.metrics import global_explanation_size, sparsity_ratio
from pipnet.model import PIPNet, create_model, load_state_dict_checked
from pipnet.model.run_folder import write_model_folder
from pipnet.core.precision import inference_precision, resolve_precision
from pipnet.evaluation.projection import project, prune_everywhere_prototypes, prune_unused_prototypes
from pipnet.train.batches import Progress, batches, epoch_loader, seed_epoch
from pipnet.train.checkpoint import load_checkpoint, save_checkpoint
from pipnet.core.train_config import RESUME_RUNTIME, TrainConfig
from pipnet.train.distributed import DistInfo, all_reduce_sum, init_distributed
from pipnet.train.feature_bank import BankedTraining, check_schedule
from pipnet.train.init import load_init_model
from pipnet.train.optim import SPARSIFIERS, StageOptim, make_stage_optim, set_trainable
from pipnet.train.phases import EpochPlan, plan_epochs
from pipnet.train.prefetch import prefetch
from pipnet.train.protocol import (
    apply_soft_threshold_steps,
    classifier_schedule_epoch,
    count_test_batches,
    decrement_per_step,
    paper_extra_steps,
    sparsify_counts,
)
from pipnet.train.training_run import TrainingRun
from pipnet.train.step import STOPPED, NonFiniteGuard, NonFiniteLossError, train_step, training_step_losses
from pipnet.core.utils import MissingExtraError

__all__ = ["train", "TrainResult", "NonFiniteLossError", "run_epoch", "training_step_losses", "uses_channels_last"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    model: PIPNet
    metrics: Metrics | None
    data: DataBundle
    history: list[dict[str, Any]] = field(default_factory=list)


def uses_channels_last(config: TrainConfig) -> bool:
    """`runtime.channels_last`, with `auto` = on for ResNet backbones (where it measured faster)."""
    setting = config.runtime.channels_last
    if setting == "auto":
        return config.model.backbone.removeprefix("timm/").startswith("resnet")
    return bool(setting)


def _resolve_device(name: str, info: DistInfo) -> torch.device:
    """`--runtime.device` ([`pipnet.evaluation.inference.choose_device`][pipnet.evaluation.inference.choose_device]), on this process's own GPU under DDP."""
    device = choose_device(name)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    return device


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
    """Train for one epoch (one `train_step` per batch); returns the epoch means
    of the loss parts, the train accuracy (when the plan has a classification loss) and the step count."""
    model.train()
    rt = config.runtime
    iters = len(loader)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    seen = skipped = images = 0
    skip = rt.on_nonfinite == "skip"
    channels_last = uses_channels_last(config)
    progress = Progress(iters, f"{plan.name} {plan.stage} epoch {plan.epoch}", rt.progress and info.is_main, rt.log_every)
    guard = NonFiniteGuard(device)
    for step, (x1, x2, y) in enumerate(prefetch(batches(loader), rt.prefetch)):
        x = torch.cat([x1, x2]).to(device, non_blocking=True)  # (2B, 3, S, S)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        result = train_step(model, core, x, y, plan, optim, precision=rt.precision, scaler=scaler, info=info,
                            classifier_epoch=classifier_schedule_epoch(plan.epoch, step, iters, config.protocol),
                            sparsify=SPARSIFIERS[config.optim.sparsify], skip_nonfinite=skip)
        if result.skipped:
            bad = [k for k, v in result.parts.items() if k != "loss" and not torch.isfinite(v)]
            log.warning("non-finite loss at %s epoch %d step %d: part(s) %s; batch skipped", plan.stage, plan.epoch, step + 1,
                        bad or ["loss"])
            skipped += 1
            continue
        if not skip:
            # Record the first non-finite step on the device (no host sync); looked at every log_every steps.
            guard.record(step, result.parts)
            if (step + 1) % rt.log_every == 0:  # and once more after the last step
                guard.raise_if_bad(plan)
        for k, v in result.parts.items():
            sums[k] = sums.get(k, torch.zeros((), device=device)) + v.detach()
        correct += result.correct
        seen += 1
        images += len(y)
        progress.update(step, sums, seen)
    progress.close()
    guard.raise_if_bad(plan)
    if skipped and not seen:
        raise NonFiniteLossError(f"every batch of {plan.stage} epoch {plan.epoch} had a non-finite loss; {STOPPED}")
    counts = torch.tensor([float(images), float(seen)], device=device)
    totals = all_reduce_sum(torch.cat([torch.stack([*sums.values(), correct]), counts]), info)
    steps = max(float(totals[-1]), 1.0)  # summed over processes, like the loss sums
    row = {k: float(v) / steps for k, v in zip(sums, totals[: len(sums)])}
    # Both views of every image count.
    row["train_accuracy"] = float(totals[-3]) / max(1.0, 2 * float(totals[-2])) if plan.classification else math.nan
    row["steps"] = seen  # optimizer steps of this process (every process takes the same number)
    return row


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
        preset=config.data.preset,
        grid=m.grid,
        **m.backbone_kwargs,
    )


def train(config: TrainConfig, data: DataBundle | None = None, *, resume_runtime: dict[str, Any] | None = None) -> TrainResult:
    """Train a PIP-Net as the config says, writing everything to a run folder.

    Args:
        config: the run's configuration (`config.resume` continues an earlier run from its folder, with
            the settings of its config.yaml).
        data: optional pre-built data (otherwise built from `config.data`).
        resume_runtime: with `config.resume`: runtime options to change for the rest of the run, only
            those of `RESUME_RUNTIME` (device, workers, progress...: they do not change results).

    Returns:
        The run folder, the trained model, its metrics, the data and the per-epoch history.

    Examples:
        A few epochs on the built-in planted-parts data (no files, no download) with a tiny test network;
        for real work, a preset read with `pipnet.core.train_config.load_config` and your own images:

        >>> from pipnet.core.data_config import DataConfig, PlantedConfig
        >>> from pipnet.core.train_config import ModelOptions, RuntimeConfig, ScheduleConfig
        >>> from pipnet.train import TrainConfig, train
        >>> config = TrainConfig(
        ...     out="runs/tiny",
        ...     model=ModelOptions(backbone="timm/test_convnext", pretrained=False, num_features=8),
        ...     data=DataConfig(image_size=32, planted=PlantedConfig(
        ...         num_classes=3, train_per_class=8, test_per_class=2, ood_images=0, multi_images=0, size=32)),
        ...     schedule=ScheduleConfig(epochs_pretrain=1, epochs=2, freeze_epochs=1, classifier_only_epochs=1,
        ...                             batch_size_pretrain=8, batch_size=8),
        ...     runtime=RuntimeConfig(device="cpu", progress=False),
        ... )
        >>> result = train(config)
        >>> len(result.history), len(result.model.config.class_names)
        (3, 3)
        >>> (result.run_dir / "model.safetensors").is_file(), 0 <= result.metrics.top1_accuracy <= 1
        (True, True)
        >>> import pipnet
        >>> pipnet.Predictor.load(result.run_dir, device="cpu").detector.name  # the run stores its detectors
        'knn'
    """
    rt = config.runtime
    info = init_distributed(choose_device(rt.device).type)
    resuming = bool(config.resume)
    if resuming:
        run = TrainingRun.resume(config.resume)
        config = run.config  # the resumed run's own settings (its `resume` field is cleared)
        for name, value in (resume_runtime or {}).items():
            if name not in RESUME_RUNTIME:
                raise ValueError(f"runtime.{name} cannot change on resume (only {', '.join(RESUME_RUNTIME)})")
            setattr(config.runtime, name, value)
        rt = config.runtime
    seed_epoch(rt.seed, 0)
    if data is None:
        config.data.source = resolve_source(config.data)  # config.yaml records the detected source
    built_here = data is None
    if built_here:  # bad data fails before a folder is made; inputs normalised as the backbone's weights expect
        data = build_data(config.data, config.protocol, normalization=backbone_normalization(config.model.backbone))
    initial = None
    if config.model.init and not resuming:
        initial = load_init_model(config.model.init, backbone=config.model.backbone, image_size=config.data.image_size,
                                  num_classes=len(data.classes), class_names=data.classes)
        _describe_model(config, initial)  # config.yaml describes the architecture that was loaded
        if built_here and initial.normalization != getattr(data.projection, "normalization", None):  # the loaded model's own inputs
            data = build_data(config.data, config.protocol, normalization=initial.normalization)
    plans = plan_epochs(config.schedule, pretrained_pipnet=bool(config.model.init))
    check_schedule(config.schedule.feature_bank_views, plans)  # before a run folder is made
    device = _resolve_device(rt.device, info)
    choice = resolve_precision(rt.precision, device)
    rt.precision = choice.precision  # config.yaml records what ran, so a resume and a re-run are the same
    if not resuming:
        run = TrainingRun.create(config.out, config, main=info.is_main)
    if rt.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if info.is_main:
        log.info("precision %s (%s)", choice.precision, choice.reason)
    checkpoint = load_checkpoint(run.checkpoint_path) if resuming else None
    if initial is not None:
        model = initial
        model.config.preset = config.data.preset  # the input contract of the data it is trained on now
    else:
        pretrained = False if (checkpoint or config.model.init) else config.model.pretrained
        model = _build_model(config, len(data.classes), data.classes, pretrained)
    if checkpoint:
        load_state_dict_checked(model, checkpoint["model"], source=str(run.checkpoint_path))
    model.to(device)
    if uses_channels_last(config):
        model.to(memory_format=torch.channels_last)
    banked = BankedTraining(model, plans, config, device, channels_last=uses_channels_last(config)) \
        if config.schedule.feature_bank_views else None
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
        dataset, batch = getattr(data, plan.data), plan.batch_size
        bank_started = time.perf_counter()
        if banked is not None:  # the frozen prefix's stored outputs (pipnet.train.feature_bank)
            dataset = banked.dataset(dataset, index, batch)
        elif hasattr(dataset, "set_seed"):  # per-image augmentation seeds (see TwoViewDataset.set_seed)
            dataset.set_seed(generator.initial_seed())
        bank_seconds = time.perf_counter() - bank_started
        loader = epoch_loader(dataset, batch, config, generator, info, device, in_memory=banked is not None)
        if plan.stage != stage:
            optim = make_stage_optim(model, plan, config, len(loader))
            if checkpoint and checkpoint["stage"] == plan.stage and index == start:
                optim.load_state_dict(checkpoint["optim"])
                if scaler and checkpoint.get("scaler"):
                    scaler.load_state_dict(checkpoint["scaler"])
            stage = plan.stage
        set_trainable(model, plan)
        wrapped = _wrap(banked.forward if banked is not None else model, info, rt.compile, device)
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": index + 1, "stage": plan.stage, "stage_epoch": plan.epoch, "phase": plan.name}
        if banked is not None:
            row["bank_seconds"] = bank_seconds  # building the bank (the epoch that first reads it), else ~0
        extra_before, extra_after = paper_extra_steps(config, plan, len(data.test) if data.test is not None else 0)
        apply_soft_threshold_steps(model.classifier, extra_before, decrement_per_step(config, optim))
        row.update(run_epoch(wrapped, model, loader, plan, optim, config, device, info, scaler))
        apply_soft_threshold_steps(model.classifier, extra_after, decrement_per_step(config, optim))
        row.update(sparsify_counts(history, config, plan, row["steps"], extra_before + extra_after, optim))
        row.update(_lrs(optim))
        row.update(_scoring_sheet_stats(model))
        every = config.schedule.eval_every
        if plan.evaluate and data.test is not None and every and (plan.epoch % every == 0 or index == len(plans) - 1):
            with inference_precision(rt.precision):
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
            if plan.saves_model_at_end and (index + 1 == len(plans) or plans[index + 1].stage != plan.stage):
                with write_model_folder(run.folder.pretrained, exist_ok=True) as folder:
                    model.save_pretrained(folder)  # "pretrain once, classify many times"
                log.info("end-of-pretraining model saved in %s", run.folder.pretrained)
    with inference_precision(rt.precision):
        return _finish(run, model, data, config, device, info, history, optim)


def _finish(
    run: TrainingRun, model: PIPNet, data: DataBundle, config: TrainConfig, device, info: DistInfo, history, optim: StageOptim | None
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
        apply_soft_threshold_steps(model.classifier, steps, decrement_per_step(config, optim))
        log.info("paper protocol: %d soft-threshold steps after the final pruning (one per test batch)", steps)
    metrics = None
    if info.is_main:
        with write_model_folder(run.path, exist_ok=True) as final:  # the model, metrics and thresholds together
            model.save_pretrained(final)
            if data.test is not None:
                metrics = evaluate(model, data.test, ood=data.ood or None, purity_sets=data.purity_sets() or None, batch_size=batch, device=device,
                                   progress=config.runtime.progress, mask_sets=data.mask_sets() or None,
                                   train_set=data.projection, protocol=config.protocol)
                run.write_metrics(metrics, into=final)
                _save_detectors(final, model, data, config, device)
            else:
                from pipnet.evaluation.detectors import StoredDetectors

                StoredDetectors(note="the data has no test split to set the detectors on").save(final)
        for finding in diagnose(history, config, metrics, num_train_images=len(data.train)):
            (log.warning if finding.level == "warning" else log.info)("diagnostics: %s", finding.message)
    return TrainResult(run.path, model, metrics, data, history)


def _save_detectors(directory: Path, model: PIPNet, data: DataBundle, config: TrainConfig, device) -> None:
    """Store the OoD detectors beside the model (the training images as the knn reference, 95% TPR on the test
    data, fp32 scores whatever the training precision), for every door's verdict."""
    from pipnet.evaluation.detectors import describe_data, fit_detectors

    description = describe_data(config.data.source, config.data.root, "test", len(data.test))
    fit_detectors(model, data.projection, data.test, batch_size=config.schedule.batch_size, device=device,
                  description=description).save(directory)


def _describe_model(config: TrainConfig, model: PIPNet) -> None:
    """Copy a loaded model's architecture into `config.model` (a resumed run rebuilds it from there)."""
    m = model.config
    config.model.backbone, config.model.num_features, config.model.bias = m.backbone, m.num_features, m.bias
    config.model.backbone_kwargs = dict(m.backbone_kwargs)
    config.model.grid = m.grid


def _tensorboard(path: Path):
    """A TensorBoard writer logging to RUN/tensorboard (needs the `tensorboard` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise MissingExtraError("--runtime.tensorboard needs TensorBoard: pip install 'pipnet[tensorboard]'") from e
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

