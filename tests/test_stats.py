"""Statistics of masks over seeds and tasks: hand-computed answers, statsmodels directly, degenerate cases."""

from __future__ import annotations

import doctest
import json
import math
from itertools import combinations as _combinations
from itertools import product as _product

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import cochrans_q as sm_cochrans_q
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from bertlottery import stats
from bertlottery.errors import UserError
from bertlottery.importance import ImportanceScores, prunable_parameters
from bertlottery.masking import structured_weight_mask
from bertlottery.masks import HeadMask, MlpMask, WeightMask, body_fraction_kept
from bertlottery.models import adapter_for, model_layout
from bertlottery.pruning import magnitude_search, magnitude_step, structured_search

from tiny import tiny_model

# 3 seeds x 4 elements: element 0 kept by all, 1 and 2 by two seeds, 3 by none
SMALL = np.array([[1, 1, 0, 0],
                  [1, 0, 1, 0],
                  [1, 1, 1, 0]], dtype=bool)


def _statsmodels_kappa(keep: np.ndarray) -> float:
    table, _ = aggregate_raters(keep.reshape(len(keep), -1).T.astype(int), n_cat=2)  # subjects x categories
    return float(sm_fleiss_kappa(table))


def test_the_module_examples_run():
    assert doctest.testmod(stats).failed == 0


def test_survival_matrix_accepts_zero_one_and_refuses_the_rest():
    assert stats.survival_matrix([[0.0, 1.0], [1.0, 1.0]]).dtype == bool
    with pytest.raises(ValueError, match="0/1"):
        stats.survival_matrix([[0.0, 0.5]])
    with pytest.raises(ValueError, match="seeds x elements"):
        stats.survival_matrix([1, 0, 1])


def test_survival_mean_and_sample_std_per_element():
    keep = np.array([[[1, 0], [1, 1]], [[1, 0], [0, 1]], [[1, 1], [0, 1]]])  # 3 seeds x 2 layers x 2 heads
    mean, std = stats.survival_mean_std(keep)
    assert mean.shape == (2, 2)
    np.testing.assert_allclose(mean, [[1, 1 / 3], [1 / 3, 1]])
    # ddof=1: values (1, 0, 0) have mean 1/3 and sample variance ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3
    np.testing.assert_allclose(std, [[0, math.sqrt(1 / 3)], [math.sqrt(1 / 3), 0]])
    np.testing.assert_allclose(std, np.std(keep, axis=0, ddof=1))


def test_survival_std_of_a_single_seed_is_nan_not_a_warning():
    with np.errstate(all="raise"):
        mean, std = stats.survival_mean_std(np.ones((1, 3)))
    assert mean.tolist() == [1, 1, 1] and np.isnan(std).all()


def test_fleiss_kappa_hand_computed():
    # P_i = [1, 1/3, 1/3, 1] -> P = 2/3; p_kept = 7/12 -> P_e = (49 + 25) / 144; kappa = (96 - 74) / (144 - 74)
    assert stats.fleiss_kappa(SMALL).value == pytest.approx(22 / 70, abs=1e-12)
    assert stats.fleiss_kappa(SMALL).reason is None


def test_fleiss_kappa_agrees_with_statsmodels_from_raw_ratings():
    rng = np.random.default_rng(0)
    for seeds, shape in ((5, (12, 12)), (3, (6,)), (2, (4, 8))):
        keep = rng.random((seeds, *shape)) < rng.uniform(0.2, 0.8, size=shape)
        assert stats.fleiss_kappa(keep).value == pytest.approx(_statsmodels_kappa(keep), abs=1e-12)


def test_fleiss_kappa_extremes():
    assert stats.fleiss_kappa(np.array([[1, 0, 1, 0]] * 4)).value == pytest.approx(1.0)
    # two seeds that disagree on everything, half kept: P = 0, P_e = 1/2 -> kappa = -1
    assert stats.fleiss_kappa(np.array([[1, 0, 1, 0], [0, 1, 0, 1]])).value == pytest.approx(-1.0)


