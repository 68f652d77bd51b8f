"""Seeded synthetic attention maps of each of the five pattern types, on realistic token sequences.

A sequence is ``[CLS] sentence-A [SEP] sentence-B [SEP]`` (or a single sentence), with commas and a
full stop among the words. A map is a pattern (below) mixed with a little random attention, every row
a distribution:

- ``diagonal``: each token attends to the previous and/or next token (one or two offsets per map);
- ``vertical``: every token attends to [CLS], [SEP] and punctuation columns (the same weights in every
  row, jittered);
- ``vertical+diagonal``: the two mixed, each 35-65%;
- ``block``: each token attends roughly evenly to the words of its own sentence;
- ``heterogeneous``: each token attends to a few tokens picked at random away from itself, in either
  sentence, none of them special.

``kind="norm"`` imitates a norm-based map: columns scaled by random positive factors (a token's
transformed-value norm) and rows no longer summing to 1.

Example:
    >>> maps = dataset(2, seed=0)
    >>> len(maps), maps[0].label, maps[0].attention.shape == (len(maps[0].tokens),) * 2
    (10, 'diagonal', True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .maps_format import PATTERNS

__all__ = ["SyntheticMap", "tokens_for", "synthetic_map", "dataset"]

_WORDS = ("the a of to and in that it is was for on are as with his they at be this from have or by one had "
          "not but what all were when we there can an your which their said if do will each about how up out "
          "them then she many some so these would other into has more her two like him see time could no make "
          "than first been its who now people my made over did down only way find use may water long little "
          "very after words called just where most know").split()


@dataclass(frozen=True)
class SyntheticMap:
    attention: np.ndarray  # float32[T, T]
    tokens: list[str]
    label: str


def tokens_for(rng: np.random.Generator, min_len: int = 16, max_len: int = 48, pair: bool | None = None) -> list[str]:
    """``[CLS] A [SEP] (B [SEP])`` with ``min_len <= T <= max_len`` tokens, punctuation included."""
    pair = bool(rng.random() < 0.7) if pair is None else pair
    total = int(rng.integers(min_len, max_len + 1))
    body = total - (3 if pair else 2)

    def sentence(n: int) -> list[str]:
        words = [str(w) for w in rng.choice(_WORDS, size=n)]
        if n >= 6:
            words[int(rng.integers(2, n - 2))] = ","
        if n >= 3:
            words[-1] = "."
        return words

    if not pair:
        return ["[CLS]", *sentence(body), "[SEP]"]
    first = int(rng.integers(max(2, body // 3), max(3, 2 * body // 3) + 1))
    return ["[CLS]", *sentence(first), "[SEP]", *sentence(body - first), "[SEP]"]


def _rows(m: np.ndarray) -> np.ndarray:
    return m / m.sum(axis=1, keepdims=True)


def _diagonal(t: int, rng: np.random.Generator) -> np.ndarray:
    choices = ([-1], [1], [-1, 1], [-2, -1], [1, 2], [0, -1])
    offsets = choices[int(rng.integers(len(choices)))]
    weights = rng.dirichlet(np.full(len(offsets), 4.0))
    m = np.zeros((t, t))
    for offset, w in zip(offsets, weights, strict=True):
        for i in range(t):
            j = i + offset
            m[i, j if 0 <= j < t else i] += w
    return m


def _vertical(tokens: list[str], rng: np.random.Generator) -> np.ndarray:
    from .rules import anchor_columns

    anchors = np.flatnonzero(anchor_columns(tokens))
    special = np.array([tokens[j] in ("[CLS]", "[SEP]") for j in anchors])
    # [SEP] and [CLS] take most of it, as in BERT; punctuation some
    weights = rng.dirichlet(np.where(special, 3.0, 1.0)) * np.where(special, 3.0, 1.0)
    m = np.zeros((len(tokens), len(tokens)))
    for i in range(len(tokens)):
        m[i, anchors] = weights * rng.uniform(0.7, 1.3, size=len(anchors))
    return _rows(m)


def _block(tokens: list[str], rng: np.random.Generator) -> np.ndarray:
    from .rules import anchor_columns, segments_of

    segments, anchors = segments_of(tokens), anchor_columns(tokens)
    m = np.zeros((len(tokens), len(tokens)))
    for i in range(len(tokens)):
        cols = np.flatnonzero((segments == segments[i]) & ~anchors)
        m[i, cols] = rng.dirichlet(np.full(len(cols), 20.0))
    return m


def _heterogeneous(tokens: list[str], rng: np.random.Generator) -> np.ndarray:
    from .rules import anchor_columns

    t = len(tokens)
    words = np.flatnonzero(~anchor_columns(tokens))
    m = np.zeros((t, t))
    for i in range(t):
        far = words[np.abs(words - i) > 2]
        picks = rng.choice(far, size=min(len(far), int(rng.integers(1, 4))), replace=False)
        m[i, picks] = rng.dirichlet(np.full(len(picks), 2.0))
    return m


def synthetic_map(label: str, tokens: list[str], rng: np.random.Generator, kind: str = "raw",
                  noise: tuple[float, float] = (0.03, 0.15)) -> np.ndarray:
    """One ``float32[T, T]`` map of type ``label`` for ``tokens``."""
    t = len(tokens)
    if label == "diagonal":
        pattern = _diagonal(t, rng)
    elif label == "vertical":
        pattern = _vertical(tokens, rng)
    elif label == "vertical+diagonal":
        share = rng.uniform(0.35, 0.65)
        pattern = share * _vertical(tokens, rng) + (1 - share) * _diagonal(t, rng)
    elif label == "block":
        pattern = _block(tokens, rng)
    elif label == "heterogeneous":
        pattern = _heterogeneous(tokens, rng)
    else:
        raise ValueError(f"unknown pattern {label!r}; one of {PATTERNS}")
    eps = rng.uniform(*noise)
    m = (1 - eps) * pattern + eps * rng.dirichlet(np.full(t, 0.5), size=t)
    if kind == "norm":
        m = m * rng.lognormal(0.0, 0.25, size=t)[None, :] * rng.uniform(2.0, 6.0)
    elif kind != "raw":
        raise ValueError(f"unknown kind {kind!r}")
    return m.astype(np.float32)


def dataset(n_per_class: int, seed: int, *, kind: str = "raw", min_len: int = 16, max_len: int = 48) -> list[SyntheticMap]:
    """``n_per_class`` maps of each pattern, in ``PATTERNS`` order, each on its own token sequence."""
    rng = np.random.default_rng(seed)
    out = []
    for label in PATTERNS:
        for _ in range(n_per_class):
            tokens = tokens_for(rng, min_len, max_len)
            out.append(SyntheticMap(synthetic_map(label, tokens, rng, kind), tokens, label))
    return out
