"""What a study run costs: energy per stage (codecarbon), time and energy summed over a run, and the
time the unfinished stages will take, estimated from the finished ones.

Reads only what stages recorded in their ``stage.json`` (`bertlottery.runs`); the pipeline wraps each
stage in `EnergyMeter`, the CLI prints `run_summary` and `estimate_left`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import runs
from .errors import UserError

Stage = Any  # a `bertlottery.pipeline.Stage`: what is read here is its id, kind and task
ExperimentConfig = Any  # a `bertlottery.config.ExperimentConfig`: what is read here is its energy section

__all__ = ["energy_tracking", "EnergyMeter", "run_summary", "stage_seconds", "estimate_left", "finished_stage_times",
           "estimate_stages"]


def energy_tracking(config: ExperimentConfig) -> bool:
    """Whether to record energy; refuses ``energy.track: true`` without codecarbon."""
    if config.energy.track is False:
        return False
    try:
        import codecarbon  # noqa: F401
    except ImportError:
        if config.energy.track:
            raise UserError("energy.track is true but codecarbon is not installed: "
                            "pip install 'bertlottery[energy]', or set energy.track=false.") from None
        return False
    return True


class EnergyMeter:
    """codecarbon's offline tracker around one stage; a no-op when tracking is off."""

    def __init__(self, config: ExperimentConfig):
        self.tracker = None
        if energy_tracking(config):
            import logging

            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self.tracker = OfflineEmissionsTracker(country_iso_code=config.energy.country_iso_code,
                                                   output_methods=[], log_level="error", tracking_mode="process")

    def __enter__(self):
        if self.tracker is not None:
            self.tracker.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.tracker is not None:
            self.emissions_kg = self.tracker.stop() or 0.0
            self.energy_kwh = float(self.tracker.final_emissions_data.energy_consumed)

    def record(self) -> dict[str, float]:
        if self.tracker is None:
            return {}
        return {"energy_kwh": self.energy_kwh, "emissions_kg": float(self.emissions_kg)}


def run_summary(stages: list[Stage], run_dir: Path) -> dict[str, float]:
    """Seconds, kWh and kg CO2-eq summed over the finished stages of a run."""
    total = {"seconds": 0.0, "energy_kwh": 0.0, "emissions_kg": 0.0, "stages_with_energy": 0}
    for stage in stages:
        try:
            record = json.loads((runs.stage_path(run_dir, stage.id) / runs.STAGE_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue  # a damaged record: the stage runs again, and costs nothing here meanwhile
        total["seconds"] += _number(record.get("seconds")) or 0.0
        energy, emissions = _number(record.get("energy_kwh")), _number(record.get("emissions_kg"))
        if energy is not None and emissions is not None:
            total["energy_kwh"] += energy
            total["emissions_kg"] += emissions
            total["stages_with_energy"] += 1
    return total


def _number(value) -> float | None:
    """A recorded figure, or None where a damaged record holds something else."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stage_seconds(run_dir: Path, stage: Stage) -> float | None:
    """How long a finished stage ran, from its record; None where there is no readable record."""
    try:
        return float(json.loads((runs.stage_path(run_dir, stage.id) / runs.STAGE_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_SAME_WORK = {"retrain": "finetune", "baseline": "finetune"}  # stages that train like a task's fine-tuning


def estimate_left(stages: list[Stage], run_dir: Path, states: dict[str, str],
                  seconds_of: dict[str, float] | None = None) -> dict[str, float]:
    """Stage time the unfinished stages will take (a skipped one, whose model learnt nothing, none), from
    the finished ones: each counts the mean time of
    the finished stages of its kind and task, else (re-fine-tuning and baselines train on the same data
    as the fine-tuning) of the task's fine-tuning, else of its kind on any task. ``seconds`` sums those;
    ``estimated`` is how many unfinished stages got an estimate and ``unknown`` how many did not (no
    stage of their kind has finished yet). ``seconds_of``: a cache of finished stages' times, filled as
    they are read (a live view recomputes this after every stage)."""
    finished: dict[str, tuple[str, str, float]] = {}
    for stage in stages:
        if states.get(stage.id) != "done":
            continue
        seconds = (seconds_of or {}).get(stage.id)
        if seconds is None:
            seconds = stage_seconds(run_dir, stage)
            if seconds is None:
                continue
            if seconds_of is not None:
                seconds_of[stage.id] = seconds
        finished[stage.id] = (stage.kind, stage.task, seconds)
    # a stage skipped because its model learnt nothing will not run: it costs nothing
    left = [stage for stage in stages if states.get(stage.id) not in ("done", "skipped")]
    estimates = estimate_stages(left, finished, own=False)
    known = [v for v in estimates.values() if v is not None]
    return {"seconds": float(sum(known)), "estimated": len(known), "unknown": len(estimates) - len(known)}


def finished_stage_times(stages: list[Stage], run_dir: Path) -> dict[str, tuple[str, str, float]]:
    """``id -> (kind, task, seconds)`` of every finished stage recorded in ``run_dir``: the stages of its
    ``graph.json`` (an earlier config's too) and ``stages``. Reads only; a missing folder has none."""
    known = {s.id: (s.kind, s.task) for s in stages}
    for entry in runs.read_graph(run_dir) or []:
        if isinstance(entry, dict) and {"id", "kind", "task"} <= entry.keys():
            known.setdefault(entry["id"], (entry["kind"], entry["task"]))
    found = {}
    for stage_id, (kind, task) in known.items():
        try:
            record = json.loads((runs.stage_path(run_dir, stage_id) / runs.STAGE_FILE).read_text())
        except (OSError, ValueError):
            continue
        seconds = _number(record.get("seconds")) if isinstance(record, dict) else None
        if seconds is not None:
            found[stage_id] = (kind, task, seconds)
    return found


def estimate_stages(stages: list[Stage], finished: dict[str, tuple[str, str, float]], *,
                    own: bool = True) -> dict[str, float | None]:
    """Each stage's time from ``finished`` (`finished_stage_times`): its own recorded time where it is
    there (with ``own``), else the mean of the finished stages of its kind and task, else of the task's
    fine-tuning for stages that train like it (re-fine-tuning, baselines), else of its kind on any
    task; None where no stage of its kind has finished."""
    by_kind_task: dict[tuple[str, str], list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    for kind, task, seconds in finished.values():
        by_kind_task.setdefault((kind, task), []).append(seconds)
        by_kind.setdefault(kind, []).append(seconds)
    estimates: dict[str, float | None] = {}
    for stage in stages:
        if own and stage.id in finished:
            estimates[stage.id] = finished[stage.id][2]
            continue
        known = (by_kind_task.get((stage.kind, stage.task)) or by_kind_task.get((_SAME_WORK.get(stage.kind), stage.task))
                 or by_kind.get(stage.kind))
        estimates[stage.id] = sum(known) / len(known) if known else None
    return estimates
