"""Run a graph of stages into a run directory, skipping what is done: in this process or on Ray.

A stage is one step of a study (fine-tune, prune, sample subnetworks, evaluate pruned, re-fine-tune,
pre-train, ...). Its id ends in a hash of everything that determines its output: its kind, keys,
settings and the ids of the stages it reads. Change a setting and the stage (and every stage
downstream) gets a new id and runs again; change nothing and it is skipped.

The pipeline knows no study: a study (`bertlottery.studies`) expands a config into stages and hands
them over with its ``execute(stage, out, inputs, config, progress) -> rows`` function. Where things
are written is `bertlottery.runs`' business: ``graph.json`` at every start, a folder per stage with
``stage.json`` written last (its presence marks the stage done), the stage's result rows, a record
of a failure. A stage killed midway left no ``stage.json``: the next run starts it over from a clean
folder.

Example:
    >>> from bertlottery import studies
    >>> stages = studies.expand(config)                                           # doctest: +SKIP
    >>> run_local(stages, Path("runs/smoke"), config, execute=studies.execute)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runs
from .config import ExperimentConfig, to_dict
from .costs import EnergyMeter, energy_tracking
from .errors import UserError
from .results import ResultRow, write_stage_rows, write_table
from .runs import EVENTS_FILE, FAILED_DIR, RUNNING_DIR, SKIPPED_DIR, STAGE_FILE

__all__ = [
    "Stage",
    "Skipped",
    "skip_reason",
    "Execute",
    "run_stage",
    "run_local",
    "run_ray",
    "prepare_run",
    "verify_stage",
    "stage_states",
    "stage_dir",
    "graph_record",
    "STAGE_FILE",
    "FAILED_DIR",
    "EVENTS_FILE",
]

# Settings keys renamed after runs were made with them: the id hashes the old name, so that a run made
# before the rename resumes without re-running a stage (an id is a hash of the stage's payload).
_HASHED_AS = {"keep_fraction": "threshold"}


@dataclass(frozen=True)
class Stage:
    """One node of the graph. ``inputs`` maps a role ("finetune", "prune", ...) to a stage id."""

    kind: str
    task: str
    name: str
    keys: dict[str, Any]  # what its result rows are labelled with: seed, method, subnetwork, mode
    settings: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        settings = {_HASHED_AS.get(k, k): v for k, v in self.settings.items()}
        payload = json.dumps({"kind": self.kind, "task": self.task, "name": self.name, "keys": self.keys,
                              "settings": settings, "inputs": self.inputs}, sort_keys=True, default=str)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
        return f"{self.kind}/{self.task}/{self.name}-{digest}"

    @property
    def file_id(self) -> str:
        """The id as one file name (for the rows, failure and running records)."""
        return runs.stage_file_name(self.id)


class Skipped(Exception):  # noqa: N818 - a state, not an error
    """Raised by a study's ``execute``: the stage has nothing to do, for ``reason`` (one line).

    The pipeline records it as ``skipped`` in ``skipped/``, not as a failure, and skips every stage
    that reads it with the same reason: e.g. the pruning of a fine-tuned model that learnt nothing.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def skip_reason(run_dir: Path, stage: Stage) -> str | None:
    """Why a stage was skipped, or None if it was not (`bertlottery.runs.skip_reason`)."""
    return runs.skip_reason(run_dir, stage.id)


def _record_skip(run_dir: Path, stage: Stage, reason: str) -> None:
    (run_dir / SKIPPED_DIR).mkdir(parents=True, exist_ok=True)
    runs.write_json(run_dir / SKIPPED_DIR / f"{stage.file_id}.json", {"id": stage.id, "reason": reason})
    _event(run_dir, "skipped", stage)


def _skipped_input(run_dir: Path, stage: Stage, states: dict[str, str], by_id: dict[str, Stage]) -> str | None:
    """The reason of the first skipped stage ``stage`` reads, or None."""
    for sid in stage.inputs.values():
        if states.get(sid) == "skipped":
            return skip_reason(run_dir, by_id[sid]) or f"{sid} was skipped"
    return None


