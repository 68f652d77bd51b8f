"""The pre-training text of the Gordon study: reading it (plain text files, a folder of them, or
``hub:<dataset>[:<config>]:<split>``), cutting the token stream into ``[CLS] ... [SEP]`` blocks of a
fixed length (as BERT's pre-training packs text, cached on disk), and masking it: a dev set masked
once with a fixed seed (every checkpoint's loss is measured on the very same masked tokens), and
the masking of training batches (transformers' ``DataCollatorForLanguageModeling``: 15% of tokens,
80/10/10 mask/random/keep).

Example:
    >>> blocks = make_blocks(read_texts(["wiki.txt"]), tokenizer, 128)               # doctest: +SKIP
    >>> dev = masked_dev_set(blocks[:64], tokenizer, seed=0)                         # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

__all__ = ["read_texts", "clean_wikitext", "make_blocks", "corpus_blocks", "MaskedSet", "masked_dev_set",
           "masking_collator", "mask_batch"]


def read_texts(sources: Sequence[str | os.PathLike]) -> list[str]:
    """The non-empty lines of every source, in order.

    A source is a text file, a folder (its ``*.txt``, ``*.raw`` and ``*.tokens`` files, sorted), or
    ``hub:<dataset>[:<config>]:<split>`` (a Hugging Face dataset with a ``text`` column).
    """
    lines: list[str] = []
    for source in sources:
        source = str(source)
        if source.startswith("hub:"):
            lines += _hub_texts(source)
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".raw", ".tokens"))
            if not files:
                raise UserError(f"Text folder {path} has no .txt, .raw or .tokens files.")
        elif path.is_file():
            files = [path]
        else:
            raise UserError(f"Text source {path} does not exist; give a text file, a folder of them, "
                            "or hub:<dataset>[:<config>]:<split>.")
        for file in files:
            lines += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def _hub_texts(source: str) -> list[str]:
    parts = source.removeprefix("hub:").split(":")
    if len(parts) not in (2, 3):
        raise UserError(f"A hub corpus is hub:<dataset>[:<config>]:<split>, got {source}.")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    try:
        import datasets
    except ImportError:
        raise UserError("A hub corpus needs the datasets package: pip install datasets.") from None
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as error:  # datasets raises many types for a missing name, config or network
        raise UserError(f"Could not load {source} ({type(error).__name__}: {str(error).splitlines()[0][:160]}).") from None
    if "text" not in data.column_names:
        raise UserError(f"{source} has no 'text' column (it has {', '.join(data.column_names)}).")
    return [t.strip() for t in data["text"] if t and t.strip()]


def clean_wikitext(line: str, unk_token: str = "[UNK]") -> str:
    """Undo WikiText's tokenisation: `` @-@ `` -> ``-``, `` @,@ `` -> ``,``, `` @.@ `` -> ``.``, and
    ``<unk>`` -> the tokenizer's unknown token (WordPiece would cut ``<unk>`` into four pieces)."""
    for marked, plain in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")):
        line = line.replace(marked, plain)
    return line.replace("<unk>", unk_token)


def make_blocks(
    texts: Sequence[str],
    tokenizer,
    length: int = 128,
    *,
    max_blocks: int | None = None,
    chunk: int = 2048,
) -> torch.Tensor:
    """``int32[blocks, length]``: the texts' tokens as one stream, cut into blocks of ``length - 2``
    and framed as ``[CLS] ... [SEP]``; a last partial block is dropped. Stops once ``max_blocks`` are full."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if start is None or end is None:
        raise UserError(f"Tokenizer {type(tokenizer).__name__} has no [CLS]/[SEP] (or <s>/</s>) tokens to frame blocks with.")
    inner = length - 2
    if inner < 1:
        raise UserError(f"A block of {length} tokens has no room for text between [CLS] and [SEP].")
    stream: list[int] = []
    blocks: list[list[int]] = []
    for i in range(0, len(texts), chunk):
        for ids in tokenizer(list(texts[i:i + chunk]), add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
        while len(stream) >= inner and (max_blocks is None or len(blocks) < max_blocks):
            blocks.append([start, *stream[:inner], end])
            del stream[:inner]
        if max_blocks is not None and len(blocks) >= max_blocks:
            break
    if not blocks:
        raise UserError(f"The text is shorter than one block of {length} tokens.")
    return torch.tensor(blocks, dtype=torch.int32)


def _source_identity(source: str) -> list:
    if source.startswith("hub:"):
        return [source]
    path = Path(source).expanduser().resolve()
    files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".raw", ".tokens")) if path.is_dir() else [path]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


def corpus_blocks(
    sources: Sequence[str],
    tokenizer,
    length: int = 128,
    *,
    text_format: str = "plain",
    max_blocks: int | None = None,
    cache_dir: Path | None = None,
) -> torch.Tensor:
    """`read_texts` + (WikiText clean-up) + `make_blocks`, cached on disk.

    The cache file is keyed by the sources (path, size, modification time), the format, the
    tokenizer, the block length and the cap, so a large corpus is tokenised once per study, not once
    per stage.
    """
    import hashlib
    import json

    import numpy as np

    from ..data import _tokenizer_identity, default_cache_dir

    key = json.dumps({"version": 1, "sources": [_source_identity(str(s)) for s in sources], "format": text_format,
                      "tokenizer": _tokenizer_identity(tokenizer), "length": length, "max_blocks": max_blocks},
                     sort_keys=True)
    root = (cache_dir or default_cache_dir()) / "mlm-blocks"
    path = root / f"{hashlib.sha256(key.encode()).hexdigest()}.npy"
    if path.is_file():
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt
    texts = read_texts(sources)
    if text_format == "wikitext":
        unk = tokenizer.unk_token or "[UNK]"
        texts = [clean_wikitext(t, unk) for t in texts]
    blocks = make_blocks(texts, tokenizer, length, max_blocks=max_blocks)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{path.name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            np.save(handle, blocks.numpy())
        os.replace(tmp, path)
    except OSError:
        pass  # no cache is slower, not wrong
    return blocks


@dataclass
class MaskedSet:
    """Blocks masked for MLM: ``input_ids`` and ``labels`` (``-100`` where no loss is taken), ``[N, T]``."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_masked(self) -> int:
        return int((self.labels != -100).sum())


def masking_collator(tokenizer, probability: float, seed: int):
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=seed)


def _special_mask(blocks: torch.Tensor, tokenizer) -> torch.Tensor:
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=blocks.dtype)
    return torch.isin(blocks, special).long()


def mask_batch(collator, blocks: torch.Tensor, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    special = _special_mask(blocks, tokenizer)
    examples = [{"input_ids": b.long(), "special_tokens_mask": s} for b, s in zip(blocks, special)]
    batch = collator(examples)
    return batch["input_ids"], batch["labels"]


def masked_dev_set(blocks: torch.Tensor, tokenizer, probability: float = 0.15, seed: int = 0) -> MaskedSet:
    """The dev blocks masked once with ``seed``: the same blocks and seed always give the same masks."""
    input_ids, labels = mask_batch(masking_collator(tokenizer, probability, seed), blocks, tokenizer)
    return MaskedSet(input_ids, labels)
