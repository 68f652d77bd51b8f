"""The searches, driven by scripted score and evaluate functions."""

from __future__ import annotations

import pytest
import torch

from bertlottery.compat import Compat, get_compat
from bertlottery.errors import UserError
from bertlottery.importance import ImportanceScores
from bertlottery.masks import WeightMask
from bertlottery.pruning import magnitude_search, magnitude_step, structured_search, threshold_for


def fixed_scores(heads, mlps):
    """Head (l, h) scores l*10 + h, MLP l scores l: the prune order is fully known."""
    return ImportanceScores(
        heads=torch.arange(20, dtype=torch.float32).view(2, 10), mlps=torch.tensor([0.0, 1.0]),
        n_tokens=1, n_examples=1,
    )


def linear_metric(per_head=0.01, per_mlp=0.03):
    calls = []

    def evaluate(heads, mlps):
        calls.append((heads.n_pruned, mlps.n_pruned))
        return 1.0 - per_head * heads.n_pruned - per_mlp * mlps.n_pruned

    return evaluate, calls


def test_three_phases_in_order_each_ending_on_a_reverted_step():
    # 20 heads: phase 1 prunes 2 heads + 1 MLP a step, phase 2 one head, phase 3 one MLP.
    evaluate, calls = linear_metric(per_head=0.02, per_mlp=0.03)
    result = structured_search(fixed_scores, evaluate, num_layers=2, num_heads=10, full_metric=1.0)
    phases = [(s.phase, s.accepted) for s in result.trace]
    # phase 1: 2h+1m -> 0.93 ok; 4h+2m -> 0.86 < 0.9 reverted. phase 2: 3h+1m -> 0.91 ok; 4h+1m -> 0.89
    # reverted. phase 3: 3h+2m -> 0.88 reverted.
    assert phases == [("heads+mlps", True), ("heads+mlps", False), ("heads", True), ("heads", False),
                      ("mlps", False)]
    assert calls == [(2, 1), (4, 2), (3, 1), (4, 1), (3, 2)]
    assert result.heads.n_pruned == 3 and result.mlps.n_pruned == 1
    assert result.final_metric == pytest.approx(0.91)
    # the lowest scores went first: heads (0,0), (0,1), then (0,2); MLP 0
    assert result.heads.keep.view(-1)[:3].tolist() == [False, False, False]
    assert result.mlps.keep.tolist() == [False, True]
    assert result.trace[1].pruned_heads == [(0, 2), (0, 3)] and result.trace[1].pruned_mlps == [1]


def test_search_stops_exactly_at_the_threshold_and_reverts_the_failing_step():
    # each head costs 0.01: metric stays >= 0.9 through 10 heads (0.90 counts), the 11th fails
    evaluate, _ = linear_metric(per_head=0.01)
    result = structured_search(fixed_scores, evaluate, num_layers=2, num_heads=10, full_metric=1.0,
                               mode="heads", head_step_fraction=0.05)
    assert [s.accepted for s in result.trace] == [True] * 10 + [False]
    assert result.heads.n_pruned == 10 and result.final_metric == pytest.approx(0.90)
    assert result.mlps.n_pruned == 0


def test_scores_are_recomputed_after_every_accepted_step_only():
    evaluate, _ = linear_metric(per_head=0.02, per_mlp=0.03)
    seen = []

    def score(heads, mlps):
        seen.append((heads.n_pruned, mlps.n_pruned))
        return fixed_scores(heads, mlps)

    structured_search(score, evaluate, num_layers=2, num_heads=10, full_metric=1.0)
    assert seen == [(0, 0), (2, 1), (3, 1)]  # the start, then after each of the two accepted steps