@pytest.mark.parametrize("keep, reason", [
    (np.ones((5, 144), bool), "kept by every seed"),
    (np.zeros((5, 12), bool), "pruned by every seed"),
    (np.array([[1, 0, 1]], bool), "at least two seeds"),
])
def test_fleiss_kappa_degenerate_cases_are_nan_with_a_reason(keep, reason):
    kappa = stats.fleiss_kappa(keep)
    assert math.isnan(kappa.value) and reason in kappa.reason


def test_cochran_q_hand_computed():
    keep = np.array([[1, 1, 0, 1],
                     [1, 0, 0, 0],
                     [1, 1, 1, 1]])
    # seeds' totals C = (3, 1, 4), N = 8, elements' totals R = (3, 2, 1, 2):
    # Q = (k-1)(k sum C^2 - N^2) / (k N - sum R^2) = 2 (3*26 - 64) / (24 - 18) = 14/3; chi2(2) sf = exp(-Q/2)
    q = stats.cochran_q(keep)
    assert q.statistic == pytest.approx(14 / 3) and q.df == 2
    assert q.pvalue == pytest.approx(math.exp(-7 / 3))
    assert q.pvalue == pytest.approx(scipy_stats.chi2.sf(14 / 3, 2))


def test_cochran_q_matches_statsmodels_and_mcnemar_for_two_seeds():
    rng = np.random.default_rng(1)
    keep = rng.random((5, 144)) < 0.6
    q = stats.cochran_q(keep)
    expected = sm_cochrans_q(keep.T.astype(int))
    assert (q.statistic, q.pvalue, q.df) == pytest.approx((expected.statistic, expected.pvalue, expected.df))
    pair = keep[:2]
    table = [[int((pair[0] & pair[1]).sum()), int((pair[0] & ~pair[1]).sum())],
             [int((~pair[0] & pair[1]).sum()), int((~pair[0] & ~pair[1]).sum())]]
    reference = mcnemar(table, exact=False, correction=False)
    assert stats.cochran_q(pair).statistic == pytest.approx(reference.statistic)
    assert stats.cochran_q(pair).pvalue == pytest.approx(reference.pvalue)


def test_cochran_q_counts_kept_as_success_even_when_one_seed_keeps_nothing():
    # statsmodels takes its data's largest value as "success": a matrix with 0 and 1 must count the 1s
    keep = np.array([[0, 0, 0, 0], [1, 1, 1, 0]])
    assert stats.cochran_q(keep).statistic == pytest.approx(3.0)  # McNemar: (b - c)^2 / (b + c) = 9 / 3


@pytest.mark.parametrize("keep, reason", [
    (np.array([[1, 0, 1, 1]] * 3), "identical"),
    (np.ones((4, 6)), "identical"),
    (np.zeros((2, 6)), "identical"),
    (np.array([[1, 0, 1]]), "at least two seeds"),
])
def test_cochran_q_degenerate_cases_are_nan_with_a_reason(keep, reason):
    q = stats.cochran_q(keep)
    assert math.isnan(q.statistic) and math.isnan(q.pvalue) and reason in q.reason


def test_pairwise_cochran_q_counts_pairs_that_differ():
    base = np.arange(60) < 30          # elements 0..29
    far = ~base                        # elements 30..59: disagrees with base everywhere, same proportion
    other = np.arange(60) >= 25        # elements 25..59
    keep = np.stack([base, base, far, other])
    pairwise = stats.pairwise_cochran_q(keep, alpha=0.05)
    assert pairwise.n_pairs == 6
    assert [(i, j) for i, j, _ in pairwise.pairs] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    by_pair = {(i, j): q for i, j, q in pairwise.pairs}
    assert math.isnan(by_pair[0, 1].statistic) and pairwise.n_identical == 1  # identical masks
    # McNemar Q = (b - c)^2 / (b + c), b and c the two kinds of disagreement
    assert by_pair[0, 2].statistic == pytest.approx(0.0)                # b = c = 30: same proportions
    assert by_pair[0, 3].statistic == pytest.approx(5 ** 2 / 55)        # b = 25, c = 30
    assert by_pair[2, 3].statistic == pytest.approx(5.0)                # b = 0, c = 5
    assert by_pair[2, 3].pvalue == pytest.approx(scipy_stats.chi2.sf(5.0, 1))  # 0.025: the only one below 0.05
    for (i, j), q in by_pair.items():
        if (i, j) != (0, 1):
            assert q.statistic == pytest.approx(sm_cochrans_q(keep[[i, j]].T.astype(int)).statistic)
    assert pairwise.n_differ == 1 and pairwise.differ_fraction == pytest.approx(1 / 6)
    assert stats.pairwise_cochran_q(keep, alpha=0.6).n_differ == 3  # (0, 3) and (1, 3), p = 0.50, now count too
    as_json = pairwise.to_dict(labels=[42, 71, 86, 166])
    assert as_json["pairs"][0]["seeds"] == [42, 71] and as_json["n_identical"] == 1


