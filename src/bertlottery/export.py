"""Export a physically smaller model: masked heads and MLPs removed, not just gated.

`gated` multiplies masked heads and MLPs by zero, so a pruned model costs as much as the full one.
`export_pruned` returns a copy in which they are gone: each layer's query, key and value projections
(each of the Q, K and V blocks of ModernBERT's fused map; DeBERTa-v2's relative-position projections
too) keep only the rows of its kept heads, the attention output projection only their input columns,
and a masked MLP does no matrix multiplication at all (a GeGLU MLP loses both halves of its input
map). Single MLP units (the Fisher search's neuron masks) go too: a pruned unit's input row and bias
(both rows, input and gate, of a GeGLU map) and its output column; the Fisher search's tuned scales are
folded into the output projections' columns. Its outputs are the gated model's (docs/algorithms.md#gates):

- a layer that keeps no heads computes no attention; its attention branch gives the output projection's
  bias b_O, because a gate scales the heads' context vectors and the bias survives: LayerNorm(x + b_O)
  in the post-norm families, x + b_O in ModernBERT's pre-norm layers;
- a layer whose MLP is masked adds nothing in its feed-forward branch (the gate scales the MLP branch
  bias included): LayerNorm(z), or z in ModernBERT.

Transformers 5 has no ``prune_heads``; its self-attention modules reshape with ``view(..., -1, head_dim)``,
so slicing their Linear maps is enough for a layer that keeps some heads, except in MPNet, whose
relative-position bias is computed once for all layers and all original heads: its layers take their
kept heads' slices. The degenerate cases replace a module with a small one of ours that returns what
the gated module would. Every tensor of the
original keeps its name in the exported model; removed parts are zero-width (a masked MLP's output
projection also loses its bias), so ``adapter_for(model).layers(model)`` still works on it.

Example:
    >>> small = export_pruned(model, heads=masks.heads, mlps=masks.mlps)           # doctest: +SKIP
    >>> save_exported(model, "runs/rte-small", masks.heads, masks.mlps, tokenizer)  # doctest: +SKIP
    >>> small = load_exported("runs/rte-small")                                     # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UserError, did_you_mean
from .masks import HeadMask, Masks, MlpMask
from .models import LayerParts, Layout, adapter_for, attention_implementation, model_layout

__all__ = [
    "FORMAT",
    "ExportPlan",
    "export_pruned",
    "exported_plan",
    "save_exported",
    "load_exported",
    "body_macs_per_token",
    "COSTS",
    "unit_costs",
    "mask_cost",
]

FORMAT = "bertlottery.export/1"
WEIGHTS_FILE = "model.safetensors"
PLAN_FILE = "pruning.json"
_PLAN_ATTR = "bertlottery_export"  # set on every exported model; what save_exported and tests read back


@dataclass(frozen=True)
class ExportPlan:
    """What an exported model keeps, in the original model's numbering.

    ``heads[l]`` holds layer l's kept head indices in increasing order (the order their slices keep
    in the exported projections); ``mlps[l]`` whether layer l keeps its MLP; ``neurons[l]`` the kept
    intermediate units of layer l's MLP in increasing order (empty where the MLP is off), or
    ``neurons`` is ``None`` when every kept MLP keeps all its units; ``layout`` is the full model's.
    """

    layout: Layout
    heads: tuple[tuple[int, ...], ...]
    mlps: tuple[bool, ...]
    neurons: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def from_masks(cls, layout: Layout, heads: HeadMask | None, mlps: MlpMask | None,
                   neurons: torch.Tensor | None = None) -> ExportPlan:
        """``neurons: bool[layer, unit]`` (True: kept) prunes single MLP units of the kept MLPs."""
        heads = _coerce(heads, HeadMask)
        mlps = _coerce(mlps, MlpMask)
        Masks(heads=heads, mlps=mlps).check_against(layout)
        head_keep = heads.keep if heads is not None else torch.ones(layout.num_layers, layout.num_heads, dtype=torch.bool)
        mlp_keep = mlps.keep if mlps is not None else torch.ones(layout.num_layers, dtype=torch.bool)
        kept_units = None
        if neurons is not None:
            neurons = torch.as_tensor(neurons).bool().cpu()
            if tuple(neurons.shape) != (layout.num_layers, layout.intermediate_size):
                raise UserError(
                    f"Neuron mask has shape {tuple(neurons.shape)} but the model has "
                    f"{(layout.num_layers, layout.intermediate_size)} (layers x intermediate units); use a mask made for it."
                )
            if not bool(neurons[mlp_keep].all()):
                kept_units = tuple(tuple(int(u) for u in row.nonzero().flatten()) if on else ()
                                   for row, on in zip(neurons, mlp_keep))
        return cls(
            layout=layout,
            heads=tuple(tuple(int(h) for h in row.nonzero().flatten()) for row in head_keep),
            mlps=tuple(bool(m) for m in mlp_keep),
            neurons=kept_units,
        )

    @property
    def head_mask(self) -> HeadMask:
        keep = torch.zeros(self.layout.num_layers, self.layout.num_heads, dtype=torch.bool)
        for layer, kept in enumerate(self.heads):
            keep[layer, list(kept)] = True
        return HeadMask(keep)

    @property
    def mlp_mask(self) -> MlpMask:
        return MlpMask(torch.tensor(self.mlps, dtype=torch.bool))

    @property
    def neuron_mask(self) -> torch.Tensor:
        """``bool[layer, unit]``: the units each layer's MLP keeps (none where the MLP is off)."""
        keep = self.mlp_mask.keep.unsqueeze(1).repeat(1, self.layout.intermediate_size)
        if self.neurons is not None:
            keep[:] = False
            for layer, kept in enumerate(self.neurons):
                keep[layer, list(kept)] = True
        return keep

    @property
    def params_removed(self) -> int:
        removed_units = self.layout.intermediate_size * self.mlp_mask.n_kept - int(self.neuron_mask.sum())
        return (self.head_mask.n_pruned * self.layout.params_per_head + self.mlp_mask.n_pruned * self.layout.params_per_mlp
                + removed_units * _params_per_neuron(self.layout))

    def to_json(self) -> dict:
        layers = [{"heads": list(h), "mlp": m} for h, m in zip(self.heads, self.mlps)]
        if self.neurons is not None:
            for layer, kept in zip(layers, self.neurons):
                layer["neurons"] = list(kept)
        return {"layout": dataclasses.asdict(self.layout), "layers": layers}

    @classmethod
    def from_json(cls, record: dict) -> ExportPlan:
        layout = Layout(**record["layout"])
        layers = record["layers"]
        if len(layers) != layout.num_layers:
            raise ValueError(f"{len(layers)} layer entries for a {layout.num_layers}-layer layout")
        heads = tuple(tuple(sorted(int(h) for h in layer["heads"])) for layer in layers)
        if any(h < 0 or h >= layout.num_heads for kept in heads for h in kept):
            raise ValueError(f"head index outside 0..{layout.num_heads - 1}")
        mlps = tuple(bool(layer["mlp"]) for layer in layers)
        neurons = None
        if any("neurons" in layer for layer in layers):
            neurons = tuple(tuple(sorted(int(u) for u in layer.get("neurons", ()))) if on else ()
                            for layer, on in zip(layers, mlps))
            if any(u < 0 or u >= layout.intermediate_size for kept in neurons for u in kept):
                raise ValueError(f"neuron index outside 0..{layout.intermediate_size - 1}")
        return cls(layout=layout, heads=heads, mlps=mlps, neurons=neurons)


