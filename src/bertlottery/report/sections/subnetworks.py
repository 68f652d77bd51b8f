"""The lottery study's result sections: good, random and bad subnetworks (Table 3, Figure 2 of
Prasanna et al. 2020), 'bad' subnetworks against baselines (Table 2), super-survivors (appendix E)
and longer re-fine-tuning (appendix D)."""

from __future__ import annotations

from collections.abc import Callable

from ..context import Context, join, missing_stages, no_reference_line, reference_metrics
from ..html import figure_html, paragraph, table_html
from ..rundata import StageInfo
from ..section import Section

__all__ = ["subnetworks_section", "baselines_section", "super_section", "longer_section", "per_seed_rows"]

PER_SEED_COLUMNS = ["task", "seed", "method", "subnetwork", "mode", "split", "metric", "value", "fraction_kept",
                    "epochs"]


def per_seed_rows(ctx: Context, select: Callable):
    """The per-seed rows (each task's main split and metric) that ``select`` (a function of the rows
    returning a boolean Series) picks: what a figure was drawn from."""
    rows = ctx.rows
    if rows is None or rows.empty:
        return None
    return rows[select(rows)][[c for c in PER_SEED_COLUMNS if c in rows.columns]]


def _majority(cells):
    majority = cells[cells["method"] == "majority"]
    return majority if not majority.empty else None


def _lottery_selected(stage: StageInfo, subnetworks: Callable[[str], bool]) -> bool:
    keys = stage.keys
    if stage.kind == "finetune":
        return True
    if stage.kind in ("evaluate", "retrain") and keys.get("mode") in ("pruned", "retrained"):
        return subnetworks(str(keys.get("subnetwork", "")))
    return stage.kind in ("prune", "subnetworks") and subnetworks("good")


def subnetworks_section(ctx: Context) -> Section:
    from ..figures import lottery_bars
    from ..tables import TABLE3_ROWS, results_table, sizes_table

    missing = missing_stages(ctx, lambda s: _lottery_selected(s, lambda sub: not sub.startswith("super-"))
                       or s.kind == "baseline", "fine-tuning, pruning, evaluation and baseline")
    reference = reference_metrics(ctx)
    if reference is None or reference.empty:
        missing.append(no_reference_line(ctx.reference, "evaluate_masked"))
    cells = ctx.cells
    if cells.empty:
        return Section("Good, random and bad subnetworks (Table 3, Figure 2)",
                       paragraph("No results yet."), missing or ["no results rows yet"])
    body = [paragraph("Every subnetwork evaluated pruned (the mask applied to the fine-tuned model) and "
                      "re-fine-tuned (pre-trained weights, the mask held fixed, the same seed and data order), "
                      "mean and sample std over seeds on each task's dev set.")]
    table = results_table(cells, TABLE3_ROWS, reference=reference, expected_n=ctx.expected_n, metrics=ctx.metrics,
                          model=ctx.model)
    body.append(table_html(table, ctx.out_dir))
    full = cells[(cells["method"] == "none") & (cells["subnetwork"] == "full")]
    lottery = cells[cells["subnetwork"].isin(["good", "random", "bad"]) & cells["mode"].isin(["pruned", "retrained"])]
    if not lottery.empty:
        fig = lottery_bars(cells, full if not full.empty else None, metrics=ctx.metrics, seeds=ctx.rows,
                           majority=_majority(cells), not_learnt=ctx.not_learnt)
        body.append(figure_html(fig, ctx.out_dir, "figure2_subnetworks",
                                "Figure 2 of the paper for this run: good, random and bad subnetworks, pruned and "
                                "re-fine-tuned (bars: mean over seeds, error bars one std, dots: each seed); dashed "
                                "line: the full model's mean minus one std (the success criterion); dotted line: "
                                "the majority class; titles: % of encoder-body weights kept."
                                + (" Tasks not learnt are named in the grey panel, not drawn." if ctx.not_learnt
                                   else ""),
                                data=per_seed_rows(ctx, lambda r: r["subnetwork"].isin(["good", "random", "bad", "full"])
                                                   | (r["method"] == "majority"))))
        if full.empty:
            missing.append("the full model's results (its dashed line in the figure)")
    else:
        missing.append("good/random/bad results of any pruning method (Figure 2)")
    sizes = sizes_table(cells)
    if not sizes.empty:
        body.append(table_html(sizes, ctx.out_dir))
    return Section("Good, random and bad subnetworks (Table 3, Figure 2)", join(body), missing)


