"""Where good masks are found: the mask sets that the stability statistics summarise.

`load_mask_sets` reads the good masks of several tasks x seeds from any of three layouts:

(a) the paper's released masks, one *mode* folder::

        masks/heads_mlps/<TASK>/seed_<s>/{head_mask,mlp_mask}.npy      (also heads/, mlps/, *_super, ...)

    (or one task folder ``masks/heads_mlps/<TASK>/``). They are s-pruning masks of
    bert-base-uncased, so sizes are counted on bert-base's layout.
(b) a bertlottery study run directory (``bertlottery run``): the good mask of every finished prune
    stage (``mask.safetensors`` in its folder), grouped by task and method; the super-survivor
    stages' good masks are read too. Only the stages of the run's ``graph.json`` count: stages left
    on disk by an earlier config (changed caps, say) are not read (a run without ``graph.json``, from
    an older version, reads every finished stage on disk). The model's size comes from the
    fine-tuning stage's ``model/config.json``.
(c) a plain folder of bertlottery masks files, one per task and seed::

        DIR/<task>/<seed>.safetensors            (also seed<s>.safetensors, seed_<s>.safetensors)
        DIR/config.json                          optional: the model's Hugging Face config, for sizes

`keep_arrays` turns a `MaskSet` into the ``bool[seed, ...]`` arrays that `bertlottery.stats` and
`bertlottery.analysis.stability` take.

Example:
    >>> masks = load_mask_sets("../shared/reference/prasanna2020/masks/heads_mlps")   # doctest: +SKIP
    >>> keep_arrays(masks, "heads")["CoLA"].shape                                   # doctest: +SKIP
    (5, 12, 12)

Module-level imports stay light (no torch): the CLI imports this module to register its command.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import runs
from ..errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from ..masks import Masks
    from ..models import Layout
    from .rundir import StageInfo

__all__ = [
    "METHODS",
    "KINDS",
    "BERT_BASE_CONFIG",
    "MaskSet",
    "layout_from_config",
    "load_mask_sets",
    "keep_arrays",
]

METHODS = ("structured", "magnitude")
KINDS = ("heads", "mlps")
# The paper's released masks are for bert-base-uncased (Prasanna et al. 2020, section 3); its layer
# sizes, for counting weights.
BERT_BASE_CONFIG = {"model_type": "bert", "num_hidden_layers": 12, "num_attention_heads": 12,
                    "hidden_size": 768, "intermediate_size": 3072}
_SEED_FILE = re.compile(r"^(?:seed[_-]?)?(\d+)$")


@dataclass
class MaskSet:
    """Good masks of several tasks and seeds, and what is known about them.

    ``masks``: ``{task: {seed: Masks}}``, seeds ascending. ``source``: ``"prasanna2020"``, ``"run"`` or
    ``"directory"``. ``method``: ``"structured"`` (heads/MLPs) or ``"magnitude"`` (weights).
    ``layout``: the model's `bertlottery.models.Layout` when its size is known (else ``None``: no
    weight fractions). ``num_heads``: heads per layer (needed to split weight masks into heads).
    ``super_survivors``: ``{task: Masks}`` written by a run's super-survivor stages (the summary
    recomputes them from ``masks`` and says whether they agree). ``notes``: what the loader chose.
    """

    path: Path
    source: str
    method: str
    masks: dict[str, dict[int, Masks]]
    layout: Layout | None = None
    num_heads: int | None = None
    super_survivors: dict[str, Masks] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return list(self.masks)

    def seeds(self, task: str) -> list[int]:
        return list(self.masks[task])


# ---- model sizes -----------------------------------------------------------------------------------

def layout_from_config(config: Mapping[str, Any]) -> Layout:
    """The `Layout` of an encoder from its Hugging Face ``config.json`` contents, without building it.

    Every supported family's layer holds Q, K, V and the attention output projection (with biases),
    the two MLP projections (with biases) and two LayerNorms; ``body_params`` counts exactly those.
    """
    from ..models import Layout, adapter_for

    family = adapter_for(str(config.get("model_type", "bert"))).family
    sizes = {}
    for name, keys in (("layers", ("num_hidden_layers", "n_layers")), ("heads", ("num_attention_heads", "n_heads")),
                       ("hidden", ("hidden_size", "dim")), ("intermediate", ("intermediate_size", "hidden_dim"))):
        value = next((config[k] for k in keys if config.get(k) is not None), None)
        if value is None:
            raise UserError(f"The model config has no {' or '.join(keys)}; give a Hugging Face config.json.")
        sizes[name] = int(value)
    d, f = sizes["hidden"], sizes["intermediate"]
    per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * (2 * d)
    return Layout(family=family, num_layers=sizes["layers"], num_heads=sizes["heads"],
                  head_dim=d // sizes["heads"], hidden_size=d, intermediate_size=f,
                  body_params=sizes["layers"] * per_layer)


def _layout_of_file(path: Path) -> Layout | None:
    try:
        return layout_from_config(json.loads(path.read_text()))
    except (OSError, ValueError, UserError):
        return None


# ---- loading ---------------------------------------------------------------------------------------

def load_mask_sets(path: str | os.PathLike, method: str | None = None) -> MaskSet:
    """Good masks by task and seed from the paper's released layout, a run directory or a plain folder.

    ``method``: ``"structured"`` or ``"magnitude"``; ``None`` takes what the folder holds
    (structured when it holds both). Raises `UserError` for a path that is none of the layouts, or
    that holds no masks of ``method``.
    """
    if method is not None and method not in METHODS:
        from ..errors import did_you_mean

        raise UserError(f"Unknown pruning method '{method}'.{did_you_mean(method, METHODS)} Known: {', '.join(METHODS)}.")
    path = Path(path).expanduser()
    expected = ("expected the paper's masks/<mode>/ folder (<TASK>/seed_<s>/head_mask.npy), a bertlottery "
                "run directory (stages/prune/...) or a folder of <task>/<seed>.safetensors")
    if not path.is_dir():
        raise UserError(f"Mask folder {path} does not exist; {expected}.")
    if (path / runs.STAGES_DIR).is_dir():
        return _load_run(path, method)
    if _released_seed_dirs(path):
        return _load_released({path.name: path}, path, method)
    task_dirs = {p.name: p for p in sorted(path.iterdir()) if p.is_dir() and _released_seed_dirs(p)}
    if task_dirs:
        return _load_released(task_dirs, path, method)
    modes = sorted(p.name for p in path.iterdir() if p.is_dir() and any(_released_seed_dirs(t) for t in p.iterdir()
                                                                         if t.is_dir()))
    if modes:
        example = "heads_mlps" if "heads_mlps" in modes else modes[0]
        raise UserError(f"{path} holds several mask modes of the paper ({', '.join(modes)}); "
                        f"pass one of them, e.g. {path / example}.")
    if any(path.glob("*/*.safetensors")):
        return _load_directory(path, method)
    raise UserError(f"{path} holds no masks: {expected}.")


def _released_seed_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("seed_*")
                  if p.is_dir() and ((p / "head_mask.npy").is_file() or (p / "mlp_mask.npy").is_file()))


def _load_released(task_dirs: Mapping[str, Path], path: Path, method: str | None) -> MaskSet:
    from ..masks import import_prasanna2020

    if method == "magnitude":
        raise UserError(f"{path} holds the paper's s-pruning (head/MLP) masks; its magnitude masks were not "
                        "released. Use --method structured.")
    masks: dict[str, dict[int, Masks]] = {}
    for task, folder in task_dirs.items():
        by_seed = {}
        for seed_dir in _released_seed_dirs(folder):
            suffix = seed_dir.name.removeprefix("seed_")
            if not suffix.isdigit():
                raise UserError(f"{seed_dir}: seed folders are named seed_<integer>.")
            by_seed[int(suffix)] = import_prasanna2020(seed_dir)
        masks[task] = dict(sorted(by_seed.items()))
    shapes = {m.heads.shape for by_seed in masks.values() for m in by_seed.values() if m.heads is not None}
    layout = layout_from_config(BERT_BASE_CONFIG)
    notes = []
    if shapes and shapes != {(layout.num_layers, layout.num_heads)}:
        layout = None
        notes.append(f"head masks of shape {sorted(shapes)} are not bert-base's 12 x 12: weight fractions not computed")
    else:
        # the source is named by whoever shows the notes (the report's group, the CLI's header): not again here
        notes.append(f"weight fractions counted on bert-base-uncased's layout ({layout.num_layers} x "
                     f"{layout.num_heads} heads)")
    return MaskSet(path=path, source="prasanna2020", method="structured", masks=masks, layout=layout,
                   num_heads=layout.num_heads if layout else None, notes=notes)


def _newest(stages: Sequence[StageInfo]) -> StageInfo:
    return max(stages, key=lambda s: ((s.folder / runs.STAGE_FILE).stat().st_mtime, s.folder.name))


def _pick_method(available: set[str], method: str | None, where: Path) -> tuple[str, list[str]]:
    if not available:
        raise UserError(f"{where} holds no finished prune stages yet; run the study's prune stages first.")
    if method is None:
        chosen = "structured" if "structured" in available else sorted(available)[0]
        notes = [f"method {chosen} (the folder also holds {', '.join(sorted(available - {chosen}))}; "
                 "choose with --method)"] if len(available) > 1 else []
        return chosen, notes
    if method not in available:
        raise UserError(f"{where} holds no {method} masks, only {', '.join(sorted(available))}; "
                        f"use --method {sorted(available)[0]}.")
    return method, []


def _load_run(path: Path, method: str | None) -> MaskSet:
    from ..masks import load_masks
    from .rundir import NO_GRAPH, read_stages

    run = read_stages(path)
    done = [s for s in run.stages if s.state == "done"]
    found: dict[tuple[str, str, int], list[StageInfo]] = {}
    for stage in done:
        keys = stage.keys
        if (stage.kind != "prune" or not (stage.folder / runs.MASK_FILE).is_file()
                or keys.get("method") not in METHODS or keys.get("seed") is None):
            continue
        found.setdefault((stage.task, keys["method"], int(keys["seed"])), []).append(stage)
    chosen, notes = _pick_method({m for _, m, _ in found}, method, path)
    if not run.graph_known:
        notes.append(NO_GRAPH)
    left_behind = sum(1 for s in run.stray if s.kind == "prune" and (s.folder / runs.MASK_FILE).is_file())
    if left_behind:
        notes.append(f"{left_behind} finished prune stage(s) on disk are not in the run's config.json (its "
                     f"{runs.GRAPH_FILE}; left by an earlier config) and were not read")
    masks: dict[str, dict[int, Masks]] = {}
    first = None
    for (task, m, seed), stages in sorted(found.items()):
        if m != chosen:
            continue
        stage = _newest(stages)
        if len(stages) > 1:
            notes.append(f"{task} seed {seed}: {len(stages)} {m} prune stages (settings changed); "
                         f"using the newest, {stage.folder.name}")
        first = first or stage
        masks.setdefault(task, {})[seed] = load_masks(stage.folder / runs.MASK_FILE)
    masks = {task: dict(sorted(by_seed.items())) for task, by_seed in masks.items()}

    layout = None
    finetune = first.inputs.get("finetune") if first is not None else None
    if finetune:
        layout = _layout_of_file(runs.stage_path(path, finetune) / runs.MODEL_DIR / runs.CONFIG_FILE)
    if layout is None:
        notes.append("model size unknown (no fine-tuning stage config found): weight fractions not computed")

    supers: dict[str, Masks] = {}
    if chosen == "structured":
        by_task: dict[str, list[StageInfo]] = {}
        for stage in done:
            if stage.kind == "super" and (stage.folder / runs.subnetwork_file("good")).is_file():
                by_task.setdefault(stage.task, []).append(stage)
        supers = {task: load_masks(_newest(stages).folder / runs.subnetwork_file("good"))
                  for task, stages in sorted(by_task.items())}
    return MaskSet(path=path, source="run", method=chosen, masks=masks, layout=layout,
                   num_heads=layout.num_heads if layout else _heads_from_masks(masks), super_survivors=supers,
                   notes=notes)


def _heads_from_masks(masks: Mapping[str, Mapping[int, Masks]]) -> int | None:
    for by_seed in masks.values():
        for m in by_seed.values():
            if m.heads is not None:
                return m.heads.shape[1]
    return None


def _heads_in_metadata(file: Path) -> int | None:
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        heads = (f.metadata() or {}).get("heads")
    return int(heads) if heads and heads.isdigit() else None


def _load_directory(path: Path, method: str | None) -> MaskSet:
    from ..masks import load_masks

    loaded: dict[str, dict[int, Masks]] = {}
    heads_per_layer = None
    for task_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(task_dir.glob("*.safetensors")):
            match = _SEED_FILE.match(file.stem)
            if not match:
                raise UserError(f"{file}: in a folder of masks each file is <task>/<seed>.safetensors "
                                "(or seed<s>.safetensors); rename it.")
            seed = int(match.group(1))
            if seed in loaded.get(task_dir.name, {}):
                raise UserError(f"{task_dir} has two masks for seed {seed}; keep one.")
            loaded.setdefault(task_dir.name, {})[seed] = load_masks(file)
            heads_per_layer = heads_per_layer or _heads_in_metadata(file)

    def method_of(m: Masks) -> str:
        return "magnitude" if m.weights is not None else "structured"

    chosen, notes = _pick_method({method_of(m) for s in loaded.values() for m in s.values()}, method, path)
    masks = {task: dict(sorted((seed, m) for seed, m in by_seed.items() if method_of(m) == chosen))
             for task, by_seed in loaded.items()}
    masks = {task: by_seed for task, by_seed in masks.items() if by_seed}
    layout = _layout_of_file(path / runs.CONFIG_FILE) if (path / runs.CONFIG_FILE).is_file() else None
    if layout is None:
        notes.append(f"model size unknown (no {path / runs.CONFIG_FILE}): weight fractions not computed")
    num_heads = layout.num_heads if layout else (_heads_from_masks(masks) or heads_per_layer)
    return MaskSet(path=path, source="directory", method=chosen, masks=masks, layout=layout, num_heads=num_heads,
                   notes=notes)


def keep_arrays(mask_set: MaskSet, kind: str, tasks: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``{task: bool[seed, *shape]}`` of one structured kind (``"heads"`` or ``"mlps"``), seeds
    ascending, for the tasks (all, or ``tasks``) whose every seed has that kind. The input
    `bertlottery.stats` expects.
    """
    if kind not in KINDS:
        raise ValueError(f"kind is one of {KINDS}, got {kind!r}")
    stacked = {task: _stack(mask_set.masks[task], kind) for task in (mask_set.masks if tasks is None else tasks)}
    return {task: keep for task, keep in stacked.items() if keep is not None}


def _stack(by_seed: Mapping[int, Masks], kind: str) -> np.ndarray | None:
    import numpy as np

    parts = [getattr(m, kind) for m in by_seed.values()]
    if not parts or any(p is None for p in parts):
        return None
    return np.stack([p.keep.numpy() for p in parts])
