"""Inference time of MiniLM-L6 with heads and MLPs physically removed, against the full model and its FLOPs.

    python benchmarks/bench_export.py                        # RTE dev, 1 thread, 15 repetitions
    python benchmarks/bench_export.py --repeats 30 --threads 2

An s-pruning-like mask (about half the heads kept, one layer left with none, 2 of 6 MLPs removed) is
applied three ways to the same pre-trained model: not at all (full), with gates (`gated`: as costly as
full), and by `export_pruned` (the weights are gone). Every variant runs over all RTE dev batches (batch
32, length-grouped, each padded to its own longest example) in eval mode under ``torch.no_grad``. Each
repetition runs every variant once, in an order rotated from one repetition to the next, so slow phases
of a noisy machine hit all variants alike; ratios are taken inside a repetition and their median printed.

The FLOP reduction is the ratio of the encoder body's multiply-accumulates (`body_macs_per_token`) summed
over every token of those batches, padding included, at each batch's own length. Embeddings, LayerNorms,
softmax, GELU and the classifier are not counted and are not made cheaper, so the measured speed-up falls
somewhat short of the FLOP reduction. Target: speed-up / FLOP reduction >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from _common import benchmark_parser, setup
from bertlottery.data import make_loader, read_glue_split, tokenize
from bertlottery.export import body_macs_per_token, export_pruned
from bertlottery.masking import gated
from bertlottery.masks import HeadMask, MlpMask
from bertlottery.models import load_model, load_tokenizer, model_layout
from bertlottery.tasks import get_task

TARGET = 0.8
EMPTY_LAYER = 3
MLPS_REMOVED = (2, 5)


def parse_args() -> argparse.Namespace:
    parser = benchmark_parser(__doc__, repeats=15)
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args()


def s_pruning_like_masks(num_layers: int, num_heads: int, seed: int) -> tuple[HeadMask, MlpMask]:
    """Half the heads kept, drawn at random from every layer but one, which keeps none; 2 MLPs off."""
    others = [layer for layer in range(num_layers) if layer != EMPTY_LAYER]
    drawn = HeadMask.random_like(HeadMask.full(len(others), num_heads), keep=num_layers * num_heads // 2, seed=seed)
    keep = torch.zeros(num_layers, num_heads, dtype=torch.bool)
    keep[others] = drawn.keep
    mlps = torch.ones(num_layers, dtype=torch.bool)
    mlps[list(MLPS_REMOVED)] = False
    return HeadMask(keep), MlpMask(mlps)


def run(model, batches) -> None:
    for batch in batches:
        model(**batch)


def main() -> None:
    args = parse_args()
    setup(args)

    # Set-up: the real RTE dev set in length-grouped batches, the model, the masks, the exported copy.
    task = get_task("RTE")
    tokenizer = load_tokenizer("minilm-l6")
    split = tokenize(read_glue_split(task, Path(args.glue_dir), "dev"), tokenizer, max_length=128)
    loader = make_loader(split, tokenizer.pad_token_id, args.batch_size, shuffle=False, seed=None)
    batches = [{k: v for k, v in b.items() if k not in ("labels", "index")} for b in loader]

    model = load_model("minilm-l6", task.num_labels, seed=0).eval()
    layout = model_layout(model)
    heads, mlps = s_pruning_like_masks(layout.num_layers, layout.num_heads, args.seed)
    exported = export_pruned(model, heads, mlps).eval()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
          f"MiniLM-L6 ({layout.num_layers} layers x {layout.num_heads} heads, d={layout.hidden_size}, "
          f"f={layout.intermediate_size}); RTE dev: {len(split)} examples in {len(batches)} batches, lengths "
          f"{', '.join(str(b['input_ids'].shape[1]) for b in batches)}; {args.repeats} repetitions (+1 warm-up)")
    print("\nmask (1 = head kept)")
    for layer in range(layout.num_layers):
        row = " ".join(str(int(k)) for k in heads.keep[layer])
        print(f"  layer {layer}: {row}   MLP {'kept' if mlps.keep[layer] else 'removed'}")
    print(f"  {heads.n_kept}/{heads.n_total} heads, {mlps.n_kept}/{mlps.n_total} MLPs kept")

    full_params = sum(p.numel() for p in model.parameters())
    pruned_params = sum(p.numel() for p in exported.parameters())
    print(f"\nparameters: full {full_params:,}, exported {pruned_params:,} "
          f"(encoder body {layout.body_params:,} -> {layout.body_params - (full_params - pruned_params):,})")

    # Equivalence on exactly the timed batches.
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            with gated(model, heads=heads, mlps=mlps):
                expected = model(**batch).logits
            worst = max(worst, (exported(**batch).logits - expected).abs().max().item())
    print(f"max |exported - gated| logit difference over all {len(split)} examples: {worst:.2e}")

    # FLOPs at the batches' real lengths: every position of a padded batch is computed.
    def macs(h, m):
        return sum(b["input_ids"].numel() * body_macs_per_token(layout, b["input_ids"].shape[1], h, m) for b in batches)

    flop_reduction = macs(None, None) / macs(heads, mlps)

    # Loop: repetition 0 warms up and is not counted.
    variants = {"full": model, "gated": model, "exported": exported}
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for rep in range(args.repeats + 1):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                if name == "gated":
                    with gated(model, heads=heads, mlps=mlps):
                        start = time.perf_counter()
                        run(model, batches)
                        elapsed = time.perf_counter() - start
                else:
                    start = time.perf_counter()
                    run(variants[name], batches)
                    elapsed = time.perf_counter() - start
                if rep > 0:
                    times[name].append(elapsed)

    # Report: medians of the per-repetition speed-ups over full.
    print(f"\n{'variant':<10} {'median time':>12} {'speed-up':>9} {'speed-up IQR':>14}")
    for name in names:
        ups = [f / t for f, t in zip(times["full"], times[name])]
        # quartiles need two points; one repetition reports its single ratio as its own range
        q1, _, q3 = statistics.quantiles(ups, n=4) if len(ups) > 1 else (ups[0], ups[0], ups[0])
        print(f"{name:<10} {statistics.median(times[name]) * 1e3:>10.1f}ms {statistics.median(ups):>9.3f} "
              f"{f'{q1:.3f}-{q3:.3f}':>14}")
    speed_up = statistics.median(f / t for f, t in zip(times["full"], times["exported"]))
    efficiency = speed_up / flop_reduction
    print(f"\nbody FLOP reduction (full / exported): {flop_reduction:.3f}x")
    print(f"measured speed-up (full / exported):   {speed_up:.3f}x")
    print(f"speed-up / FLOP reduction:             {efficiency:.3f} (target >= {TARGET}) "
          f"{'PASS' if efficiency >= TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
