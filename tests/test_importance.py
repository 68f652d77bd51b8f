"""Importance scores on tiny models, against direct computations."""

from __future__ import annotations

import pytest
import torch

from bertlottery.compat import Compat, get_compat
from bertlottery.errors import UserError
from bertlottery.importance import (
    dead_branches_cut,
    magnitudes,
    min_max,
    normalize_heads_by_layer,
    prunable_parameters,
    structured_importance,
)
from bertlottery.masking import gated
from bertlottery.models import adapter_for

from tiny import tiny_batch, tiny_model

FAMILIES = ["bert", "roberta", "electra", "distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"]


def batches(n=3):
    return [tiny_batch(batch=4, length=6 + i, seed=i) for i in range(n)]


def direct_scores(model, data, compat=Compat()):
    """The definition, written out: |dL/dgate| per batch, summed, over tokens."""
    heads, mlps = torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    run_h, run_m = torch.zeros_like(heads), torch.zeros_like(mlps)
    tokens = 0
    model.eval()
    for batch in data:
        with gated(model, requires_grad=True) as gates:
            model(**batch).loss.backward()
        gh, gm = gates.heads.grad.double(), gates.mlps.grad.double()
        if compat.accumulated_gate_gradients:
            run_h, run_m = run_h + gh, run_m + gm
            gh, gm = run_h, run_m
        heads, mlps = heads + gh.abs(), mlps + gm.abs()
        tokens += int(batch["attention_mask"].sum())
    model.zero_grad(set_to_none=True)
    if not compat.head_scores_not_divided_by_tokens:
        heads = heads / tokens
    return heads, mlps / tokens


def test_scores_match_the_definition():
    model = tiny_model(dtype=torch.float64)
    data = batches()
    scores = structured_importance(model, data, normalize_by_layer=False)
    heads, mlps = direct_scores(model, data)
    torch.testing.assert_close(scores.heads.double(), heads, rtol=1e-5, atol=0)
    torch.testing.assert_close(scores.mlps.double(), mlps, rtol=1e-5, atol=0)
    assert scores.n_tokens == sum(int(b["attention_mask"].sum()) for b in data)
    assert scores.n_examples == 12


def test_layerwise_l2_normalisation_is_on_by_default():
    model = tiny_model(dtype=torch.float64)
    data = batches()
    raw = structured_importance(model, data, normalize_by_layer=False)
    normed = structured_importance(model, data)
    torch.testing.assert_close(normed.heads, normalize_heads_by_layer(raw.heads))
    torch.testing.assert_close(normed.heads.norm(dim=-1), torch.ones(2, dtype=normed.heads.dtype))
    torch.testing.assert_close(normed.mlps, raw.mlps)  # MLP scores are not layer-normalised
    scaled = structured_importance(model, data, global_min_max=True)
    assert scaled.heads.min() == 0 and scaled.heads.max() == 1 and scaled.mlps.max() == 1
    torch.testing.assert_close(scaled.heads, min_max(normed.heads))


def test_the_head_that_carries_the_signal_ranks_first():
    model = tiny_model(dtype=torch.float64)
    dh = 8
    with torch.no_grad():
        for index, parts in enumerate(adapter_for(model).layers(model)):
            for head in range(4):
                if (index, head) != (1, 2):
                    parts.attn_out.weight[:, head * dh : (head + 1) * dh] = 0.0
    scores = structured_importance(model, batches(), normalize_by_layer=False)
    assert divmod(int(scores.heads.argmax()), 4) == (1, 2)
    others = scores.heads.clone()
    others[1, 2] = 0
    assert others.abs().max() == 0  # a head whose output goes nowhere has zero importance


def test_scoring_leaves_the_model_as_it_was():
    model = tiny_model().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    structured_importance(model, batches())
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_scores_under_a_mask_use_that_mask():
    model = tiny_model(dtype=torch.float64)
    heads = torch.ones(2, 4)
    heads[0, :3] = 0
    masked = structured_importance(model, batches(), heads=heads, normalize_by_layer=False)
    full = structured_importance(model, batches(), normalize_by_layer=False)
    assert not torch.allclose(masked.heads[1], full.heads[1], rtol=1e-3, atol=0)


