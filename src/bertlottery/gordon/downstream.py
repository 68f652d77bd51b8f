"""Fine-tune a Gordon checkpoint on a GLUE task: one variant at one learning rate (G§3.2-3.4).

Variants:

- ``pruned``: the weights a pre-training mask pruned stay exactly zero throughout (the mask is held
  fixed, `bertlottery.masking.WeightMaskKeeper`);
- ``information-deletion``: the same weights are set to zero before fine-tuning but train freely;
- ``after-downstream``: a model already fine-tuned on the task (with its classifier) is pruned to the
  target sparsity by magnitude, a threshold per matrix (or global), and trained on with that mask.

Every run records the dev metrics, the mean loss over the whole training set after training (eval
mode, G Table 1), and optionally the sort-order movement of the pruned tensors after every epoch
(G Table 2, Figs. 4 right, 7). A run directory::

    OUT/
      metrics.json      dev metrics, train_loss, learning_rate, sparsity reached, mask_difference
      history.json      training loss per logging window and per epoch (with sort-order movement)
      config.json       what was run
      environment.json  package versions, platform, device
      mask.safetensors  the mask held fixed (pruned, after-downstream)
      model/            the fine-tuned model (only when asked: the input of after-downstream runs)

Example:
    >>> record = run_downstream("runs/x/stages/gordon-pretrain/.../model", "SST-2", "out",
    ...                         glue_dir=Path("../shared/data/glue"), settings=TrainSettings(),
    ...                         variant="pruned", mask=mask)                        # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from ..data import make_loader
from ..errors import UserError, did_you_mean
from ..masking import apply_weight_mask_, gated, weight_masked
from ..masks import Masks, WeightMask, save_masks
from ..models import load_model, load_tokenizer, model_layout
from ..steps.taskdata import CAP_SEED, evaluate_model, prepare_task_data
from ..tasks import get_task
from ..training import TrainSettings, finetune
from .analysis import mask_difference, movement_summary, sort_order_ranks
from .names import VARIANTS
from .pruning import magnitude_mask, mask_sparsity, pruned_parameters

__all__ = ["run_downstream", "mean_loss", "AfterDownstream"]


class AfterDownstream:
    """How an ``after-downstream`` run prunes the fine-tuned model."""

    def __init__(self, sparsity: float, *, scope: str = "local", tensors: str = "gordon", embeddings: bool = False):
        self.sparsity, self.scope, self.tensors, self.embeddings = sparsity, scope, tensors, embeddings

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@torch.no_grad()
def _without_absent_pooler(mask: WeightMask | None, shapes: dict[str, tuple[int, ...]]) -> WeightMask | None:
    """A pre-trained pooler is pruned with the encoder, but some families' classifiers (MPNet's) are
    built without it: its part of a pre-training mask has nothing to hold there."""
    if mask is None:
        return None
    return WeightMask({n: k for n, k in mask.keep.items() if n in shapes or ".pooler." not in n})


def mean_loss(model: nn.Module, batches, masks: Masks | None = None) -> float:
    """The model's mean loss per example over ``batches`` (eval mode, under ``masks``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    heads = masks.heads if masks else None
    mlps = masks.mlps if masks else None
    try:
        with gated(model, heads=heads, mlps=mlps), weight_masked(model, masks.weights if masks else None):
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch.items() if k != "index"}
                size = int(inputs["input_ids"].shape[0])
                total += float(model(**inputs).loss) * size
                n += size
    finally:
        model.train(was_training)
    if not n:
        raise ValueError("no batches")
    return total / n


