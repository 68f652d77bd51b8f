"""The evaluate stage of the quickstart's s-pruned subnetworks, physically smaller against gated, on one
thread: `evaluate_run(..., physical=True/False)` alternated, on the fine-tuned model and the subnetworks
of a quickstart run directory (`bench_quickstart.py --keep DIR`'s new-0).

    OMP_NUM_THREADS=1 python benchmarks/results/evaluate-2026-12-01/physical_evaluate_check.py RUN_DIR
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from bertlottery.steps.evaluate import evaluate_run


def main() -> None:
    run = Path(sys.argv[1])
    torch.set_num_threads(1)
    finetune = next((run / "stages" / "finetune" / "SST-2").iterdir())
    subnetworks = next((run / "stages" / "subnetworks" / "SST-2").glob("*structured*"))
    glue = Path(__file__).resolve().parents[4] / "shared" / "data" / "glue"
    for subnetwork in ("good", "bad"):
        mask = subnetworks / f"{subnetwork}.safetensors"
        times = {True: [], False: []}
        values = {}
        for _ in range(3):
            for physical in (True, False):
                started = time.perf_counter()
                record = evaluate_run(finetune, task_name="SST-2", glue_dir=glue, masks_path=mask, physical=physical)
                times[physical].append(time.perf_counter() - started)
                values[physical] = record["splits"]["dev"]["metrics"]["accuracy"]
        gated, physical = statistics.median(times[False]), statistics.median(times[True])
        print(f"{subnetwork}: body kept {record['body_fraction_kept']:.3f}; gated {gated:.2f} s, physical {physical:.2f} s "
              f"(medians of 3), {gated / physical:.2f}x; accuracy {values[False]:.4f} / {values[True]:.4f}")


if __name__ == "__main__":
    main()
