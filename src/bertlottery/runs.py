"""The one module that knows how a run directory looks on disk, and writes it so that a crash
never leaves a directory that looks complete. No other module spells a file or folder name of a run
(a test checks it): they ask here.

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

A prune step's directory holds ``mask.safetensors`` (the good mask), ``trace.json`` (every step of
the search) and ``metrics.json``; a subnetworks step's holds ``good``/``random``/``bad.safetensors``
(`subnetwork_file`) and ``subnetworks.json``.

A study run directory (``bertlottery run``)::

    RUN/
      config.json                 the resolved config
      graph.json                  every stage of the study, each after its inputs (written at every start)
      stages/<kind>/<task>/<name>-<hash>/
        ...                       the stage's artifacts (a fine-tuning run, a prune directory, ...)
        stage.json                written last: its presence marks the stage done
      rows/<stage>.json           the stage's result rows (see bertlottery.results)
      failed/<stage>.json         the error of a stage that failed (cleared when it succeeds)
      running/<stage>             the id of the process running the stage
      events.log                  one line per stage start and end
      run.lock                    locked while a `bertlottery run` writes the directory: its pid and host
      results.parquet, results.csv
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
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
    "TRACE_FILE",
    "SUBNETWORKS_FILE",
    "TUNE_FILE",
    "ABLATION_FILE",
    "FISHER_FILE",
    "STAGES_DIR",
    "STAGE_FILE",
    "ROWS_DIR",
    "FAILED_DIR",
    "RUNNING_DIR",
    "SKIPPED_DIR",
    "skip_reason",
    "EVENTS_FILE",
    "LOCK_FILE",
    "locked_run_dir",
    "GRAPH_FILE",
    "RESULTS_CSV",
    "RESULTS_PARQUET",
    "GRAPH_VERSION",
    "STUDY_RUN_KIND",
    "output_marker",
    "ANALYSIS_FILE",
    "PROPORTIONS_FILE",
    "SELECTION_FILE",
    "SIMILARITY_FILE",
    "ONESHOT_FILE",
    "HEATMAPS_FILE",
    "MLM_HEAD_FILE",
    "subnetwork_file",
    "mask_file_of",
    "stage_path",
    "stage_file_name",
    "stage_state",
    "rows_path",
    "write_graph",
    "read_graph",
    "staged_run_dir",
    "staged_output",
    "prepare_output_dir",
    "check_output_dir",
    "is_study_run",
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
TRACE_FILE = "trace.json"  # in a prune directory: every step of the search
FISHER_FILE = "fisher.safetensors"  # in a Fisher prune directory: the diagonal Fisher scores and tuned scales
SUBNETWORKS_FILE = "subnetworks.json"  # in a subnetworks directory: sizes, seed, where the good mask came from
TUNE_FILE = "tune.json"  # in a tune folder: every candidate's held-out score and the settings chosen
ABLATION_FILE = "ablation.json"  # in an ablation folder: each unit's dev score gated off alone, beside its importance

# a study run directory
STAGES_DIR = "stages"
STAGE_FILE = "stage.json"  # written last into a stage's folder: its presence marks the stage done
ROWS_DIR = "rows"
FAILED_DIR = "failed"
RUNNING_DIR = "running"
LOCK_FILE = "run.lock"  # locked by the `bertlottery run` writing the directory; holds its pid and host
SKIPPED_DIR = "skipped"  # <stage>.json with the reason a stage had nothing to do (a model not learnt)
EVENTS_FILE = "events.log"  # one line per stage start and end, appended: an audit trail of the run
GRAPH_FILE = "graph.json"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
GRAPH_VERSION = 1
STUDY_RUN_KIND = "run"  # the output kind of a study run directory (see `prepare_output_dir`)

# in the stage folders of the attention and Gordon studies
ANALYSIS_FILE = "analysis.json"  # attention-analysis: proportions and correlations; gordon-pretrain: weight statistics
PROPORTIONS_FILE = "proportions.csv"  # attention-analysis: pattern proportions as a table
SELECTION_FILE = "selection.json"  # gordon-select: every learning rate's result and the one kept
SIMILARITY_FILE = "similarity.json"  # gordon-similarity: hidden-state cosine similarity per layer
ONESHOT_FILE = "oneshot.json"  # gordon-oneshot: summed |w| one-shot magnitude pruning removes per sparsity
HEATMAPS_FILE = "heatmaps.npz"  # gordon-pretrain: weight-magnitude heatmaps
MLM_HEAD_FILE = "mlm_head.safetensors"  # beside a pre-trained checkpoint's weights: its MLM head


def subnetwork_file(name: str) -> str:
    """The file a subnetworks (or super-survivors) step writes a mask into: ``good.safetensors``, ..."""
    return f"{name}.safetensors"


def mask_file_of(path: str | os.PathLike) -> Path:
    """A masks file, or the mask a prune directory (or fine-tuning run) holds."""
    path = Path(path)
    return path / MASK_FILE if path.is_dir() else path


def stage_path(run_dir: str | os.PathLike, stage_id: str) -> Path:
    """A stage's folder; stage ids look like ``kind/task/name-hash10``."""
    return Path(run_dir) / STAGES_DIR / stage_id


