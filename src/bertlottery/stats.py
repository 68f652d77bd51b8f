"""Statistics of "good" masks over seeds and tasks (docs/algorithms.md#statistics; the paper's section 5, Fig. 1, 3, 5,
appendices A and G). Pure functions of numpy arrays: nothing here loads a model or reads a file.

Conventions:

- A *survival matrix* is ``keep: bool[seed, *element shape]``: one row per seed (fine-tuning run),
  ``True`` = the element survived pruning. Heads are ``bool[seed, layer, head]``, MLPs
  ``bool[seed, layer]``. Where a statistic treats elements as a flat list they are flattened
  layer-major (C order: layer 0 head 0, layer 0 head 1, ...).
- Statistics that are undefined for the data (one seed; all seeds identical; every element kept)
  come back as ``nan`` with a ``reason`` string, never as an exception.

What the paper calls them:

- `survival_mean_std`: the numbers in the heatmaps of Fig. 1b and appendix A ("how likely a given
  head or MLP was to survive pruning", and the standard deviation across runs).
- `fleiss_kappa`: "Fleiss' kappa on head survival across 5 random seeds" (section 5.1; 0.15-0.32).
- `cochran_q`, `pairwise_cochran_q`: "Cochran Q test ... (although masks obtained with some *pairs*
  of seeds were)" (section 5.1). Q compares the seeds' keep rates (mask sizes), not which elements
  they keep; see its docstring.

Not in the paper, and needed to read its kappa when masks differ in size: `max_fleiss_kappa` (the
ceiling that masks of the seeds' sizes can reach), `kappa_null` (kappa of random masks of those
sizes), `kappa_bootstrap` (an interval over seeds, for five or more).
- `super_survivors`: "the heads and MLPs that consistently survived across all seeds" (section 4.2,
  appendix E); `body_fraction` gives their size as a fraction of the encoder body.
- `weight_survival_by_component`: m-pruning's "percentage of surviving weights in BERT heads and
  MLPs" (Fig. 1a).
- `task_overlap`: "pairwise overlaps in the good subnetworks" between tasks (Fig. 5, Fig. 19).
- `tasks_survived`: "the average number of GLUE tasks in which a given head/MLP survived" (Fig. 15).
- `importance_at`: the importance-score distributions at a pruning iteration (Fig. 3).

Example:
    >>> keep = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]], dtype=bool)   # 3 seeds x 4 heads
    >>> round(fleiss_kappa(keep).value, 4)   # P = 2/3, P_e = (7/12)^2 + (5/12)^2
    0.3143
    >>> super_survivors(keep).tolist()
    [True, False, False, False]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

__all__ = [
    "Kappa",
    "CochranQ",
    "PairwiseQ",
    "Overlap",
    "survival_matrix",
    "survival_mean_std",
    "fleiss_kappa",
    "KappaNull",
    "max_fleiss_kappa",
    "kappa_null",
    "KappaInterval",
    "kappa_bootstrap",
    "cochran_q",
    "pairwise_cochran_q",
    "super_survivors",
    "body_fraction",
    "weight_survival_by_component",
    "task_overlap",
    "tasks_survived",
    "importance_at",
    "jsonable",
]

NAN = float("nan")


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays/scalars turned into lists/numbers and ``nan``/``inf`` into ``None``,
    so that ``json.dumps(..., allow_nan=False)`` accepts it (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return value


# ---- survival over seeds ---------------------------------------------------------------------------

def survival_matrix(keep: Any) -> np.ndarray:
    """``keep`` (seeds first; bool or 0/1 numbers, any array-like) as ``bool[seed, *shape]``.

    Raises ``ValueError`` for values other than 0/1 or for fewer than two dimensions.
    """
    array = np.asarray(keep)
    if array.ndim < 2:
        raise ValueError(f"a survival matrix is seeds x elements, got shape {array.shape}")
    if array.dtype != bool:
        values = np.unique(array)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"a survival matrix holds 0/1 or booleans, found values {values[:5].tolist()}")
        array = array.astype(bool)
    return array


def _flat(keep: Any) -> np.ndarray:
    array = survival_matrix(keep)
    return array.reshape(array.shape[0], -1)


def survival_mean_std(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1) over seeds (axis 0), element by element.

    ``values`` is ``[seed, *shape]``: a survival matrix (then the mean is the fraction of seeds in
    which the element survived: the paper's heatmaps, Fig. 1b and appendix A) or per-seed numbers
    such as `weight_survival_by_component`'s fractions (Fig. 1a). Returns two ``float[*shape]``
    arrays; the std is ``nan`` where there is only one seed. For the paper's 1 x layers MLP heatmap
    reshape the MLP result with ``.reshape(1, -1)``.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim < 1 or array.shape[0] == 0:
        raise ValueError(f"need at least one seed, got shape {array.shape}")
    mean = array.mean(axis=0)
    if array.shape[0] < 2:
        return mean, np.full_like(mean, NAN)
    return mean, array.std(axis=0, ddof=1)


# ---- agreement between seeds -----------------------------------------------------------------------

@dataclass(frozen=True)
class Kappa:
    """Fleiss' kappa; ``value`` is ``nan`` when undefined, and ``reason`` says why."""

    value: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason}


