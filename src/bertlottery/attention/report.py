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
    from ..report.tables import task_order

    order = {g: i for i, g in enumerate(GROUP_LABELS)}
    tasks = {t: i for i, t in enumerate(task_order(wide["task"]))}  # the paper's order, as in the rest of the report
    wide = wide.sort_values(["task", "weights", "kind", "group"],
                            key=lambda c: c.map(order) if c.name == "group" else c.map(tasks) if c.name == "task"
                            else c, kind="mergesort", ascending=[True, False, True, True])
    return wide.reset_index(drop=True)


def correlation_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    from ..report.tables import task_order

    frame = pd.DataFrame(list(rows), columns=["task", "weights", "kind", "r", "p", "n", "n_super", "n_heterogeneous"])
    frame["paper r"] = frame["kind"].map(PAPER_CORRELATION)
    frame["why no r"] = [_why_no_r(row) for row in frame.itertuples(index=False)]
    tasks = {t: i for i, t in enumerate(task_order(frame["task"]))}
    return frame.sort_values("task", key=lambda c: c.map(tasks), kind="mergesort").reset_index(drop=True)


def _why_no_r(row) -> str:
    """Why Pearson's r is undefined for a row (one of its two variables is constant), or ''."""
    if row.r is not None and not pd.isna(row.r):
        return ""
    if row.n_super == 0:
        return "no head is a super-survivor"
    if row.n_super == row.n:
        return "every head is a super-survivor"
    if row.n_heterogeneous == 0:
        return "no head is heterogeneous"
    if row.n_heterogeneous == row.n:
        return "every head is heterogeneous"
    return "too few heads"


def proportions_figure(table: pd.DataFrame):
    """Stacked bars of the pattern shares: a panel per map kind and head group, a bar per task and weights."""
    from matplotlib.figure import Figure

    from ..report.figures import task_colour

    kinds = [k for k in ("raw", "norm") if k in set(table["kind"])]
    groups = [g for g in GROUP_LABELS if g in set(table["group"])]
    bars = max([len(table[(table["kind"] == k) & (table["group"] == g)]) for k in kinds for g in groups] or [1])
    # wide enough for a slanted label under every bar
    fig = Figure(figsize=(max(4.2, 0.32 * bars + 1.2) * max(1, len(groups)), 3.6 * max(1, len(kinds))),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(1, len(kinds)), max(1, len(groups)), squeeze=False))
    for r, kind in enumerate(kinds):
        for c, group in enumerate(groups):
            ax = axes[r, c]
            part = table[(table["kind"] == kind) & (table["group"] == group)]
            labels = [f"{t} {'pre-trained' if w == 'pretrained' else 'fine-tuned'}"
                      for t, w in zip(part["task"], part["weights"], strict=True)]
            bottom = np.zeros(len(part))
            for pattern in PATTERNS:
                values = part[pattern].to_numpy(dtype=float)
                ax.bar(range(len(part)), values, bottom=bottom, color=PATTERN_COLOURS[pattern], label=pattern,
                       width=0.75)
                bottom += values
            ax.set_xticks(range(len(part)), labels, fontsize=7, rotation=45, ha="right", rotation_mode="anchor")
            for tick, task in zip(ax.get_xticklabels(), part["task"], strict=True):
                tick.set_color(task_colour(task))  # each task's colour in every section of the report
            ax.set_ylim(0, 1)
            ax.set_title(f"{kind} maps, {GROUP_LABELS[group]}", fontsize=9)
            if c == 0:
                ax.set_ylabel("share of heads")
    if kinds and groups:
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=len(PATTERNS), fontsize=8)
    return fig


