"""The sections about the run itself: its status, time and energy, config and environment, and their
tables (pure functions of the run's stages)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from markupsafe import Markup

from ... import runs
from ..context import Context, join
from ..html import paragraph, table_html
from ..rundata import StageInfo
from ..section import Section
from ..tables import Table

__all__ = ["status_section", "costs_section", "config_section", "environment_section", "status_table", "cost_tables",
           "revisions_table"]


def status_section(ctx: Context) -> Section:
    run = ctx.run
    counts = run.counts()
    body = [paragraph(f"{len(run.stages)} stages: " + ", ".join(f"{n} {state}" for state, n in counts.items())
                      + ("" if run.graph_known else f" (only the stages found on disk: the run has no readable "
                                                   f"{runs.GRAPH_FILE})") + ".")]
    missing = []
    if run.stages:
        body.append(table_html(status_table(run.stages), ctx.out_dir))
    failed = [s for s in run.stages if s.state == "failed"]
    if failed:
        body.append(join([Markup("<h3>Failed stages</h3><ul>")]
                          + [Markup("<li><code>{}</code>: {}</li>").format(s.id, s.error) for s in failed]
                          + [Markup("</ul>")]))
        missing.append(f"{len(failed)} failed stage{'s' if len(failed) > 1 else ''} (listed below; "
                       "bertlottery run again retries them)")
    skipped = [s for s in run.stages if s.state == "skipped"]
    if skipped:
        reasons: dict[str, list[StageInfo]] = {}
        for stage in skipped:
            reasons.setdefault(_skip_reason(run.run_dir, stage), []).append(stage)
        items = [Markup("<li>{} stage{}: {}</li>").format(len(group), "s" if len(group) > 1 else "", reason)
                 for reason, group in reasons.items()]
        body.append(join([Markup("<h3>Skipped stages (not learnt)</h3><ul>"), *items, Markup("</ul>")]))
    left = [s for s in run.stages if s.state in ("left", "running")]
    if left:
        running = sum(1 for s in left if s.state == "running")
        missing.append(f"{len(left)} stage{'s' if len(left) > 1 else ''} not finished"
                       + (f" ({running} running now)" if running else ""))
        items = [Markup("<li><code>{}</code> ({})</li>").format(s.id, s.state) for s in left]
        body.append(join([Markup("<details><summary>Stages not finished ({})</summary><ul>").format(len(left))]
                          + items + [Markup("</ul></details>")]))
    if not run.stages:
        missing.append("no stages found (nothing has run yet, or the folder holds only a results table)")
    return Section("Status of the run", join(body), missing)


def _skip_reason(run_dir, stage: StageInfo) -> str:
    return f"{stage.task}: {runs.skip_reason(run_dir, stage.id) or 'no reason recorded'}"


def costs_section(ctx: Context) -> Section:
    by_kind, by_stage = cost_tables(ctx.run.stages)
    if by_kind.empty:
        return Section("Time and energy", paragraph("No finished stages yet."), ["time and energy of finished stages"])
    total = by_kind.frame.iloc[-1]
    line = f"{int(total['stages'])} finished stages took {total['seconds'] / 3600:.2f} h of stage time"
    if total["stages_with_energy"]:
        line += (f" and used {total['energy_kwh']:.4g} kWh ({1000 * total['emissions_kg']:.3g} g CO2-eq, codecarbon "
                 f"estimate over {int(total['stages_with_energy'])} stages)")
    skipped = sum(1 for s in ctx.run.stages if s.state == "skipped")
    if skipped:
        line += (f". The {skipped} skipped stages did no work (the model they start from was not learnt) and "
                 "cost nothing")
    body = [paragraph(line + "."), table_html(by_kind, ctx.out_dir),
            join([Markup("<details><summary>Every stage</summary>"), table_html(by_stage, ctx.out_dir),
                  Markup("</details>")])]
    missing = []
    unfinished = sum(1 for s in ctx.run.stages if s.state not in ("done", "skipped"))
    if unfinished:
        missing.append(f"time and energy of the {unfinished} stages not yet finished")
    return Section("Time and energy", join(body), missing)


def config_section(ctx: Context) -> Section:
    config = ctx.run.config
    if config is None:
        return Section("Configuration", paragraph("No readable config.json in the run directory."),
                       ["the run's resolved config (config.json)"])
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    return Section("Configuration", join([
        paragraph(f"The resolved config of the run (config.json): {config.get('name', '?')}, model "
                  f"{config.get('model', '?')}, {len(config.get('tasks') or [])} tasks, "
                  f"{len(config.get('seeds') or [])} seeds."),
        Markup("<details><summary>config.json</summary><pre>{}</pre></details>").format(text)]))


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        out.append((prefix, " ".join(map(str, value))))
    else:
        out.append((prefix, "–" if value is None else str(value)))


def environment_section(ctx: Context) -> Section:
    columns: dict[str, dict[str, str]] = {}
    for label, env in (("the run (a fine-tuning stage)", ctx.run.environment), ("this report", runs.environment())):
        if env:
            pairs: list[tuple[str, str]] = []
            _flatten("", {k: v for k, v in env.items() if k != "argv"}, pairs)
            columns[label] = dict(pairs)
    keys = list(dict.fromkeys(k for c in columns.values() for k in c))
    display = pd.DataFrame({label: [c.get(k, "–") for k in keys] for label, c in columns.items()}, index=keys)
    frame = display.reset_index().rename(columns={"index": "key"})
    table = Table("environment", "Environment", "Versions, platform and revision of the run and of this report.",
                  frame, display)
    missing = [] if ctx.run.environment else ["the run's environment.json (written by fine-tuning stages)"]
    body = [table_html(table, ctx.out_dir)]
    revisions = revisions_table(ctx.run.stages)
    if not revisions.empty:
        body.append(table_html(revisions, ctx.out_dir))
    return Section("Environment", join(body), missing)


def revisions_table(stages: Sequence[StageInfo]) -> Table:
    """Every git revision the finished stages ran at, with how many stages ran at each (from the
    ``environment.json`` the training stages write)."""
    from ..rundata import json_or_none

    counts: dict[str, dict[str, int]] = {}
    for stage in stages:
        if stage.state != "done":
            continue
        env = json_or_none(stage.folder / runs.ENVIRONMENT_FILE)
        if not env:
            continue
        revision = str(env.get("git_revision") or "unknown (not a git checkout)")
        if env.get("git_dirty"):  # recorded since 2026-11-30; earlier stages say nothing about it
            revision += " with uncommitted changes"
        by_kind = counts.setdefault(revision, {})
        by_kind[stage.kind] = by_kind.get(stage.kind, 0) + 1
    frame = pd.DataFrame([{"git revision": rev, "stages": sum(kinds.values()),
                           "kinds": ", ".join(f"{k} {n}" for k, n in kinds.items())} for rev, kinds in counts.items()],
                         columns=["git revision", "stages", "kinds"])
    display = frame.set_index("git revision").astype(str)
    display.index.name = None
    return Table("revisions", "Git revisions the stages ran at",
                 "Each revision of bertlottery that finished stages of this run (as the stage's process imported it; "
                 "\"with uncommitted changes\" where its tracked files differed from that commit), with the number of "
                 "stages (of those that record their environment: the training stages) per revision and kind.",
                 frame, display)


def status_table(stages: Sequence[StageInfo]) -> Table:
    """Stages per kind and state (done, skipped, running, failed, left)."""
    states = ("done", "skipped", "running", "failed", "left")
    kinds = list(dict.fromkeys(s.kind for s in stages))
    records = [{"kind": kind, **{state: sum(1 for s in stages if s.kind == kind and s.state == state) for state in states}}
               for kind in kinds]
    if records:
        records.append({"kind": "all", **{state: sum(r[state] for r in records) for state in states}})
    frame = pd.DataFrame(records, columns=["kind", *states])
    display = frame.set_index("kind").astype(str)
    display.index.name = None
    return Table("stages", "Stages of the run", "How many stages of each kind are done, skipped, running, failed or "
                 "left (skipped: nothing to do, because the model they start from was not learnt; left: not started "
                 "yet, or waiting for a failed input).", frame, display)


def cost_tables(stages: Sequence[StageInfo]) -> tuple[Table, Table]:
    """Time and energy of the finished stages: per stage kind (and summed), and per stage."""
    done = [s for s in stages if s.state == "done"]
    per_stage = pd.DataFrame(
        [{"stage": s.id, "kind": s.kind, "task": s.task, "seconds": s.seconds, "energy_kwh": s.energy_kwh,
          "emissions_kg": s.emissions_kg} for s in done],
        columns=["stage", "kind", "task", "seconds", "energy_kwh", "emissions_kg"])
    records = []
    for kind, part in per_stage.groupby("kind", sort=False):
        records.append({"kind": kind, "stages": len(part), "seconds": part["seconds"].sum(min_count=1),
                        "energy_kwh": part["energy_kwh"].sum(min_count=1),
                        "emissions_kg": part["emissions_kg"].sum(min_count=1),
                        "stages_with_energy": int(part["energy_kwh"].notna().sum())})
    if records:
        records.append({"kind": "all", "stages": len(per_stage), "seconds": per_stage["seconds"].sum(min_count=1),
                        "energy_kwh": per_stage["energy_kwh"].sum(min_count=1),
                        "emissions_kg": per_stage["emissions_kg"].sum(min_count=1),
                        "stages_with_energy": int(per_stage["energy_kwh"].notna().sum())})
    by_kind = pd.DataFrame(records, columns=["kind", "stages", "seconds", "energy_kwh", "emissions_kg",
                                             "stages_with_energy"])

    def show(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        for column in frame.columns:
            values = frame[column]
            if column == "seconds":
                out["time"] = values.map(_duration)
            elif column == "energy_kwh":
                out["energy (kWh)"] = values.map(lambda v: "–" if pd.isna(v) else f"{v:.3g}")
            elif column == "emissions_kg":
                out["CO2-eq (g)"] = values.map(lambda v: "–" if pd.isna(v) else f"{1000 * v:.3g}")
            elif column == "stages_with_energy":
                out["stages with an energy estimate"] = values.astype(str)
            else:
                out[column] = values.astype(str)
        return out

    kind_display = show(by_kind).set_index("kind")
    if records and by_kind["seconds"].iloc[-1] > 0:  # where the time went, at a glance
        kind_display.insert(list(kind_display.columns).index("time") + 1, "share of time",
                            (by_kind["seconds"] / by_kind["seconds"].iloc[-1]).map(
                                lambda v: "–" if pd.isna(v) else f"{100 * v:.1f}%").values)
    kind_display.index.name = None
    stage_display = show(per_stage).set_index("stage")
    stage_display.index.name = None
    note = ["Energy and CO2-eq are codecarbon's estimates (offline mode), recorded per stage where tracking was on."]
    return (Table("cost_by_kind", "Time and energy per stage kind", "Wall time, energy and emissions of the "
                  "finished stages, summed per kind and over the run.", by_kind, kind_display, notes=note),
            Table("cost_by_stage", "Time and energy per stage", "Every finished stage.", per_stage, stage_display))


def _duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
