"""The ``bertlottery`` command: thin; parse, call, print.

User mistakes (`UserError`) print one line and exit with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..errors import UserError, one_line
from . import steps, study
from .study import unlearnt_task_warnings

__all__ = ["main", "build_parser", "unlearnt_task_warnings"]


def _quiet_libraries() -> None:
    # transformers prints a load report and progress bars for every from_pretrained; a research CLI
    # that loads dozens of models should print only its own progress. The environment variables do it
    # without importing transformers (commands that load no model start fast); when transformers is
    # already imported (main() called in-process), its settings are changed directly.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        import transformers
        from transformers.utils import logging as hf_logging

        transformers.logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertlottery",
        description="Find, sample, re-train and analyse subnetworks of BERT-family encoders.",
    )
    parser.add_argument("--version", action="version", version=f"bertlottery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Every command module has register(subparsers) and imports nothing heavy at module level (the CLI
    # starts fast); a command's work is imported when it runs.
    from ..analysis import cli as stability_cli
    from ..annotate import cli as annotate_cli
    from ..attention import cli as attention_cli
    from ..gordon import cli as gordon_cli
    from ..report import cli as report_cli

    for module in (steps, study, stability_cli, report_cli, attention_cli, annotate_cli, gordon_cli):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that sleep rather than spin while they wait: beside another busy process, two
    # spinning threads ran a MiniLM step about 4x slower than one (benchmarks/bench_threads.py). Set
    # before torch starts its thread pool; a value the user set is kept.
    from ..threads import passive_wait

    passive_wait()
    parser = build_parser()
    # `bertlottery run CONFIG --run-dir RUN tasks=[RTE]`: key=value overrides may follow the options too
    # (argparse alone takes positionals only before them)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "overrides", None) is None or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    # the toolkit's notices (a default fitted to the model, a precision not available), one line each,
    # with the command's output: stderr is the one line of an error; a JSON output keeps stdout to itself
    notices = logging.StreamHandler(sys.stderr if getattr(args, "format", None) == "json" else sys.stdout)
    notices.setFormatter(logging.Formatter("bertlottery: note: %(message)s"))
    logger = logging.getLogger("bertlottery")
    logger.addHandler(notices)
    try:
        _quiet_libraries()
        return args.func(args)
    except UserError as error:
        print(f"bertlottery: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertlottery: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`bertlottery status RUN | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's final flush does not fail again
        return 141
    finally:
        logger.removeHandler(notices)
