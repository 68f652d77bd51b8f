"""Gordon et al.'s schedule and masks: the cubic schedule, local/global magnitude masks, random masks."""

from __future__ import annotations

import pytest
import torch

from bertlottery.errors import UserError
from bertlottery.gordon.pruning import magnitude_mask, prune_count, pruned_parameters, random_mask
from bertlottery.gordon.schedule import CubicSchedule

from tiny import tiny_model


def zhu_gupta(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """The formula as Zhu & Gupta (2017) write it, for t in {t0, t0 + dt, ..., t0 + n dt}."""
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3


@pytest.mark.parametrize("target,n,dt", [(0.9, 10, 10), (0.3, 7, 3), (0.5, 1, 5), (0.75, 40, 1)])
def test_schedule_is_the_cubic_at_every_update_holds_between_and_reaches_the_target_exactly(target, n, dt):
    schedule = CubicSchedule(target=target, begin=0, end=n * dt, every=dt)
    assert schedule.update_steps() == [k * dt for k in range(n + 1)]
    for t in range(3 * n * dt + 5):
        last = min(t // dt, n) * dt
        expected = zhu_gupta(last, 0.0, target, 0, n, dt)
        assert schedule.sparsity(t) == pytest.approx(expected, abs=1e-12), t
        assert schedule.is_update(t) == (t <= n * dt and t % dt == 0)
    assert schedule.sparsity(0) == 0.0
    assert schedule.sparsity(n * dt) == target  # exactly, not approximately
    assert schedule.sparsity(10 ** 6) == target
    values = [schedule.sparsity(t) for t in range(n * dt + 1)]
    assert values == sorted(values)


def test_schedule_with_an_end_off_the_grid_and_one_shot():
    schedule = CubicSchedule(target=0.6, begin=0, end=25, every=10)
    assert schedule.update_steps() == [0, 10, 20, 25]
    assert schedule.sparsity(24) == pytest.approx(0.6 + (0 - 0.6) * (1 - 20 / 25) ** 3)
    assert schedule.sparsity(25) == 0.6
    one_shot = CubicSchedule(target=0.4, begin=0, end=0, every=10)
    assert one_shot.update_steps() == [0]
    assert [one_shot.sparsity(t) for t in (0, 1, 100)] == [0.4, 0.4, 0.4]
    with pytest.raises(ValueError):
        CubicSchedule(target=0.5, end=10, every=0)


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # different scales, so a global threshold spreads the pruning unevenly
    return {"a": torch.randn(8, 5, generator=g) * 0.1, "b": torch.randn(6, 6, generator=g), "c": torch.randn(7, generator=g) * 3}


def test_local_masks_give_every_matrix_the_same_sparsity_and_prune_its_smallest_weights():
    w = weights()
    for sparsity in (0.0, 0.3, 0.5, 0.9, 1.0):
        mask = magnitude_mask(w, sparsity, scope="local")
        for name, tensor in w.items():
            keep = mask.keep[name]
            assert keep.shape == tensor.shape
            assert int((~keep).sum()) == prune_count(tensor.numel(), sparsity)
            if 0 < sparsity < 1:
                assert tensor.abs()[~keep].max() <= tensor.abs()[keep].min()


def test_global_masks_prune_the_same_total_with_one_threshold_spread_unevenly():
    w = weights()
    total = sum(t.numel() for t in w.values())
    mask = magnitude_mask(w, 0.5, scope="global")
    assert mask.n_pruned == prune_count(total, 0.5)
    pruned = torch.cat([w[n].abs()[~mask.keep[n]] for n in w])
    kept = torch.cat([w[n].abs()[mask.keep[n]] for n in w])
    assert pruned.max() <= kept.min()
    per_tensor = {n: float((~k).float().mean()) for n, k in mask.keep.items()}
    assert per_tensor["a"] > 0.9 and per_tensor["c"] < 0.3  # small-scale matrix pruned far more


def test_masks_along_a_rising_schedule_are_nested_and_ties_are_broken_exactly():
    w = weights()
    previous = None
    for sparsity in (0.1, 0.35, 0.6, 0.8):
        mask = magnitude_mask(w, sparsity, scope="local", previous=previous)
        if previous is not None:
            assert all(bool((~previous.keep[n] <= ~mask.keep[n]).all()) for n in w)  # pruned stays pruned
        previous = mask
    ties = {"t": torch.zeros(10)}
    assert int((~magnitude_mask(ties, 0.3).keep["t"]).sum()) == 3
    with pytest.raises(UserError, match="scope"):
        magnitude_mask(w, 0.5, scope="globl")


def test_random_masks_keep_the_count_per_matrix_are_nested_seeded_and_not_magnitude():
    w = weights()
    shapes = {n: t.shape for n, t in w.items()}
    previous = None
    for sparsity in (0.2, 0.5, 0.7):
        mask = random_mask(shapes, sparsity, torch.Generator().manual_seed(3), previous=previous)
        for name, tensor in w.items():
            assert int((~mask.keep[name]).sum()) == prune_count(tensor.numel(), sparsity)
            if previous is not None:
                assert bool((~previous.keep[name] <= ~mask.keep[name]).all())
        previous = mask
    again = random_mask(shapes, 0.5, torch.Generator().manual_seed(3))
    assert again == random_mask(shapes, 0.5, torch.Generator().manual_seed(3))
    assert again != random_mask(shapes, 0.5, torch.Generator().manual_seed(4))
    assert again != magnitude_mask(w, 0.5)


def test_the_pruned_tensors_are_the_six_matrices_per_layer_the_pooler_and_optionally_the_embeddings():
    model = tiny_model("bert")
    names = list(pruned_parameters(model, "gordon"))
    assert len(names) == 2 * 6 + 1 and names[-1] == "bert.pooler.dense.weight"
    assert all(n.endswith(".weight") and "LayerNorm" not in n for n in names)
    assert len(pruned_parameters(model, "weights")) == 12
    with_embeddings = pruned_parameters(model, "gordon", embeddings=True)
    assert list(with_embeddings)[-1] == "bert.embeddings.word_embeddings.weight"
    with pytest.raises(UserError, match="tensor set"):
        pruned_parameters(model, "gordn")
