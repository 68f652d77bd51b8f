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

__all__ = ["export_run"]


def export_run(
    run_dir: str | os.PathLike, mask_path: str | os.PathLike, out: str | os.PathLike
) -> dict[str, Any]:
    """Write a fine-tuned run's s-pruned subnetwork with its masked heads and MLPs physically removed.

    The folder holds the sliced weights, the original config, the tokenizer and ``pruning.json``;
    `bertlottery.export.load_exported` (and ``bertlottery evaluate OUT --task T``) load it back.
    """
    from ..export import PLAN_FILE, save_exported

    task = get_task(finetuned_run_config(run_dir)["task"])
    model_dir = runs.model_dir_of(run_dir)
    masks = load_masks(runs.mask_file_of(mask_path))
    if masks.weights is not None:
        raise UserError(f"{mask_path} holds a weight mask; only head and MLP masks can be exported as a smaller model.")
    model = load_model(str(model_dir), task.num_labels)
    masks.check_against(model_layout(model))
    save_exported(model, out, masks.heads, masks.mlps, tokenizer=load_tokenizer(str(model_dir)))
    # so `bertlottery evaluate OUT` finds the task like for any run directory
    runs.write_json(Path(out) / runs.EXPORT_FILE, {"task": task.name, "run": str(run_dir), "mask": str(mask_path)})
    return runs.read_json(Path(out) / PLAN_FILE)
