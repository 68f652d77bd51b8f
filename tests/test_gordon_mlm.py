"""Continued MLM pre-training: text blocks, a new tied MLM head, the masked-position loss, GMP training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertlottery.gordon.corpus import clean_wikitext, make_blocks, masked_dev_set, read_texts
from bertlottery.gordon.mlm import (
    Pruning,
    PretrainSettings,
    dev_loss,
    load_mlm,
    mlm_loss,
    pretrain,
    save_mlm,
    train_head,
)
from bertlottery.gordon.pruning import prune_count, pruned_parameters
from bertlottery.gordon.schedule import CubicSchedule
from bertlottery.models import load_model

WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "wikitext-2" / "valid.txt"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """A slice of real WikiText-2 (fails, never skips, without the shared data)."""
    if not WIKI.is_file():
        pytest.fail(f"WikiText-2 not found at {WIKI}")
    path = tmp_path_factory.mktemp("text") / "wiki.txt"
    path.write_text("\n".join(WIKI.read_text(encoding="utf-8").splitlines()[:120]), encoding="utf-8")
    return path


def test_blocks_are_the_token_stream_framed_by_cls_and_sep(tiny_model_dir, text_file):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = read_texts([text_file])
    assert texts and all(t == t.strip() and t for t in texts)
    blocks = make_blocks(texts, tokenizer, 16)
    assert blocks.dtype == torch.int32 and blocks.shape[1] == 16
    assert bool((blocks[:, 0] == tokenizer.cls_token_id).all()) and bool((blocks[:, -1] == tokenizer.sep_token_id).all())
    stream = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    assert blocks[:, 1:-1].flatten().tolist() == stream[: blocks.shape[0] * 14]
    assert len(make_blocks(texts, tokenizer, 16, max_blocks=3)) == 3
    assert clean_wikitext("a @-@ b @,@ c <unk> d @.@ e") == "a-b,c [UNK] d.e"


def test_a_bare_encoder_gets_a_seeded_head_tied_to_its_embeddings_and_keeps_its_pooler(tiny_model_dir, tmp_path):
    model, tokenizer, info = load_mlm(tiny_model_dir, seed=1)
    assert info["new_head"] and info["pooler"]
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    other, _, _ = load_mlm(tiny_model_dir, seed=1)
    third, _, _ = load_mlm(tiny_model_dir, seed=2)
    head = model.cls.predictions.transform.dense.weight
    assert torch.equal(head, other.cls.predictions.transform.dense.weight)
    assert not torch.equal(head, third.cls.predictions.transform.dense.weight)
    assert float(model.cls.predictions.bias.detach().abs().sum()) == 0.0
    encoder = load_model(str(tiny_model_dir), 2)
    assert torch.equal(model.bert.pooler.dense.weight, encoder.bert.pooler.dense.weight)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, encoder.bert.encoder.layer[1].output.dense.weight)

    with torch.no_grad():
        model.cls.predictions.bias.add_(0.5)
        model.bert.pooler.dense.weight.mul_(2)
    save_mlm(model, tokenizer, tmp_path / "saved")
    back, _, info = load_mlm(tmp_path / "saved", seed=9)
    assert not info["new_head"] and info["pooler"]
    for (name, a), b in zip(model.named_parameters(), back.parameters()):
        assert torch.equal(a, b), name
    classifier = load_model(str(tmp_path / "saved"), 2)  # the downstream model reads the pooler too
    assert torch.equal(classifier.bert.pooler.dense.weight, model.bert.pooler.dense.weight)


def test_the_masked_position_loss_is_the_models_own_loss_and_the_dev_set_is_fixed(tiny_model_dir, text_file):
    model, tokenizer, _ = load_mlm(tiny_model_dir, seed=0)
    model.eval()
    blocks = make_blocks(read_texts([text_file]), tokenizer, 24)
    dev = masked_dev_set(blocks[:6], tokenizer, 0.15, seed=3)
    again = masked_dev_set(blocks[:6], tokenizer, 0.15, seed=3)
    assert torch.equal(dev.input_ids, again.input_ids) and torch.equal(dev.labels, again.labels)
    assert 0 < dev.n_masked < dev.labels.numel() * 0.4
    with torch.no_grad():
        ours = mlm_loss(model, dev.input_ids, dev.labels)
        theirs = model(input_ids=dev.input_ids, labels=dev.labels).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    assert dev_loss(model, dev, batch_size=4) == pytest.approx(float(theirs), rel=1e-5)


def _setup(tiny_model_dir, text_file):
    model, tokenizer, _ = load_mlm(tiny_model_dir, seed=0)
    blocks = make_blocks(read_texts([text_file]), tokenizer, 24)
    return model, tokenizer, blocks[:24], masked_dev_set(blocks[24:30], tokenizer, seed=0)


def test_gradual_magnitude_pruning_follows_the_schedule_and_keeps_pruned_weights_at_zero(tiny_model_dir, text_file):
    model, tokenizer, blocks, dev = _setup(tiny_model_dir, text_file)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = PretrainSettings(steps=7, batch_size=4, learning_rate=1e-3, seed=0, log_every=2)
    pruning = Pruning("gmp", target=0.6, end=4, every=2, embeddings=True)
    history, mask = pretrain(model, tokenizer, blocks, dev, settings, pruning=pruning, progress=False)
    schedule = CubicSchedule(target=0.6, end=4, every=2)
    assert [u["step"] for u in history.sparsity] == [0, 2, 4]
    assert [u["target"] for u in history.sparsity] == [schedule.sparsity(t) for t in (0, 2, 4)]
    assert history.sparsity[-1]["target"] == 0.6
    params = pruned_parameters(model, "gordon", embeddings=True)
    assert set(mask.keep) == set(params) and "bert.pooler.dense.weight" in mask.keep
    for name, p in params.items():
        keep = mask.keep[name]
        assert int((~keep).sum()) == prune_count(p.numel(), 0.6), name  # each matrix exactly at the target
        assert float(p.detach()[~keep].abs().max()) == 0.0, name  # pruned weights exactly zero
    moved = params["bert.encoder.layer.0.intermediate.dense.weight"]
    keep = mask.keep["bert.encoder.layer.0.intermediate.dense.weight"]
    assert not torch.equal(moved.detach()[keep], start["bert.encoder.layer.0.intermediate.dense.weight"][keep])
    assert history.dev and history.dev[-1]["step"] == 7 and history.steps == 7
    assert len(history.losses) == 4  # the mean loss of steps 0-1, 2-3, 4-5, and of the last, shorter window


def test_global_one_shot_and_random_pruning(tiny_model_dir, text_file):
    model, tokenizer, blocks, dev = _setup(tiny_model_dir, text_file)
    settings = PretrainSettings(steps=2, batch_size=4, seed=0)
    history, mask = pretrain(model, tokenizer, blocks, None, settings,
                             pruning=Pruning("oneshot", target=0.4, end=100, scope="global"), progress=False)
    assert [u["step"] for u in history.sparsity] == [0]  # one-shot: the target at once
    assert mask.n_pruned == prune_count(mask.n_total, 0.4)
    per_tensor = [float((~k).float().mean()) for k in mask.keep.values()]
    assert max(per_tensor) - min(per_tensor) > 0.01  # one threshold for all: uneven per matrix
    model, tokenizer, blocks, dev = _setup(tiny_model_dir, text_file)
    _, mask = pretrain(model, tokenizer, blocks, None, settings,
                       pruning=Pruning("random", target=0.4, end=1, every=1, seed=5), progress=False)
    for name, keep in mask.keep.items():
        assert int((~keep).sum()) == prune_count(keep.numel(), 0.4), name


def test_training_the_head_alone_leaves_the_encoder_untouched(tiny_model_dir, text_file):
    model, tokenizer, blocks, dev = _setup(tiny_model_dir, text_file)
    encoder = {n: p.detach().clone() for n, p in model.bert.named_parameters()}
    head = model.cls.predictions.transform.dense.weight.detach().clone()
    before = dev_loss(model, dev)
    history = train_head(model, tokenizer, blocks, PretrainSettings(steps=4, batch_size=4, learning_rate=1e-2, seed=0),
                         progress=False)
    assert all(torch.equal(p, encoder[n]) for n, p in model.bert.named_parameters())
    assert not torch.equal(head, model.cls.predictions.transform.dense.weight)
    assert all(p.requires_grad for p in model.parameters()) and model.training
    assert len(history.losses) == 1 and dev_loss(model, dev) < before
