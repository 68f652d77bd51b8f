"""Choose a task's fine-tuning settings on a held-out slice of train (``bertlottery tune``).

Each candidate of a grid (`bertlottery.tuning`) is fine-tuned on the training set less a seeded slice
of it and scored on that slice; dev is never read, since dev scores the pruning that follows. A
candidate writes only its scores (``metrics.json``), no model; `tuning_record` gathers the candidates
into ``tune.json``: every candidate's held-out score and the choice.

Example:
    >>> record = tune_run("minilm-l6", "RTE", "runs/tune-rte", glue_dir=None, base=TrainSettings(),
    ...                   grid={"learning_rate": [2e-5, 5e-5], "epochs": [2, 3]})   # doctest: +SKIP
    >>> record["choice"]                                                            # doctest: +SKIP
    {'learning_rate': 5e-05, 'epochs': 3}
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import runs
from ..data import tokenize
from ..evaluation import evaluate, predict
from ..lastlayer import use_last_layer
from ..models import load_model, load_tokenizer
from ..tasks import get_task
from ..training import TrainingDiverged, TrainSettings, finetune
from ..tuning import TIE_RULE, candidate_name, candidates, choose
from .taskdata import CAP_SEED, TaskData, split_holdout, training_examples

__all__ = ["tune_candidate_run", "heldout_loss", "tuning_record", "tune_run", "TUNE_SPLIT"]

TUNE_SPLIT = "heldout"  # the split name a candidate's scores are recorded under


def tune_candidate_run(
    model_name: str,
    task_name: str,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    settings: TrainSettings,
    tune_fraction: float,
    tune_seed: int,
    max_train_examples: int | None = None,
    cap_seed: int = CAP_SEED,
    holdout_fraction: float = 0.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune one candidate on train less a held-out slice and score it on that slice; write
    ``out/metrics.json`` and return it.

    The pool is what the study's fine-tuning trains on (the seeded cap, less the study's own scoring
    slice ``holdout_fraction``); ``tune_fraction`` of the pool, drawn with ``tune_seed``, is held out.
    The candidate trains on the rest: the two parts are disjoint by construction (`split_holdout`).
    A candidate whose loss diverges is a result, not a failure: it is recorded with no score
    (``diverged``: why), and the choice passes it over.
    """
    task = get_task(task_name)
    tokenizer = load_tokenizer(model_name)
    pool, _, cap = training_examples(task, glue_dir, max_train_examples=max_train_examples, cap_seed=cap_seed,
                                     holdout_fraction=holdout_fraction)
    train, held = split_holdout(pool, tune_fraction, tune_seed)
    data = TaskData(task=task, train=tokenize(train, tokenizer, max_length=settings.max_length), evals={},
                    pad_id=tokenizer.pad_token_id or 0,
                    heldout=tokenize(held, tokenizer, max_length=settings.max_length), cap=cap)
    model = load_model(model_name, task.num_labels, seed=settings.seed)
    use_last_layer(model, settings.last_layer)
    started = time.time()
    diverged = None
    try:
        history = finetune(model, data.train_batches(settings), settings, progress=progress)
        metrics = evaluate(model, task, data.eval_batches(TUNE_SPLIT))
        loss = heldout_loss(model, task, data.eval_batches(TUNE_SPLIT))
    except TrainingDiverged as error:
        history, diverged, loss = None, str(error), None
        metrics = {"n_examples": len(held)}
    train_seconds = time.time() - started
    record = {
        "task": task.name,
        "model": model_name,
        "primary_metric": task.primary_metric,
        "train": settings.to_dict(),
        "splits": {TUNE_SPLIT: {"metrics": metrics, "n_examples": metrics["n_examples"]}},
        "n_train_examples": len(train),
        "tune_fraction": tune_fraction,
        "tune_seed": tune_seed,
        "max_train_examples": max_train_examples,
        "cap": cap.to_dict() if cap is not None else None,
        "holdout_fraction": holdout_fraction,
        "heldout_loss": loss,
        "train_loss": history.epochs[-1]["train_loss"] if history and history.epochs else None,
        "diverged": diverged,
        "train_seconds": round(train_seconds, 2),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    runs.write_json(Path(out) / runs.METRICS_FILE, record)
    return record


def heldout_loss(model, task, batches) -> float:
    """The mean loss on the held-out slice (cross-entropy; squared error for regression): finer than a
    score such as accuracy, so it separates candidates whose scores tie on a small slice."""
    import torch
    import torch.nn.functional as F

    outputs, labels = (torch.from_numpy(a) for a in predict(model, batches))
    if task.is_regression:
        return float(F.mse_loss(outputs.float(), labels.float()))
    return float(F.cross_entropy(outputs.float(), labels.long()))


def tuning_record(records: list[dict[str, Any]], tuned: list[str]) -> dict[str, Any]:
    """``tune.json``: every candidate's settings and held-out score, and the choice (`TIE_RULE`).
    ``tuned``: the settings the grid varies (the choice holds only those)."""
    metric = records[0]["primary_metric"]
    scores = [r["splits"][TUNE_SPLIT]["metrics"].get(metric) for r in records]
    losses = [r.get("heldout_loss") for r in records]
    best = choose([r["train"] for r in records], scores, losses)
    return {
        "task": records[0]["task"],
        "metric": metric,
        "split": TUNE_SPLIT,
        "n_heldout": records[0]["splits"][TUNE_SPLIT]["n_examples"],
        "n_train": records[0]["n_train_examples"],
        "tune_fraction": records[0]["tune_fraction"],
        "tune_seed": records[0]["tune_seed"],
        "tuned": tuned,
        "rule": TIE_RULE,
        "candidates": [{**{k: r["train"][k] for k in tuned}, "score": score, "heldout_loss": r.get("heldout_loss"),
                        "metrics": {k: v for k, v in r["splits"][TUNE_SPLIT]["metrics"].items() if k != "n_examples"},
                        "train_loss": r.get("train_loss"), "train_seconds": r.get("train_seconds"),
                        "diverged": r.get("diverged")}
                       for r, score in zip(records, scores)],
        "choice": {k: records[best]["train"][k] for k in tuned},
        "chosen": best,
    }


def tune_run(
    model_name: str,
    task_name: str,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    base: TrainSettings,
    grid: dict[str, list],
    tune_fraction: float = 0.1,
    tune_seed: int = 0,
    max_train_examples: int | None = None,
    cap_seed: int = CAP_SEED,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Every candidate of ``grid`` (``{TrainSettings field: values}``) over ``base``, trained with
    ``tune_seed``, each in ``out/candidates/<name>/``; then ``out/tune.json`` (`tuning_record`)."""
    out = Path(out)
    runs.prepare_output_dir(out, "tune", overwrite=overwrite)
    records = []
    for candidate in candidates(grid):
        settings = replace(base, **candidate, seed=tune_seed)
        records.append(tune_candidate_run(model_name, task_name, out / "candidates" / candidate_name(candidate),
                                          glue_dir=glue_dir, settings=settings, tune_fraction=tune_fraction,
                                          tune_seed=tune_seed, max_train_examples=max_train_examples,
                                          cap_seed=cap_seed, progress=progress))
    record = tuning_record(records, list(grid))
    runs.write_json(out / runs.TUNE_FILE, record)
    return record
