"""`stability_summary`'s result as text tables: what ``bertlottery stability`` prints."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .masksets import KINDS

__all__ = ["format_summary"]


def _num(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _mean_pm(values: Sequence[float], spec: str) -> str:
    from .. import stats

    mean, std = stats.survival_mean_std(values)
    return f"{format(float(mean), spec)} ± {format(float(std), spec)}" if not math.isnan(std) else format(float(mean), spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [line(header), "  ".join("-" * w for w in widths), *map(line, rows)]


COCHRAN_NOTE = ("max: the largest kappa masks of the seeds' sizes can reach (nested masks); random: kappa of masks of "
                "the same sizes drawn at random (mean, 95% range); seeds 95%: a bootstrap over seeds (5 or more). "
                "Cochran's Q tests whether the seeds keep elements at equal rates, i.e. whether their masks' sizes "
                "differ, not whether they keep the same elements: kappa beside its ceiling and chance range says that.")


def _interval(entry: Mapping[str, Any]) -> str:
    return "n/a" if entry["low"] is None else f"[{entry['low']:.3f}, {entry['high']:.3f}]"


def _kappa_table(kind: str, tasks: Mapping[str, Any]) -> list[str]:
    """Kappa beside what masks of the seeds' sizes allow: the most they can reach (nested masks), the
    mean and 95% range of random masks of the same sizes, and a bootstrap interval over seeds."""
    rows = []
    for task, entry in tasks.items():
        e = entry[kind]
        if e is None:
            continue
        null, boot = e["kappa_null"], e["kappa_bootstrap"]
        rows.append([task, _num(e["kappa"], ".3f"), _num(e["kappa_max"], ".3f"), _num(null["mean"], ".3f"),
                     _interval(null), _interval(boot)])
    if not rows:
        return []
    fewer = [task for task, entry in tasks.items() if entry[kind] is not None and len(entry["seeds"]) < 5]
    lines = [f"{ {'heads': 'Heads', 'mlps': 'MLPs'}[kind]}: kappa beside what masks of these sizes allow",
             *_table(["task", "kappa", "max", "random mean", "random 95%", "seeds 95%"], rows)]
    if fewer:
        lines.append(f"(seeds 95%: n/a with fewer than 5 seeds: {', '.join(fewer)})")
    return lines + [""]


def format_summary(summary: Mapping[str, Any]) -> str:
    """`stability_summary`'s result as readable text tables (what ``bertlottery stability`` prints)."""
    source = {"prasanna2020": "the paper's released masks", "run": "run directory",
              "directory": "folder of masks"}.get(summary["source"], summary["source"])
    test = f"; Cochran's Q at alpha {summary['alpha']}" if summary["method"] == "structured" else ""
    out = [f"Stability of good masks across seeds: {summary['path']}",
           f"({source}; method {summary['method']}{test})", ""]
    tasks = summary["tasks"]
    reasons = []
    if summary["method"] == "structured":
        for kind in KINDS:
            rows = []
            for task, entry in tasks.items():
                e = entry[kind]
                if e is None:
                    continue
                q = e["cochran_q"]
                pw = e["pairwise"]
                rows.append([task, len(entry["seeds"]), f"{_mean_pm(e['kept_per_seed'], '.1f')} / {e['n_elements']}",
                             _num(e["kappa"], ".3f"), _num(q["statistic"], ".2f"), _num(q["pvalue"], ".2g"),
                             f"{pw['n_differ']}/{pw['n_pairs']}", e["super_survivors"]])
                for what, reason in (("kappa", e["kappa_reason"]), ("Cochran's Q", q["reason"])):
                    if reason:
                        reasons.append(f"{task} {kind}: {what} undefined: {reason}")
            if rows:
                out += [{"heads": "Heads", "mlps": "MLPs"}[kind], *_table(
                    ["task", "seeds", "kept per seed", "kappa", "Q", "p", "pairs differ", "super"], rows), ""]
                out += _kappa_table(kind, tasks)
        rows = []
        for task, entry in tasks.items():
            size, sup = entry["body_fraction_kept"], entry["super_survivors"]
            rows.append([task, f"{_mean_pm(size['per_seed'], '.1%')}" if size else "n/a",
                         _num(sup["heads"], "d"), _num(sup["mlps"], "d"), _num(sup["body_fraction"], ".1%")])
        out += [COCHRAN_NOTE, ""]
        out += ["encoder-body weights kept (good masks) and super-survivors (kept in every seed)",
                *_table(["task", "good mask size", "super heads", "super MLPs", "super size"], rows), ""]
    else:
        rows = []
        for task, entry in tasks.items():
            w = entry["weights"]
            heads = [v for row in entry["heads"]["survival_mean"] for v in row if v is not None]
            mlps = [v for v in entry["mlps"]["survival_mean"] if v is not None]
            rows.append([task, len(entry["seeds"]), _mean_pm(w["fraction_kept"]["per_seed"], ".1%"),
                         f"{min(heads):.0%}-{max(heads):.0%}" if heads else "n/a",
                         f"{min(mlps):.0%}-{max(mlps):.0%}" if mlps else "n/a",
                         f"{w['super_survivor_fraction']:.1%}"])
        out += ["prunable weights kept; range over heads and MLPs of the mean % of their weights kept",
                *_table(["task", "seeds", "kept", "heads", "MLPs", "kept in every seed"], rows), ""]
    out += [f"note: {r}" for r in reasons] + [f"note: {n}" for n in summary["notes"]]
    return "\n".join(out).rstrip() + "\n"
