"""s-pruning search and re-fine-tuning of SST-2 on the physically pruned model against the gated full model.

    python benchmarks/bench_physical.py                          # the quickstart's settings (MiniLM-L6, SST-2)
    python benchmarks/bench_physical.py --max-train-examples 800 # a shorter epoch, same ratios roughly
    python benchmarks/bench_physical.py --quick                  # a tiny BERT, 64 examples: checks the script

What the quickstart study does, timed both ways:

1. fine-tune MiniLM on the first 4,000 SST-2 training sentences for one epoch at lr 1e-4 (not timed);
2. s-pruning (heads+MLPs, threshold 0.9) on SST-2 dev, twice: evaluating each candidate under gates
   (`gated`, as `lottery.prune_structured_run` does today) and on the exported model
   (`physical.pruned_evaluator`). The importance scores are computed once per mask and shared, so only
   the evaluations differ; their time is summed per search. Both searches must take the same steps.
   Each scoring pass is timed twice, in turn: with the backward pass through dead branches (masked MLPs,
   wholly masked attention) and without it, as `structured_importance` does by default; the scores must
   be bitwise equal;
3. re-fine-tune from the pre-trained weights under the good mask the search found, one epoch, both
   ways: the full model under gates and `physical.export_for`'s smaller model, each with finetune()'s
   optimiser (fused AdamW, clipping at 1.0), stepping on the same batch one after the other in an order
   that alternates, so that a noisy machine slows both alike. The epoch time is the sum of a variant's
   step times; the ratio is the median of the per-step ratios (and the ratio of the sums is printed
   too). Dropout is on, so the two runs' dev accuracies agree in distribution, not exactly.

Targets: re-fine-tuning >= 1.8x, search evaluation >= 1.5x with the same trace. On a shared machine
the absolute times are meaningless and the ratios noisy.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from _common import benchmark_parser, setup
from _speed import median_ratio, model_for, optimizer_for, prepare_task_data, rotated, timed, train_step
from bertlottery.evaluation import evaluate
from bertlottery.importance import structured_importance
from bertlottery.masking import fraction_kept, gated
from bertlottery.masks import HeadMask, Masks, MlpMask
from bertlottery.models import load_tokenizer, model_layout
from bertlottery.physical import export_for, pruned_evaluator
from bertlottery.pruning import structured_search
from bertlottery.tasks import get_task
from bertlottery.training import TrainSettings, finetune

REFINETUNE_TARGET = 1.8
SEARCH_TARGET = 1.5


def parse_args() -> argparse.Namespace:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--quick", action="store_true", help="a tiny BERT and 64 examples (under a minute)")
    parser.add_argument("--max-train-examples", type=int, default=4000, help="quickstart: %(default)s")
    args = parser.parse_args()
    if args.quick:
        args.max_train_examples = 64
    return args


def search_both_ways(model, data, task) -> dict:
    """The same s-pruning search with gated and with exported evaluation; scores shared, evaluations timed."""
    dev = data.eval_batches("dev")
    cache: dict[bytes, object] = {}
    scoring = {"uncut": [], "cut": [], "bitwise equal": []}

    def score(heads, mlps):
        key = heads.keep.numpy().tobytes() + mlps.keep.numpy().tobytes()
        if key not in cache:
            # both ways, in turn: the backward pass through dead branches (masked MLPs, wholly masked
            # attention) left in, and cut as structured_importance does by default
            found = {}
            for name in rotated(["uncut", "cut"], len(cache)):
                start = time.perf_counter()
                found[name] = structured_importance(model, data.eval_batches("dev"), heads=heads, mlps=mlps,
                                                    cut_dead_branches=name == "cut")
                scoring[name].append(time.perf_counter() - start)
            scoring["bitwise equal"].append(torch.equal(found["cut"].heads, found["uncut"].heads)
                                            and torch.equal(found["cut"].mlps, found["uncut"].mlps))
            cache[key] = found["cut"]
        return cache[key]

    def measure(m) -> float:
        return evaluate(m, task, dev)[task.primary_metric]

    def gated_evaluate(heads, mlps):
        with gated(model, heads=heads, mlps=mlps):
            return measure(model)

    layout = model_layout(model)
    full_metric = measure(model)
    results = {}
    for name, evaluate_mask in (("gated", gated_evaluate), ("physical", pruned_evaluator(model, measure))):
        seconds = []

        def timed_evaluate(heads, mlps, evaluate_mask=evaluate_mask, seconds=seconds):
            start = time.perf_counter()
            metric = evaluate_mask(heads, mlps)
            seconds.append(time.perf_counter() - start)
            return metric

        result = structured_search(score, timed_evaluate, num_layers=layout.num_layers, num_heads=layout.num_heads,
                                   full_metric=full_metric)
        results[name] = (result, seconds)
    results["scoring"] = scoring
    return results


def refinetune_both_ways(model_pretrained, masks: Masks, batches: list) -> dict:
    """One epoch under ``masks``: the gated full model and the exported one, step by step in turn."""
    full = copy.deepcopy(model_pretrained).train()
    small = export_for(model_pretrained, masks).train()
    variants = {"gated": (full, optimizer_for(full)), "physical": (small, optimizer_for(small))}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with gated(full, heads=masks.heads, mlps=masks.mlps):
        for step, batch in enumerate(batches):
            for name in rotated(list(variants), step):
                model, optimizer = variants[name]
                times[name].append(timed(lambda: train_step(model, optimizer, batch)))
    return {"times": times, "models": {"gated": full, "physical": small}}


def main() -> None:
    args = parse_args()
    setup(args)
    task = get_task("SST-2")
    tokenizer = load_tokenizer("minilm-l6")
    # configs/quickstart.yaml's; fp32 throughout, so that only the subnetwork path differs from the
    # figures measured before bf16 became the default (bench_precision.py measures that one)
    settings = TrainSettings(learning_rate=1e-4, epochs=1, seed=42, precision="fp32")
    data = prepare_task_data(task, tokenizer, Path(args.glue_dir), max_length=settings.max_length,
                             max_train_examples=args.max_train_examples,
                             max_eval_examples=64 if args.quick else None)
    batches = [{k: v for k, v in b.items() if k != "index"} for b in data.train_batches(settings)(1)]
    pretrained = model_for(args.quick, seed=settings.seed)
    print(f"{'tiny BERT' if args.quick else 'MiniLM-L6'}; SST-2: {len(data.train)} train examples in {len(batches)} "
          f"batches of {settings.batch_size}, dev {len(data.evals['dev'])}; threads {torch.get_num_threads()}")

    # 1. fine-tune (not timed)
    model = copy.deepcopy(pretrained)
    start = time.perf_counter()
    finetune(model, data.train_batches(settings), settings, progress=False)
    print(f"fine-tuned in {time.perf_counter() - start:.0f}s; dev {task.primary_metric} "
          f"{evaluate(model, task, data.eval_batches('dev'))[task.primary_metric]:.4f}")

    # 2. the search, both ways
    searches = search_both_ways(model.eval(), data, task)
    (gated_result, gated_s), (physical_result, physical_s) = searches["gated"], searches["physical"]
    same = ([(s.phase, s.accepted, s.pruned_heads, s.pruned_mlps) for s in gated_result.trace]
            == [(s.phase, s.accepted, s.pruned_heads, s.pruned_mlps) for s in physical_result.trace]
            and gated_result.heads == physical_result.heads and gated_result.mlps == physical_result.mlps)
    worst = max(abs(a.metric - b.metric) for a, b in zip(gated_result.trace, physical_result.trace))
    search_ratio = sum(gated_s) / sum(physical_s)
    step_ratio, q1, q3 = median_ratio(gated_s, physical_s)
    masks = Masks(heads=gated_result.heads, mlps=gated_result.mlps)
    kept = fraction_kept(model, masks)
    print(f"\ns-pruning: {len(gated_result.trace)} steps, good mask {masks.heads.n_kept}/{masks.heads.n_total} heads, "
          f"{masks.mlps.n_kept}/{masks.mlps.n_total} MLPs ({kept:.1%} of body weights), dev "
          f"{gated_result.final_metric:.4f}; same trace both ways: {same} (largest metric difference {worst:.1e})")
    print(f"  evaluation time per search: gated {sum(gated_s):.1f}s, physical {sum(physical_s):.1f}s -> "
          f"{search_ratio:.2f}x (per step median {step_ratio:.2f}x, IQR {q1:.2f}-{q3:.2f}); target >= {SEARCH_TARGET} "
          f"{'PASS' if search_ratio >= SEARCH_TARGET and same else 'FAIL'}")

    scoring = searches["scoring"]
    uncut, cut = sum(scoring["uncut"]), sum(scoring["cut"])
    print(f"  importance scoring per search ({len(scoring['cut'])} passes, one per accepted mask): dead branches in the "
          f"backward {uncut:.1f}s, cut {cut:.1f}s -> {uncut / cut:.2f}x; scores bitwise equal: {all(scoring['bitwise equal'])}")
    print(f"  the whole physical search (scoring + evaluation): {uncut + sum(physical_s):.1f}s uncut, "
          f"{cut + sum(physical_s):.1f}s cut -> {(uncut + sum(physical_s)) / (cut + sum(physical_s)):.2f}x")

    # 3. re-fine-tune under the good mask, both ways
    if masks.heads.n_kept == 0 and masks.mlps.n_kept == 0:
        # an untrainable tiny model (--quick) loses everything; half the heads still exercise the path
        masks = Masks(heads=HeadMask.random_like(masks.heads, keep=masks.heads.n_total // 2, seed=args.seed),
                      mlps=MlpMask.full(masks.mlps.n_total))
        kept = fraction_kept(model, masks)
        print("\nthe search removed everything; re-fine-tuning under a random half of the heads instead")
    torch.manual_seed(settings.seed)
    run = refinetune_both_ways(pretrained, masks, batches)
    times = run["times"]
    ratio, q1, q3 = median_ratio(times["gated"], times["physical"])
    dev = {name: evaluate(m, task, data.eval_batches("dev"))[task.primary_metric] for name, m in run["models"].items()
           if name == "physical"}
    with gated(run["models"]["gated"], heads=masks.heads, mlps=masks.mlps):
        dev["gated"] = evaluate(run["models"]["gated"], task, data.eval_batches("dev"))[task.primary_metric]
    print(f"\nre-fine-tuning one epoch ({len(batches)} steps) under the good mask ({kept:.1%} of body weights):")
    print(f"  gated {sum(times['gated']):.1f}s, physical {sum(times['physical']):.1f}s -> "
          f"{sum(times['gated']) / sum(times['physical']):.2f}x (per step median {ratio:.2f}x, IQR {q1:.2f}-{q3:.2f}); "
          f"target >= {REFINETUNE_TARGET} {'PASS' if ratio >= REFINETUNE_TARGET else 'FAIL'}")
    print(f"  dev {task.primary_metric} after the epoch: gated {dev['gated']:.4f}, physical {dev['physical']:.4f} "
          "(dropout draws differ: equal in distribution)")


if __name__ == "__main__":
    main()
