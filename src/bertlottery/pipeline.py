"""Expand an experiment config into a graph of stages and run what is not done yet.

A stage is one step of the study (fine-tune, prune, sample subnetworks, evaluate pruned, re-fine-tune,
super-survivors, baselines). Its id ends in a hash of everything that determines its output: its
kind, keys, settings and the ids of the stages it reads. Change a setting and the stage (and every
stage downstream) gets a new id and runs again; change nothing and it is skipped.

Layout of a run directory::

    RUN/
      config.json                 the resolved config
      stages/<kind>/<task>/<name>-<hash>/
        ...                       the stage's artifacts (a fine-tuning run, a prune directory, ...)
        stage.json                written last: its presence marks the stage done
      rows/<stage>.json           the stage's result rows (see bertlottery.results)
      failed/<stage>.json         the error of a stage that failed (cleared when it succeeds)
      results.parquet, results.csv

A stage killed midway left no ``stage.json``: the next run starts it over from a clean folder.

Example:
    >>> stages = expand(load("configs/smoke.yaml"))          # doctest: +SKIP
    >>> run_local(stages, Path("runs/smoke"), config)        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import runs
from .config import ExperimentConfig, to_dict
from .results import ResultRow, rows_from_metrics, write_stage_rows, write_table

__all__ = [
    "Stage",
    "expand",
    "run_stage",
    "run_local",
    "run_ray",
    "run_summary",
    "energy_tracking",
    "prepare_run",
    "verify_stage",
    "stage_states",
    "stage_dir",
    "STAGE_FILE",
    "FAILED_DIR",
    "EVENTS_FILE",
]

STAGE_FILE = "stage.json"
EVENTS_FILE = "events.log"  # one line per stage start and end, appended: an audit trail of the run
FAILED_DIR = "failed"
RUNNING_DIR = "running"


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
        payload = json.dumps({"kind": self.kind, "task": self.task, "name": self.name, "keys": self.keys,
                              "settings": self.settings, "inputs": self.inputs}, sort_keys=True, default=str)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
        return f"{self.kind}/{self.task}/{self.name}-{digest}"

    @property
    def file_id(self) -> str:
        """The id as one file name (for rows/ and failed/)."""
        return self.id.replace("/", "__")


def _train_settings(config: ExperimentConfig, task: str, seed: int) -> dict[str, Any]:
    train = {k: v for k, v in asdict(config.train).items() if k != "per_task"}
    train.update(config.train.per_task.get(task, {}))
    train["seed"] = seed
    return train


def expand(config: ExperimentConfig) -> list[Stage]:
    """Every stage of the study, in an order where each stage comes after its inputs."""
    from .tasks import get_task

    if config.gordon is not None:  # a Compressing-BERT study: its own graph
        from .gordon.stages import expand as expand_gordon

        return expand_gordon(config)

    stages: list[Stage] = []
    pruning = asdict(config.pruning)
    for task_name in config.tasks:
        task = get_task(task_name).name
        prunes: dict[str, list[Stage]] = {m: [] for m in config.methods}
        per_seed: dict[int, dict[str, Stage]] = {}
        for seed in config.seeds:
            train = _train_settings(config, task, seed)
            finetune = Stage("finetune", task, f"seed{seed}", {"seed": seed, "method": "none", "subnetwork": "full",
                                                              "mode": "finetuned", "epochs": train["epochs"]},
                             {"model": config.model, "train": train})
            stages.append(finetune)
            per_seed[seed] = {"finetune": finetune}
            for method in config.methods:
                method_settings = {"threshold": pruning["threshold"], "compat": pruning["compat"],
                                   **pruning[method]}
                prune = Stage("prune", task, f"seed{seed}-{method}", {"seed": seed, "method": method},
                              method_settings, {"finetune": finetune.id})
                subs = Stage("subnetworks", task, f"seed{seed}-{method}", {"seed": seed, "method": method},
                             {"compat": pruning["compat"]}, {"prune": prune.id})
                stages += [prune, subs]
                prunes[method].append(prune)
                per_seed[seed][method] = subs
                stages += _evaluations(config, task, seed, method, finetune, subs, train)
            if "random-init" in config.baselines and "structured" in config.methods:
                stages.append(Stage("baseline", task, f"seed{seed}-random-init",
                                    {"seed": seed, "method": "random-init", "subnetwork": "random", "mode": "baseline",
                                     "epochs": train["epochs"]},
                                    {"model": config.model, "train": train, "size_of": "bad"},
                                    {"finetune": finetune.id, "subnetworks": per_seed[seed]["structured"].id}))
        if config.super_survivors and "structured" in config.methods and len(config.seeds) > 1:
            sup = Stage("super", task, "structured", {"method": "structured"}, {"seed": 0},
                        {f"prune{i}": p.id for i, p in enumerate(prunes["structured"])})
            stages.append(sup)
            for seed in config.seeds:
                train = _train_settings(config, task, seed)
                stages += _evaluations(config, task, seed, "structured", per_seed[seed]["finetune"], sup, train,
                                       prefix="super-")
        if "majority" in config.baselines:
            stages.append(Stage("baseline", task, "majority", {"seed": None, "method": "majority", "subnetwork": "none",
                                                               "mode": "baseline", "epochs": None}, {}))
    if config.attention is not None:  # attention maps and patterns of the lottery's heads
        from .attention.stages import expand as expand_attention

        stages += expand_attention(config, list(stages))
    return stages


def graph_of_config(config_data: dict[str, Any]) -> list[Stage]:
    """The stage graph of a run's resolved config (the dict in its ``config.json``).

    Raises (``ConfigError``, ``ValueError``, ...) where it cannot be rebuilt, for example a config written
    by another version. Readers of a run directory use it to tell the run's own stages from stages that a
    changed config left behind: those stay on disk but are no longer part of the study.
    """
    from .config import from_dict

    return expand(from_dict(config_data, source=runs.CONFIG_FILE))


def _evaluations(config, task, seed, method, finetune, subs, train, prefix: str = "") -> list[Stage]:
    stages = []
    for subnetwork in config.subnetworks:
        keys = {"seed": seed, "method": method, "subnetwork": prefix + subnetwork}
        inputs = {"finetune": finetune.id, "subnetworks": subs.id}
        if "pruned" in config.modes:
            stages.append(Stage("evaluate", task, f"seed{seed}-{method}-{prefix}{subnetwork}",
                                {**keys, "mode": "pruned", "epochs": train["epochs"]}, {"subnetwork": subnetwork},
                                inputs))
        if "retrained" in config.modes:
            stages.append(Stage("retrain", task, f"seed{seed}-{method}-{prefix}{subnetwork}",
                                {**keys, "mode": "retrained", "epochs": train["epochs"]},
                                {"subnetwork": subnetwork, "epochs": None}, inputs))
        longer = config.longer_retraining
        if longer and not prefix and method in longer.methods and subnetwork in longer.subnetworks:
            stages.append(Stage("retrain", task, f"seed{seed}-{method}-{subnetwork}-long",
                                {**keys, "mode": "retrained-long", "epochs": longer.epochs},
                                {"subnetwork": subnetwork, "epochs": longer.epochs}, inputs))
    return stages


# ---- running stages -----------------------------------------------------------------------------------

def stage_dir(run_dir: Path, stage: Stage) -> Path:
    return run_dir / "stages" / stage.id


def _execute(stage: Stage, out: Path, inputs: dict[str, Path], config: ExperimentConfig,
             progress: bool) -> list[ResultRow]:
    """Run one stage into ``out``; return its result rows."""
    from . import lottery, recipes
    from .training import TrainSettings

    # Stage kinds that live with their experiment's package: "attention-..." and "gordon-...".
    if stage.kind.startswith("attention"):
        from .attention.stages import execute
        return execute(stage, out, inputs, config, progress)
    if stage.kind.startswith("gordon"):
        from .gordon.stages import execute
        return execute(stage, out, inputs, config, progress)
    glue = Path(config.glue_dir) if config.glue_dir else None
    row_keys = {k: v for k, v in stage.keys.items() if k in ("seed", "method", "subnetwork", "mode", "epochs")}
    row_keys.update(task=stage.task, stage_id=stage.id)
    if stage.kind == "finetune":
        train = dict(stage.settings["train"])
        cap, holdout = train.pop("max_train_examples"), train.pop("holdout_fraction")
        record = recipes.finetune_run(stage.settings["model"], stage.task, out, glue_dir=glue,
                                      settings=TrainSettings(**train), max_train_examples=cap,
                                      holdout_fraction=holdout, overwrite=True, progress=progress)
        return rows_from_metrics(record, **row_keys)
    if stage.kind == "prune":
        s = stage.settings
        compat = None if s["compat"] == "none" else s["compat"]
        if stage.keys["method"] == "structured":
            lottery.prune_structured_run(inputs["finetune"], out, glue_dir=glue, mode=s["mode"],
                                         threshold=s["threshold"], scoring_split=s["scoring_split"],
                                         normalize_by_layer=s["normalize_by_layer"],
                                         global_min_max=s["global_min_max"], compat=compat,
                                         batch_size=s["batch_size"], overwrite=True, progress=progress)
        else:
            lottery.prune_magnitude_run(inputs["finetune"], out, glue_dir=glue, threshold=s["threshold"],
                                        scope=s["scope"], tensor_set=s["tensors"], step_fraction=s["step_fraction"],
                                        compat=compat, overwrite=True, progress=progress)
        return []
    if stage.kind == "subnetworks":
        compat = None if stage.settings["compat"] == "none" else stage.settings["compat"]
        lottery.make_subnetworks(inputs["prune"], out, seed=stage.keys["seed"], compat=compat, overwrite=True)
        return []
    if stage.kind == "super":
        prunes = [inputs[k] for k in sorted(inputs, key=lambda k: int(k.removeprefix("prune")))]
        lottery.make_super_survivors(prunes, out, seed=stage.settings["seed"], overwrite=True)
        return []
    if stage.kind == "evaluate":
        mask = inputs["subnetworks"] / f"{stage.settings['subnetwork']}.safetensors"
        record = recipes.evaluate_run(inputs["finetune"], task_name=stage.task, glue_dir=glue, masks_path=mask)
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json(out / runs.METRICS_FILE, record)
        return rows_from_metrics(record, **row_keys)
    if stage.kind == "retrain":
        mask = inputs["subnetworks"] / f"{stage.settings['subnetwork']}.safetensors"
        record = lottery.retrain_run(inputs["finetune"], mask, out, glue_dir=glue, epochs=stage.settings["epochs"],
                                     overwrite=True, progress=progress)
        rows = rows_from_metrics(record, **row_keys)
        if stage.keys["mode"] == "retrained-long":  # the metric after every epoch (appendix D)
            history = runs.read_json(out / runs.HISTORY_FILE)
            rows = [row for epoch in history["epochs"]
                    for row in rows_from_metrics({"task": stage.task, "splits": {
                        split: {"metrics": m} for split, m in epoch["dev"].items()},
                        "body_fraction_kept": record["body_fraction_kept"]}, **{**row_keys, "epochs": epoch["epoch"]})]
        return rows
    if stage.kind == "baseline" and stage.keys["method"] == "majority":
        record = lottery.majority_baseline_metrics(stage.task, glue)
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json(out / runs.METRICS_FILE, record)
        return rows_from_metrics(record, **row_keys)
    if stage.kind == "baseline":
        train = dict(stage.settings["train"])
        cap, _ = train.pop("max_train_examples"), train.pop("holdout_fraction")
        record = lottery.random_init_baseline_run(stage.settings["model"], stage.task,
                                                  inputs["subnetworks"] / "bad.safetensors", out, glue_dir=glue,
                                                  settings=TrainSettings(**train), max_train_examples=cap,
                                                  overwrite=True, progress=progress)
        return rows_from_metrics(record, **row_keys)
    raise ValueError(f"unknown stage kind {stage.kind}")


def stage_states(stages: list[Stage], run_dir: Path) -> dict[str, str]:
    """``done``, ``failed``, ``running`` (a live process holds it) or ``left``, per stage id."""
    states = {}
    for stage in stages:
        if (stage_dir(run_dir, stage) / STAGE_FILE).is_file():
            states[stage.id] = "done"
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


def _checksums(folder: Path) -> dict[str, list]:
    """[size, xxh3-128] of every file of a finished stage (relative path -> value)."""
    import xxhash

    sums = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STAGE_FILE):
        digest = xxhash.xxh3_128()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        sums[str(path.relative_to(folder))] = [path.stat().st_size, digest.hexdigest()]
    return sums


def verify_stage(run_dir: Path, stage: Stage) -> bool:
    """Whether a stage is done and its artifacts are exactly what it wrote (none missing, truncated or changed)."""
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
    return _checksums(folder) == expected


def _event(run_dir: Path, what: str, stage: Stage) -> None:
    # One short line in append mode: concurrent writers' lines never interleave (O_APPEND, < PIPE_BUF).
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {os.getpid()} {what} {stage.id}\n"
    with (run_dir / EVENTS_FILE).open("a") as handle:
        handle.write(line)


def energy_tracking(config: ExperimentConfig) -> bool:
    """Whether to record energy; refuses ``energy.track: true`` without codecarbon."""
    if config.energy.track is False:
        return False
    try:
        import codecarbon  # noqa: F401
    except ImportError:
        if config.energy.track:
            from .errors import UserError

            raise UserError("energy.track is true but codecarbon is not installed: "
                            "pip install 'bertlottery[energy]', or set energy.track=false.") from None
        return False
    return True


class _EnergyMeter:
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
            record = json.loads((stage_dir(run_dir, stage) / STAGE_FILE).read_text())
        except (OSError, ValueError):
            continue
        total["seconds"] += record.get("seconds", 0.0)
        if "energy_kwh" in record:
            total["energy_kwh"] += record["energy_kwh"]
            total["emissions_kg"] += record["emissions_kg"]
            total["stages_with_energy"] += 1
    return total


def stage_seconds(run_dir: Path, stage: Stage) -> float | None:
    """How long a finished stage ran, from its record; None where there is no readable record."""
    try:
        return float(json.loads((stage_dir(run_dir, stage) / STAGE_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_SAME_WORK = {"retrain": "finetune", "baseline": "finetune"}  # stages that train like a task's fine-tuning


def estimate_left(stages: list[Stage], run_dir: Path, states: dict[str, str],
                  seconds_of: dict[str, float] | None = None) -> dict[str, float]:
    """Stage time the unfinished stages will take, from the finished ones: each counts the mean time of
    the finished stages of its kind and task, else (re-fine-tuning and baselines train on the same data
    as the fine-tuning) of the task's fine-tuning, else of its kind on any task. ``seconds`` sums those;
    ``estimated`` is how many unfinished stages got an estimate and ``unknown`` how many did not (no
    stage of their kind has finished yet). ``seconds_of``: a cache of finished stages' times, filled as
    they are read (a live view recomputes this after every stage)."""
    by_kind_task: dict[tuple[str, str], list[float]] = {}
    by_kind: dict[str, list[float]] = {}
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
        by_kind_task.setdefault((stage.kind, stage.task), []).append(seconds)
        by_kind.setdefault(stage.kind, []).append(seconds)
    total = {"seconds": 0.0, "estimated": 0, "unknown": 0}
    for stage in stages:
        if states.get(stage.id) == "done":
            continue
        known = (by_kind_task.get((stage.kind, stage.task)) or by_kind_task.get((_SAME_WORK.get(stage.kind), stage.task))
                 or by_kind.get(stage.kind))
        if known:
            total["seconds"] += sum(known) / len(known)
            total["estimated"] += 1
        else:
            total["unknown"] += 1
    return total


def run_stage(stage: Stage, inputs: dict[str, Path], run_dir: Path, config: ExperimentConfig, *,
              progress: bool = False) -> str:
    """Run one stage into its folder and record it; returns ``done`` or ``failed``.

    This is the unit every executor runs (in this process, or on a Ray worker): it never raises for a
    failing stage, it records the error in ``failed/`` instead.
    """
    folder = stage_dir(run_dir, stage)
    if folder.exists():
        shutil.rmtree(folder)  # a stage killed midway (or found damaged) starts over from a clean folder
    (run_dir / RUNNING_DIR).mkdir(parents=True, exist_ok=True)
    marker = run_dir / RUNNING_DIR / stage.file_id
    marker.write_text(str(os.getpid()))
    failure = run_dir / FAILED_DIR / f"{stage.file_id}.json"
    started = time.time()
    _event(run_dir, "start", stage)
    try:
        with _EnergyMeter(config) as meter:
            rows = _execute(stage, folder, inputs, config, progress)
        write_stage_rows(run_dir, stage.file_id, rows)
        folder.mkdir(parents=True, exist_ok=True)
        runs.write_json(folder / STAGE_FILE, {
            "id": stage.id, "kind": stage.kind, "task": stage.task, "keys": stage.keys, "settings": stage.settings,
            "inputs": stage.inputs, "seconds": round(time.time() - started, 2), "files": _checksums(folder),
            **meter.record(),
        })
        failure.unlink(missing_ok=True)
        _event(run_dir, "done", stage)
        return "done"
    except Exception as error:  # noqa: BLE001 - a failed stage is recorded and the study goes on
        runs.write_json(failure, {"id": stage.id, "error": f"{type(error).__name__}: {error}",
                                  "traceback": traceback.format_exc()})
        _event(run_dir, "failed", stage)
        return "failed"
    finally:
        marker.unlink(missing_ok=True)


def prepare_run(stages: list[Stage], run_dir: Path, config: ExperimentConfig) -> dict[str, str]:
    """Write the resolved config and check every finished stage's artifacts.

    Returns the stages that are done and intact (``done``); a stage whose files were truncated,
    changed or removed since it finished is not, and will run again.
    """
    energy_tracking(config)  # refuses energy.track: true without codecarbon, before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json(run_dir / runs.CONFIG_FILE, to_dict(config))
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
        inputs = {role: stage_dir(run_dir, by_id[sid]) for role, sid in stage.inputs.items()}
        if on_stage:
            on_stage(stage, "start")
        states[stage.id] = run_stage(stage, inputs, run_dir, config, progress=progress)
        if on_stage:
            on_stage(stage, states[stage.id])
    write_table(run_dir, stage_ids=[s.file_id for s in stages])
    return states


def _ray_stage(stage: Stage, inputs: dict[str, str], run_dir: str, config: ExperimentConfig, threads: int) -> str:
    """A Ray task: one stage, on whichever worker Ray picked."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return run_stage(stage, {role: Path(p) for role, p in inputs.items()}, Path(run_dir), config)


def run_ray(
    stages: list[Stage],
    run_dir: Path,
    config: ExperimentConfig,
    *,
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
        from .errors import UserError

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
                elif all(state == "done" for state in inputs):
                    paths = {role: str(stage_dir(run_dir, by_id[sid])) for role, sid in stage.inputs.items()}
                    pending[task.remote(stage, paths, str(run_dir.resolve()), config, cpus)] = stage
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
