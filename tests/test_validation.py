"""Every bad value is refused before anything runs, in one place, all problems at once; the CLI's
arguments go through the same checks; no traceback for a bad file (issue 14, items 5 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertlottery.cli import main
from bertlottery.config import ConfigError, load

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"

REFUSED = [
    ("train.learning_rate=.nan", "train.learning_rate must be a finite number"),
    ("train.learning_rate=.inf", "train.learning_rate must be a finite number"),
    ("train.learning_rate=0", "train.learning_rate must be positive"),
    ("train.learning_rate=-1e-5", "train.learning_rate must be positive"),
    ("train.max_train_examples=0", "train.max_train_examples must be at least 1"),
    ("train.max_train_examples=-3", "train.max_train_examples must be at least 1"),
    ("train.warmup_ratio=5", "train.warmup_ratio must be at most 1"),
    ("train.warmup_ratio=-0.1", "train.warmup_ratio must be at least 0"),
    ("train.weight_decay=-0.01", "train.weight_decay must be at least 0"),
    ("train.holdout_fraction=.nan", "train.holdout_fraction must be in [0, 1)"),
    ("pruning.magnitude.step_fraction=0", "pruning.magnitude.step_fraction must be in (0, 1]"),
    ("pruning.magnitude.step_fraction=1.5", "pruning.magnitude.step_fraction must be in (0, 1]"),
    ("pruning.keep_fraction=.nan", "pruning.keep_fraction must be in (0, 1]"),
    ("longer_retraining.epochs=0", "longer_retraining.epochs must be at least 1"),
    ("longer_retraining.epochs=-2", "longer_retraining.epochs must be at least 1"),
    ("name=''", "name must be a plain folder name"),
    ("name=../elsewhere", "name must be a plain folder name"),
    ("name=a/b", "name must be a plain folder name"),
    ("seeds=[-1]", "seeds must be in [0, 2**32)"),
    ("seeds=[4294967296]", "seeds must be in [0, 2**32)"),
    ("pruning.structured.batch_size=0", "pruning.structured.batch_size must be at least 1"),
    ("train.per_task={RTE: 5}", "train.per_task.RTE must be a mapping of train keys"),
    ("train.per_task={RTE: {epochs: three}}", "train.per_task.RTE.epochs must be a whole number"),
    ("train.per_task={RTE: {epochs: 0}}", "train.per_task.RTE.epochs must be at least 1"),
    ("train.per_task={RTE: {learning_rate: .nan}}", "train.per_task.RTE.learning_rate must be a finite number"),
    ("train.per_task={RTE: {max_train_examples: -3}}", "train.per_task.RTE.max_train_examples must be at least 1"),
]


@pytest.mark.parametrize("override,message", REFUSED, ids=[o for o, _ in REFUSED])
def test_a_value_out_of_range_is_refused_with_its_name(override, message):
    with pytest.raises(ConfigError) as error:
        load(SMOKE, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_problem_is_listed_at_once():
    distinct = list({override.split("=")[0]: (override, message) for override, message in REFUSED}.values())
    assert len(distinct) >= 12
    with pytest.raises(ConfigError) as error:
        load(SMOKE, [override for override, _ in distinct])
    text = str(error.value)
    assert f"{len(distinct)} problems" in text and all(message in text for _, message in distinct)


def test_per_task_values_are_typed_like_the_train_section():
    config = load(SMOKE, ["train.per_task={RTE: {learning_rate: 1e-4, epochs: 2}}"])
    assert config.train.for_task("RTE", 1)["learning_rate"] == 1e-4  # YAML 1.1 reads 1e-4 as text


@pytest.mark.parametrize("argv,message", [
    (["finetune", "--task", "RTE", "--out", "x", "--lr", "nan"], "--lr must be a finite number"),
    (["finetune", "--task", "RTE", "--out", "x", "--seed", "-1"], "--seed must be at least 0"),
    (["finetune", "--task", "RTE", "--out", "x", "--max-train-examples", "-3"], "--max-train-examples must be at least 1"),
    (["finetune", "--task", "RTE", "--out", "x", "--warmup-ratio", "5", "--lr", "inf"],
     "--lr must be a finite number, got inf; --warmup-ratio must be at most 1"),
    (["quickstart", "--seed", "-1", "--out", "x"], "--seed must be at least 0"),
    (["quickstart", "--max-train-examples", "-3", "--out", "x"], "--max-train-examples must be at least 1"),
])
def test_the_cli_arguments_go_through_the_same_checks(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_max_length_beyond_the_models_positions_is_one_line(tiny_model_dir, env, capsys):
    from tiny import write_rte

    glue = write_rte(env / "glue", n_train=8, n_dev=8)
    assert main(["evaluate", str(tiny_model_dir), "--task", "RTE", "--glue-dir", str(glue), "--max-length", "65"]) == 2
    assert "--max-length 65 is beyond the 64 positions" in capsys.readouterr().err


def test_bad_files_and_folders_are_one_line(tmp_path, capsys):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    folder = tmp_path / "cfg"
    folder.mkdir()
    for argv, message in ((["run", str(latin)], "is not UTF-8 text"), (["run", str(folder)], "is a directory")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err


def test_status_reads_a_stage_record_whose_seconds_is_not_a_number(tmp_path, capsys):
    from bertlottery.config import to_dict
    from bertlottery.pipeline import stage_dir
    from bertlottery.studies import expand

    config = load(SMOKE)
    run_dir = tmp_path / "run"
    stage = expand(config)[0]
    stage_dir(run_dir, stage).mkdir(parents=True)
    (stage_dir(run_dir, stage) / "stage.json").write_text(json.dumps({"id": stage.id, "seconds": "soon",
                                                                      "energy_kwh": [1]}))
    (run_dir / "config.json").write_text(json.dumps(to_dict(config)))
    assert main(["status", str(run_dir)]) == 0
    assert "stage time 0.00 h" in capsys.readouterr().out
