"""The ``attention:`` section of an experiment config: its fields, defaults and checks. Torch-free
(`bertlottery.config` composes it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..checks import at_least, check_names

__all__ = ["AttentionConfig", "validate", "MAPS_KIND", "ANALYSIS_KIND"]

# the attention study's stage kinds (its stages and the report's section both name them)
MAPS_KIND = "attention-maps"
ANALYSIS_KIND = "attention-analysis"


@dataclass(frozen=True)
class AttentionConfig:
    """Attention-pattern analysis of the lottery study's heads (P§5.2, App. F; `docs/algorithms.md`).

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



def validate(attention: AttentionConfig, problems: list[str]) -> None:
    """Append every problem of an ``attention:`` section to ``problems``."""
    for name, least in (("examples", 1), ("max_length", 8), ("batch_size", 1), ("keep_examples", 0)):
        at_least(attention, (name,), least, "attention", problems)
    check_names([attention.classifier], ("rules", "cnn"), "attention.classifier", problems)
    check_names(attention.kinds, ("raw", "norm"), "attention.kinds", problems)
    if not attention.kinds:
        problems.append("attention.kinds must not be empty")
    if attention.classifier == "cnn" and not attention.cnn_models:
        problems.append("attention.classifier is cnn but attention.cnn_models is empty; list one trained "
                        "checkpoint per map kind (bertlottery attention train)")
    for path in attention.cnn_models or []:
        if isinstance(path, str) and not (Path(path) / "classifier.json").is_file():
            problems.append(f"attention.cnn_models: {path} is not a classifier checkpoint (no classifier.json)")
