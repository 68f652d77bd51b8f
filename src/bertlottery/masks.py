"""Mask types for heads, MLPs and single weights; set operations, sizes, files.

Convention everywhere: ``True`` means *kept*. ``heads: bool[layer, head]``, ``mlps: bool[layer]``,
``weights: {parameter name: bool[*parameter shape]}``.

A `Masks` bundle holds any of the three (s-pruning finds heads and MLPs together, m-pruning weights)
and is what goes to disk: one safetensors file, with the kind, model family, shape and the parameters
that created it in the file's metadata.

Example:
    >>> heads = HeadMask(torch.ones(6, 12, dtype=torch.bool))
    >>> (heads - HeadMask.random_like(heads, keep=36, seed=0)).n_kept
    108
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import UserError
from .models import Layout

if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are strings here, so 3.10 never evaluates it
    from typing_extensions import Self

__all__ = [
    "HeadMask",
    "MlpMask",
    "WeightMask",
    "Masks",
    "save_masks",
    "load_masks",
    "body_fraction_kept",
    "import_prasanna2020",
    "FORMAT",
]

FORMAT = "bertlottery.masks/1"


def _keep_tensor(values: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    """``values`` as a bool tensor on the CPU; anything but booleans or exactly 0 and 1 is refused.

    ``bool()`` would read 0.5, -1, inf and NaN as *kept*: a damaged or hand-made file would silently
    keep weights its author meant to prune.
    """
    keep = torch.as_tensor(values)
    if keep.dtype != torch.bool:
        wrong = ~((keep == 0) | (keep == 1))  # NaN compares unequal to both, so it is wrong too
        if bool(wrong.any()):
            found = keep[wrong].unique().tolist()[:5]
            raise UserError(f"{what} must hold 0/1 or booleans, found values {found}; re-create the mask.")
        keep = keep.bool()
    return keep.detach().cpu().clone()


class _BoolMask:
    """Set algebra shared by the structured masks (a single bool tensor)."""

    kind: str = ""
    keep: torch.Tensor

    def __init__(self, keep: torch.Tensor | np.ndarray):
        self.keep = _keep_tensor(keep, f"A {self.kind} mask")

    def _other(self, other: Self) -> torch.Tensor:
        if type(other) is not type(self):
            raise TypeError(f"cannot combine a {self.kind} mask with {type(other).__name__}")
        if other.keep.shape != self.keep.shape:
            raise UserError(
                f"{self.kind} masks of different shapes: {tuple(self.keep.shape)} and {tuple(other.keep.shape)}."
            )
        return other.keep

    def __and__(self, other: Self) -> Self:
        return type(self)(self.keep & self._other(other))

    def __or__(self, other: Self) -> Self:
        return type(self)(self.keep | self._other(other))

    def __sub__(self, other: Self) -> Self:
        """Kept here and not kept in ``other``."""
        return type(self)(self.keep & ~self._other(other))

    def __invert__(self) -> Self:
        return type(self)(~self.keep)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and torch.equal(self.keep, other.keep)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_kept}/{self.n_total} kept, shape={tuple(self.keep.shape)})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.keep.shape)

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def n_total(self) -> int:
        return self.keep.numel()

    @property
    def n_pruned(self) -> int:
        return self.n_total - self.n_kept

    def as_gates(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.keep.to(dtype)

    @classmethod
    def full(cls, *shape: int) -> Self:
        return cls(torch.ones(shape, dtype=torch.bool))

    @classmethod
    def random_like(cls, mask: Self, keep: int, seed: int) -> Self:
        """A mask of ``mask``'s shape keeping exactly ``keep`` elements drawn uniformly (seeded)."""
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(mask.n_total, generator=generator)[:keep]
        flat = torch.zeros(mask.n_total, dtype=torch.bool)
        flat[order] = True
        return cls(flat.view(mask.keep.shape))


class HeadMask(_BoolMask):
    """``keep: bool[layer, head]``."""

    kind = "heads"

    def __init__(self, keep: torch.Tensor | np.ndarray):
        super().__init__(keep)
        if self.keep.dim() != 2:
            raise UserError(f"A head mask is layers x heads, got shape {tuple(self.keep.shape)}.")


class MlpMask(_BoolMask):
    """``keep: bool[layer]``."""

    kind = "mlps"

    def __init__(self, keep: torch.Tensor | np.ndarray):
        super().__init__(keep)
        if self.keep.dim() != 1:
            raise UserError(f"An MLP mask has one entry per layer, got shape {tuple(self.keep.shape)}.")


