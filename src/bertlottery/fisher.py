"""A retraining-free search for head and MLP-neuron masks under a FLOPs budget (Kwon et al. 2022).

"A Fast Post-Training Pruning Framework for Transformers" (NeurIPS 2022) prunes a fine-tuned model in
minutes, without any training, in three steps that this module implements as separate functions:

1. `fisher_scores` and `search_under_budget`: a diagonal Fisher estimate of every head gate and every
   MLP-neuron gate, ``I[i] = sum_x (dL(x)/dm_i)^2`` at ``m = 1`` over a sample of labelled training
   examples, then the mask that keeps the most Fisher mass under the budget. Heads all cost the same,
   and so do neurons, so the knapsack reduces to choosing how many heads to keep (the best heads and
   then as many of the best neurons as the rest of the budget pays for) and is solved exactly.
2. `rearrange`: within each layer, the same number of units, chosen again against the layer's block of
   the Fisher information matrix ``F = G^T G`` (G: per-example gradients), which sees interactions
   that the diagonal misses; the objective ``(1 - m)^T F (1 - m)`` never increases.
3. `tune_scales`: layer by layer, the kept units' gates become real numbers that solve a linear least-
   squares problem restoring the layer's output on a calibration sample (the full model's output
   before LayerNorm, from the pruned model's own input).

Neurons are gated by a forward pre-hook on each MLP's output projection that scales the intermediate
units (its input), so a pruned neuron is exactly the same as zeroing its row of the input projection
(with bias) and its column of the output projection; `neuron_weight_mask` writes it that way, a
`WeightMask` that the existing pruned evaluation and re-fine-tuning apply unchanged.

Example:
    >>> sample = fisher_sample(data, n_examples=2048, seed=0)                   # doctest: +SKIP
    >>> budget = budget_from_masks(model, s_pruning_masks)                      # doctest: +SKIP
    >>> result = fisher_search(model, sample, budget=budget)                    # doctest: +SKIP
    >>> masks = result.masks(model)          # HeadMask + neurons as a WeightMask  # doctest: +SKIP
    >>> with fisher_gated(model, result.head_scales, result.neuron_scales):    # doctest: +SKIP
    ...     metrics = evaluate(model, task, dev)                                # the tuned, unretrained model
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import TokenizedSplit, make_loader, subset
from .errors import UserError, did_you_mean
from .export import body_macs_per_token, export_pruned, mask_cost, unit_costs
from .importance import frozen
from .lastlayer import first_position_only
from .masking import check_neurons, fisher_gated
from .masks import HeadMask, Masks, WeightMask
from .models import Layout, LayerParts, adapter_for, model_layout
from .precision import attention_for_gradients, autocast, resolve_precision

__all__ = [
    "LABEL_SOURCES",
    "FisherScores",
    "FisherResult",
    "fisher_sample",
    "fisher_scores",
    "budget_from_masks",
    "search_under_budget",
    "pruned_fisher",
    "rearrange_layer",
    "rearrange",
    "tune_scales",
    "neuron_weight_mask",
    "neurons_of",
    "fisher_search",
]

LABEL_SOURCES = ("gold", "predicted")


def _inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k not in ("labels", "index")}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---- neurons as single weights ----------------------------------------------------------------------


def neuron_weight_mask(model: nn.Module, neurons: torch.Tensor) -> WeightMask:
    """A neuron mask as single weights: each pruned unit's row (and bias) of the MLP input projection
    (both rows, i and f + i, of a GeGLU map: input and gate) and its column of the output projection.
    The output projection's bias stays, as with the neuron gate, which scales only the intermediate units.

    Zeroing the row and bias makes the unit's pre-activation 0, and every activation of the supported
    families maps 0 to 0 (a GeGLU unit's gate is 0 too), so the masked model computes what the gated one does.
    """
    check_neurons(model, neurons)
    names = {id(p): n for n, p in model.named_parameters()}
    keep: dict[str, torch.Tensor] = {}
    for index, parts in enumerate(adapter_for(model).layers(model)):
        units = neurons[index].bool().cpu()
        rows = torch.cat([units, units]) if parts.gated_mlp else units
        keep[names[id(parts.mlp_in.weight)]] = rows.unsqueeze(1).expand_as(parts.mlp_in.weight).clone()
        if parts.mlp_in.bias is not None:
            keep[names[id(parts.mlp_in.bias)]] = rows.clone()
        keep[names[id(parts.mlp_out.weight)]] = units.unsqueeze(0).expand_as(parts.mlp_out.weight).clone()
    return WeightMask(keep)


def neurons_of(model: nn.Module, weights: WeightMask) -> torch.Tensor:
    """The neuron mask ``bool[layer, unit]`` a `neuron_weight_mask` holds (a unit is kept where its output
    column is), so that a stored Fisher mask gives its neurons back, e.g. for
    `bertlottery.sampling.random_neurons_like`. A layer the mask does not cover keeps every unit."""
    layout = model_layout(model)
    names = {id(p): n for n, p in model.named_parameters()}
    out = torch.ones(layout.num_layers, layout.intermediate_size, dtype=torch.bool)
    for index, parts in enumerate(adapter_for(model).layers(model)):
        keep = weights.keep.get(names[id(parts.mlp_out.weight)])
        if keep is not None:
            out[index] = keep.bool().any(0).cpu()
    return out


# ---- 1. Fisher scores --------------------------------------------------------------------------------


@dataclass
class FisherScores:
    """Per-example gate gradients and the diagonal Fisher estimate they give.

    ``head_grads: float[example, layer, head]``, ``neuron_grads: float[example, layer, unit]``: the
    gradient of each example's own loss with respect to the gates, at 1. ``heads``/``neurons``: their
    squares summed over examples (the diagonal of ``G^T G``).
    """

    head_grads: torch.Tensor
    neuron_grads: torch.Tensor
    labels: str

    @property
    def heads(self) -> torch.Tensor:
        return self.head_grads.pow(2).sum(0)

    @property
    def neurons(self) -> torch.Tensor:
        return self.neuron_grads.pow(2).sum(0)

    @property
    def n_examples(self) -> int:
        return int(self.head_grads.shape[0])


def fisher_sample(
    split: TokenizedSplit, pad_id: int, *, n_examples: int = 2048, seed: int = 0, batch_size: int = 32
):
    """Batches of ``n_examples`` training examples drawn uniformly without replacement (seeded), as the
    paper samples its 2,048; all of them if the split is smaller."""
    if n_examples < 1:
        raise UserError(f"The Fisher sample needs at least one example, got n_examples={n_examples}.")
    generator = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(len(split), generator=generator)[:n_examples].tolist())
    return make_loader(subset(split, chosen), pad_id, batch_size, shuffle=False, seed=None)


def _per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sum over the batch of each example's own loss (so d/d(its gates) is its own gradient)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction="sum")
    return F.cross_entropy(logits.float(), labels.long(), reduction="sum")


def _gate_gradients(inputs: torch.Tensor, grads: torch.Tensor, groups: int) -> torch.Tensor:
    """Each example's gradient with respect to gates at 1 that scale ``groups`` equal slices of the last
    axis of a module's input: ``sum over tokens and slice of input * dL/d(input)``, ``(B, groups)``."""
    product = (inputs * grads).view(inputs.shape[0], -1, groups, inputs.shape[-1] // groups)
    return product.sum((1, 3))


def fisher_scores(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], *, labels: str = "gold", precision: str = "fp32"
) -> FisherScores:
    """Per-example gradients of the loss with respect to every head and MLP-neuron gate, at 1.

    A gate at 1 that scales a module's input ``x`` leaves the forward pass unchanged, and its gradient
    is ``sum_t x_t * dL/dx_t`` over the positions it scales; so one backward pass of the batch's summed
    loss to the inputs of every attention and MLP output projection gives each example's gradient of
    each gate (``gated``'s gates are shared by the batch: their gradient is the batch's sum, whose
    square is not the Fisher estimate). Not multiplying by gates saves two elementwise products per
    gated module. Weights are frozen and dropout is off.

    Args:
        labels: ``"gold"`` the data's labels (the empirical Fisher, as the paper's code computes it);
            ``"predicted"`` the model's own argmax (classification only).
    """
    if labels not in LABEL_SOURCES:
        raise UserError(f"Unknown label source '{labels}'.{did_you_mean(labels, LABEL_SOURCES)} "
                        f"Known: {', '.join(LABEL_SOURCES)}.")
    layout = model_layout(model)
    layers = adapter_for(model).layers(model)
    device = _device(model)
    precision = resolve_precision(precision, device)

    def capture(key: tuple[str, int]):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]):
            (x,) = args
            if not x.requires_grad:  # the first layer's heads: nothing before them depends on a gate
                x = x.detach().requires_grad_()
            captured[key] = x
            return (x,)

        return hook

    head_grads, neuron_grads = [], []
    with frozen(model), attention_for_gradients(model, precision, device), first_position_only(model):
        for batch in batches:
            captured: dict[tuple[str, int], torch.Tensor] = {}  # the heads' context and the MLP's units
            handles = []
            try:
                for index, parts in enumerate(layers):
                    handles.append(parts.attn_out.register_forward_pre_hook(capture(("heads", index))))
                    handles.append(parts.mlp_out.register_forward_pre_hook(capture(("units", index))))
                with autocast(precision, device):
                    logits = model(**_inputs(batch, device)).logits
            finally:
                for handle in handles:
                    handle.remove()
            if labels == "predicted":
                if logits.shape[-1] == 1:
                    raise UserError("labels='predicted' needs a classification task; use labels='gold' for regression.")
                target = logits.argmax(-1).detach()
            else:
                target = batch["labels"].to(device)
            loss = _per_example_loss(logits, target)
            grads = dict(zip(captured, torch.autograd.grad(loss, list(captured.values()))))
            # products and sums over tokens in fp32 whatever the passes ran in: the Fisher estimate squares them
            heads = [_gate_gradients(captured["heads", i].float(), grads["heads", i].float(), layout.num_heads)
                     for i in range(len(layers))]
            units = [_gate_gradients(captured["units", i].float(), grads["units", i].float(), layout.intermediate_size)
                     for i in range(len(layers))]
            head_grads.append(torch.stack(heads, 1).detach().float().cpu())
            neuron_grads.append(torch.stack(units, 1).detach().float().cpu())
    if not head_grads:
        raise ValueError("no batches to score")
    return FisherScores(head_grads=torch.cat(head_grads), neuron_grads=torch.cat(neuron_grads), labels=labels)


