"""good / random / bad subnetworks and super-survivors: exact sizes, seeded draws (Prasanna et al. 2020, section 3; docs/algorithms.md)."""

from __future__ import annotations

import pytest
import torch

from bertlottery.compat import get_compat
from bertlottery.errors import UserError
from bertlottery.masks import HeadMask, Masks, MlpMask, WeightMask
from bertlottery.sampling import bad_like, bad_neurons_like, random_like, random_neurons_like, super_survivors


def structured(kept_heads: int, kept_mlps: int, seed: int = 0) -> Masks:
    full = HeadMask.full(12, 12)
    return Masks(
        heads=HeadMask.random_like(full, keep=kept_heads, seed=seed),
        mlps=MlpMask.random_like(MlpMask.full(12), keep=kept_mlps, seed=seed),
        params={"seed": seed},
    )


def weights(fraction_kept=0.6, seed=0) -> Masks:
    generator = torch.Generator().manual_seed(seed)
    return Masks(weights=WeightMask({
        "a": torch.rand(30, 20, generator=generator) < fraction_kept,
        "b": torch.rand(50, generator=generator) < fraction_kept / 2,
    }))


@pytest.mark.parametrize("kept_heads, kept_mlps", [(95, 11), (40, 6), (10, 2)])
def test_random_and_bad_have_exactly_the_good_size(kept_heads, kept_mlps):
    good = structured(kept_heads, kept_mlps)
    for sampled in (random_like(good, seed=1), bad_like(good, seed=1)):
        assert sampled.heads.n_kept == kept_heads and sampled.mlps.n_kept == kept_mlps


def test_bad_masks_are_drawn_from_the_pruned_elements_first():
    small = structured(40, 4)  # 104 heads pruned >= 40: bad lies entirely among them
    bad = bad_like(small, seed=3)
    assert not (bad.heads.keep & small.heads.keep).any()
    assert not (bad.mlps.keep & small.mlps.keep).any()
    large = structured(95, 11)  # only 49 heads / 1 MLP pruned: all of them, topped up from survivors
    bad = bad_like(large, seed=3)
    assert bool((~large.heads.keep <= bad.heads.keep).all()) and bad.heads.n_kept == 95
    assert bool((~large.mlps.keep <= bad.mlps.keep).all()) and bad.mlps.n_kept == 11


def test_draws_are_seeded_and_recorded():
    good = structured(60, 8)
    assert random_like(good, seed=5).heads == random_like(good, seed=5).heads
    assert random_like(good, seed=5).heads != random_like(good, seed=6).heads
    assert bad_like(good, seed=5).params["seed"] == 5 and bad_like(good, seed=5).params["subnetwork"] == "bad"


def test_weight_masks_global_total_and_local_per_tensor():
    good = weights()
    global_random = random_like(good, seed=0)
    assert global_random.weights.n_kept == good.weights.n_kept
    local_random = random_like(good, seed=0, per_tensor=True)
    local_bad = bad_like(good, seed=0, per_tensor=True)
    assert local_random.weights.per_tensor_kept() == good.weights.per_tensor_kept()
    assert local_bad.weights.per_tensor_kept() == good.weights.per_tensor_kept()
    bad = bad_like(good, seed=0)
    assert bad.weights.n_kept == good.weights.n_kept
    pruned = good.weights.n_pruned
    overlap = (bad.weights & good.weights).n_kept
    assert overlap == max(0, good.weights.n_kept - pruned)  # only the top-up comes from survivors


def test_compat_random_masks_are_bernoulli_and_match_only_in_expectation():
    good = structured(72, 6)
    sizes = [random_like(good, seed=s, compat=get_compat("prasanna2020")).heads.n_kept for s in range(30)]
    assert len(set(sizes)) > 1 and any(n != 72 for n in sizes)
    assert abs(sum(sizes) / len(sizes) - 72) < 6


