"""Re-fine-tuning and search evaluation on the physically pruned model against the gated full model."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from bertlottery.errors import UserError
from bertlottery.importance import structured_importance
from bertlottery.masking import gated, structured_weight_mask
from bertlottery.masks import HeadMask, Masks, MlpMask, WeightMask
from bertlottery.physical import export_for, finetune_pruned, merge_trained, pruned_evaluator
from bertlottery.pruning import structured_search
from bertlottery.tasks import get_task
from bertlottery.training import TrainSettings, finetune

from tiny import tiny_batch, tiny_model

FAMILIES = ["bert", "roberta", "electra", "distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"]
CASES = {
    # (heads kept [layer][head], MLPs kept [layer]): a layer with some heads, one with none, an MLP gone
    "some heads, MLP 0 gone": ([[1, 0, 1, 1], [0, 1, 0, 0]], [0, 1]),
    "layer 0 without heads, MLP 1 gone": ([[0, 0, 0, 0], [1, 1, 0, 1]], [1, 0]),
}
# In float64, so that rounding differences (the two models sum in other orders) stay far below the
# tolerance even where Adam divides a small gradient by its own small running norm.
# AdamW with weight decay and warm-up, as finetune() builds it; a max norm this low clips every step,
# so a different global norm would show up as different weights.
SETTINGS = TrainSettings(learning_rate=1e-3, epochs=2, weight_decay=0.01, warmup_ratio=0.25, max_grad_norm=0.05,
                         seed=3)


def without_dropout(model: nn.Module) -> nn.Module:
    # Dropout draws differ between the two models (other shapes), so equality needs it off. SDPA
    # attention reads its dropout from these modules too.
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def masks_of(case: str) -> Masks:
    heads, mlps = CASES[case]
    return Masks(heads=HeadMask(torch.tensor(heads, dtype=torch.bool)), mlps=MlpMask(torch.tensor(mlps, dtype=torch.bool)))


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def train_both(model: nn.Module, masks: Masks, batches: list, settings: TrainSettings):
    """(gated full model after finetune, small model after finetune_pruned, full model merged)."""
    reference = copy.deepcopy(model)
    finetune(reference, lambda epoch: batches, settings, masks=masks, progress=False)
    small, history = finetune_pruned(model, lambda epoch: batches, settings, masks, progress=False)
    assert len(history.epochs) == settings.epochs
    return reference, small, model


def assert_same_training(start: nn.Module, reference: nn.Module, small: nn.Module, merged: nn.Module,
                         masks: Masks, batches: list, settings: TrainSettings, *, atol: float) -> None:
    key_bias_tolerance = settings.learning_rate * settings.epochs * len(batches)
    kept = structured_weight_mask(start, masks.heads, masks.mlps).keep
    start_params = dict(start.named_parameters())
    moved = 0.0
    for name, trained in reference.named_parameters():
        keep = kept.get(name, torch.ones_like(trained, dtype=torch.bool))
        ours = dict(merged.named_parameters())[name]
        # A key bias adds the same q.b to every score of a query, which softmax ignores: its gradient is
        # zero up to rounding, and Adam scales that noise up to steps of up to lr in either model.
        # Its kept part is checked at lr x steps; the logits below show it changes nothing.
        tolerance = key_bias_tolerance if name.endswith(("key.bias", "k_lin.bias")) else atol
        torch.testing.assert_close(ours[keep], trained[keep], atol=tolerance, rtol=1e-7,
                                   msg=lambda m: f"kept part of {name}: {m}")
        # removed weights: the small model never had them, so they stay the pre-trained ones
        torch.testing.assert_close(ours[~keep], start_params[name][~keep], atol=0, rtol=0)
        moved = max(moved, (trained[keep] - start_params[name][keep]).abs().max().item() if keep.any() else 0.0)
    assert moved > 20 * atol, "training did not move the weights, so the comparison proves nothing"
    for batch in batches:
        with gated(reference, heads=masks.heads, mlps=masks.mlps):
            expected = logits(reference, batch)
        torch.testing.assert_close(logits(small, batch), expected, atol=atol, rtol=1e-7)
        with gated(merged, heads=masks.heads, mlps=masks.mlps):
            torch.testing.assert_close(logits(merged, batch), expected, atol=atol, rtol=1e-7)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_training_the_pruned_model_is_training_the_gated_model(family, case):
    model = without_dropout(tiny_model(family, seed=0, dtype=torch.float64))
    start = copy.deepcopy(model)
    masks = masks_of(case)
    batches = [tiny_batch(batch=4, length=9, seed=s) for s in range(3)]
    reference, small, merged = train_both(model, masks, batches, SETTINGS)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in reference.parameters())
    assert_same_training(start, reference, small, merged, masks, batches, SETTINGS, atol=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_removed_parts_add_nothing_to_the_gradient_norm_that_clipping_uses(family):
    model = tiny_model(family, seed=1).train()
    without_dropout(model)
    masks = masks_of("some heads, MLP 0 gone")
    small = export_for(model, masks).train()
    batch = tiny_batch(batch=4, length=9, seed=5)
    with gated(model, heads=masks.heads, mlps=masks.mlps):
        model(**batch).loss.backward()
    small(**batch).loss.backward()
    removed = ~torch.cat([k.flatten() for k in structured_weight_mask(model, masks.heads, masks.mlps).keep.values()])
    params = dict(model.named_parameters())
    grads = torch.cat([params[n].grad.flatten() for n in structured_weight_mask(model, masks.heads, masks.mlps).keep])
    assert torch.count_nonzero(grads[removed]) == 0  # exactly zero, not merely small
    full_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    small_norm = torch.nn.utils.get_total_norm([p.grad for p in small.parameters() if p.grad is not None])
    assert full_norm > 0
    torch.testing.assert_close(small_norm, full_norm, rtol=1e-5, atol=0)


def test_a_weight_mask_is_refused_and_merging_needs_an_export():
    model = tiny_model()
    weights = WeightMask({"classifier.weight": torch.ones_like(model.classifier.weight, dtype=torch.bool)})
    with pytest.raises(UserError, match="weight mask cannot be removed physically"):
        export_for(model, Masks(weights=weights))
    with pytest.raises(UserError, match="takes a model made by export_pruned"):
        merge_trained(model, tiny_model())


def test_on_epoch_end_sees_the_small_model_and_merging_keeps_removed_weights():
    model = without_dropout(tiny_model())
    start = copy.deepcopy(model)
    masks = masks_of("layer 0 without heads, MLP 1 gone")
    seen = []
    small, history = finetune_pruned(model, lambda epoch: [tiny_batch(seed=epoch)], SETTINGS, masks, progress=False,
                                     on_epoch_end=lambda epoch, m: seen.append(m) or {"seen": epoch})
    assert seen == [small, small] and [e["seen"] for e in history.epochs] == [1, 2]
    # layer 0 lost all heads: its query in the full model is still the pre-trained one
    torch.testing.assert_close(model.bert.encoder.layer[0].attention.self.query.weight,
                               start.bert.encoder.layer[0].attention.self.query.weight, atol=0, rtol=0)


# ---- searches ------------------------------------------------------------------------------------

SCALE = 1000.0  # a random tiny model's logits move by ~1e-4 per pruned head: some steps must fail


def test_a_search_evaluated_on_pruned_models_takes_the_gated_search_steps():
    model = tiny_model("bert", seed=2)
    batches = [{**tiny_batch(batch=8, length=11, seed=s), "index": torch.arange(8 * s, 8 * s + 8)} for s in range(4)]

    reference = [logits(model, b) for b in batches]

    def measure(m: nn.Module) -> float:
        # 1 minus how far the logits moved from the full model's: continuous, so that the two ways of
        # evaluating must agree closely, and steep, so that some steps fall below the threshold
        moved = torch.cat([(logits(m, b) - r).abs().flatten() for b, r in zip(batches, reference)]).mean()
        return 1.0 - SCALE * moved.item()

    def gated_evaluate(heads, mlps):
        with gated(model, heads=heads, mlps=mlps):
            return measure(model)

    def score(heads, mlps):
        return structured_importance(model, batches, heads=heads, mlps=mlps)

    common = dict(num_layers=2, num_heads=4, full_metric=measure(model), head_step_fraction=0.25)
    expected = structured_search(score, gated_evaluate, **common)
    ours = structured_search(score, pruned_evaluator(model, measure), **common)
    assert len(expected.trace) > 2 and any(s.accepted for s in expected.trace)
    assert not all(s.accepted for s in expected.trace)
    assert [(s.phase, s.accepted, s.pruned_heads, s.pruned_mlps) for s in ours.trace] == \
           [(s.phase, s.accepted, s.pruned_heads, s.pruned_mlps) for s in expected.trace]
    assert [s.metric for s in ours.trace] == pytest.approx([s.metric for s in expected.trace], abs=1e-4)
    assert ours.heads == expected.heads and ours.mlps == expected.mlps


# ---- MiniLM ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_training_pruned_minilm_is_training_gated_minilm(glue_dir):
    from bertlottery.data import load_split, make_loader, tokenize
    from bertlottery.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("minilm-l6")
    split = tokenize(load_split(get_task("SST-2"), "train", glue_dir)[:12], tokenizer, max_length=32)
    batches = [{k: v for k, v in b.items() if k != "index"}
               for b in make_loader(split, tokenizer.pad_token_id, 4, shuffle=False, seed=None)]
    model = without_dropout(load_model("minilm-l6", 2, seed=0)).double()
    start = copy.deepcopy(model)
    heads = torch.ones(6, 12, dtype=torch.bool)
    heads[0, ::2] = False
    heads[3] = False  # a layer with no heads
    heads[5, :9] = False
    masks = Masks(heads=HeadMask(heads), mlps=MlpMask(torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.bool)))
    settings = TrainSettings(learning_rate=1e-3, epochs=1, weight_decay=0.01, warmup_ratio=0.3, max_grad_norm=0.5)
    reference, small, merged = train_both(model, masks, batches, settings)
    assert_same_training(start, reference, small, merged, masks, batches, settings, atol=1e-9)


# ---- through the steps and the lottery study's stages ------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    """A tiny BERT without dropout (so that both ways of training are the same computation), fine-tuned
    on a small RTE-shaped task: ``(glue_dir, run_dir, subnetworks_dir)`` with the head+MLP mask as the
    good subnetwork."""
    import json
    import shutil

    from bertlottery import runs
    from bertlottery.masks import save_masks
    from bertlottery.models import model_layout
    from bertlottery.steps.finetune import finetune_run

    from tiny import write_rte

    root = tmp_path_factory.mktemp("physical-steps")
    model_dir = root / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model_dir / "config.json").write_text(json.dumps(config))
    glue = write_rte(root / "glue", n_train=40, n_dev=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTLOTTERY_CACHE", str(root / "cache"))
        # fp32: under bf16 the two ways round differently (other matrix shapes), so they agree less closely;
        # a re-fine-tuning runs in the precision of the run that found its mask
        settings = TrainSettings(learning_rate=1e-3, epochs=1, batch_size=8, max_length=24, seed=3, precision="fp32")
        finetune_run(str(model_dir), "RTE", root / "run", glue_dir=glue, settings=settings, progress=False)
        subnetworks = root / "subnetworks"
        subnetworks.mkdir()
        model = tiny_model()
        save_masks(subnetworks / runs.subnetwork_file("good"), masks_of("some heads, MLP 0 gone"), model_layout(model))
        yield glue, root / "run", subnetworks, root


def test_a_retrain_stage_trains_the_pruned_model_and_gives_the_gated_row(tiny_run):
    from bertlottery import runs
    from bertlottery.config import load
    from bertlottery.studies import lottery

    glue, run, subnetworks, root = tiny_run
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    rows, configs, histories = {}, {}, {}
    for how in ("physical", "gated"):
        config = load(smoke, [f"glue_dir={glue}", f"train.subnetwork_training={how}", "methods=[structured]"])
        stage = next(s for s in lottery.expand(config)
                     if s.kind == "retrain" and s.keys["subnetwork"] == "good" and s.keys["mode"] == "retrained")
        assert stage.settings.get("subnetwork_training") == (how if how == "physical" else None)
        out = root / f"retrain-{how}"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BERTLOTTERY_CACHE", str(root / "cache"))
            rows[how] = lottery.execute(stage, out, {"finetune": run, "subnetworks": subnetworks}, config, progress=False)
        configs[how] = runs.read_json(out / runs.CONFIG_FILE)
        histories[how] = runs.read_json(out / runs.HISTORY_FILE)
    assert configs["physical"]["trained_as"] == "physical" and configs["gated"]["trained_as"] == "gated"
    assert configs["physical"]["train"]["subnetwork_training"] == "physical"
    assert {c["training_attention"] for c in configs.values()} == {"sdpa"}  # fp32 (bf16 on a CPU: eager)
    # the same training, step by step, and the same rows (stage ids differ: the setting is part of them)
    assert histories["physical"]["losses"] == pytest.approx(histories["gated"]["losses"], abs=1e-5)
    assert len(rows["physical"]) == len(rows["gated"]) > 0
    for ours, theirs in zip(rows["physical"], rows["gated"]):
        ours, theirs = dataclasses.asdict(ours), dataclasses.asdict(theirs)
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            if key == "stage_id":
                assert value != ours[key]
            elif isinstance(value, float):
                assert ours[key] == pytest.approx(value, abs=1e-6), key
            else:
                assert ours[key] == value, key


def test_an_evaluate_stage_evaluates_an_s_pruned_subnetwork_as_it_is_retrained(tiny_run, monkeypatch):
    """The pruned mode of an s-pruned subnetwork: on the physically smaller model under the default
    setting, under gates with ``gated``; the same rows to float tolerance, the same stage id (the metric is
    the same computation, as the s-search's physical evaluations are). A weight mask stays a mask."""
    from bertlottery import runs
    from bertlottery.config import load
    from bertlottery.masks import WeightMask, save_masks
    from bertlottery.models import model_layout
    from bertlottery.steps import evaluate as evaluate_step
    from bertlottery.steps.prune import load_finetuned
    from bertlottery.studies import lottery

    glue, run, subnetworks, root = tiny_run
    monkeypatch.setenv("BERTLOTTERY_CACHE", str(root / "cache"))
    seen = []  # the body parameters of every model evaluated
    real = evaluate_step.evaluate_model
    monkeypatch.setattr(evaluate_step, "evaluate_model", lambda model, *a, **k: seen.append(
        sum(p.numel() for n, p in model.named_parameters() if ".layer." in n)) or real(model, *a, **k))
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    rows, records, ids = {}, {}, {}
    for how in ("physical", "gated"):
        config = load(smoke, [f"glue_dir={glue}", f"train.subnetwork_training={how}", "methods=[structured]"])
        stage = next(s for s in lottery.expand(config) if s.kind == "evaluate" and s.keys["subnetwork"] == "good")
        out = root / f"evaluate-{how}"
        rows[how] = lottery.execute(stage, out, {"finetune": run, "subnetworks": subnetworks}, config, progress=False)
        records[how], ids[how] = runs.read_json(out / runs.METRICS_FILE), stage.id
    assert ids["physical"] == ids["gated"]
    assert records["physical"]["evaluated_on"] == "physical" and records["gated"]["evaluated_on"] == "gated"
    assert seen[0] < seen[1]  # the physical model is smaller; the gated one is the full model
    assert records["physical"]["body_fraction_kept"] == records["gated"]["body_fraction_kept"] < 1
    assert len(rows["physical"]) == len(rows["gated"]) > 0
    for ours, theirs in zip(rows["physical"], rows["gated"]):
        assert (ours.metric, ours.split) == (theirs.metric, theirs.split)
        assert ours.value == pytest.approx(theirs.value, abs=1e-6)

    model, _, _ = load_finetuned(run, glue)
    weights = WeightMask({n: torch.rand(p.shape) > 0.5 for n, p in model.named_parameters() if n.endswith("query.weight")})
    path = save_masks(root / "weights.safetensors", Masks(weights=weights), model_layout(model))
    record = evaluate_step.evaluate_run(run, task_name="RTE", glue_dir=glue, masks_path=path, physical=True)
    assert record["evaluated_on"] == "gated"


def test_the_prune_step_evaluates_on_pruned_models_and_takes_the_gated_steps(tiny_run):
    from bertlottery import runs
    from bertlottery.steps.prune import prune_structured_run

    glue, run, _, root = tiny_run
    traces = {}
    for physical in (True, False):
        out = root / f"prune-{physical}"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BERTLOTTERY_CACHE", str(root / "cache"))
            prune_structured_run(run, out, glue_dir=glue, keep_fraction=0.95, physical=physical, progress=False)
        traces[physical] = runs.read_json(out / runs.TRACE_FILE)
    ours, theirs = traces[True], traces[False]
    assert ours["evaluated_on"] == "physical" and theirs["evaluated_on"] == "gated"
    assert len(theirs["steps"]) >= 2
    keys = ("phase", "accepted", "pruned_heads", "pruned_mlps", "heads_kept", "mlps_kept")
    assert [{k: s[k] for k in keys} for s in ours["steps"]] == [{k: s[k] for k in keys} for s in theirs["steps"]]
    assert [s["metric"] for s in ours["steps"]] == pytest.approx([s["metric"] for s in theirs["steps"]], abs=1e-9)
    assert (ours["heads_kept"], ours["mlps_kept"]) == (theirs["heads_kept"], theirs["mlps_kept"])


@pytest.mark.parametrize("method", ["structured-physical", "structured-gated", "magnitude"])
def test_the_prune_directory_takes_the_good_masks_metrics_from_the_search(tiny_run, monkeypatch, method):
    """The search evaluated its good mask already: the prune directory records that evaluation (every
    metric of the main split) instead of evaluating the mask once more, and it is what a fresh
    evaluation of the saved mask gives."""
    from bertlottery import runs
    from bertlottery.masks import load_masks
    from bertlottery.steps import prune
    from bertlottery.steps.taskdata import evaluate_model

    glue, run, _, root = tiny_run
    calls = []
    real = prune.evaluate
    monkeypatch.setattr(prune, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("BERTLOTTERY_CACHE", str(root / "cache"))
    out = root / f"prune-known-{method}"
    if method == "magnitude":
        prune.prune_magnitude_run(run, out, glue_dir=glue, keep_fraction=0.95, progress=False)
    else:
        prune.prune_structured_run(run, out, glue_dir=glue, keep_fraction=0.95, physical=method.endswith("physical"),
                                   progress=False)
    trace, record = runs.read_json(out / runs.TRACE_FILE), runs.read_json(out / runs.METRICS_FILE)
    accepted = [s for s in trace["steps"] if s["accepted"]]
    assert accepted, "the search should accept a step on this model"
    assert len(calls) == 1 + len(trace["steps"])  # the full model, then each candidate once; nothing more
    recorded = record["splits"]["dev"]["metrics"]
    assert recorded["accuracy"] == accepted[-1]["metric"]
    assert set(recorded) >= {"accuracy", "n_examples"}
    model, data, _ = prune.load_finetuned(run, glue)
    masks = load_masks(out / runs.MASK_FILE)
    fresh = evaluate_model(model, data, masks, precision="fp32")["dev"]
    assert recorded == pytest.approx(fresh, abs=1e-9)


@pytest.mark.slow
def test_a_search_on_real_sst2_dev_takes_the_same_steps_on_pruned_minilm(glue_dir):
    from bertlottery.data import load_split, make_loader, tokenize
    from bertlottery.evaluation import evaluate
    from bertlottery.models import load_model, load_tokenizer

    task = get_task("SST-2")
    tokenizer = load_tokenizer("minilm-l6")
    dev = tokenize(load_split(task, "dev", glue_dir)[:160], tokenizer, max_length=64)
    batches = list(make_loader(dev, tokenizer.pad_token_id, 32, shuffle=False, seed=None))
    model = load_model("minilm-l6", 2, seed=0).eval()

    def measure(m: nn.Module) -> float:
        return evaluate(m, task, batches)["accuracy"]

    def gated_evaluate(heads, mlps):
        with gated(model, heads=heads, mlps=mlps):
            return measure(model)

    scores = {}

    def score(heads, mlps):  # computed once per mask, shared by both searches
        key = (heads.keep.numpy().tobytes(), mlps.keep.numpy().tobytes())
        if key not in scores:
            scores[key] = structured_importance(model, batches, heads=heads, mlps=mlps)
        return scores[key]

    common = dict(num_layers=6, num_heads=12, full_metric=measure(model), keep_fraction=0.97)
    expected = structured_search(score, gated_evaluate, **common)
    ours = structured_search(score, pruned_evaluator(model, measure), **common)
    assert len(expected.trace) >= 2
    assert [(s.phase, s.accepted, s.pruned_heads, s.pruned_mlps, s.metric) for s in ours.trace] == \
           [(s.phase, s.accepted, s.pruned_heads, s.pruned_mlps, s.metric) for s in expected.trace]
    assert ours.heads == expected.heads and ours.mlps == expected.mlps
