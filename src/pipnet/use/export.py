"""Export a PIP-Net for deployment without this package: TorchScript (built in) or ONNX (extra `export`).

The exported graph is the inference forward ([`PIPNet.predict`][pipnet.PIPNet.predict]: presence < 0.1 set to 0 before the
classifier, switched-off prototypes masked): one input `images` (B, 3, S, S), normalised as in training
(resize to S x S, then the model's `normalization`: its backbone's mean and std, recorded in
config.json), and three outputs `scores` (B, C), `presence` (B, P) and `logits` (B, P): each
prototype's largest logit over the grid, what the `knn` detector reads. The batch size is dynamic by
default or fixed on request. [`check_export`][pipnet.use.export.check_export] runs the file with its own runtime (`torch.jit.load`
or onnxruntime) and returns the largest difference from PyTorch; [`export_verdicts`][pipnet.use.export.export_verdicts] turns the file's
outputs into the model folder's verdicts, the same as [Predictor][pipnet.Predictor] gives (the deploy
guide shows the same in a few lines of NumPy, for a machine without pipnet).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipnet.model import PIPNet

__all__ = ["FORMATS", "OUTPUTS", "ExportError", "InferenceGraph", "check_export", "check_images", "export_model",
           "export_verdicts", "run_export"]

FORMATS = ("torchscript", "onnx")
OUTPUTS = ("scores", "presence", "logits")
Format = Literal["torchscript", "onnx"]


class ExportError(RuntimeError):
    """The model could not be exported or the exported file does not reproduce it; the message says why."""


class InferenceGraph(nn.Module):
    """`PIPNet.predict` as a plain module: images (B, 3, S, S) -> (scores (B, C), presence (B, P), logits (B, P))."""

    def __init__(self, model: PIPNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model.prototype_logits(self.model.forward_features(images))  # (B, P, h, w)
        out = self.model.forward_head(torch.softmax(logits, dim=1), inference=True)  # as PIPNet.predict
        return out.scores, out.presence, logits.amax(dim=(2, 3))


def _example(model: PIPNet, batch_size: int) -> torch.Tensor:
    S = model.config.image_size
    return torch.randn(batch_size, 3, S, S, generator=torch.Generator().manual_seed(0))


def export_model(
    model: PIPNet, path: str | Path, *, format: Format = "torchscript", batch_size: int | None = None, opset: int = 18
) -> Path:
    """Write the inference graph of `model` (on the CPU, in eval mode; `model` itself is not changed).

    Args:
        model: the PIP-Net.
        path: the file to write.
        format: `torchscript` (`torch.jit.trace`; loads with `torch.jit.load`, no pipnet needed) or
            `onnx` (needs the `onnx` and `onnxscript` packages: `pip install 'pipnet[export]'`).
        batch_size: a fixed batch size, or None for any batch size.
        opset: the ONNX opset version.

    Raises:
        ExportError: the exporter is missing or fails.
    """
    if format not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, not {format!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = InferenceGraph(_cpu_copy(model)).eval()
    example = _example(model, batch_size or 2)
    if format == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.9+ marks TorchScript deprecated; it still runs
            traced = torch.jit.trace(graph, example, check_trace=False)
        traced.save(str(path))
        return path
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the 'export' extra: pip install 'pipnet[export]' ({e})") from e
    dynamic = None if batch_size else {"images": {0: torch.export.Dim("batch", min=1, max=4096)}}
    try:
        with torch.no_grad(), _quiet("onnxscript", "onnx_ir", "torch.onnx"):
            program = torch.onnx.export(
                graph, (example,), input_names=["images"], output_names=list(OUTPUTS), opset_version=opset,
                dynamic_shapes=dynamic, dynamo=True, verbose=False,
            )  # fmt: skip
        program.save(str(path))
    except Exception as e:  # the exporter raises many types; the user needs the one line that says what failed
        raise ExportError(f"torch.onnx.export failed: {' '.join(str(e).split())[:500]}") from e
    return path


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """The ONNX exporter's optimiser logs every rewrite at INFO; keep warnings and errors only."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _cpu_copy(model: PIPNet) -> PIPNet:
    import copy

    copy_ = copy.deepcopy(model).cpu().float().eval()
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_


def run_export(path: str | Path, images: torch.Tensor, *, format: Format = "torchscript") -> dict[str, torch.Tensor]:
    """The exported file's outputs on `images` (B, 3, S, S), run with its own runtime: `{"scores", "presence", "logits"}`."""
    images = images.detach().float().cpu()
    if format == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            got = torch.jit.load(str(path), map_location="cpu")(images)
    else:
        try:
            import onnxruntime
        except ImportError as e:
            raise ExportError(f"checking an ONNX file needs onnxruntime: pip install 'pipnet[export]' ({e})") from e
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = [torch.from_numpy(a) for a in session.run(list(OUTPUTS), {"images": images.numpy()})]
    return dict(zip(OUTPUTS, got))


def check_export(model: PIPNet, path: str | Path, images: torch.Tensor, *, format: Format = "torchscript") -> dict[str, float]:
    """Largest absolute difference between the exported file and PyTorch on `images`.

    Args:
        model: the PIP-Net that was exported.
        path: the exported file.
        images: (B, 3, S, S) model inputs.
        format: the file's format.

    Returns:
        `{"scores": max |diff|, "presence": max |diff|, "logits": max |diff|}`.
    """
    reference = InferenceGraph(_cpu_copy(model)).eval()
    with torch.no_grad():
        want = dict(zip(OUTPUTS, reference(images.detach().float().cpu())))
    got = run_export(path, images, format=format)
    return {name: (got[name].float() - want[name].float()).abs().max().item() for name in OUTPUTS}


def export_verdicts(outputs: dict[str, torch.Tensor], detector, class_names: list[str]) -> list:
    """The verdicts on the images an exported model's `outputs` (`run_export`) came from, decided by
    `detector` (a [Predictor][pipnet.Predictor]'s `detector`; None: none stored), as every door decides
    them ([verdicts][pipnet.evaluation.detectors.verdicts])."""
    from pipnet.evaluation.detectors import verdicts
    from pipnet.evaluation.features import Features

    features = Features(outputs["logits"].float(), outputs["presence"].float(), outputs["scores"].float())
    return verdicts(features, detector, class_names)


def check_images(model_dir: str | Path, model: PIPNet, count: int) -> tuple[torch.Tensor, str]:
    """Up to `count` test images of the model's run (its config.yaml) and `"test images"`, else seeded
    random inputs and `"random inputs"`: what `pipnet export` checks the exported file on."""
    from pipnet.model.run_folder import RunFolder

    run_config = RunFolder(model_dir).training_config()
    if run_config is not None:
        from pipnet.evaluation.inference import build_model_data

        config = run_config.data
        config.image_size = model.config.image_size
        test = build_model_data(config, model).test
        if test is not None and len(test) >= count:
            return torch.stack([test[i][0] for i in range(count)]), "test images"
    S = model.config.image_size
    return torch.randn(count, 3, S, S, generator=torch.Generator().manual_seed(0)), "random inputs"