def test_pairwise_of_one_seed_has_no_pairs():
    pairwise = stats.pairwise_cochran_q(np.ones((1, 4)))
    assert pairwise.n_pairs == 0 and math.isnan(pairwise.differ_fraction)


def test_super_survivors_are_kept_in_every_seed():
    assert stats.super_survivors(SMALL).tolist() == [True, False, False, False]
    keep = np.ones((3, 2, 2), bool)
    keep[1, 0, 1] = False
    assert stats.super_survivors(keep).tolist() == [[True, False], [True, True]]


def test_body_fraction_counts_heads_and_mlps_like_the_masks_module():
    layout = model_layout(tiny_model("bert"))
    heads = np.ones((2, 4), bool)
    heads[0, 1] = heads[1, 3] = False
    mlps = np.array([True, False])
    expected = 1 - (2 * layout.params_per_head + layout.params_per_mlp) / layout.body_params
    assert stats.body_fraction(layout, heads, mlps) == pytest.approx(expected)
    assert stats.body_fraction(layout, heads, mlps) == body_fraction_kept(
        layout, heads=HeadMask(torch.from_numpy(heads)), mlps=MlpMask(torch.from_numpy(mlps)))
    assert stats.body_fraction(layout) == 1.0


# ---- m-pruning per component ------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "distilbert"])
def test_parameter_names_map_to_the_adapters_parts(family):
    model = tiny_model(family)
    names = {id(p): n for n, p in model.named_parameters()}
    expected = {}
    for layer, parts in enumerate(adapter_for(model).layers(model)):
        for part in ("query", "key", "value", "attn_out", "mlp_in", "mlp_out"):
            linear = getattr(parts, part)
            expected[names[id(linear.weight)]] = (layer, part, "weight")
            expected[names[id(linear.bias)]] = (layer, part, "bias")
    parsed = {n: stats._parse(n) for n in names.values()}
    assert {n: p for n, p in parsed.items() if p is not None} == expected


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_weight_survival_of_a_structured_mask_is_zero_or_one_per_component(family):
    model = tiny_model(family)
    heads = torch.ones(2, 4, dtype=torch.bool)
    heads[0, 1] = heads[1, 2] = heads[1, 3] = False
    mlps = torch.tensor([True, False])
    weights = structured_weight_mask(model, HeadMask(heads), MlpMask(mlps))
    head_frac, mlp_frac = stats.weight_survival_by_component(weights.keep, num_heads=4)
    assert head_frac.tolist() == heads.float().tolist()  # rows of Q/K/V and columns of the output: same head
    assert mlp_frac.tolist() == [1.0, 0.0]


