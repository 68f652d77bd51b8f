"""How far each pruning search could go: its threshold beside the full model's dev score, and whether
the loss it allowed is larger than the noise of the dev set it was judged on.

A search stops at the first step whose pruned model scores below its threshold. When the threshold is
within about one standard error of the full model's score (a task learnt only a little above chance,
under the `above_chance` criterion, or a small dev set), where each search stops is decided by the dev
set's noise: it prunes a step or two, and its good subnetwork's size says more about that noise than
about what the model needs. The report says so before any number (`search_caution_lines`), from the
searches' own traces.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ... import runs
from ...analysis.rundir import json_or_none
from ..context import Context, join, missing_stages
from ..html import paragraph, table_html
from ..section import Section
from ..tables import Table, metric_name, task_order

__all__ = ["search_records", "searches_table", "searches_section", "search_caution_lines", "NARROW_BELOW"]

TITLE = "Pruning searches: how much each could lose"
METHOD_NAMES = {"structured": "s-pruning", "magnitude": "m-pruning"}
NARROW_BELOW = 1.0  # an allowed loss under this many standard errors of the dev metric is within noise


def search_records(ctx: Context) -> list[dict[str, Any]]:
    """One record per finished s- or m-pruning search with a trace: its task, method and seed; the full
    model's score, the threshold and the loss it allowed; the dev examples it was judged on (from its
    fine-tuning's metrics) and the metric's standard error there (`bertlottery.metrics.standard_error`);
    the steps it accepted and what its good subnetwork kept."""
    from ...metrics import standard_error
    from ...tasks import get_task

    folders = {s.id: s.folder for s in ctx.run.stages}
    kept = _fractions_kept(ctx.run.results)
    records = []
    for stage in ctx.run.stages_of("prune"):
        method = stage.keys.get("method")
        trace = json_or_none(stage.folder / runs.TRACE_FILE) if method in METHOD_NAMES else None
        if not isinstance(trace, dict) or trace.get("min_metric") is None or trace.get("full_metric") is None:
            continue
        metric, full, threshold = trace.get("metric_name"), float(trace["full_metric"]), float(trace["min_metric"])
        n = _dev_examples(folders.get(stage.inputs.get("finetune")), stage.task, get_task)
        error = standard_error(metric, full, n) if n else math.nan
        steps = trace.get("steps") or []
        seed = stage.keys.get("seed")
        records.append({
            "task": stage.task, "method": method, "seed": seed, "metric": metric,
            "criterion": (trace.get("params") or {}).get("criterion", "paper"),
            "full": full, "threshold": threshold, "allowed_loss": full - threshold, "dev_examples": n,
            "standard_error": error, "allowed_in_standard_errors": (full - threshold) / error if error > 0 else math.nan,
            "steps_accepted": sum(1 for s in steps if s.get("accepted")), "steps": len(steps),
            "heads_kept": trace.get("heads_kept"), "mlps_kept": trace.get("mlps_kept"),
            "fraction_kept": kept.get((stage.task, method, _seed(seed)), math.nan),
        })
    order = task_order([r["task"] for r in records])
    return sorted(records, key=lambda r: (order.index(r["task"]), list(METHOD_NAMES).index(r["method"]), str(r["seed"])))


def _fractions_kept(results: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    """``(task, method, seed) -> `` the good subnetwork's share of the encoder-body weights (its pruned row)."""
    if results is None or results.empty or "fraction_kept" not in results:
        return {}
    good = results[(results["subnetwork"] == "good") & (results["mode"] == "pruned")].dropna(subset=["fraction_kept"])
    return {(r.task, r.method, _seed(r.seed)): float(r.fraction_kept) for r in good.itertuples()}


def _seed(seed: Any) -> str:
    """A seed as text, whether it was read as 42, 42.0 or "42"."""
    try:
        return str(int(float(seed)))
    except (TypeError, ValueError):
        return str(seed)


def _dev_examples(folder, task: str, get_task) -> int | None:
    """The examples of the split a search was judged on (the task's main dev split), from the metrics of
    the fine-tuning it started from."""
    metrics = json_or_none(folder / runs.METRICS_FILE) if folder is not None else None
    if not isinstance(metrics, dict):
        return None
    try:
        split = get_task(task).eval_splits[0]
    except Exception:  # noqa: BLE001 - a task this install does not know: no count
        return None
    entry = (metrics.get("splits") or {}).get(split) or {}
    n = entry.get("n_examples") or (entry.get("metrics") or {}).get("n_examples")
    return int(n) if n else None


def _loss_text(record: dict[str, Any]) -> str:
    text = f"{record['allowed_loss']:.3f}"
    if record["metric"] == "accuracy" and record["dev_examples"]:
        text += f" ({record['allowed_loss'] * record['dev_examples']:.1f} of {record['dev_examples']} examples)"
    return text


