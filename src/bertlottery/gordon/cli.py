"""``bertlottery gordon pretrain|finetune|analyse``: the Compressing-BERT steps one at a time.

The whole study is ``bertlottery run configs/gordon-minilm.yaml``; these commands run its steps by
hand, with the same code. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

__all__ = ["register"]


def register(sub) -> None:
    from ..cli.common import add_train_arguments
    from .config import PretrainSettings
    from .names import PRETRAIN_METHODS, SCOPES, TENSOR_CHOICES, VARIANTS

    loop = PretrainSettings()  # the loop's own defaults: a short run

    p = sub.add_parser("gordon", help="Compressing BERT (Gordon et al. 2020): pruning during pre-training")
    gsub = p.add_subparsers(dest="gordon_command", metavar="STEP", required=True)

    q = gsub.add_parser("pretrain", help="continue MLM pre-training of a checkpoint, pruning to a sparsity")
    q.add_argument("--model", default="minilm-l6", help="checkpoint (hub id, folder, alias, or a previous --out)")
    q.add_argument("--train", nargs="+", required=True, help="text files or folders, or hub:<dataset>[:<config>]:<split>")
    q.add_argument("--dev", nargs="+", required=True, help="dev text (the pre-training loss is measured on it)")
    q.add_argument("--format", choices=["plain", "wikitext"], default="plain", help="wikitext: undo @-@ and <unk>")
    q.add_argument("--sparsity", type=float, default=0.0, help="target fraction of the pruned tensors (default 0)")
    q.add_argument("--method", choices=PRETRAIN_METHODS, default="gmp")
    q.add_argument("--steps", type=int, default=loop.steps)
    q.add_argument("--prune-steps", type=int, default=100, help="the sparsity reaches the target here")
    q.add_argument("--prune-every", type=int, default=10, help="steps between mask updates")
    q.add_argument("--scope", choices=SCOPES, default="local", help="a threshold per matrix (local) or one for all")
    q.add_argument("--tensors", choices=TENSOR_CHOICES, default="gordon")
    q.add_argument("--prune-embeddings", action="store_true", help="prune the word embeddings too")
    q.add_argument("--head-steps", type=int, default=0, help="first train the MLM head alone this many steps")
    q.add_argument("--batch-size", type=int, default=loop.batch_size)
    q.add_argument("--max-length", type=int, default=128)
    q.add_argument("--lr", type=float, default=loop.learning_rate)
    q.add_argument("--warmup-steps", type=int, default=loop.warmup_steps)
    q.add_argument("--max-train-sequences", type=int)
    q.add_argument("--dev-sequences", type=int, default=256)
    q.add_argument("--seed", type=int, default=loop.seed)
    q.add_argument("--out", required=True, help="folder to write (replaced)")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=cmd_pretrain)

    q = gsub.add_parser("finetune", help="fine-tune a pruned checkpoint on a GLUE task")
    q.add_argument("checkpoint", help="a `gordon pretrain --out` folder (after-downstream: a fine-tuned run)")
    q.add_argument("--task", required=True)
    q.add_argument("--variant", choices=VARIANTS, default="pruned")
    q.add_argument("--sparsity", type=float, help="after-downstream: the target sparsity")
    q.add_argument("--scope", choices=SCOPES, default="local")
    q.add_argument("--tensors", choices=TENSOR_CHOICES, default="gordon")
    q.add_argument("--prune-embeddings", action="store_true")
    q.add_argument("--glue-dir", help="local GLUE folder (default: the Hugging Face hub)")
    q.add_argument("--max-train-examples", type=int)
    q.add_argument("--out", required=True)
    q.add_argument("--no-progress", action="store_true")
    add_train_arguments(q)
    q.set_defaults(func=cmd_finetune)

    q = gsub.add_parser("analyse", help="the Gordon section of a study's report, as one HTML page")
    q.add_argument("run_dir")
    q.add_argument("--out", help="HTML file (default RUN_DIR/gordon.html)")
    q.set_defaults(func=cmd_analyse)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .. import runs
    from .config import GordonCorpusConfig, GordonPretrainConfig
    from .pretraining import head_run, pretrain_run

    if not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity must be in [0, 1), got {args.sparsity}.")
    if args.prune_steps > args.steps:
        raise UserError(f"--prune-steps ({args.prune_steps}) must not exceed --steps ({args.steps}).")
    for name in ("steps", "prune_every", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    corpus = GordonCorpusConfig(train=args.train, dev=args.dev, format=args.format,
                                max_train_sequences=args.max_train_sequences, dev_sequences=args.dev_sequences)
    # the config's defaults for what this command does not ask (weight decay, masking probability, the
    # head's learning rate), its own shorter run for what it does
    pretrain = GordonPretrainConfig(steps=args.steps, prune_steps=args.prune_steps, prune_every=args.prune_every,
                                    scope=args.scope, tensors=args.tensors, prune_embeddings=args.prune_embeddings,
                                    batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.lr,
                                    warmup_steps=args.warmup_steps, head_steps=args.head_steps)
    out = Path(args.out)
    start = args.model
    if args.head_steps:
        record = head_run(args.model, out / "head", corpus=corpus, pretrain=pretrain, seed=args.seed,
                          progress=not args.no_progress)
        print(f"MLM head: dev loss {record['pretrain_dev_loss_start']:.4f} -> {record['pretrain_dev_loss']:.4f}")
        start = out / "head" / runs.MODEL_DIR
    record = pretrain_run(start, out, corpus=corpus, pretrain=pretrain, method=args.method, sparsity=args.sparsity,
                          seed=args.seed, progress=not args.no_progress)
    print(f"pre-training dev loss {record['pretrain_dev_loss_start']:.4f} -> {record['pretrain_dev_loss']:.4f} "
          f"at sparsity {record['sparsity_reached']:.3f} ({record['train_seconds']:.0f} s); wrote {out}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .. import runs
    from ..cli.common import fitted_settings_of, glue_dir_of, print_metrics
    from ..masks import load_masks
    from .downstream import AfterDownstream, run_downstream

    source = Path(args.checkpoint)
    after = mask = None
    if args.variant == "after-downstream":
        if args.sparsity is None or not 0 <= args.sparsity < 1:
            raise UserError("An after-downstream run needs --sparsity in [0, 1).")
        after = AfterDownstream(args.sparsity, scope=args.scope, tensors=args.tensors, embeddings=args.prune_embeddings)
    elif (source / runs.MASK_FILE).is_file():
        mask = load_masks(source / runs.MASK_FILE).weights
    record = run_downstream(runs.model_dir_of(source), args.task, args.out, glue_dir=glue_dir_of(args),
                            settings=fitted_settings_of(args, runs.model_dir_of(source)), variant=args.variant, mask=mask, after=after,
                            max_train_examples=args.max_train_examples, progress=not args.no_progress)
    print_metrics(record, label=f"{args.variant}: ")
    print(f"training loss over the training set {record['train_loss']:.4f}; fraction kept "
          f"{record['fraction_kept']:.3f}; wrote {args.out}")
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    from .report import write_page

    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "gordon.html"
    page, missing = write_page(run_dir, out)
    for line in missing:
        print(f"missing: {line}")
    print(f"wrote {page}")
    return 0
