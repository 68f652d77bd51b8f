"""The settings of the fine-tuning loop: declared once, here, and read by the config (``train:``), the
command line (``--lr``, ``--epochs``, ...; generated from the fields) and the loop itself
(`bertlottery.training.finetune`). Imports nothing heavy, so the config and the CLI stay torch-free.

The defaults are the paper's (Prasanna et al. 2020, appendix A; `docs/algorithms.md`): AdamW with eps
1e-8 and no weight decay, lr 2e-5, linear decay without warm-up, gradient-norm clip 1.0, batch 32,
3 epochs.

Example:
    >>> settings = TrainSettings(epochs=1, learning_rate=1e-4)
    >>> settings.problems()
    []
    >>> TrainSettings(epochs=0).problems(prefix="train.")
    ['train.epochs must be at least 1, got 0']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import did_you_mean

__all__ = ["TrainSettings", "MIXED_PRECISION", "PRECISIONS", "SUBNETWORK_TRAINING", "LAST_LAYER", "option", "stage_fields"]

MIXED_PRECISION = ("no", "fp16", "bf16")  # accelerate's names (the Gordon study's pre-training uses them)
PRECISIONS = ("fp32", "bf16", "fp16")  # train.precision's values; `bertlottery.precision` applies them
# How a head+MLP subnetwork is re-fine-tuned: its physically smaller export (`bertlottery.physical`), or
# the full model with gates (every run made before the export was wired in).
SUBNETWORK_TRAINING = ("physical", "gated")
# `bertlottery.lastlayer`: the last layer at the classifier's position only, or at every position
LAST_LAYER = ("cls", "full")


def option(default: Any, help: str, *, flag: str | None = None, config: bool = True, hashed_if_set: bool = False,
           hashed_unless: Any = None, hashed_as: tuple[str, dict[Any, Any]] | None = None,
           choices: tuple[str, ...] | None = None, least: float | None = None, positive: bool = False,
           most: float | None = None, below: float | None = None):
    """A settings field with what the CLI and the config need to know about it.

    ``flag``: the command-line option (default ``--field-name``); ``config``: whether a config's
    ``train:`` section may set it (the seed comes from the study's ``seeds``); ``hashed_if_set``: a
    setting added after studies were run, which enters a stage's id only when set away from its default
    (so those stages keep their ids); ``hashed_unless``: the same for a setting whose new default is not
    what earlier stages did: it enters the id unless it is set to ``hashed_unless``, the old behaviour;
    ``hashed_as``: ``(old name, {value: old value})`` for a renamed setting, hashed (and read back from
    recorded runs) under its old name and values, so that stages made before the rename keep their ids;
    ``least``/``most``/``below``/``positive``/``choices``: its valid
    values (a number is also always finite).
    """
    return field(default=default, metadata={"help": help, "flag": flag, "config": config,
                                             "hashed_if_set": hashed_if_set, "hashed_unless": hashed_unless,
                                             "hashed_as": hashed_as, "choices": choices, "least": least,
                                             "positive": positive, "most": most, "below": below})


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one fine-tuning run (the paper's defaults)."""

    learning_rate: float = option(2e-5, "learning rate", flag="--lr", positive=True)
    epochs: int = option(3, "training epochs (the paper's 3)", least=1)
    batch_size: int = option(32, "examples per batch", least=1)
    max_length: int = option(128, "tokens per example", least=1)
    adam_epsilon: float = option(1e-8, "AdamW's epsilon", hashed_if_set=True, positive=True)
    weight_decay: float = option(0.0, "AdamW weight decay (the paper: none)", least=0)
    warmup_ratio: float = option(0.0, "fraction of the steps with a linear warm-up (the paper: none)", least=0, most=1)
    max_grad_norm: float = option(1.0, "gradient-norm clip", hashed_if_set=True, positive=True)
    seed: int = option(42, "classifier init, dropout and data order", config=False, least=0, below=2**32)
    # Called mixed_precision (accelerate's no|fp16|bf16) before: hashed under that name, so fp32 stages
    # made before the rename keep their ids, and read back from runs that recorded it. bf16 by default:
    # on SST-2 with the quickstart's settings it cost no accuracy and trained 1.7x faster per step on a
    # CPU with avx512_bf16 (BENCHMARKS.md).
    precision: str = option("bf16", "numeric precision of training, scoring and evaluation: bf16 (autocast where "
                            "the CPU or GPU has bf16, else fp32 with a notice), fp32, or fp16 (GPU only)",
                            choices=PRECISIONS,
                            hashed_as=("mixed_precision", {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}))
    group_by_length: bool = option(True, "batch examples of similar length (shuffled in groups)",
                                   flag="--no-group-by-length", hashed_if_set=True)
    subnetwork_training: str = option(
        "physical", "re-fine-tune a head+MLP subnetwork as its physically smaller model (physical) or as the full "
        "model with gates (gated: as runs made before; the same computation up to rounding and dropout draws)",
        choices=SUBNETWORK_TRAINING, hashed_unless="gated")
    last_layer: str = option(
        "cls", "compute the last layer's attention output and MLP only at the position the classifier reads (cls) "
        "or at every position (full: as runs made before; the same function and dropout draws, up to rounding)",
        choices=LAST_LAYER, hashed_unless="full")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        """The settings of a stage's or a run's recorded ``train`` dict (other keys ignored).

        Read as `stage_fields` wrote it: a renamed setting under its old name and values, and a setting
        left out of the hash at its old behaviour (``hashed_unless``) as that behaviour, so that a run
        recorded before the setting existed is read as what it did."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for f in fields(cls):
            old, unless = f.metadata.get("hashed_as"), f.metadata.get("hashed_unless")
            if old and f.name not in values and old[0] in data:
                values[f.name] = {was: now for now, was in old[1].items()}.get(data[old[0]], data[old[0]])
            if unless is not None and f.name not in values:
                values[f.name] = unless
        return cls(**values)

    def problems(self, prefix: str = "", name_of=None) -> list[str]:
        """Every value out of range, one line each, naming the setting as ``prefix + field`` (or
        ``name_of(field)``: the CLI names its flags)."""
        name_of = name_of or (lambda f: prefix + f.name)
        found = []
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if "help" not in meta:
                continue  # a field a subclass added (the config's data settings): checked there
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                continue  # a wrong type is the config's to report
            if isinstance(value, float) and not math.isfinite(value):
                found.append(f"{name_of(f)} must be a finite number, got {value}")
                continue
            if isinstance(value, str) and not meta.get("choices"):
                continue  # a number given as a word: the config's to report
            if meta.get("least") is not None and isinstance(value, (int, float)) and value < meta["least"]:
                found.append(f"{name_of(f)} must be at least {meta['least']}, got {value}")
            if meta.get("most") is not None and isinstance(value, (int, float)) and value > meta["most"]:
                found.append(f"{name_of(f)} must be at most {meta['most']}, got {value}")
            if meta.get("below") is not None and isinstance(value, (int, float)) and value >= meta["below"]:
                found.append(f"{name_of(f)} must be below {meta['below']}, got {value}")
            if meta.get("positive") and isinstance(value, (int, float)) and value <= 0:
                found.append(f"{name_of(f)} must be positive, got {value}")
            if meta.get("choices") and value not in meta["choices"]:
                found.append(f"{name_of(f)}: unknown '{value}'.{did_you_mean(value, meta['choices'])} "
                             f"Known: {', '.join(meta['choices'])}")
        return found

    def stage_dict(self) -> dict[str, Any]:
        """The settings a stage records and hashes (see `stage_fields`)."""
        return stage_fields(self, include_unset=True)


def stage_fields(settings: Any, *, include_unset: bool = False) -> dict[str, Any]:
    """A settings object as a stage records (and hashes) it: a setting added after studies were run only
    when it is set away from what they did (see `option`), a renamed one under its old name, and without
    the settings a config does not set (the seed) unless ``include_unset``."""
    found = {}
    for f in fields(settings):
        value, meta = getattr(settings, f.name), f.metadata
        if not (include_unset or meta.get("config", True)):
            continue
        if (meta.get("hashed_if_set") and value == f.default) or \
                (meta.get("hashed_unless") is not None and value == meta["hashed_unless"]):
            continue
        if meta.get("hashed_as"):
            name, values = meta["hashed_as"]
            found[name] = values.get(value, value)
        else:
            found[f.name] = value
    return found