def fleiss_kappa(keep: Any) -> Kappa:
    """Fleiss' kappa of the seeds' agreement on which elements survive (the paper, section 5.1).

    Elements are the subjects, seeds the raters, and the two categories kept / pruned: the table
    handed to `statsmodels.stats.inter_rater.fleiss_kappa` has one row per element,
    ``[seeds that kept it, seeds that pruned it]``. 1 is perfect agreement, 0 what chance gives with
    the same overall survival rate, negative values less than chance.

    Undefined (``nan`` plus a reason) with fewer than two seeds, or when every element is kept by
    every seed (or pruned by every seed): chance agreement is then 1 and kappa is 0/0.

    >>> fleiss_kappa(np.array([[1, 0, 1], [1, 0, 1]])).value
    1.0
    >>> fleiss_kappa(np.ones((5, 144), dtype=bool)).reason
    'every element was kept by every seed: kappa is 0/0'
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_kappa

    x = _flat(keep)
    n_seeds, n_elements = x.shape
    if n_seeds < 2:
        return Kappa(NAN, f"needs at least two seeds, got {n_seeds}")
    if n_elements == 0:
        return Kappa(NAN, "no elements")
    kept = x.sum(axis=0)
    if (kept == n_seeds).all():
        return Kappa(NAN, "every element was kept by every seed: kappa is 0/0")
    if (kept == 0).all():
        return Kappa(NAN, "every element was pruned by every seed: kappa is 0/0")
    table = np.column_stack([kept, n_seeds - kept])
    return Kappa(float(statsmodels_kappa(table, method="fleiss")))


def _kappa_from_counts(kept: np.ndarray, n_seeds: int) -> np.ndarray:
    """Fleiss' kappa from ``kept: int[..., element]``, the number of seeds keeping each element.

    Vectorised over leading axes (one kappa per permutation, say); ``nan`` where chance agreement
    is 1. The same formula as statsmodels' (tests check): P_i = (k(k-1) + (n-k)(n-k-1)) / (n(n-1)),
    P_e = p^2 + (1-p)^2 with p the overall keep rate.
    """
    kept = np.asarray(kept, dtype=np.float64)
    n = n_seeds
    agreement = (kept * (kept - 1) + (n - kept) * (n - kept - 1)).mean(axis=-1) / (n * (n - 1))
    p = kept.mean(axis=-1) / n
    chance = p**2 + (1 - p) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(chance < 1, (agreement - chance) / (1 - chance), NAN)


def _sizes_or_reason(keep: Any) -> tuple[np.ndarray, int, str | None]:
    """The seeds' mask sizes and the element count, or why kappa is undefined for them."""
    x = _flat(keep)
    n_seeds, n_elements = x.shape
    sizes = x.sum(axis=1)
    if n_seeds < 2:
        return sizes, n_elements, f"needs at least two seeds, got {n_seeds}"
    if n_elements == 0:
        return sizes, n_elements, "no elements"
    if (sizes == n_elements).all():
        return sizes, n_elements, "every element was kept by every seed: kappa is 0/0"
    if (sizes == 0).all():
        return sizes, n_elements, "every element was pruned by every seed: kappa is 0/0"
    return sizes, n_elements, None


