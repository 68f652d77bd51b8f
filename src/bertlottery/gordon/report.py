"""The Compressing-BERT section of the study report (Gordon et al. 2020, "G" below: Tables 1-3,
Figs. 1-5 and 7-9), with the fine-tuning budgets and seeds each variant had and the paper's Table 1
(`bertlottery.gordon.paper`) beside the run's.

`report_section(run, out_dir)` is the section `bertlottery.report` builds for every run (it returns
None for a run that is not a Gordon study); `write_page` writes the section alone as one HTML page
(``bertlottery gordon analyse``). Reading is `collect` (files of the run, never a model); every table
and figure below it is a pure function of DataFrames and arrays.

Example:
    >>> data = collect(load_run("runs/gordon-minilm"))             # doctest: +SKIP
    >>> fig = pretrain_loss_figure(data.pretrain)                  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import runs
from ..report.tables import rate_text

if TYPE_CHECKING:
    from ..report.rundata import RunData

__all__ = [
    "GordonData",
    "collect",
    "report_section",
    "write_page",
    "pretrain_table",
    "table1_display",
    "budget_table",
    "cautions",
    "task_colour",
    "movement_table",
    "weights_table",
    "pretrain_loss_figure",
    "average_figure",
    "fits_figure",
    "similarity_figure",
    "mask_difference_figure",
    "before_pruning_figure",
    "oneshot_figure",
    "head_rates_figure",
    "movement_epochs_figure",
    "movement_magnitude_figure",
    "heatmaps_figure",
]

TITLE = "Compressing BERT: pruning during pre-training (Gordon et al. 2020)"
METHOD_ORDER = ["gmp-pretrain", "information-deletion", "information-deletion-matched", "gmp-downstream",
                "random-pretrain", "oneshot-pretrain"]
# the paper's colours (its Figure 1: blue, orange, green, red); the matched-budget control is
# information deletion's orange, dashed
COLOURS = {"gmp-pretrain": "#1c7ed6", "information-deletion": "#f08c00", "information-deletion-matched": "#f08c00",
           "gmp-downstream": "#2f9e44", "random-pretrain": "#e03131", "oneshot-pretrain": "#7048e8",
           "gmp": "#1c7ed6", "random": "#e03131", "oneshot": "#7048e8"}
STYLES = {"information-deletion-matched": "o--"}
# the paper's fine-tuning budgets (G§3.2-3.4, Fig. 3), beside the run's in the budget table
PAPER_BUDGETS = {"gmp-pretrain": "3", "random-pretrain": "3", "oneshot-pretrain": "-",
                 "information-deletion": "13; 15 from 70%", "information-deletion-matched": "- (a control added here)",
                 "gmp-downstream": "3 + 5; 3 + 7 from 80%", "epochs-before-pruning": "3 to 12, + 2, at 60%"}


def task_colour(task: str) -> str:
    """One colour per task, the same in every figure of the report (`bertlottery.report.figures`)."""
    from ..report.figures import task_colour as report_task_colour

    return report_task_colour(task)


@dataclass
class GordonData:
    """What the section shows, read from a run directory."""

    results: pd.DataFrame  # the results table's rows of the Gordon stages
    pretrain: pd.DataFrame  # one row per finished pre-training run: method, sparsity, losses, seconds, ...
    head_rates: pd.DataFrame  # method, sparsity, layer, head, rate
    weights: pd.DataFrame  # name, mean, std, zeros (the unpruned run's start: the pre-trained model)
    similarity: pd.DataFrame  # method, sparsity, layer, cosine (layer 0: embeddings; "mean": layers 1..L)
    selections: list[dict[str, Any]]
    heatmaps: dict[float, dict[str, np.ndarray]]  # GMP sparsity -> key, embeddings, embedding_lengths
    head_stage: dict[str, Any] | None
    histories: dict[tuple[str, float], list[dict]] = field(default_factory=dict)  # (task, lr) -> epochs (unpruned)
    missing: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the run's config, as written to config.json
    oneshot: dict[str, Any] | None = None  # G Fig. 5: `bertlottery.gordon.analysis.oneshot_curve`'s record
    no_stages: str | None = None  # why the stage files are absent (a copy of results and config alone), or None


def _read(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


def collect(run: RunData) -> GordonData | None:
    """Read a run's Gordon artifacts (``run``: `bertlottery.report.rundata.load_run`'s); None when
    the run is not a Gordon study."""
    if not run.config or not run.config.get("gordon"):
        return None
    missing: list[str] = []
    by_kind: dict[str, list] = {}
    for stage in run.stages:
        if stage.kind.startswith("gordon"):
            by_kind.setdefault(stage.kind, []).append(stage)
    for kind, stages in by_kind.items():
        left = [s for s in stages if s.state != "done"]
        if left:
            failed = sum(1 for s in left if s.state == "failed")
            missing.append(f"{len(left)} of {len(stages)} {kind} stages not finished"
                           + (f" ({failed} failed)" if failed else ""))
    done = {kind: [s for s in stages if s.state == "done"] for kind, stages in by_kind.items()}

    pre_rows, rate_rows, heatmaps, weights = [], [], {}, pd.DataFrame(columns=["name", "mean", "std", "zeros"])
    for stage in done.get("gordon-pretrain", []):
        metrics = _read(stage.folder / runs.METRICS_FILE)
        method, sparsity = stage.keys["method"], float(stage.keys["sparsity"])
        pre_rows.append({"method": method, "sparsity": sparsity, "seed": stage.keys.get("seed"),
                         "loss_start": metrics["pretrain_dev_loss_start"], "loss": metrics["pretrain_dev_loss"],
                         "sparsity_reached": metrics["sparsity_reached"], "steps": metrics["steps"],
                         "seconds": metrics["train_seconds"]})
        analysis = _read(stage.folder / runs.ANALYSIS_FILE)
        if analysis.get("head_prune_rates") is not None:
            rates = np.asarray(analysis["head_prune_rates"])
            rate_rows += [{"method": method, "sparsity": sparsity, "layer": layer, "head": head,
                           "rate": float(rates[layer, head])}
                          for layer in range(rates.shape[0]) for head in range(rates.shape[1])]
        if method == "gmp":
            with np.load(stage.folder / runs.HEATMAPS_FILE) as arrays:
                heatmaps[sparsity] = {k: arrays[k].astype(np.float32) for k in arrays.files}
            if sparsity == 0:
                weights = pd.DataFrame(analysis["weights_start"])
    sim_rows = []
    for stage in done.get("gordon-similarity", []):
        record = _read(stage.folder / runs.SIMILARITY_FILE)
        for layer, value in enumerate(record["layers"]):
            sim_rows.append({"method": record["method"], "sparsity": float(record["sparsity"]), "layer": str(layer),
                             "cosine": value})
        sim_rows.append({"method": record["method"], "sparsity": float(record["sparsity"]), "layer": "mean",
                         "cosine": record["mean"]})
    selections = [_read(s.folder / runs.SELECTION_FILE) for s in done.get("gordon-select", [])]
    oneshot = _read(done["gordon-oneshot"][0].folder / runs.ONESHOT_FILE) if done.get("gordon-oneshot") else None
    head = None
    if done.get("gordon-head"):
        head = _read(done["gordon-head"][0].folder / runs.METRICS_FILE)
    histories = {}
    for stage in done.get("gordon-finetune", []):  # the unpruned runs record sort-order movement per epoch
        if stage.keys.get("method") == "gmp-pretrain" and stage.keys.get("subnetwork") == "sparsity-0":
            epochs = _read(stage.folder / runs.HISTORY_FILE)["epochs"]
            if epochs and "sort_order" in epochs[0]:
                histories[(stage.task, float(stage.keys["learning_rate"]))] = epochs
    if by_kind:  # only the stages of the run's graph: a changed config leaves others' rows behind
        gordon_ids = {s.id for stages in by_kind.values() for s in stages}
        ours = run.results["stage_id"].isin(gordon_ids)
    else:  # a copy of the run's results and config alone: the rows name their stages' kinds
        ours = run.results["stage_id"].astype(str).str.split("/").str[0].str.startswith("gordon")
    no_stages = None
    if not (run.run_dir / runs.STAGES_DIR).is_dir():
        no_stages = (f"{run.run_dir} has no {runs.STAGES_DIR}/ folder, where the stages keep their records (a copy "
                     "of the run's results and config alone)")
    results = run.results[ours].reset_index(drop=True)
    return GordonData(
        results=results,
        pretrain=pd.DataFrame(pre_rows, columns=["method", "sparsity", "seed", "loss_start", "loss",
                                                 "sparsity_reached", "steps", "seconds"]),
        head_rates=pd.DataFrame(rate_rows, columns=["method", "sparsity", "layer", "head", "rate"]),
        weights=weights,
        similarity=pd.DataFrame(sim_rows, columns=["method", "sparsity", "layer", "cosine"]),
        selections=selections, heatmaps=heatmaps, head_stage=head, histories=histories, missing=missing,
        config=dict(run.config), oneshot=oneshot, no_stages=no_stages)


# ---- tables -------------------------------------------------------------------------------------------

def _table(name: str, title: str, caption: str, frame: pd.DataFrame, display: pd.DataFrame, **kw):
    from ..report.tables import Table

    return Table(name=name, title=title, caption=caption, frame=frame, display=display, **kw)


def _method_key(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def pretrain_table(pretrain: pd.DataFrame, head: dict[str, Any] | None = None):
    """The pre-training runs: dev loss at the start and the end, the sparsity reached, the time."""
    frame = pretrain.sort_values(["method", "sparsity"], key=lambda c: c.map(_method_key) if c.name == "method" else c)
    display = pd.DataFrame({
        "sparsity reached": frame["sparsity_reached"].map("{:.1%}".format).values,
        "dev loss at start": frame["loss_start"].map("{:.3f}".format).values,
        "pre-training dev loss": frame["loss"].map("{:.3f}".format).values,
        "steps": frame["steps"].astype(int).values,
        "minutes": (frame["seconds"] / 60).map("{:.1f}".format).values,
    }, index=[f"{m} {s:.0%}" for m, s in zip(frame["method"], frame["sparsity"])])
    notes = []
    if head:
        notes.append(f"A new MLM head was trained alone first (encoder frozen): dev loss "
                     f"{head['pretrain_dev_loss_start']:.3f} -> {head['pretrain_dev_loss']:.3f}.")
    return _table("gordon-pretraining", "Continued pre-training.",
                  "MLM loss per masked token on the same masked dev blocks for every run.", frame, display,
                  notes=notes)


def _paper_cell(paper: pd.DataFrame | None, method: str, sparsity: float, column: str) -> float | None:
    if paper is None or column not in paper.columns:
        return None
    rows = paper[(paper["method"] == method) & np.isclose(paper["sparsity"], sparsity)]
    value = rows[column].iloc[0] if len(rows) else None
    return None if value is None or pd.isna(value) else float(value)


def table1_display(t1: pd.DataFrame, paper: pd.DataFrame | None = None):
    """G Table 1: pre-training loss, each task's dev metric | training loss, and their average, with
    the paper's value in brackets where it has one (``paper``: `bertlottery.gordon.paper.table1`).

    The paper gives accuracy for every task, CoLA's too: a task whose metric is not accuracy shows
    its accuracy beside it, compared with the paper's. The paper's average is taken over the run's
    tasks that it has, so that the two averages are of the same tasks."""
    from ..report.tables import metric_name
    from ..tasks import get_task
    from .analysis import table1_tasks

    def number(v, scale=100.0, digits=1) -> str:
        return "-" if v is None or pd.isna(v) else f"{scale * v:.{digits}f}"

    tasks = table1_tasks(t1)
    in_paper = [t for t in tasks if paper is not None and t in paper.columns]
    frame = t1.sort_values(["method", "sparsity"], key=lambda c: c.map(_method_key) if c.name == "method" else c)
    cells: dict[str, list[str]] = {"pre-train loss": []}
    for task in [*tasks, "average"]:
        label = "average" if task == "average" else f"{task} ({metric_name(get_task(task).primary_metric)})"
        cells[label] = []
    for _, row in frame.iterrows():
        method, sparsity = row["method"], row["sparsity"]
        quoted = _paper_cell(paper, method, sparsity, "pretrain_dev_loss")
        cells["pre-train loss"].append(number(row["pretrain_dev_loss"], 1.0, 2)
                                       + (f" [{quoted:.2f}]" if quoted is not None else ""))
        for task in tasks:
            text = f"{number(row[task])} | {number(row[f'{task} train_loss'], 1.0, 2)}"
            accuracy = row.get(f"{task} accuracy")
            if accuracy is not None and not pd.isna(accuracy):
                text += f" (accuracy {number(accuracy)})"
            p_acc = _paper_cell(paper, method, sparsity, task)
            if p_acc is not None:
                p_loss = _paper_cell(paper, method, sparsity, f"{task} train_loss")
                text += f" [{100 * p_acc:.1f} | {p_loss:.2f}]"
            cells[f"{task} ({metric_name(get_task(task).primary_metric)})"].append(text)
        text = f"{number(row['average'])} | {number(row['average train_loss'], 1.0, 2)}"
        quoted = [(_paper_cell(paper, method, sparsity, t), _paper_cell(paper, method, sparsity, f"{t} train_loss"))
                  for t in in_paper]
        if quoted and all(a is not None for a, _ in quoted):
            text += (f" [{100 * np.mean([a for a, _ in quoted]):.1f} | {np.mean([l for _, l in quoted]):.2f}]")
        cells["average"].append(text)
    display = pd.DataFrame(cells, index=[f"{s:.0%}" for s in frame["sparsity"]])
    notes = []
    if paper is not None:
        from .paper import SOURCE

        notes.append(f"In brackets: {SOURCE}, BERT-Base, accuracy for every task (CoLA's too) | training loss; "
                     + (f"its average over {', '.join(in_paper)} (accuracy for all, where ours averages each "
                        "task's own metric: compare the tasks, not the averages, where they differ). "
                        if in_paper else "none of this run's tasks. ")
                     + "A task the paper did not run, or a variant it has no row for, has no brackets.")
    return _table("gordon-table1", "Table 1 (Gordon et al.).",
                  "Dev metric (x100, best learning rate) | mean training loss over the whole training set, per "
                  "pruning variant and sparsity.", frame, display, groups=list(frame["method"]), notes=notes)


def budget_table(results: pd.DataFrame, config: dict[str, Any]):
    """The fine-tuning epochs each variant had, per task, read from the results (``epochs``: in all,
    before and after pruning for gmp-downstream), beside the paper's; and the learning rates."""
    from ..report.tables import task_order
    from .names import BEFORE_PRUNING

    rows = results[results["metric"] == "train_loss"].copy()
    rows["sparsity"] = rows["subnetwork"].str.removeprefix("sparsity-").astype(float)
    downstream = (config.get("gordon") or {}).get("downstream") or {}
    more = downstream.get("after_epochs")
    tasks = task_order(rows["task"]) if not rows.empty else []
    cells: dict[str, list[str]] = {task: [] for task in tasks}
    methods = sorted(rows["method"].unique(), key=_method_key)
    for method in methods:
        for task in tasks:
            group = rows[(rows["method"] == method) & (rows["task"] == task)]
            by_epochs = group.groupby("epochs")["sparsity"].agg(["min", "max"]).reset_index()
            parts = []
            for e in by_epochs.itertuples():
                epochs = int(e.epochs)
                if method == "gmp-downstream" and more is not None:
                    high = e.min >= downstream.get("after_high_from", 1.0)
                    after = downstream.get("after_epochs_high", more) if high else more
                    shown = f"{epochs - after} + {after}"
                elif method == BEFORE_PRUNING:
                    more_fig = downstream.get("before_pruning_more_epochs", 2)
                    shown = f"{epochs - more_fig} + {more_fig}"
                else:
                    shown = str(epochs)
                span = f"{e.min:.0%}" if e.min == e.max else f"{e.min:.0%}-{e.max:.0%}"
                parts.append(f"{shown} ({span})" if len(by_epochs) > 1 and method != BEFORE_PRUNING else shown)
            text = "; ".join(parts) if parts else "-"
            if method == BEFORE_PRUNING and parts:  # one sparsity for every point
                text += f", at {group['sparsity'].iloc[0]:.0%}"
            cells[task].append(text)
    display = pd.DataFrame(cells, index=methods)
    display["paper"] = [PAPER_BUDGETS.get(m, "-") for m in methods]
    rates = downstream.get("learning_rates") or []
    frame = display.reset_index(names="method")
    seeds = config.get("seeds") or []
    notes = [f"Seeds: {', '.join(map(str, seeds))} ({len(seeds)} in all; pre-training and fine-tuning share each)."]
    notes += [f"Learning rates: {', '.join(rate_text(r) for r in rates)}" + (" (one rate: no sweep)" if len(rates) == 1
             else " (each run at every rate, the best dev result kept)") + "; the paper swept 2, 3, 4 and 5e-5."]
    return _table("gordon-budgets", "Fine-tuning budgets.",
                  "Fine-tuning epochs per variant and task, from the results (a + b: a before pruning, b after; "
                  "sparsities in brackets where the budget changes with sparsity), and the paper's.", frame, display,
                  notes=notes)


