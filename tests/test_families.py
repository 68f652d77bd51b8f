"""What every supported family must give, beyond the masking and export tests (which are parametrised
over the families too): the residual-only layer, weight masks over the family's prunable tensors, and
sizes and costs counted from the model's real shapes, checked against counts by hand and against the
operations a forward pass really runs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bertlottery.export import body_macs_per_token, export_pruned
from bertlottery.importance import prunable_parameters
from bertlottery.masking import fraction_kept, gated, structured_weight_mask, weight_masked
from bertlottery.masks import HeadMask, Masks, MlpMask
from bertlottery.models import adapter_for, model_layout

from tiny import tiny_batch, tiny_config, tiny_model

FAMILIES = ["bert", "roberta", "electra", "distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"]
HEADS = HeadMask(torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]]))
MLPS = MlpMask(torch.tensor([0, 1]))


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def residual_only(family: str, block: torch.nn.Module, x: torch.Tensor, out_bias: torch.Tensor | None) -> torch.Tensor:
    """A layer's output with every head and its MLP off, written out per family: the attention branch
    leaves the output projection's bias, the MLP branch nothing; post-norm families then normalise."""
    z = x + out_bias if out_bias is not None else x
    if family == "modernbert":  # pre-norm: the residual stream passes untouched
        return z
    if family == "distilbert":
        return block.output_layer_norm(block.sa_layer_norm(z))
    attention_norm = block.attention.LayerNorm if family == "mpnet" else block.attention.output.LayerNorm
    return block.output.LayerNorm(attention_norm(z))


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_without_heads_and_mlp_gives_the_families_residual_only_output(family):
    model = tiny_model(family, dtype=torch.float64)
    base_family = adapter_for(model).family
    block = adapter_for(model).blocks(model)[1]
    parts = adapter_for(model).layers(model)[1]
    seen = {}

    def keep_input(module, args, kwargs):
        seen["x"] = args[0] if args else kwargs["hidden_states"]

    def keep_output(module, args, out):
        seen["out"] = out[0] if isinstance(out, tuple) else out

    hooks = [block.register_forward_pre_hook(keep_input, with_kwargs=True), block.register_forward_hook(keep_output)]
    try:
        with gated(model, heads=HeadMask(torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])), mlps=MlpMask(torch.tensor([1, 0]))):
            logits(model, tiny_batch())
    finally:
        for hook in hooks:
            hook.remove()
    expected = residual_only(base_family, block, seen["x"], parts.attn_out.bias)
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_masks_cover_every_linear_map_of_the_layers(family):
    model = tiny_model(family)
    prefix = adapter_for(model).layer_prefix(model) + "."
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and
               (name + ".").startswith(prefix)}
    assert set(prunable_parameters(model, "weights")) == {f"{name}.weight" for name in linears}
    biases = {f"{name}.bias" for name in linears if dict(model.named_modules())[name].bias is not None}
    mlp_out_biases = {f"{name}.bias" for name in linears
                      if name.endswith((".output.dense", ".ffn.lin2", ".mlp.Wo")) and ".attention." not in name}
    assert set(prunable_parameters(model, "paper")) == {f"{name}.weight" for name in linears} | (biases - mlp_out_biases)


@pytest.mark.parametrize("family", FAMILIES)
def test_structured_weight_mask_zeroes_exactly_what_the_gates_remove(family):
    model = tiny_model(family, dtype=torch.float64)
    layout = model_layout(model)
    as_weights = structured_weight_mask(model, HEADS, MLPS)
    assert as_weights.n_pruned == 4 * layout.params_per_head + layout.params_per_mlp
    assert fraction_kept(model, Masks(heads=HEADS, mlps=MLPS)) == pytest.approx(
        1 - (4 * layout.params_per_head + layout.params_per_mlp) / layout.body_params
    )
    batch = tiny_batch()
    with gated(model, heads=HEADS, mlps=MLPS):
        expected = logits(model, batch)
    with weight_masked(model, as_weights):
        torch.testing.assert_close(logits(model, batch), expected, rtol=0, atol=1e-12)


D, DH, F, H, L = 32, 8, 37, 4, 2  # tiny_config's hidden size, head size, MLP width, heads, layers


