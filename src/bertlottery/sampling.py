"""Good, random and bad subnetworks of exactly the good one's size, and super-survivors (docs/algorithms.md#subnetworks).

- random: as many elements as good (heads and MLPs counted separately; weights in total for a global
  mask, per tensor for a local one), drawn uniformly from all elements.
- bad: as many elements as good, taken from those the search pruned; if the search pruned fewer
  than that, all of them plus a uniform draw from the survivors.
- super-survivors over seeds: good = kept in every seed; bad = pruned in every seed, resized to |good|
  (topped up from elements in neither set); random = drawn from elements in neither set, resized to
  |good|. Where those pools are too small for |good|, the rest comes from the survivors themselves.

- neurons (whole MLP intermediate units, as the Fisher search keeps them): `random_neurons_like` and
  `bad_neurons_like` keep as many units as the good mask in every layer (or, with ``per_layer=False``,
  in total); random draws them uniformly, bad takes the lowest-scored ones.

Every draw takes a seed, and the functions record it in the returned `Masks`' ``params``.

Example:
    >>> bad = bad_like(good, seed=1337)                 # doctest: +SKIP
    >>> bad.heads.n_kept == good.heads.n_kept           # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .compat import Compat
from .errors import UserError
from .masks import HeadMask, Masks, MlpMask, WeightMask

__all__ = ["random_like", "bad_like", "super_survivors", "draw_exact", "random_neurons_like", "bad_neurons_like"]


def draw_exact(count: int, *pools: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A bool mask with exactly ``count`` True entries, filled from ``pools`` in order of preference:
    all of a pool is taken while it fits, and the pool that overflows is sampled uniformly.

    Pools are bool tensors of one shape; an element belongs to the first pool that holds it.
    """
    shape = pools[0].shape
    out = torch.zeros(pools[0].numel(), dtype=torch.bool)
    taken = torch.zeros_like(out)
    need = count
    for pool in pools:
        candidates = torch.nonzero(pool.reshape(-1) & ~taken).flatten()
        taken[candidates] = True
        if len(candidates) >= need:
            out[candidates[torch.randperm(len(candidates), generator=generator)[:need]]] = True
            return out.view(shape)
        out[candidates] = True
        need -= len(candidates)
    raise ValueError(f"cannot draw {count} elements: only {count - need} available")


def _structured(mask, primary, secondary, generator):
    return type(mask)(draw_exact(mask.n_kept, primary, secondary, generator=generator))


def _weights(good: WeightMask, primary_of, secondary_of, generator, per_tensor: bool) -> WeightMask:
    if per_tensor:
        return WeightMask({
            n: draw_exact(int(t.sum()), primary_of(n), secondary_of(n), generator=generator)
            for n, t in good.keep.items()
        })
    names = list(good.keep)
    sizes = [good.keep[n].numel() for n in names]
    flat = lambda f: torch.cat([f(n).reshape(-1) for n in names])  # noqa: E731
    drawn = draw_exact(good.n_kept, flat(primary_of), flat(secondary_of), generator=generator)
    return WeightMask({n: part.view_as(good.keep[n]) for n, part in zip(names, torch.split(drawn, sizes))})


def random_like(good: Masks, seed: int, *, per_tensor: bool = False, compat: Compat | None = None) -> Masks:
    """Same size as ``good``, elements drawn uniformly from all elements.

    ``per_tensor``: a weight mask keeps each tensor's own count (for matrix-local pruning).
    ``compat.bernoulli_random_masks``: the released code's structured draw, each element kept with
    probability = good's kept fraction (the size matches only in expectation).
    """
    compat = compat or Compat()
    generator = torch.Generator().manual_seed(seed)
    out = Masks(family=good.family, params={"subnetwork": "random", "seed": seed, "of": good.params})
    for kind in ("heads", "mlps"):
        mask = getattr(good, kind)
        if mask is None:
            continue
        if compat.bernoulli_random_masks:
            p = mask.n_kept / mask.n_total
            drawn = type(mask)(torch.rand(mask.shape, generator=generator) < p)
        else:
            everything = torch.ones(mask.shape, dtype=torch.bool)
            drawn = _structured(mask, everything, everything, generator)
        setattr(out, kind, drawn)
    if good.weights is not None:
        everything = lambda n: torch.ones_like(good.weights.keep[n])  # noqa: E731
        out.weights = _weights(good.weights, everything, everything, generator, per_tensor)
    out.params["bernoulli"] = compat.bernoulli_random_masks
    return out


def bad_like(good: Masks, seed: int, *, per_tensor: bool = False) -> Masks:
    """Same size as ``good``, drawn from the elements the search pruned first, then from survivors."""
    generator = torch.Generator().manual_seed(seed)
    out = Masks(family=good.family, params={"subnetwork": "bad", "seed": seed, "of": good.params})
    for kind in ("heads", "mlps"):
        mask = getattr(good, kind)
        if mask is not None:
            setattr(out, kind, _structured(mask, ~mask.keep, mask.keep, generator))
    if good.weights is not None:
        keep = good.weights.keep
        out.weights = _weights(good.weights, lambda n: ~keep[n], lambda n: keep[n], generator, per_tensor)
    return out


