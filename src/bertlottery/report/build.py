"""Assemble the report of a run directory: the built-in sections, the packages' sections, the page.

`build_report` is the one function that writes: into a scratch folder beside the output, renamed
into place at the end (a reader never sees half a report). Each built-in section is a function of
a `Context`; a section that fails to build says so on the page, and the rest is still written.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..errors import UserError
from . import SECTION_PROVIDERS, Section
from .html import caution_list, figure_html, paragraph, render_page, slug, table_html
from .rundata import RunData, StageInfo, load_run

__all__ = ["Context", "build_report", "builtin_sections", "provider_sections", "parse_iterations"]

ENV_SECTIONS = "BERTLOTTERY_REPORT_SECTIONS"
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


# ---- what is missing ----------------------------------------------------------------------------------

def _missing(ctx: Context, select: Callable[[StageInfo], bool], what: str) -> list[str]:
    """What a section lacks, from the stages it needs that are not done: one line per task that has
    nothing yet (``SST-2: nothing yet (57 stages: 56 left, 1 running)``), else one line per kind of
    stage still missing (``CoLA retrain structured bad retrained: 2 left, 1 failed``)."""
    run = ctx.run
    if not run.graph_known:
        return [f"the stage graph could not be rebuilt from config.json, so the {what} stages that are missing "
                "cannot be listed"]
    needed: dict[str, list[StageInfo]] = {}
    for stage in run.stages:
        if select(stage):
            needed.setdefault(stage.task, []).append(stage)
    lines = []
    for task, stages in needed.items():
        open_ = [s for s in stages if s.state != "done"]
        if not open_:
            continue
        if len(open_) == len(stages):
            lines.append(f"{task}: nothing yet ({len(stages)} stages: {_state_counts(open_)})")
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


def _model_label(model: str | None) -> str:
    if not model:
        return "this run"
    return Path(model).name if ("/" in model and Path(model).exists()) else model


# ---- built-in sections --------------------------------------------------------------------------------

def _status(ctx: Context) -> Section:
    from .tables import status_table

    run = ctx.run
    counts = run.counts()
    body = [paragraph(f"{len(run.stages)} stages: " + ", ".join(f"{n} {state}" for state, n in counts.items())
                      + ("" if run.graph_known else " (only the stages found on disk: the config's graph could "
                         "not be rebuilt)") + ".")]
    missing = []
    if run.stages:
        body.append(table_html(status_table(run.stages), ctx.out_dir))
    failed = [s for s in run.stages if s.state == "failed"]
    if failed:
        body.append(_join([Markup("<h3>Failed stages</h3><ul>")]
                                + [Markup("<li><code>{}</code>: {}</li>").format(s.id, s.error) for s in failed]
                                + [Markup("</ul>")]))
        missing.append(f"{len(failed)} failed stage{'s' if len(failed) > 1 else ''} (listed below; "
                       "bertlottery run again retries them)")
    left = [s for s in run.stages if s.state in ("left", "running")]
    if left:
        running = sum(1 for s in left if s.state == "running")
        missing.append(f"{len(left)} stage{'s' if len(left) > 1 else ''} not finished"
                       + (f" ({running} running now)" if running else ""))
        items = [Markup("<li><code>{}</code> ({})</li>").format(s.id, s.state) for s in left]
        body.append(_join([Markup("<details><summary>Stages not finished ({})</summary><ul>").format(len(left))]
                                + items + [Markup("</ul></details>")]))
    if not run.stages:
        missing.append("no stages found (nothing has run yet, or the folder holds only a results table)")
    return Section("Status of the run", _join(body), missing)


def _join(parts: Sequence[Any]) -> Markup:
    return Markup("").join(parts)


def _prepare(ctx: Context) -> None:
    from .tables import final_cells, main_rows

    rows, metrics = main_rows(ctx.run.results, ctx.metric)
    ctx.rows, ctx.metrics = rows, metrics
    ctx.cells = final_cells(rows)
    seeds = ctx.config_list("seeds")
    ctx.expected_n = len(seeds) or None
    ctx.model = _model_label((ctx.run.config or {}).get("model"))


def _reference_metrics(ctx: Context):
    if "released" not in ctx._cache:
        from .paper import released_metrics

        ctx._cache["released"] = released_metrics(ctx.reference) if ctx.reference is not None else None
    return ctx._cache["released"]


def _no_reference_line() -> str:
    return ("comparison with the paper's released metrics and masks: not included (give --reference DIR or set "
            "$BERTLOTTERY_REFERENCE_DIR to the folder of ../shared/reference/prasanna2020)")


def _lottery_selected(stage: StageInfo, subnetworks: Callable[[str], bool]) -> bool:
    keys = stage.keys
    if stage.kind == "finetune":
        return True
    if stage.kind in ("evaluate", "retrain") and keys.get("mode") in ("pruned", "retrained"):
        return subnetworks(str(keys.get("subnetwork", "")))
    return stage.kind in ("prune", "subnetworks") and subnetworks("good")


def _subnetworks(ctx: Context) -> Section:
    from .figures import lottery_bars
    from .tables import TABLE3_ROWS, results_table, sizes_table, uninformative_tasks

    missing = _missing(ctx, lambda s: _lottery_selected(s, lambda sub: not sub.startswith("super-"))
                       or s.kind == "baseline", "fine-tuning, pruning, evaluation and baseline")
    reference = _reference_metrics(ctx)
    if reference is None:
        missing.append(_no_reference_line())
    cells = ctx.cells
    if cells.empty:
        return Section("Good, random and bad subnetworks (Table 3, Figure 2)",
                       paragraph("No results yet."), missing or ["no results rows yet"])
    body = [caution_list("Tasks this run did not learn (read their rows as such):",
                         uninformative_tasks(cells, ctx.metrics)),
            paragraph("Every subnetwork evaluated pruned (the mask applied to the fine-tuned model) and "
                      "re-fine-tuned (pre-trained weights, the mask held fixed, the same seed and data order), "
                      "mean and sample std over seeds on each task's dev set.")]
    table = results_table(cells, TABLE3_ROWS, reference=reference, expected_n=ctx.expected_n, metrics=ctx.metrics,
                          model=ctx.model)
    body.append(table_html(table, ctx.out_dir))
    full = cells[(cells["method"] == "none") & (cells["subnetwork"] == "full")]
    lottery = cells[cells["subnetwork"].isin(["good", "random", "bad"]) & cells["mode"].isin(["pruned", "retrained"])]
    if not lottery.empty:
        fig = lottery_bars(cells, full if not full.empty else None, metrics=ctx.metrics)
        body.append(figure_html(fig, ctx.out_dir, "figure2_subnetworks",
                                "Figure 2 of the paper for this run: good, random and bad subnetworks, pruned and "
                                "re-fine-tuned (mean over seeds, error bars one std); dashed line: the full model's "
                                "mean minus one std (the success criterion); titles: % of encoder-body weights kept."))
        if full.empty:
            missing.append("the full model's results (its dashed line in the figure)")
    else:
        missing.append("good/random/bad results of any pruning method (Figure 2)")
    sizes = sizes_table(cells)
    if not sizes.empty:
        body.append(table_html(sizes, ctx.out_dir))
    return Section("Good, random and bad subnetworks (Table 3, Figure 2)", _join(body), missing)


def _bad_vs_baselines(ctx: Context) -> Section:
    from .tables import bad_vs_baselines_table

    missing = _missing(ctx, lambda s: s.kind == "baseline" or (s.kind == "retrain" and s.keys.get("subnetwork") == "bad"
                                                                and s.keys.get("mode") == "retrained"),
                       "baseline and 'bad' re-fine-tuning")
    table = bad_vs_baselines_table(ctx.cells, expected_n=ctx.expected_n, model=ctx.model, metrics=ctx.metrics)
    if not any(g.startswith("This run") for g in (table.groups or [])):
        missing.append("no 'bad' re-fine-tuned or baseline results of this run yet; only the paper's rows are shown")
    return Section("'Bad' subnetworks against baselines (Table 2)", table_html(table, ctx.out_dir), missing)


def _super(ctx: Context) -> Section:
    from .figures import lottery_bars
    from .tables import SUPER_ROWS, results_table

    title = "Super-survivor subnetworks (appendix E)"
    config = ctx.run.config or {}
    if config and not config.get("super_survivors", True):
        return Section(title, paragraph("The config turns super-survivors off (super_survivors: false)."))
    missing = _missing(ctx, lambda s: s.kind == "super" or (s.kind in ("evaluate", "retrain")
                                                            and str(s.keys.get("subnetwork", "")).startswith("super-")),
                       "super-survivor")
    cells = ctx.cells
    part = cells[cells["subnetwork"].astype(str).str.startswith("super-")] if not cells.empty else cells
    if part.empty:
        return Section(title, paragraph("No super-survivor results yet."), missing or ["super-survivor results"])
    reference = _reference_metrics(ctx)
    body = [paragraph("Subnetworks of only the heads and MLPs that survive s-pruning in every seed of a task "
                      "('good'), against as many of those pruned in every seed ('bad') and of the rest ('random').")]
    table = results_table(cells, SUPER_ROWS, reference=reference, expected_n=ctx.expected_n, metrics=ctx.metrics,
                          model=ctx.model, name="super_survivors", include_other=False,
                          title="Super-survivor subnetworks: mean and std over seeds")
    body.append(table_html(table, ctx.out_dir))
    full = cells[(cells["method"] == "none") & (cells["subnetwork"] == "full")]
    fig = lottery_bars(cells, full if not full.empty else None, methods=("structured",),
                       subnetworks=("super-good", "super-random", "super-bad"), metrics=ctx.metrics)
    body.append(figure_html(fig, ctx.out_dir, "figure17_super_survivors",
                            "Figure 17 of the paper for this run: super-survivor good, random and bad subnetworks "
                            "(mean over seeds, error bars one std; dashed: full model mean minus one std)."))
    return Section(title, _join(body), missing)


def _longer(ctx: Context) -> Section:
    from .figures import longer_lines
    from .tables import cell_stats, longer_table

    title = "Longer re-fine-tuning (appendix D)"
    rows = ctx.rows
    long = rows[rows["mode"] == "retrained-long"] if rows is not None and not rows.empty else None
    configured = (ctx.run.config or {}).get("longer_retraining")
    missing = _missing(ctx, lambda s: s.keys.get("mode") == "retrained-long", "longer re-fine-tuning")
    if long is None or long.empty:
        if not configured and ctx.run.config is not None:
            return Section(title, paragraph("The config asks for no longer re-fine-tuning (longer_retraining); "
                                            "the paper's appendix D ran its 'bad' s-pruned subnetworks for 6 epochs."))
        return Section(title, paragraph("No longer re-fine-tuning results yet."),
                       missing or ["longer re-fine-tuning results"])
    table = longer_table(rows, expected_n=ctx.expected_n)
    body = [table_html(table, ctx.out_dir)]
    cells = cell_stats(long, by_epoch=True)
    body.append(figure_html(longer_lines(cells, metrics=ctx.metrics), ctx.out_dir, "appendixD_longer_retraining",
                            "Dev metric after every epoch of the longer re-fine-tuning (mean over seeds, band: one std)."))
    return Section(title, _join(body), missing)


# ---- mask statistics (the stability helper's functions) ------------------------------------------------

def _mask_summary(ctx: Context, key: str, path: Path, method: str | None):
    """``stability_summary`` of a mask folder, cached; ``(summary, None)`` or ``(None, reason)``."""
    if key not in ctx._cache:
        from ..stability import load_mask_sets, stability_summary

        try:
            mask_set = load_mask_sets(path, method)
            ctx._cache[key] = (stability_summary(mask_set), None)
        except UserError as error:
            ctx._cache[key] = (None, str(error))
    return ctx._cache[key]


def _run_methods(ctx: Context) -> list[str]:
    configured = ctx.config_list("methods")
    found = {s.keys.get("method") for s in ctx.run.stages if s.kind == "prune" and s.state == "done"}
    return [m for m in ("structured", "magnitude") if m in configured or m in found]


def _paper_masks(ctx: Context) -> Path | None:
    if ctx.reference is None:
        return None
    path = ctx.reference / "masks" / "heads_mlps"
    return path if path.is_dir() else None


def _stability_table(sources: list[tuple[str, dict[str, Any]]]):
    import pandas as pd

    from .tables import Table, format_cell, task_order

    records, display, labels, groups = [], [], [], []
    for group, summary in sources:
        for task in task_order(summary["tasks"]):
            entry = summary["tasks"][task]
            heads, mlps = entry.get("heads") or {}, entry.get("mlps") or {}
            q = heads.get("cochran_q") or {}
            pairs = heads.get("pairwise") or {}
            sup = entry.get("super_survivors") or {}
            size = entry.get("body_fraction_kept") or {}
            record = {"source": group, "task": task, "seeds": len(entry["seeds"]),
                      "heads kept (mean)": _mean(heads.get("kept_per_seed")),
                      "heads total": heads.get("n_elements"),
                      "MLPs kept (mean)": _mean(mlps.get("kept_per_seed")), "MLPs total": mlps.get("n_elements"),
                      "kappa heads": heads.get("kappa"), "kappa MLPs": mlps.get("kappa"),
                      "Cochran Q heads": q.get("statistic"), "Cochran Q heads p": q.get("pvalue"),
                      "seed pairs differing (p<alpha)": pairs.get("n_differ"), "seed pairs": pairs.get("n_pairs"),
                      "super-survivor heads": sup.get("heads"), "super-survivor MLPs": sup.get("mlps"),
                      "super-survivor body fraction": sup.get("body_fraction"),
                      "good body fraction": size.get("mean"), "good body fraction std": size.get("std")}
            records.append(record)
            q_text = "–" if record["Cochran Q heads"] is None else (
                f"{_num(record['Cochran Q heads'], '.1f')} ({_num(record['Cochran Q heads p'], '.3g')})")
            good = record["good body fraction"]
            good_text = "–" if good is None else format_cell(
                100 * good, None if record["good body fraction std"] is None else 100 * record["good body fraction std"],
                digits=1)
            display.append({
                "seeds": str(record["seeds"]),
                "heads kept": f"{_num(record['heads kept (mean)'], '.1f')} / {_num(record['heads total'], 'd')}",
                "MLPs kept": f"{_num(record['MLPs kept (mean)'], '.1f')} / {_num(record['MLPs total'], 'd')}",
                "κ heads": _num(record["kappa heads"], ".3f"),
                "κ MLPs": _num(record["kappa MLPs"], ".3f"),
                "Cochran's Q heads (p)": q_text,
                "pairs differing": (f"{record['seed pairs differing (p<alpha)']} of {record['seed pairs']}"
                                    if record["seed pairs"] else "–"),
                "super-survivors heads, MLPs": (f"{_num(record['super-survivor heads'], 'd')}, "
                                                f"{_num(record['super-survivor MLPs'], 'd')}"),
                "% body kept: good / super": f"{good_text} / {_num(record['super-survivor body fraction'], '.1%')}",
            })
            labels.append(task)
            groups.append(group)
    frame = pd.DataFrame(records)
    shown = pd.DataFrame(display, index=labels)
    alpha = next((s.get("alpha") for _, s in sources), 0.05)
    notes = [f"Fleiss' kappa over seeds (raters) on [kept, pruned] per element; Cochran's Q over the elements x seeds "
             f"matrix (all seeds), and for every pair of seeds how many differ at alpha = {alpha}. The paper reports "
             "head kappa 0.15-0.32 per task."]
    for group, summary in sources:
        for note in summary.get("notes") or []:
            notes.append(f"{group} — {note}")
    return Table("stability", "Stability of the good s-pruning masks across seeds",
                 "Agreement between the seeds' good masks, per task.", frame, shown, groups, [], notes)


def _num(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _mean(values) -> float | None:
    return None if not values else sum(values) / len(values)


def _survival_figures(summary: dict[str, Any], ctx: Context, prefix: str, who: str, label: str) -> list[Any]:
    from .figures import component_heatmaps
    from .tables import task_order

    out = []
    for task in task_order(summary["tasks"]):
        entry = summary["tasks"][task]
        heads, mlps = entry.get("heads"), entry.get("mlps")
        if not heads or heads.get("survival_mean") is None:
            continue
        n = len(entry["seeds"])
        fig = component_heatmaps(_arr(heads["survival_mean"]), _arr(heads.get("survival_std")),
                                 _arr((mlps or {}).get("survival_mean")), _arr((mlps or {}).get("survival_std")),
                                 title=f"{task} ({who}, {n} seed{'s' if n != 1 else ''})", label=label)
        out.append(figure_html(fig, ctx.out_dir, f"{prefix}_{slug(task)}",
                               f"{task}: {label}, mean (top number) and std (bottom) over {n} seeds; {who}."))
    return out


def _arr(value):
    import numpy as np

    if value is None:
        return None
    return np.array(value, dtype=float)  # None (undefined std) becomes nan


def _stability(ctx: Context) -> Section:
    title = "Stability of the good subnetworks across seeds (section 5.1, Figure 1, appendix A)"
    methods = _run_methods(ctx)
    missing = _missing(ctx, lambda s: s.kind == "prune", "prune")
    body: list[Any] = [paragraph("How often each head and MLP survives s-pruning over the seeds of a task "
                                 "(m-pruning: the fraction of each component's weights kept), and how well the "
                                 "seeds agree.")]
    sources = []
    ours = None
    if "structured" in methods:
        ours, reason = _mask_summary(ctx, "run-structured", ctx.run.run_dir, "structured")
        if ours is None:
            missing.append(f"s-pruning masks of this run: {reason}")
        else:
            sources.append((f"This run ({ctx.model}, s-pruning)", ours))
            _seed_gaps(ctx, ours, missing)
    paper_dir = _paper_masks(ctx)
    paper = None
    if paper_dir is not None:
        paper, reason = _mask_summary(ctx, "paper", paper_dir, "structured")
        if paper is None:
            missing.append(f"the paper's released masks: {reason}")
        else:
            sources.append(("The paper's released masks (bert-base-uncased, masks/heads_mlps)", paper))
    else:
        missing.append(_no_reference_line())
    if sources:
        body.append(table_html(_stability_table(sources), ctx.out_dir))
        folder = ctx.out_dir / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        for name, summary in (("stability_run_structured", ours), ("stability_paper", paper)):
            if summary is not None:
                (folder / f"{name}.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    if ours is not None:
        body.append(_join([Markup("<h3>This run: s-pruning survival</h3>"), Markup('<div class="grid">'),
                                 *_survival_figures(ours, ctx, "survival_structured", f"{ctx.model}, s-pruning",
                                                    "fraction of seeds in which it survived"),
                                 Markup("</div>")]))
    if "magnitude" in methods:
        magnitude, reason = _mask_summary(ctx, "run-magnitude", ctx.run.run_dir, "magnitude")
        if magnitude is None:
            missing.append(f"m-pruning masks of this run: {reason}")
        else:
            (ctx.out_dir / "tables" / "stability_run_magnitude.json").write_text(
                json.dumps(magnitude, indent=1, allow_nan=False))
            body.append(_join([Markup("<h3>This run: m-pruning, % of each component's weights kept</h3>"),
                                     Markup('<div class="grid">'),
                                     *_survival_figures(magnitude, ctx, "survival_magnitude", f"{ctx.model}, m-pruning",
                                                        "fraction of the component's weights kept"),
                                     Markup("</div>")]))
    if paper is not None:
        figures = _survival_figures(paper, ctx, "survival_paper", "the paper's released masks, bert-base-uncased",
                                    "fraction of seeds in which it survived")
        body.append(_join([Markup("<h3>The paper's released masks: s-pruning survival</h3>"),
                                 Markup('<div class="grid">'), *figures, Markup("</div>")]))
    return Section(title, _join(body), missing)


def _seed_gaps(ctx: Context, summary: dict[str, Any], missing: list[str]) -> None:
    seeds = ctx.config_list("seeds")
    for task in ctx.config_list("tasks"):
        entry = summary["tasks"].get(task)
        have = len(entry["seeds"]) if entry else 0
        if seeds and have < len(seeds):
            missing.append(f"{task}: good s-pruning masks of {have} of {len(seeds)} seeds")


def _importance(ctx: Context) -> Section:
    from ..stats import importance_at
    from .figures import importance_histograms
    from .tables import task_order

    title = "Importance score distributions (section 5.1, Figure 3)"
    missing = _missing(ctx, lambda s: s.kind == "prune" and s.keys.get("method") == "structured", "s-pruning")
    prunes = [s for s in ctx.run.stages if s.kind == "prune" and s.state == "done"
              and s.keys.get("method") == "structured"]
    if not prunes and not ctx.run.graph_known:  # stages found on disk only: look for traces directly
        prunes = [s for s in ctx.run.stages if s.kind == "prune" and s.state == "done"]
    body: list[Any] = [paragraph("Head importance scores of the s-pruning search at chosen iterations "
                                 f"({', '.join(map(str, ctx.iterations))}; iteration 1 scores the full model), "
                                 "pooled over seeds.")]
    figures = []
    for task in task_order({s.task for s in prunes}):
        panels: dict[str, list[Any]] = {}
        last: list[int] = []  # which iteration "last" was, per seed
        for stage in sorted((s for s in prunes if s.task == task), key=lambda s: str(s.keys.get("seed"))):
            trace_path = stage.folder / "trace.json"
            try:
                trace = json.loads(trace_path.read_text())
                rounds = importance_at(trace)
            except (OSError, ValueError, UserError) as error:
                missing.append(f"{task} seed {stage.keys.get('seed')}: importance scores not readable from "
                               f"{trace_path.name} ({str(error).splitlines()[0][:160]})")
                continue
            for wanted in ctx.iterations:
                if wanted == "last":
                    chosen = rounds[-1] if rounds else None
                    label = "last iteration"
                    if chosen is not None:
                        last.append(chosen["iteration"])
                else:
                    chosen = rounds[wanted - 1] if wanted <= len(rounds) else None
                    label = f"iteration {wanted}"
                    if chosen is None:
                        missing.append(f"{task} seed {stage.keys.get('seed')}: the search had {len(rounds)} "
                                       f"iterations, not {wanted}")
                if chosen is not None:
                    panels.setdefault(label, []).append(chosen["heads"])
        if "last iteration" in panels:
            span = f"{min(last)}" if min(last) == max(last) else f"{min(last)}-{max(last)}"
            panels = {(f"last iteration ({span})" if label == "last iteration" else label): scores
                      for label, scores in panels.items()}
        if panels:
            fig = importance_histograms(list(panels.items()), title=f"{task} ({ctx.model})")
            figures.append(figure_html(fig, ctx.out_dir, f"figure3_importance_{slug(task)}",
                                       f"{task}: head importance scores at the chosen iterations of s-pruning, "
                                       "all seeds pooled."))
    if not figures:
        missing.append("importance scores: no finished s-pruning stage with a trace.json")
        return Section(title, paragraph("No s-pruning traces yet."), missing)
    body.append(_join([Markup('<div class="grid">'), *figures, Markup("</div>")]))
    return Section(title, _join(body), missing)


def _overlap_figures(summary: dict[str, Any], ctx: Context, prefix: str, who: str) -> list[Any]:
    import numpy as np

    from .figures import component_heatmaps, overlap_matrices
    from .tables import task_order

    cross = summary.get("cross_task") or {}
    out = []
    heads, mlps = cross.get("heads"), cross.get("mlps")
    if not heads and not mlps:
        return out
    main = heads or mlps
    tasks = task_order(main["tasks"])  # the paper's order
    index = [main["tasks"].index(t) for t in tasks]

    def square(value):
        return None if value is None else _arr(value)[np.ix_(index, index)]

    panels = [(f"{kind}: shared per seed (mean ± std over {entry['n_seeds']} seeds)",
               square(entry["overlap_mean"]), square(entry["overlap_std"]))
              for kind, entry in (("heads", heads), ("MLPs", mlps)) if entry]
    out.append(figure_html(overlap_matrices(panels, tasks, title=f"Good subnetworks shared between tasks ({who})"),
                           ctx.out_dir, f"{prefix}_overlap",
                           f"Figure 5 / appendix G for {who}: number of heads (and MLPs) that two tasks' good "
                           "subnetworks share, per seed position, mean and std over seeds; the diagonal is each "
                           "task's own size."))
    supers = [(f"{kind}: super-survivors shared", square(entry["super_overlap"]), None)
              for kind, entry in (("heads", heads), ("MLPs", mlps)) if entry]
    out.append(figure_html(overlap_matrices(supers, tasks, title=f"Super-survivors shared between tasks ({who})"),
                           ctx.out_dir, f"{prefix}_overlap_super",
                           f"Appendix G for {who}: heads (and MLPs) that survive in every seed of both tasks."))
    if heads:
        fig = component_heatmaps(_arr(heads["tasks_survived_mean"]), _arr(heads["tasks_survived_std"]),
                                 _arr((mlps or {}).get("tasks_survived_mean")), _arr((mlps or {}).get("tasks_survived_std")),
                                 title=f"In how many of {len(tasks)} tasks each element survives ({who})",
                                 vmax=float(len(tasks)), label="tasks", fmt=".1f")
        out.append(figure_html(fig, ctx.out_dir, f"{prefix}_tasks_per_element",
                               f"Figure 15 for {who}: the number of tasks whose good subnetwork keeps each head and "
                               "MLP, mean (top) and std (bottom) over seed positions."))
    return out


def _overlaps(ctx: Context) -> Section:
    title = "Subnetworks shared between tasks (section 5.3, Figures 5 and 15, appendix G)"
    missing: list[str] = []
    body: list[Any] = []
    if "structured" in _run_methods(ctx):
        ours, reason = _mask_summary(ctx, "run-structured", ctx.run.run_dir, "structured")
        if ours is None:
            missing.append(f"s-pruning masks of this run: {reason}")
        else:
            figures = _overlap_figures(ours, ctx, "run", f"this run, {ctx.model}")
            if figures:
                body += [Markup("<h3>This run</h3>"), *figures]
            elif ctx.run.config is not None and len(ctx.config_list("tasks")) < 2:
                body.append(paragraph("This study has one task: there is nothing to overlap."))
            else:
                missing.append(f"overlaps need good s-pruning masks of two tasks or more; this run has "
                               f"{len(ours['tasks'])} so far")
    else:
        missing.append("this run has no s-pruning (methods in the config)")
    paper_dir = _paper_masks(ctx)
    if paper_dir is not None:
        paper, reason = _mask_summary(ctx, "paper", paper_dir, "structured")
        if paper is None:
            missing.append(f"the paper's released masks: {reason}")
        else:
            body += [Markup("<h3>The paper's released masks (bert-base-uncased)</h3>"),
                     *_overlap_figures(paper, ctx, "paper", "the paper's released masks")]
    else:
        missing.append(_no_reference_line())
    if not body:
        body = [paragraph("Nothing to compare yet.")]
    return Section(title, _join(body), missing)


def _costs(ctx: Context) -> Section:
    from .tables import cost_tables

    by_kind, by_stage = cost_tables(ctx.run.stages)
    if by_kind.empty:
        return Section("Time and energy", paragraph("No finished stages yet."), ["time and energy of finished stages"])
    total = by_kind.frame.iloc[-1]
    line = f"{int(total['stages'])} finished stages took {total['seconds'] / 3600:.2f} h of stage time"
    if total["stages_with_energy"]:
        line += (f" and used {total['energy_kwh']:.4g} kWh ({1000 * total['emissions_kg']:.3g} g CO2-eq, codecarbon "
                 f"estimate over {int(total['stages_with_energy'])} stages)")
    body = [paragraph(line + "."), table_html(by_kind, ctx.out_dir),
            _join([Markup("<details><summary>Every stage</summary>"), table_html(by_stage, ctx.out_dir),
                         Markup("</details>")])]
    missing = []
    unfinished = sum(1 for s in ctx.run.stages if s.state != "done")
    if unfinished:
        missing.append(f"time and energy of the {unfinished} unfinished stages")
    return Section("Time and energy", _join(body), missing)


def _config(ctx: Context) -> Section:
    config = ctx.run.config
    if config is None:
        return Section("Configuration", paragraph("No readable config.json in the run directory."),
                       ["the run's resolved config (config.json)"])
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    return Section("Configuration", _join([
        paragraph(f"The resolved config of the run (config.json): {config.get('name', '?')}, model "
                  f"{config.get('model', '?')}, {len(config.get('tasks') or [])} tasks, "
                  f"{len(config.get('seeds') or [])} seeds."),
        Markup("<details><summary>config.json</summary><pre>{}</pre></details>").format(text)]))


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        out.append((prefix, " ".join(map(str, value))))
    else:
        out.append((prefix, "–" if value is None else str(value)))


def _environment(ctx: Context) -> Section:
    import pandas as pd

    from .. import runs
    from .tables import Table

    columns: dict[str, dict[str, str]] = {}
    for label, env in (("the run (a fine-tuning stage)", ctx.run.environment), ("this report", runs.environment())):
        if env:
            pairs: list[tuple[str, str]] = []
            _flatten("", {k: v for k, v in env.items() if k != "argv"}, pairs)
            columns[label] = dict(pairs)
    keys = list(dict.fromkeys(k for c in columns.values() for k in c))
    display = pd.DataFrame({label: [c.get(k, "–") for k in keys] for label, c in columns.items()}, index=keys)
    frame = display.reset_index().rename(columns={"index": "key"})
    table = Table("environment", "Environment", "Versions, platform and revision of the run and of this report.",
                  frame, display)
    missing = [] if ctx.run.environment else ["the run's environment.json (written by fine-tuning stages)"]
    return Section("Environment", table_html(table, ctx.out_dir), missing)


def builtin_sections() -> list[tuple[str, Callable[[Context], Section]]]:
    """The report's own sections, in page order (the packages' sections come before the costs); the
    status first, then the lottery study's (left out for a Compressing-BERT study)."""
    return [
        ("status", _status),
        ("subnetworks", _subnetworks),
        ("baselines", _bad_vs_baselines),
        ("super", _super),
        ("longer", _longer),
        ("stability", _stability),
        ("importance", _importance),
        ("overlaps", _overlaps),
    ]


