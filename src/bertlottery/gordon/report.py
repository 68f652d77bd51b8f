"""The Compressing-BERT section of the study report (Gordon et al. 2020, "G" below: Tables 1-3,
Figs. 1-4 and 7-9).

`report_section(run, out_dir)` is the section `bertlottery.report` builds for every run (it returns
None for a run that is not a Gordon study); `write_page` writes the section alone as one HTML page
(``bertlottery gordon analyse``). Reading is `collect` (files of the run, never a model); every table
and figure below it is a pure function of DataFrames and arrays.

Example:
    >>> data = collect(load_run("runs/gordon-minilm"))             # doctest: +SKIP
    >>> fig = pretrain_loss_figure(data.pretrain)                  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import runs

if TYPE_CHECKING:
    from ..report.rundata import RunData

__all__ = [
    "GordonData",
    "collect",
    "report_section",
    "write_page",
    "pretrain_table",
    "table1_display",
    "movement_table",
    "weights_table",
    "pretrain_loss_figure",
    "average_figure",
    "fits_figure",
    "similarity_figure",
    "mask_difference_figure",
    "head_rates_figure",
    "movement_epochs_figure",
    "movement_magnitude_figure",
    "heatmaps_figure",
]

TITLE = "Compressing BERT: pruning during pre-training (Gordon et al. 2020)"
METHOD_ORDER = ["gmp-pretrain", "information-deletion", "gmp-downstream", "random-pretrain", "oneshot-pretrain"]
COLOURS = {"gmp-pretrain": "#1c7ed6", "information-deletion": "#f08c00", "gmp-downstream": "#2f9e44",
           "random-pretrain": "#e03131", "oneshot-pretrain": "#7048e8",
           "gmp": "#1c7ed6", "random": "#e03131", "oneshot": "#7048e8"}


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
    head = None
    if done.get("gordon-head"):
        head = _read(done["gordon-head"][0].folder / runs.METRICS_FILE)
    histories = {}
    for stage in done.get("gordon-finetune", []):  # the unpruned runs record sort-order movement per epoch
        if stage.keys.get("method") == "gmp-pretrain" and stage.keys.get("subnetwork") == "sparsity-0":
            epochs = _read(stage.folder / runs.HISTORY_FILE)["epochs"]
            if epochs and "sort_order" in epochs[0]:
                histories[(stage.task, float(stage.keys["learning_rate"]))] = epochs
    gordon_ids = {s.id for stages in by_kind.values() for s in stages}
    results = run.results[run.results["stage_id"].isin(gordon_ids)].reset_index(drop=True)
    return GordonData(
        results=results,
        pretrain=pd.DataFrame(pre_rows, columns=["method", "sparsity", "seed", "loss_start", "loss",
                                                 "sparsity_reached", "steps", "seconds"]),
        head_rates=pd.DataFrame(rate_rows, columns=["method", "sparsity", "layer", "head", "rate"]),
        weights=weights,
        similarity=pd.DataFrame(sim_rows, columns=["method", "sparsity", "layer", "cosine"]),
        selections=selections, heatmaps=heatmaps, head_stage=head, histories=histories, missing=missing)


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


def table1_display(t1: pd.DataFrame):
    """G Table 1: pre-training loss, each task's dev metric | training loss, and their average."""
    from ..tasks import get_task

    tasks = [c for c in t1.columns if c not in ("method", "sparsity", "pretrain_dev_loss", "average")
             and not c.endswith("train_loss")]
    frame = t1.sort_values(["method", "sparsity"], key=lambda c: c.map(_method_key) if c.name == "method" else c)
    cells = {"pre-train loss": frame["pretrain_dev_loss"].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}").values}
    for task in [*tasks, "average"]:
        metric = frame[task].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.1f}")
        loss = frame[f"{task} train_loss"].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")
        label = task if task == "average" else f"{task} ({get_task(task).primary_metric})"
        cells[label] = (metric + " | " + loss).values
    display = pd.DataFrame(cells, index=[f"{s:.0%}" for s in frame["sparsity"]])
    return _table("gordon-table1", "Table 1 (Gordon et al.).",
                  "Dev metric (x100, best learning rate) | mean training loss over the whole training set, per "
                  "pruning variant and sparsity.", frame, display, groups=list(frame["method"]))


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
    display.index = [f"{lr:g}" for lr in display.index]
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
    display = pd.DataFrame({"learning rate": frame["learning_rate"].map("{:g}".format).values,
                            "dev": frame["dev"].map("{:.4f}".format).values,
                            "train loss": frame["train_loss"].map("{:.3f}".format).values,
                            "kept": frame["kept"].map({True: "yes", False: ""}).values},
                           index=[f"{m} {s:.0%}" for m, s in zip(frame["method"], frame["sparsity"])])
    return _table("gordon-lr-sweep", "Learning-rate sweep.", "Every run; the best dev metric is kept.", frame,
                  display, groups=list(frame["task"]))


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
        ax.plot(rows["sparsity"], rows[column], "o-", color=COLOURS.get(method), label=method)
    _percent_axis(ax)


