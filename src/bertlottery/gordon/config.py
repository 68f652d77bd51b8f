"""The ``gordon:`` section of an experiment config: its fields, defaults and checks. Torch-free
(`bertlottery.config` composes it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .. import checks
from ..checks import check_names
from ..settings import MIXED_PRECISION, option
from .names import PRETRAIN_METHODS, SCOPES, STUDY_VARIANTS, TENSOR_CHOICES

__all__ = ["PretrainSettings", "GordonConfig", "GordonCorpusConfig", "GordonPretrainConfig", "GordonDownstreamConfig",
           "GordonAnalysisConfig", "validate"]


@dataclass(frozen=True)
class GordonCorpusConfig:
    """The continued pre-training text: plain text files (one document or paragraph per line), a folder
    of them, or ``hub:<dataset>[:<config>]:<split>`` for a Hugging Face dataset with a ``text`` column.

    ``format: wikitext`` undoes WikiText's tokenisation (`` @-@ ``, ``<unk>``) before WordPiece.
    Sequences are the token stream cut into blocks of ``pretrain.max_length``; ``max_train_sequences``
    caps the training blocks, ``dev_sequences`` the dev blocks the pre-training loss is measured on.
    Relative paths are relative to where the command runs.
    """

    train: list[str] = field(default_factory=lambda: ["../shared/data/text/wikitext-2/test.txt"])
    dev: list[str] = field(default_factory=lambda: ["../shared/data/text/wikitext-2/valid.txt"])
    format: str = "plain"
    max_train_sequences: int | None = None
    dev_sequences: int = 512


@dataclass(frozen=True)
class PretrainSettings:
    """The hyper-parameters of the MLM training loop (`bertlottery.gordon.mlm.pretrain` and `train_head`),
    declared once: the config's ``gordon.pretrain`` section extends them, and ``bertlottery gordon
    pretrain`` takes its defaults from here (a short run; a study's defaults are the paper's, below).
    ``eval_every``: dev loss every N steps as well as at the end (a curve); None: at the end only."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.01
    max_grad_norm: float = option(1.0, "gradient-norm clip", hashed_if_set=True)
    mlm_probability: float = 0.15
    eval_every: int | None = None
    seed: int = option(42, "MLM masking, data order and random pruning", config=False)
    mixed_precision: str = "no"
    log_every: int = option(10, "steps per logged training loss", config=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GordonPretrainConfig(PretrainSettings):
    """Continued MLM pre-training with pruning (G§3.2; `docs/algorithms.md`): the loop's settings
    (`PretrainSettings`, with the paper's run length, batch and warm-up as a study's defaults) and how
    it prunes.

    The sparsity follows Zhu & Gupta's cubic schedule from 0 at step 0 to the target at
    ``prune_steps``, the mask recomputed every ``prune_every`` steps; training goes on to ``steps``.
    ``methods``: ``gmp`` (gradual magnitude), ``oneshot`` (magnitude, all at step 0), ``random``
    (gradual, the same count per matrix drawn uniformly). ``scope``: a threshold per matrix
    (``local``, the paper) or one over all pruned tensors (``global``). ``tensors``: ``gordon`` (Q, K,
    V, attention output, intermediate, output of every layer, and the pooler) or ``weights`` (the six
    matrices only); ``prune_embeddings`` adds the word embeddings. ``head_steps``: train the MLM head
    alone first (encoder frozen), for a checkpoint that has none (a new head is initialised and tied
    to the word embeddings); 0 skips it.
    """

    # the paper's run (G§3.2) in place of the loop's short default
    steps: int = 100_000
    batch_size: int = 256
    warmup_steps: int = 1_000
    prune_steps: int = 10_000
    prune_every: int = 10
    methods: list[str] = field(default_factory=lambda: ["gmp", "random"])
    scope: str = "local"
    tensors: str = "gordon"
    prune_embeddings: bool = True
    max_length: int = 128
    head_steps: int = 0
    head_learning_rate: float = 1e-3

    def loop(self, seed: int) -> PretrainSettings:
        """The settings of the pre-training loop of one seed."""
        return PretrainSettings(**{f.name: getattr(self, f.name) for f in fields(PretrainSettings)} | {"seed": seed})


@dataclass(frozen=True)
class GordonDownstreamConfig:
    """Fine-tuning the pruned checkpoints (G§3.2-3.4). Batch size, length, caps per task: ``train``.

    ``variants``: ``pruned`` (each pre-training method's checkpoint, its mask held fixed),
    ``information-deletion`` (the GMP checkpoint's pruned weights zeroed but free to train, for
    ``deletion_epochs``, ``deletion_epochs_high`` from ``deletion_high_from`` sparsity up),
    ``information-deletion-matched`` (the same at the pruned models' budget, ``train.epochs``: a
    control, since the paper's longer budget confounds deletion with training length) and
    ``after-downstream`` (fine-tune the unpruned checkpoint ``train.epochs``, prune to the target by
    magnitude, train ``after_epochs`` more, ``after_epochs_high`` from ``after_high_from`` up). Every
    run is repeated at each of ``learning_rates``; the best dev result is kept.

    ``before_pruning_epochs`` (G Fig. 3 right; empty: not run): fine-tune the unpruned checkpoint for
    each of these numbers of epochs, prune to ``before_pruning_sparsity`` by magnitude and train
    ``before_pruning_more_epochs`` more, at the sweep's largest learning rate (the paper's 5e-5 is
    its sweep's largest).
    """

    variants: list[str] = field(default_factory=lambda: ["pruned", "information-deletion", "after-downstream"])
    learning_rates: list[float] = field(default_factory=lambda: [2e-5, 3e-5, 4e-5, 5e-5])
    deletion_epochs: int = 13
    deletion_epochs_high: int = 15
    deletion_high_from: float = 0.7
    after_epochs: int = 5
    after_epochs_high: int = 7
    after_high_from: float = 0.8
    before_pruning_epochs: list[int] = field(default_factory=list)
    before_pruning_sparsity: float = 0.6
    before_pruning_more_epochs: int = 2


@dataclass(frozen=True)
class GordonAnalysisConfig:
    """The analyses: ``similarity_sequences`` dev blocks for the hidden-state cosine similarity (G Fig. 2 right);
    ``magnitude_bins`` bins of starting magnitude for sort-order movement (G Fig. 7)."""

    similarity_sequences: int = 64
    magnitude_bins: int = 20


@dataclass(frozen=True)
class GordonConfig:
    """The Compressing-BERT study (Gordon et al. 2020; `docs/algorithms.md`). When set, ``bertlottery run``
    runs this study instead of the lottery grid: the top-level ``model``, ``tasks``, ``seeds``,
    ``glue_dir``, ``train`` (downstream fine-tuning) and ``resources`` apply; ``methods``,
    ``subnetworks``, ``modes``, ``pruning`` and ``baselines`` do not.

    Owned by the gordon package: its fields, defaults and validation (`validate`).
    """

    sparsities: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(10)])
    corpus: GordonCorpusConfig = field(default_factory=GordonCorpusConfig)
    pretrain: GordonPretrainConfig = field(default_factory=GordonPretrainConfig)
    downstream: GordonDownstreamConfig = field(default_factory=GordonDownstreamConfig)
    analysis: GordonAnalysisConfig = field(default_factory=GordonAnalysisConfig)



