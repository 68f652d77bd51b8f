"""Importance against ablation: each unit gated off alone, beside the importance the s-search started from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bertlottery.config import ConfigError, load
from bertlottery.pipeline import run_local
from bertlottery.steps.ablation import ablation_record, rank_correlation
from bertlottery.studies import execute, expand

from rungraph import run_study_done
from tiny import tiny_batch, tiny_model, write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SMALL = ["seeds=[1,2]", "methods=[structured]", "subnetworks=[good]", "modes=[pruned]", "baselines=[]",
         "longer_retraining=null", "train.learning_rate=1e-3", "train.batch_size=8", "ablation={units: [mlps, heads]}"]


def test_rank_correlation_is_spearmans_and_undefined_where_it_must_be():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40])["r"] == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1])["r"] == pytest.approx(-1.0)
    # ranks, not values: a monotone but non-linear relation is still 1
    assert rank_correlation([1, 2, 3, 4], [1, 8, 27, 1000])["r"] == pytest.approx(1.0)
    # by hand: ranks (1, 2, 3, 4) against (2, 1, 4, 3): 1 - 6 * 4 / (4 * 15) = 0.6
    out = rank_correlation([0.1, 0.2, 0.3, 0.4], [0.5, 0.2, 0.9, 0.7])
    assert out["r"] == pytest.approx(0.6) and out["n"] == 4 and 0 < out["p"] <= 1
    assert rank_correlation([1, 2, float("nan"), 4, 5], [1, 2, 3, 4, 5])["n"] == 4  # a pruned unit (nan) left out
    assert rank_correlation([1, 2, 3], [5, 5, 5])["r"] is None  # a constant cost has no ranking
    assert rank_correlation([1, 2], [1, 2])["r"] is None


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_each_unit_is_removed_alone_as_zeroing_its_output_by_hand_would(family):
    """A unit gated off alone scores what the model scores with that unit's output weights zeroed by hand
    (its MLP's output projection, or its head's columns of the attention output), every other unit kept."""
    model = tiny_model(family)
    batch = tiny_batch()

    def score(m=model) -> float:
        with torch.no_grad():
            return float(m(**batch).logits.double().sum())

    importance = {"mlps": np.array([0.5, 0.1]), "heads": np.arange(8, dtype=float).reshape(2, 4)}
    record = ablation_record(model, score, importance, ["mlps", "heads"])
    assert record["full"] == pytest.approx(score())
    assert [r["layer"] for r in record["units"]["mlps"]] == [0, 1]
    assert [(r["layer"], r["head"]) for r in record["units"]["heads"]] == [(l, h) for l in range(2) for h in range(4)]
    for row in record["units"]["mlps"]:
        by_hand = tiny_model(family)
        out = _mlp_output(by_hand, family, row["layer"])
        with torch.no_grad():
            out.weight.zero_()
            if out.bias is not None:
                out.bias.zero_()
        assert row["score"] == pytest.approx(score(by_hand), rel=1e-5, abs=1e-5)
        assert row["cost"] == pytest.approx(record["full"] - row["score"])
        assert row["importance"] == importance["mlps"][row["layer"]]
    head_dim = 32 // 4
    for row in record["units"]["heads"]:
        by_hand = tiny_model(family)
        out = _attention_output(by_hand, family, row["layer"])
        with torch.no_grad():  # the head's slice of the output projection's input: its contribution, bias kept
            out.weight[:, row["head"] * head_dim:(row["head"] + 1) * head_dim] = 0
        assert row["score"] == pytest.approx(score(by_hand), rel=1e-5, abs=1e-5)
    # different units cost different amounts: the record is not one score repeated
    assert len({round(r["score"], 6) for r in record["units"]["heads"]}) > 1


def _mlp_output(model, family: str, layer: int):
    if family == "modernbert":
        return model.model.layers[layer].mlp.Wo
    return model.bert.encoder.layer[layer].output.dense


def _attention_output(model, family: str, layer: int):
    if family == "modernbert":
        return model.model.layers[layer].attn.Wo
    return model.bert.encoder.layer[layer].attention.output.dense


def test_the_report_names_the_costliest_units_rank_in_words():
    from bertlottery.report.sections.ablation import _rank_text

    assert [_rank_text(r, 6) for r in (1, 2, 3, 6)] == [
        "the least important of 6", "the 2nd least important of 6", "the 3rd least important of 6",
        "the most important of 6"]
    assert _rank_text(11, 72) == "the 11th least important of 72" and _rank_text(21, 72) == "the 21st least important of 72"


def test_ablation_settings_are_checked_with_the_config():
    with pytest.raises(ConfigError) as error:
        load(SMOKE, ["ablation={units: [mlp]}"])
    assert "ablation.units: unknown 'mlp'. Did you mean 'mlps'" in str(error.value)
    with pytest.raises(ConfigError, match="ablation.units must not be empty"):
        load(SMOKE, ["ablation={units: []}"])
    with pytest.raises(ConfigError, match="methods has no structured"):
        load(SMOKE, ["methods=[magnitude]", "ablation={}"])
    assert load(SMOKE, ["ablation={}"]).ablation.units == ["mlps"]


def test_expand_adds_one_ablation_per_seed_reading_its_finetuning_and_its_structured_search():
    stages = expand(load(SMOKE, SMALL))
    ablations = [s for s in stages if s.kind == "ablation"]
    by_id = {s.id: s for s in stages}
    assert sorted(s.name for s in ablations) == ["seed1", "seed2"]
    for stage in ablations:
        assert by_id[stage.inputs["finetune"]].kind == "finetune"
        prune = by_id[stage.inputs["prune"]]
        assert prune.kind == "prune" and prune.keys == {"seed": stage.keys["seed"], "method": "structured"}
    assert not [s for s in expand(load(SMOKE, SMALL[:-1])) if s.kind == "ablation"]
    # the units are part of the id; the lottery's stages keep theirs with or without the section
    other = expand(load(SMOKE, [*SMALL[:-1], "ablation={units: [mlps]}"]))
    assert not {s.id for s in ablations} & {s.id for s in other if s.kind == "ablation"}
    assert {s.id for s in stages if s.kind != "ablation"} == {s.id for s in expand(load(SMOKE, SMALL[:-1]))}


def test_the_plan_counts_one_dev_evaluation_per_unit_and_the_full_model():
    from bertlottery.plan import TaskSize, stage_work
    from bertlottery.models import layout_from_config

    from tiny import tiny_config

    config = load(SMOKE, SMALL)
    (stage,) = [s for s in expand(config) if s.kind == "ablation"][:1]
    sizes = {"RTE": TaskSize("RTE", {"train": 100, "dev": 20}, train_tokens=10.0, eval_tokens=12.0, source="files")}
    work = stage_work(stage, config, sizes, layout_from_config(tiny_config().to_dict()))
    ((kind, tokens),) = [(p.kind, p.tokens) for p in work.most]
    assert kind == "eval" and tokens == (1 + 2 + 2 * 4) * 20 * 12.0


def test_the_ablation_stages_run_in_a_study_and_the_report_shows_them(tiny_model_dir, env, capsys):
    glue = write_rte(env / "glue", n_train=32, n_dev=12)
    config = load(SMOKE, [f"model={tiny_model_dir}", f"glue_dir={glue}", *SMALL])
    run_dir = env / "study"
    stages = run_study_done(config, run_dir)
    by_id = {s.id: s for s in stages}
    table = pd.read_csv(run_dir / "results.csv")
    for stage in (s for s in stages if s.kind == "ablation"):
        record = json.loads((run_dir / "stages" / stage.id / "ablation.json").read_text())
        trace = json.loads((run_dir / "stages" / stage.inputs["prune"] / "trace.json").read_text())
        # the importance is the search's own first scores, unit for unit
        first = trace["steps"][0]["scores"]
        assert [r["importance"] for r in record["units"]["mlps"]] == pytest.approx(first["mlps"])
        assert [r["importance"] for r in record["units"]["heads"]] == pytest.approx(np.ravel(first["heads"]).tolist())
        # the full score is the fine-tuned model's dev metric
        finetuned = table[(table.stage_id == stage.inputs["finetune"]) & (table.metric == "accuracy")
                          & (table.split == "dev")]
        assert record["full"] == pytest.approx(float(finetuned.value.iloc[0])) == record["search_full"]
        assert record["metric"] == "accuracy" and by_id[stage.inputs["finetune"]].keys["seed"] == stage.keys["seed"]
        # a row per unit kind whose correlation is defined (on 12 dev examples a tiny model's accuracy may
        # not move when one unit goes: a constant cost ranks nothing, and gets no row)
        rows = table[(table.stage_id == stage.id)]
        expected = {f"spearman:{u}" for u in ("mlps", "heads") if record["spearman"][u]["r"] is not None}
        assert set(rows.metric) == expected and set(rows.method) <= {"ablation"}
        for metric, value in zip(rows.metric, rows.value):
            assert value == pytest.approx(record["spearman"][metric.split(":")[1]]["r"])

    # the step alone, from the command line: the same record as the stage's
    from bertlottery.cli import main

    stage = next(s for s in stages if s.kind == "ablation")
    finetune_dir, prune_dir = (run_dir / "stages" / stage.inputs[k] for k in ("finetune", "prune"))
    out = env / "ablation.json"
    assert main(["ablation", str(finetune_dir), str(prune_dir), "--units", "mlps", "heads", "--glue-dir", str(glue),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mlps, least important first" in printed and "rank correlation of importance and cost" in printed
    alone = json.loads(out.read_text())
    staged = json.loads((run_dir / "stages" / stage.id / "ablation.json").read_text())
    assert alone["units"] == staged["units"] and alone["full"] == staged["full"]
    # an existing --out is not overwritten; a folder without a search's trace is named as the problem
    assert main(["ablation", str(finetune_dir), str(prune_dir), "--glue-dir", str(glue), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and json.loads(out.read_text()) == alone
    assert main(["ablation", str(finetune_dir), str(finetune_dir), "--glue-dir", str(glue)]) == 2
    error = capsys.readouterr().err
    assert "has no trace.json" in error and len(error.strip().splitlines()) == 1
    other = env / "other-search"  # a search of another task's model
    other.mkdir()
    trace = json.loads((prune_dir / "trace.json").read_text())
    (other / "trace.json").write_text(json.dumps({**trace, "params": {**trace["params"], "task": "SST-2"}}))
    assert main(["ablation", str(finetune_dir), str(other), "--glue-dir", str(glue)]) == 2
    assert "searched a SST-2 model, but" in capsys.readouterr().err

    from bertlottery.report import build_report

    report = build_report(run_dir, env / "report")
    html = report.read_text()
    assert "Importance against ablation" in html and "rank correlation (p)" in html
    units = pd.read_csv(report.parent / "tables" / "ablation.csv")
    assert len(units) == 2 * (2 + 8) and set(units.unit) == {"mlps", "heads"}  # every unit of both seeds
    assert (units.cost == units.full - units.score_without).all()
    assert sorted(units[units.unit == "mlps"].groupby("seed").importance_rank.apply(list).sum()) == [1, 1, 2, 2]
    for unit in ("mlps", "heads"):  # a figure per unit kind, with the rows it was drawn from
        assert (report.parent / "figures" / f"ablation_{unit}.png").is_file()
        drawn = pd.read_csv(report.parent / "figures" / f"ablation_{unit}.csv")
        assert set(drawn.unit) == {unit} and len(drawn) == len(units[units.unit == unit])


def test_a_model_that_was_not_learnt_gets_no_ablation(tiny_model_dir, env):
    glue = write_rte(env / "glue", n_train=32, n_dev=12)
    config = load(SMOKE, [f"model={tiny_model_dir}", f"glue_dir={glue}", *SMALL, "pruning.learnt_check.enabled=true",
                          "pruning.learnt_check.margin=1.5", "attention={examples: 2, keep_examples: 1, batch_size: 2}"])
    stages = expand(config)
    states = run_local(stages, env / "study", config, execute=execute, progress=False)
    ablations = [s for s in stages if s.kind == "ablation"]
    assert len(ablations) == 2 and all(states[s.id] == "skipped" for s in ablations)
    from bertlottery.pipeline import skip_reason

    assert all(skip_reason(env / "study", s).startswith("not learnt: accuracy") for s in ablations)
    # the report's sections do not wait for what was skipped: the attention maps of the super-survivors
    # (which need the searches) and the ablations are not "missing"
    from bertlottery.attention.report import report_section
    from bertlottery.report.context import Context
    from bertlottery.report.rundata import load_run
    from bertlottery.report.sections.ablation import ablation_section

    run = load_run(env / "study")
    assert any(s.state == "skipped" and s.kind == "attention-maps" for s in run.stages)
    assert report_section(run, env / "report").missing == []
    assert ablation_section(Context(run, env / "report", None)).missing == []


def test_an_ablation_stage_gives_one_row_per_defined_correlation(monkeypatch, env):
    from bertlottery.steps import ablation as step
    from bertlottery.studies import ablation as study

    config = load(SMOKE, SMALL)
    stage = next(s for s in expand(config) if s.kind == "ablation")
    record = {"split": "dev", "spearman": {"mlps": {"r": -0.6, "p": 0.2, "n": 6}, "heads": {"r": None, "p": None, "n": 72}}}
    monkeypatch.setattr(step, "ablation_run", lambda *args, **kwargs: record)
    (row,) = study.execute(stage, env / "out", {"finetune": env, "prune": env}, config, False)
    assert (row.method, row.metric, row.value, row.seed, row.task) == ("ablation", "spearman:mlps", -0.6,
                                                                        stage.keys["seed"], stage.task)
