"""The report's figures: pure functions of tables and arrays that return a matplotlib ``Figure``.

They use `matplotlib.figure.Figure` directly (no pyplot, no global state, no display: the Agg canvas
renders them), with one colour per subnetwork kind everywhere (`COLOURS`). `save_figure` is the one
function that writes files (PNG and PDF).

Example:
    >>> fig = lottery_bars(cells, full)                       # doctest: +SKIP
    >>> png, pdf = save_figure(fig, Path("report/figures"), "figure2")   # doctest: +SKIP
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .tables import metric_name, task_order

__all__ = [
    "COLOURS",
    "TASK_COLOURS",
    "task_colour",
    "METHOD_LABELS",
    "save_figure",
    "fit_reference_lines",
    "lottery_bars",
    "component_heatmaps",
    "importance_histograms",
    "overlap_matrices",
    "longer_lines",
    "ablation_ranks",
]

# good / random / bad: the same colours in every figure (super-survivor variants share them).
COLOURS = {"good": "#2f9e44", "random": "#868e96", "bad": "#e03131"}
# One colour per GLUE task in every figure of the report (the Compressing-BERT and attention sections
# import it too): matplotlib's tab10 in the paper's task order, its grey left out because greyed marks
# mean "not learnt" here.
TASK_COLOURS = {"CoLA": "#1f77b4", "SST-2": "#ff7f0e", "MRPC": "#2ca02c", "QQP": "#d62728", "STS-B": "#9467bd",
                "MNLI": "#8c564b", "QNLI": "#e377c2", "RTE": "#bcbd22", "WNLI": "#17becf"}
_OTHER_TASK_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
NOT_LEARNT_COLOUR = "#adb5bd"
METHOD_LABELS = {"structured": "s-pruning", "magnitude": "m-pruning"}
MODE_LABELS = {"pruned": "pruned", "retrained": "re-fine-tuned"}
DPI = 110


def _colour(subnetwork: str) -> str:
    return COLOURS.get(subnetwork.removeprefix("super-"), "#1c7ed6")


def task_colour(task: str) -> str:
    """The task's colour (`TASK_COLOURS`); a task outside GLUE (or a split suffix such as ``MNLI-mm``
    of a known one: its task's) gets one of a few more, the same in every run."""
    name = str(task)
    if name in TASK_COLOURS:
        return TASK_COLOURS[name]
    base = name.split("-mm")[0].split("/")[0]
    if base in TASK_COLOURS:
        return TASK_COLOURS[base]
    return _OTHER_TASK_COLOURS[zlib.crc32(name.encode("utf-8")) % len(_OTHER_TASK_COLOURS)]


