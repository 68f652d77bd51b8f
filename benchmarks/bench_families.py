"""Training and scoring throughput of the bert-base-sized MPNet (alias mpnet-base) beside MiniLM-L6.

    python benchmarks/bench_families.py                    # 2 batches of 16 real RTE pairs, 1 thread
    python benchmarks/bench_families.py --batches 4 --repeats 3

What a bert-base-sized lottery study costs on this machine, relative to the packaged MiniLM: for each
model, examples per second of
- training: `finetune`'s optimiser step (forward, backward, AdamW) in train mode;
- evaluation: a forward pass under ``torch.no_grad`` in eval mode;
- scoring: `structured_importance`, the s-pruning importance pass (a backward pass through the gates).
Both models see the same real RTE train pairs, batch 16, tokenised to at most 128 tokens and padded to
each batch's longest (RTE's pairs mostly reach 128). Each repetition runs every variant once, the
models in alternating order; the figures are medians over repetitions, and the ratio MiniLM / MPNet is
how many times longer the same study takes with MPNet-base. No target: it is a measurement.

Measured 2026-11-29 (`--repeats 3`, 1 thread, on the 2-core machine shared with other jobs, load
around 12: indicative only): training 2.31 vs 0.28 examples/s (8.2x), evaluation 10.1 vs 1.24 (8.1x),
scoring 5.95 vs 0.77 (7.7x); the encoder bodies' multiply-accumulates per token at length 70 differ by
7.9x (`body_macs_per_token`: 10.9M against 86.2M).
"""

from __future__ import annotations

import statistics
import time

import torch

from _common import benchmark_parser, setup
from bertlottery.data import make_loader, read_glue_split, tokenize
from bertlottery.importance import structured_importance
from bertlottery.models import load_model, load_tokenizer, model_layout
from bertlottery.tasks import get_task
from bertlottery.training import build_adamw, decay_groups

MODELS = ("minilm-l6", "mpnet-base")
BATCH_SIZE, MAX_LENGTH = 16, 128


def real_batches(name: str, glue_dir: str, n: int) -> list[dict[str, torch.Tensor]]:
    tokenizer = load_tokenizer(name)
    examples = read_glue_split(get_task("RTE"), glue_dir, "train")[: n * BATCH_SIZE]
    split = tokenize(examples, tokenizer, max_length=MAX_LENGTH)
    keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
    return [{k: v for k, v in b.items() if k in keys}
            for b in make_loader(split, tokenizer.pad_token_id or 0, BATCH_SIZE, shuffle=False, seed=None)]


def train_seconds(model, batches) -> float:
    model.train()
    optimizer = build_adamw(decay_groups(model, 0.0), lr=2e-5, eps=1e-8)
    started = time.perf_counter()
    for batch in batches:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def eval_seconds(model, batches) -> float:
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            model(**{k: v for k, v in batch.items() if k != "labels"})
    return time.perf_counter() - started


def score_seconds(model, batches) -> float:
    model.eval()
    started = time.perf_counter()
    structured_importance(model, batches)
    return time.perf_counter() - started


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--batches", type=int, default=2, help="batches of 16 per variant (default: %(default)s)")
    args = parser.parse_args()
    setup(args)
    models = {name: load_model(name, 2, seed=args.seed) for name in MODELS}
    data = {name: real_batches(name, args.glue_dir, args.batches) for name in MODELS}
    n_examples = {name: sum(len(b["labels"]) for b in data[name]) for name in MODELS}
    for name, model in models.items():
        layout = model_layout(model)
        print(f"{name}: {layout.family}, {layout.num_layers} layers x {layout.num_heads} heads, hidden {layout.hidden_size}, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; "
              f"{n_examples[name]} RTE pairs, mean length {statistics.mean(int(b['attention_mask'].sum(1).float().mean()) for b in data[name]):.0f}")

    kinds = {"train": train_seconds, "eval": eval_seconds, "score": score_seconds}
    rates: dict[tuple[str, str], list[float]] = {(m, k): [] for m in MODELS for k in kinds}
    for repeat in range(args.repeats):
        for name in MODELS if repeat % 2 == 0 else reversed(MODELS):
            for kind, timed in kinds.items():
                rates[name, kind].append(n_examples[name] / timed(models[name], data[name]))

    print(f"\nexamples/s, batch {BATCH_SIZE}, max_length {MAX_LENGTH}, {args.threads} thread(s), "
          f"median of {args.repeats} repetition(s)")
    print(f"{'':8}{MODELS[0]:>12}{MODELS[1]:>12}{'ratio':>8}")
    for kind in kinds:
        small, big = (statistics.median(rates[m, kind]) for m in MODELS)
        print(f"{kind:8}{small:12.2f}{big:12.2f}{small / big:7.1f}x")


if __name__ == "__main__":
    main()
