"""The report's Fisher section: its tables on hand-made masks, and a tiny study with the Fisher search
beside s-pruning run through the real CLI, its section checked against the masks on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertlottery.report.sections.fisher import SeedMasks, agreement_table, jaccard, metric_table

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def _heads(*kept: int, shape=(2, 3)) -> np.ndarray:
    out = np.zeros(shape[0] * shape[1], dtype=bool)
    out[list(kept)] = True
    return out.reshape(shape)


def test_the_agreement_table_counts_overlap_and_stability_by_hand():
    seeds = {
        1: SeedMasks(heads={"structured": _heads(0, 1, 2), "fisher": _heads(1, 2, 3)}, neurons=_heads(0, 4)),
        2: SeedMasks(heads={"structured": _heads(0, 1, 2), "fisher": _heads(1, 2, 3)}, neurons=_heads(0, 4)),
    }
    table = agreement_table({"RTE": seeds})
    row = table.frame.iloc[0]
    assert row["jaccard_per_seed"] == {1: 0.5, 2: 0.5}  # 2 shared of 4 kept by either
    assert row["jaccard_mean"] == 0.5
    assert row["structured heads kept"] == [3, 3] and row["fisher heads kept"] == [3, 3]
    # every seed keeps the same heads: perfect agreement
    assert row["structured heads kappa"] == 1.0 and row["fisher heads kappa"] == 1.0
    assert row["fisher neurons kappa"] == 1.0
    # two seeds that disagree on every element: kappa -1 (statsmodels' Fleiss, the paper's statistic)
    seeds[2] = SeedMasks(heads={"structured": ~_heads(0, 1, 2), "fisher": _heads(1, 2, 3)}, neurons=_heads(0, 4))
    row = agreement_table({"RTE": seeds}).frame.iloc[0]
    assert row["structured heads kappa"] == pytest.approx(-1.0)
    assert math.isnan(jaccard(_heads(), _heads()))


def test_the_metric_table_puts_both_methods_and_the_tuned_fisher_mask_side_by_side():
    cells = pd.DataFrame([
        {"task": "RTE", "method": m, "subnetwork": "good", "mode": "pruned", "mean": v, "std": 0.01, "n": 2,
         "fraction_kept": 0.5, "fraction_kept_std": 0.0} for m, v in (("structured", 0.61), ("fisher", 0.66))])
    record = lambda tuned, cost: {"tuned": {"dev": {"metrics": {"accuracy": tuned}}}, "cost": cost,  # noqa: E731
                                  "budget": 50, "full_cost": 100}
    seeds = {1: SeedMasks(heads={}, fisher=record(0.70, 40)), 2: SeedMasks(heads={}, fisher=record(0.72, 50))}
    table = metric_table(cells, {"RTE": seeds}, metrics={"RTE": "accuracy"}, expected_n=2)
    shown = table.display["RTE"].to_dict()
    assert shown["good pruned"] == "0.660 ± 0.010"  # the last good-pruned row is the Fisher search's
    assert list(table.frame["group"][:2]) == ["s-pruning", "Fisher search"]
    tuned = table.frame.set_index("row").loc["good, tuned scales, no retraining"]
    assert tuned["RTE mean"] == pytest.approx(0.71) and tuned["RTE std"] == pytest.approx(np.std([0.70, 0.72], ddof=1))
    assert table.frame.set_index("row").loc["Fisher good mask", "RTE mean"] == pytest.approx(0.45)
    assert shown["budget"] == "50.0 ± 0.0%"


def test_a_study_with_the_fisher_search_reports_it_against_s_pruning(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Two seeds, s-pruning and the Fisher search at half the full model's cost, through the real CLI;
    the section's overlap and kappa are those of the masks the prune stages wrote."""
    from bertlottery import runs, stats
    from bertlottery.cli import main
    from bertlottery.masks import load_masks
    from tiny import write_rte

    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    glue = write_rte(tmp_path / "glue", n_train=24, n_dev=12)
    run_dir = tmp_path / "study"
    assert main(["run", str(SMOKE), f"model={tiny_model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3",
                 "train.batch_size=8", "train.max_length=32", "energy.track=false", "methods=[structured,fisher]",
                 "pruning.fisher.budget_fraction=0.5", "pruning.fisher.examples=16", "baselines=[]",
                 "super_survivors=false", "longer_retraining=null", "--run-dir", str(run_dir), "--no-progress"]) == 0
    assert "failed 0" in capsys.readouterr().out
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report" / "report.html").read_text()
    assert "The Fisher search against s-pruning at equal cost" in html
    agreement = pd.read_csv(run_dir / "report" / "tables" / "fisher_agreement.csv")
    metrics = pd.read_csv(run_dir / "report" / "tables" / "fisher_metrics.csv").set_index("row")

    prunes = run_dir / "stages" / "prune" / "RTE"
    heads = {(seed, m): load_masks(next(prunes.glob(f"seed{seed}-{m}-*")) / runs.MASK_FILE).heads.keep.numpy()
             for seed in (1, 2) for m in ("structured", "fisher")}
    fisher = {seed: json.loads((next(prunes.glob(f"seed{seed}-fisher-*")) / runs.METRICS_FILE).read_text())
              for seed in (1, 2)}
    for seed in (1, 2):
        assert fisher[seed]["cost"] <= fisher[seed]["budget"] == int(0.5 * fisher[seed]["full_cost"])
        assert heads[seed, "fisher"].any()  # half the cost keeps heads
    by_seed = {seed: jaccard(heads[seed, "structured"], heads[seed, "fisher"]) for seed in (1, 2)}
    row = agreement.iloc[0]
    assert row["task"] == "RTE"
    assert row["jaccard_per_seed"] == str(by_seed)
    kappa = stats.fleiss_kappa(np.stack([heads[1, "fisher"], heads[2, "fisher"]])).value
    assert (math.isnan(kappa) and math.isnan(row["fisher heads kappa"])) or row["fisher heads kappa"] == pytest.approx(kappa)
    assert row["fisher heads kept"] == str([int(heads[s, "fisher"].sum()) for s in (1, 2)])
    tuned = [fisher[s]["tuned"]["dev"]["metrics"]["accuracy"] for s in (1, 2)]
    assert metrics.loc["good, tuned scales, no retraining", "RTE mean"] == pytest.approx(np.mean(tuned))
    assert metrics.loc["Fisher good mask", "RTE mean"] == pytest.approx(
        np.mean([fisher[s]["cost"] / fisher[s]["full_cost"] for s in (1, 2)]))
    results = pd.read_csv(run_dir / "results.csv")
    good = results[(results["method"] == "fisher") & (results["subnetwork"] == "good") & (results["mode"] == "retrained")
                   & (results["split"] == "dev") & (results["metric"] == "accuracy")]
    assert metrics.loc[metrics["group"] == "Fisher search"].loc["good retrained", "RTE mean"] == pytest.approx(
        good["value"].mean())


def test_a_study_without_the_fisher_search_says_so_in_place_without_a_contents_entry(tmp_path):
    from bertlottery import runs
    from bertlottery.config import load, to_dict
    from bertlottery.report.context import Context
    from bertlottery.report.rundata import load_run
    from bertlottery.report.sections.fisher import fisher_section
    from rungraph import write_graph_of

    run = tmp_path / "run"
    run.mkdir()
    runs.write_json(run / runs.CONFIG_FILE, to_dict(load(SMOKE)))
    write_graph_of(run)
    section = fisher_section(Context(load_run(run), tmp_path / "report", None))
    assert "no Fisher search" in section.html_body and not section.toc
