"""The lottery study (Prasanna et al. 2020) as stages: the graph of a config, and running one stage.

Per task and seed: ``finetune``; per method ``prune`` (the good mask) and ``subnetworks`` (good, random
and bad masks of its size); per subnetwork ``evaluate`` (pruned) and ``retrain`` (re-fine-tuned, and
longer with ``longer_retraining``); ``baseline`` (random-init). Per task: ``super`` (super-survivors
over the seeds' structured masks, evaluated and re-fine-tuned like the others) and the majority
baseline. Each stage calls a step of `bertlottery.steps`, which a user can also run alone.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .. import runs
from ..config import ExperimentConfig, LearntCheckConfig
from ..pipeline import Skipped, Stage
from ..results import ResultRow, rows_from_metrics
from ..tasks import get_task

__all__ = ["KINDS", "expand", "execute"]

KINDS = ("finetune", "prune", "subnetworks", "super", "evaluate", "retrain", "baseline")
_DEFAULT_CHECK = {"alpha": LearntCheckConfig.alpha, "margin": LearntCheckConfig.margin}


def expand(config: ExperimentConfig, earlier: list[Stage] = ()) -> list[Stage]:
    """Every stage of the lottery study, in an order where each stage comes after its inputs."""
    stages: list[Stage] = []
    pruning = asdict(config.pruning)
    check = pruning.pop("learnt_check")
    # Settings at their defaults stay out of the hashed settings, so that runs made before the
    # learnt-check and the criterion existed keep their ids: the paper's criterion, and the check
    # on at alpha 0.05, are what a stage without the key does.
    check_alpha = {k: check[k] for k in _DEFAULT_CHECK if check[k] != _DEFAULT_CHECK[k]}
    prune_extra = {**({} if pruning["criterion"] == "paper" else {"criterion": pruning["criterion"]}),
                   **({} if check["enabled"] else {"learnt_check": False})}
    for task_name in config.tasks:
        task = get_task(task_name).name
        prunes: dict[str, list[Stage]] = {m: [] for m in config.methods}
        per_seed: dict[int, dict[str, Stage]] = {}
        for seed in config.seeds:
            train = config.train.for_task(task, seed)
            finetune = Stage("finetune", task, f"seed{seed}", {"seed": seed, "method": "none", "subnetwork": "full",
                                                              "mode": "finetuned", "epochs": train["epochs"]},
                             {"model": config.model, "train": train,
                              **({"learnt_check": check_alpha} if check_alpha else {})})
            stages.append(finetune)
            per_seed[seed] = {"finetune": finetune}
            for method in config.methods:
                method_settings = {"keep_fraction": pruning["keep_fraction"], "compat": pruning["compat"],
                                   **prune_extra, **pruning[method]}
                prune = Stage("prune", task, f"seed{seed}-{method}", {"seed": seed, "method": method},
                              method_settings, {"finetune": finetune.id})
                subs = Stage("subnetworks", task, f"seed{seed}-{method}", {"seed": seed, "method": method},
                             {"compat": pruning["compat"]}, {"prune": prune.id})
                stages += [prune, subs]
                prunes[method].append(prune)
                per_seed[seed][method] = subs
                stages += _evaluations(config, task, seed, method, finetune, subs, train)
            if "random-init" in config.baselines and "structured" in config.methods:
                stages.append(Stage("baseline", task, f"seed{seed}-random-init",
                                    {"seed": seed, "method": "random-init", "subnetwork": "random", "mode": "baseline",
                                     "epochs": train["epochs"]},
                                    {"model": config.model, "train": config.train.for_task(task, seed, subnetworks=True),
                                     "size_of": "bad"},
                                    {"finetune": finetune.id, "subnetworks": per_seed[seed]["structured"].id}))
        if config.super_survivors and "structured" in config.methods and len(config.seeds) > 1:
            sup = Stage("super", task, "structured", {"method": "structured"}, {"seed": 0},
                        {f"prune{i}": p.id for i, p in enumerate(prunes["structured"])})
            stages.append(sup)
            for seed in config.seeds:
                train = config.train.for_task(task, seed)
                stages += _evaluations(config, task, seed, "structured", per_seed[seed]["finetune"], sup, train,
                                       prefix="super-")
        if "majority" in config.baselines:
            stages.append(Stage("baseline", task, "majority", {"seed": None, "method": "majority", "subnetwork": "none",
                                                               "mode": "baseline", "epochs": None},
                                _trained_on(config.train.for_task(task, config.seeds[0]))))
    return stages


def _trained_on(train: dict) -> dict:
    """The majority stage's settings: which training examples the models saw (the cap does not depend on
    the run seed, so one majority class serves every seed). Empty for the whole split, so that uncapped
    configs keep their ids."""
    if train["max_train_examples"] is None and not train["holdout_fraction"]:
        return {}
    return {k: train[k] for k in ("max_train_examples", "cap_seed", "holdout_fraction") if k in train}


def _evaluations(config, task, seed, method, finetune, subs, train, prefix: str = "") -> list[Stage]:
    stages = []
    # how s-pruned subnetworks are re-fine-tuned (absent for gated, so that earlier runs keep their ids);
    # an m-pruned one always trains the full model under its weight mask
    how = {} if method != "structured" else \
        {k: v for k, v in config.train.for_task(task, seed, subnetworks=True).items() if k == "subnetwork_training"}
    for subnetwork in config.subnetworks:
        keys = {"seed": seed, "method": method, "subnetwork": prefix + subnetwork}
        inputs = {"finetune": finetune.id, "subnetworks": subs.id}
        if "pruned" in config.modes:
            stages.append(Stage("evaluate", task, f"seed{seed}-{method}-{prefix}{subnetwork}",
                                {**keys, "mode": "pruned", "epochs": train["epochs"]}, {"subnetwork": subnetwork},
                                inputs))
        if "retrained" in config.modes:
            stages.append(Stage("retrain", task, f"seed{seed}-{method}-{prefix}{subnetwork}",
                                {**keys, "mode": "retrained", "epochs": train["epochs"]},
                                {"subnetwork": subnetwork, "epochs": None, **how}, inputs))
        longer = config.longer_retraining
        if longer and not prefix and method in longer.methods and subnetwork in longer.subnetworks:
            stages.append(Stage("retrain", task, f"seed{seed}-{method}-{subnetwork}-long",
                                {**keys, "mode": "retrained-long", "epochs": longer.epochs},
                                {"subnetwork": subnetwork, "epochs": longer.epochs, **how}, inputs))
    return stages


def execute(stage: Stage, out: Path, inputs: dict[str, Path], config: ExperimentConfig,
            progress: bool) -> list[ResultRow]:
    """Run one lottery stage into ``out``; return its result rows."""
    from ..steps import baselines, evaluate, finetune, prune, retrain, subnetworks
    from ..pruning import NotAboveChance
    from ..steps.taskdata import CAP_SEED
    from ..training import TrainSettings

    glue = Path(config.glue_dir) if config.glue_dir else None
    row_keys = {k: v for k, v in stage.keys.items() if k in ("seed", "method", "subnetwork", "mode", "epochs")}
    row_keys.update(task=stage.task, stage_id=stage.id)
    if stage.kind == "finetune":
        train = stage.settings["train"]
        record = finetune.finetune_run(stage.settings["model"], stage.task, out, glue_dir=glue,
                                       settings=TrainSettings.from_dict(train),
                                       max_train_examples=train["max_train_examples"],
                                       cap_seed=train.get("cap_seed", CAP_SEED),
                                       holdout_fraction=train["holdout_fraction"], overwrite=True, progress=progress,
                                       learnt_check={**_DEFAULT_CHECK, **stage.settings.get("learnt_check", {})})
        check = record["learnt_check"]
        return rows_from_metrics(record, **row_keys, note="" if check["learnt"] else _not_learnt(check["reason"]))
    if stage.kind == "prune":
        s = stage.settings
        if s.get("learnt_check", True):
            _refuse_unlearnt(inputs["finetune"], glue)
        compat = None if s["compat"] == "none" else s["compat"]
        criterion = s.get("criterion", "paper")
        try:
            if stage.keys["method"] == "structured":
                prune.prune_structured_run(inputs["finetune"], out, glue_dir=glue, mode=s["mode"],
                                           keep_fraction=s["keep_fraction"], criterion=criterion,
                                           scoring_split=s["scoring_split"], normalize_by_layer=s["normalize_by_layer"],
                                           global_min_max=s["global_min_max"], compat=compat,
                                           batch_size=s["batch_size"], overwrite=True, progress=progress)
            else:
                prune.prune_magnitude_run(inputs["finetune"], out, glue_dir=glue, keep_fraction=s["keep_fraction"],
                                          criterion=criterion, scope=s["scope"], tensor_set=s["tensors"],
                                          step_fraction=s["step_fraction"], compat=compat, overwrite=True,
                                          progress=progress)
        except NotAboveChance as error:
            raise Skipped(_not_learnt(str(error))) from None
        return []
    if stage.kind == "subnetworks":
        compat = None if stage.settings["compat"] == "none" else stage.settings["compat"]
        subnetworks.make_subnetworks(inputs["prune"], out, seed=stage.keys["seed"], compat=compat, overwrite=True)
        return []
    if stage.kind == "super":
        prunes = [inputs[k] for k in sorted(inputs, key=lambda k: int(k.removeprefix("prune")))]
        subnetworks.make_super_survivors(prunes, out, seed=stage.settings["seed"], overwrite=True)
        return []
    if stage.kind == "evaluate":
        mask = inputs["subnetworks"] / runs.subnetwork_file(stage.settings["subnetwork"])
        record = evaluate.evaluate_run(inputs["finetune"], task_name=stage.task, glue_dir=glue, masks_path=mask)
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json(out / runs.METRICS_FILE, record)
        return rows_from_metrics(record, **row_keys)
    if stage.kind == "retrain":
        mask = inputs["subnetworks"] / runs.subnetwork_file(stage.settings["subnetwork"])
        record = retrain.retrain_run(inputs["finetune"], mask, out, glue_dir=glue, epochs=stage.settings["epochs"],
                                     subnetwork_training=stage.settings.get("subnetwork_training", "gated"),
                                     overwrite=True, progress=progress)
        rows = rows_from_metrics(record, **row_keys)
        if stage.keys["mode"] == "retrained-long":  # the metric after every epoch (appendix D)
            history = runs.read_json(out / runs.HISTORY_FILE)
            rows = [row for epoch in history["epochs"]
                    for row in rows_from_metrics({"task": stage.task, "splits": {
                        split: {"metrics": m} for split, m in epoch["dev"].items()},
                        "body_fraction_kept": record["body_fraction_kept"]}, **{**row_keys, "epochs": epoch["epoch"]})]
        return rows
    if stage.kind == "baseline" and stage.keys["method"] == "majority":
        s = stage.settings
        record = baselines.majority_baseline_metrics(stage.task, glue, cap_seed=s.get("cap_seed", CAP_SEED),
                                                     max_train_examples=s.get("max_train_examples"),
                                                     holdout_fraction=s.get("holdout_fraction", 0.0))
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json(out / runs.METRICS_FILE, record)
        return rows_from_metrics(record, **row_keys)
    if stage.kind == "baseline":
        train = stage.settings["train"]
        record = baselines.random_init_baseline_run(stage.settings["model"], stage.task,
                                                    inputs["subnetworks"] / runs.subnetwork_file("bad"), out,
                                                    glue_dir=glue, settings=TrainSettings.from_dict(train),
                                                    max_train_examples=train["max_train_examples"],
                                                    cap_seed=train.get("cap_seed", CAP_SEED), overwrite=True,
                                                    progress=progress)
        return rows_from_metrics(record, **row_keys)
    raise ValueError(f"unknown stage kind {stage.kind}")


def _not_learnt(reason: str) -> str:
    return reason if reason.startswith("not learnt") else f"not learnt: {reason}"


def _refuse_unlearnt(finetune_dir: Path, glue: Path | None) -> None:
    """Raise `Skipped` if the fine-tuned model did not beat the majority class (its recorded
    learnt-check; a run fine-tuned before the check existed is checked now at the default alpha)."""
    from ..steps.baselines import majority_baseline_metrics
    from ..steps.taskdata import learnt_check_of

    record = runs.read_json(finetune_dir / runs.METRICS_FILE)
    check = record.get("learnt_check")
    if check is None:
        if "majority" not in record:
            run = runs.read_json(finetune_dir / runs.CONFIG_FILE)
            majority = majority_baseline_metrics(record["task"], glue, max_train_examples=run.get("max_train_examples"),
                                                 holdout_fraction=run.get("holdout_fraction") or 0.0)
            record = {**record, "majority": {split: e["metrics"] for split, e in majority["splits"].items()}}
        check = learnt_check_of(record).to_dict()
    if not check["learnt"]:
        raise Skipped(_not_learnt(check["reason"]))
