"""Fine-tune a model on a task, optionally under a mask held fixed throughout.

The defaults are the paper's (`bertlottery.settings`; `docs/algorithms.md`): AdamW with eps 1e-8 and no weight decay, lr 2e-5,
linear decay without warm-up, gradient-norm clip 1.0, batch 32, 3 epochs. The seed fixes dropout and
the data order; the classifier's initialisation is fixed by the seed at load time
(`bertlottery.models.init_classifier`), so the same seed gives the same run, which re-fine-tuning
relies on.

Example:
    >>> model = load_model("minilm-l6", num_labels=2, seed=42)                # doctest: +SKIP
    >>> history = finetune(model, make_train_batches, TrainSettings(epochs=1))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .masking import WeightMaskKeeper, gated
from .masks import Masks
from .lastlayer import first_position_only, use_last_layer
from .precision import accelerator_for, attention_for_gradients, resolve_precision
from .settings import TrainSettings  # declared there, torch-free, for the config and the CLI

__all__ = ["TrainSettings", "finetune", "TrainingDiverged", "build_adamw"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run is degenerate and its model is not saved."""


@dataclass
class History:
    losses: list[float] = field(default_factory=list)  # mean training loss per logging window
    epochs: list[dict[str, Any]] = field(default_factory=list)  # per epoch: mean loss and anything the callback adds

    def to_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "epochs": self.epochs}


def build_adamw(groups, **kwargs) -> torch.optim.AdamW:
    """AdamW, fused where this torch build supports it for the parameters' device.

    The fused kernel is the same algorithm in one pass (about 2x faster on CPU); it also avoids the
    default implementation's slow ``sqrt`` over the exact zeros that a weight mask leaves in the
    second-moment buffers (BENCHMARKS.md).
    """
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device/dtype without a fused kernel
        return torch.optim.AdamW(groups, **kwargs)


NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def decay_groups(model: nn.Module, weight_decay: float, trainable: Callable[[str], bool] = lambda name: True) -> list[dict]:
    """AdamW parameter groups: weight decay on the (trainable) weights, none on biases and norms."""
    params = [(n, p) for n, p in model.named_parameters() if trainable(n)]
    return [
        {"params": [p for n, p in params if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]


def optimizer_step(accelerator, model: nn.Module, optimizer, scheduler, loss: torch.Tensor,
                   max_grad_norm: float | None, *, where: str) -> float:
    """One update from ``loss``: backward, clip, optimiser and schedule step, zeroed gradients.

    Returns the loss as a float; a loss that is not finite raises TrainingDiverged naming ``where``
    before it can touch the weights.
    """
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"the loss became {loss.item()} at {where}")
    accelerator.backward(loss)
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def finetune(
    model: nn.Module,
    train_batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    settings: TrainSettings,
    *,
    masks: Masks | None = None,
    steps_per_epoch: int | None = None,
    on_epoch_end: Callable[[int, nn.Module], dict[str, Any] | None] | None = None,
    progress: bool = True,
    log_every: int = 10,
) -> History:
    """Train ``model`` in place.

    Args:
        train_batches: ``epoch -> batches``; called once per epoch (a seeded loader gives each epoch
            its own order, the same for the same seed).
        masks: heads/MLPs gated off and weights held at exactly zero for the whole run.
        steps_per_epoch: number of batches per epoch, for the schedule (``len()`` of the batches if omitted).
        on_epoch_end: called as ``f(epoch, model)`` after each epoch (1-based) with the mask still
            applied; a returned dict is stored in the history (e.g. dev metrics per epoch).
    """
    from accelerate.state import PartialState
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(settings.seed)  # dropout; the data order has its own generator, the classifier its own seed
    precision = resolve_precision(settings.precision, PartialState().device)
    accelerator = accelerator_for(precision)
    # Paper's optimiser: AdamW(eps 1e-8), no weight decay on anything.
    optimizer = build_adamw(decay_groups(model, settings.weight_decay), lr=settings.learning_rate, eps=settings.adam_epsilon)
    if steps_per_epoch is None:
        steps_per_epoch = len(train_batches(1))  # type: ignore[arg-type]
    total = steps_per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)

    history = History()
    with ExitStack() as stack:
        # Gates go on the bare model before accelerate wraps it; hooks on submodules survive wrapping.
        if masks is not None and (masks.heads is not None or masks.mlps is not None):
            stack.enter_context(gated(model, heads=masks.heads, mlps=masks.mlps))
        stack.enter_context(attention_for_gradients(model, precision, accelerator.device))
        # the last layer where the classifier reads it (`bertlottery.lastlayer`); the model keeps the
        # setting for its evaluations
        stack.enter_context(first_position_only(use_last_layer(model, settings.last_layer)))
        model = model.to(accelerator.device)
        prepared_model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        if masks is not None and masks.weights is not None:
            keeper = WeightMaskKeeper(model, masks.weights).attach(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)
            stack.callback(keeper.detach)
        prepared_model.train()
        for epoch in range(1, settings.epochs + 1):
            batches = accelerator.prepare(train_batches(epoch))
            running, window, epoch_loss, epoch_steps = 0.0, 0, 0.0, 0
            bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}/{settings.epochs}",
                       disable=not (progress and accelerator.is_main_process), leave=False)
            for batch in bar:
                batch = {k: v for k, v in batch.items() if k != "index"}
                loss = prepared_model(**batch).loss
                value = optimizer_step(accelerator, prepared_model, optimizer, scheduler, loss, settings.max_grad_norm,
                                       where=f"epoch {epoch}, step {epoch_steps + 1}")
                running, window = running + value, window + 1
                epoch_loss, epoch_steps = epoch_loss + value, epoch_steps + 1
                if window == log_every:
                    history.losses.append(running / window)
                    bar.set_postfix(loss=f"{running / window:.4f}")
                    running, window = 0.0, 0
            if window:
                history.losses.append(running / window)
            record: dict[str, Any] = {"epoch": epoch, "train_loss": epoch_loss / max(epoch_steps, 1), "steps": epoch_steps}
            if on_epoch_end is not None:
                extra = on_epoch_end(epoch, accelerator.unwrap_model(prepared_model))
                prepared_model.train()
                if extra:
                    record.update(extra)
            history.epochs.append(record)
    if not all(math.isfinite(x) for x in history.losses):
        raise TrainingDiverged("the training loss was not finite")
    return history
