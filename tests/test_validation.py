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
    # found by a second hostile pass: accepted, or refused late in other words than the config's
    (["finetune", "--task", "RTE", "--out", "x", "--holdout-fraction", "2"], "--holdout-fraction must be in [0, 1), got 2"),
    (["finetune", "--task", "RTE", "--out", "x", "--holdout-fraction", "nan"], "--holdout-fraction must be in [0, 1)"),
    (["retrain", "run", "--mask", "m", "--out", "x", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["subnetworks", "m", "--seed", "-1", "--out", "x"], "--seed must be at least 0, got -1"),
    (["subnetworks", "m", "--seed", "4294967296", "--out", "x"], "--seed must be below 4294967296"),
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


# ---- --max-length and train.max_length against the model's positions (issue 14, item 5) -----------------

def _config_only(path: Path, family: str) -> Path:
    """A model folder holding only a tiny config of ``family`` (64 position rows): enough for a check that
    must come before any weight or tokenizer is read."""
    from tiny import tiny_config

    tiny_config(family).save_pretrained(path)
    return path


@pytest.mark.parametrize("family,limit", [("bert", 64), ("roberta", 62), ("mpnet", 62), ("distilbert", 64)])
def test_the_positions_a_model_holds_count_the_rows_its_family_reserves(family, limit, tmp_path):
    from bertlottery.models import max_tokens

    assert max_tokens(_config_only(tmp_path / family, family)) == limit


def test_a_model_with_only_relative_positions_has_no_length_limit(tmp_path):
    from bertlottery.models import max_tokens
    from tiny import tiny_config

    config = tiny_config("deberta-v3")
    config.position_biased_input = False  # as the released DeBERTa-v3 checkpoints
    config.save_pretrained(tmp_path)
    assert max_tokens(tmp_path) is None


@pytest.mark.parametrize("family,asked,limit", [("bert", 65, 64), ("roberta", 63, 62), ("mpnet", 64, 62)])
@pytest.mark.parametrize("command", ["finetune", "baseline"])
def test_a_max_length_asked_beyond_the_positions_is_refused_before_anything_runs(command, family, asked, limit,
                                                                                 tmp_path, capsys, monkeypatch):
    model = _config_only(tmp_path / "model", family)  # no weights, no tokenizer: the check comes first
    monkeypatch.chdir(tmp_path)
    size_of = ["--size-of", "unused.safetensors"] if command == "baseline" else []
    argv = ([command, "random-init"] if command == "baseline" else [command]) + [
        "--model", str(model), "--task", "RTE", "--out", "out", "--max-length", str(asked), *size_of]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--max-length {asked} is beyond the {limit} positions of the model {model}; give at most {limit}" in err
    assert not (tmp_path / "out").exists()


def test_the_default_length_is_fitted_to_a_smaller_model_with_a_notice(tiny_model_dir, env, capsys):
    from tiny import write_rte

    glue = write_rte(env / "glue", n_train=8, n_dev=8)
    base = ["finetune", "--model", str(tiny_model_dir), "--task", "RTE", "--glue-dir", str(glue), "--epochs", "1",
            "--batch-size", "8", "--no-progress"]
    assert main([*base, "--out", str(env / "default")]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("bertlottery: note:")]
    assert notes == [f"bertlottery: note: --max-length: the default 128 is beyond the 64 positions of the model "
                     f"{tiny_model_dir}; using 64."]
    assert json.loads((env / "default" / "config.json").read_text())["train"]["max_length"] == 64
    # asked for, the model's own 64 is accepted silently; evaluate then measures at the run's length
    assert main([*base, "--out", str(env / "asked"), "--max-length", "64"]) == 0
    assert "note:" not in capsys.readouterr().out
    assert main(["evaluate", str(env / "asked"), "--glue-dir", str(glue)]) == 0
    assert "note:" not in capsys.readouterr().out


def test_evaluate_fits_a_length_recorded_beyond_the_positions(tiny_model_dir, env, capsys):
    """A run fine-tuned before lengths were fitted could record 128 for a 64-position model."""
    import shutil

    from tiny import write_rte

    glue = write_rte(env / "glue", n_train=8, n_dev=8)
    run = env / "run"
    assert main(["finetune", "--model", str(tiny_model_dir), "--task", "RTE", "--glue-dir", str(glue), "--epochs", "1",
                 "--out", str(run), "--no-progress", "--max-length", "64"]) == 0
    config = json.loads((run / "config.json").read_text())
    config["train"]["max_length"] = 128
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--glue-dir", str(glue)]) == 0
    assert "the default 128 is beyond the 64 positions" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--glue-dir", str(glue), "--format", "json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # a notice never mixes into JSON output: it goes to stderr then
    assert "the default 128 is beyond the 64 positions" in captured.err
    shutil.rmtree(run)


@pytest.mark.parametrize("override,message", [
    ("train.max_length=65", "train.max_length 65 is beyond the 64 positions"),
    ("train.per_task={RTE: {max_length: 100}}", "train.per_task.RTE.max_length 100 is beyond the 64 positions"),
    # too short for [CLS] a [SEP] b [SEP] and one token of text
    ("train.max_length=2", "train.max_length=2 cannot hold the special tokens of"),
    ("train.per_task={RTE: {max_length: 3}}", "train.per_task.RTE.max_length=3 cannot hold the special tokens of"),
])
def test_run_refuses_a_configured_length_beyond_the_positions_before_touching_the_run_dir(override, message,
                                                                                         tiny_model_dir, tmp_path,
                                                                                         capsys):
    run_dir = tmp_path / "study"
    assert main(["run", str(SMOKE), f"model={tiny_model_dir}", "glue_dir=null", override, "--run-dir", str(run_dir),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert "positions" in err or "text of RTE (sentence pairs); use at least 4" in err
    assert not run_dir.exists()


def test_run_fits_the_default_length_before_the_stages_are_named(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from bertlottery.cli import study

    seen = {}

    def record(args, config, stages, run_dir):
        seen.update(config=config, stages=stages)
        return 0

    monkeypatch.setattr(study, "_run", record)
    assert main(["run", str(SMOKE), f"model={tiny_model_dir}", "glue_dir=null", "--run-dir", str(tmp_path / "study"),
                 "--no-progress"]) == 0
    assert "train.max_length: the default 128 is beyond the 64 positions" in capsys.readouterr().out
    assert seen["config"].train.max_length == 64
    trained = [s for s in seen["stages"] if s.kind == "finetune"]
    assert trained and all(s.settings["train"]["max_length"] == 64 for s in trained)


@pytest.mark.parametrize("argv", [["evaluate", "no-such-run"], ["baseline", "majority", "--task", "RTE"]])
def test_a_json_out_that_is_a_folder_is_refused_before_the_work(argv, tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    assert main([*argv, "--out", str(folder)]) == 2  # was a traceback (IsADirectoryError) after the evaluation
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--out {folder} is a folder; give the name of the JSON file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"] and not any(folder.iterdir())


def test_a_json_write_that_fails_leaves_no_temporary_file(tmp_path):
    from bertlottery import runs

    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        runs.write_json(tmp_path / "taken", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # was: .taken.tmp-<pid> left behind


@pytest.mark.parametrize("override,message", [
    ("glue_dir=/no/such/glue", "glue_dir /no/such/glue does not exist"),  # was: every fine-tuning stage failed alone
    ("resources.cpus_per_stage=100000", "resources.cpus_per_stage 100000 is more than the"),  # was: a traceback
])
def test_run_refuses_what_this_machine_cannot_give_before_touching_the_run_dir(override, message, tmp_path, capsys):
    run_dir = tmp_path / "study"
    assert main(["run", str(SMOKE), override, "--run-dir", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not run_dir.exists()


def test_evaluating_a_run_on_a_task_with_another_number_of_labels_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "RTE", "train": {"max_length": 64}}))
    # was a RuntimeError traceback from transformers (a 2-output head loaded for STS-B's 1)
    assert main(["evaluate", str(run), "--task", "STS-B"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "was fine-tuned on RTE (2 outputs), which STS-B (1) cannot be evaluated with" in err


def test_run_accepts_the_shortest_length_that_holds_the_special_tokens(tiny_model_dir, tmp_path, monkeypatch):
    from bertlottery.cli import study

    seen = {}
    monkeypatch.setattr(study, "_run", lambda args, config, stages, run_dir: seen.update(config=config) or 0)
    assert main(["run", str(SMOKE), f"model={tiny_model_dir}", "glue_dir=null", "train.max_length=4",
                 "--run-dir", str(tmp_path / "study"), "--no-progress"]) == 0
    assert seen["config"].train.max_length == 4
