"""The report's tables: pure functions of the results table (a DataFrame with `bertlottery.results`'
columns). Nothing here reads a file; the tables of the stages (status, costs) are in
`bertlottery.report.sections.run`.

Every table is a `Table`: ``frame`` holds the numbers (unrounded; written as CSV), ``display`` the
same cells as text for the page. Means and standard deviations are over seeds, the std the sample
std (ddof=1, as the paper's Table 3), on each task's primary metric on its main dev split unless
another metric is asked for.

Example:
    >>> rows, metrics = main_rows(results)               # doctest: +SKIP
    >>> cells = cell_stats(rows)                         # doctest: +SKIP
    >>> table = results_table(cells, TABLE3_ROWS)        # doctest: +SKIP
    >>> table.frame.to_csv("table3.csv", index=False)    # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..learnt import tidy_reason
from .paper import PAPER_TASKS, QUOTED_LONGER, QUOTED_TABLE2, QUOTED_TABLE2_AVERAGE

__all__ = [
    "Table",
    "RowSpec",
    "TABLE3_ROWS",
    "SUPER_ROWS",
    "metric_of",
    "main_rows",
    "cell_stats",
    "final_cells",
    "task_order",
    "format_cell",
    "results_table",
    "bad_vs_baselines_table",
    "sizes_table",
    "uninformative_tasks",
    "longer_table",
    "METRIC_NAMES",
    "metric_name",
    "not_learnt_tasks",
    "key_results",
    "ordering",
    "seeds_note",
]

# How a metric is named on an axis or in a sentence (the results table's names are identifiers).
METRIC_NAMES = {"accuracy": "accuracy", "mcc": "Matthews correlation", "f1": "F1", "pearson": "Pearson correlation",
                "spearman": "Spearman correlation", "pearson_spearman_mean": "Pearson/Spearman mean",
                "accuracy_f1_mean": "accuracy/F1 mean"}


def rate_text(rate: float) -> str:
    """A learning rate as papers write it: ``1e-4``, ``5e-5``, ``1.5e-4`` (not ``0.0001`` beside ``5e-05``)."""
    return np.format_float_scientific(float(rate), trim="-", exp_digits=1)


def metric_name(metric: str | None) -> str:
    """``"mcc"`` -> ``"Matthews correlation"``; an unknown name as it is (underscores as spaces)."""
    if not metric:
        return "score"
    return METRIC_NAMES.get(str(metric), str(metric).replace("_", " "))


def not_learnt_tasks(results: pd.DataFrame, *, partly: bool = False) -> dict[str, str]:
    """``{task: reason}`` for each task whose fine-tuned models all failed the learnt-check (their
    rows' ``note`` says "not learnt: ..."), so that its searches were skipped and it has nothing to
    compare. With ``partly``, also the tasks where only some seeds failed, the reason naming them."""
    if results is None or results.empty or "note" not in results.columns:
        return {}
    full = results[(results["method"] == "none") & (results["mode"] == "finetuned")]
    out = {}
    for task in task_order(full["task"]):
        part = full[full["task"] == task]
        notes = part.groupby("seed", dropna=False)["note"].first().astype(object).fillna("").astype(str)
        failed = notes[notes.str.startswith("not learnt")]
        if failed.empty:
            continue
        reason = tidy_reason(failed.iloc[0])
        if len(failed) > 1:  # each failed seed's score, not the first one's alone
            values = main_rows(part)[0].groupby("seed", dropna=False)["value"].first()
            scores = ", ".join(f"{values[seed]:.4f}" for seed in failed.index if seed in values.index)
            reason = re.sub(r"^(not learnt: \S+ )-?[\d.]+( <)", lambda m: f"{m[1]}{scores}{m[2]}", reason, count=1)
        if len(failed) < len(notes):
            if not partly:
                continue
            seeds = ", ".join(str(s) for s in failed.index)
            reason = f"seed{'s' if len(failed) > 1 else ''} {seeds} of {len(notes)}: {reason}"
        out[str(task)] = reason
    return out


@dataclass
class Table:
    """A table of the report. ``display`` has the row labels as its index and one or two column
    levels; ``groups`` gives each display row's group (a header row is drawn where it changes);
    ``row_classes`` marks rows (``"quoted"``: numbers quoted from the paper)."""

    name: str
    title: str
    caption: str
    frame: pd.DataFrame
    display: pd.DataFrame
    groups: list[str] | None = None
    row_classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.display.empty


@dataclass(frozen=True)
class RowSpec:
    group: str
    method: str
    subnetwork: str
    mode: str
    label: str


def _lottery_rows(group: str, method: str, prefix: str = "") -> list[RowSpec]:
    return [RowSpec(group, method, prefix + sub, mode, f"{quote}{sub}{quote} ({'re-fine-tuned' if mode == 'retrained' else mode})")
            for sub, quote in (("good", "'"), ("random", ""), ("bad", "'"))
            for mode in ("pruned", "retrained")]


BASELINE_GROUP = "Full model and baselines"
TABLE3_ROWS: list[RowSpec] = [
    RowSpec(BASELINE_GROUP, "majority", "none", "baseline", "majority class"),
    RowSpec(BASELINE_GROUP, "none", "full", "finetuned", "full model (fine-tuned)"),
    *_lottery_rows("s-pruning subnetworks", "structured"),
    *_lottery_rows("Super-survivor subnetworks (s-pruning)", "structured", "super-"),
    *_lottery_rows("m-pruning subnetworks", "magnitude"),
    # short: the label column is pinned while a wide table scrolls; Table 3's notes give the full wording
    RowSpec("Baseline: randomly initialised encoder", "random-init", "random", "baseline",
            "random s-mask (fine-tuned)"),
]
RANDOM_INIT_NOTE = ("'random s-mask (fine-tuned)': a randomly initialised encoder (no pre-training) under a "
                    "random s-mask of the 'bad' subnetwork's size, fine-tuned on the task as the subnetworks are "
                    "re-fine-tuned (the paper's Table 2 baseline).")
SUPER_ROWS = [r for r in TABLE3_ROWS if r.subnetwork.startswith("super-")]


def metric_of(task: str, which: str = "primary") -> tuple[str | None, str | None]:
    """``(split, metric)`` a table reports for ``task``: its first eval split and its primary (the
    pruning threshold's) or reported (the paper's Table 1) metric; ``(None, None)`` for a task that
    bertlottery does not know."""
    from ..tasks import get_task

    try:
        spec = get_task(task)
    except Exception:  # noqa: BLE001 - a foreign task name in a results table is shown, not refused
        return None, None
    return spec.eval_splits[0], spec.primary_metric if which == "primary" else spec.reported_metric


def main_rows(results: pd.DataFrame, which: str = "primary") -> tuple[pd.DataFrame, dict[str, str]]:
    """The rows of each task's main split and metric, and ``{task: metric}``.

    A task bertlottery does not know keeps its most common split and the first of its metrics in
    alphabetical order (the table says which).
    """
    parts, metrics = [], {}
    for task, rows in results.groupby("task", sort=False):
        split, metric = metric_of(str(task), which)
        if split is None:
            split = rows["split"].mode().iloc[0]
            metric = sorted(rows.loc[rows["split"] == split, "metric"].unique())[0]
        chosen = rows[(rows["split"] == split) & (rows["metric"] == metric)]
        if not chosen.empty:
            parts.append(chosen)
            metrics[str(task)] = metric
    if not parts:
        return results.iloc[0:0], metrics
    return pd.concat(parts, ignore_index=True), metrics


def final_cells(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`cell_stats` of the final results: every row but the longer re-fine-tuning's per-epoch ones
    (mode ``retrained-long``, appendix D), which have their own table."""
    return cell_stats(rows[rows["mode"] != "retrained-long"])


def cell_stats(rows: pd.DataFrame, *, by_epoch: bool = False) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count over seeds of every (task, method, subnetwork, mode) cell
    (and epoch, with ``by_epoch``), with the mean and std of the fraction of body weights kept."""
    keys = ["task", "method", "subnetwork", "mode"] + (["epochs"] if by_epoch else [])
    columns = [*keys, "mean", "std", "n", "fraction_kept", "fraction_kept_std"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    grouped = rows.groupby(keys, sort=False, dropna=False)
    cells = grouped["value"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    cells["fraction_kept"] = grouped["fraction_kept"].mean()
    cells["fraction_kept_std"] = grouped["fraction_kept"].std()
    cells = cells.reset_index()
    # a super-survivor mask is one per task (the intersection of the seeds' good masks): its size is one
    # observation, with no spread to show, however many seeds evaluate it
    cells.loc[cells["subnetwork"].astype(str).str.startswith("super-"), "fraction_kept_std"] = math.nan
    return cells[columns]


def task_order(tasks) -> list[str]:
    """The paper's task order (its Table 1), then any other task in order of appearance."""
    tasks = list(dict.fromkeys(str(t) for t in tasks))
    known = [t for t in PAPER_TASKS if t in tasks]
    return known + [t for t in tasks if t not in known]


def format_cell(mean: float, std: float | None = None, n: int | None = None, expected_n: int | None = None,
                digits: int = 3) -> str:
    """``0.512 ± 0.013``; the mean alone for one seed; ``(n=2)`` where fewer seeds than expected."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)) and (n is None or n > 1):
        text += f" ± {std:.{digits}f}"
    if n is not None and expected_n is not None and n < expected_n:
        text += f" (n={n})"
    return text


def _spread(method: str, std: float | None) -> float | None:
    """The std to show beside a mean: none for the majority class, whose value is the same for every seed
    (its std is no spread over seeds, so "0.509", not "0.509 ± 0.000")."""
    return None if method == "majority" else std


def _quoted_cells(values: dict[str, float], tasks: list[str], record: dict[str, Any], shown: dict[str, str], *,
                  digits: int) -> float:
    """Fill a quoted-from-the-paper row's per-task cells (``record``: numbers, ``shown``: text, '–' where
    the paper gives none); return their mean over ``tasks`` (NaN when any is missing)."""
    means = []
    for task in tasks:
        value = values.get(task, math.nan)
        record[f"{task} mean"] = value
        shown[task] = "–" if math.isnan(value) else f"{value:.{digits}f}"
        means.append(value)
    return float(np.mean(means)) if not any(math.isnan(m) for m in means) else math.nan


def _lookup(cells: pd.DataFrame, **keys: Any) -> pd.DataFrame:
    mask = np.ones(len(cells), dtype=bool)
    for name, value in keys.items():
        mask &= (cells[name] == value).to_numpy()
    return cells[mask]


def _other_specs(cells: pd.DataFrame, specs: list[RowSpec], exclude_modes: tuple[str, ...]) -> list[RowSpec]:
    """Specs for the cells no spec covers (nothing the run measured is left out of a table)."""
    known = {(s.method, s.subnetwork, s.mode) for s in specs}
    extra = []
    for key in cells[["method", "subnetwork", "mode"]].drop_duplicates().itertuples(index=False):
        key = tuple(map(str, key))
        if key not in known and key[2] not in exclude_modes:
            extra.append(RowSpec("Other", *key, f"{key[0]} / {key[1]} ({key[2]})"))
    return sorted(extra, key=lambda s: s.label)


def results_table(cells: pd.DataFrame, specs: list[RowSpec], *, reference: pd.DataFrame | None = None,
                  expected_n: int | None = None, metrics: dict[str, str] | None = None, name: str = "table3",
                  title: str = "Mean and standard deviation over seeds (like the paper's Table 3)",
                  caption: str = "", include_other: bool = True, model: str = "this run") -> Table:
    """Rows = ``specs`` the run has (then, with ``include_other``, any other cell of the run except
    longer re-fine-tuning), columns = tasks. ``reference`` (`bertlottery.report.paper.released_metrics`
    of the same metrics) adds a "paper" column per task."""
    tasks = task_order(cells["task"]) if not cells.empty else []
    present = {tuple(map(str, k)) for k in cells[["method", "subnetwork", "mode"]].drop_duplicates().itertuples(index=False)}
    rows = [s for s in specs if (s.method, s.subnetwork, s.mode) in present]
    if include_other:
        rows += _other_specs(cells, specs, exclude_modes=("retrained-long",))
    with_ref = reference is not None and not reference.empty
    if with_ref and metrics:
        reference = reference[[metrics.get(t) == m for t, m in zip(reference["task"], reference["metric"])]]
    frame_rows, display_rows = [], []
    short = False  # some cell has fewer seeds than configured
    for spec in rows:
        record: dict[str, Any] = {"group": spec.group, "row": spec.label, "method": spec.method,
                                  "subnetwork": spec.subnetwork, "mode": spec.mode}
        shown: dict[Any, str] = {}
        for task in tasks:
            cell = _lookup(cells, task=task, method=spec.method, subnetwork=spec.subnetwork, mode=spec.mode)
            mean, std, n = ((cell["mean"].iloc[0], cell["std"].iloc[0], int(cell["n"].iloc[0])) if not cell.empty
                            else (math.nan, math.nan, 0))
            record.update({f"{task} mean": mean, f"{task} std": std, f"{task} n": n})
            key = (task, model) if with_ref else task
            expected = 1 if spec.method == "majority" else expected_n  # the majority class has no seeds
            shown[key] = format_cell(mean, _spread(spec.method, std), n, expected) if n else "–"
            short |= bool(n) and expected is not None and n < expected
            if with_ref:
                ref = _lookup(reference, task=task, method=spec.method, subnetwork=spec.subnetwork, mode=spec.mode)
                r_mean, r_std = (ref["mean"].iloc[0], ref["std"].iloc[0]) if not ref.empty else (math.nan, math.nan)
                record.update({f"{task} paper mean": r_mean, f"{task} paper std": r_std})
                shown[(task, "paper")] = format_cell(r_mean, _spread(spec.method, r_std))
        frame_rows.append(record)
        display_rows.append(shown)
    columns = ([(t, s) for t in tasks for s in (model, "paper")] if with_ref else tasks)
    display = pd.DataFrame(display_rows, columns=pd.MultiIndex.from_tuples(columns) if with_ref else columns,
                           index=[s.label for s in rows])
    notes = []
    if metrics:
        notes.append("Metric per task: " + ", ".join(f"{t} {metric_name(metrics[t])}" for t in tasks if t in metrics)
                     + ".")
    if with_ref:
        notes.append("'paper' columns: the paper's released metrics for bert-base-uncased over its 5 seeds "
                     "(evaluate_masked/), std converted to the sample std (ddof=1) like the paper's Table 3.")
    if any(s.method == "random-init" for s in rows):
        notes.append(RANDOM_INIT_NOTE)
    if expected_n and short:
        notes.append(f"'(n=k)': only k of the configured {expected_n} seeds have a result yet.")
    return Table(name, title, caption, pd.DataFrame(frame_rows), display, [s.group for s in rows], [], notes)


_TABLE2_OURS = [
    ("structured", "bad", "retrained", "'Bad' subnetwork (s-pruning), re-fine-tuned"),
    ("magnitude", "bad", "retrained", "'Bad' subnetwork (m-pruning), re-fine-tuned"),
    ("random-init", "random", "baseline", "Random init + random s-pruning"),
    ("majority", "none", "baseline", "Majority class baseline"),
]


def bad_vs_baselines_table(cells: pd.DataFrame, *, expected_n: int | None = None, model: str = "this run",
                           metrics: dict[str, str] | None = None, not_learnt: Collection[str] = ()) -> Table:
    """The run's 'bad' subnetworks re-fine-tuned and its baselines, over the rows the paper's Table 2
    prints (quoted, labelled as such). Columns: the run's tasks (the paper's nine when the run has
    none yet); "mean" is over those columns' tasks, computed here (also for the quoted rows), and
    "paper's average" the average the paper prints (over its nine tasks). Where some of the tasks were
    not learnt (``not_learnt``: they have no 'bad' subnetworks), the mean is over the learnt ones, so
    that this run's rows have one and every row averages the same tasks."""
    tasks = task_order(cells["task"]) if not cells.empty else list(PAPER_TASKS)
    averaged = [t for t in tasks if t not in set(not_learnt)] or tasks
    mean_column = "mean over these tasks" if averaged == tasks else "mean over the learnt tasks"

    def mean_of(values: dict[str, float]) -> float:
        picked = [values.get(t, math.nan) for t in averaged]
        return float(np.mean(picked)) if picked and not any(math.isnan(m) for m in picked) else math.nan

    group_ours = f"This run ({model})"
    group_quoted = "Quoted from the paper (its Table 2; bert-base-uncased; GLUE baselines by Wang et al. 2018)"
    frame_rows, display_rows, labels, groups, classes = [], [], [], [], []
    for method, subnetwork, mode, label in _TABLE2_OURS:
        found = _lookup(cells, method=method, subnetwork=subnetwork, mode=mode) if not cells.empty else cells
        if found.empty:
            continue
        record = {"source": "this run", "row": label}
        shown = {}
        means = {}
        for task in tasks:
            cell = found[found["task"] == task]
            mean, std, n = ((cell["mean"].iloc[0], cell["std"].iloc[0], int(cell["n"].iloc[0])) if not cell.empty
                            else (math.nan, math.nan, 0))
            record.update({f"{task} mean": mean, f"{task} std": std, f"{task} n": n})
            shown[task] = (format_cell(mean, _spread(method, std), n,
                                       1 if method == "majority" else expected_n) if n else "–")
            means[task] = mean
        average = mean_of(means)
        record[mean_column] = average
        shown[mean_column] = format_cell(average)
        shown["paper's average (9 tasks)"] = ""
        frame_rows.append(record)
        display_rows.append(shown)
        labels.append(label)
        groups.append(group_ours)
        classes.append("")
    for label, values in QUOTED_TABLE2.items():
        record = {"source": "quoted from the paper", "row": label}
        shown: dict[str, str] = {}
        _quoted_cells(values, tasks, record, shown, digits=2)
        average = mean_of(values)
        record[mean_column] = average
        record["paper's average (9 tasks)"] = QUOTED_TABLE2_AVERAGE[label]
        shown[mean_column] = format_cell(average)
        shown["paper's average (9 tasks)"] = f"{QUOTED_TABLE2_AVERAGE[label]:.2f}"
        frame_rows.append(record)
        display_rows.append(shown)
        labels.append(f"{label} (quoted from the paper)")
        groups.append(group_quoted)
        classes.append("quoted")
    columns = [*tasks, mean_column, "paper's average (9 tasks)"]
    notes = ["Rows marked 'quoted from the paper' are copied from the paper's Table 2 as printed; "
             + ("'mean over these tasks' is computed here over the columns shown, for every row." if averaged == tasks
                else f"'mean over the learnt tasks' is computed here over {', '.join(averaged)}, for every row, "
                     f"the quoted ones too ({', '.join(t for t in tasks if t not in averaged)}: not learnt by this "
                     "run, so it has no 'bad' subnetworks there).")]
    if metrics:
        notes.append("Metric per task (this run): "
                     + ", ".join(f"{t} {metric_name(metrics[t])}" for t in tasks if t in metrics) + ".")
    return Table("table2_bad_vs_baselines", "'Bad' subnetworks against baselines (like the paper's Table 2)",
                 "How trainable the worst subnetworks are: the 'bad' masks re-fine-tuned, against a majority "
                 "class, a randomly initialised encoder with a random s-mask of the 'bad' size, and the GLUE "
                 "baselines the paper quotes.",
                 pd.DataFrame(frame_rows), pd.DataFrame(display_rows, columns=columns, index=labels),
                 groups, classes, notes)


