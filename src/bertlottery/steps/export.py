"""Write an s-pruned subnetwork with its masked heads and MLPs physically removed (``bertlottery export``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import UserError
from ..masks import load_masks
from ..models import load_model, load_tokenizer, model_layout
from ..tasks import get_task
from .taskdata import finetuned_run_config

__all__ = ["export_run", "KIND"]

KIND = "export"  # the kind of output folder an export is (`bertlottery.runs.check_output_dir`)


def _is_export(path: Path) -> bool:
    """An export written before folders were marked: its plan beside the record of where it came from."""
    from ..export import PLAN_FILE

    return (path / PLAN_FILE).is_file() and (path / runs.EXPORT_FILE).is_file()


def export_run(
    run_dir: str | os.PathLike, mask_path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write a fine-tuned run's s-pruned subnetwork with its masked heads and MLPs physically removed.

    The folder holds the sliced weights, the original config, the tokenizer and ``pruning.json``;
    `bertlottery.export.load_exported` (and ``bertlottery evaluate OUT --task T``) load it back.
    ``out`` must be new or empty, or (with ``overwrite``) an earlier export, replaced, or a folder that
    is not bertlottery's, written into (`bertlottery.runs.check_output_dir`); it appears complete or not
    at all.
    """
    from ..export import PLAN_FILE, save_exported

    runs.check_output_dir(out, KIND, overwrite=overwrite, recognise=_is_export, ask_to_replace=True)
    task = get_task(finetuned_run_config(run_dir)["task"])
    model_dir = runs.model_dir_of(run_dir)
    masks = load_masks(runs.mask_file_of(mask_path))
    if masks.weights is not None:
        raise UserError(f"{mask_path} holds a weight mask; only head and MLP masks can be exported as a smaller model.")
    model = load_model(str(model_dir), task.num_labels)
    masks.check_against(model_layout(model))
    with runs.staged_output(out, KIND, overwrite=overwrite, recognise=_is_export, ask_to_replace=True) as scratch:
        save_exported(model, scratch, masks.heads, masks.mlps, tokenizer=load_tokenizer(str(model_dir)))
        # so `bertlottery evaluate OUT` finds the task like for any run directory
        runs.write_json(scratch / runs.EXPORT_FILE, {"task": task.name, "run": str(run_dir), "mask": str(mask_path)})
    return runs.read_json(Path(out) / PLAN_FILE)
