"""What the page shows before its contents: the key results, computed from the results table and the
masks (never written by hand), then the cautions a reader needs before any number (tasks not learnt,
comparisons that cannot say anything)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from markupsafe import Markup

from ..context import Context, join
from ..html import caution_list, paragraph, table_html
from ..tables import KEY_SUBNETWORKS, Table, key_results, metric_name, ordering, seeds_note, uninformative_tasks
from .searches import search_caution_lines

__all__ = ["key_results_html", "cautions_html", "key_results_table", "caution_lines"]

QUOTED_KAPPA = "0.15–0.32 (every task, 5 seeds; section 5.1)"  # the paper gives the range, not each task's


def key_results_table(ctx: Context) -> Table | None:
    """The key results as a `Table` (None when the run has no good/random/bad results yet): a row per
    learnt task and pruning method."""
    from .masks import kappa_context, run_mask_summary

    frame = key_results(ctx.cells, ctx.metrics, ctx.not_learnt)
    if frame.empty:
        return None
    ours = run_mask_summary(ctx)
    paper = _paper_summary(ctx)
    # tasks whose comparison says nothing by the numbers (runs without the learnt-check): greyed like the marked ones
    doubtful = {line.split(":")[0] for line in uninformative_tasks(ctx.cells, ctx.metrics)}
    narrow = {tuple(line.split(":")[0].split(", ")) for line in search_caution_lines(ctx)}  # (task, "s-pruning")
    display, labels, classes = [], [], []
    for i, row in frame.iterrows():
        structured = row["method"] == "structured"
        # a run copied without its stage folders (results.csv and config.json alone) has no masks
        kappa = ({} if not structured else kappa_context(ctx, "run-structured", row["task"]) if ours
                 else {"reason": "no s-pruning masks in the run folder"})
        for key in ("kappa", "ceiling", "null_low", "null_high"):
            frame.loc[i, f"kappa {key}" if key != "kappa" else "kappa"] = _float(kappa.get(key))
        paper_kappa = None
        if structured and paper is not None and row["task"] in paper["tasks"]:
            paper_kappa = ((paper["tasks"][row["task"]].get("heads") or {}).get("kappa"))
        frame.loc[i, "paper kappa"] = _float(paper_kappa)
        marked = row["task"] in ctx.marked  # not learnt, pruned anyway (the learnt-check turned off)
        pruning = "s-pruning" if structured else "m-pruning"
        note = (" (not learnt)" if marked else " (see the cautions)"
                if row["task"] in doubtful or (row["task"], pruning) in narrow else "")
        # the label's second line names the metric (pre-line in the box's CSS)
        labels.append(f"{row['task']}, {pruning}{note}\n{metric_name(row['metric'])}")
        classes.append("unlearnt" if note else "")
        gap = ("–" if math.isnan(row["gap pruned"]) else
               f"{row['gap pruned']:.3f} → {row['gap retrained']:.3f}" + _closed(row["gap closed"], row["gap pruned"],
                                                                                   row["gap retrained"]))
        # a partial run: a mean over fewer seeds than configured says so in its cell, as Table 3's do
        short = {mode: {s: seeds_note(row[f"{s} {mode} n"], ctx.expected_n) for s in KEY_SUBNETWORKS}
                 for mode in ("pruned", "retrained")}
        display.append({
            "full model": _fmt(row["full"]) + seeds_note(row["full n"], ctx.expected_n),
            "pruned": _lines(ordering({s: row[f"{s} pruned"] for s in KEY_SUBNETWORKS}, notes=short["pruned"])),
            "re-fine-tuned": _lines(ordering({s: row[f"{s} retrained"] for s in KEY_SUBNETWORKS},
                                             notes=short["retrained"])),
            "good − bad gap\npruned → re-fine-tuned": gap,
            "weights kept": "–" if math.isnan(row["fraction kept"]) else f"{100 * row['fraction kept']:.1f}%",
            "κ heads\n(its ceiling; random masks' 95%)": _kappa_text(kappa) if structured else "",
            "paper's κ heads": ((f"{paper_kappa:.3f}\n(released masks)" if paper_kappa is not None else QUOTED_KAPPA)
                                if structured else ""),
        })
    return Table("key_results", "Key results", "Computed from this run's results and masks: means over seeds of "
                 "each task's metric on its dev set; subnetworks ordered best first.", frame,
                 pd.DataFrame(display, index=labels), row_classes=classes,
                 notes=["'weights kept': the good subnetwork's share of the encoder-body weights. 'κ heads': Fleiss' "
                        "kappa of the seeds' good s-pruning head masks, beside the largest kappa masks of those "
                        "sizes can reach and the interval of random masks of those sizes (see the stability "
                        "section); the paper's value is from its released masks where given."])


def _paper_summary(ctx: Context) -> dict[str, Any] | None:
    from .masks import _mask_summary, _paper_masks

    folder = _paper_masks(ctx)
    return None if folder is None else _mask_summary(ctx, "paper", folder, "structured")[0]


def _closed(fraction: float, pruned: float, retrained: float) -> str:
    """How much of the pruned gap re-fine-tuning closed, as a share of it; a gap that widened is given in
    the metric's own units (a share of a pruned gap near 0 would read as hundreds of percent)."""
    if math.isnan(fraction):
        return ""
    return f"\n({100 * fraction:.0f}% closed)" if fraction >= 0 else f"\n(widened by {retrained - pruned:.3f})"


