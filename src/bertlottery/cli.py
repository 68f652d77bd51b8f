"""The ``bertlottery`` command: thin; parse, call, print.

User mistakes (`UserError`) print one line and exit with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError

__all__ = ["main"]


def _quiet_libraries() -> None:
    # transformers prints a load report and progress bars for every from_pretrained; a research CLI
    # that loads dozens of models should print only its own progress. The environment variables do it
    # without importing transformers (commands that load no model start fast); when transformers is
    # already imported (main() called in-process), its settings are changed directly.
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
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
        max_train_examples=args.max_train_examples, holdout_fraction=args.holdout_fraction,
        overwrite=args.overwrite, progress=not args.no_progress,
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


def _print_prune(record: dict[str, Any], out: str) -> None:
    _print_metrics(record, label="good mask: ")
    sizes = ", ".join(f"{k} {record[f'{k}_kept']}" for k in ("heads", "mlps", "weights") if record.get(f"{k}_kept") is not None)
    params = record["params"]
    print(f"kept {sizes}; {record['body_fraction_kept']:.1%} of encoder-body weights; "
          f"full model {params['full_metric']:.4f}, good mask {params['final_metric']:.4f}")
    print(f"wrote {out}")


def cmd_prune(args: argparse.Namespace) -> int:
    from .lottery import prune_magnitude_run, prune_structured_run

    if not 0 < args.threshold <= 1:
        raise UserError(f"--threshold is a fraction of the full model's metric in (0, 1], got {args.threshold}.")
    common = dict(glue_dir=_glue(args), threshold=args.threshold, compat=args.compat, overwrite=args.overwrite,
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
    from .lottery import make_subnetworks, make_super_survivors

    if args.super:
        sizes = make_super_survivors(args.masks, args.out, seed=args.seed, overwrite=args.overwrite)
    else:
        if len(args.masks) != 1:
            raise UserError("Give one good mask (or pass --super with the masks of several seeds).")
        sizes = make_subnetworks(args.masks[0], args.out, seed=args.seed, compat=args.compat,
                                 overwrite=args.overwrite)
    for name, kept in sizes.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in kept.items()))
    print(f"wrote {args.out}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from .lottery import retrain_run

    record = retrain_run(args.run, args.mask, args.out, glue_dir=_glue(args), epochs=args.epochs,
                         overwrite=args.overwrite, progress=not args.no_progress)
    _print_metrics(record, label="re-fine-tuned: ")
    print(f"fraction of encoder-body weights kept: {record['body_fraction_kept']:.4f}")
    print(f"wrote {args.out}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from . import runs
    from .lottery import majority_baseline_metrics, random_init_baseline_run

    if args.kind == "majority":
        record = majority_baseline_metrics(args.task, _glue(args))
        if args.out:
            runs.write_json(args.out, record)
    else:
        if not args.size_of or not args.out:
            raise UserError("The random-init baseline needs --size-of BAD_MASK and --out RUN_DIR.")
        record = random_init_baseline_run(
            args.model, args.task, args.size_of, args.out, glue_dir=_glue(args), settings=_settings(args),
            max_train_examples=args.max_train_examples, overwrite=args.overwrite, progress=not args.no_progress,
        )
    _print_metrics(record, label=f"{args.kind} baseline: ")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .lottery import export_run

    plan = export_run(args.run, args.mask, args.out)
    params, macs = plan["params"], plan["macs_per_token"]
    print(f"encoder body: {params['body_before']:,} -> {params['body_after']:,} parameters; "
          f"{macs['fraction_removed']:.1%} of body multiply-accumulates per token removed (at {macs['seq_len']} tokens)")
    print(f"wrote {args.out} (load with bertlottery.export.load_exported, or: bertlottery evaluate {args.out})")
    return 0


def _stages_of(run_dir: Path):
    from . import runs
    from .config import from_dict
    from .pipeline import expand

    config_file = run_dir / runs.CONFIG_FILE
    if not config_file.is_file():
        raise UserError(f"{run_dir} is not a study run directory (no {runs.CONFIG_FILE}); start one with bertlottery run.")
    config = from_dict(runs.read_json(config_file), source=str(config_file))  # its errors name the file
    return config, expand(config)


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load
    from .pipeline import expand, prepare_run, run_local

    if args.address and args.executor != "ray":
        raise UserError("--address is for the Ray executor; add --executor ray.")
    config = load(args.config, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    stages = expand(config)
    before = prepare_run(stages, run_dir, config)  # finished stages whose artifacts are intact
    left = sum(1 for s in stages if before.get(s.id) != "done")
    print(f"{config.name}: {len(stages)} stages, {len(stages) - left} already done, {left} to run; run directory {run_dir}")
    # The live view: a bar of stages done / total (with the stage now running), above the running
    # stage's own progress bar; one line per finished stage with its time, kept in the scrollback.
    from tqdm.auto import tqdm

    # tqdm's own estimate (stages left x mean time per stage) is meaningless when stages take 1 s to
    # minutes; the bar shows the stage time left estimated per kind and task instead (as `status` does).
    bar = tqdm(total=len(stages), initial=len(stages) - left, desc="stages", unit="stage", position=0,
               dynamic_ncols=True, disable=args.no_progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    started: dict[str, float] = {}
    finished = [len(stages) - left]
    live, seconds_of = dict(before), {}
    time_left = [_time_left(stages, run_dir, live, seconds_of)]

    def report(stage, state: str) -> None:
        import time

        from .pipeline import stage_seconds

        if state in ("start", "queued"):  # queued: handed to Ray, which starts it when a worker is free
            started[stage.id] = time.monotonic()
            if state == "start":
                bar.set_postfix_str(time_left[0] + stage.id, refresh=True)
            return
        bar.update(1)
        finished[0] += 1
        live[stage.id] = state
        time_left[0] = _time_left(stages, run_dir, live, seconds_of)
        waited = time.monotonic() - started.pop(stage.id, time.monotonic())
        bar.set_postfix_str(time_left[0] + stage.id, refresh=False)
        tqdm.write(f"[{finished[0]}/{len(stages)}] {state:<7} {stage.id}  ({stage_seconds(run_dir, stage) or waited:.0f} s)")

    if args.executor == "ray":
        from .pipeline import run_ray

        states = run_ray(stages, run_dir, config, address=args.address, on_stage=report, states=before)
    else:
        states = run_local(stages, run_dir, config, progress=not args.no_progress, on_stage=report, states=before)
    bar.close()
    import pandas as pd

    from .results import format_summary, summary

    results = pd.read_parquet(run_dir / "results.parquet")
    table = summary(results)
    if not table.empty:
        print("\n" + format_summary(table) + "\n")
    for line in unlearnt_task_warnings(results):
        print(f"warning: {line}")
    counts = {state: sum(1 for v in states.values() if v == state) for state in ("done", "failed", "blocked")}
    print(f"done {counts['done']}, failed {counts['failed']}, blocked {counts['blocked']}; "
          f"results in {run_dir / 'results.csv'}")
    print(_cost_line(stages, run_dir))
    return 0 if not counts["failed"] and not counts["blocked"] else 1


def unlearnt_task_warnings(results) -> list[str]:
    """The report's caution lines, for the end of a run: tasks whose fine-tuned model did not beat the
    majority class, or whose searches pruned (nearly) everything, so good/random/bad say nothing."""
    from .report.tables import final_cells, main_rows, uninformative_tasks

    if results.empty:
        return []
    rows, metrics = main_rows(results)
    return uninformative_tasks(final_cells(rows), metrics)


def _time_left(stages, run_dir: Path, states: dict[str, str], cache: dict[str, float]) -> str:
    """The live view's estimate: "~1.2 h of stage time left, " ("" until a stage of some kind has run)."""
    from .pipeline import estimate_left

    left = estimate_left(stages, run_dir, states, cache)
    return f"~{left['seconds'] / 3600:.1f} h of stage time left, " if left["estimated"] else ""