def _params_per_neuron(layout: Layout) -> int:
    """Parameters one MLP unit owns: its input row or rows (two in a GeGLU MLP) with their biases and its
    output column. The output projection's bias (d values, fewer than the f units) is the MLP's, not a
    unit's, and the floor division drops it."""
    return layout.params_per_mlp // layout.intermediate_size


def _macs_per_neuron(layout: Layout) -> int:
    """Multiply-accumulates per token of one MLP unit: d per input row (two in GeGLU) and d for its output column."""
    return layout.macs_per_mlp // layout.intermediate_size


def _coerce(mask, kind):
    if mask is None or isinstance(mask, kind):
        return mask
    return kind(torch.as_tensor(mask))


# ---------------------------------------------------------------------------------------------
# Replacement modules for the degenerate cases. Each takes over the children of the module it replaces
# under their original attribute names, so parameter names (and the adapter) stay those of the full model.


class _Replacement(nn.Module):
    def __init__(self, original: nn.Module):
        super().__init__()
        for name, child in original.named_children():
            setattr(self, name, child)


class _NoHeadsContext(_Replacement):
    """Self-attention with no heads, whose output projection lives outside it (BERT-like, DeBERTa-v2):
    an empty context, (B, T, 0), and no attention weights.

    The attention output projection (zero input columns) then yields its bias alone, so the sub-layer
    gives LayerNorm(x + b_O), as a gated layer with every head at 0 does.
    """

    def __init__(self, original: nn.Module):
        super().__init__(original)
        self.num_attention_heads = 0
        self.all_head_size = 0

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        return hidden_states[..., :0], None  # a view: no Q/K/V projection, no attention


