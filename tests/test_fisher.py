"""The retraining-free Fisher search on tiny models, against computations written out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bertlottery.data import TokenizedSplit
from bertlottery.errors import UserError
from bertlottery.export import body_macs_per_token, mask_cost, unit_costs
from bertlottery.fisher import (
    budget_from_masks,
    fisher_sample,
    fisher_scores,
    fisher_search,
    neuron_weight_mask,
    neurons_of,
    pruned_fisher,
    rearrange_layer,
    search_under_budget,
    tune_scales,
)
from bertlottery.masking import fisher_gated, gated, neuron_gated, weight_masked
from bertlottery.masks import HeadMask, Masks, MlpMask
from bertlottery.models import adapter_for, model_layout

from tiny import tiny_batch, tiny_model

FAMILIES = ["bert", "roberta", "electra", "distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"]


def batches(n=3):
    return [tiny_batch(batch=4, length=6 + i, seed=i) for i in range(n)]


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_fisher_scores_equal_per_example_gradients_taken_one_at_a_time(family):
    model = tiny_model(family, dtype=torch.float64)
    data = batches(2)
    scores = fisher_scores(model, data)

    layout = model_layout(model)
    layers = adapter_for(model).layers(model)
    head_rows, neuron_rows = [], []
    for batch in data:
        for i in range(batch["input_ids"].shape[0]):
            one = {k: v[i : i + 1] for k, v in batch.items()}
            units = torch.ones(layout.num_layers, layout.intermediate_size, dtype=torch.float64, requires_grad=True)
            handles = [
                parts.mlp_out.register_forward_pre_hook(lambda m, a, g=units[l]: (a[0] * g,))
                for l, parts in enumerate(layers)
            ]
            with gated(model, requires_grad=True) as gates:
                loss = model(**one).loss  # the model's own loss of this one example
                grad_heads, grad_units = torch.autograd.grad(loss, [gates.heads, units])
            for handle in handles:
                handle.remove()
            head_rows.append(grad_heads)
            neuron_rows.append(grad_units)
    by_hand_heads, by_hand_units = torch.stack(head_rows).double(), torch.stack(neuron_rows)

    torch.testing.assert_close(scores.head_grads.double(), by_hand_heads, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(scores.neuron_grads.double(), by_hand_units, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(scores.heads.double(), by_hand_heads.pow(2).sum(0), rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(scores.neurons.double(), by_hand_units.pow(2).sum(0), rtol=1e-4, atol=1e-12)
    assert scores.n_examples == 8 and bool((scores.heads > 0).any())


def test_fisher_scores_follow_the_runs_precision(monkeypatch):
    """Under ``precision="bf16"`` the passes run in bf16 autocast (as the run's other scoring does) and the
    scores stay close to fp32's; a device without bf16 runs fp32 (`resolve_precision`), giving fp32's exactly."""
    from bertlottery import fisher

    model = tiny_model()
    data = batches(2)
    seen = []
    original = fisher.autocast

    def watched(precision, device):
        seen.append(precision)
        return original(precision, device)

    monkeypatch.setattr(fisher, "autocast", watched)
    monkeypatch.setattr(fisher, "resolve_precision", lambda precision, device: precision)  # bf16 even here
    full = fisher_scores(model, data)
    half = fisher_scores(model, data, precision="bf16")
    assert seen == ["fp32", "fp32", "bf16", "bf16"]  # one autocast per batch, in the precision asked
    assert half.neuron_grads.dtype == torch.float32 and not torch.equal(half.neuron_grads, full.neuron_grads)
    torch.testing.assert_close(half.heads, full.heads, rtol=0.1, atol=1e-6)
    monkeypatch.setattr(fisher, "resolve_precision", lambda precision, device: "fp32")  # a CPU without bf16
    assert torch.equal(fisher_scores(model, data, precision="bf16").neuron_grads, full.neuron_grads)


def test_predicted_labels_use_the_models_argmax():
    model = tiny_model(dtype=torch.float64)
    batch = tiny_batch(batch=4, length=6)
    predicted = logits(model, batch).argmax(-1)
    relabelled = {**batch, "labels": predicted}
    torch.testing.assert_close(fisher_scores(model, [batch], labels="predicted").head_grads,
                               fisher_scores(model, [relabelled]).head_grads)
    with pytest.raises(UserError, match="Did you mean 'predicted'"):
        fisher_scores(model, [batch], labels="predicetd")


def test_costs_agree_with_the_exports_mac_count():
    layout = model_layout(tiny_model())
    heads = torch.ones(2, 4, dtype=torch.bool)
    heads[0, :3] = False
    neurons = torch.zeros(2, layout.intermediate_size, dtype=torch.bool)
    neurons[1] = True  # a whole MLP kept in layer 1, none in layer 0: an MLP mask says the same
    by_export = body_macs_per_token(layout, 40, HeadMask(heads), MlpMask(torch.tensor([False, True])))
    assert mask_cost(layout, heads, neurons, seq_len=40) == by_export
    head, neuron = unit_costs(layout, "params")
    assert head == layout.params_per_head
    assert neuron * layout.intermediate_size + layout.hidden_size == layout.params_per_mlp  # + the output bias


def brute_force(head_scores, neuron_scores, head_cost, neuron_cost, budget):
    """The best total score over every subset of units that fits the budget."""
    values = torch.cat([head_scores.flatten(), neuron_scores.flatten()]).tolist()
    costs = [head_cost] * head_scores.numel() + [neuron_cost] * neuron_scores.numel()
    best = 0.0
    for chosen in itertools.product([False, True], repeat=len(values)):
        if sum(c for c, on in zip(costs, chosen) if on) <= budget:
            best = max(best, sum(v for v, on in zip(values, chosen) if on))
    return best


@pytest.mark.parametrize("budget", [0, 7, 23, 31, 50, 64])
def test_search_is_the_best_selection_within_the_budget(budget):
    generator = torch.Generator().manual_seed(budget)
    head_scores, neuron_scores = torch.rand(2, 2, generator=generator), torch.rand(2, 3, generator=generator) * 0.5
    heads, neurons = search_under_budget(head_scores, neuron_scores, head_cost=9, neuron_cost=4, budget=budget)
    spent = 9 * int(heads.sum()) + 4 * int(neurons.sum())
    assert spent <= budget
    value = float(head_scores[heads].sum() + neuron_scores[neurons].sum())
    assert value == pytest.approx(brute_force(head_scores, neuron_scores, 9, 4, budget))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.55, 1.0])
def test_search_meets_the_budget_exactly_or_from_below(fraction):
    model = tiny_model(dtype=torch.float64)
    result = fisher_search(model, batches(), budget_fraction=fraction, tune=False)
    layout = model_layout(model)
    head_cost, neuron_cost = unit_costs(layout, "macs", 128)
    assert result.cost == mask_cost(layout, result.heads, result.neurons) <= result.budget
    assert result.budget == int(fraction * result.full_cost)
    # no neuron could be added: what is left of the budget is less than one neuron costs
    if not bool(result.neurons.all()):
        assert result.budget - result.cost < neuron_cost
    assert result.trace["heads_kept"] == int(result.heads.sum())


def test_budget_in_parameters():
    model = tiny_model(dtype=torch.float64)
    layout = model_layout(model)
    result = fisher_search(model, batches(), budget=layout.body_params // 3, cost="params", tune=False)
    assert result.cost == mask_cost(layout, result.heads, result.neurons, cost="params") <= layout.body_params // 3
    assert result.cost > layout.body_params // 3 - unit_costs(layout, "params")[0]


def test_rearrangement_finds_the_pair_whose_gradients_cancel():
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(30, generator=generator)
    # units 0 and 1 always pull in opposite directions: each alone is costly, together they cost nothing
    grads = torch.stack([2 * v, -2 * v, torch.randn(30, generator=generator) * 0.5], dim=1)
    by_diagonal = torch.tensor([True, False, False])  # the smallest two diagonals pruned (units 1, 2)
    rearranged = rearrange_layer(grads, by_diagonal)
    assert rearranged.tolist() == [False, False, True]
    assert pruned_fisher(grads, rearranged) == pytest.approx(0.0, abs=1e-9)
    assert pruned_fisher(grads, by_diagonal) > 1.0


@pytest.mark.parametrize("seed", range(5))
def test_rearrangement_never_increases_its_objective(seed):
    generator = torch.Generator().manual_seed(seed)
    grads = torch.randn(12, 10, generator=generator) @ torch.randn(10, 10, generator=generator)
    keep = torch.zeros(10, dtype=torch.bool)
    keep[torch.randperm(10, generator=generator)[: 3 + seed]] = True
    rearranged = rearrange_layer(grads, keep)
    assert int(rearranged.sum()) == int(keep.sum())
    assert pruned_fisher(grads, rearranged) <= pruned_fisher(grads, keep) + 1e-9


def rearranged_by_hand(grads, keep):
    """The greedy of `rearrange_layer` written out: every objective recomputed from scratch."""
    diagonal = grads.double().pow(2).sum(0)
    pruned = torch.nonzero(~keep).flatten().tolist()
    kept = torch.nonzero(keep).flatten()
    for unit in kept[torch.sort(diagonal[kept], stable=True).indices].tolist():
        pruned.append(unit)
        objectives = []
        for leaving in pruned:
            trial = torch.ones_like(keep)
            trial[[j for j in pruned if j != leaving]] = False
            objectives.append(pruned_fisher(grads, trial))
        pruned.pop(objectives.index(min(objectives)))  # the first of equals leaves
    out = torch.ones_like(keep)
    out[pruned] = False
    return out


@pytest.mark.parametrize("seed", range(6))
def test_rearrangement_equals_the_greedy_written_out(seed):
    generator = torch.Generator().manual_seed(seed)
    # small whole numbers: every objective is exact in float64, so ties are real ties and break alike
    grads = torch.randint(-3, 4, (9, 12), generator=generator).double()
    grads[:, :3] = 0  # units without any gradient: equal (zero) diagonals
    grads[:, 4] = grads[:, 5]  # two units that always agree
    grads[:, 7] = -grads[:, 8]  # and two that always cancel
    keep = torch.zeros(12, dtype=torch.bool)
    keep[torch.randperm(12, generator=generator)[: 2 + seed]] = True
    assert torch.equal(rearrange_layer(grads, keep), rearranged_by_hand(grads, keep))


def test_scoring_leaves_no_hooks_and_restores_gradients():
    model = tiny_model()
    model.train()
    fisher_scores(model, batches(1))
    parts = adapter_for(model).layers(model)
    assert all(not p.attn_out._forward_pre_hooks and not p.mlp_out._forward_pre_hooks for p in parts)
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_search_and_rearrangement_on_a_model_keep_the_cost():
    model = tiny_model(dtype=torch.float64)
    plain = fisher_search(model, batches(), budget_fraction=0.5, rearrange_masks=False, tune=False)
    rearranged = fisher_search(model, batches(), budget_fraction=0.5, tune=False)
    assert rearranged.cost == plain.cost
    torch.testing.assert_close(rearranged.heads.sum(1), plain.heads.sum(1))
    objective = rearranged.trace["pruned_fisher"]
    assert objective["rearranged"] <= objective["searched"] + 1e-12


def attention_sublayer_error(model, data, heads):
    """Layer 0's attention output before LayerNorm (residual + projection), pruned against full, squared.

    The residual is the first layer's input in every family, post-norm and pre-norm alike."""
    adapter = adapter_for(model)
    parts, block = adapter.layers(model)[0], adapter.blocks(model)[0]
    total = 0.0
    outputs = {}

    def layer_input(store):
        def hook(module, args, kwargs):
            store.append(args[0] if args else kwargs["hidden_states"])
        return hook

    for name, mask in (("full", None), ("pruned", heads)):
        store = []
        h1 = block.register_forward_pre_hook(layer_input(store), with_kwargs=True)
        h2 = parts.attn_out.register_forward_hook(lambda m, a, out: store.append(out))
        with gated(model, heads=mask):
            for batch in data:
                logits(model, batch)
        h1.remove(), h2.remove()
        outputs[name] = [store[i] + store[i + 1] for i in range(0, len(store), 2)]
    for batch, full, pruned in zip(data, outputs["full"], outputs["pruned"]):
        tokens = batch["attention_mask"].bool()
        total += float((full - pruned)[tokens].pow(2).sum())
    return total


def test_least_squares_tuning_reduces_the_layer_output_error():
    model = tiny_model(dtype=torch.float64)
    data = batches()
    heads = torch.tensor([[True, False, True, False], [True, True, False, True]])
    neurons = torch.rand(2, 37, generator=torch.Generator().manual_seed(0)) < 0.5
    head_scales, neuron_scales, trace = tune_scales(model, data, heads, neurons)

    assert all(entry["accepted"] for entry in trace)
    assert all(entry["error_after"] <= entry["error_before"] + 1e-9 for entry in trace)
    assert sum(entry["error_before"] - entry["error_after"] for entry in trace) > 1e-3
    # pruned units stay pruned; kept ones get real values
    assert bool((head_scales[~heads] == 0).all()) and bool((neuron_scales[~neurons] == 0).all())
    # layer 0's attention sees the same input in both models: its error, measured directly, matches
    first = trace[0]
    assert (first["layer"], first["kind"]) == (0, "heads")
    before = attention_sublayer_error(model, data, heads.double())
    after = attention_sublayer_error(model, data, head_scales.double())
    assert before == pytest.approx(first["error_before"], rel=1e-6)
    assert after == pytest.approx(first["error_after"], rel=1e-5)
    assert after < before


def test_tuning_leaves_an_unpruned_model_unchanged():
    model = tiny_model(dtype=torch.float64)
    data = batches()
    full_heads, full_neurons = torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 37, dtype=torch.bool)
    head_scales, neuron_scales, trace = tune_scales(model, data, full_heads, full_neurons)
    torch.testing.assert_close(head_scales, torch.ones(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(neuron_scales, torch.ones(2, 37), atol=1e-5, rtol=0)
    assert all(abs(entry["error_before"]) < 1e-12 for entry in trace)
    with fisher_gated(model, head_scales.double(), neuron_scales.double()):
        tuned = logits(model, data[0])
    torch.testing.assert_close(tuned, logits(model, data[0]), atol=1e-6, rtol=0)


def test_scales_outside_the_bound_are_refused():
    model = tiny_model(dtype=torch.float64)
    heads = torch.tensor([[True, False, True, False], [True, True, False, True]])
    neurons = torch.ones(2, 37, dtype=torch.bool)
    head_scales, _, trace = tune_scales(model, batches(), heads, neurons, max_scale=1e-6)
    assert not any(entry["accepted"] for entry in trace)
    torch.testing.assert_close(head_scales, heads.float())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_neuron_weight_mask_computes_what_the_neuron_gate_does(family):
    model = tiny_model(family, dtype=torch.float64)
    layout = model_layout(model)
    neurons = torch.rand(2, layout.intermediate_size, generator=torch.Generator().manual_seed(1)) < 0.6
    heads = torch.tensor([[True, False, True, True], [False, True, True, True]])
    batch = tiny_batch()
    with fisher_gated(model, heads, neurons):
        gated_logits = logits(model, batch)
    masks = Masks(heads=HeadMask(heads), weights=neuron_weight_mask(model, neurons))
    with gated(model, heads=masks.heads), weight_masked(model, masks.weights):
        masked_logits = logits(model, batch)
    torch.testing.assert_close(gated_logits, masked_logits, rtol=0, atol=1e-10)
    assert not torch.allclose(gated_logits, logits(model, batch))
    # a full neuron mask adds no hook: bitwise the plain model
    with neuron_gated(model, torch.ones(2, layout.intermediate_size)):
        assert torch.equal(logits(model, batch), logits(model, batch))
        assert not any(p.mlp_out._forward_pre_hooks for p in adapter_for(model).layers(model))


def test_result_masks_are_what_the_toolkit_stores():
    model = tiny_model(dtype=torch.float64)
    result = fisher_search(model, batches(), budget_fraction=0.5, tune=False)
    masks = result.masks(model, {"seed": 42})
    assert torch.equal(masks.heads.keep, result.heads)
    assert masks.params["method"] == "fisher" and masks.params["seed"] == 42
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    masks.check_against(model_layout(model), shapes)
    kept_units = masks.weights.keep["bert.encoder.layer.1.intermediate.dense.bias"]
    assert torch.equal(kept_units, result.neurons[1])


def test_search_is_deterministic():
    model = tiny_model(dtype=torch.float64)
    first = fisher_search(model, batches(), budget_fraction=0.6)
    second = fisher_search(model, batches(), budget_fraction=0.6)
    assert torch.equal(first.heads, second.heads) and torch.equal(first.neurons, second.neurons)
    assert torch.equal(first.head_scales, second.head_scales)
    assert torch.equal(first.neuron_scales, second.neuron_scales)


def test_the_sample_is_seeded():
    lengths = np.arange(3, 23)
    split = TokenizedSplit(
        input_ids=[np.full(n, 7 + i, dtype=np.int32) for i, n in enumerate(lengths)],
        token_type_ids=None,
        labels=np.arange(20) % 2,
        lengths=lengths,
    )

    def drawn(seed):
        return sorted(int(ids[0]) - 7 for batch in fisher_sample(split, 0, n_examples=8, seed=seed, batch_size=3)
                      for ids in batch["input_ids"])

    assert drawn(1) == drawn(1) and len(drawn(1)) == 8
    assert drawn(1) != drawn(2)
    assert len(drawn_all := sorted(int(i[0]) - 7 for b in fisher_sample(split, 0, n_examples=50) for i in b["input_ids"])) == 20
    assert drawn_all == list(range(20))


def test_bad_arguments_are_refused_with_the_fix():
    model = tiny_model()
    with pytest.raises(UserError, match="either budget"):
        fisher_search(model, batches(), budget=10, budget_fraction=0.5)
    with pytest.raises(UserError, match="either budget"):
        fisher_search(model, batches())
    with pytest.raises(UserError, match="Did you mean 'macs'"):
        fisher_search(model, batches(), budget=10, cost="mac")
    with pytest.raises(UserError, match="between 0 and 1"):
        fisher_search(model, batches(), budget_fraction=1.5)
    with pytest.raises(UserError, match=r"layers x intermediate"):
        with neuron_gated(model, torch.ones(2, 5)):
            pass


def test_the_default_budget_is_the_cost_of_an_s_pruning_mask():
    model = tiny_model(dtype=torch.float64)
    layout = model_layout(model)
    heads = HeadMask(torch.tensor([[True, False, True, False], [True, True, False, True]]))
    s_mask = Masks(heads=heads, mlps=MlpMask(torch.tensor([True, False])))
    budget = budget_from_masks(model, s_mask, seq_len=64)
    # written out: 5 heads and one whole MLP, at 64 tokens
    assert budget == 5 * (4 * 32 * 8 + 2 * 8 * 64) + 2 * 32 * 37
    result = fisher_search(model, batches(), budget=budget, seq_len=64, tune=False)
    assert result.cost <= budget and result.full_cost == body_macs_per_token(layout, 64)
    with pytest.raises(UserError, match="single weights"):
        budget_from_masks(model, result.masks(model))
    # in parameters: each kept head's Q, K, V rows with biases and output columns, each kept MLP's
    # 37 units with an input row and bias and an output column
    assert budget_from_masks(model, s_mask, cost="params") == 5 * (3 * (32 * 8 + 8) + 32 * 8) + 37 * (32 + 1 + 32)
    assert budget_from_masks(model, Masks(heads=heads), cost="params") == budget_from_masks(
        model, Masks(heads=heads, mlps=MlpMask(torch.tensor([True, True]))), cost="params")


def test_a_tuned_fisher_model_exports_to_a_smaller_model_with_equal_logits():
    model = tiny_model(dtype=torch.float64)
    result = fisher_search(model, batches(), budget_fraction=0.5)
    assert any(entry["accepted"] for entry in result.trace["tuning"])
    batch = tiny_batch()
    with fisher_gated(model, result.head_scales.double(), result.neuron_scales.double()):
        expected = logits(model, batch)
    small = result.export(model)
    torch.testing.assert_close(logits(small, batch), expected, rtol=1e-6, atol=1e-6)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    layout = model_layout(model)
    assert body_macs_per_token(layout, 128, HeadMask(result.heads), None, result.neurons) == result.cost


@pytest.mark.parametrize("family", FAMILIES)
def test_fisher_search_meets_the_budget_and_tuning_helps_in_every_family(family):
    model = tiny_model(family, dtype=torch.float64)
    data = batches()
    layout = model_layout(model)
    result = fisher_search(model, data, budget_fraction=0.5)
    assert result.cost == mask_cost(layout, result.heads, result.neurons) <= result.budget
    assert result.budget - result.cost < unit_costs(layout, "macs", 128)[1] or bool(result.neurons.all())
    assert result.full_cost == body_macs_per_token(layout, 128)
    tuning = result.trace["tuning"]
    assert tuning and all(entry["error_after"] <= entry["error_before"] + 1e-9 for entry in tuning)
    # the tuning's residual is the right one (pre-norm: the layer's input, not its LayerNorm's output):
    # layer 0's attention error it reports is the one measured directly
    first = tuning[0]
    assert (first["layer"], first["kind"]) == (0, "heads")
    heads = result.heads.double()
    assert attention_sublayer_error(model, data, heads) == pytest.approx(first["error_before"], rel=1e-6)
    scaled = heads.clone()
    scaled[0] = result.head_scales[0].double()
    assert attention_sublayer_error(model, data, scaled) == pytest.approx(first["error_after"], rel=1e-5)
    # and the tuned model exports to a smaller one with the same logits
    with fisher_gated(model, result.head_scales.double(), result.neuron_scales.double()):
        expected = logits(model, data[0])
    torch.testing.assert_close(logits(result.export(model), data[0]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_a_stored_fisher_mask_gives_its_neurons_back(family):
    from bertlottery.sampling import bad_neurons_like, random_neurons_like

    model = tiny_model(family, dtype=torch.float64)
    result = fisher_search(model, batches(), budget_fraction=0.4, tune=False)
    masks = result.masks(model)
    good = neurons_of(model, masks.weights)
    assert torch.equal(good, result.neurons)
    for drawn in (random_neurons_like(good, seed=3), bad_neurons_like(good, result.scores.neurons, seed=3)):
        weights = neuron_weight_mask(model, drawn)  # a same-sized mask the pipeline can store and apply
        assert torch.equal(neurons_of(model, weights), drawn)
        assert mask_cost(model_layout(model), result.heads, drawn) == result.cost