EMPTY_MASK = 0.02  # a good mask keeping less than this fraction of the body weights is (nearly) no network


def uninformative_tasks(cells: pd.DataFrame, metrics: dict[str, str] | None = None) -> list[str]:
    """One line per task whose good/random/bad comparison cannot say anything, and why.

    The search keeps pruning while the score stays above 90% of the full model's. A fine-tuned model no
    better than the majority class keeps that score with nothing left, so its good mask is (nearly) empty
    and random and bad, drawn at the same size, are the same empty network. Both signs are checked: the
    full model's mean not above the majority class's by more than its std over seeds (or 0.01), and a
    good mask of either method keeping under 2% of the encoder-body weights.
    """
    metrics = metrics or {}
    lines = []
    for task in task_order(cells["task"]) if not cells.empty else []:
        reasons = []
        full = _lookup(cells, task=task, method="none", subnetwork="full", mode="finetuned")
        majority = _lookup(cells, task=task, method="majority", mode="baseline")
        metric = metrics.get(task, "score")
        if not full.empty and not majority.empty:
            mean, std, floor = full["mean"].iloc[0], full["std"].iloc[0], majority["mean"].iloc[0]
            margin = max(0.01, 0.0 if pd.isna(std) else float(std))
            if mean - floor <= margin:
                reasons.append(f"the fine-tuned model's {metric} ({format_cell(mean, std)}) is not above the majority "
                               f"class's ({floor:.3f}) by more than its spread over seeds")
        for method, label in (("structured", "s-pruning"), ("magnitude", "m-pruning")):
            good = _lookup(cells, task=task, method=method, subnetwork="good", mode="pruned")
            if not good.empty and good["fraction_kept"].iloc[0] < EMPTY_MASK:
                reasons.append(f"the {label} search kept {100 * good['fraction_kept'].iloc[0]:.1f}% of the "
                               "encoder-body weights")
        if reasons:
            lines.append(f"{task}: {'; '.join(reasons)}. Any subnetwork passes the search's 90% criterion, so "
                         "good, random and bad are (nearly) the same empty network and their comparison says "
                         "nothing about this task; it needs more training data or epochs to be learnt first.")
    return lines


