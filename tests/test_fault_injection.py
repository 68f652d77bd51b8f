"""Fault injection: a tiny study SIGKILLed at seeded random moments, its finished artifacts and row
files truncated at random between the runs, ends with the results table of an uninterrupted run, and
no finished stage runs again unless its files were damaged (issue 14)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from bertlottery.cli import main

from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SHORT = ["seeds=[1]", "methods=[magnitude]", "modes=[pruned,retrained]", "baselines=[majority]",
         "longer_retraining=null"]  # 10 stages
LONG = ["seeds=[1,2]", "longer_retraining=null"]  # both methods, super-survivors, baselines


def _events(run_dir: Path) -> list[tuple[str, str]]:
    log = run_dir / "events.log"
    return [tuple(line.split()[2:4]) for line in log.read_text().splitlines()] if log.exists() else []


def _run_and_kill_at_random(argv: list[str], run_dir: Path, rng: random.Random, stages: int) -> None:
    """Start `bertlottery run` and SIGKILL it after a random number of finished stages plus a random
    moment into the next one (or let it finish, now and then)."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    before = sum(what == "done" for what, _ in _events(run_dir))
    after_done = before + rng.randrange(0, max(1, stages // 3))
    delay = rng.uniform(0, 1.5)
    process = subprocess.Popen([sys.executable, "-m", "bertlottery.cli", *argv], env=environ,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if sum(what == "done" for what, _ in _events(run_dir)) >= after_done:
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()


def _damage_at_random(run_dir: Path, rng: random.Random, pending: dict[str, int]) -> str | None:
    """Truncate one file of a finished stage not damaged since it last finished (an artifact, its
    stage.json or its row file); returns the stage's id, or None when there is none."""
    done = Counter(stage for what, stage in _events(run_dir) if what == "done")
    finished = sorted((run_dir / "stages").rglob("stage.json")) if (run_dir / "stages").exists() else []
    intact = [p.parent for p in finished if done[str(p.parent.relative_to(run_dir / "stages"))]
              > pending.get(str(p.parent.relative_to(run_dir / "stages")), -1)]
    if not intact:
        return None
    folder = rng.choice(intact)
    stage_id = str(folder.relative_to(run_dir / "stages"))
    pending[stage_id] = done[stage_id]
    rows = run_dir / "rows" / f"{stage_id.replace('/', '__')}.json"
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.stat().st_size > 0] + [rows]
    victim = rng.choice(files)
    data = victim.read_bytes()
    victim.write_bytes(data[: rng.randrange(0, len(data))])
    return stage_id


def _study(model_dir, glue, run_dir, overrides) -> list[str]:
    return ["run", str(SMOKE), f"model={model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3",
            "train.batch_size=8", *overrides, "--run-dir", str(run_dir), "--no-progress"]


@pytest.mark.parametrize("seed,overrides,rounds", [
    pytest.param(0, SHORT, 4, id="short"),
    pytest.param(1, LONG, 12, id="long", marks=[pytest.mark.slow, pytest.mark.long]),
])
def test_random_kills_and_damage_end_in_the_uninterrupted_table(tiny_model_dir, env, capsys, seed, overrides, rounds):
    rng = random.Random(seed)
    glue = write_rte(env / "glue", n_train=24, n_dev=12)
    straight = env / "straight"
    assert main(_study(tiny_model_dir, glue, straight, overrides)) == 0
    stages = len({stage for what, stage in _events(straight) if what == "done"})

    faulty = env / "faulty"
    damaged: Counter[str] = Counter()
    pending: dict[str, int] = {}  # stage -> its count of finishes when it was last damaged
    for _ in range(rounds):
        _run_and_kill_at_random(_study(tiny_model_dir, glue, faulty, overrides), faulty, rng, stages)
        if rng.random() < 0.6:
            hit = _damage_at_random(faulty, rng, pending)
            if hit:
                damaged[hit] += 1
    capsys.readouterr()
    assert main(_study(tiny_model_dir, glue, faulty, overrides)) == 0

    done = Counter(stage for what, stage in _events(faulty) if what == "done")
    assert set(done) == {stage for what, stage in _events(straight) if what == "done"}
    assert {stage: n for stage, n in done.items() if n != 1 + damaged[stage]} == {}, (
        "a finished stage ran again without being damaged, or a damaged one was not redone")
    assert damaged, "the seeded faults damaged nothing: choose another seed"
    pd.testing.assert_frame_equal(pd.read_csv(straight / "results.csv"), pd.read_csv(faulty / "results.csv"),
                                  check_exact=True)
