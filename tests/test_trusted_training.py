"""Issue 16 wired into the steps and the study: capped training draws a seeded stratified sample and
records it, the majority class comes from what was trained on, the learnt-check and the pruning
criterion reach the prune stage, and a model that learnt nothing is skipped, not searched."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bertlottery.caps import cap_examples
from bertlottery.config import from_dict
from bertlottery.data import read_glue_split
from bertlottery.metrics import majority_baseline
from bertlottery.steps.baselines import majority_baseline_metrics
from bertlottery.steps.taskdata import CAP_SEED, training_examples
from bertlottery.studies import expand
from bertlottery.tasks import get_task


def test_a_capped_run_trains_on_the_stratified_sample_not_the_first_lines(glue_dir):
    task = get_task("RTE")
    full = read_glue_split(task, glue_dir, "train")
    trained, held, cap = training_examples(task, glue_dir, max_train_examples=300)
    expected, expected_cap = cap_examples(task, full, 300, CAP_SEED)
    assert [e.text_a for e in trained] == [e.text_a for e in expected] and held == []
    assert cap.to_dict() == expected_cap.to_dict() == {"n": 300, "of": len(full), "seed": CAP_SEED,
                                                        "sha256": expected_cap.digest}
    assert [e.text_a for e in trained] != [e.text_a for e in full[:300]]
    again, _, same = training_examples(task, glue_dir, max_train_examples=300)
    assert same.digest == cap.digest and [e.text_a for e in again] == [e.text_a for e in trained]
    assert training_examples(task, glue_dir, max_train_examples=300, cap_seed=1)[2].digest != cap.digest


def test_the_held_out_slice_comes_out_of_the_capped_sample(glue_dir):
    task = get_task("RTE")
    capped, _, _ = training_examples(task, glue_dir, max_train_examples=200)
    trained, held, _ = training_examples(task, glue_dir, max_train_examples=200, holdout_fraction=0.1)
    assert len(trained) == 180 and len(held) == 20
    assert {e.text_a for e in trained} | {e.text_a for e in held} == {e.text_a for e in capped}


def test_the_majority_baseline_is_the_majority_class_of_the_capped_labels(glue_dir):
    """The record's class is the capped sample's majority, drawn as fine-tuning draws it."""
    record = majority_baseline_metrics("RTE", glue_dir, max_train_examples=300)
    trained, _, cap = training_examples(get_task("RTE"), glue_dir, max_train_examples=300)
    dev = np.array([e.label for e in read_glue_split(get_task("RTE"), glue_dir, "dev")])
    expected = majority_baseline(get_task("RTE"), np.array([e.label for e in trained]), dev)
    assert record["splits"]["dev"]["metrics"]["accuracy"] == expected["accuracy"]
    assert record["cap"] == cap.to_dict()
    uncapped = majority_baseline_metrics("RTE", glue_dir)
    assert uncapped["cap"] is None
    # STS-B's constant is the capped mean: a constant has no correlation
    assert majority_baseline_metrics("STS-B", glue_dir, max_train_examples=500)["splits"]["dev"]["metrics"]["pearson"] == 0.0


def _config(**extra):
    return from_dict({"name": "t", "model": "minilm-l6", "tasks": ["RTE", "WNLI"], "seeds": [1, 2],
                      "train": {"per_task": {"RTE": {"max_train_examples": 300}}}, **extra})


def test_only_capped_stages_carry_the_cap_seed_and_the_majority_stage_knows_the_cap():
    stages = expand(_config())
    finetunes = {(s.task, s.keys["seed"]): s for s in stages if s.kind == "finetune"}
    assert finetunes["RTE", 1].settings["train"]["cap_seed"] == finetunes["RTE", 2].settings["train"]["cap_seed"] == 0
    assert "cap_seed" not in finetunes["WNLI", 1].settings["train"]
    majority = {s.task: s for s in stages if s.kind == "baseline" and s.keys["method"] == "majority"}
    assert majority["RTE"].settings == {"max_train_examples": 300, "cap_seed": 0, "holdout_fraction": 0.0}
    assert majority["WNLI"].settings == {}
    moved = {s.task: s for s in expand(_config(train={"cap_seed": 7, "per_task": {"RTE": {"max_train_examples": 300}}}))
             if s.kind == "finetune" and s.keys["seed"] == 1}
    assert moved["RTE"].id != finetunes["RTE", 1].id and moved["WNLI"].id == finetunes["WNLI", 1].id


@pytest.mark.parametrize("override", [["pruning.criterion=chance"], ["pruning.learnt_check.alpha=1.5"],
                                      ["pruning.learnt_check.margin=0.0"]])
def test_bad_criterion_and_learnt_check_settings_are_refused(override):
    from bertlottery.config import ConfigError

    with pytest.raises(ConfigError):
        from_dict({"name": "t", "tasks": ["RTE"]}, override)


def test_the_config_knows_the_criteria_pruning_knows():
    from bertlottery import config, pruning

    assert config.CRITERIA == pruning.CRITERIA


def _chain():
    from bertlottery.pipeline import Stage

    fine = Stage("finetune", "RTE", "seed1", {"seed": 1}, {})
    prune = Stage("prune", "RTE", "seed1-structured", {"seed": 1}, {}, {"finetune": fine.id})
    subs = Stage("subnetworks", "RTE", "seed1-structured", {"seed": 1}, {}, {"prune": prune.id})
    other = Stage("baseline", "RTE", "majority", {"seed": None}, {})
    return [fine, prune, subs, other]


def test_a_skipped_stage_is_recorded_apart_from_failures_and_skips_what_reads_it(tmp_path, capsys):
    from bertlottery import runs
    from bertlottery.cli.study import skipped_warnings
    from bertlottery.pipeline import Skipped, run_local, skip_reason, stage_states

    stages = _chain()
    ran = []

    def execute(stage, out, inputs, config, progress):
        ran.append(stage.kind)
        if stage.kind == "prune":
            raise Skipped("not learnt: accuracy 0.4700 < 0.5810")
        out.mkdir(parents=True, exist_ok=True)
        return []

    config = from_dict({"name": "t", "energy": {"track": False}})
    states = run_local(stages, tmp_path, config, execute=execute, progress=False)
    assert [states[s.id] for s in stages] == ["done", "skipped", "skipped", "done"]
    assert ran == ["finetune", "prune", "baseline"]  # the subnetworks stage never ran
    assert stage_states(stages, tmp_path) == states
    assert skip_reason(tmp_path, stages[1]) == skip_reason(tmp_path, stages[2]) == "not learnt: accuracy 0.4700 < 0.5810"
    assert not (tmp_path / runs.FAILED_DIR).exists() and not (tmp_path / runs.STAGES_DIR / "prune").exists()
    assert skipped_warnings(stages, tmp_path, states) == [
        f"{stages[1].id} skipped (1 stages after it): not learnt: accuracy 0.4700 < 0.5810"]
    # a skipped stage is tried again on the next run, and its record goes when it runs
    ran.clear()
    states = run_local(stages, tmp_path, config, execute=lambda s, out, *a: out.mkdir(parents=True) or [],
                       progress=False)
    assert set(states.values()) == {"done"} and skip_reason(tmp_path, stages[1]) is None


def _tiny_study(tiny_model_dir, glue, run_dir, *extra):
    from pathlib import Path

    from bertlottery.cli import main

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    argv = ["run", str(smoke), f"model={tiny_model_dir}", f"glue_dir={glue}", "train.batch_size=8", "seeds=[1]",
            "subnetworks=[good]", "modes=[pruned]", "baselines=[majority]", "longer_retraining=null", *extra,
            "--run-dir", str(run_dir), "--no-progress"]
    return main(argv)


def test_a_model_that_does_not_pass_the_learnt_check_is_not_pruned_and_says_why(tiny_model_dir, env, capsys):
    import pandas as pd

    from bertlottery.cli import main
    from tiny import write_rte

    glue = write_rte(env / "glue", n_train=48, n_dev=20)
    run_dir = env / "study"
    # a margin no model can reach: the check must fail whatever the tiny model learnt
    assert _tiny_study(tiny_model_dir, glue, run_dir, "pruning.learnt_check.enabled=true",
                       "pruning.learnt_check.margin=1.5") == 0
    out = capsys.readouterr().out
    assert "skipped 6;" in out  # both prunes, both subnetworks and the evaluations that read them
    # the log gives a skipped stage its verdict, not a time (it did no work; it only waited in the queue)
    assert re.search(r"\] skipped +prune/RTE/seed1-structured-\w+  \(not learnt: accuracy [\d.]+ < [\d.]+\)\n", out)
    assert not re.search(r"\] skipped .*\(\d+ s\)", out)
    assert re.search(r"warning: prune/RTE/seed1-structured-\w+ skipped \(\d+ stages after it\): not learnt: accuracy",
                     out)
    table = pd.read_csv(run_dir / "results.csv").fillna({"note": ""})
    full = table[table["mode"] == "finetuned"]
    assert not full.empty and full["note"].str.startswith("not learnt: accuracy").all()
    assert (full["note"].str.count("not learnt") == 1).all() and full["note"].str.contains("not above chance").all()
    assert set(table["mode"]) == {"finetuned", "baseline"}
    assert (table.loc[table["mode"] == "baseline", "note"] == "").all()
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert "skipped 6" in status
    # each skip is listed where it began, with the stages after it counted; --all lists them one by one
    assert re.search(r"skipped +prune/RTE/seed1-magnitude-\w+ +\(and 2 stages after it: not learnt: ", status)
    assert re.search(r"skipped +prune/RTE/seed1-structured-\w+ +\(and 2 stages after it: not learnt: ", status)
    assert "subnetworks/RTE" not in status and "6 stages skipped in all" in status
    assert main(["status", str(run_dir), "--all"]) == 0
    listed = capsys.readouterr().out
    assert len(re.findall(r"\n  skipped +\S+ +\(not learnt: ", listed)) == 6 and "and 2 stages after it" not in listed
    # the report's time and energy: skipped stages cost nothing and are not waited for
    from bertlottery.report.context import Context
    from bertlottery.report.rundata import load_run
    from bertlottery.report.sections.run import costs_section

    context = Context(load_run(run_dir), env / "report", None)
    costs = costs_section(context)
    assert "The 6 skipped stages did no work" in costs.html_body and not costs.missing
    # nor does a section wait for them ("not in this report yet"): the cautions say why they have nothing
    from bertlottery.report.context import missing_stages

    assert missing_stages(context, lambda s: s.kind in ("prune", "subnetworks", "evaluate"), "pruning") == []

    # the fine-tuning run records which examples it saw, the majority class of those, and the verdict
    from bertlottery import runs

    (finetune_dir,) = (run_dir / runs.STAGES_DIR / "finetune" / "RTE").iterdir()
    assert runs.read_json(finetune_dir / runs.CONFIG_FILE)["cap"] == {
        "n": 48, "of": 48, "seed": 0, "sha256": training_examples(get_task("RTE"), glue, max_train_examples=64)[2].digest}
    metrics = runs.read_json(finetune_dir / runs.METRICS_FILE)
    train = np.array([e.label for e in read_glue_split(get_task("RTE"), glue, "train")])
    dev = np.array([e.label for e in read_glue_split(get_task("RTE"), glue, "dev")])
    assert metrics["majority"]["dev"]["accuracy"] == majority_baseline(get_task("RTE"), train, dev)["accuracy"]
    assert metrics["learnt_check"]["learnt"] is False and metrics["learnt_check"]["rule"] == "margin"
    assert metrics["learnt_check"]["threshold"] == pytest.approx(metrics["majority"]["dev"]["accuracy"] + 1.5)


def test_the_stability_section_does_not_wait_for_the_masks_of_seeds_that_were_not_learnt():
    """A task whose search was skipped on some seeds has masks of the others only: those are all it will
    have, so the section names no gap; a seed whose search simply has not run yet is a gap."""
    from types import SimpleNamespace

    from bertlottery.report.sections.masks import _seed_gaps

    def prune(task, seed, state):
        return SimpleNamespace(kind="prune", task=task, keys={"seed": seed, "method": "structured"}, state=state)

    stages = [prune("RTE", 1, "skipped"), prune("RTE", 2, "done"), prune("SST-2", 1, "done"), prune("SST-2", 2, "left"),
              prune("WNLI", 1, "skipped"), prune("WNLI", 2, "skipped")]
    context = SimpleNamespace(run=SimpleNamespace(stages=stages),
                              config_list=lambda key: {"seeds": [1, 2], "tasks": ["SST-2", "RTE", "WNLI"]}[key])
    summary = {"tasks": {"RTE": {"seeds": [2]}, "SST-2": {"seeds": [1]}}}
    missing: list[str] = []
    _seed_gaps(context, summary, missing)
    assert missing == ["SST-2: good s-pruning masks of 1 of 2 seeds"]


def test_above_chance_on_a_model_at_chance_runs_no_search(tiny_model_dir, env, capsys):
    import pandas as pd

    from tiny import write_rte

    glue = write_rte(env / "glue", n_train=48, n_dev=20)
    # keep only dev pairs of the training majority class: the majority class scores 1.0 there, so no
    # model is above chance and ``above_chance`` has nothing to keep
    train = pd.read_csv(glue / "RTE" / "train.tsv", sep="\t")
    dev_path = glue / "RTE" / "dev.tsv"
    dev = pd.read_csv(dev_path, sep="\t")
    dev[dev["label"] == train["label"].mode()[0]].to_csv(dev_path, sep="\t", index=False)
    run_dir = env / "study"
    assert _tiny_study(tiny_model_dir, glue, run_dir, "pruning.learnt_check.enabled=false",
                       "pruning.criterion=above_chance") == 0
    out = capsys.readouterr().out
    assert "skipped 6;" in out and out.count("is not above chance (1.0000): nothing to keep") == 2


@pytest.mark.parametrize("override, first_changed", [
    (["pruning.criterion=above_chance"], "prune"), (["pruning.learnt_check.enabled=false"], "prune"),
    (["pruning.learnt_check.alpha=0.01"], "finetune"), (["pruning.learnt_check.margin=0.05"], "finetune"),
    (["pruning.criterion=paper", "pruning.learnt_check.alpha=0.05"], None)])
def test_the_criterion_and_the_check_enter_stage_ids_only_when_not_the_default(override, first_changed):
    base = {"name": "t", "tasks": ["RTE"], "seeds": [1]}
    before, after = expand(from_dict(base)), expand(from_dict(base, override))
    changed = [a.kind for a, b in zip(after, before) if a.id != b.id]
    assert (changed[0] if changed else None) == first_changed
    assert "baseline" not in changed[:1] and all(a.id == b.id for a, b in zip(after, before) if a.kind == "baseline"
                                                 and a.keys["method"] == "majority")


def test_evaluating_needs_no_train_split_but_the_majority_class_does(tiny_model_dir, tmp_path):
    from bertlottery.models import load_tokenizer
    from bertlottery.steps.taskdata import prepare_task_data
    from tiny import write_rte

    glue = write_rte(tmp_path / "glue", n_train=30, n_dev=10)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    with_majority = prepare_task_data(get_task("RTE"), tokenizer, glue, with_train=False, with_majority=True)
    train = np.array([e.label for e in read_glue_split(get_task("RTE"), glue, "train")])
    dev = np.array([e.label for e in read_glue_split(get_task("RTE"), glue, "dev")])
    assert with_majority.majority["dev"] == majority_baseline(get_task("RTE"), train, dev)
    assert with_majority.train is None
    (glue / "RTE" / "train.tsv").unlink()
    alone = prepare_task_data(get_task("RTE"), tokenizer, glue, with_train=False)
    assert alone.majority is None and len(alone.evals["dev"].labels) == 10
