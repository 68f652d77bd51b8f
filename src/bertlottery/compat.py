"""Reproduce the released code's quirks on demand (docs/algorithms.md#compatibility-with-the-released-code).

By default bertlottery computes the methods as the paper *describes* them. ``compat: prasanna2020``
(``--compat prasanna2020`` on the command line) switches on each way in which the code the paper
released (sai-prasanna/bert-experiments) differed from its text, so a user can tell whether a
difference from the published masks comes from the method or from the code:

1. ``accumulated_gate_gradients``: the gate's gradient was never zeroed between batches, so the
   importance summed the absolute value of the *running sum* of gradients,
   ``score = sum_t |sum_{s<=t} g_s|``, instead of ``sum_t |g_t|``.
2. ``head_scores_not_divided_by_tokens``: head scores were not divided by the number of tokens
   (MLP scores were). Layer-wise normalisation hides the difference inside a layer, but not
   across kinds when scores are compared globally.
3. ``magnitude_mask_before_last_step``: magnitude pruning ran at most 10 steps and saved the mask
   from *before* the last step evaluated. When the threshold is crossed that is the right mask,
   but when all 10 steps pass it is the 9-step mask: pruning was capped at 1 - 0.9^9 = 61.3%.
4. ``bernoulli_random_masks``: structured "random" masks kept each head (MLP) independently with
   probability equal to the good mask's kept fraction, matching its size only in expectation;
   the default draws exactly as many elements as the good mask keeps.

Example:
    >>> get_compat("prasanna2020").accumulated_gate_gradients
    True
    >>> get_compat("none") == Compat()
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import UserError, did_you_mean

__all__ = ["Compat", "COMPAT_MODES", "get_compat"]


@dataclass(frozen=True)
class Compat:
    """Each field switches on one quirk of a released implementation (all off: the paper's text)."""

    accumulated_gate_gradients: bool = False
    head_scores_not_divided_by_tokens: bool = False
    magnitude_mask_before_last_step: bool = False
    bernoulli_random_masks: bool = False

    # The released magnitude search's step cap (quirk 3).
    MAGNITUDE_MAX_STEPS = 10

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


COMPAT_MODES: dict[str, Compat] = {
    "none": Compat(),
    "prasanna2020": Compat(
        accumulated_gate_gradients=True,
        head_scores_not_divided_by_tokens=True,
        magnitude_mask_before_last_step=True,
        bernoulli_random_masks=True,
    ),
}


def get_compat(name: str | None) -> Compat:
    """The switches of a named mode (``None`` and ``"none"`` are the paper's text)."""
    if name is None:
        return COMPAT_MODES["none"]
    try:
        return COMPAT_MODES[name]
    except KeyError:
        raise UserError(
            f"Unknown compatibility mode '{name}'.{did_you_mean(name, COMPAT_MODES)} "
            f"Known: {', '.join(COMPAT_MODES)}."
        ) from None
