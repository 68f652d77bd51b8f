"""Importance against ablation: does the s-pruning search remove what costs least?

One row per fine-tuned model with an ``ablation`` stage (`bertlottery.steps.ablation`): per unit kind
(MLPs, heads), the rank correlation between the importance the search started from and what gating
each unit off alone costs on dev; the least important unit's cost, and the costliest unit with its rank
by importance. The table's CSV holds every unit.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ... import runs
from ...analysis.rundir import json_or_none
from ..context import Context, join, missing_stages
from ..figures import ablation_ranks
from ..html import figure_html, paragraph, table_html
from ..section import Section
from ..tables import Table, metric_name, task_order

__all__ = ["ablation_records", "ablation_table", "ablation_section"]

TITLE = "Importance against ablation: does the search remove what costs least?"
UNIT_NAMES = {"mlps": "MLPs", "heads": "heads"}


def ablation_records(ctx: Context) -> list[dict[str, Any]]:
    """The finished ablation stages' records (their ``ablation.json``), with task and seed, in the paper's
    task order."""
    records = []
    for stage in ctx.run.stages_of("ablation"):
        record = json_or_none(stage.folder / runs.ABLATION_FILE)
        if isinstance(record, dict) and isinstance(record.get("units"), dict):
            records.append({**record, "task": stage.task, "seed": stage.keys.get("seed")})
    order = task_order([r["task"] for r in records])
    return sorted(records, key=lambda r: (order.index(r["task"]), str(r["seed"])))


def _unit_name(unit: str, row: dict[str, Any]) -> str:
    return f"MLP {row['layer']}" if unit == "mlps" else f"head {row['layer']}.{row['head']}"


def _unit_cells(unit: str, rows: list[dict[str, Any]], correlation: dict[str, Any], metric: str) -> dict[str, str]:
    """The cells of one unit kind: r (p), the least important unit's cost, the costliest unit."""
    name = UNIT_NAMES[unit]
    r, p = correlation.get("r"), correlation.get("p")
    cells = {(name, "rank correlation (p)"): "–" if r is None else f"{r:+.2f} ({p:.2g})"}
    ranked = sorted(rows, key=lambda row: row["importance"])
    if ranked:
        least = ranked[0]
        costliest = max(rows, key=lambda row: row["cost"])
        rank = ranked.index(costliest) + 1
        cells[(name, "least important: its cost")] = f"{_unit_name(unit, least)}: {least['cost']:+.3f}"
        cells[(name, "costliest: cost, importance rank")] = (
            f"{_unit_name(unit, costliest)}: {costliest['cost']:+.3f}, {_rank_text(rank, len(rows))}")
    return cells


def _rank_text(rank: int, n: int) -> str:
    """``1 -> "the least important of 6"``, ``6 -> "the most important of 6"``, ``3 -> "the 3rd least ..."``."""
    if rank == n:
        return f"the most important of {n}"
    if rank == 1:
        return f"the least important of {n}"
    suffix = "th" if 10 <= rank % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(rank % 10, "th")
    return f"the {rank}{suffix} least important of {n}"


def ablation_table(records: list[dict[str, Any]]) -> Table:
    """One row per fine-tuned model, grouped by task; the frame (the CSV) has one row per unit."""
    display, labels, groups, frame = [], [], [], []
    for record in records:
        metric = record.get("metric")
        row: dict[tuple[str, str], str] = {("", "full model"): f"{record['full']:.3f}"}
        for unit in (u for u in UNIT_NAMES if u in record["units"]):
            rows = record["units"][unit]
            row.update(_unit_cells(unit, rows, record.get("spearman", {}).get(unit, {}), metric))
            ranks = {id(r): i + 1 for i, r in enumerate(sorted(rows, key=lambda r: r["importance"]))}
            frame += [{"task": record["task"], "seed": record["seed"], "metric": metric, "full": record["full"],
                       "unit": unit, "layer": r["layer"], "head": r.get("head"), "importance": r["importance"],
                       "importance_rank": ranks[id(r)], "score_without": r["score"], "cost": r["cost"]}
                      for r in rows]
        display.append(row)
        labels.append(f"seed {record['seed']}")
        groups.append(f"{record['task']} ({metric_name(metric)})")
    shown = pd.DataFrame(display, index=labels)
    shown.columns = pd.MultiIndex.from_tuples(shown.columns)
    return Table("ablation", "Importance against ablation",
                 "Per fine-tuned model: each unit gated off alone (every other unit kept) and scored on dev; its "
                 "cost is the full model's score less that score. The rank correlation (Spearman) is between the "
                 "importance the s-pruning search started from (its first iteration) and that cost: near 1, the "
                 "search removes first what costs least; near 0 or below, its ranking of these units is no better "
                 "than chance. The CSV has every unit.",
                 pd.DataFrame(frame), shown, groups,
                 notes=["A unit's cost alone is not the cost of removing it beside others (the search removes "
                        "several at a step, and costs interact); it is what the first-order importance "
                        "estimates. A negative cost: the model scores higher without the unit."])


def ablation_section(ctx: Context) -> Section:
    if not any(s.kind == "ablation" for s in ctx.run.stages):
        return Section(TITLE, paragraph("This run measured no unit's ablation cost (add an ablation: section to the "
                                        "config to compare the importance with it)."), toc=False)  # not run: no entry
    missing = missing_stages(ctx, lambda s: s.kind == "ablation", "ablation")
    records = ablation_records(ctx)
    if not records:
        return Section(TITLE, paragraph("No finished ablation stage yet."), missing)
    lines = []
    for record in records:
        for unit, correlation in (record.get("spearman") or {}).items():
            r = correlation.get("r")
            if r is not None and not math.isnan(r) and r <= 0:
                lines.append(f"{record['task']} seed {record['seed']}")
    body = [paragraph("The s-pruning search removes the units of lowest importance, a first-order estimate of what "
                      "removing each costs. Here each unit's cost is measured: the fine-tuned model with that unit "
                      "gated off alone, scored on the dev split the search is judged on.")]
    if lines:
        body.append(paragraph(f"The importance ranks some units no better than chance or inversely (a rank "
                              f"correlation at or below 0) in: {', '.join(dict.fromkeys(lines))}. There, which units "
                              "the search removes first, and so which subnetwork it calls good, is not what costs "
                              "least to remove."))
    table = ablation_table(records)
    body.append(table_html(table, ctx.out_dir))
    for unit in (u for u in UNIT_NAMES if u in set(table.frame["unit"])):
        body.append(figure_html(ablation_ranks(table.frame, unit=unit), ctx.out_dir, f"ablation_{unit}",
                                f"Each {UNIT_NAMES[unit][:-1]}'s cost when gated off alone against its rank by the "
                                "importance the s-pruning search started from, one line per seed: lines that rise "
                                "from left to right mean the search removes first what costs least.",
                                data=table.frame[table.frame["unit"] == unit]))
    return Section(TITLE, join(body), missing)
