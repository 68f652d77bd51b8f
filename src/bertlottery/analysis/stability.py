"""How stable the good masks are across seeds, per task, and how tasks' masks overlap (Prasanna et
al. 2020, section 5.1 and 5.3, Figures 1, 5 and 15, appendices A and G).

`stability_summary` turns a `MaskSet` into a JSON-ready dict; the per-task and cross-task parts are
pure functions of ``bool[seed, ...]`` keep arrays (`structured_task`, `magnitude_task`,
`cross_task`) built on `bertlottery.stats`. Reading masks from disk is `bertlottery.analysis.masksets`.

Example:
    >>> keep = np.array([[[1, 0], [1, 1]], [[1, 1], [0, 1]]], dtype=bool)   # 2 seeds of 2 x 2 heads  # doctest: +SKIP
    >>> structured_task(keep, None, [1, 2], None, 0.05)["heads"]["kappa"]                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from .masksets import KINDS, MaskSet, keep_arrays

if TYPE_CHECKING:
    import numpy as np

    from ..models import Layout

__all__ = ["stability_summary", "structured_task", "magnitude_task", "cross_task", "N_PERMUTATIONS"]

N_PERMUTATIONS = 2000  # draws of kappa's permutation null and resamples of its bootstrap (both seeded)


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    from .. import stats

    mean, std = stats.survival_mean_std(values)
    return {"per_seed": list(values), "mean": float(mean), "std": float(std)}


def _kind_summary(keep: np.ndarray, seeds: list[int], alpha: float, n_permutations: int) -> dict[str, Any]:
    from .. import stats

    kappa = stats.fleiss_kappa(keep)
    mean, std = stats.survival_mean_std(keep)
    return {
        "shape": list(keep.shape[1:]),
        "n_elements": int(keep[0].size),
        "kept_per_seed": [int(k.sum()) for k in keep],
        "kappa": kappa.value,
        "kappa_reason": kappa.reason,
        # a kappa read against what masks of these sizes allow: its ceiling, what random masks of the
        # same sizes reach, and (five seeds or more) how much it moves when the seeds are resampled
        "kappa_max": stats.max_fleiss_kappa(keep).value,
        "kappa_null": stats.kappa_null(keep, n_permutations=n_permutations).to_dict(),
        "kappa_bootstrap": stats.kappa_bootstrap(keep, n_resamples=n_permutations).to_dict(),
        "cochran_q": stats.cochran_q(keep).to_dict(),
        "pairwise": stats.pairwise_cochran_q(keep, alpha).to_dict(labels=seeds),
        "survival_mean": mean,
        "survival_std": std,
        "super_survivors": int(stats.super_survivors(keep).sum()),
    }


def structured_task(heads: np.ndarray | None, mlps: np.ndarray | None, seeds: list[int], layout: Layout | None,
                    alpha: float, stage_super: Mapping[str, np.ndarray | None] | None = None,
                    n_permutations: int = N_PERMUTATIONS) -> dict[str, Any]:
    """One task's s-pruning masks: ``heads: bool[seed, layer, head]`` and ``mlps: bool[seed, layer]``
    (``None``: the masks do not hold that kind), seeds in the arrays' order. ``layout``: the model's,
    for weight fractions (``None``: not computed). ``stage_super``: the super-survivor masks a run's
    stage wrote (``{"heads": bool[layer, head] | None, "mlps": ...}``), checked against the seeds'.
    ``n_permutations``: draws of the kappa's permutation null and resamples of its bootstrap."""
    from .. import stats

    arrays = {"heads": heads, "mlps": mlps}
    entry: dict[str, Any] = {"seeds": seeds}
    for kind, keep in arrays.items():
        entry[kind] = _kind_summary(keep, seeds, alpha, n_permutations) if keep is not None else None
    supers = {kind: stats.super_survivors(keep) if keep is not None else None for kind, keep in arrays.items()}
    n_seeds = len(seeds)
    entry["body_fraction_kept"] = _mean_std([
        stats.body_fraction(layout, heads[i] if heads is not None else None, mlps[i] if mlps is not None else None)
        for i in range(n_seeds)]) if layout else None
    matches = None
    if stage_super is not None:
        matches = all(stage_super.get(kind) is None or supers[kind] is None
                      or bool((stage_super[kind] == supers[kind]).all()) for kind in KINDS)
    entry["super_survivors"] = {
        "heads": int(supers["heads"].sum()) if supers["heads"] is not None else None,
        "mlps": int(supers["mlps"].sum()) if supers["mlps"] is not None else None,
        "body_fraction": stats.body_fraction(layout, supers["heads"], supers["mlps"]) if layout else None,
        "matches_stage": matches,
    }
    return entry


