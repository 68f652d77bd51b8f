"""Exported (physically pruned) models against the gated model, on tiny models of every family."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from bertlottery.errors import UserError
from bertlottery.export import (
    body_macs_per_token,
    export_pruned,
    exported_plan,
    load_exported,
    save_exported,
)
from bertlottery.masking import gated
from bertlottery.masks import HeadMask, MlpMask
from bertlottery.models import adapter_for, model_layout

from tiny import tiny_batch, tiny_model

FAMILIES = ["bert", "roberta", "electra", "distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"]


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def gated_logits(model, batch, heads, mlps):
    with gated(model, heads=heads, mlps=mlps):
        return logits(model, batch)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def random_masks(seed: int) -> tuple[HeadMask, MlpMask]:
    generator = torch.Generator().manual_seed(seed)
    heads = HeadMask(torch.rand(2, 4, generator=generator) < 0.5)
    mlps = MlpMask(torch.rand(2, generator=generator) < 0.5)
    return heads, mlps


CASES = {
    # name: (heads kept [layer][head], MLPs kept [layer])
    "some heads": ([[1, 0, 1, 1], [0, 1, 0, 0]], [1, 1]),
    "layer 1 without heads": ([[1, 0, 1, 1], [0, 0, 0, 0]], [1, 1]),
    "layer 0 without heads": ([[0, 0, 0, 0], [1, 1, 0, 1]], [1, 1]),
    "layer 0 without MLP": ([[1, 1, 1, 1], [1, 1, 1, 1]], [0, 1]),
    "layer 1 without heads and MLP": ([[0, 1, 1, 0], [0, 0, 0, 0]], [1, 0]),
    "nothing left": ([[0, 0, 0, 0], [0, 0, 0, 0]], [0, 0]),
    "nothing removed": ([[1, 1, 1, 1], [1, 1, 1, 1]], [1, 1]),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(CASES))
def test_exported_logits_equal_gated_logits(family, case):
    heads, mlps = HeadMask(torch.tensor(CASES[case][0])), MlpMask(torch.tensor(CASES[case][1]))
    model = tiny_model(family, dtype=torch.float64)
    batch = tiny_batch()
    exported = export_pruned(model, heads, mlps)
    torch.testing.assert_close(logits(exported, batch), gated_logits(model, batch, heads, mlps), rtol=0, atol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", range(4))
def test_exported_logits_equal_gated_logits_for_random_masks(family, seed):
    heads, mlps = random_masks(seed)
    model = tiny_model(family, dtype=torch.float64, seed=seed)
    batch = tiny_batch(seed=seed)
    expected = gated_logits(model, batch, heads, mlps)
    assert not torch.allclose(expected, logits(model, batch))  # the masks did something
    torch.testing.assert_close(logits(export_pruned(model, heads, mlps), batch), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_model_trains_like_the_gated_one(family):
    """Loss gradients of the kept weights agree too (train mode, dropout off)."""
    heads = HeadMask(torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]]))
    mlps = MlpMask(torch.tensor([0, 1]))
    model = tiny_model(family, dtype=torch.float64)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    exported = export_pruned(model, heads, mlps)
    batch = tiny_batch()
    with gated(model, heads=heads, mlps=mlps):
        model(**batch).loss.backward()
    exported(**batch).loss.backward()
    # layer 0 keeps heads 0, 2, 3: in every per-head block (Q, K, V, a fused map's three, DeBERTa's
    # relative-position maps) the exported rows are those heads' rows, in order
    rows = torch.tensor([h * 8 + i for h in (0, 2, 3) for i in range(8)])
    full_blocks = adapter_for(model).layers(model)[0].head_blocks
    cut_blocks = adapter_for(exported).layers(exported)[0].head_blocks
    assert len(full_blocks) == len(cut_blocks) >= 3
    for (kept, first), (cut, cut_first) in zip(full_blocks, cut_blocks):
        assert cut_first == first // 4 * 3
        torch.testing.assert_close(cut.weight.grad[cut_first : cut_first + 24], kept.weight.grad[first + rows], rtol=0, atol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_model_has_exactly_the_removed_parameters_fewer(family):
    model = tiny_model(family)
    layout = model_layout(model)
    heads = HeadMask(torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]]))
    mlps = MlpMask(torch.tensor([1, 0]))
    exported = export_pruned(model, heads, mlps)
    removed = 5 * layout.params_per_head + 1 * layout.params_per_mlp
    assert n_params(model) - n_params(exported) == removed
    # and the projections have the kept sizes: 3 heads x dh = 24 in layer 0, nothing in layer 1
    parts = adapter_for(exported).layers(exported)
    query_rows = 24 * (3 if parts[0].qkv is not None else 1)  # a fused map keeps 24 rows in each of Q, K, V
    assert [p.head_blocks[0][0].out_features for p in parts] == [query_rows, 0]
    assert [sum(linear.out_features for linear in p.attention_inputs) for p in parts] == [24 * len(parts[0].head_blocks), 0]
    assert [p.attn_out.in_features for p in parts] == [24, 0]
    assert [p.mlp_in.out_features for p in parts] == [37 * (2 if parts[0].gated_mlp else 1), 0]
    assert [p.mlp_out.in_features for p in parts] == [37, 0]
    assert parts[1].mlp_out.bias is None
    plan = exported_plan(exported)
    assert plan.heads == ((0, 2, 3), ()) and plan.mlps == (True, False)
    assert plan.head_mask == heads and plan.mlp_mask == mlps


def test_layer_without_heads_or_mlp_computes_no_attention_and_no_mlp(monkeypatch):
    model = tiny_model("bert", dtype=torch.float64)
    exported = export_pruned(model, HeadMask(torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])), MlpMask(torch.tensor([1, 0])))
    linears = []
    for name, module in exported.bert.encoder.layer[1].named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda *_, name=name: linears.append(name))
    attention_calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: attention_calls.append(1) or sdpa(*a, **k)
    )
    logits(exported, tiny_batch())
    assert len(attention_calls) == 1  # layer 0's
    assert linears == ["attention.output.dense"]  # zero input columns: it gives its bias, LayerNorm(x + b_O)


@pytest.mark.parametrize("family", FAMILIES)
def test_input_model_is_unchanged(family):
    model = tiny_model(family)
    before = copy.deepcopy(model.state_dict())
    modules = [type(m) for m in model.modules()]
    batch = tiny_batch()
    expected = logits(model, batch)
    export_pruned(model, HeadMask(torch.tensor([[0, 0, 0, 0], [1, 0, 0, 1]])), MlpMask(torch.tensor([0, 1])))
    assert [type(m) for m in model.modules()] == modules
    assert set(model.state_dict()) == set(before)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert torch.equal(logits(model, batch), expected)
    assert exported_plan(model) is None


def test_masks_of_the_wrong_shape_are_refused():
    with pytest.raises(UserError, match=r"\(3, 4\).*\(2, 4\)"):
        export_pruned(tiny_model(), HeadMask(torch.ones(3, 4)), None)


def test_export_inside_gated_block_is_refused():
    model = tiny_model()
    with gated(model, heads=torch.zeros(2, 4)):
        with pytest.raises(UserError, match="outside"):
            export_pruned(model, HeadMask(torch.ones(2, 4)), None)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_gives_identical_logits(family, tmp_path):
    model = tiny_model(family, dtype=torch.float64)
    heads = HeadMask(torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]]))
    mlps = MlpMask(torch.tensor([0, 1]))
    out = save_exported(model, tmp_path / "small", heads, mlps)
    loaded = load_exported(out)
    assert not loaded.training
    assert next(loaded.parameters()).dtype == torch.float64
    batch = tiny_batch()
    assert torch.equal(logits(loaded, batch), logits(export_pruned(model, heads, mlps), batch))
    assert exported_plan(loaded) == exported_plan(export_pruned(model, heads, mlps))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "pruning.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_pruning_json_says_what_each_layer_keeps(tmp_path):
    model = tiny_model("bert")
    layout = model_layout(model)
    heads = HeadMask(torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]]))
    mlps = MlpMask(torch.tensor([1, 0]))
    exported = export_pruned(model, heads, mlps)
    # an exported model can be saved as well, with the masks it was made with
    record = json.loads((save_exported(exported, tmp_path / "e", heads, mlps, seq_len=16) / "pruning.json").read_text())
    assert record["layers"] == [{"heads": [0, 2, 3], "mlp": True}, {"heads": [], "mlp": False}]
    assert record["layout"]["num_heads"] == 4 and record["family"] == "bert"
    assert record["params"]["before"] == n_params(model)
    assert record["params"]["after"] == n_params(exported)
    assert record["params"]["body_before"] - record["params"]["body_after"] == 5 * layout.params_per_head + layout.params_per_mlp
    full = body_macs_per_token(layout, 16)
    assert record["macs_per_token"]["fraction_removed"] == pytest.approx(
        1 - body_macs_per_token(layout, 16, heads, mlps) / full
    )
    with pytest.raises(UserError, match="other masks"):
        save_exported(exported, tmp_path / "f", HeadMask.full(2, 4), mlps)
    assert not (tmp_path / "f").exists()


def test_save_replaces_an_existing_export(tmp_path):
    model = tiny_model("bert", dtype=torch.float64)
    out = tmp_path / "small"
    save_exported(model, out, HeadMask.full(2, 4), None)
    heads = HeadMask(torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]]))
    save_exported(model, out, heads, None)
    assert exported_plan(load_exported(out)).head_mask == heads
    assert [p.name for p in tmp_path.iterdir()] == ["small"]


def test_body_macs_per_token_counts_projections_attention_and_mlp():
    layout = model_layout(tiny_model())  # d=32, dh=8, 4 heads, f=37, 2 layers
    d, f, T = 32, 37, 10
    per_layer = 4 * d * d + 2 * d * T + 2 * d * f
    assert body_macs_per_token(layout, T) == 2 * per_layer
    heads = HeadMask(torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))
    mlps = MlpMask(torch.tensor([0, 1]))
    assert body_macs_per_token(layout, T, heads, mlps) == (4 * d * 16 + 2 * 16 * T) + 2 * d * f


def broken_export(tmp_path, change):
    model = tiny_model("bert")
    out = save_exported(model, tmp_path / "small", HeadMask(torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]])), None)
    change(out)
    return out


def _edit_tensors(out, edit):
    tensors = load_file(str(out / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(out / "model.safetensors"))


def test_loading_with_a_missing_tensor_fails(tmp_path):
    out = broken_export(tmp_path, lambda o: _edit_tensors(o, lambda t: t.pop("bert.encoder.layer.0.attention.self.key.bias")))
    with pytest.raises(UserError, match="missing bert.encoder.layer.0.attention.self.key.bias"):
        load_exported(out)


def test_loading_with_an_extra_tensor_fails(tmp_path):
    out = broken_export(tmp_path, lambda o: _edit_tensors(o, lambda t: t.__setitem__("extra.weight", torch.ones(2))))
    with pytest.raises(UserError, match="unexpected extra.weight"):
        load_exported(out)


def test_loading_with_a_tensor_of_the_wrong_shape_fails(tmp_path):
    name = "bert.encoder.layer.0.attention.self.query.weight"  # 24 x 32 after pruning a head
    out = broken_export(tmp_path, lambda o: _edit_tensors(o, lambda t: t.__setitem__(name, torch.ones(32, 32))))
    with pytest.raises(UserError, match=r"query.weight has shape \(32, 32\) but pruning.json gives \(24, 32\)"):
        load_exported(out)


def test_loading_a_folder_that_is_not_an_export_fails(tmp_path):
    out = broken_export(tmp_path, lambda o: (o / "pruning.json").unlink())
    with pytest.raises(UserError, match="not a bertlottery export"):
        load_exported(out)
    model_dir = tmp_path / "plain"
    tiny_model().save_pretrained(model_dir)
    with pytest.raises(UserError, match="not a bertlottery export"):
        load_exported(model_dir)
    with pytest.raises(UserError, match="does not exist"):
        load_exported(tmp_path / "nowhere")


def test_loading_a_damaged_pruning_json_fails(tmp_path):
    out = broken_export(tmp_path, lambda o: (o / "pruning.json").write_text('{"format": "bertlottery.export/1"}'))
    with pytest.raises(UserError, match="damaged"):
        load_exported(out)


@pytest.mark.slow
def test_minilm_export_on_real_rte_sentences_matches_the_gated_model(glue_dir, tmp_path):
    """The packaged pre-trained MiniLM, real RTE dev pairs, one layer emptied of heads and one MLP removed."""
    from bertlottery.data import make_loader, read_glue_split, tokenize
    from bertlottery.models import load_model, load_tokenizer
    from bertlottery.tasks import get_task

    tokenizer = load_tokenizer("minilm-l6")
    split = tokenize(read_glue_split(get_task("RTE"), glue_dir, "dev")[:64], tokenizer)
    batches = [
        {k: v for k, v in batch.items() if k not in ("labels", "index")}
        for batch in make_loader(split, tokenizer.pad_token_id, 16, shuffle=False, seed=None)
    ]
    model = load_model("minilm-l6", 2, seed=0).eval()
    layout = model_layout(model)
    keep = HeadMask.random_like(HeadMask.full(layout.num_layers, layout.num_heads), keep=40, seed=1).keep
    keep[2] = False
    heads = HeadMask(keep)
    mlps = MlpMask(torch.arange(layout.num_layers) != 4)
    exported = export_pruned(model, heads, mlps)
    assert n_params(model) - n_params(exported) == heads.n_pruned * layout.params_per_head + layout.params_per_mlp
    loaded = load_exported(save_exported(model, tmp_path / "minilm", heads, mlps, tokenizer))
    for batch in batches:
        with torch.no_grad():
            with gated(model, heads=heads, mlps=mlps):
                expected = model(**batch).logits
            plain = model(**batch).logits
            got = exported(**batch).logits
            assert torch.equal(loaded(**batch).logits, got)
        assert (expected - plain).abs().max() > 1e-3  # the masks matter on real text
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


# ---- neuron slicing and folded scales (the Fisher search's masks) --------------------------------------


def neuron_masks(layout, seed: int):
    """Heads with one layer left empty, and neurons with a layer's MLP kept but all its units pruned."""
    generator = torch.Generator().manual_seed(seed)
    heads = torch.rand(layout.num_layers, layout.num_heads, generator=generator) < 0.6
    heads[0] = False
    heads[1, 0] = True
    neurons = torch.rand(layout.num_layers, layout.intermediate_size, generator=generator) < 0.5
    neurons[1] = False
    head_scales = heads * (0.5 + torch.rand(heads.shape, generator=generator, dtype=torch.float64))
    neuron_scales = neurons * (0.5 + torch.rand(neurons.shape, generator=generator, dtype=torch.float64))
    return heads, neurons, head_scales, neuron_scales