def average_figure(t1: pd.DataFrame):
    """G Fig. 1: the average dev metric and training loss over tasks, per pruning variant."""
    fig, (left, right) = _figure(cols=2)
    _variant_lines(left, t1, "average")
    left.set_ylabel("average dev metric")
    _variant_lines(right, t1, "average train_loss")
    right.set_ylabel("average training loss")
    left.legend(fontsize=8)
    return fig


def fits_figure(t1: pd.DataFrame, fits: pd.DataFrame, method: str = "information-deletion"):
    """G Fig. 2 left: dev metric against pre-training loss per task, with its least-squares line."""
    fig, (ax,) = _figure()
    rows = t1[t1["method"] == method]
    colours = iter(["#1c7ed6", "#e03131", "#2f9e44", "#f08c00", "#7048e8", "#0c8599"])
    for fit in fits.itertuples():
        colour = next(colours, "#495057")
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


def mask_difference_figure(results: pd.DataFrame):
    """G Fig. 3: how much the mask of pruning after fine-tuning differs from the pre-training one."""
    fig, (ax,) = _figure()
    rows = results[results["metric"] == "mask_difference"].copy()
    rows["sparsity"] = rows["subnetwork"].str.removeprefix("sparsity-").astype(float)
    for task, group in rows.groupby("task"):
        group = group.groupby("sparsity", as_index=False)["value"].mean()
        ax.plot(group["sparsity"], group["value"], "o-", label=task)
    _percent_axis(ax)
    ax.set_ylabel("fraction of mask entries that differ")
    ax.legend(fontsize=8)
    return fig


def head_rates_figure(head_rates: pd.DataFrame):
    """G Fig. 4 left: the mean, min and max fraction of single heads' weights pruned, per sparsity."""
    fig, (ax,) = _figure()
    for method, group in head_rates.groupby("method"):
        stats = group.groupby("sparsity")["rate"].agg(["mean", "min", "max"]).reset_index()
        colour = COLOURS.get(method)
        ax.plot(stats["sparsity"], stats["mean"], "o-", color=colour, label=f"{method}: mean")
        ax.fill_between(stats["sparsity"], stats["min"], stats["max"], color=colour, alpha=0.2,
                        label=f"{method}: min-max")
    ax.plot([0, 1], [0, 1], ":", color="#868e96", lw=1)
    _percent_axis(ax)
    ax.set_ylabel("fraction of a head's weights pruned")
    ax.legend(fontsize=8)
    return fig


def _unpruned_runs(selections: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(s["task"], r) for s in selections if s["method"] == "gmp-pretrain" and s["sparsity"] == 0
            for r in s["runs"] if r.get("sort_order")]


def movement_epochs_figure(histories: dict[tuple[str, float], list[dict]]):
    """G Fig. 4 right: mean sort-order movement after every epoch of fine-tuning, per task and rate."""
    fig, (ax,) = _figure()
    for (task, lr), epochs in sorted(histories.items()):
        xs = [e["epoch"] for e in epochs]
        ax.plot(xs, [100 * e["sort_order"]["mean"] for e in epochs], "o-", label=f"{task} lr {lr:g}")
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
        line, = ax.plot(bins["mean_magnitude"], mean, "o-", ms=3, label=f"{task} lr {run['learning_rate']:g}")
        ax.fill_between(bins["mean_magnitude"], np.maximum(mean - std, 0), mean + std, color=line.get_color(), alpha=0.1)
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