def cautions(results: pd.DataFrame, config: dict[str, Any]) -> list[str]:
    """What a reader must know before comparing the section's numbers: the seeds, an unmatched
    information-deletion budget, one learning rate, capped training sets."""
    from .names import MATCHED_DELETION

    lines = []
    seeds = config.get("seeds") or (sorted(results["seed"].dropna().unique()) if not results.empty else [])
    if len(seeds) == 1:
        lines.append(f"One seed ({seeds[0]}): every number is a single fine-tuning run, with no spread to judge a "
                     "difference by; differences of a point or two between variants or sparsities may be noise.")
    epochs = (results[results["metric"] == "train_loss"].groupby("method")["epochs"].agg(["min", "max"])
              if not results.empty else pd.DataFrame(columns=["min", "max"]))
    if "information-deletion" in epochs.index and "gmp-pretrain" in epochs.index:
        deletion, pruned = epochs.loc["information-deletion"], epochs.loc["gmp-pretrain"]
        if (deletion["min"], deletion["max"]) != (pruned["min"], pruned["max"]):
            control = (f"; {MATCHED_DELETION} is the same deletion at the pruned models' budget"
                       if MATCHED_DELETION in epochs.index else
                       f"; add the {MATCHED_DELETION} variant for a control at the pruned models' budget")
            def span(e) -> str:
                return f"{e['min']}" if e["min"] == e["max"] else f"{e['min']}-{e['max']}"

            lines.append(f"Information deletion was fine-tuned for {span(deletion)} epochs, the pruned models for "
                         f"{span(pruned)} (as the paper did, to fit the training "
                         "data): the two differ in training length as well as in the mask" + control + ".")
    rates = ((config.get("gordon") or {}).get("downstream") or {}).get("learning_rates") or []
    if len(rates) == 1:
        lines.append(f"One learning rate ({rate_text(rates[0])}) for every run: the paper kept the best of four.")
    train = config.get("train") or {}
    caps = {task: over["max_train_examples"] for task, over in (train.get("per_task") or {}).items()
            if over.get("max_train_examples")}
    if train.get("max_train_examples") or caps:
        shown = ", ".join(f"{t} {n:,}" for t, n in caps.items()) or f"{train['max_train_examples']:,}"
        lines.append(f"Training sets capped ({shown} examples): the paper trains on the whole of each.")
    return lines