def _body_fraction(layout: Layout, keep: Mapping[str, np.ndarray]) -> float:
    # counted as `bertlottery.masks.body_fraction_kept` counts a weight mask: weight by weight
    pruned = sum(int(a.size) - int(a.sum()) for a in keep.values())
    return 1.0 - pruned / layout.body_params


def magnitude_task(weights: Sequence[Mapping[str, np.ndarray]], seeds: list[int], num_heads: int,
                   layout: Layout | None, task: str = "") -> dict[str, Any]:
    """One task's m-pruning masks: per seed, ``{parameter name: bool array}`` of the weights kept.
    Survival of a head or MLP is the fraction of its weights kept (Figure 1a)."""
    import numpy as np

    from .. import stats

    names = list(weights[0])
    if any(set(w) != set(names) for w in weights):
        raise UserError(f"{task}: the seeds' weight masks cover different tensors; were they made by the same study?")
    per_seed = [stats.weight_survival_by_component(w, num_heads) for w in weights]
    head_mean, head_std = stats.survival_mean_std([h for h, _ in per_seed])
    mlp_mean, mlp_std = stats.survival_mean_std([m for _, m in per_seed])
    always = {n: reduce(np.logical_and, (w[n] for w in weights)) for n in names}
    n_always = int(sum(a.sum() for a in always.values()))
    total = sum(int(a.size) for a in weights[0].values())
    kept = [sum(int(a.sum()) for a in w.values()) for w in weights]
    return {
        "seeds": list(seeds),
        "weights": {"n_weights": total, "kept_per_seed": kept,
                    "fraction_kept": _mean_std([k / total for k in kept]),
                    "super_survivors": n_always, "super_survivor_fraction": n_always / total},
        "heads": {"shape": list(head_mean.shape), "survival_mean": head_mean, "survival_std": head_std},
        "mlps": {"shape": list(mlp_mean.shape), "survival_mean": mlp_mean, "survival_std": mlp_std},
        "body_fraction_kept": _mean_std([_body_fraction(layout, w) for w in weights]) if layout else None,
        "super_survivors": {"body_fraction": _body_fraction(layout, always) if layout else None},
    }


