"""Numeric precision: which one a run computes in, decided from what the machine really does natively.

`auto` (the default of `pipnet train`, `pipnet demo`, the shipped configs and the inference commands)
resolves to `bf16` where the hardware computes it natively and to `fp32` elsewhere:

- CUDA: `torch.cuda.is_bf16_supported(including_emulation=False)` (Ampere and newer).
- CPU: the CPU has avx512_bf16 or AMX tiles, *and* the running torch uses them: its kernels were not capped
  below AVX-512 (`torch.backends.cpu.get_cpu_capability()`, which `ATEN_CPU_CAPABILITY` sets) and oneDNN,
  which runs the convolutions, was not capped below its bf16 ISA (`ONEDNN_MAX_CPU_ISA` / `DNNL_MAX_CPU_ISA`).
  Elsewhere bf16 is emulated: measured 3-7x *slower* than fp32 per training step on AVX2-only CPUs
  (`benchmarks/bench_precision.py`; docs/results).

Training autocasts the whole step. Inference passes (`pipnet.evaluation.inference.eval_mode`) autocast the
network under the precision of `inference_precision` (`fp32` unless a command or a run sets it),
while the scoring sheet always runs in fp32 (see `pipnet.model.NonNegativeLinear`) and galleries
([`pipnet.evaluation.projection.project`][pipnet.evaluation.projection.project]) always rank in fp32: bf16 logits tie too often for a top-10 that must
not depend on image order.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["PRECISIONS", "PrecisionChoice", "PrecisionError", "autocast", "current_inference_precision",
           "inference_precision", "native_bf16", "resolve_inference_precision", "resolve_precision", "set_default_inference_precision"]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EMULATED_BF16_SLOWDOWN = "measured 3-7x slower than fp32 per training step on AVX2-only CPUs"
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) at or above which oneDNN has native bf16 instructions.
_ONEDNN_BF16_ISAS = {"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}


class PrecisionError(ValueError):
    """A precision this device cannot run (fp16 on a CPU) or an unknown name."""


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run computes in and why.

    Args:
        precision: `fp32`, `bf16` or `fp16`: what is used.
        requested: what was asked for (`auto` or one of the above).
        reason: why, in words (logged once, e.g. "auto: this CPU has no native bf16 ...").
    """

    precision: str
    requested: str
    reason: str


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively under the running torch, and what decided it."""
    device = torch.device(device)
    if device.type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "no CUDA"
        return native, f"{name} {'supports' if native else 'does not support'} bf16 natively"
    if device.type != "cpu":
        return False, f"{device.type}: bf16 not known to be native"
    flags = [name for name, probe in (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    if not flags:
        return False, "this CPU has no avx512_bf16 or AMX: bf16 would be emulated"
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return False, f"this CPU has {'/'.join(flags)} but torch runs its {capability} kernels (ATEN_CPU_CAPABILITY): bf16 would be emulated"
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap not in _ONEDNN_BF16_ISAS:
        return False, f"this CPU has {'/'.join(flags)} but oneDNN is capped at {cap} (ONEDNN_MAX_CPU_ISA): bf16 would be emulated"
    return True, f"this CPU computes bf16 natively ({'/'.join(flags)}, torch {capability} kernels)"


_warned: set[str] = set()


def resolve_precision(requested: str, device: torch.device | str) -> PrecisionChoice:
    """Turn `auto` / `fp32` / `bf16` / `fp16` into what runs on `device`.

    `auto` picks bf16 where it is native (`native_bf16`), else fp32. An explicit `bf16` on a device
    without native support is kept (it still works) with a warning, once per process, naming the slowdown.

    Raises:
        PrecisionError: an unknown name, or fp16 on a device other than CUDA.
    """
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise PrecisionError(f"unknown precision {requested!r}: give one of {', '.join(PRECISIONS)}")
    if requested == "fp16" and device.type != "cuda":
        raise PrecisionError(f"fp16 needs a CUDA device (this run is on {device.type}); use auto, fp32 or bf16")
    if requested == "fp32" or requested == "fp16":
        return PrecisionChoice(requested, requested, "asked for")
    native, why = native_bf16(device)
    if requested == "auto":
        return PrecisionChoice("bf16" if native else "fp32", "auto", f"auto: {why}")
    if not native and device.type == "cpu" and why not in _warned:
        _warned.add(why)
        log.warning("bf16 asked for, but %s (%s); --runtime.precision auto would pick fp32", why, EMULATED_BF16_SLOWDOWN)
    return PrecisionChoice("bf16", "bf16", "asked for" if native else f"asked for, although {why}")


def resolve_inference_precision(requested: str, device: torch.device | str, recorded: str | None) -> PrecisionChoice:
    """The precision of an inference door for a model whose stored detectors were set on `recorded` scores.

    A score is compared with a threshold set on scores of the same kind, and bf16 moves scores by about 1-2%,
    so `auto` computes in the precision the detectors were set in: fp32 (the default of their fitting, the
    scores every CPU and GPU reproduce) for fp32 detectors and for a model without any (`recorded` None);
    bf16 or fp16 for detectors set that way on request, where this machine computes it natively (elsewhere
    fp32, saying so). An explicit precision is kept.
    """
    if requested != "auto":
        return resolve_precision(requested, device)
    if recorded is None or recorded == "fp32":
        why = "the model's detectors were set on fp32 scores" if recorded else "the model stores no detector"
        return PrecisionChoice("fp32", "auto", f"auto: {why}; fp32 gives the same verdict on every machine")
    device = torch.device(device)
    native, why = (device.type == "cuda", "fp16 needs CUDA") if recorded == "fp16" else native_bf16(device)
    if native:
        return PrecisionChoice(recorded, "auto", f"auto: the model's detectors were set on {recorded} scores, and {why}")
    return PrecisionChoice("fp32", "auto", f"auto: the model's detectors were set on {recorded} scores, but {why}; "
                                           f"fp32 scores may differ from them by rounding (about 1-2%)")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for `bf16`/`fp16`; for `fp32`, autocast switched off (also inside an outer bf16 region)."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise PrecisionError(f"resolve {precision!r} first (pipnet.core.precision.resolve_precision)")
    if device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


_inference: contextvars.ContextVar[str] = contextvars.ContextVar("pipnet_inference_precision")
_process_default = ["fp32"]  # what inference uses outside any inference_precision() block, in every thread


def current_inference_precision() -> str:
    """The precision inference passes use now: the innermost `inference_precision` block's, else the
    process default (`fp32` unless `set_default_inference_precision` changed it)."""
    return _inference.get(_process_default[0])


def set_default_inference_precision(precision: str) -> None:
    """Set the precision of inference outside any `inference_precision` block, for every thread of the
    process (a server's worker threads do not inherit a context variable). `pipnet serve` uses it."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise PrecisionError(f"resolve {precision!r} first (pipnet.core.precision.resolve_precision)")
    _process_default[0] = precision


@contextlib.contextmanager
def inference_precision(precision: str) -> Iterator[str]:
    """Run the inference passes inside this block (evaluate, thresholds, predict, explain, refit's presences)
    in `precision` (already resolved: `fp32`, `bf16` or `fp16`)."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise PrecisionError(f"resolve {precision!r} first (pipnet.core.precision.resolve_precision)")
    token = _inference.set(precision)
    try:
        yield precision
    finally:
        _inference.reset(token)
