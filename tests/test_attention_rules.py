"""The rule-based labeller on hand-made maps and on seeded synthetic maps of every pattern type."""

from __future__ import annotations

import numpy as np
import pytest

from bertlottery.attention.maps_format import PATTERNS
from bertlottery.attention.rules import anchor_columns, label_map, scores, segments_of
from bertlottery.attention.synthetic import dataset, synthetic_map, tokens_for

TOKENS = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ",", "then", "slept", ".", "[SEP]",
          "a", "cat", "was", "tired", "and", "slept", "all", "day", ".", "[SEP]"]


def test_anchors_and_segments():
    assert np.flatnonzero(anchor_columns(TOKENS)).tolist() == [0, 7, 10, 11, 20, 21]
    assert anchor_columns(["##s", "##,", "\u0120.", "don", "'", "<s>"]).tolist() == [False, True, True, False, True, True]
    seg = segments_of(TOKENS)
    assert seg[:12].tolist() == [0] * 12 and seg[12:].tolist() == [1] * 10


def _rows(m):
    return m / m.sum(1, keepdims=True)


def test_hand_made_maps_of_each_type():
    t = len(TOKENS)
    previous = np.eye(t, k=-1)
    previous[0, 0] = 1
    assert label_map(previous, TOKENS).label == "diagonal"
    sep = np.zeros((t, t))
    sep[:, [11, 21]] = 1
    assert label_map(sep, TOKENS).label == "vertical"
    assert label_map(_rows(sep) + _rows(previous), TOKENS).label == "vertical+diagonal"
    seg = segments_of(TOKENS)
    block = (seg[:, None] == seg[None, :]) * ~anchor_columns(TOKENS)[None, :]
    result = label_map(block.astype(float), TOKENS)
    assert result.label == "block" and result.scores["block"] == pytest.approx(1.0)
    uniform = np.ones((t, t))  # even over everything, across both sentences: no pattern
    assert label_map(uniform, TOKENS).label == "heterogeneous"
    # a scaled map (a norm map) gets the label of its row-normalised version
    assert scores(previous * 7.5, TOKENS) == scores(previous, TOKENS)
    assert label_map(np.zeros((t, t)), TOKENS).label == "heterogeneous"  # a masked head's zero map


@pytest.mark.parametrize("kind", ["raw", "norm"])
def test_synthetic_maps_of_every_type_are_labelled_correctly(kind):
    maps = dataset(60, seed=11, kind=kind)
    for label in PATTERNS:
        mine = [m for m in maps if m.label == label]
        right = sum(label_map(m.attention, m.tokens).label == label for m in mine)
        assert right / len(mine) >= 0.97, f"{kind} {label}: {right}/{len(mine)}"


def test_synthetic_maps_are_seeded_and_well_formed():
    a, b = dataset(3, seed=5), dataset(3, seed=5)
    assert all(np.array_equal(x.attention, y.attention) and x.tokens == y.tokens for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].attention, dataset(3, seed=6)[0].attention)
    rng = np.random.default_rng(0)
    for _ in range(20):
        tokens = tokens_for(rng, 16, 48)
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and 16 <= len(tokens) <= 48
        raw = synthetic_map("block", tokens, rng)
        np.testing.assert_allclose(raw.sum(1), 1, rtol=1e-5)
        assert not np.allclose(synthetic_map("block", tokens, rng, kind="norm").sum(1), 1)
    with pytest.raises(ValueError, match="unknown pattern"):
        synthetic_map("diagnal", ["[CLS]", "[SEP]"], rng)
