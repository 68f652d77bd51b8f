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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .attention.config import AttentionConfig
from .attention.config import validate as validate_attention
from .checks import check_names
from .compat import COMPAT_MODES
from .errors import UserError, did_you_mean
from .gordon.config import (
    GordonAnalysisConfig,
    GordonConfig,
    GordonCorpusConfig,
    GordonDownstreamConfig,
    GordonPretrainConfig,
)
from .gordon.config import validate as validate_gordon
from .settings import TrainSettings
from .tasks import get_task
from .tuning import TuneConfig
from .tuning import validate as validate_tune

__all__ = [
    "ConfigError",
    "STRUCTURED_MODES",
    "MAGNITUDE_TENSOR_SETS",
    "TrainConfig",
    "StructuredConfig",
    "MagnitudeConfig",
    "FisherConfig",
    "FISHER_COSTS",
    "FISHER_LABELS",
    "PruningConfig",
    "LearntCheckConfig",
    "CRITERIA",
    "LongerRetrainingConfig",
    "AblationConfig",
    "ABLATION_UNITS",
    "ResourcesConfig",
    "EnergyConfig",
    "AttentionConfig",
    "GordonConfig",
    "GordonCorpusConfig",
    "GordonPretrainConfig",
    "GordonDownstreamConfig",
    "GordonAnalysisConfig",
    "TuneConfig",
    "ExperimentConfig",
    "load",
    "from_dict",
    "to_dict",
    "METHODS",
    "SUBNETWORKS",
    "MODES",
    "BASELINES",
    "max_train_examples_problems",
    "holdout_fraction_problems",
]

METHODS = ("structured", "magnitude", "fisher")
# The methods a config runs when it names none: the paper's two. The Fisher search is asked for by
# name, so that configs written before it existed keep their graphs (and stage ids).
DEFAULT_METHODS = ("structured", "magnitude")
SUBNETWORKS = ("good", "random", "bad")
MODES = ("pruned", "retrained")
BASELINES = ("majority", "random-init")
# The names `bertlottery.pruning` and `bertlottery.importance` accept; those modules import torch and the
# config must not, so they are repeated here and a test checks that the two lists agree.
STRUCTURED_MODES = ("heads+mlps", "heads", "mlps")
MAGNITUDE_TENSOR_SETS = ("paper", "weights")
CRITERIA = ("paper", "above_chance")  # `bertlottery.pruning.CRITERIA`
FISHER_COSTS = ("macs", "params")  # `bertlottery.export.COSTS`
FISHER_LABELS = ("gold", "predicted")  # `bertlottery.fisher.LABEL_SOURCES`
RENAMED = {("pruning", "threshold"): "keep_fraction",  # old key -> new name, accepted with a warning
           ("train", "mixed_precision"): "precision"}
RENAMED_VALUES = {("train", "mixed_precision"): {"no": "fp32"}}  # an old key's values under the new name


