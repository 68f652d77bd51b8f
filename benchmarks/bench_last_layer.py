"""The last layer at the classifier's position only (``train.last_layer: cls``) against every position, side by side.

    python benchmarks/bench_last_layer.py             # MiniLM-L6, real SST-2, one thread
    python benchmarks/bench_last_layer.py --quick     # a tiny BERT, a few examples: checks the script

`bertlottery.lastlayer` computes the last layer's attention output projection and MLP at the first
position only, in the passes that need only the classifier's output. This measures, for each precision
(bf16 where this CPU has it, else fp32 with a notice; and fp32), alternating the two settings in every
repetition:

1. a training step (forward, backward, clipping, AdamW: `_speed.train_step`), batch 32 of random tokens
   at 16, 48 and 128 tokens;
2. an evaluation over SST-2 dev (`evaluation.predict`, 872 sentences);
3. the gate-gradient passes on real data: `importance.structured_importance` over SST-2 dev (the
   s-search's scoring) and `fisher.fisher_scores` over 512 training sentences (a quarter of a Fisher pass).

It prints the median time of each and the ratio full / cls (above 1: cls faster), and the largest
difference between the two settings' logits and scores, relative to the largest.
"""

from __future__ import annotations

import contextlib

import torch

from _speed import alternated_medians, pass_bench, synthetic_batch, train_step
from bertlottery.evaluation import predict
from bertlottery.fisher import fisher_scores
from bertlottery.importance import structured_importance
from bertlottery.lastlayer import first_position_only, last_layer_of, use_last_layer
from bertlottery.precision import autocast, resolve_precision

SETTINGS = ("full", "cls")


def main() -> None:
    bench = pass_bench(__doc__)
    args, lengths, batch_size, repeats = bench.args, bench.lengths, bench.batch_size, bench.repeats
    model, trained, optimizer, dev, sample = bench.model, bench.trained, bench.optimizer, bench.dev, bench.sample
    print(bench.header())
    print(f"{'pass':42s} {'precision':>9s} {'full s':>9s} {'cls s':>9s} {'full/cls':>9s}")
    for precision in dict.fromkeys(resolve_precision(asked, "cpu") for asked in ("bf16", "fp32")):
        cases = {}
        for length in lengths:
            batch = synthetic_batch(batch_size, length, seed=args.seed)

            def step(b=batch):
                trained.train()
                with first_position_only(trained):
                    train_step(trained, optimizer, b, autocast(precision, "cpu"))

            cases[f"training step, {batch_size} x {length}"] = step
        outputs: dict[str, dict[str, torch.Tensor]] = {s: {} for s in SETTINGS}

        def setting() -> str:
            return last_layer_of(model)

        unindexed = [{k: v for k, v in b.items() if k != "index"} for b in dev]  # --quick keeps a few batches

        def evaluation():
            outputs[setting()]["logits"] = torch.from_numpy(predict(model, unindexed, precision=precision)[0])

        def importance():
            outputs[setting()]["importance"] = structured_importance(model, dev, precision=precision).heads

        def fisher():
            outputs[setting()]["fisher"] = fisher_scores(model, sample, precision=precision).heads

        sentences = sum(len(b["input_ids"]) for b in dev)
        cases[f"evaluation, SST-2 dev ({sentences} sentences)"] = evaluation
        cases[f"importance, SST-2 dev ({sentences} sentences)"] = importance
        cases[f"Fisher pass, {sum(len(b['input_ids']) for b in sample)} training sentences"] = fisher
        medians = alternated_medians(SETTINGS, cases, lambda setting, case: contextlib.nullcontext(
            [use_last_layer(m, setting) for m in (model, trained)]), repeats)
        for case in cases:
            a, b = medians[case, "full"], medians[case, "cls"]
            print(f"{case:42s} {precision:>9s} {a:9.3f} {b:9.3f} {a / b:8.2f}x", flush=True)
        for name in ("logits", "importance", "fisher"):
            ref = outputs["full"][name]
            difference = float((outputs["cls"][name] - ref).abs().max() / ref.abs().max())
            print(f"  {name}, cls against full ({precision}): largest difference {difference:.1e} of the largest")


if __name__ == "__main__":
    main()
