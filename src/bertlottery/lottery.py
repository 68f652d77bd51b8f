"""The lottery's steps, each runnable alone on what the previous one wrote.

- `prune_structured_run` / `prune_magnitude_run`: from a fine-tuning run directory to a "good" mask,
  its search trace and its dev metrics (E2, E3).
- `make_subnetworks`: good / random / bad masks of the same size (E4); `make_super_survivors` (E5).
- `retrain_run`: re-fine-tune under a mask, from the pre-trained weights and the original run's
  seed (E4-E7); the pruned mode is ``bertlottery evaluate RUN --mask``.
- `majority_baseline_metrics`, `random_init_baseline_run`: the baselines of the paper's Table 2 (E6).

A prune step writes a directory::

    OUT/
      mask.safetensors   the good mask (heads+MLPs, or weights), with how it was made in its metadata
      trace.json         every step: phase, sizes, metric, accepted, the scores it was chosen by
      metrics.json       the good mask's metrics on every eval split, and its size
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from . import runs
from .compat import get_compat
from .errors import UserError
from .evaluation import evaluate
from .importance import magnitudes, structured_importance
from .masking import fraction_kept, gated, weight_masked
from .masks import HeadMask, Masks, MlpMask, WeightMask, load_masks, save_masks
from .metrics import majority_baseline
from .models import load_model, load_tokenizer, model_layout
from .pruning import magnitude_search, structured_search
from .recipes import TaskData, evaluate_model, finetune_run, prepare_task_data
from .data import load_split
from .sampling import bad_like, random_like, super_survivors
from .tasks import get_task
from .training import TrainSettings

__all__ = [
    "MASK_FILE",
    "TRACE_FILE",
    "prune_structured_run",
    "prune_magnitude_run",
    "make_subnetworks",
    "make_super_survivors",
    "retrain_run",
    "majority_baseline_metrics",
    "random_init_baseline_run",
    "export_run",
]

MASK_FILE = runs.MASK_FILE
TRACE_FILE = "trace.json"
SCORING_SPLITS = ("dev", "heldout")


def _run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not runs.is_complete_run(run_dir):
        raise UserError(
            f"{run_dir} is not a finished fine-tuning run (no {runs.METRICS_FILE} and {runs.MODEL_DIR}/); "
            "give the directory `bertlottery finetune --out` wrote."
        )
    return runs.read_json(run_dir / runs.CONFIG_FILE)


def _load_finetuned(run_dir: Path, glue_dir: Path | None, *, heldout: bool = False) -> tuple[nn.Module, TaskData, dict]:
    config = _run_config(run_dir)
    task = get_task(config["task"])
    model_dir = runs.model_dir_of(run_dir)
    tokenizer = load_tokenizer(str(model_dir))
    holdout = config.get("holdout_fraction") or 0.0
    if heldout and not holdout:
        raise UserError(
            f"{run_dir} was fine-tuned on all of train, so there is no held-out slice to score on; "
            "fine-tune with --holdout-fraction 0.1, or score on dev."
        )
    data = prepare_task_data(task, tokenizer, glue_dir, max_length=config["train"]["max_length"],
                             with_train=False, max_train_examples=config.get("max_train_examples"),
                             holdout_fraction=holdout if heldout else 0.0)
    model = load_model(str(model_dir), task.num_labels)
    return model, data, config


def _primary(model: nn.Module, data: TaskData, batches) -> float:
    return evaluate(model, data.task, batches)[data.task.primary_metric]


def _write_prune_dir(out, masks: Masks, model: nn.Module, data: TaskData, trace: dict, overwrite: bool) -> dict:
    results = evaluate_model(model, data, masks)
    record = {
        "task": data.task.name,
        "primary_metric": data.task.primary_metric,
        "splits": {split: {"metrics": m} for split, m in results.items()},
        "body_fraction_kept": fraction_kept(model, masks),
        "heads_kept": masks.heads.n_kept if masks.heads is not None else None,
        "mlps_kept": masks.mlps.n_kept if masks.mlps is not None else None,
        "weights_kept": masks.weights.n_kept if masks.weights is not None else None,
        "params": masks.params,
    }
    with runs.staged_run_dir(out, overwrite=overwrite) as scratch:
        save_masks(scratch / MASK_FILE, masks, model_layout(model))
        runs.write_json(scratch / TRACE_FILE, trace)
        runs.write_json(scratch / runs.METRICS_FILE, record)
    return record


def prune_structured_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    mode: str = "heads+mlps",
    threshold: float = 0.9,
    scoring_split: str = "dev",
    normalize_by_layer: bool = True,
    global_min_max: bool = False,
    compat: str | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """s-pruning of a fine-tuned run: the good head+MLP mask, its trace and metrics (E2)."""
    if scoring_split not in SCORING_SPLITS:
        raise UserError(f"Unknown scoring split '{scoring_split}'; use one of {', '.join(SCORING_SPLITS)}.")
    quirks = get_compat(compat)
    run_dir = Path(run_dir)
    model, data, config = _load_finetuned(run_dir, glue_dir, heldout=scoring_split == "heldout")
    layout = model_layout(model)
    dev = data.eval_batches(data.main_split)
    scoring = data.eval_batches("heldout" if scoring_split == "heldout" else data.main_split, batch_size)

    full_metric = _primary(model, data, dev)
    bar = tqdm(desc=f"s-pruning {data.task.name}", disable=not progress, leave=False)

    def score(heads: HeadMask, mlps: MlpMask):
        return structured_importance(model, scoring, heads=heads, mlps=mlps, normalize_by_layer=normalize_by_layer,
                                     global_min_max=global_min_max, compat=quirks)

    def evaluate_mask(heads: HeadMask, mlps: MlpMask) -> float:
        with gated(model, heads=heads, mlps=mlps):
            return _primary(model, data, dev)

    def show(step) -> None:
        bar.update(1)
        bar.set_postfix(phase=step.phase, heads=step.heads_kept, mlps=step.mlps_kept, metric=f"{step.metric:.4f}")

    started = time.time()
    result = structured_search(score, evaluate_mask, num_layers=layout.num_layers, num_heads=layout.num_heads,
                               full_metric=full_metric, mode=mode, threshold=threshold, on_step=show)
    bar.close()
    params = {
        "method": "structured", "mode": mode, "threshold": threshold, "scoring_split": scoring_split,
        "normalize_by_layer": normalize_by_layer, "global_min_max": global_min_max,
        "compat": compat or "none", "seed": config["train"]["seed"], "task": data.task.name,
        "model": config["model"], "run": str(run_dir), "full_metric": full_metric,
        "final_metric": result.final_metric, "subnetwork": "good",
    }
    masks = Masks(heads=result.heads, mlps=result.mlps, params=params, family=layout.family)
    trace = {**result.trace_dict(), "metric_name": data.task.primary_metric, "seconds": round(time.time() - started, 2),
             "params": params}
    return _write_prune_dir(out, masks, model, data, trace, overwrite)


def prune_magnitude_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    threshold: float = 0.9,
    scope: str = "global",
    tensor_set: str = "paper",
    step_fraction: float = 0.1,
    compat: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """m-pruning of a fine-tuned run: the good weight mask, its trace and metrics (E3)."""
    quirks = get_compat(compat)
    run_dir = Path(run_dir)
    model, data, config = _load_finetuned(run_dir, glue_dir)
    layout = model_layout(model)
    dev = data.eval_batches(data.main_split)
    full_metric = _primary(model, data, dev)
    bar = tqdm(desc=f"m-pruning {data.task.name}", disable=not progress, leave=False)

    def evaluate_mask(mask: WeightMask) -> float:
        with weight_masked(model, mask):
            return _primary(model, data, dev)

    def show(step) -> None:
        bar.update(1)
        bar.set_postfix(pruned=f"{step.fraction_pruned:.3f}", metric=f"{step.metric:.4f}")

    started = time.time()
    result = magnitude_search(magnitudes(model, tensor_set), evaluate_mask, full_metric=full_metric,
                              threshold=threshold, step_fraction=step_fraction, scope=scope, compat=quirks,
                              on_step=show)
    bar.close()
    params = {
        "method": "magnitude", "scope": scope, "tensor_set": tensor_set, "threshold": threshold,
        "step_fraction": step_fraction, "compat": compat or "none", "seed": config["train"]["seed"],
        "task": data.task.name, "model": config["model"], "run": str(run_dir), "full_metric": full_metric,
        "final_metric": result.final_metric, "subnetwork": "good",
    }
    masks = Masks(weights=result.weights, params=params, family=layout.family)
    trace = {**result.trace_dict(), "metric_name": data.task.primary_metric, "seconds": round(time.time() - started, 2),
             "params": params}
    return _write_prune_dir(out, masks, model, data, trace, overwrite)


def _mask_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / MASK_FILE if path.is_dir() else path


def make_subnetworks(
    good_path: str | os.PathLike, out: str | os.PathLike, *, seed: int, compat: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``good``, ``random`` and ``bad`` masks of the same size into ``out`` (E4).

    A magnitude mask found with ``scope=local`` gets per-tensor counts; a global one a total count.
    """
    good = load_masks(_mask_file(good_path))
    per_tensor = good.params.get("scope") == "local"
    random = random_like(good, seed, per_tensor=per_tensor, compat=get_compat(compat))
    bad = bad_like(good, seed, per_tensor=per_tensor)
    sizes = {}
    with runs.staged_run_dir(out, overwrite=overwrite) as scratch:
        for name, masks in (("good", good), ("random", random), ("bad", bad)):
            save_masks(scratch / f"{name}.safetensors", masks)
            sizes[name] = {k: getattr(masks, k).n_kept for k in masks.kinds}
        runs.write_json(scratch / "subnetworks.json", {"seed": seed, "compat": compat or "none",
                                                       "per_tensor": per_tensor, "kept": sizes,
                                                       "good": str(good_path)})
    return sizes


