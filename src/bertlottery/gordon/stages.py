"""The Compressing-BERT study as pipeline stages (``bertlottery run`` with a ``gordon:`` section).

Per seed::

    gordon-head        (only with pretrain.head_steps) train a new MLM head alone, encoder frozen
    gordon-pretrain    per (method, sparsity): continued MLM pre-training, pruning on the cubic
                       schedule; one unpruned run (method gmp, sparsity 0) serves every method
    gordon-similarity  per pruned checkpoint: hidden-state cosine similarity to the unpruned one
    per task:
      gordon-finetune  per (variant, method, sparsity, learning rate): one downstream run
      gordon-select    per (variant, method, sparsity): the learning rate with the best dev metric;
                       writes the result rows (their mapping: `bertlottery.gordon.names`)

Stage folders (``RUN/stages/<kind>/<task>/<name>-<hash>/``; pre-training stages use the task
``pretrain``):

- gordon-head, gordon-pretrain: ``model/`` (the encoder with its pooler, tokenizer and
  ``mlm_head.safetensors``), ``metrics.json`` (``pretrain_dev_loss``, its value at the start, the
  sparsity reached overall and per tensor), ``history.json`` (training loss, dev loss, the schedule's
  mask updates), ``environment.json``, and for pre-training ``mask.safetensors`` (pruned runs), ``analysis.json``
  (per-head prune rates, per-tensor weight mean/std at the start and end) and ``heatmaps.npz``
  (|w| of layer 1's key matrix and of the word embeddings by subword length).
- gordon-similarity: ``similarity.json`` (per layer, entry 0 the embeddings, and the mean over layers).
- gordon-finetune: a `bertlottery.gordon.downstream` run directory.
- gordon-select: ``selection.json`` (every learning rate's dev metric, training loss, sort-order
  movement and mask difference; the one kept).

Every setting that changes a stage's result is in its ``settings`` (and so in its id); the results
of the stages it reads are in its ``inputs``.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import runs
from ..config import ExperimentConfig
from ..pipeline import Stage
from ..results import ResultRow
from ..settings import stage_fields
from .config import GordonCorpusConfig, GordonPretrainConfig
from .names import SPLIT_MASK, SPLIT_PRETRAIN, SPLIT_TRAIN, row_method, subnetwork_name
from .pretraining import ANALYSIS_FILE, DEV_MASK_SEED, HEATMAPS_FILE, blocks_of, device, head_run, pretrain_run

__all__ = ["KINDS", "expand", "execute", "head_run", "pretrain_run", "PRETRAIN_TASK", "DEV_MASK_SEED", "SELECTION_FILE", "SIMILARITY_FILE",
           "ANALYSIS_FILE", "HEATMAPS_FILE"]

KINDS = ("gordon-head", "gordon-pretrain", "gordon-similarity", "gordon-finetune", "gordon-select")
PRETRAIN_TASK = "pretrain"
SELECTION_FILE = runs.SELECTION_FILE
SIMILARITY_FILE = runs.SIMILARITY_FILE
SIMILARITY_BATCH = 16


# ---- the graph ----------------------------------------------------------------------------------------

def _sort_order_settings(g) -> dict[str, Any]:
    return {"bins": g.analysis.magnitude_bins, "tensors": g.pretrain.tensors, "embeddings": g.pretrain.prune_embeddings}


def expand(config: ExperimentConfig) -> list[Stage]:
    """Every stage of the study, each after its inputs."""
    from ..tasks import get_task

    g = config.gordon
    corpus = asdict(g.corpus)
    pretrain = {k: v for k, v in stage_fields(g.pretrain).items() if k not in ("methods", "head_steps", "head_learning_rate")}
    sparsities = list(g.sparsities)
    stages: list[Stage] = []
    for seed in config.seeds:
        start: dict[str, str] = {}
        if g.pretrain.head_steps:
            head = Stage("gordon-head", PRETRAIN_TASK, f"seed{seed}", {"seed": seed},
                         {"model": config.model, "corpus": corpus, "seed": seed,
                          "head": {"steps": g.pretrain.head_steps, "learning_rate": g.pretrain.head_learning_rate,
                                   "batch_size": g.pretrain.batch_size, "max_length": g.pretrain.max_length,
                                   "mlm_probability": g.pretrain.mlm_probability,
                                   "weight_decay": g.pretrain.weight_decay}})
            stages.append(head)
            start = {"start": head.id}
        checkpoints: dict[tuple[str, float], Stage] = {}
        for method in g.pretrain.methods:
            for sparsity in sparsities:
                if sparsity == 0 and method != "gmp":
                    continue  # unpruned is unpruned: one run serves every method
                stage = Stage("gordon-pretrain", PRETRAIN_TASK, f"seed{seed}-{method}-{sparsity:g}",
                              {"seed": seed, "method": method, "sparsity": sparsity},
                              {"model": config.model, "corpus": corpus, "pretrain": pretrain, "method": method,
                               "sparsity": sparsity, "seed": seed}, dict(start))
                checkpoints[(method, sparsity)] = stage
                stages.append(stage)
        reference = checkpoints[("gmp", 0.0)]
        for (method, sparsity), stage in checkpoints.items():
            if sparsity > 0:
                stages.append(Stage("gordon-similarity", PRETRAIN_TASK, f"seed{seed}-{method}-{sparsity:g}",
                                    {"seed": seed, "method": method, "sparsity": sparsity},
                                    {"sequences": g.analysis.similarity_sequences, "corpus": corpus,
                                     "max_length": g.pretrain.max_length},
                                    {"reference": reference.id, "pruned": stage.id}))
        for task_name in config.tasks:
            stages += _downstream(config, get_task(task_name).name, seed, checkpoints, sparsities)
    return stages


def _downstream(config, task: str, seed: int, checkpoints: dict, sparsities: list[float]) -> list[Stage]:
    g = config.gordon
    d = g.downstream
    base = config.train.for_task(task, seed)
    variants = d.variants
    glue = config.glue_dir
    stages: list[Stage] = []

    def sweep(variant: str, method: str, sparsity: float, epochs: int, mode: str, inputs, extra: dict[str, Any],
              total_epochs: int | None = None) -> list[Stage]:
        """One fine-tuning stage per learning rate; ``inputs``: a dict, or a function of the rate."""
        name = f"seed{seed}-{row_method(variant, method)}-{sparsity:g}"
        keys = {"seed": seed, "method": row_method(variant, method), "subnetwork": subnetwork_name(sparsity),
                "mode": mode, "epochs": total_epochs or epochs}
        return [Stage("gordon-finetune", task, f"{name}-lr{lr:g}", {**keys, "learning_rate": lr},
                      {"variant": variant, "sparsity": sparsity, "glue_dir": glue,
                       "train": {**base, "learning_rate": lr, "epochs": epochs}, **extra},
                      inputs(lr) if callable(inputs) else inputs)
                for lr in d.learning_rates]

    def select(trials: list[Stage], keys_from: Stage, inputs: dict[str, str]) -> Stage:
        keys = {k: v for k, v in keys_from.keys.items() if k != "learning_rate"}
        name = keys_from.name.rsplit("-lr", 1)[0]
        return Stage("gordon-select", task, name, keys, {"order": [r.keys["learning_rate"] for r in trials]},
                     {**{f"lr{i}": r.id for i, r in enumerate(trials)}, **inputs})

    unpruned = checkpoints[("gmp", 0.0)]
    plain: list[Stage] = []
    if "pruned" in variants or "after-downstream" in variants:
        # the unpruned checkpoint fine-tuned plainly: the pruned variant at 0%, the start of
        # after-downstream pruning, and where sort-order movement is measured (G Table 2)
        plain = sweep("pruned", "gmp", 0.0, base["epochs"], "pruned", {"pretrain": unpruned.id},
                      {"sort_order": _sort_order_settings(g), "save_model": True})
        stages += plain
        if "pruned" in variants:
            stages.append(select(plain, plain[0], {"pretrain": unpruned.id}))
    if "pruned" in variants:
        for (method, sparsity), checkpoint in checkpoints.items():
            if sparsity == 0:
                continue
            trials = sweep("pruned", method, sparsity, base["epochs"], "pruned", {"pretrain": checkpoint.id}, {})
            stages += trials + [select(trials, trials[0], {"pretrain": checkpoint.id})]
    if "information-deletion" in variants:
        for sparsity in sparsities:
            checkpoint = checkpoints[("gmp", sparsity)]
            epochs = d.deletion_epochs_high if sparsity >= d.deletion_high_from else d.deletion_epochs
            trials = sweep("information-deletion", "gmp", sparsity, epochs, "finetuned", {"pretrain": checkpoint.id}, {})
            stages += trials + [select(trials, trials[0], {"pretrain": checkpoint.id})]
    if "after-downstream" in variants:
        prune = {"scope": g.pretrain.scope, "tensors": g.pretrain.tensors, "embeddings": g.pretrain.prune_embeddings}
        start_of = {r.keys["learning_rate"]: r.id for r in plain}
        for sparsity in sparsities:
            more = d.after_epochs_high if sparsity >= d.after_high_from else d.after_epochs
            reference = {"pretrain_mask": checkpoints[("gmp", sparsity)].id} if sparsity > 0 else {}
            trials = sweep("after-downstream", "gmp", sparsity, more, "pruned",
                         lambda lr: {"finetuned": start_of[lr], **reference}, {"prune": prune},
                         total_epochs=base["epochs"] + more)
            stages += trials + [select(trials, trials[0], {})]
    return stages


# ---- running a stage ----------------------------------------------------------------------------------

def execute(stage: Stage, out: Path, inputs: dict[str, Path], config: ExperimentConfig,
            progress: bool) -> list[ResultRow]:
    """Run one Gordon stage into ``out``; return its result rows (only gordon-select has any)."""
    runners = {"gordon-head": _head, "gordon-pretrain": _pretrain, "gordon-similarity": _similarity,
               "gordon-finetune": _finetune, "gordon-select": _select}
    if stage.kind not in runners:
        raise ValueError(f"unknown stage kind {stage.kind}")
    return runners[stage.kind](stage, out, inputs, progress)


def _head(stage: Stage, out: Path, inputs: dict[str, Path], progress: bool) -> list[ResultRow]:
    s, head = stage.settings, stage.settings["head"]
    pretrain = GordonPretrainConfig(head_steps=head["steps"], head_learning_rate=head["learning_rate"],
                                    batch_size=head["batch_size"], max_length=head["max_length"],
                                    mlm_probability=head["mlm_probability"], weight_decay=head["weight_decay"])
    head_run(s["model"], out, corpus=GordonCorpusConfig(**s["corpus"]), pretrain=pretrain, seed=s["seed"],
             progress=progress)
    return []


def _pretrain(stage: Stage, out: Path, inputs: dict[str, Path], progress: bool) -> list[ResultRow]:
    s = stage.settings
    start = inputs["start"] / runs.MODEL_DIR if "start" in inputs else s["model"]
    pretrain_run(start, out, corpus=GordonCorpusConfig(**s["corpus"]), pretrain=GordonPretrainConfig(**s["pretrain"]),
                 method=s["method"], sparsity=s["sparsity"], seed=s["seed"], progress=progress)
    return []


def _similarity(stage: Stage, out: Path, inputs: dict[str, Path], progress: bool) -> list[ResultRow]:
    from transformers import AutoModel

    from ..models import load_tokenizer
    from .analysis import hidden_state_similarity
    from .mlm import _attention_of, _quiet_transformers

    s = stage.settings
    on = device()
    with _quiet_transformers():
        reference, pruned = (AutoModel.from_pretrained(folder, attn_implementation=_attention_of(folder)).to(on)
                             for folder in (inputs["reference"] / runs.MODEL_DIR, inputs["pruned"] / runs.MODEL_DIR))
    tokenizer = load_tokenizer(str(inputs["reference"] / runs.MODEL_DIR))
    blocks = blocks_of(GordonCorpusConfig(**s["corpus"]), tokenizer, s["max_length"], "dev")[: s["sequences"]]
    layers = hidden_state_similarity(reference, pruned, (blocks[i:i + SIMILARITY_BATCH]
                                                         for i in range(0, len(blocks), SIMILARITY_BATCH)))
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / SIMILARITY_FILE, {"method": stage.keys["method"], "sparsity": stage.keys["sparsity"],
                                            "layers": layers, "mean": sum(layers[1:]) / max(len(layers) - 1, 1),
                                            "sequences": len(blocks)})
    return []


def _finetune(stage: Stage, out: Path, inputs: dict[str, Path], progress: bool) -> list[ResultRow]:
    from ..masks import load_masks
    from ..training import TrainSettings
    from .downstream import AfterDownstream, run_downstream

    s = stage.settings
    settings, cap = TrainSettings.from_dict(s["train"]), s["train"]["max_train_examples"]
    glue = Path(s["glue_dir"]) if s["glue_dir"] else None
    mask = reference = after = None
    if s["variant"] == "after-downstream":
        checkpoint = inputs["finetuned"] / runs.MODEL_DIR
        after = AfterDownstream(s["sparsity"], **s["prune"])
        if "pretrain_mask" in inputs:
            reference = load_masks(inputs["pretrain_mask"] / runs.MASK_FILE).weights
    else:
        checkpoint = inputs["pretrain"] / runs.MODEL_DIR
        mask_file = inputs["pretrain"] / runs.MASK_FILE
        mask = load_masks(mask_file).weights if mask_file.is_file() else None
    run_downstream(checkpoint, stage.task, out, glue_dir=glue, settings=settings, variant=s["variant"], mask=mask,
                   after=after, reference_mask=reference, max_train_examples=cap, sort_order=s.get("sort_order"),
                   save_model=s.get("save_model", False), progress=progress)
    return []


def _select(stage: Stage, out: Path, inputs: dict[str, Path], progress: bool) -> list[ResultRow]:
    from ..tasks import get_task

    task = get_task(stage.task)
    main, metric = task.eval_splits[0], task.primary_metric
    records = [runs.read_json(inputs[f"lr{i}"] / runs.METRICS_FILE) for i in range(len(stage.settings["order"]))]

    def score(record: dict[str, Any]) -> float:
        value = record["splits"][main]["metrics"][metric]
        return -math.inf if value is None or math.isnan(value) else value

    best = max(records, key=score)  # the first of equals: the lowest learning rate in the sweep's order
    keys = {k: stage.keys[k] for k in ("seed", "method", "subnetwork", "mode", "epochs")}
    row = dict(task=task.name, stage_id=stage.id, fraction_kept=float(best["fraction_kept"]), **keys)
    rows = [ResultRow(split=split, metric=name, value=float(value), **row)
            for split, entry in best["splits"].items() for name, value in entry["metrics"].items()
            if name != "n_examples"]
    rows.append(ResultRow(split=main, metric="learning_rate", value=float(best["learning_rate"]), **row))
    rows.append(ResultRow(split=SPLIT_TRAIN, metric="train_loss", value=float(best["train_loss"]), **row))
    pretrain_loss = None
    if "pretrain" in inputs:
        pretrain_loss = runs.read_json(inputs["pretrain"] / runs.METRICS_FILE)["pretrain_dev_loss"]
        rows.append(ResultRow(split=SPLIT_PRETRAIN, metric="pretrain_dev_loss", value=float(pretrain_loss), **row))
    if "mask_difference" in best:
        rows.append(ResultRow(split=SPLIT_MASK, metric="mask_difference", value=float(best["mask_difference"]), **row))
    selection = {
        "task": task.name, "method": keys["method"], "mode": keys["mode"], "seed": keys["seed"],
        "sparsity": float(keys["subnetwork"].removeprefix("sparsity-")), "metric": metric,
        "learning_rate": best["learning_rate"], "pretrain_dev_loss": pretrain_loss,
        "runs": [{"learning_rate": r["learning_rate"], "dev": r["splits"][main]["metrics"][metric],
                  "train_loss": r["train_loss"], "epochs": r["epochs"], "sort_order": r.get("sort_order"),
                  "mask_difference": r.get("mask_difference")} for r in records],
    }
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / SELECTION_FILE, selection)
    return rows
