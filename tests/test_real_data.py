"""Real-data tier: the packaged pre-trained MiniLM on real GLUE files (slow, and run in CI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertlottery.cli import main
from bertlottery.data import read_glue_split
from bertlottery.metrics import majority_baseline
from bertlottery.tasks import get_task

pytestmark = pytest.mark.slow


def test_minilm_quickstart_learns_sst2_well_above_the_majority_baseline(glue_dir, tmp_path, monkeypatch, capsys):
    """The README's quickstart, through the real CLI: one epoch over 4,000 SST-2 sentences."""
    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "quickstart"
    assert main(["quickstart", "--glue-dir", str(glue_dir), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "random 50% head mask" in printed

    task = get_task("SST-2")
    record = json.loads((out / "metrics.json").read_text())
    accuracy = record["splits"]["dev"]["metrics"]["accuracy"]
    train = np.array([ex.label for ex in read_glue_split(task, glue_dir, "train")])
    dev = np.array([ex.label for ex in read_glue_split(task, glue_dir, "dev")])
    majority = majority_baseline(task, train, dev)["accuracy"]
    print(f"SST-2 dev accuracy {accuracy:.4f} vs majority {majority:.4f}")
    assert majority < 0.52
    assert accuracy > majority + 0.2  # measured 0.80 on 2 cores


def test_minilm_gates_on_real_text_match_removing_heads_by_hand(glue_dir):
    """On the real pre-trained model and real dev sentences: a head gate of 0 is the head removed."""
    from bertlottery.data import make_loader, tokenize
    from bertlottery.masking import gated
    from bertlottery.masks import HeadMask
    from bertlottery.models import adapter_for, load_model, load_tokenizer, model_layout

    tokenizer = load_tokenizer("minilm-l6")
    split = tokenize(read_glue_split(get_task("RTE"), glue_dir, "dev")[:16], tokenizer)
    batch = next(iter(make_loader(split, tokenizer.pad_token_id, 16, shuffle=False, seed=None)))
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "index")}
    model = load_model("minilm-l6", 2, seed=0).eval()
    layout = model_layout(model)
    mask = HeadMask.random_like(HeadMask.full(layout.num_layers, layout.num_heads), keep=36, seed=1)
    with torch.no_grad(), gated(model, heads=mask):
        gated_logits = model(**inputs).logits
    dh = layout.head_dim
    with torch.no_grad():
        for layer, parts in enumerate(adapter_for(model).layers(model)):
            for head in range(layout.num_heads):
                if not mask.keep[layer, head]:
                    parts.attn_out.weight[:, head * dh : (head + 1) * dh] = 0
        by_hand = model(**inputs).logits
    torch.testing.assert_close(gated_logits, by_hand, rtol=1e-4, atol=1e-5)


def test_the_readme_quickstart_study_on_real_sst2(glue_dir, tmp_path, monkeypatch, capsys):
    """`bertlottery run configs/quickstart.yaml`, the README's first command, through the real CLI.

    Both good masks keep >= 90% of the full model's dev accuracy and beat the bad ones; every
    subnetwork is evaluated pruned and re-fine-tuned; the baselines are there; the table is printed.
    """
    from pathlib import Path

    import pandas as pd

    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    run_dir = tmp_path / "quickstart"
    assert main(["run", str(config), f"glue_dir={glue_dir}", "--run-dir", str(run_dir), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "19 to run" in printed and "done 19, failed 0, blocked 0" in printed
    assert "structured" in printed and "retrained" in printed  # the summary table
    assert "warning:" not in printed  # SST-2 is learnt: no task is flagged as saying nothing

    table = pd.read_csv(run_dir / "results.csv")
    accuracy = table[(table["metric"] == "accuracy") & (table["split"] == "dev")]

    def value(method, subnetwork, mode):
        rows = accuracy[(accuracy["method"] == method) & (accuracy["subnetwork"] == subnetwork)
                        & (accuracy["mode"] == mode)]
        assert len(rows) == 1, (method, subnetwork, mode)
        return float(rows["value"].iloc[0])

    full = value("none", "full", "finetuned")
    majority = value("majority", "none", "baseline")
    with capsys.disabled():
        print(f"\nquickstart study: full {full:.4f}, majority {majority:.4f}")
        for method in ("structured", "magnitude"):
            cells = {(s, m): value(method, s, m) for s in ("good", "random", "bad") for m in ("pruned", "retrained")}
            print(f"  {method}: " + ", ".join(f"{s} {m} {v:.4f}" for (s, m), v in cells.items()))
            assert cells[("good", "pruned")] >= 0.9 * full
            assert cells[("good", "pruned")] > cells[("bad", "pruned")]
    assert full > majority + 0.2  # measured 0.804 vs 0.509
    assert 0 < value("random-init", "random", "baseline") < full
