"""The results table: atomic per-stage rows, concurrent writers, damaged files, deterministic output."""

from __future__ import annotations

import multiprocessing
import os

import pandas as pd
import pytest

from bertlottery.errors import UserError
from bertlottery.results import COLUMNS, ResultRow, read_rows, rows_from_metrics, write_stage_rows, write_table

MNLI = {
    "task": "MNLI",
    "body_fraction_kept": 0.62,
    "splits": {
        "dev": {"metrics": {"accuracy": 0.80, "n_examples": 9815}},
        "dev_mismatched": {"metrics": {"accuracy": 0.81, "n_examples": 9832}},
    },
}


def test_rows_from_a_metrics_record():
    rows = rows_from_metrics(MNLI, seed=42, method="structured", subnetwork="good", mode="pruned", epochs=3,
                             stage_id="s1")
    assert [(r.split, r.metric, r.value) for r in rows] == [("dev", "accuracy", 0.80),
                                                            ("dev_mismatched", "accuracy", 0.81)]
    assert all(r.task == "MNLI" and r.fraction_kept == 0.62 and r.stage_id == "s1" for r in rows)


def rows(stage: int, n: int = 3) -> list[ResultRow]:
    return [ResultRow(task="RTE", seed=stage, method="magnitude", subnetwork="bad", mode="retrained", split="dev",
                      metric=f"m{i}", value=stage + i / 10, fraction_kept=0.5, epochs=3, stage_id=f"stage-{stage}")
            for i in range(n)]


def _writer(run_dir: str, worker: int, stages: int) -> None:
    for k in range(stages):
        stage = worker * 1000 + k
        write_stage_rows(run_dir, f"stage-{stage}", rows(stage))


def test_concurrent_writers_never_drop_or_corrupt_a_row(tmp_path):
    workers, stages = 4, 25
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(tmp_path), w, stages)) for w in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
        assert p.exitcode == 0
    table = write_table(tmp_path)
    assert len(table) == workers * stages * 3
    assert table["stage_id"].nunique() == workers * stages
    assert list(table.columns) == COLUMNS
    assert pd.read_parquet(tmp_path / "results.parquet").equals(table)
    assert not [p for p in os.listdir(tmp_path / "rows") if p.startswith(".")], "temporary files left behind"


def test_rerunning_a_stage_replaces_exactly_its_rows(tmp_path):
    write_stage_rows(tmp_path, "stage-1", rows(1))
    write_stage_rows(tmp_path, "stage-2", rows(2))
    write_stage_rows(tmp_path, "stage-1", rows(1, n=1))
    table = write_table(tmp_path)
    assert len(table) == 4 and (table["stage_id"] == "stage-1").sum() == 1


def test_the_same_rows_give_byte_identical_tables(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for stage in (3, 1, 2):
        write_stage_rows(a, f"stage-{stage}", rows(stage))
    for stage in (2, 3, 1):
        write_stage_rows(b, f"stage-{stage}", rows(stage))
    write_table(a), write_table(b)
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()


def test_a_damaged_row_file_is_named(tmp_path):
    write_stage_rows(tmp_path, "stage-1", rows(1))
    (tmp_path / "rows" / "stage-2.json").write_text('{"stage_id": "stage-2", "rows": [{"task": "RT')
    with pytest.raises(UserError, match="stage-2.json"):
        read_rows(tmp_path)


def test_summary_gives_mean_and_std_over_seeds_of_the_watched_metric():
    rows = []
    for seed, value in ((1, 0.6), (2, 0.8)):
        for metric, v in (("accuracy", value), ("f1", 0.1)):
            rows.append(ResultRow(task="MRPC", seed=seed, method="structured", subnetwork="good", mode="pruned",
                                  split="dev", metric=metric, value=v, fraction_kept=0.5 + seed / 10, epochs=3,
                                  stage_id=f"s{seed}"))
    rows.append(ResultRow(task="MRPC", seed=None, method="majority", subnetwork="none", mode="baseline", split="dev",
                          metric="accuracy", value=0.68, fraction_kept=1.0, epochs=None, stage_id="m"))
    table = pd.DataFrame([r.__dict__ for r in rows], columns=COLUMNS)
    from bertlottery.results import summary

    out = summary(table)
    good = out[out["subnetwork"] == "good"].iloc[0]
    assert good["metric"] == "accuracy" and good["n"] == 2
    assert good["mean"] == pytest.approx(0.7) and good["std"] == pytest.approx(0.1414213, rel=1e-5)  # ddof=1
    assert good["fraction_kept"] == pytest.approx(0.65)
    assert out[out["method"] == "majority"].iloc[0]["mean"] == pytest.approx(0.68)
    from bertlottery.results import format_summary

    text = format_summary(out)
    assert "0.7000" in text and "0.1414" in text
    majority_line = next(line for line in text.splitlines() if "majority" in line)
    assert " - " in majority_line  # one value: no spread, no epochs
