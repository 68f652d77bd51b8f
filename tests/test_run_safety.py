"""A researcher's work is never lost: damaged or missing row files are redone, existing folders are
not overwritten, and one run at a time writes a run directory (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bertlottery.cli import main

from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def small_study(model_dir, glue, run_dir, *overrides: str) -> list[str]:
    """The smoke study cut to 6 stages (fine-tune, prune, subnetworks, 3 evaluations) on the tiny model."""
    return ["run", str(SMOKE), f"model={model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3",
            "train.batch_size=8", "seeds=[1]", "methods=[magnitude]", "modes=[pruned]", "baselines=[]",
            "longer_retraining=null", *overrides, "--run-dir", str(run_dir), "--no-progress"]


def _done(run_dir: Path) -> list[str]:
    return [line.split()[3] for line in (run_dir / "events.log").read_text().splitlines() if line.split()[2] == "done"]


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_missing_or_damaged_row_file_reruns_its_stage_and_the_table_is_complete(tiny_model_dir, env, capsys, damage):
    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    run_dir = env / "study"
    argv = small_study(tiny_model_dir, glue, run_dir)
    assert main(argv) == 0
    table = pd.read_csv(run_dir / "results.csv")
    rows = sorted((run_dir / "rows").glob("evaluate__*.json"))[0]
    stage = rows.name.removesuffix(".json").replace("__", "/")
    if damage == "delete":
        rows.unlink()  # what the message about damaged files advises
    else:
        rows.write_bytes(rows.read_bytes()[:-7])
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 to run" in capsys.readouterr().out
    assert _done(run_dir).count(stage) == 2
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), table, check_exact=True)


# ---- no silent overwrites --------------------------------------------------------------------------------

def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_refuses_a_fine_tuning_run_or_any_foreign_folder_and_leaves_it_untouched(env, capsys):
    finetuned = env / "finetuned"
    (finetuned / "model").mkdir(parents=True)
    (finetuned / "model" / "config.json").write_text('{"model_type": "bert"}')
    (finetuned / "config.json").write_text('{"task": "RTE"}')
    (finetuned / "metrics.json").write_text('{"task": "RTE", "splits": {}}')
    notes = env / "notes"
    notes.mkdir()
    (notes / "draft.txt").write_text("a month of work")
    for folder in (finetuned, notes):
        before = _tree(folder)
        assert main(["run", str(SMOKE), "--run-dir", str(folder), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "was not written by bertlottery for run output" in err
        assert "--overwrite" not in err  # `run` has no such switch: a study never shares its folder
        assert _tree(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(
            {name.split("/")[0] for name in before})
    a_file = env / "a-file"
    a_file.write_text("x")
    assert main(["run", str(SMOKE), "--run-dir", str(a_file), "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_study_run_made_before_the_marker_is_recognised_and_resumes(tiny_model_dir, env, capsys):
    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    run_dir = env / "study"
    argv = small_study(tiny_model_dir, glue, run_dir)
    assert main(argv) == 0
    assert (run_dir / ".bertlottery-run").is_file()
    (run_dir / ".bertlottery-run").unlink()  # as a run made before this version left it
    (run_dir / "graph.json").unlink()  # and before runs had a graph: config.json beside stages/ is enough
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 to run" in capsys.readouterr().out
    assert (run_dir / ".bertlottery-run").is_file()


def test_quickstart_and_report_never_delete_files_in_a_folder_they_did_not_write(env, capsys, monkeypatch):
    from bertlottery.steps import quickstart as quickstart_module

    folder = env / "mine"
    folder.mkdir()
    (folder / "draft.txt").write_text("a month of work")
    before = _tree(folder)
    assert main(["quickstart", "--out", str(folder), "--no-progress"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert _tree(folder) == before

    # with --overwrite it writes its files beside the user's (fine-tuning replaced by a stand-in here:
    # what is checked is the folder handling, not the training)
    def fake_finetune(model_name, task_name, out, **kwargs):
        (Path(out) / "metrics.json").write_text("{}")
        raise RuntimeError("stop after writing")

    monkeypatch.setattr(quickstart_module, "finetune_run", fake_finetune)
    with pytest.raises(RuntimeError):
        quickstart_module.quickstart(glue_dir=None, out=folder, overwrite=True)
    assert _tree(folder) == before  # a failure leaves the folder as it was

    from bertlottery import runs

    with runs.staged_output(folder, "quickstart", overwrite=True) as scratch:
        (scratch / "metrics.json").write_text("{}")
        (scratch / "draft.txt").write_text("replaced: same name")
    assert (folder / "draft.txt").read_text() == "replaced: same name" and (folder / "metrics.json").is_file()
    assert not (folder / ".bertlottery-quickstart").exists()  # a foreign folder stays unmarked: asked again next time
    own = env / "own"
    with runs.staged_output(own, "quickstart") as scratch:
        (scratch / "old.json").write_text("{}")
    with runs.staged_output(own, "quickstart") as scratch:  # its own kind: replaced as a whole
        (scratch / "new.json").write_text("{}")
    assert sorted(p.name for p in own.iterdir()) == [".bertlottery-quickstart", "new.json"]


def test_quickstart_on_a_tiny_model_writes_a_run_and_replaces_only_its_own(tiny_model_dir, env):
    from bertlottery.steps.quickstart import quickstart

    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    out = env / "quick"
    for _ in range(2):  # the second time: its own folder, replaced
        result = quickstart(glue_dir=glue, task_name="RTE", out=out, model_name=str(tiny_model_dir),
                            max_train_examples=16, progress=False)
        assert result["out"] == str(out) and (out / "metrics.json").is_file() and (out / "model").is_dir()
    assert (out / ".bertlottery-quickstart").is_file()
    assert not [p for p in env.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# ---- the evaluate stage measures at the configured length ----------------------------------------------

def test_a_study_at_max_length_64_on_a_64_position_model_runs_every_stage(tiny_model_dir, env, capsys, monkeypatch):
    from bertlottery.steps import evaluate

    lengths = []
    original = evaluate.prepare_task_data

    def recording(*args, **kwargs):
        lengths.append(kwargs["max_length"])
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate, "prepare_task_data", recording)
    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    run_dir = env / "study"
    assert main(small_study(tiny_model_dir, glue, run_dir, "train.max_length=64")) == 0
    out = capsys.readouterr().out
    assert "done 6, failed 0, blocked 0" in out
    assert lengths == [64, 64, 64]  # the three evaluate stages (good, random, bad)


# ---- one writer per run directory ------------------------------------------------------------------------

def _start_run(argv: list[str], run_dir: Path):
    """`bertlottery run` in a child process, returned once it has started its first stage."""
    import os
    import subprocess
    import sys
    import time

    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "bertlottery.cli", *argv], env=environ,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = run_dir / "events.log"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not (events.exists() and events.read_text()):
        time.sleep(0.05)
    assert process.poll() is None, "the first run ended before it could be caught running"
    return process


def test_a_second_run_on_a_locked_directory_is_refused_and_a_killed_holder_leaves_no_lock(tiny_model_dir, env,
                                                                                          capsys):
    import signal
    import socket

    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    run_dir = env / "study"
    argv = small_study(tiny_model_dir, glue, run_dir)
    first = _start_run(argv, run_dir)
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"is being written by process {first.pid} on {socket.gethostname()}" in err
        assert main(["status", str(run_dir)]) == 0  # a reader is not locked out
        assert "stages: done" in capsys.readouterr().out
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert main(argv) == 0  # the lock died with its holder
    done = _done(run_dir)
    assert len(done) == len(set(done)) == 6


def test_overrides_may_follow_the_options_and_anything_else_is_still_refused(env, capsys):
    # `bertlottery run CONFIG --run-dir RUN key=value`: the override reaches the config's validation
    assert main(["run", str(SMOKE), "--run-dir", str(env / "r"), "train.learning_rate=fast"]) == 2
    assert "train.learning_rate must be a number, got 'fast'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(SMOKE), "--run-dir", str(env / "r"), "--bogus"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without overrides takes none
        main(["status", str(env / "r"), "tasks=[RTE]"])
    assert not (env / "r").exists()
