"""Stability of "good" masks across seeds, per task (E8, E9): load mask sets, summarise, print.

`load_mask_sets` reads the good masks of several tasks x seeds from any of three layouts:

(a) the paper's released masks, one *mode* folder::

        masks/heads_mlps/<TASK>/seed_<s>/{head_mask,mlp_mask}.npy      (also heads/, mlps/, *_super, ...)

    (or one task folder ``masks/heads_mlps/<TASK>/``). They are s-pruning masks of
    bert-base-uncased, so sizes are counted on bert-base's layout.
(b) a bertlottery study run directory (``bertlottery run``): the good mask of every finished prune
    stage ``stages/prune/<task>/seed<s>-<method>-<hash>/mask.safetensors``, grouped by task and
    method; super-survivor stages ``stages/super/<task>/...`` are read too. Only the stages of the
    run's ``config.json`` count: stages left on disk by an earlier config (changed caps, say) are not
    read. The model's size comes from the fine-tuning stage's ``model/config.json``.
(c) a plain folder of bertlottery masks files, one per task and seed::

        DIR/<task>/<seed>.safetensors            (also seed<s>.safetensors, seed_<s>.safetensors)
        DIR/config.json                          optional: the model's Hugging Face config, for sizes

`stability_summary` turns a `MaskSet` into a JSON-ready dict of per-task statistics
(`bertlottery.stats`); ``bertlottery stability MASK_DIR`` prints it as a table or as JSON.

Example:
    >>> masks = load_mask_sets("../shared/reference/prasanna2020/masks/heads_mlps")   # doctest: +SKIP
    >>> summary = stability_summary(masks)                                          # doctest: +SKIP
    >>> summary["tasks"]["CoLA"]["heads"]["kappa"]                                  # doctest: +SKIP
    0.228...

Module-level imports stay light (no torch): the CLI imports this module to register its command.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from .masks import Masks
    from .models import Layout

__all__ = [
    "METHODS",
    "BERT_BASE_CONFIG",
    "MaskSet",
    "layout_from_config",
    "load_mask_sets",
    "keep_arrays",
    "stability_summary",
    "format_summary",
    "importance_from_trace",
    "register",
]

METHODS = ("structured", "magnitude")
KINDS = ("heads", "mlps")
# The paper's masks are for bert-base-uncased (SPEC section 11); its layer sizes, for counting weights.
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
    from .models import Layout, adapter_for

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
        from .errors import did_you_mean

        raise UserError(f"Unknown pruning method '{method}'.{did_you_mean(method, METHODS)} Known: {', '.join(METHODS)}.")
    path = Path(path).expanduser()
    expected = ("expected the paper's masks/<mode>/ folder (<TASK>/seed_<s>/head_mask.npy), a bertlottery "
                "run directory (stages/prune/...) or a folder of <task>/<seed>.safetensors")
    if not path.is_dir():
        raise UserError(f"Mask folder {path} does not exist; {expected}.")
    if (path / "stages").is_dir():
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
    from .masks import import_prasanna2020

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
        notes.append("the paper's released masks: sizes counted on bert-base-uncased")
    return MaskSet(path=path, source="prasanna2020", method="structured", masks=masks, layout=layout,
                   num_heads=layout.num_heads if layout else None, notes=notes)


def _run_stage_ids(path: Path) -> set[str] | None:
    """Ids of the stages in the run's ``config.json``; None where there is none or it cannot be rebuilt
    (then every finished stage on disk counts, the newest of duplicates winning)."""
    from . import runs
    from .pipeline import graph_of_config

    try:
        return {stage.id for stage in graph_of_config(runs.read_json(path / runs.CONFIG_FILE))}
    except Exception:  # noqa: BLE001 - no config, or one this version cannot rebuild
        return None


def _newest(stage_dirs: Sequence[Path]) -> Path:
    return max(stage_dirs, key=lambda d: ((d / "stage.json").stat().st_mtime, d.name))


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
    from . import runs
    from .masks import load_masks

    found: dict[tuple[str, str, int], list[Path]] = {}
    records: dict[Path, dict[str, Any]] = {}
    own = _run_stage_ids(path)
    left_behind = 0
    for stage_file in sorted((path / "stages" / "prune").glob("*/*/stage.json")):
        folder = stage_file.parent
        if not (folder / runs.MASK_FILE).is_file():
            continue
        record = runs.read_json(stage_file)
        if own is not None and record.get("id") not in own:
            left_behind += 1
            continue
        keys = record.get("keys", {})
        if keys.get("method") not in METHODS or keys.get("seed") is None:
            continue
        records[folder] = record
        found.setdefault((record.get("task") or folder.parent.name, keys["method"], int(keys["seed"])), []).append(folder)
    chosen, notes = _pick_method({m for _, m, _ in found}, method, path)
    if left_behind:
        notes.append(f"{left_behind} finished prune stage(s) on disk are not in the run's config.json (left by "
                     "an earlier config) and were not read")
    masks: dict[str, dict[int, Masks]] = {}
    first_record = None
    for (task, m, seed), folders in sorted(found.items()):
        if m != chosen:
            continue
        folder = _newest(folders)
        if len(folders) > 1:
            notes.append(f"{task} seed {seed}: {len(folders)} {m} prune stages (settings changed); "
                         f"using the newest, {folder.name}")
        first_record = first_record or records[folder]
        masks.setdefault(task, {})[seed] = load_masks(folder / runs.MASK_FILE)
    masks = {task: dict(sorted(by_seed.items())) for task, by_seed in masks.items()}

    layout = None
    finetune = (first_record or {}).get("inputs", {}).get("finetune")
    if finetune:
        layout = _layout_of_file(path / "stages" / finetune / runs.MODEL_DIR / "config.json")
    if layout is None:
        notes.append("model size unknown (no fine-tuning stage config found): weight fractions not computed")

    supers: dict[str, Masks] = {}
    if chosen == "structured":
        by_task: dict[str, list[Path]] = {}
        for stage_file in (path / "stages" / "super").glob("*/*/stage.json"):
            if own is not None and runs.read_json(stage_file).get("id") not in own:
                continue
            if (stage_file.parent / "good.safetensors").is_file():
                by_task.setdefault(stage_file.parent.parent.name, []).append(stage_file.parent)
        supers = {task: load_masks(_newest(folders) / "good.safetensors") for task, folders in sorted(by_task.items())}
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
    from .masks import load_masks

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
    layout = _layout_of_file(path / "config.json") if (path / "config.json").is_file() else None
    if layout is None:
        notes.append(f"model size unknown (no {path / 'config.json'}): weight fractions not computed")
    num_heads = layout.num_heads if layout else (_heads_from_masks(masks) or heads_per_layer)
    return MaskSet(path=path, source="directory", method=chosen, masks=masks, layout=layout, num_heads=num_heads,
                   notes=notes)


def keep_arrays(mask_set: MaskSet, kind: str) -> dict[str, np.ndarray]:
    """``{task: bool[seed, *shape]}`` of one structured kind (``"heads"`` or ``"mlps"``), seeds
    ascending, for the tasks whose every seed has that kind. The input `bertlottery.stats` expects.
    """
    if kind not in KINDS:
        raise ValueError(f"kind is one of {KINDS}, got {kind!r}")
    stacked = {task: _stack(by_seed, kind) for task, by_seed in mask_set.masks.items()}
    return {task: keep for task, keep in stacked.items() if keep is not None}


def _stack(by_seed: Mapping[int, Masks], kind: str) -> np.ndarray | None:
    import numpy as np

    parts = [getattr(m, kind) for m in by_seed.values()]
    if not parts or any(p is None for p in parts):
        return None
    return np.stack([p.keep.numpy() for p in parts])


# ---- the summary -------------------------------------------------------------------------------------

def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    from . import stats

    mean, std = stats.survival_mean_std(values)
    return {"per_seed": list(values), "mean": float(mean), "std": float(std)}


def _kind_summary(keep: np.ndarray, seeds: list[int], alpha: float) -> dict[str, Any]:
    from . import stats

    kappa = stats.fleiss_kappa(keep)
    mean, std = stats.survival_mean_std(keep)
    return {
        "shape": list(keep.shape[1:]),
        "n_elements": int(keep[0].size),
        "kept_per_seed": [int(k.sum()) for k in keep],
        "kappa": kappa.value,
        "kappa_reason": kappa.reason,
        "cochran_q": stats.cochran_q(keep).to_dict(),
        "pairwise": stats.pairwise_cochran_q(keep, alpha).to_dict(labels=seeds),
        "survival_mean": mean,
        "survival_std": std,
        "super_survivors": int(stats.super_survivors(keep).sum()),
    }


def _structured_task(mask_set: MaskSet, task: str, alpha: float) -> dict[str, Any]:
    from . import stats

    seeds = mask_set.seeds(task)
    arrays = {kind: _stack(mask_set.masks[task], kind) for kind in KINDS}
    entry: dict[str, Any] = {"seeds": seeds}
    for kind, keep in arrays.items():
        entry[kind] = _kind_summary(keep, seeds, alpha) if keep is not None else None
    supers = {kind: stats.super_survivors(keep) if keep is not None else None for kind, keep in arrays.items()}
    layout = mask_set.layout
    entry["body_fraction_kept"] = _mean_std([
        stats.body_fraction(layout, m.heads.keep.numpy() if m.heads is not None else None,
                            m.mlps.keep.numpy() if m.mlps is not None else None)
        for m in mask_set.masks[task].values()]) if layout else None
    matches = None
    if task in mask_set.super_survivors:
        stage = mask_set.super_survivors[task]
        matches = all(getattr(stage, kind) is None or supers[kind] is None
                      or bool((getattr(stage, kind).keep.numpy() == supers[kind]).all()) for kind in KINDS)
    entry["super_survivors"] = {
        "heads": int(supers["heads"].sum()) if supers["heads"] is not None else None,
        "mlps": int(supers["mlps"].sum()) if supers["mlps"] is not None else None,
        "body_fraction": stats.body_fraction(layout, supers["heads"], supers["mlps"]) if layout else None,
        "matches_stage": matches,
    }
    return entry


def _magnitude_task(mask_set: MaskSet, task: str) -> dict[str, Any]:
    import numpy as np

    from . import stats
    from .masks import WeightMask, body_fraction_kept

    by_seed = mask_set.masks[task]
    weights = [m.weights for m in by_seed.values()]
    names = list(weights[0].keep)
    if any(set(w.keep) != set(names) for w in weights):
        raise UserError(f"{task}: the seeds' weight masks cover different tensors; were they made by the same study?")
    if mask_set.num_heads is None:
        raise UserError(f"{mask_set.path}: heads per layer unknown, so weights cannot be split into heads; "
                        "put the model's config.json next to the masks.")
    per_seed = [stats.weight_survival_by_component(w.keep, mask_set.num_heads) for w in weights]
    head_mean, head_std = stats.survival_mean_std([h for h, _ in per_seed])
    mlp_mean, mlp_std = stats.survival_mean_std([m for _, m in per_seed])
    always = {n: reduce(np.logical_and, (w.keep[n].numpy() for w in weights)) for n in names}  # one copy at a time
    n_always = int(sum(a.sum() for a in always.values()))
    layout = mask_set.layout
    total = weights[0].n_total
    return {
        "seeds": list(by_seed),
        "weights": {"n_weights": total, "kept_per_seed": [w.n_kept for w in weights],
                    "fraction_kept": _mean_std([w.n_kept / total for w in weights]),
                    "super_survivors": n_always, "super_survivor_fraction": n_always / total},
        "heads": {"shape": list(head_mean.shape), "survival_mean": head_mean, "survival_std": head_std},
        "mlps": {"shape": list(mlp_mean.shape), "survival_mean": mlp_mean, "survival_std": mlp_std},
        "body_fraction_kept": _mean_std([body_fraction_kept(layout, weights=w) for w in weights]) if layout else None,
        "super_survivors": {"body_fraction": body_fraction_kept(layout, weights=WeightMask(always)) if layout else None},
    }


def _cross_task(mask_set: MaskSet) -> tuple[dict[str, Any], list[str]]:
    from . import stats

    out, notes = {}, []
    seed_lists = {tuple(mask_set.seeds(t)) for t in mask_set.tasks}
    if len(seed_lists) > 1:
        notes.append("tasks have different seeds: overlaps pair seeds by position in ascending order")
    for kind in KINDS:
        keeps = keep_arrays(mask_set, kind)
        if len(keeps) < 2:
            continue
        overlap = stats.task_overlap(keeps)
        mean, std = stats.tasks_survived(keeps)
        out[kind] = {
            "tasks": overlap.tasks, "n_seeds": overlap.n_seeds,
            "overlap_mean": overlap.mean, "overlap_std": overlap.std,
            "super_overlap": stats.task_overlap(keeps, super_survivors=True).mean,
            "tasks_survived_mean": mean, "tasks_survived_std": std,
        }
    return out, notes


def stability_summary(mask_set: MaskSet, *, alpha: float = 0.05) -> dict[str, Any]:
    """Per task and component kind, how stable the good masks are across seeds (E8), and how tasks'
    masks overlap (E9). JSON-ready: numbers, lists and ``None`` (for undefined values), no NaN.

    Structured masks, per task (``summary["tasks"][task]``)::

        seeds: [int]
        heads, mlps: {                       # None when the masks do not hold that kind
            shape, n_elements, kept_per_seed: [int],
            kappa: float|None, kappa_reason: str|None,           # Fleiss' kappa (seeds = raters)
            cochran_q: {statistic, pvalue, df, reason},          # all seeds
            pairwise: {alpha, n_pairs, n_differ, n_identical, differ_fraction,
                       pairs: [{seeds: [a, b], statistic, pvalue, df, reason}]},
            survival_mean, survival_std: [[float]] (layers x heads) or [float] (layers),
            super_survivors: int}
        body_fraction_kept: {per_seed, mean, std} | None          # None when the model size is unknown
        super_survivors: {heads, mlps, body_fraction, matches_stage}

    plus ``summary["cross_task"][kind]`` (two tasks or more): ``tasks``, ``n_seeds``,
    ``overlap_mean``/``overlap_std`` (T x T, Fig. 19a/b), ``super_overlap`` (Fig. 19c/d),
    ``tasks_survived_mean``/``_std`` (Fig. 15).

    Magnitude masks, per task: ``seeds``; ``weights: {n_weights, kept_per_seed, fraction_kept,
    super_survivors, super_survivor_fraction}``; ``heads``/``mlps``: ``{shape, survival_mean,
    survival_std}`` where survival is the fraction of the component's weights kept (Fig. 1a);
    ``body_fraction_kept``; ``super_survivors: {body_fraction}``.
    """
    from . import stats

    if not 0 < alpha < 1:
        raise UserError(f"alpha must lie between 0 and 1, got {alpha}.")
    tasks = {}
    for task in mask_set.tasks:
        tasks[task] = (_structured_task(mask_set, task, alpha) if mask_set.method == "structured"
                       else _magnitude_task(mask_set, task))
    notes = list(mask_set.notes)
    cross: dict[str, Any] = {}
    if mask_set.method == "structured":
        cross, more = _cross_task(mask_set)
        notes += more
    layout = mask_set.layout
    return stats.jsonable({
        "path": str(mask_set.path), "source": mask_set.source, "method": mask_set.method, "alpha": alpha,
        "layout": {k: getattr(layout, k) for k in ("family", "num_layers", "num_heads", "hidden_size",
                                                    "intermediate_size", "body_params")} if layout else None,
        "notes": notes, "tasks": tasks, "cross_task": cross,
    })


# ---- text output --------------------------------------------------------------------------------------

def _num(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _mean_pm(values: Sequence[float], spec: str) -> str:
    from . import stats

    mean, std = stats.survival_mean_std(values)
    return f"{format(float(mean), spec)} ± {format(float(std), spec)}" if not math.isnan(std) else format(float(mean), spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [line(header), "  ".join("-" * w for w in widths), *map(line, rows)]


def format_summary(summary: Mapping[str, Any]) -> str:
    """`stability_summary`'s result as readable text tables (what ``bertlottery stability`` prints)."""
    source = {"prasanna2020": "the paper's released masks", "run": "run directory",
              "directory": "folder of masks"}.get(summary["source"], summary["source"])
    test = f"; Cochran's Q at alpha {summary['alpha']}" if summary["method"] == "structured" else ""
    out = [f"Stability of good masks across seeds: {summary['path']}",
           f"({source}; method {summary['method']}{test})", ""]
    tasks = summary["tasks"]
    reasons = []
    if summary["method"] == "structured":
        for kind in KINDS:
            rows = []
            for task, entry in tasks.items():
                e = entry[kind]
                if e is None:
                    continue
                q = e["cochran_q"]
                pw = e["pairwise"]
                rows.append([task, len(entry["seeds"]), f"{_mean_pm(e['kept_per_seed'], '.1f')} / {e['n_elements']}",
                             _num(e["kappa"], ".3f"), _num(q["statistic"], ".2f"), _num(q["pvalue"], ".2g"),
                             f"{pw['n_differ']}/{pw['n_pairs']}", e["super_survivors"]])
                for what, reason in (("kappa", e["kappa_reason"]), ("Cochran's Q", q["reason"])):
                    if reason:
                        reasons.append(f"{task} {kind}: {what} undefined: {reason}")
            if rows:
                out += [{"heads": "Heads", "mlps": "MLPs"}[kind], *_table(
                    ["task", "seeds", "kept per seed", "kappa", "Q", "p", "pairs differ", "super"], rows), ""]
        rows = []
        for task, entry in tasks.items():
            size, sup = entry["body_fraction_kept"], entry["super_survivors"]
            rows.append([task, f"{_mean_pm(size['per_seed'], '.1%')}" if size else "n/a",
                         _num(sup["heads"], "d"), _num(sup["mlps"], "d"), _num(sup["body_fraction"], ".1%")])
        out += ["encoder-body weights kept (good masks) and super-survivors (kept in every seed)",
                *_table(["task", "good mask size", "super heads", "super MLPs", "super size"], rows), ""]
    else:
        rows = []
        for task, entry in tasks.items():
            w = entry["weights"]
            heads = [v for row in entry["heads"]["survival_mean"] for v in row if v is not None]
            mlps = [v for v in entry["mlps"]["survival_mean"] if v is not None]
            rows.append([task, len(entry["seeds"]), _mean_pm(w["fraction_kept"]["per_seed"], ".1%"),
                         f"{min(heads):.0%}-{max(heads):.0%}" if heads else "n/a",
                         f"{min(mlps):.0%}-{max(mlps):.0%}" if mlps else "n/a",
                         f"{w['super_survivor_fraction']:.1%}"])
        out += ["prunable weights kept; range over heads and MLPs of the mean % of their weights kept",
                *_table(["task", "seeds", "kept", "heads", "MLPs", "kept in every seed"], rows), ""]
    out += [f"note: {r}" for r in reasons] + [f"note: {n}" for n in summary["notes"]]
    return "\n".join(out).rstrip() + "\n"