def max_fleiss_kappa(keep: Any) -> Kappa:
    """The largest Fleiss' kappa that masks of these seeds' sizes can reach.

    Masks of different sizes cannot agree perfectly, so a kappa has to be read against this ceiling
    (STS-B's seeds in the minilm-glue study kept 65, 54 and 20 of 72 heads: however those masks
    are arranged, kappa stays below 0.1).

    Why nested masks give the maximum: the sizes fix the overall keep rate, hence the chance
    agreement P_e, so kappa grows with the observed agreement, whose only varying part is
    ``sum_i k_i^2`` (``k_i`` the number of seeds keeping element i, ``sum_i k_i`` fixed). Any 0/1
    matrix with row sums ``s`` has column sums majorized by the conjugate partition
    ``k*_i = #{seeds j : s_j > i}`` (Gale-Ryser), and a sum of squares is Schur-convex, so
    ``sum k_i^2 <= sum k*_i^2``; the nested masks (every seed keeps the first ``s_j`` elements)
    have exactly those column sums. Tests check the bound against every arrangement of small cases.

    Undefined (``nan`` and a reason) where `fleiss_kappa` is.

    >>> keep = np.zeros((3, 72), dtype=bool)
    >>> for row, size in enumerate((65, 54, 20)):
    ...     keep[row, :size] = True
    >>> round(max_fleiss_kappa(keep).value, 3)
    0.092
    >>> max_fleiss_kappa(np.array([[1, 1, 0], [0, 1, 1]])).value    # same sizes: perfect agreement is possible
    1.0
    """
    sizes, n_elements, reason = _sizes_or_reason(keep)
    if reason:
        return Kappa(NAN, reason)
    nested = (sizes[:, None] > np.arange(n_elements)[None, :]).sum(axis=0)
    return Kappa(float(_kappa_from_counts(nested, len(sizes))))


