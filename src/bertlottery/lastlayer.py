"""The last layer computed only where the classifier reads it.

A sequence classifier of every supported family reads one position of the last layer's output, the
first (``[CLS]``, ``<s>``; ModernBERT with ``classifier_pooling="cls"``). Every other position of the
last layer is computed and thrown away: its attention output projection and its whole MLP, about three
quarters of the layer (docs/algorithms.md#the-last-layer). With ``last_layer="cls"`` two forward
pre-hooks cut the input of the last layer's attention output projection and of its MLP input
projection to the first position; the residual additions broadcast that position's result over the
sequence, so the first position of the last hidden state is what the full layer gives (to rounding),
and the other positions, which nothing reads, are not. Queries, keys and values keep every position
(the first position attends to all of them).

It is the same function, and the same gradients: no loss reaches the last layer's other positions,
so their gradients are zero in the full computation too, for weights, gates and importance scores
alike. In training, the dropout after those two projections draws fewer numbers, so a run differs
from a full-layer run in its dropout draws, as a run on another machine does: ``train.last_layer``
is part of a training stage's id, and ``full`` gives back the exact computation of runs made before it.

A model carries its setting (`use_last_layer`); the passes that only need the classifier's output
(`bertlottery.training.finetune`, `bertlottery.evaluation.predict`,
`bertlottery.importance.structured_importance`, `bertlottery.fisher.fisher_scores`) apply it with
`first_position_only`. Passes that read every position (the Fisher search's least-squares tuning,
attention maps, masked-language-model training) never do, and a model whose head reads more than the
first position (ModernBERT with mean pooling, a masked-language model) is never cut.

Example:
    >>> use_last_layer(model, "cls")                                      # doctest: +SKIP
    >>> with first_position_only(model):                                  # doctest: +SKIP
    ...     logits = model(**batch).logits    # the last layer's projections and MLP see 1 position
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from .errors import UserError, did_you_mean
from .models import adapter_for
from .settings import LAST_LAYER  # cls: the classifier's position only; full: every position

__all__ = ["LAST_LAYER", "reads_first_position", "classifier_reads_first_position", "use_last_layer", "last_layer_of",
           "first_position_only"]


_ATTRIBUTE = "_bertlottery_last_layer"

# Sequence classifiers whose head reads the last hidden state at the first position only.
_FIRST_POSITION = {
    "BertForSequenceClassification", "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
    "ElectraForSequenceClassification", "DistilBertForSequenceClassification", "DebertaV2ForSequenceClassification",
    "MPNetForSequenceClassification", "ModernBertForSequenceClassification",
}


def reads_first_position(model: nn.Module) -> bool:
    """Whether ``model``'s output depends on its last layer at the first position only."""
    return _reads_first(type(model).__name__, model.config.to_dict())


def classifier_reads_first_position(config: dict) -> bool:
    """Whether the sequence classifier that ``config`` (a ``config.json``'s values) builds reads its last
    layer at the first position only: what a plan needs to know without a model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    return _reads_first(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(config.get("model_type"), ""), config)


def _reads_first(name: str, config: dict) -> bool:
    if name not in _FIRST_POSITION:
        return False
    if name.startswith("ModernBert") and config.get("classifier_pooling", "cls") != "cls":
        return False  # mean pooling reads every position
    if name.startswith("DebertaV2") and config.get("num_hidden_layers", 2) == 1 and config.get("conv_kernel_size"):
        return False  # DeBERTa's convolution mixes positions after the first layer, here also the last
    return True


def _checked(how: str) -> str:
    if how not in LAST_LAYER:
        raise UserError(f"Unknown last_layer '{how}'.{did_you_mean(how, LAST_LAYER)} Known: {', '.join(LAST_LAYER)}.")
    return how


def use_last_layer(model: nn.Module, how: str) -> nn.Module:
    """Give ``model`` the setting its classification passes follow (``cls`` or ``full``); returns it.
    A copy of the model (an export, say) keeps it."""
    setattr(model, _ATTRIBUTE, _checked(how))
    return model


def last_layer_of(model: nn.Module) -> str:
    """The model's setting: ``full`` unless `use_last_layer` said otherwise."""
    return getattr(model, _ATTRIBUTE, "full")


def _first_position(module: nn.Module, args: tuple):
    (x, *rest) = args
    if x.dim() != 3:  # an unpadded (tokens, features) layout has no positions to cut
        return None
    return (x[:, :1], *rest)


@contextmanager
def first_position_only(model: nn.Module, how: str | None = None) -> Iterator[bool]:
    """Inside the block, the last layer computes its attention output projection and MLP at the first
    position only, if ``how`` (default: the model's own setting) is ``cls`` and the model's head reads
    nothing else. Yields whether it does. The hooks run before any other on those projections (gates,
    captures), so those see the one position; they are removed on exit, whatever happens."""
    how = last_layer_of(model) if how is None else _checked(how)
    if how == "full" or not reads_first_position(model):
        yield False
        return
    parts = adapter_for(model).layers(model)[-1]
    handles = []
    try:
        for module in (parts.attn_out, parts.mlp_in):
            handles.append(module.register_forward_pre_hook(_first_position, prepend=True))
        yield True
    finally:
        for handle in handles:
            handle.remove()
