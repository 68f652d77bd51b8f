"""The stages of a study run directory, as the run wrote them: the one reader the report and the
statistics share.

The stages come from the run's ``graph.json`` (every stage of the study, finished or not) and each
one's state from its folder (``done``, ``failed``, ``running`` or ``left``). A run written before runs
had a ``graph.json`` falls back to the stage folders on disk: its finished stages and recorded
failures, and nothing about the stages that have not started. Nothing here imports the pipeline, the
config or torch: a run is read from its files alone.

Example:
    >>> stages = read_stages("runs/smoke")                                 # doctest: +SKIP
    >>> [s.id for s in stages.stages if s.state == "failed"]               # doctest: +SKIP
    >>> importance_from_trace("runs/smoke/stages/prune/RTE/seed1-structured-0123456789", [1])   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs

__all__ = ["StageInfo", "RunStages", "read_stages", "NO_GRAPH", "importance_from_trace", "json_or_none"]

NO_GRAPH = ("this run has no graph.json (it was written by an older bertlottery): only the stages found on disk "
            "are read; run `bertlottery run CONFIG --run-dir RUN` once to write it")


@dataclass
class StageInfo:
    """One stage of the run: ``state`` is done, running, failed or left (not started, or blocked).

    ``keys``, ``inputs``, ``seconds``, ``energy_kwh`` and ``emissions_kg`` of a finished stage are its
    ``stage.json``'s; ``error`` is the first line of a failed stage's recorded error.
    """

    id: str
    kind: str
    task: str
    keys: dict[str, Any]
    state: str
    folder: Path
    seconds: float | None = None
    energy_kwh: float | None = None
    emissions_kg: float | None = None
    error: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def file_id(self) -> str:
        return runs.stage_file_name(self.id)


@dataclass
class RunStages:
    """``stages``: the graph's (or, with ``graph_known`` False, the finished and failed ones on disk).
    ``stray``: finished stages on disk that the graph does not hold (left there by an earlier config).
    ``problems``: what could not be read, one line each."""

    stages: list[StageInfo]
    graph_known: bool
    stray: list[StageInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def json_or_none(path: Path) -> Any:
    """The JSON in ``path``, or None where it is absent or unreadable (a stage being written, a damaged file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _on_disk(run_dir: Path) -> list[StageInfo]:
    """The finished stages on disk, newest last among equals (the folder's stage id when its
    ``stage.json`` has none)."""
    root = run_dir / runs.STAGES_DIR
    infos = []
    for record_path in sorted(root.glob(f"*/*/*/{runs.STAGE_FILE}")):
        record = json_or_none(record_path) or {}
        folder = record_path.parent
        stage_id = record.get("id") or str(folder.relative_to(root))
        kind, task = stage_id.split("/")[:2] if stage_id.count("/") >= 2 else (folder.parent.parent.name,
                                                                                folder.parent.name)
        infos.append(StageInfo(stage_id, kind, record.get("task") or task, record.get("keys") or {}, "done", folder))
    return infos


def _failed_on_disk(run_dir: Path, known: set[str]) -> list[StageInfo]:
    infos = []
    for failure in sorted((run_dir / runs.FAILED_DIR).glob("*.json")):
        stage_id = failure.stem.replace("__", "/")
        if stage_id in known or stage_id.count("/") < 2:
            continue
        kind, task, _ = stage_id.split("/", 2)
        infos.append(StageInfo(stage_id, kind, task, {}, "failed", runs.stage_path(run_dir, stage_id)))
    return infos


def _fill(run_dir: Path, info: StageInfo, problems: list[str]) -> None:
    """What a finished stage recorded (time, energy, keys, inputs), or a failed stage's error."""
    if info.state == "done":
        record = json_or_none(info.folder / runs.STAGE_FILE)
        if record is None:
            problems.append(f"{info.folder / runs.STAGE_FILE} could not be read")
            return
        info.seconds = record.get("seconds")
        info.energy_kwh = record.get("energy_kwh")
        info.emissions_kg = record.get("emissions_kg")
        info.keys = record.get("keys") or info.keys
        info.inputs = record.get("inputs") or info.inputs
    elif info.state == "failed":
        record = json_or_none(run_dir / runs.FAILED_DIR / f"{info.file_id}.json") or {}
        info.error = str(record.get("error") or "no error recorded").splitlines()[0][:300]


def read_stages(run_dir: str | os.PathLike) -> RunStages:
    """Every stage of a run and its state, from ``graph.json`` and the stage folders.

    Without ``graph.json`` (a run from an older version, or a folder that holds only results):
    the finished stages on disk and the recorded failures, ``graph_known`` False and a line in
    ``problems`` saying so. A damaged ``graph.json`` is reported the same way.
    """
    from ..errors import UserError

    run_dir = Path(run_dir)
    problems: list[str] = []
    try:
        graph = runs.read_graph(run_dir)
    except UserError as error:
        problems.append(f"{error} Only the stages found on disk are read.")
        graph = None
    if graph is None:
        if (run_dir / runs.STAGES_DIR).is_dir() and not problems:
            problems.append(NO_GRAPH)
        infos = _on_disk(run_dir)
        infos += _failed_on_disk(run_dir, {s.id for s in infos})
        stray: list[StageInfo] = []
    else:
        infos = [StageInfo(s["id"], s["kind"], s["task"], dict(s["keys"]), runs.stage_state(run_dir, s["id"]),
                           runs.stage_path(run_dir, s["id"]), inputs=dict(s["inputs"])) for s in graph]
        own = {s.id for s in infos}
        stray = [s for s in _on_disk(run_dir) if s.id not in own]
    for info in infos:
        _fill(run_dir, info, problems)
    return RunStages(infos, graph is not None, stray, problems)


def importance_from_trace(path: str | os.PathLike, iterations: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """`bertlottery.stats.importance_at` of a structured prune stage's ``trace.json`` (the file or
    its stage folder): head and MLP importance scores at the chosen 1-based iterations (Figure 3 of
    Prasanna et al. 2020)."""
    from .. import stats

    path = Path(path)
    if path.is_dir():
        path = path / runs.TRACE_FILE
    return stats.importance_at(runs.read_json(path), iterations)
