"""What the steps share: a task's tokenised splits, evaluating a model on them under a mask, the
metrics record a step writes, and reading a fine-tuning run a later step starts from."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import runs
from ..caps import Cap, cap_examples
from ..data import TokenizedSplit, load_split, make_loader, tokenize
from ..errors import UserError
from ..evaluation import evaluate
from ..learnt import ALPHA, LearntCheck, check_learnt
from ..masking import gated, weight_masked
from ..masks import Masks
from ..metrics import chance_level, majority_baseline
from ..tasks import TaskSpec
from ..training import TrainSettings

__all__ = ["TaskData", "prepare_task_data", "training_examples", "split_holdout", "evaluate_model", "metrics_record",
           "finetuned_run_config", "learnt_check_of", "fit_max_length", "DEFAULT_MAX_LENGTH", "HOLDOUT_SEED", "CAP_SEED",
           "EVAL_BATCH_SIZE"]

EVAL_BATCH_SIZE = 64
DEFAULT_MAX_LENGTH = next(f.default for f in fields(TrainSettings) if f.name == "max_length")  # the paper's 128
log = logging.getLogger(__name__)


def fit_max_length(model: str | os.PathLike, asked: int | None, *, default: int = DEFAULT_MAX_LENGTH,
                   name: str = "--max-length") -> int:
    """The tokens per example to use with ``model``: ``asked``, refused with one line if the model's
    position embeddings cannot hold it; or, if nothing was asked, ``default`` cut to what they hold,
    with a one-line notice (logged as a warning).

    A length the user chose beyond the model's positions is a mistake to mend before anything runs (a
    longer example would fail in the middle of a run). A default is the toolkit's choice, not theirs:
    the paper's 128 means "at most 128" on a model with fewer positions (the tests' tiny models, 64),
    so it is fitted rather than refused, which would make every such user pass a length.

    >>> fit_max_length("minilm-l6", None)                                    # doctest: +SKIP
    128
    """
    from ..models import max_tokens

    limit = max_tokens(model)
    if asked is not None:
        if limit is not None and asked > limit:
            raise UserError(f"{name} {asked} is beyond the {limit} positions of the model {model}; give at most {limit}.")
        return asked
    if limit is not None and default > limit:
        log.warning("%s: the default %d is beyond the %d positions of the model %s; using %d.", name, default, limit,
                    model, limit)
        return limit
    return default


@dataclass
class TaskData:
    """A task's tokenised splits for one tokenizer."""

    task: TaskSpec
    train: TokenizedSplit | None
    evals: dict[str, TokenizedSplit]  # eval split name -> split
    pad_id: int
    heldout: TokenizedSplit | None = None  # a slice of train set aside (scoring without touching dev)
    cap: Cap | None = None  # which training examples a capped run trains on (None: all of them)
    # the majority class's metrics on each eval split, the class taken from the labels trained on
    majority: dict[str, dict[str, float]] | None = None

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

# The seed of a training cap's sample (`bertlottery.caps`). It is a data seed, fixed across a study's
# seeds rather than the run seed: the paper trains every seed on the whole training set, so its seeds
# differ only in the classifier's initialisation and the data order; a cap drawn per run seed would add
# a third difference (which examples), widening the spread over seeds that the lottery comparisons read.
# A config can change it (``train.cap_seed``) to ask how much the sample matters.
CAP_SEED = 0


