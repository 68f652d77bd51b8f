"""The study pipeline through the real CLI: the smoke config on a tiny model, resumption, failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bertlottery import lottery
from bertlottery.cli import main
from bertlottery.config import load
from bertlottery.pipeline import expand

from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def overrides(model_dir, glue) -> list[str]:
    return [f"model={model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3", "train.batch_size=8"]


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
    assert main(argv) == 0
    assert "52 already done, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "stages").rglob("stage.json")} == finished
    assert (run_dir / "results.csv").read_bytes() == (run_dir / "results.csv").read_bytes()
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

    monkeypatch.setattr(lottery, "make_super_survivors", broken)
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
