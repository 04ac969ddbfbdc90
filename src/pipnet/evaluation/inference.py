"""Inference plumbing shared by every pass over a data set (evaluation, projection, thresholds, refit,
explanations, the web app): the device, the model in eval mode under `torch.inference_mode()`, an in-order
loader, the images of a batch, and the model's input contract.

The device (one owner): [`choose_device`][pipnet.evaluation.inference.choose_device] turns `auto` / `cpu` / `cuda` / `cuda:N` into a
`torch.device` for `pipnet train` (`--runtime.device`), `evaluate`, `predict`, `refit` and `serve`
(their `--device`), and refuses a device the machine lacks with one line.

The input contract (one owner): a model takes S x S images (`model.config.image_size`, the size it was
trained at) prepared with its data preset's evaluation transform (`model.config.preset`: `grayscale`
turns images gray) and normalised as its backbone's weights expect (`model.normalization`, recorded in
its config.json). `pipnet explain`, `predict`, `evaluate`, `serve`, `refit` and `report` build
their inputs with [`input_transform`][pipnet.evaluation.inference.input_transform] or `build_model_data`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from pipnet.data.augment import eval_transform
from pipnet.data.build import DataBundle, build_data
from pipnet.core.data_config import DataConfig
from pipnet.core.precision import autocast, current_inference_precision

__all__ = ["DeviceError", "build_model_data", "choose_device", "eval_mode", "fit_data_to_model", "input_transform",
           "inputs_of", "labels_of", "make_loader"]

log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """A device name that torch does not know, or a device this machine does not have."""


def choose_device(name: str | torch.device | None = "auto") -> torch.device:
    """The device to run on.

    Args:
        name: `auto` or None (CUDA when present, else the CPU), a torch device name (`cpu`, `cuda`,
            `cuda:1`, `mps`) or a `torch.device`.

    Raises:
        DeviceError: an unknown name, or a CUDA device this machine does not have (asked for by name, it is
            refused at once rather than failing later inside the first forward pass).
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {device} asked for, but this machine has no CUDA GPU (give auto or cpu)")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {device} asked for, but this machine has {count} CUDA GPU(s): cuda:0..cuda:{count - 1}")
    return device


@contextlib.contextmanager
def eval_mode(
    model: torch.nn.Module, device: torch.device | str | None = None, precision: str | None = None
) -> Iterator[torch.device]:
    """Run `model` in eval mode under `torch.inference_mode()`, restoring every module's training flag.

    Args:
        model: the model (its weights are never modified).
        device: where to run; None means the model's own device. A different device moves the model there
            for the duration and back afterwards (the values are unchanged).
        precision: `fp32`, `bf16` or `fp16` autocast for the block; None: the current inference
            precision (`pipnet.core.precision.inference_precision`; `fp32` unless a command set it).

    Yields:
        The device the inputs must go to.
    """
    home = next(model.parameters()).device
    target = torch.device(device) if device is not None else home
    flags = {m: m.training for m in model.modules()}
    try:
        if target != home:
            model.to(target)
        model.eval()
        with torch.inference_mode(), autocast(target, precision or current_inference_precision()):
            yield target
    finally:
        if target != home:
            model.to(home)
        for m, flag in flags.items():
            m.training = flag


def make_loader(
    data: Dataset | DataLoader, batch_size: int, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A loader over `data` in data-set order (a loader passed in must not shuffle: indices matter)."""
    if isinstance(data, DataLoader):
        if data.batch_sampler is not None and not isinstance(data.sampler, SequentialSampler):
            raise ValueError("the loader must visit the data in order (shuffle=False): image indices are recorded")
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)


def inputs_of(batch: object) -> torch.Tensor:
    """The image tensor of a batch: `x` of `(x, label, ...)` or the batch itself."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch  # type: ignore[return-value]


def labels_of(dataset: Dataset) -> torch.Tensor:
    """(N,) labels of a data set: its `targets`, or the second element of every item."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [dataset[i][1] for i in range(len(dataset))]  # type: ignore[arg-type]
    return torch.as_tensor([int(t) for t in targets], dtype=torch.long)


def input_transform(model: torch.nn.Module) -> Callable:
    """The transform that turns a PIL image into the model's input: its size, its preset's colour handling
    and its normalisation.

    Args:
        model: a PIP-Net (reads `config.image_size`, `config.preset` (None: `default`, RGB inputs)
            and `normalization`).
    """
    return eval_transform(model.config.image_size, model.config.preset or "default", model.normalization)


def fit_data_to_model(config: DataConfig, model: torch.nn.Module) -> DataConfig:
    """`config` with the model's input contract (image size, and preset when recorded); a data setting
    that differs is replaced with a warning, never silently (a model evaluated at another size than it was
    trained at gives other numbers)."""
    size, preset = model.config.image_size, model.config.preset
    if config.image_size != size:
        log.warning("the data's image size is %d, the model's %d: using %d", config.image_size, size, size)
        config = dataclasses.replace(config, image_size=size)
    if preset is not None and config.preset != preset:
        log.warning("the data's preset is %s, the model was trained with %s: using %s", config.preset, preset, preset)
        config = dataclasses.replace(config, preset=preset)
    return config


def build_model_data(config: DataConfig, model: torch.nn.Module, protocol: str = "default") -> DataBundle:
    """Every data set of `config` as `model` takes its inputs: `fit_data_to_model` (size, preset)
    and the model's normalisation."""
    return build_data(fit_data_to_model(config, model), protocol, normalization=model.normalization)
