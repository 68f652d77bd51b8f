"""The ``tune:`` section of a lottery config: a small grid of fine-tuning settings per task, and the rule
that picks one. Imports nothing heavy (the config reads it); the step that trains the candidates is
`bertlottery.steps.tune`, and how the lottery study wires it in is `bertlottery.studies.lottery`
(`docs/algorithms.md`, "Tuning the full model").

Each candidate is fine-tuned on the training set less a seeded held-out slice of it, and scored on that
slice: never on dev, which scores the pruning. The best candidate's settings are what the task's
fine-tuning, re-fine-tuning and random-init baseline then train with.

Example:
    >>> tune = TuneConfig(learning_rates=[2e-5, 5e-5], epochs=[2, 3])
    >>> [c["learning_rate"] for c in candidates(tune.grid_for("RTE"))]
    [2e-05, 2e-05, 5e-05, 5e-05]
    >>> choose([{"learning_rate": 2e-5, "epochs": 3}, {"learning_rate": 5e-5, "epochs": 2}], [0.61, 0.61])
    1
    >>> choose([{"learning_rate": 2e-5, "epochs": 3}, {"learning_rate": 5e-5, "epochs": 2}], [0.61, 0.61], [0.6, 0.7])
    0
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError, did_you_mean

__all__ = ["TuneConfig", "GRID", "TIE_RULE", "candidates", "candidate_name", "choose", "validate"]

# a grid key of the config -> the `bertlottery.settings.TrainSettings` field it sets
GRID = {"learning_rates": "learning_rate", "epochs": "epochs", "batch_sizes": "batch_size"}

TIE_RULE = ("the highest held-out score (the task's primary metric; undefined counts as lowest); among equal "
            "scores (common on a small slice), the lower held-out loss (cross-entropy; squared error for "
            "regression), then fewer epochs, the lower learning rate, the larger batch")


@dataclass(frozen=True)
class TuneConfig:
    """A grid over fine-tuning settings, chosen per task on a held-out slice of train.

    ``learning_rates``, ``epochs``, ``batch_sizes``: the values tried (an empty list keeps ``train``'s
    value; a setting that is tuned replaces ``train``'s, ``per_task`` included). ``holdout_fraction``:
    the share of the (capped) training set held out to score the candidates. ``seed``: which slice is
    held out, and the candidates' run seed (classifier, dropout, data order). ``tasks``: which of the
    study's tasks are tuned (None: all). ``per_task``: a task's own grid keys, e.g.
    ``{SST-2: {epochs: [1, 2]}}``.
    """

    learning_rates: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    holdout_fraction: float = 0.1
    seed: int = 0
    tasks: list[str] | None = None
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tunes(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def grid_for(self, task: str) -> dict[str, list]:
        """``{TrainSettings field: values}`` of the settings tuned for ``task`` (in the config's order)."""
        merged = {**{key: getattr(self, key) for key in GRID}, **self.per_task.get(task, {})}
        return {GRID[key]: list(values) for key, values in merged.items() if key in GRID and values}


def candidates(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, ``{field: value}``, the first field varying slowest."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def candidate_name(candidate: dict[str, Any]) -> str:
    """A short name for a stage: ``lr5e-05-ep2`` (``-bs16`` with a batch size)."""
    short = {"learning_rate": "lr", "epochs": "ep", "batch_size": "bs"}
    return "-".join(f"{short[k]}{v:g}" for k, v in candidate.items())


def choose(settings: Sequence[dict[str, Any]], scores: Sequence[float | None],
           losses: Sequence[float | None] | None = None) -> int:
    """The index of the chosen candidate (`TIE_RULE`): ``settings[i]`` holds its ``learning_rate``,
    ``epochs`` and ``batch_size`` (missing ones count as equal), ``scores[i]`` its held-out score and
    ``losses[i]`` its held-out loss (None: not known)."""
    if not settings:
        raise ValueError("no candidates to choose from")

    def worst_if_undefined(value: float | None, sign: float) -> float:
        return math.inf if value is None or math.isnan(value) else sign * value

    def key(i: int) -> tuple:
        s = settings[i]
        return (worst_if_undefined(scores[i], -1), worst_if_undefined(losses[i] if losses else 0.0, 1),
                s.get("epochs", 0), s.get("learning_rate", 0.0), -s.get("batch_size", 0))

    return min(range(len(settings)), key=key)


def validate(tune: TuneConfig, study_tasks: Sequence[str], convert: Callable, problems: list[str]) -> None:
    """Every problem of a ``tune:`` section, appended to ``problems``. ``convert(value, type, where,
    problems)`` is the config reader's converter (typed values for ``per_task``'s lists)."""
    from .tasks import get_task

    def check_grid(where: str, values: dict[str, Any]) -> None:
        for key, values_ in values.items():
            if not isinstance(values_, list):
                continue  # a wrong type was reported by the reader
            if len(set(values_)) != len(values_):
                problems.append(f"{where}.{key} must not repeat a value, got {values_}")
            for value in values_:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if key == "learning_rates" and not (math.isfinite(value) and value > 0):
                    problems.append(f"{where}.{key} must be positive numbers, got {value}")
                elif key != "learning_rates" and value < 1:
                    problems.append(f"{where}.{key} must be at least 1, got {value}")

    check_grid("tune", {key: getattr(tune, key) for key in GRID})
    fraction = tune.holdout_fraction
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and not 0 < fraction < 1:
        problems.append(f"tune.holdout_fraction must be between 0 and 1 (the share of train held out to score "
                        f"the candidates), got {fraction}")
    if isinstance(tune.seed, int) and not isinstance(tune.seed, bool) and not 0 <= tune.seed < 2**32:
        problems.append(f"tune.seed must be in [0, 2**32), got {tune.seed}")
    known = {}
    for task in study_tasks or []:
        try:
            known[get_task(task).name] = task
        except UserError:
            pass  # reported with the study's tasks
    for task in tune.tasks or []:
        if task not in known:
            problems.append(f"tune.tasks: {task!r} is not one of the study's tasks ({', '.join(known)})")
    per_task = tune.per_task or {}
    for task, overrides in per_task.items():
        where = f"tune.per_task.{task}"
        if task not in known:
            problems.append(f"tune.per_task: {task!r} is not one of the study's tasks ({', '.join(known)})")
        if not isinstance(overrides, dict):
            problems.append(f"{where} must be a mapping of grid keys (for example {{epochs: [1, 2]}}), got {overrides!r}")
            continue
        typed = {}
        for key, value in overrides.items():
            if key not in GRID:
                problems.append(f"unknown key '{where}.{key}'.{did_you_mean(str(key), GRID)}".rstrip())
                continue
            typed[key] = convert(value, list[float] if key == "learning_rates" else list[int], f"{where}.{key}",
                                 problems)
        check_grid(where, typed)
        per_task[task] = typed  # the typed values (1e-4 read as text by YAML 1.1 becomes a number)
    for task in known:
        if tune.tunes(task) and sum(len(v) for v in tune.grid_for(task).values()) == 0:
            problems.append(f"tune: the grid for {task} is empty; give learning_rates, epochs or batch_sizes "
                            "(or leave the task out of tune.tasks)")
