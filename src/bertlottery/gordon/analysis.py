"""E13: the analyses of Gordon et al. (G§4, G§5, Tables 1-3), as functions of tensors and tables.

- `sort_order_ranks` / `sort_order_movement` / `movement_summary`: how far each weight moves in its
  matrix's |w| sort order during fine-tuning, as a fraction of the matrix size (G Table 2, Figs. 4
  right and 7).
- `mask_difference`: the fraction of mask entries that differ (G Fig. 3).
- `head_prune_rates`: the fraction of each attention head's weights a mask prunes (G Fig. 4 left).
- `weight_statistics`: per-matrix mean and std (G Table 3).
- `hidden_state_similarity`: cosine similarity of two encoders' hidden states, per layer (G Fig. 2 right).
- `key_heatmap`, `embedding_heatmap`: |w| maps (G Figs. 8, 9).
- `oneshot_curve`: the summed |w| that one-shot magnitude pruning removes at each sparsity (G Fig. 5).
- `table1`, `loss_metric_fits`, `lr_sweep_table`: tables of a study's results (G Table 1, Fig. 2 left),
  pure functions of the results DataFrame.

Example:
    >>> movement = sort_order_movement(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([4.0, 3.0, 2.0, 1.0]))
    >>> movement.tolist()
    [0.75, 0.25, 0.25, 0.75]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..masks import WeightMask

__all__ = [
    "sort_order_ranks",
    "sort_order_movement",
    "movement_summary",
    "mask_difference",
    "head_prune_rates",
    "weight_statistics",
    "hidden_state_similarity",
    "key_heatmap",
    "embedding_heatmap",
    "oneshot_curve",
    "table1",
    "table1_tasks",
    "loss_metric_fits",
    "lr_sweep_table",
]


# ---- sort order ---------------------------------------------------------------------------------------

def sort_order_ranks(weights: torch.Tensor) -> torch.Tensor:
    """``int64[numel]``: each weight's position in its tensor's ascending |w| order (ties by position)."""
    order = torch.argsort(weights.detach().abs().flatten().float(), stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks


def sort_order_movement(before: torch.Tensor, after: torch.Tensor, *,
                        ranks_before: torch.Tensor | None = None) -> torch.Tensor:
    """Per weight (flattened): |rank before - rank after| / tensor size (G§3; docs/algorithms.md#compressing-bert). A weight that goes
    from position 59 of 100 to 63 moved 0.04."""
    if before.shape != after.shape:
        raise ValueError(f"weights before {tuple(before.shape)} and after {tuple(after.shape)} differ in shape")
    start = sort_order_ranks(before) if ranks_before is None else ranks_before
    return (start - sort_order_ranks(after)).abs().double() / before.numel()


def movement_summary(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    *,
    bins: int = 20,
    ranks_before: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Sort-order movement pooled over tensors: mean and std over all weights, and by starting magnitude.

    Weights are binned by their starting position in their own tensor's order (bin b holds the
    percentiles [b/bins, (b+1)/bins)), so bin 0 is every tensor's smallest weights; each bin
    reports its mean starting |w| (the x-axis of G Fig. 7) and its movement's mean and std.
    """
    total = count = 0
    squares = 0.0
    bin_sum = np.zeros(bins)
    bin_squares = np.zeros(bins)
    bin_count = np.zeros(bins)
    bin_magnitude = np.zeros(bins)
    per_tensor = {}
    for name, start in before.items():
        ranks = ranks_before[name] if ranks_before is not None else sort_order_ranks(start)
        moved = sort_order_movement(start, after[name], ranks_before=ranks)
        total += float(moved.sum())
        squares += float((moved ** 2).sum())
        count += moved.numel()
        per_tensor[name] = float(moved.mean())
        which = (ranks * bins // start.numel()).numpy()
        magnitude = start.detach().abs().flatten().double().numpy()
        moved_np = moved.numpy()
        bin_sum += np.bincount(which, moved_np, minlength=bins)
        bin_squares += np.bincount(which, moved_np ** 2, minlength=bins)
        bin_count += np.bincount(which, minlength=bins)
        bin_magnitude += np.bincount(which, magnitude, minlength=bins)
    mean = total / count
    safe = np.maximum(bin_count, 1)
    bin_mean = bin_sum / safe
    return {
        "mean": mean,
        "std": float(np.sqrt(max(squares / count - mean ** 2, 0.0))),
        "n_weights": count,
        "per_tensor": per_tensor,
        "by_magnitude": {
            "mean_magnitude": (bin_magnitude / safe).tolist(),
            "mean": bin_mean.tolist(),
            "std": np.sqrt(np.maximum(bin_squares / safe - bin_mean ** 2, 0.0)).tolist(),
            "count": bin_count.astype(int).tolist(),
        },
    }


# ---- masks --------------------------------------------------------------------------------------------

def mask_difference(a: WeightMask, b: WeightMask) -> float:
    """Fraction of entries (over all tensors of both masks, which must be the same) kept by one and not the other."""
    if set(a.keep) != set(b.keep):
        only = sorted(set(a.keep) ^ set(b.keep))
        raise ValueError(f"the masks cover different tensors: {only[:3]}")
    differ = total = 0
    for name, keep in a.keep.items():
        other = b.keep[name]
        if other.shape != keep.shape:
            raise ValueError(f"{name}: shapes {tuple(keep.shape)} and {tuple(other.shape)}")
        differ += int((keep != other).sum())
        total += keep.numel()
    return differ / total if total else 0.0


def head_prune_rates(model: nn.Module, mask: WeightMask) -> torch.Tensor:
    """``float[layer, head]``: the fraction of each head's weights that ``mask`` prunes: its rows of
    every per-head block (the query, key and value matrices, each block of a fused QKV map, DeBERTa's
    relative-position projections) and its columns of the attention output (biases not counted).
    Tensors the mask does not cover count as kept."""
    from ..models import adapter_for, model_layout

    layout = model_layout(model)
    names = {id(p): n for n, p in model.named_parameters()}
    heads, dh = layout.num_heads, layout.head_dim
    rates = torch.zeros(layout.num_layers, heads, dtype=torch.float64)
    for layer, parts in enumerate(adapter_for(model).layers(model)):
        pruned = torch.zeros(heads, dtype=torch.float64)
        per_head = layout.hidden_size * dh  # the output columns; each block adds its rows below
        for linear, first in parts.head_blocks:
            per_head += dh * linear.in_features
            keep = mask.keep.get(names[id(linear.weight)])
            if keep is not None:  # head h owns rows first + h*dh : first + (h+1)*dh
                block = keep[first:first + heads * dh]
                pruned += (~block).view(heads, dh, -1).sum(dim=(1, 2)).double()
        keep = mask.keep.get(names[id(parts.attn_out.weight)])
        if keep is not None:  # (d, H*dh): head h owns columns h*dh:(h+1)*dh
            pruned += (~keep).view(keep.shape[0], heads, dh).sum(dim=(0, 2)).double()
        rates[layer] = pruned / per_head
    return rates


# ---- weights ------------------------------------------------------------------------------------------

def weight_statistics(tensors: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Mean and std (population) of every tensor (G Table 3), in the order given."""
    out = []
    for name, t in tensors.items():
        values = t.detach().double()
        out.append({"name": name, "mean": float(values.mean()), "std": float(values.std(unbiased=False)),
                    "numel": values.numel(), "zeros": float((values == 0).double().mean())})
    return out


def key_heatmap(weight: torch.Tensor) -> np.ndarray:
    """|W| of a key projection as ``[d_in, heads*dh]``: the heads' matrices stacked side by side (G Fig. 8)."""
    return weight.detach().abs().float().T.numpy()


def embedding_heatmap(embeddings: torch.Tensor, tokens: list[str], rows: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """|E| with subwords sorted by their length (shortest at the top, ``##`` not counted), averaged over
    ``rows`` groups of consecutive subwords: ``([rows, hidden], mean length per group)`` (G Fig. 9)."""
    lengths = np.array([len(t.removeprefix("##")) for t in tokens])
    order = np.argsort(lengths, kind="stable")
    magnitude = embeddings.detach().abs().float().numpy()[order]
    groups = np.array_split(np.arange(len(order)), min(rows, len(order)))
    heat = np.stack([magnitude[g].mean(axis=0) for g in groups])
    return heat, np.array([lengths[order][g].mean() for g in groups])


def oneshot_curve(weights: Mapping[str, torch.Tensor], sparsities: Iterable[float], *,
                  scope: str = "local") -> dict[str, Any]:
    """What one-shot magnitude pruning removes at each sparsity (G Fig. 5): the summed |w| of the
    pruned weights, as a fraction of the summed |w| of all, and the largest |w| pruned. ``local``
    prunes each tensor's ``prune_count`` smallest (the paper); ``global`` the smallest over all.

    Example:
        >>> curve = oneshot_curve({"a": torch.tensor([1.0, -2.0, 3.0, 4.0])}, [0.0, 0.5])
        >>> curve["pruned_abs_sum"], curve["largest_pruned"]
        ([0.0, 3.0], [0.0, 2.0])
    """
    from .pruning import prune_count

    points = [float(s) for s in sparsities]
    magnitudes = [w.detach().abs().flatten().double().cpu() for w in weights.values()]
    if scope == "global":
        magnitudes = [torch.cat(magnitudes)]
    elif scope != "local":
        raise ValueError(f"unknown scope {scope!r}")
    pruned = np.zeros(len(points))
    largest = np.zeros(len(points))
    total = 0.0
    for values in magnitudes:
        ordered = torch.sort(values).values
        sums = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ordered, 0)])
        total += float(sums[-1])
        for i, sparsity in enumerate(points):
            count = prune_count(ordered.numel(), sparsity)
            pruned[i] += float(sums[count])
            if count:
                largest[i] = max(largest[i], float(ordered[count - 1]))
    return {"sparsity": points, "pruned_abs_sum": pruned.tolist(),
            "fraction_of_abs_sum": (pruned / total if total else pruned).tolist(), "largest_pruned": largest.tolist(),
            "total_abs_sum": total, "n_weights": sum(v.numel() for v in magnitudes), "scope": scope}


@torch.no_grad()
def hidden_state_similarity(
    reference: nn.Module, other: nn.Module, batches: Iterable[torch.Tensor]
) -> list[float]:
    """Mean cosine similarity of the two encoders' hidden states at every position, per layer.

    Entry 0 is the embedding output, entry i the output of layer i. Both models run in eval mode on
    the same unpadded blocks ``[B, T]``.
    """
    states = [reference.training, other.training]
    reference.eval()
    other.eval()
    device = next(reference.parameters()).device
    sums: list[float] | None = None
    tokens = 0
    try:
        for ids in batches:
            ids = ids.long().to(device)
            a = reference(input_ids=ids, output_hidden_states=True).hidden_states
            b = other(input_ids=ids, output_hidden_states=True).hidden_states
            cos = [float(nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).sum()) for x, y in zip(a, b)]
            sums = cos if sums is None else [s + c for s, c in zip(sums, cos)]
            tokens += ids.numel()
    finally:
        reference.train(states[0])
        other.train(states[1])
    if sums is None:
        raise ValueError("no batches to compare")
    return [s / tokens for s in sums]


