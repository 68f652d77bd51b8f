"""The paper's numbers beside ours: figures quoted from its text, and its released metrics.

Two sources, kept apart and labelled apart in every table:

- *Quoted from the paper*: numbers printed in "When BERT Plays the Lottery" itself (Table 2 with the
  GLUE baselines it quotes from Wang et al. 2018, and appendix D's longer re-fine-tuning), copied
  exactly as the text gives them (2 or 3 decimals), nothing derived.
- *The paper's released metrics*: ``reference/prasanna2020/evaluate_masked/<condition>/baseline/
  results.json`` (``{task: {metric: [mean, std]}}`` over its 5 seeds, bert-base-uncased). Their
  ``std`` is numpy's default, the population std (ddof=0): the paper's Table 3 prints
  ``std * sqrt(5/4)`` (e.g. 'random' pruned CoLA: 0.0949 released, 0.11 in Table 3), the sample std
  that this report uses everywhere, so `released_metrics` converts them.

Example:
    >>> table = released_metrics(Path("../shared/reference/prasanna2020"))    # doctest: +SKIP
    >>> table.query("task == 'CoLA' and subnetwork == 'good'")                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import UserError

__all__ = [
    "QUOTED_TABLE2",
    "QUOTED_TABLE2_AVERAGE",
    "QUOTED_LONGER",
    "PAPER_TASKS",
    "RELEASED_CONDITIONS",
    "RELEASED_SEEDS",
    "reference_dir",
    "released_metrics",
]

# The paper's Table 1 order of the GLUE tasks.
PAPER_TASKS = ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI")

# Table 2 of the paper, as printed (its task order: CoLA SST-2 MRPC QQP STS-B MNLI QNLI RTE WNLI, then
# the average over those nine). The GLUE baselines are dev-set results by Wang et al. (2018) that the
# paper quotes; the last three rows are the paper's own bert-base-uncased subnetworks, re-fine-tuned.
_T2 = {
    "Majority class baseline": ("0.00 0.51 0.68 0.63 0.02 0.35 0.51 0.53 0.56", 0.42),
    "CBOW": ("0.46 0.79 0.75 0.75 0.70 0.57 0.62 0.71 0.56", 0.61),
    "BiLSTM + GloVe": ("0.17 0.87 0.77 0.85 0.71 0.66 0.77 0.58 0.56", 0.66),
    "BiLSTM + ELMo": ("0.44 0.91 0.70 0.88 0.70 0.68 0.71 0.53 0.56", 0.68),
    "'Bad' subnetwork (s-pruning)": ("0.40 0.85 0.67 0.81 0.60 0.80 0.76 0.58 0.53", 0.67),
    "'Bad' subnetwork (m-pruning)": ("0.24 0.81 0.67 0.77 0.08 0.61 0.6 0.49 0.49", 0.51),
    "Random init + random s-pruning": ("0.00 0.78 0.67 0.78 0.14 0.63 0.59 0.53 0.50", 0.52),
}
QUOTED_TABLE2: dict[str, dict[str, float]] = {
    row: dict(zip(PAPER_TASKS, map(float, values.split()), strict=True)) for row, (values, _) in _T2.items()
}
QUOTED_TABLE2_AVERAGE: dict[str, float] = {row: average for row, (_, average) in _T2.items()}

# Appendix D (its Figure 16 table): mean over 5 seeds of the 'bad' s-pruned subnetworks re-fine-tuned
# for longer, per epoch, as printed.
_D = {
    3: "0.422 0.873 0.71 0.832 0.651 0.805 0.764 0.579 0.498",
    4: "0.423 0.859 0.663 0.828 0.652 0.804 0.762 0.587 0.554",
    5: "0.432 0.862 0.665 0.831 0.668 0.801 0.752 0.590 0.523",
    6: "0.425 0.867 0.655 0.830 0.667 0.800 0.753 0.594 0.521",
}
QUOTED_LONGER: dict[int, dict[str, float]] = {
    epoch: dict(zip(PAPER_TASKS, map(float, values.split()), strict=True)) for epoch, values in _D.items()
}

# Released evaluate_masked conditions -> (method, subnetwork, mode) of bertlottery's results table.
# Matched against the paper's Table 3 row by row: 'bad' is head_mlp_bad_1 (head_mlp_bad and
# head_mlp_invert are other variants), super 'bad' is ..._super_bizzaro and super random
# ..._super_midling (the names of the released mask folders).
RELEASED_CONDITIONS: dict[str, tuple[str, str, str]] = {
    "no_mask": ("none", "full", "finetuned"),
    "freq_baseline": ("majority", "none", "baseline"),
    "head_mlp": ("structured", "good", "pruned"),
    "head_mlp_retrained": ("structured", "good", "retrained"),
    "head_mlp_random": ("structured", "random", "pruned"),
    "head_mlp_random_retrained": ("structured", "random", "retrained"),
    "head_mlp_bad_1": ("structured", "bad", "pruned"),
    "head_mlp_bad_1_retrained": ("structured", "bad", "retrained"),
    "head_mlp_super": ("structured", "super-good", "pruned"),
    "head_mlp_super_retrained": ("structured", "super-good", "retrained"),
    "head_mlp_super_midling": ("structured", "super-random", "pruned"),
    "head_mlp_super_midling_retrained": ("structured", "super-random", "retrained"),
    "head_mlp_super_bizzaro": ("structured", "super-bad", "pruned"),
    "head_mlp_super_bizzaro_retrained": ("structured", "super-bad", "retrained"),
    "global_magnitude": ("magnitude", "good", "pruned"),
    "global_magnitude_retrained": ("magnitude", "good", "retrained"),
    "global_random": ("magnitude", "random", "pruned"),
    "global_random_retrained": ("magnitude", "random", "retrained"),
    "global_bad": ("magnitude", "bad", "pruned"),
    "global_bad_retrained": ("magnitude", "bad", "retrained"),
}
RELEASED_SEEDS = 5  # the paper's seeds 1337, 42, 86, 71, 166

# bertlottery metric name -> the released files' key (MNLI's matched accuracy is "mnli_acc").
_RELEASED_KEY = {"accuracy": "acc", "mcc": "mcc", "f1": "f1", "pearson": "pearson", "spearman": "spearmanr",
                 "pearson_spearman_mean": "corr"}

ENV_VAR = "BERTLOTTERY_REFERENCE_DIR"


def reference_dir(option: str | os.PathLike | None) -> Path | None:
    """The reference folder: ``option``, else ``$BERTLOTTERY_REFERENCE_DIR``, else None (no comparison).

    A folder that is named but holds neither ``evaluate_masked/`` nor ``masks/`` is refused.
    """
    value = option if option is not None else os.environ.get(ENV_VAR) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not ((path / "evaluate_masked").is_dir() or (path / "masks").is_dir()):
        source = "--reference" if option is not None else f"${ENV_VAR}"
        raise UserError(f"{source} {path} holds neither evaluate_masked/ nor masks/; give the folder of the paper's "
                        "released material (../shared/reference/prasanna2020), or leave it out.")
    return path


def released_key(task: str, metric: str) -> str | None:
    if task == "MNLI" and metric == "accuracy":
        return "mnli_acc"
    return _RELEASED_KEY.get(metric)


def released_metrics(reference: Path):
    """The paper's released metrics as a DataFrame: condition, task, method, subnetwork, mode, metric
    (bertlottery's name), mean, std (sample std, ddof=1), n. Unmapped conditions are left out; a
    condition folder without results is skipped. Empty when ``evaluate_masked/`` is absent."""
    import pandas as pd

    columns = ["condition", "task", "method", "subnetwork", "mode", "metric", "mean", "std", "n"]
    rows = []
    scale = math.sqrt(RELEASED_SEEDS / (RELEASED_SEEDS - 1))
    inverse = {}
    for ours, theirs in _RELEASED_KEY.items():
        inverse.setdefault(theirs, ours)
    inverse["mnli_acc"] = "accuracy"
    for condition, (method, subnetwork, mode) in RELEASED_CONDITIONS.items():
        for path in (reference / "evaluate_masked" / condition / "baseline" / "results.json",
                     reference / "evaluate_masked" / condition / "results.json"):
            if path.is_file():
                break
        else:
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise UserError(f"{path} is not valid JSON ({error}); the reference folder is damaged.") from None
        for task, metrics in data.items():
            for key, value in metrics.items():
                if key not in inverse or not isinstance(value, list) or len(value) != 2:
                    continue
                mean, std = float(value[0]), float(value[1]) * scale
                n = 1 if method == "majority" else RELEASED_SEEDS  # the majority class has no seeds
                rows.append((condition, task, method, subnetwork, mode, inverse[key], mean, std, n))
    return pd.DataFrame(rows, columns=columns)
