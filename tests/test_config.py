"""Experiment configs: typed, validated, every problem at once, overrides on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertlottery.config import ConfigError, ExperimentConfig, from_dict, load, to_dict
from bertlottery.errors import UserError

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"

SMALL = {
    "name": "small",
    "model": "minilm-l6",
    "tasks": ["RTE", "MRPC"],
    "seeds": [1, 2],
    "train": {"learning_rate": 1e-4, "epochs": 2, "per_task": {"RTE": {"epochs": 4}}},
    "pruning": {"keep_fraction": 0.9, "structured": {"mode": "heads"}},
}


def test_a_valid_config_builds_typed_frozen_values_with_defaults():
    config = from_dict(SMALL)
    assert isinstance(config, ExperimentConfig)
    assert config.train.learning_rate == 1e-4 and config.train.batch_size == 32  # default kept
    assert config.pruning.structured.mode == "heads" and config.pruning.magnitude.scope == "global"
    assert config.methods == ["structured", "magnitude"] and config.longer_retraining is None
    with pytest.raises(AttributeError):
        config.train.epochs = 5  # frozen
    assert to_dict(config)["train"]["per_task"] == {"RTE": {"epochs": 4}}


def test_the_papers_defaults_are_the_defaults():
    config = from_dict({"name": "paper"})
    assert config.model == "bert-base-uncased"
    assert config.seeds == [1337, 42, 86, 71, 166]
    assert len(config.tasks) == 9
    assert (config.train.learning_rate, config.train.epochs, config.train.batch_size, config.train.max_length) == (
        2e-5, 3, 32, 128)
    assert config.pruning.keep_fraction == 0.9 and config.pruning.structured.batch_size == 64


def test_a_misspelt_key_fails_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'train.learnig_rate'. Did you mean 'learning_rate'\?"):
        from_dict({**SMALL, "train": {"learnig_rate": 1e-4}})
    with pytest.raises(ConfigError, match=r"unknown key 'sedes'. Did you mean 'seeds'\?"):
        from_dict({**SMALL, "sedes": [1]})


def test_every_problem_is_reported_at_once():
    bad = {
        "name": "x",
        "tasks": ["RTEE"],
        "methods": ["magntude"],
        "train": {"epochs": 0, "batch_size": "big"},
        "pruning": {"keep_fraction": 1.5, "compat": "prasana2020"},
    }
    with pytest.raises(ConfigError) as info:
        from_dict(bad)
    problems = info.value.problems
    text = " | ".join(problems)
    assert "Did you mean 'RTE'" in text
    assert "Did you mean 'magnitude'" in text
    assert "train.epochs must be at least 1" in text
    assert "train.batch_size must be a whole number" in text
    assert "pruning.keep_fraction must be in (0, 1]" in text
    assert "Did you mean 'prasanna2020'" in text
    assert len(problems) >= 6
    assert isinstance(info.value, UserError)  # the CLI prints it on one line and exits 2
    assert "\n" not in str(info.value)


def test_missing_name_and_wrong_shapes():
    with pytest.raises(ConfigError, match="missing key 'name'"):
        from_dict({"tasks": ["RTE"]})
    with pytest.raises(ConfigError, match="tasks must be a list"):
        from_dict({"name": "x", "tasks": "RTE"})
    with pytest.raises(ConfigError, match="per_task.RTE.epoch'. Did you mean 'epochs'"):
        from_dict({"name": "x", "train": {"per_task": {"RTE": {"epoch": 2}}}})


def test_heldout_scoring_needs_a_holdout_fraction():
    with pytest.raises(ConfigError, match="holdout_fraction is 0"):
        from_dict({"name": "x", "pruning": {"structured": {"scoring_split": "heldout"}}})
    config = from_dict({"name": "x", "train": {"holdout_fraction": 0.1},
                        "pruning": {"structured": {"scoring_split": "heldout"}}})
    assert config.train.holdout_fraction == 0.1


def test_overrides_from_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# bertlottery run c.yaml\nname: c\nmodel: minilm-l6\ntasks: [CoLA]\ntrain:\n  epochs: 3\n")
    config = load(path, ["tasks=[RTE, MRPC]", "seeds=[42]", "train.epochs=1", "pruning.structured.mode=mlps",
                         "train.learning_rate=1e-4"])
    assert config.train.learning_rate == 1e-4  # YAML 1.1 reads 1e-4 as a string; it is still a number
    assert config.tasks == ["RTE", "MRPC"] and config.seeds == [42]
    assert config.train.epochs == 1 and config.pruning.structured.mode == "mlps"
    with pytest.raises(ConfigError, match="unknown key 'train.epoks'"):
        load(path, ["train.epoks=1"])
    with pytest.raises(ConfigError, match="not key=value"):
        load(path, ["train.epochs"])


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntasks: [RTE\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(listing)


def test_the_old_name_threshold_is_read_as_keep_fraction_with_a_warning():
    with pytest.warns(FutureWarning, match="pruning.threshold is now called pruning.keep_fraction"):
        config = from_dict({**SMALL, "pruning": {"threshold": 0.8}})
    assert config.pruning.keep_fraction == 0.8
    with pytest.raises(ConfigError, match="pruning.threshold was renamed pruning.keep_fraction"):
        from_dict({**SMALL, "pruning": {"threshold": 0.8, "keep_fraction": 0.9}})


def test_the_resolved_config_reads_back_the_same():
    config = from_dict(SMALL)
    assert "seed" not in to_dict(config)["train"]  # the seeds come from `seeds`, not train:
    assert from_dict(to_dict(config)) == config


def test_the_configs_copies_of_torch_module_names_agree_with_them():
    from bertlottery.config import FISHER_COSTS, FISHER_LABELS, MAGNITUDE_TENSOR_SETS, STRUCTURED_MODES
    from bertlottery.export import COSTS
    from bertlottery.fisher import LABEL_SOURCES
    from bertlottery.importance import TENSOR_SETS
    from bertlottery.pruning import STRUCTURED_MODES as SEARCH_MODES

    assert tuple(STRUCTURED_MODES) == tuple(SEARCH_MODES)
    assert tuple(MAGNITUDE_TENSOR_SETS) == tuple(TENSOR_SETS)
    assert tuple(FISHER_COSTS) == tuple(COSTS)
    assert tuple(FISHER_LABELS) == tuple(LABEL_SOURCES)


def test_the_fisher_method_is_asked_for_by_name_and_its_budget_is_checked():
    config = from_dict({"name": "x"})
    assert config.methods == ["structured", "magnitude"]  # configs without fisher keep their graphs
    assert config.pruning.fisher.examples == 2048 and config.pruning.fisher.budget_fraction is None
    config = from_dict({"name": "x", "methods": ["structured", "fisher"], "pruning": {"fisher": {"examples": 64}}})
    assert config.pruning.fisher.examples == 64
    with pytest.raises(ConfigError) as error:
        from_dict({"name": "x", "methods": ["fisher"]})
    assert "methods has no structured" in str(error.value)
    assert from_dict({"name": "x", "methods": ["fisher"], "pruning": {"fisher": {"budget_fraction": 0.5}}})
    with pytest.raises(ConfigError) as error:
        from_dict({"name": "x", "methods": ["fishr"], "pruning": {"fisher": {
            "budget_fraction": 1.5, "budget": 10, "cost": "flops", "examples": 0, "labls": "gold"}}})
    message = str(error.value)
    for part in ("Did you mean 'fisher'", "budget_fraction must be in (0, 1]", "not both", "pruning.fisher.cost",
                 "examples must be at least 1", "unknown key 'pruning.fisher.labls'"):
        assert part in message, part


def test_longer_retraining_can_be_limited_to_some_seeds():
    """``longer_retraining.seeds`` gives the long re-fine-tunings to those seeds alone, leaves every other
    stage's id as it was, and must name seeds of the study."""
    from bertlottery.studies import expand

    common = ["seeds=[1,2,3]", "longer_retraining.subnetworks=[good,bad]"]
    every = expand(load(SMOKE, common))
    one = expand(load(SMOKE, [*common, "longer_retraining.seeds=[2]"]))
    long_of = lambda stages: {s.id for s in stages if s.keys.get("mode") == "retrained-long"}  # noqa: E731
    assert long_of(every) and all(s.keys["seed"] == 2 for s in one if s.id in long_of(one))
    assert long_of(one) == {i for i in long_of(every) if "/seed2-" in i}
    assert {s.id for s in one} == {s.id for s in every} - (long_of(every) - long_of(one))
    with pytest.raises(ConfigError, match=r"longer_retraining.seeds must be among the study's seeds \[1, 2, 3\], "
                                          r"got \[4\]"):
        load(SMOKE, [*common, "longer_retraining.seeds=[4]"])
