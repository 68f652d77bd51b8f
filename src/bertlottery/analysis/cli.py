"""``bertlottery stability MASK_DIR``: the stability of good masks across seeds, as text tables or JSON.

Module-level imports stay light (no torch, no pandas): the CLI imports this module to register the command.
"""

from __future__ import annotations

from .masksets import METHODS

__all__ = ["register", "cmd_stability"]


def register(sub) -> None:
    p = sub.add_parser("stability", help="stability of good masks across seeds: Fleiss' kappa, Cochran's Q, "
                       "survival, super-survivors, task overlaps",
                       description="Reads the paper's released masks/<mode>/ folder, a study run directory, "
                       "or a folder of <task>/<seed>.safetensors.")
    p.add_argument("mask_dir", help="e.g. ../shared/reference/prasanna2020/masks/heads_mlps or runs/<study>")
    p.add_argument("--format", choices=["text", "json"], default="text", help="default %(default)s")
    p.add_argument("--method", choices=list(METHODS), default=None,
                   help="which masks of a run directory (default: structured if present)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of Cochran's Q (default %(default)s)")
    p.set_defaults(func=cmd_stability)


def cmd_stability(args) -> int:
    import json

    from .format import format_summary
    from .masksets import load_mask_sets
    from .stability import stability_summary

    summary = stability_summary(load_mask_sets(args.mask_dir, args.method), alpha=args.alpha)
    if args.format == "json":
        print(json.dumps(summary, indent=1, allow_nan=False))
    else:
        print(format_summary(summary), end="")
    return 0