def test_weight_survival_of_a_magnitude_mask_matches_a_direct_count():
    model = tiny_model("bert")
    params = prunable_parameters(model, "paper")  # the released code's set: no MLP output bias
    magnitude = {n: p.detach().abs() for n, p in params.items()}
    mask = WeightMask({n: torch.ones_like(t, dtype=torch.bool) for n, t in magnitude.items()})
    for _ in range(4):
        mask = magnitude_step(magnitude, mask, 0.25)
    head_frac, mlp_frac = stats.weight_survival_by_component(mask.keep, num_heads=4)
    dh = 8
    prefix = "bert.encoder.layer"
    for layer in range(2):
        k = {n.removeprefix(f"{prefix}.{layer}."): t for n, t in mask.keep.items() if n.startswith(f"{prefix}.{layer}.")}
        for h in range(4):
            rows = slice(h * dh, (h + 1) * dh)
            kept = sum(int(k[f"attention.self.{p}.weight"][rows].sum()) + int(k[f"attention.self.{p}.bias"][rows].sum())
                       for p in ("query", "key", "value")) + int(k["attention.output.dense.weight"][:, rows].sum())
            total = 3 * (dh * 32 + dh) + 32 * dh
            assert head_frac[layer, h] == pytest.approx(kept / total)
        mlp_tensors = [k["intermediate.dense.weight"], k["intermediate.dense.bias"], k["output.dense.weight"]]
        assert mlp_frac[layer] == pytest.approx(sum(int(t.sum()) for t in mlp_tensors) / sum(t.numel() for t in mlp_tensors))
    assert 0 < head_frac.mean() < 1


def test_weight_survival_refuses_a_mask_with_no_head_or_mlp():
    with pytest.raises(ValueError, match="no parameter"):
        stats.weight_survival_by_component({"bert.embeddings.word_embeddings.weight": np.ones((3, 4))}, 4)


# ---- across tasks -------------------------------------------------------------------------------------

def test_task_overlap_hand_computed():
    keeps = {
        "A": np.array([[1, 1, 0, 0], [1, 1, 1, 0]]),
        "B": np.array([[1, 0, 0, 1], [1, 1, 0, 1]]),
        "C": np.array([[0, 0, 1, 1], [0, 0, 1, 1]]),
    }
    overlap = stats.task_overlap(keeps)
    assert overlap.tasks == ["A", "B", "C"] and overlap.n_seeds == 2
    # seed 0: A&B = 1, A&C = 0, B&C = 1; seed 1: A&B = 2, A&C = 1, B&C = 1; diagonals = sizes
    np.testing.assert_allclose(overlap.mean, [[2.5, 1.5, 0.5], [1.5, 2.5, 1.0], [0.5, 1.0, 2.0]])
    s = math.sqrt(0.5)  # sample std of two values one apart
    np.testing.assert_allclose(overlap.std, [[s, s, s], [s, s, 0], [s, 0, 0]])
    sup = stats.task_overlap(keeps, super_survivors=True)
    # super-survivors: A = {0, 1}, B = {0, 3}, C = {2, 3}
    assert sup.std is None
    np.testing.assert_array_equal(sup.mean, [[2, 1, 0], [1, 2, 1], [0, 1, 2]])


def test_task_overlap_pairs_seeds_by_position_up_to_the_shortest():
    keeps = {"A": np.ones((3, 4)), "B": np.ones((2, 4))}
    assert stats.task_overlap(keeps).n_seeds == 2
    with pytest.raises(ValueError, match="different element shapes"):
        stats.task_overlap({"A": np.ones((2, 4)), "B": np.ones((2, 5))})


def test_tasks_survived_counts_tasks_per_seed_then_averages():
    keeps = {
        "A": np.array([[[1, 1]], [[1, 0]]]),  # 2 seeds x 1 layer x 2 heads
        "B": np.array([[[1, 0]], [[0, 0]]]),
        "C": np.array([[[1, 1]], [[1, 1]]]),
    }
    mean, std = stats.tasks_survived(keeps)
    # head 0: seed counts (3, 2); head 1: (2, 1)
    np.testing.assert_allclose(mean, [[2.5, 1.5]])
    np.testing.assert_allclose(std, [[math.sqrt(0.5), math.sqrt(0.5)]])


# ---- importance distributions ----------------------------------------------------------------------

def _trace_of_a_search() -> dict:
    """A real structured search on made-up scores: step 1 accepted, step 2 rejected, ..."""
    base = torch.arange(2 * 10, dtype=torch.float32).view(2, 10) / 10

    def score(heads: HeadMask, mlps: MlpMask) -> ImportanceScores:
        # scores change with the mask so that iterations are distinguishable
        return ImportanceScores(heads=base + heads.n_pruned, mlps=torch.tensor([0.5, 0.1]) + mlps.n_pruned,
                                n_tokens=1, n_examples=1)

    def evaluate(heads: HeadMask, mlps: MlpMask) -> float:
        return 1.0 if heads.n_kept >= 18 else 0.0  # the first step (2 heads) passes, later ones fail

    result = structured_search(score, evaluate, num_layers=2, num_heads=10, full_metric=1.0, mode="heads")
    return json.loads(json.dumps(result.trace_dict()))  # as read back from trace.json