_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class ConfigError(UserError):
    """Every problem found in a config, one per line after the first."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        # a key or value holding a line break (any of str.splitlines') must not break the one line
        listed = "; ".join(problems).translate(_LINE_BREAKS)
        super().__init__(f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the config: {listed}")


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """Fine-tuning in a study: the hyper-parameters of `bertlottery.settings.TrainSettings` (declared
    there once; the seed comes from the study's ``seeds``), the training data, and ``per_task``
    overrides of any of them by task."""

    max_train_examples: int | None = None
    # The seed of a cap's stratified sample: one data seed for all of a study's seeds, so that they
    # differ only in initialisation and data order, as in the paper, which trains on the whole set.
    cap_seed: int = 0
    holdout_fraction: float = 0.0
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_task(self, task: str, seed: int, *, subnetworks: bool = False) -> dict[str, Any]:
        """The settings of one task's training runs at ``seed``, as a stage records (and hashes) them.

        ``cap_seed`` is there only with a cap: a capped run trains on a seeded stratified sample, not
        on the file's first lines as before, so its id must change; an uncapped run keeps its id.
        ``subnetwork_training`` only where ``subnetworks`` (the stage trains s-pruned subnetworks): a
        full or m-pruned fine-tuning does not use it, so its id does not depend on it."""
        merged = dataclasses.replace(self, **self.per_task.get(task, {}), seed=seed)
        cap = {} if merged.max_train_examples is None else {"cap_seed": merged.cap_seed}
        train = TrainSettings.from_dict(dataclasses.asdict(merged)).stage_dict()
        if not subnetworks:
            train.pop("subnetwork_training", None)
        return {**train, "max_train_examples": merged.max_train_examples, **cap,
                "holdout_fraction": merged.holdout_fraction}


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
class FisherConfig:
    """The retraining-free Fisher search (Kwon et al. 2022; `bertlottery.fisher`, docs/fisher.md).

    The budget: by default the cost of the s-search's good mask of the same task and seed (so the
    two methods are compared at equal cost; the ``structured`` method must then be in the study);
    ``budget_fraction`` a fraction of the full model's cost instead, or ``budget`` an absolute cost.
    ``cost``: ``macs`` (multiply-accumulates per token at ``seq_len``) or ``params``. ``examples``:
    training examples the Fisher estimate is taken over (the paper's 2,048); ``tune_examples``: the
    least-squares calibration sample, drawn from those (None: all of them)."""

    examples: int = 2048
    budget_fraction: float | None = None
    budget: int | None = None
    cost: str = "macs"
    seq_len: int = 128
    labels: str = "gold"
    rearrange: bool = True
    tune: bool = True
    tune_examples: int | None = None
    batch_size: int = 32

    def problems(self) -> list[str]:
        found = []
        if self.budget_fraction is not None and self.budget is not None:
            found.append("pruning.fisher: give budget_fraction or budget, not both (or neither: the s-search's cost)")
        if _outside(self.budget_fraction, 0, 1, low_open=True, high_open=False):
            found.append(f"pruning.fisher.budget_fraction must be in (0, 1], got {self.budget_fraction}")
        for name in ("examples", "seq_len", "batch_size", "tune_examples", "budget"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                found.append(f"pruning.fisher.{name} must be at least 1, got {value}")
        check_names([self.cost], FISHER_COSTS, "pruning.fisher.cost", found)
        check_names([self.labels], FISHER_LABELS, "pruning.fisher.labels", found)
        return found


@dataclass(frozen=True)
class LearntCheckConfig:
    """Before pruning, a fine-tuned model must beat the majority class on dev (`bertlottery.learnt`):
    by more than a one-sided test at ``alpha`` allows at the dev set's size, or by ``margin`` if set.
    A model that does not is not pruned; its downstream stages are skipped with the reason."""

    enabled: bool = True
    alpha: float = 0.05
    margin: float | None = None


@dataclass(frozen=True)
class PruningConfig:
    """``keep_fraction``: a search goes on while the pruned model keeps at least this fraction of the
    full model's dev metric (the paper's 90%; called ``threshold`` before). ``criterion``: ``paper``
    (the pruned model keeps keep_fraction x full) or ``above_chance`` (chance + keep_fraction x
    (full - chance), chance being the majority class's score, 0 for MCC and correlations)."""

    keep_fraction: float = 0.9
    criterion: str = "paper"
    compat: str = "none"
    learnt_check: LearntCheckConfig = field(default_factory=LearntCheckConfig)
    structured: StructuredConfig = field(default_factory=StructuredConfig)
    magnitude: MagnitudeConfig = field(default_factory=MagnitudeConfig)
    fisher: FisherConfig = field(default_factory=FisherConfig)


@dataclass(frozen=True)
class LongerRetrainingConfig:
    """The paper's appendix D: re-fine-tune some subnetworks longer, dev metric after every epoch.
    ``seeds``: the study's seeds that get them (None: every seed); a study on a small budget can run the
    longer re-fine-tuning for one seed, as a check that the shorter one has converged."""

    epochs: int = 6
    methods: list[str] = field(default_factory=lambda: ["structured"])
    subnetworks: list[str] = field(default_factory=lambda: ["bad"])
    seeds: list[int] | None = None


ABLATION_UNITS = ("mlps", "heads")


@dataclass(frozen=True)
class AblationConfig:
    """Per fine-tuned model, each unit of ``units`` (``mlps``, ``heads``) gated off alone and scored on
    dev, beside the importance its s-pruning search started from (`bertlottery.steps.ablation`): one dev
    evaluation per unit (6 MLPs on a 6-layer model; its 72 heads cost 12 times that)."""

    units: list[str] = field(default_factory=lambda: ["mlps"])


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
class ExperimentConfig:
    """One study: the grid of tasks x seeds x methods x subnetworks x modes, plus extras."""

    name: str
    model: str = "bert-base-uncased"
    glue_dir: str | None = None  # None: GLUE from the Hugging Face hub
    tasks: list[str] = field(default_factory=lambda: ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI",
                                                      "RTE", "WNLI"])
    seeds: list[int] = field(default_factory=lambda: [1337, 42, 86, 71, 166])
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    subnetworks: list[str] = field(default_factory=lambda: list(SUBNETWORKS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    super_survivors: bool = True
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    longer_retraining: LongerRetrainingConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig | None = None  # set: each task's fine-tuning settings are chosen from a grid (bertlottery.tuning)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    attention: AttentionConfig | None = None  # set: the lottery study also runs the attention analysis
    ablation: AblationConfig | None = None  # set: importance against each unit's ablation cost, per fine-tuned model
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
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("config", True)}
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


def max_train_examples_problems(value: Any, name: str = "train.max_train_examples") -> list[str]:
    """The config's and the CLI's one check of a training-set cap: none, or a positive whole number."""
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value >= 1:
        return []  # a wrong type is reported by the reader of the value
    return [f"{name} must be at least 1 (or left out for every example), got {value}"]


def holdout_fraction_problems(value: Any, name: str = "train.holdout_fraction") -> list[str]:
    """The config's and the CLI's one check of the held-out fraction of train: in [0, 1)."""
    if _outside(value, 0, 1, low_open=False, high_open=True):
        return [f"{name} must be in [0, 1), got {value}"]
    return []


def _outside(value: Any, low: float, high: float, *, low_open: bool, high_open: bool) -> bool:
    """Whether a number lies outside its range (NaN lies outside every range); a value of another type
    is reported where it is read, not here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if value != value:  # NaN
        return True
    return not ((value > low if low_open else value >= low) and (value < high if high_open else value <= high))


def _validate_name(name: Any, problems: list[str]) -> None:
    # the name becomes the folder runs/<name>: it must stay one folder below runs/
    if isinstance(name, str) and (not name.strip() or "/" in name or "\\" in name or ".." in name
                                  or name.startswith(".")):
        problems.append(f"name must be a plain folder name (not empty, no '/', '\\' or '..', not starting with '.'), "
                        f"got {name!r}")


def _validate_per_task(train: TrainConfig, problems: list[str]) -> None:
    """Each task's overrides: a mapping of known train keys with values of the right type and range."""
    hints = typing.get_type_hints(TrainConfig)
    train_keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "per_task" and f.metadata.get("config", True)]
    for task, overrides in (train.per_task or {}).items():
        where = f"train.per_task.{task}"
        try:
            get_task(str(task))
        except UserError as error:
            problems.append(f"train.per_task: {error}")
        if overrides is None:
            overrides = train.per_task[task] = {}
        if not isinstance(overrides, dict):
            problems.append(f"{where} must be a mapping of train keys (for example {{epochs: 5}}), got {overrides!r}")
            continue
        found: list[str] = []
        converted = {}
        for key, value in overrides.items():
            if key not in train_keys:
                found.append(f"unknown key '{where}.{key}'.{did_you_mean(str(key), train_keys)}".rstrip())
            else:
                converted[key] = _convert(value, hints[key], f"{where}.{key}", found)
        if not found:
            # the merged settings checked as the section is, naming only the values this task sets
            merged = dataclasses.replace(train, **converted, per_task={})
            found += [line for line in merged.problems(prefix=f"{where}.")
                      if line.split(" ", 1)[0].removeprefix(f"{where}.").rstrip(":") in converted]
            if "max_train_examples" in converted:
                found += max_train_examples_problems(merged.max_train_examples, f"{where}.max_train_examples")
            found += holdout_fraction_problems(converted.get("holdout_fraction", 0.0), f"{where}.holdout_fraction")
            train.per_task[task] = converted  # the typed values (1e-4 read as text by YAML 1.1 becomes a number)
        problems += found


