"""The last layer computed only at the classifier's position (`bertlottery.lastlayer`): the same logits,
gate gradients, Fisher gradients and training as the full layer, on a tiny model of every family, while
the last layer's output projection and MLP really see one position; never for a head that reads more."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bertlottery.errors import UserError
from bertlottery.evaluation import predict
from bertlottery.fisher import fisher_scores
from bertlottery.importance import structured_importance
from bertlottery.lastlayer import (classifier_reads_first_position, first_position_only, last_layer_of,
                                  reads_first_position, use_last_layer)
from bertlottery.masks import HeadMask, MlpMask
from bertlottery.models import adapter_for
from bertlottery.physical import export_for
from bertlottery.masks import Masks
from bertlottery.settings import TrainSettings
from bertlottery.training import finetune

from tiny import tiny_batch, tiny_config, tiny_model

FAMILIES = ["bert", "roberta", "electra", "distilbert", "modernbert", "deberta-v2", "deberta-v3", "mpnet"]


def batches(n: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    out = []
    for s in range(n):
        batch = tiny_batch(batch=4, length=6 + 2 * s, seed=seed + s)
        out.append({**batch, "index": torch.arange(4 * s, 4 * s + 4)})
    return out


def seen_by_last_layer(model: nn.Module) -> tuple[list, callable]:
    """Shapes of what the last layer's output projection and MLP input projection receive."""
    parts = adapter_for(model).layers(model)[-1]
    shapes: list = []
    handles = [m.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
               for m in (parts.attn_out, parts.mlp_in)]
    return shapes, lambda: [h.remove() for h in handles]




@pytest.mark.parametrize("family", FAMILIES)
def test_the_classifier_gets_the_same_logits_from_one_position(family):
    model = tiny_model(family)
    data = batches()
    full, _ = predict(use_last_layer(model, "full"), data)
    shapes, remove = seen_by_last_layer(model)
    cut, _ = predict(use_last_layer(model, "cls"), data)
    remove()
    assert torch.allclose(torch.from_numpy(cut), torch.from_numpy(full), atol=1e-5, rtol=1e-5)
    assert shapes and all(shape[1] == 1 for shape in shapes)  # one position, in every batch
    # and the hooks are gone after the pass: the model computes every position again
    shapes, remove = seen_by_last_layer(model)
    with torch.no_grad():
        model(**{k: v for k, v in data[0].items() if k not in ("labels", "index")})
    remove()
    assert all(shape[1] == data[0]["input_ids"].shape[1] for shape in shapes)


@pytest.mark.parametrize("family", FAMILIES)
def test_gate_gradients_and_fisher_gradients_are_those_of_the_full_layer(family):
    """No loss reaches the last layer's other positions: importance scores and the per-example Fisher
    gradients of every gate, the last layer's included, are the full computation's."""
    model = tiny_model(family)
    data = batches()
    heads = HeadMask(torch.tensor([[True, False, True, True], [True, True, False, True]]))
    mlps = MlpMask(torch.tensor([True, True]))
    results = {}
    for how in ("full", "cls"):
        use_last_layer(model, how)
        scores = structured_importance(model, data, heads=heads, mlps=mlps)
        fisher = fisher_scores(model, data)
        results[how] = (scores.heads, scores.mlps, fisher.head_grads, fisher.neuron_grads)
    for ours, theirs in zip(results["cls"], results["full"]):
        assert theirs.abs().max() > 0
        torch.testing.assert_close(ours, theirs, atol=1e-6 * float(theirs.abs().max()), rtol=1e-5)
    assert results["cls"][2][:, -1].abs().max() > 0  # the last layer's heads have gradients to compare