def cross_task(keeps: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """``{kind: {task: bool[seed, ...]}}`` -> per kind with two tasks or more: the overlap of the
    tasks' good masks per seed position (Figure 5, appendix G) and in how many tasks each element
    survives (Figure 15)."""
    from .. import stats

    out = {}
    for kind, by_task in keeps.items():
        if len(by_task) < 2:
            continue
        overlap = stats.task_overlap(by_task)
        mean, std = stats.tasks_survived(by_task)
        out[kind] = {
            "tasks": overlap.tasks, "n_seeds": overlap.n_seeds,
            "overlap_mean": overlap.mean, "overlap_std": overlap.std,
            "super_overlap": stats.task_overlap(by_task, super_survivors=True).mean,
            "tasks_survived_mean": mean, "tasks_survived_std": std,
        }
    return out


def _structured_entry(mask_set: MaskSet, task: str, alpha: float, n_permutations: int) -> dict[str, Any]:
    arrays = {kind: keep_arrays(mask_set, kind, tasks=[task]).get(task) for kind in KINDS}
    stage_super = None
    if task in mask_set.super_survivors:
        stage = mask_set.super_survivors[task]
        stage_super = {kind: getattr(stage, kind).keep.numpy() if getattr(stage, kind) is not None else None
                       for kind in KINDS}
    return structured_task(arrays["heads"], arrays["mlps"], mask_set.seeds(task), mask_set.layout, alpha, stage_super,
                           n_permutations)


def _magnitude_entry(mask_set: MaskSet, task: str) -> dict[str, Any]:
    if mask_set.num_heads is None:
        raise UserError(f"{mask_set.path}: heads per layer unknown, so weights cannot be split into heads; "
                        "put the model's config.json next to the masks.")
    weights = [{n: t.numpy() for n, t in m.weights.keep.items()} for m in mask_set.masks[task].values()]
    return magnitude_task(weights, mask_set.seeds(task), mask_set.num_heads, mask_set.layout, task)


def stability_summary(mask_set: MaskSet, *, alpha: float = 0.05, n_permutations: int = N_PERMUTATIONS) -> dict[str, Any]:
    """Per task and component kind, how stable the good masks are across seeds, and how tasks'
    masks overlap. JSON-ready: numbers, lists and ``None`` (for undefined values), no NaN.

    Structured masks, per task (``summary["tasks"][task]``)::

        seeds: [int]
        heads, mlps: {                       # None when the masks do not hold that kind
            shape, n_elements, kept_per_seed: [int],
            kappa: float|None, kappa_reason: str|None,           # Fleiss' kappa (seeds = raters)
            kappa_max: float|None,                               # the most masks of these sizes can reach
            kappa_null: {mean, low, high, n_permutations, confidence, reason},  # random masks of these sizes
            kappa_bootstrap: {value, low, high, n_resamples, confidence, reason},  # over seeds (5 or more)
            cochran_q: {statistic, pvalue, df, reason},          # all seeds: equal keep rates (sizes)
            pairwise: {alpha, n_pairs, n_differ, n_identical, differ_fraction,
                       pairs: [{seeds: [a, b], statistic, pvalue, df, reason}]},
            survival_mean, survival_std: [[float]] (layers x heads) or [float] (layers),
            super_survivors: int}
        body_fraction_kept: {per_seed, mean, std} | None          # None when the model size is unknown
        super_survivors: {heads, mlps, body_fraction, matches_stage}

    plus ``summary["cross_task"][kind]`` (two tasks or more): ``tasks``, ``n_seeds``,
    ``overlap_mean``/``overlap_std`` (T x T, Fig. 19a/b), ``super_overlap`` (Fig. 19c/d),
    ``tasks_survived_mean``/``_std`` (Fig. 15).

    Magnitude masks, per task: ``seeds``; ``weights: {n_weights, kept_per_seed, fraction_kept,
    super_survivors, super_survivor_fraction}``; ``heads``/``mlps``: ``{shape, survival_mean,
    survival_std}`` where survival is the fraction of the component's weights kept (Fig. 1a);
    ``body_fraction_kept``; ``super_survivors: {body_fraction}``.
    """
    from .. import stats

    if not 0 < alpha < 1:
        raise UserError(f"alpha must lie between 0 and 1, got {alpha}.")
    if n_permutations < 1:
        raise UserError(f"the number of permutations must be at least 1, got {n_permutations}.")
    tasks = {}
    for task in mask_set.tasks:
        tasks[task] = (_structured_entry(mask_set, task, alpha, n_permutations) if mask_set.method == "structured"
                       else _magnitude_entry(mask_set, task))
    notes = list(mask_set.notes)
    cross: dict[str, Any] = {}
    if mask_set.method == "structured":
        if len({tuple(mask_set.seeds(t)) for t in mask_set.tasks}) > 1:
            notes.append("tasks have different seeds: overlaps pair seeds by position in ascending order")
        cross = cross_task({kind: keep_arrays(mask_set, kind) for kind in KINDS})
    layout = mask_set.layout
    return stats.jsonable({
        "path": str(mask_set.path), "source": mask_set.source, "method": mask_set.method, "alpha": alpha,
        "layout": {k: getattr(layout, k) for k in ("family", "num_layers", "num_heads", "hidden_size",
                                                    "intermediate_size", "body_params")} if layout else None,
        "notes": notes, "tasks": tasks, "cross_task": cross,
    })