TAIL_SECTIONS: list[tuple[str, Callable[[Context], Section]]] = [
    ("costs", _costs), ("config", _config), ("environment", _environment)]


def _failed_section(title: str, error: BaseException) -> Section:
    detail = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    return Section(title, paragraph(f"This section could not be built ({detail}). The rest of the report is complete; "
                                    "please report this as a bug."), [f"{title}: could not be built ({detail})"])


def provider_sections(specs: Sequence[str], run_dir: Path, out_dir: Path) -> list[Section]:
    """Call each ``"module:function"`` provider (see `bertlottery.report`)."""
    sections = []
    for spec in dict.fromkeys(specs):
        module_name, _, function_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # the package has no report section (yet)
            sections.append(_failed_section(f"Section {spec}", error))
            continue
        except Exception as error:  # noqa: BLE001 - a broken plugin must not take the report down
            sections.append(_failed_section(f"Section {spec}", error))
            continue
        provider = getattr(module, function_name, None)
        if not callable(provider):
            sections.append(_failed_section(f"Section {spec}", AttributeError(f"{module_name} has no {function_name}")))
            continue
        try:
            section = provider(run_dir, out_dir)
        except Exception as error:  # noqa: BLE001
            sections.append(_failed_section(f"Section {spec}", error))
            continue
        if section is not None:
            if not isinstance(section, Section):
                sections.append(_failed_section(f"Section {spec}", TypeError(
                    f"{spec} returned {type(section).__name__}, not a Section")))
                continue
            sections.append(section)
    return sections