def test_importance_at_iterations_of_a_real_search_trace():
    trace = _trace_of_a_search()
    assert [s["accepted"] for s in trace["steps"]] == [True, False]
    rounds = stats.importance_at(trace)
    assert [r["iteration"] for r in rounds] == [1, 2] and [r["step"] for r in rounds] == [0, 1]
    first, second = rounds
    np.testing.assert_allclose(first["heads"], np.arange(20).reshape(2, 10) / 10)  # the full model's scores
    assert not np.isnan(first["heads"]).any() and first["mlps"].tolist() == pytest.approx([0.5, 0.1])
    # step 1 pruned the two lowest heads, (0, 0) and (0, 1); iteration 2 scores the rest under that mask
    assert np.isnan(second["heads"]).sum() == 2 and np.isnan(second["heads"][0, :2]).all()
    np.testing.assert_allclose(second["heads"][1], np.arange(10, 20) / 10 + 2)
    assert [r["iteration"] for r in stats.importance_at(trace, [2, 1])] == [2, 1]


def test_importance_at_refuses_missing_iterations_and_magnitude_traces():
    trace = _trace_of_a_search()
    with pytest.raises(UserError, match=r"iterations 1\.\.2, not \[3\]"):
        stats.importance_at(trace, [3])
    magnitude = {n: torch.rand(4, 4, generator=torch.Generator().manual_seed(0)) for n in ("a", "b")}
    m_trace = magnitude_search(magnitude, lambda mask: 1.0 if mask.n_kept > 20 else 0.0, full_metric=1.0).trace_dict()
    with pytest.raises(UserError, match="structured"):
        stats.importance_at(json.loads(json.dumps(m_trace)))


def test_jsonable_makes_strict_json():
    value = {"a": np.array([[1.0, np.nan]]), "b": np.float32(0.5), "c": (np.int64(3), np.bool_(True)),
             "d": stats.Kappa(float("nan"), "why")}
    text = json.dumps(stats.jsonable(value), allow_nan=False)
    assert json.loads(text) == {"a": [[1.0, None]], "b": 0.5, "c": [3, True], "d": {"value": None, "reason": "why"}}


# ---- kappa's ceiling, null and bootstrap for masks of different sizes ---------------------------------

def random_keep(rng, shape, p=0.5) -> np.ndarray:
    return rng.random(shape) < p


def _subsets(n_elements: int, size: int) -> np.ndarray:
    """Every mask of ``size`` out of ``n_elements``: ``bool[C(n, size), n]``."""
    rows = [np.isin(np.arange(n_elements), chosen) for chosen in _combinations(range(n_elements), size)]
    return np.array(rows, dtype=bool).reshape(-1, n_elements)


def _every_arrangement(sizes, n_elements: int) -> np.ndarray:
    """``int[arrangements, element]``: seeds keeping each element, for every choice of each seed's mask."""
    counts = np.zeros((1, n_elements), dtype=np.int64)
    for size in sizes:
        counts = (counts[:, None, :] + _subsets(n_elements, size)[None, :, :]).reshape(-1, n_elements)
    return counts


def test_kappa_from_counts_is_statsmodels_fleiss_kappa():
    rng = np.random.default_rng(3)
    for n_seeds in (2, 3, 5):
        keep = random_keep(rng, (n_seeds, 40), p=0.4)
        assert stats._kappa_from_counts(keep.sum(axis=0), n_seeds) == pytest.approx(_statsmodels_kappa(keep))


SIZES_3x6 = [s for s in _product(range(7), repeat=3) if s[0] >= s[1] >= s[2] and 0 < sum(s) < 18]


