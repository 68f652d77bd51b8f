"""Thread count from free cores, the passive wait policy, and the speed benchmarks' --quick runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertlottery.threads import choose_threads, free_cores, load_average, passive_wait, usable_cores

REPO = Path(__file__).resolve().parents[1]


def test_load_average_reads_the_first_field():
    assert load_average("0.42 0.30 0.25 1/200 4242\n") == 0.42
    assert load_average() >= 0.0


@pytest.mark.parametrize("cores, load, own, expected", [
    (2, 0.0, 0, 2),     # idle
    (2, 0.1, 0, 2),     # background noise takes no core
    (2, 1.0, 0, 1),     # another process holds one core
    (2, 0.3, 0, 1),     # a core busy a third of the time is not free: a thread there would stall the others
    (2, 7.5, 0, 1),     # overloaded: still one thread
    (16, 3.2, 2, 14),   # our own two running threads do not count against us
    (4, 2.0, 5, 4),     # more own threads than load: all cores
])
def test_free_cores_subtracts_other_processes_load(cores, load, own, expected):
    assert free_cores(cores=cores, load=load, own_threads=own) == expected


def test_choose_threads_stays_within_the_usable_cores_and_the_maximum():
    assert 1 <= choose_threads() <= usable_cores()
    assert choose_threads(maximum=1) == 1
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_passive_wait_sets_the_policy_but_keeps_a_users_choice():
    env: dict[str, str] = {}
    passive_wait(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    passive_wait(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def run_quick(script: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bench_threads_quick_prints_every_case_and_the_comparison():
    out = run_quick("bench_threads.py")
    for case in ("1 thread, alone", "2 threads, competitor", "2 threads, competitor, PASSIVE"):
        assert case in out
    assert "2 threads / 1 thread:" in out


@pytest.mark.slow
def test_bench_physical_quick_searches_and_refinetunes_both_ways(glue_dir):
    out = run_quick("bench_physical.py")
    assert "same trace both ways: True" in out  # the exported evaluation took the gated search's steps
    assert "scores bitwise equal: True" in out  # cutting dead branches out of scoring changes no score
    assert "re-fine-tuning one epoch" in out and "physical" in out


@pytest.mark.slow
def test_bench_precision_quick_times_steps_and_fine_tunes_both_ways(glue_dir):
    out = run_quick("bench_precision.py")
    assert "training step" in out and "bf16 resolves to" in out
    assert "fp32  dev accuracy" in out


def test_the_cli_makes_openmp_threads_wait_passively_before_torch_starts():
    code = ("import os, sys\nfrom bertlottery.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
            "    pass\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "PASSIVE False"  # set, and torch not yet loaded to have read it
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's choice is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "ACTIVE False"


@pytest.mark.slow
def test_bench_attention_quick_times_both_kernels_and_compares_their_scores(glue_dir):
    from bertlottery.precision import cpu_flags, cpu_has_bf16

    out = run_quick("bench_attention.py")
    # bf16 where this CPU has it; without it the bench's bf16 rows run (and say) fp32
    expected = {"bf16", "fp32"} if cpu_has_bf16(cpu_flags()) else {"fp32"}
    for case in ("training step", "evaluation forward", "importance, SST-2 dev", "Fisher pass"):
        precisions = {line.split()[-4] for line in out.splitlines() if line.startswith(case)}
        assert precisions == expected, (case, out)
    # fp32: the two kernels score alike to float rounding
    fp32 = [line for line in out.splitlines() if "eager against sdpa (fp32)" in line]
    assert len(fp32) == 2 and all(float(line.rsplit("difference ", 1)[1].split()[0]) < 1e-4 for line in fp32)


@pytest.mark.slow
def test_bench_last_layer_quick_times_both_settings_and_compares_their_outputs(glue_dir):
    out = run_quick("bench_last_layer.py")
    for case in ("training step", "evaluation, SST-2 dev", "importance, SST-2 dev", "Fisher pass"):
        assert any(line.startswith(case) and line.rstrip().endswith("x") for line in out.splitlines()), (case, out)
    # the two settings compute the same function: logits and scores alike to float rounding
    differences = [line for line in out.splitlines() if "cls against full (fp32)" in line]
    assert len(differences) == 3 and all(float(line.rsplit("difference ", 1)[1].split()[0]) < 1e-4 for line in differences)