class _NoHeadsAttention(_Replacement):
    """Self-attention with no heads that holds its output projection ``out`` (DistilBERT ``out_lin``,
    MPNet ``o``, ModernBERT ``Wo``): the projection of an empty context, i.e. its bias (zero without one),
    through ``after`` (ModernBERT's output dropout), as a gated layer with every head at 0 gives.
    """

    def __init__(self, original: nn.Module, out: str, after: str | None = None):
        super().__init__(original)
        self._out, self._after = out, after

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        output = getattr(self, self._out)(hidden_states[..., :0])  # zero input columns: no matrix product
        if self._after is not None:
            output = getattr(self, self._after)(output)
        return output, None


class _KeptHeadsMPNetAttention(_Replacement):
    """MPNet self-attention that keeps some heads.

    MPNet's relative-position bias is computed once by the encoder with one slice per original head
    and shared by every layer, so each layer takes its kept heads' slices before the (unchanged)
    attention of transformers runs.
    """

    def __init__(self, original: nn.Module, kept: Sequence[int]):
        super().__init__(original)
        self._attention = type(original).forward
        self.attention_head_size = original.attention_head_size
        self.num_attention_heads, self.all_head_size = len(kept), len(kept) * original.attention_head_size
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.long), persistent=False)

    def forward(self, hidden_states, attention_mask=None, position_bias=None, *args, **kwargs):
        if position_bias is not None:  # (B, H, T, T)
            position_bias = position_bias[:, self.kept.to(position_bias.device)]
        return self._attention(self, hidden_states, attention_mask, position_bias, *args, **kwargs)


class _NoMlpIntermediate(_Replacement):
    """BERT-like MLP input half, removed: an empty activation, (B, T, 0)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[..., :0]


class _NoMlpOutput(_Replacement):
    """BERT-like MLP output half, removed: LayerNorm(z) of the sub-layer's input z."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(input_tensor)


