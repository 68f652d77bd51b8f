"""How many threads torch should use on a machine that other processes share.

torch's OpenMP threads meet at a barrier after every parallel operation. With one thread per core and
another process busy on one of the cores, the thread that lost its core holds up all the others
(BENCHMARKS.md: a MiniLM step about 10x slower with 2 threads than with 1 while another process held
the second core). Two remedies, measured side by side by ``benchmarks/bench_threads.py``:

- `free_cores`: use only the cores nobody else is using: the cores this process may run on
  (``os.sched_getaffinity``) minus the load of the other runnable processes (1-minute load average);
- `passive_wait`: ``OMP_WAIT_POLICY=PASSIVE``, so that a waiting thread sleeps instead of spinning and
  gives its core back. OpenMP reads it when it starts, i.e. before torch's first parallel operation:
  set it first thing in the process (the CLI's entry point), or in the environment of a child process.

Measured on the shared 2-core machine (BENCHMARKS.md, indicative): PASSIVE is the better remedy. Next
to a CPU-bound process, two spinning threads ran a MiniLM step 4.4x slower than one thread, two
passive threads 1.14x; with the second core free, two passive threads were faster than one. Choosing
fewer threads avoids the collapse too but gives up a core that may free up a minute later.

Example:
    >>> passive_wait()                              # doctest: +SKIP
    >>> torch.set_num_threads(choose_threads())     # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cores", "load_average", "free_cores", "choose_threads", "passive_wait"]

LOADAVG = Path("/proc/loadavg")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; container limits included where they set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def load_average(loadavg: str | None = None) -> float:
    """The 1-minute load average: runnable processes averaged over the last minute (0 if unknown).

    >>> load_average("1.52 0.80 0.40 2/345 6789")
    1.52
    """
    if loadavg is None:
        try:
            loadavg = LOADAVG.read_text()
        except OSError:
            try:
                return os.getloadavg()[0]
            except (AttributeError, OSError):  # Windows
                return 0.0
    return float(loadavg.split()[0])


def free_cores(*, cores: int | None = None, load: float | None = None, own_threads: int = 0) -> int:
    """Cores that other processes leave free, at least 1.

    Args:
        cores: the usable cores (default: `usable_cores`).
        load: the 1-minute load average (default: `load_average`).
        own_threads: threads of this process already running and so counted in ``load`` (0 before
            torch has started working).

    >>> free_cores(cores=2, load=1.1)   # another process keeps one core busy
    1
    >>> free_cores(cores=16, load=3.0, own_threads=2)
    15
    """
    cores = usable_cores() if cores is None else cores
    load = load_average() if load is None else load
    others = max(0.0, load - own_threads)
    # A core counts as taken once another process uses it more than a fifth of the time: a thread that
    # waits for a descheduled peer at every barrier costs far more than an idle core.
    return max(1, min(cores, cores - math.floor(others + 0.8)))


def choose_threads(maximum: int | None = None) -> int:
    """The torch thread count for this process now: the free cores, at most ``maximum``.

    >>> import torch; torch.set_num_threads(choose_threads())  # doctest: +SKIP
    """
    count = free_cores()
    return min(count, maximum) if maximum else count


def passive_wait(environ: dict | None = None) -> None:
    """Make OpenMP threads sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``).

    Call it before torch is imported (OpenMP reads the variable once, when its thread pool starts), or
    pass a child process's environment. A value the user set is left alone.

    >>> env = {}; passive_wait(env); env
    {'OMP_WAIT_POLICY': 'PASSIVE'}
    """
    (os.environ if environ is None else environ).setdefault("OMP_WAIT_POLICY", "PASSIVE")
