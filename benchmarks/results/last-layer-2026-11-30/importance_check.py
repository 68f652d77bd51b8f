"""The importance pass alone, the last layer at every position against the classifier's only, alternating.

    python benchmarks/results/last-layer-2026-11-30/importance_check.py

MiniLM-L6 with a fresh classifier, four SST-2 dev batches of 64 (the s-search's scoring batch), one
thread: seconds of `structured_importance` under `full` and `cls`, three alternations, and the shapes the
last layer's MLP input projection received (so that the cut is seen to happen).
"""

import time
from pathlib import Path

import torch

from bertlottery.importance import structured_importance
from bertlottery.lastlayer import use_last_layer
from bertlottery.models import adapter_for, load_model, load_tokenizer
from bertlottery.steps.taskdata import prepare_task_data
from bertlottery.tasks import get_task

torch.set_num_threads(1)
task = get_task("SST-2")
data = prepare_task_data(task, load_tokenizer("minilm-l6"), Path("../shared/data/glue"), max_train_examples=100)
model = load_model("minilm-l6", 2).eval()
dev = list(data.eval_batches(data.main_split, 64))[:4]
shapes = []
adapter_for(model).layers(model)[-1].mlp_in.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
for rep in range(3):
    for how in ("full", "cls"):
        use_last_layer(model, how)
        shapes.clear()
        started = time.perf_counter()
        structured_importance(model, dev)
        print(f"repetition {rep + 1}, {how}: {time.perf_counter() - started:.2f} s; the last MLP saw {shapes[:2]} ...")