class _NoMlp(_Replacement):
    """A whole MLP module, removed (DistilBERT ``ffn``, ModernBERT ``mlp``): the block adds its output
    to the residual stream z, so a scalar zero leaves z (then DistilBERT's LayerNorm(z))."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.new_zeros(())


# ---------------------------------------------------------------------------------------------
# Slicing


@torch.no_grad()
def _slice_linear(linear: nn.Linear, *, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    """Keep ``rows`` (outputs, bias too) and/or ``cols`` (inputs) of ``linear``, in place."""
    weight = linear.weight.detach()
    if rows is not None:
        weight = weight[rows]
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.detach()[rows].clone(), requires_grad=linear.bias.requires_grad)
    if cols is not None:
        weight = weight[:, cols]
    linear.weight = nn.Parameter(weight.clone(), requires_grad=linear.weight.requires_grad)
    linear.out_features, linear.in_features = weight.shape


def _rows_of(heads: Sequence[int], head_dim: int, device: torch.device, first: int = 0) -> torch.Tensor:
    # head h owns rows first + h*dh : first + (h+1)*dh of a per-head block and the same input columns
    # (first = 0) of the output projection
    index = [first + h * head_dim + i for h in heads for i in range(head_dim)]
    return torch.tensor(index, dtype=torch.long, device=device)


def _cut_heads(parts: LayerParts, kept: Sequence[int], head_dim: int) -> None:
    """Slice every attention input to the kept heads' rows (a fused map keeps them in each of its Q, K and
    V blocks, in that order) and the output projection to their columns."""
    device = parts.attn_out.weight.device
    rows: dict[int, list[torch.Tensor]] = {}
    for linear, first in parts.head_blocks:
        rows.setdefault(id(linear), []).append(_rows_of(kept, head_dim, device, first))
    for linear in parts.attention_inputs:
        _slice_linear(linear, rows=torch.cat(rows[id(linear)]))
    _slice_linear(parts.attn_out, cols=_rows_of(kept, head_dim, device))


def _cut_neurons(parts: LayerParts, kept: Sequence[int], units: int) -> None:
    """Keep the ``kept`` units of an MLP: their rows (and biases) of the input projection, where unit i of a
    GeGLU map owns rows i (input) and units + i (gate), and their columns of the output projection."""
    device = parts.mlp_out.weight.device
    index = torch.tensor(list(kept), dtype=torch.long, device=device)
    _slice_linear(parts.mlp_in, rows=torch.cat([index, index + units]) if parts.gated_mlp else index)
    _slice_linear(parts.mlp_out, cols=index)


@torch.no_grad()
def _fold_scales(model: nn.Module, head_scales: torch.Tensor | None, neuron_scales: torch.Tensor | None) -> None:
    """Multiply each head's input columns of the attention output projection by its scale, and each
    MLP unit's column of the output projection by its: a gate scales exactly those inputs."""
    layout = model_layout(model)
    for index, parts in enumerate(adapter_for(model).layers(model)):
        if head_scales is not None:
            weight = parts.attn_out.weight
            per_head = weight.view(weight.shape[0], layout.num_heads, layout.head_dim)
            per_head.mul_(head_scales[index].to(weight.device, weight.dtype)[None, :, None])
        if neuron_scales is not None:
            weight = parts.mlp_out.weight
            weight.mul_(neuron_scales[index].to(weight.device, weight.dtype)[None, :])


def _restructure(model: nn.Module, plan: ExportPlan) -> None:
    """Cut ``model`` (a full model of ``plan.layout``) down to ``plan``, in place.

    The family decides which module gives way when a layer keeps no heads or no MLP, and which
    attributes describe a narrower attention (transformers' modules reshape with -1 and take the head
    size from their config, so the maps' shapes are what counts; these attributes keep the modules'
    description right, as the old ``prune_heads`` did).
    """
    adapter = adapter_for(model)
    family, dh = adapter.family, plan.layout.head_dim
    for index, (parts, block) in enumerate(zip(adapter.layers(model), adapter.blocks(model))):
        kept, mlp_kept = plan.heads[index], plan.mlps[index]
        if len(kept) < plan.layout.num_heads:
            _cut_heads(parts, kept, dh)
            if family == "distilbert":
                if kept:
                    block.attention.n_heads, block.attention.dim = len(kept), len(kept) * dh
                else:
                    block.attention = _NoHeadsAttention(block.attention, out="out_lin")
            elif family == "modernbert":
                if not kept:  # with some heads the fused map's reshape to (3, -1, dh) finds them itself
                    block.attn = _NoHeadsAttention(block.attn, out="Wo", after="out_drop")
            elif family == "mpnet":
                attention = block.attention
                attention.attn = (_KeptHeadsMPNetAttention(attention.attn, kept) if kept
                                  else _NoHeadsAttention(attention.attn, out="o"))
            else:  # BERT, RoBERTa, ELECTRA, DeBERTa-v2 (its relative-position maps were cut with Q and K)
                attention = block.attention.self
                if kept:
                    attention.num_attention_heads, attention.all_head_size = len(kept), len(kept) * dh
                else:
                    block.attention.self = _NoHeadsContext(attention)
        if not mlp_kept:
            empty = torch.empty(0, dtype=torch.long, device=parts.mlp_in.weight.device)
            _slice_linear(parts.mlp_in, rows=empty)  # a GeGLU map loses both halves, input and gate
            _slice_linear(parts.mlp_out, cols=empty)
            parts.mlp_out.bias = None  # the MLP gate scales the branch bias included: it goes too
            if family == "distilbert":
                block.ffn = _NoMlp(block.ffn)
            elif family == "modernbert":
                block.mlp = _NoMlp(block.mlp)
            else:
                block.intermediate = _NoMlpIntermediate(block.intermediate)
                block.output = _NoMlpOutput(block.output)
        elif plan.neurons is not None and len(plan.neurons[index]) < plan.layout.intermediate_size:
            # zero kept units leave the output projection's bias alone, as the neuron gates do
            _cut_neurons(parts, plan.neurons[index], plan.layout.intermediate_size)
    setattr(model, _PLAN_ATTR, plan)


