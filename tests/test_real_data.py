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


@pytest.fixture(scope="module")
def sst2_run(glue_dir, tmp_path_factory):
    """MiniLM fine-tuned on 4,000 real SST-2 sentences for one epoch (the quickstart's run)."""
    import os

    root = tmp_path_factory.mktemp("real-lottery")
    os.environ["BERTLOTTERY_CACHE"] = str(root / "cache")
    run = root / "run"
    assert main(["finetune", "--model", "minilm-l6", "--task", "SST-2", "--glue-dir", str(glue_dir), "--out", str(run),
                 "--epochs", "1", "--lr", "1e-4", "--max-train-examples", "4000", "--no-progress"]) == 0
    return root, run


def test_minilm_lottery_good_masks_keep_90_percent_and_beat_bad_ones(sst2_run, glue_dir, capsys):
    """s-pruning and m-pruning on real SST-2: good keeps >= 90% of the full metric and beats bad."""
    from bertlottery.masks import load_masks

    root, run = sst2_run
    full = json.loads((run / "metrics.json").read_text())["splits"]["dev"]["metrics"]["accuracy"]
    for method in ("structured", "magnitude"):
        out = root / method
        assert main(["prune", method, str(run), "--out", str(out), "--glue-dir", str(glue_dir), "--no-progress"]) == 0
        good = json.loads((out / "metrics.json").read_text())
        assert main(["subnetworks", str(out), "--out", str(root / f"{method}-sub"), "--seed", "42"]) == 0
        capsys.readouterr()
        metric = {"good": good["splits"]["dev"]["metrics"]["accuracy"]}
        for kind in ("bad", "random"):
            assert main(["evaluate", str(run), "--glue-dir", str(glue_dir), "--format", "json",
                         "--mask", str(root / f"{method}-sub" / f"{kind}.safetensors")]) == 0
            metric[kind] = json.loads(capsys.readouterr().out)["splits"]["dev"]["metrics"]["accuracy"]
        kept = good["body_fraction_kept"]
        print(f"\n{method}: full {full:.4f}, pruned good {metric['good']:.4f}, random {metric['random']:.4f}, "
              f"bad {metric['bad']:.4f}; {kept:.1%} of body weights kept")
        with capsys.disabled():
            print(f"{method}: full {full:.4f} good {metric['good']:.4f} random {metric['random']:.4f} "
                  f"bad {metric['bad']:.4f} kept {kept:.3f}")
        assert metric["good"] >= 0.9 * full
        assert metric["good"] > metric["bad"]
        assert kept < 1.0  # the search really pruned something
        mask = load_masks(out / "mask.safetensors")
        assert mask.params["full_metric"] == pytest.approx(full, abs=1e-9)
