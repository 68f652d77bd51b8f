"""The study pipeline through the real CLI: the smoke config on a tiny model, resumption, failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from bertlottery.steps import subnetworks
from bertlottery.cli import main
from bertlottery.config import load
from bertlottery.masks import load_masks
from bertlottery.studies import expand

from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def overrides(model_dir, glue) -> list[str]:
    # the tiny model learns nothing on 48 pairs: the learnt-check is off so that every stage runs
    # (tests/test_trusted_training.py runs it on)
    return [f"model={model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3", "train.batch_size=8",
            "pruning.learnt_check.enabled=false"]


def test_every_shipped_config_validates_and_its_header_is_its_command():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        config = load(path)
        header = path.read_text().splitlines()[0]
        assert header.startswith(f"# bertlottery run configs/{path.name}"), header
        assert expand(config)


def test_the_smoke_graph_covers_every_stage_kind():
    stages = expand(load(SMOKE))
    kinds = {s.kind for s in stages}
    assert kinds == {"finetune", "prune", "subnetworks", "evaluate", "retrain", "super", "baseline"}
    ids = [s.id for s in stages]
    assert len(ids) == len(set(ids))
    position = {s.id: i for i, s in enumerate(stages)}
    assert all(position[i] < position[s.id] for s in stages for i in s.inputs.values())  # inputs come first
    changed = expand(load(SMOKE, ["train.epochs=2"]))
    assert not set(ids) & {s.id for s in changed if s.kind != "baseline"} - {
        s.id for s in stages if s.keys.get("method") == "majority"}


def test_smoke_study_runs_end_to_end_and_resumes_without_redoing_work(tiny_model_dir, env, capsys):
    glue = write_rte(env / "glue", n_train=48, n_dev=20)
    run_dir = env / "study"
    argv = ["run", str(SMOKE), *overrides(tiny_model_dir, glue), "--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "52 stages, 0 already done, 52 to run" in out
    table = pd.read_csv(run_dir / "results.csv")
    assert set(table["mode"]) == {"finetuned", "pruned", "retrained", "retrained-long", "baseline"}
    assert set(table["subnetwork"]) >= {"full", "good", "random", "bad", "super-good", "super-random", "super-bad"}
    assert set(table["method"]) == {"none", "structured", "magnitude", "majority", "random-init"}
    long = table[table["mode"] == "retrained-long"]
    assert sorted(set(long["epochs"])) == [1, 2]  # the metric after every epoch
    assert pd.read_parquet(run_dir / "results.parquet").shape == table.shape

    finished = {p: p.stat().st_mtime_ns for p in (run_dir / "stages").rglob("stage.json")}
    assert len(finished) == 52
    csv_before = (run_dir / "results.csv").read_bytes()
    assert main(argv) == 0
    assert "52 already done, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "stages").rglob("stage.json")} == finished
    assert (run_dir / "results.csv").read_bytes() == csv_before  # the rerun rewrote the same table
    assert pd.read_csv(run_dir / "results.csv").equals(table)

    assert main(["status", str(run_dir)]) == 0
    assert "done 52, running 0, failed 0, left 0" in capsys.readouterr().out


def test_a_failing_stage_is_recorded_and_only_its_dependents_wait(tiny_model_dir, env, capsys, monkeypatch):
    glue = write_rte(env / "glue", n_train=48, n_dev=20)
    run_dir = env / "study"
    argv = ["run", str(SMOKE), *overrides(tiny_model_dir, glue), "seeds=[1,2]", "modes=[pruned]",
            "longer_retraining=null", "baselines=[majority]", "--run-dir", str(run_dir), "--no-progress"]

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(subnetworks, "make_super_survivors", broken)
    assert main(argv) == 1
    out = capsys.readouterr().out
    # the super-survivor stage fails; its pruned evaluations (3 subnetworks x 2 seeds) wait, the rest runs
    assert "failed 1, blocked 6" in out
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert "failed 1" in status and "RuntimeError: disk full" in status
    table = pd.read_csv(run_dir / "results.csv")
    assert "super-good" not in set(table["subnetwork"]) and "good" in set(table["subnetwork"])

    monkeypatch.undo()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "to run" in out and "failed 0, blocked 0" in out
    assert "super-good" in set(pd.read_csv(run_dir / "results.csv")["subnetwork"])


def test_a_bad_config_fails_before_anything_runs(env, capsys):
    assert main(["run", str(SMOKE), "train.epoks=1", "--run-dir", str(env / "x")]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'epochs'" in err and len(err.strip().splitlines()) == 1
    assert not (env / "x").exists()


@pytest.mark.parametrize("missing", ["status"])
def test_status_of_something_that_is_not_a_study(env, capsys, missing):
    assert main([missing, str(env)]) == 2
    assert "not a study run directory" in capsys.readouterr().err


def _events(run_dir: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()[2:4]) for line in (run_dir / "events.log").read_text().splitlines()]


def _run_and_kill(argv: list[str], run_dir: Path, after_done: int, env: dict) -> None:
    """Start `bertlottery run` and SIGKILL it once ``after_done`` stages have finished."""
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "bertlottery.cli", *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        events = (run_dir / "events.log").read_text().splitlines() if (run_dir / "events.log").exists() else []
        if sum(" done " in line for line in events) >= after_done:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()


def test_killing_the_run_at_any_point_loses_and_repeats_nothing(tiny_model_dir, env, capsys):
    import os

    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    common = [str(SMOKE), *overrides(tiny_model_dir, glue), "longer_retraining=null", "--no-progress"]
    straight = env / "straight"
    assert main(["run", *common, "--run-dir", str(straight)]) == 0
    from bertlottery.cli import unlearnt_task_warnings

    # The tiny model does not learn the toy RTE: the run ends by saying so, as the report's caution box does.
    warnings = unlearnt_task_warnings(pd.read_parquet(straight / "results.parquet"))
    assert warnings and all(line.startswith("RTE: ") for line in warnings)
    printed = capsys.readouterr().out
    assert [line[len("warning: "):] for line in printed.splitlines() if line.startswith("warning: ")] == warnings

    killed = env / "killed"
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    for after in (1, 7, 19, 30):  # during the fine-tunes, the prunes, the evaluations, the re-fine-tunes
        _run_and_kill(["run", *common, "--run-dir", str(killed)], killed, after, environ)
    assert main(["run", *common, "--run-dir", str(killed)]) == 0

    events = _events(killed)
    done = [stage for what, stage in events if what == "done"]
    assert len(done) == len(set(done)), "a finished stage ran again"
    assert set(done) == {stage for what, stage in _events(straight) if what == "done"}
    assert any(what == "start" and events.count(("done", stage)) == 1 and events.count(("start", stage)) > 1
               for what, stage in events), "no stage was interrupted midway: the kills came at the wrong moments"
    a = pd.read_csv(straight / "results.csv")
    b = pd.read_csv(killed / "results.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_a_damaged_artifact_is_detected_and_its_stage_redone(tiny_model_dir, env, capsys):
    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    run_dir = env / "study"
    argv = ["run", str(SMOKE), *overrides(tiny_model_dir, glue), "seeds=[1]", "methods=[magnitude]",
            "modes=[pruned]", "baselines=[]", "longer_retraining=null", "--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 0
    table = pd.read_csv(run_dir / "results.csv")
    prune_dir = next((run_dir / "stages" / "prune").rglob("mask.safetensors")).parent
    mask = prune_dir / "mask.safetensors"
    original = load_masks(mask)
    data = mask.read_bytes()
    mask.write_bytes(data[: len(data) // 2])  # truncated
    metrics = next((run_dir / "stages" / "finetune").rglob("metrics.json"))
    metrics.write_text(metrics.read_text().replace('"RTE"', '"RTX"'))  # same size, changed content
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 to run" in out
    redone = [stage for what, stage in _events(run_dir) if what == "done"]
    assert sum(stage.startswith("prune/") for stage in redone) == 2
    assert sum(stage.startswith("finetune/") for stage in redone) == 2
    # redone exactly (bytes can differ: safetensors writes its metadata in hash-map order)
    redone_mask = load_masks(mask)
    assert redone_mask.weights == original.weights and redone_mask.params == original.params
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), table, check_exact=True)


def test_the_time_left_is_estimated_from_finished_stages_of_the_same_kind_and_task(tmp_path, capsys):
    """Finished: two RTE fine-tunings (100 s, 200 s), one s-prune (30 s). Left: the other fine-tuning
    and prune count their kind's mean; re-fine-tunings and baselines count the fine-tuning's (they train
    on the same data); evaluations have no finished stage of their kind and are not counted."""
    from bertlottery.config import to_dict
    from bertlottery.costs import estimate_left
    from bertlottery.pipeline import stage_dir, stage_states

    config = load(SMOKE, ["seeds=[1,2,3]", "longer_retraining=null"])
    run_dir = tmp_path / "run"
    stages = expand(config)
    finetunes = [s for s in stages if s.kind == "finetune"]
    prunes = [s for s in stages if s.kind == "prune" and s.keys["method"] == "structured"]
    for stage, seconds in ((finetunes[0], 100), (finetunes[1], 200), (prunes[0], 30)):
        stage_dir(run_dir, stage).mkdir(parents=True)
        (stage_dir(run_dir, stage) / "stage.json").write_text(json.dumps({"id": stage.id, "seconds": seconds}))
    states = stage_states(stages, run_dir)
    left = estimate_left(stages, run_dir, states)
    count = lambda kind: sum(1 for s in stages if s.kind == kind and states[s.id] != "done")  # noqa: E731
    trains_like_finetune = count("retrain") + count("baseline") + count("finetune")
    expected = 150 * trains_like_finetune + 30 * count("prune")
    assert left["seconds"] == pytest.approx(expected)
    unknown = sum(count(k) for k in {s.kind for s in stages} - {"retrain", "baseline", "finetune", "prune"})
    assert (left["estimated"], left["unknown"]) == (trains_like_finetune + count("prune"), unknown) and unknown > 0
    # a stage skipped (its model was not learnt) will not run: it is not counted as left
    skipped = {**states, finetunes[2].id: "skipped"}
    fewer = estimate_left(stages, run_dir, skipped)
    assert fewer["seconds"] == pytest.approx(expected - 150) and fewer["estimated"] == left["estimated"] - 1
    cache: dict[str, float] = {}
    assert estimate_left(stages, run_dir, states, cache) == left and len(cache) == 3
    assert estimate_left(stages, run_dir / "elsewhere", states, cache) == left  # read once, then from the cache
    (run_dir / "config.json").write_text(json.dumps(to_dict(config)))
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"left: about {expected / 3600:.2f} h of stage time for {left['estimated']} stages" in out
    # the better estimate it points to (each task's stages scaled by their FLOPs) runs as printed
    pointer = f"bertlottery run {run_dir / 'config.json'} --plan --run-dir {run_dir}"
    assert pointer in out
    assert main([*pointer.split()[1:], "--no-calibrate"]) == 0
    assert "plan of smoke" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps(to_dict(config)))
    assert main(["status", str(fresh)]) == 0
    assert f"left: no estimate yet for {len(stages)} stages" in capsys.readouterr().out


def test_markers_of_dead_processes_are_cleared_when_a_run_starts(tmp_path):
    """A killed run leaves running/ markers; a dead process's id may later belong to a live one and make
    its stage look running. prepare_run removes the markers of processes that are gone."""
    import os
    import subprocess
    import sys

    from bertlottery.pipeline import prepare_run

    config = load(SMOKE)
    running = tmp_path / "run" / "running"
    running.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (running / "finetune__RTE__seed1-dead").write_text(str(gone.pid))
    (running / "finetune__RTE__seed2-garbled").write_text("not a pid")
    (running / "finetune__RTE__seed3-alive").write_text(str(os.getpid()))
    prepare_run(expand(config), tmp_path / "run", config)
    assert sorted(p.name for p in running.iterdir()) == ["finetune__RTE__seed3-alive"]


def test_status_piped_into_head_stops_quietly(tmp_path):
    """`bertlottery status RUN | head`: the reader leaves early; no traceback (the paper's graph has
    thousands of stages, far more output than a pipe holds)."""
    import subprocess
    import sys

    from bertlottery.config import to_dict

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(to_dict(load(REPO / "configs" / "paper.yaml"))))
    done = subprocess.run(f"'{sys.executable}' -m bertlottery.cli status '{run_dir}' | head -2", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("paper: ") and len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


def test_the_ray_executor_gives_the_same_table_as_the_local_one(tiny_model_dir, env, capsys):
    import ray

    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    common = [str(SMOKE), *overrides(tiny_model_dir, glue), "longer_retraining=null", "resources.cpus_per_stage=1",
              "--no-progress"]
    assert main(["run", *common, "--run-dir", str(env / "local")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        capsys.readouterr()
        assert main(["run", *common, "--run-dir", str(env / "ray"), "--executor", "ray"]) == 0
        starts = [line.split()[1] for line in (env / "ray" / "events.log").read_text().splitlines()]
    finally:
        ray.shutdown()
    assert len(set(starts)) > 1, "all stages ran in one process: Ray did not spread them over workers"
    # each finished stage's line gives the time it ran (its record), not the time since Ray was handed it
    finished = re.findall(r"^\[\d+/\d+\] done +(\S+)  \((\d+) s\)$", capsys.readouterr().out, re.MULTILINE)
    assert finished and len(finished) == len(starts) // 2
    for stage_id, shown in finished:
        record = json.loads((env / "ray" / "stages" / stage_id / "stage.json").read_text())
        assert int(shown) == round(record["seconds"]), stage_id
    local = pd.read_csv(env / "local" / "results.csv")
    remote = pd.read_csv(env / "ray" / "results.csv")
    pd.testing.assert_frame_equal(local, remote, check_exact=True)
    assert main(["status", str(env / "ray")]) == 0
    assert "failed 0, left 0" in capsys.readouterr().out


def test_ray_missing_or_misused_is_one_line(env, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    glue = write_rte(env / "glue", n_train=8, n_dev=4)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["run", str(SMOKE), f"glue_dir={glue}", "--run-dir", str(env / "r"), "--executor", "ray"]) == 2
    assert "pip install 'bertlottery[ray]'" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["run", str(SMOKE), f"glue_dir={glue}", "--run-dir", str(env / "r2"), "--address", "auto"]) == 2
    assert "--executor ray" in capsys.readouterr().err
    assert not (env / "r2").exists()


def test_energy_is_recorded_per_stage_and_summed(tiny_model_dir, env, capsys):
    import json

    glue = write_rte(env / "glue", n_train=16, n_dev=8)
    run_dir = env / "study"
    argv = ["run", str(SMOKE), *overrides(tiny_model_dir, glue), "seeds=[1]", "methods=[magnitude]",
            "modes=[pruned]", "baselines=[]", "longer_retraining=null", "energy.track=true",
            "--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in (run_dir / "stages").rglob("stage.json")]
    assert records and all(r["energy_kwh"] > 0 and r["emissions_kg"] > 0 for r in records)
    total = sum(r["energy_kwh"] for r in records)
    assert f"energy {total:.4f} kWh" in out and "codecarbon, 6 stages" in out
    assert main(["status", str(run_dir)]) == 0
    assert f"energy {total:.4f} kWh" in capsys.readouterr().out
    off = env / "off"
    assert main([*argv[:-4], "energy.track=false", "--run-dir", str(off), "--no-progress"]) == 0
    assert not any("energy_kwh" in json.loads(p.read_text()) for p in (off / "stages").rglob("stage.json"))