# ---- 2. costs and the search under a budget ---------------------------------------------------------


def budget_from_masks(model_or_layout: nn.Module | Layout, masks: Masks, *, seq_len: int = 128,
                      cost: str = "macs") -> int:
    """The cost of a head + whole-MLP mask (an s-pruning good mask; a kind it lacks is all kept): the
    default budget, so that the Fisher mask and the s-mask are compared at the same cost. ``cost="macs"``:
    MACs per token at ``seq_len``; ``"params"``: parameters, as `search_under_budget` counts them."""
    layout = model_or_layout if isinstance(model_or_layout, Layout) else model_layout(model_or_layout)
    if masks.weights is not None:
        raise UserError("The budget is taken from a head and MLP mask; this one holds single weights.")
    if cost == "macs":
        return body_macs_per_token(layout, seq_len, masks.heads, masks.mlps)
    heads = masks.heads.keep if masks.heads is not None else torch.ones(layout.num_layers, layout.num_heads)
    mlps = masks.mlps.keep if masks.mlps is not None else torch.ones(layout.num_layers)
    neurons = mlps.bool().unsqueeze(1).expand(layout.num_layers, layout.intermediate_size)
    return mask_cost(layout, heads, neurons, cost=cost, seq_len=seq_len)


def search_under_budget(
    head_scores: torch.Tensor, neuron_scores: torch.Tensor, *, head_cost: int, neuron_cost: int, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head and neuron masks that keep the most score at a cost of at most ``budget``.

    Every head costs ``head_cost`` and every neuron ``neuron_cost``, so for k kept heads the best
    choice is the k best heads and the ``(budget - k*head_cost) // neuron_cost`` best neurons; trying
    every k solves the problem exactly (the paper's Algorithm 1). Ties keep the lower index, and among
    equally good k the smallest, so the result is deterministic. Returns ``(bool[layer, head],
    bool[layer, unit])``.
    """
    if budget < 0:
        raise UserError(f"The budget must be at least 0, got {budget}.")
    head_order = torch.sort(head_scores.flatten().double(), descending=True, stable=True)
    neuron_order = torch.sort(neuron_scores.flatten().double(), descending=True, stable=True)
    zero = torch.zeros(1, dtype=torch.float64)
    head_mass = torch.cat([zero, head_order.values.cumsum(0)])  # head_mass[k]: the best k heads
    neuron_mass = torch.cat([zero, neuron_order.values.cumsum(0)])
    n_heads = torch.arange(head_mass.numel())
    left = budget - n_heads * head_cost
    affordable = left >= 0
    n_neurons = torch.clamp(torch.div(left.clamp(min=0), neuron_cost, rounding_mode="floor"), max=neuron_mass.numel() - 1)
    value = torch.where(affordable, head_mass + neuron_mass[n_neurons], torch.full_like(head_mass, -math.inf))
    best = int(torch.argmax(value))  # the first maximum: the fewest heads among equals
    heads = torch.zeros(head_scores.numel(), dtype=torch.bool)
    heads[head_order.indices[:best]] = True
    neurons = torch.zeros(neuron_scores.numel(), dtype=torch.bool)
    neurons[neuron_order.indices[: int(n_neurons[best])]] = True
    return heads.view(head_scores.shape), neurons.view(neuron_scores.shape)


# ---- 3. mask rearrangement ----------------------------------------------------------------------------


def pruned_fisher(grads: torch.Tensor, keep: torch.Tensor) -> float:
    """``(1 - m)^T F (1 - m)`` with ``F = G^T G``: the Fisher estimate of the loss the pruned units of
    one layer add, interactions included. ``grads: float[example, unit]``, ``keep: bool[unit]``."""
    summed = grads.double()[:, ~keep.bool()].sum(1)  # each example's gradient along the pruned units
    return float(summed.pow(2).sum())


def rearrange_layer(grads: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Choose which units of one layer to keep, the same number, against the layer's Fisher block.

    Greedy, after the paper: the candidates not pruned now are visited from the smallest diagonal
    Fisher up; each joins the pruned set, and the unit whose removal from that set leaves the smallest
    ``(1 - m)^T F (1 - m)`` leaves it again. Removing the newcomer itself restores the previous set, so
    no visit increases the objective.
    """
    keep = keep.bool()
    if bool(keep.all()) or not bool(keep.any()):
        return keep.clone()
    grads = grads.detach().double().cpu()
    fisher = grads.T @ grads  # (unit, unit)
    diagonal = fisher.diagonal()
    pruned = torch.nonzero(~keep.cpu()).flatten()  # in visiting order: a tie leaves with the first
    candidates = torch.nonzero(keep.cpu()).flatten()
    candidates = candidates[torch.sort(diagonal[candidates], stable=True).indices].tolist()
    # pull[j] = (F 1_P)_j: removing j from P changes the objective by F_jj - 2 pull[j]
    pull = fisher[:, pruned].sum(1).numpy()
    # the loop's thousands of small steps in numpy, whose calls cost a fraction of torch's; columns[j] = F[:, j]
    columns, diagonal, pruned = fisher.T.contiguous().numpy(), diagonal.numpy(), pruned.numpy()
    for unit in candidates:
        pruned = np.append(pruned, unit)
        pull += columns[unit]
        drop = int(np.argmax(2 * pull[pruned] - diagonal[pruned]))
        pull -= columns[pruned[drop]]
        pruned = np.delete(pruned, drop)
    out = torch.ones_like(keep)
    out[torch.from_numpy(pruned)] = False
    return out


def rearrange(scores: FisherScores, heads: torch.Tensor, neurons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`rearrange_layer` on every layer, heads and neurons separately; per-layer counts (so costs) stay."""
    new_heads = torch.stack([rearrange_layer(scores.head_grads[:, i], heads[i]) for i in range(heads.shape[0])])
    new_neurons = torch.stack(
        [rearrange_layer(scores.neuron_grads[:, i], neurons[i]) for i in range(neurons.shape[0])]
    )
    return new_heads, new_neurons


# ---- 4. least-squares mask tuning ---------------------------------------------------------------------


class _Stop(Exception):
    """Raised by a hook once the part being tuned has run: the rest of the model is not needed."""


def _run_with_hooks(model: nn.Module, batches: Sequence[dict], hooks: list, heads, neurons,
                    tokens: list[torch.Tensor]) -> None:
    """Forward every batch under the gates with ``hooks`` (module, kind, fn) attached, recording each
    batch's non-padding token positions in ``tokens`` first; a hook may end a pass early with `_Stop`."""
    device = _device(model)
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "pre":
                # prepend: a capture sees its input before any gate scales it
                handles.append(module.register_forward_pre_hook(fn, prepend=True))
            else:
                handles.append(module.register_forward_hook(fn))
        with torch.no_grad(), fisher_gated(model, heads, neurons):
            for batch in batches:
                inputs = _inputs(batch, device)
                tokens.append(inputs["attention_mask"].reshape(-1).bool().cpu())
                try:
                    model(**inputs)
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()


def _flat(tensor: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, n) -> (non-padding tokens, n), float64 on the CPU."""
    return tensor.detach().reshape(-1, tensor.shape[-1])[tokens].double().cpu()


def _teacher_targets(model: nn.Module, batches: Sequence[dict]) -> list[dict[str, list[torch.Tensor]]]:
    """One pass of the full model: each layer's attention and MLP sub-layer outputs, residual +
    projection output (before the LayerNorm of a post-norm family), per batch."""
    layers = adapter_for(model).layers(model)
    tokens: list[torch.Tensor] = []
    seen: list[dict[str, list[torch.Tensor]]] = [{"attention": [], "mlp": []} for _ in layers]
    pending: dict[tuple[int, str], torch.Tensor] = {}

    def residual_of(index: int, kind: str):
        def hook(module, args):
            pending[index, kind] = _flat(args[0], tokens[-1])
        return hook

    def output_of(index: int, kind: str):
        def hook(module, args, output):
            out = _flat(output, tokens[-1])
            seen[index][kind].append(out + pending.pop((index, kind)))
        return hook

    hooks = []
    for index, parts in enumerate(layers):
        attention, mlp = parts.residual_sources
        hooks += [(attention, "pre", residual_of(index, "attention")), (mlp, "pre", residual_of(index, "mlp"))]
        hooks += [(parts.attn_out, "post", output_of(index, "attention")), (parts.mlp_out, "post", output_of(index, "mlp"))]
    _run_with_hooks(model, batches, hooks, None, None, tokens)
    return seen


def _student_inputs(model: nn.Module, batches: Sequence[dict], layer: int, kind: str, heads,
                    neurons) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """What the pruned model feeds layer ``layer``'s attention (``kind="heads"``: the heads' context
    vectors, ungated) or MLP output projection (``"neurons"``: the intermediate units, ungated), and
    that sub-layer's residual, per batch; the pass stops right after."""
    parts = adapter_for(model).layers(model)[layer]
    attention, mlp = parts.residual_sources
    into, residual_module = (parts.attn_out, attention) if kind == "heads" else (parts.mlp_out, mlp)
    tokens: list[torch.Tensor] = []
    inputs: list[torch.Tensor] = []
    residuals: list[torch.Tensor] = []

    def take_input(module, args):
        inputs.append(_flat(args[0], tokens[-1]))
        raise _Stop

    hooks = [(into, "pre", take_input), (residual_module, "pre",
                                         lambda module, args: residuals.append(_flat(args[0], tokens[-1])))]
    _run_with_hooks(model, batches, hooks, heads, neurons, tokens)
    return inputs, residuals


@dataclass
class _Normal:
    """Normal equations of ``min_x ||A x - b||^2``: ``A^T A``, ``A^T b`` and ``b^T b``."""

    ata: torch.Tensor
    atb: torch.Tensor
    btb: float

    def error(self, x: torch.Tensor) -> float:
        return float(x @ self.ata @ x - 2 * x @ self.atb + self.btb)

    def solve(self) -> torch.Tensor:
        # gelsy (QR with column pivoting): a solution also when A's columns are dependent (two units that
        # always agree), and several times faster than the SVD on a thousand neurons
        return torch.linalg.lstsq(self.ata, self.atb.unsqueeze(1), driver="gelsy").solution.squeeze(1)


def _target(teacher: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor) -> torch.Tensor:
    target = teacher.double()
    if bias is not None:
        target = target - bias.detach().double().cpu()
    return target - residual


def _head_system(targets: list[torch.Tensor], contexts: list[torch.Tensor], residuals: list, parts: LayerParts,
                 kept: torch.Tensor, num_heads: int) -> _Normal:
    weight = parts.attn_out.weight.detach().double().cpu()  # (d, H*dh)
    per_head = weight.view(weight.shape[0], num_heads, -1)[:, kept]  # (d, k, dh)
    n = int(kept.sum())
    ata, atb, btb = torch.zeros(n, n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), 0.0
    for teacher, context, residual in zip(targets, contexts, residuals):
        context = context.view(context.shape[0], num_heads, -1)[:, kept]  # (N, k, dh)
        outputs = torch.einsum("nkh,dkh->nkd", context, per_head)  # each kept head's share of the output
        target = _target(teacher, parts.attn_out.bias, residual)
        ata += torch.einsum("nkd,njd->kj", outputs, outputs)
        atb += torch.einsum("nkd,nd->k", outputs, target)
        btb += float(target.pow(2).sum())
    return _Normal(ata, atb, btb)


def _neuron_system(targets: list[torch.Tensor], units: list[torch.Tensor], residuals: list, parts: LayerParts,
                   kept: torch.Tensor) -> _Normal:
    weight = parts.mlp_out.weight.detach().double().cpu()[:, kept]  # (d, n); unit j's share: units[:, j] * weight[:, j]
    n = int(kept.sum())
    moments, atb, btb = torch.zeros(n, n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), 0.0
    for teacher, active, residual in zip(targets, units, residuals):
        active = active[:, kept]  # (N, n)
        target = _target(teacher, parts.mlp_out.bias, residual)
        moments += active.T @ active
        atb += (active * (target @ weight)).sum(0)
        btb += float(target.pow(2).sum())
    # sum_t <a_tj w_j, a_tk w_k> = (w_j . w_k) (sum_t a_tj a_tk)
    return _Normal((weight.T @ weight) * moments, atb, btb)


def tune_scales(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    heads: torch.Tensor,
    neurons: torch.Tensor,
    *,
    max_scale: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Real-valued gates for the kept heads and neurons that restore each layer's output.

    Layer by layer, first its heads then its neurons: the pruned model (with the scales found so far)
    runs on the calibration ``batches``, and the kept units' scales solve the linear least-squares
    problem ``min ||sum_i s_i out_i - target||^2`` over all non-padding tokens, where ``out_i`` is unit
    i's share of the sub-layer's output projection in the pruned model and ``target`` is the full
    model's sub-layer output (residual + branch: before the LayerNorm of a post-norm family, the new
    residual stream of a pre-norm one), less the pruned model's residual and the projection's bias,
    as in the paper; the residual is read where `LayerParts.residual_sources` says. A solution with a scale outside
    ``[-max_scale, max_scale]`` is refused, and those units stay at 1 (the paper's guard).

    Returns ``(head scales float[layer, head], neuron scales float[layer, unit], trace)``: pruned units
    are 0, and the trace gives each sub-layer's error before and after.
    """
    batches = list(batches)
    layout = model_layout(model)
    layers = adapter_for(model).layers(model)
    head_scales = heads.bool().to(torch.float64).clone()
    neuron_scales = neurons.bool().to(torch.float64).clone()
    trace: list[dict[str, Any]] = []
    with frozen(model):
        teacher = _teacher_targets(model, batches)
        for layer, parts in enumerate(layers):
            for kind, scales in (("heads", head_scales), ("neurons", neuron_scales)):
                kept = scales[layer] != 0
                if not bool(kept.any()):
                    continue
                inputs, residuals = _student_inputs(model, batches, layer, kind, head_scales.float(),
                                                    neuron_scales.float())
                if kind == "heads":
                    system = _head_system(teacher[layer]["attention"], inputs, residuals, parts, kept, layout.num_heads)
                else:
                    system = _neuron_system(teacher[layer]["mlp"], inputs, residuals, parts, kept)
                before = system.error(torch.ones(int(kept.sum()), dtype=torch.float64))
                solution = system.solve()
                accepted = bool(torch.isfinite(solution).all()) and float(solution.abs().max()) <= max_scale
                if accepted:
                    scales[layer, kept] = solution
                trace.append({"layer": layer, "kind": kind, "kept": int(kept.sum()), "error_before": before,
                              "error_after": system.error(solution) if accepted else before, "accepted": accepted})
    return head_scales.float(), neuron_scales.float(), trace


# ---- the whole method ---------------------------------------------------------------------------------


@dataclass
class FisherResult:
    """What `fisher_search` found.

    ``heads: bool[layer, head]`` and ``neurons: bool[layer, unit]`` the binary masks (True: kept);
    ``head_scales``/``neuron_scales`` the tuned real-valued gates (0 where pruned; the binary masks as
    floats when tuning is off); ``scores`` the Fisher estimate; ``cost`` the kept units' cost, at most
    ``budget``; ``full_cost`` the unpruned model's; ``trace`` what each step did and how long it took.
    """

    heads: torch.Tensor
    neurons: torch.Tensor
    head_scales: torch.Tensor
    neuron_scales: torch.Tensor
    scores: FisherScores
    cost: int
    budget: int
    full_cost: int
    trace: dict[str, Any]

    def masks(self, model: nn.Module, params: dict[str, Any] | None = None) -> Masks:
        """The binary masks as the toolkit stores them: a `HeadMask`, and the neurons as a `WeightMask`
        over the MLP projections (so pruned evaluation and re-fine-tuning apply unchanged)."""
        return Masks(
            heads=HeadMask(self.heads),
            weights=neuron_weight_mask(model, self.neurons),
            params={"method": "fisher", **self.trace["params"], **(params or {})},
            family=model_layout(model).family,
        )

    def export(self, model: nn.Module, *, tuned: bool = True) -> nn.Module:
        """A physically smaller copy of ``model``: pruned heads and neurons removed and, with ``tuned``,
        the tuned scales folded into the output projections, so its logits are those of ``model``
        under ``fisher_gated(model, head_scales, neuron_scales)`` (see `bertlottery.export.export_pruned`)."""
        scales = dict(head_scales=self.head_scales, neuron_scales=self.neuron_scales) if tuned else {}
        return export_pruned(model, HeadMask(self.heads), None, neurons=self.neurons, **scales)


def fisher_search(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    budget: int | None = None,
    budget_fraction: float | None = None,
    cost: str = "macs",
    seq_len: int = 128,
    labels: str = "gold",
    rearrange_masks: bool = True,
    tune: bool = True,
    tune_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    max_scale: float = 10.0,
    precision: str = "fp32",
) -> FisherResult:
    """Head and MLP-neuron masks of a fine-tuned ``model`` under a cost budget, without any training.

    Args:
        batches: the sample the Fisher estimate is taken over (labelled; see `fisher_sample`).
        budget: the most the kept units may cost (MACs per token at ``seq_len``, or parameters); see
            `budget_from_masks` for the cost of an s-pruning mask.
        budget_fraction: instead of ``budget``, this fraction of the full model's cost.
        cost: ``"macs"`` or ``"params"``.
        labels: ``"gold"`` or ``"predicted"`` labels in the Fisher estimate.
        rearrange_masks: re-choose units within each layer against the layer's Fisher block.
        tune: least-squares scales for the kept units, on ``tune_batches`` (default: ``batches``).
        precision: the Fisher passes' autocast (`bertlottery.precision`; the run's own in the pipeline);
            the gradients' products, the rearrangement and the least-squares tuning stay in fp32 or wider.
    """
    if (budget is None) == (budget_fraction is None):
        raise UserError("Give the Fisher search either budget (MACs or parameters) or budget_fraction, not both.")
    layout = model_layout(model)
    head_cost, neuron_cost = unit_costs(layout, cost, seq_len)
    full_cost = mask_cost(layout, torch.ones(layout.num_layers, layout.num_heads, dtype=torch.bool),
                          torch.ones(layout.num_layers, layout.intermediate_size, dtype=torch.bool), cost=cost,
                          seq_len=seq_len)
    if budget_fraction is not None:
        if not 0 <= budget_fraction <= 1:
            raise UserError(f"budget_fraction must be between 0 and 1, got {budget_fraction}.")
        budget = int(budget_fraction * full_cost)
    batches = list(batches)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    scores = fisher_scores(model, batches, labels=labels, precision=precision)
    timings["fisher"] = time.perf_counter() - started

    started = time.perf_counter()
    heads, neurons = search_under_budget(scores.heads, scores.neurons, head_cost=head_cost,
                                         neuron_cost=neuron_cost, budget=budget)
    timings["search"] = time.perf_counter() - started
    objective = {"searched": _objective(scores, heads, neurons)}

    if rearrange_masks:
        started = time.perf_counter()
        heads, neurons = rearrange(scores, heads, neurons)
        timings["rearrange"] = time.perf_counter() - started
        objective["rearranged"] = _objective(scores, heads, neurons)

    head_scales, neuron_scales, tuning = heads.float(), neurons.float(), []
    if tune:
        started = time.perf_counter()
        calibration = list(tune_batches) if tune_batches is not None else batches
        head_scales, neuron_scales, tuning = tune_scales(model, calibration, heads, neurons, max_scale=max_scale)
        timings["tune"] = time.perf_counter() - started

    kept_cost = mask_cost(layout, heads, neurons, cost=cost, seq_len=seq_len)
    params = {"budget": budget, "cost": cost, "seq_len": seq_len, "labels": labels, "n_examples": scores.n_examples,
              "rearranged": rearrange_masks, "tuned": tune}
    trace = {
        "params": params, "cost": kept_cost, "full_cost": full_cost, "heads_kept": int(heads.sum()),
        "neurons_kept": int(neurons.sum()), "pruned_fisher": objective, "tuning": tuning,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    return FisherResult(heads=heads, neurons=neurons, head_scales=head_scales, neuron_scales=neuron_scales,
                        scores=scores, cost=kept_cost, budget=budget, full_cost=full_cost, trace=trace)


def _objective(scores: FisherScores, heads: torch.Tensor, neurons: torch.Tensor) -> float:
    """The rearrangement's objective summed over layers and both kinds."""
    return sum(pruned_fisher(scores.head_grads[:, i], heads[i]) + pruned_fisher(scores.neuron_grads[:, i], neurons[i])
               for i in range(heads.shape[0]))
