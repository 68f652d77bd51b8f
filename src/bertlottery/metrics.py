"""GLUE metrics of predictions against labels, as in the paper's Table 1 (and GLUE's own choices).

=========  ==========================================  =====================
task       keys of :func:`compute_metrics`             pruning watches
=========  ==========================================  =====================
CoLA       mcc, accuracy                               mcc
STS-B      pearson, spearman, pearson_spearman_mean    pearson_spearman_mean
MRPC, QQP  accuracy, f1, accuracy_f1_mean              accuracy
others     accuracy                                    accuracy
=========  ==========================================  =====================

Example:
    >>> import numpy as np
    >>> from bertlottery.tasks import get_task
    >>> compute_metrics(get_task("MRPC"), np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    {'accuracy': 0.75, 'f1': 0.6666666666666666, 'accuracy_f1_mean': 0.7083333333333333}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from bertlottery.tasks import TaskSpec

__all__ = ["CHANCE_IS_ZERO", "chance_level", "compute_metrics", "majority_baseline", "standard_error"]


def _correlation(fn: Callable, x: np.ndarray, y: np.ndarray) -> float:
    # Correlation with a constant vector is undefined (scipy warns and returns nan). A pruned model
    # that collapses to one output is a normal event during the search, and 0.0 ("no correlation")
    # lets the threshold comparison reject it instead of crashing or propagating nan.
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(x, y)[0])
    return 0.0 if np.isnan(value) else value


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Score predictions on one split.

    Args:
        task: The task; decides which metrics are computed (``task.metric_names``).
        predictions: ``int[n]`` class ids (the caller takes the argmax), or ``float[n]`` scores
            for STS-B (``float[n, 1]`` is accepted too).
        labels: ``int[n]`` class ids, or ``float[n]`` gold scores for STS-B.

    Returns:
        Metric name -> plain Python float. F1 counts class 1 as positive. A correlation or MCC
        that is undefined because one side is constant is reported as 0.0.

    Raises:
        ValueError: The arrays are empty, have different lengths, or class predictions are 2-D.

    Example:
        >>> import numpy as np
        >>> from bertlottery.tasks import get_task
        >>> compute_metrics(get_task("RTE"), np.array([0, 1, 1]), np.array([0, 1, 0]))
        {'accuracy': 0.6666666666666666}
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if task.is_regression and predictions.ndim == 2 and predictions.shape[1] == 1:
        predictions = predictions[:, 0]
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"{task.name}: expected 1-D predictions and labels, got shapes {predictions.shape} and "
            f"{labels.shape}; take the argmax over classes before calling compute_metrics"
        )
    if len(predictions) != len(labels):
        raise ValueError(f"{task.name}: {len(predictions)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"{task.name}: cannot compute metrics on zero examples")

    if task.is_regression:
        x, y = predictions.astype(np.float64), labels.astype(np.float64)
        pearson = _correlation(stats.pearsonr, x, y)
        spearman = _correlation(stats.spearmanr, x, y)
        return {
            "pearson": pearson,
            "spearman": spearman,
            "pearson_spearman_mean": (pearson + spearman) / 2,
        }

    accuracy = float(np.mean(predictions == labels))
    if "mcc" in task.metric_names:
        return {"mcc": float(matthews_corrcoef(labels, predictions)), "accuracy": accuracy}
    if "f1" in task.metric_names:
        f1 = float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))
        return {"accuracy": accuracy, "f1": f1, "accuracy_f1_mean": (accuracy + f1) / 2}
    return {"accuracy": accuracy}


def majority_baseline(
    task: TaskSpec, train_labels: np.ndarray, eval_labels: np.ndarray
) -> dict[str, float]:
    """Metrics of a constant predictor fitted on the training labels (docs/algorithms.md#evaluation-modes-and-baselines, P Table 2).

    Classification tasks predict the most frequent training class (the smallest class id on a
    tie). STS-B predicts the mean training score; its Pearson and Spearman correlations are
    undefined for a constant prediction and are reported as 0.0, so the STS-B "majority" row
    carries no information beyond being the floor.

    Args:
        task: The task.
        train_labels: Labels of the training split (class ids, or scores for STS-B).
        eval_labels: Labels of the split to score on.

    Returns:
        The same keys as :func:`compute_metrics`.

    Example:
        >>> import numpy as np
        >>> from bertlottery.tasks import get_task
        >>> majority_baseline(get_task("CoLA"), np.array([1, 1, 0]), np.array([1, 0, 1, 1]))
        {'mcc': 0.0, 'accuracy': 0.75}
    """
    train_labels = np.asarray(train_labels)
    eval_labels = np.asarray(eval_labels)
    if len(train_labels) == 0:
        raise ValueError(f"{task.name}: majority baseline needs at least one training label")
    if task.is_regression:
        constant: float | int = float(np.mean(train_labels.astype(np.float64)))
    else:
        constant = int(np.argmax(np.bincount(train_labels.astype(np.int64), minlength=task.num_labels)))
    predictions = np.full(len(eval_labels), constant, dtype=np.float64 if task.is_regression else np.int64)
    return compute_metrics(task, predictions, eval_labels)


CHANCE_IS_ZERO = ("mcc", "pearson", "spearman", "pearson_spearman_mean")
"""Metrics whose chance level is 0 whatever the labels: a constant or random predictor has no
correlation with them. For the others (accuracy, F1 and their mean) chance is what the majority
class scores."""


def chance_level(metric: str, majority: dict[str, float]) -> float:
    """The score of a model that learnt nothing, on ``metric``.

    0 for MCC and correlations; for accuracy, F1 and their mean, the majority class's score, from
    :func:`majority_baseline` on the labels the model was trained on (its F1 is 0 when the
    majority class is the negative one, and above accuracy when it is the positive one).

    Raises:
        KeyError: ``metric`` is not in ``majority``.

    Example:
        >>> chance_level("accuracy", {"accuracy": 0.684, "f1": 0.812})
        0.684
        >>> chance_level("mcc", {"mcc": 0.0, "accuracy": 0.691})
        0.0
    """
    return 0.0 if metric in CHANCE_IS_ZERO else float(majority[metric])


def standard_error(metric: str, value: float, n: int) -> float:
    """An approximate standard error of a dev-set ``metric`` at ``value`` on ``n`` examples: how much
    the score would move on another dev set of the same size.

    Accuracy (and F1, and their mean) as a binomial proportion, ``sqrt(p (1 - p) / n)``; MCC and
    correlations by the large-sample formula of a correlation coefficient, ``(1 - r^2) / sqrt(n - 1)``
    (MCC is the correlation of two binary variables). An order of magnitude to compare a search's
    allowed loss with, not a test.

    Example:
        >>> round(standard_error("accuracy", 0.79, 408), 4)
        0.0202
        >>> round(standard_error("mcc", 0.0, 1043), 4)
        0.031
    """
    if n < 2:
        return math.nan
    if metric in CHANCE_IS_ZERO:
        return (1.0 - min(1.0, value * value)) / math.sqrt(n - 1)
    p = min(1.0, max(0.0, value))
    return math.sqrt(p * (1.0 - p) / n)