def _cost_line(stages, run_dir: Path) -> str:
    from .pipeline import run_summary

    total = run_summary(stages, run_dir)
    line = f"stage time {total['seconds'] / 3600:.2f} h"
    if total["stages_with_energy"]:
        line += (f", energy {total['energy_kwh']:.4f} kWh, {total['emissions_kg'] * 1000:.1f} g CO2-eq "
                 f"(codecarbon, {total['stages_with_energy']} stages)")
    return line


def cmd_status(args: argparse.Namespace) -> int:
    from . import runs
    from .pipeline import FAILED_DIR, estimate_left, stage_states

    run_dir = Path(args.run_dir)
    config, stages = _stages_of(run_dir)
    states = stage_states(stages, run_dir)
    order = ("done", "running", "failed", "left")
    print(f"{config.name}: {len(stages)} stages: " + ", ".join(
        f"{state} {sum(1 for v in states.values() if v == state)}" for state in order))
    print(_cost_line(stages, run_dir))
    left = estimate_left(stages, run_dir, states)
    if left["estimated"]:
        line = (f"left: about {left['seconds'] / 3600:.2f} h of stage time for {left['estimated']} stages (from the times "
                "of finished stages of the same kind and task; divide by the stages that run at once)")
        if left["unknown"]:
            line += f"; {left['unknown']} stages of kinds not run yet not counted"
        print(line)
    elif left["unknown"]:
        print(f"left: no estimate yet for {left['unknown']} stages (none of their kind has finished)")
    for stage in stages:
        state = states[stage.id]
        if state != "done" or args.all:
            line = f"  {state:<8} {stage.id}"
            if state == "failed":
                error = runs.read_json(run_dir / FAILED_DIR / f"{stage.file_id}.json")["error"]
                line += f"  ({error.splitlines()[0][:120]})"
            print(line)
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
    p.add_argument("--holdout-fraction", type=float, default=0.0,
                   help="set a seeded slice of train aside (not trained on) for `prune --scoring-split heldout`")
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

    p = sub.add_parser("prune", help="find a good subnetwork of a fine-tuned run (structured or magnitude)")
    p.add_argument("method", choices=["structured", "magnitude"], help="s-pruning of heads/MLPs, or m-pruning of weights")
    p.add_argument("run", help="fine-tuning run directory")
    p.add_argument("--out", required=True, help="directory to write mask.safetensors, trace.json, metrics.json")
    p.add_argument("--glue-dir", help=glue_help)
    p.add_argument("--threshold", type=float, default=0.9, help="keep pruning while metric >= this x full (default %(default)s)")
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
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_subnetworks)

    p = sub.add_parser("retrain", help="re-fine-tune from the pre-trained weights under a fixed mask")
    p.add_argument("run", help="the fine-tuning run whose seed and settings to reuse (the one that found the mask)")
    p.add_argument("--mask", required=True, help="masks file or prune directory")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--glue-dir", help=glue_help)
    p.add_argument("--epochs", type=int, help="train longer than the original run; dev metrics after every epoch")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("export", help="write an s-pruned subnetwork with its masked heads and MLPs removed")
    p.add_argument("run", help="fine-tuning run directory")
    p.add_argument("--mask", required=True, help="a head/MLP masks file or prune directory")
    p.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("baseline", help="the paper's baselines: majority class, random-init encoder")
    p.add_argument("kind", choices=["majority", "random-init"])
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir", help=glue_help)
    p.add_argument("--model", default="bert-base-uncased", help="random-init: the architecture to initialise randomly")
    p.add_argument("--size-of", help="random-init: a bad s-mask whose size the random mask matches")
    p.add_argument("--out", help="random-init: run directory; majority: optional JSON file")
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    _add_train_args(p)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("run", help="run a whole study from a config; resumes, skipping finished stages")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. tasks=[RTE] train.epochs=1")
    p.add_argument("--run-dir", help="run directory (default runs/<config name>)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: one stage at a time in this process (default); ray: independent stages in parallel")
    p.add_argument("--address", help="ray: an existing cluster (e.g. auto or ray://host:10001); default: start one")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="what is done, running, failed and left in a study run directory")
    p.add_argument("run_dir")
    p.add_argument("--all", action="store_true", help="list finished stages too")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("masks", help="inspect mask files; import the paper's released masks")
    msub = p.add_subparsers(dest="masks_command", metavar="ACTION", required=True)
    q = msub.add_parser("show", help="print what a masks file keeps")
    q.add_argument("file")
    q = msub.add_parser("import-paper", help="convert a released seed_<s>/ folder (head_mask.npy, mlp_mask.npy)")
    q.add_argument("seed_dir")
    q.add_argument("out", help="masks file to write (.safetensors)")
    p.set_defaults(func=cmd_masks)

    # Commands that live with their package: each module has register(subparsers), importing nothing
    # heavy at module level (the CLI starts fast).
    import importlib

    for module in _COMMAND_MODULES:
        importlib.import_module(f".{module}", __package__).register(sub)
    return parser


_COMMAND_MODULES = ("analysis.cli", "report.cli", "attention.cli", "annotate.cli", "gordon.cli")


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
    except BrokenPipeError:  # the reader went away (`bertlottery status RUN | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's final flush does not fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
