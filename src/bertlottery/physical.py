"""Train and evaluate s-pruned subnetworks as physically smaller models, not as gated full ones.

Re-fine-tuning under a head+MLP mask with gates (`bertlottery.masking.gated`) costs what the full model
costs: the masked heads and MLPs are computed and multiplied by zero. Here the mask is applied by
`bertlottery.export.export_pruned` instead, so they are not computed at all. It is the same computation
(re-fine-tuning holds the mask fixed throughout, `docs/algorithms.md#evaluation-modes-and-baselines`):

- a gated-off head or MLP gets an exactly zero gradient in the full model (its output is multiplied by
  zero), so the kept weights see the same gradients in both models;
- AdamW is element-wise, so the kept weights take the same steps;
- gradient clipping by global norm sums squared gradients, and the zeros add nothing: the norm, hence
  the clipping factor, is the same;
- weight decay shrinks the gated model's masked weights, which the mask never lets reach the output;
  the small model does not have them. `merge_trained` leaves them at their starting values.

The two models add up their sums in other orders, so they agree to rounding, not bitwise. One place
shows it more than others: a key bias adds the same amount to all of a query's scores, which softmax
ignores, so its gradient is zero up to rounding and Adam (which divides by the gradient's own running
size) turns that noise into steps of up to the learning rate, in either model; it changes no output.

With dropout on, the two models draw different dropout masks (the attention probabilities have other
shapes), so runs are equal in distribution rather than bitwise.

Example:
    >>> model = load_model("minilm-l6", num_labels=2, seed=42)                        # doctest: +SKIP
    >>> small, history = finetune_pruned(model, batches, TrainSettings(), masks)       # doctest: +SKIP
    >>> evaluate(small, task, dev)          # the trained subnetwork; `model` now holds its weights too  # doctest: +SKIP
    >>> search = structured_search(score, pruned_evaluator(model, measure), ...)       # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .export import export_pruned, exported_plan
from .masks import HeadMask, Masks, MlpMask
from .training import History, TrainSettings, finetune

__all__ = ["export_for", "merge_trained", "finetune_pruned", "pruned_evaluator"]


def export_for(model: nn.Module, masks: Masks) -> nn.Module:
    """The physically smaller copy of ``model`` under ``masks``' heads and MLPs.

    Only head and MLP masks can be removed physically; a weight mask (m-pruning) has to stay a mask on
    the full model, so it is refused here rather than silently dropped.
    """
    if masks.weights is not None:
        raise UserError("A weight mask cannot be removed physically; re-fine-tune it on the full model (gated).")
    return export_pruned(model, masks.heads, masks.mlps)


def _kept_positions(full: nn.Module, plan) -> dict[str, torch.Tensor]:
    """For every parameter of the export of ``full`` under ``plan``: the flat positions in ``full``'s
    tensor of the same name that its elements came from.

    Found by exporting a copy of ``full`` whose every parameter holds its own flat positions: the export
    only selects elements, so whatever it keeps of a tensor is where that part sits in the original. This
    follows the export exactly for every family it supports (separate or fused Q/K/V, relative-position
    maps, gated MLPs) without restating how each is cut.
    """
    probe = copy.deepcopy(full)
    with torch.no_grad():
        for param in probe.parameters():
            # float64 holds every position exactly (up to 2**53 elements)
            param.data = torch.arange(param.numel(), dtype=torch.float64, device=param.device).view(param.shape)
    cut = export_pruned(probe, plan.head_mask, plan.mlp_mask)
    return {name: param.detach().long() for name, param in cut.named_parameters()}


@torch.no_grad()
def merge_trained(full: nn.Module, small: nn.Module) -> nn.Module:
    """Copy the weights of ``small`` (an export of ``full``) back into ``full``, in place.

    Every element of ``small`` goes back to the place in ``full`` it was exported from; weights of
    removed heads and MLPs keep their values in ``full``. Afterwards ``full`` under
    ``gated(full, plan.head_mask, plan.mlp_mask)`` computes what ``small`` computes, so it can be saved,
    evaluated and sized as any gated run is. Returns ``full``.
    """
    plan = exported_plan(small)
    if plan is None:
        raise UserError("merge_trained takes a model made by export_pruned; this one is a full model.")
    if exported_plan(full) is not None:
        raise UserError("merge_trained writes into the full model; it was given an export.")
    positions = _kept_positions(full, plan)
    targets = dict(full.named_parameters())
    for name, param in small.named_parameters():
        if name not in targets or name not in positions or positions[name].shape != param.shape:
            raise UserError(f"{name} of the export does not match the full model; merge into the model it was exported from.")
        target = targets[name]
        target.view(-1)[positions[name].view(-1).to(target.device)] = param.detach().reshape(-1).to(target)
    return full


def finetune_pruned(
    model: nn.Module,
    train_batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    settings: TrainSettings,
    masks: Masks,
    *,
    steps_per_epoch: int | None = None,
    on_epoch_end: Callable[[int, nn.Module], dict[str, Any] | None] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, History]:
    """Re-fine-tune ``model`` under ``masks`` (heads and MLPs) by training its physically smaller export.

    Same arguments and history as `bertlottery.training.finetune` with ``masks``; ``on_epoch_end``
    receives the small model (the mask is built in). Returns ``(small, history)``: the trained small
    model, to evaluate, and ``model`` itself updated in place by `merge_trained`, to save or to evaluate
    under ``gated`` exactly as a gated re-fine-tuning's model.

    >>> small, history = finetune_pruned(model, batches, TrainSettings(epochs=1), masks)  # doctest: +SKIP
    """
    small = export_for(model, masks)
    history = finetune(small, train_batches, settings, steps_per_epoch=steps_per_epoch,
                       on_epoch_end=on_epoch_end, progress=progress)
    merge_trained(model, small)  # across devices: the small model stays where it trained, for its evaluation
    return small, history


def pruned_evaluator(
    model: nn.Module, measure: Callable[[nn.Module], float]
) -> Callable[[HeadMask, MlpMask], float]:
    """A search's ``evaluate(heads, mlps)``: ``measure`` of the physically pruned model.

    The drop-in replacement of ``with gated(model, heads, mlps): return measure(model)`` for
    `bertlottery.pruning.structured_search`: same metric (to float tolerance), fewer operations. Each
    call exports a fresh copy of ``model`` (a copy of its weights, small next to an evaluation pass).

    >>> evaluate = pruned_evaluator(model, lambda m: evaluate(m, task, dev)["accuracy"])  # doctest: +SKIP
    >>> evaluate(heads, mlps)                                                             # doctest: +SKIP
    """

    def evaluate(heads: HeadMask, mlps: MlpMask) -> float:
        small = export_pruned(model, heads, mlps)
        return float(measure(small))

    return evaluate