@dataclass(frozen=True)
class KappaNull:
    """Kappa of random masks of the seeds' sizes: ``mean`` and the central ``confidence`` interval
    ``[low, high]`` over ``n_permutations`` draws; ``nan`` and a ``reason`` when undefined."""

    mean: float
    low: float
    high: float
    n_permutations: int
    confidence: float = 0.95
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kappa_null(keep: Any, n_permutations: int = 2000, seed: int = 0, confidence: float = 0.95) -> KappaNull:
    """Fleiss' kappa when each seed's mask is a uniform random set of its own size (permutation null).

    Each draw shuffles every seed's mask independently across elements, keeping its size. Kappa
    near the null's mean is what masks of these sizes agree by chance; above ``high`` they agree
    more than chance. (Fleiss' kappa is 0 at chance only when the seeds' sizes are equal; with unequal
    sizes its null mean is below 0.) Seeded: the same arguments give the same interval.

    >>> keep = np.array([[1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=bool)
    >>> null = kappa_null(keep, n_permutations=500, seed=1)
    >>> null.low < null.mean < null.high
    True
    """
    sizes, n_elements, reason = _sizes_or_reason(keep)
    if reason:
        return KappaNull(NAN, NAN, NAN, n_permutations, confidence, reason)
    rng = np.random.default_rng(seed)
    base = np.arange(n_elements)[None, :] < sizes[:, None]  # (S, E): seed j keeps its first s_j
    # draw in blocks of about a million cells so that weight-sized masks stay in memory
    block = max(1, 1_000_000 // base.size)
    kappas = []
    for start in range(0, n_permutations, block):
        count = min(block, n_permutations - start)
        shuffled = rng.permuted(np.broadcast_to(base, (count, *base.shape)), axis=2)  # (P, S, E)
        kappas.append(_kappa_from_counts(shuffled.sum(axis=1), len(sizes)))
    values = np.concatenate(kappas)
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return KappaNull(float(values.mean()), float(low), float(high), n_permutations, confidence)


def _pairwise_kappa(agreement: np.ndarray, sizes: np.ndarray, n_elements: int, drawn: np.ndarray) -> float:
    """Fleiss' kappa of the drawn seeds over the pairs of *different* seeds among them.

    A seed drawn twice agrees with itself perfectly, which says nothing about seeds, so such pairs
    are skipped; the observed agreement and the keep rate behind the chance agreement are both
    taken over the pairs compared. Without repeats every seed is in ``n - 1`` pairs, and this is
    exactly Fleiss' kappa.
    """
    a, b = np.triu_indices(len(drawn), k=1)
    distinct = drawn[a] != drawn[b]
    if not distinct.any():
        return NAN
    first, second = drawn[a][distinct], drawn[b][distinct]
    observed = agreement[first, second].mean()
    p = (sizes[first] + sizes[second]).mean() / (2 * n_elements)
    chance = p**2 + (1 - p) ** 2
    return float((observed - chance) / (1 - chance)) if chance < 1 else NAN


@dataclass(frozen=True)
class KappaInterval:
    """Fleiss' kappa (``value``) with a bootstrap ``confidence`` interval ``[low, high]`` from
    ``n_resamples`` resamples of the seeds; ``nan`` and a ``reason`` when undefined."""

    value: float
    low: float
    high: float
    n_resamples: int
    confidence: float = 0.95
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kappa_bootstrap(keep: Any, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                    min_seeds: int = 5) -> KappaInterval:
    """A percentile bootstrap interval of Fleiss' kappa over seeds (five or more seeds).

    Seeds are resampled with replacement, seeded. Fleiss' observed agreement is
    the mean agreement over pairs of seeds, so kappa is recomputed from the pairs of *different*
    seeds among those drawn: a seed drawn twice would otherwise be counted as agreeing perfectly
    with itself and push kappa up. Without repeats this is exactly `fleiss_kappa`. With fewer than
    ``min_seeds`` seeds the interval is ``nan`` and the reason says so (three seeds give only a
    handful of distinct resamples).

    >>> rng = np.random.default_rng(0)
    >>> keep = rng.random((6, 144)) < 0.5
    >>> interval = kappa_bootstrap(keep, n_resamples=200)
    >>> interval.low <= interval.value <= interval.high
    True
    """
    x = _flat(keep)
    observed = fleiss_kappa(x)
    n_seeds = x.shape[0]
    if n_seeds < min_seeds:
        return KappaInterval(observed.value, NAN, NAN, n_resamples, confidence,
                             f"a bootstrap over seeds needs at least {min_seeds} seeds, got {n_seeds}")
    if observed.reason:
        return KappaInterval(NAN, NAN, NAN, n_resamples, confidence, observed.reason)
    agreement = (x[:, None, :] == x[None, :, :]).mean(axis=2)  # (S, S): share of elements two seeds agree on
    sizes = x.sum(axis=1)
    draws = np.random.default_rng(seed).integers(0, n_seeds, size=(n_resamples, n_seeds))
    kappas = np.array([_pairwise_kappa(agreement, sizes, x.shape[1], drawn) for drawn in draws])
    # by hand rather than scipy.stats.bootstrap, whose percentile interval turns nan when one resample
    # is undefined: a resample that draws a single seed n times has no pair to compare, and is dropped
    kappas = kappas[~np.isnan(kappas)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(kappas, [tail, 1 - tail])
    return KappaInterval(observed.value, float(low), float(high), n_resamples, confidence)


@dataclass(frozen=True)
class CochranQ:
    """Cochran's Q test: ``statistic`` (chi-square with ``df`` degrees of freedom), ``pvalue``;
    both ``nan`` when undefined, and ``reason`` says why."""

    statistic: float
    pvalue: float
    df: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "pvalue": self.pvalue, "df": self.df, "reason": self.reason}


def cochran_q(keep: Any) -> CochranQ:
    """Cochran's Q over the elements x seeds binary matrix (the paper, section 5.1).

    What it tests: the null hypothesis is that every seed keeps elements at the same *rate* (seeds
    are the treatments, elements the blocks). It compares the seeds' keep rates, that is their mask
    sizes, with the elements' own variation removed; it does not test whether the seeds keep the
    same elements. Two masks of different sizes differ under Q however nested they are (a mask
    and a subset of it), and two masks of equal size never differ however disjoint they are: with
    two seeds Q is McNemar's ``(b - c)^2 / (b + c)``, and ``b = c`` for any two masks of one size.
    So a small p-value says the seeds' masks have different sizes; for agreement on *which*
    elements survive, read `fleiss_kappa` beside `max_fleiss_kappa` and `kappa_null`.
    Computed by `statsmodels.stats.contingency_tables.cochrans_q`; with two seeds it is McNemar's
    test without continuity correction.

    Undefined (``nan`` plus a reason) with fewer than two seeds, or when all seeds agree on every
    element (the statistic is 0/0; the masks are identical, so they certainly do not differ).

    >>> cochran_q(np.array([[1, 1, 0, 1], [0, 1, 0, 0]])).statistic    # b=2, c=0: (b-c)^2/(b+c)
    2.0
    """
    from statsmodels.stats.contingency_tables import cochrans_q as statsmodels_q

    x = _flat(keep)
    n_seeds = x.shape[0]
    if n_seeds < 2:
        return CochranQ(NAN, NAN, max(n_seeds - 1, 0), f"needs at least two seeds, got {n_seeds}")
    if (x == x[0]).all():
        return CochranQ(NAN, NAN, n_seeds - 1, "all seeds agree on every element: Q is 0/0 (identical masks)")
    # statsmodels counts its data's largest value as "success"; with both values present that is True
    result = statsmodels_q(x.T.astype(np.int8))
    return CochranQ(float(result.statistic), float(result.pvalue), int(result.df))


@dataclass(frozen=True)
class PairwiseQ:
    """Cochran's Q for every pair of seeds.

    ``pairs``: ``(i, j, CochranQ)`` with ``i < j`` indexing the survival matrix's rows.
    ``n_differ``: pairs with ``pvalue < alpha``. ``n_identical``: pairs with identical masks (their
    Q is undefined; they count as not differing). ``differ_fraction = n_differ / n_pairs``
    (``nan`` with fewer than two seeds).
    """

    alpha: float
    pairs: list[tuple[int, int, CochranQ]]
    n_differ: int
    n_identical: int

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def differ_fraction(self) -> float:
        return self.n_differ / self.n_pairs if self.pairs else NAN

    def to_dict(self, labels: Sequence[Any] | None = None) -> dict[str, Any]:
        """JSON-ready; ``labels`` (e.g. the seeds) name the rows instead of their indices."""
        name = (lambda i: labels[i]) if labels is not None else (lambda i: i)
        return {
            "alpha": self.alpha, "n_pairs": self.n_pairs, "n_differ": self.n_differ,
            "n_identical": self.n_identical, "differ_fraction": self.differ_fraction,
            "pairs": [{"seeds": [name(i), name(j)], **q.to_dict()} for i, j, q in self.pairs],
        }


def pairwise_cochran_q(keep: Any, alpha: float = 0.05) -> PairwiseQ:
    """`cochran_q` of every pair of seeds, and how many pairs differ at ``alpha`` (section 5.1)."""
    x = _flat(keep)
    pairs = [(i, j, cochran_q(x[[i, j]])) for i, j in combinations(range(x.shape[0]), 2)]
    return PairwiseQ(
        alpha=alpha,
        pairs=pairs,
        n_differ=sum(1 for _, _, q in pairs if q.pvalue < alpha),  # nan < alpha is False
        n_identical=sum(1 for _, _, q in pairs if math.isnan(q.statistic)),
    )


# ---- super-survivors and sizes -----------------------------------------------------------------------

def super_survivors(keep: Any) -> np.ndarray:
    """``bool[*shape]``: the elements kept in every seed (the paper's "super-survivors")."""
    return survival_matrix(keep).all(axis=0)


def body_fraction(layout: Any, heads: Any = None, mlps: Any = None) -> float:
    """Fraction of encoder-body weights that a head and/or MLP mask keeps (embeddings, pooler and
    classifier excluded; the paper's "% of full model weights", Fig. 2 and appendix E).

    ``layout``: a `bertlottery.models.Layout`; ``heads: bool[layer, head]``, ``mlps: bool[layer]``;
    ``None`` means that kind was not pruned. Counted by `bertlottery.masks.body_fraction_kept`.
    """
    from .masks import HeadMask, MlpMask, body_fraction_kept

    return body_fraction_kept(
        layout,
        heads=HeadMask(np.asarray(heads, dtype=bool)) if heads is not None else None,
        mlps=MlpMask(np.asarray(mlps, dtype=bool)) if mlps is not None else None,
    )


# ---- m-pruning: surviving weights per head and MLP ----------------------------------------------------

# Module path inside an encoder layer -> part, for every supported family (`bertlottery.models`'
# adapters name the same modules; tests check this table against real models of each family).
# Parsing names lets the analysis run on stored masks without building a model.
_LAYER_NAME = re.compile(r"^(?:.*\.)?(?:encoder|transformer)\.layer\.(\d+)\.(.+)\.(weight|bias)$")
PARTS = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attn_out", "intermediate.dense": "mlp_in", "output.dense": "mlp_out",
    "attention.q_lin": "query", "attention.k_lin": "key", "attention.v_lin": "value",
    "attention.out_lin": "attn_out", "ffn.lin1": "mlp_in", "ffn.lin2": "mlp_out",
}


