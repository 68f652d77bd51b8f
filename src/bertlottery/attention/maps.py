"""Every head's attention map, raw and norm-based, for a sample of dev examples.

Two kinds of map per head h of layer l (rows = query token i, columns = key token j):

- ``raw``: the attention probabilities ``alpha_ij = softmax_j(q_i . k_j / sqrt(d) + mask_j)``.
- ``norm`` (Kobayashi et al. 2020): ``||alpha_ij f_h(x_j)||`` with ``f_h(x) = (x W_V^h + b_V^h) W_O^h``, where
  ``W_O^h`` is head h's block of *input* columns ``h*d:(h+1)*d`` of the attention output projection (the
  released code split the projection along its output axis, which mixes heads). ``alpha_ij`` is a scalar,
  so ``||alpha_ij f_h(x_j)|| = alpha_ij ||f_h(x_j)||``: the map is the raw map with each column scaled by
  the norm of that token's transformed value vector, and no ``batch x heads x T x T x hidden`` tensor
  is ever built (the largest intermediate is ``batch x heads x T x hidden``).

In the families whose scores are plain ``q . k`` (BERT, RoBERTa, ELECTRA, DistilBERT) the probabilities
are recomputed from the query and key projections captured with forward hooks, so the code works
whatever attention kernel (sdpa, flash, eager) the model was loaded with; the tests check them against
eager attention's returned probabilities. The other families add terms of their own to the scores
(DeBERTa's disentangled relative positions, MPNet's relative-position bias, ModernBERT's rotary
embeddings and local windows), so there the maps are the probabilities the model itself returns with
``output_attentions`` on the eager kernel (switched to for the pass and back).

Masks: the forward pass runs under the given head/MLP gates (and weight mask), so every surviving
head sees the inputs the pruned model gives it. A head the mask removes contributes nothing to the
model's output: both its maps are recorded as zeros, and ``index.json`` lists the head mask.

Example:
    >>> maps = extract_maps("minilm-l6", "RTE", "maps/rte", glue_dir=Path("../shared/data/glue"),
    ...                     n_examples=100, seed=0)                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import runs
from ..errors import UserError
from ..masks import HeadMask, Masks, load_masks
from ..models import adapter_for, model_layout
from .maps_format import Example, MapsIndex, MapsWriter

__all__ = [
    "head_maps",
    "transformed_values",
    "sample_indices",
    "load_for_maps",
    "mask_file",
    "read_mask",
    "maps_index",
    "extract_maps",
    "iter_example_maps",
    "LoadedModel",
]


# Families whose attention scores are q . k / sqrt(d) + the padding mask and nothing else: their maps are
# recomputed from the captured projections; the others' come from the model's own probabilities.
_PLAIN_SCORES = ("bert", "roberta", "electra", "distilbert")


@dataclass
class _Captured:
    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    value: torch.Tensor | None = None


@contextmanager
def _capture(model: nn.Module, names: tuple[str, ...]) -> Iterator[list[_Captured]]:
    """Forward hooks that keep every layer's ``names`` (query, key, value) projection outputs, each the
    heads' (B, T, H*dh) block (a fused QKV map's own block of its output); always removed."""
    layers = adapter_for(model).layers(model)
    captured = [_Captured() for _ in layers]
    handles = []

    def keep(slot: _Captured, name: str, first: int, width: int):
        def hook(module, args, output):
            setattr(slot, name, output[..., first:first + width].detach())
        return hook

    try:
        for parts, slot in zip(layers, captured, strict=True):
            width = parts.attn_out.in_features
            for position, name in enumerate(("query", "key", "value")):
                if name in names:
                    linear, first = (getattr(parts, name), 0) if parts.qkv is None else (parts.qkv, position * width)
                    handles.append(linear.register_forward_hook(keep(slot, name, first, width)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """The eager attention kernel inside the block (only it returns probabilities), the model's own after."""
    current = model.config._attn_implementation
    if current == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # (B, T, H*d) -> (B, H, T, d): head h owns columns h*d:(h+1)*d of the projection's output
    b, t, hd = x.shape
    return x.view(b, t, num_heads, hd // num_heads).transpose(1, 2)


def transformed_values(value_out: torch.Tensor, attn_out: nn.Linear, num_heads: int) -> torch.Tensor:
    """``f_h(x_j) = (x_j W_V^h + b_V^h) W_O^h`` for every head: ``(B, H, T, hidden)``.

    ``value_out`` is the value projection's output ``(B, T, H*d)`` (bias included). ``attn_out.weight``
    is ``(hidden, H*d)`` (nn.Linear stores ``out x in``): head h's block is its input columns
    ``h*d:(h+1)*d``. The output projection's bias is added once to the sum over heads and tokens, so it
    belongs to no token and is left out, as in Kobayashi et al. (2020).
    """
    v = _split_heads(value_out, num_heads)  # (B, H, T, d)
    hidden, hd = attn_out.weight.shape
    w = attn_out.weight.view(hidden, num_heads, hd // num_heads).to(v.dtype)  # (hidden, H, d)
    return torch.einsum("bhtd,ohd->bhto", v, w)


def head_maps(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    heads: HeadMask | torch.Tensor | None = None,
    norm: bool = True,
    dtype: torch.dtype | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Raw (and norm-based) maps of every layer and head for one padded batch.

    Run the forward pass under whatever masks apply (``gated``/``weight_masked``); ``heads`` only says
    which heads to record as zeros.

    Args:
        batch: ``input_ids``, ``attention_mask`` (1 = token, 0 = padding), optional ``token_type_ids``.
        heads: bool ``[layer, head]``, True = kept; removed heads' maps are zero.
        norm: also compute the norm-based maps.
        dtype: precision of the softmax and norms (default: float32, or the model's if it is float64).

    Returns:
        Per layer, ``{"raw": (B, H, T, T), "norm": (B, H, T, T)}``; padded rows/columns are included
        (zero columns; crop them with the attention mask).
    """
    layout = model_layout(model)
    layers = adapter_for(model).layers(model)
    param_dtype = next(model.parameters()).dtype
    dtype = dtype or (torch.float64 if param_dtype == torch.float64 else torch.float32)
    keep = None
    if heads is not None:
        keep = heads.keep if isinstance(heads, HeadMask) else torch.as_tensor(heads).bool()
        if tuple(keep.shape) != (layout.num_layers, layout.num_heads):
            raise UserError(f"Head mask has shape {tuple(keep.shape)} but the model has "
                            f"{(layout.num_layers, layout.num_heads)}; use a mask made for this model.")
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    attention_mask = inputs["attention_mask"]
    # additive key mask as the model applies it: padding keys get (effectively) zero probability
    key_bias = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    key_bias = key_bias.masked_fill(attention_mask == 0, torch.finfo(dtype).min)[:, None, None, :]  # (B,1,1,T)
    recompute = layout.family in _PLAIN_SCORES
    names = ("query", "key", "value") if recompute else ("value",)
    with torch.no_grad(), _capture(model, names) as captured, \
            (nullcontext() if recompute else _eager_attention(model)):
        outputs = model(**inputs) if recompute else model(**inputs, output_attentions=True)
        out = []
        for index, (parts, slot) in enumerate(zip(layers, captured, strict=True)):
            if recompute:
                q = _split_heads(slot.query.to(dtype), layout.num_heads)
                k = _split_heads(slot.key.to(dtype), layout.num_heads)
                scores = torch.matmul(q, k.transpose(-1, -2)) * layout.head_dim ** -0.5 + key_bias
                alpha = torch.softmax(scores, dim=-1)  # (B, H, T, T)
            else:
                alpha = outputs.attentions[index].to(dtype)  # the model's own (B, H, T, T)
            maps = {"raw": alpha}
            if norm:
                f = transformed_values(slot.value.to(dtype), parts.attn_out, layout.num_heads)  # (B, H, T, hidden)
                # ||alpha_ij f(x_j)|| = alpha_ij ||f(x_j)||: scale each column; no (B, H, T, T, hidden) tensor
                maps["norm"] = alpha * f.norm(dim=-1)[:, :, None, :]
            if keep is not None and not bool(keep[index].all()):
                gate = keep[index].to(device=alpha.device, dtype=dtype)[None, :, None, None]
                maps = {kind: m * gate for kind, m in maps.items()}
            out.append(maps)
            slot.query = slot.key = slot.value = None  # free as we go
    return out


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """``k`` distinct positions out of ``n`` (all of them if ``k >= n``), seeded, in ascending order."""
    if k >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, size=k, replace=False))


@dataclass
class LoadedModel:
    """A model ready for map extraction and what it is."""

    model: nn.Module
    tokenizer: Any
    task: str
    weights: str  # "pretrained" | "finetuned"
    source: str
    max_length: int


def load_for_maps(model_or_run: str | os.PathLike, task: str | None, max_length: int | None = None, *,
                  fit: bool = False) -> LoadedModel:
    """A pre-trained model (name, alias or folder) or a fine-tuning run's model; the task and max length
    default to the run's own. ``fit``: cut ``max_length`` to the model's positions rather than refuse it
    (a study's configured length, like its training length)."""
    from ..models import compute_device, load_model, load_tokenizer, max_tokens
    from ..tasks import get_task

    path = Path(model_or_run)
    if path.is_dir() and runs.is_complete_run(path):
        config = runs.read_json(path / runs.CONFIG_FILE)
        run_task = config.get("task")
        if task is not None and run_task is not None and get_task(task).name != get_task(run_task).name:
            raise UserError(f"{path} was fine-tuned on {run_task}, not {task}; leave out --task or give a {task} run.")
        task = task or run_task
        run_length = config.get("train", {}).get("max_length")
        model_dir = runs.model_dir_of(path)
        weights = "finetuned"
    else:
        model_dir = model_or_run
        run_length = None
        weights = "pretrained"
    if task is None:
        raise UserError(f"Which task's dev examples? {model_or_run} is not a fine-tuning run; give --task.")
    spec = get_task(task)
    # a length the user asked for must fit the model's positions (one line before anything runs); a
    # study's setting (``fit``), the run's own length or the paper's 128 is cut to them, as training does
    limit = max_tokens(str(model_dir))
    if max_length is not None and not fit and limit is not None and max_length > limit:
        raise UserError(f"--max-length {max_length} is beyond the {limit} positions of the model {model_dir}; "
                        f"give at most {limit}.")
    max_length = max_length or run_length or 128
    if limit is not None and max_length > limit:
        max_length = limit
    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), spec.num_labels).eval().to(compute_device())
    return LoadedModel(model, tokenizer, spec.name, weights, str(model_or_run), max_length)


def mask_file(path: str | os.PathLike) -> Path:
    """A masks file, or the one a folder holds (``mask.safetensors`` of a prune step, ``good.safetensors``
    of a super-survivor or subnetworks step)."""
    path = Path(path)
    if path.is_dir():
        for name in (runs.MASK_FILE, runs.subnetwork_file("good")):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path} holds no mask.safetensors or good.safetensors; give the mask file itself.")
    return path


def read_mask(path: str | os.PathLike | None, model: nn.Module) -> Masks | None:
    """The masks of `mask_file` (None for no path), checked against the model."""
    if path is None:
        return None
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return load_masks(mask_file(path), model_layout(model), shapes)


def iter_example_maps(
    loaded: LoadedModel,
    glue_dir: Path | None,
    *,
    n_examples: int = 100,
    seed: int = 0,
    masks: Masks | None = None,
    batch_size: int = 16,
    split: str | None = None,
) -> Iterator[tuple[Example, dict[str, np.ndarray]]]:
    """``(example, {"raw", "norm": float32[L, H, T, T]})`` for a seeded sample of dev examples."""
    from ..data import load_split, make_loader, tokenize
    from ..masking import gated, weight_masked
    from ..tasks import get_task

    task = get_task(loaded.task)
    split = split or task.eval_splits[0]
    examples = load_split(task, split, glue_dir)
    chosen = sample_indices(len(examples), n_examples, seed)
    tokenized = tokenize([examples[i] for i in chosen], loaded.tokenizer, max_length=loaded.max_length)
    pad_id = loaded.tokenizer.pad_token_id or 0
    heads = masks.heads if masks else None
    model = loaded.model
    device = next(model.parameters()).device
    # file order (no length grouping), so examples come out in dev order; padding costs little here
    loader = make_loader(tokenized, pad_id, batch_size, shuffle=False, seed=None, group_by_length=False)
    with gated(model, heads=heads, mlps=masks.mlps if masks else None), \
            weight_masked(model, masks.weights if masks else None):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            per_layer = head_maps(model, batch, heads=heads)
            for row, position in enumerate(batch["index"].tolist()):
                length = int(tokenized.lengths[position])
                ids = tokenized.input_ids[position]
                segments = tokenized.token_type_ids[position].tolist() if tokenized.token_type_ids else None
                example = Example(f"ex{position:03d}", dev_index=chosen[position],
                                  tokens=loaded.tokenizer.convert_ids_to_tokens(ids.tolist()), segments=segments)
                arrays = {kind: np.stack([layer[kind][row, :, :length, :length].float().cpu().numpy()
                                          for layer in per_layer])
                          for kind in ("raw", "norm")}
                yield example, arrays


def maps_index(loaded: LoadedModel, masks: Masks | None, mask_path: str | os.PathLike | None, *, seed: int,
               extra: dict[str, Any] | None = None) -> MapsIndex:
    """The index of the maps ``loaded`` gives under ``masks`` (examples are added as they are written)."""
    from ..masking import fraction_kept

    layout = model_layout(loaded.model)
    return MapsIndex(
        model=loaded.source, task=loaded.task, weights=loaded.weights, layers=layout.num_layers,
        heads=layout.num_heads, mask=str(mask_path) if mask_path is not None else None,
        head_mask=masks.heads.keep.tolist() if masks is not None and masks.heads is not None else None,
        seed=seed, max_length=loaded.max_length,
        extra={"fraction_kept": fraction_kept(loaded.model, masks), **(extra or {})},
    )


def extract_maps(
    model_or_run: str | os.PathLike,
    task: str | None,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    n_examples: int = 100,
    seed: int = 0,
    mask: str | os.PathLike | None = None,
    max_length: int | None = None,
    batch_size: int = 16,
    keep: Callable[[Example], bool] | None = None,
    on_example: Callable[[Example, dict[str, np.ndarray]], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> MapsIndex:
    """Write a maps directory (see `maps_format`) for a seeded sample of ``task``'s dev examples.

    Args:
        model_or_run: a pre-trained model (name, alias, folder) or a fine-tuning run directory.
        mask: a masks file (or a prune / super-survivor folder) to run the model under.
        keep: which examples' maps to write (default all); ``on_example`` sees every example's maps
            (for example to classify them) whether or not they are written.
    """
    loaded = load_for_maps(model_or_run, task, max_length)
    masks = read_mask(mask, loaded.model)
    index = maps_index(loaded, masks, mask, seed=seed, extra=extra)
    with MapsWriter(out, index) as writer:
        for example, arrays in iter_example_maps(loaded, glue_dir, n_examples=n_examples, seed=seed, masks=masks,
                                                 batch_size=batch_size):
            if on_example is not None:
                on_example(example, arrays)
            if keep is None or keep(example):
                writer.add(example, arrays)
    return writer.index
