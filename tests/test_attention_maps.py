"""Attention maps: raw maps are the model's probabilities, norm maps are Kobayashi et al.'s per-head
norms (checked against a direct computation), masks, memory, and the on-disk format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertlottery.attention import maps_format as fmt
from bertlottery.attention.maps import extract_maps, head_maps, sample_indices, transformed_values
from bertlottery.errors import UserError
from bertlottery.masking import gated
from bertlottery.masks import HeadMask, Masks, MlpMask, save_masks
from bertlottery.models import adapter_for, model_layout

from tiny import tiny_batch, tiny_config, tiny_model, write_rte


def _eager(family: str = "bert"):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(family)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    return model.double().eval()


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_raw_maps_are_the_eager_attention_probabilities(family):
    model = _eager(family)
    batch = tiny_batch(batch=3, length=9)
    if family == "distilbert":
        batch.pop("token_type_ids", None)
    batch = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = model(**batch, output_attentions=True).attentions
    ours = head_maps(model, batch)
    assert len(ours) == len(expected)
    real = batch["attention_mask"].bool()
    for layer, probs in zip(ours, expected, strict=True):
        for b in range(3):
            keep = real[b]
            got = layer["raw"][b][:, keep][:, :, keep]
            want = probs[b][:, keep][:, :, keep]
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
            assert torch.all(layer["raw"][b][:, :, ~keep] < 1e-300)  # padding keys get nothing


def _capture_layer_io(model):
    """Every layer's value projection output and attention output projection's output (before its bias)."""
    layers = adapter_for(model).layers(model)
    store = [{} for _ in layers]
    handles = []
    for parts, slot in zip(layers, store, strict=True):
        handles.append(parts.value.register_forward_hook(lambda m, a, o, s=slot: s.__setitem__("value", o.detach())))
        handles.append(parts.attn_out.register_forward_hook(
            lambda m, a, o, s=slot: s.__setitem__("out", (o - m.bias).detach())))
    return store, handles


def test_norm_maps_equal_a_direct_per_head_computation_and_the_vectors_add_up_to_the_layer_output():
    model = tiny_model("bert").double()
    layout = model_layout(model)
    batch = {k: v for k, v in tiny_batch(batch=2, length=8).items() if k != "labels"}
    store, handles = _capture_layer_io(model)
    try:
        ours = head_maps(model, batch)
    finally:
        for h in handles:
            h.remove()
    layers = adapter_for(model).layers(model)
    H, d = layout.num_heads, layout.head_dim
    for index, (parts, slot) in enumerate(zip(layers, store, strict=True)):
        alpha = ours[index]["raw"]  # checked against eager above
        W_O = parts.attn_out.weight  # (hidden, H*d): out x in
        value = slot["value"]  # (B, T, H*d) = x W_V + b_V
        direct = torch.zeros_like(alpha)
        summed = torch.zeros(value.shape[0], value.shape[1], W_O.shape[0], dtype=value.dtype)
        for h in range(H):
            f_h = value[:, :, h * d:(h + 1) * d] @ W_O[:, h * d:(h + 1) * d].T  # (B, T, hidden)
            weighted = alpha[:, h, :, :, None] * f_h[:, None, :, :]  # (B, T, T, hidden): alpha_ij f(x_j)
            direct[:, h] = weighted.norm(dim=-1)
            summed += weighted.sum(dim=2)
        torch.testing.assert_close(ours[index]["norm"], direct, rtol=1e-10, atol=1e-12)
        # sum over heads and tokens of alpha_ij f_h(x_j) is the attention block's output: the split is right
        torch.testing.assert_close(summed, slot["out"], rtol=1e-9, atol=1e-10)
        f_all = transformed_values(value, parts.attn_out, H)
        torch.testing.assert_close(f_all.sum(dim=1) + parts.attn_out.bias, parts.attn_out(value))
    # slicing the weight by rows (its output axis, as the released code did) gives different maps
    wrong = torch.stack([(value.view(2, 8, H, d)[:, :, h] @ W_O[h * d:(h + 1) * d, :]).norm(dim=-1)
                         for h in range(H)], 1)
    assert not torch.allclose(alpha * wrong[:, :, None, :], ours[-1]["norm"], rtol=0.05)


def test_the_norm_map_stays_small_in_memory_for_long_inputs():
    # T=256, 8 heads, hidden 256: a B x H x T x T x hidden tensor would be 4 x 8 x 256^2 x 256 x 4 B = 2 GiB;
    # the largest single allocation must be of the size of one B x H x T x T map (8 MiB)
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=256, num_hidden_layers=1, num_attention_heads=8,
                        intermediate_size=64, max_position_embeddings=256)
    model = BertModel(config).eval()
    batch = {"input_ids": torch.randint(5, 99, (4, 256)), "attention_mask": torch.ones(4, 256, dtype=torch.long)}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        maps = head_maps(model, batch)
    largest = max(event.cpu_memory_usage for event in prof.events())
    one_map = 4 * 8 * 256 * 256 * 4
    assert maps[0]["norm"].shape == (4, 8, 256, 256)
    assert 0 < largest <= 2 * one_map, f"an allocation of {largest / 2**20:.0f} MiB"


def test_masked_heads_have_zero_maps_and_the_rest_see_the_pruned_model():
    model = tiny_model("bert")
    batch = {k: v for k, v in tiny_batch(batch=2, length=7).items() if k != "labels"}
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 3] = False
    full = head_maps(model, batch)
    with gated(model, heads=keep):
        masked = head_maps(model, batch, heads=keep)
    for kind in ("raw", "norm"):
        assert torch.all(masked[0][kind][:, 1] == 0) and torch.all(masked[1][kind][:, 3] == 0)
        torch.testing.assert_close(masked[0][kind][:, 0], full[0][kind][:, 0])  # layer 0 inputs unchanged
    assert not torch.allclose(masked[1]["raw"][:, 0], full[1]["raw"][:, 0])  # layer 1 sees the pruned layer 0
    with pytest.raises(UserError, match="Head mask has shape"):
        head_maps(model, batch, heads=torch.ones(3, 4, dtype=torch.bool))


def test_sample_indices_are_seeded_distinct_and_sorted():
    a = sample_indices(277, 100, seed=3)
    assert a == sample_indices(277, 100, seed=3) != sample_indices(277, 100, seed=4)
    assert len(set(a)) == 100 and a == sorted(a) and max(a) < 277
    assert sample_indices(5, 100, seed=0) == [0, 1, 2, 3, 4]


def test_extract_writes_the_documented_format_under_a_mask(tiny_model_dir, env):
    glue = write_rte(env / "glue", n_train=4, n_dev=12)
    layout = (2, 4)
    keep = torch.ones(layout, dtype=torch.bool)
    keep[1, 2] = False
    save_masks(env / "mask.safetensors", Masks(heads=HeadMask(keep), mlps=MlpMask(torch.tensor([True, False]))))
    index = extract_maps(tiny_model_dir, "RTE", env / "maps", glue_dir=glue, n_examples=5, seed=1,
                         mask=env / "mask.safetensors", batch_size=2)
    raw_index = json.loads((env / "maps" / "index.json").read_text())
    assert raw_index["format"] == fmt.FORMAT and raw_index["weights"] == "pretrained"
    assert raw_index["head_mask"][1][2] is False and len(raw_index["examples"]) == 5
    assert [e["dev_index"] for e in raw_index["examples"]] == sample_indices(12, 5, 1)
    maps = fmt.load_maps(env / "maps")
    assert maps.index == index
    first = maps.index.examples[0]
    assert first.tokens[0] == "[CLS]" and first.tokens[-1] == "[SEP]" and first.segments[-1] == 1
    arrays = maps.example(first.id)
    T = first.n_tokens
    assert arrays["raw"].shape == arrays["norm"].shape == (2, 4, T, T)
    np.testing.assert_allclose(arrays["raw"][0].sum(-1), 1, atol=2e-3)  # float16 rows still sum to 1
    assert np.all(arrays["raw"][1, 2] == 0) and np.all(arrays["norm"][1, 2] == 0)
    assert sum(1 for _ in maps.head_maps("raw")) == 5 * 7  # the masked head is skipped
    key, m = next(maps.head_maps("norm"))
    assert (key.layer, key.head) == (0, 0) and m.shape == (T, T)
    assert index.extra["fraction_kept"] < 1


def test_labels_round_trip_and_bad_labels_are_refused(tmp_path):
    ex = fmt.Example("ex000", 0, ["[CLS]", "a", "[SEP]"], [0, 0, 0])
    info = fmt.MapsIndex(model="m", task="RTE", weights="pretrained", layers=1, heads=1)
    fmt.save_maps(tmp_path, info, [(ex, {"raw": np.eye(3)[None, None], "norm": np.eye(3)[None, None]})])
    fmt.write_labels(tmp_path, {fmt.label_key("ex000", 0, 0, "raw"): "diagonal"})
    fmt.write_labels(tmp_path, {"ex000/0/0/norm": "block"}, merge=True)
    assert fmt.read_labels(tmp_path) == {"ex000/0/0/raw": "diagonal", "ex000/0/0/norm": "block"}
    with pytest.raises(UserError, match="Did you mean 'diagonal'"):
        fmt.write_labels(tmp_path, {"ex000/0/0/raw": "diagnal"})
    with pytest.raises(UserError, match="not '<example_id>"):
        fmt.write_labels(tmp_path, {"ex000/0/raw": "block"})
    with pytest.raises(UserError, match="does not exist"):
        fmt.load_maps(tmp_path / "nowhere")


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2", "deberta-v3", "mpnet"])
def test_maps_of_families_with_their_own_score_terms_reproduce_the_heads_context(family):
    """Each head's raw map times its value vectors is the context the model feeds its output projection
    (relative positions, rotary embeddings and local windows included), and the norm map is Kobayashi
    et al.'s per head, from the model as loaded (SDPA for ModernBERT)."""
    model = tiny_model(family, dtype=torch.float64)
    kernel = model.config._attn_implementation
    layout = model_layout(model)
    layers = adapter_for(model).layers(model)
    batch = {k: v for k, v in tiny_batch(batch=3, length=9).items() if k != "labels"}
    contexts, values = [], []
    handles = [parts.attn_out.register_forward_pre_hook(lambda m, a: contexts.append(a[0])) for parts in layers]
    for parts in layers:
        value_map, first = (parts.value, 0) if parts.qkv is None else (parts.qkv, 2 * parts.attn_out.in_features)
        handles.append(value_map.register_forward_hook(
            lambda m, a, o, first=first, width=parts.attn_out.in_features: values.append(o[..., first:first + width])))
    with torch.no_grad():
        model(**batch)
    for handle in handles:
        handle.remove()
    ours = head_maps(model, batch)
    assert model.config._attn_implementation == kernel  # switched back
    real = batch["attention_mask"].bool()
    for layer, (maps, context, value) in enumerate(zip(ours, contexts, values, strict=True)):
        v = value.view(3, 9, layout.num_heads, layout.head_dim).transpose(1, 2)  # (B, H, T, dh)
        rebuilt = torch.matmul(maps["raw"], v).transpose(1, 2).reshape(3, 9, -1)
        torch.testing.assert_close(rebuilt[real], context[real], rtol=1e-5, atol=1e-6)
        f = transformed_values(value, layers[layer].attn_out, layout.num_heads)
        torch.testing.assert_close(maps["norm"], maps["raw"] * f.norm(dim=-1)[:, :, None, :])
    # the plain q . k recomputation would have been wrong here: the model's own scores have more terms
    queries, keys = [], []
    handles = []
    for parts in layers:
        for store, position in ((queries, 0), (keys, 1)):
            linear, first = ((parts.query, parts.key)[position], 0) if parts.qkv is None else (
                parts.qkv, position * parts.attn_out.in_features)
            handles.append(linear.register_forward_hook(
                lambda m, a, o, s=store, first=first, width=parts.attn_out.in_features: s.append(o[..., first:first + width])))
    with torch.no_grad():
        model(**batch)
    for handle in handles:
        handle.remove()
    q = queries[0].view(3, 9, layout.num_heads, layout.head_dim).transpose(1, 2)
    k = keys[0].view(3, 9, layout.num_heads, layout.head_dim).transpose(1, 2)
    plain = torch.softmax(q @ k.transpose(-1, -2) * layout.head_dim ** -0.5 + (~real)[:, None, None, :] * -1e30, -1)
    assert not torch.allclose(plain[0, :, :7, :7], ours[0]["raw"][0, :, :7, :7], atol=1e-3)


