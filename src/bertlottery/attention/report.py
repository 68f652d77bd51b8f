"""The report's attention section (Prasanna et al. 2020, section 5.2, Figure 4, appendix F): pattern-type
proportions of all heads vs super-survivors, raw vs norm-based, pre-trained vs fine-tuned; example maps
of each type; the correlation between being a super-survivor and having a heterogeneous pattern.

`report_section` is the section `bertlottery.report` builds for every run (None without attention stages); the table and figures are pure functions
of the analysis records (`proportions_table`, `proportions_figure`, `examples_figure`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .maps_format import PATTERNS

if TYPE_CHECKING:
    from ..report.rundata import RunData

__all__ = ["report_section", "section", "proportions_table", "correlation_table", "proportions_figure",
           "examples_figure", "PAPER_CORRELATION"]

PAPER_CORRELATION = {"raw": 0.015, "norm": 0.025}  # Prasanna et al. 2020, section 5.2: BERT-base over GLUE
PATTERN_COLOURS = {"diagonal": "#1c7ed6", "block": "#f59f00", "vertical": "#2f9e44",
                   "vertical+diagonal": "#ae3ec9", "heterogeneous": "#868e96"}
GROUP_LABELS = {"all": "all heads", "super-survivors": "super-survivors (pruned model)",
                "super-survivors-unpruned": "super-survivors (full model)"}


def proportions_table(rows: Sequence[Mapping[str, Any]], level: str = "heads") -> pd.DataFrame:
    """One row per task, weights, group and kind; one column per pattern (proportions) and ``n``."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=["task", "weights", "group", "kind", *PATTERNS, "n"])
    frame = frame[frame["level"] == level]
    wide = frame.pivot_table(index=["task", "weights", "group", "kind"], columns="pattern", values="proportion",
                             aggfunc="first").reindex(columns=list(PATTERNS)).fillna(0.0)
    n = frame.groupby(["task", "weights", "group", "kind"])["n"].first()
    wide["n"] = n
    wide = wide.reset_index()
    order = {g: i for i, g in enumerate(GROUP_LABELS)}
    wide = wide.sort_values(["task", "weights", "kind", "group"], key=lambda c: c.map(order) if c.name == "group"
                            else c, kind="mergesort", ascending=[True, False, True, True])
    return wide.reset_index(drop=True)


def correlation_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=["task", "weights", "kind", "r", "p", "n", "n_super", "n_heterogeneous"])
    frame["paper r"] = frame["kind"].map(PAPER_CORRELATION)
    return frame


def proportions_figure(table: pd.DataFrame):
    """Stacked bars of the pattern shares: a panel per map kind and head group, a bar per task and weights."""
    from matplotlib.figure import Figure

    kinds = [k for k in ("raw", "norm") if k in set(table["kind"])]
    groups = [g for g in GROUP_LABELS if g in set(table["group"])]
    fig = Figure(figsize=(4.2 * max(1, len(groups)), 3.2 * max(1, len(kinds))), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(1, len(kinds)), max(1, len(groups)), squeeze=False))
    for r, kind in enumerate(kinds):
        for c, group in enumerate(groups):
            ax = axes[r, c]
            part = table[(table["kind"] == kind) & (table["group"] == group)]
            labels = [f"{t}\n{'pre' if w == 'pretrained' else 'ft'}" for t, w in zip(part["task"], part["weights"],
                                                                                     strict=True)]
            bottom = np.zeros(len(part))
            for pattern in PATTERNS:
                values = part[pattern].to_numpy(dtype=float)
                ax.bar(range(len(part)), values, bottom=bottom, color=PATTERN_COLOURS[pattern], label=pattern,
                       width=0.75)
                bottom += values
            ax.set_xticks(range(len(part)), labels, fontsize=7)
            ax.set_ylim(0, 1)
            ax.set_title(f"{kind} maps, {GROUP_LABELS[group]}", fontsize=9)
            if c == 0:
                ax.set_ylabel("share of heads")
    if kinds and groups:
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=len(PATTERNS), fontsize=8)
    return fig


