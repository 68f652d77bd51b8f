"""Real data: the packaged MiniLM (6 layers x 12 heads) on real RTE dev pairs, every head's pattern type."""

from __future__ import annotations

import numpy as np

from bertlottery.attention import maps_format as fmt
from bertlottery.attention.analysis import proportion_rows
from bertlottery.cli import main


def test_minilm_pattern_proportions_for_all_72_heads_on_real_rte(glue_dir, env, capsys):
    maps_dir = env / "maps"
    assert main(["attention", "extract", "minilm-l6", "--task", "RTE", "--glue-dir", str(glue_dir),
                 "--examples", "8", "--seed", "0", "--out", str(maps_dir)]) == 0
    assert main(["attention", "classify", str(maps_dir)]) == 0
    capsys.readouterr()
    maps = fmt.load_maps(maps_dir)
    assert (maps.index.layers, maps.index.heads, len(maps)) == (6, 12, 8)
    example = maps.index.examples[0]
    assert example.tokens[0] == "[CLS]" and example.tokens.count("[SEP]") == 2  # a real premise/hypothesis pair
    arrays = maps.example(example.id)
    np.testing.assert_allclose(arrays["raw"].sum(-1), 1, atol=5e-3)

    record = fmt.read_labels(maps_dir)
    assert len(record) == 8 * 72 * 2
    from bertlottery.attention.patterns import read_patterns

    patterns = read_patterns(maps_dir)
    rows = proportion_rows([patterns], kinds=["raw", "norm"])
    shares = {(r["kind"], r["level"], r["pattern"]): r["proportion"] for r in rows}
    for kind in ("raw", "norm"):
        assert sum(shares[(kind, "heads", p)] for p in fmt.PATTERNS) == 1.0
        assert next(r["n"] for r in rows if r["kind"] == kind and r["level"] == "heads") == 72
    with capsys.disabled():
        for kind in ("raw", "norm"):
            print(f"\nMiniLM, 8 RTE dev pairs, {kind}: " + ", ".join(
                f"{p} {shares[(kind, 'heads', p)]:.3f}" for p in fmt.PATTERNS))
    # MiniLM's layer-0 head 2 attends to the previous token in every example
    assert patterns["kinds"]["raw"]["head_labels"][0][2] == "diagonal"
    assert patterns["kinds"]["raw"]["head_counts"][0][2] == {"diagonal": 8}
    # Kobayashi et al.: weighting by ||f(x)|| takes attention away from [CLS]/[SEP]/punctuation
    vertical = {k: shares[(k, "maps", "vertical")] + shares[(k, "maps", "vertical+diagonal")] for k in ("raw", "norm")}
    assert vertical["norm"] < vertical["raw"] / 2
    assert shares[("raw", "heads", "vertical")] > 0.1  # BERT-style models attend to [SEP] a lot