Execute = Callable[[Stage, Path, dict[str, Path], ExperimentConfig, bool], list[ResultRow]]
"""A study's ``execute(stage, out, inputs, config, progress)``: run one stage into ``out`` (inputs: role ->
the folder of the stage it reads) and return its result rows."""


def stage_dir(run_dir: Path, stage: Stage) -> Path:
    return runs.stage_path(run_dir, stage.id)


def graph_record(stages: list[Stage]) -> list[dict[str, Any]]:
    """The stages as ``graph.json`` lists them (see `bertlottery.runs.write_graph`)."""
    return [{"id": s.id, "kind": s.kind, "task": s.task, "name": s.name, "keys": s.keys, "settings": s.settings,
             "inputs": s.inputs} for s in stages]


def stage_states(stages: list[Stage], run_dir: Path) -> dict[str, str]:
    """``done``, ``skipped``, ``failed``, ``running`` (a live process holds it) or ``left``, per stage id."""
    states = {}
    for stage in stages:
        if (stage_dir(run_dir, stage) / STAGE_FILE).is_file():
            states[stage.id] = "done"
        elif (run_dir / SKIPPED_DIR / f"{stage.file_id}.json").is_file():
            states[stage.id] = "skipped"
        elif (run_dir / FAILED_DIR / f"{stage.file_id}.json").is_file():
            states[stage.id] = "failed"
        elif _running_pid(run_dir, stage) is not None:
            states[stage.id] = "running"
        else:
            states[stage.id] = "left"
    return states


def _running_pid(run_dir: Path, stage: Stage) -> int | None:
    marker = run_dir / RUNNING_DIR / stage.file_id
    try:
        pid = int(marker.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _checksum(path: Path) -> list:
    """[size, xxh3-128] of one file."""
    import xxhash

    digest = xxhash.xxh3_128()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return [path.stat().st_size, digest.hexdigest()]


def _checksums(folder: Path) -> dict[str, list]:
    """[size, xxh3-128] of every file of a finished stage (relative path -> value)."""
    return {str(path.relative_to(folder)): _checksum(path)
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STAGE_FILE)}


