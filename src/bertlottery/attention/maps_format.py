"""The on-disk format of a set of attention maps, and the labels given to them.

A *maps directory* holds every head's attention map for a sample of dev examples of one task, from
one model (pre-trained or fine-tuned, optionally under a head/MLP mask)::

    MAPS_DIR/
      index.json          what the maps are (see below)
      maps/<example_id>.npz   one file per example: arrays "raw" and "norm", each float16 [L, H, T, T]
      labels.json         optional: pattern labels, written by `attention classify` or the annotator

``index.json``::

    {"format": "bertlottery-attention-maps/1",
     "model": "minilm-l6" | "/path/to/finetune/run",   # what was loaded
     "task": "RTE", "split": "dev",
     "weights": "pretrained" | "finetuned",
     "mask": null | "/path/to/mask.safetensors",        # the mask the model ran under
     "kinds": ["raw", "norm"],
     "layers": L, "heads": H,
     "head_mask": null | [[true, false, ...], ...],     # bool[layer, head], True = kept; null = all kept
     "norm_rows": "unnormalised",
     "seed": 0, "max_length": 128,
     "examples": [{"id": "ex000", "dev_index": 17, "tokens": ["[CLS]", ...], "n_tokens": T,
                   "segments": [0, 0, ..., 1, 1]}, ...]}

Conventions of a map ``m = maps[kind][layer, head]`` (a T x T array, T = the example's ``n_tokens``,
padding excluded):

- rows are query tokens i, columns key tokens j: ``m[i, j]`` is how much token i takes from token j.
- ``raw``: the attention probabilities alpha_ij; each row sums to 1 (up to float16 rounding).
- ``norm``: Kobayashi et al. (2020)'s ``||alpha_ij f_h(x_j)||`` with ``f_h(x) = (x W_V^h + b_V^h) W_O^h``,
  stored *unnormalised* (``norm_rows: "unnormalised"``): absolute L2 norms in hidden-state units, rows do
  not sum to 1. Use :func:`row_normalised` to compare with raw maps or to display on a fixed scale.
- a head that the mask removes has an all-zero map in both kinds (its output is zero; it has no pattern)
  and ``head_mask[layer][head]`` is false. Label nothing for it; :func:`iter_head_maps` skips it.

``labels.json`` is a flat object ``{"<example_id>/<layer>/<head>/<kind>": "<pattern>"}`` with layer and
head 0-based and pattern one of :data:`PATTERNS`, or :data:`UNSURE` (a person looked and could not
tell; kept so the annotator does not ask again, never a pattern). A missing key means "not labelled".
:func:`read_labels` leaves "unsure" out unless asked, so no classifier, count or agreement sees it.

Example:
    >>> import numpy as np, tempfile
    >>> d = tempfile.mkdtemp()
    >>> ex = Example("ex000", dev_index=3, tokens=["[CLS]", "hi", "[SEP]"], segments=[0, 0, 0])
    >>> raw = np.full((1, 2, 3, 3), 1 / 3, dtype=np.float32)
    >>> info = MapsIndex(model="tiny", task="RTE", weights="pretrained", layers=1, heads=2)
    >>> _ = save_maps(d, info, [(ex, {"raw": raw, "norm": raw * 2})])
    >>> maps = load_maps(d)
    >>> maps.index.examples[0].n_tokens, maps.example("ex000")["norm"].shape
    (3, (1, 2, 3, 3))
    >>> [(k.example_id, k.layer, k.head) for k, _ in maps.head_maps("raw")]
    [('ex000', 0, 0), ('ex000', 0, 1)]
    >>> write_labels(d, {label_key("ex000", 0, 1, "raw"): "block"})
    >>> read_labels(d)
    {'ex000/0/1/raw': 'block'}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, did_you_mean

__all__ = [
    "FORMAT",
    "KINDS",
    "PATTERNS",
    "UNSURE",
    "INDEX_FILE",
    "LABELS_FILE",
    "MAPS_SUBDIR",
    "Example",
    "MapsIndex",
    "HeadKey",
    "MapsWriter",
    "Maps",
    "save_maps",
    "load_maps",
    "load_index",
    "load_example",
    "iter_maps",
    "iter_head_maps",
    "label_key",
    "parse_label_key",
    "read_labels",
    "write_labels",
    "check_pattern",
    "row_normalised",
]

FORMAT = "bertlottery-attention-maps/1"
KINDS = ("raw", "norm")
# Kovaleva et al. (2019)'s five types, in the order figures and tables list them.
PATTERNS = ("diagonal", "block", "vertical", "vertical+diagonal", "heterogeneous")
# A hand label that is no pattern: the map was seen and could not be told apart.
UNSURE = "unsure"
INDEX_FILE = "index.json"
LABELS_FILE = "labels.json"
MAPS_SUBDIR = "maps"


@dataclass(frozen=True)
class Example:
    """One dev example whose maps are stored: ``tokens`` are the model's word pieces incl. specials."""

    id: str
    dev_index: int
    tokens: list[str]
    segments: list[int] | None = None  # token_type_ids; None for models without segments

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "dev_index": self.dev_index, "tokens": list(self.tokens), "n_tokens": self.n_tokens}
        if self.segments is not None:
            out["segments"] = [int(s) for s in self.segments]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Example:
        return cls(obj["id"], int(obj["dev_index"]), list(obj["tokens"]), obj.get("segments"))