def run_downstream(
    checkpoint: str | os.PathLike,
    task_name: str,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    settings: TrainSettings,
    variant: str,
    mask: WeightMask | None = None,
    after: AfterDownstream | None = None,
    reference_mask: WeightMask | None = None,
    max_train_examples: int | None = None,
    cap_seed: int = CAP_SEED,
    sort_order: dict[str, Any] | None = None,
    save_model: bool = False,
    progress: bool = True,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` on a task as ``variant`` says and write a run directory to ``out``.

    Args:
        checkpoint: a pre-training checkpoint (``pruned``, ``information-deletion``: the classifier is
            initialised from ``settings.seed``), or a fine-tuned model folder (``after-downstream``:
            its classifier is kept).
        mask: the pre-training mask (``pruned``, ``information-deletion``); None means nothing pruned.
        after: the target and tensors of ``after-downstream`` pruning.
        reference_mask: a mask to compare the ``after-downstream`` mask with (the pre-training one).
        max_train_examples, cap_seed: a cap on the training set, a seeded stratified sample
            (`bertlottery.steps.taskdata.training_examples`), as the lottery's fine-tuning draws it.
        sort_order: ``{"bins": int, "tensors": str, "embeddings": bool}`` records the sort-order movement
            of those tensors after every epoch.
        save_model: keep the fine-tuned model in ``out/model``.
    """
    if variant not in VARIANTS:
        raise UserError(f"Unknown variant '{variant}'.{did_you_mean(variant, VARIANTS)} Known: {', '.join(VARIANTS)}.")
    if variant == "after-downstream" and after is None:
        raise UserError("An after-downstream run needs its target sparsity.")
    task = get_task(task_name)
    tokenizer = load_tokenizer(str(checkpoint))
    data = prepare_task_data(task, tokenizer, glue_dir, max_length=settings.max_length,
                             max_train_examples=max_train_examples, cap_seed=cap_seed)
    fresh_classifier = variant != "after-downstream"
    model = load_model(str(checkpoint), task.num_labels, seed=settings.seed if fresh_classifier else None)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}

    masks = None
    deleted = 0.0
    if variant == "after-downstream":
        targets = pruned_parameters(model, after.tensors, after.embeddings)
        mask = magnitude_mask(targets, after.sparsity, scope=after.scope)
    mask, reference_mask = _without_absent_pooler(mask, shapes), _without_absent_pooler(reference_mask, shapes)
    if mask is not None:
        Masks(weights=mask).check_against(model_layout(model), shapes)
        if variant == "information-deletion":
            apply_weight_mask_(model, mask)  # the information is gone; the weights are free to come back
            deleted = mask_sparsity(mask)
        else:
            masks = Masks(weights=mask, params={"variant": variant})

    tracked = before = ranks = None
    if sort_order:
        tracked = pruned_parameters(model, sort_order["tensors"], sort_order["embeddings"])
        before = {n: p.detach().float().cpu().clone() for n, p in tracked.items()}
        ranks = {n: sort_order_ranks(w) for n, w in before.items()}

    def after_epoch(epoch: int, trained: nn.Module) -> dict[str, Any] | None:
        if tracked is None:
            return None
        now = {n: p.detach().float().cpu() for n, p in tracked.items()}
        summary = movement_summary(before, now, bins=sort_order["bins"], ranks_before=ranks)
        if epoch < settings.epochs:  # the per-magnitude breakdown only at the end
            summary = {k: summary[k] for k in ("mean", "std", "n_weights")}
        return {"sort_order": summary}

    started = time.time()
    history = finetune(model, data.train_batches(settings), settings, masks=masks, on_epoch_end=after_epoch,
                       progress=progress)
    seconds = time.time() - started
    results = evaluate_model(model, data, masks)
    train_loss = mean_loss(model, make_loader(data.train, data.pad_id, 64, shuffle=False, seed=None), masks)
    kept = 1.0 - (mask_sparsity(mask) if mask is not None and variant != "information-deletion" else deleted)
    record: dict[str, Any] = {
        "task": task.name,
        "primary_metric": task.primary_metric,
        "variant": variant,
        "learning_rate": settings.learning_rate,
        "epochs": settings.epochs,
        "splits": {split: {"metrics": m} for split, m in results.items()},
        "train_loss": train_loss,
        "n_train_examples": len(data.train),
        "cap_seed": cap_seed if max_train_examples is not None else None,
        "cap": data.cap.to_dict() if data.cap is not None else None,  # which examples were trained on
        # the constant predictor of the examples trained on: the chance line of G Fig. 1
        "majority": {split: dict(m) for split, m in (data.majority or {}).items()},
        "fraction_kept": kept,
        "train_seconds": round(seconds, 2),
    }
    if variant == "after-downstream":
        record["sparsity_reached"] = mask_sparsity(mask)
        if reference_mask is not None:
            record["mask_difference"] = mask_difference(mask, reference_mask)
    if tracked is not None:
        record["sort_order"] = history.epochs[-1]["sort_order"] if history.epochs else None
    config = {"checkpoint": str(checkpoint), "task": task.name, "variant": variant, "train": settings.to_dict(),
              "glue_dir": str(glue_dir) if glue_dir else None, "max_train_examples": max_train_examples,
              "cap_seed": cap_seed if max_train_examples is not None else None, "after": after.to_dict() if after else None, "sort_order": sort_order}
    with runs.staged_run_dir(out, overwrite=overwrite) as scratch:
        if save_model:
            model.save_pretrained(scratch / runs.MODEL_DIR)
            tokenizer.save_pretrained(scratch / runs.MODEL_DIR)
        if masks is not None:
            save_masks(scratch / runs.MASK_FILE, masks, model_layout(model))
        runs.write_json(scratch / runs.CONFIG_FILE, config)
        runs.write_json(scratch / runs.ENVIRONMENT_FILE, runs.environment(str(next(model.parameters()).device)))
        runs.write_json(scratch / runs.HISTORY_FILE, history.to_dict())
        runs.write_json(scratch / runs.METRICS_FILE, record)
    return record
