"""Gates and weight masks on tiny models of every family, checked against direct computations."""

from __future__ import annotations

import copy

import pytest
import torch

from bertlottery.errors import UserError
from bertlottery.masking import WeightMaskKeeper, gated, weight_masked
from bertlottery.masks import HeadMask, MlpMask, WeightMask
from bertlottery.models import adapter_for, model_layout

from tiny import tiny_batch, tiny_model

FAMILIES = ["bert", "roberta", "electra", "distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"]


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def capture(module, kind="output"):
    """Record a module's inputs or output on the next forward."""
    store = {}
    if kind == "output":
        handle = module.register_forward_hook(lambda m, a, out: store.__setitem__("value", out))
    else:
        handle = module.register_forward_pre_hook(lambda m, a: store.__setitem__("value", a[0]))
    return store, handle


@pytest.mark.parametrize("family", FAMILIES)
def test_head_gate_equals_removing_the_head_by_hand(family):
    model = tiny_model(family, dtype=torch.float64)
    batch = tiny_batch()
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = False

    surgically = copy.deepcopy(model)
    parts = adapter_for(surgically).layers(surgically)
    dh = model_layout(model).head_dim
    with torch.no_grad():
        for layer, head in [(0, 1), (1, 3)]:
            parts[layer].attn_out.weight[:, head * dh : (head + 1) * dh] = 0.0

    with gated(model, heads=HeadMask(mask)):
        got = logits(model, batch)
    torch.testing.assert_close(got, logits(surgically, batch), rtol=0, atol=1e-12)
    assert not torch.allclose(got, logits(model, batch))  # the mask did something


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_all_heads_off_leaves_layernorm_of_input_plus_output_bias(family):
    model = tiny_model(family, dtype=torch.float64)
    layer = adapter_for(model).layers(model)[1]
    attention = model.base_model.encoder.layer[1].attention
    inputs, h_in = capture(attention, "input")
    outputs, h_out = capture(attention.output)
    mask = torch.ones(2, 4)
    mask[1] = 0
    with gated(model, heads=mask):
        logits(model, tiny_batch())
    h_in.remove(), h_out.remove()
    x = inputs["value"]
    expected = attention.output.LayerNorm(x + layer.attn_out.bias)
    torch.testing.assert_close(outputs["value"], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_mlp_gate_zero_leaves_layernorm_of_its_input(family):
    model = tiny_model(family, dtype=torch.float64)
    block = model.base_model.encoder.layer[0]
    z_store, h_in = capture(block.intermediate, "input")
    out_store, h_out = capture(block.output)
    with gated(model, mlps=MlpMask(torch.tensor([False, True]))):
        logits(model, tiny_batch())
    h_in.remove(), h_out.remove()
    z = z_store["value"]
    torch.testing.assert_close(out_store["value"], block.output.LayerNorm(z), rtol=0, atol=1e-12)


def test_distilbert_mlp_gate_zero_leaves_layernorm_of_its_input():
    model = tiny_model("distilbert", dtype=torch.float64)
    block = model.base_model.transformer.layer[0]
    z_store, h_in = capture(block.ffn, "input")
    out_store, h_out = capture(block)
    with gated(model, mlps=torch.tensor([0.0, 1.0])):
        logits(model, tiny_batch())
    h_in.remove(), h_out.remove()
    out = out_store["value"][0] if isinstance(out_store["value"], tuple) else out_store["value"]
    torch.testing.assert_close(out, block.output_layer_norm(z_store["value"]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_gates_at_one_change_nothing_bitwise(family):
    model = tiny_model(family)
    batch = tiny_batch()
    plain = logits(model, batch)
    with gated(model, heads=HeadMask.full(2, 4), mlps=MlpMask.full(2)):
        assert torch.equal(logits(model, batch), plain)
    # gates that take gradients are hooked everywhere and still multiply by exactly 1.0
    with gated(model, requires_grad=True):
        assert torch.equal(logits(model, batch), plain)


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_on_exit_and_on_exception():
    model = tiny_model()
    before = hook_count(model)
    with gated(model, heads=torch.zeros(2, 4), mlps=torch.zeros(2)):
        assert hook_count(model) == before + 4
    assert hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with gated(model, heads=torch.zeros(2, 4), requires_grad=True):
            raise RuntimeError("boom")
    assert hook_count(model) == before


def _rotary_in_model_precision(monkeypatch):
    """transformers rounds ModernBERT's rotary embedding of Q and K to float32 even in a float64 model,
    which is noise that finite differences cannot see through; the same formula in the model's precision."""
    from transformers.models.modernbert import modeling_modernbert as modernbert

    def rotary(q, k, cos, sin, unsqueeze_dim=1):
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return q * cos + modernbert.rotate_half(q) * sin, k * cos + modernbert.rotate_half(k) * sin

    monkeypatch.setattr(modernbert, "apply_rotary_pos_emb", rotary)


@pytest.mark.parametrize("family", FAMILIES)
def test_gate_gradient_matches_finite_difference(family, monkeypatch):
    if family == "modernbert":
        _rotary_in_model_precision(monkeypatch)
    model = tiny_model(family, dtype=torch.float64)
    batch = tiny_batch()
    heads = torch.rand(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mlps = torch.tensor([0.7, 0.4], dtype=torch.float64)

    def loss(h, m):
        with gated(model, heads=h, mlps=m):
            with torch.no_grad():
                return model(**batch).loss.item()

    with gated(model, heads=heads, mlps=mlps, requires_grad=True) as gates:
        model(**batch).loss.backward()
    eps = 1e-6
    for (layer, head) in [(0, 0), (1, 2)]:
        up, down = heads.clone(), heads.clone()
        up[layer, head] += eps
        down[layer, head] -= eps
        numeric = (loss(up, mlps) - loss(down, mlps)) / (2 * eps)
        assert gates.heads.grad[layer, head].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    for layer in range(2):
        up, down = mlps.clone(), mlps.clone()
        up[layer] += eps
        down[layer] -= eps
        numeric = (loss(heads, up) - loss(heads, down)) / (2 * eps)
        assert gates.mlps.grad[layer].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_wrong_gate_shape_is_refused_with_both_shapes():
    model = tiny_model()
    with pytest.raises(UserError, match=r"\(12, 12\).*\(2, 4\)"):
        with gated(model, heads=torch.ones(12, 12)):
            pass


def random_weight_mask(model, fraction=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    prefix = "bert.encoder.layer."
    return WeightMask(
        {
            name: torch.rand(p.shape, generator=generator) > fraction
            for name, p in model.named_parameters()
            if name.startswith(prefix) and name.endswith("weight") and "LayerNorm" not in name
        }
    )


def test_masked_weights_stay_exactly_zero_through_training_with_weight_decay():
    model = tiny_model().train()
    mask = random_weight_mask(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    # momentum built up before the mask exists must not leak into masked weights either
    for seed in range(3):
        model(**tiny_batch(seed=seed)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    keeper = WeightMaskKeeper(model, mask).attach(optimizer)
    params = dict(model.named_parameters())
    start = {n: params[n].detach().clone() for n in mask.keep}
    for seed in range(20):
        model(**tiny_batch(seed=seed)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    keeper.detach()
    for name, keep in mask.keep.items():
        assert torch.count_nonzero(params[name][~keep]) == 0, name
        assert not torch.equal(params[name][keep], start[name][keep]), f"{name}: kept weights did not train"


def test_weight_masked_zeroes_inside_and_restores_on_exit():
    model = tiny_model()
    mask = random_weight_mask(model)
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in mask.keep}
    batch = tiny_batch()
    plain = logits(model, batch)
    with weight_masked(model, mask):
        for name, keep in mask.keep.items():
            assert torch.count_nonzero(params[name][~keep]) == 0
        assert not torch.allclose(logits(model, batch), plain)
    for name in mask.keep:
        assert torch.equal(params[name], before[name])


def test_weight_mask_for_another_model_is_refused():
    small = tiny_model()
    with pytest.raises(UserError, match=r"shape \(3, 3\) but the model's is \(32, 32\)"):
        with weight_masked(small, WeightMask({"bert.encoder.layer.0.attention.self.query.weight": torch.ones(3, 3)})):
            pass


def test_structured_weight_mask_agrees_with_the_parameter_count():
    from bertlottery.masking import fraction_kept, structured_weight_mask
    from bertlottery.masks import Masks

    model = tiny_model()
    layout = model_layout(model)
    heads = HeadMask(torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]]))
    mlps = MlpMask(torch.tensor([1, 0]))
    as_weights = structured_weight_mask(model, heads, mlps)
    assert as_weights.n_pruned == 5 * layout.params_per_head + layout.params_per_mlp
    assert fraction_kept(model, Masks(heads=heads, mlps=mlps)) == pytest.approx(
        Masks(heads=heads, mlps=mlps).body_fraction_kept(layout)
    )
    # zeroing the weights the structured mask names gives the gated model's outputs
    batch = tiny_batch()
    with gated(model, heads=heads, mlps=mlps):
        expected = logits(model, batch)
    with weight_masked(model, as_weights):
        torch.testing.assert_close(logits(model, batch), expected)
    # a weight mask inside a pruned MLP adds nothing; one elsewhere adds its own zeros
    inside = "bert.encoder.layer.1.intermediate.dense.weight"
    outside = "bert.encoder.layer.0.intermediate.dense.weight"
    half = torch.zeros(37, 32, dtype=torch.bool)
    half[:10] = True
    both = Masks(heads=heads, mlps=mlps, weights=WeightMask({inside: half, outside: half}))
    extra = (~half).sum().item()
    assert fraction_kept(model, both) == pytest.approx(
        Masks(heads=heads, mlps=mlps).body_fraction_kept(layout) - extra / layout.body_params
    )