def sizes_table(cells: pd.DataFrame) -> Table:
    """Fraction of encoder-body weights each subnetwork keeps (mean ± std over seeds), in %."""
    tasks = task_order(cells["task"]) if not cells.empty else []
    lottery = cells[cells["mode"].isin(["pruned", "retrained"]) & ~cells["method"].isin(["none", "majority"])]
    # the mask is the same whichever way it is evaluated: take the pruned cells where they exist
    lottery = lottery.sort_values("mode").drop_duplicates(["task", "method", "subnetwork"], keep="first")
    specs = []
    for spec in TABLE3_ROWS:
        if spec.mode == "pruned" and not _lookup(lottery, method=spec.method, subnetwork=spec.subnetwork).empty:
            specs.append(spec)
    frame_rows, display_rows = [], []
    for spec in specs:
        record = {"group": spec.group, "method": spec.method, "subnetwork": spec.subnetwork}
        shown = {}
        for task in tasks:
            cell = _lookup(lottery, task=task, method=spec.method, subnetwork=spec.subnetwork)
            mean, std = ((cell["fraction_kept"].iloc[0], cell["fraction_kept_std"].iloc[0]) if not cell.empty
                         else (math.nan, math.nan))
            record.update({f"{task} fraction_kept": mean, f"{task} fraction_kept std": std})
            shown[task] = format_cell(100 * mean, 100 * std, digits=1) + ("%" if not math.isnan(mean) else "")
        frame_rows.append(record)
        display_rows.append(shown)
    labels = [s.label.split(" (")[0] for s in specs]
    return Table("sizes", "Size of the subnetworks: % of encoder-body weights kept",
                 "Mean ± std over seeds of the fraction of encoder-body weights (embeddings excluded) each "
                 "subnetwork keeps; good, random and bad of one method have the same size by construction. A "
                 "super-survivor mask is one per task (kept in every seed): its size is shown alone.",
                 pd.DataFrame(frame_rows), pd.DataFrame(display_rows, columns=tasks, index=labels),
                 [s.group for s in specs])