def _has_hooks(modules: Sequence[nn.Module]) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def export_pruned(
    model: nn.Module,
    heads: HeadMask | None,
    mlps: MlpMask | None,
    *,
    neurons: torch.Tensor | None = None,
    head_scales: torch.Tensor | None = None,
    neuron_scales: torch.Tensor | None = None,
) -> nn.Module:
    """A new model with the masked heads and MLPs physically removed; ``model`` is left untouched.

    Its outputs equal ``model``'s under ``with gated(model, heads, mlps)`` to float tolerance, in eval
    and in train mode. ``None`` keeps every head (or MLP). The copy keeps the original config, which no
    longer describes its shapes: write it with `save_exported` (not ``save_pretrained``) and read it back
    with `load_exported`. What it keeps is `exported_plan(copy)`.

    ``neurons: bool[layer, unit]`` removes single MLP units too (the Fisher search's masks): the
    outputs are then those under ``fisher_gated(model, heads, neurons)``. ``head_scales: float[layer,
    head]`` and ``neuron_scales: float[layer, unit]`` (the Fisher search's tuned gates) are folded into
    the output projections' columns, so the export computes what the model does under
    ``fisher_gated(model, head_scales, neuron_scales)``; the binary masks say what is removed.

    Example:
        >>> small = export_pruned(model, heads=HeadMask.random_like(full, keep=72, seed=0), mlps=None)  # doctest: +SKIP
        >>> with torch.no_grad():                                                                         # doctest: +SKIP
        ...     logits = small(**batch).logits
    """
    if getattr(model, _PLAN_ATTR, None) is not None:
        raise UserError("This model is already an export; export the full model, with the combined masks.")
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    if _has_hooks([m for parts in layers for m in (parts.attn_out, parts.mlp_out)]):
        raise UserError("The model has hooks on its layers (inside `with gated(...)`?); export outside that block.")
    layout = model_layout(model)
    plan = ExportPlan.from_masks(layout, heads, mlps, neurons)
    for scales, shape, what in ((head_scales, (layout.num_layers, layout.num_heads), "Head scales"),
                                (neuron_scales, (layout.num_layers, layout.intermediate_size), "Neuron scales")):
        if scales is not None and tuple(scales.shape) != shape:
            raise UserError(f"{what} have shape {tuple(scales.shape)} but the model has {shape}; use those made for it.")
    exported = copy.deepcopy(model)
    _fold_scales(exported, head_scales, neuron_scales)
    _restructure(exported, plan)
    return exported


def exported_plan(model: nn.Module) -> ExportPlan | None:
    """What an exported model keeps, or ``None`` for a model that `export_pruned` did not make."""
    return getattr(model, _PLAN_ATTR, None)


# ---------------------------------------------------------------------------------------------
# Cost


