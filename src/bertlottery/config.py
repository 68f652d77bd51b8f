"""Experiment configs: typed, frozen, validated before anything runs. The only module that parses YAML.

A config is a tree of frozen dataclasses. `load` reads a YAML file, applies ``key.path=value``
overrides (values parsed as YAML: ``tasks=[RTE,MRPC]``, ``train.epochs=2``), and checks everything at
once: unknown or misspelt keys (with a suggestion), wrong types, values out of range, unknown task,
method or mode names. All problems are reported together in one `ConfigError`.

Example:
    >>> config = load("configs/smoke.yaml", ["seeds=[1]", "train.epochs=1"])   # doctest: +SKIP
    >>> config.train.epochs                                                   # doctest: +SKIP
    1
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import UserError, did_you_mean

__all__ = [
    "ConfigError",
    "TrainConfig",
    "StructuredConfig",
    "MagnitudeConfig",
    "PruningConfig",
    "LongerRetrainingConfig",
    "ResourcesConfig",
    "EnergyConfig",
    "AttentionConfig",
    "GordonConfig",
    "GordonCorpusConfig",
    "GordonPretrainConfig",
    "GordonDownstreamConfig",
    "GordonAnalysisConfig",
    "ExperimentConfig",
    "load",
    "from_dict",
    "to_dict",
    "METHODS",
    "SUBNETWORKS",
    "MODES",
    "BASELINES",
]

METHODS = ("structured", "magnitude")
SUBNETWORKS = ("good", "random", "bad")
MODES = ("pruned", "retrained")
BASELINES = ("majority", "random-init")


class ConfigError(UserError):
    """Every problem found in a config, one per line after the first."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        listed = "; ".join(problems)
        super().__init__(f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the config: {listed}")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyper-parameters (SPEC section 10 defaults); ``per_task`` overrides them by task."""

    learning_rate: float = 2e-5
    epochs: int = 3
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    mixed_precision: str = "no"
    max_train_examples: int | None = None
    holdout_fraction: float = 0.0
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_task(self, task: str, seed: int) -> dict[str, Any]:
        """The settings of one task's training runs at ``seed``, as a stage records (and hashes) them."""
        train = {k: v for k, v in dataclasses.asdict(self).items() if k != "per_task"}
        train.update(self.per_task.get(task, {}))
        train["seed"] = seed
        return train


@dataclass(frozen=True)
class StructuredConfig:
    mode: str = "heads+mlps"
    scoring_split: str = "dev"
    normalize_by_layer: bool = True
    global_min_max: bool = False
    batch_size: int = 64


@dataclass(frozen=True)
class MagnitudeConfig:
    scope: str = "global"
    tensors: str = "paper"
    step_fraction: float = 0.1


@dataclass(frozen=True)
class PruningConfig:
    threshold: float = 0.9
    compat: str = "none"
    structured: StructuredConfig = field(default_factory=StructuredConfig)
    magnitude: MagnitudeConfig = field(default_factory=MagnitudeConfig)


@dataclass(frozen=True)
class LongerRetrainingConfig:
    """The paper's appendix D: re-fine-tune some subnetworks longer, dev metric after every epoch."""

    epochs: int = 6
    methods: list[str] = field(default_factory=lambda: ["structured"])
    subnetworks: list[str] = field(default_factory=lambda: ["bad"])


@dataclass(frozen=True)
class ResourcesConfig:
    """What one stage may use. Both executors honour ``cpus_per_stage`` (torch threads), so a study
    run locally and on Ray with the same value gives bitwise the same results table.
    """

    cpus_per_stage: int | None = None  # None: all cores locally, 1 on Ray
    gpus_per_stage: float | None = None  # None: 1 if the Ray cluster has GPUs, else 0


@dataclass(frozen=True)
class EnergyConfig:
    """Energy and CO2 per stage through codecarbon, offline (the paper reports 249 kWh for its study).

    ``track``: None records them if codecarbon is installed (``pip install 'bertlottery[energy]'``),
    true requires it, false turns it off. ``country_iso_code`` sets the grid's carbon intensity.
    """

    track: bool | None = None
    country_iso_code: str = "USA"


@dataclass(frozen=True)
class AttentionConfig:
    """Attention-pattern analysis of the lottery study's heads (issue 6; SPEC section 7; P§5.2, App. F).

    For every task: the raw and norm-based maps of ``examples`` seeded dev examples from the pre-trained
    model (if ``pretrained``) and every fine-tuned seed, each full and under the task's super-survivor
    mask, labelled by ``classifier`` (``rules``, or ``cnn`` with one checkpoint per map kind in
    ``cnn_models``); then pattern proportions and the super-survivor/heterogeneous correlation.
    ``keep_examples``: how many examples' maps stay on disk per model (null: all; labels are kept for all).
    """

    examples: int = 100
    seed: int = 0
    classifier: str = "rules"
    cnn_models: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=lambda: ["raw", "norm"])
    max_length: int = 128
    batch_size: int = 16
    keep_examples: int | None = 10
    pretrained: bool = True


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
class GordonPretrainConfig:
    """Continued MLM pre-training with pruning (G§3.2, SPEC section 8).

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

    steps: int = 100_000
    prune_steps: int = 10_000
    prune_every: int = 10
    methods: list[str] = field(default_factory=lambda: ["gmp", "random"])
    scope: str = "local"
    tensors: str = "gordon"
    prune_embeddings: bool = True
    batch_size: int = 256
    max_length: int = 128
    learning_rate: float = 1e-4
    warmup_steps: int = 1_000
    weight_decay: float = 0.01
    mlm_probability: float = 0.15
    head_steps: int = 0
    head_learning_rate: float = 1e-3
    eval_every: int | None = None  # dev loss every N steps as well as at the end (a curve); None: end only
    mixed_precision: str = "no"


@dataclass(frozen=True)
class GordonDownstreamConfig:
    """Fine-tuning the pruned checkpoints (G§3.2-3.4). Batch size, length, caps per task: ``train``.

    ``variants``: ``pruned`` (each pre-training method's checkpoint, its mask held fixed),
    ``information-deletion`` (the GMP checkpoint's pruned weights zeroed but free to train, for
    ``deletion_epochs``, ``deletion_epochs_high`` from ``deletion_high_from`` sparsity up) and
    ``after-downstream`` (fine-tune the unpruned checkpoint ``train.epochs``, prune to the target by
    magnitude, train ``after_epochs`` more, ``after_epochs_high`` from ``after_high_from`` up). Every
    run is repeated at each of ``learning_rates``; the best dev result is kept.
    """

    variants: list[str] = field(default_factory=lambda: ["pruned", "information-deletion", "after-downstream"])
    learning_rates: list[float] = field(default_factory=lambda: [2e-5, 3e-5, 4e-5, 5e-5])
    deletion_epochs: int = 13
    deletion_epochs_high: int = 15
    deletion_high_from: float = 0.7
    after_epochs: int = 5
    after_epochs_high: int = 7
    after_high_from: float = 0.8


@dataclass(frozen=True)
class GordonAnalysisConfig:
    """E13: ``similarity_sequences`` dev blocks for the hidden-state cosine similarity (G Fig. 2 right);
    ``magnitude_bins`` bins of starting magnitude for sort-order movement (G Fig. 7)."""

    similarity_sequences: int = 64
    magnitude_bins: int = 20


@dataclass(frozen=True)
class GordonConfig:
    """The Compressing-BERT study (Gordon et al. 2020; SPEC section 8). When set, ``bertlottery run``
    runs this study instead of the lottery grid: the top-level ``model``, ``tasks``, ``seeds``,
    ``glue_dir``, ``train`` (downstream fine-tuning) and ``resources`` apply; ``methods``,
    ``subnetworks``, ``modes``, ``pruning`` and ``baselines`` do not.

    Owned by the gordon package: its fields, defaults and validation (``_validate_gordon``).
    """

    sparsities: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(10)])
    corpus: GordonCorpusConfig = field(default_factory=GordonCorpusConfig)
    pretrain: GordonPretrainConfig = field(default_factory=GordonPretrainConfig)
    downstream: GordonDownstreamConfig = field(default_factory=GordonDownstreamConfig)
    analysis: GordonAnalysisConfig = field(default_factory=GordonAnalysisConfig)


@dataclass(frozen=True)
class ExperimentConfig:
    """One study: the grid of tasks x seeds x methods x subnetworks x modes, plus extras."""

    name: str
    model: str = "bert-base-uncased"
    glue_dir: str | None = None  # None: GLUE from the Hugging Face hub
    tasks: list[str] = field(default_factory=lambda: ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI",
                                                      "RTE", "WNLI"])
    seeds: list[int] = field(default_factory=lambda: [1337, 42, 86, 71, 166])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    subnetworks: list[str] = field(default_factory=lambda: list(SUBNETWORKS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    super_survivors: bool = True
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    longer_retraining: LongerRetrainingConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    attention: AttentionConfig | None = None  # set: the lottery study also runs the attention analysis
    gordon: GordonConfig | None = None  # set: this config is a Compressing-BERT study, not the lottery grid


# ---- reading -----------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """``value`` as type ``tp``, or record a problem and return None."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _convert(value, inner[0], where, problems) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping of its fields, got {value!r}")
            return None
        return _build(tp, value, where, problems)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{where} must be a list, got {value!r}")
            return None
        return [_convert(v, item, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping, got {value!r}")
            return None
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads 1e-4 as a string; a researcher writes learning rates that way
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where} must be a number, got {value!r}")
            return value
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where} must be a whole number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict[str, Any], where: str, problems: list[str]):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            path = f"{where}.{key}" if where else key
            problems.append(f"unknown key '{path}'.{did_you_mean(str(key), fields)}".rstrip())
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path, problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"missing key '{path}'")
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def _check_names(values: list[str], allowed: tuple[str, ...] | list[str], where: str, problems: list[str]) -> None:
    for value in values or []:
        if value not in allowed:
            problems.append(f"{where}: unknown '{value}'.{did_you_mean(str(value), allowed)} "
                            f"Known: {', '.join(allowed)}")


