"""Re-fine-tune under a fixed mask from the pre-trained weights (``bertlottery retrain``): the
re-fine-tuned mode of the lottery study, and its longer variant (the paper's appendix D)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import runs
from ..training import TrainSettings
from .finetune import finetune_run
from .taskdata import CAP_SEED, finetuned_run_config

__all__ = ["retrain_run"]


def retrain_run(
    run_dir: str | os.PathLike,
    mask_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    epochs: int | None = None,
    subnetwork_training: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-fine-tune under a fixed mask: the pre-trained encoder, the original run's seed and settings.

    The classifier is re-initialised from the seed of the run that found the mask (the same
    initial classifier, `bertlottery.models.init_classifier`), the data order is the same, the
    mask stays applied throughout. With ``epochs`` longer than the original, dev metrics are
    recorded after every epoch (the paper's appendix D). ``subnetwork_training`` (``physical`` or
    ``gated``) replaces the original run's setting (`bertlottery.settings.TrainSettings`).
    """
    config = finetuned_run_config(run_dir)
    settings = TrainSettings.from_dict(config["train"])
    if epochs is not None:
        settings = replace(settings, epochs=epochs)
    if subnetwork_training is not None:
        settings = replace(settings, subnetwork_training=subnetwork_training)
    return finetune_run(
        config["model"], config["task"], out, glue_dir=glue_dir, settings=settings,
        masks_path=runs.mask_file_of(mask_path), max_train_examples=config.get("max_train_examples"),
        cap_seed=CAP_SEED if config.get("cap_seed") is None else config["cap_seed"],
        holdout_fraction=config.get("holdout_fraction") or 0.0, eval_each_epoch=True,
        overwrite=overwrite, progress=progress,
        extra_config={"mode": "retrained", "found_by": str(run_dir)}, kind="retrain",
    )
