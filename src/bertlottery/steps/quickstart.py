"""``bertlottery quickstart``: MiniLM fine-tuned for one epoch, evaluated full and with a random half
of its heads: a first result in minutes on a laptop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import runs
from ..lastlayer import use_last_layer
from ..masks import HeadMask, Masks
from ..models import compute_device, load_model, load_tokenizer, model_layout
from ..tasks import get_task
from ..training import TrainSettings
from .finetune import finetune_run
from .taskdata import evaluate_model, prepare_task_data

__all__ = ["quickstart", "KIND"]

KIND = "quickstart"  # the kind of output folder quickstart writes (`bertlottery.runs.prepare_output_dir`)


def quickstart(
    *,
    glue_dir: Path | None,
    task_name: str = "SST-2",
    out: str | os.PathLike = "runs/quickstart",
    model_name: str = "minilm-l6",
    seed: int = 42,
    max_train_examples: int | None = 4000,
    learning_rate: float = 1e-4,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune MiniLM for one epoch, then evaluate it full and with a random half of its heads.

    ``out`` is new, empty or an earlier quickstart's folder (replaced); any other folder is refused
    unless ``overwrite``, and then only the files quickstart writes are replaced in it, nothing deleted
    (`bertlottery.runs.staged_output`).
    """
    settings = TrainSettings(epochs=1, learning_rate=learning_rate, seed=seed)
    task = get_task(task_name)
    with runs.staged_output(out, KIND, overwrite=overwrite) as scratch:
        record = finetune_run(model_name, task_name, scratch, glue_dir=glue_dir, settings=settings,
                              max_train_examples=max_train_examples, overwrite=True, progress=progress, kind=KIND)
        model_dir = scratch / runs.MODEL_DIR
        tokenizer = load_tokenizer(str(model_dir))
        data = prepare_task_data(task, tokenizer, glue_dir, with_train=False)
        model = load_model(str(model_dir), task.num_labels).to(compute_device())
        use_last_layer(model, settings.last_layer)
        layout = model_layout(model)
        full = HeadMask.full(layout.num_layers, layout.num_heads)
        half = HeadMask.random_like(full, keep=full.n_total // 2, seed=seed)
        masked = evaluate_model(model, data, Masks(heads=half, params={"kind": "random", "seed": seed}),
                                precision=settings.precision)
    return {
        "task": task.name,
        "metric": task.primary_metric,
        "full": record["splits"],
        "random_half_heads": {s: {"metrics": m} for s, m in masked.items()},
        "heads_kept": half.n_kept,
        "body_fraction_kept": Masks(heads=half).body_fraction_kept(layout),
        "out": str(out),
    }
