"""Importance against ablation as stages (a config with an ``ablation:`` section).

Per task and seed, after the lottery stages it reads: ``ablation/<task>/seed<s>`` gates each unit of
``ablation.units`` off alone in the fine-tuned model, scores it on dev, and compares the cost with the
importance the seed's s-pruning search started from (`bertlottery.steps.ablation`). A task whose model
was not learnt has no search, so its ablation stage is skipped with the search's reason. Its result rows
(method ``ablation``) hold the rank correlation per unit kind, ``spearman:<units>``.
"""

from __future__ import annotations

from pathlib import Path

from ..pipeline import Stage
from ..results import ResultRow

__all__ = ["KIND", "expand", "execute"]

KIND = "ablation"


def expand(config, lottery_stages: list[Stage]) -> list[Stage]:
    """One ablation stage per fine-tuned model that has an s-pruning search."""
    searches = {(s.task, s.keys["seed"]): s for s in lottery_stages
                if s.kind == "prune" and s.keys.get("method") == "structured"}
    stages = []
    for finetune in (s for s in lottery_stages if s.kind == "finetune"):
        prune = searches.get((finetune.task, finetune.keys["seed"]))
        if prune is not None:
            stages.append(Stage(KIND, finetune.task, f"seed{finetune.keys['seed']}",
                                {"seed": finetune.keys["seed"], "method": KIND},
                                {"units": list(config.ablation.units)},
                                {"finetune": finetune.id, "prune": prune.id}))
    return stages


def execute(stage: Stage, out: Path, inputs: dict[str, Path], config, progress: bool) -> list[ResultRow]:
    from .. import runs
    from ..steps.ablation import ablation_run

    glue = Path(config.glue_dir) if config.glue_dir else None
    record = ablation_run(inputs["finetune"], inputs["prune"], glue_dir=glue, units=stage.settings["units"])
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / runs.ABLATION_FILE, record)
    return [ResultRow(task=stage.task, seed=stage.keys["seed"], method=KIND, subnetwork="full", mode="finetuned",
                      split=record["split"], metric=f"spearman:{unit}", value=correlation["r"], fraction_kept=1.0,
                      epochs=None, stage_id=stage.id)
            for unit, correlation in record["spearman"].items() if correlation["r"] is not None]