def movement_table(selections: list[dict[str, Any]]):
    """G Table 2: sort-order movement (% of the matrix size) during fine-tuning of the unpruned
    checkpoint, mean ± std over all pruned-tensor weights, per learning rate and task."""
    rows = [{"task": s["task"], "learning_rate": r["learning_rate"], "mean": r["sort_order"]["mean"],
             "std": r["sort_order"]["std"]}
            for s in selections if s["method"] == "gmp-pretrain" and s["sparsity"] == 0
            for r in s["runs"] if r.get("sort_order")]
    frame = pd.DataFrame(rows, columns=["task", "learning_rate", "mean", "std"])
    display = frame.assign(cell=[f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(frame["mean"], frame["std"])])
    display = display.pivot(index="learning_rate", columns="task", values="cell") if not frame.empty else pd.DataFrame()
    display.index = [f"learning rate {rate_text(lr)}" for lr in display.index]  # the row label says what it is
    return _table("gordon-table2", "Table 2 (Gordon et al.).",
                  "How far weights move in their matrix's magnitude order during fine-tuning (% of the matrix size).",
                  frame, display)


def weights_table(weights: pd.DataFrame):
    """G Table 3: mean and std of every pruned matrix of the pre-trained model."""
    display = pd.DataFrame({"mean": weights["mean"].map("{:.4f}".format).values,
                            "std": weights["std"].map("{:.3f}".format).values}, index=list(weights["name"]))
    return _table("gordon-table3", "Table 3 (Gordon et al.).",
                  "Weight mean and standard deviation per matrix of the checkpoint pre-training started from.",
                  weights, display)


