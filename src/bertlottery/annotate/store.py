"""What the annotation page labels: the items of a maps folder, their maps, and ``labels.json``.

A maps folder is the attention package's format (``bertlottery.attention.maps_format``): ``index.json``
and one ``maps/<example>.npz`` per example with float16 ``raw`` and ``norm`` arrays
``[layer, head, query, key]``. An *item* is one map, named by its ``labels.json`` key
``"<example>/<layer>/<head>/<kind>"``. Heads that the folder's head mask removed have all-zero maps
and are not items (there is no pattern to label).

>>> store = MapsStore("runs/attention/maps")              # doctest: +SKIP
>>> item = store.next_unlabelled()                        # doctest: +SKIP
>>> store.set_label(item.id, "vertical")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..attention import maps_format as fmt
from ..errors import UserError, did_you_mean

__all__ = ["LABELS", "CHOICES", "ORDER_FILE", "Item", "MapsStore", "OutsideFolder", "order_seed", "spread_heads"]

# Kovaleva et al. (2019)'s five pattern types, in the order of the page's keys 1-5.
LABELS = fmt.PATTERNS
# What a person may answer: a pattern, or "unsure" (key 6), which is saved but is no pattern.
CHOICES = (*LABELS, fmt.UNSURE)
# Where the annotator records the seed of the folder's shuffled order, so every start shows the same one.
ORDER_FILE = "annotate.json"

# Example ids become file names (maps/<id>.npz, the exported .npy names): letters, digits, _ . -
# only, never a leading dot, so no id can name a path outside the folder.
_EXAMPLE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class OutsideFolder(Exception):
    """A file the maps folder names resolves outside it (a symlink out, for example)."""


@dataclass(frozen=True)
class Item:
    """One map to label: ``index`` is its place in the store's order."""

    index: int
    example: str
    layer: int
    head: int
    kind: str

    @property
    def id(self) -> str:
        return fmt.label_key(self.example, self.layer, self.head, self.kind)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "example": self.example, "layer": self.layer,
                "head": self.head, "kind": self.kind}


class MapsStore:
    """The items of one maps folder, in a stable order, and their labels.

    ``kinds`` restricts the items to some map kinds (``["raw"]``); ``shuffle_seed`` orders them by a
    seeded permutation (the same on every start) instead of example, layer, head, kind. Labels are
    written to ``labels.json`` atomically after every change; labels of items outside the selection
    (another kind, say) are kept untouched.
    """

    def __init__(self, maps_dir: str | os.PathLike, *, kinds: list[str] | None = None,
                 shuffle_seed: int | None = None) -> None:
        self.root = Path(maps_dir).expanduser().resolve()
        if not (self.root / fmt.INDEX_FILE).is_file():
            raise UserError(f"{maps_dir} is not a maps folder (no {fmt.INDEX_FILE}); write one with "
                            "`bertlottery attention extract`.")
        try:
            for name in (fmt.INDEX_FILE, fmt.LABELS_FILE):
                if (self.root / name).exists():
                    self._inside(self.root / name)
        except OutsideFolder as error:
            raise UserError(f"Refusing {maps_dir}: {error}; copy the file into the folder instead.") from None
        self.index = fmt.load_index(self.root)
        for example in self.index.examples:
            if not _EXAMPLE_ID.fullmatch(example.id):
                raise UserError(f"{self.root / fmt.INDEX_FILE}: example id {example.id!r} is not a plain name "
                                "(letters, digits, _ . - only).")
        self.layers, self.heads = self.index.layers, self.index.heads
        all_kinds = list(self.index.kinds)
        for kind in kinds or []:
            if kind not in all_kinds:
                raise UserError(f"Unknown map kind {kind!r}; this folder has {', '.join(all_kinds)}."
                                + did_you_mean(kind, all_kinds))
        self.kinds = [k for k in all_kinds if not kinds or k in kinds]
        self.examples = {e.id: e for e in self.index.examples}
        items = [(e.id, layer, head, kind) for e in self.index.examples for layer in range(self.layers)
                 for head in range(self.heads) if self.index.head_kept(layer, head) for kind in self.kinds]
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(items)
            items = spread_heads(items)
        self.shuffle_seed = shuffle_seed
        self.items = [Item(i, *fields) for i, fields in enumerate(items)]
        self._by_id = {item.id: item for item in self.items}
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()  # last few examples read
        self._labels = fmt.read_labels(self.root, unsure=True)

    # --- reading ---------------------------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        """``path`` with symlinks resolved, refused if that leaves the maps folder."""
        real = path.resolve()
        if not real.is_relative_to(self.root):
            raise OutsideFolder(f"{path.name} resolves to {real}, outside the maps folder {self.root}")
        return real

    def item(self, item_id: str) -> Item:
        """The item with this id; KeyError (with a message) if the selection has none."""
        try:
            return self._by_id[item_id]
        except KeyError:
            raise KeyError(f"no map {item_id!r} in {self.root.name} (ids are <example>/<layer>/<head>/<kind>; "
                           f"{len(self.items)} maps, masked heads excluded)") from None

    def tokens(self, example: str) -> list[str]:
        return list(self.examples[example].tokens)

    def map_file(self, example: str) -> Path:
        """``maps/<example>.npz``, refused (OutsideFolder) if it resolves outside the folder."""
        return self._inside(self.root / fmt.MAPS_SUBDIR / f"{example}.npz")

    def load_map(self, item: Item) -> np.ndarray:
        """float32 [query, key] map of one item."""
        self.map_file(item.example)
        with self._lock:
            arrays = self._cache.get(item.example)
        if arrays is None:
            # a whole example at once: labelling moves through an example's heads in turn
            arrays = fmt.load_example(self.root, item.example, self.kinds)
            with self._lock:
                self._cache[item.example] = arrays
                while len(self._cache) > 2:
                    self._cache.popitem(last=False)
        full = arrays[item.kind]
        n = self.examples[item.example].n_tokens
        if full.shape != (self.layers, self.heads, n, n):
            raise ValueError(f"{item.example}.npz: {item.kind} has shape {full.shape}, expected "
                             f"{(self.layers, self.heads, n, n)} from index.json")
        return full[item.layer, item.head]

    # --- labels ----------------------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        """Labels of the selected items, by item id ("unsure" included: those maps were answered)."""
        with self._lock:
            return {k: v for k, v in self._labels.items() if k in self._by_id}

    def label_of(self, item_id: str) -> str | None:
        with self._lock:
            return self._labels.get(item_id)

    def n_labelled(self) -> int:
        return len(self.labels())

    def next_unlabelled(self, after: int = -1) -> Item | None:
        """The first unlabelled item after position ``after`` (wrapping round), or None if all are done."""
        with self._lock:
            n = len(self.items)
            for step in range(1, n + 1):
                item = self.items[(after + step) % n]
                if item.id not in self._labels:
                    return item
        return None

    def set_label(self, item_id: str, label: str | None) -> None:
        """Label one item (``None`` removes its label) and write ``labels.json`` atomically."""
        self.item(item_id)
        if label is not None:
            fmt.check_pattern(label, unsure=True)
        with self._lock:
            labels = dict(self._labels)
            if label is None:
                labels.pop(item_id, None)
            else:
                labels[item_id] = label
            fmt.write_labels(self.root, labels)  # temp file + os.replace: old file or new, never half
            self._labels = labels