def _body(data: GordonData, out_dir: Path) -> tuple[str, list[str]]:
    from markupsafe import Markup

    from ..report.html import figure_html, paragraph, table_html
    from .analysis import loss_metric_fits, lr_sweep_table, table1

    missing = list(data.missing)
    parts: list[Any] = [paragraph(
        "Continued masked-language-model pre-training with gradual magnitude pruning (Zhu & Gupta's cubic "
        "schedule, a threshold per matrix unless the config says global), then fine-tuning each checkpoint "
        "on the tasks at every learning rate of the sweep, keeping the best dev result (Gordon et al., section 3). Variants: "
        "gmp-pretrain (mask held fixed), information-deletion (pruned weights zeroed but free to train), "
        "gmp-downstream (fine-tuned, then pruned and trained on), random-pretrain (the same count per matrix, "
        "drawn at random).")]
    figures: list[Any] = []
    if data.pretrain.empty:
        missing.append("no finished pre-training run")
    else:
        parts.append(table_html(pretrain_table(data.pretrain, data.head_stage), out_dir))
        figures.append(figure_html(pretrain_loss_figure(data.pretrain), out_dir, "gordon-pretrain-loss",
                                   "Pre-training dev loss against sparsity."))
    t1 = table1(data.results)
    if t1.empty:
        missing.append("no downstream results yet (gordon-select stages)")
    else:
        parts.append(table_html(table1_display(t1), out_dir))
        parts.append(figure_html(average_figure(t1), out_dir, "gordon-figure1",  # two panels: the full width
                                 "Figure 1: average dev metric (left) and training loss (right) over tasks."))
        fits = loss_metric_fits(data.results)
        if fits.empty:
            missing.append("Figure 2 (left): fewer than two information-deletion sparsities with a pre-training loss")
        else:
            figures.append(figure_html(fits_figure(t1, fits), out_dir, "gordon-figure2-fits",
                                       "Figure 2 (left): dev metric of information deletion against pre-training "
                                       "loss, with a least-squares line per task."))
    if data.similarity.empty:
        missing.append("Figure 2 (right): no similarity stage finished")
    else:
        figures.append(figure_html(similarity_figure(data.similarity), out_dir, "gordon-figure2-similarity",
                                   "Figure 2 (right): cosine similarity of hidden states on pre-training dev text "
                                   "to the unpruned model, per layer and averaged over layers."))
    if (data.results["metric"] == "mask_difference").any():
        figures.append(figure_html(mask_difference_figure(data.results), out_dir, "gordon-figure3",
                                   "Figure 3: difference between the masks of pruning during pre-training and "
                                   "pruning after fine-tuning."))
    else:
        missing.append("Figure 3: no gmp-downstream result with a mask difference")
    if data.head_rates.empty:
        missing.append("Figure 4 (left): no pruned pre-training run")
    else:
        figures.append(figure_html(head_rates_figure(data.head_rates), out_dir, "gordon-figure4-heads",
                                   "Figure 4 (left): fraction of each attention head's weights pruned."))
    histories = data.histories
    if histories:
        parts.append(table_html(movement_table(data.selections), out_dir))
        figures.append(figure_html(movement_epochs_figure(histories), out_dir,
                                   "gordon-figure4-movement", "Figure 4 (right): sort-order movement per epoch."))
        figures.append(figure_html(movement_magnitude_figure(data.selections), out_dir, "gordon-figure7",
                                   "Figure 7: sort-order movement by starting magnitude (mean ± std per bin)."))
    else:
        missing.append("Table 2, Figures 4 (right) and 7: no unpruned fine-tuning run has finished")
    parts.append(Markup('<div class="grid">') + Markup("").join(figures) + Markup("</div>"))
    if not data.weights.empty:
        parts.append(table_html(weights_table(data.weights), out_dir))
    if data.heatmaps:
        for sparsity in sorted({min(data.heatmaps), max(data.heatmaps)}):
            parts.append(figure_html(heatmaps_figure(data.heatmaps[sparsity]), out_dir,
                                     f"gordon-heatmaps-{sparsity:g}",
                                     f"Figures 8 and 9: weight magnitudes after pre-training at {sparsity:.0%} (GMP)."))
    else:
        missing.append("Figures 8 and 9: no GMP pre-training run has finished")
    if data.selections:
        parts.append(table_html(_lr_table(lr_sweep_table(data.selections)), out_dir))
    return str(Markup("").join(parts)), missing


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
