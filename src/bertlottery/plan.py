"""What a study will cost, before it runs (``bertlottery run CONFIG --plan``).

For every stage of the graph, the work it does is counted in *passes over tokens*: training (forward,
backward and an optimizer step), scoring (forward and backward to the head/MLP gates, weights frozen)
and evaluation (forward only). From those come

- FLOPs, from the model's real shapes (`bertlottery.models.layout_from_config`, no weights loaded):
  a forward pass costs 2 x `bertlottery.export.body_macs_per_token` per token (the encoder layers'
  matrix products and attention; embeddings, LayerNorms and the classifier are left out; under
  ``train.last_layer: cls`` a classification pass leaves out the last layer's output projection and MLP
  at every position but the first, as `bertlottery.lastlayer` does), a training
  pass 3x that (the backward pass computes gradients of activations and of weights, each about a
  forward's cost: the usual 6 x parameters x tokens), a scoring pass 2x (gradients of activations only);
  continued pre-training adds the MLM head (a d x d transform and the projection onto the vocabulary),
  and training that head alone on a frozen encoder costs a forward pass plus the head's backward;
- seconds on this machine: each pass's steps and FLOPs on a line (seconds per step + seconds per FLOP)
  fitted to steps of the config's model with random weights timed at the study's smallest and longest
  shapes (`calibrate`; on one thread its CPU time, so that a busy machine does not inflate it; MLM
  work is timed on the model with its MLM head, at its own shapes), or the
  recorded times of finished stages of the same kind in a run directory (`bertlottery.costs`);
- hours at the bf16 dense peak of a datacenter GPU: FLOPs / peak, a physical lower bound.

Searches stop when the pruned model falls below the threshold, which is not known before they run: a
search is counted between its least work (the first step is rejected) and its most (every step is
accepted until nothing is left to prune), and the FLOPs are the most. Formulas: `docs/algorithms.md`
(section "The cost of a study").

Example:
    >>> config = load("configs/quickstart.yaml")                                    # doctest: +SKIP
    >>> plan = study_plan(config, expand(config), calibrate=False)                   # doctest: +SKIP
    >>> print(format_plan(plan))                                                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

Stage = Any  # a `bertlottery.pipeline.Stage`
ExperimentConfig = Any  # a `bertlottery.config.ExperimentConfig`

__all__ = ["GLUE_SIZES", "PEAK_FLOPS", "PASS_FACTORS", "TaskSize", "Pass", "StageWork", "Calibration",
           "model_dims", "task_sizes", "stage_work", "structured_steps_bound", "magnitude_steps_bound",
           "work_flops", "pass_flops_per_token", "calibrate", "study_plan", "format_plan"]

# Examples per split of the GLUE tasks as the hub (nyu-mll/glue) and the GLUE download hold them: what a
# plan counts where the config reads GLUE from the hub and the TSV files are not on this machine.
GLUE_SIZES = {
    "CoLA": {"train": 8551, "dev": 1043},
    "SST-2": {"train": 67349, "dev": 872},
    "MRPC": {"train": 3668, "dev": 408},
    "STS-B": {"train": 5749, "dev": 1500},
    "QQP": {"train": 363846, "dev": 40430},
    "MNLI": {"train": 392702, "dev": 9815, "dev_mismatched": 9832},
    "QNLI": {"train": 104743, "dev": 5463},
    "RTE": {"train": 2490, "dev": 277},
    "WNLI": {"train": 635, "dev": 71},
}

# Dense bf16 tensor-core peak without sparsity, FLOP/s (NVIDIA's data sheets: H100 SXM 989.4 TFLOPS;
# the H200 has the same compute with more memory).
PEAK_FLOPS = {"H100 SXM": 989.4e12, "H200": 989.4e12}

# FLOPs of one token in a pass, in forward passes: see the module's docstring.
PASS_FACTORS = {"train": 3.0, "score": 2.0, "eval": 1.0}

# Tokens per example sampled to measure a task's mean length (a seeded sample: enough for a mean).
_LENGTH_SAMPLE = 2000
_NO_WORK = ("subnetworks", "super", "attention-analysis", "gordon-select", "gordon-oneshot", "tune")  # read and write masks or tables


@dataclass(frozen=True)
class TaskSize:
    """A task's data as the plan counts it: examples per split, and mean tokens per example (after
    truncation to the study's max_length; batches are padded to their longest example and grouped by
    length, so a batch holds about the mean)."""

    task: str
    examples: dict[str, int]  # split -> examples in it
    train_tokens: float  # mean tokens of a training example
    eval_tokens: float  # mean tokens of a dev example
    source: str  # "files" (the TSVs were read) or "GLUE sizes" (`GLUE_SIZES`; lengths at max_length)


@dataclass(frozen=True)
class Pass:
    """``tokens`` tokens of one kind of pass (train, score, eval; head: training an MLM head on a frozen
    encoder) at batch ``batch`` and ``length`` tokens per example; ``first_position``: the last layer's
    attention output projection and MLP at the first position only (`bertlottery.lastlayer`)."""

    kind: str
    tokens: float
    batch: int
    length: int
    first_position: bool = False


@dataclass
class StageWork:
    """What one stage computes: its passes at most, and at least (they differ only for searches)."""

    most: list[Pass] = field(default_factory=list)
    least: list[Pass] = field(default_factory=list)
    loads_model: bool = False
    mlm: bool = False  # the passes include an MLM head over the vocabulary (continued pre-training)


# ---- the model and the data ------------------------------------------------------------------------------

def model_dims(model: str) -> tuple[dict[str, Any], str]:
    """The ``config.json`` values of ``model`` and where they came from, without the network or weights:
    a local folder or alias, the Hugging Face cache, or for ``bert-base-uncased``/``bert-base-cased``
    transformers' `BertConfig` defaults (which are bert-base's dimensions).

    Raises:
        UserError: a hub model that is not cached (its dimensions are unknown offline).
    """
    import json

    from .models import MODEL_ALIASES, resolve_model_path

    name = str(model)
    if name in MODEL_ALIASES or Path(name).expanduser().is_dir():
        path = Path(resolve_model_path(name)) / "config.json"
        return json.loads(path.read_text()), f"{name}'s config.json" if name in MODEL_ALIASES else str(path)
    from transformers import AutoConfig, BertConfig

    try:
        return AutoConfig.from_pretrained(name, local_files_only=True).to_dict(), "the Hugging Face cache"
    except (OSError, ValueError):
        pass
    if name.removeprefix("google-bert/") in ("bert-base-uncased", "bert-base-cased"):
        values = BertConfig().to_dict()
        if name.endswith("-cased") and not name.endswith("uncased"):
            values["vocab_size"] = 28996
        return values, "transformers' BertConfig defaults (bert-base; not downloaded)"
    raise UserError(f"The dimensions of model '{name}' are not known offline (not a local folder, not in the "
                    "Hugging Face cache); download it once, or plan with a local model folder.")


def _examples(task, split: str, glue_dir: Path) -> list:
    from .data import read_glue_split

    return read_glue_split(task, glue_dir, split)


def _mean_tokens(examples: list, tokenizer, max_length: int) -> float:
    """Mean tokens per example (truncated as the data module does) over a seeded sample."""
    import random

    if not examples:
        return 0.0
    sample = examples if len(examples) <= _LENGTH_SAMPLE else random.Random(0).sample(examples, _LENGTH_SAMPLE)
    pairs = [e.text_b is not None for e in sample]
    encoded = tokenizer([e.text_a for e in sample], [e.text_b for e in sample] if all(pairs) else None,
                        truncation="longest_first" if all(pairs) else True, max_length=max_length)
    return sum(len(ids) for ids in encoded["input_ids"]) / len(sample)


def _tokenizer(model: str):
    """The model's tokenizer where it loads without the network, else None."""
    from transformers import AutoTokenizer

    from .models import MODEL_ALIASES, resolve_model_path

    try:
        name = resolve_model_path(model) if model in MODEL_ALIASES or Path(model).expanduser().is_dir() else model
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, UserError):
        return None


