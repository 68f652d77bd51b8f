"""The training loop's shared pieces: parameter groups, one optimiser step, and divergence."""

from __future__ import annotations

import pytest
import torch

from bertlottery.training import TrainingDiverged, TrainSettings, decay_groups, finetune, optimizer_step
from tiny import tiny_batch, tiny_model


def _step_parts(model, lr=1.0):
    from accelerate import Accelerator

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return Accelerator(cpu=True), optimizer, scheduler


def test_decay_groups_exempt_biases_and_norms_and_respect_the_trainable_filter():
    model = tiny_model()
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, exempt = decay_groups(model, 0.01)
    assert decayed["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    assert all(not names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in decayed["params"])
    assert all(names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in exempt["params"])
    assert len(decayed["params"]) + len(exempt["params"]) == len(names)
    only_classifier = decay_groups(model, 0.01, lambda n: n.startswith("classifier"))
    assert [len(g["params"]) for g in only_classifier] == [1, 1]


def test_optimizer_step_updates_clips_and_zeroes_gradients():
    model = tiny_model().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    accelerator, optimizer, scheduler = _step_parts(model)
    loss = model(**tiny_batch()).loss
    value = optimizer_step(accelerator, model, optimizer, scheduler, loss, 1e-3, where="step 1")
    assert value == pytest.approx(loss.item())
    assert all(p.grad is None for p in model.parameters())
    change = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    # SGD at lr 1 moves the weights by the clipped gradient: norm at most 1e-3, and not zero.
    assert 0 < change.norm() <= 1e-3 * 1.0001


def test_optimizer_step_refuses_a_non_finite_loss_before_touching_the_weights():
    model = tiny_model().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    accelerator, optimizer, scheduler = _step_parts(model)
    loss = model(**tiny_batch()).loss * float("nan")
    with pytest.raises(TrainingDiverged, match="at epoch 2, step 5"):
        optimizer_step(accelerator, model, optimizer, scheduler, loss, 1.0, where="epoch 2, step 5")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_finetune_stops_with_training_diverged_when_the_loss_is_nan():
    model = tiny_model()
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    batches = [tiny_batch(seed=s) for s in range(3)]
    with pytest.raises(TrainingDiverged, match="epoch 1, step 1"):
        finetune(model, lambda epoch: batches, TrainSettings(epochs=1, learning_rate=1e-3), progress=False)
