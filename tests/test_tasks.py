"""The GLUE task registry: names, labels, splits, metrics, lookup errors."""

from __future__ import annotations

import dataclasses

import pytest

from bertlottery.errors import UserError
from bertlottery.tasks import TASKS, TaskSpec, get_task

GLUE_ORDER = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]


def test_registry_has_the_nine_tasks_in_table_1_order():
    assert list(TASKS) == GLUE_ORDER
    assert all(isinstance(t, TaskSpec) and t.name == name for name, t in TASKS.items())


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("SST-2", "SST-2"),
        ("sst2", "SST-2"),
        ("sst_2", "SST-2"),
        ("Sst-2", "SST-2"),
        ("sts-b", "STS-B"),
        ("stsb", "STS-B"),
        ("STSB", "STS-B"),
        ("cola", "CoLA"),
        ("COLA", "CoLA"),
        ("mnli", "MNLI"),
        (" rte ", "RTE"),
        ("Wnli", "WNLI"),
    ],
)
def test_get_task_tolerates_case_and_punctuation(spelling, name):
    assert get_task(spelling) is TASKS[name]


def test_unknown_task_suggests_the_closest_and_lists_all():
    with pytest.raises(UserError) as e:
        get_task("COLAA")
    assert str(e.value) == (
        "Unknown task 'COLAA'. Did you mean 'CoLA'? "
        "Known tasks: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI."
    )


def test_unknown_task_without_a_close_match_still_lists_all():
    with pytest.raises(UserError, match=r"^Unknown task 'imdb'\. Known tasks: CoLA, SST-2, .*WNLI\.$"):
        get_task("imdb")


def test_label_names_follow_the_tsv_order():
    assert get_task("MNLI").label_names == ("contradiction", "entailment", "neutral")
    assert get_task("RTE").label_names == ("entailment", "not_entailment")
    assert get_task("QNLI").label_names == ("entailment", "not_entailment")
    for name in ["CoLA", "SST-2", "MRPC", "QQP", "WNLI"]:
        assert TASKS[name].label_names == ("0", "1")
    assert get_task("STS-B").label_names == ()


def test_num_labels_and_regression():
    assert {n: t.num_labels for n, t in TASKS.items()} == {
        "CoLA": 2, "SST-2": 2, "MRPC": 2, "STS-B": 1, "QQP": 2, "MNLI": 3, "QNLI": 2, "RTE": 2, "WNLI": 2,
    }  # fmt: skip
    assert [n for n, t in TASKS.items() if t.is_regression] == ["STS-B"]


def test_primary_metric_is_what_the_pruning_threshold_watches():
    # the paper's metrics (docs/algorithms.md): CoLA MCC, STS-B mean of Pearson and Spearman, all others accuracy.
    primary = {n: t.primary_metric for n, t in TASKS.items()}
    assert primary.pop("CoLA") == "mcc"
    assert primary.pop("STS-B") == "pearson_spearman_mean"
    assert set(primary.values()) == {"accuracy"}
    for t in TASKS.values():
        assert t.primary_metric in t.metric_names
        assert t.reported_metric in t.metric_names
    assert get_task("STS-B").reported_metric == "pearson"  # the paper's Table 1
    assert get_task("MRPC").metric_names == ("accuracy", "f1", "accuracy_f1_mean")
    assert get_task("QQP").metric_names == ("accuracy", "f1", "accuracy_f1_mean")


def test_splits_and_eval_splits():
    mnli = get_task("MNLI")
    assert dict(mnli.splits) == {
        "train": "train.tsv",
        "dev": "dev_matched.tsv",
        "dev_mismatched": "dev_mismatched.tsv",
    }
    assert mnli.eval_splits == ("dev", "dev_mismatched")
    for name, t in TASKS.items():
        assert t.glue_dir == name
        assert set(t.eval_splits) <= set(t.splits)
        if name != "MNLI":
            assert dict(t.splits) == {"train": "train.tsv", "dev": "dev.tsv"}
            assert t.eval_splits == ("dev",)


def test_hub_sources_cover_every_split_and_label():
    for t in TASKS.values():
        assert t.hub_id == "nyu-mll/glue"
        assert set(t.hub.splits) == set(t.splits)
        assert len(t.hub.label_names) == len(t.label_names)
        assert (t.hub.text_b is None) == (not t.is_pair)
    mnli = get_task("MNLI").hub
    assert mnli.config == "mnli"
    assert mnli.splits["dev"] == "validation_matched"
    assert mnli.splits["dev_mismatched"] == "validation_mismatched"
    assert get_task("SST-2").hub_config == "sst2"
    assert get_task("STS-B").hub_config == "stsb"


def test_columns():
    cola = get_task("CoLA").columns
    assert (cola.has_header, cola.text_a, cola.text_b, cola.label, cola.num_columns) == (False, 3, None, 1, 4)
    assert get_task("MNLI").columns.label == "gold_label"
    assert get_task("MRPC").columns.text_a == "#1 String"
    assert get_task("QQP").columns.label == "is_duplicate"
    assert [n for n, t in TASKS.items() if not t.is_pair] == ["CoLA", "SST-2"]


def test_specs_are_frozen_and_hashable():
    task = get_task("RTE")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.name = "x"  # type: ignore[misc]
    assert len({t: n for n, t in TASKS.items()}) == 9
