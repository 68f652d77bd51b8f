"""The quickstart's `--plan` under `train.last_layer: cls` and `full`, against the stage times of the two
studies `bench_quickstart.py --keep DIR` ran (new defaults with cls; earlier defaults with full).

    python benchmarks/results/plan-2026-11-30/last_layer_plan_check.py DIR [--repeats 3]

Each plan calibrates on one thread (as the studies ran), alternating the two settings, so that the
calibration's own noise shows. Prints the FLOPs, the per-kind estimates and the measured stage times of
the kinds whose work does not depend on a search's length or a subnetwork's size: the fine-tuning, the
evaluations and the m-pruned re-fine-tunings (full size in both studies)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def plan(last_layer: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "bertlottery.cli", "run", str(REPO / "configs" / "quickstart.yaml"),
                          "--plan", "--format", "json", f"glue_dir={REPO.parent / 'shared' / 'data' / 'glue'}",
                          "resources.cpus_per_stage=1", f"train.last_layer={last_layer}"],
                         env=env, cwd="/tmp", check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def measured(run_dir: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    for path in (run_dir / "stages").glob("*/*/*/stage.json"):
        record = json.loads(path.read_text())
        kind = record["kind"]
        if kind == "retrain" and record.get("keys", {}).get("method") != "magnitude":
            continue
        key = "retrain (m-pruned)" if kind == "retrain" else kind
        times[key] = times.get(key, 0.0) + float(record["seconds"])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="bench_quickstart.py's --keep folder (earlier-0, new-0)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    plans = {"cls": [], "full": []}
    for _ in range(args.repeats):
        for setting in plans:
            plans[setting].append(plan(setting))
    runs = {"cls": measured(args.runs / "new-0"), "full": measured(args.runs / "earlier-0")}
    print(f"FLOPs: cls {plans['cls'][0]['flops']['total']:.3e}, full {plans['full'][0]['flops']['total']:.3e}, "
          f"ratio {plans['cls'][0]['flops']['total'] / plans['full'][0]['flops']['total']:.3f}")
    for kind in ("finetune", "evaluate"):
        for setting in plans:
            estimates = [p["seconds"]["by_kind"][kind]["most"] for p in plans[setting]]
            print(f"{kind:9s} {setting:4s}: plan {', '.join(f'{e:.1f}' for e in estimates)} s "
                  f"(median {statistics.median(estimates):.1f}), measured {runs[setting][kind]:.1f} s")
    # the plan's retrain row holds all six; three are m-pruned, counted like the others at full size
    for setting in plans:
        estimates = [p["seconds"]["by_kind"]["retrain"]["most"] / 2 for p in plans[setting]]
        print(f"m-retrain {setting:4s}: plan {', '.join(f'{e:.1f}' for e in estimates)} s "
              f"(median {statistics.median(estimates):.1f}), measured {runs[setting]['retrain (m-pruned)']:.1f} s")


if __name__ == "__main__":
    main()
