"""Statistics of a study's masks, read from files alone (no model, no pipeline).

- `bertlottery.analysis.rundir`: the stages of a run directory, from its ``graph.json`` and stage
  folders (`read_stages`), and a prune stage's importance scores (`importance_from_trace`).
- `bertlottery.analysis.masksets`: where good masks are found (the paper's released masks, a run
  directory, a plain folder), loaded into a `MaskSet`.
- `bertlottery.analysis.stability`: the stability summary, pure functions of mask arrays.
- `bertlottery.analysis.format`: the summary as text tables.
- `bertlottery.analysis.cli`: ``bertlottery stability``.

Example:
    >>> from bertlottery.analysis import load_mask_sets, stability_summary                    # doctest: +SKIP
    >>> summary = stability_summary(load_mask_sets("../shared/reference/prasanna2020/masks/heads_mlps"))  # doctest: +SKIP
    >>> summary["tasks"]["CoLA"]["heads"]["kappa"]                                            # doctest: +SKIP
    0.228...
"""

from __future__ import annotations

from .format import format_summary
from .masksets import BERT_BASE_CONFIG, KINDS, METHODS, MaskSet, keep_arrays, layout_from_config, load_mask_sets
from .rundir import RunStages, StageInfo, importance_from_trace, read_stages
from .stability import cross_task, magnitude_task, stability_summary, structured_task

__all__ = [
    "BERT_BASE_CONFIG",
    "KINDS",
    "METHODS",
    "MaskSet",
    "RunStages",
    "StageInfo",
    "cross_task",
    "format_summary",
    "importance_from_trace",
    "keep_arrays",
    "layout_from_config",
    "load_mask_sets",
    "magnitude_task",
    "read_stages",
    "stability_summary",
    "structured_task",
]
