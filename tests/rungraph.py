"""graph.json for a run directory in tests: written from the pipeline's expansion of the run's config.

`bertlottery run` writes graph.json itself once the pipeline does; until then the tests of the
readers of a run (the report, the statistics) write it here. Test code may import the pipeline; the
readers may not.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bertlottery import runs


def write_graph_of(run_dir: Path, config: Any = None) -> list:
    """Write ``run_dir/graph.json`` for ``config`` (an `ExperimentConfig`, a config dict, or None for
    the run's own ``config.json``); returns the stages."""
    from bertlottery.config import ExperimentConfig, from_dict
    from bertlottery.studies import expand

    if config is None:
        config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    if not isinstance(config, ExperimentConfig):
        config = from_dict(config, source=runs.CONFIG_FILE)
    stages = expand(config)
    runs.write_graph(run_dir, [{"id": stage.id, **asdict(stage)} for stage in stages])
    return stages


def run_study_done(config: Any, run_dir: Path) -> list:
    """Run every stage of ``config`` into ``run_dir`` with the local executor; assert all are done (the
    failures' tracebacks in the message); returns the stages."""
    from bertlottery.pipeline import run_local
    from bertlottery.studies import execute, expand

    stages = expand(config)
    states = run_local(stages, run_dir, config, execute=execute, progress=False)
    failed = list((run_dir / "failed").glob("*.json")) if (run_dir / "failed").exists() else []
    assert set(states.values()) == {"done"}, [json.loads(p.read_text())["traceback"] for p in failed]
    return stages