def _parse(name: str) -> tuple[int, str, str] | None:
    match = _LAYER_NAME.match(name)
    if not match or match.group(2) not in PARTS:
        return None
    return int(match.group(1)), PARTS[match.group(2)], match.group(3)


def weight_survival_by_component(weights: Mapping[str, Any], num_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of each head's and each MLP's masked weights that a weight mask keeps (Fig. 1a).

    ``weights``: ``{parameter name: bool array of the parameter's shape}``, e.g.
    ``WeightMask.keep`` (torch tensors are fine) with its model parameter names
    (``bert.encoder.layer.3.attention.self.query.weight``, DistilBERT's ``...attention.q_lin...``).
    A head owns its rows of Q, K and V (weights and biases) and its input columns of the attention
    output projection; an MLP owns both projections with their biases. The attention output bias
    belongs to no head; tensors outside heads and MLPs (LayerNorm, embeddings) are ignored, and so
    are tensors the mask does not hold (an absent tensor is unmasked, not part of the count).

    Returns ``(heads: float[layer, head], mlps: float[layer])``, ``nan`` where a component has no
    masked weights. Multiply by 100 for the paper's percentages.
    """
    parts: dict[int, dict[tuple[str, str], np.ndarray]] = {}
    for name, keep in weights.items():
        parsed = _parse(name)
        if parsed is not None:
            layer, part, kind = parsed
            parts.setdefault(layer, {})[(part, kind)] = np.asarray(keep, dtype=bool)
    if not parts:
        raise ValueError("no parameter of the weight mask belongs to an attention head or MLP")
    num_layers = max(parts) + 1
    head_kept = np.zeros((num_layers, num_heads))
    head_total = np.zeros((num_layers, num_heads))
    mlp_kept = np.zeros(num_layers)
    mlp_total = np.zeros(num_layers)
    for layer, tensors in parts.items():
        for (part, kind), keep in tensors.items():
            if part in ("query", "key", "value"):
                per_head = keep.reshape(num_heads, -1)  # rows h*dh:(h+1)*dh (and their columns) are head h
                head_kept[layer] += per_head.sum(axis=1)
                head_total[layer] += per_head.shape[1]
            elif part == "attn_out" and kind == "weight":
                per_head = keep.reshape(keep.shape[0], num_heads, -1)  # input columns h*dh:(h+1)*dh
                head_kept[layer] += per_head.sum(axis=(0, 2))
                head_total[layer] += per_head.shape[0] * per_head.shape[2]
            elif part in ("mlp_in", "mlp_out"):
                mlp_kept[layer] += keep.sum()
                mlp_total[layer] += keep.size
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(head_total > 0, head_kept / head_total, NAN),
                np.where(mlp_total > 0, mlp_kept / mlp_total, NAN))


# ---- across tasks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overlap:
    """Elements shared by tasks' good masks. ``mean[i, j]``: mean over seeds of
    ``|good_i AND good_j|``; the diagonal is each task's own size. ``std``: sample std over seeds
    (``None`` for super-survivor overlaps, where each task has one mask). ``n_seeds``: seed
    positions paired (the smallest seed count among the tasks)."""

    tasks: list[str]
    mean: np.ndarray
    std: np.ndarray | None
    n_seeds: int

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "mean": self.mean, "std": self.std, "n_seeds": self.n_seeds}


def _by_task(keeps: Mapping[str, Any]) -> tuple[list[str], list[np.ndarray], int]:
    tasks = list(keeps)
    if not tasks:
        raise ValueError("no tasks")
    arrays = [survival_matrix(keeps[t]) for t in tasks]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"tasks' masks have different element shapes: {sorted(shapes)}")
    return tasks, arrays, min(a.shape[0] for a in arrays)


def task_overlap(keeps: Mapping[str, Any], *, super_survivors: bool = False) -> Overlap:
    """Pairwise overlaps of tasks' good masks (Fig. 5; appendix G, Fig. 19).

    ``keeps``: ``{task: bool[seed, *shape]}``, seeds in the same order for every task (they are
    paired by position; with different counts only the first ``min`` seeds are used).
    ``super_survivors=False``: per seed position s, ``|good_i[s] AND good_j[s]|``, then mean and
    sample std over positions (Fig. 19a/b). ``True``: each task's super-survivor mask (kept in all
    of its seeds) and the plain counts (Fig. 19c/d); ``std`` is ``None``.
    """
    tasks, arrays, n_seeds = _by_task(keeps)
    if super_survivors:
        flat = np.stack([a.all(axis=0).reshape(-1) for a in arrays]).astype(np.int64)  # (T, E)
        return Overlap(tasks, (flat @ flat.T).astype(float), None, n_seeds)
    per_seed = np.stack([a[:n_seeds].reshape(n_seeds, -1) for a in arrays], axis=1).astype(np.int64)  # (S, T, E)
    counts = np.einsum("ste,sue->stu", per_seed, per_seed)  # (S, T, T)
    mean, std = survival_mean_std(counts)
    return Overlap(tasks, mean, std, n_seeds)


def tasks_survived(keeps: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """In how many tasks each element survives (Fig. 15): per seed position, the number of tasks
    whose good mask keeps the element; then mean and sample std over positions.

    ``keeps`` as for `task_overlap`. Returns ``(mean, std)``, each ``float[*shape]``.
    """
    _, arrays, n_seeds = _by_task(keeps)
    counts = np.stack([a[:n_seeds] for a in arrays]).sum(axis=0)  # (S, *shape)
    return survival_mean_std(counts)


# ---- importance distributions (Fig. 3) --------------------------------------------------------------

def importance_at(trace: Mapping[str, Any], iterations: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Head and MLP importance scores of an s-pruning search at chosen iterations (Fig. 3).

    ``trace``: the parsed ``trace.json`` of a structured prune step (`bertlottery.steps.prune`). Its steps
    record the scores they were chosen by; scores are recomputed after every accepted step, so
    iteration 1 is the full model's scores (the paper's Fig. 3 shows CoLA at iteration 1), and
    iteration k+1 the scores under the mask after the k-th accepted step. A rejected step moves
    to the next phase under the same scores, so several steps can share one iteration.

    ``iterations``: 1-based; ``None`` means every iteration in the trace.
    Returns one dict per iteration, in the order asked::

        {"iteration": k, "step": index of the first step that used these scores, "phase": its phase,
         "heads": float[layer, head], "mlps": float[layer]}   # nan where the element was already pruned

    Raises `bertlottery.errors.UserError` for a trace without scores (an m-pruning trace) or an
    iteration the trace does not have.
    """
    from .errors import UserError

    steps = list(trace.get("steps", []))
    rounds: list[dict[str, Any]] = []
    heads_live = mlps_live = None
    new_round = True
    for index, step in enumerate(steps):
        scores = step.get("scores")
        if not scores or "heads" not in scores:
            raise UserError(f"step {index} of the trace has no head importance scores; "
                            "give the trace.json of a structured (s-pruning) prune step.")
        heads = np.asarray(scores["heads"], dtype=float)
        mlps = np.asarray(scores["mlps"], dtype=float)
        if heads_live is None:
            heads_live, mlps_live = np.ones(heads.shape, bool), np.ones(mlps.shape, bool)
        if new_round:
            rounds.append({"iteration": len(rounds) + 1, "step": index, "phase": step.get("phase"),
                           "heads": np.where(heads_live, heads, NAN), "mlps": np.where(mlps_live, mlps, NAN)})
        new_round = bool(step.get("accepted"))
        if new_round:
            for layer, head in step.get("pruned_heads", []):
                heads_live[layer, head] = False
            for layer in step.get("pruned_mlps", []):
                mlps_live[layer] = False
    if iterations is None:
        return rounds
    missing = [k for k in iterations if not 1 <= k <= len(rounds)]
    if missing:
        raise UserError(f"The trace has iterations 1..{len(rounds)}, not {missing}; iterations count from 1.")
    return [rounds[k - 1] for k in iterations]