def test_masked_elements_never_come_back_and_a_whole_layer_may_go():
    evaluate = lambda heads, mlps: 1.0  # noqa: E731  (never falls below the threshold)
    result = structured_search(fixed_scores, evaluate, num_layers=2, num_heads=10, full_metric=1.0, mode="heads")
    assert result.heads.n_kept == 0
    pruned = [h for s in result.trace for h in s.pruned_heads]
    assert len(pruned) == len(set(pruned)) == 20


def test_mlps_mode_prunes_only_mlps_and_modes_are_checked():
    evaluate, _ = linear_metric(per_mlp=0.05)
    result = structured_search(fixed_scores, evaluate, num_layers=2, num_heads=10, full_metric=1.0, mode="mlps")
    assert result.heads.n_pruned == 0 and result.mlps.n_pruned == 2
    with pytest.raises(UserError, match="Did you mean 'heads'"):
        structured_search(fixed_scores, evaluate, num_layers=2, num_heads=10, full_metric=1.0, mode="haeds")


def test_threshold_of_a_degenerate_full_model():
    assert threshold_for(0.8, 0.9) == pytest.approx(0.72)
    assert threshold_for(-0.1, 0.9) == pytest.approx(-0.11)


def tensors(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"a": torch.rand(40, 50, generator=generator), "b": torch.rand(300, generator=generator) * 3,
            "c": torch.rand(7, 13, generator=generator) * 0.5}


def full_mask(mags):
    return WeightMask({n: torch.ones_like(t, dtype=torch.bool) for n, t in mags.items()})


@pytest.mark.parametrize("scope", ["global", "local"])
def test_after_k_steps_the_pruned_fraction_is_one_minus_point_nine_to_the_k(scope):
    mags = tensors()
    mask = full_mask(mags)
    for k in range(1, 8):
        mask = magnitude_step(mags, mask, 0.1, scope)
        expected = mask.n_total * 0.9**k
        assert abs(mask.n_kept - expected) <= len(mags) * k, (k, mask.n_kept, expected)
        if scope == "local":
            for name, keep in mask.keep.items():
                assert abs(int(keep.sum()) - keep.numel() * 0.9**k) <= k  # one weight per tensor per step


def test_global_step_removes_the_smallest_magnitudes_over_all_tensors():
    mags = tensors()
    mask = magnitude_step(mags, full_mask(mags), 0.1, "global")
    flat = torch.cat([t.flatten() for t in mags.values()])
    kept = torch.cat([mags[n][mask.keep[n]] for n in mags])
    pruned = torch.cat([mags[n][~mask.keep[n]] for n in mags])
    assert len(pruned) == round(0.1 * flat.numel())
    assert pruned.max() <= kept.min()
    # tensor c has the smallest values, so a global threshold takes more from it than 10%
    assert (~mask.keep["c"]).float().mean() > 0.1


def test_magnitude_search_keeps_the_last_mask_that_met_the_threshold():
    mags = tensors()
    total = sum(t.numel() for t in mags.values())
    evaluate = lambda mask: 1.0 - 0.5 * (1 - mask.n_kept / total)  # noqa: E731
    result = magnitude_search(mags, evaluate, full_metric=1.0)
    # metric >= 0.9 while the pruned fraction <= 0.2: 1 - 0.9^2 = 0.19 passes, 0.271 fails
    assert [s.accepted for s in result.trace] == [True, True, False]
    assert result.weights.n_kept == result.trace[1].weights_kept
    assert result.final_metric == result.trace[1].metric


def test_compat_magnitude_search_saves_the_mask_before_the_last_step():
    mags = tensors()
    always = lambda mask: 1.0  # noqa: E731
    plain = magnitude_search(mags, always, full_metric=1.0, max_steps=12)
    quirky = magnitude_search(mags, always, full_metric=1.0, compat=get_compat("prasanna2020"))
    assert len(plain.trace) == 12 and len(quirky.trace) == 10
    total = plain.weights.n_total
    assert quirky.weights.n_kept == quirky.trace[8].weights_kept  # the 9-step mask
    assert 1 - quirky.weights.n_kept / total == pytest.approx(1 - 0.9**9, abs=2e-3)  # 61.3%
    # when the threshold is crossed, before-last is the right mask: the quirk changes nothing
    evaluate = lambda mask: 1.0 - 0.5 * (1 - mask.n_kept / total)  # noqa: E731
    a = magnitude_search(mags, evaluate, full_metric=1.0)
    b = magnitude_search(mags, evaluate, full_metric=1.0, compat=Compat(magnitude_mask_before_last_step=True))
    assert a.weights == b.weights


