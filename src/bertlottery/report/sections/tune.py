"""The fine-tuning settings each task trained with, and how they were chosen: the ``tune`` stages'
candidates with their held-out scores and the choice (`bertlottery.tuning`), or, for a run that did not
tune, the config's ``train`` settings per task."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from ... import runs
from ...tuning import TIE_RULE
from ..context import Context, join, missing_stages
from ..html import paragraph, table_html
from ..section import Section
from ..tables import Table, metric_name, rate_text

__all__ = ["tune_section", "tune_table"]

TITLE = "Fine-tuning settings and how they were chosen"


def tune_section(ctx: Context) -> Section:
    config = ctx.run.config or {}
    records = {}
    for stage in ctx.run.stages_of("tune"):
        path = stage.folder / runs.TUNE_FILE
        if path.is_file():
            records[stage.task] = runs.read_json(path)
    tuned_tasks = [t for t in config.get("tasks") or [] if _tunes(config.get("tune"), t)]
    body = []
    if records:
        first = next(iter(records.values()))
        body.append(paragraph(
            f"Each candidate was fine-tuned on the training set less a seeded held-out slice "
            f"({first['tune_fraction']:.0%} of it, seed {first['tune_seed']}) and scored on that slice, never on dev, "
            f"which scores the pruning. The choice is {TIE_RULE}; it is what the task's fine-tuning, re-fine-tuning "
            f"and random-init baseline trained with."))
        body.append(table_html(tune_table(records), ctx.out_dir))
    untuned = [t for t in config.get("tasks") or [] if t not in tuned_tasks]
    if untuned:
        body.append(paragraph("Not tuned, trained with the config's train settings: " + "; ".join(
            f"{task} {_settings_text(_train_of(config, task))}" for task in untuned) + "."))
    if not config:
        body.append(paragraph("No readable config.json: the fine-tuning settings are not known."))
    missing = missing_stages(ctx, lambda s: s.kind in ("tune", "tune-candidate"), "tune") if tuned_tasks else []
    return Section(TITLE, join(body) if body else Markup(""), missing)


def tune_table(records: dict[str, dict[str, Any]]) -> Table:
    """One row per task and candidate (the task a group, the candidate's settings its label): its held-out
    score, and whether it was chosen."""
    import pandas as pd

    rows, display, labels, groups = [], [], [], []
    for task, record in records.items():
        for i, candidate in enumerate(record["candidates"]):
            settings = {k: candidate[k] for k in record["tuned"]}
            chosen = i == record["chosen"]
            rows.append({"task": task, **settings, "metric": record["metric"], "heldout_score": candidate["score"],
                         "heldout_loss": candidate.get("heldout_loss"),
                         "n_heldout": record["n_heldout"], "n_train": record["n_train"], "chosen": chosen,
                         "train_seconds": candidate.get("train_seconds")})
            display.append({"held-out score": "–" if candidate["score"] is None else f"{candidate['score']:.4f}",
                             "held-out loss": "–" if candidate.get("heldout_loss") is None
                             else f"{candidate['heldout_loss']:.4f}",
                             "metric": metric_name(record["metric"]), "chosen": "chosen" if chosen else ""})
            labels.append(_settings_text(settings))
            groups.append(task)
    return Table("tune", "Tuning candidates", "Each task's candidates, scored on a held-out slice of train.",
                 pd.DataFrame(rows), pd.DataFrame(display, index=labels), groups)


def _tunes(tune: dict[str, Any] | None, task: str) -> bool:
    return tune is not None and (tune.get("tasks") is None or task in tune["tasks"])


def _train_of(config: dict[str, Any], task: str) -> dict[str, Any]:
    train = config.get("train") or {}
    return {**train, **(train.get("per_task") or {}).get(task, {})}


def _settings_text(settings: dict[str, Any]) -> str:
    """``"lr 1e-4, epochs 3, batch 32"``."""
    names = {"learning_rate": "lr", "epochs": "epochs", "batch_size": "batch"}
    return ", ".join(f"{label} " + (rate_text(settings[key]) if key == "learning_rate" else f"{settings[key]:g}")
                     for key, label in names.items() if settings.get(key) is not None)
