"""The attention section's pieces on maps drawn in code: the example maps chosen as the most confident
of their label, drawn with tokens and a colour bar; the rule labeller against hand labels from an
annotation export in the run directory; the paper's task order in the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from bertlottery.annotate.export import export_labelled
from bertlottery.attention import maps_format as fmt
from bertlottery.attention.report import (
    _agreement_part,
    _find_examples,
    examples_figure,
    proportions_table,
    rule_agreement,
)
from bertlottery.attention.rules import label_map

TOKENS = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "today", "[SEP]"]


def _previous_token(strength: float) -> np.ndarray:
    """Each token gives ``strength`` to the one before it and spreads the rest evenly."""
    n = len(TOKENS)
    m = np.full((n, n), (1 - strength) / n)
    for i in range(n):
        m[i, max(i - 1, 0)] += strength
    return m / m.sum(axis=1, keepdims=True)


def _maps_dir(root: Path) -> Path:
    """One example, one layer, three heads: a clean previous-token head, a weak one, a uniform one."""
    raw = np.stack([_previous_token(0.95), _previous_token(0.7), np.full((9, 9), 1 / 9)])[None]  # [1, 3, T, T]
    example = fmt.Example("ex000", dev_index=0, tokens=TOKENS, segments=[0] * len(TOKENS))
    index = fmt.MapsIndex(model="tiny", task="RTE", weights="finetuned", layers=1, heads=3, kinds=("raw",))
    return fmt.save_maps(root, index, [(example, {"raw": raw.astype(np.float32)})])


def test_the_example_of_a_type_is_its_most_confident_map_drawn_with_tokens_and_a_colour_bar(tmp_path):
    folder = _maps_dir(tmp_path / "maps")
    assert [label_map(m, TOKENS).label for m in (_previous_token(0.95), _previous_token(0.7))] == ["diagonal"] * 2
    fmt.write_labels(folder, {"ex000/0/1/raw": "diagonal", "ex000/0/0/raw": "diagonal", "ex000/0/2/raw": "block"})
    examples = _find_examples([folder])
    chosen = {(kind, pattern): where for kind, pattern, _, _, where in examples}
    assert chosen[("raw", "diagonal")].endswith("layer 1 head 1, ex000")  # the clean one, not the first key
    fig = examples_figure(examples)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("raw:")]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == TOKENS
    assert len(fig.axes) == 2 * len(panels)  # a colour bar beside every map
    assert "No map kept on disk is labelled vertical" in fig.get_suptitle()


def test_the_rule_labeller_is_scored_against_hand_labels_from_an_annotation_export(tmp_path):
    folder = _maps_dir(tmp_path / "maps")
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "report"
    assert "no hand labels" in str(_agreement_part(run, out)[0])
    # a person agrees with the rules on the clean head and not on the weak one; the uniform one is unsure
    fmt.write_labels(folder, {"ex000/0/0/raw": "diagonal", "ex000/0/1/raw": "block", "ex000/0/2/raw": fmt.UNSURE})
    export_labelled(folder, run / "annotations" / "first")
    (html,) = _agreement_part(run, out)
    table = pd.read_csv(out / "tables" / "attention-rule-agreement.csv").set_index("kind")
    assert table.loc["raw", "maps"] == 2 and table.loc["raw", "agreement"] == pytest.approx(0.5)
    assert "50.0%" in str(html)


def test_agreement_is_the_share_of_equal_labels_and_cohens_kappa():
    hand = ["diagonal", "block", "vertical", "block", "heterogeneous", "block"]
    rules = ["diagonal", "block", "block", "block", "heterogeneous", "diagonal"]
    table = rule_agreement([("raw", h, r) for h, r in zip(hand, rules)]).set_index("kind")
    assert table.loc["raw", "agreement"] == pytest.approx(4 / 6)
    assert table.loc["raw", "cohen_kappa"] == pytest.approx(cohen_kappa_score(hand, rules))
    assert table.loc["all", "maps"] == 6


def test_pattern_tables_follow_the_papers_task_order():
    rows = [{"task": task, "weights": "finetuned", "group": "all", "kind": "raw", "level": "heads",
             "pattern": "block", "proportion": 1.0, "n": 4} for task in ("RTE", "CoLA", "SST-2")]
    assert proportions_table(rows)["task"].tolist() == ["CoLA", "SST-2", "RTE"]
