"""The sections about the run itself: its status, time and energy, config and environment."""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from ... import runs
from ..context import Context, join
from ..html import paragraph, table_html
from ..section import Section

__all__ = ["status_section", "costs_section", "config_section", "environment_section"]


def status_section(ctx: Context) -> Section:
    from ..tables import status_table

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


def costs_section(ctx: Context) -> Section:
    from ..tables import cost_tables

    by_kind, by_stage = cost_tables(ctx.run.stages)
    if by_kind.empty:
        return Section("Time and energy", paragraph("No finished stages yet."), ["time and energy of finished stages"])
    total = by_kind.frame.iloc[-1]
    line = f"{int(total['stages'])} finished stages took {total['seconds'] / 3600:.2f} h of stage time"
    if total["stages_with_energy"]:
        line += (f" and used {total['energy_kwh']:.4g} kWh ({1000 * total['emissions_kg']:.3g} g CO2-eq, codecarbon "
                 f"estimate over {int(total['stages_with_energy'])} stages)")
    body = [paragraph(line + "."), table_html(by_kind, ctx.out_dir),
            join([Markup("<details><summary>Every stage</summary>"), table_html(by_stage, ctx.out_dir),
                  Markup("</details>")])]
    missing = []
    unfinished = sum(1 for s in ctx.run.stages if s.state != "done")
    if unfinished:
        missing.append(f"time and energy of the {unfinished} unfinished stages")
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
    import pandas as pd

    from ..tables import Table

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
    return Section("Environment", table_html(table, ctx.out_dir), missing)
