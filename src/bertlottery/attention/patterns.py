"""Label every map of a maps directory (or of a stream of maps) by rules or by a trained CNN.

The result is a *patterns record*, ``patterns.json``, beside (or instead of) the maps::

    {"format": "bertlottery-attention-patterns/1",
     "method": "rules" | "cnn", "classifiers": {"raw": CKPT, "norm": CKPT} (cnn only),
     "task", "model", "weights", "mask", "head_mask", "layers", "heads", "n_examples", "extra",
     "kinds": {"raw": {"head_counts": [[{pattern: n}, ...], ...],   # per layer, head: labels over examples
                       "head_labels": [[pattern | null, ...], ...]}, # the majority label; null = masked head
               "norm": {...}},
     "labels": {"<example_id>/<layer>/<head>/<kind>": pattern}}     # every map's label

A head's label is the majority label of its maps over the sampled examples; a tie goes to the type
listed first in ``PATTERNS`` (diagonal, block, vertical, vertical+diagonal, heterogeneous), so ties
never inflate the heterogeneous share, the paper's upper bound on linguistic heads.

`classify_dir` also writes ``labels.json`` (map labels of the examples the directory holds), which
the annotator shows and lets a person correct; an existing ``labels.json`` is kept unless told
otherwise, since it may hold a person's annotations.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, did_you_mean
from .maps_format import KINDS, LABELS_FILE, PATTERNS, Example, MapsIndex, label_key, load_index, iter_maps, write_labels

__all__ = ["PATTERNS_FILE", "PATTERNS_FORMAT", "METHODS", "Labeller", "majority", "label_stream",
           "classify_dir", "read_patterns", "write_patterns"]

PATTERNS_FILE = "patterns.json"
PATTERNS_FORMAT = "bertlottery-attention-patterns/1"
METHODS = ("rules", "cnn")


def majority(counts: Mapping[str, int]) -> str | None:
    """The most frequent label; ties go to the earliest in ``PATTERNS``; None if there are no labels."""
    if not counts or not any(counts.values()):
        return None
    top = max(counts.values())
    return next(p for p in PATTERNS if counts.get(p, 0) == top)


class Labeller:
    """Labels every kept head's maps of one example, by rules or by one trained CNN per kind."""

    def __init__(self, method: str = "rules", checkpoints: Sequence[str | os.PathLike] = (), kinds: Sequence[str] = KINDS):
        if method not in METHODS:
            raise UserError(f"Unknown classification method {method!r}; one of {', '.join(METHODS)}."
                            f"{did_you_mean(method, METHODS)}")
        self.method = method
        self.models: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.checkpoints: dict[str, str] = {}
        if method == "cnn":
            from .classifier import load_classifier

            if not checkpoints:
                raise UserError("--method cnn needs a trained classifier: --model CKPT (one per map kind); "
                                "train one with `bertlottery attention train`.")
            for path in checkpoints:
                model, meta = load_classifier(path)
                if meta["kind"] in self.models:
                    raise UserError(f"Two classifiers for {meta['kind']} maps; give one per kind.")
                self.models[meta["kind"]] = (model, meta)
                self.checkpoints[meta["kind"]] = str(path)
            kinds = [k for k in kinds if k in self.models]
        self.kinds = list(kinds)

    def label(self, example: Example, arrays: Mapping[str, np.ndarray], index: MapsIndex) -> dict[str, str]:
        """``{label key: pattern}`` for every kept head and every kind this labeller handles."""
        from .rules import label_map

        out = {}
        heads = [(layer, head) for layer in range(index.layers) for head in range(index.heads)
                 if index.head_kept(layer, head)]
        for kind in self.kinds:
            maps = [arrays[kind][layer, head] for layer, head in heads]
            if self.method == "rules":
                labels = [label_map(m, example.tokens).label for m in maps]
            else:
                from .classifier import predict

                model, meta = self.models[kind]
                labels = predict(model, meta, maps)
            for (layer, head), label in zip(heads, labels, strict=True):
                out[label_key(example.id, layer, head, kind)] = label
        return out


def label_stream(items: Iterable[tuple[Example, Mapping[str, np.ndarray]]], index: MapsIndex,
                 labeller: Labeller) -> dict[str, Any]:
    """The patterns record of a stream of ``(example, {kind: [L, H, T, T]})``; see the module docstring."""
    labels: dict[str, str] = {}
    counts = {k: [[Counter() for _ in range(index.heads)] for _ in range(index.layers)] for k in labeller.kinds}
    n = 0
    for example, arrays in items:
        n += 1
        for key, label in labeller.label(example, arrays, index).items():
            labels[key] = label
            _, layer, head, kind = key.rsplit("/", 3)
            counts[kind][int(layer)][int(head)][label] += 1
    kinds = {}
    for kind, grid in counts.items():
        kinds[kind] = {
            "head_counts": [[{p: c[p] for p in PATTERNS if c[p]} for c in row] for row in grid],
            "head_labels": [[majority(c) for c in row] for row in grid],
        }
    return {
        "format": PATTERNS_FORMAT, "method": labeller.method, "classifiers": labeller.checkpoints,
        "task": index.task, "model": index.model, "weights": index.weights, "mask": index.mask,
        "head_mask": index.head_mask, "layers": index.layers, "heads": index.heads, "n_examples": n,
        "extra": index.extra, "kinds": kinds, "labels": labels,
    }


def write_patterns(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    from ..runs import write_json

    return write_json(path, record)


def read_patterns(path: str | os.PathLike) -> dict[str, Any]:
    """A patterns record: ``patterns.json`` itself or a folder holding one."""
    from ..runs import read_json

    path = Path(path)
    if path.is_dir():
        path = path / PATTERNS_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; label the maps first with `bertlottery attention classify`.")
    record = read_json(path)
    if record.get("format") != PATTERNS_FORMAT:
        raise UserError(f"{path} is not a patterns record (format {record.get('format')!r}).")
    return record


def classify_dir(maps_dir: str | os.PathLike, method: str = "rules",
                 checkpoints: Sequence[str | os.PathLike] = (), *, overwrite_labels: bool = False) -> dict[str, Any]:
    """Label every map of a maps directory; writes ``patterns.json`` there, and ``labels.json`` unless one
    exists already (it may hold a person's annotations) and ``overwrite_labels`` is false."""
    index = load_index(maps_dir)
    labeller = Labeller(method, checkpoints, kinds=[k for k in KINDS if k in index.kinds])
    if not labeller.kinds:
        raise UserError(f"No classifier for the map kinds in {maps_dir} ({', '.join(index.kinds)}).")
    record = label_stream(iter_maps(maps_dir, labeller.kinds), index, labeller)
    if overwrite_labels or not (Path(maps_dir) / LABELS_FILE).is_file():
        write_labels(maps_dir, record["labels"])
    write_patterns(Path(maps_dir) / PATTERNS_FILE, record)
    return record
