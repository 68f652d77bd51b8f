"""Did fine-tuning learn anything? The check a full model must pass before it is pruned.

A model is *learnt* when its dev score beats chance by more than chance alone would give at the
dev set's size, so that searching it for subnetworks is not searching noise:

==============================  =====================================  ==============================
metric                          chance                                 threshold (alpha = 0.05)
==============================  =====================================  ==============================
accuracy                        the majority class's accuracy p0       smallest k/n with
                                                                       P(Binomial(n, p0) >= k) <= alpha
mcc                             0                                      z_(1-alpha) / sqrt(n)
pearson                         0                                      tanh(z_(1-alpha) / sqrt(n - 3))
spearman, pearson_spearman_mean 0                                      tanh(z_(1-alpha) sqrt(1.06 / (n - 3)))
==============================  =====================================  ==============================

Why these: a predictor that is right on each dev example independently at the majority class's
rate p0 scores ``k/n`` with k ~ Binomial(n, p0), so it reaches the threshold with probability at most
alpha (the one-sided binomial test, `scipy.stats.binomtest`). With no association, n x MCC^2 is
the 2x2 table's chi-square statistic on 1 degree of freedom, so MCC is about N(0, 1/n); Fisher's
z = atanh(r) of a correlation is about N(0, 1/(n - 3)), and for Spearman's rho about
N(0, 1.06/(n - 3)) (Fieller, Hartley and Pearson 1957), which the Pearson/Spearman mean also uses
(the larger margin of the two). A ``margin`` given by hand replaces the rule: threshold = chance + margin.

Example:
    >>> check = check_learnt("accuracy", 0.472, chance=0.527, n=277)
    >>> check.learnt, round(check.threshold, 3)
    (False, 0.581)
    >>> check_learnt("mcc", 0.25, chance=0.0, n=1043).learnt
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bertlottery.errors import UserError

__all__ = ["ALPHA", "LearntCheck", "check_learnt", "learnt_threshold"]

ALPHA = 0.05
"""Default significance level of the learnt-check: one chance in 20 that a model which learnt
nothing passes."""

_SPEARMAN_VARIANCE = 1.06  # Fieller, Hartley and Pearson (1957): var(atanh rho_s) ~ 1.06 / (n - 3)


@dataclass(frozen=True)
class LearntCheck:
    """The learnt-check's verdict, as a stage records it.

    Attributes:
        learnt: Whether ``score >= threshold``.
        reason: One line saying why, with the numbers.
        metric: The metric checked (the task's primary metric).
        score: The fine-tuned model's dev score.
        chance: What a model that learnt nothing scores (`bertlottery.metrics.chance_level`).
        threshold: The score needed.
        rule: How the threshold was set: ``binomial``, ``mcc-normal``, ``fisher-z`` or ``margin``.
    """

    learnt: bool
    reason: str
    metric: str
    score: float
    chance: float
    threshold: float
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def learnt_threshold(metric: str, chance: float, n: int, alpha: float = ALPHA) -> tuple[float, str, str]:
    """The dev score a model must reach to count as learnt, from the metric's null at ``n``.

    Returns ``(threshold, rule, how)``: the threshold, the rule's name, and a phrase saying how it
    was derived (for the reason line).

    Raises:
        UserError: ``alpha`` outside (0, 1).
        ValueError: ``n`` too small for the rule, or a metric with no rule (F1 and its mean: give a
            margin by hand).

    >>> learnt_threshold("accuracy", 0.5, 10)[0]      # P(X >= 9) = 11/1024 <= 0.05 < P(X >= 8) = 56/1024
    0.9
    >>> round(learnt_threshold("mcc", 0.0, 100)[0], 4)     # 1.6449 / 10
    0.1645
    """
    from scipy import stats

    if not 0 < alpha < 1:
        raise UserError(f"learnt-check alpha must be between 0 and 1, got {alpha}; the default is {ALPHA}.")
    z = float(stats.norm.isf(alpha))
    if metric == "accuracy":
        if n < 1:
            raise ValueError(f"the binomial rule needs at least one dev example, got {n}")
        # binom.isf(alpha) is the smallest k with P(X > k) <= alpha, so k + 1 is the smallest
        # count whose P(X >= count) <= alpha
        needed = int(stats.binom.isf(alpha, n, chance)) + 1
        how = f"one-sided binomial test on {n} dev examples against the majority class's rate, alpha {alpha}"
        return needed / n, "binomial", how
    if metric == "mcc":
        if n < 1:
            raise ValueError(f"the MCC rule needs at least one dev example, got {n}")
        return z / math.sqrt(n), "mcc-normal", f"MCC ~ N(0, 1/n) with no association at n={n}, alpha {alpha}"
    if metric in ("pearson", "spearman", "pearson_spearman_mean"):
        if n < 4:
            raise ValueError(f"Fisher's z needs at least 4 dev examples, got {n}")
        variance = 1.0 if metric == "pearson" else _SPEARMAN_VARIANCE
        how = f"Fisher z ~ N(0, {variance}/(n-3)) with no correlation at n={n}, alpha {alpha}"
        return math.tanh(z * math.sqrt(variance / (n - 3))), "fisher-z", how
    raise ValueError(f"no learnt-check rule for metric '{metric}': check the task's primary metric "
                     "(accuracy, mcc or a correlation), or give a margin")


def check_learnt(
    metric: str, score: float, *, chance: float, n: int, alpha: float = ALPHA, margin: float | None = None
) -> LearntCheck:
    """Whether a fine-tuned model beat chance on dev by more than chance gives at ``n`` examples.

    Args:
        metric: The task's primary metric, e.g. ``"accuracy"``.
        score: The model's dev score on it.
        chance: `bertlottery.metrics.chance_level` of the metric: the majority class's accuracy
            (on dev, the class taken from the training labels the model saw), or 0.
        n: Dev examples scored.
        alpha: Significance level of the default rule (see the module docstring).
        margin: If given, the threshold is ``chance + margin`` instead (must be above 0: a margin
            of 0 lets a constant predictor through).

    Raises:
        UserError: ``alpha`` outside (0, 1), or ``margin`` not above 0.

    >>> check_learnt("accuracy", 0.80, chance=0.509, n=872).reason[:42]
    'accuracy 0.8000 >= 0.5378 (chance 0.5090):'
    >>> check_learnt("pearson_spearman_mean", 0.05, chance=0.0, n=1500, margin=0.1).rule
    'margin'
    """
    if margin is not None:
        if not margin > 0:
            raise UserError(f"learnt-check margin must be above 0, got {margin}; a margin of 0 passes a "
                            "model that predicts one class.")
        threshold, rule, how = chance + margin, "margin", f"chance plus the margin {margin} set"
    else:
        threshold, rule, how = learnt_threshold(metric, chance, n, alpha)
    learnt = score >= threshold - 1e-12  # accuracy is k/n: do not let rounding fail an exact k*/n
    sign = ">=" if learnt else "<"
    verdict = "learnt" if learnt else "not above chance by the margin"
    reason = f"{metric} {score:.4f} {sign} {threshold:.4f} (chance {chance:.4f}): {verdict} ({how})"
    return LearntCheck(learnt, reason, metric, float(score), float(chance), float(threshold), rule)


def tidy_reason(reason: str) -> str:
    """A not-learnt reason as this version writes it. Runs made before it recorded the verdict twice
    (``not learnt: accuracy 0.5379 < 0.5812 (chance 0.5271): not learnt: not above chance ...``); their
    records are read through this, so that ``status`` and the report say it once."""
    return reason.replace("): not learnt: not above", "): not above")
