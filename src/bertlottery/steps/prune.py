"""Find the good subnetwork of a fine-tuned run (``bertlottery prune``): s-pruning of heads and MLPs,
or m-pruning of weights (Prasanna et al. 2020, section 3; `bertlottery.pruning` holds the searches), or
the retraining-free Fisher search of heads and MLP neurons under a cost budget (Kwon et al. 2022;
`bertlottery.fisher`).

A prune step writes a directory (names in `bertlottery.runs`)::

    OUT/
      mask.safetensors   the good mask (heads+MLPs, weights, or heads + neurons as weights), with how it
                         was made in its metadata
      trace.json         every step: phase, sizes, metric, accepted, the scores it was chosen by
      metrics.json       the good mask's metrics on every eval split, and its size
      fisher.safetensors Fisher only: the diagonal Fisher scores (heads, neurons), the tuned scales
                         (head_scales, neuron_scales) and the kept neurons (neurons_kept: uint8[layer, unit])
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from .. import runs
from ..compat import get_compat
from ..errors import UserError
from ..evaluation import evaluate
from ..importance import magnitudes, structured_importance
from ..lastlayer import use_last_layer
from ..masking import fraction_kept, gated, weight_masked
from ..masks import HeadMask, Masks, MlpMask, WeightMask, save_masks
from ..models import compute_device, load_model, load_tokenizer, model_layout
from ..metrics import chance_level
from ..physical import pruned_evaluator
from ..pruning import criterion_threshold, magnitude_search, structured_search
from ..settings import TrainSettings
from ..tasks import get_task
from .taskdata import CAP_SEED, TaskData, evaluate_model, finetuned_run_config, prepare_task_data

__all__ = ["prune_structured_run", "prune_magnitude_run", "prune_fisher_run", "load_finetuned", "primary_metric",
           "SCORING_SPLITS", "KIND"]

SCORING_SPLITS = ("dev", "heldout")
KIND = "prune"  # the kind of output folder a prune step writes (`bertlottery.runs.check_output_dir`)


def _is_prune_dir(path: Path) -> bool:
    """A prune directory written before folders were marked."""
    return all((path / name).is_file() for name in (runs.MASK_FILE, runs.TRACE_FILE, runs.METRICS_FILE))


def _load_finetuned(run_dir: Path, glue_dir: Path | None, out: str | os.PathLike, overwrite: bool, *,
                    heldout: bool = False, with_train: bool = False) -> tuple[nn.Module, TaskData, dict]:
    # the output folder first: a refusal comes before the search, not after it
    runs.check_output_dir(out, KIND, overwrite=overwrite, recognise=_is_prune_dir, ask_to_replace=True)
    return load_finetuned(run_dir, glue_dir, heldout=heldout, with_train=with_train)


def load_finetuned(run_dir: str | os.PathLike, glue_dir: Path | None, *, heldout: bool = False,
                   with_train: bool = False) -> tuple[nn.Module, TaskData, dict]:
    """A fine-tuned run's model, its task's data (dev; the training pool with ``with_train``, its
    held-out slice with ``heldout``) as the run saw them, and the run's config."""
    config = finetuned_run_config(run_dir)
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
                             with_train=with_train, max_train_examples=config.get("max_train_examples"),
                             cap_seed=CAP_SEED if config.get("cap_seed") is None else config["cap_seed"],
                             holdout_fraction=holdout if heldout or with_train else 0.0, with_majority=True)
    model = load_model(str(model_dir), task.num_labels).to(compute_device())
    use_last_layer(model, TrainSettings.from_dict(config["train"]).last_layer)  # as the run was trained
    return model, data, config


def _min_metric(data: TaskData, full_metric: float, keep_fraction: float, criterion: str) -> dict[str, Any]:
    """The search's threshold under ``criterion``, with the chance level it used (the majority class of
    the labels the model was trained on, on the main dev split; 0 for MCC and correlations).

    Raises:
        NotAboveChance: ``above_chance`` and the full model is not above chance: run no search.
    """
    chance = chance_level(data.task.primary_metric, data.majority[data.main_split])
    return {"criterion": criterion, "chance": chance,
            "min_metric": criterion_threshold(full_metric, keep_fraction, criterion, chance)}


def primary_metric(model: nn.Module, data: TaskData, batches, precision: str) -> float:
    """The task's primary metric of ``model`` (as it is gated now) on ``batches``."""
    return evaluate(model, data.task, batches, precision=precision)[data.task.primary_metric]


def run_precision(config: dict) -> str:
    """The precision the run was fine-tuned in (fp32 for a run recorded before the setting)."""
    return TrainSettings.from_dict(config["train"]).precision