def examples_figure(examples: Sequence[tuple[str, str, np.ndarray, list[str], str]]):
    """One panel per ``(kind, pattern, map, tokens, where)``: a row per pattern and a column per kind,
    each map with its tokens on both axes (every few when long) and a colour bar."""
    from matplotlib.figure import Figure

    from .maps_format import row_normalised

    kinds = [k for k in ("raw", "norm") if any(e[0] == k for e in examples)]
    patterns = [p for p in PATTERNS if any(e[1] == p for e in examples)]  # a row only where there is a map
    fig = Figure(figsize=(4.8 * max(1, len(kinds)), 4.4 * max(1, len(patterns)) + 0.3), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(1, len(patterns)), max(1, len(kinds)), squeeze=False))
    absent = [p for p in PATTERNS if p not in patterns]
    if absent:
        fig.suptitle(f"No map kept on disk is labelled {', '.join(absent)}", fontsize=8)
    for c, kind in enumerate(kinds):
        for r, pattern in enumerate(patterns):
            ax = axes[r, c]
            found = [e for e in examples if e[0] == kind and e[1] == pattern]
            if not found:
                ax.set_title(f"{kind}: {pattern}\n(no map with this label)", fontsize=8)
                ax.axis("off")
                continue
            _, _, m, tokens, where = found[0]
            m = row_normalised(m) if kind == "norm" else np.asarray(m, dtype=float)
            image = ax.imshow(m, cmap="viridis", vmin=0, vmax=max(float(m.max()), 1e-9), interpolation="nearest")
            step = max(1, int(np.ceil(len(tokens) / 40)))  # at most 40 labels per axis, so that they stay legible
            ticks = list(range(0, len(tokens), step))
            shown = [tokens[i] for i in ticks]
            ax.set_xticks(ticks, shown, rotation=90, fontsize=5.5)
            ax.set_yticks(ticks, shown, fontsize=5.5)
            ax.set_xlabel("key token (attended to)", fontsize=7)
            ax.set_ylabel("query token", fontsize=7)
            ax.set_title(f"{kind}: {pattern}\n{where}", fontsize=8)
            bar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.01)
            bar.set_label("attention (row-normalised)" if kind == "norm" else "attention weight", fontsize=7)
            bar.ax.tick_params(labelsize=6)
    return fig


def rule_margin(scores: Mapping[str, float], label: str) -> float:
    """How far a map's rule scores (`bertlottery.attention.rules.scores`) are past the thresholds that
    make ``label`` (negative: the rules would not give it): how confidently the map shows its label."""
    from .rules import Thresholds

    t = Thresholds()
    v, d, b = scores["vertical"], scores["diagonal"], scores["block"]
    if label == "vertical+diagonal":
        return min(v - t.mixed_each, d - t.mixed_each, v + d - t.mixed_total)
    if label == "vertical":
        return v - t.vertical
    if label == "diagonal":
        return min(d - t.diagonal, t.block - b)
    if label == "block":
        return b - t.block
    return min(t.vertical - v, t.diagonal - d, t.block - b, t.mixed_total - (v + d))


MAX_SCORED = 4000  # maps scored when choosing examples; beyond it, the first ones on disk are enough


def _find_examples(maps_dirs: Sequence[Path]) -> list[tuple[str, str, np.ndarray, list[str], str]]:
    """The most confidently labelled map of each kind and pattern among the maps kept on disk: the one
    whose rule scores lie furthest past its label's thresholds (`rule_margin`), so that the example
    looks like its label whoever labelled it."""
    from .maps_format import Maps, parse_label_key
    from .rules import scores

    best: dict[tuple[str, str], tuple[float, tuple]] = {}
    scored = 0
    for folder in maps_dirs:
        try:
            maps = Maps(folder)
            labels = maps.labels()
        except Exception:  # noqa: BLE001 - a damaged folder just contributes no example
            continue
        for key, pattern in sorted(labels.items()):
            if scored >= MAX_SCORED:
                break
            parsed = parse_label_key(key)
            try:
                info = maps.example_info(parsed.example_id)
                m = maps.head_map(parsed.example_id, parsed.layer, parsed.head, parsed.kind)
                margin = rule_margin(scores(m, info.tokens), pattern)
            except Exception:  # noqa: BLE001 - a map that cannot be read or scored is no example
                continue
            scored += 1
            if (parsed.kind, pattern) not in best or margin > best[(parsed.kind, pattern)][0]:
                where = (f"{maps.index.task} {maps.index.weights} layer {parsed.layer + 1} head {parsed.head + 1}, "
                         f"{parsed.example_id}")
                best[(parsed.kind, pattern)] = (margin, (parsed.kind, pattern, m, list(info.tokens), where))
    return [example for _, example in best.values()]


def annotation_exports(run_dir: Path) -> list[Path]:
    """The annotation page's exports (folders holding ``export.json``) inside the run directory, up
    to three folders down (stage folders left out)."""
    from ..annotate.export import EXPORT_FORMAT, SUMMARY_FILE

    found = []
    for depth in ("*", "*/*", "*/*/*"):
        for path in sorted(Path(run_dir).glob(f"{depth}/{SUMMARY_FILE}")):
            if path.relative_to(run_dir).parts[0] == "stages":
                continue
            try:
                if json.loads(path.read_text()).get("format") == EXPORT_FORMAT:
                    found.append(path.parent)
            except (OSError, ValueError, AttributeError):
                continue
    return found