def stage_file_name(stage_id: str) -> str:
    """A stage id as one file name, for ``rows/``, ``failed/`` and ``running/``."""
    return stage_id.replace("/", "__")


def skip_reason(run_dir: str | os.PathLike, stage_id: str) -> str | None:
    """Why a stage was skipped (its record in ``skipped/``), or None if it was not. An older run's
    record that said "not learnt" twice is read saying it once (`bertlottery.learnt.tidy_reason`)."""
    from .learnt import tidy_reason

    path = Path(run_dir) / SKIPPED_DIR / f"{stage_file_name(stage_id)}.json"
    reason = (read_json(path) or {}).get("reason") if path.is_file() else None
    return tidy_reason(reason) if reason else None


def stage_state(run_dir: str | os.PathLike, stage_id: str) -> str:
    """``done``, ``skipped`` (nothing to do: its model was not learnt), ``failed``, ``running`` (a live
    process holds it) or ``left``."""
    run_dir = Path(run_dir)
    if (stage_path(run_dir, stage_id) / STAGE_FILE).is_file():
        return "done"
    if (run_dir / SKIPPED_DIR / f"{stage_file_name(stage_id)}.json").is_file():
        return "skipped"
    if (run_dir / FAILED_DIR / f"{stage_file_name(stage_id)}.json").is_file():
        return "failed"
    try:
        os.kill(int((run_dir / RUNNING_DIR / stage_file_name(stage_id)).read_text()), 0)
        return "running"
    except (OSError, ValueError):
        return "left"


def rows_path(run_dir: str | os.PathLike, stage_file: str) -> Path:
    """The file of a stage's result rows (``stage_file``: `stage_file_name` of its id)."""
    return Path(run_dir) / ROWS_DIR / f"{stage_file}.json"


_GRAPH_KEYS = ("id", "kind", "task", "name", "keys", "settings", "inputs")


def write_graph(run_dir: str | os.PathLike, stages: list[dict[str, Any]]) -> Path:
    """Write the study's stage graph: each stage's ``id``, ``kind``, ``task``, ``name``, ``keys``,
    ``settings`` and ``inputs`` (role -> stage id), each after its inputs. Readers of a run (the report,
    the statistics) take the study's stages from here instead of rebuilding them from the config."""
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
    """The stages ``write_graph`` wrote, or None for a run made before runs had a graph file (run
    ``bertlottery run CONFIG --run-dir RUN`` once to write it)."""
    path = Path(run_dir) / GRAPH_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("version") != GRAPH_VERSION or not isinstance(data.get("stages"), list):
        raise UserError(f"{path} is not a stage graph this version reads (version {GRAPH_VERSION}); "
                        f"run `bertlottery run CONFIG --run-dir {run_dir}` once to write it again.")
    return data["stages"]


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a temporary file left beside the target
        raise
    return path


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); the run that wrote it may have been damaged.") from None


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
    with _scratch_beside(final) as scratch:
        yield scratch
    _put_in_place(scratch, final)


@contextmanager
def _scratch_beside(final: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``final``, removed if the block fails."""
    scratch = final.parent / f".{final.name}.partial-{os.getpid()}"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _put_in_place(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing what is there: the old one is renamed out of the way first,
    so no moment exists with two halves."""
    if target.is_dir() and not target.is_symlink():
        trash = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, trash)
        os.replace(new, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)


def is_complete_run(run_dir: str | os.PathLike) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).is_file() and (run_dir / MODEL_DIR / "config.json").is_file()


def model_dir_of(path: str | os.PathLike) -> Path:
    """A run directory's model folder, or ``path`` itself if it is a model folder."""
    path = Path(path)
    return path / MODEL_DIR if (path / MODEL_DIR / "config.json").is_file() else path