class Evaluated:
    """The main dev split's metrics of each mask a search evaluated, so that the prune directory takes
    the good mask's from the search instead of evaluating it once more (the same pass; for an s-search
    evaluated physically, the physically pruned model's, as the trace says)."""

    def __init__(self) -> None:
        self._seen: dict[Any, tuple[Any, dict[str, float]]] = {}

    @staticmethod
    def _key(mask) -> Any:
        if isinstance(mask, tuple):  # (HeadMask, MlpMask): by content
            return tuple(m.keep.bool().cpu().numpy().tobytes() for m in mask)
        return id(mask)  # a WeightMask: the search's own object (kept alive here, so the id stays its own)

    def remember(self, mask, metrics: dict[str, float]) -> dict[str, float]:
        self._seen[self._key(mask)] = (mask, dict(metrics))
        return metrics

    def known(self, data: TaskData, mask) -> dict[str, dict[str, float]]:
        """``{main split: metrics}`` if ``mask`` was evaluated, else ``{}`` (for `evaluate_model`'s ``known``)."""
        found = self._seen.get(self._key(mask))
        if found is None or (not isinstance(mask, tuple) and found[0] is not mask):
            return {}
        return {data.main_split: found[1]}


def _write_prune_dir(out, masks: Masks, model: nn.Module, data: TaskData, trace: dict, precision: str,
                     overwrite: bool, extra: dict | None = None,
                     tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                     known: dict[str, dict[str, float]] | None = None) -> dict:
    """Write the prune directory; ``extra``: more keys of metrics.json, ``tensors``: more safetensors
    files (name -> tensors); ``known``: splits whose metrics under ``masks`` the search already measured."""
    results = evaluate_model(model, data, masks, precision=precision, known=known)
    record = {
        "task": data.task.name,
        "primary_metric": data.task.primary_metric,
        "splits": {split: {"metrics": m} for split, m in results.items()},
        "body_fraction_kept": fraction_kept(model, masks),
        "heads_kept": masks.heads.n_kept if masks.heads is not None else None,
        "mlps_kept": masks.mlps.n_kept if masks.mlps is not None else None,
        "weights_kept": masks.weights.n_kept if masks.weights is not None else None,
        "params": masks.params,
        "device": str(next(model.parameters()).device),  # where the search and its evaluations ran
        **(extra or {}),
    }
    with runs.staged_output(out, KIND, overwrite=overwrite, recognise=_is_prune_dir, ask_to_replace=True) as scratch:
        save_masks(scratch / runs.MASK_FILE, masks, model_layout(model))
        for name, content in (tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in content.items()}, str(scratch / name))
        runs.write_json(scratch / runs.TRACE_FILE, trace)
        runs.write_json(scratch / runs.METRICS_FILE, record)
    return record


