"""The Fisher search against s-pruning at equal cost (Kwon et al. 2022 beside Prasanna et al. 2020):
the dev metric of both methods' good, random and bad masks, pruned and re-fine-tuned, and the Fisher
mask with its tuned scales (its own, retraining-free result); how many heads each keeps and how much
the two good masks of one seed overlap (Jaccard index of the kept heads); how stable each method's
choice is across seeds (Fleiss' kappa, as in section 5.1 of Prasanna et al.).

The tables are pure functions of the results cells and of per-seed records (`metric_table`,
`agreement_table`); `fisher_section` reads the prune stages' folders for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import runs
from ..context import Context, join, missing_stages
from ..html import paragraph, table_html
from ..section import Section

__all__ = ["SeedMasks", "fisher_section", "metric_table", "agreement_table", "jaccard"]

TITLE = "The Fisher search against s-pruning at equal cost"
METHODS = {"structured": "s-pruning", "fisher": "Fisher search"}
ROWS = [(method, subnetwork, mode) for method in METHODS for mode in ("pruned", "retrained")
        for subnetwork in ("good", "random", "bad")]


@dataclass
class SeedMasks:
    """What one seed's prune stages found: ``heads: bool[layer, head]`` of each method's good mask, the
    Fisher mask's ``neurons: bool[layer, unit]`` and its record (`bertlottery.steps.prune.prune_fisher_run`'s
    metrics.json: cost, budget, tuned metrics)."""

    heads: dict[str, np.ndarray]
    neurons: np.ndarray | None = None
    fisher: dict[str, Any] | None = None


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a and b| / |a or b| of two bool masks (NaN when both keep nothing).

    >>> jaccard(np.array([1, 1, 0], bool), np.array([1, 0, 1], bool))
    0.3333333333333333
    """
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else math.nan


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def metric_table(cells, per_task: Mapping[str, Mapping[int, SeedMasks]], *, metrics: Mapping[str, str],
                 expected_n: int | None = None):
    """Each task's main dev metric (mean ± std over seeds) of both methods' good, random and bad masks,
    pruned and re-fine-tuned, and of the Fisher mask with its tuned scales; the cost each good mask
    keeps (fraction of the full model's)."""
    import pandas as pd

    from ..tables import Table, format_cell, task_order

    tasks = task_order(list(per_task) + (list(cells["task"]) if not cells.empty else []))
    frame_rows, display_rows, labels, groups = [], [], [], []

    def add(group: str, label: str, values: dict[str, tuple[float, float, int]], percent: bool = False) -> None:
        record: dict[str, Any] = {"group": group, "row": label}
        shown = {}
        for task in tasks:
            mean, std, n = values.get(task, (math.nan, math.nan, 0))
            record.update({f"{task} mean": mean, f"{task} std": std, f"{task} n": n})
            scale = 100 if percent else 1
            shown[task] = ("–" if math.isnan(mean) else
                           format_cell(scale * mean, scale * std if not math.isnan(std) else None, n, expected_n,
                                       digits=1 if percent else 3) + ("%" if percent else ""))
        frame_rows.append(record)
        display_rows.append(shown)
        labels.append(label)
        groups.append(group)

    for method, subnetwork, mode in ROWS:
        values = {}
        for task in tasks:
            cell = cells[(cells["task"] == task) & (cells["method"] == method) & (cells["subnetwork"] == subnetwork)
                         & (cells["mode"] == mode)] if not cells.empty else cells
            if not cell.empty:
                std = cell["std"].iloc[0]
                values[task] = (float(cell["mean"].iloc[0]), math.nan if pd.isna(std) else float(std),
                                int(cell["n"].iloc[0]))
        if values:
            add(METHODS[method], f"{subnetwork} {mode}", values)
    tuned, cost, budget = {}, {}, {}
    for task, seeds in per_task.items():
        records = [s.fisher for s in seeds.values() if s.fisher is not None]
        metric = metrics.get(task)
        split = next(iter(records[0]["tuned"]), None) if records else None
        if metric and split:
            values = [r["tuned"][split]["metrics"].get(metric, math.nan) for r in records]
            tuned[task] = (*_mean_std(values), len(records))
        if records:
            cost[task] = (*_mean_std([r["cost"] / r["full_cost"] for r in records]), len(records))
            budget[task] = (*_mean_std([r["budget"] / r["full_cost"] for r in records]), len(records))
    if tuned:
        add(METHODS["fisher"], "good, tuned scales, no retraining", tuned)
    if budget:
        add("Cost (of the full model's)", "budget", budget, percent=True)
        add("Cost (of the full model's)", "Fisher good mask", cost, percent=True)
    return Table("fisher_metrics", "Dev metric at equal cost: s-pruning and the Fisher search",
                 "Each task's main dev metric, mean ± std over seeds. Pruned: the mask applied to the fine-tuned "
                 "model (binary gates); re-fine-tuned: from the pre-trained weights under the mask. The Fisher "
                 "search's budget is the cost of the s-pruning good mask of the same seed unless the config "
                 "sets one; its random and bad masks keep as many heads and neurons per layer as its good one, "
                 "bad the lowest-scored by the Fisher estimate. Cost: multiply-accumulates per token (or "
                 "parameters, as configured).",
                 pd.DataFrame(frame_rows), pd.DataFrame(display_rows, columns=tasks, index=labels), groups)