class WeightMask:
    """``keep: {parameter name: bool tensor of that parameter's shape}``; absent parameters are unmasked."""

    kind = "weights"

    def __init__(self, keep: Mapping[str, torch.Tensor]):
        self.keep = {name: _keep_tensor(t, f"The weight mask of {name}") for name, t in keep.items()}

    def _other(self, other: WeightMask) -> dict[str, torch.Tensor]:
        if not isinstance(other, WeightMask):
            raise TypeError(f"cannot combine a weight mask with {type(other).__name__}")
        if set(other.keep) != set(self.keep):
            raise UserError("Weight masks over different parameter sets cannot be combined.")
        for name, t in other.keep.items():
            if t.shape != self.keep[name].shape:
                raise UserError(
                    f"Weight masks disagree on {name}: shapes {tuple(self.keep[name].shape)} and {tuple(t.shape)}."
                )
        return other.keep

    def _map(self, other: WeightMask, op) -> WeightMask:
        theirs = self._other(other)
        return WeightMask({n: op(t, theirs[n]) for n, t in self.keep.items()})

    def __and__(self, other: WeightMask) -> WeightMask:
        return self._map(other, torch.logical_and)

    def __or__(self, other: WeightMask) -> WeightMask:
        return self._map(other, torch.logical_or)

    def __sub__(self, other: WeightMask) -> WeightMask:
        return self._map(other, lambda a, b: a & ~b)

    def __invert__(self) -> WeightMask:
        return WeightMask({n: ~t for n, t in self.keep.items()})

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, WeightMask)
            and set(other.keep) == set(self.keep)
            and all(torch.equal(t, other.keep[n]) for n, t in self.keep.items())
        )

    def __repr__(self) -> str:
        return f"WeightMask({self.n_kept}/{self.n_total} kept over {len(self.keep)} tensors)"

    @property
    def n_kept(self) -> int:
        return sum(int(t.sum()) for t in self.keep.values())

    @property
    def n_total(self) -> int:
        return sum(t.numel() for t in self.keep.values())

    @property
    def n_pruned(self) -> int:
        return self.n_total - self.n_kept

    def per_tensor_kept(self) -> dict[str, int]:
        return {n: int(t.sum()) for n, t in self.keep.items()}


@dataclass
class Masks:
    """What one pruning run found: any of head, MLP and weight masks, plus how they were made."""

    heads: HeadMask | None = None
    mlps: MlpMask | None = None
    weights: WeightMask | None = None
    params: dict[str, Any] = field(default_factory=dict)  # creation parameters (method, seed, threshold, ...)
    family: str | None = None

    @property
    def kinds(self) -> list[str]:
        return [k for k in ("heads", "mlps", "weights") if getattr(self, k) is not None]

    def check_against(self, layout: Layout, parameter_shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
        """Refuse masks that do not fit the model, naming both shapes."""
        model_heads = (layout.num_layers, layout.num_heads)
        if self.heads is not None and self.heads.shape != model_heads:
            raise UserError(
                f"Head mask has shape {self.heads.shape} (layers x heads) but the model has {model_heads}; "
                "use a mask made for this model."
            )
        if self.mlps is not None and self.mlps.shape != (layout.num_layers,):
            raise UserError(
                f"MLP mask has {self.mlps.shape[0]} layers but the model has {layout.num_layers}; "
                "use a mask made for this model."
            )
        if self.weights is not None and parameter_shapes is not None:
            for name, t in self.weights.keep.items():
                if name not in parameter_shapes:
                    raise UserError(f"Weight mask names {name}, which the model does not have; use a mask made for it.")
                if tuple(t.shape) != tuple(parameter_shapes[name]):
                    raise UserError(
                        f"Weight mask for {name} has shape {tuple(t.shape)} but the model's is "
                        f"{tuple(parameter_shapes[name])}; use a mask made for this model."
                    )

    def body_fraction_kept(self, layout: Layout) -> float:
        return body_fraction_kept(layout, heads=self.heads, mlps=self.mlps, weights=self.weights)


def body_fraction_kept(
    layout: Layout,
    *,
    heads: HeadMask | None = None,
    mlps: MlpMask | None = None,
    weights: WeightMask | None = None,
) -> float:
    """Fraction of encoder-body parameters a mask keeps (embeddings, pooler, classifier excluded).

    A masked head removes its Q/K/V rows and output-projection columns; a masked MLP both of its
    projections with their biases. Heads and MLPs own disjoint parameters; a weight mask is counted
    weight by weight. Combining structured and weight masks would double-count their overlap, so
    it is refused.
    """
    if weights is not None and (heads is not None or mlps is not None):
        raise ValueError("size a weight mask and a structured mask separately")
    removed = 0
    if heads is not None:
        removed += heads.n_pruned * layout.params_per_head
    if mlps is not None:
        removed += mlps.n_pruned * layout.params_per_mlp
    if weights is not None:
        removed += weights.n_pruned
    return 1.0 - removed / layout.body_params


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_masks(path: str | os.PathLike, masks: Masks, layout: Layout | None = None) -> Path:
    """Write ``masks`` to one safetensors file, atomically (a crash never leaves a partial file)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    if masks.heads is not None:
        tensors["heads"] = masks.heads.keep.to(torch.uint8)
    if masks.mlps is not None:
        tensors["mlps"] = masks.mlps.keep.to(torch.uint8)
    if masks.weights is not None:
        for name, t in masks.weights.keep.items():
            tensors[f"weights/{name}"] = t.to(torch.uint8).contiguous()
    if not tensors:
        raise ValueError("nothing to save: the Masks bundle is empty")
    family = masks.family or (layout.family if layout else None)
    metadata = {
        "format": FORMAT,
        "kinds": ",".join(masks.kinds),
        "family": family or "",
        "params": json.dumps(masks.params, sort_keys=True, default=str),
    }
    if layout is not None:
        metadata.update(layers=str(layout.num_layers), heads=str(layout.num_heads))
    elif masks.heads is not None:
        metadata.update(layers=str(masks.heads.shape[0]), heads=str(masks.heads.shape[1]))
    if path.is_dir():
        raise UserError(f"Mask output {path} is a folder; give a file name such as {path / 'heads.safetensors'}.")
    tmp = _atomic_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except OSError as error:
        raise UserError(f"Cannot write mask file {path} ({error.strerror}: {error.filename}); "
                        "choose a writable path.") from None
    finally:
        if tmp.exists():  # after a failure: nothing half-written stays behind
            tmp.unlink()
    return path


def load_masks(
    path: str | os.PathLike,
    layout: Layout | None = None,
    parameter_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Masks:
    """Read a masks file; with ``layout`` (and ``parameter_shapes``) refuse one that does not fit."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Mask file {path} does not exist; give the .safetensors file a pruning step wrote.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise UserError(f"Mask file {path} is not a readable safetensors file ({error}); re-create it.") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path} is not a bertlottery mask file (no '{FORMAT}' in its metadata).")
    try:
        params = json.loads(metadata.get("params") or "{}")
    except json.JSONDecodeError as error:
        params = error
    if not isinstance(params, dict):
        raise UserError(f"Mask file {path}: its metadata 'params' is not a JSON object ({params}); re-create the file.")
    weights = {k.removeprefix("weights/"): t for k, t in tensors.items() if k.startswith("weights/")}
    try:
        masks = Masks(
            heads=HeadMask(tensors["heads"]) if "heads" in tensors else None,
            mlps=MlpMask(tensors["mlps"]) if "mlps" in tensors else None,
            weights=WeightMask(weights) if weights else None,
            params=params,
            family=metadata.get("family") or None,
        )
    except UserError as error:
        raise UserError(f"Mask file {path}: {error}") from None
    if layout is not None:
        masks.check_against(layout, parameter_shapes)
    return masks


