"""The quickstart study's total stage time under the new defaults against the earlier ones, in one run.

    python benchmarks/bench_quickstart.py                   # the quickstart config, one thread per study
    python benchmarks/bench_quickstart.py --repeats 2       # alternate the two twice

Earlier defaults: every stage in fp32, s-pruned subnetworks re-fine-tuned as gated full models, and the
last layer at every position (``train.precision=fp32 train.subnetwork_training=gated
train.last_layer=full``: exactly the stage ids of runs made before these settings existed). New
defaults: bf16 autocast where this CPU has bf16 instructions, the physically smaller model for s-pruned
re-fine-tuning and the s-search's evaluations, and the last layer at the classifier's position only.

Each variant is a whole `bertlottery run configs/quickstart.yaml` in a fresh run directory (a
subprocess, so the two share nothing), alternated so that a change in the machine's load falls on
both. Prints each study's stage time (the sum of its stages' recorded seconds) and wall time, the ratio,
and every cell of the two results tables side by side with its difference (the issue's bound: 1.5
points).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, benchmark_parser  # noqa: E402

VARIANTS = {
    "earlier defaults (fp32, gated, full last layer)": ["train.precision=fp32", "train.subnetwork_training=gated",
                                                        "train.last_layer=full"],
    "new defaults": [],
}
KEYS = ["task", "method", "subnetwork", "mode", "metric"]


def run_study(config: Path, run_dir: Path, overrides: list[str], glue_dir: str, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bertlottery.cli", "run", str(config), "--run-dir", str(run_dir),
                    "--no-progress", f"glue_dir={glue_dir}", f"resources.cpus_per_stage={threads}", *overrides],
                   check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def per_stage(run_dir: Path) -> pd.Series:
    """Each stage's recorded seconds, by its id less the settings hash (``prune/SST-2/seed42-structured``),
    so that the two variants' stages line up (by the whole id where two stages would share a name); a
    search's name says how many steps its trace holds. Their sum is what `status` and the report call
    stage time."""
    import json

    seconds = {}
    for path in sorted((run_dir / "stages").glob("*/*/*/stage.json")):
        record = json.loads(path.read_text())
        name = record["id"].rsplit("-", 1)[0]
        trace = path.parent / "trace.json"
        if trace.is_file():
            name += f" ({len(json.loads(trace.read_text())['steps'])} steps)"
        seconds[record["id"] if name in seconds else name] = float(record.get("seconds") or 0)
    return pd.Series(seconds, dtype=float)


def table(run_dir: Path) -> pd.Series:
    rows = pd.read_csv(run_dir / "results.csv")
    rows = rows[rows["split"] == rows.groupby("task")["split"].transform("first")]
    return rows.groupby(KEYS)["value"].mean()


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    stage, wall, tables, stages = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}, {}, {}
    for repeat in range(args.repeats):
        for name, overrides in VARIANTS.items():
            run_dir = root / f"{'new' if not overrides else 'earlier'}-{repeat}"
            seconds = run_study(args.config, run_dir, overrides, args.glue_dir, args.threads)
            wall[name].append(seconds)
            stages[name] = per_stage(run_dir)
            stage[name].append(float(stages[name].sum()))
            tables[name] = table(run_dir)
            print(f"{name:32s} repeat {repeat}: stage time {stage[name][-1]:7.1f} s, wall {seconds:7.1f} s", flush=True)
    earlier, new = VARIANTS
    print(f"\nquickstart ({args.config.name}), {args.threads} thread(s), {args.repeats} repeat(s), run dirs in {root}")
    for label, measured in (("stage time", stage), ("wall time", wall)):
        a, b = sum(measured[earlier]), sum(measured[new])
        print(f"{label:10s}: earlier {a:8.1f} s, new {b:8.1f} s, ratio {a / b:5.2f}x")
    # the last repeat's stages side by side (a search that took another number of steps gets its own row)
    timed = pd.DataFrame({"earlier s": stages[earlier], "new s": stages[new]})
    timed["earlier / new"] = timed["earlier s"] / timed["new s"]
    print("\n" + timed.round(2).to_string(na_rep="-"))
    both = pd.DataFrame({"earlier": tables[earlier], "new": tables[new]})
    both["difference (points)"] = 100 * (both["new"] - both["earlier"])
    print("\n" + both.round(4).to_string())
    print(f"\nlargest difference: {both['difference (points)'].abs().max():.2f} points (bound: 1.5)")


if __name__ == "__main__":
    main()
