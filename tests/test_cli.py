"""The real entry point, end to end, on a tiny model saved to disk and a tiny GLUE folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bertlottery import runs
from bertlottery.cli import main
from bertlottery.masks import HeadMask, Masks, MlpMask, WeightMask, save_masks

from tiny import RTE_HEADER, tiny_config, write_rte

def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def finetune(model_dir, glue, out, *extra):
    return run_cli("finetune", "--model", model_dir, "--task", "RTE", "--glue-dir", glue, "--out", out,
                   "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-progress", *extra)


def test_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "bertlottery.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("quickstart", "finetune", "evaluate", "masks"):
        assert command in out.stdout


def test_finetune_writes_a_complete_run_that_evaluate_reproduces(env, tiny_model_dir, capsys):
    glue = write_rte(env / "glue")
    out = env / "run"
    assert finetune(tiny_model_dir, glue, out) == 0
    assert runs.is_complete_run(out)
    assert (out / "model" / "model.safetensors").is_file()
    record = json.loads((out / "metrics.json").read_text())
    assert record["task"] == "RTE" and record["splits"]["dev"]["metrics"]["n_examples"] == 20
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["learning_rate"] == 1e-3 and config["train"]["seed"] == 42
    environment = json.loads((out / "environment.json").read_text())
    assert environment["packages"]["torch"] and environment["packages"]["transformers"]
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 2
    assert not [p for p in env.iterdir() if p.name.startswith(".run")], "scratch directory left behind"

    capsys.readouterr()
    assert run_cli("evaluate", out, "--glue-dir", glue, "--format", "json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["splits"]["dev"]["metrics"] == record["splits"]["dev"]["metrics"]


def test_same_seed_same_run_and_other_seed_another(env, tiny_model_dir):
    glue = write_rte(env / "glue")
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert finetune(tiny_model_dir, glue, env / name, "--seed", str(seed)) == 0
    a, b, c = (load_file(env / n / "model" / "model.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a), "the same seed gave different weights"
    assert not torch.equal(a["classifier.weight"], c["classifier.weight"])


def test_finetune_under_a_mask_keeps_it_fixed(env, tiny_model_dir):
    glue = write_rte(env / "glue")
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    keep = torch.rand(37, 32, generator=torch.Generator().manual_seed(0)) > 0.5
    mask_file = save_masks(
        env / "m.safetensors",
        Masks(heads=HeadMask(torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]])), mlps=MlpMask(torch.tensor([1, 0])),
              weights=WeightMask({name: keep})),
    )
    assert finetune(tiny_model_dir, glue, env / "run", "--mask", mask_file) == 0
    weights = load_file(env / "run" / "model" / "model.safetensors")
    assert torch.count_nonzero(weights[name][~keep]) == 0
    assert torch.count_nonzero(weights[name][keep]) == int(keep.sum())
    record = json.loads((env / "run" / "metrics.json").read_text())
    assert record["body_fraction_kept"] < 0.7


def test_a_failed_run_leaves_nothing_that_looks_complete(env, tiny_model_dir, monkeypatch):
    import bertlottery.steps.finetune as finetune_step

    glue = write_rte(env / "glue")

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(finetune_step, "evaluate_model", crash)
    with pytest.raises(RuntimeError, match="killed"):
        finetune(tiny_model_dir, glue, env / "run")
    assert not (env / "run").exists()
    assert not list(env.glob(".run*"))


# ---- bad input: one line, exit status 2, no traceback -------------------------------------------

def assert_user_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_unknown_task(env, tiny_model_dir, capsys):
    code = run_cli("finetune", "--model", tiny_model_dir, "--task", "RTEE", "--out", env / "r", "--glue-dir", env)
    assert_user_error(capsys, code, "Unknown task 'RTEE'", "Did you mean 'RTE'")


def test_glue_dir_that_does_not_exist(env, tiny_model_dir, capsys):
    code = finetune(tiny_model_dir, env / "missing", env / "r")
    assert_user_error(capsys, code, "does not exist", "--glue-dir")


def test_missing_glue_file(env, tiny_model_dir, capsys):
    (env / "glue" / "RTE").mkdir(parents=True)
    code = finetune(tiny_model_dir, env / "glue", env / "r")
    assert_user_error(capsys, code, "train.tsv")


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "empty"),
        (RTE_HEADER + "0\ta b\tc\n1\ta b\tentailment\n", "column"),
        (RTE_HEADER + "0\ta b\tc\tmaybe\n", "maybe"),
    ],
    ids=["empty-file", "wrong-column-count", "unparsable-label"],
)
def test_malformed_glue_file(env, tiny_model_dir, capsys, content, needle):
    glue = write_rte(env / "glue")
    (glue / "RTE" / "train.tsv").write_text(content)
    code = finetune(tiny_model_dir, glue, env / "r")
    assert_user_error(capsys, code, needle, "train.tsv")
    assert not (env / "r").exists()


def test_mask_that_does_not_fit_the_model(env, tiny_model_dir, capsys):
    glue = write_rte(env / "glue")
    mask_file = save_masks(env / "big.safetensors", Masks(heads=HeadMask.full(12, 12)))
    code = finetune(tiny_model_dir, glue, env / "r", "--mask", mask_file)
    assert_user_error(capsys, code, "(12, 12)", "(2, 4)")


def test_unsupported_architecture(env, capsys):
    from transformers import AutoModel

    path = env / "gpt2"
    AutoModel.from_config(tiny_config("gpt2")).save_pretrained(path)
    code = finetune(path, write_rte(env / "glue"), env / "r")
    assert_user_error(capsys, code, "Unsupported architecture 'gpt2'", "bert", "roberta", "electra")


def test_model_path_that_does_not_exist(env, capsys):
    code = finetune(env / "no-such-model", write_rte(env / "glue"), env / "r")
    assert_user_error(capsys, code, "does not exist")


def test_existing_output_is_not_overwritten_silently(env, tiny_model_dir, capsys):
    (env / "r").mkdir()
    (env / "r" / "notes.txt").write_text("mine")  # an empty folder is written into (issue 14's rule): this one is not
    code = finetune(tiny_model_dir, write_rte(env / "glue"), env / "r")
    assert_user_error(capsys, code, "is not empty and was not written by bertlottery", "--overwrite")
    assert [p.name for p in (env / "r").iterdir()] == ["notes.txt"]


def test_bad_input_through_a_real_process_has_no_traceback(env):
    out = subprocess.run(
        [sys.executable, "-m", "bertlottery.cli", "finetune", "--model", "minilm-l6", "--task", "nope",
         "--out", str(env / "r"), "--glue-dir", str(env)],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("bertlottery: error: Unknown task 'nope'")
    assert len(out.stderr.strip().splitlines()) == 1
