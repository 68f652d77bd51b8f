"""A researcher's work is never lost: damaged or missing row files are redone, existing folders are
not overwritten, and one run at a time writes a run directory (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bertlottery.cli import main

from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def small_study(model_dir, glue, run_dir) -> list[str]:
    """The smoke study cut to 5 stages (fine-tune, prune, subnetworks, 3 evaluations) on the tiny model."""
    return ["run", str(SMOKE), f"model={model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3",
            "train.batch_size=8", "seeds=[1]", "methods=[magnitude]", "modes=[pruned]", "baselines=[]",
            "longer_retraining=null", "--run-dir", str(run_dir), "--no-progress"]


def _done(run_dir: Path) -> list[str]:
    return [line.split()[3] for line in (run_dir / "events.log").read_text().splitlines() if line.split()[2] == "done"]


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_missing_or_damaged_row_file_reruns_its_stage_and_the_table_is_complete(tiny_model_dir, env, capsys, damage):
    glue = write_rte(env / "glue", n_train=32, n_dev=16)
    run_dir = env / "study"
    argv = small_study(tiny_model_dir, glue, run_dir)
    assert main(argv) == 0
    table = pd.read_csv(run_dir / "results.csv")
    rows = sorted((run_dir / "rows").glob("evaluate__*.json"))[0]
    stage = rows.name.removesuffix(".json").replace("__", "/")
    if damage == "delete":
        rows.unlink()  # what the message about damaged files advises
    else:
        rows.write_bytes(rows.read_bytes()[:-7])
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 to run" in capsys.readouterr().out
    assert _done(run_dir).count(stage) == 2
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), table, check_exact=True)
