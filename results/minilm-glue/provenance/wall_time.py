"""Wall time of a run from its events.log: the union of its stages' [start, end] intervals, and the periods.

Usage: python wall_time.py FOLDER  (a folder holding events.log: this one, or the run directory)."""
import sys
from datetime import datetime
from pathlib import Path
open_, spans = {}, []
for line in Path(sys.argv[1], "events.log").read_text().splitlines():
    parts = line.split()
    if len(parts) < 4: continue
    t, what, sid = datetime.fromisoformat(parts[0]), parts[2], parts[3]
    if what == "start": open_[sid] = t
    elif sid in open_: spans.append((open_.pop(sid), t))
spans.sort()
merged = []
for a, b in spans:
    if merged and a <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], b)
    else:
        merged.append([a, b])
periods = []
for a, b in merged:  # periods: gaps over 15 min split them
    if periods and (a - periods[-1][1]).total_seconds() < 900:
        periods[-1][1] = max(periods[-1][1], b)
    else:
        periods.append([a, b])
total = sum((b - a).total_seconds() for a, b in merged)
print(f"busy wall time {total/3600:.2f} h over {len(periods)} periods:")
for a, b in periods: print(f"  {a} - {b}  ({(b-a).total_seconds()/3600:.2f} h)")