def body_macs_per_token(
    layout: Layout, seq_len: int, heads: HeadMask | None = None, mlps: MlpMask | None = None,
    neurons: torch.Tensor | None = None,
) -> int:
    """Multiply-accumulates per token of the encoder layers at sequence length ``seq_len``.

    Per layer with k heads of size dh: the heads' projections, k times `Layout.macs_per_head` (Q, K,
    V and output, 4*d*dh for hidden size d; a fused QKV map costs the same); attention scores and the
    weighted sum of values 2*k*dh*seq_len (one query against ``seq_len`` keys); the MLP
    `Layout.macs_per_mlp` if kept (2*d*f; 3*d*f for a GeGLU MLP of width f, whose input map is 2f
    wide). DeBERTa-v2 also scores each query against the R = `Layout.relative_positions` projected
    relative-position embeddings, k*R*dh, and projects those embeddings once per sequence, k*R*d*dh
    shared by its ``seq_len`` tokens (rounded down). ModernBERT's local layers are counted as global:
    SDPA computes every score and masks them. Embeddings, LayerNorms, softmax, activations and the
    classifier are left out. FLOPs are about twice this; ratios are the same. With ``neurons:
    bool[layer, unit]`` a kept MLP costs its kept units' share, `Layout.macs_per_mlp` / f each.

    >>> from bertlottery.models import Layout
    >>> layout = Layout("bert", 12, 12, 64, 768, 3072, 0)
    >>> body_macs_per_token(layout, 128)
    87293952
    """
    plan = ExportPlan.from_masks(layout, heads, mlps, neurons)
    d, dh, positions = layout.hidden_size, layout.head_dim, layout.relative_positions
    units = plan.neuron_mask.sum(1).tolist()
    per_token = per_sequence = 0
    for kept, mlp_kept, n_units in zip(plan.heads, plan.mlps, units):
        k = len(kept)
        per_token += k * (layout.macs_per_head + 2 * dh * seq_len + positions * dh)
        if mlp_kept:
            full = n_units == layout.intermediate_size
            per_token += layout.macs_per_mlp if full else n_units * _macs_per_neuron(layout)
        per_sequence += k * positions * d * dh
    return per_token + per_sequence // seq_len


COSTS = ("macs", "params")


def unit_costs(layout: Layout, cost: str = "macs", seq_len: int = 128) -> tuple[int, int]:
    """What one head and one MLP neuron cost: ``(head, neuron)``, measured on the layout's real shapes.

    ``macs``: multiply-accumulates per token at ``seq_len``, as `body_macs_per_token` counts them: a head
    `Layout.macs_per_head` (its Q, K, V rows and output columns: 4*d*dh) + 2*dh*seq_len (scores and the
    weighted sum), plus DeBERTa-v2's relative-position terms (the per-sequence share rounded up, so that
    a selection costed by units never exceeds what `mask_cost` counts); a neuron its share of
    `Layout.macs_per_mlp` (2*d; 3*d in a GeGLU MLP, whose unit has an input and a gate row).
    ``params``: a head's Q/K/V rows and biases and output columns; a neuron's input row or rows, their
    biases and its output column.
    """
    if cost not in COSTS:
        raise UserError(f"Unknown cost '{cost}'.{did_you_mean(cost, COSTS)} Known: {', '.join(COSTS)}.")
    d, dh, positions = layout.hidden_size, layout.head_dim, layout.relative_positions
    if cost == "macs":
        per_sequence = -(-positions * d * dh // seq_len)  # ceil
        return layout.macs_per_head + 2 * dh * seq_len + positions * dh + per_sequence, _macs_per_neuron(layout)
    return layout.params_per_head, _params_per_neuron(layout)


def mask_cost(layout: Layout, heads: torch.Tensor, neurons: torch.Tensor, *, cost: str = "macs",
              seq_len: int = 128) -> int:
    """The cost of keeping ``heads: bool[layer, head]`` and ``neurons: bool[layer, unit]``; in MACs
    `body_macs_per_token` of the export that removes the rest."""
    if cost == "macs":
        return body_macs_per_token(layout, seq_len, HeadMask(heads.bool().cpu()), None, neurons)
    head_cost, neuron_cost = unit_costs(layout, cost, seq_len)
    return int(heads.bool().sum()) * head_cost + int(neurons.bool().sum()) * neuron_cost


# ---------------------------------------------------------------------------------------------
# Files


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_exported(
    model: nn.Module,
    out_dir: str | os.PathLike,
    heads: HeadMask | None,
    mlps: MlpMask | None,
    tokenizer=None,
    *,
    seq_len: int = 128,
    neurons: torch.Tensor | None = None,
    head_scales: torch.Tensor | None = None,
    neuron_scales: torch.Tensor | None = None,
) -> Path:
    """Export ``model`` under ``heads``/``mlps`` and write it to ``out_dir``, atomically.

    ``model`` is the full model, or what `export_pruned` returned for the same masks. Writes
    ``model.safetensors`` (the sliced weights), ``config.json`` (the original config), ``pruning.json``
    (what every layer keeps in the original numbering, the original layout, parameter counts before
    and after, the fraction of body MACs per token removed at ``seq_len``) and the tokenizer if given.
    The folder appears complete or not at all; an existing one is replaced. ``neurons`` and the
    scales are `export_pruned`'s.
    """
    from safetensors.torch import save_file

    plan = exported_plan(model)
    if plan is None:
        exported = export_pruned(model, heads, mlps, neurons=neurons, head_scales=head_scales,
                                 neuron_scales=neuron_scales)
        plan = exported_plan(exported)
    else:
        exported = model
        wanted = ExportPlan.from_masks(plan.layout, heads, mlps, neurons)
        if wanted != plan:
            raise UserError("The model was exported with other masks than those given; pass the masks it was made with.")
    full_macs = body_macs_per_token(plan.layout, seq_len)
    pruned_macs = body_macs_per_token(plan.layout, seq_len, plan.head_mask, plan.mlp_mask, plan.neuron_mask)
    after = _param_count(exported)
    record = {
        "format": FORMAT,
        "family": plan.layout.family,
        **plan.to_json(),
        "kept": {
            "heads": plan.head_mask.n_kept,
            "heads_total": plan.head_mask.n_total,
            "mlps": plan.mlp_mask.n_kept,
            "mlps_total": plan.mlp_mask.n_total,
            "neurons": int(plan.neuron_mask.sum()),
            "neurons_total": plan.neuron_mask.numel(),
        },
        "params": {
            "before": after + plan.params_removed,
            "after": after,
            "body_before": plan.layout.body_params,
            "body_after": plan.layout.body_params - plan.params_removed,
        },
        "macs_per_token": {
            "seq_len": seq_len,
            "before": full_macs,
            "after": pruned_macs,
            "fraction_removed": 1.0 - pruned_macs / full_macs,
        },
    }

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crashed earlier attempt of this process id
    tmp.mkdir()
    try:
        tensors = {name: t.detach().cpu().contiguous() for name, t in exported.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        exported.config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / PLAN_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if out_dir.exists():
            # os.replace cannot replace a non-empty folder: move the old one aside first
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _read_plan(out_dir: Path) -> ExportPlan:
    path = out_dir / PLAN_FILE
    if not out_dir.is_dir():
        raise UserError(f"Export folder {out_dir} does not exist; write one with save_exported.")
    if not path.is_file():
        raise UserError(f"{out_dir} is not a bertlottery export (no {PLAN_FILE}); write one with save_exported.")
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"format is {record.get('format')!r}, expected {FORMAT!r}")
        return ExportPlan.from_json(record)
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path} is damaged ({error}); export the model again with save_exported.") from None