def make_super_survivors(
    mask_paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, seed: int, overwrite: bool = False
) -> dict[str, Any]:
    """Super-survivor good / random / bad masks of one task's masks over several seeds (E5).

    Accepts bertlottery masks files (or prune directories) and the paper's released
    ``seed_<s>/`` folders.
    """
    from .masks import import_prasanna2020

    loaded = []
    for path in mask_paths:
        path = Path(path)
        if path.is_dir() and (path / "head_mask.npy").is_file():
            loaded.append(import_prasanna2020(path))
        else:
            loaded.append(load_masks(_mask_file(path)))
    tasks = {m.params.get("task") for m in loaded if m.params.get("task")}
    if len(tasks) > 1:
        raise UserError(f"Super-survivors are per task, but these masks come from {sorted(tasks)}.")
    result = super_survivors(loaded, seed)
    sizes = {}
    with runs.staged_run_dir(out, overwrite=overwrite) as scratch:
        for name, masks in result.items():
            masks.params["task"] = next(iter(tasks), None)
            save_masks(scratch / f"{name}.safetensors", masks)
            sizes[name] = {k: getattr(masks, k).n_kept for k in masks.kinds}
        runs.write_json(scratch / "subnetworks.json", {"seed": seed, "kept": sizes,
                                                       "sources": [str(p) for p in mask_paths]})
    return sizes


