"""The lottery study (Prasanna et al. 2020) as stages: the graph of a config, and running one stage.

Per task and seed: ``finetune``; per method ``prune`` (the good mask) and ``subnetworks`` (good, random
and bad masks of its size; the Fisher search's prune stage reads the structured one of the same task
and seed, whose good mask's cost is its budget, unless the config gives a budget); per subnetwork ``evaluate`` (pruned) and ``retrain`` (re-fine-tuned, and
longer with ``longer_retraining``); ``baseline`` (random-init). Per task: ``super`` (super-survivors
over the seeds' structured masks, evaluated and re-fine-tuned like the others) and the majority
baseline. With a ``tune:`` section, first per task: ``tune-candidate`` (one per grid point, scored on a
held-out slice of train) and ``tune`` (the choice), which that task's fine-tuning and random-init
baseline read, and re-fine-tuning through them (`docs/algorithms.md`, "Tuning the full model").
Each stage calls a step of `bertlottery.steps`, which a user can also run alone.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .. import runs
from ..config import ExperimentConfig, LearntCheckConfig
from ..pipeline import Skipped, Stage
from ..results import ResultRow, rows_from_metrics
from ..tasks import get_task
from ..tuning import candidate_name, candidates

__all__ = ["KINDS", "expand", "execute"]

KINDS = ("tune-candidate", "tune", "finetune", "prune", "subnetworks", "super", "evaluate", "retrain", "baseline")
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
        tune = _tune_stages(config, task) if config.tune is not None and config.tune.tunes(task) else []
        stages += tune
        tuned = {"tune": tune[-1].id} if tune else {}
        for seed in config.seeds:
            train = _untuned(config.train.for_task(task, seed), tune)
            finetune = Stage("finetune", task, f"seed{seed}", {"seed": seed, "method": "none", "subnetwork": "full",
                                                              "mode": "finetuned", "epochs": train.get("epochs")},
                             {"model": config.model, "train": train,
                              **({"learnt_check": check_alpha} if check_alpha else {})}, tuned)
            stages.append(finetune)
            per_seed[seed] = {"finetune": finetune}
            # the Fisher search last: by default its budget is the structured good mask's cost
            for method in sorted(config.methods, key=lambda m: m == "fisher"):
                if method == "fisher":
                    prune, subs = _fisher_stages(task, seed, pruning, check["enabled"], finetune, per_seed[seed])
                else:
                    method_settings = {"keep_fraction": pruning["keep_fraction"], "compat": pruning["compat"],
                                       **prune_extra, **pruning[method]}
                    prune = Stage("prune", task, f"seed{seed}-{method}", {"seed": seed, "method": method},
                                  method_settings, {"finetune": finetune.id})
                    subs = Stage("subnetworks", task, f"seed{seed}-{method}", {"seed": seed, "method": method},
                                 {"compat": pruning["compat"]}, {"prune": prune.id})
                stages += [prune, subs]
                prunes[method].append(prune)
                per_seed[seed][method] = subs
                per_seed[seed][f"prune-{method}"] = prune
                stages += _evaluations(config, task, seed, method, finetune, subs, train)
            if "random-init" in config.baselines and "structured" in config.methods:
                stages.append(Stage("baseline", task, f"seed{seed}-random-init",
                                    {"seed": seed, "method": "random-init", "subnetwork": "random", "mode": "baseline",
                                     "epochs": train.get("epochs")},
                                    {"model": config.model,
                                     "train": _untuned(config.train.for_task(task, seed, subnetworks=True), tune),
                                     "size_of": "bad"},
                                    {"finetune": finetune.id, "subnetworks": per_seed[seed]["structured"].id, **tuned}))
        if config.super_survivors and "structured" in config.methods and len(config.seeds) > 1:
            sup = Stage("super", task, "structured", {"method": "structured"}, {"seed": 0},
                        {f"prune{i}": p.id for i, p in enumerate(prunes["structured"])})
            stages.append(sup)
            for seed in config.seeds:
                train = _untuned(config.train.for_task(task, seed), tune)
                stages += _evaluations(config, task, seed, "structured", per_seed[seed]["finetune"], sup, train,
                                       prefix="super-")
        if "majority" in config.baselines:
            stages.append(Stage("baseline", task, "majority", {"seed": None, "method": "majority", "subnetwork": "none",
                                                               "mode": "baseline", "epochs": None},
                                _trained_on(config.train.for_task(task, config.seeds[0]))))
    return stages


def _tune_stages(config: ExperimentConfig, task: str) -> list[Stage]:
    """A task's tuning: one ``tune-candidate`` per grid point, then ``tune``, which reads them all and
    writes the choice. Their ids hash the grid and the training settings, not the choice: the stages
    that train with the choice read it when they run, from their ``tune`` input."""
    tune = config.tune
    grid = tune.grid_for(task)
    base = config.train.for_task(task, tune.seed)
    trials = [Stage("tune-candidate", task, candidate_name(candidate), {"seed": tune.seed, **candidate},
                    {"model": config.model, "train": {**base, **candidate}, "tune_fraction": tune.holdout_fraction})
              for candidate in candidates(grid)]
    choice = Stage("tune", task, "grid", {"seed": tune.seed}, {"tuned": list(grid)},
                   {f"candidate{i}": trial.id for i, trial in enumerate(trials)})
    return [*trials, choice]


def _untuned(train: dict, tune: list[Stage]) -> dict:
    """A stage's training settings less those its task's ``tune`` stage chooses (read when it runs)."""
    tuned = tune[-1].settings["tuned"] if tune else []
    return {k: v for k, v in train.items() if k not in tuned}


def _fisher_stages(task: str, seed: int, pruning: dict, check: bool, finetune: Stage,
                   done: dict[str, Stage]) -> tuple[Stage, Stage]:
    """The Fisher search's prune and subnetworks stages. Without an explicit budget the prune stage
    reads the structured prune stage of the same task and seed, whose good mask's cost it matches;
    the subnetworks stage reads the fine-tuned model, whose MLP weights hold its neuron masks."""
    settings = {**({} if check else {"learnt_check": False}), **pruning["fisher"]}
    inputs = {"finetune": finetune.id}
    if settings["budget"] is None and settings["budget_fraction"] is None:
        inputs["budget"] = done["prune-structured"].id
    prune = Stage("prune", task, f"seed{seed}-fisher", {"seed": seed, "method": "fisher"}, settings, inputs)
    subs = Stage("subnetworks", task, f"seed{seed}-fisher", {"seed": seed, "method": "fisher"}, {},
                 {"prune": prune.id, "finetune": finetune.id})
    return prune, subs


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
                                {**keys, "mode": "pruned", "epochs": train.get("epochs")}, {"subnetwork": subnetwork},
                                inputs))
        if "retrained" in config.modes:
            stages.append(Stage("retrain", task, f"seed{seed}-{method}-{prefix}{subnetwork}",
                                {**keys, "mode": "retrained", "epochs": train.get("epochs")},
                                {"subnetwork": subnetwork, "epochs": None, **how}, inputs))
        longer = config.longer_retraining
        if longer and not prefix and method in longer.methods and subnetwork in longer.subnetworks \
                and (longer.seeds is None or seed in longer.seeds):
            stages.append(Stage("retrain", task, f"seed{seed}-{method}-{subnetwork}-long",
                                {**keys, "mode": "retrained-long", "epochs": longer.epochs},
                                {"subnetwork": subnetwork, "epochs": longer.epochs, **how}, inputs))
    return stages


def execute(stage: Stage, out: Path, inputs: dict[str, Path], config: ExperimentConfig,
            progress: bool) -> list[ResultRow]:
    """Run one lottery stage into ``out``; return its result rows."""
    from ..steps import baselines, evaluate, finetune, prune, retrain, subnetworks, tune
    from ..pruning import NotAboveChance
    from ..steps.taskdata import CAP_SEED
    from ..training import TrainSettings

    glue = Path(config.glue_dir) if config.glue_dir else None
    row_keys = {k: v for k, v in stage.keys.items() if k in ("seed", "method", "subnetwork", "mode", "epochs")}
    row_keys.update(task=stage.task, stage_id=stage.id)
    if row_keys.get("epochs", 0) is None and "finetune" in inputs:  # a tuned task: the epochs its fine-tuning chose
        row_keys["epochs"] = runs.read_json(inputs["finetune"] / runs.CONFIG_FILE)["train"]["epochs"]
    if stage.kind == "tune-candidate":
        s = stage.settings
        tune.tune_candidate_run(s["model"], stage.task, out, glue_dir=glue, settings=TrainSettings.from_dict(s["train"]),
                                tune_fraction=s["tune_fraction"], tune_seed=s["train"]["seed"],
                                max_train_examples=s["train"]["max_train_examples"],
                                cap_seed=s["train"].get("cap_seed", CAP_SEED),
                                holdout_fraction=s["train"]["holdout_fraction"], progress=progress)
        return []
    if stage.kind == "tune":
        records = [runs.read_json(inputs[f"candidate{i}"] / runs.METRICS_FILE) for i in range(len(inputs))]
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json(out / runs.TUNE_FILE, tune.tuning_record(records, stage.settings["tuned"]))
        return []
    if stage.kind == "finetune":
        train, choice = _with_choice(stage.settings["train"], inputs)
        row_keys["epochs"] = train["epochs"]
        record = finetune.finetune_run(stage.settings["model"], stage.task, out, glue_dir=glue,
                                       settings=TrainSettings.from_dict(train),
                                       max_train_examples=train["max_train_examples"],
                                       cap_seed=train.get("cap_seed", CAP_SEED),
                                       holdout_fraction=train["holdout_fraction"], overwrite=True, progress=progress,
                                       learnt_check={**_DEFAULT_CHECK, **stage.settings.get("learnt_check", {})},
                                       extra_config={"tuned": choice} if choice else None)
        check = record["learnt_check"]
        return rows_from_metrics(record, **row_keys, note="" if check["learnt"] else _not_learnt(check["reason"]))
    if stage.kind == "prune":
        s = stage.settings
        if s.get("learnt_check", True):
            _refuse_unlearnt(inputs["finetune"], glue)
        compat = None if s.get("compat", "none") == "none" else s["compat"]
        criterion = s.get("criterion", "paper")
        try:
            if stage.keys["method"] == "structured":
                prune.prune_structured_run(inputs["finetune"], out, glue_dir=glue, mode=s["mode"],
                                           keep_fraction=s["keep_fraction"], criterion=criterion,
                                           scoring_split=s["scoring_split"], normalize_by_layer=s["normalize_by_layer"],
                                           global_min_max=s["global_min_max"], compat=compat,
                                           batch_size=s["batch_size"], overwrite=True, progress=progress)
            elif stage.keys["method"] == "fisher":
                prune.prune_fisher_run(inputs["finetune"], out, glue_dir=glue, budget_of=inputs.get("budget"),
                                       budget_fraction=s["budget_fraction"], budget=s["budget"], cost=s["cost"],
                                       examples=s["examples"], seq_len=s["seq_len"], labels=s["labels"],
                                       rearrange=s["rearrange"], tune=s["tune"], tune_examples=s["tune_examples"],
                                       batch_size=s["batch_size"], overwrite=True, progress=progress)
            else:
                prune.prune_magnitude_run(inputs["finetune"], out, glue_dir=glue, keep_fraction=s["keep_fraction"],
                                          criterion=criterion, scope=s["scope"], tensor_set=s["tensors"],
                                          step_fraction=s["step_fraction"], compat=compat, overwrite=True,
                                          progress=progress)
        except NotAboveChance as error:
            raise Skipped(_not_learnt(str(error))) from None
        return []
    if stage.kind == "subnetworks" and stage.keys["method"] == "fisher":
        subnetworks.make_fisher_subnetworks(inputs["prune"], inputs["finetune"], out, seed=stage.keys["seed"],
                                            overwrite=True)
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
        # an s-pruned subnetwork is evaluated as it is re-fine-tuned: physically smaller, or under gates
        how = config.train.for_task(stage.task, stage.keys["seed"], subnetworks=True).get("subnetwork_training")
        record = evaluate.evaluate_run(inputs["finetune"], task_name=stage.task, glue_dir=glue, masks_path=mask,
                                       physical=how == "physical")
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
        train, _ = _with_choice(stage.settings["train"], inputs)
        record = baselines.random_init_baseline_run(stage.settings["model"], stage.task,
                                                    inputs["subnetworks"] / runs.subnetwork_file("bad"), out,
                                                    glue_dir=glue, settings=TrainSettings.from_dict(train),
                                                    max_train_examples=train["max_train_examples"],
                                                    cap_seed=train.get("cap_seed", CAP_SEED), overwrite=True,
                                                    progress=progress)
        return rows_from_metrics(record, **row_keys)
    raise ValueError(f"unknown stage kind {stage.kind}")


def _with_choice(train: dict, inputs: dict[str, Path]) -> tuple[dict, dict | None]:
    """A stage's training settings with its task's tuned choice (``None`` for an untuned task)."""
    if "tune" not in inputs:
        return train, None
    choice = runs.read_json(inputs["tune"] / runs.TUNE_FILE)["choice"]
    return {**train, **choice}, choice


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
