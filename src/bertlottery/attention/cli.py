"""``bertlottery attention extract|classify|train|analyse``: attention maps and their pattern types.

Light at import time: torch, numpy and the models load only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser(
        "attention",
        help="attention maps (raw and norm-based) and their pattern types (P§5.2)",
        description="Extract every head's attention maps for a seeded sample of dev examples, label them "
                    "(rules or the paper's CNN), train the CNN on labelled maps, and compare pattern types "
                    "of super-survivor heads with all heads.",
    )
    commands = p.add_subparsers(dest="attention_command", metavar="COMMAND", required=True)

    e = commands.add_parser("extract", aliases=["maps"],
                            help="write the raw and norm-based maps of every head to a maps directory")
    e.add_argument("model", help="pre-trained model (hub id, folder, alias such as minilm-l6) or a fine-tuning run")
    e.add_argument("--task", help="GLUE task whose dev examples to use (default: the run's)")
    e.add_argument("--glue-dir", help="folder of GLUE TSVs (default: the Hugging Face hub)")
    e.add_argument("--examples", type=int, default=100, help="dev examples to sample (default 100, the paper's)")
    e.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    e.add_argument("--mask", help="run under this mask: a .safetensors file, or a prune / super-survivor folder")
    e.add_argument("--max-length", type=int, help="tokens per example (default: the run's, else 128)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--out", required=True, metavar="MAPS_DIR", help="the maps directory to write")
    e.set_defaults(func=cmd_extract)

    c = commands.add_parser("classify", help="label every map of a maps directory (labels.json, patterns.json)")
    c.add_argument("maps_dir", metavar="MAPS_DIR")
    c.add_argument("--method", default="rules", help="rules (default) or cnn")
    c.add_argument("--model", action="append", default=[], metavar="CKPT",
                   help="a trained CNN checkpoint (with --method cnn); one per map kind, repeatable")
    c.add_argument("--overwrite-labels", action="store_true",
                   help="replace an existing labels.json (it may hold a person's annotations; kept by default)")
    c.set_defaults(func=cmd_classify)

    t = commands.add_parser("train", help="train the paper's CNN on labelled maps; prints per-class and weighted F1")
    t.add_argument("labelled", nargs="+", metavar="LABELLED_DIR",
                   help="maps directories with labels.json, or folders of .npy maps with a 'label = names' file")
    t.add_argument("--kind", required=True, help="raw or norm: which maps (one model per kind)")
    t.add_argument("--out", required=True, metavar="CKPT", help="checkpoint folder to write")
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    a = commands.add_parser("analyse", aliases=["analyze"],
                            help="pattern proportions of super-survivors vs all heads, and their correlation")
    a.add_argument("maps", nargs="+", metavar="MAPS_DIR",
                   help="classified maps directories (or patterns.json files) of one task: full models and "
                        "models extracted under the super-survivor mask")
    a.add_argument("--super", required=True, dest="super_mask", metavar="MASK",
                   help="the super-survivor mask: a .safetensors file or a super-survivor folder (good.safetensors)")
    a.add_argument("--out", help="write the analysis JSON here (default: print a summary only)")
    a.set_defaults(func=cmd_analyse)


def cmd_extract(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .maps import extract_maps

    if args.examples < 1:
        raise UserError(f"--examples must be at least 1, got {args.examples}.")
    index = extract_maps(args.model, args.task, args.out, glue_dir=Path(args.glue_dir) if args.glue_dir else None,
                         n_examples=args.examples, seed=args.seed, mask=args.mask, max_length=args.max_length,
                         batch_size=args.batch_size)
    masked = "" if index.head_mask is None else f", {sum(map(sum, index.head_mask))} heads kept"
    print(f"wrote {len(index.examples)} {index.task} examples x {index.layers} layers x {index.heads} heads "
          f"({index.weights}{masked}) to {args.out}")
    return 0


def _format_shares(record, level: str = "heads") -> list[str]:
    from .analysis import _labels_of, proportions

    lines = []
    for kind in record["kinds"]:
        shares = proportions(_labels_of(record, kind, level, None))
        lines.append(f"{kind:<5} " + "  ".join(f"{p} {v:.3f}" for p, v in shares.items()))
    return lines


def cmd_classify(args: argparse.Namespace) -> int:
    from .patterns import classify_dir

    record = classify_dir(args.maps_dir, args.method, args.model, overwrite_labels=args.overwrite_labels)
    print(f"labelled {len(record['labels'])} maps of {record['n_examples']} examples ({record['method']}); "
          f"wrote {Path(args.maps_dir) / 'patterns.json'}")
    print("share of heads by majority label:")
    for line in _format_shares(record, "heads"):
        print("  " + line)
    print("share of maps:")
    for line in _format_shares(record, "maps"):
        print("  " + line)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .classifier import load_labelled, train

    if args.kind not in ("raw", "norm"):
        raise UserError(f"--kind must be raw or norm, got {args.kind!r}.")
    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}.")
    data = load_labelled(args.labelled, args.kind)
    result = train(data, args.kind, args.out, epochs=args.epochs, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, val_fraction=args.val_fraction, seed=args.seed)
    print(result.summary())
    print(f"wrote {args.out} ({result.seconds:.1f} s)")
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..runs import write_json
    from .analysis import analyse
    from ..masks import load_masks
    from .maps import mask_file
    from .patterns import read_patterns

    records = [read_patterns(path) for path in args.maps]
    tasks = {r["task"] for r in records}
    if len(tasks) > 1:
        raise UserError(f"The maps come from several tasks ({', '.join(sorted(tasks))}); analyse one task at a time.")
    masks = load_masks(mask_file(args.super_mask))
    if masks.heads is None:
        raise UserError(f"{args.super_mask} has no head mask; give the super-survivor mask (heads and MLPs).")
    shape = (records[0]["layers"], records[0]["heads"])
    if masks.heads.shape != shape:
        raise UserError(f"The super-survivor mask has {masks.heads.shape} heads (layers x heads) but the maps "
                        f"come from a model with {shape}; use the mask made for this model.")
    result = analyse(records, masks.heads.keep.numpy())
    if args.out:
        write_json(args.out, result)
    for c in result["correlations"]:
        r = "n/a (constant)" if c["r"] is None else f"{c['r']:.3f} (p={c['p']:.3g})"
        print(f"{c['task']} {c['weights']:<10} {c['kind']:<4} r(super-survivor, heterogeneous) = {r}, n={c['n']}")
    for row in result["proportions"]:
        if row["level"] == "heads" and row["pattern"] == "heterogeneous":
            print(f"{row['task']} {row['weights']:<10} {row['group']:<25} {row['kind']:<4} "
                  f"heterogeneous {row['proportion']:.3f} of {row['n']} heads")
    if args.out:
        print(f"wrote {args.out}")
    return 0
