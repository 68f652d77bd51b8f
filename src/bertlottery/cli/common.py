"""What the commands share: the GLUE folder argument, printing metrics, and the training arguments,
generated from `bertlottery.settings.TrainSettings` (declared once there) and read back into it."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..settings import TrainSettings

__all__ = ["existing_dir", "glue_dir_of", "print_metrics", "add_train_arguments", "train_settings_of", "fitted_settings_of",
           "json_file_of", "GLUE_HELP"]

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
    setting that is on by default, such as grouping by length, gets a ``--no-...`` switch).

    An option not given is None, not its default, so that a command can tell a value asked for from the
    default (`fitted_settings_of` refuses a ``--max-length`` beyond the model's positions, and fits the
    default to them); `train_settings_of` fills in the defaults."""
    for f in fields(TrainSettings):
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            parser.add_argument(_flag(f), dest=f.name, action="store_false" if default else "store_true",
                                help=f.metadata["help"])
            continue
        parser.add_argument(_flag(f), dest=f.name, type=type(default), default=None, choices=f.metadata["choices"],
                            help=f"{f.metadata['help']} (default {default})")


def train_settings_of(args: argparse.Namespace) -> TrainSettings:
    """The settings the training options asked for (a command with only some of them, such as
    quickstart's ``--seed`` or retrain's ``--epochs``, gets the defaults of the others), checked by the
    config's own checks: every value out of range, a ``--max-train-examples`` below 1 and a
    ``--holdout-fraction`` outside [0, 1) raise one line together."""
    from ..config import holdout_fraction_problems, max_train_examples_problems

    settings = TrainSettings(**{f.name: getattr(args, f.name) for f in fields(TrainSettings)
                                if getattr(args, f.name, None) is not None})
    problems = settings.problems(name_of=_flag)
    problems += max_train_examples_problems(getattr(args, "max_train_examples", None), "--max-train-examples")
    problems += holdout_fraction_problems(getattr(args, "holdout_fraction", 0.0), "--holdout-fraction")
    if problems:
        raise UserError("; ".join(problems) + ".")
    return settings


def fitted_settings_of(args: argparse.Namespace, model: str | Path) -> TrainSettings:
    """`train_settings_of`, with the tokens per example fitted to ``model`` before anything runs: a
    ``--max-length`` beyond its positions is refused, the default cut to them with a notice
    (`bertlottery.steps.taskdata.fit_max_length`)."""
    from dataclasses import replace

    from ..steps.taskdata import fit_max_length

    settings = train_settings_of(args)
    return replace(settings, max_length=fit_max_length(model, args.max_length, default=settings.max_length))


def json_file_of(value: str | None) -> Path | None:
    """An ``--out`` JSON file, checked before the work whose result it will hold."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give the name of the JSON file to write.")
    return path


def glue_dir_of(args: argparse.Namespace) -> Path | None:
    return existing_dir(args.glue_dir) if args.glue_dir else None


def print_metrics(record: dict[str, Any], label: str = "") -> None:
    for split, entry in record["splits"].items():
        metrics = entry["metrics"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "n_examples")
        print(f"{label}{record['task']} {split} ({metrics['n_examples']} examples): {shown}")
