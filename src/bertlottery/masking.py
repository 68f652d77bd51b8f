"""Apply masks to a live model with hooks that are always removed.

Head and MLP masks become real-valued *gates* (docs/algorithms.md#gates):

- a head gate ``xi[l, h]`` scales head h's slice of the input to layer l's attention output projection:
  scaling a head's context vector is exactly scaling its attention probabilities, and it works with
  SDPA, flash or any other attention kernel because it never touches the probabilities;
- an MLP gate ``nu[l]`` scales the output of layer l's MLP output projection (bias included), before
  the residual add and LayerNorm: ``LayerNorm(nu * MLP(z) + z)``.

Gates are ordinary tensors, so with ``requires_grad=True`` the loss's gradient reaches them: that is
how importance scores are taken.

MLP neurons (whole intermediate units) get gates of their own: `neuron_gated` scales the MLP output
projection's input, and `fisher_gated` applies head and neuron gates together (the Fisher search's
masks and tuned scales).

Weight masks zero single weights. For evaluation `weight_masked` zeroes them and restores the values
on exit; for training `WeightMaskKeeper` keeps them exactly zero through every optimizer step.

Example:
    >>> with gated(model, heads=head_mask, mlps=mlp_mask):          # doctest: +SKIP
    ...     metrics = evaluate(model, dev)
    >>> with gated(model, requires_grad=True) as gates:             # doctest: +SKIP
    ...     model(**batch).loss.backward()
    ...     head_grads = gates.heads.grad                           # (layers, heads)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .errors import UserError
from .masks import HeadMask, Masks, MlpMask, WeightMask
from .models import adapter_for, model_layout

__all__ = [
    "Gates",
    "gated",
    "weight_masked",
    "WeightMaskKeeper",
    "apply_weight_mask_",
    "structured_weight_mask",
    "fraction_kept",
    "neuron_hook",
    "check_neurons",
    "neuron_gated",
    "fisher_gated",
]


@dataclass
class Gates:
    """The gate tensors in use: ``heads: float[layer, head]``, ``mlps: float[layer]``."""

    heads: torch.Tensor
    mlps: torch.Tensor


def _as_gates(value, shape: tuple[int, ...], what: str, device: torch.device) -> torch.Tensor:
    if value is None:
        return torch.ones(shape, device=device)
    if isinstance(value, (HeadMask, MlpMask)):
        value = value.keep
    tensor = torch.as_tensor(value)
    if tuple(tensor.shape) != shape:
        raise UserError(
            f"{what} mask has shape {tuple(tensor.shape)} but the model has {shape}; use a mask made for this model."
        )
    dtype = tensor.dtype if tensor.is_floating_point() else torch.float32
    return tensor.to(device=device, dtype=dtype)


@contextmanager
def gated(
    model: nn.Module,
    heads: HeadMask | torch.Tensor | None = None,
    mlps: MlpMask | torch.Tensor | None = None,
    *,
    requires_grad: bool = False,
) -> Iterator[Gates]:
    """Gate heads and MLPs of ``model`` inside the block; the hooks are removed on exit, whatever happens.

    Args:
        heads: bool or real-valued ``[layer, head]``; ``None`` means all heads at 1.
        mlps: bool or real-valued ``[layer]``; ``None`` means all MLPs at 1.
        requires_grad: make the gates leaf tensors that collect gradients (importance scores).

    Layers whose gates are all 1 and need no gradient get no hook at all, so a full mask is
    bitwise the ungated model and costs nothing.
    """
    layout = model_layout(model)
    layers = adapter_for(model).layers(model)
    device = next(model.parameters()).device
    head_gates = _as_gates(heads, (layout.num_layers, layout.num_heads), "Head", device)
    mlp_gates = _as_gates(mlps, (layout.num_layers,), "MLP", device)
    if requires_grad:
        head_gates = head_gates.detach().clone().requires_grad_(True)
        mlp_gates = mlp_gates.detach().clone().requires_grad_(True)

    handles = []
    try:
        for index, parts in enumerate(layers):
            if requires_grad or not bool((head_gates[index] == 1).all()):
                handles.append(parts.attn_out.register_forward_pre_hook(_head_hook(head_gates, index, layout.num_heads)))
            if requires_grad or bool(mlp_gates[index] != 1):
                handles.append(parts.mlp_out.register_forward_hook(_mlp_hook(mlp_gates, index)))
        yield Gates(heads=head_gates, mlps=mlp_gates)
    finally:
        for handle in handles:
            handle.remove()


def _head_hook(gates: torch.Tensor, layer: int, num_heads: int):
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]):
        (context,) = args  # (B, T, H*dh): heads concatenated in order
        shape = context.shape
        per_head = context.view(*shape[:-1], num_heads, shape[-1] // num_heads)  # (B, T, H, dh)
        gate = gates[layer].to(context.dtype).unsqueeze(-1)  # (H, 1)
        return ((per_head * gate).view(shape),)

    return hook


def _mlp_hook(gates: torch.Tensor, layer: int):
    def hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        return output * gates[layer].to(output.dtype)

    return hook


# ---- gates on MLP neurons (whole intermediate units), as the Fisher search prunes them -----------------
# A pre-hook on the MLP output projection scales its input, the intermediate units, so a neuron at 0 is
# exactly its input row (and bias) and output column removed; a GeGLU MLP's units are its activation
# times gate products, so the hook serves it too.


def neuron_hook(gates: torch.Tensor):
    """Scale the intermediate units (the MLP output projection's input): ``gates`` is (f,) or (B, f)."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]):
        (units,) = args  # (B, T, f)
        gate = gates.to(units.dtype)
        return (units * (gate.unsqueeze(-2) if gate.dim() == 2 else gate),)

    return hook


def check_neurons(model: nn.Module, neurons: torch.Tensor) -> None:
    """Refuse a neuron mask whose shape is not ``(layers, intermediate units)`` of ``model``."""
    layout = model_layout(model)
    if tuple(neurons.shape) != (layout.num_layers, layout.intermediate_size):
        raise UserError(
            f"Neuron mask has shape {tuple(neurons.shape)} but the model has "
            f"{(layout.num_layers, layout.intermediate_size)} (layers x intermediate units); use a mask made for it."
        )


@contextmanager
def neuron_gated(model: nn.Module, neurons: torch.Tensor | None) -> Iterator[None]:
    """Scale every MLP's intermediate units by ``neurons: float or bool[layer, intermediate]`` inside the block.

    Layers whose neurons are all 1 get no hook, so a full mask is bitwise the ungated model.

    Example:
        >>> with neuron_gated(model, result.neurons):               # doctest: +SKIP
        ...     logits = model(**batch).logits
    """
    if neurons is None:
        yield
        return
    check_neurons(model, neurons)
    gates = neurons.to(next(model.parameters()).device, torch.float32 if not neurons.is_floating_point() else neurons.dtype)
    handles = []
    try:
        for index, parts in enumerate(adapter_for(model).layers(model)):
            if not bool((gates[index] == 1).all()):
                handles.append(parts.mlp_out.register_forward_pre_hook(neuron_hook(gates[index])))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def fisher_gated(model: nn.Module, heads: torch.Tensor | HeadMask | None, neurons: torch.Tensor | None) -> Iterator[None]:
    """Head gates (`gated`) and neuron gates (`neuron_gated`) together; real values allowed (tuned scales)."""
    with gated(model, heads=heads), neuron_gated(model, neurons):
        yield


def _check_weight_mask(model: nn.Module, mask: WeightMask) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    for name, keep in mask.keep.items():
        if name not in params:
            raise UserError(f"Weight mask names {name}, which the model does not have; use a mask made for it.")
        if tuple(keep.shape) != tuple(params[name].shape):
            raise UserError(
                f"Weight mask for {name} has shape {tuple(keep.shape)} but the model's is "
                f"{tuple(params[name].shape)}; use a mask made for this model."
            )
    return {name: params[name] for name in mask.keep}


@torch.no_grad()
def apply_weight_mask_(model: nn.Module, mask: WeightMask) -> None:
    """Zero the masked weights of ``model`` in place (permanently)."""
    for name, param in _check_weight_mask(model, mask).items():
        param.mul_(mask.keep[name].to(param.device, param.dtype))


@contextmanager
def weight_masked(model: nn.Module, mask: WeightMask | None) -> Iterator[None]:
    """Zero the masked weights inside the block and put their values back on exit."""
    if mask is None:
        yield
        return
    params = _check_weight_mask(model, mask)
    saved = {name: p.detach().clone() for name, p in params.items()}
    try:
        apply_weight_mask_(model, mask)
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])


