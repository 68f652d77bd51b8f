"""The commands of a whole study: ``run`` (expand a config, run what is not done, print the results)
and ``status`` (what is done, running, failed and left in a run directory)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ..errors import UserError

__all__ = ["register", "unlearnt_task_warnings"]


def _stages_of(run_dir: Path):
    from .. import runs
    from ..config import from_dict
    from ..studies import expand

    config_file = run_dir / runs.CONFIG_FILE
    if not config_file.is_file():
        raise UserError(f"{run_dir} is not a study run directory (no {runs.CONFIG_FILE}); start one with bertlottery run.")
    with warnings.catch_warnings():  # a run's own config.json, written before a key was renamed: not the user's to edit
        warnings.simplefilter("ignore", FutureWarning)
        config = from_dict(runs.read_json(config_file), source=str(config_file))  # its errors name the file
    return config, expand(config)


def cmd_run(args: argparse.Namespace) -> int:
    from .. import runs
    from ..config import load
    from ..studies import expand

    if args.address and args.executor != "ray":
        raise UserError("--address is for the Ray executor; add --executor ray.")
    config = load(args.config, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    # every refusal before the run directory is touched: its folder, this machine, the model
    runs.check_output_dir(run_dir, runs.STUDY_RUN_KIND, recognise=runs.is_study_run, overwritable=False)
    _check_environment(config, args.executor)
    if args.plan:  # from the config's dimensions alone: a plan must not need the model (paper.yaml's bert-base offline)
        return _plan(args, config, expand(config), run_dir)
    config = fit_to_model(config)
    stages = expand(config)
    # one writer at a time: two runs on one directory would each run every stage and delete each
    # other's stage folders in progress (with Ray, this driver holds the lock for its workers)
    with runs.locked_run_dir(run_dir):
        return _run(args, config, stages, run_dir)


def _plan(args: argparse.Namespace, config, stages, run_dir: Path) -> int:
    """``run --plan``: what the study would run and cost; runs nothing, writes nothing."""
    import json

    from ..plan import format_plan, study_plan

    if args.run_dir and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} does not exist; give a run directory with finished stages, or leave "
                        "--run-dir out to estimate from a calibration.")
    # the threads a stage will get: Ray gives each stage cpus_per_stage (1 by default), the local
    # executor all of this process's
    threads = config.resources.cpus_per_stage or (1 if args.executor == "ray" else None)
    plan = study_plan(config, stages, run_dir=run_dir if run_dir.is_dir() else None,
                      calibrate_here=not args.no_calibrate, threads=threads)
    print(json.dumps(plan, indent=2) if args.format == "json" else format_plan(plan))
    return 0


def _check_environment(config, executor: str) -> None:
    """What a config names on this machine, checked before anything runs (each stage would fail alone):
    the GLUE folder, and for the local executor the cores a stage asks for (torch would start that many
    threads: 100000 exhausted the memory with a traceback)."""
    import os

    if config.glue_dir and not Path(config.glue_dir).expanduser().is_dir():
        raise UserError(f"glue_dir {config.glue_dir} does not exist (relative paths are read from {Path.cwd()}); "
                        "give the folder that holds CoLA/, SST-2/, ..., or glue_dir=null to load GLUE from the hub.")
    cpus, cores = config.resources.cpus_per_stage, os.cpu_count() or 1
    if executor == "local" and cpus is not None and cpus > cores:
        raise UserError(f"resources.cpus_per_stage {cpus} is more than the {cores} cores of this machine; give at "
                        f"most {cores}, or leave it out to use them all.")


def fit_to_model(config):
    """The config with ``train.max_length`` fitted to the model's position embeddings, before any stage
    is expanded (so that the stages' ids and records name the length they run at): a length the
    config sets beyond them (``train.max_length``, or a task's in ``per_task``) is refused with one
    line; the default (the paper's 128) is cut to them, with a notice (as the commands do with
    ``--max-length``, `bertlottery.steps.taskdata.fit_max_length`).

    A config does not say whether ``train.max_length: 128`` was written or left out, so 128 counts as
    the default either way.
    """
    import dataclasses

    from ..steps.taskdata import DEFAULT_MAX_LENGTH, fit_max_length

    train = config.train
    for task, overrides in sorted((train.per_task or {}).items()):
        if "max_length" in overrides:
            fit_max_length(config.model, overrides["max_length"], name=f"train.per_task.{task}.max_length")
    asked = None if train.max_length == DEFAULT_MAX_LENGTH else train.max_length
    length = fit_max_length(config.model, asked, name="train.max_length")
    _check_shortest(config, length)
    if length == train.max_length:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(train, max_length=length))


def _check_shortest(config, length: int) -> None:
    """Refuse, before any stage is named, a length that cannot hold the tokenizer's special tokens and
    one token of text for some task of the config (a sentence-pair task needs more: two separators)."""
    from ..models import load_tokenizer
    from ..tasks import get_task

    per_task = config.train.per_task or {}
    asked = {task: (f"train.per_task.{task}.max_length", per_task[task]["max_length"])
             if "max_length" in per_task.get(task, {}) else ("train.max_length", length) for task in config.tasks}
    if all(value > MOST_SPECIAL_TOKENS for _, value in asked.values()):
        return  # holds any family's special tokens and some text: no tokenizer to load
    tokenizer = load_tokenizer(config.model)
    for task, (name, value) in asked.items():
        pair = get_task(task).columns.text_b is not None
        needed = tokenizer.num_special_tokens_to_add(pair=pair) + 1
        if value < needed:
            raise UserError(f"{name}={value} cannot hold the special tokens of {config.model}'s tokenizer and any "
                            f"text of {task}{' (sentence pairs)' if pair else ''}; use at least {needed} (the paper "
                            f"used 128).")


MOST_SPECIAL_TOKENS = 4  # a sentence pair in RoBERTa's or MPNet's format: <s> a </s></s> b </s>


def _run(args: argparse.Namespace, config, stages, run_dir: Path) -> int:
    from .. import runs
    from ..pipeline import prepare_run, run_local
    from ..studies import execute

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

        from ..costs import stage_seconds
        from ..pipeline import skip_reason

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
        if state == "skipped":  # it did no work; the time since it was queued is the queue's, not its own
            tail = (skip_reason(run_dir, stage) or "no reason recorded").split(" (")[0]  # the verdict, not the test's name
        else:
            tail = f"{stage_seconds(run_dir, stage) or waited:.0f} s"
        tqdm.write(f"[{finished[0]}/{len(stages)}] {state:<7} {stage.id}  ({tail})")

    if args.executor == "ray":
        from ..pipeline import run_ray

        states = run_ray(stages, run_dir, config, execute=execute, address=args.address, on_stage=report,
                         states=before)
    else:
        states = run_local(stages, run_dir, config, execute=execute, progress=not args.no_progress, on_stage=report,
                           states=before)
    bar.close()
    import pandas as pd

    from ..results import format_summary, summary

    results = pd.read_parquet(run_dir / runs.RESULTS_PARQUET)
    table = summary(results)
    if not table.empty:
        print("\n" + format_summary(table) + "\n")
    for line in unlearnt_task_warnings(results) + skipped_warnings(stages, run_dir, states):
        print(f"warning: {line}")
    counts = {state: sum(1 for v in states.values() if v == state)
              for state in ("done", "skipped", "failed", "blocked")}
    print(f"done {counts['done']}, failed {counts['failed']}, blocked {counts['blocked']}, "
          f"skipped {counts['skipped']}; "
          f"results in {run_dir / runs.RESULTS_CSV}")
    print(_cost_line(stages, run_dir))
    return 0 if not counts["failed"] and not counts["blocked"] else 1


def unlearnt_task_warnings(results) -> list[str]:
    """The report's caution lines, for the end of a run: tasks whose fine-tuned model did not beat the
    majority class, or whose searches pruned (nearly) everything, so good/random/bad say nothing."""
    from ..report.tables import final_cells, main_rows, uninformative_tasks

    if results.empty:
        return []
    rows, metrics = main_rows(results)
    return uninformative_tasks(final_cells(rows), metrics)


def skipped_warnings(stages, run_dir: Path, states: dict[str, str]) -> list[str]:
    """One line per skipped stage that skipped the ones after it (a prune stage whose fine-tuned model
    was not learnt), with its reason; the stages downstream of it are counted, not listed."""
    from ..pipeline import skip_reason

    return [f"{stage.id} skipped ({after} stages after it): {skip_reason(run_dir, stage)}"
            for stage, after in _first_skips(stages, states)]


def _first_skips(stages, states: dict[str, str]) -> list[tuple]:
    """The skipped stages whose inputs were not skipped (where a skip began: a prune stage whose model was
    not learnt), each with the number of skipped stages downstream of it, which share its reason."""
    skipped = [s for s in stages if states.get(s.id) == "skipped"]
    skipped_ids = {s.id for s in skipped}
    upstream = {s.id: _upstream(s, stages) for s in skipped}
    return [(stage, sum(1 for s in skipped if stage.id in upstream[s.id]))
            for stage in skipped if not skipped_ids & set(stage.inputs.values())]


def _upstream(stage, stages) -> set[str]:
    by_id = {s.id: s for s in stages}
    seen, todo = set(), list(stage.inputs.values())
    while todo:
        sid = todo.pop()
        if sid not in seen and sid in by_id:
            seen.add(sid)
            todo += by_id[sid].inputs.values()
    return seen


def _time_left(stages, run_dir: Path, states: dict[str, str], cache: dict[str, float]) -> str:
    """The live view's estimate: "~1.2 h of stage time left, " ("" until a stage of some kind has run)."""
    from ..costs import estimate_left

    left = estimate_left(stages, run_dir, states, cache)
    return f"~{left['seconds'] / 3600:.1f} h of stage time left, " if left["estimated"] else ""


def _cost_line(stages, run_dir: Path) -> str:
    from ..costs import run_summary

    total = run_summary(stages, run_dir)
    line = f"stage time {total['seconds'] / 3600:.2f} h"
    if total["stages_with_energy"]:
        line += (f", energy {total['energy_kwh']:.4f} kWh, {total['emissions_kg'] * 1000:.1f} g CO2-eq "
                 f"(codecarbon, {total['stages_with_energy']} stages)")
    return line


def cmd_status(args: argparse.Namespace) -> int:
    from .. import runs
    from ..costs import estimate_left
    from ..pipeline import skip_reason, stage_states

    run_dir = Path(args.run_dir)
    config, stages = _stages_of(run_dir)
    states = stage_states(stages, run_dir)
    order = ("done", "running", "failed", "left", "skipped")
    print(f"{config.name}: {len(stages)} stages: " + ", ".join(
        f"{state} {sum(1 for v in states.values() if v == state)}" for state in order))
    print(_cost_line(stages, run_dir))
    left = estimate_left(stages, run_dir, states)
    if left["estimated"]:
        line = (f"left: about {left['seconds'] / 3600:.2f} h of stage time for {left['estimated']} stages (each the mean "
                "time of the finished stages of its kind and task, else of the task's fine-tuning for re-fine-tunings "
                "and baselines, else of its kind on other tasks; divide by the stages that run at once)")
        if left["unknown"]:
            line += f"; {left['unknown']} stages of kinds not run yet not counted"
        print(line)
        print(f"  scaled by each task's FLOPs instead: bertlottery run {run_dir / runs.CONFIG_FILE} --plan --run-dir {run_dir}")
    elif left["unknown"]:
        print(f"left: no estimate yet for {left['unknown']} stages (none of their kind has finished)")
    # The stages after a first skip share its reason: they are counted on its line, and listed with --all.
    first_skips = {stage.id: after for stage, after in _first_skips(stages, states)}
    for stage in stages:
        state = states[stage.id]
        if state not in ("done", "skipped") or stage.id in first_skips or args.all:
            line = f"  {state:<8} {stage.id}"
            if state == "failed":
                error = runs.read_json(run_dir / runs.FAILED_DIR / f"{stage.file_id}.json")["error"]
                line += f"  ({error.splitlines()[0][:120]})"
            elif state == "skipped":
                after = first_skips.get(stage.id) if not args.all else None
                line += f"  ({f'and {after} stages after it: ' if after else ''}{skip_reason(run_dir, stage)})"
            print(line)
    n_skipped = sum(1 for v in states.values() if v == "skipped")
    if n_skipped and not args.all:
        print(f"  ({n_skipped} stages skipped in all (a stage that reads several seeds' masks is after each of "
              "them); --all lists each)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run a whole study from a config; resumes, skipping finished stages")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. tasks=[RTE] train.epochs=1")
    p.add_argument("--run-dir", help="run directory (default runs/<config name>)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: one stage at a time in this process (default); ray: independent stages in parallel")
    p.add_argument("--address", help="ray: an existing cluster (e.g. auto or ray://host:10001); default: start one")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plan", action="store_true",
                   help="print the stages per kind, the data per task, FLOPs and estimated stage time; run nothing")
    p.add_argument("--no-calibrate", action="store_true",
                   help="--plan: skip the few seconds of timing the model (time only from --run-dir's finished stages)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="--plan's output (default %(default)s)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="what is done, running, failed and left in a study run directory")
    p.add_argument("run_dir")
    p.add_argument("--all", action="store_true", help="list finished stages too")
    p.set_defaults(func=cmd_status)
