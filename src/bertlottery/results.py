"""The results table: one row per (evaluation, metric), written so that nothing is ever lost or torn.

Every stage writes its rows to a file of its own, ``RUN/rows/<stage id>.json``, atomically (a temporary
file renamed into place). Several workers writing at once therefore never touch the same file, a
crash leaves either the old file or the new one, and re-running a stage replaces exactly its rows.
`write_table` gathers all row files into ``results.parquet`` and ``results.csv`` (also atomically),
sorted so that the same rows always give byte-identical files.

Columns: task, seed, method, subnetwork, mode, split, metric, value, fraction_kept, epochs, stage_id, note.
``note`` is empty except on a fine-tuned model's rows when it did not pass the learnt-check
(`bertlottery.learnt`): ``not learnt: <reason>``, the reason its pruning and everything after it were
skipped (those stages have no rows; ``bertlottery status`` lists them with the same reason).

Example:
    >>> rows = rows_from_metrics(record, task="RTE", seed=42, method="structured", subnetwork="good",
    ...                          mode="pruned", epochs=3, stage_id="evaluate-3f2a")   # doctest: +SKIP
    >>> write_stage_rows(run_dir, "evaluate-3f2a", rows)                             # doctest: +SKIP
    >>> table = write_table(run_dir)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import runs
from .errors import UserError

__all__ = [
    "ResultRow",
    "COLUMNS",
    "ROWS_DIR",
    "rows_from_metrics",
    "write_stage_rows",
    "read_rows",
    "write_table",
    "summary",
    "format_summary",
]

ROWS_DIR = runs.ROWS_DIR  # kept importable here for readers written before runs.py held the layout


@dataclass(frozen=True)
class ResultRow:
    task: str
    seed: int | None
    method: str  # "none" for the full model, "structured", "magnitude", a baseline's name
    subnetwork: str  # "full", "good", "random", "bad", "super-good", ...
    mode: str  # "finetuned", "pruned", "retrained", "baseline"
    split: str
    metric: str
    value: float
    fraction_kept: float
    epochs: int | None
    stage_id: str
    note: str = ""  # "not learnt: <reason>" on the rows of a fine-tuned model that learnt nothing


COLUMNS = [f.name for f in fields(ResultRow)]
_OPTIONAL = {"note": ""}  # columns added later: row files written before them are read with the default


def rows_from_metrics(record: dict[str, Any], **keys: Any) -> list[ResultRow]:
    """Rows of a metrics record (``{"splits": {split: {"metrics": {...}}}, "body_fraction_kept": f}``)."""
    keys.setdefault("task", record.get("task"))
    fraction = float(record.get("body_fraction_kept", 1.0))
    return [
        ResultRow(split=split, metric=metric, value=float(value), fraction_kept=fraction, **keys)
        for split, entry in record["splits"].items()
        for metric, value in entry["metrics"].items()
        if metric != "n_examples"
    ]


def write_stage_rows(run_dir: str | os.PathLike, stage_id: str, rows: list[ResultRow]) -> Path:
    """Replace the rows of one stage, atomically."""
    folder = Path(run_dir) / ROWS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stage_id}.json"
    tmp = folder / f".{stage_id}.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"stage_id": stage_id, "rows": [asdict(r) for r in rows]}, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_rows(run_dir: str | os.PathLike, stage_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """All rows of a run (only those of ``stage_ids``' files, if given: a config that changed leaves
    rows of stages no longer in its graph behind); a damaged row file is refused by name.
    """
    folder = Path(run_dir) / ROWS_DIR
    rows: list[dict[str, Any]] = []
    damaged = []
    wanted = None if stage_ids is None else {f"{i}.json" for i in stage_ids}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if wanted is not None and path.name not in wanted:
            continue
        try:
            data = json.loads(path.read_text())
            stage_rows = [{**_OPTIONAL, **r} for r in data["rows"]]
            if any(set(r) != set(COLUMNS) for r in stage_rows):
                raise ValueError("wrong columns")
        except (ValueError, KeyError, TypeError):
            damaged.append(path.name)
            continue
        rows.extend(stage_rows)
    if damaged:
        raise UserError(f"Damaged result files in {folder}: {', '.join(damaged)}; delete them and run their stages again.")
    return rows


def write_table(run_dir: str | os.PathLike, stage_ids: list[str] | None = None):
    """Gather the stages' rows into ``results.parquet`` and ``results.csv``; returns the DataFrame."""
    import pandas as pd

    run_dir = Path(run_dir)
    table = pd.DataFrame(read_rows(run_dir, stage_ids), columns=COLUMNS)
    order = ["task", "seed", "method", "subnetwork", "mode", "epochs", "split", "metric", "stage_id"]
    table = table.sort_values(order, na_position="first", kind="mergesort").reset_index(drop=True)
    for name, write in ((runs.RESULTS_PARQUET, lambda p: table.to_parquet(p, index=False)),
                        (runs.RESULTS_CSV, lambda p: table.to_csv(p, index=False))):
        tmp = run_dir / f".{name}.tmp-{os.getpid()}"
        write(tmp)
        os.replace(tmp, run_dir / name)
    return table


def summary(table):
    """Per task, the metric the pruning watched on the main dev split: mean and sample std over seeds
    of every (method, subnetwork, mode), with the mean fraction of encoder-body weights kept.

    A pure function of the results table (a DataFrame), so a report can be rebuilt from the file.
    """
    import pandas as pd

    from .tasks import get_task

    if table.empty:
        return pd.DataFrame(columns=["task", "method", "subnetwork", "mode", "epochs", "metric", "mean", "std",
                                     "n", "fraction_kept"])
    parts = []
    for task_name, rows in table.groupby("task", sort=False):
        task = get_task(task_name)
        main = rows[(rows["split"] == task.eval_splits[0]) & (rows["metric"] == task.primary_metric)]
        grouped = main.groupby(["method", "subnetwork", "mode", "epochs"], dropna=False, sort=True)
        part = grouped["value"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
        part["fraction_kept"] = grouped["fraction_kept"].mean()
        part = part.reset_index()
        part.insert(0, "task", task.name)
        part.insert(5, "metric", task.primary_metric)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def format_summary(table) -> str:
    """The summary as aligned text: 4 decimals, ``-`` where a cell has no spread (one seed) or no epochs."""
    import pandas as pd

    shown = table.assign(
        mean=table["mean"].map("{:.4f}".format),
        std=table["std"].map(lambda v: "-" if pd.isna(v) else f"{v:.4f}"),
        epochs=table["epochs"].map(lambda v: "-" if pd.isna(v) else str(int(v))),
        fraction_kept=table["fraction_kept"].map("{:.3f}".format),
    )
    return shown.to_string(index=False)
