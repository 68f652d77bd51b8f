"""A learning curve: a task's dev metric against the number of training examples, over seeds.

The evidence a study needs where a task is not learnt at the budget it can afford: whether more data
would help (the curve still rising), or whether the model stays at chance whatever it sees (WNLI,
whose dev set is adversarial to its training set). Each point is an ordinary fine-tuning run
(`steps.finetune.finetune_run`) on a seeded, label-stratified sample of the training set (the caps of
`steps.taskdata`), with the learnt-check's verdict against the majority class of what it trained on.

    >>> learning_curve("minilm-l6", "RTE", "runs/rte-curve", glue_dir=glue, settings=TrainSettings(epochs=3),
    ...                sizes=[500, 1000, None], seeds=[1, 2])                    # doctest: +SKIP

The folder holds ``points/n<N>-seed<S>/`` (each point's run, its model removed unless ``keep_models``),
``curve.csv`` (one row per point), ``curve.json`` (the settings and a summary per size) and
``curve.png``. A run stopped part way resumes: points already finished are read, not trained again.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import UserError
from ..settings import TrainSettings
from .taskdata import CAP_SEED

__all__ = ["learning_curve", "KIND"]

KIND = "curve"
SETTINGS_FILE = "curve-settings.json"


def _point_dir(out: Path, size: int | None, seed: int) -> Path:
    return out / "points" / f"n{'all' if size is None else size}-seed{seed}"


def _check_sizes(sizes: list[int | None], n_train: int) -> list[int | None]:
    """Sizes in increasing order, ``None`` (the whole set) last; a size at or above the set's is the
    whole set (a cap that removes nothing), so it is counted once."""
    if not sizes:
        raise UserError("A learning curve needs at least one size; give --sizes, e.g. --sizes 250 500 all.")
    bad = [s for s in sizes if s is not None and s < 1]
    if bad:
        raise UserError(f"--sizes are numbers of training examples (at least 1) or 'all'; got {bad[0]}.")
    capped = sorted({s for s in sizes if s is not None and s < n_train})
    return [*capped, None] if len(capped) < len(sizes) else capped


def learning_curve(
    model_name: str,
    task_name: str,
    out: str | os.PathLike,
    *,
    glue_dir: Path | None,
    settings: TrainSettings,
    sizes: list[int | None],
    seeds: list[int],
    cap_seed: int = CAP_SEED,
    learnt_check: dict[str, Any] | None = None,
    keep_models: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model_name`` on ``task_name`` at each size x seed and write the curve into ``out``.

    Args:
        sizes: training examples per point; ``None`` is the whole training set.
        seeds: run seeds (classifier, data order, dropout); the sample of each size depends on
            ``cap_seed`` only, so seeds vary training, not data.
        learnt_check: ``alpha`` / ``margin`` of the learnt-check (`bertlottery.learnt`).
        keep_models: keep each point's fine-tuned model (about the size of the pre-trained one).

    Returns the ``curve.json`` record.
    """
    import pandas as pd

    from ..data import load_split
    from ..learnt import ALPHA
    from ..tasks import get_task
    from .finetune import finetune_run

    task = get_task(task_name)
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be one or more distinct seeds, got {seeds}.")
    n_train = len(load_split(task, "train", glue_dir))
    sizes = _check_sizes(list(sizes), n_train)
    check = {"alpha": ALPHA, "margin": None, **(learnt_check or {})}
    wanted = {"model": model_name, "task": task.name, "train": settings.to_dict(), "cap_seed": cap_seed,
              "learnt_check": check}
    out = Path(out)
    runs.check_output_dir(out, KIND, recognise=lambda p: (p / SETTINGS_FILE).is_file(), overwritable=False)
    if (out / SETTINGS_FILE).is_file():
        earlier = runs.read_json(out / SETTINGS_FILE)
        if earlier != wanted:
            changed = sorted(k for k in wanted if earlier.get(k) != wanted[k])
            raise UserError(f"{out} holds a learning curve made with other settings ({', '.join(changed)}); "
                            "give another --out to make this one.")
    out = runs.prepare_output_dir(out, KIND, recognise=lambda p: (p / SETTINGS_FILE).is_file(), overwritable=False)
    runs.write_json(out / SETTINGS_FILE, wanted)

    rows = []
    for size in sizes:
        for seed in seeds:
            point = _point_dir(out, size, seed)
            if not (point / runs.METRICS_FILE).is_file():
                finetune_run(model_name, task.name, point, glue_dir=glue_dir,
                             settings=dataclasses.replace(settings, seed=seed), max_train_examples=size,
                             cap_seed=cap_seed, learnt_check=check, overwrite=True, progress=progress)
                if not keep_models:
                    shutil.rmtree(point / runs.MODEL_DIR, ignore_errors=True)
            record = runs.read_json(point / runs.METRICS_FILE)
            verdict = record["learnt_check"]
            rows.append({"task": task.name, "n_train": record["cap"]["n"] if record.get("cap") else n_train,
                         "seed": seed, "metric": verdict["metric"], "value": verdict["score"],
                         "chance": verdict["chance"], "threshold": verdict["threshold"], "learnt": verdict["learnt"],
                         "train_seconds": record.get("train_seconds")})
    table = pd.DataFrame(rows)
    _write_atomic(out / "curve.csv", table.to_csv(index=False))
    summary = [{"n_train": int(n), "mean": float(g["value"].mean()), "std": float(g["value"].std(ddof=1)) if len(g) > 1 else None,
                "seeds": len(g), "learnt": int(g["learnt"].sum()), "chance": float(g["chance"].mean()),
                "threshold": float(g["threshold"].mean())}
               for n, g in table.groupby("n_train", sort=True)]
    record = {**wanted, "n_train_total": n_train, "seeds": seeds, "points": summary}
    _plot(table, task.name, out / "curve.png")
    runs.write_json(out / "curve.json", record)  # last: its presence marks a finished curve
    return record


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plot(table, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.tables import metric_name

    fig, ax = plt.subplots(figsize=(6, 4.6), dpi=120)
    means = table.groupby("n_train", sort=True)["value"].mean()
    ax.plot(means.index, means.values, "-o", color="#1f4e79", label="mean over seeds", zorder=3)
    ax.scatter(table["n_train"], table["value"], s=14, color="#1f4e79", alpha=0.45, label="each seed", zorder=2)
    chance, threshold = table["chance"].mean(), table["threshold"].mean()
    ax.axhline(chance, ls="--", color="#888888", label=f"majority class / chance ({chance:.3f})")
    ax.axhline(threshold, ls=":", color="#b03a2e", label=f"learnt-check threshold ({threshold:.3f})")
    ax.set_xscale("log")
    ax.set_xticks(list(means.index), [f"{n:,}" for n in means.index])  # the sizes run, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("training examples (seeded stratified sample; log scale)")
    ax.set_ylabel(f"dev {metric_name(table['metric'].iloc[0])}")
    ax.set_title(f"{task}: dev score against training examples")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