def validate(gordon: GordonConfig, problems: list[str]) -> None:
    """Append every problem of a ``gordon:`` section to ``problems``."""

    sparsities = [s for s in gordon.sparsities or [] if isinstance(s, float)]
    for sparsity in sparsities:
        if not 0 <= sparsity < 1:
            problems.append(f"gordon.sparsities must be in [0, 1), got {sparsity}")
    if len(set(sparsities)) != len(sparsities):
        problems.append(f"gordon.sparsities must be distinct, got {gordon.sparsities}")
    if sparsities and 0.0 not in sparsities:
        problems.append("gordon.sparsities must include 0.0: the unpruned model every comparison is made against")

    def at_least(section: Any, names: tuple[str, ...], low: int, where: str) -> None:
        checks.at_least(section, names, low, f"gordon.{where}", problems)

    def positive(section: Any, names: tuple[str, ...], where: str) -> None:
        checks.positive(section, names, f"gordon.{where}", problems)

    corpus = gordon.corpus
    if corpus is not None:
        for name in ("train", "dev"):
            if not getattr(corpus, name):
                problems.append(f"gordon.corpus.{name} must name at least one text file or hub:dataset")
        check_names([corpus.format], ("plain", "wikitext"), "gordon.corpus.format", problems)
        at_least(corpus, ("dev_sequences",), 1, "corpus")
        if corpus.max_train_sequences is not None:
            at_least(corpus, ("max_train_sequences",), 1, "corpus")
    pretrain = gordon.pretrain
    if pretrain is not None:
        at_least(pretrain, ("steps", "prune_every", "batch_size"), 1, "pretrain")
        at_least(pretrain, ("prune_steps", "warmup_steps", "head_steps"), 0, "pretrain")
        at_least(pretrain, ("max_length",), 8, "pretrain")
        if pretrain.eval_every is not None:
            at_least(pretrain, ("eval_every",), 1, "pretrain")
        positive(pretrain, ("learning_rate", "head_learning_rate"), "pretrain")
        if isinstance(pretrain.prune_steps, int) and isinstance(pretrain.steps, int) and pretrain.prune_steps > pretrain.steps:
            problems.append(f"gordon.pretrain.prune_steps ({pretrain.prune_steps}) must not exceed "
                            f"gordon.pretrain.steps ({pretrain.steps})")
        if isinstance(pretrain.mlm_probability, float) and not 0 < pretrain.mlm_probability < 1:
            problems.append(f"gordon.pretrain.mlm_probability must be in (0, 1), got {pretrain.mlm_probability}")
        if not pretrain.methods:
            problems.append("gordon.pretrain.methods must not be empty")
        check_names(pretrain.methods, PRETRAIN_METHODS, "gordon.pretrain.methods", problems)
        if pretrain.methods and "gmp" not in pretrain.methods:
            problems.append("gordon.pretrain.methods must include gmp: information deletion, the mask difference "
                            "and the similarity analysis compare against it")
        check_names([pretrain.scope], SCOPES, "gordon.pretrain.scope", problems)
        check_names([pretrain.tensors], TENSOR_CHOICES, "gordon.pretrain.tensors", problems)
        check_names([pretrain.mixed_precision], MIXED_PRECISION, "gordon.pretrain.mixed_precision", problems)
    downstream = gordon.downstream
    if downstream is not None:
        check_names(downstream.variants, STUDY_VARIANTS, "gordon.downstream.variants", problems)
        if not downstream.learning_rates:
            problems.append("gordon.downstream.learning_rates must not be empty")
        for lr in downstream.learning_rates or []:
            if isinstance(lr, float) and lr <= 0:
                problems.append(f"gordon.downstream.learning_rates must be positive, got {lr}")
        if len(set(downstream.learning_rates or [])) != len(downstream.learning_rates or []):
            problems.append(f"gordon.downstream.learning_rates must be distinct, got {downstream.learning_rates}")
        at_least(downstream, ("deletion_epochs", "deletion_epochs_high", "after_epochs", "after_epochs_high",
                              "before_pruning_more_epochs"), 1, "downstream")
        before = [e for e in downstream.before_pruning_epochs or [] if isinstance(e, int)]
        if any(e < 1 for e in before) or len(set(before)) != len(before):
            problems.append(f"gordon.downstream.before_pruning_epochs must be distinct positive numbers of epochs, "
                            f"got {downstream.before_pruning_epochs}")
        if before and downstream.before_pruning_sparsity not in sparsities:
            problems.append(f"gordon.downstream.before_pruning_sparsity ({downstream.before_pruning_sparsity}) must be "
                            f"one of gordon.sparsities {gordon.sparsities}: its mask is compared with the one GMP "
                            "found during pre-training at that sparsity")
        elif before and downstream.before_pruning_sparsity == 0:
            problems.append("gordon.downstream.before_pruning_sparsity must be above 0: it is the sparsity pruned to")
    analysis = gordon.analysis
    if analysis is not None:
        at_least(analysis, ("similarity_sequences",), 1, "analysis")
        at_least(analysis, ("magnitude_bins",), 2, "analysis")
