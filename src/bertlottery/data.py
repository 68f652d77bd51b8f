"""GLUE examples -> token ids -> padded batches. Knows nothing about models.

Three steps, each usable alone:

1. :func:`load_split` reads a split from a local GLUE download (:func:`read_glue_split`) or the
   Hugging Face hub (:func:`load_hub_split`) into :class:`Example` objects with our class ids.
2. :func:`tokenize` turns examples into unpadded token ids, cached on disk.
3. :func:`make_loader` batches them, padding each batch only to its longest example.

Example:
    >>> from pathlib import Path
    >>> from transformers import AutoTokenizer
    >>> from bertlottery.tasks import get_task
    >>> task = get_task("RTE")
    >>> dev = load_split(task, "dev", Path("../shared/data/glue"))       # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained("bert-base-uncased")         # doctest: +SKIP
    >>> loader = make_loader(tokenize(dev, tok), tok.pad_token_id, 32,
    ...                      shuffle=False, seed=None)                   # doctest: +SKIP
    >>> batch = next(iter(loader))                                       # doctest: +SKIP
    >>> sorted(batch)                                                    # doctest: +SKIP
    ['attention_mask', 'index', 'input_ids', 'labels', 'token_type_ids']
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from bertlottery.errors import UserError, did_you_mean
from bertlottery.tasks import TaskSpec

__all__ = [
    "Example",
    "TokenizedSplit",
    "default_cache_dir",
    "load_hub_split",
    "load_split",
    "make_loader",
    "read_glue_split",
    "subset",
    "tokenize",
]

# Bump when the cache file layout or the tokenisation call changes, so old files are not reused.
_CACHE_VERSION = 1
# Tokenise in chunks so that the Python lists the tokenizer returns never hold a whole
# MNLI-sized split at once; each chunk is turned into compact int32 arrays straight away.
_TOKENIZE_CHUNK = 8192


@dataclass(frozen=True)
class Example:
    """One GLUE example.

    Attributes:
        text_a: First (or only) sentence, exactly as in the file.
        text_b: Second sentence, or ``None`` for single-sentence tasks.
        label: Class id in ``task.label_names`` order, or a float score for STS-B.
        source: Where the example comes from, if the file says (``task.columns.source``: STS-B's
            genre, CoLA's source publication), else ``None``. Metadata for stratified training
            caps, so it takes no part in equality: the same text and label are the same example.
    """

    text_a: str
    text_b: str | None
    label: int | float
    source: str | None = field(default=None, compare=False)


# ---------------------------------------------------------------------------------------------
# Reading


def _check_split(task: TaskSpec, split: str, known: Sequence[str]) -> None:
    if split not in known:
        raise UserError(
            f"Unknown split '{split}' for {task.name}.{did_you_mean(split, known)} "
            f"Known splits: {', '.join(known)}."
        )


def _parse_label(task: TaskSpec, value: str, where: str) -> int | float:
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise UserError(
                f"{where}: score '{value}' is not a finite number; {task.name} labels are "
                f"similarity scores such as 3.800. Fix the row or check the file is {task.name}'s."
            )
        return score
    try:
        return task.label_names.index(value)
    except ValueError:
        allowed = ", ".join(f"'{name}'" for name in task.label_names)
        raise UserError(
            f"{where}: label '{value}' is not one of {allowed}; fix the row or check the file "
            f"is {task.name}'s."
        ) from None


def read_glue_split(task: TaskSpec, glue_dir: Path, split: str) -> list[Example]:
    """Read one split of a standard GLUE download (``download_glue_data.py`` layout).

    The files are read as GLUE's own loaders read them: tab-separated, no quoting (SST-2 and
    CoLA sentences contain bare ``"``), UTF-8 with an optional byte-order mark (MRPC's header has
    one), with or without a final newline. Every malformed row is an error; none is skipped.

    Args:
        task: The task, e.g. ``get_task("MRPC")``.
        glue_dir: Folder holding ``CoLA/``, ``SST-2/``, ... .
        split: A key of ``task.splits``: ``"train"``, ``"dev"``, or MNLI's ``"dev_mismatched"``.

    Returns:
        The examples in file order, labels as class ids (floats for STS-B), each with its source
        where the file names one (``task.columns.source``).

    Raises:
        UserError: Missing folder or file, empty file, missing header column, a row with the wrong
            number of columns, or a label outside ``task.label_names``; the message names the
            file and line.

    Example:
        >>> from bertlottery.tasks import get_task
        >>> dev = read_glue_split(get_task("CoLA"), Path("../shared/data/glue"), "dev")  # doctest: +SKIP
        >>> dev[0]                                                                    # doctest: +SKIP
        Example(text_a='The sailors rode the breeze clear of the rocks.', text_b=None, label=1)
    """
    glue_dir = Path(glue_dir)
    if not glue_dir.is_dir():
        raise UserError(
            f"GLUE directory {glue_dir} does not exist; pass --glue-dir pointing at the folder "
            f"that holds CoLA/, SST-2/, ..."
        )
    _check_split(task, split, list(task.splits))
    task_dir = glue_dir / task.glue_dir
    path = task_dir / task.splits[split]
    layout = f"<glue-dir>/{task.glue_dir}/{task.splits[split]}, the layout of the standard GLUE download"
    if not task_dir.is_dir():
        raise UserError(f"{task.name} folder {task_dir} does not exist; expected {layout}.")
    if not path.is_file():
        raise UserError(f"{task.name} {split} file {path} does not exist; expected {layout}.")
    # A study's stages run one after another in one process and each reads its task's files again
    # (SST-2's train file: about 0.25 s a read): the parsed rows are kept for as long as the file is
    # unchanged (its size and modification time), and each caller gets its own list.
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, task, split)
    if key in _READ:
        return list(_READ[key])
    examples = _parse_glue_file(task, path, split, layout)
    _READ[key] = tuple(examples)
    while len(_READ) > _READ_KEPT:
        _READ.pop(next(iter(_READ)))
    return examples


# Parsed GLUE files of this process, oldest first (a study reads a few: its tasks' train and dev files).
_READ: dict[tuple, tuple[Example, ...]] = {}
_READ_KEPT = 8


def _parse_glue_file(task: TaskSpec, path: Path, split: str, layout: str) -> list[Example]:
    columns = task.columns
    examples: list[Example] = []
    # utf-8-sig drops MRPC's byte-order mark; newline="" lets csv see the real line ends.
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            rows = iter(reader)
            if columns.has_header:
                header = next(rows, None)
                if header is None:
                    raise UserError(f"{path} is empty; expected {task.name}'s GLUE {split} file ({layout}).")
                wanted = [c for c in (columns.text_a, columns.text_b, columns.label, columns.source) if c is not None]
                missing = [c for c in wanted if c not in header]
                if missing:
                    raise UserError(
                        f"{path}:1: header has no column '{missing[0]}' (found: {', '.join(header)}); "
                        f"expected {task.name}'s standard GLUE header."
                    )
                width = len(header)
                i_a, i_label = header.index(columns.text_a), header.index(columns.label)
                i_b = header.index(columns.text_b) if columns.text_b is not None else None
                i_source = header.index(columns.source) if columns.source is not None else None
            else:
                width = columns.num_columns
                i_a, i_b, i_label, i_source = columns.text_a, columns.text_b, columns.label, columns.source

            for row in rows:
                where = f"{path}:{reader.line_num}"
                if len(row) != width:
                    raise UserError(
                        f"{where}: expected {width} tab-separated columns, found {len(row)}; fix or "
                        f"remove this row (GLUE files are read without quoting, so a stray tab or "
                        f"line break splits a row)."
                    )
                label = _parse_label(task, row[i_label], where)
                examples.append(Example(row[i_a], row[i_b] if i_b is not None else None, label,
                                        row[i_source] if i_source is not None else None))
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: unreadable TSV row ({e}); fix this row.") from None
        except UnicodeDecodeError as e:
            raise UserError(
                f"{path}: byte {e.start} is not UTF-8 ({e.reason}); re-download the GLUE file."
            ) from None

    if not examples:
        what = "has a header but no rows" if columns.has_header else "is empty"
        raise UserError(f"{path} {what}; expected {task.name}'s GLUE {split} file ({layout}).")
    return examples


def load_hub_split(task: TaskSpec, split: str) -> list[Example]:
    """Load one split of the task from the Hugging Face hub (``nyu-mll/glue``).

    Hub class ids are mapped to ours through the class names (``task.hub.label_names``): the hub
    numbers MNLI entailment=0, neutral=1, contradiction=2 while our ids follow the TSV's sorted
    names, so a model trained on local files and evaluated on hub data agrees.

    Args:
        task: The task.
        split: ``"train"``, ``"dev"``, or MNLI's ``"dev_mismatched"``.

    Returns:
        The examples in hub order.

    Raises:
        UserError: The hub could not be reached, or the dataset is not shaped as expected.

    Example:
        >>> from bertlottery.tasks import get_task
        >>> mnli = load_hub_split(get_task("MNLI"), "dev_mismatched")    # doctest: +SKIP
    """
    _check_split(task, split, list(task.hub.splits))
    hub_split = task.hub.splits[split]
    import datasets  # deferred: importing datasets costs about a second and most runs read local files

    try:
        ds = datasets.load_dataset(task.hub_id, task.hub_config, split=hub_split)
    except Exception as e:  # noqa: BLE001 - any failure here means "no hub", and the fix is the same
        reason = " ".join(str(e).split())[:200]
        raise UserError(
            f"Could not load {task.name} split '{hub_split}' from the Hugging Face hub "
            f"({task.hub_id}, config '{task.hub_config}'): {type(e).__name__}: {reason}; check the "
            f"network, or pass --glue-dir pointing at a local GLUE download."
        ) from None

    hub = task.hub
    source = f"hub dataset {task.hub_id}/{task.hub_config} split '{hub_split}'"
    for column in (hub.text_a, hub.text_b, "label"):
        if column is not None and column not in ds.column_names:
            raise UserError(
                f"{source} has no column '{column}' (found: {', '.join(ds.column_names)}); pass "
                f"--glue-dir to read the standard GLUE files instead."
            )
    texts_a = list(ds[hub.text_a])
    texts_b = list(ds[hub.text_b]) if hub.text_b is not None else [None] * len(texts_a)
    hub_labels = list(ds["label"])

    if task.is_regression:
        labels: list[int | float] = [float(v) for v in hub_labels]
    else:
        names = getattr(ds.features["label"], "names", None)
        if not names:
            raise UserError(
                f"{source}: the label column has no class names, so its ids cannot be matched to "
                f"{task.name}'s labels; pass --glue-dir to read the standard GLUE files instead."
            )
        unknown = [n for n in names if n not in hub.label_names]
        if unknown:
            raise UserError(
                f"{source}: unknown class name '{unknown[0]}' (expected {', '.join(hub.label_names)}); "
                f"pass --glue-dir to read the standard GLUE files instead."
            )
        ours = [hub.label_names.index(n) for n in names]
        labels = []
        for i, v in enumerate(hub_labels):
            if not 0 <= v < len(ours):
                raise UserError(
                    f"{source}: row {i} has label {v} (unlabelled); only labelled splits "
                    f"(train, dev) can be used."
                )
            labels.append(ours[v])
    return [Example(a, b, y) for a, b, y in zip(texts_a, texts_b, labels, strict=True)]


def load_split(task: TaskSpec, split: str, glue_dir: Path | None) -> list[Example]:
    """Read a split from ``glue_dir`` if given, otherwise from the Hugging Face hub.

    Example:
        >>> from bertlottery.tasks import get_task
        >>> len(load_split(get_task("RTE"), "dev", Path("../shared/data/glue")))  # doctest: +SKIP
        277
    """
    if glue_dir is not None:
        return read_glue_split(task, Path(glue_dir), split)
    return load_hub_split(task, split)


# ---------------------------------------------------------------------------------------------
# Tokenising


@dataclass(frozen=True, eq=False)
class TokenizedSplit:
    """Unpadded token ids of a split, in example order.

    Attributes:
        input_ids: One ``int32[length]`` array per example (views into one flat buffer).
        token_type_ids: Same shapes as ``input_ids``, or ``None`` if the tokenizer gives none.
        labels: ``int64[n]`` class ids, or ``float64[n]`` scores for regression.
        lengths: ``int64[n]`` tokens per example, special tokens included.
    """

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def is_regression(self) -> bool:
        """Whether the labels are float scores."""
        return bool(np.issubdtype(self.labels.dtype, np.floating))


def subset(split: TokenizedSplit, indices: Sequence[int]) -> TokenizedSplit:
    """The examples of ``split`` at ``indices``, in that order (the arrays are shared, not copied).

    >>> import numpy as np
    >>> split = TokenizedSplit([np.array([1, 2]), np.array([3])], None, np.array([0, 1]), np.array([2, 1]))
    >>> subset(split, [1]).labels.tolist()
    [1]
    """
    chosen = np.asarray(indices, dtype=np.int64)
    return TokenizedSplit(
        input_ids=[split.input_ids[i] for i in chosen],
        token_type_ids=[split.token_type_ids[i] for i in chosen] if split.token_type_ids is not None else None,
        labels=split.labels[chosen],
        lengths=split.lengths[chosen],
    )


def default_cache_dir() -> Path:
    """``$BERTLOTTERY_CACHE`` if set, else ``~/.cache/bertlottery``."""
    env = os.environ.get("BERTLOTTERY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bertlottery"


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The serialised fast tokenizer holds vocabulary, normaliser (lower-casing) and the
        # special-token template: everything that decides the ids. Its truncation and padding
        # entries only record the settings of the last call, so they are left out of the key.
        serialised = json.loads(backend.to_str())
        serialised.pop("truncation", None)
        serialised.pop("padding", None)
        state = json.dumps(serialised, sort_keys=True)
    else:
        state = json.dumps(
            [sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "do_lower_case", None)]
        )
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": int(tokenizer.vocab_size),
        "len": len(tokenizer),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "state_sha256": hashlib.sha256(state.encode()).hexdigest(),
    }


def _cache_key(examples: Sequence[Example], tokenizer: Any, max_length: int) -> str:
    h = hashlib.sha256()
    header = {
        "version": _CACHE_VERSION,
        "max_length": max_length,
        "tokenizer": _tokenizer_identity(tokenizer),
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for ex in examples:
        # One JSON line per example frames the fields unambiguously (no "ab"+"c" == "a"+"bc").
        h.update(b"\n")
        h.update(json.dumps([ex.text_a, ex.text_b, ex.label]).encode())
    return h.hexdigest()


# The cache is a NumPy .npz of flat int32 arrays plus lengths: it loads in milliseconds, needs no
# pickle (np.load(allow_pickle=False) cannot run code from a tampered file), and stores a ragged
# split without padding. Arrow via `datasets` would also work but adds a heavy import for no gain.
def _save(path: Path, split: TokenizedSplit) -> None:
    arrays = {
        "input_ids": np.concatenate(split.input_ids) if len(split) else np.zeros(0, np.int32),
        "labels": split.labels,
        "lengths": split.lengths,
    }
    if split.token_type_ids is not None:
        arrays["token_type_ids"] = (
            np.concatenate(split.token_type_ids) if len(split) else np.zeros(0, np.int32)
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    except OSError as e:
        raise UserError(
            f"Cannot write the tokenisation cache in {path.parent} ({e.strerror}); set "
            f"BERTLOTTERY_CACHE to a writable folder."
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        # A reader never sees a half-written file: the name appears only once the data is complete.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split_flat(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _load(path: Path) -> TokenizedSplit:
    with np.load(path, allow_pickle=False) as z:
        lengths = z["lengths"]
        token_type_ids = _split_flat(z["token_type_ids"], lengths) if "token_type_ids" in z.files else None
        return TokenizedSplit(_split_flat(z["input_ids"], lengths), token_type_ids, z["labels"], lengths)


def _run_tokenizer(examples: Sequence[Example], tokenizer: Any, max_length: int) -> TokenizedSplit:
    n = len(examples)
    input_ids: list[np.ndarray | None] = [None] * n
    token_type_ids: list[np.ndarray | None] = [None] * n
    has_types = True
    # Single sentences and pairs need different tokenizer calls; a task has only one kind, but
    # grouping keeps mixed input correct too.
    singles = [i for i, ex in enumerate(examples) if ex.text_b is None]
    pairs = [i for i, ex in enumerate(examples) if ex.text_b is not None]
    for group, is_pair in ((singles, False), (pairs, True)):
        for start in range(0, len(group), _TOKENIZE_CHUNK):
            chunk = group[start : start + _TOKENIZE_CHUNK]
            texts_a = [examples[i].text_a for i in chunk]
            texts_b = [examples[i].text_b for i in chunk] if is_pair else None
            encoded = tokenizer(
                texts_a,
                texts_b,
                truncation="longest_first",
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
            )
            types = encoded.get("token_type_ids")
            has_types = has_types and types is not None
            for j, i in enumerate(chunk):
                input_ids[i] = np.asarray(encoded["input_ids"][j], dtype=np.int32)
                if types is not None:
                    token_type_ids[i] = np.asarray(types[j], dtype=np.int32)

    lengths = np.array([len(ids) for ids in input_ids], dtype=np.int64)
    regression = any(isinstance(ex.label, float) for ex in examples)
    labels = np.array([ex.label for ex in examples], dtype=np.float64 if regression else np.int64)
    types_or_none = token_type_ids if has_types and n else None
    return TokenizedSplit(input_ids, types_or_none, labels, lengths)  # type: ignore[arg-type]


def tokenize(
    examples: Sequence[Example],
    tokenizer: Any,
    max_length: int = 128,
    cache_dir: Path | None = None,
) -> TokenizedSplit:
    """Tokenise examples without padding, truncating pairs longest-first; cached on disk.

    The cache file is keyed by the examples' text and labels, the tokenizer (class, name, vocab
    size, and a hash of its serialised vocabulary and rules) and ``max_length``; a second call
    with the same inputs reads the file and never calls the tokenizer.

    Args:
        examples: From :func:`load_split`. Float labels make a regression split.
        tokenizer: A Hugging Face tokenizer (fast or slow).
        max_length: Longest sequence kept, special tokens included (the paper: 128).
        cache_dir: Cache root; default :func:`default_cache_dir`. Files go to ``tokenized/``.

    Returns:
        The token ids, labels and lengths, in example order.

    Raises:
        UserError: ``max_length`` cannot hold the special tokens, or the cache is not writable.

    Example:
        >>> from transformers import AutoTokenizer
        >>> tok = AutoTokenizer.from_pretrained("bert-base-uncased")   # doctest: +SKIP
        >>> split = tokenize([Example("a b c", None, 1)], tok)          # doctest: +SKIP
        >>> split.lengths                                               # doctest: +SKIP
        array([5])
    """
    examples = list(examples)
    needed = tokenizer.num_special_tokens_to_add(pair=any(ex.text_b is not None for ex in examples)) + 1
    if max_length < needed:
        raise UserError(
            f"max_length={max_length} cannot hold the tokenizer's special tokens and any text; use "
            f"at least {needed} (the paper used 128)."
        )
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = root / "tokenized" / f"{_cache_key(examples, tokenizer, max_length)}.npz"
    if path.is_file():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache file (e.g. a full disk during a copy) is rebuilt, not fatal
    split = _run_tokenizer(examples, tokenizer, max_length)
    _save(path, split)
    return split


# ---------------------------------------------------------------------------------------------
# Batching


class _Positions(Dataset):
    """Yields example positions; the collator gathers and pads the ids of a whole batch at once."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _PadCollator:
    """Positions -> dict of padded tensors (a class rather than a closure so workers can pickle it)."""

    def __init__(self, split: TokenizedSplit, pad_id: int, pad_to: int | None) -> None:
        self.split, self.pad_id, self.pad_to = split, pad_id, pad_to

    def __call__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        split = self.split
        index = np.asarray(positions, dtype=np.int64)
        lengths = split.lengths[index]
        width = self.pad_to if self.pad_to is not None else int(lengths.max())
        input_ids = np.full((len(index), width), self.pad_id, dtype=np.int64)  # (B, T)
        attention_mask = np.zeros((len(index), width), dtype=np.int64)  # (B, T), 1 = real token
        token_type_ids = None
        if split.token_type_ids is not None:
            token_type_ids = np.zeros((len(index), width), dtype=np.int64)
        for row, (i, n) in enumerate(zip(index, lengths)):
            input_ids[row, :n] = split.input_ids[i]
            attention_mask[row, :n] = 1
            if token_type_ids is not None:
                token_type_ids[row, :n] = split.token_type_ids[i]
        labels = split.labels[index]
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(labels.astype(np.float32 if split.is_regression else np.int64)),
            "index": torch.from_numpy(index),
        }
        if token_type_ids is not None:
            batch["token_type_ids"] = torch.from_numpy(token_type_ids)
        return batch


