"""Importance scores: heads and MLPs from the gradients of their gates, weights by magnitude.

Head and MLP importance (docs/algorithms.md#importance-scores; Michel et al. 2019 extended to MLPs)::

    I_head[l, h] = E_x |dL/dxi[l, h]|        I_mlp[l] = E_x |dL/dnu[l]|

taken in eval mode over the scoring split; |.| per batch of the mean loss, summed over batches,
divided by the number of (non-padding) tokens. One backward pass per batch gives both kinds.
Head scores are then divided layer-wise by their L2 norm (on by default); global min-max scaling
of each kind is optional.

Gradients reach the gates through the hooks of `bertlottery.masking.gated`, which act on the
attention output projection's input: attention probabilities are never materialised, so any
attention kernel (SDPA) serves. The model's own parameters are frozen while scoring, so the
backward pass computes no weight gradients at all, only the activation gradients the gates need.

Example:
    >>> scores = structured_importance(model, dev_batches)           # doctest: +SKIP
    >>> scores.heads.shape, scores.mlps.shape                        # doctest: +SKIP
    (torch.Size([12, 12]), torch.Size([12]))
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .compat import Compat
from .masking import _as_gates, gated
from .lastlayer import first_position_only
from .masks import HeadMask, MlpMask
from .models import adapter_for, model_layout
from .precision import attention_for_gradients, autocast, resolve_precision

__all__ = [
    "ImportanceScores",
    "structured_importance",
    "normalize_heads_by_layer",
    "min_max",
    "TENSOR_SETS",
    "prunable_parameters",
    "magnitudes",
    "frozen",
    "dead_branches_cut",
]


@dataclass
class ImportanceScores:
    """``heads: float[layer, head]``, ``mlps: float[layer]``, and what they were computed over."""

    heads: torch.Tensor
    mlps: torch.Tensor
    n_tokens: int
    n_examples: int

    def to_dict(self) -> dict:
        return {
            "heads": self.heads.tolist(),
            "mlps": self.mlps.tolist(),
            "n_tokens": self.n_tokens,
            "n_examples": self.n_examples,
        }


@contextmanager
def frozen(model: nn.Module):
    """Switch off weight gradients (and dropout) for the duration; restore both after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _detached_input(module: nn.Module, args: tuple):
    return (args[0].detach(), *args[1:])


@contextmanager
def dead_branches_cut(model: nn.Module, heads=None, mlps=None):
    """Detach the input of every dead branch for the duration, so a backward pass does not enter it.

    A dead branch is an MLP whose gate is 0 (its input map ``mlp_in`` gets a detached input) or the
    attention of a layer whose head gates are all 0 (its Q/K/V maps do). Its output still reaches its
    gate, which gets the same gradient, ``sum(output * upstream gradient)``; what the backward pass no
    longer computes is the gradient flowing through the branch into the layer's input, which is
    exactly zero (the branch's output is multiplied by a zero gate) and so adds nothing to the
    residual stream's gradient. Gate gradients and input gradients are therefore bitwise those of the
    uncut model. Only for passes that train nothing: a dead branch's weights get no gradient at all.
    A layer with some heads alive keeps its whole attention in the graph (its heads share one kernel).
    """
    layout = model_layout(model)
    cpu = torch.device("cpu")  # the gates as `gated` makes them (same checks); dead where exactly 0
    dead_heads = _as_gates(heads, (layout.num_layers, layout.num_heads), "Head", cpu) == 0
    dead_mlps = _as_gates(mlps, (layout.num_layers,), "MLP", cpu) == 0
    handles = []
    try:
        for index, parts in enumerate(adapter_for(model).layers(model)):
            cut = list(parts.attention_inputs) if bool(dead_heads[index].all()) else []
            if bool(dead_mlps[index]):
                cut.append(parts.mlp_in)
            handles.extend(linear.register_forward_pre_hook(_detached_input) for linear in cut)
        yield
    finally:
        for handle in handles:
            handle.remove()


def normalize_heads_by_layer(heads: torch.Tensor, exponent: float = 2.0) -> torch.Tensor:
    """Divide each layer's head scores by their L-``exponent`` norm (Molchanov et al. 2017)."""
    norm = heads.abs().pow(exponent).sum(-1, keepdim=True).pow(1.0 / exponent)
    return heads / (norm + 1e-20)