def examples_figure(examples: Sequence[tuple[str, str, np.ndarray, list[str], str]]):
    """One panel per ``(kind, pattern, map, tokens, where)``: a grid with a row per kind."""
    from matplotlib.figure import Figure

    from .maps_format import row_normalised

    kinds = [k for k in ("raw", "norm") if any(e[0] == k for e in examples)]
    fig = Figure(figsize=(2.6 * len(PATTERNS), 2.9 * max(1, len(kinds))), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(1, len(kinds)), len(PATTERNS), squeeze=False))
    for r, kind in enumerate(kinds):
        for c, pattern in enumerate(PATTERNS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            found = [e for e in examples if e[0] == kind and e[1] == pattern]
            if not found:
                ax.set_title(f"{kind}: {pattern}\n(none)", fontsize=8)
                ax.axis("off")
                continue
            _, _, m, _, where = found[0]
            m = row_normalised(m) if kind == "norm" else m
            ax.imshow(m, cmap="viridis", vmin=0, vmax=max(float(m.max()), 1e-9), interpolation="nearest")
            ax.set_title(f"{kind}: {pattern}\n{where}", fontsize=8)
    return fig


def _find_examples(maps_dirs: Sequence[Path]) -> list[tuple[str, str, np.ndarray, list[str], str]]:
    """The first labelled map of each kind and pattern among the maps kept on disk."""
    from .maps_format import Maps, parse_label_key

    found: dict[tuple[str, str], tuple] = {}
    for folder in maps_dirs:
        try:
            maps = Maps(folder)
            labels = maps.labels()
        except Exception:  # noqa: BLE001 - a damaged folder just contributes no example
            continue
        for key, pattern in sorted(labels.items()):
            parsed = parse_label_key(key)
            if (parsed.kind, pattern) in found:
                continue
            info = maps.example_info(parsed.example_id)
            m = maps.head_map(parsed.example_id, parsed.layer, parsed.head, parsed.kind)
            where = f"{maps.index.task} {maps.index.weights} L{parsed.layer}H{parsed.head} {parsed.example_id}"
            found[(parsed.kind, pattern)] = (parsed.kind, pattern, m, info.tokens, where)
        if len(found) == 2 * len(PATTERNS):
            break
    return list(found.values())


def section(run: RunData, out_dir: str | Path):
    """The attention section of a run's report (``run``: `bertlottery.report.rundata.load_run`'s), or
    None when the run has no attention stages."""
    from ..report.section import Section
    from ..report.html import figure_html, paragraph
    from ..runs import ANALYSIS_FILE
    from .config import ANALYSIS_KIND, MAPS_KIND

    ours = [s for s in run.stages if s.kind in (MAPS_KIND, ANALYSIS_KIND)]
    if not ours:
        return None
    missing = [f"{s.kind} {s.task} {s.folder.name}: {s.state}" for s in ours if s.state != "done"]
    analyses = []
    for stage in run.stages_of(ANALYSIS_KIND):
        try:
            analyses.append(json.loads((stage.folder / ANALYSIS_FILE).read_text()))
        except (OSError, ValueError):
            missing.append(f"{stage.task}: {ANALYSIS_FILE} is unreadable")
    body = [paragraph(
        "Kovaleva et al.'s five self-attention pattern types for every head, from the maps of sampled dev "
        "examples (a head's type is its majority label over the examples), for all heads of the full model "
        "and for the heads of the model pruned by the task's super-survivor mask; raw attention and "
        "norm-based attention (Kobayashi et al. 2020); pre-trained and fine-tuned (section 5.2, Figure 4, "
        "Appendix F). Heterogeneous is the paper's upper bound on potentially linguistic heads.")]
    out_dir = Path(out_dir)
    if analyses:
        rows = [r for a in analyses for r in a["proportions"]]
        table = proportions_table(rows, "heads")
        maps_level = proportions_table(rows, "maps")
        body.append(figure_html(proportions_figure(table), out_dir, "attention-patterns",
                                "Share of heads of each pattern type (majority label over the examples)."))
        body.append(_table(table, out_dir, "attention-patterns-heads", "Pattern types by head",
                           "Share of heads of each type (majority label over the examples); n = heads counted, "
                           "pooled over seeds."))
        body.append(_table(maps_level, out_dir, "attention-patterns-maps", "Pattern types by map",
                           "Share of maps (every example x head) of each type; n = maps counted."))
        correlations = correlation_table([c for a in analyses for c in a["correlations"]])
        body.append(_table(correlations, out_dir, "attention-correlation", "Super-survivors vs heterogeneous",
                           "Pearson's r between 'head is a super-survivor' and 'head is heterogeneous' over "
                           "the full model's heads (pooled over seeds); the paper: 0.015 raw, 0.025 norm-based."))
        if not any(a.get("has_super_survivors", True) for a in analyses):
            missing.append("no super-survivor masks (a study with one seed, or super_survivors: false): only "
                           "all heads are shown")
    else:
        missing.append("no attention analysis has finished yet")
    maps_dirs = [s.folder for s in run.stages_of(MAPS_KIND)]
    examples = _find_examples(maps_dirs)
    if examples:
        body.append(figure_html(examples_figure(examples), out_dir, "attention-examples",
                                "An example map of each type (norm maps row-normalised for display)."))
    return Section("Attention pattern types", "".join(str(b) for b in body), missing=missing)


def _table(frame: pd.DataFrame, out_dir: Path, name: str, title: str, caption: str):
    from ..report.html import table_html
    from ..report.tables import Table

    display = frame.copy()
    for column in display.columns:
        if display[column].dtype.kind == "f":
            display[column] = display[column].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        elif column == "group":
            display[column] = display[column].map(lambda g: GROUP_LABELS.get(g, g))
    display.index = display.pop("task").tolist()  # the row label
    return table_html(Table(name=name, title=title, caption=caption, frame=frame, display=display), out_dir)


report_section = section