def longer_table(rows: pd.DataFrame, *, expected_n: int | None = None) -> Table:
    """The metric after every epoch of the longer re-fine-tuning (mode ``retrained-long``; appendix D),
    mean ± std over seeds, with the paper's appendix D means quoted below."""
    long = rows[rows["mode"] == "retrained-long"]
    cells = cell_stats(long, by_epoch=True)
    tasks = task_order(cells["task"]) if not cells.empty else []
    frame_rows, display_rows, labels, groups, classes = [], [], [], [], []
    if not cells.empty:
        keys = cells[["method", "subnetwork"]].drop_duplicates().itertuples(index=False)
        for method, subnetwork in keys:
            part = cells[(cells["method"] == method) & (cells["subnetwork"] == subnetwork)]
            for epoch in sorted(part["epochs"].dropna().unique()):
                record = {"source": "this run", "method": method, "subnetwork": subnetwork, "epoch": int(epoch)}
                shown, means = {}, []
                for task in tasks:
                    cell = part[(part["task"] == task) & (part["epochs"] == epoch)]
                    mean, std, n = ((cell["mean"].iloc[0], cell["std"].iloc[0], int(cell["n"].iloc[0]))
                                    if not cell.empty else (math.nan, math.nan, 0))
                    record.update({f"{task} mean": mean, f"{task} std": std, f"{task} n": n})
                    shown[task] = format_cell(mean, std, n, expected_n) if n else "–"
                    means.append(mean)
                average = float(np.mean(means)) if not any(math.isnan(m) for m in means) else math.nan
                record["average"] = average
                shown["average"] = format_cell(average)
                frame_rows.append(record)
                display_rows.append(shown)
                labels.append(f"epoch {int(epoch)}")
                groups.append(f"This run: {method} / {subnetwork}, re-fine-tuned for longer")
                classes.append("")
    if tasks:
        for epoch, values in QUOTED_LONGER.items():
            record = {"source": "quoted from the paper", "method": "structured", "subnetwork": "bad", "epoch": epoch}
            shown = {}
            average = _quoted_cells(values, tasks, record, shown, digits=3)
            record["average"] = average
            shown["average"] = format_cell(average)
            frame_rows.append(record)
            display_rows.append(shown)
            labels.append(f"epoch {epoch} (quoted from the paper)")
            groups.append("Quoted from the paper (appendix D: 'bad' s-pruned, bert-base-uncased, mean of 5 seeds)")
            classes.append("quoted")
    columns = [*tasks, "average"] if tasks else []
    return Table("longer_retraining", "Longer re-fine-tuning (like the paper's appendix D)",
                 "The dev metric after every epoch of re-fine-tuning for longer; 'average' is over the columns' "
                 "tasks, computed here (also for the quoted rows).",
                 pd.DataFrame(frame_rows), pd.DataFrame(display_rows, columns=columns, index=labels),
                 groups, classes)


