"""The learnt-check: hand-computed thresholds, scipy's binomial test, and the null distributions it assumes."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy import stats

from bertlottery import learnt
from bertlottery.errors import UserError
from bertlottery.learnt import check_learnt, learnt_threshold
from bertlottery.metrics import chance_level, majority_baseline
from bertlottery.tasks import get_task


def test_the_module_examples_run():
    assert doctest.testmod(learnt).failed == 0


def test_accuracy_threshold_by_hand_on_ten_fair_coin_flips():
    # P(X >= 9) = (1 + 10) / 1024 = 0.0107 <= 0.05 < P(X >= 8) = (1 + 10 + 45) / 1024 = 0.0547
    threshold, rule, _ = learnt_threshold("accuracy", 0.5, 10)
    assert (threshold, rule) == (0.9, "binomial")
    assert check_learnt("accuracy", 0.9, chance=0.5, n=10).learnt
    assert not check_learnt("accuracy", 0.8, chance=0.5, n=10).learnt


@pytest.mark.parametrize("n, chance", [(277, 0.527), (408, 0.684), (872, 0.509), (71, 0.563), (1043, 0.691), (30, 0.9)])
def test_accuracy_threshold_is_the_smallest_count_scipys_binomtest_rejects(n, chance):
    threshold, _, _ = learnt_threshold("accuracy", chance, n, alpha=0.05)
    k = round(threshold * n)
    assert stats.binomtest(k, n, chance, alternative="greater").pvalue <= 0.05
    assert stats.binomtest(k - 1, n, chance, alternative="greater").pvalue > 0.05
    assert check_learnt("accuracy", k / n, chance=chance, n=n).learnt
    assert not check_learnt("accuracy", (k - 1) / n, chance=chance, n=n).learnt


def test_rte_of_issue_16_is_not_learnt():
    # RTE dev: 277 pairs, majority class 0.527; the capped run scored 0.472, the full one 0.567
    for score in (0.472, 0.567):
        check = check_learnt("accuracy", score, chance=0.527, n=277)
        assert not check.learnt
        # the verdict in its own words; the stages that skip prefix "not learnt: " once
        assert "< 0.5812" in check.reason and "not above chance by the margin" in check.reason
        assert "not learnt" not in check.reason
    assert check.to_dict() == {"learnt": False, "reason": check.reason, "metric": "accuracy", "score": 0.567,
                               "chance": 0.527, "threshold": pytest.approx(161 / 277), "rule": "binomial"}


def test_mcc_and_correlation_thresholds_by_hand():
    z = 1.6448536269514722  # the standard normal's 95th percentile
    assert learnt_threshold("mcc", 0.0, 100)[0] == pytest.approx(z / 10)
    assert learnt_threshold("pearson", 0.0, 28)[0] == pytest.approx(math.tanh(z / 5))
    assert learnt_threshold("spearman", 0.0, 28)[0] == pytest.approx(math.tanh(z * math.sqrt(1.06) / 5))
    assert learnt_threshold("pearson_spearman_mean", 0.0, 28)[0] == learnt_threshold("spearman", 0.0, 28)[0]
    # CoLA dev (1,043 sentences): the issue's full CoLA at MCC 0.253 is learnt, -0.03 is not
    assert check_learnt("mcc", 0.253, chance=0.0, n=1043).learnt
    assert not check_learnt("mcc", -0.03, chance=0.0, n=1043).learnt


def test_the_mcc_rule_passes_about_alpha_of_models_that_learnt_nothing():
    rng = np.random.default_rng(0)
    n, trials = 400, 4000
    labels = rng.random((trials, n)) < 0.7
    guesses = rng.random((trials, n)) < 0.6  # independent of the labels
    tp = (labels & guesses).sum(1); tn = (~labels & ~guesses).sum(1)
    fp = (~labels & guesses).sum(1); fn = (labels & ~guesses).sum(1)
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    passed = (mcc >= learnt_threshold("mcc", 0.0, n)[0]).mean()
    assert 0.04 <= passed <= 0.06


def test_the_fisher_rule_passes_about_alpha_of_uncorrelated_predictions():
    rng = np.random.default_rng(1)
    n, trials = 50, 4000
    x, y = rng.normal(size=(2, trials, n))
    r = np.array([stats.pearsonr(a, b)[0] for a, b in zip(x, y)])
    assert 0.04 <= (r >= learnt_threshold("pearson", 0.0, n)[0]).mean() <= 0.06


def test_a_margin_replaces_the_rule_and_must_be_positive():
    check = check_learnt("f1", 0.85, chance=0.81, n=408, margin=0.05)
    assert (check.learnt, check.threshold, check.rule) == (False, pytest.approx(0.86), "margin")
    with pytest.raises(UserError, match="margin must be above 0"):
        check_learnt("accuracy", 0.9, chance=0.5, n=10, margin=0.0)
    with pytest.raises(UserError, match="alpha must be between 0 and 1"):
        check_learnt("accuracy", 0.9, chance=0.5, n=10, alpha=1.5)
    with pytest.raises(ValueError, match="no learnt-check rule for metric 'f1'"):
        check_learnt("f1", 0.85, chance=0.81, n=408)


def test_chance_is_the_majority_classs_score_or_zero():
    task = get_task("MRPC")
    majority = majority_baseline(task, np.array([1, 1, 0]), np.array([1, 1, 1, 0]))
    assert chance_level("accuracy", majority) == 0.75
    assert chance_level("f1", majority) == pytest.approx(6 / 7)  # precision 3/4, recall 1
    for metric in ("mcc", "pearson", "spearman", "pearson_spearman_mean"):
        assert chance_level(metric, {metric: 0.3}) == 0.0


def test_a_reason_an_older_run_recorded_is_read_saying_not_learnt_once(tmp_path):
    from types import SimpleNamespace

    from bertlottery import runs
    from bertlottery.pipeline import SKIPPED_DIR, skip_reason

    old = "not learnt: accuracy 0.5379 < 0.5812 (chance 0.5271): not learnt: not above chance by the margin (binomial)"
    (tmp_path / SKIPPED_DIR).mkdir()
    runs.write_json(tmp_path / SKIPPED_DIR / "prune__RTE__x.json", {"id": "prune/RTE/x", "reason": old})
    assert skip_reason(tmp_path, SimpleNamespace(id="prune/RTE/x", file_id="prune__RTE__x")) == (
        "not learnt: accuracy 0.5379 < 0.5812 (chance 0.5271): not above chance by the margin (binomial)")
    assert skip_reason(tmp_path, SimpleNamespace(id="prune/RTE/y", file_id="prune__RTE__y")) is None
    from bertlottery.report.sections.run import _skip_reason  # the report's list of skipped stages

    assert _skip_reason(tmp_path, SimpleNamespace(id="prune/RTE/x", file_id="prune__RTE__x", task="RTE")) == (
        "RTE: not learnt: accuracy 0.5379 < 0.5812 (chance 0.5271): not above chance by the margin (binomial)")
