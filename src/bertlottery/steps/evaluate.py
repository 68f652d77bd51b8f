"""Evaluate a fine-tuned run (or an exported subnetwork) on its task's dev sets, optionally under a
mask (``bertlottery evaluate``): the pruned mode of the lottery study."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import UserError
from ..lastlayer import use_last_layer
from ..masking import fraction_kept
from ..masks import load_masks
from ..models import compute_device, load_model, load_tokenizer, model_layout
from ..physical import export_for
from ..tasks import get_task
from ..settings import TrainSettings
from .taskdata import DEFAULT_MAX_LENGTH, evaluate_model, fit_max_length, metrics_record, prepare_task_data

__all__ = ["evaluate_run"]


def evaluate_run(
    run_or_model: str | os.PathLike,
    *,
    task_name: str | None,
    glue_dir: Path | None,
    masks_path: str | os.PathLike | None = None,
    max_length: int | None = None,
    max_eval_examples: int | None = None,
    physical: bool = False,
) -> dict[str, Any]:
    """Evaluate a fine-tuned run (or model folder) on its task's eval splits, optionally under a mask.

    ``physical``: evaluate a head+MLP mask on the physically smaller model (`bertlottery.physical`: the
    gated model's metrics to float tolerance, fewer operations), as the s-search evaluates its
    candidates; a mask with weights is always evaluated as a mask on the full model.

    ``max_length``: tokens per example; by default the length the run was fine-tuned at (its
    ``config.json``), so that a pruned model is measured at the truncation its full model was, else 128;
    either cut to the model's positions (`fit_max_length`). A length asked for beyond them is refused.
    """
    path = Path(run_or_model)
    # a run directory's config.json, or an exported subnetwork's export.json, names the task
    records = [runs.read_json(f) for f in (path / runs.CONFIG_FILE, path / runs.EXPORT_FILE) if f.is_file()]
    trained = [r["train"] for r in records if isinstance(r, dict) and isinstance(r.get("train"), dict)]
    recorded = next((t["max_length"] for t in trained if isinstance(t.get("max_length"), int)), DEFAULT_MAX_LENGTH)
    own = next((r["task"] for r in records if isinstance(r, dict) and isinstance(r.get("task"), str)), None)
    # the precision the run was trained in (fp32 for a run recorded before the setting, or a bare model)
    trained_as = next((TrainSettings.from_dict(r["train"]) for r in records
                       if isinstance(r, dict) and isinstance(r.get("train"), dict)), None)
    precision = trained_as.precision if trained_as is not None else "fp32"
    # the last layer as the run computed it (`bertlottery.lastlayer`; every position for a bare model)
    last_layer = trained_as.last_layer if trained_as is not None else "full"
    if task_name is None:
        task_name = own
        if task_name is None:
            raise UserError(f"{path} is not a bertlottery run or export (no task recorded); pass --task.")
    task = get_task(task_name)
    if own is not None and get_task(own).num_labels != task.num_labels:
        # its task head has the other task's size: loading it would fail deep inside transformers
        raise UserError(f"{path} was fine-tuned on {own} ({get_task(own).num_labels} outputs), which {task.name} "
                        f"({task.num_labels}) cannot be evaluated with; evaluate it on {own}, or leave out --task.")
    model_dir = runs.model_dir_of(path)
    # a length asked for is checked against the model before anything is read; the run's own (or the
    # default) is fitted to it, as fine-tuning fitted it (a run made before that could record more)
    max_length = fit_max_length(model_dir, max_length, default=recorded)
    tokenizer = load_tokenizer(str(model_dir))
    data = prepare_task_data(task, tokenizer, glue_dir, max_length=max_length, with_train=False,
                             max_eval_examples=max_eval_examples)
    if (model_dir / "pruning.json").is_file():  # a physically pruned export (bertlottery export)
        from ..export import load_exported

        if masks_path:
            raise UserError(f"{model_dir} is an exported subnetwork: its mask is already applied; evaluate it without --mask.")
        model = load_exported(model_dir).to(compute_device())
        sizes = runs.read_json(model_dir / "pruning.json")["params"]
        kept = sizes["body_after"] / sizes["body_before"]
    else:
        model = load_model(str(model_dir), task.num_labels).to(compute_device())
    use_last_layer(model, last_layer)
    masks = None
    if masks_path:
        masks = load_masks(masks_path, model_layout(model), {n: tuple(p.shape) for n, p in model.named_parameters()})
    if not (model_dir / "pruning.json").is_file():
        kept = fraction_kept(model, masks)
    evaluated_on = "gated"
    if physical and masks is not None and masks.weights is None:
        model, masks, evaluated_on = export_for(model, masks), None, "physical"  # keeps the last-layer setting
    results = evaluate_model(model, data, masks, precision=precision)
    return metrics_record(task, results, model=str(model_dir), masks=str(masks_path) if masks_path else None,
                          body_fraction_kept=kept, **({"evaluated_on": evaluated_on} if masks_path else {}))
