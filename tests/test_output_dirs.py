"""The one rule for commands that write a folder (`runs.prepare_output_dir`): new, empty or its own
kind; anything else only with --overwrite, and never deleted."""

from __future__ import annotations

import pytest

from bertlottery.errors import UserError
from bertlottery.runs import prepare_output_dir


def test_new_and_empty_folders_are_created_and_marked_as_the_kind(tmp_path):
    new = prepare_output_dir(tmp_path / "a" / "b", "report")
    assert new == tmp_path / "a" / "b" and [p.name for p in new.iterdir()] == [".bertlottery-report"]
    (tmp_path / "empty").mkdir()
    assert [p.name for p in prepare_output_dir(tmp_path / "empty", "report").iterdir()] == [".bertlottery-report"]
    (new / "report.html").write_text("<html>")
    assert prepare_output_dir(new, "report") == new  # its own kind again: no --overwrite needed
    assert (new / "report.html").read_text() == "<html>"  # nothing is deleted here


def test_anything_else_is_refused_in_one_line_and_left_untouched(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a month of work")
    with pytest.raises(UserError, match=r"mine is not empty and was not written by bertlottery for report output; "
                                        r"choose another folder, or pass --overwrite") as error:
        prepare_output_dir(foreign, "report")
    assert "\n" not in str(error.value)
    run = prepare_output_dir(tmp_path / "run", "run")
    (run / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"run holds bertlottery run output, not report output; choose another"):
        prepare_output_dir(run, "report")
    (tmp_path / "file").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="is a file, not a folder"):
            prepare_output_dir(tmp_path / "file", "report", overwrite=overwrite)
    with pytest.raises(UserError, match="Cannot write to .*file/out"):
        prepare_output_dir(tmp_path / "file" / "out", "report")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in run.iterdir()) == [".bertlottery-run", "config.json"]


def test_overwrite_writes_into_a_foreign_folder_without_claiming_it(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a month of work")
    assert prepare_output_dir(foreign, "report", overwrite=True) == foreign
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]  # not marked: the next command asks again
    with pytest.raises(UserError, match="--overwrite"):
        prepare_output_dir(foreign, "report")
    with pytest.raises(ValueError, match="plain name"):
        prepare_output_dir(tmp_path / "x", "../report")


# ---- finetune, retrain, export, prune and subnetworks through the real CLI (issue 14, item 2) --------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from bertlottery.cli import main  # noqa: E402


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name or ".tmp-" in p.name]


@pytest.fixture(scope="module")
def finetuned(tiny_model_dir, tmp_path_factory):
    """A tiny fine-tuning run and a head/MLP mask of it (every other head kept), built once."""
    import os

    import torch

    from bertlottery.masks import HeadMask, Masks, MlpMask, save_masks
    from tiny import write_rte

    root = tmp_path_factory.mktemp("outdirs")
    os.environ["BERTLOTTERY_CACHE"] = str(root / "cache")
    glue = write_rte(root / "glue", n_train=16, n_dev=8)
    run = root / "run"
    assert main(["finetune", "--model", str(tiny_model_dir), "--task", "RTE", "--glue-dir", str(glue), "--out", str(run),
                 "--epochs", "1", "--batch-size", "8", "--no-progress"]) == 0
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[:, ::2] = False
    save_masks(root / "mask.safetensors", Masks(heads=HeadMask(keep), mlps=MlpMask(torch.ones(2, dtype=torch.bool))))
    return {"root": root, "glue": glue, "run": run, "mask": root / "mask.safetensors", "model": tiny_model_dir}


def _argv(command: str, f: dict, out: Path) -> list[str]:
    if command == "finetune":
        return ["finetune", "--model", str(f["model"]), "--task", "RTE", "--glue-dir", str(f["glue"]), "--out", str(out),
                "--epochs", "1", "--batch-size", "8", "--no-progress"]
    if command == "retrain":
        return ["retrain", str(f["run"]), "--mask", str(f["mask"]), "--glue-dir", str(f["glue"]), "--out", str(out),
                "--no-progress"]
    if command == "prune":
        return ["prune", "magnitude", str(f["run"]), "--glue-dir", str(f["glue"]), "--out", str(out), "--no-progress"]
    if command == "subnetworks":
        return ["subnetworks", str(f["mask"]), "--seed", "1", "--out", str(out)]
    return ["export", str(f["run"]), "--mask", str(f["mask"]), "--out", str(out)]


