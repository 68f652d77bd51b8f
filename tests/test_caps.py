"""Stratified training caps: exact sizes, seeds, and label/source proportions on the real GLUE files."""

from __future__ import annotations

import doctest
from collections import Counter

import numpy as np
import pytest

from bertlottery import caps
from bertlottery.caps import allocate, cap_examples, score_bins, stratified_sample
from bertlottery.data import Example, read_glue_split
from bertlottery.errors import UserError
from bertlottery.metrics import majority_baseline
from bertlottery.tasks import get_task

# the caps of the first minilm-glue study (configs/minilm-glue.yaml now caps only SST-2, at 16,000)
MINILM_GLUE_CAPS = [("STS-B", 2500), ("CoLA", 3000), ("RTE", 300), ("MRPC", 1000), ("SST-2", 4000), ("SST-2", 16000)]


def test_the_module_examples_run():
    assert doctest.testmod(caps).failed == 0


def proportions(values) -> dict:
    counts = Counter(values)
    return {k: v / len(values) for k, v in counts.items()}


def bins_or_labels(task, examples):
    labels = [ex.label for ex in examples]
    return score_bins(labels).tolist() if task.is_regression else labels


@pytest.mark.parametrize("name, n", MINILM_GLUE_CAPS)
def test_a_cap_keeps_the_full_sets_label_and_source_mix_within_two_points(glue_dir, name, n):
    task = get_task(name)
    train = read_glue_split(task, glue_dir, "train")
    capped, cap = cap_examples(task, train, n, seed=1337)
    assert len(capped) == len(cap.indices) == n
    assert capped == [train[i] for i in cap.indices]
    # bins are those of the full set, looked up by position, so both sides are binned alike
    full_bins = bins_or_labels(task, train)
    full = proportions(full_bins)
    ours = proportions([full_bins[i] for i in cap.indices])
    assert set(ours) == set(full)
    assert max(abs(ours[k] - full[k]) for k in full) <= 0.02
    if train[0].source is not None:
        full_sources = proportions([ex.source for ex in train])
        our_sources = proportions([ex.source for ex in capped])
        assert max(abs(our_sources.get(k, 0) - full_sources[k]) for k in full_sources) <= 0.02


def test_the_first_lines_of_sts_b_are_not_a_sample_but_the_stratified_cap_is(glue_dir):
    task = get_task("STS-B")
    train = read_glue_split(task, glue_dir, "train")
    first = Counter(ex.source for ex in train[:2500])
    assert first["main-news"] == 50  # the file is sorted by genre (issue 16)
    capped, _ = cap_examples(task, train, 2500, seed=42)
    mix = Counter(ex.source for ex in capped)
    # the genres' shares of 2,500 (largest remainder: 870, 196, 1434); strata are genre x score
    # quintile, so each genre's count may differ from its own share by rounding in each quintile
    for genre, share in zip(("main-captions", "main-forum", "main-news"), allocate([2000, 450, 3299], 2500)):
        assert abs(mix[genre] - share) <= 5


def test_the_majority_baseline_follows_the_labels_it_is_given_on_rte(glue_dir):
    """RTE's first 300 training pairs have the opposite majority class to the whole file, so a
    baseline from those labels predicts the other class: the caller must pass what was trained on."""
    task = get_task("RTE")
    train = read_glue_split(task, glue_dir, "train")
    dev_labels = np.array([ex.label for ex in read_glue_split(task, glue_dir, "dev")])
    full_labels = np.array([ex.label for ex in train])
    first = majority_baseline(task, full_labels[:300], dev_labels)["accuracy"]
    full = majority_baseline(task, full_labels, dev_labels)["accuracy"]
    assert first != full
    assert first + full == pytest.approx(1.0)  # two classes: the other one
    assert (first, full) == (pytest.approx(0.473, abs=0.001), pytest.approx(0.527, abs=0.001))
    _, cap = cap_examples(task, train, 300, seed=1337)
    assert majority_baseline(task, full_labels[cap.indices], dev_labels)["accuracy"] == full


def test_the_same_seed_gives_the_same_sample_and_another_seed_another():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    strata = np.tile(["a", "b"], 50)
    a = stratified_sample(labels, 40, seed=7, strata=strata)
    b = stratified_sample(labels, 40, seed=7, strata=strata)
    c = stratified_sample(labels, 40, seed=8, strata=strata)
    assert a.indices.tolist() == b.indices.tolist() and a.digest == b.digest
    assert a.indices.tolist() != c.indices.tolist() and a.digest != c.digest
    assert a.indices.tolist() == sorted(set(a.indices.tolist()))
    assert Counter(labels[a.indices].tolist()) == {0: 20, 1: 12, 2: 8}


def test_a_cap_at_or_above_the_split_size_keeps_everything():
    labels = [0, 1, 1, 0, 1]
    for n in (5, 6, 1000):
        cap = stratified_sample(labels, n, seed=0)
        assert cap.indices.tolist() == [0, 1, 2, 3, 4]
        assert cap.to_dict() == {"n": 5, "of": 5, "seed": 0, "sha256": cap.digest}


@pytest.mark.parametrize("n", [0, -3])
def test_a_cap_below_one_is_a_user_error(n):
    with pytest.raises(UserError, match="max_train_examples must be at least 1"):
        stratified_sample([0, 1], n, seed=0)


def test_largest_remainder_allocation_is_exact_and_within_the_groups():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(1, 30, size=rng.integers(1, 8))
        n = int(rng.integers(0, sizes.sum() + 1))
        counts = allocate(sizes, n)
        assert counts.sum() == n
        assert (counts <= sizes).all() and (counts >= 0).all()
        assert (np.abs(counts - n * sizes / sizes.sum()) < 1).all()


def test_score_bins_are_quintiles_of_the_scores():
    bins = score_bins(np.arange(100) / 20.0)
    assert Counter(bins.tolist()) == {b: 20 for b in range(5)}


def test_examples_without_a_source_are_stratified_by_label_alone():
    train = [Example(f"s{i}", None, int(i < 30)) for i in range(100)]
    capped, cap = cap_examples(get_task("SST-2"), train, 10, seed=0)
    assert Counter(ex.label for ex in capped) == {0: 7, 1: 3}
    assert cap.n_total == 100