def min_max(scores: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1] over all entries."""
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low) if high > low else torch.zeros_like(scores)


def structured_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    heads: HeadMask | torch.Tensor | None = None,
    mlps: MlpMask | torch.Tensor | None = None,
    normalize_by_layer: bool = True,
    global_min_max: bool = False,
    compat: Compat | None = None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    cut_dead_branches: bool = True,
) -> ImportanceScores:
    """Head and MLP importance of ``model`` under the current mask, from one backward pass per batch.

    Args:
        batches: the scoring split (dev by default in the paper) as padded batches with labels.
        heads, mlps: the current mask; masked elements keep their (zero) gate during scoring.
        normalize_by_layer: L2-normalise head scores within each layer (the paper: on).
        global_min_max: min-max scale head scores and MLP scores, each kind over all its entries.
        compat: the released code's quirks (gradients never zeroed, head scores not divided by
            tokens); ``None`` computes the method as the paper describes it.
        precision: the forward and backward passes' (`bertlottery.precision`; the gates stay fp32).
        cut_dead_branches: skip the backward pass through masked MLPs and wholly masked attention
            (`dead_branches_cut`; the same scores, bitwise). ``False`` runs it anyway, for comparison.
    """
    compat = compat or Compat()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision = resolve_precision(precision, device)
    head_total = mlp_total = None
    n_tokens = n_examples = 0
    cut = dead_branches_cut(model, heads, mlps) if cut_dead_branches else nullcontext()
    with frozen(model), attention_for_gradients(model, precision, device), first_position_only(model), cut, \
            gated(model, heads=heads, mlps=mlps, requires_grad=True) as gates:
        running_heads = torch.zeros_like(gates.heads)
        running_mlps = torch.zeros_like(gates.mlps)
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k != "index"}
            with autocast(precision, device):
                loss = model(**inputs).loss
            grad_heads, grad_mlps = torch.autograd.grad(loss, [gates.heads, gates.mlps])
            if compat.accumulated_gate_gradients:
                # released code: the gate's .grad was never zeroed, so each batch adds |running sum|
                running_heads += grad_heads
                running_mlps += grad_mlps
                grad_heads, grad_mlps = running_heads, running_mlps
            head_total = grad_heads.abs() if head_total is None else head_total + grad_heads.abs()
            mlp_total = grad_mlps.abs() if mlp_total is None else mlp_total + grad_mlps.abs()
            n_tokens += int(inputs["attention_mask"].sum())
            n_examples += int(inputs["input_ids"].shape[0])
    if head_total is None:
        raise ValueError("no batches to score")
    head_scores = head_total.detach().float().cpu()
    mlp_scores = mlp_total.detach().float().cpu() / n_tokens
    if not compat.head_scores_not_divided_by_tokens:
        head_scores = head_scores / n_tokens
    if normalize_by_layer:
        head_scores = normalize_heads_by_layer(head_scores)
    if global_min_max:
        head_scores, mlp_scores = min_max(head_scores), min_max(mlp_scores)
    return ImportanceScores(heads=head_scores, mlps=mlp_scores, n_tokens=n_tokens, n_examples=n_examples)


# ---- magnitude pruning's tensors and scores -------------------------------------------------------

# Which tensors of each layer magnitude pruning may prune (docs/algorithms.md#magnitude-pruning). "paper": the released
# code's set, the six weight matrices and their biases except the MLP output projection's bias.
# "attention_inputs" are the maps whose rows belong to heads: Q, K and V (ModernBERT's one fused map;
# DeBERTa-v2's relative-position projections too), so every family prunes its own equivalent of the six.
TENSOR_SETS: dict[str, tuple[tuple[str, str], ...]] = {
    "paper": (
        ("attention_inputs", "weight"), ("attn_out", "weight"), ("mlp_in", "weight"), ("mlp_out", "weight"),
        ("attention_inputs", "bias"), ("attn_out", "bias"), ("mlp_in", "bias"),
    ),
    "weights": (
        ("attention_inputs", "weight"), ("attn_out", "weight"), ("mlp_in", "weight"), ("mlp_out", "weight"),
    ),
}


def prunable_parameters(model: nn.Module, tensor_set: str = "paper") -> dict[str, nn.Parameter]:
    """Name -> parameter of every tensor magnitude pruning may touch, in layer order."""
    from .errors import UserError, did_you_mean

    if tensor_set not in TENSOR_SETS:
        raise UserError(
            f"Unknown tensor set '{tensor_set}'.{did_you_mean(tensor_set, TENSOR_SETS)} "
            f"Known: {', '.join(TENSOR_SETS)}."
        )
    names = {id(p): n for n, p in model.named_parameters()}
    chosen: dict[str, nn.Parameter] = {}
    for parts in adapter_for(model).layers(model):
        for part, attribute in TENSOR_SETS[tensor_set]:
            linears = parts.attention_inputs if part == "attention_inputs" else (getattr(parts, part),)
            for linear in linears:
                param = getattr(linear, attribute)
                if param is not None:  # ModernBERT's maps have no biases
                    chosen[names[id(param)]] = param
    return chosen


def magnitudes(model: nn.Module, tensor_set: str = "paper") -> dict[str, torch.Tensor]:
    """|w| of every prunable tensor (a detached CPU copy)."""
    return {n: p.detach().abs().float().cpu() for n, p in prunable_parameters(model, tensor_set).items()}
