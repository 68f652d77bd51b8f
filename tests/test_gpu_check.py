"""benchmarks/gpu_check.py on the CPU (tiny sizes): it runs to the end and reports positive figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertlottery.config import load
from bertlottery.studies import expand

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu(tmp_path, glue_dir):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "BERTLOTTERY_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--out", str(out),
                           "--glue-dir", str(glue_dir), "--seconds", "0.2",
                           # a CPU run's table to show beside this one's: a quickstart's rows, as a CPU run
                           # of the same study on RTE would write them
                           "--cpu-results", str(_cpu_results(tmp_path / "cpu-results.csv"))],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"]
    cases = {(c["step"], c["precision"]) for c in result["throughput"]}
    assert cases == {("train", "fp32"), ("score", "fp32"), ("train", "bf16"), ("score", "bf16")}
    for case in result["throughput"]:
        for key in ("seconds_per_step", "sequences_per_s", "tokens_per_s", "tflops", "peak_memory_bytes"):
            assert case[key] > 0, (case, key)
        assert case["steps_timed"] >= 3
    quickstart = result["quickstart"]
    assert quickstart["status"] == 0 and quickstart["stage_seconds"] > 0
    assert {row["mode"] for row in quickstart["table"]} >= {"finetuned", "pruned", "retrained"}
    # where each kind computed, from the stages' own records: on a GPU machine, all on the GPU
    assert quickstart["devices"] == {"baseline": ["cpu"], "finetune": ["cpu"], "prune": ["cpu"], "retrain": ["cpu"]}
    beside = {(r["task"], r["method"], r["subnetwork"], r["mode"]) for r in quickstart["cpu_table"]}
    assert ("RTE", "structured", "good", "retrained") in beside
    ray = result["ray"]
    assert ray["status"] == 0 and ray["gpus_per_stage"] == 0 and ray["stage_seconds"] > 0
    markdown = out.with_suffix(".md").read_text()
    good = next(line for line in markdown.splitlines() if line.startswith("| RTE | structured | good | retrained |"))
    assert good.rstrip(" |").split("|")[-1].strip() != "-"  # the CPU run's cell is filled
    assert "Encoder throughput" in markdown and "Quickstart study" in markdown and "Ray executor" in markdown


def _cpu_results(path: Path) -> Path:
    """A results.csv of a CPU run of the quickstart's grid on RTE (one seed; the values are arbitrary)."""
    import pandas as pd

    rows = [{"task": "RTE", "seed": 1, "method": "none", "subnetwork": "full", "mode": "finetuned"}]
    rows += [{"task": "RTE", "seed": 1, "method": method, "subnetwork": sub, "mode": mode}
             for method in ("structured", "magnitude") for sub in ("good", "random", "bad")
             for mode in ("pruned", "retrained")]
    pd.DataFrame([{**r, "split": "dev", "metric": "accuracy", "value": 0.5 + 0.01 * i, "fraction_kept": 0.5,
                   "epochs": 1, "stage_id": f"stage{i}", "note": ""} for i, r in enumerate(rows)]).to_csv(path, index=False)
    return path


class _FakeRay:
    """What `run_ray` asks of Ray, recorded: the resources of its stage tasks (no cluster started)."""

    def __init__(self, gpus_in_cluster: int):
        self.gpus, self.options = gpus_in_cluster, None

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        pass

    def shutdown(self):
        pass

    def cluster_resources(self):
        return {"CPU": 2.0, **({"GPU": float(self.gpus)} if self.gpus else {})}

    def remote(self, function):
        fake = self

        class Remote:
            def options(self, **kwargs):
                fake.options = kwargs
                return self
        return Remote()


@pytest.mark.parametrize("setting,cluster_gpus,asked", [(None, 0, 0), (None, 2, 1), (1, 1, 1), (0, 2, 0), (0.5, 1, 0.5)])
def test_ray_asks_for_the_gpus_per_stage(tmp_path, monkeypatch, setting, cluster_gpus, asked, glue_dir):
    """The Ray executor's request (benchmarks/gpu_check.py runs it with ``resources.gpus_per_stage=1``)."""
    import sys

    from bertlottery.pipeline import run_ray

    fake = _FakeRay(cluster_gpus)
    monkeypatch.setitem(sys.modules, "ray", fake)
    overrides = [f"glue_dir={glue_dir}", "resources.cpus_per_stage=2"]
    if setting is not None:
        overrides.append(f"resources.gpus_per_stage={setting}")
    config = load(REPO / "configs" / "smoke.yaml", overrides)
    stages = expand(config)
    (tmp_path / "run").mkdir()
    run_ray(stages, tmp_path / "run", config, execute=lambda *a: [], states={s.id: "done" for s in stages})
    assert fake.options == {"num_cpus": 2, "num_gpus": asked, "max_retries": 0}