def _lines(ordered: str) -> str:
    """One subnetwork a line: the box's cells stay narrow enough for the table to fit the page."""
    return ordered.replace(" > ", " >\n").replace(" = ", " =\n").replace("; ", ";\n")


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _fmt(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _kappa_text(kappa: dict[str, Any]) -> str:
    if kappa.get("kappa") is None:
        return "–" + (f" ({kappa['reason']})" if kappa.get("reason") else "")
    text = f"{kappa['kappa']:.3f}"
    if kappa.get("ceiling") is not None:
        text += f"\nceiling {kappa['ceiling']:.3f}"
    if kappa.get("null_low") is not None:
        text += f"\nrandom [{kappa['null_low']:.3f}, {kappa['null_high']:.3f}]"
    return text


def key_results_html(ctx: Context) -> Markup:
    """The key-results box: the table, or a line saying there is nothing to compare yet."""
    try:
        table = key_results_table(ctx)
    except Exception as error:  # noqa: BLE001 - the box must not take the report down
        return Markup('<div class="keyresults" id="key-results"><strong>Key results</strong>{}</div>').format(
            paragraph(f"could not be computed ({type(error).__name__}: {str(error)[:200]})"))
    if table is None:
        body = paragraph("No good, random and bad subnetworks of a learnt task yet: nothing to compare.")
    else:
        body = table_html(table, ctx.out_dir)
    return Markup('<div class="keyresults" id="key-results">{}</div>').format(body)


def caution_lines(ctx: Context) -> list[str]:
    """Tasks not learnt (from the learnt-check), then tasks whose comparison says nothing (from the
    numbers, for runs without the check)."""
    from ..tables import not_learnt_tasks

    lines = []
    marked = not_learnt_tasks(ctx.run.results, partly=True)
    for task, reason in marked.items():
        if task in ctx.not_learnt:
            lines.append(f"{task}: {reason}. Its pruning was skipped; it is left out of the key results and the "
                         "figures.")
        elif task in ctx.marked:
            lines.append(f"{task}: {reason}. The learnt-check was turned off, so it was pruned anyway: its rows "
                         "(greyed in the key results) compare subnetworks of a model that learnt nothing.")
        else:
            lines.append(f"{task}: {reason}. Only its learnt seeds were pruned.")
    lines += [line for line in uninformative_tasks(ctx.cells, ctx.metrics) if line.split(":")[0] not in marked]
    return lines


def cautions_html(ctx: Context) -> Markup:
    return join([caution_list("Tasks this run did not learn (read their rows as such):", caution_lines(ctx)),
                 caution_list("Searches that could barely prune (their good subnetworks' size is set by dev noise):",
                              search_caution_lines(ctx))])


def lead_html(ctx: Context) -> Markup:
    """Key results, then the cautions: what comes before the page's contents (the lottery study's;
    empty for a Compressing-BERT study)."""
    if ctx.run.config is not None and ctx.run.config.get("gordon") is not None:
        return Markup("")
    return join([key_results_html(ctx), cautions_html(ctx)])
