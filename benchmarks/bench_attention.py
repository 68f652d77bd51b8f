"""The attention kernel of passes with a backward on CPU: transformers' SDPA against eager, side by side.

    python benchmarks/bench_attention.py             # MiniLM-L6, real SST-2, one thread
    python benchmarks/bench_attention.py --quick     # a tiny BERT, a few examples: checks the script

`bertlottery.precision.gradient_attention` runs training, importance scoring and the Fisher pass with
the eager kernel on a CPU under bf16 autocast, and keeps SDPA elsewhere. This measures why, for each
precision (bf16, fp32) and kernel (sdpa, eager), alternating the variants in every repetition:

1. a training step (forward, backward, clipping, AdamW: `_speed.train_step`), batch 32 of random
   tokens at 16, 48 and 128 tokens;
2. a forward pass under ``no_grad`` (evaluation) at the same shapes;
3. the gate-gradient passes on real data: `importance.structured_importance` over SST-2 dev (the
   s-search's scoring) and `fisher.fisher_scores` over 512 training sentences (a quarter of the Fisher
   pass), each with the kernel forced (the rule set aside).

It prints the median time of each and the ratio SDPA / eager per precision (above 1: eager faster), and
for the gate-gradient passes the largest difference between the two kernels' scores.
"""

from __future__ import annotations

import contextlib

import torch

import bertlottery.precision as precision_module
from _speed import alternated_medians, pass_bench, synthetic_batch, train_step
from bertlottery.fisher import fisher_scores
from bertlottery.importance import structured_importance
from bertlottery.precision import autocast, resolve_precision

KERNELS = ("sdpa", "eager")


@contextlib.contextmanager
def forced(model: torch.nn.Module, kernel: str):
    """``model`` on ``kernel`` with `gradient_attention`'s rule set aside, so each pass runs what is asked."""
    rule = precision_module.gradient_attention
    precision_module.gradient_attention = lambda current, precision, device: current
    before = model.config._attn_implementation
    model.set_attn_implementation(kernel)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
        precision_module.gradient_attention = rule


def main() -> None:
    bench = pass_bench(__doc__)
    args, lengths, batch_size, repeats = bench.args, bench.lengths, bench.batch_size, bench.repeats
    model, trained, optimizer, dev, sample = bench.model, bench.trained, bench.optimizer, bench.dev, bench.sample
    print(bench.header())
    print(f"{'pass':42s} {'precision':>9s} {'sdpa s':>9s} {'eager s':>9s} {'sdpa/eager':>10s}")
    # each precision once: on a CPU without bf16 the bf16 request runs (and is measured as) fp32
    for precision in dict.fromkeys(resolve_precision(asked, "cpu") for asked in ("bf16", "fp32")):
        cases = {}
        for length in lengths:
            batch = synthetic_batch(batch_size, length, seed=args.seed)
            cases[f"training step, {batch_size} x {length}"] = (
                trained, lambda b=batch: (trained.train(), train_step(trained, optimizer, b, autocast(precision, "cpu"))))

            def forward(b=batch):
                with torch.no_grad(), autocast(precision, "cpu"):
                    model(**b)

            cases[f"evaluation forward, {batch_size} x {length}"] = (model, forward)
        scores: dict[str, dict[str, torch.Tensor]] = {k: {} for k in KERNELS}

        def importance():
            scores[model.config._attn_implementation]["importance"] = structured_importance(
                model, dev, precision=precision).heads

        def fisher():
            scores[model.config._attn_implementation]["fisher"] = fisher_scores(model, sample, precision=precision).heads

        cases[f"importance, SST-2 dev ({sum(len(b['input_ids']) for b in dev)} sentences)"] = (model, importance)
        cases[f"Fisher pass, {sum(len(b['input_ids']) for b in sample)} training sentences"] = (model, fisher)
        medians = alternated_medians(KERNELS, {case: run for case, (_, run) in cases.items()},
                                     lambda kernel, case: forced(cases[case][0], kernel), repeats)
        for case in cases:
            a, b = medians[case, "sdpa"], medians[case, "eager"]
            print(f"{case:42s} {precision:>9s} {a:9.3f} {b:9.3f} {a / b:9.2f}x", flush=True)
        for name in ("importance", "fisher"):
            ref = scores["sdpa"][name]
            difference = float((scores["eager"][name] - ref).abs().max() / ref.abs().max())
            print(f"  {name} scores, eager against sdpa ({precision}): largest difference {difference:.1e} of the largest score")


if __name__ == "__main__":
    main()