@pytest.mark.parametrize("sizes", SIZES_3x6, ids=[str(s) for s in SIZES_3x6])
def test_max_kappa_is_the_best_of_every_arrangement_of_3_seeds_x_6_heads(sizes):
    counts = _every_arrangement(sizes, 6)
    brute = np.nanmax(stats._kappa_from_counts(counts, 3))
    # any arrangement of these sizes will do (the ceiling depends on the sizes alone): shifted blocks
    keep = np.array([np.roll(np.arange(6) < size, 2 * row) for row, size in enumerate(sizes)])
    assert stats.max_fleiss_kappa(keep).value == pytest.approx(brute)
    assert stats.fleiss_kappa(keep).value <= stats.max_fleiss_kappa(keep).value + 1e-12


def test_max_kappa_of_issue_16s_sts_b_sizes_and_equal_sizes():
    keep = np.zeros((3, 72), dtype=bool)
    for row, size in enumerate((65, 54, 20)):
        keep[row, -size:] = True
    ceiling = stats.max_fleiss_kappa(keep).value
    assert 0.08 < ceiling < 0.1  # "at most about 0.09"
    same_sizes = np.array([np.roll(random_keep(np.random.default_rng(0), 30)[None], k) for k in range(4)])[:, 0]
    assert stats.max_fleiss_kappa(same_sizes).value == 1.0  # rolled copies: one size, different heads
    assert stats.max_fleiss_kappa(np.ones((3, 5), dtype=bool)).reason.startswith("every element was kept")
    assert math.isnan(stats.max_fleiss_kappa(np.ones((1, 5), dtype=bool)).value)


@pytest.mark.parametrize("sizes, n_elements", [((4, 3, 1), 6), ((2, 2, 2), 6), ((5, 1, 3), 6), ((2, 3, 1, 2), 5)])
def test_the_permutation_null_matches_every_arrangement_enumerated(sizes, n_elements):
    exact = stats._kappa_from_counts(_every_arrangement(sizes, n_elements), len(sizes))  # equally likely
    keep = np.zeros((len(sizes), n_elements), dtype=bool)
    for row, size in enumerate(sizes):
        keep[row, :size] = True
    null = stats.kappa_null(keep, n_permutations=20000, seed=5)
    assert null.mean == pytest.approx(exact.mean(), abs=0.01)
    # the interval holds about 95% of the exact distribution, about 2.5% on either side outside
    assert ((exact >= null.low) & (exact <= null.high)).mean() >= 0.93
    assert (exact < null.low).mean() <= 0.035 and (exact > null.high).mean() <= 0.035
    # the exact mean from independent columns: E[k_i^2] = sum p_j (1 - p_j) + (sum p_j)^2, p_j = s_j / E
    p = np.array(sizes) / n_elements
    expected_square = (p * (1 - p)).sum() + p.sum() ** 2
    n = len(sizes)
    total = p.sum() / n
    agreement = (2 * expected_square - 2 * n * p.sum() + n * n - n) / (n * (n - 1))
    chance = total**2 + (1 - total) ** 2
    assert exact.mean() == pytest.approx((agreement - chance) / (1 - chance))


def test_the_permutation_null_is_seeded_and_below_zero_for_unequal_sizes():
    keep = np.zeros((3, 72), dtype=bool)
    for row, size in enumerate((65, 54, 20)):
        keep[row, :size] = True
    a, b = stats.kappa_null(keep, 500, seed=1), stats.kappa_null(keep, 500, seed=1)
    assert a == b and a != stats.kappa_null(keep, 500, seed=2)
    assert a.high < stats.max_fleiss_kappa(keep).value
    assert a.mean < 0  # unequal sizes: random masks agree less than Fleiss' chance term assumes
    assert stats.kappa_null(np.ones((3, 4), dtype=bool)).reason.startswith("every element was kept")


