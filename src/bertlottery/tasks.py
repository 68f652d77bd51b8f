"""One :class:`TaskSpec` per GLUE task: where its files are, how to read them, its labels and metrics.

The registry is plain data; reading files lives in :mod:`bertlottery.data` and scoring in
:mod:`bertlottery.metrics`.

Example:
    >>> from bertlottery.tasks import get_task
    >>> task = get_task("sst2")
    >>> task.name, task.num_labels, task.primary_metric
    ('SST-2', 2, 'accuracy')
    >>> get_task("MNLI").eval_splits
    ('dev', 'dev_mismatched')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bertlottery.errors import UserError, did_you_mean

__all__ = ["HubSource", "TASKS", "TaskSpec", "TsvLayout", "get_task"]


@dataclass(frozen=True)
class TsvLayout:
    """Where text and label sit in a task's GLUE TSV file.

    Attributes:
        has_header: Whether the first line names the columns. Only CoLA has no header.
        text_a: Column of the first sentence: a header name, or a 0-based index if there is no header.
        text_b: Column of the second sentence, or ``None`` for single-sentence tasks.
        label: Column of the label (class name, ``0``/``1``, or a float score for STS-B).
        num_columns: Columns per row for headerless files; ``None`` means "as many as the header".
        source: Column naming where each example comes from (STS-B's ``genre``, CoLA's source
            publication), or ``None`` where the file has none. Training caps stratify by it
            (:func:`bertlottery.caps.cap_examples`): the files are sorted by source, so the
            first lines of a file are not a sample of it.
    """

    has_header: bool
    text_a: str | int
    text_b: str | int | None
    label: str | int
    num_columns: int | None = None
    source: str | int | None = None


@dataclass(frozen=True)
class HubSource:
    """The same task on the Hugging Face hub (``datasets.load_dataset(dataset_id, config)``).

    Attributes:
        dataset_id: Hub dataset, ``"nyu-mll/glue"`` for every task.
        config: Hub config name, e.g. ``"sst2"``.
        splits: Our split name -> hub split name (MNLI ``"dev"`` -> ``"validation_matched"``).
        text_a: Hub column of the first sentence.
        text_b: Hub column of the second sentence, or ``None``.
        label_names: The hub's class names, listed in the order of :attr:`TaskSpec.label_names`, so
            hub class ``label_names[i]`` is our class id ``i``. The hub numbers MNLI classes
            entailment=0, neutral=1, contradiction=2, while the GLUE TSVs sort the names; mapping
            through names keeps a model trained on TSV files and evaluated on hub data consistent.
            Empty for regression.
    """

    dataset_id: str
    config: str
    splits: Mapping[str, str] = field(hash=False)
    text_a: str
    text_b: str | None
    label_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific that data loading and evaluation need.

    Attributes:
        name: Canonical GLUE name, e.g. ``"SST-2"``.
        glue_dir: Folder of the task inside a standard GLUE download.
        columns: Where text and labels sit in the TSV files.
        label_names: Label strings as written in the TSV, in class-id order (``()`` for STS-B).
        is_regression: True for STS-B (a single float output).
        splits: Split name -> file name inside :attr:`glue_dir`.
        eval_splits: Splits a model is evaluated on; the first is the one pruning watches.
        hub: Where the task lives on the Hugging Face hub.
        metric_names: Keys of :func:`bertlottery.metrics.compute_metrics` for this task.
        primary_metric: The metric the pruning threshold watches (docs/algorithms.md#the-watched-metric).
        reported_metric: The metric the paper reports in its Table 1.
    """

    name: str
    glue_dir: str
    columns: TsvLayout
    label_names: tuple[str, ...]
    is_regression: bool
    splits: Mapping[str, str] = field(hash=False)
    eval_splits: tuple[str, ...]
    hub: HubSource
    metric_names: tuple[str, ...]
    primary_metric: str
    reported_metric: str

    @property
    def num_labels(self) -> int:
        """Output size of the classifier head: 1 for regression, else the number of classes."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """Whether examples have a second sentence."""
        return self.columns.text_b is not None

    @property
    def hub_id(self) -> str:
        """Hub dataset id, for ``datasets.load_dataset(task.hub_id, task.hub_config)``."""
        return self.hub.dataset_id

    @property
    def hub_config(self) -> str:
        """Hub config name, e.g. ``"mnli"``."""
        return self.hub.config


_GLUE_HUB = "nyu-mll/glue"
_TRAIN_DEV = MappingProxyType({"train": "train.tsv", "dev": "dev.tsv"})
_HUB_TRAIN_DEV = MappingProxyType({"train": "train", "dev": "validation"})
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_ACC = ("accuracy",)
_ACC_F1 = ("accuracy", "f1", "accuracy_f1_mean")


def _task(
    name: str,
    columns: TsvLayout,
    label_names: tuple[str, ...],
    hub: HubSource,
    metric_names: tuple[str, ...] = _ACC,
    primary_metric: str = "accuracy",
    reported_metric: str = "accuracy",
) -> TaskSpec:
    return TaskSpec(
        name=name,
        glue_dir=name,
        columns=columns,
        label_names=label_names,
        is_regression=not label_names,
        splits=_TRAIN_DEV,
        eval_splits=("dev",),
        hub=hub,
        metric_names=metric_names,
        primary_metric=primary_metric,
        reported_metric=reported_metric,
    )


def _pair_layout(a: str = "sentence1", b: str = "sentence2", label: str = "label") -> TsvLayout:
    return TsvLayout(has_header=True, text_a=a, text_b=b, label=label)


def _hub(config: str, a: str, b: str | None, label_names: tuple[str, ...]) -> HubSource:
    return HubSource(_GLUE_HUB, config, _HUB_TRAIN_DEV, a, b, label_names)


_MNLI_LABELS = ("contradiction", "entailment", "neutral")

_ALL = (
    # CoLA: no header; columns are source, label, original label (blank), sentence.
    _task(
        "CoLA",
        TsvLayout(has_header=False, text_a=3, text_b=None, label=1, num_columns=4, source=0),
        _BINARY,
        _hub("cola", "sentence", None, ("unacceptable", "acceptable")),
        metric_names=("mcc", "accuracy"),
        primary_metric="mcc",
        reported_metric="mcc",
    ),
    _task(
        "SST-2",
        TsvLayout(has_header=True, text_a="sentence", text_b=None, label="label"),
        _BINARY,
        _hub("sst2", "sentence", None, ("negative", "positive")),
    ),
    _task(
        "MRPC",
        _pair_layout("#1 String", "#2 String", "Quality"),
        _BINARY,
        _hub("mrpc", "sentence1", "sentence2", ("not_equivalent", "equivalent")),
        metric_names=_ACC_F1,
    ),
    _task(
        "STS-B",
        # genre: main-captions, main-forum or main-news
        TsvLayout(has_header=True, text_a="sentence1", text_b="sentence2", label="score", source="genre"),
        (),
        _hub("stsb", "sentence1", "sentence2", ()),
        metric_names=("pearson", "spearman", "pearson_spearman_mean"),
        primary_metric="pearson_spearman_mean",
        reported_metric="pearson",
    ),
    _task(
        "QQP",
        _pair_layout("question1", "question2", "is_duplicate"),
        _BINARY,
        _hub("qqp", "question1", "question2", ("not_duplicate", "duplicate")),
        metric_names=_ACC_F1,
    ),
    TaskSpec(
        name="MNLI",
        glue_dir="MNLI",
        columns=_pair_layout(label="gold_label"),
        label_names=_MNLI_LABELS,
        is_regression=False,
        splits=MappingProxyType(
            {
                "train": "train.tsv",
                "dev": "dev_matched.tsv",
                "dev_mismatched": "dev_mismatched.tsv",
            }
        ),
        eval_splits=("dev", "dev_mismatched"),
        hub=HubSource(
            _GLUE_HUB,
            "mnli",
            MappingProxyType(
                {
                    "train": "train",
                    "dev": "validation_matched",
                    "dev_mismatched": "validation_mismatched",
                }
            ),
            "premise",
            "hypothesis",
            _MNLI_LABELS,
        ),
        metric_names=_ACC,
        primary_metric="accuracy",
        reported_metric="accuracy",
    ),
    _task("QNLI", _pair_layout("question", "sentence"), _NLI2, _hub("qnli", "question", "sentence", _NLI2)),
    _task("RTE", _pair_layout(), _NLI2, _hub("rte", "sentence1", "sentence2", _NLI2)),
    # WNLI on the hub names its classes not_entailment=0, entailment=1, as the TSV's 0/1.
    _task(
        "WNLI",
        _pair_layout(),
        _BINARY,
        _hub("wnli", "sentence1", "sentence2", ("not_entailment", "entailment")),
    ),
)

TASKS: Mapping[str, TaskSpec] = MappingProxyType({t.name: t for t in _ALL})
"""Canonical name -> :class:`TaskSpec`, in the order of the paper's Table 1."""


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


_BY_KEY = {_normalise(name): task for name, task in TASKS.items()}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, ignoring case, dashes, underscores and spaces.

    Args:
        name: ``"SST-2"``, ``"sst2"``, ``"sts-b"``, ``"stsb"``, ``"cola"``, ...

    Returns:
        The task's spec.

    Raises:
        UserError: The name matches no task; the message suggests the closest one.

    Example:
        >>> get_task("sts_b").name
        'STS-B'
    """
    task = _BY_KEY.get(_normalise(name))
    if task is None:
        raise UserError(
            f"Unknown task '{name}'.{did_you_mean(name, TASKS)} Known tasks: {', '.join(TASKS)}."
        )
    return task