def _rows_intact(run_dir: Path, stage: Stage, expected: list | None) -> bool:
    """Whether the stage's row file is what it wrote; a stage recorded before stage.json held the row
    file's checksum only needs a row file that reads."""
    path = runs.rows_path(run_dir, stage.file_id)
    if not path.is_file():
        return False
    if expected is not None:
        return path.stat().st_size == expected[0] and _checksum(path) == expected
    try:
        return isinstance(json.loads(path.read_text())["rows"], list)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def verify_stage(run_dir: Path, stage: Stage) -> bool:
    """Whether a stage is done and its artifacts and result rows are exactly what it wrote (none
    missing, truncated or changed): a stage that fails this runs again."""
    folder = stage_dir(run_dir, stage)
    try:
        record = json.loads((folder / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return False
    expected = record.get("files")
    if expected is None or record.get("id") != stage.id:
        return False
    # sizes first: a truncated file is caught without reading anything
    for name, (size, _) in expected.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return _checksums(folder) == expected and _rows_intact(run_dir, stage, record.get("rows"))


def _event(run_dir: Path, what: str, stage: Stage) -> None:
    # One short line in append mode: concurrent writers' lines never interleave (O_APPEND, < PIPE_BUF).
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {os.getpid()} {what} {stage.id}\n"
    with (run_dir / EVENTS_FILE).open("a") as handle:
        handle.write(line)


def run_stage(stage: Stage, inputs: dict[str, Path], run_dir: Path, config: ExperimentConfig, execute: Execute, *,
              progress: bool = False) -> str:
    """Run one stage into its folder and record it; returns ``done``, ``skipped`` or ``failed``.

    This is the unit every executor runs (in this process, or on a Ray worker): it never raises for a
    failing stage, it records the error in ``failed/`` instead (and a `Skipped` stage's reason in
    ``skipped/``).
    """
    folder = stage_dir(run_dir, stage)
    if folder.exists():
        shutil.rmtree(folder)  # a stage killed midway (or found damaged) starts over from a clean folder
    (run_dir / RUNNING_DIR).mkdir(parents=True, exist_ok=True)
    marker = run_dir / RUNNING_DIR / stage.file_id
    marker.write_text(str(os.getpid()))
    failure = run_dir / FAILED_DIR / f"{stage.file_id}.json"
    (run_dir / SKIPPED_DIR / f"{stage.file_id}.json").unlink(missing_ok=True)  # skipped before: try again
    started = time.time()
    _event(run_dir, "start", stage)
    try:
        with EnergyMeter(config) as meter:
            rows = execute(stage, folder, inputs, config, progress)
        rows_file = write_stage_rows(run_dir, stage.file_id, rows)
        folder.mkdir(parents=True, exist_ok=True)
        runs.write_json(folder / STAGE_FILE, {
            "id": stage.id, "kind": stage.kind, "task": stage.task, "keys": stage.keys, "settings": stage.settings,
            "inputs": stage.inputs, "seconds": round(time.time() - started, 2), "files": _checksums(folder),
            "rows": _checksum(rows_file), **meter.record(),
        })
        failure.unlink(missing_ok=True)
        _event(run_dir, "done", stage)
        return "done"
    except Skipped as skip:
        shutil.rmtree(folder, ignore_errors=True)  # a skipped stage leaves no folder, like one never run
        failure.unlink(missing_ok=True)
        _record_skip(run_dir, stage, skip.reason)
        return "skipped"
    except Exception as error:  # noqa: BLE001 - a failed stage is recorded and the study goes on
        runs.write_json(failure, {"id": stage.id, "error": f"{type(error).__name__}: {error}",
                                  "traceback": traceback.format_exc()})
        _event(run_dir, "failed", stage)
        return "failed"
    finally:
        marker.unlink(missing_ok=True)


def prepare_run(stages: list[Stage], run_dir: Path, config: ExperimentConfig) -> dict[str, str]:
    """Write the resolved config and the stage graph, and check every finished stage's artifacts.

    ``run_dir`` is new, empty or a study run directory (`bertlottery.runs.prepare_output_dir`); any
    other folder is refused with one line before anything is written.

    Returns the stages that are done and intact (``done``); a stage whose files were truncated,
    changed or removed since it finished is not, and will run again.
    """
    energy_tracking(config)  # refuses energy.track: true without codecarbon, before anything is written
    # a fine-tuning run or any other folder named as the run directory is refused, never written into
    runs.prepare_output_dir(run_dir, runs.STUDY_RUN_KIND, recognise=runs.is_study_run, overwritable=False)
    try:
        runs.write_json(run_dir / runs.CONFIG_FILE, to_dict(config))
        runs.write_graph(run_dir, graph_record(stages))
    except OSError as error:
        raise UserError(f"Cannot write to the run directory {run_dir} ({error.strerror}); choose a writable folder "
                        "with --run-dir.") from None
    _clear_dead_markers(run_dir)
    return {stage.id: "done" for stage in stages if verify_stage(run_dir, stage)}


def _clear_dead_markers(run_dir: Path) -> None:
    """Remove the ``running/`` markers of processes that are gone (a killed run, or a stage of a config
    that changed since): a dead process's id can be taken by a new one, which would make it look alive."""
    for marker in (run_dir / RUNNING_DIR).glob("*") if (run_dir / RUNNING_DIR).is_dir() else []:
        try:
            os.kill(int(marker.read_text()), 0)
        except (ProcessLookupError, ValueError):  # gone, or a damaged marker
            marker.unlink(missing_ok=True)
        except OSError:  # alive but not ours to signal, or removed meanwhile
            continue


def run_local(
    stages: list[Stage],
    run_dir: Path,
    config: ExperimentConfig,
    *,
    execute: Execute,
    progress: bool = True,
    on_stage: Callable[[Stage, str], None] | None = None,
    states: dict[str, str] | None = None,
) -> dict[str, str]:
    """Run every stage not done yet, in order, in this process; returns the final state per stage.

    A stage that fails is recorded in ``failed/`` with its error and traceback; the stages that
    depend on it are skipped (``blocked``) and everything else goes on. ``states`` is what
    `prepare_run` found (computed here if not given).
    """
    import torch

    by_id = {s.id: s for s in stages}
    states = dict(states) if states is not None else prepare_run(stages, run_dir, config)
    if config.resources.cpus_per_stage:
        torch.set_num_threads(config.resources.cpus_per_stage)
    for stage in stages:
        if states.get(stage.id) == "done":
            continue
        if any(states.get(i) in ("failed", "blocked") for i in stage.inputs.values()):
            states[stage.id] = "blocked"
            continue
        reason = _skipped_input(run_dir, stage, states, by_id)
        if reason is not None:
            _record_skip(run_dir, stage, reason)
            states[stage.id] = "skipped"
            continue
        inputs = {role: stage_dir(run_dir, by_id[sid]) for role, sid in stage.inputs.items()}
        if on_stage:
            on_stage(stage, "start")
        states[stage.id] = run_stage(stage, inputs, run_dir, config, execute, progress=progress)
        if on_stage:
            on_stage(stage, states[stage.id])
    write_table(run_dir, stage_ids=[s.file_id for s in stages])
    return states


def _ray_stage(stage: Stage, inputs: dict[str, str], run_dir: str, config: ExperimentConfig, execute: Execute,
               threads: int) -> str:
    """A Ray task: one stage, on whichever worker Ray picked."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return run_stage(stage, {role: Path(p) for role, p in inputs.items()}, Path(run_dir), config, execute)


def run_ray(
    stages: list[Stage],
    run_dir: Path,
    config: ExperimentConfig,
    *,
    execute: Execute,
    address: str | None = None,
    on_stage: Callable[[Stage, str], None] | None = None,
    states: dict[str, str] | None = None,
) -> dict[str, str]:
    """Run the stages not done yet on Ray: every stage whose inputs are done is submitted at once, with
    ``cpus_per_stage`` CPUs (1 by default) and a GPU each where the cluster has GPUs. ``on_stage`` hears
    ``queued`` when a stage is submitted (Ray starts it when a worker is free) and its final state.

    ``address``: an existing cluster (``ray://host:10001`` or ``auto``); without it a local Ray
    instance is started for the run and stopped after. Workers write into ``run_dir``, so on a
    cluster it must be on storage every node sees, and bertlottery must be installed on every node.
    """
    try:
        import ray
    except ImportError:
        raise UserError("The Ray executor needs Ray: pip install 'bertlottery[ray]' (or pip install 'ray>=2.9').") from None
    by_id = {s.id: s for s in stages}
    states = dict(states) if states is not None else prepare_run(stages, run_dir, config)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
    try:
        cpus = config.resources.cpus_per_stage or 1
        gpus = config.resources.gpus_per_stage
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
        task = ray.remote(_ray_stage).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        waiting = [s for s in stages if states.get(s.id) != "done"]
        pending: dict[Any, Stage] = {}
        while waiting or pending:
            for stage in list(waiting):
                inputs = [states.get(i) for i in stage.inputs.values()]
                if any(state in ("failed", "blocked") for state in inputs):
                    states[stage.id] = "blocked"
                    waiting.remove(stage)
                elif any(state == "skipped" for state in inputs) and all(s in ("done", "skipped") for s in inputs):
                    _record_skip(run_dir, stage, _skipped_input(run_dir, stage, states, by_id))
                    states[stage.id] = "skipped"
                    waiting.remove(stage)
                elif all(state == "done" for state in inputs):
                    paths = {role: str(stage_dir(run_dir, by_id[sid])) for role, sid in stage.inputs.items()}
                    pending[task.remote(stage, paths, str(run_dir.resolve()), config, execute, cpus)] = stage
                    waiting.remove(stage)
                    if on_stage:
                        on_stage(stage, "queued")
            if not pending:
                break
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                stage = pending.pop(ref)
                try:
                    states[stage.id] = ray.get(ref)
                except Exception as error:  # noqa: BLE001 - the worker died (killed, out of memory)
                    runs.write_json(run_dir / FAILED_DIR / f"{stage.file_id}.json",
                                    {"id": stage.id, "error": f"worker lost: {type(error).__name__}: {error}"})
                    states[stage.id] = "failed"
                if on_stage:
                    on_stage(stage, states[stage.id])
    finally:
        if started_here:
            ray.shutdown()
    write_table(run_dir, stage_ids=[s.file_id for s in stages])
    return states