# ---- tables of results --------------------------------------------------------------------------------

def _sparsity(subnetwork: str) -> float:
    return float(subnetwork.removeprefix("sparsity-"))


def table1(table) -> Any:
    """G Table 1 from the results table: per (method, sparsity) the pre-training dev loss and, per
    task, the dev metric (the task's primary one) and the training loss, plus their averages over tasks.

    Columns: method, sparsity, pretrain_dev_loss, ``<task>`` and ``<task> train_loss`` per task,
    ``average``, ``average train_loss``; ``<task> accuracy`` for a task whose primary metric is not
    accuracy but that reports it (CoLA: the paper's Table 1 gives accuracy). G Fig. 3 (right)'s runs
    (``epochs-before-pruning``) are not Table 1's and are left out.
    """
    import pandas as pd

    from ..tasks import get_task
    from .names import BEFORE_PRUNING

    table = table[table["method"] != BEFORE_PRUNING] if not table.empty else table
    if table.empty:
        return pd.DataFrame(columns=["method", "sparsity", "pretrain_dev_loss"])
    rows = table.copy()
    rows["sparsity"] = rows["subnetwork"].map(_sparsity)
    keys = ["method", "sparsity"]
    parts = []
    for task_name, group in rows.groupby("task", sort=True):
        task = get_task(task_name)
        metric = group[(group["split"] == task.eval_splits[0]) & (group["metric"] == task.primary_metric)]
        loss = group[group["metric"] == "train_loss"]
        parts.append(metric.groupby(keys)["value"].mean().rename(task.name))
        parts.append(loss.groupby(keys)["value"].mean().rename(f"{task.name} train_loss"))
        accuracy = group[(group["split"] == task.eval_splits[0]) & (group["metric"] == "accuracy")]
        if task.primary_metric != "accuracy" and not accuracy.empty:
            parts.append(accuracy.groupby(keys)["value"].mean().rename(f"{task.name} accuracy"))
    pre = rows[rows["metric"] == "pretrain_dev_loss"].groupby(keys)["value"].mean().rename("pretrain_dev_loss")
    out = pd.concat([pre, *parts], axis=1)
    tasks = sorted({get_task(t).name for t in rows["task"]})
    out["average"] = out[tasks].mean(axis=1, skipna=False)
    out["average train_loss"] = out[[f"{t} train_loss" for t in tasks]].mean(axis=1, skipna=False)
    return out.reset_index().sort_values(keys, kind="mergesort").reset_index(drop=True)


