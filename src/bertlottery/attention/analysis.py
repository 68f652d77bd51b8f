"""Pattern-type proportions of super-survivor heads vs all heads, and their correlation (P§5.2, App. F).

Pure functions of patterns records (`patterns`) and a super-survivor head mask; nothing here loads a
model or writes a file.

Groups of heads (the paper's Figure 4 b/c and Figure 18):

- ``all``: every head of the full model (records made without a mask);
- ``super-survivors``: the surviving heads of the model *pruned by* the super-survivor mask (records
  made under a head mask), as the paper runs its classifier on the pruned model;
- ``super-survivors-unpruned``: the super-survivor heads of the full model (records without a mask,
  restricted to the mask's heads): the same heads without pruning around them.

Two levels: ``maps`` counts every (example, head) map's label; ``heads`` counts each head once, by its
majority label over the examples (`patterns.majority`). Fine-tuned records of several seeds are pooled.

Correlation: Pearson's r (``scipy.stats.pearsonr``) between "head is a super-survivor" and "head's label
is heterogeneous" over every head of every full-model record of a condition (pooled over seeds, one
observation per seed and head). The paper reports 0.015 (raw) and 0.025 (norm-based) for BERT-base.

Example:
    >>> table = proportion_rows([record_all, record_super], super_heads)        # doctest: +SKIP
    >>> correlations([record_all], super_heads)                                 # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .maps_format import PATTERNS

__all__ = ["GROUPS", "proportions", "group_of", "proportion_rows", "correlation", "correlations", "analyse"]

GROUPS = ("all", "super-survivors", "super-survivors-unpruned")


def proportions(labels: Iterable[str]) -> dict[str, float]:
    """Share of each pattern (every pattern present, 0 when absent); all zeros for no labels."""
    counts = Counter(labels)
    total = sum(counts.values())
    return {p: (counts[p] / total if total else 0.0) for p in PATTERNS}


def group_of(record: Mapping[str, Any]) -> str:
    """``super-survivors`` for a record made under a head mask, else ``all``."""
    return "super-survivors" if record.get("head_mask") is not None else "all"


def _labels_of(record: Mapping[str, Any], kind: str, level: str, heads: np.ndarray | None) -> list[str]:
    """The record's labels of ``kind`` at ``level``, restricted to ``heads`` (bool[L, H]) if given."""
    entry = record["kinds"].get(kind)
    if entry is None:
        return []
    out: list[str] = []
    for layer, row in enumerate(entry["head_labels"] if level == "heads" else entry["head_counts"]):
        for head, value in enumerate(row):
            if heads is not None and not heads[layer, head]:
                continue
            if level == "heads":
                if value is not None:
                    out.append(value)
            else:
                for pattern, n in value.items():
                    out += [pattern] * int(n)
    return out


def proportion_rows(records: Sequence[Mapping[str, Any]], super_heads: np.ndarray | None = None,
                    kinds: Sequence[str] = ("raw", "norm")) -> list[dict[str, Any]]:
    """Long-format rows: task, weights, group, kind, level, pattern, proportion, n (labels counted),
    n_records. Records of one (task, weights, group) are pooled."""
    pools: dict[tuple[str, str, str], list[tuple[Mapping[str, Any], np.ndarray | None]]] = {}
    for record in records:
        group = group_of(record)
        pools.setdefault((record["task"], record["weights"], group), []).append((record, None))
        if group == "all" and super_heads is not None:
            pools.setdefault((record["task"], record["weights"], "super-survivors-unpruned"), []).append(
                (record, np.asarray(super_heads, dtype=bool)))
    rows = []
    for (task, weights, group), members in sorted(pools.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                 GROUPS.index(kv[0][2]))):
        for kind in kinds:
            for level in ("maps", "heads"):
                labels = [label for record, heads in members for label in _labels_of(record, kind, level, heads)]
                if not labels:
                    continue
                shares = proportions(labels)
                for pattern in PATTERNS:
                    rows.append({"task": task, "weights": weights, "group": group, "kind": kind, "level": level,
                                 "pattern": pattern, "proportion": shares[pattern], "n": len(labels),
                                 "n_records": len(members)})
    return rows


def correlation(is_super: Sequence[bool], is_heterogeneous: Sequence[bool]) -> dict[str, Any]:
    """Pearson's r and its p-value (scipy); r is None when either variable is constant."""
    from scipy.stats import pearsonr

    x = np.asarray(is_super, dtype=float)
    y = np.asarray(is_heterogeneous, dtype=float)
    out: dict[str, Any] = {"n": int(len(x)), "n_super": int(x.sum()), "n_heterogeneous": int(y.sum()),
                           "r": None, "p": None}
    if len(x) >= 2 and x.std() > 0 and y.std() > 0:
        result = pearsonr(x, y)
        out["r"], out["p"] = float(result.statistic), float(result.pvalue)
    return out


def correlations(records: Sequence[Mapping[str, Any]], super_heads: np.ndarray,
                 kinds: Sequence[str] = ("raw", "norm")) -> list[dict[str, Any]]:
    """Per task, weights and kind: r between super-survivor status and a heterogeneous head label, over
    the full-model records' heads (pooled over seeds), plus one row per weights and kind pooled over tasks
    (task ``"all"``) when there are several tasks."""
    super_heads = np.asarray(super_heads, dtype=bool) if not isinstance(super_heads, dict) else super_heads
    observations: dict[tuple[str, str, str], tuple[list[bool], list[bool]]] = {}
    for record in records:
        if group_of(record) != "all":
            continue
        mask = super_heads[record["task"]] if isinstance(super_heads, dict) else super_heads
        for kind in kinds:
            entry = record["kinds"].get(kind)
            if entry is None:
                continue
            for key in ((record["task"], record["weights"], kind), ("all", record["weights"], kind)):
                xs, ys = observations.setdefault(key, ([], []))
                for layer, row in enumerate(entry["head_labels"]):
                    for head, label in enumerate(row):
                        if label is not None:
                            xs.append(bool(mask[layer, head]))
                            ys.append(label == "heterogeneous")
    tasks = {task for task, _, _ in observations if task != "all"}
    rows = []
    for (task, weights, kind), (xs, ys) in sorted(observations.items()):
        if task == "all" and len(tasks) < 2:
            continue
        rows.append({"task": task, "weights": weights, "kind": kind, **correlation(xs, ys)})
    return rows


def analyse(records: Sequence[Mapping[str, Any]], super_heads: np.ndarray | Mapping[str, np.ndarray],
            kinds: Sequence[str] = ("raw", "norm")) -> dict[str, Any]:
    """Proportions and correlations of one task's (or several tasks') records.

    ``super_heads``: bool[L, H] super-survivor heads, or ``{task: bool[L, H]}`` for several tasks.
    """
    per_task = super_heads if isinstance(super_heads, Mapping) else None
    rows = []
    if per_task is None:
        rows = proportion_rows(records, super_heads, kinds)
    else:
        for task, heads in per_task.items():
            rows += proportion_rows([r for r in records if r["task"] == task], heads, kinds)
    grids = per_task if per_task is not None else {r["task"]: super_heads for r in records}
    return {
        "proportions": rows,
        "correlations": correlations(records, {t: np.asarray(h, dtype=bool) for t, h in grids.items()}, kinds),
        "super_survivors": {t: np.asarray(h, dtype=bool).tolist() for t, h in grids.items()},
        "records": [{k: r.get(k) for k in ("task", "model", "weights", "mask", "method", "n_examples")}
                    | {"group": group_of(r)} for r in records],
    }
