"""Continued masked-language-model pre-training with gradual magnitude pruning (G§3.2; `docs/algorithms.md`).

Three pieces, each usable alone:

1. Text (`bertlottery.gordon.corpus`): `read_texts` (plain text files, a folder of them, or ``hub:<dataset>[:<config>]:<split>``),
   `make_blocks` (the token stream cut into ``[CLS] ... [SEP]`` blocks of a fixed length, as BERT's
   pre-training packs text), `masked_dev_set` (a dev set masked once, with a fixed seed, so every
   checkpoint's loss is measured on the very same masked tokens).
2. The model: `load_mlm` gives the family's MaskedLM model. A checkpoint without an MLM head (the
   packaged MiniLM is a bare encoder) gets one initialised from the seed, its decoder tied to the word
   embeddings; the checkpoint's pooler, which a MaskedLM model has no place for, is kept alongside
   (Gordon et al. prune it, and downstream classifiers use it). `save_mlm` writes the encoder with
   its pooler as an ordinary checkpoint (``load_model`` fine-tunes it) plus ``mlm_head.safetensors``.
3. Training: `pretrain` runs AdamW with linear warm-up and decay; with a `Pruning` it recomputes the
   mask on the cubic schedule (`CubicSchedule`) and holds pruned weights at exactly zero in between
   (`bertlottery.masking.WeightMaskKeeper`). `train_head` trains a new head alone, encoder frozen.

Masking is transformers' ``DataCollatorForLanguageModeling`` (15% of tokens, 80/10/10
mask/random/keep). The loss is computed on the masked positions only: the decoder over the whole
vocabulary is about as costly as a small encoder, and the other 85% of its logits are thrown away.

Example:
    >>> model, tokenizer, info = load_mlm("minilm-l6", seed=42)                      # doctest: +SKIP
    >>> blocks = make_blocks(read_texts(["wiki.txt"]), tokenizer, 128)               # doctest: +SKIP
    >>> dev = masked_dev_set(blocks[:64], tokenizer, seed=0)                         # doctest: +SKIP
    >>> history = pretrain(model, tokenizer, blocks, dev, PretrainSettings(steps=100),
    ...                    pruning=Pruning("gmp", target=0.5, end=50))            # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from ..errors import UserError
from ..masks import WeightMask
from .config import PretrainSettings  # declared there, torch-free, for the config and the CLI
from .corpus import MaskedSet, mask_batch, masking_collator
from .pruning import full_mask, magnitude_mask, pruned_parameters, random_mask
from .schedule import CubicSchedule

__all__ = [
    "HEAD_FILE",
    "load_mlm",
    "save_mlm",
    "mlm_loss",
    "dev_loss",
    "PretrainSettings",
    "Pruning",
    "PretrainHistory",
    "pretrain",
    "train_head",
]

HEAD_FILE = runs.MLM_HEAD_FILE


# ---- the model --------------------------------------------------------------------------------------

@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _base_prefix(model: nn.Module) -> str:
    return model.base_model_prefix


def _head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The MLM head's own parameters (a decoder tied to the word embeddings is the embeddings')."""
    prefix = _base_prefix(model) + "."
    return {n: p for n, p in model.named_parameters() if not n.startswith(prefix)}