def test_the_bootstrap_is_fleiss_kappa_without_repeats_and_needs_five_seeds():
    rng = np.random.default_rng(4)
    keep = random_keep(rng, (6, 50))
    agreement = (keep[:, None, :] == keep[None, :, :]).mean(axis=2)
    value = stats._pairwise_kappa(agreement, keep.sum(axis=1), 50, np.arange(6))
    assert value == pytest.approx(_statsmodels_kappa(keep))
    # a seed drawn twice is not compared with itself: draws 0, 0, 1 compare seeds 0 and 1 (twice)
    pair = stats._pairwise_kappa(agreement, keep.sum(axis=1), 50, np.array([0, 0, 1]))
    assert pair == pytest.approx(_statsmodels_kappa(keep[[0, 1]]))
    # so kappa stays within Fleiss' range even for a seed that disagrees with all others
    lopsided = np.zeros((5, 20), dtype=bool)
    lopsided[2] = True
    assert stats.kappa_bootstrap(lopsided, 500).low >= -1
    few = stats.kappa_bootstrap(keep[:4])
    assert math.isnan(few.low) and "at least 5 seeds, got 4" in few.reason
    assert few.value == pytest.approx(_statsmodels_kappa(keep[:4]))


def test_the_bootstrap_interval_separates_agreeing_seeds_from_random_ones():
    rng = np.random.default_rng(6)
    shared = rng.random(144) < 0.5
    agreeing = np.array([shared ^ (rng.random(144) < 0.05) for _ in range(5)])
    independent = random_keep(rng, (5, 144), p=0.5)
    high, low = stats.kappa_bootstrap(agreeing, 1000, seed=0), stats.kappa_bootstrap(independent, 1000, seed=0)
    assert high.low <= high.value <= high.high and low.low <= low.value <= low.high
    assert high.low > 0.6 and low.high < 0.2 and low.low < 0 < low.high
    assert stats.kappa_bootstrap(agreeing, 1000, seed=0) == high


def test_cochrans_q_tests_mask_sizes_not_which_elements_are_kept():
    disjoint_same_size = np.array([[1, 1, 1, 0, 0, 0] * 4, [0, 0, 0, 1, 1, 1] * 4], dtype=bool)
    q = stats.cochran_q(disjoint_same_size)
    assert q.statistic == 0.0 and q.pvalue == pytest.approx(1.0)  # no agreement at all, yet "no difference"
    nested = np.zeros((2, 24), dtype=bool)
    nested[0, :20], nested[1, :8] = True, True
    assert stats.cochran_q(nested).pvalue < 0.001  # one mask inside the other, yet "they differ"


def test_the_papers_released_head_masks_agree_above_chance_and_below_their_ceiling(reference_dir):
    from bertlottery.analysis.masksets import keep_arrays, load_mask_sets

    heads = keep_arrays(load_mask_sets(reference_dir / "masks/heads_mlps"), "heads")
    assert len(heads) == 9
    for task, keep in heads.items():
        kappa, ceiling = stats.fleiss_kappa(keep).value, stats.max_fleiss_kappa(keep).value
        null = stats.kappa_null(keep, n_permutations=500, seed=0)
        assert kappa <= ceiling + 1e-12, task
        if task != "WNLI":  # WNLI: four seeds pruned every head, one kept all (kappa = ceiling = null)
            assert null.high < kappa < ceiling, task
            assert 0.15 <= kappa <= 0.33, task  # the paper's "0.15-0.32" (section 5.1)
    rte = heads["RTE"]  # sizes 116, 74, 74, 88 and 18: the ceiling is far below 1
    assert stats.max_fleiss_kappa(rte).value == pytest.approx(0.416, abs=0.001)


def test_the_null_and_the_bootstrap_are_json_ready():
    keep = np.array([[1, 1, 0, 0, 0, 0]] * 5, dtype=bool)
    keep[1] = np.roll(keep[1], 1)
    record = {"null": stats.kappa_null(keep, 100), "bootstrap": stats.kappa_bootstrap(keep, 100),
              "undefined": stats.kappa_null(np.ones((5, 6), dtype=bool), 100)}
    text = json.dumps(stats.jsonable(record), allow_nan=False)
    back = json.loads(text)
    assert back["null"]["n_permutations"] == 100 and back["bootstrap"]["n_resamples"] == 100
    assert back["undefined"]["mean"] is None and back["undefined"]["reason"].startswith("every element")
