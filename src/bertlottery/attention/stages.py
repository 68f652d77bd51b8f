"""The attention analysis as pipeline stages (when a config has an ``attention:`` section).

Per task, after the lottery stages it reads:

- ``attention-maps/<task>/pretrained`` and, when the study makes super-survivors,
  ``attention-maps/<task>/pretrained-super`` (the pre-trained model under the task's super-survivor
  mask); ``attention-maps/<task>/seed<s>`` and ``seed<s>-super`` for every fine-tuned seed. Each
  extracts the raw and norm-based maps of ``attention.examples`` seeded dev examples, labels every map
  (rules, or the CNN checkpoints of ``attention.cnn_models``) and writes a maps directory holding the
  first ``attention.keep_examples`` examples' maps (all of them when null), ``labels.json`` for those,
  and ``patterns.json`` with every example's labels and each head's majority label.
- ``attention-analysis/<task>/patterns``: proportions of each pattern type for all heads vs
  super-survivors, pre-trained vs fine-tuned, raw vs norm, and the Pearson correlation between being a
  super-survivor and a heterogeneous pattern, in ``analysis.json`` and ``proportions.csv``; its result
  rows go into the study's table (method ``attention``; see `analysis_rows`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import UserError
from .config import ANALYSIS_KIND, MAPS_KIND

__all__ = ["MAPS_KIND", "ANALYSIS_KIND", "ANALYSIS_FILE", "PROPORTIONS_FILE", "expand", "execute", "analysis_rows"]

ANALYSIS_FILE = runs.ANALYSIS_FILE
PROPORTIONS_FILE = runs.PROPORTIONS_FILE
SUPER_MASK = runs.subnetwork_file("good")  # in a super stage's folder: the super-survivor mask


def expand(config, lottery_stages: list) -> list:
    """The attention stages of every task, after the lottery stages they read."""
    from ..pipeline import Stage
    from ..tasks import get_task

    attention = config.attention
    common = {k: v for k, v in asdict(attention).items() if k != "pretrained"}
    stages = []
    for task_name in config.tasks:
        task = get_task(task_name).name
        finetunes = [s for s in lottery_stages if s.kind == "finetune" and s.task == task]
        supers = [s for s in lottery_stages if s.kind == "super" and s.task == task]
        sup = supers[0] if supers else None
        maps = []
        if attention.pretrained:
            maps.append(Stage(MAPS_KIND, task, "pretrained", {"weights": "pretrained", "heads": "all"},
                              {"model": config.model, **common}))
            if sup is not None:
                maps.append(Stage(MAPS_KIND, task, "pretrained-super", {"weights": "pretrained", "heads": "super"},
                                  {"model": config.model, **common}, {"super": sup.id}))
        for finetune in finetunes:
            seed = finetune.keys["seed"]
            maps.append(Stage(MAPS_KIND, task, f"seed{seed}", {"seed": seed, "weights": "finetuned", "heads": "all"},
                              common, {"finetune": finetune.id}))
            if sup is not None:
                maps.append(Stage(MAPS_KIND, task, f"seed{seed}-super",
                                  {"seed": seed, "weights": "finetuned", "heads": "super"},
                                  common, {"finetune": finetune.id, "super": sup.id}))
        if not maps:
            continue
        inputs = {f"maps{i}": s.id for i, s in enumerate(maps)}
        if sup is not None:
            inputs["super"] = sup.id
        analysis = Stage(ANALYSIS_KIND, task, "patterns", {"method": "attention"}, {"kinds": list(attention.kinds)},
                         inputs)
        stages += [*maps, analysis]
    return stages


def execute(stage, out: Path, inputs: dict[str, Path], config, progress: bool) -> list:
    """Run one attention stage into ``out``; returns its result rows."""
    if stage.kind == MAPS_KIND:
        _maps_stage(stage, out, inputs, config)
        return []
    if stage.kind == ANALYSIS_KIND:
        return _analysis_stage(stage, out, inputs)
    raise ValueError(f"unknown attention stage kind {stage.kind}")


def _maps_stage(stage, out: Path, inputs: dict[str, Path], config) -> None:
    from .maps import iter_example_maps, load_for_maps, maps_index, read_mask
    from .maps_format import MapsWriter, write_labels
    from .patterns import PATTERNS_FILE, Labeller, label_stream, write_patterns

    s = stage.settings
    glue = Path(config.glue_dir) if config.glue_dir else None
    labeller = Labeller(s["classifier"], s["cnn_models"], kinds=s["kinds"])
    loaded = load_for_maps(inputs.get("finetune") or s["model"], stage.task, s["max_length"], fit=True)
    mask = inputs["super"] / SUPER_MASK if "super" in inputs else None
    masks = read_mask(mask, loaded.model)
    index = maps_index(loaded, masks, mask, seed=s["seed"], extra={"stage": stage.id})
    keep = s["keep_examples"]
    with MapsWriter(out, index) as writer:
        def stream():
            for n, (example, arrays) in enumerate(iter_example_maps(loaded, glue, n_examples=s["examples"],
                                                                     seed=s["seed"], masks=masks,
                                                                     batch_size=s["batch_size"])):
                if keep is None or n < keep:
                    writer.add(example, arrays)
                yield example, arrays

        record = label_stream(stream(), index, labeller)
    kept = {e.id for e in writer.index.examples}
    write_labels(out, {k: v for k, v in record["labels"].items() if k.split("/", 1)[0] in kept})
    write_patterns(out / PATTERNS_FILE, record)


def _analysis_stage(stage, out: Path, inputs: dict[str, Path]) -> list:
    import numpy as np

    from ..masks import load_masks
    from .analysis import analyse
    from .patterns import read_patterns

    records = [read_patterns(inputs[k]) for k in sorted(inputs) if k.startswith("maps")]
    if "super" in inputs:
        heads = load_masks(inputs["super"] / SUPER_MASK).heads
        if heads is None:
            raise UserError(f"{inputs['super']} has no head mask; the attention analysis needs super-survivor heads.")
        super_heads = heads.keep.numpy()
    else:
        layers, n_heads = records[0]["layers"], records[0]["heads"]
        super_heads = np.zeros((layers, n_heads), dtype=bool)  # no super-survivors: only the all-heads group
    result = analyse(records, super_heads, stage.settings["kinds"])
    result["has_super_survivors"] = "super" in inputs
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / ANALYSIS_FILE, result)
    _write_csv(out / PROPORTIONS_FILE, result["proportions"])
    fractions = {(r["weights"], "super-survivors"): (r.get("extra") or {}).get("fraction_kept", 1.0)
                 for r in records if r.get("head_mask") is not None}
    return analysis_rows(stage.task, stage.id, result, fractions)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    pd.DataFrame(rows, columns=["task", "weights", "group", "kind", "level", "pattern", "proportion", "n",
                                "n_records"]).to_csv(path, index=False)


def analysis_rows(task: str, stage_id: str, result: dict[str, Any],
                  fractions: dict[tuple[str, str], float] | None = None) -> list:
    """Result-table rows of an analysis: method ``attention``, subnetwork = head group, mode = weights
    (pretrained / finetuned), split ``dev``; metric ``pattern-<kind>-<level>:<pattern>`` (a proportion)
    or ``pearson-<kind>:super-vs-heterogeneous`` (r; the all-heads group)."""
    from ..results import ResultRow

    fractions = fractions or {}
    rows = []
    for r in result["proportions"]:
        rows.append(ResultRow(task=task, seed=None, method="attention", subnetwork=r["group"], mode=r["weights"],
                              split="dev", metric=f"pattern-{r['kind']}-{r['level']}:{r['pattern']}",
                              value=float(r["proportion"]),
                              fraction_kept=float(fractions.get((r["weights"], r["group"]), 1.0)), epochs=None,
                              stage_id=stage_id))
    for c in result["correlations"]:
        if c["r"] is None or c["task"] != task:
            continue
        rows.append(ResultRow(task=task, seed=None, method="attention", subnetwork="all", mode=c["weights"],
                              split="dev", metric=f"pearson-{c['kind']}:super-vs-heterogeneous", value=float(c["r"]),
                              fraction_kept=1.0, epochs=None, stage_id=stage_id))
    return rows
