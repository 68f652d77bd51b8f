"""Reading a study run directory without the pipeline: graph.json (runs.write_graph / read_graph), each
stage's state, and `bertlottery.analysis.rundir.read_stages` with its fallback for runs without a graph."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bertlottery import runs
from bertlottery.analysis.rundir import read_stages
from bertlottery.errors import UserError


def _stage(kind: str, task: str, name: str, inputs: dict[str, str] | None = None, **keys) -> dict:
    return {"id": f"{kind}/{task}/{name}-0123456789", "kind": kind, "task": task, "name": name, "keys": keys,
            "settings": {"lr": 1e-3}, "inputs": inputs or {}}


FINETUNE = _stage("finetune", "RTE", "seed1", seed=1)
PRUNE = _stage("prune", "RTE", "seed1-structured", {"finetune": FINETUNE["id"]}, seed=1, method="structured")
RETRAIN = _stage("retrain", "RTE", "seed1-structured-good", {"finetune": FINETUNE["id"], "prune": PRUNE["id"]},
                 seed=1, method="structured", subnetwork="good", mode="retrained")
EVALUATE = _stage("evaluate", "RTE", "seed1-structured-good", {"prune": PRUNE["id"]}, seed=1, mode="pruned")


def _finish(run: Path, stage: dict, **record) -> None:
    folder = runs.stage_path(run, stage["id"])
    folder.mkdir(parents=True)
    (folder / runs.STAGE_FILE).write_text(json.dumps({"id": stage["id"], "keys": stage["keys"],
                                                      "inputs": stage["inputs"], **record}))


def test_graph_json_round_trips_and_refuses_a_stage_before_its_inputs(tmp_path):
    stages = [FINETUNE, PRUNE, RETRAIN]
    path = runs.write_graph(tmp_path, stages)
    assert path == tmp_path / "graph.json"
    assert json.loads(path.read_text())["version"] == 1
    assert runs.read_graph(tmp_path) == stages
    with pytest.raises(ValueError, match="comes before its inputs"):
        runs.write_graph(tmp_path / "other", [PRUNE, FINETUNE])
    with pytest.raises(ValueError, match="lacks"):
        runs.write_graph(tmp_path / "other", [{"id": "x/y/z"}])
    assert runs.read_graph(tmp_path / "older") is None  # a run from before graph.json
    (tmp_path / "graph.json").write_text(json.dumps({"version": 99, "stages": []}))
    with pytest.raises(UserError, match="bertlottery run CONFIG --run-dir .* once to write it again"):
        runs.read_graph(tmp_path)


def test_stages_come_from_the_graph_with_their_state_and_record(tmp_path):
    run = tmp_path / "run"
    runs.write_graph(run, [FINETUNE, PRUNE, RETRAIN, EVALUATE])
    _finish(run, FINETUNE, seconds=12.5, energy_kwh=0.25, emissions_kg=0.125)
    (run / runs.FAILED_DIR).mkdir()
    (run / runs.FAILED_DIR / f"{runs.stage_file_name(PRUNE['id'])}.json").write_text(
        json.dumps({"error": "RuntimeError: out of memory\ntraceback ..."}))
    (run / runs.RUNNING_DIR).mkdir()
    (run / runs.RUNNING_DIR / runs.stage_file_name(EVALUATE["id"])).write_text(str(os.getpid()))  # a live process
    stray = _stage("prune", "CoLA", "seed1-structured", seed=1, method="structured")  # left by an earlier config
    _finish(run, stray)

    read = read_stages(run)
    assert read.graph_known and read.problems == []
    assert [(s.id, s.state) for s in read.stages] == [(FINETUNE["id"], "done"), (PRUNE["id"], "failed"),
                                                       (RETRAIN["id"], "left"), (EVALUATE["id"], "running")]
    finetune, prune, retrain, _ = read.stages
    assert (finetune.seconds, finetune.energy_kwh, finetune.emissions_kg) == (12.5, 0.25, 0.125)
    assert finetune.folder == run / "stages" / FINETUNE["id"]
    assert prune.error == "RuntimeError: out of memory"
    assert retrain.inputs == RETRAIN["inputs"] and retrain.keys["subnetwork"] == "good"
    assert [s.id for s in read.stray] == [stray["id"]]


def test_a_run_without_graph_json_reads_the_stage_folders_on_disk_and_says_so(tmp_path):
    run = tmp_path / "run"
    _finish(run, FINETUNE, seconds=3.0)
    _finish(run, PRUNE)
    (run / runs.FAILED_DIR).mkdir()
    (run / runs.FAILED_DIR / f"{runs.stage_file_name(RETRAIN['id'])}.json").write_text(json.dumps({"error": "boom"}))
    read = read_stages(run)
    assert not read.graph_known and read.stray == []
    assert {(s.id, s.kind, s.task, s.state) for s in read.stages} == {
        (FINETUNE["id"], "finetune", "RTE", "done"), (PRUNE["id"], "prune", "RTE", "done"),
        (RETRAIN["id"], "retrain", "RTE", "failed")}
    assert next(s for s in read.stages if s.kind == "prune").inputs == {"finetune": FINETUNE["id"]}
    assert len(read.problems) == 1 and "no graph.json" in read.problems[0]
    (run / "graph.json").write_text("{not json")  # damaged: reported, and the folders on disk are read
    read = read_stages(run)
    assert not read.graph_known and "not valid JSON" in read.problems[0] and len(read.stages) == 3
