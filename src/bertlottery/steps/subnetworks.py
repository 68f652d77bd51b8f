"""Good, random and bad masks of the same size, and super-survivors (``bertlottery subnetworks``;
Prasanna et al. 2020, sections 4-5). Each writes ``good``/``random``/``bad.safetensors`` and
``subnetworks.json`` (names in `bertlottery.runs`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import runs
from ..compat import get_compat
from ..errors import UserError
from ..masks import load_masks, save_masks
from ..sampling import bad_like, random_like, super_survivors

__all__ = ["make_subnetworks", "make_fisher_subnetworks", "make_super_survivors", "KIND"]

KIND = "subnetworks"  # the kind of output folder both write (`bertlottery.runs.check_output_dir`)


def _is_subnetworks_dir(path: Path) -> bool:
    """A subnetworks (or super-survivors) folder written before folders were marked."""
    return (path / runs.SUBNETWORKS_FILE).is_file()


def _check(out: str | os.PathLike, overwrite: bool) -> None:
    runs.check_output_dir(out, KIND, overwrite=overwrite, recognise=_is_subnetworks_dir, ask_to_replace=True)


def _staged(out: str | os.PathLike, overwrite: bool):
    return runs.staged_output(out, KIND, overwrite=overwrite, recognise=_is_subnetworks_dir, ask_to_replace=True)


def make_subnetworks(
    good_path: str | os.PathLike, out: str | os.PathLike, *, seed: int, compat: str | None = None,
    overwrite: bool = False, run_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write ``good``, ``random`` and ``bad`` masks of the same size into ``out``.

    A magnitude mask found with ``scope=local`` gets per-tensor counts; a global one a total count. A
    Fisher mask goes to `make_fisher_subnetworks` (``run_dir``: the fine-tuned run it was found on;
    default the one its metadata names).
    """
    _check(out, overwrite)
    good = load_masks(runs.mask_file_of(good_path))
    if good.params.get("method") == "fisher":
        return make_fisher_subnetworks(good_path, run_dir or good.params["run"], out, seed=seed, overwrite=overwrite)
    per_tensor = good.params.get("scope") == "local"
    random = random_like(good, seed, per_tensor=per_tensor, compat=get_compat(compat))
    bad = bad_like(good, seed, per_tensor=per_tensor)
    sizes = {}
    with _staged(out, overwrite) as scratch:
        for name, masks in (("good", good), ("random", random), ("bad", bad)):
            save_masks(scratch / runs.subnetwork_file(name), masks)
            sizes[name] = {k: getattr(masks, k).n_kept for k in masks.kinds}
        runs.write_json(scratch / runs.SUBNETWORKS_FILE, {"seed": seed, "compat": compat or "none",
                                                       "per_tensor": per_tensor, "kept": sizes,
                                                       "good": str(good_path)})
    return sizes


def make_fisher_subnetworks(
    prune_dir: str | os.PathLike, run_dir: str | os.PathLike, out: str | os.PathLike, *, seed: int,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Good, random and bad head + neuron masks of a Fisher search's size (``prune_dir``: its prune
    directory, which holds the Fisher scores; ``run_dir``: the fine-tuned run, whose model names the MLP
    weights a neuron mask is stored over).

    Every layer keeps as many heads and as many neurons as in the good mask, so all three cost the same
    layer by layer: random draws them uniformly within each layer, bad takes each layer's lowest-scored
    units by the Fisher estimate (`bertlottery.sampling.random_neurons_like`, `bad_neurons_like`; heads
    are treated as the units of their layer too).
    """
    from safetensors.torch import load_file

    from ..fisher import neuron_weight_mask, neurons_of
    from ..masks import HeadMask, Masks
    from ..models import load_model
    from ..sampling import bad_neurons_like, random_neurons_like
    from ..tasks import get_task

    _check(out, overwrite)
    prune_dir = Path(prune_dir)
    scores_file = prune_dir / runs.FISHER_FILE
    if not scores_file.is_file():
        raise UserError(f"{prune_dir} holds no {runs.FISHER_FILE}; give the directory `bertlottery prune fisher` wrote.")
    good = load_masks(runs.mask_file_of(prune_dir))
    scores = load_file(str(scores_file))
    model = load_model(str(runs.model_dir_of(run_dir)), get_task(good.params["task"]).num_labels)
    neurons = neurons_of(model, good.weights)
    drawn = {
        "random": (random_neurons_like(good.heads.keep, seed), random_neurons_like(neurons, seed)),
        "bad": (bad_neurons_like(good.heads.keep, scores["heads"], seed),
                bad_neurons_like(neurons, scores["neurons"], seed)),
    }
    result = {"good": good}
    for name, (heads, units) in drawn.items():
        result[name] = Masks(heads=HeadMask(heads), weights=neuron_weight_mask(model, units), family=good.family,
                             params={"subnetwork": name, "seed": seed, "method": "fisher", "of": good.params})
    sizes = {}
    with _staged(out, overwrite) as scratch:
        for name, masks in result.items():
            save_masks(scratch / runs.subnetwork_file(name), masks)
            sizes[name] = {"heads": masks.heads.n_kept, "neurons": int(neurons_of(model, masks.weights).sum()),
                           "weights": masks.weights.n_kept}
        runs.write_json(scratch / runs.SUBNETWORKS_FILE, {"seed": seed, "per_layer": True, "kept": sizes,
                                                       "good": str(prune_dir)})
    return sizes


def make_super_survivors(
    mask_paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, seed: int, overwrite: bool = False
) -> dict[str, Any]:
    """Super-survivor good / random / bad masks of one task's masks over several seeds.

    Accepts bertlottery masks files (or prune directories) and the paper's released
    ``seed_<s>/`` folders.
    """
    from ..masks import import_prasanna2020

    _check(out, overwrite)
    loaded = []
    for path in mask_paths:
        path = Path(path)
        if path.is_dir() and (path / "head_mask.npy").is_file():
            loaded.append(import_prasanna2020(path))
        else:
            loaded.append(load_masks(runs.mask_file_of(path)))
    tasks = {m.params.get("task") for m in loaded if m.params.get("task")}
    if len(tasks) > 1:
        raise UserError(f"Super-survivors are per task, but these masks come from {sorted(tasks)}.")
    result = super_survivors(loaded, seed)
    sizes = {}
    with _staged(out, overwrite) as scratch:
        for name, masks in result.items():
            masks.params["task"] = next(iter(tasks), None)
            save_masks(scratch / runs.subnetwork_file(name), masks)
            sizes[name] = {k: getattr(masks, k).n_kept for k in masks.kinds}
        runs.write_json(scratch / runs.SUBNETWORKS_FILE, {"seed": seed, "kept": sizes,
                                                       "sources": [str(p) for p in mask_paths]})
    return sizes