def retrain_run(
    run_dir: str | os.PathLike,
    mask_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    epochs: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-fine-tune under a fixed mask: the pre-trained encoder, the original run's seed and settings.

    The classifier is re-initialised from the seed of the run that found the mask (the same
    initial classifier, `bertlottery.models.init_classifier`), the data order is the same, the
    mask stays applied throughout. With ``epochs`` longer than the original, dev metrics are
    recorded after every epoch (the paper's appendix D).
    """
    config = _run_config(run_dir)
    settings = TrainSettings(**config["train"])
    if epochs is not None:
        settings = TrainSettings(**{**settings.to_dict(), "epochs": epochs})
    return finetune_run(
        config["model"], config["task"], out, glue_dir=glue_dir, settings=settings,
        masks_path=_mask_file(mask_path), max_train_examples=config.get("max_train_examples"),
        holdout_fraction=config.get("holdout_fraction") or 0.0, eval_each_epoch=True,
        overwrite=overwrite, progress=progress,
        extra_config={"mode": "retrained", "found_by": str(run_dir)},
    )


def majority_baseline_metrics(task_name: str, glue_dir: Path | None) -> dict[str, Any]:
    """Predict the most frequent train label on every eval split (the paper's Table 2, first row)."""
    import numpy as np

    task = get_task(task_name)
    train = np.array([e.label for e in load_split(task, "train", glue_dir)])
    splits = {}
    for split in task.eval_splits:
        labels = np.array([e.label for e in load_split(task, split, glue_dir)])
        metrics = majority_baseline(task, train, labels)
        metrics["n_examples"] = int(len(labels))
        splits[split] = {"metrics": metrics}
    return {"task": task.name, "primary_metric": task.primary_metric, "splits": splits, "baseline": "majority"}


def random_init_baseline_run(
    model_name: str,
    task_name: str,
    size_of: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    settings: TrainSettings,
    mask_seed: int | None = None,
    max_train_examples: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """A randomly initialised encoder with a random s-mask of ``size_of``'s size, fine-tuned (Table 2, last row)."""
    reference = load_masks(_mask_file(size_of))
    if reference.heads is None and reference.mlps is None:
        raise UserError(f"{size_of} has no head or MLP mask; the random-init baseline takes an s-pruning mask's size.")
    mask_seed = settings.seed if mask_seed is None else mask_seed
    random = random_like(reference, mask_seed)
    random.params.update(baseline="random-init", size_of=str(size_of))
    return finetune_run(model_name, task_name, out, glue_dir=glue_dir, settings=settings, masks=random,
                        max_train_examples=max_train_examples, random_init=True, overwrite=overwrite,
                        progress=progress, extra_config={"baseline": "random-init", "size_of": str(size_of),
                                                         "mask_seed": mask_seed})


def export_run(
    run_dir: str | os.PathLike, mask_path: str | os.PathLike, out: str | os.PathLike
) -> dict[str, Any]:
    """Write a fine-tuned run's s-pruned subnetwork with its masked heads and MLPs physically removed.

    The folder holds the sliced weights, the original config, the tokenizer and ``pruning.json``;
    `bertlottery.export.load_exported` (and ``bertlottery evaluate OUT --task T``) load it back.
    """
    from .export import PLAN_FILE, save_exported

    task = get_task(_run_config(run_dir)["task"])
    model_dir = runs.model_dir_of(run_dir)
    masks = load_masks(_mask_file(mask_path))
    if masks.weights is not None:
        raise UserError(f"{mask_path} holds a weight mask; only head and MLP masks can be exported as a smaller model.")
    model = load_model(str(model_dir), task.num_labels)
    masks.check_against(model_layout(model))
    save_exported(model, out, masks.heads, masks.mlps, tokenizer=load_tokenizer(str(model_dir)))
    # so `bertlottery evaluate OUT` finds the task like for any run directory
    runs.write_json(Path(out) / runs.EXPORT_FILE, {"task": task.name, "run": str(run_dir), "mask": str(mask_path)})
    return runs.read_json(Path(out) / PLAN_FILE)
