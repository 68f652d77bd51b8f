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


def test_bf16_on_a_cpu_without_it_is_fp32_with_a_one_line_notice(caplog, monkeypatch):
    import bertlottery.precision as precision_module

    # the notice comes once per process: on a machine without bf16 an earlier test has given it already
    monkeypatch.setattr(precision_module, "_NOTICED", set())
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


# ---- the setting, and where it applies -----------------------------------------------------------

def test_train_precision_replaces_mixed_precision_and_keeps_its_hash():
    import warnings

    from bertlottery.config import ConfigError, from_dict
    from bertlottery.settings import TrainSettings

    with pytest.warns(FutureWarning, match="train.mixed_precision is now called train.precision"):
        old = from_dict({"name": "t", "model": "minilm-l6", "tasks": ["RTE"], "train": {"mixed_precision": "no"}})
    assert old.train.precision == "fp32"
    with pytest.warns(FutureWarning):
        assert from_dict({"name": "t", "model": "minilm-l6", "tasks": ["RTE"], "train": {"mixed_precision": "bf16"}}).train.precision == "bf16"
    with pytest.raises(ConfigError, match="give only train.precision"):
        from_dict({"name": "t", "model": "minilm-l6", "tasks": ["RTE"], "train": {"mixed_precision": "no", "precision": "fp32"}})
    with pytest.raises(ConfigError, match="train.precision: unknown 'bf61'. Did you mean 'bf16'"):
        from_dict({"name": "t", "model": "minilm-l6", "tasks": ["RTE"], "train": {"precision": "bf61"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert from_dict({"name": "t", "model": "minilm-l6", "tasks": ["RTE"], "train": {"precision": "bf16"}}).train.precision == "bf16"
    # stages hash it under the old name and value (fp32 stages keep their ids), and read it back
    assert TrainSettings(precision="fp32").stage_dict()["mixed_precision"] == "no"
    assert "precision" not in TrainSettings(precision="bf16").stage_dict()
    assert TrainSettings.from_dict({"mixed_precision": "no"}).precision == "fp32"
    assert TrainSettings.from_dict(TrainSettings(precision="bf16").stage_dict()).precision == "bf16"


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU reported as having avx512_bf16, so that the bf16 path runs on any test machine (torch's
    CPU autocast runs without it, only slower)."""
    import bertlottery.precision as precision

    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: cpu_flags(EPYC))


def _trained(precision: str, batches) -> dict[str, torch.Tensor]:
    from bertlottery.training import TrainSettings, finetune

    from tiny import tiny_model

    model = tiny_model(seed=0)
    settings = TrainSettings(learning_rate=1e-3, epochs=1, seed=5, precision=precision)
    finetune(model, lambda epoch: batches, settings, progress=False)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_runs_in_other_precisions_follow_each_other_in_one_process(bf16_cpu):
    from tiny import tiny_batch

    batches = [tiny_batch(batch=4, length=9, seed=s) for s in range(3)]
    first = _trained("fp32", batches)
    bf16 = _trained("bf16", batches)  # accelerate would refuse a second mixed-precision setting here
    again = _trained("fp32", batches)
    for name, value in first.items():
        torch.testing.assert_close(again[name], value, atol=0, rtol=0)  # fp32 again, not left in bf16
    differences = [(bf16[n] - first[n]).abs().max().item() for n in first]
    assert max(differences) > 1e-6, "the bf16 run computed exactly the fp32 one: no autocast"
    assert max(differences) < 0.05  # the same training, in lower precision


def test_fp16_on_cpu_is_refused_before_training():
    from bertlottery.training import TrainSettings, finetune

    from tiny import tiny_batch, tiny_model

    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        finetune(tiny_model(), lambda epoch: [tiny_batch()], TrainSettings(epochs=1, precision="fp16"), progress=False)


def test_evaluation_and_scoring_run_in_the_precision_asked(bf16_cpu):
    from bertlottery.evaluation import predict
    from bertlottery.importance import structured_importance

    from tiny import tiny_batch, tiny_model

    model = tiny_model(seed=1)
    batches = [{**tiny_batch(batch=6, length=11, seed=s), "index": torch.arange(6 * s, 6 * s + 6)} for s in range(2)]
    fp32, _ = predict(model, batches)
    bf16, _ = predict(model, batches, precision="bf16")
    assert not (fp32 == bf16).all() and abs(fp32 - bf16).max() < 0.05
    full, low = (structured_importance(model, batches, precision=p) for p in ("fp32", "bf16"))
    assert not torch.equal(full.heads, low.heads)
    torch.testing.assert_close(low.heads, full.heads, atol=0.05, rtol=0.1)


def test_a_cpu_without_bf16_evaluates_in_fp32_with_a_notice(monkeypatch, caplog):
    import bertlottery.precision as precision
    from bertlottery.evaluation import predict

    from tiny import tiny_batch, tiny_model

    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: cpu_flags(OLD_XEON))
    monkeypatch.setattr(precision, "_NOTICED", set())
    model, batches = tiny_model(seed=1), [tiny_batch(batch=6, length=11, seed=0)]
    with caplog.at_level(logging.WARNING, logger="bertlottery.precision"):
        asked_bf16, _ = predict(model, batches, precision="bf16")
        predict(model, batches, precision="bf16")
    assert (asked_bf16 == predict(model, batches)[0]).all()
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "no bf16 instructions" in notices[0] and "\n" not in notices[0]


def _kernels_seen(model) -> list[str]:
    """A list that fills with the attention kernel each forward pass of ``model`` runs under."""
    seen: list[str] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    return seen


@pytest.mark.parametrize("family", ["bert", "roberta", "modernbert"])
def test_passes_with_a_backward_run_eager_attention_under_bf16_on_cpu_and_give_the_kernel_back(bf16_cpu, family):
    from bertlottery.evaluation import predict
    from bertlottery.fisher import fisher_scores
    from bertlottery.importance import structured_importance
    from bertlottery.training import TrainSettings, finetune

    from tiny import tiny_batch, tiny_model

    model = tiny_model(family, seed=1)
    assert model.config._attn_implementation == "sdpa"
    seen = _kernels_seen(model)
    batches = [{**tiny_batch(batch=4, length=9, seed=s), "index": torch.arange(4 * s, 4 * s + 4)} for s in range(2)]
    passes = {
        "importance": lambda p: structured_importance(model, batches, precision=p),
        "fisher": lambda p: fisher_scores(model, batches, precision=p),
        "training": lambda p: finetune(model, lambda epoch: [{k: v for k, v in b.items() if k != "index"} for b in batches],
                                       TrainSettings(learning_rate=1e-4, epochs=1, seed=5, precision=p), progress=False),
        "evaluation": lambda p: predict(model, batches, precision=p),
    }
    for name, run in passes.items():
        for precision in ("bf16", "fp32"):
            seen.clear()
            run(precision)
            expected = "eager" if precision == "bf16" and name != "evaluation" else "sdpa"
            assert seen and set(seen) == {expected}, (name, precision, seen)
            assert model.config._attn_implementation == "sdpa"  # given back


def test_the_two_attention_kernels_give_the_same_scores(bf16_cpu):
    """Eager and SDPA compute one function through the gates' hooks: importance and Fisher scores agree
    to float rounding in fp32; under bf16 (eager, by the rule) they are as close to fp32 as bf16 is."""
    from bertlottery.fisher import fisher_scores
    from bertlottery.importance import structured_importance

    from tiny import tiny_batch, tiny_model

    model = tiny_model(seed=2)
    batches = [tiny_batch(batch=6, length=13, seed=s) for s in range(2)]
    sdpa = structured_importance(model, batches), fisher_scores(model, batches)  # fp32 keeps SDPA
    model.set_attn_implementation("eager")
    eager = structured_importance(model, batches), fisher_scores(model, batches)
    for got, want in ((eager[0].heads, sdpa[0].heads), (eager[0].mlps, sdpa[0].mlps),
                      (eager[1].head_grads, sdpa[1].head_grads), (eager[1].neuron_grads, sdpa[1].neuron_grads)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    model.set_attn_implementation("sdpa")
    low = structured_importance(model, batches, precision="bf16")
    assert not torch.equal(low.heads, sdpa[0].heads)
    torch.testing.assert_close(low.heads, sdpa[0].heads, atol=0.05, rtol=0.1)


def test_an_evaluation_autocasts_once_for_the_whole_split_and_gives_the_per_batch_outputs(bf16_cpu, monkeypatch):
    """Inside one autocast region each weight is cast to bf16 once (autocast keeps the cast), not once per
    batch; the outputs are those of a region per batch, exactly (the same casts)."""
    import bertlottery.evaluation as evaluation

    from tiny import tiny_batch, tiny_model

    model = tiny_model(seed=0).eval()
    batches = [{**tiny_batch(batch=4, length=7 + s, seed=s), "index": torch.arange(4 * s, 4 * s + 4)} for s in range(3)]
    regions = []
    real = evaluation.autocast
    monkeypatch.setattr(evaluation, "autocast", lambda *a: regions.append(a) or real(*a))
    outputs, _ = evaluation.predict(model, batches, precision="bf16")
    assert len(regions) == 1 and regions[0][0] == "bf16"
    expected = []
    with torch.no_grad():
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                inputs = {k: v for k, v in batch.items() if k not in ("labels", "index")}
                expected.append(model(**inputs).logits.float())
    assert torch.equal(torch.from_numpy(outputs), torch.cat(expected))