def agreement_table(per_task: Mapping[str, Mapping[int, SeedMasks]]):
    """Per task: heads each method's good mask keeps, the Jaccard index of the two methods' kept heads
    (per seed, and their mean), and Fleiss' kappa of each method's kept heads across seeds (and of the
    Fisher search's kept neurons)."""
    import pandas as pd

    from ... import stats
    from ..tables import Table, task_order

    def kappa(arrays: list[np.ndarray]) -> tuple[float, str]:
        """The value and how it is shown (with the reason where it is undefined)."""
        if len(arrays) < 2:
            return math.nan, "– (one seed)"
        result = stats.fleiss_kappa(np.stack(arrays))
        return result.value, f"{result.value:.3f}" if not math.isnan(result.value) else f"– ({result.reason})"

    frame_rows, display_rows = [], []
    tasks = task_order(per_task)
    for task in tasks:
        seeds = per_task[task]
        both = {seed: s for seed, s in seeds.items() if set(METHODS) <= set(s.heads)}
        per_seed = {seed: jaccard(s.heads["structured"], s.heads["fisher"]) for seed, s in both.items()}
        mean, std = _mean_std(list(per_seed.values()))
        kept = {m: [int(s.heads[m].sum()) for s in seeds.values() if m in s.heads] for m in METHODS}
        kappas = {m: kappa([s.heads[m] for s in seeds.values() if m in s.heads]) for m in METHODS}
        neurons = kappa([s.neurons for s in seeds.values() if s.neurons is not None])
        frame_rows.append({"task": task, "jaccard_per_seed": per_seed, "jaccard_mean": mean, "jaccard_std": std,
                           **{f"{m} heads kept": kept[m] for m in METHODS},
                           **{f"{m} heads kappa": kappas[m][0] for m in METHODS}, "fisher neurons kappa": neurons[0]})
        display_rows.append({
            "heads kept, s-pruning": ", ".join(map(str, kept["structured"])) or "–",
            "heads kept, Fisher": ", ".join(map(str, kept["fisher"])) or "–",
            "Jaccard per seed": ", ".join(f"{seed}: " + ("–" if math.isnan(v) else f"{v:.2f}")
                                          for seed, v in per_seed.items()) or "–",
            "Jaccard mean": "–" if math.isnan(mean) else f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}"),
            "kappa heads, s-pruning": kappas["structured"][1],
            "kappa heads, Fisher": kappas["fisher"][1],
            "kappa neurons, Fisher": neurons[1],
        })
    return Table("fisher_agreement", "Kept heads: overlap of the two methods and stability across seeds",
                 "Heads kept by each seed's good mask; the Jaccard index of the heads the two methods keep for "
                 "the same seed (1: the same heads); Fleiss' kappa of each method's kept heads across seeds "
                 "(1: every seed keeps the same heads, 0: chance agreement), and of the Fisher search's kept "
                 "MLP neurons.",
                 pd.DataFrame(frame_rows), pd.DataFrame(display_rows, index=tasks))


