"""Evaluation time of MiniLM-L6 on real GLUE dev sets: length-grouped dynamic padding vs padding to 128.

    python benchmarks/bench_padding.py                      # CoLA and RTE dev, 1 thread, 3 repetitions
    python benchmarks/bench_padding.py --repeats 9 --threads 2

Both variants evaluate the same model (eval mode, no gradients, through `bertlottery.evaluation.predict`)
on the whole dev set with batches of 64:

    grouped    make_loader(..., group_by_length=True): examples sorted by length, each batch padded
               to its own longest example
    padded128  make_loader(..., group_by_length=False, pad_to=128): file order, every batch 64 x 128

Each repetition runs both variants on every task, in alternating order (grouped first on even
repetitions, padded first on odd ones); the speed-up padded/grouped is taken inside each repetition
and the median over repetitions is printed, for wall-clock time (the verdict) and for the process's
CPU time (steadier on a shared machine: it does not count waiting for a core). The predictions (argmax) of both are compared example by
example: padding must not change them.

Target: speed-up >= 3x on CoLA.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _common import benchmark_parser, setup
from bertlottery.data import make_loader, read_glue_split, tokenize
from bertlottery.evaluation import predict
from bertlottery.models import load_model, load_tokenizer
from bertlottery.tasks import get_task

TARGETS = {"CoLA": 3.0}


def parse_args() -> argparse.Namespace:
    parser = benchmark_parser(__doc__, repeats=3)
    parser.add_argument("--tasks", nargs="+", default=["CoLA", "RTE"])
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_args()


def token_counts(loader) -> tuple[int, int]:
    """(positions the model processes, of which padding)."""
    positions = padding = 0
    for batch in loader:
        mask = batch["attention_mask"]  # (B, T), 1 = real token
        positions += mask.numel()
        padding += int((mask == 0).sum())
    return positions, padding


def main() -> None:
    args = parse_args()
    setup(args)

    # Set-up: per task, the two loaders over the same tokenised dev split, and one model per label count.
    tokenizer = load_tokenizer("minilm-l6")
    models: dict[int, torch.nn.Module] = {}
    setups = {}
    for name in args.tasks:
        task = get_task(name)
        split = tokenize(read_glue_split(task, Path(args.glue_dir), "dev"), tokenizer, max_length=128)
        loaders = {
            "grouped": make_loader(split, tokenizer.pad_token_id, args.batch_size, shuffle=False, seed=None,
                                   group_by_length=True),
            "padded128": make_loader(split, tokenizer.pad_token_id, args.batch_size, shuffle=False, seed=None,
                                     group_by_length=False, pad_to=128),
        }
        if task.num_labels not in models:
            models[task.num_labels] = load_model("minilm-l6", task.num_labels, seed=args.seed).eval()
        setups[task.name] = (models[task.num_labels], split, loaders)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
          f"batch {args.batch_size}; {args.repeats} repetition(s) after a one-batch warm-up")

    # Warm-up: one batch of each loader (first-call allocations), not timed.
    for model, _, loaders in setups.values():
        for loader in loaders.values():
            first = {k: v for k, v in next(iter(loader)).items() if k != "index"}  # no scatter for one batch
            predict(model, [first])

    # Loop: both variants on every task per repetition, their order alternating.
    times = {(t, v): [] for t in setups for v in ("grouped", "padded128")}  # wall-clock seconds
    cpu_times = {key: [] for key in times}  # process CPU seconds
    outputs = {}
    for rep in range(args.repeats):
        order = ("grouped", "padded128") if rep % 2 == 0 else ("padded128", "grouped")
        for task_name, (model, _, loaders) in setups.items():
            for variant in order:
                start, cpu_start = time.perf_counter(), time.process_time()
                logits, _ = predict(model, loaders[variant])
                times[task_name, variant].append(time.perf_counter() - start)
                cpu_times[task_name, variant].append(time.process_time() - cpu_start)
                outputs[task_name, variant] = logits

    # Report: one row per variant; speed-up (padded128 / grouped) and agreement on the padded128 row.
    print(f"\n{'task':<5} {'n':>5} {'variant':<10} {'positions':>9} {'padding':>8} {'pad %':>6} {'wall s':>7} "
          f"{'CPU s':>6} {'speed-up':>8} {'range':>11} {'CPU x':>6} {'target':>6}  predictions")
    for task_name, (_, split, loaders) in setups.items():
        wall = {v: times[task_name, v] for v in ("grouped", "padded128")}
        cpu = {v: cpu_times[task_name, v] for v in ("grouped", "padded128")}
        speedups = [p / g for g, p in zip(wall["grouped"], wall["padded128"])]
        cpu_speedups = [p / g for g, p in zip(cpu["grouped"], cpu["padded128"])]
        grouped_out, padded_out = outputs[task_name, "grouped"], outputs[task_name, "padded128"]
        agree = int((grouped_out.argmax(-1) == padded_out.argmax(-1)).sum())
        max_diff = float(np.abs(grouped_out - padded_out).max())
        for variant in ("grouped", "padded128"):
            positions, padding = token_counts(loaders[variant])
            line = (f"{task_name:<5} {len(split):>5} {variant:<10} {positions:>9,} {padding:>8,} "
                    f"{padding / positions:>6.1%} {statistics.median(wall[variant]):>7.2f} "
                    f"{statistics.median(cpu[variant]):>6.2f}")
            if variant == "padded128":
                target = TARGETS.get(task_name)
                verdict = "" if target is None else ("PASS" if statistics.median(speedups) >= target else "FAIL")
                line += (f" {statistics.median(speedups):>7.2f}x {f'{min(speedups):.2f}-{max(speedups):.2f}':>11} "
                         f"{statistics.median(cpu_speedups):>5.2f}x {f'>={target:.0f}x' if target else '-':>6} "
                         f"{verdict:<4} argmax agree {agree}/{len(split)}, max |dlogit| {max_diff:.1e}")
            print(line)

if __name__ == "__main__":
    main()