def by_hand(family: str) -> dict[str, int]:
    """Parameters per head and per MLP, of the layers, and per-token MACs per head and MLP of tiny_config."""
    linear = lambda n_in, n_out, bias=True: n_in * n_out + (n_out if bias else 0)  # noqa: E731
    layer_norm = 2 * D
    if family == "modernbert":  # fused [Q; K; V], biases on in tiny_config; GeGLU Wi is 2F wide; no LayerNorm before layer 0's attention
        head = 3 * linear(D, DH) + D * DH
        mlp = linear(D, 2 * F) + linear(F, D)
        layers = L * (linear(D, 3 * D) + linear(D, D) + mlp) + 3 * layer_norm
        return dict(head=head, mlp=mlp, layers=layers, head_macs=4 * D * DH, mlp_macs=3 * D * F, relative=0)
    bert_like = L * (4 * linear(D, D) + linear(D, F) + linear(F, D) + 2 * layer_norm)
    plain = dict(head=4 * linear(D, DH) - DH, mlp=linear(D, F) + linear(F, D), layers=bert_like,
                 head_macs=4 * D * DH, mlp_macs=2 * D * F, relative=0)
    if family == "deberta-v2":  # each layer's own position key and query maps, per head like Q and K
        return {**plain, "head": plain["head"] + 2 * linear(D, DH), "layers": bert_like + L * 2 * linear(D, D),
                "relative": 2 * 2 * 16}  # c2p and p2c, each against 2 x max_relative_positions
    if family == "deberta-v3":  # shares Q and K for positions; 8 buckets
        return {**plain, "relative": 2 * 2 * 8}
    return plain


@pytest.mark.parametrize("family", FAMILIES)
def test_sizes_and_costs_match_a_count_by_hand(family):
    model = tiny_model(family)
    layout = model_layout(model)
    count = by_hand(family)
    assert (layout.params_per_head, layout.params_per_mlp, layout.body_params) == (count["head"], count["mlp"], count["layers"])
    assert (layout.macs_per_head, layout.macs_per_mlp, layout.relative_positions) == (
        count["head_macs"], count["mlp_macs"], count["relative"])
    assert layout.intermediate_size == F and layout.head_dim == DH
    # per layer with k heads: projections, scores and weighted values, relative positions; the MLP;
    # the relative-position embeddings' projections once per sequence
    T, R = 10, count["relative"]
    kept_heads, kept_mlps = HEADS.keep.sum(1).tolist(), MLPS.keep.tolist()
    per_token = sum(k * (count["head_macs"] + 2 * DH * T + R * DH) + count["mlp_macs"] * m for k, m in zip(kept_heads, kept_mlps))
    per_sequence = sum(k * R * D * DH for k in kept_heads)
    assert body_macs_per_token(layout, T, HEADS, MLPS) == per_token + per_sequence // T
    removed = sum(4 - k for k in kept_heads) * count["head"] + count["mlp"]
    assert fraction_kept(model, Masks(heads=HEADS, mlps=MLPS)) == pytest.approx(1 - removed / count["layers"])


def test_modernbert_without_biases_counts_none():
    config = tiny_config("modernbert")
    config.attention_bias = config.mlp_bias = False
    from transformers import AutoModelForSequenceClassification

    layout = model_layout(AutoModelForSequenceClassification.from_config(config))
    assert (layout.params_per_head, layout.params_per_mlp) == (4 * D * DH, 3 * D * F)


@pytest.mark.parametrize("family", FAMILIES)
def test_body_macs_are_the_multiply_accumulates_a_forward_pass_runs(family):
    """PyTorch's FLOP counter on real forward passes (one sequence, eager attention, whose matrix products
    it sees): the full model's products minus those of an export with nothing left are the body's, and so
    for a partly pruned export. DeBERTa's once-per-sequence share is rounded down per token, so up to T off."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(family), attn_implementation="eager").eval()
    layout = model_layout(model)
    T = 7
    input_ids = torch.randint(5, 99, (1, T), generator=torch.Generator().manual_seed(0))

    def macs(m) -> int:
        with FlopCounterMode(display=False) as counter:  # with gradients on: its module tracker needs them
            m(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        return counter.get_total_flops() // 2

    nothing = macs(export_pruned(model, HeadMask(torch.zeros(2, 4)), MlpMask(torch.zeros(2))))
    for heads, mlps in ((None, None), (HEADS, MLPS)):
        measured = macs(export_pruned(model, heads, mlps)) - nothing
        counted = body_macs_per_token(layout, T, heads, mlps) * T
        assert 0 <= measured - counted < T
