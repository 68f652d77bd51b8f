"""Precision names, CPU flag detection, and the autocast each precision gives."""

from __future__ import annotations

import logging

import pytest
import torch

from bertlottery.errors import UserError
from bertlottery.precision import (
    accelerate_mixed_precision,
    autocast,
    cpu_flags,
    cpu_has_bf16,
    cpu_model,
    resolve_precision,
)

# Trimmed /proc/cpuinfo of two processors: flags are read from the first one.
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni
bogomips\t: 5200.00

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
SAPPHIRE_RAPIDS = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx512f amx_tile amx_bf16 amx_int8\n"
OLD_XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2686 v4\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_flags_and_model_are_read_from_cpuinfo():
    assert {"avx512_bf16", "avx512f", "fpu"} <= cpu_flags(EPYC)
    assert "bogomips" not in cpu_flags(EPYC)
    assert cpu_model(EPYC) == "AMD EPYC 9R14"
    assert cpu_model("") == "unknown" and cpu_flags("") == frozenset()


@pytest.mark.parametrize("text, expected", [(EPYC, True), (SAPPHIRE_RAPIDS, True), (OLD_XEON, False), ("", False)])
def test_bf16_needs_avx512_bf16_or_amx(text, expected):
    assert cpu_has_bf16(cpu_flags(text)) is expected


def test_bf16_on_a_cpu_with_bf16_is_bf16_and_autocasts_matmuls(caplog):
    with caplog.at_level(logging.WARNING):
        precision = resolve_precision("bf16", "cpu", flags=cpu_flags(EPYC))
    assert precision == "bf16" and not caplog.records
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(precision, "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    assert (a @ b).dtype == torch.float32


def test_bf16_on_a_cpu_without_it_is_fp32_with_a_one_line_notice(caplog):
    with caplog.at_level(logging.WARNING):
        precision = resolve_precision("bf16", "cpu", flags=cpu_flags(OLD_XEON))
    assert precision == "fp32"
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert "no bf16 instructions" in message and "fp32" in message
    with autocast(precision, "cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.float32


def test_fp32_is_fp32_everywhere_and_fp16_needs_cuda(caplog):
    assert resolve_precision("fp32", "cpu", flags=frozenset()) == "fp32"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU, but this run is on cpu; use bf16 or fp32"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(UserError, match="Unknown precision 'bf61'. Did you mean 'bf16'"):
        resolve_precision("bf61", "cpu")
    assert not caplog.records


def test_accelerate_names():
    assert [accelerate_mixed_precision(p) for p in ("fp32", "bf16", "fp16")] == ["no", "bf16", "fp16"]
