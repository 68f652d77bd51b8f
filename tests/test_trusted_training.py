"""Issue 16 wired into the steps and the study: capped training draws a seeded stratified sample and
records it, the majority class comes from what was trained on, the learnt-check and the pruning
criterion reach the prune stage, and a model that learnt nothing is skipped, not searched."""

from __future__ import annotations

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
