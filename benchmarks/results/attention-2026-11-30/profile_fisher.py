"""Where a Fisher pass's time goes under bf16 on one CPU thread, with SDPA and with eager attention, and
whether a larger batch helps: the figures behind BENCHMARKS.md's attention-kernel and Fisher sections.

    python benchmarks/results/attention-2026-11-30/profile_fisher.py > profile_fisher.log

MiniLM fine-tuned as the quickstart does (bench_fisher.py's cache, or --run-dir), SST-2 training sentences.
1. torch.profiler over a pass of 512 examples with each kernel (the rule in `precision.gradient_attention`
   set aside, as bench_attention.py does), its top operators, and the matrix products' rate: their FLOPs
   counted from the linear layers' shapes and the non-padding and padding token positions of the batches.
2. A pass over 2,048 examples at batch 32, 64, 128 and 256 (the kernel the pipeline uses).
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
from bench_attention import forced  # noqa: E402
from bertlottery.fisher import fisher_sample, fisher_scores  # noqa: E402
from bertlottery.models import load_model, load_tokenizer  # noqa: E402
from bertlottery.precision import resolve_precision  # noqa: E402
from bertlottery.runs import model_dir_of  # noqa: E402
from bertlottery.steps.taskdata import prepare_task_data  # noqa: E402
from bertlottery.tasks import get_task  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", type=Path, default=Path.home() / ".cache/bertlottery/bench_fisher/sst2-minilm-l6-seed42")
parser.add_argument("--glue-dir", type=Path, default=Path(__file__).resolve().parents[3].parent / "shared/data/glue")
args = parser.parse_args()
torch.set_num_threads(1)
task = get_task("SST-2")
model_dir = model_dir_of(args.run_dir)
data = prepare_task_data(task, load_tokenizer(str(model_dir)), args.glue_dir, max_train_examples=4000)
model = load_model(str(model_dir), task.num_labels)
precision = resolve_precision("bf16", "cpu")
sample = list(fisher_sample(data.train, data.pad_id, n_examples=512, seed=0))
positions = sum(b["input_ids"].numel() for b in sample)
linear_macs = sum(m.in_features * m.out_features for name, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and ".layer." in name)
print(f"{torch.get_num_threads()} thread(s), {precision}; 512 examples, {positions} token positions "
      f"(padding included), {linear_macs:,} MACs a position in the encoder's linear layers")
for kernel in ("sdpa", "eager"):
    with forced(model, kernel):
        fisher_scores(model, sample[:4], precision=precision)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fisher_scores(model, sample, precision=precision)
    events = {e.key: e for e in prof.key_averages()}
    total = sum(e.self_cpu_time_total for e in events.values())
    print(f"\n== {kernel}: {total / 1e6:.2f} s of operator time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    forward = 2 * linear_macs * positions
    for op, what in (("aten::addmm", "forward linear layers"), ("aten::mm", "backward to the inputs")):
        seconds = events[op].self_cpu_time_total / 1e6 if op in events else float("nan")
        print(f"{op:12s} ({what}): {seconds:.2f} s, about {forward / 1e9:.0f} GFLOP at most "
              f"-> {forward / 1e9 / seconds:.0f} GFLOP/s at most")
print("\n2,048 examples, the pipeline's kernel, by batch size:")
for batch_size in (32, 64, 128, 256):
    batches = list(fisher_sample(data.train, data.pad_id, n_examples=2048, seed=0, batch_size=batch_size))
    started = time.perf_counter()
    fisher_scores(model, batches, precision=precision)
    print(f"  batch {batch_size:3d}: {time.perf_counter() - started:.1f} s", flush=True)