def import_prasanna2020(seed_dir: str | os.PathLike, *, family: str = "bert") -> Masks:
    """Read one seed folder of the paper's released masks (``head_mask.npy``, ``mlp_mask.npy``: float 0/1).

    Layout: ``masks/<mode>/<TASK>/seed_<s>/``. A mode that pruned only heads (or only MLPs) released
    only that file; the other kind is then absent from the bundle, not assumed full.

    Example:
        >>> m = import_prasanna2020("../shared/reference/prasanna2020/masks/heads_mlps/CoLA/seed_1337")  # doctest: +SKIP
        >>> m.heads.n_kept, m.mlps.n_kept                                                                # doctest: +SKIP
        (95, 11)
    """
    seed_dir = Path(seed_dir)
    if not seed_dir.is_dir():
        raise UserError(f"Mask folder {seed_dir} does not exist; expected masks/<mode>/<TASK>/seed_<s>/.")
    files = {name: seed_dir / f"{name}_mask.npy" for name in ("head", "mlp")}
    if not any(f.is_file() for f in files.values()):
        raise UserError(f"{seed_dir} has neither head_mask.npy nor mlp_mask.npy; is it a seed_<s> folder?")
    params: dict[str, Any] = {"source": "prasanna2020", "path": str(seed_dir)}
    if seed_dir.name.startswith("seed_"):
        seed = seed_dir.name.removeprefix("seed_")
        if not seed.isdigit():
            raise UserError(f"Mask folder {seed_dir}: '{seed}' is not a seed; the paper's folders are "
                            "seed_<number> (rename it, or drop the seed_ prefix).")
        params["seed"] = int(seed)
    arrays = {name: _load_npy(f) for name, f in files.items() if f.is_file()}
    return Masks(
        heads=HeadMask(arrays["head"]) if "head" in arrays else None,
        mlps=MlpMask(arrays["mlp"]) if "mlp" in arrays else None,
        params=params,
        family=family,
    )


def _load_npy(path: Path) -> np.ndarray:
    """One released mask array; pickled (object) arrays stay refused, as they could run code."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # numpy's errors for pickles and truncated files
        raise UserError(f"{path} is not a readable .npy array ({error}); download the released masks again.") from None
    if array.dtype.kind not in "biuf":
        raise UserError(f"{path} holds {array.dtype} values, not a 0/1 mask; download the released masks again.")
    return array
