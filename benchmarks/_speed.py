"""What the speed benchmarks share: the model, batches, a training step, and the setup of the pass benchmarks.

``--quick`` swaps the packaged MiniLM for a tiny BERT built in code and real data for a few examples,
so that every script runs in well under a minute (the tests run them that way).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bertlottery.models import load_model

from bertlottery.steps.taskdata import prepare_task_data

__all__ = ["prepare_task_data", "model_for", "synthetic_batch", "optimizer_for", "train_step", "timed", "rotated",
           "median_ratio", "PassBench", "pass_bench", "alternated_medians"]
from bertlottery.training import build_adamw, decay_groups


def model_for(quick: bool, num_labels: int = 2, seed: int = 0) -> nn.Module:
    """MiniLM-L6 (pre-trained, classifier from ``seed``), or with ``quick`` a 2-layer BERT with its vocabulary."""
    if not quick:
        return load_model("minilm-l6", num_labels, seed=seed)
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=128, num_labels=num_labels)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")


def synthetic_batch(batch_size: int, length: int, seed: int = 0, vocab: int = 30522) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1000, vocab, (batch_size, length), generator=generator),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch_size,), generator=generator),
    }


def optimizer_for(model: nn.Module) -> torch.optim.Optimizer:
    # finetune()'s optimiser: fused AdamW, the paper's eps, no weight decay
    return build_adamw(decay_groups(model, 0.0), lr=2e-5, eps=1e-8)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, precision=None) -> None:
    """Forward, backward, clip at 1.0, AdamW step: what finetune() does per batch."""
    import contextlib

    with precision or contextlib.nullcontext():
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rotated(names: list[str], rep: int) -> list[str]:
    """``names`` rotated by ``rep``: each repetition runs every variant, slow phases hit all alike."""
    k = rep % len(names)
    return names[k:] + names[:k]


def median_ratio(numerators: list[float], denominators: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-repetition ratios."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else (min(ratios), statistics.median(ratios), max(ratios))
    return median, q1, q3


class PassBench:
    """What bench_attention and bench_last_layer measure their variants on: the parsed ``args``, the
    training-step shapes (``lengths``, ``batch_size``), ``repeats``, an evaluated/scored ``model`` and a
    ``trained`` copy with its ``optimizer``, and real SST-2 passes: ``dev`` (batches of 64, the s-search's
    scoring batch) and a Fisher ``sample`` (512 training sentences; fewer with ``--quick``)."""

    def __init__(self, args) -> None:
        import copy
        from pathlib import Path

        from bertlottery.fisher import fisher_sample
        from bertlottery.models import load_tokenizer
        from bertlottery.tasks import get_task

        self.args = args
        self.lengths = (8, 16) if args.quick else (16, 48, 128)
        self.batch_size = 4 if args.quick else 32
        self.repeats = 1 if args.quick else args.repeats
        self.task = get_task("SST-2")
        self.model = model_for(args.quick).eval()  # scored and evaluated, never trained: every variant sees the same weights
        self.trained = copy.deepcopy(self.model)
        data = prepare_task_data(self.task, load_tokenizer("minilm-l6"), Path(args.glue_dir),
                                 max_train_examples=64 if args.quick else 4000)
        self.dev = list(data.eval_batches(data.main_split, 64))[: 2 if args.quick else None]
        self.sample = list(fisher_sample(data.train, data.pad_id, n_examples=32 if args.quick else 512, seed=args.seed))
        self.optimizer = optimizer_for(self.trained)

    def header(self) -> str:
        from bertlottery.precision import cpu_model

        return (f"CPU: {cpu_model()}; {torch.get_num_threads()} thread(s); MiniLM-L6"
                f"{' (quick: a tiny BERT)' if self.args.quick else ''}; median of {self.repeats} alternating "
                "repetitions; shared machine: read the ratios")


def pass_bench(doc: str) -> PassBench:
    """Parse a pass benchmark's arguments (``--repeats``, ``--quick``, ...), set up threads, build its `PassBench`."""
    from _common import benchmark_parser, setup

    parser = benchmark_parser(doc, repeats=5)
    parser.add_argument("--quick", action="store_true", help="a tiny BERT and a few examples (under a minute)")
    args = parser.parse_args()
    setup(args)
    return PassBench(args)


def alternated_medians(variants: tuple[str, ...], runs: dict[str, Callable[[], object]],
                       within: Callable[[str, str], object], repeats: int) -> dict[tuple[str, str], float]:
    """The median seconds of each ``(case, variant)`` over ``repeats`` repetitions after a warm-up, every
    repetition running each variant (in rotated order) on every case; ``within(variant, case)`` is the
    context that case runs in for that variant."""
    times: dict[tuple[str, str], list[float]] = {(c, v): [] for c in runs for v in variants}
    for rep in range(repeats + 1):
        for variant in rotated(list(variants), rep):
            for case, run in runs.items():
                with within(variant, case):
                    seconds = timed(run)
                if rep:
                    times[case, variant].append(seconds)
    return {key: statistics.median(values) for key, values in times.items()}
