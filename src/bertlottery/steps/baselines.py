"""The paper's baselines (Table 2): the majority class, and a randomly initialised encoder under a random
mask of a bad mask's size, fine-tuned (``bertlottery baseline``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import runs
from ..data import load_split
from ..errors import UserError
from ..masks import load_masks
from ..metrics import majority_baseline
from ..sampling import random_like
from ..tasks import get_task
from ..training import TrainSettings
from .finetune import finetune_run
from .taskdata import CAP_SEED, training_examples

__all__ = ["majority_baseline_metrics", "random_init_baseline_run"]


def majority_baseline_metrics(task_name: str, glue_dir: Path | None, *, max_train_examples: int | None = None,
                              cap_seed: int = CAP_SEED, holdout_fraction: float = 0.0) -> dict[str, Any]:
    """Predict the most frequent train label on every eval split (the paper's Table 2, first row).

    The label is the most frequent among the examples the models were trained on: with a cap, the
    capped sample (its majority class can differ from the whole file's: RTE's first 300 pairs had the
    opposite one), drawn as `bertlottery.steps.finetune.finetune_run` draws it.
    """
    import numpy as np

    task = get_task(task_name)
    trained, _, cap = training_examples(task, glue_dir, max_train_examples=max_train_examples, cap_seed=cap_seed,
                                        holdout_fraction=holdout_fraction)
    train = np.array([e.label for e in trained])
    splits = {}
    for split in task.eval_splits:
        labels = np.array([e.label for e in load_split(task, split, glue_dir)])
        metrics = majority_baseline(task, train, labels)
        metrics["n_examples"] = int(len(labels))
        splits[split] = {"metrics": metrics}
    return {"task": task.name, "primary_metric": task.primary_metric, "splits": splits, "baseline": "majority",
            "cap": cap.to_dict() if cap is not None else None}


def random_init_baseline_run(
    model_name: str,
    task_name: str,
    size_of: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    settings: TrainSettings,
    mask_seed: int | None = None,
    max_train_examples: int | None = None,
    cap_seed: int = CAP_SEED,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """A randomly initialised encoder with a random s-mask of ``size_of``'s size, fine-tuned (Table 2, last row)."""
    reference = load_masks(runs.mask_file_of(size_of))
    if reference.heads is None and reference.mlps is None:
        raise UserError(f"{size_of} has no head or MLP mask; the random-init baseline takes an s-pruning mask's size.")
    mask_seed = settings.seed if mask_seed is None else mask_seed
    random = random_like(reference, mask_seed)
    random.params.update(baseline="random-init", size_of=str(size_of))
    return finetune_run(model_name, task_name, out, glue_dir=glue_dir, settings=settings, masks=random,
                        max_train_examples=max_train_examples, cap_seed=cap_seed, random_init=True, overwrite=overwrite,
                        progress=progress, extra_config={"baseline": "random-init", "size_of": str(size_of),
                                                         "mask_seed": mask_seed}, kind="baseline")
