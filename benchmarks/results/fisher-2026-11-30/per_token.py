"""Why the Fisher search is not 10x faster than the s-search on the quickstart's model: a Fisher pass over
2,048 training sentences against one s-search step's passes over SST-2 dev, per token.

    python benchmarks/results/fisher-2026-11-30/per_token.py RUN_DIR   # the quickstart's SST-2 fine-tuning

Prints the tokens (real and padded) of SST-2 dev and of the Fisher sample, and the seconds of an
importance pass over dev (the s-search scores before its first step and after each accepted one), of a
dev evaluation (one per step), and of the Fisher pass, twice, alternating; in the run's precision.
"""

import sys
import time
from pathlib import Path

import torch

from bertlottery.evaluation import evaluate
from bertlottery.fisher import fisher_sample, fisher_scores
from bertlottery.importance import structured_importance
from bertlottery.steps.prune import load_finetuned, run_precision

torch.set_num_threads(1)
model, data, config = load_finetuned(Path(sys.argv[1]), Path("../shared/data/glue"), with_train=True)
precision = run_precision(config)
dev = list(data.eval_batches(data.main_split))
scoring = list(data.eval_batches(data.main_split, 64))  # the s-search's scoring batch
sample = list(fisher_sample(data.train, data.pad_id, n_examples=2048, seed=config["train"]["seed"]))


def tokens(batches):
    return sum(int(b["attention_mask"].sum()) for b in batches), sum(b["input_ids"].numel() for b in batches)


print(f"precision {precision}; last layer {config['train'].get('last_layer', 'full')}; 1 thread")
print(f"SST-2 dev: {tokens(scoring)[0]} tokens, {tokens(scoring)[1]} padded; Fisher sample (2,048 training "
      f"sentences): {tokens(sample)[0]} tokens, {tokens(sample)[1]} padded")
for rep in range(2):
    started = time.perf_counter()
    structured_importance(model, scoring, precision=precision)
    scored = time.perf_counter() - started
    started = time.perf_counter()
    evaluate(model, data.task, dev, precision=precision)
    evaluated = time.perf_counter() - started
    started = time.perf_counter()
    fisher_scores(model, sample, precision=precision)
    fisher = time.perf_counter() - started
    print(f"repetition {rep + 1}: importance over dev {scored:.2f} s ({scored / tokens(scoring)[1] * 1e3:.3f} ms a "
          f"padded token), dev evaluation {evaluated:.2f} s, Fisher pass {fisher:.2f} s "
          f"({fisher / tokens(sample)[1] * 1e3:.3f} ms a padded token)")
