"""Which tensors Gordon et al. prune, and the masks: magnitude (one threshold per matrix or one over
all of them) and random (the same count per matrix, drawn uniformly).

The paper's set (G§3.1, docs/algorithms.md#compressing-bert): per encoder layer the query, key, value, attention output,
intermediate and output weight matrices, plus the pooler; biases and LayerNorm never; the word
embeddings as an option. ``tensors="weights"`` leaves the pooler out.

Masks follow `bertlottery.masks`: ``True`` means kept. A mask is built from the weights' magnitudes
and the mask before it (``previous``): weights pruned earlier are pruned first, so a rising schedule
gives nested masks and a pruned weight never comes back. Counts are exact: ties in |w| are broken by
position.

Example:
    >>> weights = {"a": torch.tensor([[0.1, -3.0], [2.0, 0.5]])}
    >>> magnitude_mask(weights, 0.5).keep["a"].tolist()
    [[False, True], [True, False]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import UserError, did_you_mean
from ..importance import prunable_parameters
from ..masks import WeightMask
from .names import SCOPES, TENSOR_CHOICES

__all__ = ["pruned_parameters", "prune_count", "magnitude_mask", "random_mask", "mask_sparsity",
           "full_mask"]


def pruned_parameters(model: nn.Module, tensors: str = "gordon", embeddings: bool = False) -> dict[str, nn.Parameter]:
    """Name -> parameter of every tensor Gordon pruning touches, in layer order (pooler, embeddings last).

    A model without a pooler (a masked-LM model, DistilBERT) simply has none to prune.
    """
    if tensors not in TENSOR_CHOICES:
        raise UserError(f"Unknown Gordon tensor set '{tensors}'.{did_you_mean(tensors, TENSOR_CHOICES)} "
                        f"Known: {', '.join(TENSOR_CHOICES)}.")
    chosen = dict(prunable_parameters(model, "weights"))
    names = {id(p): n for n, p in model.named_parameters()}
    base = getattr(model, "base_model", model)
    pooler = getattr(base, "pooler", None)
    dense = getattr(pooler, "dense", None)
    if tensors == "gordon" and isinstance(dense, nn.Linear) and id(dense.weight) in names:
        chosen[names[id(dense.weight)]] = dense.weight
    if embeddings:
        word = model.get_input_embeddings().weight
        chosen[names[id(word)]] = word
    return chosen


def prune_count(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a sparsity removes (rounded half up, so 0.5 of 3 is 2)."""
    return min(numel, int(math.floor(sparsity * numel + 0.5)))


def full_mask(weights: Mapping[str, torch.Tensor]) -> WeightMask:
    return WeightMask({n: torch.ones(w.shape, dtype=torch.bool) for n, w in weights.items()})


def _smallest(score: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the ``count`` smallest entries of a flat tensor; ties go to the earlier position.

    ``kthvalue`` finds the threshold in linear time (a full sort of an embedding matrix on every
    mask update would dominate a CPU run).
    """
    chosen = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if count <= 0:
        return chosen
    if count >= score.numel():
        return ~chosen
    threshold = torch.kthvalue(score, count).values
    chosen = score < threshold
    ties = (score == threshold).nonzero().flatten()
    chosen[ties[: count - int(chosen.sum())]] = True
    return chosen


def _scores(weights: Mapping[str, torch.Tensor], previous: WeightMask | None) -> dict[str, torch.Tensor]:
    # |w|, with weights already pruned pushed below every live one: they are always removed first
    scores = {}
    for name, w in weights.items():
        score = w.detach().abs().float().flatten()
        if previous is not None:
            score = torch.where(previous.keep[name].to(score.device).flatten(), score, torch.full_like(score, -1.0))
        scores[name] = score
    return scores


def magnitude_mask(
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: str = "local",
    previous: WeightMask | None = None,
) -> WeightMask:
    """Prune ``sparsity`` of the weights with the smallest |w|.

    ``local``: every tensor loses ``prune_count(its size, sparsity)`` (the paper). ``global``: one
    threshold over all tensors, ``prune_count(total, sparsity)`` weights in all, unevenly spread.
    """
    if scope not in SCOPES:
        raise UserError(f"Unknown pruning scope '{scope}'.{did_you_mean(scope, SCOPES)} Known: {', '.join(SCOPES)}.")
    if not 0 <= sparsity <= 1:
        raise UserError(f"A sparsity is a fraction in [0, 1], got {sparsity}.")
    scores = _scores(weights, previous)
    if scope == "local":
        return WeightMask({n: ~_smallest(s, prune_count(s.numel(), sparsity)).view(weights[n].shape).cpu()
                           for n, s in scores.items()})
    names = list(scores)
    flat = torch.cat([scores[n].to(scores[names[0]].device) for n in names])
    pruned = _smallest(flat, prune_count(flat.numel(), sparsity)).cpu()
    parts = torch.split(~pruned, [scores[n].numel() for n in names])
    return WeightMask({n: part.view(weights[n].shape) for n, part in zip(names, parts)})


def random_mask(
    shapes: Mapping[str, torch.Size | tuple[int, ...]],
    sparsity: float,
    generator: torch.Generator,
    *,
    previous: WeightMask | None = None,
) -> WeightMask:
    """Prune the same count per tensor as local magnitude pruning would, chosen uniformly at random
    among the weights still live (so masks drawn along a rising schedule are nested)."""
    keep = {}
    for name, shape in shapes.items():
        live = previous.keep[name].flatten().clone() if previous is not None else torch.ones(math.prod(shape), dtype=torch.bool)
        need = prune_count(live.numel(), sparsity) - (live.numel() - int(live.sum()))
        if need < 0:
            raise ValueError(f"{name}: already {live.numel() - int(live.sum())} pruned, more than a sparsity of {sparsity}")
        if need:
            candidates = live.nonzero().flatten()
            chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:need]]
            live[chosen] = False
        keep[name] = live.view(tuple(shape))
    return WeightMask(keep)


def mask_sparsity(mask: WeightMask) -> float:
    """Fraction of the mask's weights that are pruned."""
    return mask.n_pruned / mask.n_total if mask.n_total else 0.0
