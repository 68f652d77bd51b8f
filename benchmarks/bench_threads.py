"""MiniLM training-step time with 1 and 2 threads, alone and next to a CPU-bound process, spin and passive wait.

    python benchmarks/bench_threads.py             # MiniLM-L6, batch 32x48, 12 timed steps per case
    python benchmarks/bench_threads.py --quick     # a tiny BERT, a few steps: checks the script works

Each case runs in its own child process, because OpenMP reads OMP_WAIT_POLICY once, when its threads
start. A case is: torch threads (1, 2, or what `bertlottery.threads.choose_threads` picks), the wait
policy (OpenMP's default, which spins a while at every barrier, or PASSIVE, which sleeps), and whether
a competitor (a Python busy loop, one core's worth of load) runs beside it. The child warms up with two
steps and prints the median of the timed ones; every case runs ``--repeats`` times, in an order that
rotates, and the median is taken. Ratios are to "1 thread, alone". On a machine that
other people's jobs share, "alone" is not alone and every figure is noisy: read the ratios as
indicative, and re-run on a quiet machine for figures to quote.

What to choose: if 2 threads next to a competitor are much slower than 1 thread while PASSIVE is not,
the wait policy is the remedy; if PASSIVE does not help, choosing threads from the free cores is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = [  # (name, threads, wait policy, competitor)
    ("1 thread, alone", "1", None, False),
    ("2 threads, alone", "2", None, False),
    ("2 threads, alone, PASSIVE", "2", "PASSIVE", False),
    ("1 thread, competitor", "1", None, True),
    ("2 threads, competitor", "2", None, True),
    ("2 threads, competitor, PASSIVE", "2", "PASSIVE", True),
    ("choose_threads(), competitor", "auto", None, True),
]
QUICK_CASES = ("1 thread, alone", "1 thread, competitor", "2 threads, competitor", "2 threads, competitor, PASSIVE")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and a few steps (under a minute)")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per case (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every case, in rotated order (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # thread count, in a child process
    return parser.parse_args()


def child(args: argparse.Namespace) -> None:
    """Time training steps with the thread count given, print {"step": seconds, "threads": n} as JSON."""
    import torch

    from _speed import model_for, optimizer_for, synthetic_batch, timed, train_step
    from bertlottery.threads import choose_threads

    threads = choose_threads() if args.child == "auto" else int(args.child)
    torch.set_num_threads(threads)
    model = model_for(args.quick).train()
    optimizer = optimizer_for(model)
    batch = synthetic_batch(args.batch_size, args.length)
    for _ in range(2):
        train_step(model, optimizer, batch)
    steps = [timed(lambda: train_step(model, optimizer, batch)) for _ in range(args.steps)]
    print(json.dumps({"step": statistics.median(steps), "threads": threads}))


def run_case(args: argparse.Namespace, threads: str, policy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, str(HERE / "bench_threads.py"), "--child", threads, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--length", str(args.length)] + (["--quick"] if args.quick else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child is not None:
        child(args)
        return
    if args.quick:
        args.steps, args.batch_size, args.length, args.repeats = 2, 4, 16, 1
    from _speed import rotated
    from bertlottery.precision import cpu_model
    from bertlottery.threads import free_cores, load_average, usable_cores

    print(f"{cpu_model()}, {usable_cores()} usable cores, load average {load_average():.2f} at start, "
          f"free cores by load {free_cores()}; {'tiny BERT' if args.quick else 'MiniLM-L6'}, batch "
          f"{args.batch_size}x{args.length}, {args.steps} timed steps per case, "
          f"{args.repeats} repetition(s) of every case in rotated order (median)")
    # --quick keeps the cases of the final comparison; each child costs a Python start-up
    cases = [c for c in CASES if not args.quick or c[0] in QUICK_CASES]
    # Every repetition runs every case, in an order rotated from one repetition to the next, so that a
    # change in the machine's other load during the run does not fall on some cases only.
    steps: dict[str, list[float]] = {name: [] for name, *_ in cases}
    chosen: dict[str, int] = {}
    for rep in range(args.repeats):
        for name, threads, policy, competing in rotated(cases, rep):
            competitor = None
            if competing:
                # one core's worth of load; ended by its own handle below
                competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.5)
            try:
                result = run_case(args, threads, policy)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            steps[name].append(result["step"])
            chosen[name] = result["threads"]
    results = {name: {"step": statistics.median(times), "threads": chosen[name]} for name, times in steps.items()}
    base = results["1 thread, alone"]["step"]
    print(f"\n{'case':<32} {'threads':>7} {'step':>10} {'vs 1 thread alone':>18}")
    for name, result in results.items():
        print(f"{name:<32} {result['threads']:>7} {result['step'] * 1e3:>8.1f}ms {result['step'] / base:>18.2f}")
    spin = results["2 threads, competitor"]["step"] / results["1 thread, competitor"]["step"]
    passive = results["2 threads, competitor, PASSIVE"]["step"] / results["1 thread, competitor"]["step"]
    print(f"\nnext to a competitor, 2 threads / 1 thread: {spin:.2f} spinning, {passive:.2f} with PASSIVE "
          "(indicative: the machine's other load is not controlled)")


if __name__ == "__main__":
    main()
