"""The registry of studies, the graph a run writes, and the settings declared once (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertlottery import runs
from bertlottery.cli import build_parser
from bertlottery.cli.common import train_settings_of
from bertlottery.config import load
from bertlottery.errors import UserError
from bertlottery.pipeline import prepare_run
from bertlottery.settings import TrainSettings
from bertlottery.studies import STUDIES, expand, get_study, studies_of

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_study_is_chosen_by_name_and_a_typo_gets_a_suggestion():
    assert get_study("gordon") is STUDIES["gordon"]
    with pytest.raises(UserError, match="Unknown study 'lotery'. Did you mean 'lottery'"):
        get_study("lotery")
    assert [s.name for s in studies_of(load(CONFIGS / "smoke.yaml"))] == ["lottery"]
    assert [s.name for s in studies_of(load(CONFIGS / "smoke.yaml", ["attention={examples: 2}"]))] == ["lottery",
                                                                                                       "attention"]
    assert [s.name for s in studies_of(load(CONFIGS / "gordon-minilm.yaml"))] == ["gordon"]


def test_every_stage_kind_belongs_to_one_study():
    kinds = [kind for study in STUDIES.values() for kind in study.kinds]
    assert len(kinds) == len(set(kinds))
    for name in ("smoke.yaml", "gordon-minilm.yaml"):
        assert {s.kind for s in expand(load(CONFIGS / name))} <= set(kinds)


def test_a_run_writes_its_graph_each_stage_after_its_inputs(tmp_path):
    config = load(CONFIGS / "smoke.yaml", ["energy.track=false"])
    stages = expand(config)
    assert runs.read_graph(tmp_path) is None  # a run from before graph.json
    assert prepare_run(stages, tmp_path, config) == {}
    graph = runs.read_graph(tmp_path)
    assert [s["id"] for s in graph] == [s.id for s in stages]
    seen = set()
    for stage in graph:
        assert set(stage) == {"id", "kind", "task", "name", "keys", "settings", "inputs"}
        assert set(stage["inputs"].values()) <= seen, f"{stage['id']} comes before its inputs"
        seen.add(stage["id"])
    prune = next(s for s in graph if s["kind"] == "prune")
    assert prune["settings"]["keep_fraction"] == 0.9 and "threshold" not in prune["settings"]


def test_a_damaged_graph_is_refused_with_the_command_that_rewrites_it(tmp_path):
    (tmp_path / runs.GRAPH_FILE).write_text('{"version": 99, "stages": []}')
    with pytest.raises(UserError, match="bertlottery run CONFIG --run-dir"):
        runs.read_graph(tmp_path)


def test_the_training_options_come_from_the_settings_type():
    args = build_parser().parse_args(["finetune", "--task", "RTE", "--out", "x", "--lr", "3e-5", "--epochs", "2",
                                      "--no-group-by-length"])
    settings = train_settings_of(args)
    assert settings == TrainSettings(learning_rate=3e-5, epochs=2, group_by_length=False)
    defaults = train_settings_of(build_parser().parse_args(["finetune", "--task", "RTE", "--out", "x"]))
    assert defaults == TrainSettings()
    bad = build_parser().parse_args(["finetune", "--task", "RTE", "--out", "x", "--epochs", "0", "--lr", "-1"])
    with pytest.raises(UserError, match="--lr must be positive, got -1.0; --epochs must be at least 1, got 0"):
        train_settings_of(bad)


def test_a_setting_added_later_changes_a_stage_id_only_when_set():
    plain = expand(load(CONFIGS / "smoke.yaml"))
    same = expand(load(CONFIGS / "smoke.yaml", ["train.max_grad_norm=1.0"]))
    changed = expand(load(CONFIGS / "smoke.yaml", ["train.max_grad_norm=0.5"]))
    assert [s.id for s in same] == [s.id for s in plain]
    finetunes = [s for s in changed if s.kind == "finetune"]
    assert finetunes[0].settings["train"]["max_grad_norm"] == 0.5
    assert finetunes[0].id != next(s for s in plain if s.kind == "finetune").id
    with pytest.raises(UserError, match="unknown key 'train.seed'"):  # the seeds come from `seeds`
        load(CONFIGS / "smoke.yaml", ["train.seed=3"])