COMMANDS = ["finetune", "retrain", "export", "prune", "subnetworks"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_foreign_folder_is_refused_before_any_work_and_left_untouched(command, finetuned, tmp_path, capsys,
                                                                         monkeypatch):
    from bertlottery.steps import export, finetune, prune, subnetworks

    def no_loading(*args, **kwargs):
        raise AssertionError("a model or mask was loaded before the folder was checked")

    for step in (export, finetune, prune):  # the names the steps call (retrain's is finetune's)
        monkeypatch.setattr(step, "load_model", no_loading)
    monkeypatch.setattr(subnetworks, "load_masks", no_loading)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a month of work")
    (out / "config.json").write_text('{"mine": true}')
    before = _tree(out)
    capsys.readouterr()
    assert main(_argv(command, finetuned, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"is not empty and was not written by bertlottery for {command} output" in err and "--overwrite" in err
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]


@pytest.mark.parametrize("command", COMMANDS)
def test_its_own_output_is_replaced_only_with_overwrite_and_another_kinds_never(command, finetuned, tmp_path,
                                                                                  capsys):
    out = tmp_path / "out"
    assert main(_argv(command, finetuned, out)) == 0
    assert (out / f".bertlottery-{command}").is_file()
    (out / "stale.txt").write_text("from an earlier version of this output")
    first = _tree(out)
    capsys.readouterr()
    assert main(_argv(command, finetuned, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"already holds {command} output" in err and "--overwrite" in err
    assert _tree(out) == first
    assert main([*_argv(command, finetuned, out), "--overwrite"]) == 0
    assert (out / f".bertlottery-{command}").is_file()
    assert not (out / "stale.txt").exists()  # its own folder is replaced as a whole: no file outlives it
    assert not _leftovers(tmp_path)
    # another command's output is not this command's to write into, --overwrite or not
    other = tmp_path / "other"
    other.mkdir()
    (other / ".bertlottery-report").write_text("")
    (other / "report.html").write_text("<html>")
    for extra in ([], ["--overwrite"]):
        assert main([*_argv(command, finetuned, other), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"holds bertlottery report output, not {command} output" in err
    assert sorted(p.name for p in other.iterdir()) == [".bertlottery-report", "report.html"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_failure_while_writing_leaves_nothing_half_written(command, finetuned, tmp_path, monkeypatch):
    import importlib

    # something the command calls inside its staged block: the process dies after it has written part
    module, name = {"finetune": ("bertlottery.runs", "environment"), "retrain": ("bertlottery.runs", "environment"),
                    "export": ("bertlottery.export", "save_exported"),
                    "prune": ("bertlottery.steps.prune", "save_masks"),
                    "subnetworks": ("bertlottery.steps.subnetworks", "save_masks")}[command]
    module = importlib.import_module(module)
    original = getattr(module, name)

    def half(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(module, name, half)
    new = tmp_path / "new"
    with pytest.raises(RuntimeError, match="killed while writing"):
        main(_argv(command, finetuned, new))
    assert not new.exists()  # no folder where there was none (not even an empty, marked one)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="killed while writing"):
        main([*_argv(command, finetuned, foreign), "--overwrite"])
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not _leftovers(tmp_path)


def test_an_unmarked_run_made_before_markers_is_recognised_as_a_finetune_run(finetuned, tmp_path, capsys):
    import shutil

    out = tmp_path / "old"
    shutil.copytree(finetuned["run"], out)
    (out / ".bertlottery-finetune").unlink()
    (out / "mask.safetensors").write_bytes(b"a file the new run does not write")
    capsys.readouterr()
    assert main(_argv("finetune", finetuned, out)) == 2
    assert "already holds finetune output" in capsys.readouterr().err  # recognised: asked before replacing
    assert main([*_argv("finetune", finetuned, out), "--overwrite"]) == 0
    assert not (out / "mask.safetensors").exists()  # replaced as a whole, not written into
    assert json.loads((out / "config.json").read_text())["task"] == "RTE"


def test_the_environment_records_the_code_the_process_imported_not_the_checkout_at_write_time(monkeypatch):
    """A long study writes stages for hours; a commit checked out meanwhile is not the code that ran."""
    import subprocess

    from bertlottery import runs

    repo = Path(runs.__file__).resolve().parents[2]
    if (repo / ".git").exists():  # a checkout: the revision and its state, read at import
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert runs.GIT_REVISION == head and isinstance(runs.GIT_DIRTY, bool)

    run = subprocess.run

    def no_git(command, *args, **kwargs):
        assert command[0] != "git", "git was asked again at write time"
        return run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", no_git)
    recorded = runs.environment("cpu")
    assert (recorded["git_revision"], recorded["git_dirty"]) == (runs.GIT_REVISION, runs.GIT_DIRTY)
    monkeypatch.setattr(runs, "GIT_REVISION", "0" * 40)  # what the process imported, whatever HEAD is now
    assert runs.environment("cpu")["git_revision"] == "0" * 40


def test_the_git_state_is_the_package_files_own_checkout(tmp_path, monkeypatch):
    import subprocess

    from bertlottery import runs

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "runs.py").write_text("# tracked\n")
    git("add", "pkg/runs.py")
    git("commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(runs, "__file__", str(tmp_path / "pkg" / "runs.py"))
    assert runs._git_state() == (head, False)
    (tmp_path / "pkg" / "runs.py").write_text("# changed, not committed\n")
    assert runs._git_state() == (head, True)
    # an installed copy in a virtual environment inside some other repository: not that repository's revision
    (tmp_path / "venv" / "bertlottery").mkdir(parents=True)
    (tmp_path / "venv" / "bertlottery" / "runs.py").write_text("# installed\n")
    monkeypatch.setattr(runs, "__file__", str(tmp_path / "venv" / "bertlottery" / "runs.py"))
    assert runs._git_state() == (None, None)
