"""Numeric precision of training, scoring and evaluation: ``fp32``, ``bf16`` or ``fp16`` autocast.

``train.precision`` names what a study asks for; `resolve_precision` says what this device will do:

- ``fp32``: always;
- ``bf16``: on a CUDA GPU that supports it, and on a CPU with bf16 instructions (``avx512_bf16`` or
  AMX in /proc/cpuinfo's flags). Elsewhere torch would emulate bf16 in software, slower than fp32,
  so the run falls back to fp32 with a one-line notice;
- ``fp16``: CUDA only (on CPU it is emulated and its loss scaling is not needed); elsewhere a UserError.

Autocast keeps the weights in fp32 and runs matrix multiplications in the lower precision, so the
optimizer and the saved model are unchanged. Training goes through accelerate, which takes
`accelerator_for`'s Accelerator; evaluation and scoring enter `autocast` themselves.

Example:
    >>> precision = resolve_precision("bf16", "cpu")            # "fp32" on a CPU without bf16   # doctest: +SKIP
    >>> with autocast(precision, "cpu"):                                                         # doctest: +SKIP
    ...     logits = model(**batch).logits
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from .errors import UserError, did_you_mean
from .settings import PRECISIONS  # declared with the setting, where the torch-free config reads it

__all__ = [
    "PRECISIONS",
    "BF16_CPU_FLAGS",
    "cpu_flags",
    "cpu_model",
    "cpu_has_bf16",
    "resolve_precision",
    "autocast",
    "accelerate_mixed_precision",
    "accelerator_for",
    "device_precision",
    "gradient_attention",
    "attention_for_gradients",
]

# avx512_bf16: bf16 dot products in AVX-512 (Cooper Lake, Zen 4); amx_bf16: AMX tiles (Sapphire Rapids).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

log = logging.getLogger(__name__)


def _cpuinfo_field(cpuinfo: str, key: str) -> str:
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return ""


def _read_cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:  # not Linux: no flags known, so no bf16 on CPU
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of the first processor in ``cpuinfo`` (default: this machine's /proc/cpuinfo).

    >>> sorted(cpu_flags("processor : 0\\nflags : fpu avx512f avx512_bf16\\n"))
    ['avx512_bf16', 'avx512f', 'fpu']
    """
    return frozenset(_cpuinfo_field(_read_cpuinfo() if cpuinfo is None else cpuinfo, "flags").split())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``cpuinfo`` (default: this machine's), or ``"unknown"``."""
    return _cpuinfo_field(_read_cpuinfo() if cpuinfo is None else cpuinfo, "model name") or "unknown"


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware (one of `BF16_CPU_FLAGS`)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device | str, *, flags: frozenset[str] | None = None) -> str:
    """The precision this device will run for the one asked: ``precision``, or ``"fp32"`` with a notice.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16``.
        flags: the CPU's flags (default: read from /proc/cpuinfo), for tests.

    Raises:
        UserError: an unknown name, or fp16 on a device other than a CUDA GPU.
    """
    if precision not in PRECISIONS:
        raise UserError(f"Unknown precision '{precision}'.{did_you_mean(precision, PRECISIONS)} "
                        f"Known: {', '.join(PRECISIONS)}.")
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise UserError(f"precision fp16 needs a CUDA GPU, but this run is on {kind}; use bf16 or fp32.")
    if precision == "bf16":
        if kind == "cpu" and not cpu_has_bf16(flags):
            _notice_once(f"precision bf16: this CPU ({cpu_model()}) has no bf16 instructions "
                         f"({' or '.join(BF16_CPU_FLAGS)}); running in fp32 instead of a slower emulated bf16.")
            return "fp32"
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            _notice_once("precision bf16: this GPU has no bf16 support; running in fp32.")
            return "fp32"
    return precision


_NOTICED: set[str] = set()


def _notice_once(message: str) -> None:
    # a study resolves the precision in every stage: one line per process says it
    if message not in _NOTICED:
        _NOTICED.add(message)
        log.warning(message)


def gradient_attention(current: str, precision: str, device: torch.device | str) -> str:
    """The attention kernel for passes with a backward (training, importance, Fisher scores): the
    model's ``current`` one, except transformers' ``"eager"`` instead of ``"sdpa"`` on a CPU under bf16.

    PyTorch's CPU SDPA kernel (flash attention for CPU) is slow in its backward under bf16: measured on
    MiniLM, one thread (BENCHMARKS.md, `benchmarks/bench_attention.py`), the eager kernel (two matrix
    products and a softmax) made importance over SST-2 dev 1.48x faster, a Fisher pass 1.42x and a
    training step 1.02-1.16x (16 to 128 tokens); in fp32, and for forward-only evaluation, the two
    kernels ran at the same speed, so those keep SDPA. Both compute the same function; under bf16 they round the attention probabilities
    differently, as any change of kernel or machine does, so the choice is not part of a stage's id.

    >>> gradient_attention("sdpa", "bf16", "cpu"), gradient_attention("sdpa", "fp32", "cpu")
    ('eager', 'sdpa')
    >>> gradient_attention("sdpa", "bf16", "cuda"), gradient_attention("eager", "bf16", "cpu")
    ('sdpa', 'eager')
    """
    if current == "sdpa" and precision == "bf16" and torch.device(device).type == "cpu":
        return "eager"
    return current


@contextlib.contextmanager
def attention_for_gradients(model: torch.nn.Module, precision: str, device: torch.device | str):
    """``model`` with `gradient_attention`'s kernel while the block runs (an already resolved
    ``precision``), its own kernel again after."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    wanted = gradient_attention(current, precision, device) if current else current
    if wanted == current:
        yield model
        return
    model.set_attn_implementation(wanted)
    try:
        yield model
    finally:
        model.set_attn_implementation(current)


def device_precision(precision: str, model: torch.nn.Module) -> tuple[str, torch.device]:
    """``(resolved precision, device)`` for evaluating or scoring ``model`` where its weights are."""
    device = next(model.parameters()).device
    return resolve_precision(precision, device), device


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for an already resolved ``precision`` on ``device`` (none for fp32).

    >>> with autocast("fp32", "cpu"):
    ...     torch.is_autocast_enabled("cpu")
    False
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise UserError(f"Unknown precision '{precision}'.{did_you_mean(precision, PRECISIONS)} "
                        f"Known: {', '.join(PRECISIONS)}.")
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])


def accelerate_mixed_precision(precision: str) -> str:
    """accelerate's name (``TrainSettings.mixed_precision``) for a resolved precision.

    >>> accelerate_mixed_precision("fp32"), accelerate_mixed_precision("bf16")
    ('no', 'bf16')
    """
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def accelerator_for(precision: str):
    """An accelerate ``Accelerator`` that trains in the resolved ``precision``.

    accelerate keeps one mixed-precision setting per process (``AcceleratorState`` is shared) and
    raises when a later Accelerator asks for another, so two runs in one process (a study, a test)
    could not differ in precision. Its shared state is cleared first when it holds another setting,
    as accelerate's own tests do; the process's device and distributed set-up (``PartialState``) stay.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    wanted = accelerate_mixed_precision(precision)
    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != wanted:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=wanted)
