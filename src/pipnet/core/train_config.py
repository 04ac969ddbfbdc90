"""Typed configuration of a training run: the single source of truth.

YAML presets (`configs/*.yaml`) load into [`TrainConfig`][pipnet.core.train_config.TrainConfig], command-line flags override them
(jsonargparse does the merging), and the resolved config is saved as `config.yaml` in every run folder.
Defaults are the paper's (supplementary Sec. 1.1 and Algorithm 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipnet.core.data_config import DataConfig

__all__ = ["ModelOptions", "OptimConfig", "RuntimeConfig", "ScheduleConfig", "TrainConfig"]


@dataclass
class ModelOptions:
    """The model to train.

    Args:
        backbone: a name from `pipnet.list_models()` or `timm/<name>`.
        pretrained: True for ImageNet weights (offline only for `efficientnet_lite0`), False for random
            weights, or the path of a local weights file.
        num_features: 0 = one prototype per backbone channel (paper); n > 0 = a 1x1 add-on conv to n.
        bias: a non-negative classifier bias (off in the paper).
        backbone_kwargs: extra arguments for the backbone builder (e.g. `{output_stride: 16}` for timm).
        grid: how the backbone reaches PIP-Net's finer grid: `stride` (the paper's: late stride-2 convs get
            stride 1) or `dilate` (the same grid by dilated convs, which keeps what the pretrained later
            layers learnt: efficientnet_lite0 and resnet50/101/152; `pipnet.model.backbones`). Recorded in the
            model's config.json.
        init: start from a saved PIP-Net instead (as the published code allows): a model folder, a run folder (its
            final model, else its `pretrained/` one) or an official checkpoint file (then `backbone`
            names its backbone). Its architecture replaces the options above; a classifier that looks
            untrained is re-initialised. With `schedule.epochs_pretrain 0` pretraining is skipped and
            the classifier-only epochs still run.
    """

    backbone: str = "convnext_tiny_26"
    pretrained: bool | str = True
    num_features: int = 0
    bias: bool = False
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    grid: Literal["stride", "dilate"] = "stride"
    init: str | None = None


@dataclass
class OptimConfig:
    """Optimisers (AdamW) and the classifier's sparsification.

    Args:
        lr: learning rate of the classifier W (and bias).
        lr_block: learning rate of the `to_train` and `to_freeze` backbone groups (add-on: x10).
        lr_net: learning rate of the `backbone` group.
        weight_decay: AdamW weight decay (0 in the paper).
        sparsify: `soft_threshold` (faithful: W <- max(W - 1e-3, 0) after every classification step)
            or `hard_threshold` (option: only weights below 1e-3 become 0).
        sparsify_threshold: the 1e-3 of both rules (for the soft threshold: the amount subtracted per step).
        soft_threshold_total: option (not in the paper): choose the soft threshold's per-step amount so that
            the whole classification phase subtracts this much from every weight (amount = total /
            (epochs x steps per epoch)). The paper's total is 1e-3 x its steps: about 5.6 on CUB (60 epochs
            x 94 steps), but only 0.3 for 150 images at batch 16 over 30 epochs, too little to make a
            small data set's scoring sheet sparse. None (default): `sparsify_threshold` per step.
        prune_threshold: after training, prototypes never present above this on the projection set get
            all their weights set to 0.
        prune_everywhere: option (not in the paper): after training, also set to 0 all weights of the used
            prototypes present (> 0.5) on >= 90% of the projection images of every class; such prototypes
            add the same evidence to every class and carry no class information.
    """

    lr: float = 0.05
    lr_block: float = 5e-4
    lr_net: float = 5e-4
    weight_decay: float = 0.0
    sparsify: Literal["soft_threshold", "hard_threshold"] = "soft_threshold"
    sparsify_threshold: float = 1e-3
    soft_threshold_total: float | None = None
    prune_threshold: float = 0.1
    prune_everywhere: bool = False


@dataclass
class ScheduleConfig:
    """Epochs and batch sizes of the two phases.

    Args:
        epochs_pretrain: epochs of self-supervised prototype pretraining (lambda_A ramps 1/n ... 1).
        epochs: epochs of the classification phase.
        classifier_only_epochs: first classification epochs that train only the classifier (when
            pretraining ran or a pretrained PIP-Net was loaded).
        freeze_epochs: up to this classification epoch the `backbone` group stays frozen.
        batch_size_pretrain: images per pretraining batch (each gives two views).
        batch_size: images per classification batch (each gives two views).
        eval_every: evaluate on the test set every this many classification epochs (0 = only at the end).
        feature_bank_views: 0 (default) runs the whole backbone on freshly augmented views every epoch. N > 0
            computes the output of the backbone's frozen first part once, for N augmented views of every
            training image (the same augmentation, seeded), keeps it in memory, and trains the rest of the
            model over it, each epoch reading one stored view per image. Needs the `backbone` group frozen
            in every epoch (`freeze_epochs >= epochs`); the frozen part then also keeps its pretrained
            BatchNorm statistics (`pipnet.train.feature_bank`).
    """

    epochs_pretrain: int = 10
    epochs: int = 60
    classifier_only_epochs: int = 3
    freeze_epochs: int = 10
    batch_size_pretrain: int = 128
    batch_size: int = 64
    eval_every: int = 1
    feature_bank_views: int = 0


@dataclass
class RuntimeConfig:
    """Where and how fast to run.

    Args:
        device: `auto` (CUDA if present), `cpu`, `cuda`, `cuda:1`...
        precision: `auto` (default: bf16 where the device computes it natively, fp32 elsewhere; see
            `pipnet.core.precision`; config.yaml records what it resolved to), `fp32`, `bf16` (autocast,
            CPU and CUDA; on a CPU without avx512_bf16/AMX it is emulated, ~3x slower, and warns) or
            `fp16` (CUDA, with a gradient scaler). Evaluation inside the run uses the same precision,
            except the galleries (always fp32).
        channels_last: NHWC memory format; `auto` (default) turns it on for ResNet backbones only, where
            it measured 4-22% faster training steps on the CPU (benchmarks/README.md); ConvNeXt gained
            nothing and EfficientNet-Lite0 in bf16 became 25% slower. The numbers do not change beyond
            float rounding.
        compile: `torch.compile` the model.
        num_workers: DataLoader worker processes (0 is fastest on a 2-core machine).
        prefetch: batches prepared ahead in a background thread while the model trains (0: none); the
            batches and their order do not change.
        seed: seed of everything; each epoch reseeds from (seed, epoch) so a resumed run is exact.
        deterministic: ask PyTorch for deterministic algorithms.
        progress: show progress bars.
        log_every: refresh the progress bar's loss parts every this many steps (each refresh syncs).
        tensorboard: also write TensorBoard logs (needs the `tensorboard` extra).
        on_nonfinite: `stop` (default: stop with a message naming the loss part) or `skip` the batch.
    """

    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    num_workers: int = 0
    prefetch: int = 0
    seed: int = 0
    deterministic: bool = False
    progress: bool = True
    log_every: int = 10
    tensorboard: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"


# Runtime options that do not change a run's results: the only settings `--resume` accepts (a resumed run
# otherwise keeps every setting of its config.yaml).
RESUME_RUNTIME = ("device", "num_workers", "prefetch", "progress", "log_every", "tensorboard")


def resume_flag_error(argv: list[str]) -> str | None:
    """The one-line refusal for a flag given with `--resume` that could change the resumed run, or None.

    Args:
        argv: the command line of `pipnet train` (`--name value` or `--name=value`).
    """
    allowed = {"--resume", "--print-config", *(f"--runtime.{name}" for name in RESUME_RUNTIME)}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in allowed:
            return (f"{flag} cannot be given with --resume: a resumed run keeps the settings of its config.yaml; "
                    f"only {', '.join(f'--runtime.{n}' for n in RESUME_RUNTIME)} may change")
    return None


@dataclass
class TrainConfig:
    """A whole training run.

    Args:
        out: the run folder (default: a new folder under `./runs`).
        resume: continue the run in this folder from its last completed epoch, with its own settings
            (only the runtime options in `RESUME_RUNTIME`, which do not change results, may be changed).
        protocol: `default` (the paper's text) or `paper`: how the published code made the published
            numbers: one extra soft-threshold step per test batch after every classification epoch
            (and after the final pruning) plus one before classification epochs 30, 60, ... and the last,
            the published OoD rule and purity conventions in evaluation, nearest-neighbour location
            augmentation, and the larger PETS resize / crop.
        model: the model.
        data: the data.
        optim: optimisers and sparsification.
        schedule: epochs and batch sizes.
        runtime: device, precision and speed options.
    """

    out: str | None = None
    resume: str | None = None
    protocol: Literal["default", "paper"] = "default"
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def config_parser(prog: str = "pipnet train"):
    """The jsonargparse parser of [`TrainConfig`][pipnet.core.train_config.TrainConfig]: `--config FILE` plus one flag per field."""
    import os

    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    from jsonargparse import ActionConfigFile, ArgumentParser

    # print_config=None: our own --print-config (the resolved TrainConfig) replaces jsonargparse's --print_config.
    parser = ArgumentParser(prog=prog, description="Train a PIP-Net (pretraining, then sparse classification).", print_config=None)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML preset (e.g. configs/cub.yaml)")
    parser.add_class_arguments(TrainConfig)
    return parser


def config_from_namespace(parser, namespace) -> TrainConfig:
    """Instantiate the nested dataclasses of a parsed namespace into a TrainConfig."""
    init = parser.instantiate(namespace)
    return TrainConfig(**{k: init[k] for k in TrainConfig.__dataclass_fields__})


def load_config(path: str) -> TrainConfig:
    """Read a YAML config (a preset or a run's saved `config.yaml`), checking keys and types."""
    parser = config_parser()
    return config_from_namespace(parser, parser.parse_args(["--config", str(path)]))


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML (what every run folder keeps as `config.yaml`)."""
    import yaml
    from dataclasses import asdict

    return yaml.safe_dump(asdict(config), sort_keys=False)
