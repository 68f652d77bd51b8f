"""Whole steps a user runs: fine-tune and save a run, evaluate a run, the quickstart.

Each reads top to bottom: set-up, loop, save. The CLI parses arguments and calls these; the
pipeline will call them too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import runs
from .data import TokenizedSplit, load_split, make_loader, tokenize
from .errors import UserError
from .evaluation import evaluate
from .masking import fraction_kept, gated, weight_masked
from .masks import HeadMask, Masks, load_masks, save_masks
from .models import load_model, load_tokenizer, model_layout
from .tasks import TaskSpec, get_task
from .training import TrainSettings, finetune

__all__ = ["TaskData", "prepare_task_data", "finetune_run", "evaluate_model", "evaluate_run", "quickstart"]

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


def _metrics_record(task: TaskSpec, results: dict[str, dict[str, float]], **extra: Any) -> dict[str, Any]:
    return {
        "task": task.name,
        "primary_metric": task.primary_metric,
        "splits": {split: {"metrics": m, "n_examples": m["n_examples"]} for split, m in results.items()},
        **extra,
    }


def finetune_run(
    model_name: str,
    task_name: str,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    settings: TrainSettings,
    masks_path: str | os.PathLike | None = None,
    masks: Masks | None = None,
    max_train_examples: int | None = None,
    holdout_fraction: float = 0.0,
    random_init: bool = False,
    eval_each_epoch: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model_name`` on a task and write a complete run directory to ``out``.

    The classifier is initialised from ``settings.seed`` alone and the data order follows it, so
    fine-tuning the same pre-trained model with the same settings under a mask ("re-fine-tuning")
    starts from the original run's initial classifier and sees the same batches.

    Args:
        masks_path: a masks file held fixed throughout training and evaluation (or ``masks`` itself);
            the run directory keeps a copy as mask.safetensors.
        holdout_fraction: set a seeded slice of train aside (not trained on) for scoring.
        random_init: the architecture with random weights (the paper's random-init baseline).
        eval_each_epoch: record dev metrics after every epoch in history.json (longer re-fine-tuning).
    """
    task = get_task(task_name)
    tokenizer = load_tokenizer(model_name)
    data = prepare_task_data(task, tokenizer, glue_dir, max_length=settings.max_length,
                             max_train_examples=max_train_examples, holdout_fraction=holdout_fraction)
    model = load_model(model_name, task.num_labels, seed=settings.seed, random_init=random_init)
    layout = model_layout(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if masks_path:
        masks = load_masks(masks_path, layout, shapes)
    elif masks is not None:
        masks.check_against(layout, shapes)

    def after_epoch(epoch: int, trained: nn.Module) -> dict[str, Any] | None:
        if not eval_each_epoch:
            return None
        # the mask is still applied here (finetune calls back inside its gated block)
        return {"dev": {split: evaluate(trained, task, data.eval_batches(split)) for split in data.evals}}

    started = time.time()
    history = finetune(
        model, data.train_batches(settings), settings, masks=masks,
        on_epoch_end=after_epoch, progress=progress,
    )
    train_seconds = time.time() - started
    results = evaluate_model(model, data, masks)

    config = {
        "model": model_name,
        "task": task.name,
        "glue_dir": str(glue_dir) if glue_dir else None,
        "train": settings.to_dict(),
        "masks": str(masks_path) if masks_path else None,
        "max_train_examples": max_train_examples,
        "n_train_examples": len(data.train),
        "holdout_fraction": holdout_fraction,
        "holdout_seed": HOLDOUT_SEED if holdout_fraction else None,
        "random_init": random_init,
        **(extra_config or {}),
    }
    record = _metrics_record(task, results, train_seconds=round(train_seconds, 2),
                             body_fraction_kept=fraction_kept(model, masks))
    with runs.staged_run_dir(out, overwrite=overwrite) as scratch:
        model.save_pretrained(scratch / runs.MODEL_DIR)  # safetensors by default
        tokenizer.save_pretrained(scratch / runs.MODEL_DIR)
        runs.write_json(scratch / runs.CONFIG_FILE, config)
        runs.write_json(scratch / runs.ENVIRONMENT_FILE, runs.environment(str(next(model.parameters()).device)))
        runs.write_json(scratch / runs.HISTORY_FILE, history.to_dict())
        if masks is not None:
            save_masks(scratch / runs.MASK_FILE, masks, layout)
        runs.write_json(scratch / runs.METRICS_FILE, record)  # last: its presence marks a finished run
    return record


def evaluate_run(
    run_or_model: str | os.PathLike,
    *,
    task_name: str | None,
    glue_dir: Path | None,
    masks_path: str | os.PathLike | None = None,
    max_length: int = 128,
    max_eval_examples: int | None = None,
) -> dict[str, Any]:
    """Evaluate a fine-tuned run (or model folder) on its task's eval splits, optionally under a mask."""
    path = Path(run_or_model)
    if task_name is None:
        # a run directory's config.json, or an exported subnetwork's export.json, names the task
        records = [runs.read_json(f) for f in (path / runs.CONFIG_FILE, path / runs.EXPORT_FILE) if f.is_file()]
        task_name = next((r["task"] for r in records if isinstance(r, dict) and "task" in r), None)
        if task_name is None:
            raise UserError(f"{path} is not a bertlottery run or export (no task recorded); pass --task.")
    task = get_task(task_name)
    model_dir = runs.model_dir_of(path)
    tokenizer = load_tokenizer(str(model_dir))
    data = prepare_task_data(task, tokenizer, glue_dir, max_length=max_length, with_train=False,
                             max_eval_examples=max_eval_examples)
    if (model_dir / "pruning.json").is_file():  # a physically pruned export (bertlottery export)
        from .export import load_exported

        if masks_path:
            raise UserError(f"{model_dir} is an exported subnetwork: its mask is already applied; evaluate it without --mask.")
        model = load_exported(model_dir)
        sizes = runs.read_json(model_dir / "pruning.json")["params"]
        kept = sizes["body_after"] / sizes["body_before"]
    else:
        model = load_model(str(model_dir), task.num_labels)
    masks = None
    if masks_path:
        masks = load_masks(masks_path, model_layout(model), {n: tuple(p.shape) for n, p in model.named_parameters()})
    if not (model_dir / "pruning.json").is_file():
        kept = fraction_kept(model, masks)
    results = evaluate_model(model, data, masks)
    return _metrics_record(task, results, model=str(model_dir), masks=str(masks_path) if masks_path else None,
                           body_fraction_kept=kept)


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
    overwrite: bool = True,
) -> dict[str, Any]:
    """Fine-tune MiniLM for one epoch, then evaluate it full and with a random half of its heads."""
    settings = TrainSettings(epochs=1, learning_rate=learning_rate, seed=seed)
    record = finetune_run(model_name, task_name, out, glue_dir=glue_dir, settings=settings,
                          max_train_examples=max_train_examples, overwrite=overwrite, progress=progress)
    task = get_task(task_name)
    model_dir = Path(out) / runs.MODEL_DIR
    tokenizer = load_tokenizer(str(model_dir))
    data = prepare_task_data(task, tokenizer, glue_dir, with_train=False)
    model = load_model(str(model_dir), task.num_labels)
    layout = model_layout(model)
    full = HeadMask.full(layout.num_layers, layout.num_heads)
    half = HeadMask.random_like(full, keep=full.n_total // 2, seed=seed)
    masked = evaluate_model(model, data, Masks(heads=half, params={"kind": "random", "seed": seed}))
    return {
        "task": task.name,
        "metric": task.primary_metric,
        "full": record["splits"],
        "random_half_heads": {s: {"metrics": m} for s, m in masked.items()},
        "heads_kept": half.n_kept,
        "body_fraction_kept": Masks(heads=half).body_fraction_kept(layout),
        "out": str(out),
    }