def load_exported(out_dir: str | os.PathLike) -> nn.Module:
    """The model `save_exported` wrote to ``out_dir``, in eval mode.

    The architecture comes from ``config.json`` (SDPA attention), is cut down as ``pruning.json``
    says, and every tensor of ``model.safetensors`` must match one of its parameters, name and shape.
    """
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForSequenceClassification

    out_dir = Path(out_dir)
    plan = _read_plan(out_dir)
    for name in ("config.json", WEIGHTS_FILE):
        if not (out_dir / name).is_file():
            raise UserError(f"Export folder {out_dir} has no {name}; export the model again with save_exported.")
    try:
        with safe_open(str(out_dir / WEIGHTS_FILE), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise UserError(f"{out_dir / WEIGHTS_FILE} is not a readable safetensors file ({error}); export again.") from None

    config = AutoConfig.from_pretrained(str(out_dir))
    adapter_for(config.model_type)  # refuse unsupported families before building anything
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation=attention_implementation(config.model_type)
    )
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    model.to(dtype)
    layout = model_layout(model)
    if layout.measured() != plan.layout.measured():  # an older pruning.json has no per-unit counts
        raise UserError(f"{out_dir}: config.json describes {layout} but pruning.json {plan.layout}; export again.")
    _restructure(model, plan)

    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        problems = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:3])}"] if extra else []
        )
        raise UserError(f"{out_dir / WEIGHTS_FILE} does not match pruning.json ({'; '.join(problems)}); export again.")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{out_dir / WEIGHTS_FILE}: {name} has shape {tuple(tensor.shape)} but pruning.json gives "
                f"{tuple(expected[name].shape)}; export again."
            )
    model.load_state_dict(tensors, strict=True)
    return model.eval()
