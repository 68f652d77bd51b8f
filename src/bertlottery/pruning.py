"""The iterative searches for "good" subnetworks: structured (s-pruning) and magnitude (m-pruning).

Both take callables rather than a model, so they know nothing about models, data or devices, and
are tested on their own: ``score(heads, mlps) -> ImportanceScores`` and ``evaluate(mask) -> metric``.

s-pruning (docs/algorithms.md#structured-pruning): mode ``heads+mlps`` runs three phases. Phase 1 masks the 10% lowest-
scoring live heads (``int(0.1 * total heads)``) and the lowest live MLP per step; phase 2 heads only,
at half the head step; phase 3 MLPs only, one per step. After each step the pruned model is
re-evaluated: at or above the threshold the step is accepted and scores are recomputed under the new
mask; below it the step is reverted and the next phase begins. Masked elements never come back.
Modes ``heads`` and ``mlps`` run a single phase.

m-pruning (docs/algorithms.md#magnitude-pruning): each step removes 10% of the remaining prunable weights with the
smallest |w| (one global threshold, or the same fraction of every tensor with ``scope="local"``);
the good mask is the last whose metric is at or above the threshold.

The threshold is ``fraction x full metric`` (0.9 by default). For a full metric at or below zero
(a degenerate run) it is ``full - (1 - fraction) * |full|``, so that pruning may still only lose
10% of its size.

Example:
    >>> result = structured_search(score, evaluate, num_layers=12, num_heads=12,
    ...                            full_metric=0.83)                   # doctest: +SKIP
    >>> result.heads.n_kept, result.mlps.n_kept                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .compat import Compat
from .errors import UserError, did_you_mean
from .importance import ImportanceScores
from .masks import HeadMask, MlpMask, WeightMask

__all__ = [
    "STRUCTURED_MODES",
    "threshold_for",
    "Step",
    "SearchResult",
    "StructuredResult",
    "MagnitudeResult",
    "structured_search",
    "magnitude_step",
    "magnitude_search",
]

STRUCTURED_MODES = ("heads+mlps", "heads", "mlps")


def threshold_for(full_metric: float, fraction: float) -> float:
    return full_metric * fraction if full_metric > 0 else full_metric - (1 - fraction) * abs(full_metric)


@dataclass
class Step:
    """One step of a search, accepted or reverted."""

    phase: str
    metric: float
    accepted: bool
    heads_kept: int | None = None
    mlps_kept: int | None = None
    pruned_heads: list[tuple[int, int]] = field(default_factory=list)  # (layer, head) masked by this step
    pruned_mlps: list[int] = field(default_factory=list)
    weights_kept: int | None = None
    fraction_pruned: float | None = None
    scores: dict[str, Any] | None = None  # the scores the step was chosen by

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class SearchResult:
    """What a search found: the good mask's metric against the full model's, and every step."""

    full_metric: float
    min_metric: float  # the metric a pruned model had to keep: keep_fraction x full, or what the caller set
    final_metric: float  # metric of the good mask
    trace: list[Step]

    def sizes(self) -> dict[str, int]:
        raise NotImplementedError

    def trace_dict(self) -> dict[str, Any]:
        return {
            "full_metric": self.full_metric,
            "min_metric": self.min_metric,
            "final_metric": self.final_metric,
            **self.sizes(),
            "steps": [s.to_dict() for s in self.trace],
        }


@dataclass(kw_only=True)
class StructuredResult(SearchResult):
    heads: HeadMask
    mlps: MlpMask

    def sizes(self) -> dict[str, int]:
        return {"heads_kept": self.heads.n_kept, "mlps_kept": self.mlps.n_kept}


def _lowest_live(scores: torch.Tensor, live: torch.Tensor, count: int) -> list[int]:
    """Flat indices of the ``count`` lowest-scoring live elements (ties: lower index first)."""
    candidates = torch.nonzero(live.flatten(), as_tuple=False).flatten()
    if count <= 0 or len(candidates) == 0:
        return []
    values = scores.flatten()[candidates]
    order = torch.sort(values, stable=True).indices  # stable: ties broken by position
    return candidates[order[:count]].tolist()


def structured_search(
    score: Callable[[HeadMask, MlpMask], ImportanceScores],
    evaluate: Callable[[HeadMask, MlpMask], float],
    *,
    num_layers: int,
    num_heads: int,
    full_metric: float,
    mode: str = "heads+mlps",
    keep_fraction: float = 0.9,
    min_metric: float | None = None,
    head_step_fraction: float = 0.1,
    mlps_per_step: int = 1,
    on_step: Callable[[Step], None] | None = None,
) -> StructuredResult:
    """Iteratively mask the least important heads and MLPs while the metric stays above threshold.

    The threshold is ``min_metric`` if given (`criterion_threshold` computes it for a criterion), else
    the paper's ``keep_fraction`` x ``full_metric``."""
    if mode not in STRUCTURED_MODES:
        raise UserError(f"Unknown pruning mode '{mode}'.{did_you_mean(mode, STRUCTURED_MODES)} "
                        f"Known: {', '.join(STRUCTURED_MODES)}.")
    head_step = max(1, int(head_step_fraction * num_layers * num_heads))
    phases = {
        "heads+mlps": [("heads+mlps", head_step, mlps_per_step), ("heads", max(1, head_step // 2), 0),
                       ("mlps", 0, mlps_per_step)],
        "heads": [("heads", head_step, 0)],
        "mlps": [("mlps", 0, mlps_per_step)],
    }[mode]
    limit = threshold_for(full_metric, keep_fraction) if min_metric is None else min_metric
    heads = HeadMask.full(num_layers, num_heads)
    mlps = MlpMask.full(num_layers)
    final_metric = full_metric
    trace: list[Step] = []
    scores: ImportanceScores | None = None  # scores of the current (accepted) mask
    for phase, n_heads, n_mlps in phases:
        while True:
            if scores is None:
                scores = score(heads, mlps)
            heads_out = _lowest_live(scores.heads, heads.keep, n_heads)
            mlps_out = _lowest_live(scores.mlps, mlps.keep, n_mlps)
            if not heads_out and not mlps_out:
                break  # nothing left to prune in this phase
            if (n_heads and not heads_out) or (n_mlps and not mlps_out):
                break  # a joint step needs both kinds
            new_heads, new_mlps = HeadMask(heads.keep.clone()), MlpMask(mlps.keep.clone())
            new_heads.keep.view(-1)[heads_out] = False
            new_mlps.keep[mlps_out] = False
            metric = float(evaluate(new_heads, new_mlps))
            accepted = metric >= limit
            step = Step(
                phase=phase, metric=metric, accepted=accepted,
                heads_kept=new_heads.n_kept, mlps_kept=new_mlps.n_kept,
                pruned_heads=[divmod(i, num_heads) for i in heads_out], pruned_mlps=list(mlps_out),
                scores={"heads": scores.heads.tolist(), "mlps": scores.mlps.tolist()},
            )
            trace.append(step)
            if on_step:
                on_step(step)
            if not accepted:
                break  # revert: keep the current mask and move to the next phase
            heads, mlps, final_metric = new_heads, new_mlps, metric
            scores = None  # recompute under the new mask
    return StructuredResult(heads=heads, mlps=mlps, full_metric=full_metric, min_metric=limit,
                            final_metric=final_metric, trace=trace)


# ---- magnitude pruning ------------------------------------------------------------------------------

@dataclass(kw_only=True)
class MagnitudeResult(SearchResult):
    weights: WeightMask

    def sizes(self) -> dict[str, int]:
        return {"weights_kept": self.weights.n_kept, "weights_total": self.weights.n_total}


def magnitude_step(
    magnitude: Mapping[str, torch.Tensor], keep: WeightMask, fraction: float = 0.1, scope: str = "global"
) -> WeightMask:
    """Remove ``fraction`` of the *remaining* weights with the smallest |w|.

    ``global``: one ranking over all tensors, ``round(fraction * remaining)`` weights go.
    ``local``: every tensor loses ``round(fraction * its remaining)``. Ties are broken by position,
    so the count is exact.
    """
    if scope not in ("global", "local"):
        raise UserError(f"Unknown magnitude scope '{scope}'.{did_you_mean(scope, ['global', 'local'])} "
                        "Known: global, local.")
    new = {n: t.clone() for n, t in keep.keep.items()}
    if scope == "local":
        for name, kept in new.items():
            flat_keep = kept.view(-1)
            count = round(fraction * int(flat_keep.sum()))
            out = _lowest_live(magnitude[name].reshape(-1), flat_keep, count)
            flat_keep[out] = False
        return WeightMask(new)
    names = list(new)
    sizes = [new[n].numel() for n in names]
    flat_mag = torch.cat([magnitude[n].reshape(-1).float() for n in names])
    flat_keep = torch.cat([new[n].reshape(-1) for n in names])
    count = round(fraction * int(flat_keep.sum()))
    if count:
        # topk over the live weights: dead ones are pushed to +inf so they are never chosen again
        ranked = torch.where(flat_keep, flat_mag, torch.full_like(flat_mag, float("inf")))
        out = torch.topk(ranked, count, largest=False, sorted=False).indices
        flat_keep[out] = False
    return WeightMask({n: part.view_as(new[n]) for n, part in zip(names, torch.split(flat_keep, sizes))})


def magnitude_search(
    magnitude: Mapping[str, torch.Tensor],
    evaluate: Callable[[WeightMask], float],
    *,
    full_metric: float,
    keep_fraction: float = 0.9,
    min_metric: float | None = None,
    step_fraction: float = 0.1,
    scope: str = "global",
    max_steps: int = 100,
    compat: Compat | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> MagnitudeResult:
    """Prune 10% of the remaining weights per step while the metric stays above threshold (``min_metric``
    if given, else the paper's ``keep_fraction`` x ``full_metric``)."""
    compat = compat or Compat()
    limit = threshold_for(full_metric, keep_fraction) if min_metric is None else min_metric
    current = WeightMask({n: torch.ones_like(t, dtype=torch.bool) for n, t in magnitude.items()})
    current_metric, total = full_metric, current.n_total
    before_last, before_last_metric = current, current_metric
    trace: list[Step] = []
    for _ in range(Compat.MAGNITUDE_MAX_STEPS if compat.magnitude_mask_before_last_step else max_steps):
        candidate = magnitude_step(magnitude, current, step_fraction, scope)
        if candidate.n_kept == current.n_kept:
            break  # nothing left to remove
        before_last, before_last_metric = current, current_metric
        metric = float(evaluate(candidate))
        accepted = metric >= limit
        step = Step(phase=f"magnitude-{scope}", metric=metric, accepted=accepted,
                    weights_kept=candidate.n_kept, fraction_pruned=1 - candidate.n_kept / total)
        trace.append(step)
        if on_step:
            on_step(step)
        if not accepted:
            break
        current, current_metric = candidate, metric
    good, good_metric = current, current_metric
    if compat.magnitude_mask_before_last_step:
        # released code: however the loop ended, it saved the mask from before the last step it evaluated
        good, good_metric = before_last, before_last_metric
    return MagnitudeResult(weights=good, full_metric=full_metric, min_metric=limit, final_metric=good_metric,
                           trace=trace)


# ---- the threshold criterion: the paper's, or measured from chance -----------------------------------

CRITERIA = ("paper", "above_chance")
"""``paper``: T = fraction x full (the paper's "90% of the full model"). ``above_chance``:
T = chance + fraction x (full - chance), so the search keeps ``fraction`` of what the model learnt
beyond chance rather than of its raw score."""


class NotAboveChance(ValueError):
    """The full model does not score above chance, so ``above_chance`` has nothing to keep.

    The caller records the task as not learnt and runs no search (a search against a threshold at
    or below chance accepts a model that predicts one class, and prunes everything).
    """

    def __init__(self, full_metric: float, chance: float) -> None:
        super().__init__(f"the full model's {full_metric:.4f} is not above chance ({chance:.4f}): "
                         "nothing to keep; mark the task not learnt")
        self.full_metric, self.chance = full_metric, chance


def criterion_threshold(full_metric: float, fraction: float, criterion: str = "paper", chance: float = 0.0) -> float:
    """The metric a pruned model must keep, under the named criterion (see `CRITERIA`).

    ``chance`` is `bertlottery.metrics.chance_level` of the watched metric: the majority class's
    score for accuracy and F1, 0 for MCC and correlations. ``paper`` ignores it and is
    `threshold_for` (with its rule for a full metric at or below 0).

    Raises:
        NotAboveChance: ``above_chance`` with ``full_metric <= chance``.
        UserError: an unknown criterion.

    Example (MRPC in the minilm-glue study: 90% of 0.712 is below the majority class's 0.684):
        >>> round(criterion_threshold(0.712, 0.9, "paper", chance=0.684), 4)
        0.6408
        >>> round(criterion_threshold(0.712, 0.9, "above_chance", chance=0.684), 4)
        0.7092
    """
    if criterion == "paper":
        return threshold_for(full_metric, fraction)
    if criterion == "above_chance":
        if full_metric <= chance:
            raise NotAboveChance(full_metric, chance)
        return chance + fraction * (full_metric - chance)
    raise UserError(f"Unknown pruning criterion '{criterion}'.{did_you_mean(criterion, CRITERIA)} "
                    f"Known criteria: {', '.join(CRITERIA)}.")


__all__ += ["CRITERIA", "NotAboveChance", "criterion_threshold"]
