"""Metrics of a model on a split, optionally under a mask.

Example:
    >>> with gated(model, heads=masks.heads, mlps=masks.mlps):       # doctest: +SKIP
    ...     metrics = evaluate(model, task, dev_loader)
    >>> metrics["accuracy"]                                           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from .lastlayer import first_position_only
from .metrics import compute_metrics
from .precision import autocast, resolve_precision
from .tasks import TaskSpec

__all__ = ["predict", "evaluate"]


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], *, device: torch.device | str | None = None,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs and labels for every example, in the split's original order.

    Batches come length-sorted (``index`` says where each example belongs), so outputs are scattered
    back to their original positions. ``precision``: the forward pass's (`bertlottery.precision`). The
    model's last layer runs as its setting says (`bertlottery.lastlayer`).
    Returns ``(logits [N, C] or scores [N], labels [N])``.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision = resolve_precision(precision, device)
    outputs, labels, order = [], [], []
    try:
        # one autocast region for the whole split: inside it each weight is cast to bf16 once, not per batch
        with autocast(precision, device), first_position_only(model):
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "index")}
                logits = model(**inputs).logits.float().cpu()
                outputs.append(logits.squeeze(-1) if logits.shape[-1] == 1 else logits)
                labels.append(batch["labels"].cpu())
                order.append(batch["index"].cpu() if "index" in batch else None)
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("no batches to evaluate")
    out, lab = torch.cat(outputs), torch.cat(labels)
    if all(o is not None for o in order):
        index = torch.cat(order)
        restored_out, restored_lab = torch.empty_like(out), torch.empty_like(lab)
        restored_out[index], restored_lab[index] = out, lab
        out, lab = restored_out, restored_lab
    return out.numpy(), lab.numpy()


def evaluate(
    model: nn.Module,
    task: TaskSpec,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """The task's metrics (`bertlottery.metrics`) plus ``n_examples``, in ``precision``."""
    outputs, labels = predict(model, batches, device=device, precision=precision)
    predictions = outputs if task.is_regression else outputs.argmax(-1)
    metrics = compute_metrics(task, predictions, labels)
    metrics["n_examples"] = int(len(labels))
    return metrics