KEY_SUBNETWORKS = ("good", "random", "bad")


def key_results(cells: pd.DataFrame, metrics: dict[str, str] | None = None,
                not_learnt: dict[str, str] | None = None) -> pd.DataFrame:
    """The findings, one row per learnt task and pruning method: the full model's mean; good, random
    and bad subnetworks' means pruned and re-fine-tuned (``<sub> <mode>``); the good-bad gap pruned
    and re-fine-tuned and the fraction of it that re-fine-tuning closes (``gap closed``: 1 - gap
    re-fine-tuned / gap pruned, where the pruned gap is positive); the good mask's fraction of the
    encoder-body weights kept. Means over seeds of each task's main metric, with the seeds each covers
    (``<sub> <mode> n``, ``full n``). Tasks in ``not_learnt`` are left out (they have nothing to compare)."""
    metrics, not_learnt = metrics or {}, not_learnt or {}
    records = []
    tasks = [t for t in (task_order(cells["task"]) if not cells.empty else []) if t not in not_learnt]
    for task in tasks:
        full = _lookup(cells, task=task, method="none", subnetwork="full", mode="finetuned")
        for method in ("structured", "magnitude"):
            part = _lookup(cells, task=task, method=method)
            if part.empty or not part["subnetwork"].isin(KEY_SUBNETWORKS).any():
                continue
            record: dict[str, Any] = {"task": task, "method": method, "metric": metrics.get(task),
                                      "full": float(full["mean"].iloc[0]) if not full.empty else math.nan,
                                      "full n": int(full["n"].iloc[0]) if not full.empty else 0}
            for mode in ("pruned", "retrained"):
                for sub in KEY_SUBNETWORKS:
                    cell = part[(part["subnetwork"] == sub) & (part["mode"] == mode)]
                    record[f"{sub} {mode}"] = float(cell["mean"].iloc[0]) if not cell.empty else math.nan
                    record[f"{sub} {mode} n"] = int(cell["n"].iloc[0]) if not cell.empty else 0
                record[f"gap {mode}"] = record[f"good {mode}"] - record[f"bad {mode}"]
            gap = record["gap pruned"]
            record["gap closed"] = (1 - record["gap retrained"] / gap) if gap > 0 else math.nan
            good = part[(part["subnetwork"] == "good")]
            record["fraction kept"] = float(good["fraction_kept"].iloc[0]) if not good.empty else math.nan
            records.append(record)
    columns = ["task", "method", "metric", "full", *[f"{s} {m}" for m in ("pruned", "retrained") for s in KEY_SUBNETWORKS],
               "gap pruned", "gap retrained", "gap closed", "fraction kept", "full n",
               *[f"{s} {m} n" for m in ("pruned", "retrained") for s in KEY_SUBNETWORKS]]
    return pd.DataFrame(records, columns=columns)