@dataclass(frozen=True)
class MapsIndex:
    """The contents of ``index.json``; ``examples`` is filled by the writer as maps are added."""

    model: str
    task: str
    weights: str  # "pretrained" | "finetuned"
    layers: int
    heads: int
    kinds: tuple[str, ...] = KINDS
    mask: str | None = None
    head_mask: list[list[bool]] | None = None  # bool[layer, head], True = kept
    split: str = "dev"
    seed: int | None = None
    max_length: int | None = None
    norm_rows: str = "unnormalised"
    examples: tuple[Example, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (run ids, stage ids)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = FORMAT
        out["kinds"] = list(self.kinds)
        out["examples"] = [e.to_json() for e in self.examples]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "index.json") -> MapsIndex:
        if obj.get("format") != FORMAT:
            raise UserError(f"{where} has format {obj.get('format')!r}, expected {FORMAT!r}; "
                            f"write it with `bertlottery attention extract`.")
        return cls(
            model=obj["model"], task=obj["task"], weights=obj["weights"], layers=int(obj["layers"]),
            heads=int(obj["heads"]), kinds=tuple(obj["kinds"]), mask=obj.get("mask"),
            head_mask=obj.get("head_mask"), split=obj.get("split", "dev"), seed=obj.get("seed"),
            max_length=obj.get("max_length"), norm_rows=obj.get("norm_rows", "unnormalised"),
            examples=tuple(Example.from_json(e) for e in obj["examples"]), extra=dict(obj.get("extra") or {}),
        )

    def head_kept(self, layer: int, head: int) -> bool:
        return True if self.head_mask is None else bool(self.head_mask[layer][head])


@dataclass(frozen=True)
class HeadKey:
    """Which map: example, layer, head (0-based), kind."""

    example_id: str
    layer: int
    head: int
    kind: str

    @property
    def label_key(self) -> str:
        return label_key(self.example_id, self.layer, self.head, self.kind)


def label_key(example_id: str, layer: int, head: int, kind: str) -> str:
    """The key of one map in ``labels.json``: ``"ex000/3/7/raw"``."""
    return f"{example_id}/{int(layer)}/{int(head)}/{kind}"