def spread_heads(items: list[tuple[str, int, int, str]]) -> list[tuple[str, int, int, str]]:
    """``items`` (example, layer, head, kind) reordered as little as needed so that no two maps of one
    head of one example (its raw and norm maps) are next to each other: seen one after the other, the
    second would be labelled by memory of the first.

    Left to right, a map next to its twin is swapped with the first later map of another head; the
    last map, with no later one to swap with, moves to the first place between two other heads. (A
    head has at most two maps, raw and norm, so that place's neighbours never meet.) Only a folder of
    a single head has no such order; it is returned as it is.
    """
    out = list(items)
    head = [fields[:3] for fields in out]
    for i in range(1, len(out)):
        if head[i] != head[i - 1]:
            continue
        later = next((j for j in range(i + 1, len(out)) if head[j] != head[i - 1]), None)
        if later is not None:
            out[i], out[later] = out[later], out[i]
            head[i], head[later] = head[later], head[i]
            continue
        moved, its_head = out.pop(i), head.pop(i)
        gap = next((g for g in range(len(out) + 1)
                    if (g == 0 or head[g - 1] != its_head) and (g == len(out) or head[g] != its_head)), i)
        out.insert(gap, moved)
        head.insert(gap, its_head)
    return out


def order_seed(maps_dir: str | os.PathLike, requested: int | None = None) -> int:
    """The seed of the folder's shuffled order: ``requested`` if given, else the one recorded in
    ``ORDER_FILE`` by an earlier start, else a new random one; recorded for the next start either way."""
    path = Path(maps_dir) / ORDER_FILE
    seed = requested
    if seed is None and path.is_file():
        try:
            seed = json.loads(path.read_text())["shuffle_seed"]
        except (ValueError, KeyError, TypeError):  # not JSON, not UTF-8, not an object with the key
            seed = None
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"{path} is not the annotator's record of its order; delete it to draw a new "
                            "order, or pass --shuffle-seed.")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    if not path.is_file() or requested is not None:
        _write_order(path, seed)
    return seed


def _write_order(path: Path, seed: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps({"shuffle_seed": seed}, indent=2) + "\n")
        os.replace(tmp, path)  # the old record or the new one, never half of one
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot record the order in {path} ({error.strerror}); the page saves labels in "
                        "this folder too, so make it writable (or copy the maps folder somewhere writable).") from None