def make_loader(
    split: TokenizedSplit,
    tokenizer_pad_id: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None,
    group_by_length: bool = True,
    pad_to: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """Batches of padded tensors: ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the
    tokenizer made them), ``labels`` (long, or float32 for regression) and ``index``.

    ``index`` holds each row's position in ``split``, so a caller can put outputs back in example
    order: ``out[batch["index"]] = preds``. Each batch is padded to its own longest example
    unless ``pad_to`` is given.

    Orders:
        * ``shuffle=False, group_by_length=True`` (evaluation): examples sorted by length, longest
          first (ties keep file order), so padding is minimal.
        * ``shuffle=False, group_by_length=False``: file order.
        * ``shuffle=True, group_by_length=True`` (training): transformers' ``LengthGroupedSampler``:
          random megabatches (50 batches) sorted by length inside, the longest batch first.
        * ``shuffle=True, group_by_length=False``: a uniform random permutation.

    With ``shuffle=True`` the order comes from a generator seeded once with ``seed``: iterating the
    loader again (the next epoch) gives a new order, and a new loader with the same seed replays
    exactly the same sequence of epochs. ``seed=None`` draws from torch's global generator.

    Args:
        split: From :func:`tokenize`.
        tokenizer_pad_id: Id written into padding positions (``tokenizer.pad_token_id``).
        batch_size: Examples per batch; the last batch may be smaller.
        shuffle: Random order (training) or a fixed one (evaluation).
        seed: Seed of the data order when shuffling.
        group_by_length: Put examples of similar length together.
        pad_to: Pad every batch to this fixed width instead (for benchmarks against padding to 128).
        num_workers: ``DataLoader`` workers; padding is cheap, so 0 is usually fastest.

    Raises:
        UserError: ``batch_size`` < 1, or ``pad_to`` shorter than the longest example.

    Example:
        >>> split = TokenizedSplit([np.array([101, 7, 102]), np.array([101, 102])], None,
        ...                        np.array([1, 0]), np.array([3, 2]))
        >>> batch = next(iter(make_loader(split, 0, 2, shuffle=False, seed=None)))
        >>> batch["input_ids"].tolist(), batch["index"].tolist()
        ([[101, 7, 102], [101, 102, 0]], [0, 1])
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}.")
    longest = int(split.lengths.max()) if len(split) else 0
    if pad_to is not None and pad_to < longest:
        raise UserError(
            f"pad_to={pad_to} is shorter than the longest example ({longest} tokens); raise pad_to "
            f"or tokenize with max_length <= {pad_to}."
        )
    dataset = _Positions(len(split))
    collate = _PadCollator(split, tokenizer_pad_id, pad_to)
    common = {"collate_fn": collate, "num_workers": num_workers}

    if shuffle and len(split):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if group_by_length:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            sampler = LengthGroupedSampler(batch_size, lengths=split.lengths.tolist(), generator=generator)
        else:
            sampler = RandomSampler(dataset, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **common)

    if group_by_length:
        order = np.argsort(-split.lengths, kind="stable")
    else:
        order = np.arange(len(split))
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, **common)
