"""The sections computed from the masks: stability across seeds (section 5.1, Figure 1, appendix A
of Prasanna et al. 2020), importance score distributions (Figure 3) and subnetworks shared between
tasks (section 5.3, Figures 5 and 15, appendix G), for this run and the paper's released masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ... import runs
from ...errors import UserError
from ..context import Context, join, missing_stages, no_reference_line
from ..html import figure_html, paragraph, slug, table_html
from ..section import Section

__all__ = ["stability_section", "importance_section", "overlaps_section", "run_mask_summary", "kappa_context",
           "COCHRAN_Q_NOTE"]

# What Cochran's Q over the seeds' masks tests, said wherever the report shows it.
COCHRAN_Q_NOTE = ("Cochran's Q tests whether the seeds keep heads at equal rates, i.e. whether their masks keep "
                  "about the same number of heads; masks of different sizes give a small p whatever heads they "
                  "keep, so Q does not test whether the seeds keep the same heads (that is what kappa, read "
                  "against its ceiling and its random-mask interval, measures).")


def _mask_summary(ctx: Context, key: str, path: Path, method: str | None):
    """``stability_summary`` of a mask folder, cached; ``(summary, None)`` or ``(None, reason)``. The
    mask set itself is cached under ``key + ":masks"`` (for what needs each seed's mask)."""
    if key not in ctx._cache:
        from ...analysis import load_mask_sets, stability_summary

        try:
            mask_set = load_mask_sets(path, method)
            ctx._cache[key] = (stability_summary(mask_set), None)
            ctx._cache[key + ":masks"] = mask_set
        except UserError as error:
            ctx._cache[key] = (None, str(error))
    return ctx._cache[key]


def _run_masks(ctx: Context, method: str):
    """`_mask_summary` of this run's good masks of ``method``: ``(summary, None)`` or ``(None, reason)``."""
    if not (ctx.run.run_dir / runs.STAGES_DIR).is_dir():
        return None, (f"{ctx.run.run_dir} has no {runs.STAGES_DIR}/ folder, where the prune stages keep their masks "
                      "(a copy of the run's results and config alone)")
    return _mask_summary(ctx, f"run-{method}", ctx.run.run_dir, method)


def run_mask_summary(ctx: Context):
    """This run's s-pruning `stability_summary` (cached), or None when it has no s-pruning masks."""
    if "structured" not in _run_methods(ctx):
        return None
    return _run_masks(ctx, "structured")[0]


def kappa_context(ctx: Context, key: str, task: str) -> dict[str, Any]:
    """Head kappa of ``task``'s seeds beside what the masks' sizes allow: ``kappa``, ``ceiling`` (the
    largest kappa masks of these sizes reach), ``null_mean``/``null_low``/``null_high`` (kappa of
    random masks of the same sizes, 95% interval) and, with five seeds or more, ``boot_low``/
    ``boot_high`` (a bootstrap interval over seeds); ``reason`` where kappa is undefined. Cached.
    ``key``: the `_mask_summary` cache key of the mask folder ("run-structured", "paper")."""
    import numpy as np

    from ... import stats

    cache_key = f"kappa:{key}:{task}"
    if cache_key in ctx._cache:
        return ctx._cache[cache_key]
    summary = (ctx._cache.get(key) or (None, None))[0]
    heads = ((summary or {}).get("tasks", {}).get(task) or {}).get("heads") or {}
    out: dict[str, Any] = {"kappa": heads.get("kappa"), "reason": heads.get("kappa_reason")}
    sizes = heads.get("kept_per_seed")
    if sizes and heads.get("n_elements"):
        # the ceiling and the null depend on the masks' sizes only: nested masks of those sizes stand in
        nested = np.arange(heads["n_elements"])[None, :] < np.asarray(sizes)[:, None]
        ceiling, null = stats.max_fleiss_kappa(nested), stats.kappa_null(nested)
        out.update(ceiling=_finite(ceiling.value), null_mean=_finite(null.mean), null_low=_finite(null.low),
                   null_high=_finite(null.high))
        mask_set = ctx._cache.get(key + ":masks")
        if len(sizes) >= 5 and mask_set is not None:
            from ...analysis.masksets import keep_arrays

            keep = keep_arrays(mask_set, "heads", tasks=[task]).get(task)
            if keep is not None:
                interval = stats.kappa_bootstrap(keep)
                out.update(boot_low=_finite(interval.low), boot_high=_finite(interval.high))
    ctx._cache[cache_key] = out
    return out


def _finite(value: float) -> float | None:
    import math

    return None if value is None or math.isnan(value) else float(value)


def _run_methods(ctx: Context) -> list[str]:
    configured = ctx.config_list("methods")
    found = {s.keys.get("method") for s in ctx.run.stages if s.kind == "prune" and s.state == "done"}
    return [m for m in ("structured", "magnitude") if m in configured or m in found]


def _paper_masks(ctx: Context) -> Path | None:
    if ctx.reference is None:
        return None
    path = ctx.reference / "masks" / "heads_mlps"
    return path if path.is_dir() else None


def _stability_table(ctx: Context, sources: list[tuple[str, str, dict[str, Any]]]):
    import pandas as pd

    from ..tables import Table, format_cell, task_order

    records, display, labels, groups = [], [], [], []
    for group, key, summary in sources:
        for task in task_order(summary["tasks"]):
            entry = summary["tasks"][task]
            kappa = kappa_context(ctx, key, task)
            heads, mlps = entry.get("heads") or {}, entry.get("mlps") or {}
            q = heads.get("cochran_q") or {}
            pairs = heads.get("pairwise") or {}
            sup = entry.get("super_survivors") or {}
            size = entry.get("body_fraction_kept") or {}
            record = {"source": group, "task": task, "seeds": len(entry["seeds"]),
                      "heads kept (mean)": _mean(heads.get("kept_per_seed")),
                      "heads total": heads.get("n_elements"),
                      "MLPs kept (mean)": _mean(mlps.get("kept_per_seed")), "MLPs total": mlps.get("n_elements"),
                      "kappa heads": heads.get("kappa"), "kappa heads ceiling": kappa.get("ceiling"),
                      "kappa heads random masks mean": kappa.get("null_mean"),
                      "kappa heads random masks low": kappa.get("null_low"),
                      "kappa heads random masks high": kappa.get("null_high"),
                      "kappa heads bootstrap low": kappa.get("boot_low"),
                      "kappa heads bootstrap high": kappa.get("boot_high"),
                      "kappa MLPs": mlps.get("kappa"),
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
                "κ ceiling (sizes)": _num(record["kappa heads ceiling"], ".3f"),
                "κ of random masks: mean [95%]": _interval(record["kappa heads random masks mean"],
                                                           record["kappa heads random masks low"],
                                                           record["kappa heads random masks high"]),
                "κ over seeds: bootstrap 95%": (_interval(None, record["kappa heads bootstrap low"],
                                                          record["kappa heads bootstrap high"])
                                                if record["seeds"] >= 5 else "needs ≥ 5 seeds"),
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
    alpha = next((s.get("alpha") for _, _, s in sources), 0.05)
    notes = ["Fleiss' kappa over seeds (raters) on [kept, pruned] per head. Masks of different sizes cannot agree "
             "perfectly: 'κ ceiling' is the largest kappa masks of these seeds' sizes can reach (nested masks), "
             "and 'κ of random masks' the mean and 95% interval of kappa for masks drawn at random with the same "
             "sizes (2,000 permutations); a kappa is above chance where it is above that interval. With five "
             "seeds or more, a bootstrap interval over seeds. The paper reports head kappa 0.15-0.32 per task "
             "over its 5 seeds.",
             f"{COCHRAN_Q_NOTE} 'Pairs differing': pairs of seeds whose keep rates differ at alpha = {alpha}."]
    for group, _, summary in sources:
        for note in summary.get("notes") or []:
            notes.append(f"{group} — {note}")
    return Table("stability", "Stability of the good s-pruning masks across seeds",
                 "Agreement between the seeds' good masks, per task.", frame, shown, groups, [], notes)


def _interval(mean: float | None, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "–"
    return (f"{mean:.3f} " if mean is not None else "") + f"[{low:.3f}, {high:.3f}]"


def _num(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _mean(values) -> float | None:
    return None if not values else sum(values) / len(values)


def _survival_figures(summary: dict[str, Any], ctx: Context, prefix: str, who: str, label: str, *,
                      key: str | None = None, source: str = "", skip: Any = ()) -> list[Any]:
    """Survival heatmaps per task. ``key``: the cached mask set of 0/1 survival (s-pruning), whose
    std over seeds is a function of the mean and is left out, and whose per-seed masks are written
    beside each figure; without it (m-pruning: fractions of weights) the std is shown. ``source``:
    the JSON the figures were drawn from (linked). Tasks in ``skip`` (not learnt) are left out."""
    from ..figures import component_heatmaps
    from ..tables import task_order

    out = []
    mask_set = ctx._cache.get(key + ":masks") if key else None
    for task in task_order(summary["tasks"]):
        if task in skip:
            continue
        entry = summary["tasks"][task]
        heads, mlps = entry.get("heads"), entry.get("mlps")
        if not heads or heads.get("survival_mean") is None:
            continue
        n = len(entry["seeds"])
        binary = key is not None
        fig = component_heatmaps(_arr(heads["survival_mean"]), None if binary else _arr(heads.get("survival_std")),
                                 _arr((mlps or {}).get("survival_mean")),
                                 None if binary else _arr((mlps or {}).get("survival_std")),
                                 title=f"{task} ({who}, {n} seed{'s' if n != 1 else ''})", label=label)
        caption = (f"{task}: {label} over {n} seeds; {who}." if binary
                   else f"{task}: {label}, mean (top number) and std (bottom) over {n} seeds; {who}.")
        out.append(figure_html(fig, ctx.out_dir, f"{prefix}_{slug(task)}", caption,
                               data=_per_seed_masks(mask_set, task) if mask_set is not None else None,
                               data_links=[("summary (JSON)", source)] if source else None))
    return out


def _per_seed_masks(mask_set, task: str):
    """Each seed's s-pruning mask of ``task`` as rows: seed, component (head / MLP), layer, head, kept."""
    import numpy as np
    import pandas as pd

    from ...analysis.masksets import keep_arrays

    records = []
    seeds = mask_set.seeds(task)
    for kind in ("heads", "mlps"):
        keep = keep_arrays(mask_set, kind, tasks=[task]).get(task)
        if keep is None:
            continue
        for (s, *where), kept in np.ndenumerate(keep):
            records.append({"seed": seeds[s], "component": kind[:-1], "layer": where[0] + 1,
                            "head": where[1] + 1 if len(where) > 1 else None, "kept": bool(kept)})
    return pd.DataFrame(records, columns=["seed", "component", "layer", "head", "kept"])



def _arr(value):
    import numpy as np

    if value is None:
        return None
    return np.array(value, dtype=float)  # None (undefined std) becomes nan


def stability_section(ctx: Context) -> Section:
    title = "Stability of the good subnetworks across seeds (section 5.1, Figure 1, appendix A)"
    methods = _run_methods(ctx)
    missing = missing_stages(ctx, lambda s: s.kind == "prune", "prune")
    body: list[Any] = [paragraph("How often each head and MLP survives s-pruning over the seeds of a task "
                                 "(m-pruning: the fraction of each component's weights kept), and how well the "
                                 "seeds agree.")]
    sources = []
    ours = None
    if "structured" in methods:
        ours, reason = _run_masks(ctx, "structured")
        if ours is None:
            missing.append(f"s-pruning masks of this run: {reason}")
        else:
            sources.append((f"This run ({ctx.model}, s-pruning)", "run-structured", ours))
            _seed_gaps(ctx, ours, missing)
    paper_dir = _paper_masks(ctx)
    paper = None
    if paper_dir is not None:
        paper, reason = _mask_summary(ctx, "paper", paper_dir, "structured")
        if paper is None:
            missing.append(f"the paper's released masks: {reason}")
        else:
            sources.append(("The paper's released masks (bert-base-uncased, masks/heads_mlps)", "paper", paper))
    else:
        missing.append(no_reference_line(ctx.reference, "masks/heads_mlps"))
    if sources:
        body.append(table_html(_stability_table(ctx, sources), ctx.out_dir))
        folder = ctx.out_dir / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        for name, summary in (("stability_run_structured", ours), ("stability_paper", paper)):
            if summary is not None:
                (folder / f"{name}.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    if ours is not None:
        body.append(join([Markup("<h3>This run: s-pruning survival</h3>"), Markup('<div class="grid">'),
                          *_survival_figures(ours, ctx, "survival_structured", f"{ctx.model}, s-pruning",
                                             "fraction of seeds in which it survived", key="run-structured",
                                             source="tables/stability_run_structured.json", skip=ctx.not_learnt),
                          Markup("</div>")]))
    if "magnitude" in methods:
        magnitude, reason = _run_masks(ctx, "magnitude")
        if magnitude is None:
            missing.append(f"m-pruning masks of this run: {reason}")
        else:
            (ctx.out_dir / "tables" / "stability_run_magnitude.json").write_text(
                json.dumps(magnitude, indent=1, allow_nan=False))
            body.append(join([Markup("<h3>This run: m-pruning, % of each component's weights kept</h3>"),
                              Markup('<div class="grid">'),
                              *_survival_figures(magnitude, ctx, "survival_magnitude", f"{ctx.model}, m-pruning",
                                                 "fraction of the component's weights kept",
                                                 source="tables/stability_run_magnitude.json", skip=ctx.not_learnt),
                              Markup("</div>")]))
    if paper is not None:
        figures = _survival_figures(paper, ctx, "survival_paper", "the paper's released masks, bert-base-uncased",
                                    "fraction of seeds in which it survived", key="paper",
                                    source="tables/stability_paper.json")
        body.append(join([Markup("<h3>The paper's released masks: s-pruning survival</h3>"),
                          Markup('<div class="grid">'), *figures, Markup("</div>")]))
    return Section(title, join(body), missing)


def _seed_gaps(ctx: Context, summary: dict[str, Any], missing: list[str]) -> None:
    """A line per task with fewer good s-pruning masks than seeds; a seed whose search was skipped (its
    model not learnt) never will have one, so it is not counted as missing (the cautions say why)."""
    seeds = ctx.config_list("seeds")
    skipped = [s.task for s in ctx.run.stages
               if s.kind == "prune" and s.keys.get("method") == "structured" and s.state == "skipped"]
    for task in ctx.config_list("tasks"):
        entry = summary["tasks"].get(task)
        have = len(entry["seeds"]) if entry else 0
        expected = len(seeds) - skipped.count(task)
        if seeds and have < expected:
            missing.append(f"{task}: good s-pruning masks of {have} of {expected} seeds")


def importance_section(ctx: Context) -> Section:
    import pandas as pd

    from ...stats import importance_at
    from ..figures import importance_histograms
    from ..tables import task_order

    title = "Importance score distributions (section 5.1, Figure 3)"
    missing = missing_stages(ctx, lambda s: s.kind == "prune" and s.keys.get("method") == "structured", "s-pruning")
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
        scores_rows: list[dict[str, Any]] = []  # every score drawn, per seed: the figure's data
        last: list[int] = []  # which iteration "last" was, per seed
        for stage in sorted((s for s in prunes if s.task == task), key=lambda s: str(s.keys.get("seed"))):
            trace_path = stage.folder / runs.TRACE_FILE
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
                    scores_rows += [{"task": task, "seed": stage.keys.get("seed"), "panel": label,
                                     "iteration": chosen["iteration"], "layer": layer, "head": head, "score": score}
                                    for layer, row in enumerate(chosen["heads"]) for head, score in enumerate(row)
                                    if score is not None]
        if "last iteration" in panels:
            span = f"{min(last)}" if min(last) == max(last) else f"{min(last)}-{max(last)}"
            panels = {(f"last iteration ({span})" if label == "last iteration" else label): scores
                      for label, scores in panels.items()}
        if panels:
            fig = importance_histograms(list(panels.items()), title=f"{task} ({ctx.model})")
            figures.append(figure_html(fig, ctx.out_dir, f"figure3_importance_{slug(task)}",
                                       f"{task}: head importance scores at the chosen iterations of s-pruning, "
                                       "all seeds pooled.", data=pd.DataFrame(scores_rows)))
    if not figures:
        missing.append("importance scores: no finished s-pruning stage with a trace.json")
        return Section(title, paragraph("No s-pruning traces yet."), missing)
    body.append(join([Markup('<div class="grid">'), *figures, Markup("</div>")]))
    return Section(title, join(body), missing)


def _overlap_figures(summary: dict[str, Any], ctx: Context, prefix: str, who: str) -> list[Any]:
    import numpy as np

    from ..figures import component_heatmaps, overlap_matrices
    from ..tables import task_order

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

    def seeds_text(n: int) -> str:
        return f"{n} seed{'s' if n != 1 else ''}"

    panels = [(f"{kind}: shared per seed (mean ± std over {seeds_text(entry['n_seeds'])})",
               square(entry["overlap_mean"]), square(entry["overlap_std"]))
              for kind, entry in (("heads", heads), ("MLPs", mlps)) if entry]
    out.append(figure_html(overlap_matrices(panels, tasks, title=f"Good subnetworks shared between tasks ({who})"),
                           ctx.out_dir, f"{prefix}_overlap",
                           f"Figure 5 / appendix G for {who}: number of heads (and MLPs) that two tasks' good "
                           "subnetworks share, per seed position, mean and std over seeds; the diagonal is each "
                           "task's own size.", data_label="data (CSV)",
                           data=_matrix_rows(tasks, {kind: {"mean": square(entry["overlap_mean"]),
                                                            "std": square(entry["overlap_std"])}
                                                     for kind, entry in (("heads", heads), ("MLPs", mlps)) if entry})))
    supers = [(f"{kind}: super-survivors shared", square(entry["super_overlap"]), None)
              for kind, entry in (("heads", heads), ("MLPs", mlps)) if entry]
    out.append(figure_html(overlap_matrices(supers, tasks, title=f"Super-survivors shared between tasks ({who})"),
                           ctx.out_dir, f"{prefix}_overlap_super",
                           f"Appendix G for {who}: heads (and MLPs) that survive in every seed of both tasks.",
                           data_label="data (CSV)",
                           data=_matrix_rows(tasks, {kind: {"shared": square(entry["super_overlap"])}
                                                     for kind, entry in (("heads", heads), ("MLPs", mlps)) if entry})))
    if heads:
        fig = component_heatmaps(_arr(heads["tasks_survived_mean"]), _arr(heads["tasks_survived_std"]),
                                 _arr((mlps or {}).get("tasks_survived_mean")), _arr((mlps or {}).get("tasks_survived_std")),
                                 title=f"In how many of {len(tasks)} tasks each element survives ({who})",
                                 vmax=float(len(tasks)), label="tasks", fmt=".1f")
        out.append(figure_html(fig, ctx.out_dir, f"{prefix}_tasks_per_element",
                               f"Figure 15 for {who}: the number of tasks whose good subnetwork keeps each head and "
                               "MLP, mean (top) and std (bottom) over seed positions.",
                               data=_grid_rows(heads, mlps), data_label="data (CSV)"))
    return out


def _grid_rows(heads: dict[str, Any], mlps: dict[str, Any] | None):
    """Figure 15's grids in long form: one row per head (``layer, head``) and per MLP (``layer``), with
    the mean and std over seed positions of the number of tasks that keep it."""
    import pandas as pd

    rows = [{"component": "head", "layer": layer, "head": head, "tasks_mean": mean, "tasks_std": std}
            for layer, (means, stds) in enumerate(zip(heads["tasks_survived_mean"], heads["tasks_survived_std"]))
            for head, (mean, std) in enumerate(zip(means, stds))]
    if mlps and mlps.get("tasks_survived_mean") is not None:
        rows += [{"component": "MLP", "layer": layer, "head": None, "tasks_mean": mean, "tasks_std": std}
                 for layer, (mean, std) in enumerate(zip(mlps["tasks_survived_mean"], mlps["tasks_survived_std"]))]
    frame = pd.DataFrame(rows)
    frame["head"] = frame["head"].astype("Int64")  # blank for an MLP, not 0.0
    return frame


def _matrix_rows(tasks: list[str], matrices: dict[str, dict[str, Any]]):
    """Task-by-task matrices in long form: ``component, task_a, task_b`` and one column per statistic."""
    import pandas as pd

    rows = []
    for component, stats in matrices.items():
        for i, first in enumerate(tasks):
            for j, second in enumerate(tasks):
                rows.append({"component": component, "task_a": first, "task_b": second,
                             **{stat: (None if grid is None else float(grid[i, j])) for stat, grid in stats.items()}})
    return pd.DataFrame(rows)


def overlaps_section(ctx: Context) -> Section:
    title = "Subnetworks shared between tasks (section 5.3, Figures 5 and 15, appendix G)"
    missing: list[str] = []
    body: list[Any] = []
    if "structured" in _run_methods(ctx):
        ours, reason = _run_masks(ctx, "structured")
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
        missing.append(no_reference_line(ctx.reference, "masks/heads_mlps"))
    if not body:
        body = [paragraph("Nothing to compare yet.")]
    return Section(title, join(body), missing)