def prune_structured_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    mode: str = "heads+mlps",
    keep_fraction: float = 0.9,
    criterion: str = "paper",
    scoring_split: str = "dev",
    normalize_by_layer: bool = True,
    global_min_max: bool = False,
    compat: str | None = None,
    batch_size: int = 64,
    physical: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """s-pruning of a fine-tuned run: the good head+MLP mask, its trace and metrics.

    ``criterion`` sets the threshold (`bertlottery.pruning.CRITERIA`); with ``above_chance`` a model
    not above chance raises `bertlottery.pruning.NotAboveChance` before any search runs. Each candidate
    is evaluated on the physically pruned model (`bertlottery.physical.pruned_evaluator`: the gated
    model's metric to float tolerance, fewer operations), or under gates with ``physical=False``; the
    importance scores are computed under gates on the full model (they need every gate's gradient).
    Scoring and evaluation run in the precision the run was fine-tuned in."""
    if scoring_split not in SCORING_SPLITS:
        raise UserError(f"Unknown scoring split '{scoring_split}'; use one of {', '.join(SCORING_SPLITS)}.")
    quirks = get_compat(compat)
    run_dir = Path(run_dir)
    model, data, config = _load_finetuned(run_dir, glue_dir, out, overwrite, heldout=scoring_split == "heldout")
    precision = run_precision(config)
    layout = model_layout(model)
    dev = data.eval_batches(data.main_split)
    scoring = data.eval_batches("heldout" if scoring_split == "heldout" else data.main_split, batch_size)

    full_metric = primary_metric(model, data, dev, precision)
    threshold = _min_metric(data, full_metric, keep_fraction, criterion)
    bar = tqdm(desc=f"s-pruning {data.task.name}", disable=not progress, leave=False)

    def score(heads: HeadMask, mlps: MlpMask):
        return structured_importance(model, scoring, heads=heads, mlps=mlps, normalize_by_layer=normalize_by_layer,
                                     global_min_max=global_min_max, compat=quirks, precision=precision)

    evaluated, last = Evaluated(), {}

    def measure(of: nn.Module) -> float:
        """The primary metric of ``of`` on dev; all its metrics are left in ``last``."""
        last.clear()
        last.update(evaluate(of, data.task, dev, precision=precision))
        return last[data.task.primary_metric]

    evaluate_physical = pruned_evaluator(model, measure)

    def evaluate_mask(heads: HeadMask, mlps: MlpMask) -> float:
        if physical:
            value = evaluate_physical(heads, mlps)
        else:
            with gated(model, heads=heads, mlps=mlps):
                value = measure(model)
        evaluated.remember((heads, mlps), last)
        return value

    def show(step) -> None:
        bar.update(1)
        bar.set_postfix(phase=step.phase, heads=step.heads_kept, mlps=step.mlps_kept, metric=f"{step.metric:.4f}")

    started = time.time()
    result = structured_search(score, evaluate_mask, num_layers=layout.num_layers, num_heads=layout.num_heads,
                               full_metric=full_metric, mode=mode, keep_fraction=keep_fraction,
                               min_metric=threshold["min_metric"], on_step=show)
    bar.close()
    params = {
        "method": "structured", "mode": mode, "keep_fraction": keep_fraction, "scoring_split": scoring_split,
        "normalize_by_layer": normalize_by_layer, "global_min_max": global_min_max,
        "compat": compat or "none", "seed": config["train"]["seed"], "task": data.task.name,
        "model": config["model"], "run": str(run_dir), "full_metric": full_metric,
        "final_metric": result.final_metric, "subnetwork": "good", **threshold,
    }
    masks = Masks(heads=result.heads, mlps=result.mlps, params=params, family=layout.family)
    trace = {**result.trace_dict(), "metric_name": data.task.primary_metric, "seconds": round(time.time() - started, 2),
             "evaluated_on": "physical" if physical else "gated", "precision": precision, "params": params}
    return _write_prune_dir(out, masks, model, data, trace, precision, overwrite,
                            known=evaluated.known(data, (result.heads, result.mlps)))


def prune_magnitude_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    keep_fraction: float = 0.9,
    criterion: str = "paper",
    scope: str = "global",
    tensor_set: str = "paper",
    step_fraction: float = 0.1,
    compat: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """m-pruning of a fine-tuned run: the good weight mask, its trace and metrics (``criterion``: as in
    `prune_structured_run`)."""
    quirks = get_compat(compat)
    run_dir = Path(run_dir)
    model, data, config = _load_finetuned(run_dir, glue_dir, out, overwrite)
    precision = run_precision(config)
    layout = model_layout(model)
    dev = data.eval_batches(data.main_split)
    full_metric = primary_metric(model, data, dev, precision)
    threshold = _min_metric(data, full_metric, keep_fraction, criterion)
    bar = tqdm(desc=f"m-pruning {data.task.name}", disable=not progress, leave=False)

    evaluated = Evaluated()

    def evaluate_mask(mask: WeightMask) -> float:
        with weight_masked(model, mask):
            metrics = evaluate(model, data.task, dev, precision=precision)
        return evaluated.remember(mask, metrics)[data.task.primary_metric]

    def show(step) -> None:
        bar.update(1)
        bar.set_postfix(pruned=f"{step.fraction_pruned:.3f}", metric=f"{step.metric:.4f}")

    started = time.time()
    result = magnitude_search(magnitudes(model, tensor_set), evaluate_mask, full_metric=full_metric,
                              keep_fraction=keep_fraction, min_metric=threshold["min_metric"],
                              step_fraction=step_fraction, scope=scope, compat=quirks, on_step=show)
    bar.close()
    params = {
        "method": "magnitude", "scope": scope, "tensor_set": tensor_set, "keep_fraction": keep_fraction,
        "step_fraction": step_fraction, "compat": compat or "none", "seed": config["train"]["seed"],
        "task": data.task.name, "model": config["model"], "run": str(run_dir), "full_metric": full_metric,
        "final_metric": result.final_metric, "subnetwork": "good", **threshold,
    }
    masks = Masks(weights=result.weights, params=params, family=layout.family)
    trace = {**result.trace_dict(), "metric_name": data.task.primary_metric, "seconds": round(time.time() - started, 2),
             "precision": precision, "params": params}
    return _write_prune_dir(out, masks, model, data, trace, precision, overwrite,
                            known=evaluated.known(data, result.weights))


