"""Head and MLP importance over RTE dev on MiniLM-L6: `structured_importance` against the paper's way.

    python benchmarks/bench_importance.py                          # 3 repetitions, 1 thread
    python benchmarks/bench_importance.py --repeats 5 --threads 2

The baseline is importance scoring as the paper's code and transformers' old bertology example
(``run_bertology.py``, ``compute_heads_importance``) did it, rebuilt on transformers 5, which dropped
``head_mask``:

- eager attention that materialises and returns the attention probabilities (``output_attentions``),
  with a ``head_mask: float[layer, head]`` (``requires_grad``) that multiplies them inside every layer:
  a custom attention function registered with ``transformers.AttentionInterface``;
- an MLP gate ``mlp_mask: float[layer]`` multiplying the MLP output projection's output (a forward hook);
- ``loss.backward()`` with every model parameter still requiring grad, so each backward pass also
  computes (and accumulates) all weight gradients, as the old scripts did;
- batches of 64 in file order, each padded to 128 tokens (their DataLoader padded to max_seq_length).

The package (`bertlottery.importance.structured_importance`) gates each head's slice of the attention
output projection's input instead (so SDPA serves), freezes the weights so backward computes activation
gradients only, and takes length-grouped, dynamically padded batches (`make_loader`).

Both compute the same quantity: |gate gradient of the batch's mean loss| summed over batches, divided
by the number of real tokens; head scores L2-normalised per layer, MLP scores not. (The old script never
zeroed ``head_mask.grad`` between batches; the baseline here does, to match the paper's released code (docs/algorithms.md), and that
costs nothing.) The score depends on which examples share a batch, so scores are compared only between
runs over the same batches: every variant against the baseline method on its own batches. (Length
grouping is no worse there than any other order: on MiniLM fine-tuned one epoch on RTE, head scores from
grouped batches had Spearman 0.57 with those from file order, a seeded shuffle 0.55.)

Variants, each timed over the whole split:
    baseline                    the paper's way, as above
    baseline +frozen            the same with the weights frozen (no weight gradients)
    baseline +grouped           the same on the package's length-grouped, dynamically padded batches
    baseline +grouped +frozen   both: all that differs from the package is where the head gate acts
    package @128 file order     structured_importance on the baseline's batches
    package                     structured_importance as used, on length-grouped batches

Each repetition runs every variant once, in an order rotated from one repetition to the next, so slow
phases of a noisy machine hit all alike; speed-ups are taken inside each repetition against that
repetition's baseline, and the median over repetitions is printed. Target: package >= 2x faster.
A repetition costs about 90 s of CPU (1 thread): the default 3 take about 5 minutes on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from _common import benchmark_parser, setup
from bertlottery.data import make_loader, read_glue_split, tokenize
from bertlottery.importance import normalize_heads_by_layer, structured_importance
from bertlottery.models import adapter_for, load_model, load_tokenizer, model_layout
from bertlottery.tasks import get_task

ATTENTION = "eager_head_mask"
SPEED_TARGET = 2.0
AGREEMENT_TARGET = 1e-4
BATCH_SIZE = 64  # the paper's scoring batch (docs/algorithms.md)
MAX_LENGTH = 128


def parse_args() -> argparse.Namespace:
    parser = benchmark_parser(__doc__, repeats=3)
    return parser.parse_args()


# ---- the baseline: attention probabilities multiplied by a head mask, the way transformers 4 did ----

def _eager_head_mask_attention(
    module: nn.Module,
    query: torch.Tensor,  # (B, H, T, dh)
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # additive, (B, 1, T, T)
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager_attention_forward plus transformers 4's ``attention_probs * head_mask``."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, T)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    head_mask = getattr(module, "bench_head_mask", None)
    if head_mask is not None:
        probs = probs * head_mask[module.layer_idx].view(1, -1, 1, 1)  # indexed here, inside the graph
    context = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, T, H, dh)
    return context, probs


def register_head_mask_attention() -> None:
    """Make ``attn_implementation="eager_head_mask"`` known to transformers (attention and its mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION, _eager_head_mask_attention)
    # BertModel builds its padding mask through the mask interface of the same name: the additive one.
    AttentionMaskInterface.register(ATTENTION, eager_mask)


def _self_attentions(model: nn.Module) -> list[nn.Module]:
    found = [m for m in model.modules() if getattr(m, "layer_idx", None) is not None and hasattr(m, "query")]
    layers = model_layout(model).num_layers
    if sorted(m.layer_idx for m in found) != list(range(layers)):
        raise RuntimeError(f"expected one self-attention module with layer_idx per layer (0..{layers - 1})")
    return found


@contextmanager
def probability_masked(model: nn.Module, head_mask: torch.Tensor, mlp_mask: torch.Tensor) -> Iterator[None]:
    """Head mask on the attention probabilities (needs the eager_head_mask attention), MLP gate by hook."""
    attentions = _self_attentions(model)
    handles = []
    try:
        for module in attentions:
            module.bench_head_mask = head_mask
        for index, parts in enumerate(adapter_for(model).layers(model)):
            handles.append(parts.mlp_out.register_forward_hook(
                lambda module, args, output, index=index: output * mlp_mask[index]
            ))
        yield
    finally:
        for module in attentions:
            del module.bench_head_mask
        for handle in handles:
            handle.remove()


