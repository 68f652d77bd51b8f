"""The Compressing-BERT study as pipeline stages (``bertlottery run`` with a ``gordon:`` section).

Per seed::

    gordon-head        (only with pretrain.head_steps) train a new MLM head alone, encoder frozen
    gordon-pretrain    per (method, sparsity): continued MLM pre-training, pruning on the cubic
                       schedule; one unpruned run (method gmp, sparsity 0) serves every method
    gordon-similarity  per pruned checkpoint: hidden-state cosine similarity to the unpruned one
    gordon-oneshot     the summed |w| one-shot magnitude pruning removes at each sparsity from the
                       checkpoint pre-training starts from (G Fig. 5; no training, seconds)
    per task:
      gordon-finetune  per (variant, method, sparsity, learning rate): one downstream run; with
                       ``before_pruning_epochs``, per number of epochs a fine-tuning of the unpruned
                       checkpoint and its pruning (G Fig. 3 right)
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
- gordon-oneshot: ``oneshot.json`` (`bertlottery.gordon.analysis.oneshot_curve`'s record).
- gordon-finetune: a `bertlottery.gordon.downstream` run directory.
- gordon-select: ``selection.json`` (every learning rate's dev metric, training loss, epochs, sort-order
  movement and mask difference; the one kept; the majority class's dev metric, its class taken from
  the examples trained on).

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
from .names import BEFORE_PRUNING, MATCHED_DELETION, SPLIT_MASK, SPLIT_PRETRAIN, SPLIT_TRAIN, row_method, subnetwork_name
from .pretraining import ANALYSIS_FILE, DEV_MASK_SEED, HEATMAPS_FILE, blocks_of, device, head_run, pretrain_run

__all__ = ["KINDS", "expand", "execute", "head_run", "pretrain_run", "PRETRAIN_TASK", "DEV_MASK_SEED", "SELECTION_FILE", "SIMILARITY_FILE",
           "ANALYSIS_FILE", "HEATMAPS_FILE", "ONESHOT_FILE"]

KINDS = ("gordon-head", "gordon-pretrain", "gordon-similarity", "gordon-oneshot", "gordon-finetune", "gordon-select")
PRETRAIN_TASK = "pretrain"
SELECTION_FILE = runs.SELECTION_FILE
SIMILARITY_FILE = runs.SIMILARITY_FILE
ONESHOT_FILE = runs.ONESHOT_FILE
ONESHOT_POINTS = 100  # G Fig. 5's curve: sparsities 0, 1%, ..., 99%
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
        stages.append(Stage("gordon-oneshot", PRETRAIN_TASK, f"seed{seed}", {"seed": seed},
                            {"model": config.model, "points": ONESHOT_POINTS, "scope": g.pretrain.scope,
                             "tensors": g.pretrain.tensors, "embeddings": g.pretrain.prune_embeddings}, dict(start)))
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
              total_epochs: int | None = None, *, row: str | None = None, label: str = "",
              rates: list[float] | None = None) -> list[Stage]:
        """One fine-tuning stage per learning rate; ``inputs``: a dict, or a function of the rate.
        ``row``: the results' method when it is not the variant's own (a control, a Figure 3 run)."""
        row = row or row_method(variant, method)
        name = f"seed{seed}-{row}-{sparsity:g}{label}"
        keys = {"seed": seed, "method": row, "subnetwork": subnetwork_name(sparsity), "mode": mode,
                "epochs": total_epochs or epochs}
        return [Stage("gordon-finetune", task, f"{name}-lr{lr:g}", {**keys, "learning_rate": lr},
                      {"variant": variant, "sparsity": sparsity, "glue_dir": glue,
                       "train": {**base, "learning_rate": lr, "epochs": epochs}, **extra},
                      inputs(lr) if callable(inputs) else inputs)
                for lr in (rates or d.learning_rates)]

    def select(trials: list[Stage], keys_from: Stage, inputs: dict[str, str], *, relabel: dict[str, Any] | None = None,
               **extra: Any) -> Stage:
        """The best of ``trials``; ``relabel``: keys of its rows that differ from the trials' (a shared run)."""
        keys = {k: v for k, v in keys_from.keys.items() if k != "learning_rate"} | (relabel or {})
        name = keys_from.name.rsplit("-lr", 1)[0].replace(f"-{keys_from.keys['method']}-", f"-{keys['method']}-", 1)
        return Stage("gordon-select", task, name, keys, {"order": [r.keys["learning_rate"] for r in trials], **extra},
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
    if MATCHED_DELETION in variants:  # the same deletion at the pruned models' budget: a control for length
        for sparsity in sparsities:
            checkpoint = checkpoints[("gmp", sparsity)]
            if sparsity == 0 and plain:  # nothing is deleted at 0%: the plain fine-tuning is this run, not repeated
                stages.append(select(plain, plain[0], {"pretrain": checkpoint.id},
                                     relabel={"method": MATCHED_DELETION, "mode": "finetuned"}))
                continue
            trials = sweep("information-deletion", "gmp", sparsity, base["epochs"], "finetuned",
                           {"pretrain": checkpoint.id}, {}, row=MATCHED_DELETION)
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
    stages += _before_pruning(config, seed, checkpoints, plain, sweep, select)
    return stages


def _before_pruning(config, seed: int, checkpoints: dict, plain: list[Stage], sweep, select) -> list[Stage]:
    """G Fig. 3 (right): the unpruned checkpoint fine-tuned for each of ``before_pruning_epochs``, then
    pruned to ``before_pruning_sparsity`` and trained ``before_pruning_more_epochs`` more, at the
    sweep's largest learning rate. A run the main graph already has (the plain fine-tuning at
    ``train.epochs``) is shared, not repeated."""
    g = config.gordon
    d = g.downstream
    if not d.before_pruning_epochs:
        return []
    rate, sparsity, more = max(d.learning_rates), d.before_pruning_sparsity, d.before_pruning_more_epochs
    prune = {"scope": g.pretrain.scope, "tensors": g.pretrain.tensors, "embeddings": g.pretrain.prune_embeddings}
    shared = {r.keys["epochs"]: r for r in plain if r.keys["learning_rate"] == rate}
    stages: list[Stage] = []
    for epochs in d.before_pruning_epochs:
        start = shared.get(epochs)
        if start is None:
            (start,) = sweep("pruned", "gmp", 0.0, epochs, "finetuned", {"pretrain": checkpoints[("gmp", 0.0)].id},
                             {"save_model": True}, row=BEFORE_PRUNING, label=f"-{epochs}ep", rates=[rate])
            stages.append(start)
        trials = sweep("after-downstream", "gmp", sparsity, more, "pruned",
                       {"finetuned": start.id, "pretrain_mask": checkpoints[("gmp", sparsity)].id}, {"prune": prune},
                       total_epochs=epochs + more, row=BEFORE_PRUNING, label=f"-{epochs}ep", rates=[rate])
        stages += trials + [select(trials, trials[0], {}, epochs_before_pruning=epochs)]
    return stages


# ---- running a stage ----------------------------------------------------------------------------------

def execute(stage: Stage, out: Path, inputs: dict[str, Path], config: ExperimentConfig,
            progress: bool) -> list[ResultRow]:
    """Run one Gordon stage into ``out``; return its result rows (only gordon-select has any)."""
    runners = {"gordon-head": _head, "gordon-pretrain": _pretrain, "gordon-similarity": _similarity,
               "gordon-oneshot": _oneshot, "gordon-finetune": _finetune, "gordon-select": _select}
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


def _oneshot(stage: Stage, out: Path, inputs: dict[str, Path], progress: bool) -> list[ResultRow]:
    from ..models import load_model
    from .analysis import oneshot_curve
    from .mlm import _quiet_transformers
    from .pruning import pruned_parameters

    s = stage.settings
    start = inputs["start"] / runs.MODEL_DIR if "start" in inputs else s["model"]
    with _quiet_transformers():
        model = load_model(str(start), 2, seed=0)  # the classifier is not pruned: any head will do
    weights = pruned_parameters(model, s["tensors"], s["embeddings"])
    sparsities = [i / s["points"] for i in range(s["points"])]
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / ONESHOT_FILE, oneshot_curve(weights, sparsities, scope=s["scope"]))
    return []


def _finetune(stage: Stage, out: Path, inputs: dict[str, Path], progress: bool) -> list[ResultRow]:
    from ..masks import load_masks
    from ..steps.taskdata import CAP_SEED
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
                   after=after, reference_mask=reference, max_train_examples=cap,
                   cap_seed=s["train"].get("cap_seed", CAP_SEED), sort_order=s.get("sort_order"),
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
        "epochs_before_pruning": stage.settings.get("epochs_before_pruning"),
        # older runs did not record the majority class
        "majority": best.get("majority", {}).get(main, {}).get(metric),
        "runs": [{"learning_rate": r["learning_rate"], "dev": r["splits"][main]["metrics"][metric],
                  "train_loss": r["train_loss"], "epochs": r["epochs"], "sort_order": r.get("sort_order"),
                  "mask_difference": r.get("mask_difference")} for r in records],
    }
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / SELECTION_FILE, selection)
    return rows
