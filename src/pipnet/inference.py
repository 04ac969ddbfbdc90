"""Inference plumbing shared by every pass over a data set (evaluation, projection, thresholds, refit,
explanations, the web app): the model in eval mode under ``torch.inference_mode()``, an in-order loader,
and the images of a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

__all__ = ["eval_mode", "inputs_of", "make_loader"]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, device: torch.device | str | None = None) -> Iterator[torch.device]:
    """Run ``model`` in eval mode under ``torch.inference_mode()``, restoring every module's training flag.

    Args:
        model: the model (its weights are never modified).
        device: where to run; None means the model's own device. A different device moves the model there
            for the duration and back afterwards (the values are unchanged).

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
        with torch.inference_mode():
            yield target
    finally:
        if target != home:
            model.to(home)
        for m, flag in flags.items():
            m.training = flag


def make_loader(
    data: Dataset | DataLoader, batch_size: int, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A loader over ``data`` in data-set order (a loader passed in must not shuffle: indices matter)."""
    if isinstance(data, DataLoader):
        if data.batch_sampler is not None and not isinstance(data.sampler, SequentialSampler):
            raise ValueError("the loader must visit the data in order (shuffle=False): image indices are recorded")
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)


def inputs_of(batch: object) -> torch.Tensor:
    """The image tensor of a batch: ``x`` of ``(x, label, ...)`` or the batch itself."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch  # type: ignore[return-value]