def parse_label_key(key: str) -> HeadKey:
    parts = key.split("/")
    if len(parts) != 4 or parts[3] not in KINDS:
        raise UserError(f"Label key {key!r} is not '<example_id>/<layer>/<head>/<raw|norm>'.")
    try:
        return HeadKey(parts[0], int(parts[1]), int(parts[2]), parts[3])
    except ValueError:
        raise UserError(f"Label key {key!r} has a non-integer layer or head.") from None


def check_pattern(label: str, *, unsure: bool = False) -> str:
    """``label`` if it is a pattern (or, with ``unsure``, :data:`UNSURE`); UserError otherwise."""
    allowed = (*PATTERNS, UNSURE) if unsure else PATTERNS
    if label not in allowed:
        raise UserError(f"Unknown attention pattern {label!r}; one of {', '.join(allowed)}.{did_you_mean(label, allowed)}")
    return label


def _write_json(path: Path, obj: Any) -> None:
    # Same atomic rename as runs.write_json, kept here so the format has no dependency on the run layout.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is {path.parent} a maps directory written by "
                        f"`bertlottery attention extract`?") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}).") from None


class MapsWriter:
    """Write maps one example at a time (bounded memory); ``index.json`` is written on :meth:`close`.

    ``index.json`` appears last, so a directory without it is incomplete.
    """

    def __init__(self, out_dir: str | os.PathLike, index: MapsIndex):
        unknown = [k for k in index.kinds if k not in KINDS]
        if unknown:
            raise UserError(f"Unknown map kind {unknown[0]!r}; kinds are {', '.join(KINDS)}.")
        self.out_dir = Path(out_dir)
        self.index = index
        self.examples: list[Example] = []
        (self.out_dir / MAPS_SUBDIR).mkdir(parents=True, exist_ok=True)

    def add(self, example: Example, maps: Mapping[str, np.ndarray]) -> None:
        L, H, T = self.index.layers, self.index.heads, example.n_tokens
        arrays = {}
        for kind in self.index.kinds:
            if kind not in maps:
                raise ValueError(f"example {example.id}: no {kind!r} map")
            arr = np.asarray(maps[kind])
            if arr.shape != (L, H, T, T):
                raise ValueError(f"example {example.id}: {kind} maps have shape {arr.shape}, expected {(L, H, T, T)}")
            arrays[kind] = arr.astype(np.float16)
        path = self.out_dir / MAPS_SUBDIR / f"{example.id}.npz"
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        self.examples.append(example)

    def close(self) -> Path:
        index = MapsIndex(**{**self.index.__dict__, "examples": tuple(self.examples)})
        _write_json(self.out_dir / INDEX_FILE, index.to_json())
        self.index = index
        return self.out_dir

    def __enter__(self) -> MapsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def save_maps(
    out_dir: str | os.PathLike, index: MapsIndex, items: Iterable[tuple[Example, Mapping[str, np.ndarray]]]
) -> Path:
    """Write a maps directory from ``(example, {kind: float[L, H, T, T]})`` pairs; returns ``out_dir``."""
    with MapsWriter(out_dir, index) as writer:
        for example, maps in items:
            writer.add(example, maps)
    return Path(out_dir)


def load_index(maps_dir: str | os.PathLike) -> MapsIndex:
    path = Path(maps_dir) / INDEX_FILE
    return MapsIndex.from_json(_read_json(path), str(path))


