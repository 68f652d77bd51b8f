"""The ``bertlottery`` command: thin; parse, call, print.

User mistakes (`UserError`) print one line and exit with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError

__all__ = ["main"]


def _quiet_libraries() -> None:
    # transformers prints a load report and progress bars for every from_pretrained; a research CLI
    # that loads dozens of models should print only its own progress.
    import transformers
    from transformers.utils import logging as hf_logging

    transformers.logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _existing_dir(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserError(
            f"GLUE directory {path} does not exist; pass --glue-dir pointing at the folder that holds "
            "CoLA/, SST-2/, ... (the standard GLUE download), or leave it out to load GLUE from the hub."
        )
    return path


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .training import TrainSettings

    d = TrainSettings()
    p.add_argument("--seed", type=int, default=d.seed, help="classifier init, dropout and data order (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="default %(default)s (the paper's)")
    p.add_argument("--lr", type=float, default=d.learning_rate, help="learning rate (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="default %(default)s")
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per example (default %(default)s)")
    p.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio, help="default %(default)s (no warm-up)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default %(default)s")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=d.mixed_precision)
    p.add_argument("--no-group-by-length", action="store_true", help="shuffle without grouping by length")


def _settings(args: argparse.Namespace):
    from .training import TrainSettings

    for name in ("epochs", "batch_size", "max_length"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.lr <= 0:
        raise UserError(f"--lr must be positive, got {args.lr}.")
    return TrainSettings(
        learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, seed=args.seed,
        mixed_precision=args.mixed_precision, group_by_length=not args.no_group_by_length,
    )


def _glue(args: argparse.Namespace) -> Path | None:
    return _existing_dir(args.glue_dir) if args.glue_dir else None


def _print_metrics(record: dict[str, Any], label: str = "") -> None:
    for split, entry in record["splits"].items():
        metrics = entry["metrics"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "n_examples")
        print(f"{label}{record['task']} {split} ({metrics['n_examples']} examples): {shown}")


def cmd_finetune(args: argparse.Namespace) -> int:
    from .recipes import finetune_run

    record = finetune_run(
        args.model, args.task, args.out, glue_dir=_glue(args), settings=_settings(args), masks_path=args.mask,
        max_train_examples=args.max_train_examples, overwrite=args.overwrite, progress=not args.no_progress,
    )
    _print_metrics(record)
    print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import runs
    from .recipes import evaluate_run

    record = evaluate_run(args.run, task_name=args.task, glue_dir=_glue(args), masks_path=args.mask,
                          max_length=args.max_length)
    if args.out:
        runs.write_json(args.out, record)
    if args.format == "json":
        print(json.dumps(record, indent=2, sort_keys=True))
    else:
        _print_metrics(record)
        print(f"fraction of encoder-body weights kept: {record['body_fraction_kept']:.4f}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .recipes import quickstart

    result = quickstart(
        glue_dir=_glue(args), task_name=args.task, out=args.out, seed=args.seed,
        max_train_examples=args.max_train_examples or None, progress=not args.no_progress,
    )
    metric = result["metric"]
    split = next(iter(result["full"]))
    full = result["full"][split]["metrics"][metric]
    half = result["random_half_heads"][split]["metrics"][metric]
    print(f"{result['task']} {split} {metric}, MiniLM fine-tuned for one epoch: {full:.4f}")
    print(
        f"{result['task']} {split} {metric}, same model with a random 50% head mask "
        f"({result['heads_kept']} heads kept, {result['body_fraction_kept']:.1%} of body weights): {half:.4f}"
    )
    print(f"run directory: {result['out']}")
    return 0


def cmd_masks(args: argparse.Namespace) -> int:
    from .masks import import_prasanna2020, load_masks, save_masks

    if args.masks_command == "import-paper":
        masks = import_prasanna2020(args.seed_dir)
        save_masks(args.out, masks)
        print(f"wrote {args.out}: " + ", ".join(repr(getattr(masks, k)) for k in masks.kinds))
        return 0
    masks = load_masks(args.file)
    info = {k: {"kept": getattr(masks, k).n_kept, "total": getattr(masks, k).n_total} for k in masks.kinds}
    if masks.heads is not None:
        info["heads"]["per_layer"] = masks.heads.keep.sum(-1).tolist()
    if masks.mlps is not None:
        info["mlps"]["keep"] = masks.mlps.keep.int().tolist()
    print(json.dumps({"family": masks.family, "params": masks.params, **info}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertlottery",
        description="Find, sample, re-train and analyse subnetworks of BERT-family encoders.",
    )
    parser.add_argument("--version", action="version", version=f"bertlottery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    glue_help = "folder with the standard GLUE layout (CoLA/, SST-2/, ...); omit to load GLUE from the hub"

    p = sub.add_parser("quickstart", help="fine-tune MiniLM one epoch; evaluate full and with half the heads")
    p.add_argument("--glue-dir", help=glue_help)
    p.add_argument("--task", default="SST-2", help="GLUE task (default %(default)s)")
    p.add_argument("--out", default="runs/quickstart", help="run directory (default %(default)s; replaced)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-train-examples", type=int, default=4000,
                   help="train on the first N examples (default %(default)s; 0 = all)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("finetune", help="fine-tune an encoder on a GLUE task, optionally under a fixed mask")
    p.add_argument("--model", default="bert-base-uncased", help="hub id, local folder or alias minilm-l6 (default %(default)s)")
    p.add_argument("--task", required=True, help="CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--glue-dir", help=glue_help)
    p.add_argument("--mask", help="masks file (.safetensors) held fixed during training and evaluation")
    p.add_argument("--max-train-examples", type=int, help="train on the first N examples only")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true")
    _add_train_args(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="evaluate a fine-tuned run on its task's dev sets, optionally under a mask")
    p.add_argument("run", help="run directory (or a model folder, with --task)")
    p.add_argument("--task", help="GLUE task (default: the run's)")
    p.add_argument("--glue-dir", help=glue_help)
    p.add_argument("--mask", help="masks file (.safetensors) to apply")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("masks", help="inspect mask files; import the paper's released masks")
    msub = p.add_subparsers(dest="masks_command", metavar="ACTION", required=True)
    q = msub.add_parser("show", help="print what a masks file keeps")
    q.add_argument("file")
    q = msub.add_parser("import-paper", help="convert a released seed_<s>/ folder (head_mask.npy, mlp_mask.npy)")
    q.add_argument("seed_dir")
    q.add_argument("out", help="masks file to write (.safetensors)")
    p.set_defaults(func=cmd_masks)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _quiet_libraries()
        return args.func(args)
    except UserError as error:
        print(f"bertlottery: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertlottery: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
