"""What the steps share: a task's tokenised splits, evaluating a model on them under a mask, the
metrics record a step writes, and reading a fine-tuning run a later step starts from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from ..data import TokenizedSplit, load_split, make_loader, tokenize
from ..errors import UserError
from ..evaluation import evaluate
from ..masking import gated, weight_masked
from ..masks import Masks
from ..tasks import TaskSpec
from ..training import TrainSettings

__all__ = ["TaskData", "prepare_task_data", "split_holdout", "evaluate_model", "metrics_record", "finetuned_run_config",
           "HOLDOUT_SEED", "EVAL_BATCH_SIZE"]

EVAL_BATCH_SIZE = 64


@dataclass
class TaskData:
    """A task's tokenised splits for one tokenizer."""

    task: TaskSpec
    train: TokenizedSplit | None
    evals: dict[str, TokenizedSplit]  # eval split name -> split
    pad_id: int
    heldout: TokenizedSplit | None = None  # a slice of train set aside (scoring without touching dev)

    def eval_batches(self, split: str, batch_size: int = EVAL_BATCH_SIZE):
        data = self.heldout if split == "heldout" else self.evals[split]
        if data is None:
            raise UserError("No held-out slice: fine-tune with --holdout-fraction to score on held-out train data.")
        return make_loader(data, self.pad_id, batch_size, shuffle=False, seed=None)

    @property
    def main_split(self) -> str:
        """The split the pruning threshold watches (MNLI: matched)."""
        return self.task.eval_splits[0]

    def train_batches(self, settings: TrainSettings):
        # One seeded loader for the whole run: each epoch draws a new order from its generator, and
        # the same seed replays the same sequence of epochs.
        loader = make_loader(
            self.train, self.pad_id, settings.batch_size, shuffle=True, seed=settings.seed,
            group_by_length=settings.group_by_length,
        )
        return lambda epoch: loader


HOLDOUT_SEED = 0  # the held-out slice is the same for every run seed, so all seeds score on the same data


def split_holdout(examples: list, fraction: float, seed: int = HOLDOUT_SEED) -> tuple[list, list]:
    """Split train examples into (train, held out): a seeded ``fraction`` of them is held out."""
    if not 0 < fraction < 1:
        raise UserError(f"The held-out fraction must be between 0 and 1, got {fraction}.")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_out = max(1, round(fraction * len(examples)))
    held = set(order[:n_out])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def prepare_task_data(
    task: TaskSpec,
    tokenizer,
    glue_dir: Path | None,
    *,
    max_length: int = 128,
    with_train: bool = True,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    holdout_fraction: float = 0.0,
) -> TaskData:
    """Read and tokenise a task's train split and eval splits (cached on disk).

    With ``holdout_fraction`` a seeded slice of train (taken after ``max_train_examples``) is set
    aside as ``heldout`` and not trained on: a scoring split that is neither train nor dev.
    """
    train = heldout = None
    if with_train or holdout_fraction:
        examples = load_split(task, "train", glue_dir)
        if max_train_examples is not None:
            examples = examples[:max_train_examples]
        if holdout_fraction:
            examples, held = split_holdout(examples, holdout_fraction)
            heldout = tokenize(held, tokenizer, max_length=max_length)
        train = tokenize(examples, tokenizer, max_length=max_length) if with_train else None
    evals = {}
    for split in task.eval_splits:
        examples = load_split(task, split, glue_dir)
        if max_eval_examples is not None:
            examples = examples[:max_eval_examples]
        evals[split] = tokenize(examples, tokenizer, max_length=max_length)
    return TaskData(task=task, train=train, evals=evals, pad_id=tokenizer.pad_token_id or 0, heldout=heldout)


def evaluate_model(
    model: nn.Module, data: TaskData, masks: Masks | None = None
) -> dict[str, dict[str, float]]:
    """Metrics on every eval split of the task, under ``masks`` if given."""
    results = {}
    heads = masks.heads if masks else None
    mlps = masks.mlps if masks else None
    with gated(model, heads=heads, mlps=mlps), weight_masked(model, masks.weights if masks else None):
        for split in data.evals:
            results[split] = evaluate(model, data.task, data.eval_batches(split))
    return results


def metrics_record(task: TaskSpec, results: dict[str, dict[str, float]], **extra: Any) -> dict[str, Any]:
    return {
        "task": task.name,
        "primary_metric": task.primary_metric,
        "splits": {split: {"metrics": m, "n_examples": m["n_examples"]} for split, m in results.items()},
        **extra,
    }


def finetuned_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not runs.is_complete_run(run_dir):
        raise UserError(
            f"{run_dir} is not a finished fine-tuning run (no {runs.METRICS_FILE} and {runs.MODEL_DIR}/); "
            "give the directory `bertlottery finetune --out` wrote."
        )
    return runs.read_json(run_dir / runs.CONFIG_FILE)
