"""The numbers Gordon et al. (2020) report, in one place: their Table 1 (appendix A of "Compressing
BERT: Studying the Effects of Weight Pruning on Transfer Learning", the ICLR 2020 submission; the
report shows them beside a run's own).

Table 1 gives, per pruning variant and sparsity, BERT-Base's pre-training dev loss and, per task, the
dev accuracy (CoLA's too: accuracy, not MCC; 69.1 is its majority class) with the mean training loss
over the whole training set after fine-tuning; "AVG" averages the five tasks (its training loss is
printed x100). Losses of models pruned after downstream fine-tuning are not given.

Example:
    >>> t1 = table1()
    >>> float(t1.query("method == 'gmp-pretrain' and sparsity == 0.6")["SST-2"].iloc[0])
    0.914
"""

from __future__ import annotations

from typing import Any

__all__ = ["TASKS", "table1", "SOURCE"]

SOURCE = "Gordon et al. 2020, Table 1 (appendix A)"
TASKS = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA")

# sparsity (%), pre-training loss ("-": not given), then accuracy|training loss for MNLI, QQP, QNLI,
# SST-2, CoLA and the average (its loss x100), as printed
_TABLE1 = {
    "gmp-pretrain": """
0  1.82 83.1|0.25 90.5|0.10 91.1|0.12 92.1|0.06 79.1|0.26 87.2|15.7
10 1.82 83.3|0.21 90.4|0.10 91.0|0.12 91.6|0.07 79.4|0.30 87.2|16.0
20 1.83 83.3|0.24 90.5|0.11 91.1|0.11 91.6|0.05 79.1|0.30 87.1|16.0
30 1.86 83.3|0.23 90.2|0.12 90.7|0.12 91.9|0.06 79.5|0.31 87.1|16.9
40 1.93 83.0|0.25 90.1|0.12 90.4|0.12 91.5|0.06 78.4|0.23 86.7|15.6
50 2.03 82.6|0.27 89.8|0.13 90.2|0.13 90.9|0.07 77.4|0.30 86.2|18.0
60 2.25 81.8|0.32 89.4|0.16 89.3|0.16 91.4|0.07 75.9|0.44 85.6|23.0
70 2.62 79.5|0.40 88.6|0.18 88.4|0.21 90.1|0.10 72.7|0.47 83.9|27.1
80 3.44 75.9|0.49 86.9|0.24 85.3|0.29 88.1|0.12 69.1|0.61 81.1|34.8
90 5.83 64.8|0.76 81.1|0.36 71.7|0.52 80.3|0.25 69.1|0.61 73.4|49.8""",
    "information-deletion": """
0  1.82 83.0|0.20 90.6|0.06 90.0|0.10 92.1|0.03 80.6|0.18 87.3|11.6
10 1.82 82.8|0.01 90.5|0.05 90.5|0.09 92.2|0.05 80.8|0.16 87.4|07.2
20 1.83 82.9|0.01 90.5|0.05 90.5|0.09 91.5|0.05 80.3|0.16 87.2|07.3
30 1.86 82.3|0.01 90.6|0.04 90.5|0.10 90.8|0.05 80.0|0.18 86.9|07.7
40 1.93 82.2|0.19 90.5|0.05 90.1|0.10 92.0|0.05 79.0|0.17 86.7|11.1
50 2.03 82.5|0.19 90.3|0.05 90.2|0.10 91.2|0.05 77.9|0.19 86.4|11.6
60 2.25 81.9|0.20 90.1|0.05 89.5|0.10 90.8|0.05 76.4|0.23 85.7|12.6
70 2.62 80.8|0.01 90.2|0.01 88.7|0.10 90.3|0.06 74.4|0.28 84.9|09.3
80 3.44 78.6|0.01 89.3|0.02 86.0|0.02 88.8|0.07 70.0|0.45 82.5|11.5
90 5.83 72.9|0.01 87.5|0.02 76.8|0.06 83.0|0.09 69.1|0.61 77.9|15.7""",
    "gmp-downstream": """
0  -    82.6|0.15 90.6|0.06 90.1|0.10 92.1|0.04 78.7|0.25 86.8|12.0
10 -    82.9|0.19 90.6|0.06 90.3|0.10 91.6|0.05 79.0|0.11 86.9|10.3
20 -    82.7|0.15 90.6|0.07 90.2|0.07 92.0|0.04 79.0|0.22 86.9|10.7
30 -    82.7|0.23 90.4|0.07 89.7|0.07 91.6|0.04 78.5|0.23 86.6|12.8
40 -    82.7|0.25 90.5|0.11 89.9|0.12 91.7|0.05 78.8|0.17 86.7|13.9
50 -    82.6|0.19 90.3|0.08 89.7|0.11 90.8|0.06 78.0|0.22 86.3|13.0
60 -    81.8|0.22 90.2|0.10 89.3|0.12 90.6|0.06 76.1|0.31 85.6|16.4
70 -    80.5|0.30 89.4|0.14 86.2|0.19 88.2|0.07 69.5|0.58 82.7|25.8
80 -    73.7|0.53 87.8|0.12 80.4|0.21 86.4|0.07 69.1|0.59 79.5|30.5
90 -    58.7|0.86 82.5|0.26 65.2|0.52 81.5|0.16 69.1|0.61 71.4|47.9""",
    "random-pretrain": """
0  1.82 83.3|0.26 90.5|0.10 90.6|0.15 92.4|0.07 78.7|0.18 87.1|15.3
10 2.09 82.0|0.27 90.1|0.12 90.3|0.13 92.3|0.05 77.0|0.32 86.3|18.0
20 2.46 80.6|0.32 89.8|0.12 88.5|0.14 91.1|0.07 73.5|0.39 84.7|20.8
30 2.98 79.1|0.36 89.2|0.14 86.9|0.23 89.3|0.10 71.8|0.47 83.3|25.9
40 3.76 75.4|0.45 88.2|0.16 84.5|0.23 88.6|0.09 69.3|0.57 81.2|30.3
50 4.73 71.6|0.60 86.6|0.20 81.5|0.28 85.0|0.10 69.1|0.61 78.8|35.8
60 5.63 70.4|0.60 85.2|0.24 71.7|0.45 81.5|0.21 69.1|0.61 75.6|42.3
70 6.22 64.1|0.76 81.4|0.34 63.0|0.62 80.6|0.20 69.1|0.61 71.6|50.3
80 6.87 58.8|0.84 76.6|0.46 61.1|0.64 80.6|0.23 69.1|0.61 69.3|55.6
90 7.37 49.8|0.98 74.3|0.51 60.2|0.65 75.1|0.33 69.1|0.61 65.7|61.4""",
}


def table1() -> Any:
    """The paper's Table 1 in `bertlottery.gordon.analysis.table1`'s columns: method, sparsity,
    pretrain_dev_loss, ``<task>`` (accuracy as a fraction) and ``<task> train_loss`` per task,
    ``average``, ``average train_loss`` (the paper's x100 undone)."""
    import pandas as pd

    rows = []
    for method, text in _TABLE1.items():
        for line in text.strip().splitlines():
            sparsity, loss, *cells = line.split()
            row: dict[str, Any] = {"method": method, "sparsity": int(sparsity) / 100,
                                   "pretrain_dev_loss": None if loss == "-" else float(loss)}
            for name, cell in zip((*TASKS, "average"), cells, strict=True):
                accuracy, train_loss = (float(v) for v in cell.split("|"))
                row[name] = accuracy / 100
                row[f"{name} train_loss"] = train_loss / 100 if name == "average" else train_loss
            rows.append(row)
    return pd.DataFrame(rows)