def _validate(config: ExperimentConfig, problems: list[str]) -> None:
    from .compat import COMPAT_MODES
    from .importance import TENSOR_SETS
    from .pruning import STRUCTURED_MODES
    from .tasks import get_task

    for task in config.tasks or []:
        try:
            get_task(task)
        except UserError as error:
            problems.append(f"tasks: {error}")
    for name in ("tasks", "seeds", "methods", "subnetworks", "modes"):
        if not getattr(config, name):
            problems.append(f"{name} must not be empty")
    if len(set(config.seeds or [])) != len(config.seeds or []):
        problems.append(f"seeds must be distinct, got {config.seeds}")
    _check_names(config.methods, METHODS, "methods", problems)
    _check_names(config.subnetworks, SUBNETWORKS, "subnetworks", problems)
    _check_names(config.modes, MODES, "modes", problems)
    _check_names(config.baselines, BASELINES, "baselines", problems)
    train = config.train
    if train is not None:
        for name in ("epochs", "batch_size", "max_length"):
            if isinstance(getattr(train, name), int) and getattr(train, name) < 1:
                problems.append(f"train.{name} must be at least 1, got {getattr(train, name)}")
        if isinstance(train.learning_rate, float) and train.learning_rate <= 0:
            problems.append(f"train.learning_rate must be positive, got {train.learning_rate}")
        if isinstance(train.holdout_fraction, float) and not 0 <= train.holdout_fraction < 1:
            problems.append(f"train.holdout_fraction must be in [0, 1), got {train.holdout_fraction}")
        _check_names([train.mixed_precision], ("no", "fp16", "bf16"), "train.mixed_precision", problems)
        train_keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "per_task"]
        for task, overrides in (train.per_task or {}).items():
            try:
                get_task(task)
            except UserError as error:
                problems.append(f"train.per_task: {error}")
            for key in overrides or {}:
                if key not in train_keys:
                    problems.append(f"unknown key 'train.per_task.{task}.{key}'.{did_you_mean(key, train_keys)}".rstrip())
    pruning = config.pruning
    if pruning is not None:
        if isinstance(pruning.threshold, float) and not 0 < pruning.threshold <= 1:
            problems.append(f"pruning.threshold must be in (0, 1], got {pruning.threshold}")
        _check_names([pruning.compat], list(COMPAT_MODES), "pruning.compat", problems)
        if pruning.structured is not None:
            _check_names([pruning.structured.mode], STRUCTURED_MODES, "pruning.structured.mode", problems)
            _check_names([pruning.structured.scoring_split], ("dev", "heldout"), "pruning.structured.scoring_split",
                         problems)
            if pruning.structured.scoring_split == "heldout" and train is not None and not train.holdout_fraction:
                problems.append("pruning.structured.scoring_split is heldout but train.holdout_fraction is 0")
        if pruning.magnitude is not None:
            _check_names([pruning.magnitude.scope], ("global", "local"), "pruning.magnitude.scope", problems)
            _check_names([pruning.magnitude.tensors], list(TENSOR_SETS), "pruning.magnitude.tensors", problems)
    resources = config.resources
    if resources is not None and isinstance(resources.cpus_per_stage, int) and resources.cpus_per_stage < 1:
        problems.append(f"resources.cpus_per_stage must be at least 1, got {resources.cpus_per_stage}")
    if config.attention is not None:
        _validate_attention(config.attention, problems)
    if config.gordon is not None:
        _validate_gordon(config.gordon, problems)
    longer = config.longer_retraining
    if longer is not None:
        _check_names(longer.methods, METHODS, "longer_retraining.methods", problems)
        _check_names(longer.subnetworks, SUBNETWORKS, "longer_retraining.subnetworks", problems)


