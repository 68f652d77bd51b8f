"""The paper's CNN attention-pattern classifier (P§5.2; docs/algorithms.md#attention-patterns): training, checkpoints, prediction.

Architecture, exactly as the paper describes it: Conv(1->16,3) ReLU Conv(16->16,3) ReLU MaxPool2,
Conv(16->32,3) ReLU Conv(32->32,3) ReLU MaxPool2, Conv(32->64,3) ReLU Conv(64->64,3) ReLU,
Conv(64->16,1), global average pool, Conv(16->C,1); Xavier-normal weights, zero biases. The 3x3
convolutions pad by 1 (the paper does not say; padding lets maps of any size through, and a 1x1
convolution after global pooling is a linear layer over the 16 pooled channels).

Input: one map as a single channel, zero-padded (bottom and right) to the largest training map, the
checkpoint's ``input_size``; a larger map at prediction time keeps its own size (the network is fully
convolutional). Norm-based maps are row-normalised first (their scale varies from model to model;
raw maps are already rows of probabilities).

Training: Adam (lr 1e-3), batch 64, 200 epochs, stratified 80/20 train/validation split, the
checkpoint of the epoch with the best validation weighted F1 kept. A checkpoint is a folder::

    CKPT/model.safetensors    the weights
    CKPT/classifier.json      classes, kind, input_size, the validation F1s, training settings

Labelled data comes in two layouts (`load_labelled`):

- the toolkit's maps directory with a ``labels.json`` (see `maps_format`);
- the paper's: one ``.npy`` map per file and a labels text file with lines ``label = name1, name2, ...``.

Example:
    >>> result = train(load_labelled(["maps/rte"], "raw"), "raw", "cnn-raw", epochs=200)   # doctest: +SKIP
    >>> result.weighted_f1                                                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .maps_format import INDEX_FILE, KINDS, PATTERNS, Maps, parse_label_key, read_labels, row_normalised

__all__ = [
    "PatternCNN",
    "LabelledMaps",
    "TrainResult",
    "load_labelled",
    "read_paper_labels",
    "prepare",
    "pad_batch",
    "train",
    "load_classifier",
    "predict",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "bertlottery-attention-cnn/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "classifier.json"


class PatternCNN(nn.Module):
    """The paper's six-convolution classifier: ``(B, 1, S, S)`` maps -> ``(B, C)`` logits."""

    def __init__(self, num_classes: int):
        super().__init__()

        def conv(i: int, o: int, k: int = 3) -> nn.Conv2d:
            return nn.Conv2d(i, o, k, padding=k // 2)

        self.features = nn.Sequential(
            conv(1, 16), nn.ReLU(), conv(16, 16), nn.ReLU(), nn.MaxPool2d(2),
            conv(16, 32), nn.ReLU(), conv(32, 32), nn.ReLU(), nn.MaxPool2d(2),
            conv(32, 64), nn.ReLU(), conv(64, 64), nn.ReLU(),
            conv(64, 16, 1),
            nn.AdaptiveAvgPool2d(1),
            conv(16, num_classes, 1),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.features(maps).flatten(1)


def prepare(attention: np.ndarray, kind: str) -> np.ndarray:
    """A map as the network sees it: float32, norm maps row-normalised."""
    attention = np.asarray(attention, dtype=np.float32)
    return row_normalised(attention) if kind == "norm" else attention


def pad_batch(maps: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """``(B, 1, S, S)`` with every map zero-padded (bottom, right) to ``S = max(size, largest map)``."""
    side = max([size, *(m.shape[0] for m in maps)])
    out = torch.zeros(len(maps), 1, side, side)
    for i, m in enumerate(maps):
        out[i, 0, : m.shape[0], : m.shape[1]] = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))
    return out


# ---- labelled data ----------------------------------------------------------------------------------

_ALIASES = {
    "heterogenous": "heterogeneous",
    "vertical+diagonal": "vertical+diagonal",
    "diagonal+vertical": "vertical+diagonal",
    "verticaldiagonal": "vertical+diagonal",
    "diagonalvertical": "vertical+diagonal",
}


def _canonical_label(label: str, where: str) -> str:
    key = re.sub(r"[\s_\-]+", "", label.strip().lower())
    key = _ALIASES.get(key, key)
    if key not in PATTERNS:
        raise UserError(f"{where}: unknown pattern {label.strip()!r}; the labels are {', '.join(PATTERNS)}.")
    return key


@dataclass
class LabelledMaps:
    """Maps (each ``[T, T]``, already `prepare`d) with their labels and where each came from."""

    maps: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def extend(self, other: LabelledMaps) -> None:
        self.maps += other.maps
        self.labels += other.labels
        self.names += other.names


def read_paper_labels(path: str | os.PathLike) -> dict[str, str]:
    """The paper's labels file (``label = name1, name2, ...`` per line) as ``{name: label}``."""
    path = Path(path)
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "=" not in line:
            raise UserError(f"{path} line {number} is not 'label = name1, name2, ...': {line.strip()!r}")
        label, names = line.split("=", 1)
        label = _canonical_label(label, f"{path} line {number}")
        for name in filter(None, (n.strip() for n in names.split(","))):
            out[name.removesuffix(".npy")] = label
    return out


def _paper_labels_file(folder: Path) -> Path:
    candidates = sorted(p for p in folder.glob("*.txt") if "=" in p.read_text(errors="replace"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise UserError(f"{folder} needs exactly one labels file with lines 'label = name1, name2, ...' "
                        f"beside its .npy maps (found: {found}).")
    return candidates[0]


def load_labelled(sources: Sequence[str | os.PathLike], kind: str) -> LabelledMaps:
    """Labelled maps of ``kind`` from maps directories (``labels.json``) and folders in the paper's layout."""
    if kind not in KINDS:
        raise UserError(f"Unknown map kind {kind!r}; kinds are {', '.join(KINDS)}.")
    out = LabelledMaps()
    for source in sources:
        folder = Path(source)
        if (folder / INDEX_FILE).is_file():
            out.extend(_from_maps_dir(folder, kind))
        elif folder.is_dir() and any(folder.glob("*.npy")):
            out.extend(_from_paper_layout(folder, kind))
        else:
            raise UserError(f"{folder} is neither a maps directory (index.json + labels.json) nor a folder of "
                            f".npy maps with a labels file.")
    if not out.maps:
        raise UserError(f"No labelled {kind} maps in {', '.join(map(str, sources))}; label some first "
                        f"(`bertlottery annotate` or `bertlottery attention classify`).")
    return out


def _from_maps_dir(folder: Path, kind: str) -> LabelledMaps:
    maps = Maps(folder)
    by_example: dict[str, list[tuple[int, int, str, str]]] = {}
    for key, label in read_labels(folder).items():
        parsed = parse_label_key(key)
        if parsed.kind == kind:
            by_example.setdefault(parsed.example_id, []).append((parsed.layer, parsed.head, label, key))
    out = LabelledMaps()
    for example_id, entries in sorted(by_example.items()):
        arrays = maps.example(example_id, [kind])[kind]
        for layer, head, label, key in sorted(entries):
            out.maps.append(prepare(arrays[layer, head], kind))
            out.labels.append(label)
            out.names.append(f"{folder}/{key}")
    return out


def _from_paper_layout(folder: Path, kind: str) -> LabelledMaps:
    labels_file = _paper_labels_file(folder)
    labels = read_paper_labels(labels_file)
    out = LabelledMaps()
    for name, label in sorted(labels.items()):
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise UserError(f"{labels_file} labels {name!r}, but {path} does not exist.")
        m = np.load(path)
        m = np.squeeze(m)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise UserError(f"{path} holds an array of shape {m.shape}; a map is a square [T, T] array.")
        out.maps.append(prepare(m, kind))
        out.labels.append(label)
        out.names.append(str(path))
    return out


# ---- training --------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    kind: str
    classes: list[str]
    input_size: int
    best_epoch: int
    epochs: int
    weighted_f1: float
    per_class_f1: dict[str, float]
    n_train: int
    n_val: int
    seed: int
    seconds: float
    settings: dict[str, Any]
    history: list[dict[str, float]]

    def summary(self) -> str:
        lines = [f"{self.kind} maps: {self.n_train} train, {self.n_val} validation; best epoch {self.best_epoch}"
                 f"/{self.epochs}", f"{'pattern':<20}F1"]
        lines += [f"{c:<20}{f:.3f}" for c, f in self.per_class_f1.items()]
        lines.append(f"{'weighted':<20}{self.weighted_f1:.3f}")
        return "\n".join(lines)


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def train(
    data: LabelledMaps,
    kind: str,
    out: str | os.PathLike | None,
    *,
    epochs: int = 200,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the CNN on labelled maps, keep the best-validation epoch, save it to ``out`` (if given)."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    classes = [p for p in PATTERNS if p in set(data.labels)]
    if len(classes) < 2:
        raise UserError(f"Training needs at least two pattern types; the labelled maps have only {classes}.")
    counts = {c: data.labels.count(c) for c in classes}
    few = [c for c, n in counts.items() if n < 2]
    if few:
        raise UserError(f"A stratified split needs at least 2 maps of each type; {', '.join(few)} has fewer "
                        f"(counts: {counts}). Label more maps of it.")
    y = np.array([classes.index(label) for label in data.labels])
    train_idx, val_idx = train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y, random_state=seed)
    size = max(m.shape[0] for m in data.maps)
    x = pad_batch(data.maps, size)
    x_train, y_train = x[train_idx], torch.from_numpy(y[train_idx])
    x_val, y_val = x[val_idx], y[val_idx]

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    # channels-last makes these small convolutions 2-3x faster on CPU; the numbers are the same
    model = PatternCNN(len(classes)).to(device, memory_format=torch.channels_last)
    x_train = x_train.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    best = (-1.0, 0, None)
    history = []
    started = time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for idx in _batches(len(x_train), batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx].to(device)), y_train[idx].to(device))
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        predicted = _predict_logits(model, x_val).argmax(1).numpy()
        val_f1 = float(f1_score(y_val, predicted, average="weighted", labels=range(len(classes)), zero_division=0))
        record = {"epoch": epoch, "train_loss": total / len(x_train), "val_weighted_f1": val_f1}
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if val_f1 > best[0]:
            best = (val_f1, epoch, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    predicted = _predict_logits(model, x_val).argmax(1).numpy()
    per_class = f1_score(y_val, predicted, average=None, labels=range(len(classes)), zero_division=0)
    weighted = float(f1_score(y_val, predicted, average="weighted", labels=range(len(classes)), zero_division=0))
    result = TrainResult(
        kind=kind, classes=classes, input_size=size, best_epoch=best[1], epochs=epochs, weighted_f1=weighted,
        per_class_f1={c: float(f) for c, f in zip(classes, per_class, strict=True)}, n_train=len(train_idx),
        n_val=len(val_idx), seed=seed, seconds=round(time.time() - started, 2),
        settings={"batch_size": batch_size, "learning_rate": learning_rate, "val_fraction": val_fraction,
                  "optimizer": "adam"},
        history=history,
    )
    if out is not None:
        _save(out, model, result)
    return result


def _save(out: str | os.PathLike, model: nn.Module, result: TrainResult) -> None:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    meta = {"format": CHECKPOINT_FORMAT, **asdict(result)}
    tmp = out / f".{META_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / META_FILE)


def load_classifier(path: str | os.PathLike, device: str | None = None) -> tuple[PatternCNN, dict[str, Any]]:
    """A trained CNN and its ``classifier.json``."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise UserError(f"{path} is not a classifier checkpoint (no {META_FILE} and {WEIGHTS_FILE}); "
                        f"train one with `bertlottery attention train`.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{meta_path} has format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}.")
    model = PatternCNN(len(meta["classes"]))
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), meta


def predict(model: PatternCNN, meta: dict[str, Any], maps: Sequence[np.ndarray], *, prepared: bool = False,
            batch_size: int = 256) -> list[str]:
    """The pattern of each map (raw arrays of the checkpoint's kind unless ``prepared``)."""
    if not maps:
        return []
    maps = list(maps) if prepared else [prepare(m, meta["kind"]) for m in maps]
    labels: list[str] = []
    # group by padded size so one long map does not pad a whole batch
    side = meta["input_size"]
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(maps):
        groups.setdefault(max(side, m.shape[0]), []).append(i)
    out: list[str | None] = [None] * len(maps)
    for size, members in groups.items():
        x = pad_batch([maps[i] for i in members], size)
        predicted = _predict_logits(model, x, batch_size).argmax(1).tolist()
        for i, p in zip(members, predicted, strict=True):
            out[i] = meta["classes"][p]
    labels = [label for label in out if label is not None]
    return labels
