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
alike. In training, the dropouts that see the cut positions (after the output projection, inside and
after the MLP) draw their masks at the full sequence's shape and keep the first position's: the random
stream advances as in the full layer and the first position gets the very mask it would have got, so
a run's dropout is the full-layer run's and the two train the same model, to rounding (a product over
one position may round differently from the same row of a product over all of them). Drawing a mask
costs a small fraction of the MLP it saves. ``train.last_layer`` stays part of a training stage's id,
since the two agree to rounding, not bit for bit.

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


class _Cut:
    """The forward pre-hook that cuts a projection's input to the first position, and the hooks that give
    the last layer's dropouts the full layer's draws (`first_position_only`)."""

    def __init__(self) -> None:
        self.length = 1  # the sequence length of the batch being cut
        self.held: dict[nn.Dropout, float] = {}  # a dropout's own p while its forward runs at p=0

    def first_position(self, module: nn.Module, args: tuple):
        (x, *rest) = args
        if x.dim() != 3:  # an unpadded (tokens, features) layout has no positions to cut
            return None
        self.length = x.shape[1]
        return (x[:, :1], *rest)

    # A dropout that receives the one cut position: it would draw a mask for one position, shifting the
    # random stream for every draw after it. Its own forward runs at p=0 (which draws nothing), and its
    # output is multiplied by the first position of a mask drawn as the full layer draws it: dropout of
    # ones at the full shape, in the input's dtype and device.
    def before_dropout(self, module: nn.Dropout, args: tuple):
        x = args[0]
        if module.training and module.p > 0 and x.dim() == 3 and x.shape[1] == 1 < self.length:
            self.held[module] = module.p
            module.p = 0.0

    def after_dropout(self, module: nn.Dropout, args: tuple, output):
        p = self.held.pop(module, None)
        if p is None:
            return None
        module.p = p
        x = args[0]
        mask = nn.functional.dropout(x.new_ones((x.shape[0], self.length, *x.shape[2:])), p, True)
        return x * mask[:, :1]

    def restore(self) -> None:
        """Give back every p still held (a forward that raised between the two hooks)."""
        for module, p in self.held.items():
            module.p = p
        self.held.clear()


@contextmanager
def first_position_only(model: nn.Module, how: str | None = None) -> Iterator[bool]:
    """Inside the block, the last layer computes its attention output projection and MLP at the first
    position only, if ``how`` (default: the model's own setting) is ``cls`` and the model's head reads
    nothing else, its dropouts with the full layer's draws. Yields whether it does. The hooks run before
    any other on those projections (gates, captures), so those see the one position; they are removed,
    and every dropout's rate given back, on exit, whatever happens."""
    how = last_layer_of(model) if how is None else _checked(how)
    if how == "full" or not reads_first_position(model):
        yield False
        return
    adapter = adapter_for(model)
    parts, layer = adapter.layers(model)[-1], adapter.blocks(model)[-1]
    cut, handles = _Cut(), []
    try:
        for module in (parts.attn_out, parts.mlp_in):
            handles.append(module.register_forward_pre_hook(cut.first_position, prepend=True))
        for module in layer.modules():
            if isinstance(module, nn.Dropout):
                handles.append(module.register_forward_pre_hook(cut.before_dropout))
                handles.append(module.register_forward_hook(cut.after_dropout))
        yield True
    finally:
        for handle in handles:
            handle.remove()
        cut.restore()
