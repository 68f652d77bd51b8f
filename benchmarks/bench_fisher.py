"""The retraining-free Fisher search against s-pruning on MiniLM fine-tuned on real SST-2: time and accuracy.

    python benchmarks/bench_fisher.py                       # fine-tunes once (cached), then measures
    python benchmarks/bench_fisher.py --run-dir RUN         # an existing SST-2 fine-tuning run of minilm-l6
    python benchmarks/bench_fisher.py --pipeline-defaults   # both as a study runs them: bf16, physical candidates

The model is the quickstart's (`configs/quickstart.yaml`: MiniLM-L6, SST-2, one epoch over the first 4,000
training sentences, its learning rate and seed); the run is fine-tuned with `finetune_run` on first use
and kept in ``--cache`` for later runs. Then, in one process, from the loaded model and tokenised data:

- s-search: `pruning.structured_search` as `steps.prune.prune_structured_run` calls it with
  ``physical=False`` (importance on dev, threshold 0.9 of the full dev accuracy, heads+mlps, every
  candidate evaluated under gates), timed from the full model's dev evaluation (which the threshold
  needs) to the good mask;
- Fisher search: `fisher.fisher_search` at the s-search good mask's MACs per token (seq_len 128), on a
  seeded sample of ``--fisher-examples`` training sentences (the paper: 2,048), timed to the binary mask
  (Fisher scores, search, rearrangement) and to the tuned scales (least squares on ``--tune-examples``
  of the same sample).

It prints the wall times and their ratio (target: Fisher >= 10x faster to a mask), then the dev accuracy
of the full model, the s-mask, and the Fisher mask pruned without rearrangement, rearranged, and
rearranged with least-squares tuning (no retraining anywhere), with each mask's MACs. The machine is
shared, so absolute times are indicative; the ratio is what to read. About 7 minutes on one thread
of the shared 2-core machine, 4 of them the s-search (the first run adds the fine-tuning, about 8). ``--smaller-samples`` adds the Fisher search's time and
accuracy on smaller samples (the same seed: each a subset of the larger ones).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from _common import REPO, benchmark_parser, setup
from bertlottery.config import load
from bertlottery.evaluation import evaluate
from bertlottery.export import body_macs_per_token
from bertlottery.export import mask_cost, unit_costs
from bertlottery.fisher import budget_from_masks, fisher_sample, fisher_search, search_under_budget, tune_scales
from bertlottery.masking import fisher_gated
from bertlottery.importance import structured_importance
from bertlottery.masking import gated
from bertlottery.lastlayer import use_last_layer
from bertlottery.masks import Masks
from bertlottery.models import load_model, load_tokenizer, model_layout
from bertlottery.physical import pruned_evaluator
from bertlottery.precision import resolve_precision
from bertlottery.pruning import structured_search
from bertlottery.steps.finetune import finetune_run
from bertlottery.steps.taskdata import prepare_task_data
from bertlottery import runs
from bertlottery.runs import is_complete_run, model_dir_of
from bertlottery.tasks import get_task
from bertlottery.training import TrainSettings

SEQ_LEN = 128


def quickstart_run(cache: Path, glue_dir: str, model: str | None = None) -> Path:
    """The quickstart's SST-2 fine-tuning (of MiniLM, or of ``model`` with the same settings), made once
    and reused."""
    config = load(REPO / "configs" / "quickstart.yaml", [f"model={model}"] if model else [])
    train = config.train
    settings = TrainSettings(learning_rate=train.learning_rate, epochs=train.epochs, batch_size=train.batch_size,
                             max_length=train.max_length, warmup_ratio=train.warmup_ratio,
                             weight_decay=train.weight_decay, seed=config.seeds[0])
    run = cache / f"sst2-{config.model}-seed{settings.seed}"
    if not is_complete_run(run):
        print(f"fine-tuning {config.model} on SST-2 as the quickstart does -> {run}", flush=True)
        started = time.perf_counter()
        finetune_run(config.model, "SST-2", run, glue_dir=Path(glue_dir), settings=settings,
                     max_train_examples=train.max_train_examples, overwrite=True, progress=False)
        print(f"  fine-tuned in {time.perf_counter() - started:.0f} s", flush=True)
    return run


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--run-dir", type=Path, help="an SST-2 fine-tuning run (default: fine-tune one)")
    parser.add_argument("--model", default=None,
                        help="the model to fine-tune with the quickstart's settings (default: the quickstart's, "
                             "minilm-l6; mpnet-base for a 12 x 12 encoder of bert-base's size)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "bertlottery" / "bench_fisher")
    parser.add_argument("--fisher-examples", type=int, default=2048)
    parser.add_argument("--tune-examples", type=int, default=512)
    parser.add_argument("--smaller-samples", default="512,1024",
                        help="also time the Fisher search (to the mask, rearranged) on these sample sizes")
    parser.add_argument("--pipeline-defaults", action="store_true",
                        help="both searches as a study runs them by default: bf16 autocast where this CPU has it "
                             "(the s-search's scoring and evaluations, the Fisher passes) and the s-search's "
                             "candidates evaluated on the physically pruned model, every pass with the last layer as the run was "
                             "trained (`train.last_layer`) (default: fp32, gated, every position)")
    args = parser.parse_args()
    setup(args)

    run = args.run_dir or quickstart_run(args.cache, args.glue_dir, args.model)
    task = get_task("SST-2")
    model_dir = model_dir_of(run)
    tokenizer = load_tokenizer(str(model_dir))
    data = prepare_task_data(task, tokenizer, Path(args.glue_dir), max_train_examples=4000)
    model = load_model(str(model_dir), task.num_labels)
    if args.pipeline_defaults:  # the last layer as the run was trained (`train.last_layer`), as a study scores it
        use_last_layer(model, TrainSettings.from_dict(runs.read_json(run / runs.CONFIG_FILE)["train"]).last_layer)
    layout = model_layout(model)
    dev = data.eval_batches(data.main_split)

    precision = resolve_precision("bf16", "cpu") if args.pipeline_defaults else "fp32"

    def accuracy(of=None) -> float:
        return evaluate(of if of is not None else model, task, dev, precision=precision)[task.primary_metric]

    # ---- s-search, as steps.prune.prune_structured_run calls it (physical=False unless --pipeline-defaults)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    full = accuracy()
    scoring = data.eval_batches(data.main_split, 64)
    steps = []

    def score(heads, mlps):
        return structured_importance(model, scoring, heads=heads, mlps=mlps, precision=precision)

    def evaluate_gated(heads, mlps) -> float:
        with gated(model, heads=heads, mlps=mlps):
            return accuracy()

    evaluate_mask = pruned_evaluator(model, accuracy) if args.pipeline_defaults else evaluate_gated

    def show(step) -> None:
        steps.append(step)
        print(f"  s-search step {len(steps)} ({time.perf_counter() - started:.0f} s): {step.phase}, "
              f"{step.heads_kept} heads, {step.mlps_kept} MLPs, accuracy {step.metric:.4f}, "
              f"{'accepted' if step.accepted else 'reverted'}", flush=True)

    s_result = structured_search(score, evaluate_mask, num_layers=layout.num_layers, num_heads=layout.num_heads,
                                 full_metric=full, on_step=show)
    s_seconds = time.perf_counter() - started
    s_masks = Masks(heads=s_result.heads, mlps=s_result.mlps)
    budget = budget_from_masks(layout, s_masks, seq_len=SEQ_LEN)

    # ---- Fisher search at the s-mask's MACs
    started = time.perf_counter()
    sample = list(fisher_sample(data.train, data.pad_id, n_examples=args.fisher_examples, seed=args.seed))
    f_result = fisher_search(model, sample, budget=budget, seq_len=SEQ_LEN, tune=False, precision=precision)
    mask_seconds = time.perf_counter() - started
    tune_sample = list(fisher_sample(data.train, data.pad_id, n_examples=args.tune_examples, seed=args.seed))
    started = time.perf_counter()
    head_scales, neuron_scales, tuning = tune_scales(model, tune_sample, f_result.heads, f_result.neurons)
    tuned_seconds = mask_seconds + time.perf_counter() - started
    plain_heads, plain_neurons = search_under_budget(
        f_result.scores.heads, f_result.scores.neurons, head_cost=unit_costs(layout, "macs", SEQ_LEN)[0],
        neuron_cost=unit_costs(layout, "macs", SEQ_LEN)[1], budget=budget)

    full_macs = body_macs_per_token(layout, SEQ_LEN)
    print(f"\n{layout.num_layers} layers x {layout.num_heads} heads on SST-2 ({run}); dev {len(data.evals[data.main_split])} sentences; "
          f"{torch.get_num_threads()} thread(s); {precision}, s-search candidates evaluated "
          f"{'physically pruned' if args.pipeline_defaults else 'under gates'}; shared machine: read the ratios")
    print(f"load average (1 min): {load_before:.2f} at the s-search's start, {os.getloadavg()[0]:.2f} after the Fisher search")
    print(f"s-search: {s_seconds:7.1f} s to the good mask ({len(steps)} steps, {s_result.heads.n_kept} heads, "
          f"{s_result.mlps.n_kept} MLPs kept)")
    print(f"Fisher:   {mask_seconds:7.1f} s to the mask ({f_result.scores.n_examples} examples; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in f_result.trace["seconds"].items()) + ")"
          f"  -> {s_seconds / mask_seconds:5.1f}x faster {'(target 10x: PASS)' if s_seconds / mask_seconds >= 10 else '(target 10x: FAIL)'}")
    print(f"Fisher+LS:{tuned_seconds:7.1f} s with tuning ({sum(len(b['input_ids']) for b in tune_sample)} "
          f"examples)  -> {s_seconds / tuned_seconds:5.1f}x faster")

    rows = [("full model", full, full_macs, "")]
    rows.append(("s-search good mask", s_result.final_metric, budget, f"{s_result.heads.n_kept} heads, {s_result.mlps.n_kept} MLPs"))
    for name, heads, neurons in (("Fisher, search only", plain_heads, plain_neurons),
                                 ("Fisher, rearranged", f_result.heads, f_result.neurons),
                                 ("Fisher, rearranged + LS", head_scales, neuron_scales)):
        with fisher_gated(model, heads, neurons):
            metric = accuracy()
        kept_heads, kept_neurons = heads != 0, neurons != 0
        rows.append((name, metric, mask_cost(layout, kept_heads, kept_neurons, seq_len=SEQ_LEN),
                     f"{int(kept_heads.sum())} heads, {int(kept_neurons.sum())} neurons"))
    print(f"\n{'mask':26s} {'dev acc':>8s} {'MACs/token':>12s} {'of full':>8s}  kept")
    for name, metric, macs, kept in rows:
        print(f"{name:26s} {metric:8.4f} {macs:12,d} {macs / full_macs:8.3f}  {kept}")
    print(f"\nFisher sample size (to the rearranged mask, untuned; the s-search took {s_seconds:.0f} s):")
    print(f"{'examples':>8s} {'seconds':>8s} {'faster':>7s} {'dev acc':>8s}")
    sweep = [(int(n), None) for n in args.smaller_samples.split(",") if n] + [(args.fisher_examples, f_result)]
    for n, found in sweep:
        if found is None:
            started = time.perf_counter()
            smaller = list(fisher_sample(data.train, data.pad_id, n_examples=n, seed=args.seed))
            found = fisher_search(model, smaller, budget=budget, seq_len=SEQ_LEN, tune=False, precision=precision)
            seconds = time.perf_counter() - started
        else:
            seconds = mask_seconds
        with fisher_gated(model, found.heads, found.neurons):
            metric = accuracy()
        print(f"{n:8d} {seconds:8.1f} {s_seconds / seconds:6.1f}x {metric:8.4f}")
    changed = [e for e in tuning if e["accepted"]]
    print(f"\nLS tuning: {len(changed)}/{len(tuning)} sub-layers tuned; layer-output error "
          f"{sum(e['error_before'] for e in tuning):.4g} -> {sum(e['error_after'] for e in tuning):.4g}")


if __name__ == "__main__":
    main()
