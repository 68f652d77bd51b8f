"""The one module that knows how a run directory looks on disk, and writes it so that a crash
never leaves a directory that looks complete.

A fine-tuning (or evaluation) run directory::

    RUN/
      model/              save_pretrained: config.json, model.safetensors, tokenizer files
      metrics.json        {"task", "split", "metrics": {...}, "n_examples", ...} (one entry per eval split)
      config.json         the resolved settings of the run
      environment.json    package versions, python, platform, git revision, device
      history.json        training loss per logged step and metrics per epoch
      mask.safetensors    the mask held fixed during training, if any

Everything is written into a hidden sibling ``.RUN.partial-<pid>`` and renamed into place at the end:
``RUN`` either does not exist or is complete.

A study run directory (``bertlottery run``)::

    RUN/
      config.json                 the resolved config
      graph.json                  {"version": 1, "stages": [...]}: every stage of the study, inputs first
      stages/<kind>/<task>/<name>-<hash>/
        ...                       the stage's artifacts (a fine-tuning run, a prune directory, ...)
        stage.json                written last: its presence marks the stage done
      rows/<stage>.json           the stage's result rows (see bertlottery.results)
      failed/<stage>.json         the error of a stage that failed (cleared when it succeeds)
      running/<stage>             the pid of the process running the stage
      events.log                  one line per stage start and end
      results.parquet, results.csv

``<stage>`` in a file name is the stage id with ``/`` written ``__`` (`stage_file_id`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "MODEL_DIR",
    "METRICS_FILE",
    "CONFIG_FILE",
    "ENVIRONMENT_FILE",
    "HISTORY_FILE",
    "MASK_FILE",
    "EXPORT_FILE",
    "STAGES_DIR",
    "STAGE_FILE",
    "ROWS_DIR",
    "FAILED_DIR",
    "RUNNING_DIR",
    "EVENTS_FILE",
    "GRAPH_FILE",
    "TRACE_FILE",
    "RESULTS_CSV",
    "RESULTS_PARQUET",
    "GOOD_MASK_FILE",
    "RANDOM_MASK_FILE",
    "BAD_MASK_FILE",
    "ANALYSIS_FILE",
    "SELECTION_FILE",
    "SIMILARITY_FILE",
    "HEATMAPS_FILE",
    "stage_path",
    "stage_file_id",
    "stage_state",
    "write_graph",
    "read_graph",
    "staged_run_dir",
    "write_json",
    "read_json",
    "environment",
    "is_complete_run",
    "model_dir_of",
]

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
HISTORY_FILE = "history.json"
EXPORT_FILE = "export.json"  # in an exported-subnetwork folder: which run and mask it came from
MASK_FILE = "mask.safetensors"  # the mask a run trained under, or the mask a prune step found

# a study run directory
STAGES_DIR = "stages"
STAGE_FILE = "stage.json"  # written last into a stage's folder: the stage is done
ROWS_DIR = "rows"
FAILED_DIR = "failed"
RUNNING_DIR = "running"
EVENTS_FILE = "events.log"
GRAPH_FILE = "graph.json"
TRACE_FILE = "trace.json"  # a prune stage's search, iteration by iteration
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
GOOD_MASK_FILE = "good.safetensors"  # a subnetworks (or super-survivor) stage's masks
RANDOM_MASK_FILE = "random.safetensors"
BAD_MASK_FILE = "bad.safetensors"
# artifacts of the Compressing-BERT and attention stages that the report reads
ANALYSIS_FILE = "analysis.json"
SELECTION_FILE = "selection.json"
SIMILARITY_FILE = "similarity.json"
HEATMAPS_FILE = "heatmaps.npz"
GRAPH_VERSION = 1


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); the run that wrote it may have been damaged.") from None


def stage_path(run_dir: str | os.PathLike, stage_id: str) -> Path:
    """The folder of a stage (ids look like ``kind/task/name-hash10``)."""
    return Path(run_dir) / STAGES_DIR / stage_id


def stage_file_id(stage_id: str) -> str:
    """A stage id as one file name (for ``rows/``, ``failed/`` and ``running/``)."""
    return stage_id.replace("/", "__")


def stage_state(run_dir: str | os.PathLike, stage_id: str) -> str:
    """``done``, ``failed``, ``running`` (a live process holds it) or ``left``."""
    run_dir = Path(run_dir)
    if (stage_path(run_dir, stage_id) / STAGE_FILE).is_file():
        return "done"
    if (run_dir / FAILED_DIR / f"{stage_file_id(stage_id)}.json").is_file():
        return "failed"
    try:
        os.kill(int((run_dir / RUNNING_DIR / stage_file_id(stage_id)).read_text()), 0)
        return "running"
    except (OSError, ValueError):
        return "left"


_GRAPH_KEYS = ("id", "kind", "task", "name", "keys", "settings", "inputs")


def write_graph(run_dir: str | os.PathLike, stages: list[dict[str, Any]]) -> Path:
    """Write ``graph.json`` atomically: ``{"version": 1, "stages": [...]}``, each stage a dict with
    ``id``, ``kind``, ``task``, ``name``, ``keys``, ``settings`` and ``inputs`` (role -> stage id), in
    an order where each stage follows its inputs. Readers of a run take its stages from here, so they
    need neither the config nor the code that expanded it."""
    records = []
    seen: set[str] = set()
    for stage in stages:
        absent = [k for k in _GRAPH_KEYS if k not in stage]
        if absent:
            raise ValueError(f"stage {stage.get('id', '?')} lacks {absent}")
        unknown = [i for i in stage["inputs"].values() if i not in seen]
        if unknown:
            raise ValueError(f"stage {stage['id']} comes before its inputs {unknown}")
        seen.add(stage["id"])
        records.append({k: stage[k] for k in _GRAPH_KEYS})
    return write_json(Path(run_dir) / GRAPH_FILE, {"version": GRAPH_VERSION, "stages": records})


def read_graph(run_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The stages of ``graph.json`` (see `write_graph`), or None for a run written before runs had one
    (its readers fall back to the stage folders on disk). `UserError` for a damaged file."""
    path = Path(run_dir) / GRAPH_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("version") != GRAPH_VERSION or not isinstance(data.get("stages"), list):
        raise UserError(f"{path} is not a version-{GRAPH_VERSION} stage graph; run `bertlottery run CONFIG "
                        "--run-dir RUN` once to write it again.")
    return data["stages"]


@contextmanager
def staged_run_dir(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a scratch directory that becomes ``final`` only if the block finishes.

    On an exception (or a kill) the scratch directory is left hidden (or removed) and ``final`` is
    untouched. An existing ``final`` is refused unless ``overwrite``.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists; choose another --out or pass --overwrite.")
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.parent / f".{final.name}.partial-{os.getpid()}"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if final.exists():
        # rename the old run out of the way first, so no moment exists with two half-runs
        trash = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, trash)
        os.replace(scratch, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(scratch, final)


def is_complete_run(run_dir: str | os.PathLike) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).is_file() and (run_dir / MODEL_DIR / "config.json").is_file()


def model_dir_of(path: str | os.PathLike) -> Path:
    """A run directory's model folder, or ``path`` itself if it is a model folder."""
    path = Path(path)
    return path / MODEL_DIR if (path / MODEL_DIR / "config.json").is_file() else path


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str | None = None) -> dict[str, Any]:
    """What a reader needs to reproduce a run: versions, platform, revision, device."""
    packages = {}
    for name in ("bertlottery", "torch", "transformers", "datasets", "accelerate", "safetensors", "numpy", "scipy"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "git_revision": _git_revision(),
        "device": device,
        "argv": sys.argv,
    }
