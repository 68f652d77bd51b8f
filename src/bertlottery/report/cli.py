"""``bertlottery report RUN_DIR``: the HTML report, figures (PNG, PDF) and tables (CSV) of a study.

Module-level imports stay light: the CLI imports this module to register the command.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML report of a study run: tables, figures, stability, costs (also of a partial run)",
        description="Writes RUN_DIR/report/report.html (self-contained: figures embedded), figures/*.png|pdf and "
                    "tables/*.csv. A run still going, or with failed stages, gets a report of what exists, and "
                    "each section lists what is missing.")
    p.add_argument("run_dir", help="the study's run directory (bertlottery run ... --run-dir)")
    p.add_argument("--out", help="folder to write (default RUN_DIR/report): new, empty or a report folder, which "
                   "is replaced as a whole")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not a report folder (replacing files of the same names only)")
    p.add_argument("--reference", help="the paper's released material (masks/, evaluate_masked/) to compare with "
                   "(default $BERTLOTTERY_REFERENCE_DIR; none: no comparison)")
    p.add_argument("--metric", choices=["primary", "reported"], default="primary",
                   help="each task's primary metric (the pruning threshold's; default) or the one the paper's "
                        "Table 1 reports")
    p.add_argument("--iterations", default="1,last",
                   help="s-pruning iterations of the importance histograms, 1-based or 'last' (default %(default)s)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from .build import build_report, parse_iterations

    path = build_report(args.run_dir, args.out, reference=args.reference, metric=args.metric,
                        iterations=parse_iterations(args.iterations), overwrite=args.overwrite)
    folder = path.parent
    figures = len(list((folder / "figures").glob("*.png")))
    tables = len(list((folder / "tables").glob("*.csv")))
    missing = json.loads((folder / "missing.json").read_text())
    print(f"wrote {path} ({figures} figures, {tables} tables; PNG/PDF in {folder / 'figures'}, CSV in {folder / 'tables'})")
    if missing:
        print(f"missing from {len(missing)} section{'s' if len(missing) > 1 else ''}: "
              + "; ".join(f"{title} ({len(lines)})" for title, lines in missing.items()))
    return 0
