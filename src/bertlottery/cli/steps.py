"""The commands that run one step: finetune, tune, evaluate, quickstart, prune, subnetworks, retrain, export,
baseline, masks. Each parses, calls its `bertlottery.steps` module and prints."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Any

from ..errors import UserError
from ..settings import SUBNETWORK_TRAINING, TrainSettings
from .common import (
    GLUE_HELP, add_train_arguments, fitted_settings_of, glue_dir_of, json_file_of, print_metrics, train_settings_of,
)

__all__ = ["register"]


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..steps.finetune import finetune_run

    record = finetune_run(
        args.model, args.task, args.out, glue_dir=glue_dir_of(args), settings=fitted_settings_of(args, args.model),
        masks_path=args.mask,
        max_train_examples=args.max_train_examples, holdout_fraction=args.holdout_fraction,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print_metrics(record)
    print(f"wrote {args.out}")
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    from ..steps.curve import learning_curve

    sizes = []
    for size in args.sizes:
        if size == "all":
            sizes.append(None)
        elif size.isdigit():
            sizes.append(int(size))
        else:
            raise UserError(f"--sizes are numbers of training examples or 'all'; got {size!r}.")
    record = learning_curve(args.model, args.task, args.out, glue_dir=glue_dir_of(args),
                            settings=fitted_settings_of(args, args.model), sizes=sizes, seeds=args.seeds,
                            keep_models=args.keep_models, progress=not args.no_progress)
    print(f"{record['task']} learning curve ({len(record['seeds'])} seeds; the learnt-check's threshold per size):")
    for point in record["points"]:
        spread = "" if point["std"] is None else f" ± {point['std']:.4f}"
        print(f"  {point['n_train']:>7} examples: {point['mean']:.4f}{spread}  (chance {point['chance']:.4f}, "
              f"threshold {point['threshold']:.4f}; learnt in {point['learnt']} of {point['seeds']} seeds)")
    print(f"wrote {args.out}")
    return 0


_GRID_FLAGS = {"learning_rate": "--lr", "epochs": "--epochs", "batch_size": "--batch-size"}


def cmd_tune(args: argparse.Namespace) -> int:
    from argparse import Namespace

    from ..steps.tune import tune_run
    from ..tuning import candidate_name

    values = {name: getattr(args, name) for name in _GRID_FLAGS}
    grid = {name: v for name, v in values.items() if len(v) > 1}
    if not grid:
        raise UserError("Nothing to tune: give two or more values to --lr, --epochs or --batch-size "
                        "(for example --lr 2e-5 5e-5 --epochs 2 3).")
    repeated = [f"{_GRID_FLAGS[n]} {' '.join(map(str, v))}" for n, v in grid.items() if len(set(v)) != len(v)]
    if repeated:
        raise UserError(f"A grid value is given twice ({'; '.join(repeated)}); give each value once.")
    if not 0 < args.holdout_fraction < 1:
        raise UserError(f"--holdout-fraction is the share of train held out to score the candidates, between 0 and 1; "
                        f"got {args.holdout_fraction}.")
    # every value of the grid checked as a single --lr/--epochs/--batch-size is
    for name, v in grid.items():
        for value in v:
            train_settings_of(Namespace(**{**vars(args), **{n: w[0] for n, w in values.items()}, name: value}))
    base = train_settings_of(Namespace(**{**vars(args), **{n: w[0] for n, w in values.items()}}))
    record = tune_run(args.model, args.task, args.out, glue_dir=glue_dir_of(args), base=base, grid=grid,
                      tune_fraction=args.holdout_fraction, tune_seed=args.seed,
                      max_train_examples=args.max_train_examples, overwrite=args.overwrite,
                      progress=not args.no_progress)
    print(f"{record['task']}: {len(record['candidates'])} candidates, each trained on {record['n_train']} examples "
          f"and scored ({record['metric']}) on {record['n_heldout']} held out of train")
    for i, candidate in enumerate(record["candidates"]):
        name = candidate_name({k: candidate[k] for k in record["tuned"]})
        score = "n/a" if candidate["score"] is None else f"{candidate['score']:.4f}"
        loss = "" if candidate["heldout_loss"] is None else f" (loss {candidate['heldout_loss']:.4f})"
        print(f"{'*' if i == record['chosen'] else ' '} {name}: {score}{loss}")
    print(f"chosen: {candidate_name(record['choice'])} ({record['rule']})")
    print(f"wrote {args.out}")
    return 0


EVALUATED_ON = {"physical": " (evaluated on the physically smaller model)",
                "gated": " (evaluated with gates on the full model)"}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .. import runs
    from ..steps.evaluate import evaluate_run

    out = json_file_of(args.out)
    record = evaluate_run(args.run, task_name=args.task, glue_dir=glue_dir_of(args), masks_path=args.mask,
                          max_length=args.max_length, physical=not args.gated)
    if out:
        runs.write_json(out, record)
    if args.format == "json":
        print(json.dumps(record, indent=2, sort_keys=True))
    else:
        print_metrics(record)
        print(f"fraction of encoder-body weights kept: {record['body_fraction_kept']:.4f}"
              + EVALUATED_ON.get(record.get("evaluated_on"), ""))
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from .. import runs
    from ..steps.ablation import ablation_run

    out = json_file_of(args.out)
    if out is not None and out.exists():
        raise UserError(f"--out {out} exists; give a new file name (nothing is overwritten).")
    record = ablation_run(args.run, args.prune, glue_dir=glue_dir_of(args), units=args.units)
    if out:
        runs.write_json(out, record)
    if args.format == "json":
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    print(f"{record['task']} {record['split']}: full model {record['metric']} {record['full']:.4f}")
    for unit, rows in record["units"].items():
        ranked = sorted(rows, key=lambda r: r["importance"])
        print(f"{unit}, least important first: importance, {record['metric']} without it, cost")
        for r in ranked:
            name = f"layer {r['layer']}" + (f" head {r['head']}" if "head" in r else "")
            print(f"  {name:<16} {r['importance']:.4g}  {r['score']:.4f}  {r['cost']:+.4f}")
        rho = record["spearman"][unit]
        print("  rank correlation of importance and cost: "
              + ("undefined (a constant side)" if rho["r"] is None else f"{rho['r']:+.3f} (p {rho['p']:.3g}, n {rho['n']})"))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from ..steps.quickstart import quickstart

    if args.max_train_examples == 0:  # quickstart's 0: every example
        args.max_train_examples = None
    train_settings_of(args)  # checks --seed and --max-train-examples as the config checks them
    result = quickstart(
        glue_dir=glue_dir_of(args), task_name=args.task, out=args.out, seed=args.seed,
        max_train_examples=args.max_train_examples, progress=not args.no_progress,
        overwrite=args.overwrite,
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


def _print_prune(record: dict[str, Any], out: str) -> None:
    print_metrics(record, label="good mask: ")
    sizes = ", ".join(f"{k} {record[f'{k}_kept']}" for k in ("heads", "mlps", "neurons", "weights")
                      if record.get(f"{k}_kept") is not None)
    params = record["params"]
    print(f"kept {sizes}; {record['body_fraction_kept']:.1%} of encoder-body weights; "
          f"full model {params['full_metric']:.4f}, good mask {params['final_metric']:.4f}")
    print(f"wrote {out}")


def cmd_prune(args: argparse.Namespace) -> int:
    from ..steps.prune import prune_fisher_run, prune_magnitude_run, prune_structured_run

    if args.method == "fisher":
        if args.budget_fraction is not None and not 0 < args.budget_fraction <= 1:
            raise UserError(f"--budget-fraction is a fraction of the full model's cost in (0, 1], got {args.budget_fraction}.")
        record = prune_fisher_run(args.run, args.out, glue_dir=glue_dir_of(args), budget_of=args.budget_of,
                                  budget_fraction=args.budget_fraction, budget=args.budget, cost=args.cost,
                                  examples=args.examples, labels=args.labels, rearrange=not args.no_rearrange,
                                  tune=not args.no_tune, tune_examples=args.tune_examples, seq_len=args.seq_len,
                                  overwrite=args.overwrite, progress=not args.no_progress)
        _print_prune(record, args.out)
        tuned = record["params"]["tuned_metric"]
        print(f"cost {record['cost']:,} of {record['full_cost']:,} ({record['cost'] / record['full_cost']:.1%}; "
              f"budget {record['budget']:,}); with the tuned scales, no retraining: {tuned:.4f}; {record['seconds']} s")
        return 0
    if not 0 < args.keep_fraction <= 1:
        raise UserError(f"--keep-fraction is a fraction of the full model's metric in (0, 1], got {args.keep_fraction}.")
    common = dict(glue_dir=glue_dir_of(args), keep_fraction=args.keep_fraction, compat=args.compat, overwrite=args.overwrite,
                  progress=not args.no_progress)
    if args.method == "structured":
        record = prune_structured_run(args.run, args.out, mode=args.mode, scoring_split=args.scoring_split,
                                      normalize_by_layer=not args.no_layer_norm, global_min_max=args.global_min_max,
                                      batch_size=args.batch_size, **common)
    else:
        record = prune_magnitude_run(args.run, args.out, scope=args.scope, tensor_set=args.tensors, **common)
    _print_prune(record, args.out)
    return 0


def cmd_subnetworks(args: argparse.Namespace) -> int:
    from ..steps.subnetworks import make_subnetworks, make_super_survivors

    train_settings_of(args)  # --seed checked as a study's seeds are

    if args.super:
        sizes = make_super_survivors(args.masks, args.out, seed=args.seed, overwrite=args.overwrite)
    else:
        if len(args.masks) != 1:
            raise UserError("Give one good mask (or pass --super with the masks of several seeds).")
        sizes = make_subnetworks(args.masks[0], args.out, seed=args.seed, compat=args.compat,
                                 overwrite=args.overwrite, run_dir=args.run)
    for name, kept in sizes.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in kept.items()))
    print(f"wrote {args.out}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from ..steps.retrain import retrain_run

    train_settings_of(args)  # --epochs checked as the config's epochs are

    record = retrain_run(args.run, args.mask, args.out, glue_dir=glue_dir_of(args), epochs=args.epochs,
                         subnetwork_training=args.subnetwork_training, overwrite=args.overwrite, progress=not args.no_progress)
    print_metrics(record, label="re-fine-tuned: ")
    print(f"fraction of encoder-body weights kept: {record['body_fraction_kept']:.4f}")
    print(f"wrote {args.out}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from .. import runs
    from ..steps.baselines import majority_baseline_metrics, random_init_baseline_run

    if args.kind == "majority":
        out = json_file_of(args.out)
        record = majority_baseline_metrics(args.task, glue_dir_of(args))
        if out:
            runs.write_json(out, record)
    else:
        if not args.size_of or not args.out:
            raise UserError("The random-init baseline needs --size-of BAD_MASK and --out RUN_DIR.")
        record = random_init_baseline_run(
            args.model, args.task, args.size_of, args.out, glue_dir=glue_dir_of(args),
            settings=fitted_settings_of(args, args.model),
            max_train_examples=args.max_train_examples, overwrite=args.overwrite, progress=not args.no_progress,
        )
    print_metrics(record, label=f"{args.kind} baseline: ")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..steps.export import export_run

    plan = export_run(args.run, args.mask, args.out, overwrite=args.overwrite)
    params, macs = plan["params"], plan["macs_per_token"]
    print(f"encoder body: {params['body_before']:,} -> {params['body_after']:,} parameters; "
          f"{macs['fraction_removed']:.1%} of body multiply-accumulates per token removed (at {macs['seq_len']} tokens)")
    print(f"wrote {args.out} (load with bertlottery.export.load_exported, or: bertlottery evaluate {args.out})")
    return 0


def cmd_masks(args: argparse.Namespace) -> int:
    from ..masks import import_prasanna2020, load_masks, save_masks

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


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="fine-tune MiniLM one epoch; evaluate full and with half the heads")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--task", default="SST-2", help="GLUE task (default %(default)s)")
    p.add_argument("--out", default="runs/quickstart",
                   help="run directory (default %(default)s): new, empty or an earlier quickstart's, which is replaced")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not a quickstart's (replacing files of the same names only)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-train-examples", type=int, default=4000,
                   help="train on the first N examples (default %(default)s; 0 = all)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("finetune", help="fine-tune an encoder on a GLUE task, optionally under a fixed mask")
    p.add_argument("--model", default="bert-base-uncased", help="hub id, local folder or alias minilm-l6 (default %(default)s)")
    p.add_argument("--task", required=True, help="CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI")
    p.add_argument("--out", required=True, help="run directory to create (new, or empty)")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--mask", help="masks file (.safetensors) held fixed during training and evaluation")
    p.add_argument("--max-train-examples", type=int,
                   help="train on a seeded sample of N training examples, stratified by label (and source)")
    p.add_argument("--holdout-fraction", type=float, default=0.0,
                   help="set a seeded slice of train aside (not trained on) for `prune --scoring-split heldout`")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier finetune run in --out, or write into a folder that is not bertlottery's "
                        "(replacing files of the same names only)")
    p.add_argument("--no-progress", action="store_true")
    add_train_arguments(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("curve", conflict_handler="resolve", help="a learning curve: dev score against training examples, over seeds",
                       description="Fine-tunes on seeded, label-stratified samples of the training set of each "
                       "size, once per seed, and writes curve.csv, curve.json and curve.png: the evidence of "
                       "whether a task not learnt at a study's budget would be learnt with more data. A stopped "
                       "curve resumes.")
    p.add_argument("--model", default="bert-base-uncased", help="hub id, local folder or alias minilm-l6 (default %(default)s)")
    p.add_argument("--task", required=True, help="CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI")
    p.add_argument("--out", required=True, help="folder of the curve (new, or an earlier curve of the same settings)")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--sizes", nargs="+", required=True, help="training examples per point, or 'all' (e.g. 250 500 all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 42, 86], help="run seeds (default %(default)s)")
    p.add_argument("--keep-models", action="store_true", help="keep each point's fine-tuned model")
    p.add_argument("--no-progress", action="store_true")
    add_train_arguments(p)
    p.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # one per point: --seeds
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("tune", conflict_handler="resolve",
                       help="choose fine-tuning settings from a grid on a held-out slice of train (never dev)",
                       description="Fine-tunes every combination of the values given to --lr, --epochs and "
                       "--batch-size on train less a seeded held-out slice, scores each on that slice, and writes "
                       "every score and the choice to OUT/tune.json.")
    p.add_argument("--model", default="bert-base-uncased", help="hub id, local folder or alias minilm-l6 (default %(default)s)")
    p.add_argument("--task", required=True, help="CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI")
    p.add_argument("--out", required=True, help="folder to write (candidates/<name>/metrics.json and tune.json)")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--max-train-examples", type=int, help="tune on a seeded stratified sample of N training examples")
    p.add_argument("--holdout-fraction", type=float, default=0.1,
                   help="share of train held out to score the candidates (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it holds other files")
    p.add_argument("--no-progress", action="store_true")
    add_train_arguments(p)
    # the grid: these replace the single-valued options of the same names (conflict_handler="resolve")
    default = {f.name: [f.default] for f in fields(TrainSettings)}
    p.add_argument("--lr", dest="learning_rate", type=float, nargs="+", default=default["learning_rate"],
                   help="learning rates to try (default %(default)s)")
    p.add_argument("--epochs", type=int, nargs="+", default=default["epochs"], help="epochs to try (default %(default)s)")
    p.add_argument("--batch-size", type=int, nargs="+", default=default["batch_size"],
                   help="batch sizes to try (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which slice is held out, and the candidates' run seed "
                   "(default %(default)s)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="evaluate a fine-tuned run on its task's dev sets, optionally under a mask")
    p.add_argument("run", help="run directory (or a model folder, with --task)")
    p.add_argument("--task", help="GLUE task (default: the run's)")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--mask", help="masks file (.safetensors) to apply")
    p.add_argument("--gated", action="store_true",
                   help="evaluate a head+MLP mask with gates on the full model (default: on the physically smaller "
                        "model, as a study's evaluate stage does; the same metrics to float tolerance, faster)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per example (default: the length the run was fine-tuned at, else 128)")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ablation", help="each MLP (or head) of a fine-tuned run gated off alone, scored on dev, beside "
                                        "the importance its s-pruning search started from")
    p.add_argument("run", help="fine-tuned run directory")
    p.add_argument("prune", help="the folder of an s-pruning (structured) prune step of that run: its trace.json")
    p.add_argument("--units", nargs="+", choices=["mlps", "heads"], default=["mlps"],
                   help="what to gate off one at a time (default mlps; heads cost one dev evaluation each)")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--out", help="also write the record to this JSON file (a new one)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("prune", help="find a good subnetwork of a fine-tuned run (structured, magnitude or fisher)")
    p.add_argument("method", choices=["structured", "magnitude", "fisher"],
                   help="s-pruning of heads/MLPs, m-pruning of weights, or the retraining-free Fisher search of heads "
                        "and MLP neurons under a cost budget (Kwon et al. 2022)")
    p.add_argument("run", help="fine-tuning run directory")
    p.add_argument("--out", required=True, help="directory to write mask.safetensors, trace.json, metrics.json")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--keep-fraction", "--threshold", dest="keep_fraction", type=float, default=0.9,
                   help="keep pruning while the metric is at least this fraction of the full model's "
                        "(default %(default)s; --threshold is its old name)")
    p.add_argument("--compat", choices=["none", "prasanna2020"], default=None,
                   help="reproduce the released code's quirks (see bertlottery.compat)")
    p.add_argument("--mode", default="heads+mlps", help="structured: heads+mlps (default), heads or mlps")
    p.add_argument("--scoring-split", default="dev", help="structured: importance over dev (default, as the paper) "
                   "or heldout (a slice of train set aside by finetune --holdout-fraction)")
    p.add_argument("--no-layer-norm", action="store_true", help="structured: do not L2-normalise head scores per layer")
    p.add_argument("--global-min-max", action="store_true", help="structured: min-max scale each kind's scores")
    p.add_argument("--batch-size", type=int, default=64, help="structured: scoring batch size (default %(default)s)")
    p.add_argument("--scope", default="global", choices=["global", "local"],
                   help="magnitude: one threshold over all tensors (paper) or the same fraction per tensor")
    p.add_argument("--tensors", default="paper", help="magnitude: tensor set, paper (default) or weights")
    p.add_argument("--budget-of", help="fisher: an s-pruning good mask (file or prune directory) whose cost to match")
    p.add_argument("--budget-fraction", type=float, help="fisher: this fraction of the full model's cost instead")
    p.add_argument("--budget", type=int, help="fisher: this cost (MACs per token, or parameters) instead")
    p.add_argument("--cost", default="macs", choices=["macs", "params"],
                   help="fisher: MACs per token at --seq-len (default) or parameters")
    p.add_argument("--seq-len", type=int, default=128, help="fisher: tokens per sequence of the MACs count")
    p.add_argument("--examples", type=int, default=2048, help="fisher: training examples of the Fisher estimate "
                   "(default %(default)s, the paper's)")
    p.add_argument("--tune-examples", type=int, help="fisher: calibration examples of the least-squares tuning "
                   "(default: the Fisher sample)")
    p.add_argument("--labels", default="gold", choices=["gold", "predicted"], help="fisher: labels of the estimate")
    p.add_argument("--no-rearrange", action="store_true", help="fisher: skip the mask rearrangement")
    p.add_argument("--no-tune", action="store_true", help="fisher: skip the least-squares mask tuning")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("subnetworks", help="good / random / bad masks of a good mask's size; super-survivors")
    p.add_argument("masks", nargs="+", help="a good mask (file or prune directory); with --super, one per seed "
                   "(also the paper's released seed_<s>/ folders)")
    p.add_argument("--out", required=True, help="directory to write good/random/bad.safetensors")
    p.add_argument("--seed", type=int, required=True, help="seed of the random and bad draws (recorded)")
    p.add_argument("--super", action="store_true", help="super-survivors across the given seeds' masks")
    p.add_argument("--compat", choices=["none", "prasanna2020"], default=None)
    p.add_argument("--run", help="a Fisher mask: the fine-tuned run it was found on (default: the one it names)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_subnetworks)

    p = sub.add_parser("retrain", help="re-fine-tune from the pre-trained weights under a fixed mask")
    p.add_argument("run", help="the fine-tuning run whose seed and settings to reuse (the one that found the mask)")
    p.add_argument("--mask", required=True, help="masks file or prune directory")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--epochs", type=int, help="train longer than the original run; dev metrics after every epoch")
    p.add_argument("--subnetwork-training", choices=SUBNETWORK_TRAINING, default="physical",
                   help="a head+MLP mask: train the physically smaller model, or the full one with gates "
                        "(default %(default)s)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("export", help="write an s-pruned subnetwork with its masked heads and MLPs removed")
    p.add_argument("run", help="fine-tuning run directory")
    p.add_argument("--mask", required=True, help="a head/MLP masks file or prune directory")
    p.add_argument("--out", required=True, help="folder to write: new, or empty")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in --out, or write into a folder that is not bertlottery's "
                        "(replacing files of the same names only)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("baseline", help="the paper's baselines: majority class, random-init encoder")
    p.add_argument("kind", choices=["majority", "random-init"])
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir", help=GLUE_HELP)
    p.add_argument("--model", default="bert-base-uncased", help="random-init: the architecture to initialise randomly")
    p.add_argument("--size-of", help="random-init: a bad s-mask whose size the random mask matches")
    p.add_argument("--out", help="random-init: run directory; majority: optional JSON file")
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    add_train_arguments(p)
    p.set_defaults(func=cmd_baseline)
    p = sub.add_parser("masks", help="inspect mask files; import the paper's released masks")
    msub = p.add_subparsers(dest="masks_command", metavar="ACTION", required=True)
    q = msub.add_parser("show", help="print what a masks file keeps")
    q.add_argument("file")
    q = msub.add_parser("import-paper", help="convert a released seed_<s>/ folder (head_mask.npy, mlp_mask.npy)")
    q.add_argument("seed_dir")
    q.add_argument("out", help="masks file to write (.safetensors)")
    p.set_defaults(func=cmd_masks)
