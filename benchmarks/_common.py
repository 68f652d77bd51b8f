"""What every benchmark script shares: where the data is, the common options, the set-up."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def default_glue_dir() -> str:
    # Same convention as tests/conftest.py: $BERTLOTTERY_GLUE_DIR, else ../shared/data/glue.
    return os.environ.get("BERTLOTTERY_GLUE_DIR") or str(REPO.parent / "shared" / "data" / "glue")


def benchmark_parser(doc: str, *, repeats: int) -> argparse.ArgumentParser:
    """A parser with --glue-dir, --repeats, --threads and --seed; scripts add their own options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--glue-dir", default=default_glue_dir(), help="GLUE folder (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help="timed repetitions, each one run of every variant (default: %(default)s)")
    # One thread by default: with OpenMP, every elementwise op waits at a barrier for all threads, and
    # on a 2-core machine shared with another process one of them is often descheduled; we measured
    # 2 threads making a MiniLM forward ~10x slower than 1 thread then, which would swamp any ratio.
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's classifier and of the masks")
    return parser


def setup(args: argparse.Namespace) -> None:
    """Threads as asked, and transformers quiet (no load reports or progress bars in the timings)."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