def table1_tasks(t1) -> list[str]:
    """The task columns of a `table1` frame (their primary metric), in its order."""
    return [c for c in t1.columns if c not in ("method", "sparsity", "pretrain_dev_loss", "average")
            and not c.endswith((" train_loss", " accuracy"))]


def loss_metric_fits(table, method: str = "information-deletion") -> Any:
    """Per task, the least-squares line of the dev metric against the pre-training dev loss over the
    sparsities of ``method`` (G Fig. 2 left: the slope is what a unit of pre-training loss costs the task).

    Columns: task, method, slope, intercept, r, n.
    """
    import pandas as pd
    from scipy.stats import linregress

    out = []
    t1 = table1(table)
    if t1.empty:
        return pd.DataFrame(columns=["task", "method", "slope", "intercept", "r", "n"])
    chosen = t1[t1["method"] == method]
    for task in table1_tasks(t1):
        points = chosen[["pretrain_dev_loss", task]].dropna()
        if len(points) < 2 or points["pretrain_dev_loss"].nunique() < 2:
            continue
        fit = linregress(points["pretrain_dev_loss"], points[task])
        out.append({"task": task, "method": method, "slope": fit.slope, "intercept": fit.intercept,
                    "r": fit.rvalue, "n": len(points)})
    return pd.DataFrame(out, columns=["task", "method", "slope", "intercept", "r", "n"])


def lr_sweep_table(selections: list[dict[str, Any]]) -> Any:
    """One row per (task, method, sparsity, learning rate) of the selection records: the dev metric,
    the training loss, and whether that rate was kept."""
    import pandas as pd

    rows = []
    for sel in selections:
        for run in sel["runs"]:
            rows.append({"task": sel["task"], "method": sel["method"], "sparsity": sel["sparsity"],
                         "learning_rate": run["learning_rate"], "metric": sel["metric"], "dev": run["dev"],
                         "train_loss": run["train_loss"], "kept": run["learning_rate"] == sel["learning_rate"]})
    return pd.DataFrame(rows, columns=["task", "method", "sparsity", "learning_rate", "metric", "dev", "train_loss",
                                       "kept"])
