"""Per kind and task: the saved plan's estimate of each finished stage against its recorded time.

Usage: python plan_per_stage.py plan-before-the-run.json RUN_DIR [refit]  (refit: the calibration line refitted
from the saved timings with this checkout's `plan._line`). Needs the run directory (the stage records)."""
import json, sys
from collections import defaultdict
from pathlib import Path
from bertlottery.config import load
from bertlottery.studies import expand
from bertlottery.costs import finished_stage_times
from bertlottery import plan as P
from bertlottery.models import layout_from_config

saved = json.loads(Path(sys.argv[1]).read_text())
run = Path(sys.argv[2])
config = load(run / "config.json")
stages = expand(config)
done = finished_stage_times(stages, run)
dims, _ = P.model_dims(config.model)
layout = layout_from_config(dims)
vocab = int(dims.get("vocab_size") or 0)
tasks = list(dict.fromkeys(s.task for s in stages if s.task != "pretrain"))
sizes = P.task_sizes(config, tasks, {t: config.train.for_task(t, config.seeds[0])["max_length"] for t in tasks})
c = saved["calibration"]
lines = {k: (v["per_step"], v["per_flop"]) for k, v in c["seconds_per_step"].items()}
if len(sys.argv) > 3:  # refit each kind's line from the saved timed points with this checkout's _line
    for k in lines:
        pts = [(P.pass_flops_per_token(P.Pass(k, t["batch"] * t["length"], t["batch"], t["length"]), layout, None) * t["batch"] * t["length"], t["seconds_per_step"]) for t in c["timed"] if t["kind"] == k]
        lines[k] = P._line(pts)
    print("refitted", lines)
cal = P.Calibration(lines, c["timed"],
                    c["setup_seconds"], c["threads"], c["measured_seconds"], c["busy"], c.get("precision", "bf16"))
rows = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
for s in stages:
    if s.id not in done or s.kind == "ablation": continue  # the plan was made before the ablation section
    w = P.stage_work(s, config, sizes, layout)
    if not w.most: continue
    setup = cal.setup_seconds if w.loads_model else 0.0
    f = lambda passes: setup + sum(cal.seconds(p, P.pass_flops_per_token(p, layout, vocab if w.mlm else None), mlm=w.mlm) for p in passes)
    key = (s.kind, s.task, s.keys.get("method"))
    r = rows[key]; r[0] += 1; r[1] += f(w.least); r[2] += f(w.most); r[3] += done[s.id][2]
tl = tm = tr = 0
for key, (n, least, most, real) in sorted(rows.items(), key=str):
    print(f"{'/'.join(str(k) for k in key):45s} n={n:3d} plan {least:8.0f}-{most:8.0f}  measured {real:8.0f}  plan/measured {(least+most)/2/real:5.2f}")
    tl += least; tm += most; tr += real
print(f"{'total':45s}       plan {tl:8.0f}-{tm:8.0f}  measured {tr:8.0f}  {(tl+tm)/2/tr:5.2f}")