def _lr_table(sweep: pd.DataFrame):
    frame = sweep.sort_values(["task", "method", "sparsity", "learning_rate"],
                              key=lambda c: c.map(_method_key) if c.name == "method" else c)
    display = pd.DataFrame({"learning rate": frame["learning_rate"].map(rate_text).values,
                            "dev": frame["dev"].map("{:.4f}".format).values,
                            "train loss": frame["train_loss"].map("{:.3f}".format).values,
                            "kept": frame["kept"].map({True: "yes", False: ""}).values},
                           index=[f"{m} {s:.0%}" for m, s in zip(frame["method"], frame["sparsity"])])
    rates = sorted(frame["learning_rate"].unique())
    if len(rates) == 1:
        title, caption = (f"Fine-tuning runs (one learning rate, {rate_text(rates[0])}: no sweep).",
                          "Every run at the config's one learning rate; the paper swept 2-5e-5 and kept the best dev "
                          "result.")
    else:
        title, caption = "Learning-rate sweep.", "Every run at every rate; the best dev metric is kept."
    return _table("gordon-lr-sweep", title, caption, frame, display, groups=list(frame["task"]))


# ---- figures ------------------------------------------------------------------------------------------

def _figure(width: float = 6.0, height: float = 3.6, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height), layout="constrained")
    return fig, [fig.add_subplot(1, cols, i + 1) for i in range(cols)]


def _percent_axis(ax) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("sparsity")


def pretrain_loss_figure(pretrain: pd.DataFrame):
    """Pre-training dev loss against sparsity, one line per pruning method (from the shared 0% run)."""
    fig, (ax,) = _figure()
    base = pretrain[pretrain["sparsity"] == 0]
    for method in sorted(pretrain["method"].unique()):
        rows = pd.concat([base, pretrain[(pretrain["method"] == method) & (pretrain["sparsity"] > 0)]])
        rows = rows.groupby("sparsity", as_index=False)["loss"].mean()
        ax.plot(rows["sparsity"], rows["loss"], "o-", color=COLOURS.get(method), label=method)
    _percent_axis(ax)
    ax.set_ylabel("pre-training dev loss")
    ax.legend()
    return fig


def _variant_lines(ax, t1: pd.DataFrame, column: str) -> None:
    for method in sorted(t1["method"].unique(), key=_method_key):
        rows = t1[t1["method"] == method].dropna(subset=[column])
        if method.endswith("-pretrain") and method != "gmp-pretrain":  # these start from the shared 0% run
            rows = pd.concat([t1[(t1["method"] == "gmp-pretrain") & (t1["sparsity"] == 0)].dropna(subset=[column]),
                              rows])
        ax.plot(rows["sparsity"], rows[column], STYLES.get(method, "o-"), color=COLOURS.get(method), label=method)
    _percent_axis(ax)