def prune_fisher_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    budget_of: str | os.PathLike | None = None,
    budget_fraction: float | None = None,
    budget: int | None = None,
    cost: str = "macs",
    examples: int = 2048,
    seq_len: int = 128,
    labels: str = "gold",
    rearrange: bool = True,
    tune: bool = True,
    tune_examples: int | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The Fisher search of a fine-tuned run (`bertlottery.fisher.fisher_search`): the good head + neuron
    mask under a cost budget, without retraining; its trace, metrics and scores.

    The budget is one of: ``budget_of`` an s-pruning good mask (file or prune directory) whose cost the
    Fisher mask may not exceed; ``budget_fraction`` of the full model's cost; ``budget`` itself. The
    sample is ``examples`` training examples (of those the run was trained on), drawn with the run's
    seed; the least-squares tuning uses the first ``tune_examples`` of them. metrics.json holds the
    binary mask's metrics (what the lottery's pruned mode evaluates, as for the other methods) and,
    under ``tuned``, the tuned model's (the method's own, retraining-free result).
    """
    from ..fisher import budget_from_masks, fisher_sample, fisher_search
    from ..masking import fisher_gated
    from ..masks import load_masks

    given = [name for name, value in (("budget_of", budget_of), ("budget_fraction", budget_fraction),
                                      ("budget", budget)) if value is not None]
    if len(given) != 1:
        raise UserError("Give the Fisher search one budget: an s-pruning good mask to match (--budget-of), a "
                        f"fraction of the full model's cost (--budget-fraction) or a cost (--budget); got {given or 'none'}.")
    run_dir = Path(run_dir)
    model, data, config = _load_finetuned(run_dir, glue_dir, out, overwrite, with_train=True)
    layout = model_layout(model)
    if budget_of is not None:
        budget = budget_from_masks(model, load_masks(runs.mask_file_of(budget_of)), cost=cost, seq_len=seq_len)
    seed = config["train"]["seed"]
    sample = fisher_sample(data.train, data.pad_id, n_examples=examples, seed=seed, batch_size=batch_size)
    calibration = None
    if tune and tune_examples is not None and tune_examples < examples:
        # the same seeded permutation's first examples: a subset of the Fisher sample
        calibration = fisher_sample(data.train, data.pad_id, n_examples=tune_examples, seed=seed, batch_size=batch_size)
    dev = data.eval_batches(data.main_split)
    precision = run_precision(config)  # evaluations in the run's precision, as the other searches'
    full_metric = primary_metric(model, data, dev, precision)

    started = time.time()
    result = fisher_search(model, sample, budget=budget, budget_fraction=budget_fraction, cost=cost, seq_len=seq_len,
                           labels=labels, rearrange_masks=rearrange, tune=tune, tune_batches=calibration,
                           precision=precision)
    seconds = round(time.time() - started, 2)
    with fisher_gated(model, result.head_scales, result.neuron_scales):
        tuned = {split: evaluate(model, data.task, data.eval_batches(split), precision=precision) for split in data.evals}
    masks = result.masks(model)
    with gated(model, heads=masks.heads), weight_masked(model, masks.weights):
        final = evaluate(model, data.task, dev, precision=precision)
    final_metric = final[data.task.primary_metric]
    params = {
        **masks.params, "method": "fisher", "budget_of": str(budget_of) if budget_of is not None else None,
        "budget_fraction": budget_fraction, "tune_examples": tune_examples, "seed": seed, "task": data.task.name,
        "model": config["model"], "run": str(run_dir), "full_metric": full_metric, "final_metric": final_metric,
        "tuned_metric": tuned[data.main_split][data.task.primary_metric], "subnetwork": "good",
    }
    masks.params = params
    trace = {**result.trace, "params": params, "metric_name": data.task.primary_metric, "seconds_total": seconds}
    scores = {"heads": result.scores.heads, "neurons": result.scores.neurons, "head_scales": result.head_scales,
              "neuron_scales": result.neuron_scales, "neurons_kept": result.neurons.to(torch.uint8)}
    extra = {"tuned": {split: {"metrics": m} for split, m in tuned.items()}, "neurons_kept": int(result.neurons.sum()),
             "cost": result.cost, "budget": result.budget, "full_cost": result.full_cost, "seconds": seconds,
             "layout": {"num_layers": layout.num_layers, "num_heads": layout.num_heads,
                        "intermediate_size": layout.intermediate_size}}
    return _write_prune_dir(out, masks, model, data, trace, precision, overwrite, extra, {runs.FISHER_FILE: scores},
                            known={data.main_split: final})
