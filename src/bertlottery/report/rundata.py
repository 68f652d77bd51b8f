"""What a report reads from a run directory, read once and tolerant of a run that is not finished.

`load_run` gathers the results rows, the resolved config, each stage's state (done / running /
failed / left) with its time and energy, and where the stages' artifacts are. Nothing here loads a
model. Anything it cannot read is recorded in ``RunData.problems`` (shown in the report) instead
of raising, except a directory that is no run directory at all (`UserError`).

Example:
    >>> run = load_run("runs/smoke")                  # doctest: +SKIP
    >>> run.results.groupby("mode").size()            # doctest: +SKIP
    >>> [s.id for s in run.stages if s.state == "failed"]   # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["StageInfo", "RunData", "load_run", "is_run_dir"]

RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"


@dataclass
class StageInfo:
    """One stage of the run: ``state`` is done, running, failed or left (not started, or blocked)."""

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

    @property
    def file_id(self) -> str:
        return self.id.replace("/", "__")


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any] | None
    results: Any  # pandas DataFrame with results.COLUMNS
    results_source: str
    stages: list[StageInfo]
    graph_known: bool  # stages come from the config's graph (else: only what is on disk)
    environment: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str((self.config or {}).get("name") or self.run_dir.name)

    def stages_of(self, kind: str, task: str | None = None, state: str | None = "done") -> list[StageInfo]:
        return [s for s in self.stages if s.kind == kind and (task is None or s.task == task)
                and (state is None or s.state == state)]

    def counts(self) -> dict[str, int]:
        order = ("done", "running", "failed", "left")
        return {state: sum(1 for s in self.stages if s.state == state) for state in order}


def is_run_dir(path: Path) -> bool:
    """A study run directory: it has the resolved ``config.json``, a results table or per-stage rows."""
    from .. import runs
    from ..results import ROWS_DIR

    return path.is_dir() and any((path / name).exists() for name in (runs.CONFIG_FILE, RESULTS_CSV, RESULTS_PARQUET,
                                                                      ROWS_DIR))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _graph(config_data: dict[str, Any] | None, problems: list[str]):
    """The config's stage graph, or None where it cannot be rebuilt (an old or damaged config)."""
    if config_data is None:
        return None
    from ..pipeline import graph_of_config

    try:
        return graph_of_config(config_data)
    except Exception as error:  # noqa: BLE001 - the report still shows what is on disk
        problems.append(f"the stage graph could not be rebuilt from config.json ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:200]}); the report lists only the stages found on disk")
        return None


def _stages(run_dir: Path, graph, problems: list[str]) -> list[StageInfo]:
    from ..pipeline import FAILED_DIR, STAGE_FILE, stage_dir, stage_states

    infos: list[StageInfo] = []
    if graph is not None:
        states = stage_states(graph, run_dir)
        for stage in graph:
            infos.append(StageInfo(stage.id, stage.kind, stage.task, dict(stage.keys), states[stage.id],
                                   stage_dir(run_dir, stage)))
    else:  # only what is on disk: finished stages and recorded failures
        for record_path in sorted((run_dir / "stages").glob(f"*/*/*/{STAGE_FILE}")):
            record = _read_json(record_path) or {}
            folder = record_path.parent
            stage_id = record.get("id") or str(folder.relative_to(run_dir / "stages"))
            kind, task = stage_id.split("/")[:2] if stage_id.count("/") >= 2 else (folder.parent.parent.name,
                                                                                    folder.parent.name)
            infos.append(StageInfo(stage_id, kind, task, record.get("keys") or {}, "done", folder))
        known = {s.id for s in infos}
        for failure in sorted((run_dir / FAILED_DIR).glob("*.json")):
            stage_id = failure.stem.replace("__", "/")
            if stage_id in known or stage_id.count("/") < 2:
                continue
            kind, task, name = stage_id.split("/", 2)
            infos.append(StageInfo(stage_id, kind, task, {}, "failed", run_dir / "stages" / stage_id))
    for info in infos:
        if info.state == "done":
            record = _read_json(info.folder / STAGE_FILE)
            if record is None:
                problems.append(f"{info.folder / STAGE_FILE} could not be read")
                continue
            info.seconds = record.get("seconds")
            info.energy_kwh = record.get("energy_kwh")
            info.emissions_kg = record.get("emissions_kg")
            info.keys = record.get("keys") or info.keys
        elif info.state == "failed":
            record = _read_json(run_dir / FAILED_DIR / f"{info.file_id}.json") or {}
            info.error = str(record.get("error") or "no error recorded").splitlines()[0][:300]
    return infos


def _results(run_dir: Path, graph, problems: list[str]):
    """The rows of the run: the per-stage row files when there are any (they are current while a
    study runs; ``results.csv`` is only rewritten when a run ends), else the table files."""
    import pandas as pd

    from ..results import COLUMNS, ROWS_DIR, read_rows

    if (run_dir / ROWS_DIR).is_dir() and any((run_dir / ROWS_DIR).glob("*.json")):
        ids = [s.id.replace("/", "__") for s in graph] if graph is not None else None
        try:
            return pd.DataFrame(read_rows(run_dir, ids), columns=COLUMNS), f"{ROWS_DIR}/ (one file per stage)"
        except UserError as error:
            problems.append(str(error))
    for name, read in ((RESULTS_PARQUET, pd.read_parquet), (RESULTS_CSV, pd.read_csv)):
        path = run_dir / name
        if path.is_file():
            try:
                table = read(path)
            except Exception as error:  # noqa: BLE001 - a damaged table is reported, the next one tried
                problems.append(f"{path} could not be read ({type(error).__name__})")
                continue
            absent = [c for c in COLUMNS if c not in table.columns]
            if absent:
                problems.append(f"{path} lacks the columns {absent}")
                continue
            return table[COLUMNS], name
    return pd.DataFrame(columns=COLUMNS), "none (no results yet)"


def _environment(stages: list[StageInfo]) -> dict[str, Any] | None:
    from .. import runs

    for info in stages:
        if info.state == "done" and info.kind in ("finetune", "retrain", "gordon-finetune", "gordon-pretrain"):
            env = _read_json(info.folder / runs.ENVIRONMENT_FILE)
            if env:
                return env
    return None


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory for a report; `UserError` if it is not one."""
    from .. import runs

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist; give the run directory of a study (bertlottery run CONFIG --run-dir DIR).")
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a study run directory (no config.json, results.csv or rows/); "
                        "give the folder that bertlottery run wrote.")
    problems: list[str] = []
    config = _read_json(run_dir / runs.CONFIG_FILE)
    if config is None and (run_dir / runs.CONFIG_FILE).exists():
        problems.append(f"{run_dir / runs.CONFIG_FILE} could not be read")
    if config is not None and not isinstance(config, dict):
        problems.append(f"{run_dir / runs.CONFIG_FILE} does not hold a mapping")
        config = None
    graph = _graph(config, problems)
    stages = _stages(run_dir, graph, problems)
    table, source = _results(run_dir, graph, problems)
    return RunData(run_dir, config, table, source, stages, graph is not None, _environment(stages), problems)