def average_figure(t1: pd.DataFrame, chance: float | None = None):
    """G Fig. 1: the average dev metric and training loss over tasks, per pruning variant; ``chance``:
    the majority class's average dev metric over the same tasks, drawn as a line."""
    fig, (left, right) = _figure(cols=2)
    _variant_lines(left, t1, "average")
    if chance is not None:
        from ..report.figures import fit_reference_lines

        left.axhline(chance, color="#495057", linestyle=":", linewidth=1.2, label="majority class")
        fit_reference_lines(left, [chance])
    left.set_ylabel("average dev metric over tasks")
    _variant_lines(right, t1, "average train_loss")
    right.set_ylabel("average training loss over tasks")
    left.legend(fontsize=8)
    return fig


def fits_figure(t1: pd.DataFrame, fits: pd.DataFrame, method: str = "information-deletion"):
    """G Fig. 2 left: dev metric against pre-training loss per task, with its least-squares line."""
    fig, (ax,) = _figure()
    rows = t1[t1["method"] == method]
    for fit in fits.itertuples():
        colour = task_colour(fit.task)
        points = rows[["pretrain_dev_loss", fit.task]].dropna()
        ax.plot(points["pretrain_dev_loss"], points[fit.task], "o", color=colour)
        xs = np.linspace(points["pretrain_dev_loss"].min(), points["pretrain_dev_loss"].max(), 10)
        ax.plot(xs, fit.intercept + fit.slope * xs, "-", color=colour, label=f"{fit.task}: slope {fit.slope:.3f}")
    ax.set_xlabel("pre-training dev loss")
    ax.set_ylabel(f"dev metric ({method})")
    ax.legend(fontsize=8)
    return fig


def similarity_figure(similarity: pd.DataFrame):
    """G Fig. 2 right: cosine similarity of hidden states to the unpruned model, per layer and averaged."""
    fig, (ax,) = _figure()
    gmp = similarity[similarity["method"] == "gmp"]
    layers = sorted({layer for layer in gmp["layer"] if layer != "mean"}, key=int)
    cmap = __import__("matplotlib").colormaps["viridis"]
    for i, layer in enumerate(layers):
        rows = gmp[gmp["layer"] == layer].sort_values("sparsity")
        label = "embeddings" if layer == "0" else f"layer {layer}"
        ax.plot(rows["sparsity"], rows["cosine"], "-", color=cmap(i / max(len(layers) - 1, 1)), lw=1, label=label)
    for method, style in (("gmp", "o-"), ("random", "s--"), ("oneshot", "^:")):
        rows = similarity[(similarity["method"] == method) & (similarity["layer"] == "mean")].sort_values("sparsity")
        if not rows.empty:
            ax.plot(rows["sparsity"], rows["cosine"], style, color="black", lw=2, label=f"{method}: mean of layers")
    _percent_axis(ax)
    ax.set_ylabel("cosine similarity to 0%")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _percent_tick(value: float, ticks) -> str:
    """``value`` (a fraction) as a percentage with as many decimals as the ticks' spacing needs.

    >>> [_percent_tick(v, [0.011, 0.012, 0.013]) for v in (0.011, 0.013)]
    ['1.1%', '1.3%']
    >>> _percent_tick(0.5, [0.0, 0.25, 0.5])
    '50%'
    """
    steps = [b - a for a, b in zip(ticks, ticks[1:]) if b > a]
    places = max(0, math.ceil(-math.log10(min(steps) * 100) - 1e-9)) if steps else 0
    return f"{value * 100:.{places}f}%"


def _percent_y(ax, label: str, decimals: int | None = None) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

    # ticks at whole multiples of 1, 2 or 5 of a power of ten, with the decimals their spacing needs
    # (matplotlib's own choice wrote 1.050%, 1.100%, ... for a narrow range)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
    if decimals is not None:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=decimals))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _percent_tick(value, ax.yaxis.get_majorticklocs())))
    ax.set_ylabel(label)


def mask_difference_figure(results: pd.DataFrame):
    """G Fig. 3 (left): how much the mask of pruning after fine-tuning differs from the pre-training one."""
    from ..report.tables import task_order

    fig, (ax,) = _figure()
    rows = results[(results["metric"] == "mask_difference") & (results["method"] == "gmp-downstream")].copy()
    rows["sparsity"] = rows["subnetwork"].str.removeprefix("sparsity-").astype(float)
    for task in task_order(rows["task"]):
        group = rows[rows["task"] == task].groupby("sparsity", as_index=False)["value"].mean()
        ax.plot(group["sparsity"], group["value"], "o-", color=task_colour(task), label=task)
    _percent_axis(ax)
    _percent_y(ax, "mask entries that differ (% of the pruned tensors' weights)")
    ax.legend(fontsize=8)
    return fig


def before_pruning_figure(selections: list[dict[str, Any]]):
    """G Fig. 3 (right): dev metric and mask difference against the epochs of fine-tuning before pruning."""
    from ..report.tables import metric_name, task_order
    from .names import BEFORE_PRUNING

    points = pd.DataFrame([{**next(r for r in s["runs"] if r["learning_rate"] == s["learning_rate"]),
                            "task": s["task"], "before": s["epochs_before_pruning"], "metric": s["metric"]}
                           for s in selections if s["method"] == BEFORE_PRUNING])
    fig, (left, right) = _figure(cols=2)
    for task in task_order(points["task"]):
        rows = points[points["task"] == task].sort_values("before")
        left.plot(rows["before"], rows["dev"], "o-", color=task_colour(task), label=f"{task} ({metric_name(rows['metric'].iloc[0])})")
        right.plot(rows["before"], rows["mask_difference"], "o-", color=task_colour(task), label=task)
    for ax in (left, right):
        ax.set_xticks(sorted(points["before"].unique()))
        ax.set_xlabel("epochs of fine-tuning before pruning")
    left.set_ylabel("dev metric after pruning and training on")
    _percent_y(right, "mask entries that differ from pre-training's (%)")
    left.legend(fontsize=8)
    return fig


