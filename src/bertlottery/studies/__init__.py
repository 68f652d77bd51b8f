"""The studies ``bertlottery run`` knows, by name: each expands a config into stages and executes them.

=============  ==========================================================================================
``lottery``    Prasanna et al. 2020: fine-tune, prune (structured and magnitude), good/random/bad
               subnetworks, evaluate pruned and re-fine-tuned, super-survivors, baselines
``attention``  the attention patterns of the lottery's heads (P§5.2); runs with the lottery study when a
               config has an ``attention:`` section
``ablation``   each head's or MLP's dev cost when gated off alone, against the importance the s-pruning
               search ranked it by; runs with the lottery study when a config has an ``ablation:`` section
``gordon``     Gordon et al. 2020: pruning during continued pre-training, then fine-tuning; the study of a
               config with a ``gordon:`` section
=============  ==========================================================================================

A study is two functions: ``expand(config, earlier)`` returns its stages (each after its inputs;
``earlier`` are the stages of the studies expanded before it, which it may read), and
``execute(stage, out, inputs, config, progress)`` runs one of its stages and returns the result rows.
The pipeline (`bertlottery.pipeline`) runs the stages and knows none of this.

Example:
    >>> stages = expand(load("configs/smoke.yaml"))                              # doctest: +SKIP
    >>> run_local(stages, Path("runs/smoke"), config, execute=execute)          # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..attention import stages as attention_stages
from ..config import ExperimentConfig, from_dict
from ..errors import UserError, did_you_mean
from ..gordon import stages as gordon_stages
from ..pipeline import Stage
from ..results import ResultRow
from ..runs import CONFIG_FILE
from . import ablation, lottery

__all__ = ["Study", "STUDIES", "get_study", "studies_of", "expand", "execute", "graph_of_config"]


@dataclass(frozen=True)
class Study:
    name: str
    kinds: tuple[str, ...]  # the stage kinds it expands into and executes
    expand: Callable[[ExperimentConfig, list[Stage]], list[Stage]]
    execute: Callable[[Stage, Path, dict[str, Path], ExperimentConfig, bool], list[ResultRow]]


STUDIES: dict[str, Study] = {
    "lottery": Study("lottery", lottery.KINDS, lottery.expand, lottery.execute),
    "attention": Study("attention", (attention_stages.MAPS_KIND, attention_stages.ANALYSIS_KIND),
                       attention_stages.expand, attention_stages.execute),
    "ablation": Study("ablation", (ablation.KIND,), ablation.expand, ablation.execute),
    "gordon": Study("gordon", gordon_stages.KINDS, lambda config, earlier: gordon_stages.expand(config),
                    gordon_stages.execute),
}


def get_study(name: str) -> Study:
    try:
        return STUDIES[name]
    except KeyError:
        raise UserError(f"Unknown study '{name}'.{did_you_mean(name, STUDIES)} Known: {', '.join(STUDIES)}.") from None


def studies_of(config: ExperimentConfig) -> list[Study]:
    """The studies a config runs, in the order they expand: a ``gordon:`` section makes it the Gordon
    study; otherwise the lottery, with the attention analysis after it when there is an ``attention:``
    and importance against ablation when there is an ``ablation:``."""
    if config.gordon is not None:
        return [get_study("gordon")]
    return [get_study("lottery")] + ([get_study("attention")] if config.attention is not None else []) + (
        [get_study("ablation")] if config.ablation is not None else [])


def expand(config: ExperimentConfig) -> list[Stage]:
    """Every stage of the config's studies, in an order where each stage comes after its inputs."""
    stages: list[Stage] = []
    for study in studies_of(config):
        stages += study.expand(config, list(stages))
    return stages


def _owner(kind: str) -> Study:
    for study in STUDIES.values():
        if kind in study.kinds:
            return study
    raise ValueError(f"unknown stage kind {kind}")


def execute(stage: Stage, out: Path, inputs: dict[str, Path], config: ExperimentConfig, progress: bool) -> list[ResultRow]:
    """Run one stage with the study that owns its kind (what the pipeline's executors call)."""
    return _owner(stage.kind).execute(stage, out, inputs, config, progress)


def graph_of_config(config_data: dict[str, Any]) -> list[Stage]:
    """The stage graph of a run's resolved config (the dict in its ``config.json``).

    Raises (``ConfigError``, ``ValueError``, ...) where it cannot be rebuilt, for example a config written
    by another version. A run's ``graph.json`` (`bertlottery.runs.read_graph`) says the same without a
    config; this is for runs made before runs had one.
    """
    with warnings.catch_warnings():  # a run's own config.json, written before a key was renamed: not the user's to edit
        warnings.simplefilter("ignore", FutureWarning)
        return expand(from_dict(config_data, source=CONFIG_FILE))
