"""Continued MLM pre-training of one checkpoint, as a step: `pretrain_run` (pruning on the cubic schedule
to a sparsity; G§3.2) and `head_run` (a new MLM head trained alone, encoder frozen). ``bertlottery
gordon pretrain`` and the study's ``gordon-head`` / ``gordon-pretrain`` stages call them.

A pre-training folder holds ``model/`` (the encoder with its pooler, tokenizer and
``mlm_head.safetensors``), ``metrics.json`` (``pretrain_dev_loss``, its value at the start, the sparsity
reached overall and per tensor), ``history.json``, ``environment.json``, and for pre-training
``mask.safetensors`` (pruned runs), ``analysis.json`` (per-head prune rates, per-tensor weight mean/std
at the start and end) and ``heatmaps.npz`` (|w| of layer 1's key matrix and of the word embeddings
by subword length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import runs
from .config import GordonCorpusConfig, GordonPretrainConfig

__all__ = ["head_run", "pretrain_run", "device", "blocks_of", "dev_set", "DEV_MASK_SEED", "ANALYSIS_FILE",
           "HEATMAPS_FILE"]

DEV_MASK_SEED = 0  # every checkpoint's dev loss is taken on the same masked tokens, whatever the study seed
ANALYSIS_FILE = runs.ANALYSIS_FILE
HEATMAPS_FILE = runs.HEATMAPS_FILE


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def blocks_of(corpus: GordonCorpusConfig, tokenizer, length: int, which: str):
    from .corpus import corpus_blocks

    cap = corpus.max_train_sequences if which == "train" else corpus.dev_sequences
    return corpus_blocks(getattr(corpus, which), tokenizer, length, text_format=corpus.format, max_blocks=cap)


def dev_set(corpus: GordonCorpusConfig, tokenizer, length: int, probability: float):
    from .corpus import masked_dev_set

    return masked_dev_set(blocks_of(corpus, tokenizer, length, "dev"), tokenizer, probability, seed=DEV_MASK_SEED)


def head_run(model_name: str | Path, out: Path, *, corpus: GordonCorpusConfig, pretrain: GordonPretrainConfig,
             seed: int, progress: bool = True) -> dict[str, Any]:
    """Train a new MLM head alone (``pretrain.head_steps`` at ``pretrain.head_learning_rate``) and write the
    checkpoint to ``out`` (see the module docstring)."""
    from .mlm import PretrainSettings, dev_loss, load_mlm, save_mlm, train_head

    model, tokenizer, info = load_mlm(model_name, seed=seed)
    model.to(device())
    blocks = blocks_of(corpus, tokenizer, pretrain.max_length, "train")
    dev = dev_set(corpus, tokenizer, pretrain.max_length, pretrain.mlm_probability)
    before = dev_loss(model, dev)
    settings = PretrainSettings(steps=pretrain.head_steps, batch_size=pretrain.batch_size,
                                learning_rate=pretrain.head_learning_rate, weight_decay=pretrain.weight_decay,
                                mlm_probability=pretrain.mlm_probability, seed=seed)
    history = train_head(model, tokenizer, blocks, settings, progress=progress)
    after = dev_loss(model, dev)
    record = {"pretrain_dev_loss": after, "pretrain_dev_loss_start": before, "new_head": info["new_head"],
              "pooler": info["pooler"], "train_blocks": len(blocks), "dev_blocks": len(dev),
              "dev_masked_tokens": dev.n_masked, "train_seconds": history.seconds}
    with runs.staged_run_dir(out, overwrite=True) as scratch:
        save_mlm(model, tokenizer, scratch / runs.MODEL_DIR)
        runs.write_json(scratch / runs.ENVIRONMENT_FILE, runs.environment(str(device())))
        runs.write_json(scratch / runs.HISTORY_FILE, history.to_dict())
        runs.write_json(scratch / runs.METRICS_FILE, record)
    return record


def pretrain_run(start: str | Path, out: Path, *, corpus: GordonCorpusConfig, pretrain: GordonPretrainConfig,
                 method: str, sparsity: float, seed: int, progress: bool = True) -> dict[str, Any]:
    """Continue pre-training ``start`` with ``method`` pruning to ``sparsity`` and write the checkpoint
    and its analyses to ``out`` (``pretrain.methods`` and the head settings are not read). Returns the
    metrics record."""
    import numpy as np

    from ..masks import Masks, save_masks
    from ..models import adapter_for
    from .analysis import embedding_heatmap, head_prune_rates, key_heatmap, weight_statistics
    from .mlm import Pruning, dev_loss, load_mlm, save_mlm
    from .mlm import pretrain as continue_pretraining
    from .pruning import mask_sparsity, pruned_parameters

    p = pretrain
    model, tokenizer, info = load_mlm(start, seed=seed)
    model.to(device())
    blocks = blocks_of(corpus, tokenizer, p.max_length, "train")
    dev = dev_set(corpus, tokenizer, p.max_length, p.mlm_probability)

    def statistics():  # G Table 3: every matrix Gordon prunes, embeddings and pooler included
        return weight_statistics({n: t.detach().float().cpu() for n, t in pruned_parameters(model, "gordon", True).items()})

    stats_start = statistics()
    loss_start = dev_loss(model, dev)
    settings = p.loop(seed)
    pruning = None
    if sparsity > 0:
        pruning = Pruning(method=method, target=sparsity, end=p.prune_steps, every=p.prune_every, scope=p.scope,
                          tensors=p.tensors, embeddings=p.prune_embeddings, seed=seed)
    history, mask = continue_pretraining(model, tokenizer, blocks, dev, settings, pruning=pruning, progress=progress)
    model.cpu()

    layers = adapter_for(model).layers(model)
    key = layers[min(1, len(layers) - 1)].key.weight
    embeddings = model.get_input_embeddings().weight
    vocab = embeddings.shape[0]
    tokens = [t or "" for t in tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(tokenizer)))))]
    tokens += [""] * (vocab - len(tokens))
    heat, lengths = embedding_heatmap(embeddings, tokens)
    analysis = {"weights_start": stats_start, "weights_end": statistics(),
                "head_prune_rates": head_prune_rates(model, mask).tolist() if mask is not None else None}
    record = {
        "pretrain_dev_loss": history.dev[-1]["loss"],
        "pretrain_dev_loss_start": loss_start,
        "method": method,
        "target_sparsity": sparsity,
        "sparsity_reached": mask_sparsity(mask) if mask is not None else 0.0,
        "per_tensor_sparsity": ({n: 1 - float(k.float().mean()) for n, k in mask.keep.items()}
                                if mask is not None else {}),
        "steps": settings.steps,
        "train_blocks": len(blocks),
        "dev_blocks": len(dev),
        "dev_masked_tokens": dev.n_masked,
        "new_head": info["new_head"],
        "pooler": info["pooler"],
        "train_seconds": history.seconds,
    }
    with runs.staged_run_dir(out, overwrite=True) as scratch:
        save_mlm(model, tokenizer, scratch / runs.MODEL_DIR)
        if mask is not None:
            save_masks(scratch / runs.MASK_FILE, Masks(weights=mask, params={
                "method": method, "sparsity": sparsity, "scope": p.scope, "tensors": p.tensors,
                "embeddings": p.prune_embeddings}))
        np.savez_compressed(scratch / HEATMAPS_FILE, key=key_heatmap(key).astype(np.float16),
                            embeddings=heat.astype(np.float16), embedding_lengths=lengths)
        runs.write_json(scratch / ANALYSIS_FILE, analysis)
        runs.write_json(scratch / runs.ENVIRONMENT_FILE, runs.environment(str(device())))
        runs.write_json(scratch / runs.HISTORY_FILE, history.to_dict())
        runs.write_json(scratch / runs.METRICS_FILE, record)
    return record
