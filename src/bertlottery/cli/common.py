"""What the commands share: the GLUE folder argument, printing metrics, and the training arguments,
generated from `bertlottery.settings.TrainSettings` (declared once there) and read back into it."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..settings import TrainSettings

__all__ = ["existing_dir", "glue_dir_of", "print_metrics", "add_train_arguments", "train_settings_of", "GLUE_HELP"]

GLUE_HELP = "folder with the standard GLUE layout (CoLA/, SST-2/, ...); omit to load GLUE from the hub"


def existing_dir(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserError(
            f"GLUE directory {path} does not exist; pass --glue-dir pointing at the folder that holds "
            "CoLA/, SST-2/, ... (the standard GLUE download), or leave it out to load GLUE from the hub."
        )
    return path


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per `TrainSettings` field, with its default and help (``--lr``, ``--epochs``, ...; a
    setting that is on by default, such as grouping by length, gets a ``--no-...`` switch)."""
    for f in fields(TrainSettings):
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            parser.add_argument(_flag(f), dest=f.name, action="store_false" if default else "store_true",
                                help=f.metadata["help"])
            continue
        parser.add_argument(_flag(f), dest=f.name, type=type(default), default=default, choices=f.metadata["choices"],
                            help=f"{f.metadata['help']} (default %(default)s)")


def train_settings_of(args: argparse.Namespace) -> TrainSettings:
    """The settings the training options asked for (a command with only some of them, such as
    quickstart's ``--seed``, gets the defaults of the others), checked by the config's own checks:
    every value out of range, and a ``--max-train-examples`` below 1, raise one line together."""
    from ..config import max_train_examples_problems

    settings = TrainSettings(**{f.name: getattr(args, f.name) for f in fields(TrainSettings) if hasattr(args, f.name)})
    problems = settings.problems(name_of=_flag)
    problems += max_train_examples_problems(getattr(args, "max_train_examples", None), "--max-train-examples")
    if problems:
        raise UserError("; ".join(problems) + ".")
    return settings


def glue_dir_of(args: argparse.Namespace) -> Path | None:
    return existing_dir(args.glue_dir) if args.glue_dir else None


def print_metrics(record: dict[str, Any], label: str = "") -> None:
    for split, entry in record["splits"].items():
        metrics = entry["metrics"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "n_examples")
        print(f"{label}{record['task']} {split} ({metrics['n_examples']} examples): {shown}")