def test_super_survivors_follow_the_spec():
    seeds = [structured(90, 9, seed=s) for s in range(5)]
    result = super_survivors(seeds, seed=0)
    stack = torch.stack([m.heads.keep for m in seeds])
    always = stack.all(0)
    never = (~stack).all(0)
    good, bad, random = result["good"].heads, result["bad"].heads, result["random"].heads
    assert torch.equal(good.keep, always)
    assert bad.n_kept == random.n_kept == good.n_kept
    if int(never.sum()) >= good.n_kept:
        assert bool((bad.keep <= never).all())
    else:
        assert bool((never <= bad.keep).all()) and not (bad.keep & always).any()
    neither = ~always & ~never
    assert bool((random.keep <= neither).all()) or bool((neither <= random.keep).all())
    assert not (random.keep & always).any()
    assert result["good"].params["n_masks"] == 5


def test_super_survivors_need_several_seeds_of_the_same_shape():
    with pytest.raises(UserError, match="at least two"):
        super_survivors([structured(90, 9)], seed=0)
    other = Masks(heads=HeadMask.full(6, 12), mlps=MlpMask.full(6))
    with pytest.raises(UserError, match="different shapes"):
        super_survivors([structured(90, 9), other], seed=0)


def test_super_survivors_top_up_from_the_survivors_when_nothing_else_is_left():
    # 9 of 12 MLPs survive in every seed (the paper's CoLA): bad and random must reuse survivors
    keep = torch.tensor([1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=torch.bool)
    seeds = []
    for s in range(3):
        other = keep.clone()
        other[[1, 10, 11][s]] = True
        seeds.append(Masks(mlps=MlpMask(other)))
    result = super_survivors(seeds, seed=0)
    assert result["good"].mlps.n_kept == 9
    for name in ("bad", "random"):
        mask = result[name].mlps
        assert mask.n_kept == 9
        assert bool((~keep <= mask.keep).all())  # everything outside the survivors is used first


def neuron_mask(seed=0, layers=3, units=50):
    generator = torch.Generator().manual_seed(seed)
    good = torch.rand(layers, units, generator=generator) < torch.tensor([[0.2], [0.7], [0.5]])
    scores = torch.rand(layers, units, generator=generator)
    return good, scores


@pytest.mark.parametrize("per_layer", [True, False])
def test_neuron_draws_have_the_good_masks_sizes_and_repeat_per_seed(per_layer):
    good, scores = neuron_mask()
    for draw in (lambda s: random_neurons_like(good, s, per_layer=per_layer),
                 lambda s: bad_neurons_like(good, scores, s, per_layer=per_layer)):
        drawn = draw(7)
        assert drawn.dtype == torch.bool and drawn.shape == good.shape
        assert int(drawn.sum()) == int(good.sum())
        if per_layer:
            assert drawn.sum(1).tolist() == good.sum(1).tolist()
        assert torch.equal(drawn, draw(7))
    assert not torch.equal(random_neurons_like(good, 7, per_layer=per_layer), random_neurons_like(good, 8, per_layer=per_layer))


def test_random_neurons_with_the_total_only_spread_over_layers():
    good, _ = neuron_mask()
    counts = torch.stack([random_neurons_like(good, s, per_layer=False).sum(1) for s in range(20)])
    assert not bool((counts == good.sum(1)).all(1).all())  # the per-layer counts are free to move


def test_bad_neurons_are_the_lowest_scored_units():
    good, scores = neuron_mask()
    bad = bad_neurons_like(good, scores, seed=0)
    for row, layer_scores, kept in zip(good, scores, bad):
        k = int(row.sum())
        assert set(torch.nonzero(kept).flatten().tolist()) == set(torch.argsort(layer_scores)[:k].tolist())
    overall = bad_neurons_like(good, scores, seed=0, per_layer=False)
    threshold = torch.sort(scores.flatten()).values[int(good.sum()) - 1]
    assert bool((scores[overall] <= threshold).all()) and bool((scores[~overall] > threshold).all())


def test_bad_neuron_ties_are_broken_by_the_seed():
    good = torch.tensor([[True, False, False, False, False, False]])
    equal = torch.zeros(1, 6)
    picks = {int(torch.nonzero(bad_neurons_like(good, equal, seed=s))[0, 1]) for s in range(12)}
    assert len(picks) > 1
    with pytest.raises(UserError, match="score the model"):
        bad_neurons_like(good, torch.zeros(2, 6), seed=0)