def _init_new_head(model: nn.Module, seed: int) -> None:
    """Initialise a new head as BERT initialises its layers, from ``seed`` alone (a private generator:
    whatever ran before, the same seed gives the same head)."""
    generator = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    embedding = model.get_input_embeddings().weight
    prefix = _base_prefix(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name == prefix or name.startswith(prefix + ".") or not name:
                continue
            if isinstance(module, nn.Linear) and module.weight is not embedding:
                module.weight.copy_(torch.empty(module.weight.shape).normal_(0.0, std, generator=generator))
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        for name, param in _head_parameters(model).items():
            if name.endswith("bias"):
                param.zero_()


def _attention_of(path: str | os.PathLike) -> str:
    """The attention kernel of the checkpoint's family (`bertlottery.models.attention_implementation`)."""
    from transformers import AutoConfig

    from ..models import attention_implementation

    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as error:
        raise UserError(f"Could not read the config of {path} ({str(error).splitlines()[0]}).") from None
    return attention_implementation(model_type)


def load_mlm(name_or_path: str | os.PathLike, *, seed: int = 0) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(model, tokenizer, info)``: the checkpoint as its family's MaskedLM model, in train mode.

    ``info["new_head"]`` says whether the head was initialised here (from ``seed``); a head saved by
    `save_mlm` is read back from ``mlm_head.safetensors``. ``info["pooler"]``: whether the
    checkpoint's pooler was attached to the encoder.
    """
    from transformers import AutoModel, AutoModelForMaskedLM

    from ..models import adapter_for, load_tokenizer, resolve_model_path

    path = resolve_model_path(str(name_or_path))
    with _quiet_transformers():
        try:
            # SDPA where the family has it; DeBERTa-v2 and MPNet have only eager attention in transformers
            model, loading = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, dtype=torch.float32,
                                                                  attn_implementation=_attention_of(path))
        except (OSError, ValueError) as error:
            raise UserError(f"Could not load {name_or_path} as a masked language model ({str(error).splitlines()[0]}).") from None
    adapter_for(model)  # refuse an unsupported family
    head_file = Path(path) / HEAD_FILE
    head = _head_parameters(model)
    new_head = False
    if head_file.is_file():
        from safetensors.torch import load_file

        saved = load_file(str(head_file))
        if set(saved) != set(head):
            raise UserError(f"{head_file} holds {sorted(saved)}, but the model's head is {sorted(head)}; re-create it.")
        with torch.no_grad():
            for name, tensor in saved.items():
                head[name].copy_(tensor)
    elif any(not k.startswith(_base_prefix(model) + ".") for k in loading["missing_keys"]):
        _init_new_head(model, seed)
        new_head = True
    output = model.get_output_embeddings()
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        raise UserError(f"{name_or_path}: the MLM decoder is not tied to the word embeddings.")
    # A MaskedLM model is built without the pooler; keep the checkpoint's, if it has one.
    base = model.base_model
    pooler = False
    if getattr(base, "pooler", "absent") is None:
        with _quiet_transformers():
            encoder, base_loading = AutoModel.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
        if getattr(encoder, "pooler", None) is not None and not any("pooler" in k for k in base_loading["missing_keys"]):
            base.pooler = encoder.pooler  # saved with the encoder by save_mlm; pruned with it
            pooler = True
    model.train()
    tokenizer = load_tokenizer(path)
    return model, tokenizer, {"new_head": new_head, "pooler": pooler, "path": str(path)}


def save_mlm(model: nn.Module, tokenizer, folder: str | os.PathLike) -> Path:
    """Write the encoder (with its pooler) as a checkpoint ``load_model`` reads, the tokenizer, and the head."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.base_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    head = {n: p.detach().cpu().contiguous() for n, p in _head_parameters(model).items()}
    save_file(head, str(folder / HEAD_FILE))
    return folder


def _fast_head(model: nn.Module) -> nn.Module | None:
    # BERT: cls; RoBERTa family: lm_head. Both map hidden states of any leading shape to logits.
    for name in ("cls", "lm_head"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def mlm_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, *,
             reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the masked positions (``labels != -100``), the vocabulary scored only there."""
    head = _fast_head(model)
    if head is None:  # a family whose head is several loose modules: the model's own (full) forward
        logits = model(input_ids=input_ids).logits
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction=reduction)
    hidden = model.base_model(input_ids=input_ids)[0]  # (B, T, H); blocks have no padding
    chosen = labels != -100
    logits = head(hidden[chosen])  # (M, V)
    return nn.functional.cross_entropy(logits.float(), labels[chosen], reduction=reduction)


@torch.no_grad()
def dev_loss(model: nn.Module, dev: MaskedSet, batch_size: int = 64) -> float:
    """Mean cross-entropy per masked token of ``dev`` (eval mode: no dropout)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    try:
        for i in range(0, len(dev), batch_size):
            ids = dev.input_ids[i:i + batch_size].to(device)
            labels = dev.labels[i:i + batch_size].to(device)
            if (labels != -100).any():
                total += float(mlm_loss(model, ids, labels, reduction="sum"))
    finally:
        model.train(was_training)
    return total / max(dev.n_masked, 1)


# ---- training ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pruning:
    """How a run prunes: ``method`` (gmp, oneshot, random) to ``target`` on the cubic schedule that
    reaches it at step ``end`` (one-shot: at step 0), the mask recomputed every ``every`` steps."""

    method: str = "gmp"
    target: float = 0.0
    end: int = 0
    every: int = 10
    scope: str = "local"
    tensors: str = "gordon"
    embeddings: bool = False
    seed: int = 0  # random pruning's draws

    def schedule(self) -> CubicSchedule:
        end = 0 if self.method == "oneshot" else self.end
        return CubicSchedule(target=self.target, begin=0, end=end, every=self.every)


@dataclass
class PretrainHistory:
    losses: list[float] = field(default_factory=list)  # mean training loss per logging window
    dev: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss"}
    sparsity: list[dict[str, float]] = field(default_factory=list)  # {"step", "target", "reached"}
    seconds: float = 0.0
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LossWindow:
    """The mean training loss over each window of ``every`` steps, appended to ``losses``."""

    def __init__(self, losses: list[float], every: int):
        self.losses, self.every, self.total, self.count = losses, every, 0.0, 0

    def add(self, loss: float) -> float | None:
        """Count one step's loss; the window's mean when this step closes a window."""
        self.total, self.count = self.total + loss, self.count + 1
        return self.flush() if self.count == self.every else None

    def flush(self) -> float | None:
        """Close the window now (the last, shorter one at the end of training)."""
        if not self.count:
            return None
        mean = self.total / self.count
        self.losses.append(mean)
        self.total, self.count = 0.0, 0
        return mean


def _batches(blocks: torch.Tensor, batch_size: int, seed: int):
    """Endless batches of blocks: a new seeded permutation every pass."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(blocks), generator=generator)
        for i in range(0, len(order) - batch_size + 1, batch_size):  # full batches only
            yield blocks[order[i:i + batch_size]]


def pretrain(
    model: nn.Module,
    tokenizer,
    blocks: torch.Tensor,
    dev: MaskedSet | None,
    settings: PretrainSettings,
    *,
    pruning: Pruning | None = None,
    progress: bool = True,
) -> tuple[PretrainHistory, WeightMask | None]:
    """Continue MLM training of ``model`` in place for ``settings.steps`` steps, pruning as ``pruning`` says.

    Before step t, when the schedule updates at t, the mask is recomputed from the current weights
    (magnitude) or drawn (random) and the pruned weights are zeroed; from then on their gradients are
    zeroed and they are multiplied by zero after every optimizer step, so they stay exactly zero.
    Returns the history and the final mask (None without pruning).
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from ..masking import WeightMaskKeeper
    from ..precision import accelerator_for, attention_for_gradients
    from ..training import TrainingDiverged, build_adamw, decay_groups, optimizer_step

    set_seed(settings.seed)
    # accelerator_for: a fine-tuning earlier in this process may have left accelerate in another precision
    precision = {"no": "fp32"}.get(settings.mixed_precision, settings.mixed_precision)
    accelerator = accelerator_for(precision)
    optimizer = build_adamw(decay_groups(model, settings.weight_decay), lr=settings.learning_rate, eps=1e-6)
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    model = model.to(accelerator.device)
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    bare_optimizer = getattr(optimizer, "optimizer", optimizer)
    collator = masking_collator(tokenizer, settings.mlm_probability, settings.seed)
    batches = _batches(blocks, min(settings.batch_size, len(blocks)), settings.seed)

    history = PretrainHistory()
    schedule = pruning.schedule() if pruning is not None and pruning.target > 0 else None
    targets = pruned_parameters(model, pruning.tensors, pruning.embeddings) if schedule else {}
    generator = torch.Generator().manual_seed(pruning.seed) if pruning is not None else None
    mask: WeightMask | None = None
    keeper = None
    started = time.time()
    prepared.train()
    window = _LossWindow(history.losses, settings.log_every)
    bar = tqdm(range(settings.steps), desc="pre-training", disable=not progress, leave=False)
    with attention_for_gradients(model, precision, accelerator.device):  # the stages' kernel for training
        try:
            for step in bar:
                if schedule is not None and schedule.is_update(step):
                    sparsity = schedule.sparsity(step)
                    if pruning.method == "random":
                        mask = random_mask({n: p.shape for n, p in targets.items()}, sparsity, generator, previous=mask)
                    else:
                        mask = magnitude_mask(targets, sparsity, scope=pruning.scope, previous=mask)
                    if keeper is not None:
                        keeper.detach()
                    keeper = WeightMaskKeeper(model, mask).attach(bare_optimizer)  # zeroes the newly pruned weights
                    history.sparsity.append({"step": step, "target": sparsity, "reached": mask.n_pruned / mask.n_total})
                ids, labels = mask_batch(collator, next(batches), tokenizer)
                ids, labels = ids.to(accelerator.device), labels.to(accelerator.device)
                with accelerator.autocast():
                    loss = mlm_loss(prepared, ids, labels)
                value = optimizer_step(accelerator, prepared, optimizer, scheduler, loss, settings.max_grad_norm,
                                       where=f"pre-training step {step}")
                mean = window.add(value)
                if mean is not None:
                    bar.set_postfix(loss=f"{mean:.3f}")
                if dev is not None and settings.eval_every and (step + 1) % settings.eval_every == 0 and step + 1 < settings.steps:
                    history.dev.append({"step": step + 1, "loss": dev_loss(model, dev)})
        finally:
            if keeper is not None:
                keeper.detach()
    window.flush()
    if dev is not None:
        history.dev.append({"step": settings.steps, "loss": dev_loss(model, dev)})
    history.seconds = round(time.time() - started, 2)
    history.steps = settings.steps
    if not all(math.isfinite(x) for x in history.losses):
        raise TrainingDiverged("the MLM training loss was not finite")
    if schedule is not None and mask is None:  # fewer steps than the first update: nothing was pruned
        mask = full_mask(targets)
    return history, mask


def train_head(
    model: nn.Module,
    tokenizer,
    blocks: torch.Tensor,
    settings: PretrainSettings,
    *,
    progress: bool = True,
) -> PretrainHistory:
    """Train the MLM head alone (the encoder, word embeddings included, frozen): a new head learns to
    read the encoder before the encoder itself is trained or pruned."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from ..training import build_adamw, decay_groups

    head = _fast_head(model)
    if head is None:
        raise UserError(f"Training the head alone is not supported for {type(model).__name__}; set head_steps: 0.")
    set_seed(settings.seed)
    device = next(model.parameters()).device
    trainable = {id(p) for p in _head_parameters(model).values()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = build_adamw(decay_groups(model, settings.weight_decay, lambda n: n in _head_parameters(model)),
                            lr=settings.learning_rate, eps=1e-6)
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    collator = masking_collator(tokenizer, settings.mlm_probability, settings.seed)
    batches = _batches(blocks, min(settings.batch_size, len(blocks)), settings.seed)
    history = PretrainHistory()
    started = time.time()
    model.eval()  # the frozen encoder without dropout; the head has none
    window = _LossWindow(history.losses, settings.log_every)
    try:
        for _ in tqdm(range(settings.steps), desc="MLM head", disable=not progress, leave=False):
            ids, labels = mask_batch(collator, next(batches), tokenizer)
            ids, labels = ids.to(device), labels.to(device)
            with torch.no_grad():
                hidden = model.base_model(input_ids=ids)[0]
            chosen = labels != -100
            loss = nn.functional.cross_entropy(head(hidden[chosen]).float(), labels[chosen])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window.add(loss.item())
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train()
    window.flush()
    history.seconds = round(time.time() - started, 2)
    history.steps = settings.steps
    return history