# ---- the threshold criterion -------------------------------------------------------------------------

def test_mrpcs_case_the_papers_threshold_is_below_the_majority_class_and_above_chance_is_not():
    from bertlottery.pruning import criterion_threshold

    paper = criterion_threshold(0.712, 0.9, "paper", chance=0.684)
    assert paper == pytest.approx(0.6408) and paper < 0.684  # a one-class predictor passes
    assert criterion_threshold(0.712, 0.9, "above_chance", chance=0.684) == pytest.approx(0.684 + 0.9 * 0.028)


@pytest.mark.parametrize("metric_kind, full, chance, paper, above_chance", [
    ("accuracy", 0.80, 0.509, 0.72, 0.509 + 0.9 * 0.291),
    ("f1", 0.853, 0.812, 0.7677, 0.812 + 0.9 * 0.041),
    ("mcc", 0.253, 0.0, 0.2277, 0.2277),
    ("pearson/spearman mean", 0.775, 0.0, 0.6975, 0.6975),
    ("mcc below 0 (paper: loses 10% of its size)", -0.03, 0.0, -0.033, None),
])
def test_criterion_arithmetic_for_each_metric_kind(metric_kind, full, chance, paper, above_chance):
    from bertlottery.pruning import NotAboveChance, criterion_threshold

    assert criterion_threshold(full, 0.9, "paper", chance=chance) == pytest.approx(paper)
    if above_chance is None:
        with pytest.raises(NotAboveChance, match="not above chance") as caught:
            criterion_threshold(full, 0.9, "above_chance", chance=chance)
        assert (caught.value.full_metric, caught.value.chance) == (full, chance)
    else:
        assert criterion_threshold(full, 0.9, "above_chance", chance=chance) == pytest.approx(above_chance)


def test_above_chance_refuses_a_full_model_at_chance_and_names_unknown_criteria():
    from bertlottery.pruning import NotAboveChance, criterion_threshold

    with pytest.raises(NotAboveChance):
        criterion_threshold(0.527, 0.9, "above_chance", chance=0.527)  # exactly chance: nothing learnt
    with pytest.raises(NotAboveChance):
        criterion_threshold(0.472, 0.9, "above_chance", chance=0.527)
    with pytest.raises(UserError, match="Unknown pruning criterion 'abovechance'. Did you mean 'above_chance'?"):
        criterion_threshold(0.8, 0.9, "abovechance")


def test_a_search_given_an_absolute_min_metric_stops_there_not_at_the_fraction():
    # each head costs 0.01; min_metric 0.95 stops after 5 heads where the paper's 0.9 went on to 10
    evaluate, _ = linear_metric(per_head=0.01)
    result = structured_search(fixed_scores, evaluate, num_layers=2, num_heads=10, full_metric=1.0,
                               mode="heads", head_step_fraction=0.05, min_metric=0.95)
    assert result.heads.n_pruned == 5 and result.min_metric == 0.95
    mags = tensors()
    total = sum(t.numel() for t in mags.values())
    by_fraction = lambda mask: 1.0 - 0.5 * (1 - mask.n_kept / total)  # noqa: E731
    # 0.95 is met only by the first step (pruned 0.1 -> 0.95): the second (0.19 -> 0.905) is reverted
    assert [s.accepted for s in magnitude_search(mags, by_fraction, full_metric=1.0, min_metric=0.95).trace] == [
        True, False]
