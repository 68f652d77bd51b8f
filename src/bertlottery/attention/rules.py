"""A rule-based labeller of attention maps: Kovaleva et al. (2019)'s five pattern types from three scores.

On a map ``A`` (rows = query tokens, columns = keys; a norm map is row-normalised first, so every row
is a distribution) and the tokens it was made from:

- *anchor columns*: special tokens ([CLS], [SEP], <s>, </s>, ...) and punctuation tokens;
- *the band*: the token itself and its neighbours up to ``width`` (default 2) places before or after,
  anchors left out;
- *segments*: the [SEP]-delimited sentences (a separator belongs to the segment it closes);

cells where a token meets an anchor within ``width`` are ambiguous (a previous-token head meeting a
comma, a [SEP]-attending head next to [SEP]): they are left out and each row renormalised. Then three
scores in [0, 1], each a mean over rows:

- ``vertical``: mass on anchor columns (away from the token), ``sum_{j anchor} A_ij``;
- ``diagonal``: mass on the band, ``sum_{|i-j| <= width, j not anchor} A_ij`` (previous/next tokens);
- ``block``: mass on the row's own segment's non-anchor tokens times how evenly it is spread over them,
  ``m_i * exp(H_i) / n_i``, with ``H_i`` the entropy of that within-segment distribution and ``n_i`` the
  number of those tokens: 1 for uniform attention over the sentence, small for a few picked tokens.

The label, first rule that holds (thresholds in :class:`Thresholds`):

1. ``vertical+diagonal``: vertical >= 0.25, diagonal >= 0.25 and vertical + diagonal >= 0.6;
2. ``vertical``: vertical >= 0.5;
3. ``diagonal``: diagonal >= 0.4 and block < 0.5 (in a sentence of a few words the band covers most
   of it, and even attention over it is a block);
4. ``block``: block >= 0.5;
5. ``heterogeneous``: none of these.

The thresholds were set by looking at MiniLM-L6's raw and norm-based maps of RTE and checked on the
synthetic maps of `synthetic`; the scores come back with the label, so a user can re-threshold. The
rules are a transparent stand-in for the paper's CNN (`classifier`), whose annotated maps are not public.

Example:
    >>> import numpy as np
    >>> tokens = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "today", "[SEP]"]
    >>> previous = np.eye(9, k=-1); previous[0, 0] = 1   # every token looks one back
    >>> label_map(previous, tokens).label
    'diagonal'
    >>> label_map(np.tile(np.eye(9)[[0, 8]].sum(0) / 2, (9, 1)), tokens).label   # all on [CLS] and [SEP]
    'vertical'
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .maps_format import row_normalised

__all__ = ["SPECIAL_TOKENS", "Thresholds", "RuleResult", "anchor_columns", "segments_of", "scores", "label_map"]

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>"})
_SEPARATORS = frozenset({"[SEP]", "</s>"})
_PIECE_MARKS = ("##", "\u0120", "\u2581")  # WordPiece continuation, byte-level BPE and SentencePiece space marks


@dataclass(frozen=True)
class Thresholds:
    """Where each rule fires (see the module docstring)."""

    mixed_each: float = 0.25
    mixed_total: float = 0.6
    vertical: float = 0.5
    diagonal: float = 0.4
    block: float = 0.5
    width: int = 2


@dataclass(frozen=True)
class RuleResult:
    label: str
    scores: dict[str, float]  # "vertical", "diagonal", "block"


def _is_punctuation(token: str) -> bool:
    for mark in _PIECE_MARKS:
        token = token.removeprefix(mark)
    return bool(token) and all(unicodedata.category(c).startswith("P") or c in "$+<=>^`|~" for c in token)


def anchor_columns(tokens: Sequence[str]) -> np.ndarray:
    """bool[T]: special tokens and punctuation, the columns a vertical pattern attends to."""
    return np.array([t in SPECIAL_TOKENS or _is_punctuation(t) for t in tokens], dtype=bool)


def segments_of(tokens: Sequence[str]) -> np.ndarray:
    """int[T]: the [SEP]-delimited sentence each token is in; a separator belongs to the one it closes."""
    out = np.zeros(len(tokens), dtype=np.int64)
    current = 0
    for i, token in enumerate(tokens):
        out[i] = current
        if token in _SEPARATORS:
            current += 1
    return out


def scores(attention: np.ndarray, tokens: Sequence[str], width: int = 2) -> dict[str, float]:
    """The vertical, diagonal and block scores of one ``[T, T]`` map (rows normalised here)."""
    a = np.asarray(attention, dtype=np.float64)
    t = a.shape[0]
    if a.shape != (t, t) or len(tokens) != t:
        raise ValueError(f"map of shape {a.shape} for {len(tokens)} tokens")
    anchors = anchor_columns(tokens)
    segments = segments_of(tokens)
    near = np.abs(np.arange(t)[:, None] - np.arange(t)[None, :]) <= width  # the token and its neighbours
    # A neighbour that is also an anchor is ambiguous (a previous-token head meeting a comma, a
    # [SEP]-attending head next to [SEP]): those cells are left out and the rest of the row renormalised.
    a = row_normalised(np.where(near & anchors[None, :], 0.0, a)).astype(np.float64)
    rows = a.sum(axis=1) > 0
    if not rows.any():
        return {"vertical": 0.0, "diagonal": 0.0, "block": 0.0}
    vertical = (a * anchors[None, :]).sum(axis=1)
    band = near & ~anchors[None, :]
    diagonal = (a * band).sum(axis=1)
    content = a * ~anchors[None, :]

    block = np.zeros(t)
    for s in np.unique(segments):
        cols = (segments == s) & ~anchors
        n = int(cols.sum())
        if n == 0:
            continue
        inside = content[np.ix_(segments == s, cols)]  # rows of this segment, its own content columns
        mass = inside.sum(axis=1)
        p = np.divide(inside, mass[:, None], out=np.zeros_like(inside), where=mass[:, None] > 0)
        entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
        block[segments == s] = mass * np.exp(entropy) / n
    return {name: float(v[rows].mean()) for name, v in (("vertical", vertical), ("diagonal", diagonal),
                                                         ("block", block))}


def label_map(attention: np.ndarray, tokens: Sequence[str], thresholds: Thresholds = Thresholds()) -> RuleResult:
    """The pattern type of one map and the scores it was decided by."""
    s = scores(attention, tokens, thresholds.width)
    v, d, b = s["vertical"], s["diagonal"], s["block"]
    if v >= thresholds.mixed_each and d >= thresholds.mixed_each and v + d >= thresholds.mixed_total:
        label = "vertical+diagonal"
    elif v >= thresholds.vertical:
        label = "vertical"
    elif d >= thresholds.diagonal and b < thresholds.block:
        label = "diagonal"
    elif b >= thresholds.block:
        label = "block"
    else:
        label = "heterogeneous"
    return RuleResult(label, s)
