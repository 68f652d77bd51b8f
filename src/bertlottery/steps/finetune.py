"""Fine-tune an encoder on a task and write a complete run directory (``bertlottery finetune``).

Reads top to bottom: load the data and the model, train (under a fixed mask, if given), evaluate, save.
Re-fine-tuning (`bertlottery.steps.retrain`) and the random-init baseline are this step with a mask.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from .. import runs
from ..errors import UserError
from ..evaluation import evaluate
from ..masking import fraction_kept
from ..masks import Masks, load_masks, save_masks
from ..models import load_model, load_tokenizer, model_layout
from ..physical import finetune_pruned
from ..lastlayer import use_last_layer
from ..precision import device_precision, gradient_attention
from ..tasks import get_task
from ..training import TrainSettings, finetune
from .taskdata import (
    CAP_SEED, DEFAULT_MAX_LENGTH, HOLDOUT_SEED, evaluate_model, fit_max_length, learnt_check_of, metrics_record,
    prepare_task_data,
)

__all__ = ["finetune_run", "KIND", "recognises"]

KIND = "finetune"  # the kind of output folder `finetune_run` writes (`bertlottery.runs.check_output_dir`)


def _kind_of_run(config: dict[str, Any]) -> str:
    """Which command wrote a fine-tuning run directory, from its config.json."""
    if config.get("mode") == "retrained":
        return "retrain"
    return "baseline" if config.get("baseline") == "random-init" else KIND


def recognises(kind: str):
    """Whether a folder without a marker is ``kind`` output all the same: a complete fine-tuning run
    (re-fine-tuning, random-init baseline) that a command of that kind wrote before folders were marked."""
    def recognise(path: Path) -> bool:
        try:
            return runs.is_complete_run(path) and _kind_of_run(runs.read_json(path / runs.CONFIG_FILE)) == kind
        except (UserError, AttributeError):  # a damaged or foreign config.json: not recognised
            return False

    return recognise


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
    cap_seed: int = CAP_SEED,
    holdout_fraction: float = 0.0,
    learnt_check: dict[str, Any] | None = None,
    random_init: bool = False,
    eval_each_epoch: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
    kind: str = KIND,
) -> dict[str, Any]:
    """Fine-tune ``model_name`` on a task and write a complete run directory to ``out``.

    The classifier is initialised from ``settings.seed`` alone and the data order follows it, so
    fine-tuning the same pre-trained model with the same settings under a mask ("re-fine-tuning")
    starts from the original run's initial classifier and sees the same batches.

    A head+MLP mask with ``settings.subnetwork_training`` ``physical`` trains the physically smaller
    model (`bertlottery.physical.finetune_pruned`) and saves the full model with its weights merged
    back; ``gated`` (and any weight mask) trains the full model under the mask. ``trained_as`` in the
    run's config.json says which, ``precision_used`` in which precision it ran.

    Args:
        masks_path: a masks file held fixed throughout training and evaluation (or ``masks`` itself);
            the run directory keeps a copy as mask.safetensors.
        max_train_examples: train on a seeded sample of this many examples, stratified by label and
            source (`bertlottery.caps`), drawn with ``cap_seed``; the run records which (``cap``).
        holdout_fraction: set a seeded slice of train aside (not trained on) for scoring.
        learnt_check: ``{"alpha": ..., "margin": ...}``: record whether the model beat the majority
            class on dev (`bertlottery.learnt`) in ``learnt_check`` of the metrics.
        random_init: the architecture with random weights (the paper's random-init baseline).
        eval_each_epoch: record dev metrics after every epoch in history.json (longer re-fine-tuning).
        overwrite, kind: ``out`` must be new, empty, or with ``overwrite`` this ``kind``'s earlier output
            (replaced) or a folder not bertlottery's (written into; nothing else in it is deleted),
            checked before any work (`bertlottery.runs.check_output_dir`); another kind's is refused.
    """
    recognise = recognises(kind)
    runs.check_output_dir(out, kind, overwrite=overwrite, recognise=recognise, ask_to_replace=True)
    task = get_task(task_name)
    # settings cannot tell a length asked for from the default: a length other than the default is
    # checked against the model's positions, the default is fitted to them (`fit_max_length`)
    asked = None if settings.max_length == DEFAULT_MAX_LENGTH else settings.max_length
    settings = replace(settings, max_length=fit_max_length(model_name, asked, name="max_length"))
    tokenizer = load_tokenizer(model_name)
    data = prepare_task_data(task, tokenizer, glue_dir, max_length=settings.max_length,
                             max_train_examples=max_train_examples, holdout_fraction=holdout_fraction,
                             cap_seed=cap_seed)
    model = load_model(model_name, task.num_labels, seed=settings.seed, random_init=random_init)
    use_last_layer(model, settings.last_layer)  # its evaluations too, and a physically smaller copy's
    layout = model_layout(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if masks_path:
        masks = load_masks(masks_path, layout, shapes)
    elif masks is not None:
        masks.check_against(layout, shapes)

    precision = settings.precision  # as asked: each evaluation resolves it for the device its model is on
    trained_as = _trained_as(masks, settings)

    def after_epoch(epoch: int, trained: nn.Module) -> dict[str, Any] | None:
        if not eval_each_epoch:
            return None
        # the mask is still applied here (finetune calls back inside its gated block; the physically
        # pruned model has it built in)
        return {"dev": {split: evaluate(trained, task, data.eval_batches(split), precision=precision)
                        for split in data.evals}}

    started = time.time()
    if trained_as == "physical":
        small, history = finetune_pruned(model, data.train_batches(settings), settings, masks,
                                         on_epoch_end=after_epoch, progress=progress)
    else:
        history = finetune(model, data.train_batches(settings), settings, masks=masks,
                           on_epoch_end=after_epoch, progress=progress)
    train_seconds = time.time() - started
    # the small model computes what the merged full model computes under the mask, in fewer operations
    evaluated, applied = (small, None) if trained_as == "physical" else (model, masks)
    last = history.epochs[-1].get("dev") if eval_each_epoch and history.epochs else None
    # the last epoch's dev metrics are the final model's (the same model, mask and precision): a second
    # pass would repeat them, at about a tenth of a one-epoch re-fine-tuning's time
    results = last if last is not None else evaluate_model(evaluated, data, applied, precision=precision)
    precision_used, device = device_precision(precision, evaluated)

    config = {
        "model": model_name,
        "task": task.name,
        "glue_dir": str(glue_dir) if glue_dir else None,
        "train": settings.to_dict(),
        "masks": str(masks_path) if masks_path else None,
        "max_train_examples": max_train_examples,
        "cap_seed": cap_seed if max_train_examples is not None else None,
        "cap": data.cap.to_dict() if data.cap is not None else None,
        "n_train_examples": len(data.train),
        "holdout_fraction": holdout_fraction,
        "holdout_seed": HOLDOUT_SEED if holdout_fraction else None,
        "random_init": random_init,
        "trained_as": trained_as,
        "precision_used": precision_used,
        # the attention kernel training ran (`precision.gradient_attention`): not in the stage id
        "training_attention": gradient_attention(evaluated.config._attn_implementation, precision_used, device),
        **(extra_config or {}),
    }
    record = metrics_record(task, results, train_seconds=round(train_seconds, 2),
                             body_fraction_kept=fraction_kept(model, masks), majority=data.majority,
                             cap=config["cap"])
    if learnt_check is not None:
        record["learnt_check"] = learnt_check_of(record, **learnt_check).to_dict()
    with runs.staged_output(out, kind, overwrite=overwrite, recognise=recognise, ask_to_replace=True) as scratch:
        model.save_pretrained(scratch / runs.MODEL_DIR)  # safetensors by default
        tokenizer.save_pretrained(scratch / runs.MODEL_DIR)
        runs.write_json(scratch / runs.CONFIG_FILE, config)
        # where it trained: a physically pruned run trains the small model, the merged full one is saved
        runs.write_json(scratch / runs.ENVIRONMENT_FILE, runs.environment(str(next(evaluated.parameters()).device)))
        runs.write_json(scratch / runs.HISTORY_FILE, history.to_dict())
        if masks is not None:
            save_masks(scratch / runs.MASK_FILE, masks, layout)
        runs.write_json(scratch / runs.METRICS_FILE, record)  # last: its presence marks a finished run
    return record


def _trained_as(masks: Masks | None, settings: TrainSettings) -> str:
    """``full`` (no mask), ``physical`` (a head+MLP mask trained as the smaller model) or ``gated``."""
    if masks is None or (masks.heads is None and masks.mlps is None and masks.weights is None):
        return "full"
    if masks.weights is None and settings.subnetwork_training == "physical":
        return "physical"
    return "gated"