@pytest.mark.parametrize("family", ["modernbert", "mpnet"])
def test_maps_under_a_head_mask_zero_the_removed_heads(family):
    model = tiny_model(family, dtype=torch.float64)
    batch = {k: v for k, v in tiny_batch(batch=2, length=8).items() if k != "labels"}
    heads = torch.tensor([[True, False, True, True], [False, False, True, True]])
    with gated(model, heads=heads):
        maps = head_maps(model, batch, heads=heads)
    for layer, row in enumerate(heads):
        for h, kept in enumerate(row):
            raw = maps[layer]["raw"][:, h]
            assert bool((raw == 0).all()) != bool(kept)


def test_a_length_beyond_the_models_positions_is_one_line_before_anything_is_written(tiny_model_dir, env, capsys):
    """The tiny model has 64 positions: --max-length 100 is refused naming the limit; the default 128
    is fitted to 64 (as training fits it), so maps of a pre-trained model with few positions still run."""
    from bertlottery.cli import main

    glue = write_rte(env / "glue", n_train=4, n_dev=6)
    code = main(["attention", "maps", str(tiny_model_dir), "--task", "RTE", "--glue-dir", str(glue),
                 "--examples", "2", "--max-length", "100", "--out", str(env / "maps")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("--max-length 100 is beyond the 64 positions of the model "
                                      f"{tiny_model_dir}; give at most 64.") and len(err.splitlines()) == 1
    assert not (env / "maps").exists()
    index = extract_maps(tiny_model_dir, "RTE", env / "fitted", glue_dir=glue, n_examples=2)
    assert index.max_length == 64