def load_example(maps_dir: str | os.PathLike, example_id: str, kinds: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """``{kind: float32[L, H, T, T]}`` for one example."""
    path = Path(maps_dir) / MAPS_SUBDIR / f"{example_id}.npz"
    if not path.is_file():
        raise UserError(f"{path} does not exist; example {example_id!r} is not in {maps_dir}.")
    with np.load(path) as data:
        wanted = list(kinds) if kinds is not None else list(data.files)
        return {k: data[k].astype(np.float32) for k in wanted}


class Maps:
    """A maps directory opened for reading; maps are loaded from disk on demand."""

    def __init__(self, maps_dir: str | os.PathLike):
        self.dir = Path(maps_dir)
        self.index = load_index(self.dir)
        self._by_id = {e.id: e for e in self.index.examples}

    def __len__(self) -> int:
        return len(self.index.examples)

    def example_info(self, example_id: str) -> Example:
        try:
            return self._by_id[example_id]
        except KeyError:
            raise UserError(f"No example {example_id!r} in {self.dir}.{did_you_mean(example_id, self._by_id)}") from None

    def example(self, example_id: str, kinds: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        self.example_info(example_id)
        return load_example(self.dir, example_id, kinds)

    def head_map(self, example_id: str, layer: int, head: int, kind: str) -> np.ndarray:
        """One float32[T, T] map."""
        return self.example(example_id, [kind])[kind][layer, head]

    def __iter__(self) -> Iterator[tuple[Example, dict[str, np.ndarray]]]:
        return iter_maps(self.dir)

    def head_maps(self, kind: str, include_masked: bool = False) -> Iterator[tuple[HeadKey, np.ndarray]]:
        return iter_head_maps(self.dir, kind, include_masked=include_masked)

    def labels(self) -> dict[str, str]:
        return read_labels(self.dir)


def load_maps(maps_dir: str | os.PathLike) -> Maps:
    """Open a maps directory (index read now, maps lazily)."""
    return Maps(maps_dir)


def iter_maps(maps_dir: str | os.PathLike, kinds: Iterable[str] | None = None) -> Iterator[tuple[Example, dict[str, np.ndarray]]]:
    """``(example, {kind: float32[L, H, T, T]})`` in index order, one example in memory at a time."""
    index = load_index(maps_dir)
    for example in index.examples:
        yield example, load_example(maps_dir, example.id, kinds)


def iter_head_maps(
    maps_dir: str | os.PathLike, kind: str, include_masked: bool = False
) -> Iterator[tuple[HeadKey, np.ndarray]]:
    """``(HeadKey, float32[T, T])`` for every example, layer and head; masked heads skipped by default."""
    if kind not in KINDS:
        raise UserError(f"Unknown map kind {kind!r}; kinds are {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
    index = load_index(maps_dir)
    if kind not in index.kinds:
        raise UserError(f"{maps_dir} has no {kind!r} maps (it has {', '.join(index.kinds)}).")
    for example, maps in iter_maps(maps_dir, [kind]):
        arr = maps[kind]
        for layer in range(index.layers):
            for head in range(index.heads):
                if include_masked or index.head_kept(layer, head):
                    yield HeadKey(example.id, layer, head, kind), arr[layer, head]


def read_labels(maps_dir: str | os.PathLike, *, unsure: bool = False) -> dict[str, str]:
    """``labels.json`` as a dict (empty if there is none); every key and label is checked.

    Maps labelled :data:`UNSURE` are left out unless ``unsure`` (the annotator's own view).
    """
    path = Path(maps_dir) / LABELS_FILE
    if not path.is_file():
        return {}
    labels = _read_json(path)
    if not isinstance(labels, dict):
        raise UserError(f"{path} must hold an object {{'<example_id>/<layer>/<head>/<kind>': pattern}}.")
    for key, label in labels.items():
        parse_label_key(key)
        check_pattern(label, unsure=True)
    return {key: label for key, label in labels.items() if unsure or label != UNSURE}


def write_labels(maps_dir: str | os.PathLike, labels: Mapping[str, str], merge: bool = False) -> None:
    """Write ``labels.json`` atomically; ``merge=True`` keeps existing labels not in ``labels``."""
    for key, label in labels.items():
        parse_label_key(key)
        check_pattern(label, unsure=True)
    out = {**read_labels(maps_dir, unsure=True), **labels} if merge else dict(labels)
    _write_json(Path(maps_dir) / LABELS_FILE, out)


def row_normalised(m: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows of zeros stay zero): a norm map on the raw map's scale."""
    m = np.asarray(m, dtype=np.float32)
    sums = m.sum(axis=-1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