def rule_agreement(pairs: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    """``(kind, hand label, rule label)`` -> per kind (and all): maps, the share where the rules give
    the hand label, and Cohen's kappa between them."""
    from sklearn.metrics import cohen_kappa_score

    frame = pd.DataFrame(list(pairs), columns=["kind", "hand", "rules"])
    records = []
    for kind, part in [*frame.groupby("kind", sort=False), ("all", frame)]:
        if part.empty:
            continue
        same = (part["hand"] == part["rules"]).mean()
        kappa = (cohen_kappa_score(part["hand"], part["rules"], labels=list(PATTERNS))
                 if part["hand"].nunique() > 1 or part["rules"].nunique() > 1 else float("nan"))
        records.append({"kind": kind, "maps": len(part), "agreement": float(same), "cohen_kappa": float(kappa)})
    return pd.DataFrame(records, columns=["kind", "maps", "agreement", "cohen_kappa"])


def _hand_label_pairs(export: Path) -> list[tuple[str, str, str]]:
    """The hand labels of an export's toolkit folder beside the rule labeller's labels of the same maps."""
    from .maps_format import Maps, parse_label_key
    from .rules import label_map

    maps = Maps(export / "toolkit")
    pairs = []
    for key, hand in sorted(maps.labels().items()):
        parsed = parse_label_key(key)
        info = maps.example_info(parsed.example_id)
        m = maps.head_map(parsed.example_id, parsed.layer, parsed.head, parsed.kind)
        pairs.append((parsed.kind, hand, label_map(m, info.tokens).label))
    return pairs


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
    # a skipped stage is not missing: its task was not learnt, which the report's cautions say
    missing = [f"{s.kind} {s.task} {s.folder.name}: {s.state}" for s in ours if s.state not in ("done", "skipped")]
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
                                "Share of heads of each pattern type (majority label over the examples).",
                                data_links=[("data (CSV)", "tables/attention-patterns-heads.csv")]))
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
    elif any(s.kind == ANALYSIS_KIND and s.state != "skipped" for s in ours):
        missing.append("no attention analysis has finished yet")
    else:  # every analysis was skipped: no task was learnt (the cautions say so)
        body.append(paragraph("No attention analysis ran: it compares super-survivors with all heads, and no task's "
                              "model was learnt, so no search found super-survivors."))
    maps_dirs = [s.folder for s in run.stages_of(MAPS_KIND)]
    examples = _find_examples(maps_dirs)
    if examples:
        body.append(figure_html(examples_figure(examples), out_dir, "attention-examples",
                                "An example map of each type: of the labelled maps kept on disk, the one whose "
                                "rule scores lie furthest past its label's thresholds (norm maps row-normalised "
                                "for display; rows are query tokens, columns the tokens they attend to)."))
    body += _agreement_part(run.run_dir, out_dir)
    return Section("Attention pattern types", "".join(str(b) for b in body), missing=missing)


def _agreement_part(run_dir: Path, out_dir: Path) -> list[Any]:
    """The rule labeller against hand labels, for each annotation export in the run directory."""
    from ..report.html import paragraph, table_html
    from ..report.tables import Table

    exports = annotation_exports(run_dir)
    pairs, body = [], []
    for export in exports:
        try:
            pairs += _hand_label_pairs(export)
        except Exception as error:  # noqa: BLE001 - a damaged export is said, the others still counted
            body.append(paragraph(f"The annotation export {export} could not be read ({type(error).__name__}: "
                                  f"{str(error)[:200]})."))
    if not pairs:
        return body + [paragraph(
            "Agreement of the rule labeller with hand labels: no hand labels in the run directory (label maps with "
            "`bertlottery annotate MAPS_DIR`, export them into a folder of the run directory, and build the report "
            "again).")]
    table = rule_agreement(pairs)
    display = pd.DataFrame({"maps": table["maps"].astype(str),
                            "agreement": table["agreement"].map(lambda v: f"{100 * v:.1f}%"),
                            "Cohen's kappa": table["cohen_kappa"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")})
    display.index = [f"{k} maps" if k != "all" else "all maps" for k in table["kind"]]
    n = len(exports)
    caption = (f"Every hand-labelled map of {n} annotation export{'s' if n > 1 else ''} (maps marked unsure left "
               "out), labelled again by the rules: the share of maps where both agree and Cohen's kappa between "
               "them, per map kind.")
    return body + [table_html(Table("attention-rule-agreement", "Rule labeller against hand labels", caption, table,
                                    display), out_dir)]


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