def test_compat_quirks_change_exactly_the_scores_they_document():
    model = tiny_model(dtype=torch.float64)
    data = batches(4)
    quirks = get_compat("prasanna2020")
    scores = structured_importance(model, data, normalize_by_layer=False, compat=quirks)
    heads, mlps = direct_scores(model, data, quirks)
    torch.testing.assert_close(scores.heads.double(), heads, rtol=1e-5, atol=0)
    torch.testing.assert_close(scores.mlps.double(), mlps, rtol=1e-5, atol=0)
    plain = structured_importance(model, data, normalize_by_layer=False)
    assert not torch.allclose(scores.heads, plain.heads * plain.n_tokens)  # accumulation changes them
    only_tokens = structured_importance(
        model, data, normalize_by_layer=False, compat=Compat(head_scores_not_divided_by_tokens=True)
    )
    torch.testing.assert_close(only_tokens.heads, plain.heads * plain.n_tokens)
    torch.testing.assert_close(only_tokens.mlps, plain.mlps)


def test_prunable_parameters_follow_the_paper_set():
    model = tiny_model()
    names = list(prunable_parameters(model))
    assert len(names) == 2 * 11
    assert "bert.encoder.layer.0.output.dense.bias" not in names  # the MLP output bias is never pruned
    assert "bert.encoder.layer.0.attention.output.dense.bias" in names
    assert not any("LayerNorm" in n or "embeddings" in n or "classifier" in n or "pooler" in n for n in names)
    assert len(prunable_parameters(model, "weights")) == 12
    assert torch.equal(magnitudes(model)[names[0]], dict(model.named_parameters())[names[0]].abs())
    with pytest.raises(UserError, match="Did you mean 'paper'"):
        prunable_parameters(model, "papr")


def dead_layer_masks() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(heads, mlps) of a 2x4 model: layer 0's heads and MLP dead with one head of layer 1; and layer 1's
    heads and MLP dead beside a half-dead layer 0 (layer 1 is the last, cut to the classifier's position).
    Layer 0's attention is never in the backward pass (its input, the frozen embeddings, needs no
    gradient), so what the cut can leave out is every dead MLP and layer 1's dead attention."""
    first_dead = (torch.tensor([[0, 0, 0, 0], [1, 0, 1, 1]]), torch.tensor([0, 1]))
    last_dead = (torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0]]), torch.tensor([1, 0]))
    return [first_dead, last_dead]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("which", [0, 1])
def test_cutting_dead_branches_changes_no_score_and_leaves_them_out_of_the_backward(family, which):
    model = tiny_model(family)
    heads, mlps = dead_layer_masks()[which]
    data = batches(3)
    layers = adapter_for(model).layers(model)
    in_graph: dict[str, bool] = {}

    def record(name):
        def hook(module, args, output):  # DeBERTa-v3's shared Q/K maps are called on position embeddings too
            in_graph[name] = in_graph.get(name, False) or output.requires_grad
        return hook

    watched = {f"mlp{i}": parts.mlp_in for i, parts in enumerate(layers)}
    watched.update({f"attention{i}": parts.attention_inputs[0] for i, parts in enumerate(layers)})
    handles = [module.register_forward_hook(record(name)) for name, module in watched.items()]
    try:
        cut = structured_importance(model, data, heads=heads, mlps=mlps)
        with_cut = dict(in_graph)
        in_graph.clear()
        uncut = structured_importance(model, data, heads=heads, mlps=mlps, cut_dead_branches=False)
        without_cut = dict(in_graph)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(cut.heads, uncut.heads) and torch.equal(cut.mlps, uncut.mlps)
    assert bool((cut.mlps > 0).all()) and bool((cut.heads > 0).all())  # dead ones are scored too
    assert with_cut == {"mlp0": bool(mlps[0]), "mlp1": bool(mlps[1]), "attention0": False,
                        "attention1": bool(heads[1].any())}
    assert without_cut == {"mlp0": True, "mlp1": True, "attention0": False, "attention1": True}
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_a_dead_branch_cut_is_undone_even_if_the_pass_raises():
    model = tiny_model()
    heads, mlps = dead_layer_masks()[1]
    with pytest.raises(RuntimeError, match="inside"):
        with dead_branches_cut(model, heads, mlps):
            assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 3 + 1  # Q, K, V, MLP of layer 1
            raise RuntimeError("inside")
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 0