def super_survivors(masks: Sequence[Masks], seed: int) -> dict[str, Masks]:
    """good / bad / random super-survivor masks of one task's masks over several seeds.

    Returns ``{"good": ..., "bad": ..., "random": ...}``; each holds whichever structured kinds
    (heads, MLPs) every input mask has.
    """
    if len(masks) < 2:
        raise UserError(f"Super-survivors need the masks of at least two seeds, got {len(masks)}.")
    kinds = [k for k in ("heads", "mlps") if all(getattr(m, k) is not None for m in masks)]
    if not kinds:
        raise UserError("Super-survivors need head or MLP masks present in every seed's file.")
    generator = torch.Generator().manual_seed(seed)
    seeds = [m.params.get("seed") for m in masks]
    result = {name: Masks(family=masks[0].family, params={"subnetwork": f"super-{name}", "seed": seed,
                                                           "source_seeds": seeds, "n_masks": len(masks)})
              for name in ("good", "bad", "random")}
    for kind in kinds:
        shapes = {tuple(getattr(m, kind).shape) for m in masks}
        if len(shapes) > 1:
            raise UserError(f"The seeds' {kind} masks have different shapes: {sorted(shapes)}.")
        stack = torch.stack([getattr(m, kind).keep for m in masks])
        good = stack.all(0)
        always_pruned = (~stack).all(0)
        neither = ~good & ~always_pruned
        cls = HeadMask if kind == "heads" else MlpMask
        count = int(good.sum())
        setattr(result["good"], kind, cls(good))
        # When a task's survivors outnumber everything else (CoLA's MLPs: 9 of 12), bad and random
        # cannot avoid them: the last pool tops up from the survivors, as the released masks do.
        setattr(result["bad"], kind, cls(draw_exact(count, always_pruned, neither, good, generator=generator)))
        setattr(result["random"], kind, cls(draw_exact(count, neither, always_pruned | good, generator=generator)))
    return result


def _check_neuron_counts(good: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
    good = torch.as_tensor(good)
    if good.dim() != 2:
        raise UserError(f"A neuron mask is bool[layer, unit]; this one has shape {tuple(good.shape)}.")
    if scores is not None and tuple(scores.shape) != tuple(good.shape):
        raise UserError(f"Neuron scores have shape {tuple(scores.shape)} but the mask {tuple(good.shape)}; "
                        "score the model the mask was made for.")
    return good.bool().cpu()


def random_neurons_like(good: torch.Tensor, seed: int, *, per_layer: bool = True) -> torch.Tensor:
    """A neuron mask ``bool[layer, unit]`` of ``good``'s size, its units drawn uniformly (seeded).

    ``per_layer``: every layer keeps exactly as many units as in ``good`` (so the same MACs layer by
    layer); otherwise only the total is the same, drawn from all layers' units at once.

    >>> good = torch.tensor([[True, True, False, False], [True, False, False, False]])
    >>> random_neurons_like(good, seed=0).sum(1).tolist()
    [2, 1]
    """
    good = _check_neuron_counts(good)
    generator = torch.Generator().manual_seed(seed)
    everything = torch.ones_like(good)
    if not per_layer:
        return draw_exact(int(good.sum()), everything, generator=generator)
    return torch.stack([draw_exact(int(row.sum()), everything[0], generator=generator) for row in good])


def _lowest(scores: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """A bool mask of the ``count`` lowest ``scores``; equal scores in a seeded random order."""
    shuffled = torch.randperm(scores.numel(), generator=generator)
    order = shuffled[torch.sort(scores.flatten()[shuffled].double(), stable=True).indices]
    out = torch.zeros(scores.numel(), dtype=torch.bool)
    out[order[:count]] = True
    return out.view(scores.shape)


def bad_neurons_like(good: torch.Tensor, scores: torch.Tensor, seed: int, *, per_layer: bool = True) -> torch.Tensor:
    """A neuron mask ``bool[layer, unit]`` of ``good``'s size that keeps the lowest-scored units.

    ``scores: float[layer, unit]`` are the importance the search ranked by (the Fisher estimate). With
    ``per_layer`` every layer keeps as many units as in ``good``, its lowest-scored ones; otherwise the
    lowest-scored units over all layers, as many as ``good`` keeps in total. Ties are broken in an
    order drawn from ``seed``.

    >>> good = torch.tensor([[True, True, False], [False, True, False]])
    >>> bad_neurons_like(good, torch.tensor([[3.0, 1.0, 2.0], [5.0, 4.0, 6.0]]), seed=0).int().tolist()
    [[0, 1, 1], [0, 1, 0]]
    """
    good = _check_neuron_counts(good, scores)
    scores = scores.detach().cpu()
    generator = torch.Generator().manual_seed(seed)
    if not per_layer:
        return _lowest(scores, int(good.sum()), generator)
    return torch.stack([_lowest(layer_scores, int(row.sum()), generator) for row, layer_scores in zip(good, scores)])