def task_sizes(config: ExperimentConfig, tasks: list[str], max_length: dict[str, int]) -> dict[str, TaskSize]:
    """Each task's `TaskSize`: its TSV files counted and a sample tokenised where ``config.glue_dir`` holds
    them and the tokenizer loads offline; otherwise `GLUE_SIZES` at ``max_length`` tokens per example
    (an upper bound on the length). Reads files only; writes nothing (no tokenisation cache)."""
    from .tasks import get_task

    glue = Path(config.glue_dir) if config.glue_dir else None
    tokenizer = None
    sizes = {}
    for name in tasks:
        task = get_task(name)
        length = max_length[task.name]
        splits = ("train", *task.eval_splits)
        if glue is not None and all((glue / task.glue_dir / task.splits[s]).is_file() for s in splits):
            examples = {s: _examples(task, s, glue) for s in splits}
            tokenizer = tokenizer or _tokenizer(config.model)
            if tokenizer is not None:
                train_tokens = _mean_tokens(examples["train"], tokenizer, length)
                eval_tokens = _mean_tokens([e for s in task.eval_splits for e in examples[s]], tokenizer, length)
            else:
                train_tokens = eval_tokens = float(length)
            sizes[task.name] = TaskSize(task.name, {s: len(e) for s, e in examples.items()}, train_tokens,
                                        eval_tokens, "files")
        elif task.name in GLUE_SIZES:
            sizes[task.name] = TaskSize(task.name, dict(GLUE_SIZES[task.name]), float(length), float(length),
                                        "GLUE sizes")
        else:
            raise UserError(f"No data for {task.name}: {glue} has no {task.glue_dir}/ files; set glue_dir.")
    return sizes


# ---- the work of a stage ---------------------------------------------------------------------------------

