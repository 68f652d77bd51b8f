"""What every section of the report reads (`Context`), and the helpers sections share: what a
section lacks (`missing_stages`), the paper's released metrics, joining HTML pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from .. import runs
from ..errors import UserError
from .rundata import RunData, StageInfo

__all__ = ["Context", "parse_iterations", "missing_stages", "model_label", "join", "prepare", "reference_metrics",
           "no_reference_line"]

MAX_LISTED = 25  # lines of a "missing" list before it says "and N more"


@dataclass
class Context:
    """What every built-in section reads."""

    run: RunData
    out_dir: Path
    reference: Path | None
    metric: str = "primary"
    iterations: list[int | str] = field(default_factory=lambda: [1, "last"])
    rows: Any = None  # the main split and metric of each task
    metrics: dict[str, str] = field(default_factory=dict)
    cells: Any = None
    expected_n: int | None = None
    model: str = "this run"
    # {task: reason}: tasks whose every seed failed the learnt-check; ``not_learnt`` only those whose
    # searches were skipped (nothing to draw), ``marked`` also those pruned anyway (the check turned off)
    not_learnt: dict[str, str] = field(default_factory=dict)
    marked: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def config_list(self, key: str) -> list[Any]:
        return list((self.run.config or {}).get(key) or [])


def parse_iterations(text: str) -> list[int | str]:
    """``"1,3,last"`` -> ``[1, 3, "last"]``; `UserError` for anything else."""
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "last":
            out.append(part)
        elif part.isdigit() and int(part) >= 1:
            out.append(int(part))
        else:
            raise UserError(f"--iterations takes 1-based iteration numbers and 'last', comma-separated "
                            f"(e.g. 1,last); got {part!r}.")
    if not out:
        raise UserError("--iterations is empty; give e.g. 1,last.")
    return out


def missing_stages(ctx: Context, select: Callable[[StageInfo], bool], what: str) -> list[str]:
    """What a section lacks, from the stages it needs that are not done: one line per task that has
    nothing yet (``SST-2: nothing yet (57 stages: 56 left, 1 running)``), else one line per kind of
    stage still missing (``CoLA retrain structured bad retrained: 2 left, 1 failed``). Skipped stages are
    not missing: they will never have results (their task was not learnt, which the cautions say)."""
    run = ctx.run
    if not run.graph_known:
        return [f"the run has no readable {runs.GRAPH_FILE}, so the {what} stages that are missing cannot be listed"]
    needed: dict[str, list[StageInfo]] = {}
    for stage in run.stages:
        if select(stage):
            needed.setdefault(stage.task, []).append(stage)
    lines = []
    for task, stages in needed.items():
        open_ = [s for s in stages if s.state not in ("done", "skipped")]
        if not open_:
            continue
        if len(open_) == len([s for s in stages if s.state != "skipped"]):
            lines.append(f"{task}: nothing yet ({len(open_)} stages: {_state_counts(open_)})")
            continue
        groups: dict[str, list[StageInfo]] = {}
        for stage in open_:
            keys = stage.keys
            label = " ".join(str(v) for v in (task, stage.kind, keys.get("method"), keys.get("subnetwork"),
                                              keys.get("mode")) if v not in (None, "none", "full"))
            groups.setdefault(label, []).append(stage)
        lines += [f"{label}: {_state_counts(group)}" for label, group in groups.items()]
    if len(lines) > MAX_LISTED:
        lines = lines[:MAX_LISTED] + [f"... and {len(lines) - MAX_LISTED} more lines of {what} stages"]
    return lines


def _state_counts(stages: Sequence[StageInfo]) -> str:
    counts: dict[str, int] = {}
    for stage in stages:
        counts[stage.state] = counts.get(stage.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def model_label(model: str | None) -> str:
    if not model:
        return "this run"
    return Path(model).name if ("/" in model and Path(model).exists()) else model


def join(parts: Sequence[Any]) -> Markup:
    return Markup("").join(parts)


def prepare(ctx: Context) -> None:
    from .tables import final_cells, main_rows, not_learnt_tasks

    rows, metrics = main_rows(ctx.run.results, ctx.metric)
    ctx.rows, ctx.metrics = rows, metrics
    ctx.cells = final_cells(rows)
    seeds = ctx.config_list("seeds")
    ctx.expected_n = len(seeds) or None
    ctx.model = model_label((ctx.run.config or {}).get("model"))
    ctx.marked = not_learnt_tasks(ctx.run.results)
    compared = set(rows.loc[rows["subnetwork"].isin(["good", "random", "bad"]), "task"].astype(str)) if not rows.empty else set()
    ctx.not_learnt = {task: reason for task, reason in ctx.marked.items() if task not in compared}


def reference_metrics(ctx: Context):
    if "released" not in ctx._cache:
        from .paper import released_metrics

        ctx._cache["released"] = released_metrics(ctx.reference) if ctx.reference is not None else None
    return ctx._cache["released"]


def no_reference_line(reference: Path | None = None, part: str | None = None) -> str:
    """Why a section shows none of the paper's released material: no reference folder was given, or
    the one given (``reference``) lacks the ``part`` the section reads (``evaluate_masked`` or
    ``masks/heads_mlps``; the folder may hold only one of the two)."""
    if reference is None or part is None:
        return ("comparison with the paper's released metrics and masks: not included (give --reference DIR or set "
                "$BERTLOTTERY_REFERENCE_DIR to the folder of ../shared/reference/prasanna2020)")
    return (f"comparison with the paper's released {'metrics' if part == 'evaluate_masked' else 'masks'}: "
            f"{reference} has no {part}/ (../shared/reference/prasanna2020 has both)")