@contextmanager
def weights_requiring_grad(model: nn.Module, flag: bool) -> Iterator[None]:
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(flag)
        yield
    finally:
        for p, old in saved:
            p.requires_grad_(old)
        model.zero_grad(set_to_none=True)


def baseline_importance(
    model: nn.Module, batches: list[dict], *, frozen: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``compute_heads_importance`` of run_bertology.py, with an MLP mask beside the head mask."""
    layout = model_layout(model)
    head_mask = torch.ones(layout.num_layers, layout.num_heads, requires_grad=True)
    mlp_mask = torch.ones(layout.num_layers, requires_grad=True)
    head_total = torch.zeros(layout.num_layers, layout.num_heads)
    mlp_total = torch.zeros(layout.num_layers)
    n_tokens = 0
    model.eval()
    with weights_requiring_grad(model, not frozen), probability_masked(model, head_mask, mlp_mask):
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k != "index"}
            outputs = model(**inputs, output_attentions=True)
            outputs.loss.backward()  # weight gradients too, unless frozen
            head_total += head_mask.grad.abs()
            mlp_total += mlp_mask.grad.abs()
            head_mask.grad = mlp_mask.grad = None
            n_tokens += int(inputs["attention_mask"].sum())
    return normalize_heads_by_layer(head_total / n_tokens), mlp_total / n_tokens


def package_importance(model: nn.Module, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    scores = structured_importance(model, batches)
    return scores.heads, scores.mlps


def max_relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()).abs() / b.double().abs().clamp_min(1e-30)).max())


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [x.double().argsort().argsort().double() for x in (a, b)]  # continuous scores: no ties
    ranks = [r - r.mean() for r in ranks]
    return float((ranks[0] * ranks[1]).sum() / (ranks[0].norm() * ranks[1].norm()))


def shapes(batches: list[dict]) -> str:
    return " ".join("x".join(map(str, b["input_ids"].shape)) for b in batches)


def main() -> None:
    args = parse_args()
    setup(args)
    register_head_mask_attention()

    # Set-up: RTE dev three ways, and two copies of one model (same weights, different attention).
    task = get_task("RTE")
    tokenizer = load_tokenizer("minilm-l6")
    split = tokenize(read_glue_split(task, Path(args.glue_dir), "dev"), tokenizer, max_length=MAX_LENGTH)

    def batches_of(**options) -> list[dict]:
        return list(make_loader(split, tokenizer.pad_token_id, BATCH_SIZE, shuffle=False, seed=None, **options))

    fixed = batches_of(group_by_length=False, pad_to=MAX_LENGTH)  # the old scripts: file order, pad to 128
    file_order_dynamic = batches_of(group_by_length=False)  # not timed: shown to say why grouping matters
    grouped = batches_of()  # the package's: longest first, each batch padded to its longest

    package_model = load_model("minilm-l6", task.num_labels, seed=args.seed).eval()
    baseline_model = copy.deepcopy(package_model)
    baseline_model.set_attn_implementation(ATTENTION)
    if not all(torch.equal(p, q) for p, q in zip(package_model.parameters(), baseline_model.parameters())):
        raise RuntimeError("the two copies of the model have different weights")

    variants: dict[str, tuple[Callable[[], tuple[torch.Tensor, torch.Tensor]], str]] = {
        "baseline": (lambda: baseline_importance(baseline_model, fixed), "fixed"),
        "baseline +frozen": (lambda: baseline_importance(baseline_model, fixed, frozen=True), "fixed"),
        "baseline +grouped": (lambda: baseline_importance(baseline_model, grouped), "grouped"),
        "baseline +grouped +frozen": (lambda: baseline_importance(baseline_model, grouped, frozen=True), "grouped"),
        "package @128 file order": (lambda: package_importance(package_model, fixed), "fixed"),
        "package": (lambda: package_importance(package_model, grouped), "grouped"),
    }
    reference = {"fixed": "baseline", "grouped": "baseline +grouped"}  # same batches, the paper's method
    names = list(variants)

    real = int(split.lengths.sum())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
          f"MiniLM-L6, {model_layout(package_model).num_layers}x{model_layout(package_model).num_heads} heads, "
          f"attention {package_model.config._attn_implementation} (package) / "
          f"{baseline_model.config._attn_implementation} (baseline)")
    print(f"RTE dev: {len(split)} examples, {real} real tokens, batch {BATCH_SIZE}")
    for label, batches in (("fixed 128, file order", fixed), ("dynamic, file order", file_order_dynamic),
                           ("dynamic, length-grouped", grouped)):
        cells = sum(b["input_ids"].numel() for b in batches)
        print(f"  {label:<24} {shapes(batches):<40} {cells:>6} token slots ({real / cells:.0%} real)")

    # Warm-up: every variant once over its first batch (allocator, thread pools), not timed.
    warm = {"fixed": fixed[:1], "grouped": grouped[:1]}
    baseline_importance(baseline_model, warm["fixed"])
    package_importance(package_model, warm["grouped"])

    times: dict[str, list[float]] = {name: [] for name in names}  # wall clock
    cpu: dict[str, list[float]] = {name: [] for name in names}  # this process's CPU time
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    print(f"\n{args.repeats} repetitions of {len(names)} variants, order rotated each repetition")
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            run, _ = variants[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            result = run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            scores.setdefault(name, result)
        print(f"  rep {rep + 1} (wall/cpu): "
              + ", ".join(f"{name} {times[name][-1]:.1f}/{cpu[name][-1]:.1f}s" for name in names), flush=True)

    # Report: medians of times, medians of per-repetition speed-ups over the baseline, score agreement.
    # Wall time is what a user waits; CPU time (1 thread) is less disturbed by other processes on the cores.
    def speedups(name: str, clock: dict[str, list[float]]) -> list[float]:
        return [b / t for b, t in zip(clock["baseline"], clock[name])]

    print(f"\n{'variant':<26} {'wall':>7} {'cpu':>7} {'speed-up wall (range)':>22} {'cpu':>6} "
          f"{'heads rel diff':>15} {'MLPs rel diff':>14}  vs (same batches)")
    for name in names:
        wall, ref = speedups(name, times), reference[variants[name][1]]
        same = name == ref
        diffs = ["-" if same else f"{max_relative_difference(scores[name][k], scores[ref][k]):.1e}" for k in (0, 1)]
        print(f"{name:<26} {statistics.median(times[name]):>6.1f}s {statistics.median(cpu[name]):>6.1f}s "
              f"{statistics.median(wall):>8.2f}x ({min(wall):.2f}-{max(wall):.2f}) "
              f"{statistics.median(speedups(name, cpu)):>5.2f}x {diffs[0]:>15} {diffs[1]:>14}  {'' if same else ref}")

    # Attribution: the ladder baseline -> +grouped -> +frozen -> package multiplies out to the total.
    def factor(slow: str, fast: str) -> float:
        return statistics.median([a / b for a, b in zip(times[slow], times[fast])])

    steps = [("length-grouped dynamic padding", "baseline", "baseline +grouped"),
             ("frozen weights (no weight gradients)", "baseline +grouped", "baseline +grouped +frozen"),
             ("gate on attention-output input, SDPA", "baseline +grouped +frozen", "package")]
    alone = [("length-grouped dynamic padding", "baseline", "baseline +grouped"),
             ("frozen weights", "baseline", "baseline +frozen"),
             ("frozen weights + gate/SDPA (the method)", "baseline", "package @128 file order")]
    print("\nwhere the speed-up comes from (median per-repetition ratios of wall time)")
    print("  cumulative: " + " x ".join(f"{label} {factor(a, b):.2f}" for label, a, b in steps)
          + f" = {factor('baseline', 'package'):.2f}")
    print("  each alone, against the baseline: " + ", ".join(f"{label} {factor(a, b):.2f}x" for label, a, b in alone))

    # Agreement: between the two methods on identical batches (padding changes nothing but float rounding).
    pairs = [("package", "baseline +grouped"), ("package @128 file order", "baseline")]
    worst = 0.0
    for name, ref in pairs:
        heads_diff = max_relative_difference(scores[name][0], scores[ref][0])
        mlps_diff = max_relative_difference(scores[name][1], scores[ref][1])
        worst = max(worst, heads_diff, mlps_diff)
        print(f"agreement, {name} vs {ref}: max relative difference heads {heads_diff:.1e}, MLPs {mlps_diff:.1e}")
    print(f"agreement: worst {worst:.1e} (target <= {AGREEMENT_TARGET:.0e}): "
          f"{'PASS' if worst <= AGREEMENT_TARGET else 'FAIL'}")

    grouped_heads, fixed_heads = scores["package"][0].flatten(), scores["baseline"][0].flatten()
    k = len(fixed_heads) // 10  # one pruning step's worth of heads (10%)
    lowest = len(set(grouped_heads.argsort()[:k].tolist()) & set(fixed_heads.argsort()[:k].tolist()))
    print(f"note, batch composition: |.| is taken per batch, so length-grouped batches (package) and file-order "
          f"batches (baseline) give different scores: heads Spearman {spearman(grouped_heads, fixed_heads):.3f}, "
          f"{lowest}/{k} of the lowest 10% shared, relative L2 difference "
          f"{rel_l2(scores['package'][0], scores['baseline'][0]):.1%} (heads), "
          f"{rel_l2(scores['package'][1], scores['baseline'][1]):.1%} (MLPs)")

    speedup = statistics.median(speedups("package", times))
    cpu_speedup = statistics.median(speedups("package", cpu))
    verdict = "PASS" if speedup >= SPEED_TARGET else "FAIL"
    print(f"speed-up: package {speedup:.2f}x faster than the baseline in wall time ({cpu_speedup:.2f}x in CPU time; "
          f"medians of per-repetition ratios; target >= {SPEED_TARGET:.0f}x): {verdict}")

if __name__ == "__main__":
    main()