def _summary_line(ctx: Context) -> str:
    run = ctx.run
    config = run.config or {}
    parts = []
    if config:
        parts.append(f"model {ctx.model}; tasks {', '.join(map(str, config.get('tasks') or []))}; "
                     f"seeds {', '.join(map(str, config.get('seeds') or []))}")
    counts = run.counts()
    if run.stages:
        parts.append(f"{counts['done']} of {len(run.stages)} stages done"
                     + (f", {counts['failed']} failed" if counts["failed"] else "")
                     + (f", {counts['running']} running" if counts["running"] else ""))
    parts.append(f"metric: each task's {ctx.metric} metric on its main dev split")
    parts.append("compared with the paper's released material in " + str(ctx.reference) if ctx.reference
                 else "no comparison with the paper's released material (no --reference)")
    return "; ".join(parts) + "."


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, reference: str | Path | None = None,
                 metric: str = "primary", iterations: Sequence[int | str] = (1, "last"),
                 sections: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``); returns its
    ``report.html``.

    ``reference``: the paper's released material (default ``$BERTLOTTERY_REFERENCE_DIR``; none: no
    comparison). ``metric``: ``"primary"`` (the pruning threshold's) or ``"reported"`` (the paper's
    Table 1 metric). ``iterations``: of the s-pruning search for the importance histograms (1-based
    or ``"last"``). ``sections``: extra ``"module:function"`` providers for this report. ``overwrite``:
    write into an ``out_dir`` that is not a report folder (files of the same names replaced, nothing deleted).
    """
    from .. import __version__, runs
    from .paper import reference_dir

    if metric not in ("primary", "reported"):
        raise UserError(f"--metric is primary or reported, got {metric!r}.")
    run = load_run(run_dir)
    out = Path(out_dir).expanduser() if out_dir is not None else run.run_dir / "report"
    if out.resolve() == run.run_dir.resolve():
        raise UserError("--out must not be the run directory itself; leave it out to write RUN_DIR/report.")
    extra = [s for s in os.environ.get(ENV_SECTIONS, "").split(",") if s.strip()]
    for spec in [*sections, *extra]:
        module, _, function = spec.strip().partition(":")
        if not module or not function:
            raise UserError(f"A section provider is named 'package.module:function', got {spec!r}.")
    ref = reference_dir(reference)
    try:
        # a report folder (marked, or holding report.html from before the marker) is replaced as a
        # whole; any other non-empty folder is refused unless overwrite (then nothing in it is deleted)
        with runs.staged_output(out, "report", overwrite=overwrite,
                                recognise=lambda folder: (folder / "report.html").is_file()) as scratch:
            ctx = Context(run, scratch, ref, metric, list(iterations))
            _prepare(ctx)
            page_sections = []
            # a Compressing-BERT study has no lottery grid: its package's section stands in for those
            lottery = run.config is None or run.config.get("gordon") is None
            for name, build in builtin_sections()[:None if lottery else 1]:
                try:
                    page_sections.append(build(ctx))
                except Exception as error:  # noqa: BLE001 - one broken section must not lose the report
                    page_sections.append(_failed_section(name, error))
            page_sections += provider_sections([*SECTION_PROVIDERS, *sections, *(s.strip() for s in extra)],
                                               run.run_dir, scratch)
            for name, build in TAIL_SECTIONS:
                try:
                    page_sections.append(build(ctx))
                except Exception as error:  # noqa: BLE001
                    page_sections.append(_failed_section(name, error))
            html = render_page(title=f"bertlottery report: {run.name}", run_dir=str(run.run_dir),
                               generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), version=__version__,
                               results_source=run.results_source, summary=_summary_line(ctx),
                               problems=run.problems, sections=page_sections)
            (scratch / "report.html").write_text(html, encoding="utf-8")
            (scratch / "missing.json").write_text(json.dumps(
                {s.title: s.missing for s in page_sections if s.missing}, indent=1))
    except PermissionError as error:
        raise UserError(f"Cannot write the report to {out} ({error.strerror}); choose a writable folder with --out.") from None
    return out / "report.html"

