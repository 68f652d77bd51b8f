"""What a report reads from a run directory, read once and tolerant of a run that is not finished.

`load_run` gathers the results rows, the resolved config (as JSON: the report never loads a config
through `bertlottery.config`), each stage's state (done / running / failed / left) with its time and
energy (`bertlottery.analysis.rundir.read_stages`, from the run's ``graph.json``), and where the
stages' artifacts are. Nothing here loads a model or imports the pipeline. Anything it cannot read
is recorded in ``RunData.problems`` (shown in the report) instead of raising, except a directory
that is no run directory at all (`UserError`).

Example:
    >>> run = load_run("runs/smoke")                  # doctest: +SKIP
    >>> run.results.groupby("mode").size()            # doctest: +SKIP
    >>> [s.id for s in run.stages if s.state == "failed"]   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from ..analysis.rundir import StageInfo, json_or_none, read_stages
from ..errors import UserError

__all__ = ["StageInfo", "RunData", "load_run", "is_run_dir", "json_or_none"]


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any] | None
    results: Any  # pandas DataFrame with results.COLUMNS
    results_source: str
    stages: list[StageInfo]
    graph_known: bool  # stages come from the run's graph.json (else: only what is on disk)
    environment: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str((self.config or {}).get("name") or self.run_dir.name)

    def stages_of(self, kind: str, task: str | None = None, state: str | None = "done") -> list[StageInfo]:
        return [s for s in self.stages if s.kind == kind and (task is None or s.task == task)
                and (state is None or s.state == state)]

    def counts(self) -> dict[str, int]:
        order = ("done", "skipped", "running", "failed", "left")
        counts = {state: sum(1 for s in self.stages if s.state == state) for state in order}
        if not counts["skipped"]:  # only studies with a learnt-check that failed have skipped stages
            del counts["skipped"]
        return counts


def is_run_dir(path: Path) -> bool:
    """A study run directory: it has the resolved ``config.json``, a results table or per-stage rows."""
    return path.is_dir() and any((path / name).exists() for name in (runs.CONFIG_FILE, runs.RESULTS_CSV,
                                                                      runs.RESULTS_PARQUET, runs.ROWS_DIR))


def _results(run_dir: Path, stages: list[StageInfo] | None, problems: list[str]):
    """The rows of the run: the per-stage row files when there are any (they are current while a
    study runs; ``results.csv`` is only rewritten when a run ends), else the table files. With the
    run's graph (``stages``), only its stages' row files: a changed config leaves others behind."""
    import pandas as pd

    from dataclasses import MISSING, fields

    from ..results import COLUMNS, ResultRow, read_rows

    # columns added after a table was written (``note``): an older results.csv is read with their default
    optional = {f.name: f.default for f in fields(ResultRow) if f.default is not MISSING}

    rows_dir = run_dir / runs.ROWS_DIR
    if rows_dir.is_dir() and any(rows_dir.glob("*.json")):
        ids = [s.file_id for s in stages] if stages is not None else None
        try:
            return pd.DataFrame(read_rows(run_dir, ids), columns=COLUMNS), f"{runs.ROWS_DIR}/ (one file per stage)"
        except UserError as error:
            problems.append(str(error))
    for name, read in ((runs.RESULTS_PARQUET, pd.read_parquet), (runs.RESULTS_CSV, pd.read_csv)):
        path = run_dir / name
        if path.is_file():
            try:
                table = read(path)
            except Exception as error:  # noqa: BLE001 - a damaged table is reported, the next one tried
                problems.append(f"{path} could not be read ({type(error).__name__})")
                continue
            for column, default in optional.items():
                if column not in table.columns:
                    table[column] = default
            absent = [c for c in COLUMNS if c not in table.columns]
            if absent:
                problems.append(f"{path} lacks the columns {absent}")
                continue
            return table[COLUMNS], name
    return pd.DataFrame(columns=COLUMNS), "none (no results yet)"


def _environment(stages: list[StageInfo]) -> dict[str, Any] | None:
    for info in stages:
        if info.state == "done" and info.kind in ("finetune", "retrain", "gordon-finetune", "gordon-pretrain"):
            env = json_or_none(info.folder / runs.ENVIRONMENT_FILE)
            if env:
                return env
    return None


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory for a report; `UserError` if it is not one."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist; give the run directory of a study (bertlottery run CONFIG --run-dir DIR).")
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a study run directory (no config.json, results.csv or rows/); "
                        "give the folder that bertlottery run wrote.")
    problems: list[str] = []
    config = json_or_none(run_dir / runs.CONFIG_FILE)
    if config is None and (run_dir / runs.CONFIG_FILE).exists():
        problems.append(f"{run_dir / runs.CONFIG_FILE} could not be read")
    if config is not None and not isinstance(config, dict):
        problems.append(f"{run_dir / runs.CONFIG_FILE} does not hold a mapping")
        config = None
    read = read_stages(run_dir)
    problems += read.problems
    table, source = _results(run_dir, read.stages if read.graph_known else None, problems)
    return RunData(run_dir, config, table, source, read.stages, read.graph_known, _environment(read.stages),
                   problems)