def baselines_section(ctx: Context) -> Section:
    from ..tables import bad_vs_baselines_table

    missing = missing_stages(ctx, lambda s: s.kind == "baseline" or (s.kind == "retrain" and s.keys.get("subnetwork") == "bad"
                                                                and s.keys.get("mode") == "retrained"),
                       "baseline and 'bad' re-fine-tuning")
    table = bad_vs_baselines_table(ctx.cells, expected_n=ctx.expected_n, model=ctx.model, metrics=ctx.metrics,
                                   not_learnt=ctx.not_learnt)
    if not any(g.startswith("This run") for g in (table.groups or [])):
        missing.append("no 'bad' re-fine-tuned or baseline results of this run yet; only the paper's rows are shown")
    return Section("'Bad' subnetworks against baselines (Table 2)", table_html(table, ctx.out_dir), missing)


def super_section(ctx: Context) -> Section:
    from ..figures import lottery_bars
    from ..tables import SUPER_ROWS, results_table

    title = "Super-survivor subnetworks (appendix E)"
    config = ctx.run.config or {}
    if config and not config.get("super_survivors", True):
        return Section(title, paragraph("The config turns super-survivors off (super_survivors: false)."))
    missing = missing_stages(ctx, lambda s: s.kind == "super" or (s.kind in ("evaluate", "retrain")
                                                            and str(s.keys.get("subnetwork", "")).startswith("super-")),
                       "super-survivor")
    cells = ctx.cells
    part = cells[cells["subnetwork"].astype(str).str.startswith("super-")] if not cells.empty else cells
    if part.empty:
        return Section(title, paragraph("No super-survivor results yet."), missing or ["super-survivor results"])
    reference = reference_metrics(ctx)
    body = [paragraph("Subnetworks of only the heads and MLPs that survive s-pruning in every seed of a task "
                      "('good'), against as many of those pruned in every seed ('bad') and of the rest ('random').")]
    table = results_table(cells, SUPER_ROWS, reference=reference, expected_n=ctx.expected_n, metrics=ctx.metrics,
                          model=ctx.model, name="super_survivors", include_other=False,
                          title="Super-survivor subnetworks: mean and std over seeds")
    body.append(table_html(table, ctx.out_dir))
    full = cells[(cells["method"] == "none") & (cells["subnetwork"] == "full")]
    fig = lottery_bars(cells, full if not full.empty else None, methods=("structured",),
                       subnetworks=("super-good", "super-random", "super-bad"), metrics=ctx.metrics, seeds=ctx.rows,
                       majority=_majority(cells), not_learnt=ctx.not_learnt)
    body.append(figure_html(fig, ctx.out_dir, "figure17_super_survivors",
                            "Figure 17 of the paper for this run: super-survivor good, random and bad subnetworks "
                            "(bars: mean over seeds, error bars one std, dots: each seed; dashed: full model mean "
                            "minus one std; dotted: the majority class).",
                            data=per_seed_rows(ctx, lambda r: r["subnetwork"].astype(str).str.startswith("super-")
                                               | r["subnetwork"].eq("full") | r["method"].eq("majority"))))
    return Section(title, join(body), missing)


def longer_section(ctx: Context) -> Section:
    from ..figures import longer_lines
    from ..tables import cell_stats, longer_table

    title = "Longer re-fine-tuning (appendix D)"
    rows = ctx.rows
    long = rows[rows["mode"] == "retrained-long"] if rows is not None and not rows.empty else None
    configured = (ctx.run.config or {}).get("longer_retraining")
    missing = missing_stages(ctx, lambda s: s.keys.get("mode") == "retrained-long", "longer re-fine-tuning")
    if long is None or long.empty:
        if not configured and ctx.run.config is not None:
            # not run: said in place, without an entry in the contents
            return Section(title, paragraph("Not run: the config asks for no longer re-fine-tuning "
                                            "(longer_retraining); the paper's appendix D ran its 'bad' s-pruned "
                                            "subnetworks for 6 epochs."), toc=False)
        return Section(title, paragraph("No longer re-fine-tuning results yet."),
                       missing or ["longer re-fine-tuning results"])
    seeds = (configured or {}).get("seeds") if isinstance(configured, dict) else None
    # its own seeds where the config names them (the paper's appendix D: one), so a full cell is not "(n=1)"
    table = longer_table(rows, expected_n=len(seeds) if seeds else ctx.expected_n)
    body = [table_html(table, ctx.out_dir)]
    if seeds:
        body.insert(0, paragraph(f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)} "
                                 f"(the config's longer_retraining.seeds), {configured.get('epochs', '?')} epochs."))
    cells = cell_stats(long, by_epoch=True)
    body.append(figure_html(longer_lines(cells, metrics=ctx.metrics), ctx.out_dir, "appendixD_longer_retraining",
                            "Dev metric after every epoch of the longer re-fine-tuning " + (
                                f"(seed {seeds[0]})." if seeds and len(seeds) == 1 else
                                "(mean over seeds, band: one std)."), data=per_seed_rows(ctx, lambda r: r["mode"].eq("retrained-long"))))
    return Section(title, join(body), missing)
