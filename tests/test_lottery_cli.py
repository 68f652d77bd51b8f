"""The lottery's steps through the real CLI on a tiny model: prune, subnetworks, evaluate, retrain, baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertlottery.steps import finetune as finetune_step
from bertlottery.cli import main
from bertlottery.masks import load_masks
from bertlottery.models import load_model

from tiny import write_rte


def cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """A fine-tuned tiny run (with a held-out slice of train) on the tiny RTE-shaped task."""
    root = tmp_path_factory.mktemp("lottery")
    import os

    os.environ["BERTLOTTERY_CACHE"] = str(root / "cache")
    glue = write_rte(root / "glue", n_train=64, n_dev=24)
    run = root / "run"
    assert cli("finetune", "--model", tiny_model_dir, "--task", "RTE", "--glue-dir", glue, "--out", run,
               "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--seed", "7", "--holdout-fraction", "0.25",
               "--no-progress") == 0
    return root, glue, run


def read(path: Path):
    return json.loads(path.read_text())


def test_structured_prune_writes_mask_trace_and_metrics(tiny_run, tmp_path):
    root, glue, run = tiny_run
    out = tmp_path / "s"
    assert cli("prune", "structured", run, "--out", out, "--glue-dir", glue, "--no-progress") == 0
    masks = load_masks(out / "mask.safetensors")
    trace = read(out / "trace.json")
    metrics = read(out / "metrics.json")
    assert masks.heads.shape == (2, 4) and masks.mlps.shape == (2,)
    assert masks.params["method"] == "structured" and masks.params["seed"] == 7
    assert trace["steps"], "the search took no step"
    assert all({"phase", "metric", "accepted", "heads_kept", "mlps_kept", "scores"} <= set(s) for s in trace["steps"])
    accepted = [s for s in trace["steps"] if s["accepted"]]
    assert all(s["metric"] >= trace["min_metric"] for s in accepted)
    assert all(s["metric"] < trace["min_metric"] for s in trace["steps"] if not s["accepted"])
    assert metrics["heads_kept"] == masks.heads.n_kept and metrics["mlps_kept"] == masks.mlps.n_kept
    dev = metrics["splits"]["dev"]["metrics"]["accuracy"]
    assert dev == pytest.approx(trace["final_metric"]) and dev >= trace["min_metric"]


def test_heldout_scoring_and_its_error(tiny_run, tmp_path, tiny_model_dir, capsys):
    root, glue, run = tiny_run
    assert cli("prune", "structured", run, "--out", tmp_path / "h", "--glue-dir", glue, "--scoring-split",
               "heldout", "--mode", "heads", "--no-progress") == 0
    assert load_masks(tmp_path / "h" / "mask.safetensors").params["scoring_split"] == "heldout"
    plain = tmp_path / "plain"
    assert cli("finetune", "--model", tiny_model_dir, "--task", "RTE", "--glue-dir", glue, "--out", plain,
               "--epochs", "1", "--no-progress") == 0
    capsys.readouterr()
    assert cli("prune", "structured", plain, "--out", tmp_path / "x", "--glue-dir", glue,
               "--scoring-split", "heldout") == 2
    assert "--holdout-fraction" in capsys.readouterr().err


def test_magnitude_prune_and_its_trace(tiny_run, tmp_path):
    root, glue, run = tiny_run
    out = tmp_path / "m"
    assert cli("prune", "magnitude", run, "--out", out, "--glue-dir", glue, "--no-progress") == 0
    masks = load_masks(out / "mask.safetensors")
    trace = read(out / "trace.json")
    assert masks.weights is not None and masks.params["method"] == "magnitude"
    total = masks.weights.n_total
    for k, step in enumerate(trace["steps"], start=1):
        assert abs(step["weights_kept"] - total * 0.9**k) <= k  # 10% of the remaining per step
    assert trace["weights_kept"] == masks.weights.n_kept


def test_subnetworks_evaluate_pruned_and_bad_below_good(tiny_run, tmp_path, capsys):
    root, glue, run = tiny_run
    assert cli("prune", "structured", run, "--out", tmp_path / "s", "--glue-dir", glue, "--no-progress") == 0
    assert cli("subnetworks", tmp_path / "s", "--out", tmp_path / "sub", "--seed", "3") == 0
    good, random, bad = (load_masks(tmp_path / "sub" / f"{n}.safetensors") for n in ("good", "random", "bad"))
    for other in (random, bad):
        assert other.heads.n_kept == good.heads.n_kept and other.mlps.n_kept == good.mlps.n_kept
    assert bad.params["seed"] == 3
    capsys.readouterr()
    assert cli("evaluate", run, "--glue-dir", glue, "--mask", tmp_path / "sub" / "good.safetensors",
               "--format", "json") == 0
    good_eval = json.loads(capsys.readouterr().out)
    expected = read(tmp_path / "s" / "metrics.json")["splits"]["dev"]["metrics"]
    assert good_eval["splits"]["dev"]["metrics"] == expected  # the pruned mode reproduces the search's metric
    assert good_eval["evaluated_on"] == "physical"  # a head+MLP mask: the smaller model, as a study evaluates it
    # --gated: the full model with gates, as earlier versions evaluated; the same metrics to float tolerance
    assert cli("evaluate", run, "--glue-dir", glue, "--mask", tmp_path / "sub" / "good.safetensors", "--gated") == 0
    assert "evaluated with gates on the full model" in capsys.readouterr().out
    assert cli("evaluate", run, "--glue-dir", glue, "--mask", tmp_path / "sub" / "good.safetensors", "--gated",
               "--format", "json") == 0
    gated = json.loads(capsys.readouterr().out)
    assert gated["evaluated_on"] == "gated"
    assert gated["splits"]["dev"]["metrics"] == pytest.approx(expected, abs=1e-6)


def test_fisher_prune_at_the_structured_masks_cost_and_its_subnetworks(tiny_run, tmp_path, capsys):
    from bertlottery.export import body_macs_per_token
    from bertlottery.fisher import neurons_of
    from bertlottery.models import model_layout

    root, glue, run = tiny_run
    assert cli("prune", "structured", run, "--out", tmp_path / "s", "--glue-dir", glue, "--no-progress") == 0
    assert cli("prune", "fisher", run, "--out", tmp_path / "f", "--glue-dir", glue, "--budget-of", tmp_path / "s",
               "--no-progress") == 0
    assert "with the tuned scales, no retraining" in capsys.readouterr().out
    model = load_model(str(run / "model"), 2)
    structured = load_masks(tmp_path / "s" / "mask.safetensors")
    metrics = read(tmp_path / "f" / "metrics.json")
    assert metrics["budget"] == body_macs_per_token(model_layout(model), 128, structured.heads, structured.mlps)
    assert metrics["cost"] <= metrics["budget"]
    good = load_masks(tmp_path / "f" / "mask.safetensors")
    assert good.params["method"] == "fisher" and good.params["seed"] == 7
    assert good.params["n_examples"] == 48  # the 64 training pairs less the held-out quarter
    assert torch.equal(neurons_of(model, good.weights), load_file(tmp_path / "f" / "fisher.safetensors")["neurons_kept"].bool())

    assert cli("subnetworks", tmp_path / "f", "--out", tmp_path / "sub", "--seed", "3") == 0
    masks = {n: load_masks(tmp_path / "sub" / f"{n}.safetensors") for n in ("good", "random", "bad")}
    for name in ("random", "bad"):
        assert torch.equal(masks[name].heads.keep.sum(1), good.heads.keep.sum(1))
        assert masks[name].weights.n_kept == good.weights.n_kept
    capsys.readouterr()
    assert cli("evaluate", run, "--glue-dir", glue, "--mask", tmp_path / "sub" / "good.safetensors",
               "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["splits"]["dev"]["metrics"] == metrics["splits"]["dev"]["metrics"]

    assert cli("prune", "fisher", run, "--out", tmp_path / "x", "--glue-dir", glue) == 2
    assert "one budget" in capsys.readouterr().err
    assert cli("prune", "fisher", run, "--out", tmp_path / "x", "--glue-dir", glue, "--budget-fraction", "0.5",
               "--budget", "10") == 2
    assert "one budget" in capsys.readouterr().err


def test_retrain_starts_from_pretrained_weights_and_the_original_classifier(tiny_run, tmp_path, tiny_model_dir,
                                                                             monkeypatch):
    root, glue, run = tiny_run
    assert cli("prune", "magnitude", run, "--out", tmp_path / "m", "--glue-dir", glue, "--no-progress") == 0
    starts = []
    real_finetune = finetune_step.finetune

    def spy(model, *args, **kwargs):
        starts.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return real_finetune(model, *args, **kwargs)

    monkeypatch.setattr(finetune_step, "finetune", spy)
    out = tmp_path / "re"
    assert cli("retrain", run, "--mask", tmp_path / "m", "--out", out, "--glue-dir", glue, "--epochs", "3",
               "--no-progress") == 0
    start = starts[0]
    pretrained = load_model(str(tiny_model_dir), 2)
    for name, param in pretrained.named_parameters():
        if not name.startswith("classifier"):
            assert torch.equal(start[name], param), f"{name} was not rewound to the pre-trained checkpoint"
    original_classifier = load_model(str(tiny_model_dir), 2, seed=7).classifier.weight
    assert torch.equal(start["classifier.weight"], original_classifier)

    mask = load_masks(tmp_path / "m" / "mask.safetensors")
    weights = load_file(out / "model" / "model.safetensors")
    for name, keep in mask.weights.keep.items():
        assert torch.count_nonzero(weights[name][~keep]) == 0, f"{name}: masked weights moved in re-fine-tuning"
    history = read(out / "history.json")
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert all("accuracy" in e["dev"]["dev"] for e in history["epochs"])  # dev metric after every epoch
    config = read(out / "config.json")
    assert config["mode"] == "retrained" and config["train"]["seed"] == 7 and config["train"]["epochs"] == 3
    assert (out / "mask.safetensors").is_file()


@pytest.mark.parametrize("method, options", [("magnitude", []), ("structured", ["--mode", "heads", "--threshold", "0.01"])],
                         ids=["gated", "physical"])
def test_retrain_evaluates_dev_once_per_epoch_and_reports_the_last(tiny_run, tmp_path, monkeypatch, method, options):
    """The final metrics are the last epoch's evaluation (the same model, mask and precision), not a second
    pass over dev; they equal what `evaluate` computes from the saved run under its mask."""
    root, glue, run = tiny_run
    assert cli("prune", method, run, "--out", tmp_path / "p", "--glue-dir", glue, *options, "--no-progress") == 0
    calls = {"epoch": 0, "final": 0}
    real_evaluate, real_evaluate_model = finetune_step.evaluate, finetune_step.evaluate_model

    def per_epoch(*args, **kwargs):
        calls["epoch"] += 1
        return real_evaluate(*args, **kwargs)

    def final(*args, **kwargs):
        calls["final"] += 1
        return real_evaluate_model(*args, **kwargs)

    monkeypatch.setattr(finetune_step, "evaluate", per_epoch)
    monkeypatch.setattr(finetune_step, "evaluate_model", final)
    out = tmp_path / "re"
    assert cli("retrain", run, "--mask", tmp_path / "p", "--out", out, "--glue-dir", glue, "--epochs", "2",
               "--no-progress") == 0
    assert calls == {"epoch": 2, "final": 0}  # one split (RTE's dev), once per epoch
    metrics, history = read(out / "metrics.json"), read(out / "history.json")
    assert read(out / "config.json")["trained_as"] == ("gated" if method == "magnitude" else "physical")
    assert metrics["splits"]["dev"]["metrics"] == history["epochs"][-1]["dev"]["dev"]
    monkeypatch.undo()
    assert cli("evaluate", out, "--glue-dir", glue, "--mask", out / "mask.safetensors", "--out", tmp_path / "e.json") == 0
    again = read(tmp_path / "e.json")
    assert again["splits"]["dev"]["metrics"]["accuracy"] == pytest.approx(metrics["splits"]["dev"]["metrics"]["accuracy"])


def test_masked_heads_stay_off_through_retraining(tiny_run, tmp_path, tiny_model_dir):
    root, glue, run = tiny_run
    assert cli("prune", "structured", run, "--out", tmp_path / "s", "--glue-dir", glue, "--mode", "heads",
               "--threshold", "0.01", "--no-progress") == 0
    mask = load_masks(tmp_path / "s" / "mask.safetensors")
    assert mask.heads.n_pruned > 0
    assert cli("retrain", run, "--mask", tmp_path / "s", "--out", tmp_path / "re", "--glue-dir", glue,
               "--no-progress") == 0
    trained = load_file(tmp_path / "re" / "model" / "model.safetensors")
    pretrained = dict(load_model(str(tiny_model_dir), 2).named_parameters())
    for layer, head in torch.nonzero(~mask.heads.keep).tolist():
        rows = slice(head * 8, (head + 1) * 8)
        name = f"bert.encoder.layer.{layer}.attention.self.query.weight"
        # a gated-off head receives no gradient: its weights are exactly the pre-trained ones
        assert torch.equal(trained[name][rows], pretrained[name][rows].detach())


def test_super_survivors_from_the_papers_released_masks(reference_dir, tmp_path):
    seeds = sorted((reference_dir / "masks/heads_mlps/CoLA").glob("seed_*"))
    assert cli("subnetworks", "--super", *seeds, "--out", tmp_path / "super", "--seed", "0") == 0
    good = load_masks(tmp_path / "super" / "good.safetensors")
    from bertlottery.masks import import_prasanna2020

    stack = torch.stack([import_prasanna2020(s).heads.keep for s in seeds])
    assert torch.equal(good.heads.keep, stack.all(0))
    bad = load_masks(tmp_path / "super" / "bad.safetensors")
    assert bad.heads.n_kept == good.heads.n_kept


def test_baselines(tiny_run, tmp_path, tiny_model_dir, capsys):
    root, glue, run = tiny_run
    assert cli("baseline", "majority", "--task", "RTE", "--glue-dir", glue, "--out", tmp_path / "maj.json") == 0
    majority = read(tmp_path / "maj.json")["splits"]["dev"]["metrics"]["accuracy"]
    dev_labels = [line.split("\t")[-1].strip() for line in (glue / "RTE" / "dev.tsv").read_text().splitlines()[1:]]
    counts = {label: dev_labels.count(label) for label in set(dev_labels)}
    assert majority in {c / len(dev_labels) for c in counts.values()}

    assert cli("prune", "structured", run, "--out", tmp_path / "s", "--glue-dir", glue, "--no-progress") == 0
    assert cli("subnetworks", tmp_path / "s", "--out", tmp_path / "sub", "--seed", "1") == 0
    out = tmp_path / "rand"
    assert cli("baseline", "random-init", "--model", tiny_model_dir, "--task", "RTE", "--glue-dir", glue,
               "--size-of", tmp_path / "sub" / "bad.safetensors", "--out", out, "--epochs", "1",
               "--no-progress") == 0
    config = read(out / "config.json")
    assert config["random_init"] and config["baseline"] == "random-init"
    mask = load_masks(out / "mask.safetensors")
    bad = load_masks(tmp_path / "sub" / "bad.safetensors")
    assert mask.heads.n_kept == bad.heads.n_kept and mask.mlps.n_kept == bad.mlps.n_kept
    weights = load_file(out / "model" / "model.safetensors")
    pretrained = dict(load_model(str(tiny_model_dir), 2).named_parameters())
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    assert not torch.allclose(weights[name], pretrained[name].detach())  # not the pre-trained encoder


def test_prune_of_something_that_is_not_a_run(tmp_path, capsys):
    assert cli("prune", "structured", tmp_path, "--out", tmp_path / "o") == 2
    assert "not a finished fine-tuning run" in capsys.readouterr().err
    assert cli("prune", "structured", tmp_path, "--out", tmp_path / "o", "--keep-fraction", "1.5") == 2
    assert "--keep-fraction" in capsys.readouterr().err


def test_export_through_the_cli_gives_the_gated_metrics(tiny_run, tmp_path, capsys):
    root, glue, run = tiny_run
    assert cli("prune", "structured", run, "--out", tmp_path / "s", "--glue-dir", glue, "--threshold", "0.01",
               "--no-progress") == 0
    assert cli("export", run, "--mask", tmp_path / "s", "--out", tmp_path / "small") == 0
    plan = read(tmp_path / "small" / "pruning.json")
    assert plan["params"]["body_after"] < plan["params"]["body_before"]
    capsys.readouterr()
    assert cli("evaluate", tmp_path / "small", "--glue-dir", glue, "--format", "json") == 0
    exported = json.loads(capsys.readouterr().out)
    gated = read(tmp_path / "s" / "metrics.json")
    assert exported["splits"]["dev"]["metrics"] == gated["splits"]["dev"]["metrics"]
    assert exported["body_fraction_kept"] == pytest.approx(gated["body_fraction_kept"])
    assert cli("evaluate", tmp_path / "small", "--glue-dir", glue, "--mask", tmp_path / "s") == 2
    assert "already applied" in capsys.readouterr().err