def _git_state() -> tuple[str | None, bool | None]:
    """``(HEAD's commit, whether tracked files differ from it)`` of the checkout this package is imported
    from; ``(None, None)`` where this file is not tracked by git (an installed copy, even one in a virtual
    environment inside some other repository)."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", Path(__file__).name)  # ours, not a repository around an installed copy
        revision = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if revision else None
    except (OSError, subprocess.SubprocessError):
        return None, None
    return revision, dirty


# The code this process runs: read once, when the package is imported, so that a stage written hours
# later by a long study does not record a commit checked out in the meantime (nor its clean state).
GIT_REVISION, GIT_DIRTY = _git_state()


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
        "git_revision": GIT_REVISION,
        "git_dirty": GIT_DIRTY,
        "device": device,
        "argv": sys.argv,
    }


def check_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                     recognise: Callable[[Path], bool] | None = None, overwritable: bool = True,
                     ask_to_replace: bool = False) -> str:
    """Whether a command may write its ``kind`` of output into folder ``path``, changing nothing: one
    line (a `UserError`) if not, else ``"new"`` (absent, empty, or holding only this kind's marker),
    ``"own"`` (this kind's earlier output) or ``"foreign"`` (someone else's folder, with ``overwrite``).

    The one rule for every command that writes a folder: the folder may be new, empty, or one that
    this toolkit wrote before for the same ``kind`` (it holds the marker file ``.bertlottery-<kind>``,
    written into every folder `prepare_output_dir` creates or finds empty). Anything else, such as a
    run directory named as an export target, is refused, unless ``overwrite``: then the command writes
    into it, replacing files of the names it writes, and the folder is not marked, so the next command
    asks again. A folder that holds another kind's output (its marker) is refused even then: writing a
    fine-tuning run's config.json into a study run directory would break both.

    ``recognise``: whether a folder without the marker is this kind's output all the same (one written
    before the marker existed, such as a study run directory with its ``config.json`` and ``stages/``).
    ``overwritable``: whether the command has an ``--overwrite`` switch to suggest (a study run
    directory has none: a study never shares its folder). ``ask_to_replace``: this kind's earlier
    output is refused too unless ``overwrite`` (a fine-tuning run took hours: replacing it is asked for).
    """
    if not kind.replace("-", "").isalnum():
        raise ValueError(f"an output kind is a plain name like 'report', got {kind!r}")
    path = Path(path).expanduser()
    marker = output_marker(path, kind)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; choose a folder path for the output.")
    try:
        entries = sorted(path.iterdir()) if path.is_dir() else []
    except OSError as error:
        raise UserError(f"Cannot read {path} ({error.strerror}); choose a folder you can write to.") from None
    if entries in ([], [marker]):
        return "new"
    if marker.is_file() or (recognise and recognise(path)):
        if ask_to_replace and not overwrite:
            raise UserError(f"{path} already holds {kind} output; choose another folder, or pass --overwrite to "
                            "replace it.")
        return "own"
    others = [p.name.removeprefix(".bertlottery-") for p in entries if p.name.startswith(".bertlottery-")]
    if others:
        what = f"holds bertlottery {' and '.join(others)} output, not {kind} output"
        raise UserError(f"{path} {what}; choose another folder" + (" (--overwrite never writes into another command's "
                                                                   "output)." if overwrite else "."))
    if overwrite:
        return "foreign"
    what = f"is not empty and was not written by bertlottery for {kind} output"
    if not overwritable:
        raise UserError(f"{path} {what}; choose a new or empty folder.")
    raise UserError(f"{path} {what}; choose another folder, or pass --overwrite to write into it "
                    "(files of the same names are replaced, nothing else is deleted).")


def prepare_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                       recognise: Callable[[Path], bool] | None = None, overwritable: bool = True,
                       ask_to_replace: bool = False) -> Path:
    """`check_output_dir`, then create the folder if needed and mark a new or recognised one as
    ``kind`` output. Nothing here deletes anything; a caller may replace the entries it writes, never
    the folder (or `staged_output` replaces a folder of its own kind). Returns the folder's path.

    Example:
        >>> out = prepare_output_dir("runs/labelled", "annotate-export")      # doctest: +SKIP
        >>> (out / "export.json").write_text("{}")                               # doctest: +SKIP
    """
    state = check_output_dir(path, kind, overwrite=overwrite, recognise=recognise, overwritable=overwritable,
                             ask_to_replace=ask_to_replace)
    path = Path(path).expanduser()
    if state == "foreign":
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        marker = output_marker(path, kind)
        if not marker.is_file():
            marker.write_text(f"written by bertlottery: a {kind} folder; the same command may replace its contents\n")
    except OSError as error:
        raise UserError(f"Cannot write to {path} ({error.strerror}: {error.filename}); choose a writable folder.") from None
    return path


def output_marker(path: str | os.PathLike, kind: str) -> Path:
    """The file that marks a folder as ``kind`` output (see `prepare_output_dir`)."""
    return Path(path) / f".bertlottery-{kind}"


@contextmanager
def staged_output(final: str | os.PathLike, kind: str, *, overwrite: bool = False,
                  recognise: Callable[[Path], bool] | None = None, ask_to_replace: bool = False) -> Iterator[Path]:
    """`prepare_output_dir`, then a scratch folder that becomes ``final``'s content only if the block
    finishes: a failure (or a kill) leaves ``final`` as it was, and no folder where there was none.

    A folder of this kind (new, empty, marked or recognised) is replaced as a whole, so that no file of
    an earlier output outlives it; a foreign folder written into with ``overwrite`` keeps every entry
    the block did not write (entries of the same names are replaced), since it is not ours to empty.
    A command checks its folder with `check_output_dir` before its work too, so that a refusal comes
    before hours of training rather than after.

    Example:
        >>> with staged_output("runs/rte", "finetune") as scratch:             # doctest: +SKIP
        ...     (scratch / "metrics.json").write_text("{}")
    """
    existed = Path(final).expanduser().exists()
    final = prepare_output_dir(final, kind, overwrite=overwrite, recognise=recognise, ask_to_replace=ask_to_replace)
    marker = output_marker(final, kind)
    ours = marker.is_file()
    try:
        with _scratch_beside(final) as scratch:
            yield scratch
    except BaseException:
        if not existed:  # the folder prepare_output_dir made for this output, holding only its marker
            marker.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                final.rmdir()
        raise
    if ours:
        shutil.copyfile(marker, output_marker(scratch, kind))
        _put_in_place(scratch, final)
        return
    for entry in sorted(scratch.iterdir()):
        _put_in_place(entry, final / entry.name)
    scratch.rmdir()


def is_study_run(path: str | os.PathLike) -> bool:
    """Whether a folder is a study run directory (``bertlottery run``), marked or made before the marker:
    its ``config.json`` beside ``stages/`` or ``graph.json``, or nothing but the entries a study run
    writes (a run killed early; a lone ``config.json`` could be anyone's and is not enough)."""
    path = Path(path)
    if output_marker(path, STUDY_RUN_KIND).is_file():
        return True
    if (path / CONFIG_FILE).is_file() and ((path / STAGES_DIR).is_dir() or (path / GRAPH_FILE).is_file()):
        return True
    names = {p.name for p in path.iterdir()} if path.is_dir() else set()
    return bool(names - {CONFIG_FILE}) and names <= _STUDY_RUN_ENTRIES


_STUDY_RUN_ENTRIES = {CONFIG_FILE, GRAPH_FILE, STAGES_DIR, ROWS_DIR, FAILED_DIR, RUNNING_DIR, SKIPPED_DIR, EVENTS_FILE,
                      LOCK_FILE, RESULTS_CSV, RESULTS_PARQUET}


@contextmanager
def locked_run_dir(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the study run directory ``run_dir`` for one writer: a second one is refused with one line
    naming the holder's process id and host.

    The lock is the operating system's (``flock``), which dies with its process: a killed run never
    leaves a stale lock behind. Readers (``status``, ``report``) take no lock. The folder is checked
    first (`prepare_output_dir`), so no lock file lands in a folder that is not a study run's.
    """
    import fcntl
    import socket

    run_dir = prepare_output_dir(run_dir, STUDY_RUN_KIND, recognise=is_study_run, overwritable=False)
    path = run_dir / LOCK_FILE
    try:
        handle = path.open("a+")
    except OSError as error:
        raise UserError(f"Cannot write to the run directory {run_dir} ({error.strerror}); choose a writable "
                        "folder.") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().split()
            who = f"process {holder[0]} on {holder[1]}" if len(holder) == 2 else "another process"
            raise UserError(f"{run_dir} is being written by {who}; wait for it to finish (status and report "
                            "read it meanwhile), or choose another --run-dir.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        try:
            yield run_dir
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