# ---- importance distributions ----------------------------------------------------------------------

def importance_from_trace(path: str | os.PathLike, iterations: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """`bertlottery.stats.importance_at` of a structured prune step's ``trace.json`` (the file or
    its prune directory): head and MLP importance scores at the chosen 1-based iterations (Fig. 3)."""
    from . import runs, stats

    path = Path(path)
    if path.is_dir():
        path = path / "trace.json"
    return stats.importance_at(runs.read_json(path), iterations)


# ---- the command -----------------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser("stability", help="stability of good masks across seeds: Fleiss' kappa, Cochran's Q, "
                       "survival, super-survivors, task overlaps",
                       description="Reads the paper's released masks/<mode>/ folder, a study run directory, "
                       "or a folder of <task>/<seed>.safetensors.")
    p.add_argument("mask_dir", help="e.g. ../shared/reference/prasanna2020/masks/heads_mlps or runs/<study>")
    p.add_argument("--format", choices=["text", "json"], default="text", help="default %(default)s")
    p.add_argument("--method", choices=list(METHODS), default=None,
                   help="which masks of a run directory (default: structured if present)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of Cochran's Q (default %(default)s)")
    p.set_defaults(func=cmd_stability)


def cmd_stability(args) -> int:
    summary = stability_summary(load_mask_sets(args.mask_dir, args.method), alpha=args.alpha)
    if args.format == "json":
        print(json.dumps(summary, indent=1, allow_nan=False))
    else:
        print(format_summary(summary), end="")
    return 0
