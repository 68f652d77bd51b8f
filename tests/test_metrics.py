"""Metrics against hand-computed values and against sklearn/scipy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from bertlottery.metrics import compute_metrics, majority_baseline
from bertlottery.tasks import TASKS, get_task


def test_mcc_by_hand():
    # TP=2 TN=2 FP=1 FN=1: MCC = (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    labels = np.array([1, 1, 1, 0, 0, 0])
    preds = np.array([1, 1, 0, 0, 0, 1])
    out = compute_metrics(get_task("CoLA"), preds, labels)
    assert out == pytest.approx({"mcc": 1 / 3, "accuracy": 4 / 6})


def test_f1_by_hand():
    # TP=2 FP=1 FN=1: precision = recall = 2/3, F1 = 2/3; accuracy 3/5
    labels = np.array([1, 0, 1, 1, 0])
    preds = np.array([1, 1, 0, 1, 0])
    out = compute_metrics(get_task("MRPC"), preds, labels)
    assert out == pytest.approx({"accuracy": 0.6, "f1": 2 / 3, "accuracy_f1_mean": (0.6 + 2 / 3) / 2})


def test_f1_counts_class_1_as_positive():
    labels = np.array([0, 0, 0, 1])
    preds = np.array([0, 0, 0, 0])  # every class-0 example right, the one positive missed
    assert compute_metrics(get_task("QQP"), preds, labels)["f1"] == 0.0


def test_pearson_by_hand():
    # x=[1,2,3], y=[1,2,4]: cov-sum 3, |dx| = sqrt(2), |dy| = sqrt(42)/3 -> r = 9/sqrt(84); ranks equal
    out = compute_metrics(get_task("STS-B"), np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    r = 9 / math.sqrt(84)
    assert out == pytest.approx({"pearson": r, "spearman": 1.0, "pearson_spearman_mean": (r + 1) / 2})


def test_against_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    preds = np.where(rng.random(500) < 0.8, labels, 1 - labels)
    cola = compute_metrics(get_task("CoLA"), preds, labels)
    assert cola["mcc"] == pytest.approx(matthews_corrcoef(labels, preds))
    mrpc = compute_metrics(get_task("MRPC"), preds, labels)
    assert mrpc["f1"] == pytest.approx(f1_score(labels, preds))
    assert mrpc["accuracy"] == pytest.approx(np.mean(preds == labels))

    gold = rng.uniform(0, 5, 300)
    scores = gold + rng.normal(0, 1, 300)
    stsb = compute_metrics(get_task("STS-B"), scores, gold)
    assert stsb["pearson"] == pytest.approx(stats.pearsonr(scores, gold)[0])
    assert stsb["spearman"] == pytest.approx(stats.spearmanr(scores, gold)[0])

    three = rng.integers(0, 3, 200)
    assert compute_metrics(get_task("MNLI"), three, np.roll(three, 1))["accuracy"] == pytest.approx(
        np.mean(three == np.roll(three, 1))
    )


def test_keys_match_metric_names_and_values_are_plain_floats():
    rng = np.random.default_rng(1)
    for task in TASKS.values():
        if task.is_regression:
            preds, labels = rng.uniform(0, 5, 20), rng.uniform(0, 5, 20)
        else:
            preds, labels = rng.integers(0, task.num_labels, 20), rng.integers(0, task.num_labels, 20)
        out = compute_metrics(task, preds, labels)
        assert tuple(out) == task.metric_names
        assert all(type(v) is float for v in out.values()), task.name


def test_constant_inputs_give_zero_not_nan_or_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stsb = compute_metrics(get_task("STS-B"), np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0]))
        assert stsb == {"pearson": 0.0, "spearman": 0.0, "pearson_spearman_mean": 0.0}
        stsb = compute_metrics(get_task("STS-B"), np.array([1.0, 2.0, 3.0]), np.full(3, 4.0))
        assert stsb["pearson"] == 0.0
        cola = compute_metrics(get_task("CoLA"), np.ones(5, dtype=int), np.array([0, 1, 1, 0, 1]))
        assert cola == {"mcc": 0.0, "accuracy": 0.6}


def test_regression_accepts_a_column_of_predictions():
    out = compute_metrics(get_task("STS-B"), np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0]))
    assert out["spearman"] == pytest.approx(1.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        compute_metrics(get_task("RTE"), np.array([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="argmax"):
        compute_metrics(get_task("RTE"), np.zeros((3, 2)), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics(get_task("RTE"), np.array([]), np.array([]))


def test_majority_baseline_classification():
    out = majority_baseline(get_task("MRPC"), np.array([1, 1, 0]), np.array([1, 0, 1, 1]))
    # predicts 1 everywhere: accuracy 3/4, precision 3/4, recall 1 -> F1 6/7
    assert out == pytest.approx({"accuracy": 0.75, "f1": 6 / 7, "accuracy_f1_mean": (0.75 + 6 / 7) / 2})
    # a tie goes to the smaller class id
    assert majority_baseline(get_task("RTE"), np.array([0, 1]), np.array([0, 0, 1])) == {
        "accuracy": pytest.approx(2 / 3)
    }
    mnli = majority_baseline(get_task("MNLI"), np.array([2, 2, 1]), np.array([2, 0, 1, 2]))
    assert mnli == {"accuracy": 0.5}


def test_majority_baseline_regression_reports_zero_correlation():
    out = majority_baseline(get_task("STS-B"), np.array([1.0, 3.0]), np.array([0.5, 2.0, 4.5]))
    assert out == {"pearson": 0.0, "spearman": 0.0, "pearson_spearman_mean": 0.0}