def save_figure(fig: Figure, folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``folder/name.png`` and ``folder/name.pdf``; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    # no creation date: the same figure gives the same PDF bytes
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    return png, pdf


def _grid(n: int, per_row: int) -> tuple[int, int]:
    cols = max(1, min(n, per_row))
    return math.ceil(n / cols), cols


def fit_reference_lines(ax, levels: Sequence[float], margin: float = 0.05) -> None:
    """Widen ``ax``'s y-limits so that every reference line (``levels``) lies inside with a margin of
    ``margin`` of the axis' span: autoscaling follows the bars and dots, and a line above them all would
    otherwise sit on the plot's edge."""
    if not levels:
        return
    bottom, top = ax.get_ylim()
    low, high = min(bottom, *levels), max(top, *levels)
    pad = margin * (high - low)
    ax.set_ylim(min(bottom, min(levels) - pad), max(top, max(levels) + pad))


def lottery_bars(cells: pd.DataFrame, full: pd.DataFrame | None = None, *,
                 methods: Sequence[str] = ("structured", "magnitude"),
                 subnetworks: Sequence[str] = ("good", "random", "bad"),
                 modes: Sequence[str] = ("pruned", "retrained"),
                 metrics: Mapping[str, str] | None = None, title: str | None = None,
                 seeds: pd.DataFrame | None = None, majority: pd.DataFrame | None = None,
                 not_learnt: Mapping[str, str] | None = None) -> Figure:
    """The paper's Figure 2 (and, with ``subnetworks=("super-good", ...)``, Figure 17).

    One panel per task and method; in each, the subnetworks' mean over seeds as bars (std as error
    bars) and each seed's value as a dot, grouped by mode (pruned, re-fine-tuned); the full model's
    mean minus one std as a dashed line and the majority class as a dotted one, both inside the axes. The
    title gives the subnetworks' size (% of encoder-body weights kept, mean and std over seeds; a
    super-survivor mask's alone, as there is one per task). ``cells``:
    `bertlottery.report.tables.cell_stats` output; ``full``: its rows of the full model (method
    ``none``) or None; ``seeds``: the per-seed rows (task, method, subnetwork, mode, value);
    ``majority``: the majority class's cells. Tasks in ``not_learnt`` (``{task: reason}``) are not
    drawn as data: one greyed panel names them with their reason.
    """
    not_learnt = dict(not_learnt or {})
    tasks = [t for t in (task_order(cells["task"]) if not cells.empty else []) if t not in not_learnt]
    methods = [m for m in methods if not cells[cells["method"] == m].empty]
    panels = [(t, m) for t in tasks for m in methods
              if not cells[(cells["task"] == t) & (cells["method"] == m) & cells["subnetwork"].isin(subnetworks)].empty]
    folded = [t for t in task_order(not_learnt)]
    if not panels and not folded:
        raise ValueError("no cells of the asked subnetworks to plot")
    per_row = 4 if len(methods) > 1 else 3
    rows, cols = _grid(len(panels) + (1 if folded else 0), per_row)
    fig = Figure(figsize=(3.3 * cols, 2.9 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    width = 0.8 / len(subnetworks)
    rng = np.random.default_rng(0)  # the dots' horizontal jitter: the same figure every time
    for ax, (task, method) in zip(axes.flat, panels):
        part = cells[(cells["task"] == task) & (cells["method"] == method)]
        sizes = []
        for i, sub in enumerate(subnetworks):
            means, stds, xs = [], [], []
            for j, mode in enumerate(modes):
                cell = part[(part["subnetwork"] == sub) & (part["mode"] == mode)]
                if cell.empty:
                    continue
                x = j + (i - (len(subnetworks) - 1) / 2) * width
                xs.append(x)
                means.append(float(cell["mean"].iloc[0]))
                std = cell["std"].iloc[0]
                stds.append(math.nan if pd.isna(std) else float(std))  # one seed: no error bar
                sizes.append((float(cell["fraction_kept"].iloc[0]), cell["fraction_kept_std"].iloc[0]))
                if seeds is not None and not seeds.empty:
                    values = seeds[(seeds["task"] == task) & (seeds["method"] == method) & (seeds["subnetwork"] == sub)
                                   & (seeds["mode"] == mode)]["value"].to_numpy(dtype=float)
                    jitter = rng.uniform(-0.22, 0.22, len(values)) * width
                    ax.scatter(x + jitter, values, s=9, color="white", edgecolors="#212529", linewidths=0.6,
                               zorder=3)
            if xs:
                ax.bar(xs, means, width * 0.92, yerr=stds, color=_colour(sub), capsize=2.5,
                       error_kw={"linewidth": 0.8})
        levels = []  # the reference lines' heights
        if full is not None and not full.empty:
            reference = full[full["task"] == task]
            if not reference.empty:
                mean, std = float(reference["mean"].iloc[0]), reference["std"].iloc[0]
                levels.append(mean - (0.0 if pd.isna(std) else float(std)))
                ax.axhline(levels[-1], color="#343a40", linestyle="--", linewidth=1.0)
        if majority is not None and not majority.empty:
            floor = majority[majority["task"] == task]
            if not floor.empty:
                levels.append(float(floor["mean"].iloc[0]))
                ax.axhline(levels[-1], color="#1864ab", linestyle=":", linewidth=1.2)
        fit_reference_lines(ax, levels)
        ax.set_xticks(range(len(modes)), [MODE_LABELS.get(m, m) for m in modes])
        ax.set_xlim(-0.6, len(modes) - 0.4)
        size = ""
        if sizes:
            kept, kept_std = sizes[0]
            size = f"\n{100 * kept:.1f}% kept" + ("" if pd.isna(kept_std) else f" (std {100 * kept_std:.1f})")
        ax.set_title(f"{task}, {METHOD_LABELS.get(method, method)}{size}", fontsize=9)
        ax.set_ylabel(f"{task}: {metric_name((metrics or {}).get(task))} (dev)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", linewidth=0.3, alpha=0.6)
        ax.set_axisbelow(True)
    used = len(panels)
    if folded:
        ax = list(axes.flat)[used]
        used += 1
        _not_learnt_panel(ax, {t: not_learnt[t] for t in folded})
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    # one legend for all panels, the same entries whatever a panel lacks
    handles = [Patch(color=_colour(sub), label=sub.replace("super-", "super-survivor ")) for sub in subnetworks]
    if seeds is not None and not seeds.empty:
        handles.append(Line2D([], [], marker="o", linestyle="", markersize=4, markerfacecolor="white",
                              markeredgecolor="#212529", label="one seed"))
    if full is not None and not full.empty:
        handles.append(Line2D([], [], color="#343a40", linestyle="--", linewidth=1.0, label="full model − 1 std"))
    if majority is not None and not majority.empty:
        handles.append(Line2D([], [], color="#1864ab", linestyle=":", linewidth=1.2, label="majority class"))
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6) if cols > 1 else 2,
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _not_learnt_panel(ax, reasons: Mapping[str, str]) -> None:
    """One greyed panel standing for every task that was not learnt, with each one's reason."""
    import textwrap

    ax.set_facecolor("#f1f3f5")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(NOT_LEARNT_COLOUR)
    lines = [textwrap.fill(f"{task}: {reason}", 44) for task, reason in reasons.items()]
    ax.text(0.04, 0.96, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", fontsize=7,
            color="#495057", wrap=True)
    ax.set_title("Not learnt: no subnetworks to compare", fontsize=9, color="#495057")


def _annotated(ax, mean: np.ndarray, std: np.ndarray | None, vmin: float, vmax: float, cmap: str,
               fmt: str, row_label: str, col_label: str, rows_start: int = 0):
    image = ax.imshow(mean, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    span = vmax - vmin or 1.0
    many = mean.shape[1] > 12
    # sized with the figure (about 0.6 inch per column, shown at its natural size): 11-12 px text
    size = 6.5 if many else (7.5 if std is not None else 8.5)
    for (r, c), value in np.ndenumerate(mean):
        if np.isnan(value):
            continue
        text = format(value, fmt)
        if std is not None and not np.isnan(std[r, c]) and not many:
            text += "\n" + format(std[r, c], fmt)
        # viridis runs from dark (low) to bright yellow (high): dark text on the bright half
        shade = (value - vmin) / span
        ax.text(c, r, text, ha="center", va="center", fontsize=size,
                color="black" if shade > 0.55 else "white", linespacing=0.95)
    ax.set_xticks(range(mean.shape[1]), [str(i + 1) for i in range(mean.shape[1])], fontsize=7)
    ax.set_yticks(range(mean.shape[0]), [str(i + 1 + rows_start) for i in range(mean.shape[0])], fontsize=7)
    ax.set_xlabel(col_label, fontsize=8)
    ax.set_ylabel(row_label, fontsize=8)
    return image


def component_heatmaps(heads_mean, heads_std=None, mlps_mean=None, mlps_std=None, *, title: str = "",
                       vmax: float | None = None, label: str = "survival over seeds", fmt: str = ".2f") -> Figure:
    """Heads (layers x heads) and MLPs (1 x layers) as annotated heatmaps: the mean in each cell and
    the std below it when given (the paper's Fig. 1 and appendix A; with ``vmax`` = the number of
    tasks, Fig. 15). Missing values (``None``/nan) are left blank. The figure grows with the grid."""
    heads_mean = np.asarray(heads_mean, dtype=float)
    heads_std = None if heads_std is None else np.asarray(heads_std, dtype=float)
    layers, heads = heads_mean.shape
    has_mlps = mlps_mean is not None
    vmax = vmax if vmax is not None else max(1.0, float(np.nanmax(heads_mean)) if heads_mean.size else 1.0)
    # the grid sets the size, so that the numbers in the cells stay legible at any grid (12 x 12 or more)
    cell_w, cell_h = (0.62, 0.5 if heads_std is not None else 0.36)
    width = max(4.5, cell_w * heads + 1.8)
    height = cell_h * layers + (0.9 if has_mlps else 0) + 1.2
    fig = Figure(figsize=(width, height), layout="constrained")
    if has_mlps:
        axes = fig.subplots(2, 1, height_ratios=[layers, 1.0])
    else:
        axes = [fig.subplots(1, 1)]
    image = _annotated(axes[0], heads_mean, heads_std, 0.0, vmax, "viridis", fmt, "layer", "head")
    axes[0].set_title(f"{title} — heads" if title else "heads", fontsize=9)
    if has_mlps:
        mlps_mean = np.asarray(mlps_mean, dtype=float).reshape(1, -1)
        mlps_std = None if mlps_std is None else np.asarray(mlps_std, dtype=float).reshape(1, -1)
        _annotated(axes[1], mlps_mean, mlps_std, 0.0, vmax, "viridis", fmt, "", "layer")
        axes[1].set_yticks([])
        axes[1].set_title("MLPs", fontsize=9)
    colourbar = fig.colorbar(image, ax=list(axes), shrink=0.8, pad=0.02)
    colourbar.set_label(label, fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    return fig


def importance_histograms(panels: Sequence[tuple[str, Sequence[np.ndarray]]], *, title: str = "",
                          bins: int = 20) -> Figure:
    """Head importance scores at chosen iterations of the s-pruning search (the paper's Fig. 3): one
    panel per ``(label, [scores of each seed])``, the seeds' scores pooled; nan (already pruned
    heads) left out. The scores come from `bertlottery.stats.importance_at`."""
    if not panels:
        raise ValueError("no iterations to plot")
    fig = Figure(figsize=(3.2 * len(panels), 2.7), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, scores) in zip(axes, panels):
        values = np.concatenate([np.asarray(s, dtype=float).ravel() for s in scores]) if scores else np.array([])
        values = values[~np.isnan(values)]
        ax.hist(values, bins=bins, color="#1c7ed6", edgecolor="white", linewidth=0.4)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        seeds = f"{len(scores)} seed{'s' if len(scores) != 1 else ''}"
        ax.set_title(f"{label}\n{len(values)} heads, {seeds}", fontsize=8)
        ax.set_xlabel("head importance score", fontsize=8)
        ax.set_ylabel("heads", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def overlap_matrices(matrices: Sequence[tuple[str, np.ndarray, np.ndarray | None]], tasks: Sequence[str], *,
                     title: str = "") -> Figure:
    """Task x task matrices of shared elements (the paper's Fig. 5 and appendix G): one panel per
    ``(label, mean, std or None)``; each cell shows the mean (and std) of the shared count."""
    n = len(tasks)
    fig = Figure(figsize=(max(3.6, 0.62 * n + 1.6) * len(matrices), max(3.0, 0.6 * n + 1.3)), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (label, mean, std) in zip(axes, matrices):
        mean = np.asarray(mean, dtype=float)
        std = None if std is None else np.asarray(std, dtype=float)
        vmax = float(np.nanmax(mean)) if mean.size else 1.0
        image = ax.imshow(mean, cmap="magma_r", vmin=0, vmax=vmax or 1.0)
        for (r, c), value in np.ndenumerate(mean):
            text = f"{value:.1f}" if std is not None else f"{value:.0f}"
            if std is not None and not np.isnan(std[r, c]):
                text += f"\n±{std[r, c]:.1f}"
            ax.text(c, r, text, ha="center", va="center", fontsize=7.5,
                    color="white" if value > 0.6 * (vmax or 1.0) else "black", linespacing=0.95)
        ax.set_xticks(range(n), list(tasks), rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n), list(tasks), fontsize=7)
        ax.set_title(label, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def longer_lines(cells: pd.DataFrame, *, metrics: Mapping[str, str] | None = None) -> Figure:
    """The metric after each epoch of longer re-fine-tuning (appendix D): one panel per task, a
    line per (method, subnetwork), mean over seeds with std as a band."""
    tasks = task_order(cells["task"])
    rows, cols = _grid(len(tasks), 4)
    fig = Figure(figsize=(3.0 * cols, 2.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        part = cells[cells["task"] == task]
        for (method, sub), line in part.groupby(["method", "subnetwork"], sort=False):
            line = line.sort_values("epochs")
            x, y = line["epochs"].astype(float).to_numpy(), line["mean"].to_numpy(dtype=float)
            s = line["std"].fillna(0.0).to_numpy(dtype=float)
            ax.plot(x, y, marker="o", color=_colour(sub), label=f"{METHOD_LABELS.get(method, method)} {sub}")
            ax.fill_between(x, y - s, y + s, color=_colour(sub), alpha=0.15, linewidth=0)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("epochs of re-fine-tuning", fontsize=8)
        ax.set_ylabel(f"{metric_name((metrics or {}).get(task))} (dev)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, frameon=False)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    return fig


SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def ablation_ranks(units: pd.DataFrame, *, unit: str = "mlps") -> Figure:
    """Importance against ablation (`bertlottery.steps.ablation`): one panel per task, each unit's cost
    (dev score lost when it alone is gated off) against its rank by the importance the s-search started
    from (1 = least important, removed first), one line per seed. A search that removes what costs least
    draws lines that rise from left to right. ``units``: the report's per-unit table (columns task, seed,
    unit, importance_rank, cost, metric)."""
    data = units[units["unit"] == unit]
    tasks = task_order(data["task"])
    if not tasks:
        raise ValueError(f"no {unit} to plot")
    rows, cols = _grid(len(tasks), 4)
    fig = Figure(figsize=(3.0 * cols, 2.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    name = "MLP" if unit == "mlps" else "head"
    for ax, task in zip(axes, tasks):
        per_task = data[data["task"] == task]
        for i, (seed, group) in enumerate(sorted(per_task.groupby("seed"), key=lambda g: str(g[0]))):
            group = group.sort_values("importance_rank")
            ax.plot(group["importance_rank"], group["cost"], marker=SEED_MARKERS[i % len(SEED_MARKERS)],
                    markersize=4, linewidth=1, color=task_colour(task), alpha=0.55 + 0.45 * (i == 0),
                    label=f"seed {seed}")
        ax.axhline(0, color="#868e96", linewidth=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(f"{name} rank by importance (1 = removed first)", fontsize=7)
        ax.set_ylabel(f"{metric_name(per_task['metric'].iloc[0])} lost without it", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    return fig