def oneshot_figure(curve: dict[str, Any]):
    """G Fig. 5: the summed |w| one-shot magnitude pruning removes at each sparsity (right axis: as a
    percentage of the summed |w| of every pruned tensor)."""
    fig, (ax,) = _figure()
    total = curve["total_abs_sum"] or 1.0
    ax.plot(curve["sparsity"], curve["pruned_abs_sum"], "-", color=COLOURS["oneshot"])
    _percent_axis(ax)
    ax.set_ylabel("summed |w| of the weights pruned")
    share = ax.secondary_yaxis("right", functions=(lambda v: 100 * v / total, lambda p: p * total / 100))
    share.set_ylabel("% of the summed |w| of all")
    return fig


def head_rates_figure(head_rates: pd.DataFrame):
    """G Fig. 4 left: the mean, least and most pruned single head's share of weights pruned, per
    sparsity (left), and the same as points from the sparsity (right), where a spread of a fraction of
    a point, random pruning's, is as visible as GMP's."""
    fig, (left, right) = _figure(cols=2)
    methods = sorted(head_rates["method"].unique(), key=lambda m: _method_key(f"{m}-pretrain"))
    for i, method in enumerate(methods):
        stats = head_rates[head_rates["method"] == method].groupby("sparsity")["rate"].agg(["mean", "min", "max"])
        stats = stats.reset_index()
        colour = COLOURS.get(method)
        x = stats["sparsity"] + (i - (len(methods) - 1) / 2) * 0.01  # nudged apart: bars must not hide each other
        left.plot(stats["sparsity"], stats["mean"], "o-", color=colour, label=f"{method}: mean")
        left.fill_between(stats["sparsity"], stats["min"], stats["max"], color=colour, alpha=0.2,
                          label=f"{method}: least to most pruned head")
        offset = 100 * (stats["mean"] - stats["sparsity"])
        right.errorbar(x, offset, yerr=[100 * (stats["mean"] - stats["min"]), 100 * (stats["max"] - stats["mean"])],
                       fmt="o", color=colour, capsize=4, elinewidth=1.5, label=method)
    left.plot([0, 1], [0, 1], ":", color="#868e96", lw=1)
    right.axhline(0, color="#868e96", linestyle=":", lw=1)
    sparsities = sorted(head_rates["sparsity"].unique())
    right.set_xlim(sparsities[0] - 0.05, sparsities[-1] + 0.05)
    for ax in (left, right):
        _percent_axis(ax)
    right.set_xticks(sparsities)  # the nudged positions are not sparsities
    _percent_y(left, "share of a head's weights pruned", decimals=0)
    right.set_ylabel("pruned share minus sparsity (points)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    return fig


TABLE1_LINK = ("Table 1 (CSV)", "tables/gordon-table1.csv")


def _movement_epochs_data(histories: dict[tuple[str, float], list[dict]]) -> pd.DataFrame:
    """Figure 4 (right)'s points: the mean movement (a fraction of the matrix) per task, rate and epoch."""
    return pd.DataFrame([{"task": task, "learning_rate": lr, "epoch": e["epoch"], "movement_mean": e["sort_order"]["mean"]}
                         for (task, lr), epochs in histories.items() for e in epochs])


def _movement_magnitude_data(selections: list[dict[str, Any]]) -> pd.DataFrame:
    """Figure 7's points: per task, rate and magnitude bin, the bin's mean |w| and the movement's mean and std."""
    rows = []
    for task, run in _unpruned_runs(selections):
        bins = run["sort_order"].get("by_magnitude") or {}
        for magnitude, mean, std in zip(bins.get("mean_magnitude", []), bins.get("mean", []), bins.get("std", [])):
            rows.append({"task": task, "learning_rate": run["learning_rate"], "mean_magnitude": magnitude,
                         "movement_mean": mean, "movement_std": std})
    return pd.DataFrame(rows)


def _unpruned_runs(selections: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The unpruned checkpoint's fine-tuning runs that measured sort-order movement, in the paper's task
    order (as every other figure)."""
    from ..report.tables import task_order

    runs = [(s["task"], r) for s in selections if s["method"] == "gmp-pretrain" and s["sparsity"] == 0
            for r in s["runs"] if r.get("sort_order")]
    order = task_order(task for task, _ in runs)
    return sorted(runs, key=lambda tr: order.index(tr[0]))


def movement_epochs_figure(histories: dict[tuple[str, float], list[dict]]):
    """G Fig. 4 right: mean sort-order movement after every epoch of fine-tuning, per task and rate."""
    fig, (ax,) = _figure()
    styles, ticks = ["o-", "s--", "^:", "d-."], set()
    from ..report.tables import task_order

    rates = sorted({lr for _, lr in histories})
    order = task_order(task for task, _ in histories)
    for (task, lr), epochs in sorted(histories.items(), key=lambda item: (order.index(item[0][0]), item[0][1])):
        xs = [e["epoch"] for e in epochs]
        ticks.update(xs)
        ax.plot(xs, [100 * e["sort_order"]["mean"] for e in epochs], styles[rates.index(lr) % len(styles)],
                color=task_colour(task), label=f"{task} lr {rate_text(lr)}")
    ax.set_xticks(sorted(ticks))  # whole epochs only: a tick between two epochs marks nothing
    ax.set_xlabel("epochs of fine-tuning")
    ax.set_ylabel("mean movement (% of matrix)")
    ax.legend(fontsize=7)
    return fig


def movement_magnitude_figure(selections: list[dict[str, Any]]):
    """G Fig. 7: sort-order movement by starting magnitude (bins of each matrix's order)."""
    fig, (ax,) = _figure()
    for task, run in _unpruned_runs(selections):
        bins = run["sort_order"].get("by_magnitude")
        if not bins:
            continue
        mean, std = np.asarray(bins["mean"]) * 100, np.asarray(bins["std"]) * 100
        ax.plot(bins["mean_magnitude"], mean, "o-", ms=3, color=task_colour(task),
                label=f"{task} lr {rate_text(run['learning_rate'])}")
        ax.fill_between(bins["mean_magnitude"], np.maximum(mean - std, 0), mean + std, color=task_colour(task),
                        alpha=0.1)
    ax.set_xlabel("starting |w| (mean of the bin)")
    ax.set_ylabel("movement (% of matrix)")
    ax.legend(fontsize=7)
    return fig


def heatmaps_figure(heatmaps: dict[str, np.ndarray], title: str = ""):
    """G Figs. 8 and 9: |w| of layer 1's key projection (heads side by side) and of the word
    embeddings, subwords sorted by length (shortest at the top)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    key = heatmaps["key"]
    image = left.imshow(key, aspect="auto", cmap="magma", interpolation="nearest")
    left.set_title("layer 1 key projection |w| (columns: heads' outputs)", fontsize=9)
    left.set_xlabel("output dimension (heads stacked)")
    left.set_ylabel("input dimension")
    fig.colorbar(image, ax=left)
    emb, lengths = heatmaps["embeddings"], heatmaps["embedding_lengths"]
    image = right.imshow(emb, aspect="auto", cmap="magma", interpolation="nearest")
    ticks = np.linspace(0, len(lengths) - 1, 6).astype(int)
    right.set_yticks(ticks, [f"{lengths[t]:.1f}" for t in ticks])
    right.set_ylabel("mean subword length of the row group")
    right.set_xlabel("embedding dimension")
    right.set_title("word embeddings |w|, subwords sorted by length", fontsize=9)
    fig.colorbar(image, ax=right)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ---- the section --------------------------------------------------------------------------------------

def _chance(selections: list[dict[str, Any]], t1: pd.DataFrame) -> float | None:
    """The majority class's dev metric averaged over Table 1's tasks (None where a run predates it)."""
    from .analysis import table1_tasks

    by_task = {s["task"]: s["majority"] for s in selections if s.get("majority") is not None}
    tasks = table1_tasks(t1)
    return float(np.mean([by_task[t] for t in tasks])) if tasks and all(t in by_task for t in tasks) else None


# the section's experiments, each under its own heading and contents entry
EXPERIMENTS = {"budgets": "Budgets and seeds", "pretraining": "Pruning during pre-training",
               "downstream": "Fine-tuning the pruned checkpoints (Table 1, Figures 1-2)",
               "after": "Pruning after fine-tuning (Figure 3)", "movement": "Sort-order movement (Table 2, Figures 4 right, 7)",
               "weights": "Weights of the starting checkpoint (Table 3, Figures 5, 8, 9)", "runs": "Every run"}


def _body(data: GordonData, out_dir: Path) -> tuple[str, list[str]]:
    from markupsafe import Markup

    from ..report.html import caution_list, figure_html, paragraph, table_html
    from .analysis import loss_metric_fits, lr_sweep_table, table1
    from .names import BEFORE_PRUNING
    from .paper import table1 as paper_table1

    missing = list(data.missing)
    parts: dict[str, list[Any]] = {key: [] for key in EXPERIMENTS}
    without_stages: list[str] = []  # what a run folder without its stage files cannot show

    def lacking(item: str, reason: str) -> None:
        # without stages/ every stage file is absent: one line says so and names the items, not each its own reason
        if data.no_stages:
            without_stages.append(item)
        else:
            missing.append(f"{item}: {reason}")

    def grid(figures: list[Any]) -> Any:
        return Markup('<div class="grid">') + Markup("").join(figures) + Markup("</div>") if figures else Markup("")

    intro = paragraph(
        "Continued masked-language-model pre-training with gradual magnitude pruning (Zhu & Gupta's cubic "
        "schedule, a threshold per matrix unless the config says global), then fine-tuning each checkpoint "
        "on the tasks at every learning rate of the sweep, keeping the best dev result (Gordon et al., section 3). Variants: "
        "gmp-pretrain (mask held fixed), information-deletion (pruned weights zeroed but free to train), "
        "information-deletion-matched (the same, for the pruned models' epochs), "
        "gmp-downstream (fine-tuned, then pruned and trained on), random-pretrain (the same count per matrix, "
        "drawn at random).")
    caution = caution_list("Read these numbers with care:", cautions(data.results, data.config))
    if not data.results.empty:
        parts["budgets"].append(table_html(budget_table(data.results, data.config), out_dir))

    figures: list[Any] = []
    if data.pretrain.empty:
        lacking("the pre-training table and loss curve", "no finished pre-training run")
    else:
        parts["pretraining"].append(table_html(pretrain_table(data.pretrain, data.head_stage), out_dir))
        figures.append(figure_html(pretrain_loss_figure(data.pretrain), out_dir, "gordon-pretrain-loss",
                                   "Pre-training dev loss against sparsity.", data=data.pretrain))
    if data.similarity.empty:
        lacking("Figure 2 (right)", "no similarity stage finished")
    else:
        figures.append(figure_html(similarity_figure(data.similarity), out_dir, "gordon-figure2-similarity",
                                   "Figure 2 (right): cosine similarity of hidden states on pre-training dev text "
                                   "to the unpruned model, per layer and averaged over layers.", data=data.similarity))
    parts["pretraining"].append(grid(figures))
    if data.head_rates.empty:
        lacking("Figure 4 (left)", "no pruned pre-training run")
    else:  # two panels: the full width
        parts["pretraining"].append(figure_html(
            head_rates_figure(data.head_rates), out_dir, "gordon-figure4-heads",
            "Figure 4 (left): share of each attention head's weights pruned, mean over heads and the band from the "
            "least to the most pruned head; right: the same in points from the sparsity, where a narrow band (random "
            "pruning's) shows.", data=data.head_rates))

    t1 = table1(data.results)
    if t1.empty:
        missing.append("no downstream results yet (gordon-select stages)")
    else:
        parts["downstream"].append(table_html(table1_display(t1, paper_table1()), out_dir))
        chance = _chance(data.selections, t1)
        caption = "Figure 1: average dev metric (left) and training loss (right) over tasks."
        if chance is None:
            lacking("Figure 1's majority-class line", "the run's fine-tuning predates recording it")
        else:
            caption += f" Dotted: the majority class's average dev metric ({chance:.3f}), from the examples trained on."
        parts["downstream"].append(figure_html(average_figure(t1, chance), out_dir, "gordon-figure1", caption,
                                               data_links=[TABLE1_LINK]))
        fits = loss_metric_fits(data.results)
        if fits.empty:
            missing.append("Figure 2 (left): fewer than two information-deletion sparsities with a pre-training loss")
        else:
            parts["downstream"].append(grid([figure_html(
                fits_figure(t1, fits), out_dir, "gordon-figure2-fits",
                "Figure 2 (left): dev metric of information deletion against pre-training loss, with a "
                "least-squares line per task.", data=fits, data_links=[TABLE1_LINK])]))

    figures = []
    if ((data.results["metric"] == "mask_difference") & (data.results["method"] == "gmp-downstream")).any():
        figures.append(figure_html(mask_difference_figure(data.results), out_dir, "gordon-figure3",
                                   "Figure 3 (left): difference between the masks of pruning during pre-training and "
                                   "pruning after fine-tuning.",
                                   data=data.results[data.results["metric"] == "mask_difference"]))
    else:
        missing.append("Figure 3 (left): no gmp-downstream result with a mask difference")
    if any(s["method"] == BEFORE_PRUNING for s in data.selections):
        downstream = (data.config.get("gordon") or {}).get("downstream") or {}
        parts["after"].append(grid(figures))  # two panels: the full width
        figures = []
        parts["after"].append(figure_html(
            before_pruning_figure(data.selections), out_dir, "gordon-figure3-right",
            f"Figure 3 (right): fine-tuned for a number of epochs, pruned to "
            f"{downstream.get('before_pruning_sparsity', 0.6):.0%} by magnitude, trained "
            f"{downstream.get('before_pruning_more_epochs', 2)} more (the paper: 3 to 12 epochs before, 60%, 2 more, "
            "5e-5).", data_links=[("every run (CSV)", "tables/gordon-lr-sweep.csv")]))
    else:
        lacking("Figure 3 (right)", "not run (gordon.downstream.before_pruning_epochs)")
    parts["after"].append(grid(figures))

    histories = data.histories
    if histories:
        parts["movement"].append(table_html(movement_table(data.selections), out_dir))
        parts["movement"].append(grid([
            figure_html(movement_epochs_figure(histories), out_dir, "gordon-figure4-movement",
                        "Figure 4 (right): mean sort-order movement after each epoch of fine-tuning the unpruned "
                        "checkpoint.", data=_movement_epochs_data(histories)),
            figure_html(movement_magnitude_figure(data.selections), out_dir, "gordon-figure7",
                        "Figure 7: sort-order movement by starting magnitude (mean ± std per bin).",
                        data=_movement_magnitude_data(data.selections))]))
    else:
        lacking("Table 2, Figures 4 (right) and 7", "no unpruned fine-tuning run has finished")

    if not data.weights.empty:
        parts["weights"].append(table_html(weights_table(data.weights), out_dir))
    else:
        lacking("Table 3", "the unpruned (0%) GMP pre-training run has not finished")
    if data.oneshot is not None:
        parts["weights"].append(grid([figure_html(
            oneshot_figure(data.oneshot), out_dir, "gordon-figure5",
            f"Figure 5: the summed |w| one-shot magnitude pruning ({data.oneshot['scope']}) removes from the "
            "checkpoint pre-training starts from, at each sparsity.",
            data=pd.DataFrame({key: data.oneshot[key] for key in ("sparsity", "pruned_abs_sum")}).assign(
                fraction_of_abs_sum=lambda f: f["pruned_abs_sum"] / (data.oneshot["total_abs_sum"] or 1.0)))]))
    else:
        lacking("Figure 5", "no gordon-oneshot stage (the run predates it)")
    if data.heatmaps:
        for sparsity in sorted({min(data.heatmaps), max(data.heatmaps)}):
            parts["weights"].append(figure_html(
                heatmaps_figure(data.heatmaps[sparsity]), out_dir, f"gordon-heatmaps-{sparsity:g}",
                f"Figures 8 and 9: weight magnitudes after pre-training at {sparsity:.0%} (GMP)."))
    else:
        lacking("Figures 8 and 9", "no GMP pre-training run has finished")
    if data.selections:
        parts["runs"].append(table_html(_lr_table(lr_sweep_table(data.selections)), out_dir))
    else:
        lacking("every fine-tuning run's table", "no gordon-select stage finished")
    if without_stages:
        missing.insert(0, f"{data.no_stages}: not shown, as they are drawn from those records: "
                       f"{'; '.join(without_stages)}")

    shown = [key for key in EXPERIMENTS if any(str(part) for part in parts[key])]  # an empty grid is nothing
    contents = Markup('<nav class="contents"><strong>In this section</strong><ol>') + Markup("").join(
        Markup('<li><a href="#gordon-{}">{}</a></li>').format(key, EXPERIMENTS[key]) for key in shown) + Markup(
        "</ol></nav>")
    body = [intro, caution, contents]
    for key in shown:
        body.append(Markup('<h3 id="gordon-{}">{}</h3>').format(key, EXPERIMENTS[key]))
        body += parts[key]
    return str(Markup("").join(body)), missing


def report_section(run: RunData, out_dir: Path):
    """The report's section (see `bertlottery.report`): None when ``run`` is not a Gordon study."""
    from ..report.section import Section

    data = collect(run)
    if data is None:
        return None
    body, missing = _body(data, Path(out_dir))
    return Section(TITLE, body, missing, anchor="gordon")


def write_page(run_dir: str | Path, out: str | Path) -> tuple[Path, list[str]]:
    """The section alone as a self-contained HTML page; returns its path and what is missing."""
    import time

    from .. import __version__
    from ..errors import UserError
    from ..report.html import render_page
    from ..report.rundata import load_run

    run_dir, out = Path(run_dir), Path(out)
    section = report_section(load_run(run_dir), out.parent)
    if section is None:
        raise UserError(f"{run_dir} is not a Gordon study (its config has no gordon section).")
    page = render_page(title=TITLE, run_dir=str(run_dir), generated=time.strftime("%Y-%m-%d %H:%M"),
                       version=__version__, results_source=f"{runs.ROWS_DIR}/", summary="", problems=[], sections=[section])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out, section.missing
