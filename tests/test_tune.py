"""The tune stage (issue 16): a grid of fine-tuning settings scored on a held-out slice of train, never
on dev; its choice is what the task's lottery stages train with; resumable; ids of untuned configs kept."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

from bertlottery import runs
from bertlottery.cli import main
from bertlottery.config import ConfigError, from_dict, load
from bertlottery.steps import taskdata
from bertlottery.steps import tune as tune_step
from bertlottery.studies import expand
from bertlottery.tuning import candidates, choose

from rungraph import write_graph_of
from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
GRID = ["tune.learning_rates=[1e-3,3e-3]", "tune.epochs=[1,2]"]


def read(path: Path):
    return json.loads(path.read_text())


# ---- the rule and the config ------------------------------------------------------------------------

def test_the_highest_score_wins_and_ties_go_to_fewer_epochs_then_the_lower_rate():
    grid = candidates({"learning_rate": [5e-5, 2e-5], "epochs": [3, 2]})
    assert [(c["learning_rate"], c["epochs"]) for c in grid] == [(5e-5, 3), (5e-5, 2), (2e-5, 3), (2e-5, 2)]
    assert choose(grid, [0.5, 0.7, 0.6, 0.1]) == 1
    assert choose(grid, [0.7, 0.7, 0.7, 0.6]) == 1  # equal scores: 2 epochs before 3
    assert choose(grid, [0.7, 0.7, 0.7, 0.7]) == 3  # and then 2e-5 before 5e-5
    assert choose(grid, [float("nan"), None, 0.1, float("nan")]) == 2  # undefined scores lose
    sized = candidates({"batch_size": [16, 32]})
    assert choose(sized, [0.5, 0.5]) == 1  # then the larger batch
    # the held-out loss comes first among equal scores: a finer signal than accuracy on a small slice
    assert choose(grid, [0.7, 0.7, 0.7, 0.6], [0.5, 0.6, 0.4, 0.1]) == 2
    # an unknown loss loses the tie (candidate 1 would win it on epochs); 0 and 2 then go by learning rate
    assert choose(grid, [0.7, 0.7, 0.7, 0.6], [0.5, None, 0.5, 0.1]) == 2


def test_tune_config_problems_are_listed_together():
    data = {"name": "t", "tasks": ["RTE", "SST-2"],
            "tune": {"learning_rates": [0, 1e-4, 1e-4], "epochs": [0], "holdout_fraction": 1.0, "tasks": ["MRPC"],
                     "per_task": {"RTE": {"epoch": [1]}, "CoLA": {"epochs": [2]}}, "sed": 1}}
    with pytest.raises(ConfigError) as error:
        from_dict(data)
    problems = error.value.problems
    assert "unknown key 'tune.sed'. Did you mean 'seed'?" in problems
    assert "unknown key 'tune.per_task.RTE.epoch'. Did you mean 'epochs'?" in problems
    assert "tune.learning_rates must not repeat a value, got [0.0, 0.0001, 0.0001]" in problems
    assert "tune.learning_rates must be positive numbers, got 0.0" in problems
    assert "tune.epochs must be at least 1, got 0" in problems
    assert any(p.startswith("tune.holdout_fraction must be between 0 and 1") for p in problems)
    assert any(p.startswith("tune.tasks: 'MRPC' is not one of the study's tasks") for p in problems)
    assert any(p.startswith("tune.per_task: 'CoLA' is not one of the study's tasks") for p in problems)
    assert len(problems) == 8
    with pytest.raises(ConfigError, match="the grid for RTE is empty"):
        from_dict({"name": "t", "tasks": ["RTE"], "tune": {}})
    config = from_dict({"name": "t", "tasks": ["RTE", "SST-2"],
                        "tune": {"learning_rates": ["2e-5", 5e-5], "epochs": [2, 3],
                                 "per_task": {"SST-2": {"epochs": [1, 2]}}}})
    assert config.tune.grid_for("RTE") == {"learning_rate": [2e-5, 5e-5], "epochs": [2, 3]}
    assert config.tune.grid_for("SST-2") == {"learning_rate": [2e-5, 5e-5], "epochs": [1, 2]}


# ---- the graph ------------------------------------------------------------------------------------

def test_a_tuned_graph_hashes_the_grid_not_the_choice_and_an_untuned_one_keeps_its_ids():
    plain = expand(load(SMOKE))
    assert expand(load(SMOKE, ["tune=null"])) == plain  # no tune section: the same graph, the same ids
    tuned = expand(load(SMOKE, GRID))
    trials = [s for s in tuned if s.kind == "tune-candidate"]
    (choice,) = [s for s in tuned if s.kind == "tune"]
    assert [s.name for s in trials] == ["lr0.001-ep1", "lr0.001-ep2", "lr0.003-ep1", "lr0.003-ep2"]
    assert choice.inputs == {f"candidate{i}": s.id for i, s in enumerate(trials)}
    finetunes = [s for s in tuned if s.kind == "finetune"]
    assert all(s.inputs == {"tune": choice.id} for s in finetunes)
    assert all("learning_rate" not in s.settings["train"] and "epochs" not in s.settings["train"] for s in finetunes)
    assert all(s.inputs["tune"] == choice.id for s in tuned if s.keys.get("method") == "random-init")
    # the majority class does not depend on the training settings: its stage keeps its id
    assert {s.id for s in tuned if s.keys.get("method") == "majority"} == \
        {s.id for s in plain if s.keys.get("method") == "majority"}
    # the tuned settings given in train: no longer part of the fine-tuning stages' ids (the choice replaces them)
    relr = expand(load(SMOKE, [*GRID, "train.learning_rate=5e-4"]))
    assert [s.id for s in relr if s.kind == "finetune"] == [s.id for s in finetunes]
    # another grid: every stage after the tune stage changes
    regrid = {s.id for s in expand(load(SMOKE, ["tune.learning_rates=[1e-3,2e-3]", "tune.epochs=[1,2]"]))}
    assert not regrid & {s.id for s in finetunes}
    # the study's seeds do not enter the tuning
    assert choice.id in {s.id for s in expand(load(SMOKE, [*GRID, "seeds=[5]"]))}


def test_the_shipped_minilm_glue_config_tunes_all_but_wnli():
    config = load(REPO / "configs" / "minilm-glue.yaml")
    stages = expand(config)
    tuned = {s.task for s in stages if s.kind == "tune"}
    assert tuned == {"SST-2", "MRPC", "STS-B", "RTE", "CoLA"}
    assert config.tune.grid_for("MRPC") == {"learning_rate": [5e-5, 1e-4], "epochs": [3]}


# ---- the step: held-out slice of train, never dev ---------------------------------------------------

def test_tune_scores_on_a_slice_of_train_disjoint_from_what_it_trains_on_and_never_reads_dev(
        tiny_model_dir, env, monkeypatch, capsys):
    glue = write_rte(env / "glue", n_train=40, n_dev=16)
    loaded, tokenized, trained_with = [], [], []
    real_load, real_tokenize, real_finetune = taskdata.load_split, tune_step.tokenize, tune_step.finetune

    def load_split(task, split, glue_dir):
        loaded.append(split)
        return real_load(task, split, glue_dir)

    def tokenize(examples, *args, **kwargs):
        tokenized.append(list(examples))
        return real_tokenize(examples, *args, **kwargs)

    def finetune(model, batches, settings, **kwargs):
        trained_with.append((settings.learning_rate, settings.epochs))
        return real_finetune(model, batches, settings, **kwargs)

    # a held-out score set by the candidate, so that the best is known: lr 3e-3 with 1 epoch, not the first
    wanted = {(1e-3, 1): 0.5, (1e-3, 2): 0.6, (3e-3, 1): 0.8, (3e-3, 2): 0.7}

    def evaluate(model, task, batches):
        n = sum(len(b["labels"]) for b in batches)
        return {"accuracy": wanted[trained_with[-1]], "n_examples": n}

    monkeypatch.setattr(taskdata, "load_split", load_split)
    monkeypatch.setattr(tune_step, "tokenize", tokenize)
    monkeypatch.setattr(tune_step, "finetune", finetune)
    monkeypatch.setattr(tune_step, "evaluate", evaluate)
    out = env / "tune"
    assert main(["tune", "--model", str(tiny_model_dir), "--task", "RTE", "--glue-dir", str(glue), "--out", str(out),
                 "--lr", "1e-3", "3e-3", "--epochs", "1", "2", "--batch-size", "8", "--holdout-fraction", "0.25",
                 "--seed", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert set(loaded) == {"train"}  # dev is never read
    assert trained_with == list(wanted)
    for train, held in zip(tokenized[::2], tokenized[1::2]):
        assert len(held) == 10 and len(train) == 30  # a quarter of the 40 pairs held out, the rest trained on
        # the same example object is never in both: the slice is disjoint from what the candidate trains on
        assert {id(e) for e in train}.isdisjoint(id(e) for e in held)
        assert sorted(map(repr, train + held)) == sorted(map(repr, tokenized[0] + tokenized[1]))
    held_slices = {tuple((e.text_a, e.text_b, e.label) for e in held) for held in tokenized[1::2]}
    assert len(held_slices) == 1  # every candidate is scored on the same slice
    record = read(out / runs.TUNE_FILE)
    assert record["choice"] == {"learning_rate": 3e-3, "epochs": 1} and record["chosen"] == 2
    assert [c["score"] for c in record["candidates"]] == list(wanted.values())
    assert all(c["heldout_loss"] > 0 for c in record["candidates"])  # the real loss of each candidate's model
    assert record["split"] == "heldout" and record["n_heldout"] == 10 and record["tune_seed"] == 3
    assert "* lr0.003-ep1: 0.8000 (loss " in printed and "chosen: lr0.003-ep1" in printed
    assert read(out / "candidates" / "lr0.001-ep2" / runs.METRICS_FILE)["train"]["seed"] == 3
    # another seed holds out another slice
    other, _ = taskdata.split_holdout(list(range(40)), 0.25, 4)
    first, _ = taskdata.split_holdout(list(range(40)), 0.25, 3)
    assert other != first


def test_tune_command_needs_a_grid(env, capsys):
    assert main(["tune", "--task", "RTE", "--out", str(env / "t"), "--lr", "1e-3"]) == 2
    assert "Nothing to tune" in capsys.readouterr().err
    assert main(["tune", "--task", "RTE", "--out", str(env / "t"), "--lr", "1e-3", "-1"]) == 2
    assert "--lr must be positive" in capsys.readouterr().err


# ---- the study: the choice is used downstream, and a finished tune stage is not redone ----------------

def test_the_lottery_stages_train_with_the_choice_and_a_finished_tune_stage_is_not_redone(
        tiny_model_dir, env, monkeypatch, capsys):
    glue = write_rte(env / "glue", n_train=48, n_dev=20)
    run_dir = env / "study"
    argv = ["run", str(SMOKE), f"model={tiny_model_dir}", f"glue_dir={glue}", "train.batch_size=8",
            "pruning.learnt_check.enabled=false", "seeds=[1]", "methods=[structured]", "modes=[retrained]",
            "longer_retraining=null", "super_survivors=false", "baselines=[random-init,majority]", *GRID,
            "--run-dir", str(run_dir), "--no-progress"]
    wanted = {(1e-3, 1): 0.5, (1e-3, 2): 0.6, (3e-3, 1): 0.6, (3e-3, 2): 0.9}
    trained_with = []
    real_finetune = tune_step.finetune

    def finetune(model, batches, settings, **kwargs):
        trained_with.append((settings.learning_rate, settings.epochs))
        return real_finetune(model, batches, settings, **kwargs)

    monkeypatch.setattr(tune_step, "finetune", finetune)
    monkeypatch.setattr(tune_step, "evaluate", lambda model, task, batches: {"accuracy": wanted[trained_with[-1]],
                                                                               "n_examples": 5})

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    # first run: the fine-tuning fails after the tuning finished
    from bertlottery.steps import baselines, retrain  # noqa: F401 - bound to the real finetune_run before it breaks
    from bertlottery.steps import finetune as finetune_module

    real_run = finetune_module.finetune_run
    monkeypatch.setattr(finetune_module, "finetune_run", broken)
    assert main(argv) == 1
    capsys.readouterr()
    assert len(trained_with) == 4
    monkeypatch.setattr(finetune_module, "finetune_run", real_run)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert len(trained_with) == 4, "the finished tune stages ran again"
    assert "13 stages, 6 already done, 7 to run" in out  # the five tune stages and the majority class
    from bertlottery.cli.study import fit_to_model  # the run fits the default length to the tiny model's 64 positions

    stages = {s.kind: s for s in expand(fit_to_model(load(SMOKE, argv[2:-3])))}
    folder = lambda kind: runs.stage_path(run_dir, stages[kind].id)  # noqa: E731
    assert read(folder("tune") / runs.TUNE_FILE)["choice"] == {"learning_rate": 3e-3, "epochs": 2}
    finetuned = read(folder("finetune") / runs.CONFIG_FILE)
    assert (finetuned["train"]["learning_rate"], finetuned["train"]["epochs"]) == (3e-3, 2)
    assert finetuned["tuned"] == {"learning_rate": 3e-3, "epochs": 2}
    assert finetuned["train"]["batch_size"] == 8  # not tuned: train's
    retrained = read(folder("retrain") / runs.CONFIG_FILE)["train"]
    assert (retrained["learning_rate"], retrained["epochs"]) == (3e-3, 2)
    baseline = [s for s in expand(fit_to_model(load(SMOKE, argv[2:-3]))) if s.keys.get("method") == "random-init"][0]
    random_init = read(runs.stage_path(run_dir, baseline.id) / runs.CONFIG_FILE)["train"]
    assert (random_init["learning_rate"], random_init["epochs"]) == (3e-3, 2)
    table = pd.read_csv(run_dir / "results.csv")
    trained = table[table["method"].isin(["none", "structured", "random-init"])]
    assert set(trained["epochs"]) == {2}  # the rows say how long each model was trained
    assert main(["status", str(run_dir), "--all"]) == 0
    status = capsys.readouterr().out
    assert "done 13" in status and stages["tune"].id in status
    assert all(s.id in status for s in expand(fit_to_model(load(SMOKE, argv[2:-3]))) if s.kind == "tune-candidate")
    # the report's section: every candidate's held-out score, the chosen one marked
    from bertlottery.report.context import Context
    from bertlottery.report.rundata import load_run
    from bertlottery.report.sections.tune import tune_section

    section = tune_section(Context(load_run(run_dir), env / "report", None))
    assert not section.missing
    assert "never on dev" in section.html_body and "fewer epochs" in section.html_body
    table = pd.read_csv(env / "report" / "tables" / "tune.csv")
    assert len(table) == 4 and table["heldout_score"].tolist() == list(wanted.values())
    (chosen,) = table[table["chosen"]].to_dict("records")
    assert (chosen["learning_rate"], chosen["epochs"]) == (3e-3, 2)
    # each candidate labelled by its settings under its task's heading, the metric in words
    html = unescape(section.html_body)
    assert ">lr 3e-3, epochs 2<" in html.replace("</th>", "<") and ">accuracy<" in html.replace("</td>", "<")


def test_the_report_of_an_untuned_run_states_the_settings_from_the_config(env):
    from bertlottery.config import to_dict
    from bertlottery.report.context import Context
    from bertlottery.report.rundata import load_run
    from bertlottery.report.sections.tune import tune_section

    runs.write_json(env / "run" / runs.CONFIG_FILE, to_dict(load(REPO / "configs" / "minilm-glue.yaml")))
    write_graph_of(env / "run")
    section = tune_section(Context(load_run(env / "run"), env / "report", None))
    assert "WNLI lr 5e-5, epochs 3, batch 32" in section.html_body  # the one task minilm-glue does not tune
    assert any(line.startswith("SST-2: nothing yet") for line in section.missing)


def test_a_candidate_that_diverges_is_recorded_without_a_score_and_passed_over(tiny_model_dir, env, monkeypatch):
    from bertlottery.training import TrainingDiverged

    glue = write_rte(env / "glue", n_train=24, n_dev=8)
    real_finetune = tune_step.finetune

    def finetune(model, batches, settings, **kwargs):
        if settings.learning_rate > 1e-2:
            raise TrainingDiverged("the loss became nan at step 3")
        return real_finetune(model, batches, settings, **kwargs)

    monkeypatch.setattr(tune_step, "finetune", finetune)
    record = tune_step.tune_run(str(tiny_model_dir), "RTE", env / "t", glue_dir=glue,
                                base=tune_step.TrainSettings(epochs=1, batch_size=8),
                                grid={"learning_rate": [1.0, 1e-3]}, tune_fraction=0.25, progress=False)
    first, second = record["candidates"]
    assert first["score"] is None and "nan at step 3" in first["diverged"]
    assert second["score"] is not None and record["choice"] == {"learning_rate": 1e-3}