def _validate(config: ExperimentConfig, problems: list[str]) -> None:
    _validate_name(config.name, problems)
    for seed in config.seeds or []:
        if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
            problems.append(f"seeds must be in [0, 2**32), got {seed}")
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
    check_names(config.methods, METHODS, "methods", problems)
    check_names(config.subnetworks, SUBNETWORKS, "subnetworks", problems)
    check_names(config.modes, MODES, "modes", problems)
    check_names(config.baselines, BASELINES, "baselines", problems)
    train = config.train
    if train is not None:
        problems += train.problems(prefix="train.")
        problems += holdout_fraction_problems(train.holdout_fraction)
        problems += max_train_examples_problems(train.max_train_examples)
        _validate_per_task(train, problems)
    pruning = config.pruning
    if pruning is not None:
        if _outside(pruning.keep_fraction, 0, 1, low_open=True, high_open=False):
            problems.append(f"pruning.keep_fraction must be in (0, 1], got {pruning.keep_fraction}")
        check_names([pruning.compat], list(COMPAT_MODES), "pruning.compat", problems)
        check_names([pruning.criterion], CRITERIA, "pruning.criterion", problems)
        check = pruning.learnt_check
        if check is not None and isinstance(check.alpha, float) and not 0 < check.alpha < 1:
            problems.append(f"pruning.learnt_check.alpha must be between 0 and 1, got {check.alpha}")
        if check is not None and isinstance(check.margin, float) and not check.margin > 0:
            problems.append(f"pruning.learnt_check.margin must be above 0 (0 passes a constant predictor), "
                            f"got {check.margin}")
        if pruning.structured is not None:
            check_names([pruning.structured.mode], STRUCTURED_MODES, "pruning.structured.mode", problems)
            check_names([pruning.structured.scoring_split], ("dev", "heldout"), "pruning.structured.scoring_split",
                         problems)
            if pruning.structured.scoring_split == "heldout" and train is not None and not train.holdout_fraction:
                problems.append("pruning.structured.scoring_split is heldout but train.holdout_fraction is 0")
            if isinstance(pruning.structured.batch_size, int) and pruning.structured.batch_size < 1:
                problems.append(f"pruning.structured.batch_size must be at least 1, got {pruning.structured.batch_size}")
        if pruning.magnitude is not None:
            check_names([pruning.magnitude.scope], ("global", "local"), "pruning.magnitude.scope", problems)
            check_names([pruning.magnitude.tensors], MAGNITUDE_TENSOR_SETS, "pruning.magnitude.tensors", problems)
            if _outside(pruning.magnitude.step_fraction, 0, 1, low_open=True, high_open=False):
                problems.append(f"pruning.magnitude.step_fraction must be in (0, 1], got {pruning.magnitude.step_fraction}")
        fisher = pruning.fisher
        if fisher is not None:
            problems += fisher.problems()
            if ("fisher" in (config.methods or []) and fisher.budget is None and fisher.budget_fraction is None
                    and "structured" not in (config.methods or [])):
                problems.append("pruning.fisher takes its budget from the structured method's good mask, but methods "
                                "has no structured; add it, or set pruning.fisher.budget_fraction")
    resources = config.resources
    if resources is not None and isinstance(resources.cpus_per_stage, int) and resources.cpus_per_stage < 1:
        problems.append(f"resources.cpus_per_stage must be at least 1, got {resources.cpus_per_stage}")
    if config.tune is not None:
        validate_tune(config.tune, config.tasks, _convert, problems)
        if config.gordon is not None:
            problems.append("tune: is for the lottery study; a gordon: study sweeps gordon.downstream.learning_rates")
    if config.attention is not None:
        validate_attention(config.attention, problems)
    if config.gordon is not None:
        validate_gordon(config.gordon, problems)
    if config.ablation is not None:
        check_names(config.ablation.units, ABLATION_UNITS, "ablation.units", problems)
        if not config.ablation.units:
            problems.append("ablation.units must not be empty: give mlps, heads or both")
        if config.gordon is not None:
            problems.append("ablation: is for the lottery study; a gordon: study has no s-pruning search to compare with")
        elif "structured" not in (config.methods or []):
            problems.append("ablation: compares each unit's cost with the s-pruning search's importance, but methods "
                            "has no structured; add it, or remove the ablation: section")
    longer = config.longer_retraining
    if longer is not None:
        check_names(longer.methods, METHODS, "longer_retraining.methods", problems)
        check_names(longer.subnetworks, SUBNETWORKS, "longer_retraining.subnetworks", problems)
        if isinstance(longer.epochs, int) and not isinstance(longer.epochs, bool) and longer.epochs < 1:
            problems.append(f"longer_retraining.epochs must be at least 1, got {longer.epochs}")
        if longer.seeds is not None and not set(longer.seeds) <= set(config.seeds or []):
            problems.append(f"longer_retraining.seeds must be among the study's seeds {config.seeds}, "
                            f"got {longer.seeds}")


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