def with_dropout(model: nn.Module, p: float) -> nn.Module:
    """``model`` with every dropout at rate ``p`` (0 turns dropout off)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_training_with_the_last_layer_at_one_position_is_the_same_training(family):
    """The same training, dropout included: the cut layer's dropouts draw the full layer's masks, so the
    weights after training agree to rounding (the last layer's too); and the model keeps the setting its
    training ran with. Without the full-shape draws the random streams part at the first step."""
    start = with_dropout(tiny_model(family, seed=1), 0.1)
    data = [{k: v for k, v in b.items() if k != "index"} for b in batches(4, seed=7)]
    trained = {}
    for how in ("full", "cls", "no dropout"):
        model = copy.deepcopy(start) if how != "no dropout" else with_dropout(copy.deepcopy(start), 0.0)
        settings = TrainSettings(learning_rate=1e-3, epochs=2, seed=3, precision="fp32",
                                 last_layer="cls" if how == "no dropout" else how, max_grad_norm=0.05)
        finetune(model, lambda epoch: data, settings, progress=False)
        trained[how] = dict(model.named_parameters())
        if how != "no dropout":
            assert last_layer_of(model) == how
            assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.1}  # p given back
    moved = dropped = 0.0
    for name, param in trained["full"].items():
        torch.testing.assert_close(trained["cls"][name], param, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")
        moved = max(moved, (param - dict(start.named_parameters())[name]).abs().max().item())
        dropped = max(dropped, (param - trained["no dropout"][name]).abs().max().item())
    assert moved > 1e-3, "training did not move the weights"
    assert dropped > 1e-4, "dropout did not change the training: the comparison says nothing of its draws"


def test_a_forward_that_raises_gives_the_dropouts_their_rate_back():
    model = with_dropout(tiny_model("bert"), 0.1).train()
    use_last_layer(model, "cls")
    dropout = adapter_for(model).blocks(model)[-1].attention.output.dropout
    # a hook that raises after the dropout's forward (at p=0) and before the cut's own hook gives p back
    fail = dropout.register_forward_hook(lambda module, args, output: (_ for _ in ()).throw(RuntimeError("boom")))
    batch = {k: v for k, v in batches(1)[0].items() if k not in ("labels", "index")}
    with pytest.raises(RuntimeError, match="boom"):
        with first_position_only(model):
            model(**batch)
    fail.remove()
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.1}


def test_a_physically_smaller_copy_keeps_the_setting_and_an_emptied_last_layer_still_works():
    model = tiny_model("bert")
    use_last_layer(model, "cls")
    masks = Masks(heads=HeadMask(torch.tensor([[True, True, False, True], [False, False, False, False]])),
                  mlps=MlpMask(torch.tensor([True, False])))  # the last layer: no heads, no MLP
    small = export_for(model, masks)
    assert last_layer_of(small) == "cls"
    data = batches()
    cut, _ = predict(small, data)
    full, _ = predict(use_last_layer(small, "full"), data)
    assert torch.allclose(torch.from_numpy(cut), torch.from_numpy(full), atol=1e-5)


def test_heads_that_read_more_than_the_first_position_are_never_cut():
    from transformers import AutoModelForMaskedLM, ModernBertForSequenceClassification

    config = tiny_config("modernbert")
    config.classifier_pooling = "mean"
    torch.manual_seed(0)
    mean_pooled = ModernBertForSequenceClassification(config).eval()
    masked_lm = AutoModelForMaskedLM.from_config(tiny_config("bert")).eval()
    for model in (mean_pooled, masked_lm):
        assert not reads_first_position(model)
        use_last_layer(model, "cls")
        with first_position_only(model) as cutting:
            assert cutting is False
    assert reads_first_position(tiny_model("modernbert"))  # cls pooling, the default


@pytest.mark.parametrize("family", FAMILIES)
def test_a_config_says_what_its_classifier_reads_as_the_model_does(family):
    """The plan decides from a ``config.json`` alone (no weights); it must agree with the built model."""
    from transformers import DebertaV2ForSequenceClassification, ModernBertForSequenceClassification

    config = tiny_config(family)
    assert classifier_reads_first_position(config.to_dict()) == reads_first_position(tiny_model(family)) is True
    if family == "modernbert":
        config.classifier_pooling = "mean"
        assert classifier_reads_first_position(config.to_dict()) is False
        assert reads_first_position(ModernBertForSequenceClassification(config)) is False
    if family.startswith("deberta"):
        config.num_hidden_layers, config.conv_kernel_size = 1, 3
        assert classifier_reads_first_position(config.to_dict()) is False
        assert reads_first_position(DebertaV2ForSequenceClassification(config)) is False
    assert classifier_reads_first_position({"model_type": "gpt2"}) is False  # no first-position classifier


def test_the_setting_defaults_and_reads_back():
    assert TrainSettings().last_layer == "cls"
    # a run recorded before the setting computed every position, and is read back as such
    assert TrainSettings.from_dict({"precision": "fp32"}).last_layer == "full"
    assert "last_layer" not in TrainSettings(last_layer="full").stage_dict()  # the old behaviour: old ids
    assert TrainSettings().stage_dict()["last_layer"] == "cls"
    assert last_layer_of(tiny_model("bert")) == "full"  # a model nobody set computes every position
    assert TrainSettings(last_layer="all").problems() == ["last_layer: unknown 'all'. Known: cls, full"]
    with pytest.raises(UserError, match="Unknown last_layer 'cl'. Did you mean 'cls'"):
        use_last_layer(tiny_model("bert"), "cl")