def seeds_note(n: int, expected_n: int | None) -> str:
    """``" (n=1 of 3)"`` where a mean covers fewer seeds than the configured ``expected_n``, else ``""``."""
    return f" (n={n} of {expected_n})" if expected_n and 0 < n < expected_n else ""


def ordering(values: dict[str, float], digits: int = 3, notes: dict[str, str] | None = None) -> str:
    """``{"good": .8, "random": .7, "bad": .5}`` -> ``"good 0.800 > random 0.700 > bad 0.500"`` (best
    first; ``=`` between equal means); those without a value yet are named after the others
    (``"good 0.800 > random 0.700; bad not yet"``), and ``–`` stands for none at all. ``notes``: text
    after a value (``{"bad": " (n=1 of 3)"}``)."""
    notes = notes or {}
    known = {k: v for k, v in values.items() if not math.isnan(v)}
    if not known:
        return "–"
    ranked = sorted(known.items(), key=lambda item: -item[1])
    text = f"{ranked[0][0]} {ranked[0][1]:.{digits}f}{notes.get(ranked[0][0], '')}"
    for (_, previous), (name, value) in zip(ranked, ranked[1:]):
        sign = "=" if round(previous, digits) == round(value, digits) else ">"
        text += f" {sign} {name} {value:.{digits}f}{notes.get(name, '')}"
    pending = [k for k in values if k not in known]
    return text + (f"; {', '.join(pending)} not yet" if pending else "")