def _rename_old_keys(data: dict[str, Any], source: str, problems: list[str]) -> None:
    for (section, old), new in RENAMED.items():
        part = data.get(section)
        if not isinstance(part, dict) or old not in part:
            continue
        if new in part:
            problems.append(f"{section}.{old} was renamed {section}.{new}; give only {section}.{new}")
            continue
        value = part.pop(old)
        part[new] = RENAMED_VALUES.get((section, old), {}).get(value, value) if isinstance(value, str) else value
        warnings.warn(f"{source}: {section}.{old} is now called {section}.{new}; rename it (read as {new} this time)",
                      FutureWarning, stacklevel=3)


def from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), *, source: str = "config") -> ExperimentConfig:
    """Build and validate a config from plain data (what the YAML file holds)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the file must hold a mapping of keys, got {type(data).__name__}"])
    data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy that overrides can change freely
    for override in overrides:
        _apply_override(data, override, problems)
    _rename_old_keys(data, source, problems)
    config = _build(ExperimentConfig, data, "", problems)
    if config is not None:
        try:
            _validate(config, problems)
        except (TypeError, AttributeError, ValueError):
            if not problems:
                raise  # a range check failing on well-typed values is a bug, not the user's to fix
            # else a value of the wrong type, reported above, tripped a range check: fixing it comes first
    if problems or config is None:
        raise ConfigError(source, problems or ["the config could not be built"])
    return config


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config; every problem is reported at once."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"Config {path} is a directory; give a YAML file such as configs/smoke.yaml.")
    if not path.is_file():
        raise UserError(f"Config {path} does not exist; give a YAML file such as configs/smoke.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(f"Config {path} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
    except OSError as error:
        raise UserError(f"Cannot read config {path} ({error.strerror}).") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"Config {path} is not valid YAML{where}; fix the syntax.") from None
    return from_dict(data or {}, overrides, source=str(path))


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain data (for writing the resolved config beside a run): what `from_dict` reads back."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if f.metadata.get("config", True)}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)