def split_holdout(examples: list, fraction: float, seed: int = HOLDOUT_SEED) -> tuple[list, list]:
    """Split train examples into (train, held out): a seeded ``fraction`` of them is held out."""
    if not 0 < fraction < 1:
        raise UserError(f"The held-out fraction must be between 0 and 1, got {fraction}.")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_out = max(1, round(fraction * len(examples)))
    held = set(order[:n_out])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def training_examples(
    task: TaskSpec,
    glue_dir: Path | None,
    *,
    max_train_examples: int | None = None,
    cap_seed: int = CAP_SEED,
    holdout_fraction: float = 0.0,
) -> tuple[list, list, Cap | None]:
    """``(train, held out, cap)``: the examples a run trains on, the slice set aside, and the cap drawn.

    A cap is a seeded sample stratified by label and source (`bertlottery.caps.cap_examples`), not
    the first lines of the file (GLUE's files are sorted by source); the held-out slice is taken
    from the capped sample.
    """
    examples = load_split(task, "train", glue_dir)
    cap = None
    if max_train_examples is not None:
        examples, cap = cap_examples(task, examples, max_train_examples, cap_seed)
    held: list = []
    if holdout_fraction:
        examples, held = split_holdout(examples, holdout_fraction)
    return examples, held, cap


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
    cap_seed: int = CAP_SEED,
    with_majority: bool = False,
) -> TaskData:
    """Read and tokenise a task's train split and eval splits (cached on disk).

    ``max_train_examples`` caps train to a seeded stratified sample (see `training_examples`). With
    ``holdout_fraction`` a seeded slice of train (taken from the capped sample) is set aside as
    ``heldout`` and not trained on: a scoring split that is neither train nor dev. ``majority`` is the
    majority class's score on each eval split, its class taken from the labels trained on (read with
    the training data, or with ``with_majority``; evaluating alone needs no train split).
    """
    train = heldout = cap = majority = None
    if with_train or holdout_fraction or with_majority:
        train_examples, held, cap = training_examples(task, glue_dir, max_train_examples=max_train_examples,
                                                      cap_seed=cap_seed, holdout_fraction=holdout_fraction)
        train = tokenize(train_examples, tokenizer, max_length=max_length) if with_train else None
        heldout = tokenize(held, tokenizer, max_length=max_length) if holdout_fraction else None
        train_labels = np.array([e.label for e in train_examples])
        majority = {}
    evals = {}
    for split in task.eval_splits:
        examples = load_split(task, split, glue_dir)
        if max_eval_examples is not None:
            examples = examples[:max_eval_examples]
        evals[split] = tokenize(examples, tokenizer, max_length=max_length)
        if majority is not None:
            majority[split] = majority_baseline(task, train_labels, np.array([e.label for e in examples]))
    return TaskData(task=task, train=train, evals=evals, pad_id=tokenizer.pad_token_id or 0, heldout=heldout,
                    cap=cap, majority=majority)


def evaluate_model(
    model: nn.Module, data: TaskData, masks: Masks | None = None, *, precision: str = "fp32",
    known: dict[str, dict[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics on every eval split of the task, under ``masks`` if given, in ``precision``.

    ``known``: splits whose metrics under these masks were already measured (by the search that found
    the mask, say), taken as they are instead of evaluated again."""
    known = known or {}
    results = {split: dict(known[split]) for split in data.evals if split in known}
    missing = [split for split in data.evals if split not in known]
    if not missing:
        return results
    heads = masks.heads if masks else None
    mlps = masks.mlps if masks else None
    with gated(model, heads=heads, mlps=mlps), weight_masked(model, masks.weights if masks else None):
        for split in missing:
            results[split] = evaluate(model, data.task, data.eval_batches(split), precision=precision)
    return {split: results[split] for split in data.evals}


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


def learnt_check_of(record: dict[str, Any], *, alpha: float = ALPHA, margin: float | None = None) -> LearntCheck:
    """The learnt-check (`bertlottery.learnt`) of a fine-tuning run's metrics record: its primary metric
    on the main dev split against the majority class of the labels it was trained on (``majority``)."""
    from ..tasks import get_task

    task = get_task(record["task"])
    split = task.eval_splits[0]
    entry = record["splits"][split]
    metric = task.primary_metric
    chance = chance_level(metric, record["majority"][split])
    return check_learnt(metric, entry["metrics"][metric], chance=chance, n=int(entry["n_examples"]), alpha=alpha,
                        margin=margin)