def macs_by_hand(model, seq_len: int) -> int:
    """The exported model's MACs per token, from the shapes of its maps as they are."""
    plan = exported_plan(model)  # head size and relative positions: the full model's
    layout = plan.layout if plan is not None else model_layout(model)
    per_token = per_sequence = 0
    for parts in adapter_for(model).layers(model):
        k = parts.attn_out.in_features // layout.head_dim
        token_maps = [linear for linear in parts.attention_inputs if linear not in parts.relative]
        maps = [*token_maps, parts.attn_out, parts.mlp_in, parts.mlp_out]
        per_token += sum(linear.in_features * linear.out_features for linear in maps)
        per_token += k * (2 * layout.head_dim * seq_len + layout.relative_positions * layout.head_dim)
        per_sequence += k * layout.relative_positions * layout.hidden_size * layout.head_dim
    return per_token + per_sequence // seq_len


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_neuron_export_with_folded_scales_equals_the_scaled_gated_model(family, seed):
    from bertlottery.masking import fisher_gated

    model = tiny_model(family, dtype=torch.float64)
    layout = model_layout(model)
    heads, neurons, head_scales, neuron_scales = neuron_masks(layout, seed)
    batch = tiny_batch()
    with fisher_gated(model, head_scales, neuron_scales):
        expected = logits(model, batch)
    small = export_pruned(model, HeadMask(heads), None, neurons=neurons, head_scales=head_scales,
                          neuron_scales=neuron_scales)
    torch.testing.assert_close(logits(small, batch), expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(expected, logits(model, batch))
    # binary masks alone: the neuron-gated model
    binary = export_pruned(model, HeadMask(heads), None, neurons=neurons)
    with fisher_gated(model, heads, neurons):
        torch.testing.assert_close(logits(binary, batch), logits(model, batch), rtol=1e-9, atol=1e-9)
    parts = adapter_for(small).layers(small)
    for layer, layer_parts in enumerate(parts):
        units = int(neurons[layer].sum())
        assert layer_parts.mlp_out.in_features == units
        assert layer_parts.mlp_in.out_features == units * (2 if layer_parts.gated_mlp else 1)
    for seq_len in (7, 128):
        by_count = body_macs_per_token(layout, seq_len, HeadMask(heads), None, neurons)
        assert macs_by_hand(small, seq_len) == by_count
    assert macs_by_hand(model, 128) == body_macs_per_token(layout, 128)
    removed = n_params(model) - n_params(small)
    assert removed == exported_plan(small).params_removed


@pytest.mark.parametrize("family", ["bert", "modernbert", "mpnet"])
def test_neuron_export_saves_and_loads(family, tmp_path):
    model = tiny_model(family, dtype=torch.float64)
    layout = model_layout(model)
    heads, neurons, head_scales, neuron_scales = neuron_masks(layout, 3)
    mlps = MlpMask(torch.tensor([True, False]))
    small = export_pruned(model, HeadMask(heads), mlps, neurons=neurons, neuron_scales=neuron_scales)
    save_exported(model, tmp_path / "small", HeadMask(heads), mlps, neurons=neurons, neuron_scales=neuron_scales)
    record = json.loads((tmp_path / "small" / "pruning.json").read_text())
    assert record["layers"][0]["neurons"] == neurons[0].nonzero().flatten().tolist()
    assert record["layers"][1]["neurons"] == [] and record["kept"]["neurons"] == int(neurons[0].sum())
    loaded = load_exported(tmp_path / "small")
    batch = tiny_batch()
    torch.testing.assert_close(logits(loaded, batch), logits(small, batch), rtol=1e-12, atol=1e-12)
    assert exported_plan(loaded) == exported_plan(small)


def test_neuron_masks_and_scales_of_the_wrong_shape_are_refused():
    model = tiny_model()
    with pytest.raises(UserError, match="layers x intermediate"):
        export_pruned(model, None, None, neurons=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(UserError, match="Head scales have shape"):
        export_pruned(model, None, None, head_scales=torch.ones(3, 4))
