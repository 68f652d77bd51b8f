"""Property-based: random and mutated configs and CLI arguments either validate or are refused with
one line and exit status 2, never a traceback (issue 14)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertlottery.cli import main
from bertlottery.config import from_dict
from bertlottery.errors import UserError
from bertlottery.studies import expand

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
BASE = yaml.safe_load(SMOKE.read_text())

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**40, max_value=2**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["../x", "", "RTE", "structured", "bad", "1e-4", "three", "heads"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def _paths(data, prefix=()):
    """Every key path of a nested mapping (sections and their leaves)."""
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


PATHS = sorted(set(_paths(BASE)) | {("train", "per_task"), ("train", "per_task", "RTE"),
                                    ("train", "per_task", "RTE", "epochs"), ("longer_retraining", "epochs"),
                                    ("pruning", "structured", "batch_size"), ("pruning", "magnitude", "step_fraction")})


def _mutate(data: dict, path: tuple, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return data


def _one_line_or_valid(data) -> None:
    try:
        config = from_dict(data, source="mutated")
    except UserError as error:
        assert "\n" not in str(error) and str(error).strip()
        return
    assert expand(config)  # a config that validates expands into stages


@FAST
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_mutated_configs_validate_or_are_refused_in_one_line(mutations):
    data = BASE
    for path, value in mutations:
        data = _mutate(data, path, value)
    _one_line_or_valid(data)


@FAST
@given(values)
def test_random_data_as_a_config_is_refused_in_one_line_or_validates(data):
    _one_line_or_valid(data)


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@FAST
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=2))
def test_the_run_command_on_a_mutated_config_says_one_line_or_starts(mutations):
    """Through the real CLI, in-process; the study itself is not run (a config that validates gets as
    far as the stage graph)."""
    data = _mutate(BASE, ("glue_dir",), None)  # smoke.yaml's relative GLUE folder exists only beside /work/main
    for path, value in mutations:
        data = _mutate(data, path, value)
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "config.yaml"
        config.write_text(yaml.safe_dump(data))
        with mock.patch("bertlottery.cli.study._run", return_value=0):
            code, err = _cli(["run", str(config), "--run-dir", str(Path(scratch) / "run"), "--no-progress"])
    assert (code, err) == (0, "") or (code == 2 and len(err.strip().splitlines()) == 1), err


numbers = st.one_of(st.integers(min_value=-10**12, max_value=10**12).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr).map(lambda s: s.replace("nan", "nan")))
whole = st.integers(min_value=-2**40, max_value=2**40).map(str)


@FAST
@given(st.fixed_dictionaries({}, optional={"--lr": numbers, "--warmup-ratio": numbers, "--weight-decay": numbers,
                                           "--seed": whole, "--epochs": whole, "--batch-size": whole,
                                           "--max-train-examples": whole, "--max-length": whole}))
def test_training_arguments_are_checked_by_the_same_rules_as_the_config(options):
    argv = ["finetune", "--model", "minilm-l6", "--task", "RTE", "--out", "unused"]  # its positions known offline
    for flag, value in options.items():
        argv += [f"{flag}={value}"]
    with mock.patch("bertlottery.steps.finetune.finetune_run", side_effect=AssertionError("reached")) as run:
        try:
            code, err = _cli(argv)
        except AssertionError:
            code, err = 0, ""
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    else:
        assert run.called and code == 0
        settings_given = run.call_args.kwargs["settings"]
        assert not settings_given.problems()


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lr=st.floats(min_value=1e-6, max_value=1.0), warmup=st.floats(min_value=0, max_value=1),
       decay=st.floats(min_value=0, max_value=0.1), examples=st.integers(min_value=1, max_value=12))
def test_a_config_that_validates_runs_a_tiny_stage(tiny_model_dir, lr, warmup, decay, examples):
    from bertlottery.studies import execute

    from tiny import write_rte

    with tempfile.TemporaryDirectory() as scratch:
        glue = write_rte(Path(scratch) / "glue", n_train=12, n_dev=6)
        config = from_dict(_mutate(_mutate(_mutate(_mutate(BASE, ("train", "learning_rate"), lr),
                                                   ("train", "warmup_ratio"), warmup), ("train", "weight_decay"), decay),
                                   ("train", "max_train_examples"), examples)
                           | {"model": str(tiny_model_dir), "glue_dir": str(glue)}, source="drawn")
        stage = next(s for s in expand(config) if s.kind == "finetune")
        rows = execute(stage, Path(scratch) / "stage", {}, config, False)
        assert rows and all(row.value == row.value for row in rows)  # a metric, not NaN


def test_one_drawn_config_runs_a_tiny_stage(tiny_model_dir, tmp_path):
    """The short variant of the test above: one config that validates runs its fine-tuning stage."""
    from bertlottery.studies import execute

    from tiny import write_rte

    glue = write_rte(tmp_path / "glue", n_train=12, n_dev=6)
    data = _mutate(_mutate(BASE, ("train", "warmup_ratio"), 1.0), ("train", "max_train_examples"), 5)
    config = from_dict(data | {"model": str(tiny_model_dir), "glue_dir": str(glue)}, source="drawn")
    stage = next(s for s in expand(config) if s.kind == "finetune")
    rows = execute(stage, tmp_path / "stage", {}, config, False)
    assert rows and all(row.value == row.value for row in rows)