def _read_seeds(ctx: Context) -> tuple[dict[str, dict[int, SeedMasks]], list[str]]:
    """Each task's and seed's good masks of both methods, from the finished prune stages (the newest
    of a task, seed and method when settings changed)."""
    from safetensors.numpy import load_file

    from ...masks import load_masks

    newest: dict[tuple[str, int, str], Any] = {}
    for stage in ctx.run.stages_of("prune"):
        method, seed = stage.keys.get("method"), stage.keys.get("seed")
        if method not in METHODS or seed is None or not (stage.folder / runs.MASK_FILE).is_file():
            continue
        key = (stage.task, int(seed), method)
        mtime = (stage.folder / runs.STAGE_FILE).stat().st_mtime if (stage.folder / runs.STAGE_FILE).exists() else 0
        if key not in newest or mtime >= newest[key][0]:
            newest[key] = (mtime, stage)
    per_task: dict[str, dict[int, SeedMasks]] = {}
    problems = []
    for (task, seed, method), (_, stage) in sorted(newest.items()):
        entry = per_task.setdefault(task, {}).setdefault(seed, SeedMasks(heads={}))
        masks = load_masks(stage.folder / runs.MASK_FILE)
        if masks.heads is None:
            problems.append(f"{task} seed {seed}: the {method} good mask has no heads (mode mlps): no head overlap")
            continue
        entry.heads[method] = masks.heads.keep.numpy()
        if method == "fisher":
            entry.fisher = runs.read_json(stage.folder / runs.METRICS_FILE)
            entry.neurons = load_file(str(stage.folder / runs.FISHER_FILE))["neurons_kept"].astype(bool)
    per_task = {task: dict(sorted(seeds.items())) for task, seeds in per_task.items()}
    return per_task, problems


def fisher_section(ctx: Context) -> Section:
    configured = "fisher" in ctx.config_list("methods")
    has_stages = any(s.kind == "prune" and s.keys.get("method") == "fisher" for s in ctx.run.stages)
    if not configured and not has_stages:
        return Section(TITLE, paragraph("This run has no Fisher search (add fisher to the config's methods to "
                                        "compare it with s-pruning at equal cost)."), toc=False)  # not run: no entry
    missing = missing_stages(ctx, lambda s: s.keys.get("method") in METHODS and s.kind in
                             ("prune", "subnetworks", "evaluate", "retrain"), "s-pruning and Fisher")
    per_task, problems = _read_seeds(ctx)
    missing += problems
    if not any(s.fisher is not None for seeds in per_task.values() for s in seeds.values()):
        return Section(TITLE, paragraph("No Fisher search has finished yet."), missing or ["no Fisher masks yet"])
    body = [paragraph("The retraining-free Fisher search (Kwon et al. 2022: a diagonal Fisher estimate of head "
                      "and MLP-neuron gates, mask rearrangement, least-squares tuning of the kept units; see "
                      "docs/fisher.md) beside s-pruning, the Fisher mask held to the s-pruning good mask's cost."),
            table_html(metric_table(ctx.cells, per_task, metrics=ctx.metrics, expected_n=ctx.expected_n), ctx.out_dir),
            table_html(agreement_table(per_task), ctx.out_dir)]
    return Section(TITLE, join(body), missing)
