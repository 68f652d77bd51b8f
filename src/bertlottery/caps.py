"""Seeded, stratified training caps: which examples a capped fine-tuning run trains on.

GLUE's TSV files are sorted (STS-B by genre, CoLA by source publication, RTE by origin), so their
first N lines are not a sample of the task: STS-B's first 2,500 pairs are 2,000 image captions and
50 news pairs although news is 57% of the file, and RTE's first 300 pairs have the opposite majority
class to the whole file. A cap here is a seeded random sample stratified by label (by score quintile
for regression) and by source where the file names one, of exactly the size asked for.

Example:
    >>> labels = np.array([0] * 60 + [1] * 40)
    >>> cap = stratified_sample(labels, 10, seed=1)
    >>> len(cap.indices), int(labels[cap.indices].sum())       # 60/40 -> 6 of class 0, 4 of class 1
    (10, 4)
    >>> stratified_sample(labels, 10, seed=1).digest == cap.digest
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertlottery.errors import UserError

__all__ = ["Cap", "allocate", "cap_examples", "score_bins", "stratified_sample"]


@dataclass(frozen=True, eq=False)
class Cap:
    """A capped training set.

    Attributes:
        indices: ``int64[n]`` positions in the full split, ascending (so the capped examples keep
            file order; the training loader shuffles them with its own seed).
        digest: First 16 hex digits of the SHA-256 of the indices as little-endian int64: a
            stage records it to say which examples it trained on.
        n_total: Size of the full split.
        seed: The seed the sample was drawn with.
    """

    indices: np.ndarray
    digest: str
    n_total: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """What a stage records: ``{"n": ..., "of": ..., "seed": ..., "sha256": ...}``."""
        return {"n": len(self.indices), "of": self.n_total, "seed": self.seed, "sha256": self.digest}


def _cap(indices: np.ndarray, n_total: int, seed: int) -> Cap:
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    digest = hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest()[:16]
    return Cap(indices, digest, n_total, seed)


def allocate(sizes: Sequence[int], n: int) -> np.ndarray:
    """Split ``n`` draws over groups in proportion to their ``sizes`` (largest remainder).

    Each group gets the floor of its quota ``n * size / total``; the draws left over go one each
    to the groups with the largest fractional parts (ties: the earlier group). The result sums to
    ``n`` exactly and no group gets more than its size (for ``0 <= n <= total``).

    >>> allocate([2000, 450, 3299], 2500).tolist()
    [870, 196, 1434]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    quotas = n * sizes / sizes.sum()
    counts = np.floor(quotas).astype(np.int64)
    left = n - int(counts.sum())
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:left]] += 1
    return counts


def score_bins(scores: Any, n_bins: int = 5) -> np.ndarray:
    """``int[n]``: the quantile bin (0 .. n_bins-1) of each regression score, for stratifying.

    Bin edges are the scores' inner quantiles (quintiles by default); tied scores share a bin, so
    bins need not be equal in size.

    >>> score_bins([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0], n_bins=2).tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """
    scores = np.asarray(scores, dtype=np.float64)
    edges = np.quantile(scores, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, scores, side="left")


def stratified_sample(labels: Any, n: int, seed: int, strata: Any = None) -> Cap:
    """A seeded sample of exactly ``n`` positions, stratified by label and (optionally) stratum.

    Groups are the distinct ``(label, stratum)`` pairs; each gets its share of ``n`` by
    :func:`allocate` and draws that many of its members uniformly without replacement, from one
    ``numpy.random.default_rng(seed)`` in sorted group order. The same inputs and seed give the same
    sample; ``n`` at or above the split's size gives every position.

    Args:
        labels: Class ids (or any discrete labels; bin regression scores with :func:`score_bins`).
        n: The cap: how many examples to keep.
        seed: Seed of the draw.
        strata: One stratum per example (e.g. the source column), or ``None``.

    Raises:
        UserError: ``n`` is below 1.

    >>> cap = stratified_sample([0, 0, 0, 1, 1, 1], 4, seed=0, strata=["a", "a", "b", "a", "b", "b"])
    >>> cap.to_dict()["n"], cap.to_dict()["of"]
    (4, 6)
    """
    labels = np.asarray(labels)
    if n < 1:
        raise UserError(f"max_train_examples must be at least 1, got {n}; leave it out to train on the whole split.")
    total = len(labels)
    if n >= total:
        return _cap(np.arange(total), total, seed)
    _, group = np.unique(labels, return_inverse=True)
    if strata is not None:
        _, stratum = np.unique(np.asarray(strata, dtype=str), return_inverse=True)
        group = group * (stratum.max() + 1) + stratum
    groups, group = np.unique(group, return_inverse=True)
    members = [np.flatnonzero(group == g) for g in range(len(groups))]
    counts = allocate([len(m) for m in members], n)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(m, size=c, replace=False) for m, c in zip(members, counts)]
    return _cap(np.concatenate(chosen), total, seed)


def cap_examples(task: Any, examples: Sequence[Any], n: int, seed: int) -> tuple[list[Any], Cap]:
    """The capped training examples of ``task`` and their :class:`Cap` (what to record).

    Stratified by class (by score quintile for a regression task) and by ``Example.source`` where
    the examples have one (STS-B's genre, CoLA's source; see ``TsvLayout.source``).

    Args:
        task: The task's :class:`bertlottery.tasks.TaskSpec`.
        examples: The full training split (:func:`bertlottery.data.load_split`).
        n: The cap (``max_train_examples``).
        seed: Seed of the sample.

    >>> from bertlottery.data import Example
    >>> from bertlottery.tasks import get_task
    >>> train = [Example(f"s{i}", None, i % 2, "src") for i in range(10)]
    >>> capped, cap = cap_examples(get_task("SST-2"), train, 4, seed=3)
    >>> sorted(ex.label for ex in capped)
    [0, 0, 1, 1]
    """
    labels = [ex.label for ex in examples]
    if task.is_regression:
        labels = score_bins(labels)
    sources = [ex.source for ex in examples]
    strata = sources if any(s is not None for s in sources) else None
    cap = stratified_sample(labels, n, seed, strata)
    return [examples[i] for i in cap.indices], cap
