"""`bertlottery run CONFIG --plan`: stage counts, data, FLOPs by hand, estimates from a run directory and
from a calibration, and that it runs and writes nothing."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from bertlottery import runs
from bertlottery.cli import main
from bertlottery.config import from_dict, load
from bertlottery.plan import (PEAK_FLOPS, calibrate, magnitude_steps_bound, structured_steps_bound, study_plan,
                              task_sizes)
from bertlottery.studies import expand

REPO = Path(__file__).resolve().parents[1]


def _tiny_study(model_dir: Path, glue_dir: Path, **extra) -> dict:
    return {"name": "tiny", "model": str(model_dir), "glue_dir": str(glue_dir), "tasks": ["RTE"], "seeds": [1],
            "methods": ["structured"], "subnetworks": ["good"], "modes": ["pruned", "retrained"], "baselines": [],
            "super_survivors": False, "train": {"epochs": 2, "max_train_examples": 64, "max_length": 48}, **extra}


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def plans(glue_dir) -> dict:
    """The plans of three packaged configs (lottery, lottery with attention, Gordon), without calibration."""
    found = {}
    for name in ("smoke.yaml", "minilm-glue.yaml", "gordon-minilm.yaml"):
        config = load(REPO / "configs" / name, [f"glue_dir={glue_dir}"])
        stages = expand(config)
        found[name] = (stages, study_plan(config, stages, calibrate_here=False))
    return found


def test_counts_per_kind_are_the_graphs(plans):
    for name, (stages, plan) in plans.items():
        assert plan["stages"] == dict(Counter(s.kind for s in stages))
        assert plan["total_stages"] == len(stages)
        # every kind that trains or evaluates has FLOPs; the mask and table kinds none
        for kind, flops in plan["flops"]["by_kind"].items():
            trains = kind not in ("subnetworks", "super", "attention-analysis", "gordon-select", "gordon-oneshot", "tune")
            assert (flops > 0) == trains, (name, kind, flops)
    assert {"attention-maps", "gordon-pretrain", "gordon-finetune"} <= {
        kind for _, plan in plans.values() for kind in plan["stages"]}


def test_training_examples_and_epochs_per_task(plans, glue_dir):
    rows = {row["task"]: row for row in plans["minilm-glue.yaml"][1]["tasks"]}
    lines = sum(1 for _ in open(glue_dir / "SST-2" / "train.tsv")) - 1  # a header line
    assert rows["SST-2"]["train_examples"] == lines
    # minilm-glue tunes its epochs: the plan lists the grid's, one of which the tune stage chooses
    assert rows["SST-2"]["trained_on"] == 16000 and rows["SST-2"]["epochs"] == [2]
    assert rows["WNLI"]["trained_on"] == rows["WNLI"]["train_examples"] == 635  # no cap
    assert rows["MRPC"]["trained_on"] == rows["MRPC"]["train_examples"] == 3668 and rows["MRPC"]["epochs"] == [3]
    assert rows["WNLI"]["epochs"] == [3]  # not tuned
    assert all(row["source"] == "files" for row in rows.values())
    assert 5 < rows["SST-2"]["train_tokens_per_example"] < rows["RTE"]["train_tokens_per_example"] <= 128


@pytest.mark.parametrize("last_layer", ["full", "cls"])
def test_flops_of_a_tiny_study_equal_a_count_by_hand(tiny_model_dir, glue_dir, last_layer):
    config = from_dict(_tiny_study(tiny_model_dir, glue_dir, train={"epochs": 2, "max_train_examples": 64,
                                                                    "max_length": 48, "last_layer": last_layer}))
    stages = expand(config)
    plan = study_plan(config, stages, calibrate_here=False)
    size = task_sizes(config, ["RTE"], {"RTE": 48})["RTE"]
    # tiny BERT: 2 layers, 4 heads of 8, hidden 32, MLP 37. Per token and layer: each head's Q, K, V and
    # output 4*32*8 MACs and its scores and weighted values 2*8*L; the MLP 2*32*37. Under `cls` the last
    # layer's output projections (4 heads: 32*4*8) and MLP run at 1 of L positions.
    def forward(length: float) -> float:
        L = round(length)
        layer = 4 * (4 * 32 * 8 + 2 * 8 * L) + 2 * 32 * 37
        cut = (32 * 4 * 8 + 2 * 32 * 37) * (L - 1) / L if last_layer == "cls" else 0
        return 2 * (2 * layer - cut)

    train_tokens = 64 * 2 * size.train_tokens
    dev_tokens = 277 * size.eval_tokens
    expected_finetune = 3 * forward(size.train_tokens) * train_tokens + forward(size.eval_tokens) * dev_tokens
    assert plan["flops"]["by_kind"]["finetune"] == pytest.approx(expected_finetune, rel=1e-9)
    # re-fine-tuning: the same training and dev after each of its 2 epochs (the last is its result)
    expected_retrain = 3 * forward(size.train_tokens) * train_tokens + 2 * forward(size.eval_tokens) * dev_tokens
    assert plan["flops"]["by_kind"]["retrain"] == pytest.approx(expected_retrain, rel=1e-9)
    assert plan["flops"]["by_kind"]["evaluate"] == pytest.approx(forward(size.eval_tokens) * dev_tokens, rel=1e-9)
    # the search at its most: 8 heads, a step of int(0.1 * 8) -> 1 head and an MLP, then heads alone:
    # 2 joint steps and 6 head steps; the full and good models evaluated, a scoring (2 forward passes)
    # before the first step and after each accepted one
    steps = structured_steps_bound(2, 4)
    assert steps == 8
    expected_prune = forward(size.eval_tokens) * dev_tokens * (2 + steps + 2 * (steps + 1))
    assert plan["flops"]["by_kind"]["prune"] == pytest.approx(expected_prune, rel=1e-9)
    assert plan["flops"]["total"] == pytest.approx(sum(plan["flops"]["by_kind"].values()))
    assert plan["gpu_peak_hours"]["H100 SXM"] == pytest.approx(plan["flops"]["total"] / PEAK_FLOPS["H100 SXM"] / 3600)


@pytest.mark.parametrize("mode", ["heads+mlps", "heads", "mlps"])
@pytest.mark.parametrize("layers,heads", [(2, 4), (6, 12), (12, 12), (3, 5)])
def test_structured_bound_is_the_length_of_a_search_that_accepts_everything(mode, layers, heads):
    from bertlottery.importance import ImportanceScores
    from bertlottery.pruning import structured_search

    def score(head_mask, mlp_mask):
        return ImportanceScores(heads=torch.rand(layers, heads), mlps=torch.rand(layers), n_tokens=1, n_examples=1)

    result = structured_search(score, lambda h, m: 1.0, num_layers=layers, num_heads=heads, full_metric=1.0, mode=mode)
    assert structured_steps_bound(layers, heads, mode) == len(result.trace)


@pytest.mark.parametrize("weights,step,max_steps", [(100, 0.1, 100), (1000, 0.1, 100), (10**6, 0.1, 100), (60, 0.5, 100),
                                                     (10**6, 0.1, 10)])
def test_magnitude_bound_is_the_length_of_a_search_that_accepts_everything(weights, step, max_steps):
    from bertlottery.pruning import magnitude_search

    result = magnitude_search({"w": torch.rand(weights)}, lambda mask: 1.0, full_metric=1.0, step_fraction=step,
                              max_steps=max_steps)
    assert magnitude_steps_bound(weights, step, max_steps) == len(result.trace)


def test_estimate_from_finished_stages_uses_their_recorded_seconds(tiny_model_dir, glue_dir, tmp_path):
    from bertlottery.pipeline import graph_record

    config = from_dict(_tiny_study(tiny_model_dir, glue_dir))
    stages = expand(config)
    run_dir = tmp_path / "run"
    runs.write_graph(run_dir, graph_record(stages))
    recorded = {"finetune": 100.0, "prune": 40.0}
    for stage in stages:
        if stage.kind in recorded:
            folder = runs.stage_path(run_dir, stage.id)
            folder.mkdir(parents=True)
            runs.write_json(folder / runs.STAGE_FILE, {"id": stage.id, "seconds": recorded[stage.kind]})
    before = _listing(run_dir)
    plan = study_plan(config, stages, run_dir=run_dir, calibrate_here=False)
    by_kind = plan["seconds"]["by_kind"]
    assert by_kind["finetune"]["most"] == 100.0 and by_kind["finetune"]["from_run"] == 1
    assert by_kind["prune"]["least"] == by_kind["prune"]["most"] == 40.0
    # re-fine-tuning trains like the task's fine-tuning: estimated from its time
    assert by_kind["retrain"]["most"] == 100.0 * plan["stages"]["retrain"]
    assert by_kind["evaluate"]["unknown"] == plan["stages"]["evaluate"]  # no evaluate finished, no calibration
    assert plan["seconds"]["most"] == 100.0 + 40.0 + 100.0 * plan["stages"]["retrain"]
    assert _listing(run_dir) == before


def test_stages_of_another_task_are_estimated_by_their_flops(tiny_model_dir, glue_dir, tmp_path):
    """An RTE fine-tuning and s-search finished; MRPC's stages of the same kinds take RTE's seconds per
    FLOP times their own FLOPs, while RTE's unfinished stages take RTE's own mean (same data, same work)."""
    from bertlottery.models import layout_from_config
    from bertlottery.pipeline import graph_record
    from bertlottery.plan import model_dims, stage_work, work_flops

    config = from_dict(_tiny_study(tiny_model_dir, glue_dir, tasks=["RTE", "MRPC"], seeds=[1, 2],
                                   train={"epochs": 2, "max_train_examples": 64, "max_length": 48,
                                          "per_task": {"MRPC": {"epochs": 3}}}))
    stages = expand(config)
    run_dir = tmp_path / "run"
    runs.write_graph(run_dir, graph_record(stages))
    recorded = {("finetune", 1): 100.0, ("prune", 1): 40.0}
    for stage in stages:
        if stage.task == "RTE" and (stage.kind, stage.keys.get("seed")) in recorded:
            folder = runs.stage_path(run_dir, stage.id)
            folder.mkdir(parents=True)
            runs.write_json(folder / runs.STAGE_FILE, {"id": stage.id, "seconds": recorded[stage.kind, 1]})
    plan = study_plan(config, stages, run_dir=run_dir, calibrate_here=False)

    dims, _ = model_dims(config.model)
    layout = layout_from_config(dims)
    sizes = task_sizes(config, ["RTE", "MRPC"], {"RTE": 48, "MRPC": 48})
    flops = {s.id: work_flops(stage_work(s, config, sizes, layout, reads_first=True).most, layout) for s in stages}
    of = lambda kind, task: [s for s in stages if s.kind == kind and s.task == task]  # noqa: E731
    rte = {kind: flops[of(kind, "RTE")[0].id] for kind in ("finetune", "prune")}
    expected = {kind: 2 * recorded[kind, 1] + sum(recorded[kind, 1] / rte[kind] * flops[s.id] for s in of(kind, "MRPC"))
                for kind in ("finetune", "prune")}
    assert flops[of("finetune", "MRPC")[0].id] != rte["finetune"]  # MRPC trains 3 epochs on longer pairs
    for kind in ("finetune", "prune"):
        assert plan["seconds"]["by_kind"][kind]["most"] == pytest.approx(expected[kind])


def test_stages_a_run_skipped_cost_nothing(tiny_model_dir, glue_dir, tmp_path):
    """A task whose fine-tuning was not learnt has its pruning and downstream stages skipped: with the
    run directory the plan counts them as skipped by the run, with no seconds and no FLOPs."""
    from bertlottery.pipeline import SKIPPED_DIR, graph_record
    from bertlottery.plan import format_plan

    config = from_dict(_tiny_study(tiny_model_dir, glue_dir, tasks=["RTE", "MRPC"]))
    stages = expand(config)
    run_dir = tmp_path / "run"
    runs.write_graph(run_dir, graph_record(stages))
    for stage in stages:
        if stage.task == "RTE" and stage.kind == "finetune":
            folder = runs.stage_path(run_dir, stage.id)
            folder.mkdir(parents=True)
            runs.write_json(folder / runs.STAGE_FILE, {"id": stage.id, "seconds": 100.0})
    before = study_plan(config, stages, run_dir=run_dir, calibrate_here=False)
    skipped = [s for s in stages if s.task == "MRPC" and s.kind in ("prune", "retrain", "evaluate")]
    (run_dir / SKIPPED_DIR).mkdir(parents=True)
    for stage in skipped:
        runs.write_json(run_dir / SKIPPED_DIR / f"{stage.file_id}.json", {"id": stage.id, "reason": "not learnt"})
    after = study_plan(config, stages, run_dir=run_dir, calibrate_here=False)
    for kind in ("prune", "retrain", "evaluate"):
        n = sum(1 for s in skipped if s.kind == kind)
        assert after["seconds"]["by_kind"][kind]["skipped"] == n > 0
        assert after["flops"]["by_kind"][kind] < before["flops"]["by_kind"][kind]
        # no longer waiting for an estimate: the run says they will not run
        assert after["seconds"]["by_kind"][kind]["unknown"] == before["seconds"]["by_kind"][kind]["unknown"] - n
    assert "skipped by the run" in format_plan(after) and "skipped by the run" not in format_plan(before)


def test_calibration_estimates_every_stage_that_computes(tiny_model_dir, glue_dir):
    config = from_dict(_tiny_study(tiny_model_dir, glue_dir))
    stages = expand(config)
    plan = study_plan(config, stages, calibrate_here=True, threads=1, seconds_each=0.05)
    by_kind = plan["seconds"]["by_kind"]
    assert plan["calibration"]["threads"] == 1
    assert all(line["per_flop"] > 0 and line["per_step"] >= 0 for line in plan["calibration"]["seconds_per_step"].values())
    for kind in ("finetune", "prune", "evaluate", "retrain"):
        assert by_kind[kind]["calibrated"] == plan["stages"][kind] and by_kind[kind]["most"] > 0
    # a search runs between one step and all of them; the other kinds have one figure
    assert by_kind["prune"]["least"] < by_kind["prune"]["most"]
    assert by_kind["finetune"]["least"] == by_kind["finetune"]["most"]
    # the training passes of one epoch more cost more
    longer = study_plan(from_dict(_tiny_study(tiny_model_dir, glue_dir, train={"epochs": 4, "max_train_examples": 64,
                                                                               "max_length": 48})),
                        expand(from_dict(_tiny_study(tiny_model_dir, glue_dir, train={
                            "epochs": 4, "max_train_examples": 64, "max_length": 48}))), calibrate_here=False)
    assert longer["flops"]["by_kind"]["finetune"] > plan["flops"]["by_kind"]["finetune"]


def test_calibrate_fits_a_line_per_kind(tiny_model_dir):
    from bertlottery.plan import Pass

    dims = json.loads((tiny_model_dir / "config.json").read_text())
    shapes = {("train", 4, 16), ("train", 8, 40), ("eval", 8, 16)}
    calibration = calibrate(dims, shapes, threads=1, seconds_each=0.02)
    assert set(calibration.seconds_per_step) == {"train", "eval"}
    # each kind timed at its smallest shape and at its longest length (the batch cut to 512 tokens)
    assert {(t["kind"], t["batch"], t["length"]) for t in calibration.timed} == {
        ("train", 4, 16), ("train", 8, 40), ("eval", 8, 16)}
    assert all(t["seconds_per_step"] > 0 for t in calibration.timed)
    per_step, per_flop = calibration.seconds_per_step["train"]
    assert per_flop > 0 and per_step >= 0
    # a pass of 10 steps of 4 x 16 tokens: 10 steps' fixed part and its FLOPs' part
    assert calibration.seconds(Pass("train", 640, 4, 16), 3000.0) == pytest.approx(10 * per_step + 640 * 3000 * per_flop)
    assert calibration.busy >= 0.9 and calibration.precision == "fp32"


def test_mlm_work_is_timed_on_the_model_with_its_head_at_its_own_shape(tiny_model_dir):
    from bertlottery.plan import Pass

    dims = json.loads((tiny_model_dir / "config.json").read_text())
    shapes = {("train", 16, 64), ("mlm-train", 16, 64), ("mlm-head", 16, 64), ("mlm-eval", 16, 64)}
    calibration = calibrate(dims, shapes, threads=1, seconds_each=0.01)
    assert set(calibration.seconds_per_step) == {"train", "mlm-train", "mlm-head", "mlm-eval"}
    timed = {(t["kind"], t["batch"], t["length"]) for t in calibration.timed}
    # a classification line's longest point is cut to 512 tokens; an MLM step is timed at its shape alone
    assert timed == {("train", 16, 64), ("train", 8, 64), ("mlm-train", 16, 64), ("mlm-head", 16, 64),
                     ("mlm-eval", 16, 64)}
    # a pass with an MLM head reads its own line
    head_pass = Pass("head", 1024, 16, 64)
    per_step, per_flop = calibration.seconds_per_step["mlm-head"]
    assert calibration.seconds(head_pass, 100.0, mlm=True) == pytest.approx(per_step + 1024 * 100.0 * per_flop)


def test_training_a_head_on_a_frozen_encoder_counts_the_forward_pass_and_the_heads_backward(tiny_model_dir):
    from bertlottery.models import layout_from_config
    from bertlottery.plan import Pass, pass_flops_per_token

    dims = json.loads((tiny_model_dir / "config.json").read_text())
    layout = layout_from_config(dims)
    vocab, d = dims["vocab_size"], layout.hidden_size
    forward = pass_flops_per_token(Pass("eval", 1, 1, 16), layout, vocab)
    head = 2 * (d * d + d * vocab)  # the transform and the projection onto the vocabulary, per token
    assert pass_flops_per_token(Pass("head", 1, 1, 16), layout, vocab) == forward + 2 * head
    assert pass_flops_per_token(Pass("train", 1, 1, 16), layout, vocab) == 3 * forward
    assert forward + 2 * head < 3 * forward  # the encoder's backward is not done


def test_calibration_times_steps_under_the_studys_autocast(tiny_model_dir, monkeypatch):
    import bertlottery.precision as precision

    dims = json.loads((tiny_model_dir / "config.json").read_text())
    entered = []
    real = precision.autocast
    monkeypatch.setattr(precision, "autocast", lambda p, d: entered.append(p) or real(p, d))
    calibration = calibrate(dims, {("train", 4, 16), ("eval", 4, 16)}, threads=1, seconds_each=0.01, precision="bf16")
    assert calibration.precision == "bf16" and set(entered) == {"bf16"} and len(entered) >= 4


def test_calibration_trains_with_the_stages_optimizer(tiny_model_dir, monkeypatch):
    """A short step's time is mostly AdamW's: timed with the default one instead of the fused one the
    stages build, CoLA's fine-tunings were planned 1.3-1.4x too long."""
    import bertlottery.training as training

    dims = json.loads((tiny_model_dir / "config.json").read_text())
    built = []
    real = training.build_adamw

    def spy(groups, **kwargs):
        built.append(sum(p.numel() for g in groups for p in g["params"]))
        return real(groups, **kwargs)

    monkeypatch.setattr(training, "build_adamw", spy)
    calibration = calibrate(dims, {("train", 4, 16), ("mlm-head", 4, 16), ("eval", 4, 16)}, threads=1,
                            seconds_each=0.01)
    # one optimizer per training line: the classifier's whole model; the MLM head's parameters alone
    assert set(calibration.seconds_per_step) == {"train", "mlm-head", "eval"} and len(built) == 2
    assert built[1] < built[0]
    # each shape's time is the median of at least three steps
    assert all(t["seconds_per_step"] > 0 for t in calibration.timed)


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_the_printed_plan_names_the_precision_it_calibrated_in(asked, tiny_model_dir, glue_dir):
    from bertlottery.plan import format_plan
    from bertlottery.precision import resolve_precision

    study = _tiny_study(tiny_model_dir, glue_dir)
    study["train"]["precision"] = asked
    config = from_dict(study)
    plan = study_plan(config, expand(config), calibrate_here=True, threads=1, seconds_each=0.01)
    used = resolve_precision(asked, "cpu")  # bf16 where this CPU has the instructions
    assert plan["calibration"]["precision"] == used  # it always said fp32: the key was missing
    assert f"s, in {used}" in format_plan(plan)