def structured_steps_bound(num_layers: int, num_heads: int, mode: str = "heads+mlps",
                           head_step_fraction: float = 0.1) -> int:
    """The most steps an s-pruning search can take: every step accepted until nothing is left to prune
    (the phases of `bertlottery.pruning.structured_search`: heads and an MLP together, heads at half the
    step, then MLPs one at a time)."""
    head_step = max(1, int(head_step_fraction * num_layers * num_heads))
    phases = {"heads+mlps": [(head_step, 1), (max(1, head_step // 2), 0), (0, 1)],
              "heads": [(head_step, 0)], "mlps": [(0, 1)]}[mode]
    heads, mlps, steps = num_layers * num_heads, num_layers, 0
    for n_heads, n_mlps in phases:
        while True:
            out_heads, out_mlps = min(n_heads, heads), min(n_mlps, mlps)
            if (not out_heads and not out_mlps) or (n_heads and not out_heads) or (n_mlps and not out_mlps):
                break
            heads, mlps, steps = heads - out_heads, mlps - out_mlps, steps + 1
    return steps


def magnitude_steps_bound(weights: int, step_fraction: float = 0.1, max_steps: int = 100) -> int:
    """The most steps an m-pruning search can take: each removes ``step_fraction`` of the remaining
    weights (rounded) until none goes or ``max_steps`` (`bertlottery.pruning.magnitude_search`)."""
    steps = 0
    while steps < max_steps and round(step_fraction * weights) > 0:
        weights -= round(step_fraction * weights)
        steps += 1
    return steps


def _train_examples(size: TaskSize, train: dict[str, Any]) -> int:
    """Examples a run trains on: the capped sample, less the held-out slice."""
    n = size.examples["train"]
    if train.get("max_train_examples") is not None:
        n = min(n, train["max_train_examples"])
    return n - int(round(n * (train.get("holdout_fraction") or 0.0)))


def _eval_passes(size: TaskSize, length: int, passes: int, *, main_only: bool = False, task=None,
                 cut: bool = False) -> list[Pass]:
    from .steps.taskdata import EVAL_BATCH_SIZE

    splits = task.eval_splits[:1] if main_only else task.eval_splits
    examples = sum(size.examples[s] for s in splits)
    return [Pass("eval", passes * examples * size.eval_tokens, EVAL_BATCH_SIZE, length, cut)] if passes else []


def stage_work(stage: Stage, config: ExperimentConfig, sizes: dict[str, TaskSize], layout, *,
               reads_first: bool = False) -> StageWork:
    """The passes of one stage (see `StageWork`), from its kind and settings. ``reads_first``: the
    model's sequence classifier reads its last layer at the first position only
    (`bertlottery.lastlayer.classifier_reads_first_position`), so that under ``train.last_layer: cls``
    the stage's classification passes (training, evaluation, scoring, the Fisher pass) cut that layer;
    attention maps, the Fisher search's tuning and MLM work never do."""
    from .tasks import get_task

    kind, s = stage.kind, stage.settings
    if kind in _NO_WORK or (kind == "baseline" and stage.keys.get("method") == "majority"):
        return StageWork()
    if kind.startswith("gordon-") and stage.task == "pretrain":
        return _pretraining_work(stage, config)
    task = get_task(stage.task)
    size = sizes[task.name]
    train = config.train.for_task(task.name, stage.keys.get("seed") or config.seeds[0])
    length = int(round(size.eval_tokens))
    cut = reads_first and (s["train"] if kind == "gordon-finetune" else train).get("last_layer") == "cls"
    if kind in ("finetune", "baseline", "retrain", "gordon-finetune"):
        if kind == "gordon-finetune":
            train = s["train"]
        epochs = stage.keys["epochs"] if kind in ("finetune", "baseline", "retrain") else train["epochs"]
        if epochs is None:  # a tuned task: the choice is made when the study runs; bound it by the grid's most
            grid = config.tune.grid_for(task.name)
            epochs = max(grid["epochs"])
            train = {**train, "batch_size": min(grid.get("batch_sizes") or [train["batch_size"]])}
        tokens = _train_examples(size, train) * epochs * size.train_tokens
        # re-fine-tuning evaluates dev after every epoch, the last of which is its result (`steps.retrain`)
        evals = epochs if kind == "retrain" else 1
        work = [Pass("train", tokens, train["batch_size"], int(round(size.train_tokens)), cut),
                *_eval_passes(size, length, evals, task=task, cut=cut)]
        return StageWork(work, work, loads_model=True)
    if kind == "tune-candidate":  # trains on the pool less the held-out slice; scores and losses on the slice
        pool = _train_examples(size, s["train"])
        held_out = pool * s["tune_fraction"]
        work = [Pass("train", (pool - held_out) * s["train"]["epochs"] * size.train_tokens, s["train"]["batch_size"],
                     int(round(size.train_tokens)), cut),
                Pass("eval", 2 * held_out * size.train_tokens, s["train"]["batch_size"], int(round(size.train_tokens)), cut)]
        return StageWork(work, work, loads_model=True)
    if kind == "evaluate":
        work = _eval_passes(size, length, 1, task=task, cut=cut)
        return StageWork(work, work, loads_model=True)
    if kind == "ablation":  # the full model, then each unit gated off alone, on the main dev split
        units = sum(layout.num_layers * (layout.num_heads if unit == "heads" else 1) for unit in s["units"])
        work = _eval_passes(size, length, 1 + units, main_only=True, task=task, cut=cut)
        return StageWork(work, work, loads_model=True)
    if kind == "attention-maps":
        examples = min(s["examples"], size.examples[task.eval_splits[0]])
        work = [Pass("eval", examples * min(size.eval_tokens, s["max_length"]), s["batch_size"], length)]
        return StageWork(work, work, loads_model=True)
    if kind == "prune":
        # the full model and the good mask on every eval split, and one evaluation of the watched split
        # per step; s-pruning scores the current mask before its first step and after each accepted one
        fixed = _eval_passes(size, length, 2, task=task, cut=cut)
        if stage.keys["method"] == "structured":
            steps = structured_steps_bound(layout.num_layers, layout.num_heads, s["mode"])
            scoring = size.examples["dev"] if s["scoring_split"] == "dev" else round(
                _train_examples(size, {**train, "holdout_fraction": 0}) * train["holdout_fraction"])
            score_tokens = scoring * (size.eval_tokens if s["scoring_split"] == "dev" else size.train_tokens)

            def search(n: int, accepted: int) -> list[Pass]:
                return [*fixed, *_eval_passes(size, length, n, main_only=True, task=task, cut=cut),
                        Pass("score", (accepted + 1) * score_tokens, s["batch_size"], length, cut)]
            return StageWork(search(steps, steps), search(1, 0), loads_model=True)
        if stage.keys["method"] == "fisher":
            return _fisher_work(s, size, train, length, layout, fixed, task, cut)
        from .compat import Compat, get_compat

        compat = get_compat(None if s["compat"] == "none" else s["compat"])
        weights = layout.num_layers * (layout.num_heads * layout.params_per_head + layout.params_per_mlp)
        steps = magnitude_steps_bound(weights, s["step_fraction"],
                                      Compat.MAGNITUDE_MAX_STEPS if compat.magnitude_mask_before_last_step else 100)
        return StageWork([*fixed, *_eval_passes(size, length, steps, main_only=True, task=task, cut=cut)],
                         [*fixed, *_eval_passes(size, length, 1, main_only=True, task=task, cut=cut)], loads_model=True)
    raise ValueError(f"no work model for stage kind {kind}")


def _fisher_work(s: dict, size: TaskSize, train: dict, length: int, layout, fixed: list[Pass], task,
                 cut: bool) -> StageWork:
    """The Fisher search (`bertlottery.fisher`): one forward and backward pass over its sample for the
    gates' gradients; the least-squares tuning runs the teacher once and the student up to each layer's
    two sub-layers (at most 2 x layers forward passes over its calibration sample, counted as such: an
    upper bound); then the full model, the binary and the tuned mask on dev."""
    examples = min(s["examples"], _train_examples(size, train))
    tuning = min(s["tune_examples"] or examples, examples) if s["tune"] else 0
    tokens = int(round(size.train_tokens))
    work = [*fixed, *_eval_passes(size, length, 1, task=task, cut=cut),
            Pass("score", examples * size.train_tokens, s["batch_size"], tokens, cut),
            *([Pass("eval", (1 + 2 * layout.num_layers) * tuning * size.train_tokens, s["batch_size"], tokens)]
              if tuning else [])]
    return StageWork(work, work, loads_model=True)


def _pretraining_work(stage: Stage, config: ExperimentConfig) -> StageWork:
    """Continued MLM pre-training (Gordon et al.): steps x batch x max_length tokens, and its dev loss."""
    g = config.gordon
    length = g.pretrain.max_length
    if stage.kind == "gordon-similarity":  # the reference and the pruned model's hidden states, no MLM head
        work = [Pass("eval", 2 * stage.settings["sequences"] * length, 16, length)]
        return StageWork(work, work, loads_model=True)
    elif stage.kind == "gordon-head":  # the encoder frozen: a forward pass, and the head's backward
        head = stage.settings["head"]
        work = [Pass("head", head["steps"] * head["batch_size"] * length, head["batch_size"], length)]
    else:
        p = stage.settings["pretrain"]
        evals = 2 + (p["steps"] // p["eval_every"] if p.get("eval_every") else 0)  # at the start, the end, between
        work = [Pass("train", p["steps"] * p["batch_size"] * length, p["batch_size"], length),
                Pass("eval", evals * g.corpus.dev_sequences * length, p["batch_size"], length)]
    return StageWork(work, work, loads_model=True, mlm=True)


# ---- FLOPs and seconds -----------------------------------------------------------------------------------

def _forward_flops_per_token(layout, length: int, vocab: int | None, first_position: bool = False) -> float:
    from .export import body_macs_per_token

    macs = body_macs_per_token(layout, max(1, length))
    if first_position:  # the last layer's attention output projection and MLP at 1 of ``length`` positions
        macs -= _first_position_saving(layout, max(1, length))
    if vocab:  # the MLM head: a d x d transform and the projection onto the vocabulary
        macs += layout.hidden_size * layout.hidden_size + layout.hidden_size * vocab
    return 2.0 * macs


def _first_position_saving(layout, length: int) -> float:
    """MACs per token that ``last_layer: cls`` leaves out: the last layer's attention output projection
    (d x heads x dh) and MLP at every position but the first."""
    return (layout.hidden_size * layout.num_heads * layout.head_dim + layout.macs_per_mlp) * (length - 1) / length


def _head_flops_per_token(layout, vocab: int) -> float:
    return 2.0 * (layout.hidden_size * layout.hidden_size + layout.hidden_size * vocab)


def pass_flops_per_token(p: Pass, layout, vocab: int | None = None) -> float:
    """FLOPs of one token of pass ``p`` (``vocab``: with an MLM head over that many tokens)."""
    forward = _forward_flops_per_token(layout, p.length, vocab, p.first_position)
    if p.kind == "head":  # weights and activations of the head only get gradients
        return forward + 2.0 * _head_flops_per_token(layout, vocab or 0)
    return PASS_FACTORS[p.kind] * forward


def work_flops(passes: list[Pass], layout, vocab: int | None = None) -> float:
    """FLOPs of a stage's passes (``vocab``: with an MLM head over that many tokens)."""
    return sum(p.tokens * pass_flops_per_token(p, layout, vocab) for p in passes)


def _line_key(kind: str, mlm: bool) -> str:
    """The calibration line a pass is timed by: training, a head on a frozen encoder, or forward passes
    (evaluation and scoring: the line is in FLOPs, which count scoring's backward), with or without an
    MLM head."""
    base = kind if kind in ("train", "head") else "eval"
    return f"mlm-{base}" if mlm else base


@dataclass
class Calibration:
    """Seconds per step of a training pass and of an evaluation pass as a line in the step's FLOPs,
    ``seconds = per_step + per_flop x FLOPs``, fitted to steps timed at the smallest and the largest
    shape a study needs (the per-step part is what makes small batches cost more per token).

    ``seconds_per_step``: kind (``train``, ``eval``) -> ``(per_step, per_flop)``. ``busy``: wall time
    over CPU time while timing on one thread (1 on an idle core); the line is fitted to CPU time there,
    so it estimates a stage on an idle core, and ``busy`` says how much slower the machine is now.
    """

    seconds_per_step: dict[str, tuple[float, float]]
    timed: list[dict[str, Any]]  # every timed shape: kind, batch, length, seconds per step
    setup_seconds: float  # building the model: what a stage pays before its first batch
    threads: int
    measured_seconds: float
    busy: float
    precision: str = "fp32"  # the autocast the steps were timed under (the config's, as this CPU resolves it)

    def seconds(self, p: Pass, flops_per_token: float, *, mlm: bool = False) -> float:
        """Seconds of a pass whose tokens cost ``flops_per_token`` each (`pass_flops_per_token`)."""
        per_step, per_flop = self.seconds_per_step[_line_key(p.kind, mlm)]
        steps = p.tokens / max(1, p.batch * p.length)
        return steps * per_step + p.tokens * flops_per_token * per_flop


# the largest step timed: its batch is cut so that a step holds at most this many tokens (a step of
# 32 x 128 takes seconds on one core; the line in FLOPs carries it over to the full batch). MLM steps are
# timed at their own shape (16 x 128 in the shipped configs): the vocabulary's projection is one large
# matrix product, which runs several times faster per FLOP than the encoder's small ones, so a line
# through a smaller step would overestimate it (measured: 2-4x on Gordon's continued pre-training).
_MOST_TIMED_TOKENS = {"": 512, "mlm-": 4096}


def calibrate(dims: dict[str, Any], shapes: set[tuple[str, int, int]], *, threads: int,
              seconds_each: float = 0.3, precision: str = "fp32") -> Calibration:
    """Time the steps of the config's architecture with random weights for each line a study needs
    (``shapes``: ``(line, batch, length)``, the lines of `_line_key`: ``train``, ``eval``, and with an
    MLM head ``mlm-train``, ``mlm-eval``, ``mlm-head``), at its smallest and its longest shape, for
    about ``seconds_each`` each (at least three steps, their median) after a warm-up step; fit
    `Calibration`. A training step is forward, backward, clipping and the stages' AdamW (fused where
    torch has it); ``mlm-head`` trains the MLM head with the encoder frozen.
    ``precision``: the resolved precision the stages will run in (`bertlottery.precision`), timed
    under the same autocast."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification

    from .models import attention_implementation, layout_from_config
    from .precision import autocast, gradient_attention
    from .training import build_adamw, decay_groups

    started = time.perf_counter()
    values = dict(dims)
    model_type = str(values.pop("model_type", "bert"))
    layout = layout_from_config(dims)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    wall_total = cpu_total = 0.0
    setup = 0.0
    try:
        lines, timed = {}, []
        for family in ("", "mlm-"):
            keys = sorted({k for k, _, _ in shapes if k.startswith("mlm-") == (family == "mlm-")})
            if not keys:
                continue
            torch.manual_seed(0)
            built = time.perf_counter()
            config = AutoConfig.for_model(model_type, **{**values, "num_labels": 2})
            auto = AutoModelForMaskedLM if family else AutoModelForSequenceClassification
            model = auto.from_config(config, attn_implementation=attention_implementation(model_type))
            setup = setup or time.perf_counter() - built  # what a stage pays before its first batch
            vocab = getattr(model.config, "vocab_size", 1000)
            encoder = getattr(model, model.base_model_prefix)
            for key in keys:
                kind = key[len(family):]
                # the kernel the stages' passes use: with a backward, `gradient_attention`'s
                attention = attention_implementation(model_type)
                model.set_attn_implementation(attention if kind == "eval" else gradient_attention(attention, precision, "cpu"))
                for param in encoder.parameters():  # a head trained alone: no gradients for the encoder
                    param.requires_grad_(kind != "head")
                # the optimizer the stages build (`training.build_adamw`: fused where torch has it, about
                # 2x faster than the default on CPU, which is most of a short step's time)
                trainable = {n: q.requires_grad for n, q in model.named_parameters()}
                optimizer = None if kind == "eval" else build_adamw(decay_groups(model, 0.01, trainable.get), lr=1e-5)
                needed = sorted({(b, n) for k, b, n in shapes if k == key}, key=lambda bn: (bn[0] * bn[1], bn))
                longest = max(n for _, n in needed)
                most = max(1, min(max(b for b, _ in needed), _MOST_TIMED_TOKENS[family] // longest))
                measured = []
                for batch, length in sorted({needed[0], (most, longest)}):
                    ids = torch.randint(5, vocab, (batch, max(2, length)))
                    labels = ids.clone() if family else torch.zeros(batch, dtype=torch.long)

                    def step() -> None:
                        if kind == "eval":
                            model.eval()
                            with torch.inference_mode(), autocast(precision, "cpu"):
                                model(input_ids=ids)
                            return
                        model.train()
                        with autocast(precision, "cpu"):
                            loss = model(input_ids=ids, labels=labels).loss
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as `training.optimizer_step`
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)

                    step()  # warm-up: allocations, kernel choice
                    steps, started_shape = [], time.perf_counter()
                    while len(steps) < 3 or time.perf_counter() - started_shape < seconds_each:
                        wall, cpu = time.perf_counter(), time.process_time()
                        step()
                        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                        wall_total, cpu_total = wall_total + wall, cpu_total + cpu
                        # on one thread the process's CPU time is the step's work without the waits of a busy
                        # machine
                        steps.append(min(wall, cpu) if threads == 1 else wall)
                    per_step = statistics.median(steps)  # a step slowed by another process's burst is an outlier
                    shape = Pass(kind, batch * length, batch, length)
                    flops = pass_flops_per_token(shape, layout, vocab if family else None) * batch * length
                    measured.append((flops, per_step))
                    timed.append({"kind": key, "batch": batch, "length": length, "seconds_per_step": per_step})
                lines[key] = _line(measured)
    finally:
        torch.set_num_threads(before)
    busy = wall_total / cpu_total if threads == 1 and cpu_total > 0 else 1.0
    return Calibration(lines, timed, setup, threads, time.perf_counter() - started, busy, precision)


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """``(per_step, per_flop)`` through the smallest and the largest of ``(flops, seconds)`` points, in
    whatever order they come (the calibration times its shapes in batch order: CoLA's 16 x 11 tokens
    after 7 x 67); through the origin for one point (or where the two give a negative per-step time,
    which timing noise can)."""
    ordered = sorted(points)
    (f0, s0), (f1, s1) = ordered[0], ordered[-1]
    if f1 > f0:
        per_flop = (s1 - s0) / (f1 - f0)
        per_step = s0 - per_flop * f0
        if per_step >= 0 and per_flop > 0:
            return per_step, per_flop
    return 0.0, max(s for _, s in points) / max(f for f, _ in points)


def _shapes(works: list[StageWork]) -> set[tuple[str, int, int]]:
    return {(_line_key(p.kind, work.mlm), p.batch, p.length) for work in works for p in work.most}


def study_plan(config: ExperimentConfig, stages: list[Stage], *, run_dir: Path | None = None,
               calibrate_here: bool = True, threads: int | None = None, seconds_each: float = 0.3) -> dict[str, Any]:
    """The plan of a study: stage counts per kind, the data per task, FLOPs and estimated seconds.

    ``run_dir``: a run directory of this config (or an earlier one) whose finished stages' recorded
    times estimate the stages of their kind (`bertlottery.costs.estimate_stages`), those of other
    tasks scaled by FLOPs (`_scaled_by_flops`); stages of kinds it has not run are estimated from a
    calibration when ``calibrate_here``. Reads, never writes.
    """
    from .costs import estimate_stages, finished_stage_times
    from .lastlayer import classifier_reads_first_position
    from .models import layout_from_config

    import torch

    dims, dims_from = model_dims(config.model)
    layout = layout_from_config(dims)
    vocab = int(dims.get("vocab_size") or 0)
    tasks = list(dict.fromkeys(s.task for s in stages if s.task != "pretrain"))
    max_length = {t: config.train.for_task(t, config.seeds[0])["max_length"] for t in tasks}
    sizes = task_sizes(config, tasks, max_length)
    reads_first = classifier_reads_first_position(dims)
    works = {s.id: stage_work(s, config, sizes, layout, reads_first=reads_first) for s in stages}

    # stages a run directory skipped (their model learnt nothing: `bertlottery.learnt`) will not run
    if run_dir is not None:
        from .pipeline import stage_states

        skipped = {i for i, state in stage_states(stages, run_dir).items() if state == "skipped"}
    else:
        skipped = set()
    kinds = Counter(s.kind for s in stages)
    flops: Counter = Counter()
    for stage in stages:
        work = works[stage.id]
        if stage.id not in skipped:
            flops[stage.kind] += work_flops(work.most, layout, vocab if work.mlm else None)

    recorded = finished_stage_times(stages, run_dir) if run_dir is not None else {}
    from_run = estimate_stages(stages, recorded) if recorded else {}
    from_run.update(_scaled_by_flops(stages, works, recorded, layout, vocab))
    calibration = None
    needs_calibration = [s for s in stages if from_run.get(s.id) is None and works[s.id].most and s.id not in skipped]
    if calibrate_here and needs_calibration:
        threads = threads or torch.get_num_threads()
        from .precision import resolve_precision

        calibration = calibrate(dims, _shapes([works[s.id] for s in needs_calibration]), threads=threads,
                                seconds_each=seconds_each, precision=resolve_precision(config.train.precision, "cpu"))
    seconds = {kind: {"least": 0.0, "most": 0.0, "from_run": 0, "calibrated": 0, "unknown": 0, "skipped": 0}
               for kind in kinds}
    for stage in stages:
        row, work = seconds[stage.kind], works[stage.id]
        if stage.id in skipped:
            row["skipped"] += 1
        elif from_run.get(stage.id) is not None:
            row["least"] += from_run[stage.id]
            row["most"] += from_run[stage.id]
            row["from_run"] += 1
        elif not work.most:
            continue  # masks and tables: well under a second
        elif calibration is not None:
            setup = calibration.setup_seconds if work.loads_model else 0.0
            per_token = {p: pass_flops_per_token(p, layout, vocab if work.mlm else None)
                         for p in {*work.least, *work.most}}
            row["least"] += setup + sum(calibration.seconds(p, per_token[p], mlm=work.mlm) for p in work.least)
            row["most"] += setup + sum(calibration.seconds(p, per_token[p], mlm=work.mlm) for p in work.most)
            row["calibrated"] += 1
        else:
            row["unknown"] += 1

    task_rows = []
    for task in tasks:
        size = sizes[task]
        runs_of = [s for s in stages if s.task == task and s.kind in ("finetune", "gordon-finetune")]
        epochs = sorted({(s.keys["epochs"] if s.kind == "finetune" else s.settings["train"]["epochs"]) for s in runs_of}
                        - {None})
        if config.tune is not None and any(s.kind == "finetune" and s.keys["epochs"] is None for s in runs_of):
            epochs = sorted(set(epochs) | set(config.tune.grid_for(task)["epochs"]))  # one of these, chosen by tune
        train = config.train.for_task(task, config.seeds[0])
        task_rows.append({"task": task, "train_examples": size.examples["train"],
                          "trained_on": _train_examples(size, train), "epochs": epochs,
                          "eval_examples": sum(v for k, v in size.examples.items() if k != "train"),
                          "train_tokens_per_example": round(size.train_tokens, 1),
                          "eval_tokens_per_example": round(size.eval_tokens, 1), "source": size.source})
    total_flops = float(sum(flops.values()))
    return {
        "config": config.name,
        "model": config.model,
        "dimensions_from": dims_from,
        "layout": {k: v for k, v in asdict(layout).items() if v is not None},
        "stages": dict(kinds),
        "total_stages": len(stages),
        "tasks": task_rows,
        "flops": {"by_kind": {k: float(v) for k, v in flops.items()}, "total": total_flops,
                  "searches_at_most": True},
        "seconds": {"by_kind": seconds, "least": sum(r["least"] for r in seconds.values()),
                    "most": sum(r["most"] for r in seconds.values()),
                    "unknown_stages": sum(r["unknown"] for r in seconds.values())},
        "calibration": None if calibration is None else {
            "threads": calibration.threads, "setup_seconds": calibration.setup_seconds,
            "measured_seconds": calibration.measured_seconds, "busy": calibration.busy,
            "precision": calibration.precision,
            "seconds_per_step": {kind: {"per_step": a, "per_flop": b}
                                 for kind, (a, b) in calibration.seconds_per_step.items()},
            "timed": calibration.timed},
        "physical_subnetworks": sum(
            1 for s in stages if s.kind in ("retrain", "baseline") and from_run.get(s.id) is None and s.id not in skipped
            and s.settings.get("subnetwork_training", s.settings.get("train", {}).get("subnetwork_training")) == "physical"),
        "run_dir": str(run_dir) if run_dir is not None else None,
        "gpu_peak_hours": {gpu: total_flops / peak / 3600 for gpu, peak in PEAK_FLOPS.items()},
    }


# ---- printing --------------------------------------------------------------------------------------------

def _kind_of_work(stage: Stage) -> tuple[str, str | None, str | None]:
    """Stages whose seconds per FLOP are alike: the same kind (re-fine-tuning and baselines train as
    fine-tuning does), method (an s-pruned subnetwork trains physically smaller, an m-pruned one as the
    full model under its mask) and mode (a long re-fine-tuning evaluates after every epoch too)."""
    return stage.kind, stage.keys.get("method"), stage.keys.get("mode")


def _scaled_by_flops(stages: list[Stage], works: dict[str, StageWork], recorded: dict[str, tuple[str, str, float]],
                     layout, vocab: int) -> dict[str, float]:
    """Estimates of unfinished stages from finished ones of another task, scaled by FLOPs: a finished
    SST-2 re-fine-tuning says little of MRPC's, whose examples are four times longer, but its seconds
    per FLOP carry over. For each unfinished stage with no finished stage of its own task and kind of
    work (`_kind_of_work`): the seconds per FLOP of the finished stages of its kind of work (else of its
    kind) times its FLOPs (a search's at most, as for the finished ones)."""
    flops = {s.id: work_flops(works[s.id].most, layout, vocab if works[s.id].mlm else None) for s in stages}
    finished = [s for s in stages if s.id in recorded and flops[s.id] > 0]
    rates: dict[tuple, list[float]] = {}
    for stage in finished:
        for key in (_kind_of_work(stage), (stage.kind,)):
            seconds, total = rates.setdefault(key, [0.0, 0.0])
            rates[key] = [seconds + recorded[stage.id][2], total + flops[stage.id]]
    same_task = {(s.task, *_kind_of_work(s)) for s in finished}
    scaled = {}
    for stage in stages:
        if stage.id in recorded or not flops[stage.id] or (stage.task, *_kind_of_work(stage)) in same_task:
            continue
        rate = rates.get(_kind_of_work(stage)) or rates.get((stage.kind,))
        if rate:
            scaled[stage.id] = rate[0] / rate[1] * flops[stage.id]
    return scaled


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def _flops(value: float) -> str:
    if value <= 0:
        return "0"
    exponent = int(math.floor(math.log10(value)))
    return f"{value / 10 ** exponent:.2f}e{exponent}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                               for i, (v, w) in enumerate(zip(r, widths)))
    return [line(header), *[line(r) for r in rows]]


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as the CLI prints it: stages per kind with their FLOPs and estimated time, the data per
    task, the totals and the GPU lower bound."""
    out = [f"plan of {plan['config']}: {plan['total_stages']} stages of {plan['model']} "
           f"({plan['layout']['num_layers']} layers x {plan['layout']['num_heads']} heads, hidden "
           f"{plan['layout']['hidden_size']}; dimensions from {plan['dimensions_from']})", ""]
    rows = []
    for kind, count in plan["stages"].items():
        s = plan["seconds"]["by_kind"][kind]
        if s["unknown"]:
            time_text = f"? ({s['unknown']} not estimated)"
        elif s["least"] == s["most"]:
            time_text = _hours(s["most"])
        else:
            time_text = f"{_hours(s['least'])} - {_hours(s['most'])}"
        source = ", ".join(f"{n} {what}" for what, n in (("from the run", s["from_run"]),
                                                        ("calibrated", s["calibrated"]),
                                                        ("skipped by the run", s.get("skipped", 0))) if n)
        rows.append([kind, count, _flops(plan["flops"]["by_kind"][kind]), time_text, source])
    out += _table(["kind", "stages", "FLOPs", "stage time", "estimated from"], rows)
    out += ["", *_table(["task", "train", "trained on", "epochs", "dev", "tokens/ex", "data"],
                        [[t["task"], t["train_examples"], t["trained_on"], ",".join(map(str, t["epochs"])) or "-",
                          t["eval_examples"], f"{t['train_tokens_per_example']:.0f}", t["source"]]
                         for t in plan["tasks"]])]
    seconds = plan["seconds"]
    out.append("")
    out.append(f"FLOPs: {_flops(plan['flops']['total'])} (searches counted at their most steps: an upper bound)")
    if plan.get("physical_subnetworks"):
        out.append(f"{plan['physical_subnetworks']} trainings of s-pruned subnetworks are counted at the full model's "
                   "size: their size is known only after their search, and a physically smaller one trains faster")
    if seconds["most"] or not seconds["unknown_stages"]:
        line = (f"stage time: {_hours(seconds['least'])} - {_hours(seconds['most'])} (searches stopping at their "
                "first step - running to the end)")
        if plan["calibration"]:
            c = plan["calibration"]
            line += (f"; calibrated on {c['threads']} thread{'s' if c['threads'] > 1 else ''} in "
                     f"{c['measured_seconds']:.0f} s, in {c['precision']}")
            if c["busy"] > 1.2:
                line += (f" (an idle core's time: the machine is busy now, timing ran {c['busy']:.1f}x its CPU "
                         "time)")
        if seconds["unknown_stages"]:
            line += f"; {seconds['unknown_stages']} stages not estimated"
        out.append(line)
    else:
        out.append(f"stage time: not estimated ({seconds['unknown_stages']} stages; calibration skipped and no "
                   "finished stages of their kinds in a run directory)")
    out.append("at the bf16 dense peak of a GPU (a physical lower bound): " + ", ".join(
        f"{gpu} {hours:.2f} h" if hours >= 0.01 else f"{gpu} {hours * 3600:.1f} s"
        for gpu, hours in plan["gpu_peak_hours"].items()))
    if any(t["source"] == "GLUE sizes" for t in plan["tasks"]):
        out.append("tasks marked 'GLUE sizes' are not in glue_dir: counted from the GLUE splits' sizes at "
                   "max_length tokens per example (an upper bound)")
    return "\n".join(out)
