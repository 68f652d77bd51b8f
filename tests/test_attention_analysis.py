"""Pattern proportions and the super-survivor / heterogeneous correlation on hand-made records."""

from __future__ import annotations

import numpy as np
import pytest

from bertlottery.attention.analysis import analyse, correlation, proportion_rows, proportions
from bertlottery.attention.maps_format import Example, MapsIndex
from bertlottery.attention.patterns import Labeller, label_stream, majority
from bertlottery.cli import main
from bertlottery.masks import HeadMask, Masks, MlpMask, save_masks


def _record(labels, weights="finetuned", head_mask=None, counts=None):
    """A patterns record with these head labels (2 x 2) and per-head map counts."""
    counts = counts or [[{label: 3} if label else {} for label in row] for row in labels]
    return {"format": "bertlottery-attention-patterns/1", "task": "RTE", "weights": weights, "head_mask": head_mask,
            "layers": 2, "heads": 2, "method": "rules", "model": "m", "mask": None, "n_examples": 3,
            "kinds": {"raw": {"head_labels": labels, "head_counts": counts}}, "labels": {}}


def test_majority_breaks_ties_by_pattern_order():
    assert majority({"heterogeneous": 2, "block": 2, "vertical": 1}) == "block"
    assert majority({"heterogeneous": 3, "block": 2}) == "heterogeneous"
    assert majority({}) is None


def test_proportions_and_groups():
    full = _record([["heterogeneous", "diagonal"], ["heterogeneous", "vertical"]],
                   counts=[[{"heterogeneous": 2, "block": 1}, {"diagonal": 3}],
                           [{"heterogeneous": 3}, {"vertical": 3}]])
    masked = _record([["block", None], [None, None]], head_mask=[[True, False], [False, False]])
    super_heads = np.array([[True, False], [False, False]])
    rows = proportion_rows([full, masked], super_heads, kinds=["raw"])
    get = {(r["group"], r["level"], r["pattern"]): r for r in rows}
    assert get[("all", "heads", "heterogeneous")]["proportion"] == 0.5 and get[("all", "heads", "vertical")]["n"] == 4
    assert get[("all", "maps", "block")]["proportion"] == pytest.approx(1 / 12)
    assert get[("super-survivors", "heads", "block")]["proportion"] == 1.0  # the pruned model's surviving head
    assert get[("super-survivors", "heads", "block")]["n"] == 1
    assert get[("super-survivors-unpruned", "heads", "heterogeneous")]["proportion"] == 1.0  # same head, full model
    assert get[("super-survivors-unpruned", "maps", "heterogeneous")]["proportion"] == pytest.approx(2 / 3)
    assert proportions([]) == {p: 0.0 for p in proportions(["block"])}


def test_correlation_is_pearson_over_heads_pooled_over_seeds():
    seed1 = _record([["heterogeneous", "diagonal"], ["heterogeneous", "vertical"]])
    seed2 = _record([["heterogeneous", "heterogeneous"], ["block", "vertical"]])
    super_heads = np.array([[True, True], [False, False]])
    result = analyse([seed1, seed2], super_heads, kinds=["raw"])
    (row,) = result["correlations"]
    x = [1, 1, 0, 0, 1, 1, 0, 0]
    y = [1, 0, 1, 0, 1, 1, 0, 0]
    assert row["r"] == pytest.approx(np.corrcoef(x, y)[0, 1]) and row["n"] == 8 and row["n_super"] == 4
    assert correlation([True, False, True], [True, True, True])["r"] is None  # constant: undefined, not 0
    assert result["super_survivors"]["RTE"] == super_heads.tolist()


def test_label_stream_labels_only_kept_heads():
    tokens = ["[CLS]", "the", "cat", "sat", "on", "a", "mat", "[SEP]"]
    previous = np.eye(8, k=-1)
    previous[0, 0] = 1
    maps = np.stack([np.stack([previous, np.zeros((8, 8))])])  # layer 0: head 0 previous-token, head 1 masked
    index = MapsIndex(model="m", task="RTE", weights="pretrained", layers=1, heads=2, head_mask=[[True, False]])
    record = label_stream([(Example("ex000", 0, tokens), {"raw": maps, "norm": maps * 2})], index, Labeller())
    assert record["labels"] == {"ex000/0/0/raw": "diagonal", "ex000/0/0/norm": "diagonal"}
    assert record["kinds"]["raw"]["head_labels"] == [["diagonal", None]]


def test_analyse_command(tmp_path, capsys):
    from bertlottery.runs import write_json

    write_json(tmp_path / "a" / "patterns.json", _record([["heterogeneous", "diagonal"], ["block", "vertical"]]))
    write_json(tmp_path / "b" / "patterns.json", _record([["heterogeneous", "block"], ["block", "vertical"]],
                                                         weights="pretrained"))
    save_masks(tmp_path / "super" / "good.safetensors",
               Masks(heads=HeadMask(np.array([[True, False], [True, True]])), mlps=MlpMask(np.array([True, True]))))
    out = tmp_path / "analysis.json"
    assert main(["attention", "analyse", str(tmp_path / "a"), str(tmp_path / "b"), "--super", str(tmp_path / "super"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "r(super-survivor, heterogeneous)" in printed and out.is_file()
    save_masks(tmp_path / "wrong.safetensors", Masks(heads=HeadMask(np.ones((3, 2), dtype=bool))))
    assert main(["attention", "analyse", str(tmp_path / "a"), "--super", str(tmp_path / "wrong.safetensors")]) == 2
    assert "use the mask made for this model" in capsys.readouterr().err
    assert main(["attention", "analyse", str(tmp_path / "nothing"), "--super", str(tmp_path / "super")]) == 2
    assert "attention classify" in capsys.readouterr().err