def test_line_through_two_points():
    from bertlottery.plan import _line

    assert _line([(100.0, 2.0), (300.0, 4.0)]) == pytest.approx((1.0, 0.01))
    assert _line([(100.0, 2.0)]) == pytest.approx((0.0, 0.02))
    assert _line([(100.0, 3.0), (300.0, 2.0)]) == pytest.approx((0.0, 3.0 / 300))  # noise: through the origin
    # the calibration hands its points in batch order, not FLOPs order (a batch of 16 short sentences after
    # 7 long pairs): the same line, not one through the origin that underestimates the small step
    assert _line([(300.0, 4.0), (100.0, 2.0)]) == pytest.approx((1.0, 0.01))


def test_paper_plan_runs_offline_and_prints_gpu_hours(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    assert main(["run", str(REPO / "configs" / "paper.yaml"), "--plan", "--no-calibrate", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["layout"]["num_layers"] == 12 and plan["layout"]["hidden_size"] == 768
    assert plan["stages"]["finetune"] == 45 and plan["tasks"][0]["source"] == "GLUE sizes"
    # bert-base at 128 tokens (no data here: every example counted at max_length): 87,293,952 body MACs
    # per token (`body_macs_per_token`'s example), less the last layer's output projection (768 x 768) and
    # MLP (2 x 768 x 3072) at 127 of 128 positions under `train.last_layer: cls` (the default); 5 seeds x 3
    # epochs of training and one dev evaluation
    macs = 87_293_952 - (768 * 768 + 2 * 768 * 3072) * 127 / 128
    train = sum(t["trained_on"] for t in plan["tasks"]) * 128
    dev = sum(t["eval_examples"] for t in plan["tasks"]) * 128
    assert plan["flops"]["by_kind"]["finetune"] == pytest.approx(5 * (6 * macs * 3 * train + 2 * macs * dev))
    assert plan["gpu_peak_hours"]["H100 SXM"] > 1
    assert main(["run", str(REPO / "configs" / "paper.yaml"), "--plan", "--no-calibrate"]) == 0
    text = capsys.readouterr().out
    assert "H100 SXM" in text and "H200" in text and "finetune" in text
    assert _listing(tmp_path) == []  # no run directory, no cache


def test_plan_creates_nothing(tiny_model_dir, glue_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(_tiny_study(tiny_model_dir, glue_dir)))
    before = _listing(tmp_path)
    assert main(["run", str(config), "--plan", "--no-calibrate"]) == 0
    out = capsys.readouterr().out
    assert "finetune" in out and "RTE" in out and "FLOPs" in out
    assert _listing(tmp_path) == before
    assert not (tmp_path / "runs").exists() and not os.path.exists(tmp_path / "cache")


def test_plan_bad_input_is_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml"), "--plan"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(REPO / "configs" / "smoke.yaml"), "--plan", "--run-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--run-dir" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()



def test_a_tuned_task_is_costed_by_its_candidates_and_bounded_by_the_grid(tiny_model_dir, glue_dir):
    from bertlottery.models import layout_from_config
    from bertlottery.plan import model_dims, stage_work, task_sizes

    tuned = from_dict(_tiny_study(tiny_model_dir, glue_dir, tune={"learning_rates": [1e-4, 5e-5], "epochs": [1, 3]}))
    plain = from_dict(_tiny_study(tiny_model_dir, glue_dir, train={"epochs": 3, "max_train_examples": 64,
                                                                   "max_length": 48}))
    plan = study_plan(tuned, expand(tuned), calibrate_here=False)
    assert plan["stages"]["tune-candidate"] == 4 and plan["stages"]["tune"] == 1
    assert plan["flops"]["by_kind"]["tune-candidate"] > 0 and not plan["flops"]["by_kind"].get("tune")
    # the tuned fine-tuning's epochs are chosen at run time: costed at the grid's most (3), as a plain 3-epoch run
    assert plan["flops"]["by_kind"]["finetune"] == study_plan(plain, expand(plain), calibrate_here=False)[
        "flops"]["by_kind"]["finetune"]
    candidates = [s for s in expand(tuned) if s.kind == "tune-candidate"]
    sizes = task_sizes(tuned, ["RTE"], {"RTE": 48})
    layout = layout_from_config(model_dims(tuned.model)[0])
    tokens = sorted({stage_work(s, tuned, sizes, layout).most[0].tokens for s in candidates})
    assert len(tokens) == 2 and tokens[1] == pytest.approx(3 * tokens[0])  # 1 or 3 epochs over the same examples


def test_a_fisher_search_is_costed_by_its_sample_and_its_tuning(glue_dir):
    config = load(REPO / "configs" / "fisher-smoke.yaml", [f"glue_dir={glue_dir}"])
    stages = expand(config)
    plan = study_plan(config, stages, calibrate_here=False)
    assert plan["stages"] == dict(Counter(s.kind for s in stages))
    untuned = load(REPO / "configs" / "fisher-smoke.yaml", [f"glue_dir={glue_dir}", "pruning.fisher.tune=false"])
    fisher = [s for s in stages if s.kind == "prune" and s.keys["method"] == "fisher"]
    fisher_untuned = [s for s in expand(untuned) if s.kind == "prune" and s.keys["method"] == "fisher"]
    from bertlottery.models import layout_from_config
    from bertlottery.plan import model_dims, stage_work, task_sizes

    sizes = task_sizes(config, ["RTE"], {"RTE": config.train.for_task("RTE", 1)["max_length"]})
    layout = layout_from_config(model_dims(config.model)[0])
    with_tuning = stage_work(fisher[0], config, sizes, layout).most
    without = stage_work(fisher_untuned[0], untuned, sizes, layout).most
    assert any(p.kind == "score" for p in with_tuning) and len(with_tuning) == len(without) + 1


def test_the_plan_says_which_subnetwork_trainings_it_counts_at_full_size(plans):
    """s-pruned subnetworks re-fine-tuned physically smaller cost less than planned (their size is
    known after their search); the plan counts them and says so, m-pruned ones train at full size."""
    from bertlottery.plan import format_plan

    stages, plan = plans["minilm-glue.yaml"]
    physical = [s for s in stages if s.kind in ("retrain", "baseline") and "physical" in (
        s.settings.get("subnetwork_training"), s.settings.get("train", {}).get("subnetwork_training"))]
    assert physical and all(s.keys["method"] in ("structured", "random-init") for s in physical)
    assert plan["physical_subnetworks"] == len(physical)
    assert f"{len(physical)} trainings of s-pruned subnetworks are counted at the full model's size" in format_plan(plan)
    _, gordon = plans["gordon-minilm.yaml"]
    assert gordon["physical_subnetworks"] == 0 and "s-pruned" not in format_plan(gordon)


def test_the_last_layer_cut_is_counted_where_the_passes_make_it(glue_dir):
    """Under `train.last_layer: cls` (the default) a sequence classifier's training, evaluation, scoring and
    Fisher passes compute the last layer's output projection and MLP at the first position only, and the
    plan counts them so; attention maps, the Fisher search's least-squares tuning and MLM work compute every
    position and are counted so; with `full`, or a head that reads every position, nothing is cut."""
    from bertlottery.models import layout_from_config
    from bertlottery.plan import model_dims, pass_flops_per_token, stage_work

    cut_somewhere = set()
    for name in ("smoke.yaml", "fisher-smoke.yaml", "gordon-minilm.yaml", "minilm-glue.yaml"):
        for last_layer in ("cls", "full"):
            config = load(REPO / "configs" / name, [f"glue_dir={glue_dir}", f"train.last_layer={last_layer}"])
            stages = expand(config)
            layout = layout_from_config(model_dims(config.model)[0])
            tasks = sorted({s.task for s in stages} - {"pretrain"})
            sizes = task_sizes(config, tasks, {t: config.train.for_task(t, config.seeds[0])["max_length"] for t in tasks})
            for stage in stages:
                for reads_first in (True, False):
                    work = stage_work(stage, config, sizes, layout, reads_first=reads_first)
                    cut = [p.first_position for p in work.most]
                    if not (reads_first and last_layer == "cls") or stage.task == "pretrain" or stage.kind == "attention-maps":
                        assert not any(cut), (name, stage.id)
                    elif stage.kind == "prune" and stage.keys["method"] == "fisher":
                        assert cut == [True] * (len(cut) - 1) + [False], stage.id  # the tuning pass last
                    else:
                        assert all(cut), (name, stage.id)
                    if any(cut):
                        cut_somewhere.add(stage.kind)
                        full = stage_work(stage, config, sizes, layout, reads_first=False)
                        for p, q in zip(work.most, full.most):
                            ratio = pass_flops_per_token(p, layout) / pass_flops_per_token(q, layout)
                            assert (ratio < 1) == p.first_position
    assert {"finetune", "baseline", "retrain", "evaluate", "prune", "gordon-finetune"} <= cut_somewhere
