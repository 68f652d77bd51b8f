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


def prepare_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False) -> Path:
    """Check that a command may write its ``kind`` of output into folder ``path``; create it if needed.

    The one rule for every command that writes a folder: the folder may be new, empty, or one that
    this toolkit wrote before for the same ``kind`` (it holds the marker file ``.bertlottery-<kind>``,
    written here into every folder this function creates or finds empty). Anything else, such as a
    run directory named as an export target, is refused with one line, unless ``overwrite``: then the
    command writes into it, replacing files of the names it writes, and the folder is not marked, so
    the next command asks again. Nothing here deletes anything; a caller may replace the entries it
    writes, never the folder.

    Returns the folder's path.

    Example:
        >>> out = prepare_output_dir("runs/labelled", "annotate-export")      # doctest: +SKIP
        >>> (out / "export.json").write_text("{}")                               # doctest: +SKIP
    """
    if not kind.replace("-", "").isalnum():
        raise ValueError(f"an output kind is a plain name like 'report', got {kind!r}")
    path = Path(path).expanduser()
    marker = path / f".bertlottery-{kind}"
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; choose a folder path for the output.")
    if marker.is_file():
        return path
    try:
        if path.is_dir() and any(path.iterdir()):
            if overwrite:
                return path
            others = sorted(p.name.removeprefix(".bertlottery-") for p in path.glob(".bertlottery-*"))
            what = (f"holds bertlottery {' and '.join(others)} output, not {kind} output" if others
                    else f"is not empty and was not written by bertlottery for {kind} output")
            raise UserError(f"{path} {what}; choose another folder, or pass --overwrite to write into it "
                            "(files of the same names are replaced, nothing else is deleted).")
        path.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"written by bertlottery: a {kind} folder; the same command may replace its contents\n")
    except OSError as error:
        raise UserError(f"Cannot write to {path} ({error.strerror}: {error.filename}); choose a writable folder.") from None
    return path