def _validate_attention(attention: AttentionConfig, problems: list[str]) -> None:
    for name, least in (("examples", 1), ("max_length", 8), ("batch_size", 1), ("keep_examples", 0)):
        value = getattr(attention, name)
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            problems.append(f"attention.{name} must be at least {least}, got {value}")
    _check_names([attention.classifier], ("rules", "cnn"), "attention.classifier", problems)
    _check_names(attention.kinds, ("raw", "norm"), "attention.kinds", problems)
    if not attention.kinds:
        problems.append("attention.kinds must not be empty")
    if attention.classifier == "cnn" and not attention.cnn_models:
        problems.append("attention.classifier is cnn but attention.cnn_models is empty; list one trained "
                        "checkpoint per map kind (bertlottery attention train)")
    for path in attention.cnn_models or []:
        if isinstance(path, str) and not (Path(path) / "classifier.json").is_file():
            problems.append(f"attention.cnn_models: {path} is not a classifier checkpoint (no classifier.json)")


def _validate_gordon(gordon: GordonConfig, problems: list[str]) -> None:
    from .gordon.names import PRETRAIN_METHODS, SCOPES, TENSOR_CHOICES, VARIANTS

    sparsities = [s for s in gordon.sparsities or [] if isinstance(s, float)]
    for sparsity in sparsities:
        if not 0 <= sparsity < 1:
            problems.append(f"gordon.sparsities must be in [0, 1), got {sparsity}")
    if len(set(sparsities)) != len(sparsities):
        problems.append(f"gordon.sparsities must be distinct, got {gordon.sparsities}")
    if sparsities and 0.0 not in sparsities:
        problems.append("gordon.sparsities must include 0.0: the unpruned model every comparison is made against")

    def at_least(section: Any, names: tuple[str, ...], low: int, where: str) -> None:
        for name in names:
            value = getattr(section, name)
            if isinstance(value, int) and not isinstance(value, bool) and value < low:
                problems.append(f"gordon.{where}.{name} must be at least {low}, got {value}")

    def positive(section: Any, names: tuple[str, ...], where: str) -> None:
        for name in names:
            value = getattr(section, name)
            if isinstance(value, float) and value <= 0:
                problems.append(f"gordon.{where}.{name} must be positive, got {value}")

    corpus = gordon.corpus
    if corpus is not None:
        for name in ("train", "dev"):
            if not getattr(corpus, name):
                problems.append(f"gordon.corpus.{name} must name at least one text file or hub:dataset")
        _check_names([corpus.format], ("plain", "wikitext"), "gordon.corpus.format", problems)
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
        _check_names(pretrain.methods, PRETRAIN_METHODS, "gordon.pretrain.methods", problems)
        if pretrain.methods and "gmp" not in pretrain.methods:
            problems.append("gordon.pretrain.methods must include gmp: information deletion, the mask difference "
                            "and the similarity analysis compare against it")
        _check_names([pretrain.scope], SCOPES, "gordon.pretrain.scope", problems)
        _check_names([pretrain.tensors], TENSOR_CHOICES, "gordon.pretrain.tensors", problems)
        _check_names([pretrain.mixed_precision], ("no", "fp16", "bf16"), "gordon.pretrain.mixed_precision", problems)
    downstream = gordon.downstream
    if downstream is not None:
        _check_names(downstream.variants, VARIANTS, "gordon.downstream.variants", problems)
        if not downstream.learning_rates:
            problems.append("gordon.downstream.learning_rates must not be empty")
        for lr in downstream.learning_rates or []:
            if isinstance(lr, float) and lr <= 0:
                problems.append(f"gordon.downstream.learning_rates must be positive, got {lr}")
        if len(set(downstream.learning_rates or [])) != len(downstream.learning_rates or []):
            problems.append(f"gordon.downstream.learning_rates must be distinct, got {downstream.learning_rates}")
        at_least(downstream, ("deletion_epochs", "deletion_epochs_high", "after_epochs", "after_epochs_high"), 1,
                 "downstream")
    analysis = gordon.analysis
    if analysis is not None:
        at_least(analysis, ("similarity_sequences",), 1, "analysis")
        at_least(analysis, ("magnitude_bins",), 2, "analysis")


def _apply_override(data: dict[str, Any], override: str, problems: list[str]) -> None:
    if "=" not in override:
        problems.append(f"override '{override}' is not key=value (for example train.epochs=2)")
        return
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(f"override '{override}': '{part}' is not a section")
            return
        node = child
    node[parts[-1]] = value


def from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), *, source: str = "config") -> ExperimentConfig:
    """Build and validate a config from plain data (what the YAML file holds)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the file must hold a mapping of keys, got {type(data).__name__}"])
    data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy that overrides can change freely
    for override in overrides:
        _apply_override(data, override, problems)
    config = _build(ExperimentConfig, data, "", problems)
    if config is not None:
        _validate(config, problems)
    if problems or config is None:
        raise ConfigError(source, problems or ["the config could not be built"])
    return config


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config; every problem is reported at once."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config {path} does not exist; give a YAML file such as configs/smoke.yaml.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"Config {path} is not valid YAML{where}; fix the syntax.") from None
    return from_dict(data or {}, overrides, source=str(path))


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain data (for writing the resolved config beside a run)."""
    return dataclasses.asdict(config)