class WeightMaskKeeper:
    """Keep masked weights exactly zero while a model trains.

    Masked gradients are zeroed as they are computed (so a pruned weight neither counts towards
    gradient clipping nor builds optimizer state, as if it did not exist), and after every optimizer
    step the masked weights are multiplied by zero again, which makes "exactly zero" hold whatever the
    optimizer does (weight decay, momentum from before the mask, mixed precision).

    Example:
        >>> keeper = WeightMaskKeeper(model, mask).attach(optimizer)   # doctest: +SKIP
        >>> ...  # train                                             # doctest: +SKIP
        >>> keeper.detach()                                            # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, mask: WeightMask):
        self.params = _check_weight_mask(model, mask)
        # Kept as 0/1 in the parameter's dtype: multiplying by it needs no conversion on every step.
        self.keep = {name: mask.keep[name].to(p.device, p.dtype) for name, p in self.params.items()}
        self._handles: list = []
        self._model = model
        self._mask = mask

    def _keep_for(self, name: str, like: torch.Tensor) -> torch.Tensor:
        keep = self.keep[name]
        if keep.dtype != like.dtype or keep.device != like.device:  # the model moved or changed dtype
            keep = self.keep[name] = keep.to(like.device, like.dtype)
        return keep

    def attach(self, optimizer: torch.optim.Optimizer) -> WeightMaskKeeper:
        apply_weight_mask_(self._model, self._mask)
        for name, p in self.params.items():
            # after the gradient is accumulated, before clipping and the step: zero it in place
            self._handles.append(p.register_post_accumulate_grad_hook(self._zero_grad_hook(name)))
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.reapply()))
        return self

    def _zero_grad_hook(self, name: str):
        def hook(param: torch.Tensor) -> None:
            if param.grad is not None:
                param.grad.mul_(self._keep_for(name, param.grad))

        return hook

    @torch.no_grad()
    def reapply(self) -> None:
        for name, p in self.params.items():
            p.mul_(self._keep_for(name, p))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def structured_weight_mask(
    model: nn.Module, heads: HeadMask | None = None, mlps: MlpMask | None = None
) -> WeightMask:
    """The single weights that a head and MLP mask switch off, as a weight mask over the prunable
    tensors: every attention input's per-head rows and biases (Q, K, V, a fused QKV map's three blocks,
    DeBERTa's relative-position projections), attention-output columns, both MLP maps and their biases.
    """
    layout = model_layout(model)
    names = {id(p): n for n, p in model.named_parameters()}
    dh = layout.head_dim
    keep: dict[str, torch.Tensor] = {}
    for index, parts in enumerate(adapter_for(model).layers(model)):
        head_keep = heads.keep[index] if heads is not None else torch.ones(layout.num_heads, dtype=torch.bool)
        per_dim = head_keep.repeat_interleave(dh)  # (H*dh,)
        rows = {id(linear): torch.ones(linear.out_features, dtype=torch.bool) for linear in parts.attention_inputs}
        for linear, first in parts.head_blocks:
            rows[id(linear)][first : first + per_dim.numel()] = per_dim
        for linear in parts.attention_inputs:
            row_keep = rows[id(linear)]
            keep[names[id(linear.weight)]] = row_keep.unsqueeze(1).expand_as(linear.weight).clone()
            if linear.bias is not None:
                keep[names[id(linear.bias)]] = row_keep.clone()
        keep[names[id(parts.attn_out.weight)]] = per_dim.unsqueeze(0).expand_as(parts.attn_out.weight).clone()
        mlp_on = bool(mlps.keep[index]) if mlps is not None else True
        for linear in (parts.mlp_in, parts.mlp_out):
            for param in linear.parameters():
                keep[names[id(param)]] = torch.full(param.shape, mlp_on)
    return WeightMask(keep)


def fraction_kept(model: nn.Module, masks: Masks | None) -> float:
    """Fraction of encoder-body parameters that ``masks`` keeps, overlaps of its kinds counted once."""
    layout = model_layout(model)
    if masks is None:
        return 1.0
    if masks.weights is None or (masks.heads is None and masks.mlps is None):
        return masks.body_fraction_kept(layout)
    structured = structured_weight_mask(model, masks.heads, masks.mlps)
    removed = 0
    for name, keep in structured.keep.items():
        if name in masks.weights.keep:
            keep = keep & masks.weights.keep[name]
        removed += keep.numel() - int(keep.sum())
    removed += sum(t.numel() - int(t.sum()) for n, t in masks.weights.keep.items() if n not in structured.keep)
    return 1.0 - removed / layout.body_params