def _kept_text(record: dict[str, Any]) -> str:
    parts = []
    if record["heads_kept"] is not None:
        parts.append(f"{record['heads_kept']} heads, {record['mlps_kept']} MLPs")
    if not math.isnan(record["fraction_kept"]):
        parts.append(f"{100 * record['fraction_kept']:.1f}% of the body")
    return "; ".join(parts) or "–"


def searches_table(records: list[dict[str, Any]]) -> Table:
    """One row per search, grouped by task and method."""
    display, labels, groups, classes = [], [], [], []
    for r in records:
        ratio = r["allowed_in_standard_errors"]
        display.append({
            "full model": f"{r['full']:.3f}",
            "threshold": f"{r['threshold']:.3f}",
            "allowed loss": _loss_text(r),
            "standard error of dev": "–" if math.isnan(r["standard_error"]) else f"{r['standard_error']:.3f}",
            "allowed / standard error": "–" if math.isnan(ratio) else f"{ratio:.1f}",
            "steps accepted": f"{r['steps_accepted']} of {r['steps']}",
            "good subnetwork keeps": _kept_text(r),
        })
        labels.append(f"seed {r['seed']}")
        groups.append(f"{r['task']}, {METHOD_NAMES[r['method']]} ({metric_name(r['metric'])}, criterion {r['criterion']})")
        classes.append("unlearnt" if not math.isnan(ratio) and ratio < NARROW_BELOW else "")
    return Table("searches", "Pruning searches", "Each search's threshold beside the full model's dev score; the loss "
                 "it allowed, in the metric and (accuracy) in dev examples, and in standard errors of the dev "
                 "metric.", pd.DataFrame(records), pd.DataFrame(display, index=labels), groups, classes,
                 notes=["Standard error: sqrt(p(1 - p)/n) for accuracy, (1 - r²)/sqrt(n - 1) for MCC and correlations, "
                        "at the full model's score on the n dev examples: an order of magnitude, not a test. Greyed: "
                        f"an allowed loss under {NARROW_BELOW:g} standard error."])


def search_caution_lines(ctx: Context, records: list[dict[str, Any]] | None = None) -> list[str]:
    """A line per task and method whose searches could lose less than one standard error of the dev
    metric (their mean over seeds): where they stopped is within the dev set's noise."""
    records = search_records(ctx) if records is None else records
    lines = []
    for (task, method), group in _grouped(records):
        ratios = [r["allowed_in_standard_errors"] for r in group if not math.isnan(r["allowed_in_standard_errors"])]
        if not ratios or sum(ratios) / len(ratios) >= NARROW_BELOW:
            continue
        losses = sorted(r["allowed_loss"] for r in group)
        errors = [r["standard_error"] for r in group]
        def span(low: float, high: float, digits: int) -> str:
            return f"{low:.{digits}f}" if f"{low:.{digits}f}" == f"{high:.{digits}f}" else f"{low:.{digits}f}-{high:.{digits}f}"

        n = group[0]["dev_examples"]
        loss = span(losses[0], losses[-1], 3)
        in_examples = (f" ({span(losses[0] * n, losses[-1] * n, 1)} of {n} dev examples)"
                       if group[0]["metric"] == "accuracy" and n else "")
        kept = [r["fraction_kept"] for r in group if not math.isnan(r["fraction_kept"])]
        kept_text = (f" ({span(100 * min(kept), 100 * max(kept), 0)}% of the body)" if kept else "")
        many = len(group) > 1
        lines.append(f"{task}, {METHOD_NAMES[method]}: the {'searches' if many else 'search'} could lose at most {loss} "
                     f"{metric_name(group[0]['metric'])}{in_examples}, less than one standard error of the dev metric "
                     f"({sum(errors) / len(errors):.3f}; {len(group)} seed{'s' if many else ''}). Where "
                     f"{'they' if many else 'it'} stopped is within dev noise, so the size of the good "
                     f"subnetwork{'s' if many else ''}{kept_text} is set by that noise more than by what the model "
                     "needs; compare good, random and bad at that size, not the size itself.")
    return lines


def _grouped(records: list[dict[str, Any]]) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    return list(groups.items())


def searches_section(ctx: Context) -> Section:
    records = search_records(ctx)
    if not (ctx.run.run_dir / runs.STAGES_DIR).is_dir():
        return Section(TITLE, paragraph(f"{ctx.run.run_dir} has no {runs.STAGES_DIR}/ folder, where the prune stages "
                                        "keep their traces (a copy of the run's results and config alone)."), [])
    missing = missing_stages(ctx, lambda s: s.kind == "prune" and s.keys.get("method") in METHOD_NAMES, "pruning")
    if not records:
        return Section(TITLE, paragraph("No finished s- or m-pruning search with a trace yet."), missing)
    body = [paragraph("A search stops at the first step whose pruned model scores below its threshold. The loss "
                      "it allowed is the full model's score less the threshold. Where that is under about one "
                      "standard error of the dev metric, where the search stopped is decided by the dev set's "
                      "noise, and so is the size of its good subnetwork."),
            table_html(searches_table(records), ctx.out_dir)]
    return Section(TITLE, join(body), missing)
