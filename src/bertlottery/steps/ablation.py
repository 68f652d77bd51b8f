"""Does the importance score rank heads and MLPs by what removing them costs? (``ablation`` stages.)

The s-pruning search removes the heads and MLPs of lowest importance: a first-order estimate of what
gating each one off costs (`bertlottery.importance`). This step measures the cost itself on the
fine-tuned model: each unit gated off alone, every other unit kept, scored on the task's main dev split
(the split the search is judged on), and compares it with the importance the search started from
(its first iteration, read from the structured prune stage's ``trace.json``, so exactly the scores it
used). A rank correlation near 1 says the search removes what costs least; near 0 or below, that its
ranking is no better than chance for those units (`docs/algorithms.md`, "Importance against ablation").

An ``ablation`` stage writes its record as ``ablation.json``::

    {"task", "metric", "split", "full": the full model's dev score, "precision", "importance_from": the prune
     folder, "search_full": the full score its search recorded (the same model: the same score),
     "units": {"mlps": [{"layer", "importance", "score", "cost"}], "heads": [{"layer", "head", ...}]},
     "spearman": {"mlps": {"r", "p", "n"}, ...}}

``cost`` is the full score less the score without that unit (positive: removing it hurts).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import runs
from ..config import ABLATION_UNITS as UNITS
from ..errors import UserError
from ..masking import gated
from ..masks import HeadMask, MlpMask
from .prune import load_finetuned, primary_metric, run_precision

__all__ = ["UNITS", "ablation_run", "ablation_record", "rank_correlation"]


def rank_correlation(importance: list[float], cost: list[float]) -> dict[str, Any]:
    """Spearman's rho between importance and ablation cost, with its two-sided p-value and the number
    of units; r and p are None where it is undefined (fewer than 3 units, or either side constant)."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(importance, cost) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return {"r": None, "p": None, "n": len(pairs)}
    result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return {"r": float(result.statistic), "p": float(result.pvalue), "n": len(pairs)}


def ablation_record(model: torch.nn.Module, score, importance: dict[str, np.ndarray],
                    units: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Each unit of ``units`` gated off alone and scored by ``score()`` (the model as gated now), beside
    its ``importance`` (``{"heads": [layer, head], "mlps": [layer]}``)."""
    full = float(score())
    record: dict[str, Any] = {"full": full, "units": {}, "spearman": {}}
    for unit in units:
        scores = np.asarray(importance[unit], dtype=float)
        rows = []
        for index in np.ndindex(*scores.shape):
            keep = torch.ones(scores.shape, dtype=torch.bool)
            keep[index] = False
            with gated(model, **({"mlps": MlpMask(keep)} if unit == "mlps" else {"heads": HeadMask(keep)})):
                without = float(score())
            where = {"layer": int(index[0])} if unit == "mlps" else {"layer": int(index[0]), "head": int(index[1])}
            rows.append({**where, "importance": float(scores[index]), "score": without, "cost": full - without})
        record["units"][unit] = rows
        record["spearman"][unit] = rank_correlation([r["importance"] for r in rows], [r["cost"] for r in rows])
    return record


def ablation_run(finetune_dir: str | os.PathLike, prune_dir: str | os.PathLike, *, glue_dir: Path | None,
                 units: tuple[str, ...] | list[str] = ("mlps",)) -> dict[str, Any]:
    """Ablate each unit of a fine-tuned run alone on dev; compare with the importance its structured
    search started from (``prune_dir``'s trace). Returns the record ``ablation.json`` holds."""
    from ..stats import importance_at

    unknown = [u for u in units if u not in UNITS]
    if unknown:
        raise UserError(f"ablation units {unknown} are not known; use {' or '.join(UNITS)}.")
    trace_file = Path(prune_dir) / runs.TRACE_FILE
    if not trace_file.is_file():
        raise UserError(f"{prune_dir} has no {runs.TRACE_FILE}; give the folder of a structured (s-pruning) prune "
                        "step of this run.")
    trace = runs.read_json(trace_file)
    first = importance_at(trace, [1])[0]  # the full model's scores: what the search's first step ranked by
    model, data, config = load_finetuned(finetune_dir, glue_dir)
    searched = (trace.get("params") or {}).get("task")
    if searched is not None and searched != data.task.name:
        raise UserError(f"{prune_dir} searched a {searched} model, but {finetune_dir} was fine-tuned on "
                        f"{data.task.name}; give the prune step of this run.")
    model.eval()
    precision = run_precision(config)
    batches = data.eval_batches(data.main_split)
    record = ablation_record(model, lambda: primary_metric(model, data, batches, precision),
                             {"heads": np.asarray(first["heads"]), "mlps": np.asarray(first["mlps"])}, units)
    return {"task": data.task.name, "metric": data.task.primary_metric, "split": data.main_split,
            "precision": precision, "importance_from": str(prune_dir), "search_full": trace.get("full_metric"),
            **record}
