"""The report: tables on a synthetic results table, escaping, a real smoke study rendered in headless
Chromium, partial runs and runs without graph.json, the package-section API, the report reading no
pipeline, and the CLI's refusals."""

from __future__ import annotations

import json
import math
import re
from html import unescape
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertlottery.cli import main
from bertlottery.report import Section, build_report, register_section
from bertlottery.report.paper import released_metrics
from bertlottery.report.rundata import StageInfo
from bertlottery.report.sections.run import cost_tables
from bertlottery.report.tables import (
    TABLE3_ROWS,
    bad_vs_baselines_table,
    cell_stats,
    key_results,
    longer_table,
    main_rows,
    ordering,
    results_table,
    uninformative_tasks,
)
from bertlottery.results import COLUMNS

from conftest import CHROMIUM_ARGS, new_page
from rungraph import write_graph_of
from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


# ---- a synthetic results table --------------------------------------------------------------------------

def _row(task, seed, method, subnetwork, mode, value, *, metric=None, split="dev", fraction=1.0, epochs=3):
    metric = metric or {"CoLA": "mcc", "STS-B": "pearson_spearman_mean"}.get(task, "accuracy")
    return dict(task=task, seed=seed, method=method, subnetwork=subnetwork, mode=mode, split=split, metric=metric,
                value=value, fraction_kept=fraction, epochs=epochs, stage_id=f"{task}-{seed}-{method}-{subnetwork}-{mode}")


VALUES = {  # (task, method, subnetwork, mode) -> per seed
    ("RTE", "none", "full", "finetuned"): [0.60, 0.64, 0.62],
    ("RTE", "structured", "good", "pruned"): [0.55, 0.57, 0.59],
    ("RTE", "structured", "bad", "retrained"): [0.50, 0.56],  # one seed has not finished
    ("CoLA", "none", "full", "finetuned"): [0.40, 0.42, 0.47],
    ("CoLA", "structured", "good", "pruned"): [0.30, 0.35, 0.31],
    ("CoLA", "structured", "bad", "retrained"): [0.10, 0.20, 0.15],
    ("CoLA", "magnitude", "bad", "retrained"): [0.05, 0.06, 0.07],
}


def synthetic_results() -> pd.DataFrame:
    rows = []
    for (task, method, sub, mode), values in VALUES.items():
        for seed, value in zip((1, 2, 3), values):
            rows.append(_row(task, seed, method, sub, mode, value, fraction=0.5 + 0.1 * seed if method != "none" else 1.0))
            if task == "CoLA":  # a second metric that the tables must not mix in
                rows.append(_row(task, seed, method, sub, mode, 0.99, metric="accuracy"))
    rows.append(_row("RTE", None, "majority", "none", "baseline", 0.527, epochs=None))
    rows.append(_row("RTE", 1, "none", "full", "finetuned", 0.11, split="heldout"))  # not the main split
    for seed, per_epoch in ((1, [0.50, 0.52]), (2, [0.54, 0.58])):
        for epoch, value in enumerate(per_epoch, start=1):
            rows.append(_row("RTE", seed, "structured", "bad", "retrained-long", value, epochs=epoch))
    return pd.DataFrame(rows, columns=COLUMNS)


def test_table3_has_the_known_means_and_sample_stds_per_cell():
    rows, metrics = main_rows(synthetic_results())
    assert metrics == {"RTE": "accuracy", "CoLA": "mcc"}
    cells = cell_stats(rows[rows["mode"] != "retrained-long"])
    table = results_table(cells, TABLE3_ROWS, expected_n=3, metrics=metrics)
    frame = table.frame.set_index("row")
    for (task, method, sub, mode), values in VALUES.items():
        row = frame[(frame["method"] == method) & (frame["subnetwork"] == sub) & (frame["mode"] == mode)].iloc[0]
        assert row[f"{task} mean"] == pytest.approx(np.mean(values))
        assert row[f"{task} std"] == pytest.approx(np.std(values, ddof=1))
        assert row[f"{task} n"] == len(values)
    # columns in the paper's task order; rows in its Table 3 order
    assert list(table.display.columns) == ["CoLA", "RTE"]
    assert list(table.display.index) == ["majority class", "full model (fine-tuned)", "'good' (pruned)",
                                         "'bad' (re-fine-tuned)", "'bad' (re-fine-tuned)"]
    assert table.groups[3:] == ["s-pruning subnetworks", "m-pruning subnetworks"]
    shown = table.display
    assert shown.loc["full model (fine-tuned)", "RTE"] == f"{np.mean([0.60, 0.64, 0.62]):.3f} ± 0.020"
    assert shown.iloc[3]["RTE"].endswith("(n=2)")  # 'bad' re-fine-tuned on RTE: 2 of 3 seeds
    assert shown.loc["majority class", "RTE"] == "0.527"  # no seeds, no spread, no "(n=1)"
    assert shown.loc["majority class", "CoLA"] == "–"
    assert shown.iloc[4]["RTE"] == "–"  # m-pruning has no RTE result


def _super_survivor_results() -> pd.DataFrame:
    """SST-2 as in the committed MiniLM run: the full model's mean minus one std (0.755) just above every
    super-survivor bar and dot (at most 0.73), inside the margin autoscaling leaves above them; one
    super-survivor mask per task (the same size in every seed's rows)."""
    rows = [_row("SST-2", seed, "none", "full", "finetuned", value) for seed, value in zip((1, 2, 3), (0.755, 0.765, 0.775))]
    rows.append(_row("SST-2", None, "majority", "none", "baseline", 0.509, epochs=None))
    for i, sub in enumerate(("super-good", "super-random", "super-bad")):
        for mode in ("pruned", "retrained"):
            rows += [_row("SST-2", seed, "structured", sub, mode, 0.70 - 0.05 * i + 0.01 * seed, fraction=0.17682)
                     for seed in (1, 2, 3)]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_a_quantity_of_one_observation_is_shown_without_a_spread():
    from bertlottery.report.figures import lottery_bars
    from bertlottery.report.tables import SUPER_ROWS, sizes_table

    rows, metrics = main_rows(_super_survivor_results())
    cells = cell_stats(rows)
    # one super-survivor mask per task: its size alone, not "17.7 ± 0.0%"
    sizes = sizes_table(cells)
    assert list(sizes.display["SST-2"]) == ["17.7%"] * 3 and set(sizes.frame["subnetwork"]) == {
        "super-good", "super-random", "super-bad"}
    fig = lottery_bars(cells, cells[cells["method"] == "none"], methods=("structured",),
                       subnetworks=("super-good", "super-random", "super-bad"), metrics=metrics, seeds=rows,
                       majority=cells[cells["method"] == "majority"])
    assert fig.axes[0].get_title() == "SST-2, s-pruning\n17.7% kept"
    # the paper's majority class is the same for every seed too: "0.509", not "0.509 ± 0.000"
    reference = pd.DataFrame([dict(condition="x", task="SST-2", method="majority", subnetwork="none", mode="baseline",
                                   metric="accuracy", mean=0.509, std=0.0, n=5),
                              dict(condition="y", task="SST-2", method="structured", subnetwork="super-good",
                                   mode="pruned", metric="accuracy", mean=0.86, std=0.01, n=5)])
    table = results_table(cells, [TABLE3_ROWS[0], *SUPER_ROWS], reference=reference, expected_n=3, metrics=metrics)
    assert table.display.loc["majority class", ("SST-2", "paper")] == "0.509"
    assert table.display.iloc[1][("SST-2", "paper")] == "0.860 ± 0.010"  # super-good pruned: the paper's 5 seeds


def test_every_reference_line_lies_inside_its_axes_with_a_margin():
    from bertlottery.report.figures import lottery_bars

    rows, metrics = main_rows(_super_survivor_results())
    cells = cell_stats(rows)
    fig = lottery_bars(cells, cells[cells["method"] == "none"], methods=("structured",),
                       subnetworks=("super-good", "super-random", "super-bad"), metrics=metrics, seeds=rows,
                       majority=cells[cells["method"] == "majority"])
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    levels = {line.get_linestyle(): line.get_ydata()[0] for line in ax.lines if line.get_linestyle() in ("--", ":")}
    assert levels["--"] == pytest.approx(0.755) and levels[":"] == pytest.approx(0.509)  # full model - 1 std, majority
    for level in levels.values():
        assert low + 0.02 * (high - low) <= level <= high - 0.02 * (high - low), (level, low, high)


def test_the_header_says_where_the_results_come_from_in_one_phrase(tmp_path, monkeypatch):
    from bertlottery.results import ResultRow, write_stage_rows

    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = tmp_path / "run"
    results = synthetic_results()
    for stage_id, part in results.groupby("stage_id"):  # a run still going: one row file per stage
        write_stage_rows(run, str(stage_id), [ResultRow(**{k: (None if pd.isna(v) else v) for k, v in row.items()})
                                              for row in part.to_dict("records")])
    (run / "config.json").write_text(json.dumps({"name": "going", "model": "minilm-l6", "tasks": ["RTE", "CoLA"],
                                                 "seeds": [1, 2, 3]}))

    def source(out: Path) -> str:
        html = build_report(run, out).read_text()
        meta = unescape(re.sub(r"<[^>]+>", "", re.search(r'<p class="meta">(.*?)</p>', html, re.S).group(1)))
        return meta[meta.index("results from"):]

    assert source(tmp_path / "out") == "results from rows/ (one file per stage) · every row, per seed: results.csv"
    # a finished run's table: named once (the link opens the copy beside the page)
    shutil.rmtree(run / "rows")
    results.to_csv(run / "results.csv", index=False)
    assert source(tmp_path / "out2") == "results from results.csv"


def test_the_key_results_say_where_a_mean_covers_fewer_seeds_than_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    synthetic_results().to_csv(run / "results.csv", index=False)
    (run / "config.json").write_text(json.dumps({"name": "partial", "model": "minilm-l6", "tasks": ["RTE", "CoLA"],
                                                 "seeds": [1, 2, 3]}))
    html = unescape(build_report(run, tmp_path / "out").read_text())
    box = html[html.index('id="key-results"'):html.index("</div>", html.index('id="key-results"'))]
    # RTE's 'bad' s-pruned re-fine-tuned has 2 of the 3 seeds (as Table 3's "(n=2)"); every other mean has all 3
    assert f"bad {np.mean([0.50, 0.56]):.3f} (n=2 of 3)" in box
    assert box.count("(n=") == 1
    frame = pd.read_csv(tmp_path / "out" / "tables" / "key_results.csv").set_index(["task", "method"])
    assert frame.loc[("RTE", "structured"), "bad retrained n"] == 2 and frame.loc[("RTE", "structured"), "full n"] == 3


def test_tasks_the_run_did_not_learn_are_named_with_the_reason():
    """RTE learnt (0.62 against a 0.527 majority, good masks of 60-80%): no line. MRPC above its majority
    class but with an empty s-pruning good mask, WNLI below its majority class: one line each, saying why."""
    rows = [r for r in synthetic_results().to_dict("records") if r["task"] == "RTE"]
    for seed, (mrpc, wnli) in zip((1, 2, 3), ((0.70, 0.44), (0.72, 0.56), (0.71, 0.42))):
        rows += [_row("MRPC", seed, "none", "full", "finetuned", mrpc),
                 _row("MRPC", seed, "structured", "good", "pruned", 0.684, fraction=0.0),
                 _row("MRPC", seed, "magnitude", "good", "pruned", 0.69, fraction=0.05),
                 _row("WNLI", seed, "none", "full", "finetuned", wnli),
                 _row("WNLI", seed, "structured", "good", "pruned", 0.56, fraction=0.3)]
    rows += [_row("MRPC", None, "majority", "none", "baseline", 0.684, epochs=None),
             _row("WNLI", None, "majority", "none", "baseline", 0.563, epochs=None)]
    rows, metrics = main_rows(pd.DataFrame(rows, columns=COLUMNS))
    lines = uninformative_tasks(cell_stats(rows), metrics)
    assert [line.split(":")[0] for line in lines] == ["MRPC", "WNLI"]  # the paper's task order; RTE is not there
    mrpc, wnli = lines
    assert "s-pruning search kept 0.0% of the encoder-body weights" in mrpc
    assert "m-pruning" not in mrpc and "majority" not in mrpc  # 5% kept, and 0.71 +- 0.01 is above 0.684
    assert "accuracy (0.473 ± 0.076) is not above the majority class's (0.563)" in wnli
    assert "pruning search" not in wnli


def test_the_reported_metric_can_replace_the_primary_one():
    results = pd.DataFrame([_row("STS-B", 1, "none", "full", "finetuned", 0.8),
                            _row("STS-B", 1, "none", "full", "finetuned", 0.7, metric="pearson")], columns=COLUMNS)
    assert main_rows(results)[0]["value"].tolist() == [0.8]
    assert main_rows(results, "reported")[0]["value"].tolist() == [0.7]


def test_table2_puts_the_run_beside_the_rows_quoted_from_the_paper():
    rows, metrics = main_rows(synthetic_results())
    table = bad_vs_baselines_table(cell_stats(rows), expected_n=3, model="minilm-l6", metrics=metrics)
    shown = table.display
    quoted = [label for label in shown.index if label.endswith("(quoted from the paper)")]
    assert len(quoted) == 7 and "CBOW (quoted from the paper)" in quoted
    assert all(table.row_classes[list(shown.index).index(q)] == "quoted" for q in quoted)
    assert shown.loc["CBOW (quoted from the paper)", "CoLA"] == "0.46"
    assert shown.loc["BiLSTM + GloVe (quoted from the paper)", "RTE"] == "0.58"
    assert shown.loc["BiLSTM + ELMo (quoted from the paper)", "paper's average (9 tasks)"] == "0.68"
    # the mean over the columns shown is computed here, for the quoted rows too
    assert shown.loc["CBOW (quoted from the paper)", "mean over these tasks"] == f"{(0.46 + 0.71) / 2:.3f}"
    ours = shown.loc["'Bad' subnetwork (s-pruning), re-fine-tuned"]
    assert ours["CoLA"] == "0.150 ± 0.050" and ours["RTE"] == "0.530 ± 0.042 (n=2)"
    assert ours["mean over these tasks"] == f"{(0.15 + 0.53) / 2:.3f}"
    assert "'Bad' subnetwork (m-pruning), re-fine-tuned" in shown.index
    assert table.groups[0] == "This run (minilm-l6)" and table.groups[-1].startswith("Quoted from the paper")
    # a task the run did not learn has no 'bad' subnetworks: every row's mean is over the learnt tasks
    table = bad_vs_baselines_table(cell_stats(rows), expected_n=3, metrics=metrics, not_learnt={"RTE": "not learnt"})
    shown = table.display
    assert "mean over these tasks" not in shown.columns
    assert shown.loc["CBOW (quoted from the paper)", "mean over the learnt tasks"] == "0.460"
    assert shown.loc["'Bad' subnetwork (s-pruning), re-fine-tuned", "mean over the learnt tasks"] == "0.150"
    assert shown.loc["CBOW (quoted from the paper)", "RTE"] == "0.71"  # still shown, not averaged
    assert "over CoLA, for every row, the quoted ones too (RTE: not learnt" in table.notes[0]


def test_longer_retraining_has_a_row_per_epoch_and_the_papers_appendix_d():
    rows, _ = main_rows(synthetic_results())
    table = longer_table(rows, expected_n=2)
    shown = table.display
    assert shown.loc["epoch 1", "RTE"] == "0.520 ± 0.028" and shown.loc["epoch 2", "RTE"] == "0.550 ± 0.042"
    assert shown.loc["epoch 6 (quoted from the paper)", "RTE"] == "0.594"
    assert list(table.frame["epoch"]) == [1, 2, 3, 4, 5, 6]


def test_the_papers_released_metrics_match_its_table_3(reference_dir):
    released = released_metrics(reference_dir)

    def cell(task, method, sub, mode, metric):
        hit = released[(released["task"] == task) & (released["method"] == method) & (released["subnetwork"] == sub)
                       & (released["mode"] == mode) & (released["metric"] == metric)]
        assert len(hit) == 1, (task, method, sub, mode, metric)
        return round(hit["mean"].iloc[0], 2), round(hit["std"].iloc[0], 2)

    # as printed in the paper's Table 3 (its std is the sample std; the files hold the population std)
    assert cell("CoLA", "structured", "random", "pruned", "mcc") == (0.43, 0.11)
    assert cell("MRPC", "structured", "random", "pruned", "accuracy") == (0.48, 0.23)
    assert cell("WNLI", "none", "full", "finetuned", "accuracy") == (0.34, 0.06)
    assert cell("STS-B", "structured", "good", "retrained", "pearson_spearman_mean") == (0.75, 0.23)
    assert cell("CoLA", "structured", "bad", "retrained", "mcc") == (0.41, 0.11)
    assert cell("QNLI", "structured", "super-bad", "retrained", "accuracy") == (0.57, 0.03)
    assert cell("MNLI", "magnitude", "good", "retrained", "accuracy") == (0.84, 0.00)
    assert cell("RTE", "majority", "none", "baseline", "accuracy") == (0.53, 0.00)


def test_key_results_order_the_subnetworks_and_say_how_much_of_the_gap_re_fine_tuning_closes():
    values = {("good", "pruned"): [0.50, 0.54], ("random", "pruned"): [0.40, 0.42], ("bad", "pruned"): [0.10, 0.14],
              ("good", "retrained"): [0.60, 0.62], ("random", "retrained"): [0.61, 0.61], ("bad", "retrained"): [0.57, 0.59]}
    rows = [_row("CoLA", seed, "structured", sub, mode, v, fraction=0.3)
            for (sub, mode), vs in values.items() for seed, v in zip((1, 2), vs)]
    rows += [_row("CoLA", seed, "none", "full", "finetuned", v) for seed, v in ((1, 0.58), (2, 0.62))]
    rows, metrics = main_rows(pd.DataFrame(rows, columns=COLUMNS))
    (record,) = key_results(cell_stats(rows), metrics).to_dict("records")
    assert record["full"] == pytest.approx(0.60) and record["fraction kept"] == pytest.approx(0.3)
    assert record["gap pruned"] == pytest.approx(0.52 - 0.12) and record["gap retrained"] == pytest.approx(0.61 - 0.58)
    assert record["gap closed"] == pytest.approx(1 - 0.03 / 0.40)
    assert ordering({s: record[f"{s} pruned"] for s in ("good", "random", "bad")}) == \
        "good 0.520 > random 0.410 > bad 0.120"
    assert ordering({"good": 0.61, "random": 0.61, "bad": 0.58}) == "good 0.610 = random 0.610 > bad 0.580"
    # a partial run: what has run, in order, and what has not
    assert ordering({"good": 0.856, "random": 0.788, "bad": math.nan}) == "good 0.856 > random 0.788; bad not yet"
    assert ordering({"good": math.nan, "random": math.nan, "bad": math.nan}) == "–"
    # a task that failed the learnt-check is left out
    assert key_results(cell_stats(rows), metrics, {"CoLA": "not learnt: ..."}).empty


def test_a_task_not_learnt_is_named_with_each_seeds_score_and_an_older_runs_reason_says_it_once():
    from bertlottery.report.tables import not_learnt_tasks

    old = ("not learnt: accuracy 0.5379 < 0.5812 (chance 0.5271): not learnt: not above chance by the margin "
           "(one-sided binomial test)")
    rows = pd.DataFrame([_row("RTE", seed, "none", "none", "finetuned", 0.53) for seed in (1, 2)], columns=COLUMNS)
    rows["note"] = old
    assert not_learnt_tasks(rows) == {"RTE": "not learnt: accuracy 0.5300, 0.5300 < 0.5812 (chance 0.5271): not above "
                                              "chance by the margin (one-sided binomial test)"}
    # one seed's reason alone, but every failed seed's score: 0.5379 was seed 1's
    rows["value"] = [0.5379, 0.5704]
    rows.loc[1, "note"] = old.replace("0.5379", "0.5704")
    assert not_learnt_tasks(rows)["RTE"].startswith("not learnt: accuracy 0.5379, 0.5704 < 0.5812 (chance 0.5271): ")
    rows.loc[1, "note"] = ""  # seed 2 learnt
    assert not_learnt_tasks(rows, partly=True)["RTE"].startswith("seed 1 of 2: not learnt: accuracy 0.5379 < 0.5812")


def test_appendix_d_run_on_its_own_seeds_says_which_and_marks_no_cell_as_short_of_seeds(tmp_path, monkeypatch):
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    rows = [_row("SST-2", seed, "none", "full", "finetuned", 0.8) for seed in (1, 2, 3)]
    rows += [_row("SST-2", 1, "structured", subnetwork, "retrained-long", 0.7 + 0.01 * epoch, epochs=epoch)
             for subnetwork in ("good", "bad") for epoch in (1, 2)]
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(rows, columns=COLUMNS).to_csv(run / "results.csv", index=False)
    (run / "config.json").write_text(json.dumps({
        "name": "long", "model": "minilm-l6", "tasks": ["SST-2"], "seeds": [1, 2, 3],
        "longer_retraining": {"epochs": 2, "methods": ["structured"], "subnetworks": ["good", "bad"], "seeds": [1]}}))
    html = unescape(build_report(run, tmp_path / "out").read_text())
    section = html[html.index("Longer re-fine-tuning (appendix D)</h2>"):]
    section = section[:section.index("<h2")]
    assert "Seed 1 (the config's longer_retraining.seeds), 2 epochs." in section
    assert "(n=1)" not in section and "0.710" in section
    assert "longer re-fine-tuning (seed 1)." in section and "band: one std" not in section


def test_a_task_not_learnt_is_folded_into_one_grey_panel_and_named_with_its_reason(tmp_path, monkeypatch):
    from bertlottery.report.figures import lottery_bars

    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    reason = "not learnt: accuracy 0.51 is not above the majority class's 0.53 by the margin"
    results = synthetic_results()
    rte = results["task"] == "RTE"
    results = results[~rte | results["method"].isin(["none", "majority"])].copy()  # its searches were skipped
    results["note"] = results["note"].astype(object)
    results.loc[(results["task"] == "RTE") & (results["method"] == "none"), "note"] = reason
    # the majority class written once per seed: the same value, shown without a spread
    results = pd.concat([results, pd.DataFrame([_row("CoLA", seed, "majority", "none", "baseline", 0.0)
                                                for seed in (1, 2, 3)], columns=COLUMNS)])
    run = tmp_path / "run"
    run.mkdir()
    results.to_csv(run / "results.csv", index=False)
    (run / "config.json").write_text(json.dumps({"name": "unlearnt", "model": "minilm-l6", "tasks": ["RTE", "CoLA"],
                                                 "seeds": [1, 2, 3]}))
    html = build_report(run, tmp_path / "out").read_text()
    out = tmp_path / "out"
    assert list(pd.read_csv(out / "tables" / "key_results.csv")["task"].unique()) == ["CoLA"]
    assert f"RTE: {reason}. Its pruning was skipped" in unescape(html)
    assert html.index('id="key-results"') < html.index('class="caution"') < html.index("<nav>")
    table3 = pd.read_csv(out / "tables" / "table3.csv").set_index("row")
    assert "0.000 ±" not in html and table3.loc["majority class", "CoLA n"] == 3
    assert "'(n=k)'" not in html  # every cell of the tables has all its seeds
    # appendix D did not run: said in place, not listed in the contents
    nav = html[html.index("<nav>"):html.index("</nav>")]
    assert "Longer re-fine-tuning" not in nav and "Not run: the config asks for no longer re-fine-tuning" in html

    rows, metrics = main_rows(results)
    cells = cell_stats(rows)
    fig = lottery_bars(cells, cells[cells["method"] == "none"], metrics=metrics, seeds=rows,
                       majority=cells[cells["method"] == "majority"], not_learnt={"RTE": reason})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[-1] == "Not learnt: no subnetworks to compare" and not any(t.startswith("RTE") for t in titles)
    grey = [ax for ax in fig.axes if ax.get_title().startswith("Not learnt")][0]
    assert "RTE: not learnt" in grey.texts[0].get_text().replace("\n", " ")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_title().startswith("CoLA")]
    assert labels and all(label == "CoLA: Matthews correlation (dev)" for label in labels)
    from matplotlib.collections import PathCollection

    dots = sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection))
    assert dots == len(rows[(rows["task"] == "CoLA") & rows["subnetwork"].isin(["good", "random", "bad"])])  # one a seed


def test_skipped_stages_and_every_git_revision_are_counted(tmp_path):
    from bertlottery.report.sections.run import revisions_table, status_table

    stages = []
    for i, (state, revision, dirty) in enumerate((("done", "aaa", False), ("done", "aaa", None), ("done", "bbb", False),
                                                  ("done", "bbb", True), ("skipped", None, None))):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        if revision:
            (folder / "environment.json").write_text(json.dumps({"git_revision": revision, "git_dirty": dirty}))
        stages.append(StageInfo(f"finetune/RTE/s{i}", "finetune", "RTE", {}, state, folder))
    frame = status_table(stages).frame.set_index("kind")
    assert frame.loc["finetune", "skipped"] == 1 and frame.loc["finetune", "done"] == 4
    revisions = revisions_table(stages).frame.set_index("git revision")
    assert revisions["stages"].to_dict() == {"aaa": 2, "bbb": 1, "bbb with uncommitted changes": 1}


def test_time_and_energy_are_summed_per_kind_and_over_the_run(tmp_path):
    stages = [StageInfo("finetune/RTE/a", "finetune", "RTE", {}, "done", tmp_path, 10.0, 0.002, 0.001),
              StageInfo("finetune/RTE/b", "finetune", "RTE", {}, "done", tmp_path, 20.0, 0.004, 0.002),
              StageInfo("prune/RTE/c", "prune", "RTE", {}, "done", tmp_path, 5.0, None, None),
              StageInfo("prune/RTE/d", "prune", "RTE", {}, "left", tmp_path)]
    by_kind, by_stage = cost_tables(stages)
    frame = by_kind.frame.set_index("kind")
    assert frame.loc["finetune", "seconds"] == 30.0 and frame.loc["finetune", "energy_kwh"] == pytest.approx(0.006)
    assert math.isnan(frame.loc["prune", "energy_kwh"]) and frame.loc["prune", "stages"] == 1
    assert frame.loc["all", "seconds"] == 35.0 and frame.loc["all", "stages_with_energy"] == 2
    assert frame.loc["all", "emissions_kg"] == pytest.approx(0.003)
    assert len(by_stage.frame) == 3  # finished stages only
    assert by_kind.display.loc["all", "time"] == "35.0 s"
    assert by_kind.display["share of time"].tolist() == ["85.7%", "14.3%", "100.0%"]
    assert by_kind.display.loc["all", "stages with an energy estimate"] == "2"


# ---- escaping and a synthetic run directory --------------------------------------------------------------

EVIL = "<script>alert('x')</script>"


def _synthetic_run(folder: Path, *, name: str = "synthetic", task: str | None = None) -> Path:
    folder.mkdir(parents=True)
    results = synthetic_results()
    if task is not None:
        results.loc[results["task"] == "RTE", "task"] = task
    results.to_csv(folder / "results.csv", index=False)
    (folder / "config.json").write_text(json.dumps({"name": name, "model": "minilm-l6", "tasks": ["RTE", "CoLA"],
                                                     "seeds": [1, 2, 3]}))
    return folder


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _open(browser, html: Path) -> tuple[object, list[str]]:
    """The report loaded from a file:// URL, and every console error, page error and dialog it caused."""
    page = new_page(browser, viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.goto(html.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, problems


def test_names_from_the_data_and_the_config_are_escaped(tmp_path, browser, monkeypatch):
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = _synthetic_run(tmp_path / "run", name=EVIL, task=EVIL)
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html  # shown, as text
    page, problems = _open(browser, tmp_path / "out" / "report.html")
    assert problems == []
    assert page.evaluate("document.scripts.length") == 0
    assert EVIL in page.title() and EVIL in page.inner_text("table[data-table=table3]")
    # no reference folder given: the page says the comparison is not there
    assert "comparison with the paper's released metrics and masks: not included" in page.inner_text("body")
    page.close()


# ---- the smoke study, end to end -----------------------------------------------------------------------

# every table's header cells, each scrolled into view: is it the element drawn at its centre, inside the
# window? And each table's first row label and first group heading, with its table scrolled fully right:
# still drawn in place?
LAYOUT_JS = """() => {
  const out = {unreachable: [], hidden_labels: [], tables: 0};
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const drawn = (el) => { const r = el.getBoundingClientRect();
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    if (x < 0 || x > innerWidth || y < 0 || y > innerHeight) return false;
    const top = document.elementFromPoint(x, y); return top === el || el.contains(top); };
  for (const table of document.querySelectorAll('table[data-table]')) {
    out.tables += 1;
    const box = table.closest('.scroll');
    for (const th of table.querySelectorAll('thead th')) {
      if (!th.textContent.trim()) continue;
      th.scrollIntoView({block: 'center', inline: 'center'});
      if (!drawn(th)) out.unreachable.push(table.dataset.table + ': ' + th.textContent.trim());
    }
    // a row's label, and a group's heading (its text: the cell spans the table)
    const labels = [table.querySelector('tbody tr:not(.group) th'), table.querySelector('tbody tr.group th .pin')];
    for (const label of labels) {
      if (!label) continue;
      label.scrollIntoView({block: 'center', inline: 'nearest'});
      box.scrollLeft = box.scrollWidth;
      if (!drawn(label)) out.hidden_labels.push(table.dataset.table + ': ' + label.textContent.trim());
      box.scrollLeft = 0;
    }
  }
  return out;
}"""

# at the window's width: each table's width, whether the text column (the page's h1) is narrower, and
# whether it is cut (scrolls sideways, or reaches past the window) although it is narrower than the window
WIDE_JS = """() => {
  const column = document.querySelector('h1').getBoundingClientRect().width;
  const room = document.documentElement.clientWidth;
  return Array.from(document.querySelectorAll('table[data-table]')).map(t => {
    const box = t.closest('.scroll'), r = box.getBoundingClientRect();
    return {table: t.dataset.table, wider: t.offsetWidth > column, fits: t.offsetWidth <= room - 80,
            cut: box.scrollWidth > box.clientWidth || r.left < 0 || r.right > room};
  });
}"""

FIGURES_JS = """() => Array.from(document.images).map(i => {
  const link = i.closest('a'), figure = i.closest('figure');
  const caption = figure && figure.querySelector('figcaption');
  return {name: i.dataset.figure, href: link ? link.getAttribute('href') : null, width: i.naturalWidth,
          height: i.naturalHeight, caption: caption ? caption.innerText.trim() : '',
          data: figure ? Array.from(figure.querySelectorAll('figcaption a.data')).map(a => a.getAttribute('href')) : []};
})"""

KEY_RESULTS_JS = """() => {
  const table = document.querySelector('#key-results table[data-table=key_results]');
  const heads = Array.from(table.querySelectorAll('thead tr:last-child th')).slice(1).map(th => th.innerText.trim());
  return Array.from(table.querySelectorAll('tbody tr')).map(tr => {
    const cells = Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim());
    return [tr.querySelector('th').innerText.trim(), Object.fromEntries(heads.map((h, k) => [h, cells[k]]))];
  });
}"""


def test_table3s_pinned_label_column_stays_narrow(tmp_path, browser, monkeypatch):
    """Table 3 with the randomly initialised baseline: at 1280 px its label column (pinned while the
    table scrolls) is no wider than its other labels need, the baseline's full wording in a note."""
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    baseline = [_row(task, seed, "random-init", "random", "baseline", 0.5, fraction=0.3)
                for task in ("RTE", "CoLA") for seed in (1, 2, 3)]
    pd.concat([synthetic_results(), pd.DataFrame(baseline, columns=COLUMNS)]).to_csv(run / "results.csv", index=False)
    (run / "config.json").write_text(json.dumps({"name": "baseline", "model": "minilm-l6", "tasks": ["RTE", "CoLA"],
                                                 "seeds": [1, 2, 3]}))
    out = build_report(run, tmp_path / "out")
    page, problems = _open(browser, out)
    assert problems == []
    # each label's own width (the column is as wide as the widest; a narrow table's group headings may widen it)
    widths = page.evaluate("""Array.from(document.querySelectorAll('table[data-table=table3] tbody tr:not(.group) th'))
        .map(th => { const range = document.createRange(); range.selectNodeContents(th);
                     return [th.innerText.trim(), range.getBoundingClientRect().width]; })""")
    page.close()
    labels = dict(widths)
    assert "random s-mask (fine-tuned)" in labels and "a random s-mask of the 'bad' subnetwork's size" in unescape(out.read_text())
    assert max(labels.values()) < 180, widths


def _check_layout(page, out: Path, *, tables: int, drawn_from: dict[str, str], wide: list[str]) -> None:
    """At 1280 px: every table's header cells reachable and its row labels in view while scrolled; every
    image captioned, opening its own PNG full-size; the page's results.csv and figures' CSVs there. At
    1920 px: the tables wider than the text column (``wide``) shown whole.
    ``tables``: how many tables the page has at least; ``drawn_from``: {figure: a file its caption links}."""
    from PIL import Image

    page.set_viewport_size({"width": 1920, "height": 1080})
    widths = page.evaluate(WIDE_JS)
    assert sorted(w["table"] for w in widths if w["wider"]) == sorted(wide), widths
    assert [w["table"] for w in widths if w["fits"] and w["cut"]] == [], widths
    page.set_viewport_size({"width": 1280, "height": 900})
    layout = page.evaluate(LAYOUT_JS)
    assert layout["tables"] >= tables and layout["unreachable"] == [] and layout["hidden_labels"] == [], layout
    figures = page.evaluate(FIGURES_JS)
    for figure in figures:
        assert len(figure["caption"]) > 20, figure["name"]
        assert figure["href"] == f"figures/{figure['name']}.png", figure
        with Image.open(out / figure["href"]) as image:
            assert image.size == (figure["width"], figure["height"]), figure["name"]
        assert all((out / href).is_file() for href in figure["data"]), figure
    # every figure links what it was drawn from (the example attention maps are themselves the data)
    assert [f["name"] for f in figures if not f["data"] and f["name"] != "attention-examples"] == [], figures
    links = {f["name"]: f["data"] for f in figures}
    for name, href in drawn_from.items():
        assert href in links[name], (name, links.get(name))
    assert page.get_attribute("a.results", "href") == "results.csv" and (out / "results.csv").is_file()
    # the key results and the cautions (where there are any) come before the contents
    tops = page.evaluate("['#key-results', '.caution', 'nav'].map(s => { const e = document.querySelector(s);"
                         " return e && e.getBoundingClientRect().top + scrollY; })")
    assert tops[0] is not None and tops[2] is not None, tops
    shown = [top for top in tops if top is not None]
    assert shown == sorted(shown), tops


def _check_key_results(shown: list, results: pd.DataFrame, metrics: dict[str, tuple[str, str]]) -> None:
    """The key-results box's numbers against the same numbers computed here from results.csv.

    ``metrics``: {task: (its metric in results.csv, the metric's name on the page)}, in the page's order;
    the box has a row per task and pruning method.
    """
    if "note" not in results.columns:  # a results table written before the learnt-check
        results = results.assign(note=None)
    dev = results[results["split"] == "dev"]
    labels = [label.splitlines() for label, _ in shown]  # a label's second line: the metric
    expected = []
    for task, (metric, name) in metrics.items():
        # the learnt-check is off in the smoke config: a model it marks not learnt is pruned anyway, its rows marked
        full = dev[(dev["task"] == task) & (dev["method"] == "none") & (dev["mode"] == "finetuned")]
        marked = full["note"].fillna("").astype(str).str.startswith("not learnt").all()
        expected += [[f"{task}, {method}{' (not learnt)' if marked else ''}", name]
                     for method in ("s-pruning", "m-pruning")]
    assert labels == expected
    rows = {label[0].removesuffix(" (not learnt)"): cells for label, (_, cells) in zip(labels, shown)}
    for task, (metric, _) in metrics.items():
        part = dev[(dev["task"] == task) & (dev["metric"] == metric)]

        def mean(**keys) -> float:
            chosen = part
            for key, value in keys.items():
                chosen = chosen[chosen[key] == value]
            assert not chosen.empty, (task, keys)
            return float(chosen["value"].mean())

        full = mean(method="none", subnetwork="full", mode="finetuned")
        for method, label in (("structured", "s-pruning"), ("magnitude", "m-pruning")):
            cells = rows[f"{task}, {label}"]
            assert cells["full model"] == f"{full:.3f}", (task, label)
            for mode, column in (("pruned", "pruned"), ("retrained", "re-fine-tuned")):
                # one subnetwork a line, best first: "good 0.741 >", "random 0.664 >", "bad 0.605"
                listed = [line.rstrip(" >=").split(" ") for line in cells[column].splitlines()]
                assert dict(listed) == {sub: f"{mean(method=method, subnetwork=sub, mode=mode):.3f}"
                                        for sub in ("good", "random", "bad")}, (task, label, column)
                values = [float(value) for _, value in listed]
                assert values == sorted(values, reverse=True), (task, label, column)
            gap = [mean(method=method, subnetwork="good", mode=m) - mean(method=method, subnetwork="bad", mode=m)
                   for m in ("pruned", "retrained")]
            text = f"{gap[0]:.3f} → {gap[1]:.3f}"
            if gap[0] > 0:
                closed = 1 - gap[1] / gap[0]
                text += f"\n({100 * closed:.0f}% closed)" if closed >= 0 else f"\n(widened by {gap[1] - gap[0]:.3f})"
            assert cells["good − bad gap\npruned → re-fine-tuned"] == text, (task, label)
            kept = part[(part["method"] == method) & (part["subnetwork"] == "good") & (part["mode"] == "pruned")]["fraction_kept"].mean()
            assert cells["weights kept"] == f"{100 * kept:.1f}%", (task, label)

@pytest.fixture(scope="module")
def smoke_run(tiny_model_dir, tmp_path_factory) -> Path:
    """The smoke config run through the real CLI on the tiny model (about 40 s of CPU)."""
    root = tmp_path_factory.mktemp("smoke")
    glue = write_rte(root / "glue", n_train=16, n_dev=12)
    run_dir = root / "study"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BERTLOTTERY_CACHE", str(root / "cache"))
        assert main(["run", str(SMOKE), f"model={tiny_model_dir}", f"glue_dir={glue}", "train.learning_rate=1e-3",
                     "train.batch_size=8", "train.max_train_examples=16", "energy.track=false",
                     "--run-dir", str(run_dir), "--no-progress"]) == 0
    write_graph_of(run_dir)
    return run_dir


SMOKE_TABLES = ["key_results", "stages", "searches", "table3", "sizes", "table2_bad_vs_baselines", "super_survivors",
                "longer_retraining", "stability", "cost_by_kind", "cost_by_stage", "environment", "revisions"]
SMOKE_FIGURES = ["figure2_subnetworks", "figure17_super_survivors", "appendixD_longer_retraining",
                 "survival_structured_rte", "survival_magnitude_rte", "figure3_importance_rte",
                 *[f"survival_paper_{t}" for t in ("cola", "sst-2", "mrpc", "qqp", "sts-b", "mnli", "qnli", "rte", "wnli")],
                 "paper_overlap", "paper_overlap_super", "paper_tasks_per_element"]


def test_the_smoke_study_report_renders_in_chromium(smoke_run, reference_dir, tmp_path, browser, capsys, monkeypatch):
    out = tmp_path / "report"
    assert main(["report", str(smoke_run), "--out", str(out), "--reference", str(reference_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'report.html'} ({len(SMOKE_FIGURES)} figures, {len(SMOKE_TABLES)} tables" in printed
    html = (out / "report.html").read_text()
    assert "could not be built" not in html
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html), "the page must not load anything external"

    page, problems = _open(browser, out / "report.html")
    assert problems == []
    images = page.evaluate("Array.from(document.images).map(i => [i.dataset.figure, i.complete, i.naturalWidth,"
                           " i.naturalHeight, i.src.slice(0, 22)])")
    assert sorted(i[0] for i in images) == sorted(SMOKE_FIGURES)
    for name, complete, width, height, src in images:
        assert complete and width > 100 and height > 100, name
        assert src == "data:image/png;base64,", name
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
        assert (out / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    tables = page.evaluate("Array.from(document.querySelectorAll('table[data-table]')).map(t => "
                           "[t.dataset.table, t.querySelectorAll('tbody tr').length])")
    assert sorted(t[0] for t in tables) == sorted(SMOKE_TABLES)
    assert all(rows > 0 for _, rows in tables), tables
    for name in SMOKE_TABLES:
        assert (out / "tables" / f"{name}.csv").is_file()
    assert "the paper's released masks" in page.inner_text("#stability-of-the-good-subnetworks-across-seeds-section-5-1-figure-1-appendix-a")
    _check_layout(page, out, tables=10, drawn_from={"figure2_subnetworks": "figures/figure2_subnetworks.csv",
                                                    "survival_structured_rte": "figures/survival_structured_rte.csv",
                                                    "figure3_importance_rte": "figures/figure3_importance_rte.csv"},
                  wide=["stability"])  # the paper's nine tasks beside this run's
    key_results = page.evaluate(KEY_RESULTS_JS)
    page.close()
    _check_key_results(key_results, pd.read_csv(out / "results.csv"), {"RTE": ("accuracy", "accuracy")})

    # the CSV's numbers are the results table's, recomputed here
    results = pd.read_csv(smoke_run / "results.csv")
    main_split = results[(results["split"] == "dev") & (results["metric"] == "accuracy")]
    table3 = pd.read_csv(out / "tables" / "table3.csv")
    good = main_split[(main_split["method"] == "structured") & (main_split["subnetwork"] == "good")
                      & (main_split["mode"] == "retrained")]["value"]
    row = table3[(table3["method"] == "structured") & (table3["subnetwork"] == "good") & (table3["mode"] == "retrained")]
    assert row["RTE mean"].iloc[0] == pytest.approx(good.mean()) and row["RTE n"].iloc[0] == 2
    assert row["RTE paper mean"].iloc[0] == pytest.approx(0.5747, abs=1e-3)  # head_mlp_retrained, RTE
    assert set(table3["subnetwork"]) >= {"full", "good", "random", "bad", "super-good", "super-random", "super-bad"}

    # one row per search, its threshold and full score its trace's, the dev count its fine-tuning's
    searches = pd.read_csv(out / "tables" / "searches.csv")
    traces = sorted(smoke_run.glob("stages/prune/RTE/*/trace.json"))
    assert len(searches) == len(traces) > 0
    for path in traces:
        trace = json.loads(path.read_text())
        stage = json.loads((path.parent / "stage.json").read_text())
        row = searches[(searches["method"] == stage["keys"]["method"]) & (searches["seed"] == stage["keys"]["seed"])]
        assert row["threshold"].iloc[0] == pytest.approx(trace["min_metric"])
        assert row["allowed_loss"].iloc[0] == pytest.approx(trace["full_metric"] - trace["min_metric"])
        assert row["dev_examples"].iloc[0] == 12
        assert row["steps_accepted"].iloc[0] == sum(step["accepted"] for step in trace["steps"])

    # each of the paper's kappas beside its ceiling, its random-mask interval and (5 seeds) its bootstrap interval
    from bertlottery import stats

    stability = pd.read_csv(out / "tables" / "stability.csv")
    paper = stability[stability["source"].str.startswith("The paper's")].set_index("task")
    summary = json.loads((out / "tables" / "stability_paper.json").read_text())
    for task, row in paper.iterrows():
        heads = summary["tasks"][task]["heads"]
        nested = np.arange(heads["n_elements"])[None, :] < np.array(heads["kept_per_seed"])[:, None]
        assert row["kappa heads ceiling"] == pytest.approx(stats.max_fleiss_kappa(nested).value), task
        assert row["kappa heads"] <= row["kappa heads ceiling"] + 1e-9, task
        assert row["kappa heads random masks low"] - 1e-9 <= row["kappa heads random masks mean"] \
            <= row["kappa heads random masks high"] + 1e-9, task
        assert row["kappa heads bootstrap low"] <= row["kappa heads bootstrap high"], task
    assert paper.loc["CoLA", "kappa heads"] > paper.loc["CoLA", "kappa heads random masks high"]

    # the default output folder is RUN_DIR/report; a second report replaces the first
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    assert main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "report" / "report.html").is_file()
    (smoke_run / "report" / "figures" / "stale.png").write_bytes(b"old")
    assert main(["report", str(smoke_run)]) == 0
    assert not (smoke_run / "report" / "figures" / "stale.png").exists()
    assert "released metrics and masks: not included" in (smoke_run / "report" / "report.html").read_text()
    capsys.readouterr()


def test_a_partial_run_reports_what_exists_and_what_is_missing(smoke_run, tmp_path, browser, monkeypatch):
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = tmp_path / "partial"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("model", "report"))
    # a study still going: no results table yet, some stages not run, one failed
    (run / "results.csv").unlink()
    (run / "results.parquet").unlink()
    gone = sorted((run / "stages" / "retrain" / "RTE").glob("seed2-structured-*"))
    gone += sorted((run / "stages" / "super").rglob("stage.json"))
    assert gone
    for path in gone:
        folder = path if path.is_dir() else path.parent
        stage_id = str(folder.relative_to(run / "stages"))
        shutil.rmtree(folder)
        (run / "rows" / f"{stage_id.replace('/', '__')}.json").unlink(missing_ok=True)
    failed = next((run / "stages" / "prune" / "RTE").glob("seed2-magnitude-*"))
    failed_id = str(failed.relative_to(run / "stages"))
    shutil.rmtree(failed)
    (run / "failed").mkdir()
    (run / "failed" / f"{failed_id.replace('/', '__')}.json").write_text(json.dumps(
        {"id": failed_id, "error": "RuntimeError: out of <memory>"}))

    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    missing = json.loads((tmp_path / "out" / "missing.json").read_text())
    status = missing["Status of the run"]
    assert any("1 failed stage" in line for line in status)
    assert any("not finished" in line for line in status)
    lottery = missing["Good, random and bad subnetworks (Table 3, Figure 2)"]
    assert "RTE prune magnitude: 1 failed" in lottery
    assert "RTE retrain structured bad retrained: 1 left" in lottery
    supers = missing["Super-survivor subnetworks (appendix E)"]
    assert any(line.startswith("RTE super structured: 1 left") for line in supers)

    html = (tmp_path / "out" / "report.html").read_text()
    assert "results from rows/" in html
    assert "out of &lt;memory&gt;" in html and failed_id in html
    page, problems = _open(browser, tmp_path / "out" / "report.html")
    assert problems == []
    text = page.inner_text("table[data-table=table3]")
    assert "(n=1)" in text  # seed 2's structured re-fine-tuning is gone
    assert "super" not in page.inner_text("#figure-figure2_subnetworks")
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.close()


def test_a_run_with_nothing_but_its_config_still_gets_a_report(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "fresh", "model": "minilm-l6", "tasks": ["RTE"],
                                                 "seeds": [1, 2]}))
    write_graph_of(run)
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    missing = json.loads((tmp_path / "out" / "missing.json").read_text())
    assert any(line.startswith("RTE: nothing yet") for line in missing["Good, random and bad subnetworks (Table 3, Figure 2)"])
    assert "No results yet." in (tmp_path / "out" / "report.html").read_text()

    # a Compressing-BERT study gets no lottery sections (its package brings its own)
    (run / "config.json").write_text(json.dumps({"name": "gordon", "model": "minilm-l6", "gordon": {}}))
    (run / "graph.json").unlink()
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Status of the run" in html and "Time and energy" in html and "Table 3" not in html


def test_a_two_task_run_gets_its_own_overlap_figures(tmp_path, browser, monkeypatch):
    """Good masks of two tasks x two seeds (written here) go through the stability helper's
    statistics into survival heatmaps, task-overlap matrices and the tasks-per-head map."""
    import torch

    from bertlottery.masks import HeadMask, Masks, MlpMask, save_masks

    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = tmp_path / "two"
    run.mkdir()
    config = {"name": "two", "model": "minilm-l6", "tasks": ["RTE", "MRPC"], "seeds": [1, 2], "methods": ["structured"]}
    generator = torch.Generator().manual_seed(0)
    for stage in [s for s in write_graph_of(run, config) if s.kind == "prune"]:  # the run's own prune stages
        folder = run / "stages" / stage.id
        heads = torch.rand(2, 4, generator=generator) > 0.4
        save_masks(folder / "mask.safetensors", Masks(HeadMask(heads), MlpMask(torch.tensor([True, stage.keys["seed"] == 1]))))
        (folder / "stage.json").write_text(json.dumps({
            "id": stage.id, "kind": "prune", "task": stage.task, "keys": stage.keys, "inputs": {}, "seconds": 1.5}))
    (run / "config.json").write_text(json.dumps(config))
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    page, problems = _open(browser, tmp_path / "out" / "report.html")
    assert problems == []
    figures = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0).map(i => i.dataset.figure)")
    assert {"survival_structured_rte", "survival_structured_mrpc", "run_overlap", "run_overlap_super",
            "run_tasks_per_element"} <= set(figures)
    stability = json.loads((tmp_path / "out" / "tables" / "stability_run_structured.json").read_text())
    assert stability["tasks"]["MRPC"]["mlps"]["kept_per_seed"] == [2, 1]
    assert "MRPC" in page.inner_text("table[data-table=stability]")
    page.close()


# ---- a real two-task run -------------------------------------------------------------------------------

REAL_RUN = REPO / "results" / "minilm-glue"
# two tasks MiniLM learnt in that run (its README), with metrics of two kinds: STS-B's main one is the mean
# of Pearson and Spearman, which results.csv holds beside both
REAL_TASKS = {"SST-2": ("accuracy", "accuracy"), "STS-B": ("pearson_spearman_mean", "Pearson/Spearman mean")}
REAL_TABLES = ["key_results", "table3", "sizes", "table2_bad_vs_baselines", "super_survivors", "longer_retraining",
               "environment"]
REAL_FIGURES = ["figure2_subnetworks", "figure17_super_survivors", "appendixD_longer_retraining"]


def test_a_real_two_task_run_renders_in_chromium_with_its_own_numbers(tmp_path, reference_dir, browser):
    """Two tasks of the committed MiniLM run on real GLUE: their results.csv rows unchanged and the run's
    config cut to them, without the stage folders (as a run copied without its models and masks). The
    page draws what the results hold and names what needs the stages."""
    run = tmp_path / "run"
    run.mkdir()
    results = pd.read_csv(REAL_RUN / "results.csv")
    results = results[results["task"].isin(REAL_TASKS)]
    results.to_csv(run / "results.csv", index=False)
    config = json.loads((REAL_RUN / "config.json").read_text())
    config.update(name="minilm-glue, two tasks", tasks=list(REAL_TASKS))
    (run / "config.json").write_text(json.dumps(config))
    # the paper's released metrics without its masks (whose nine tasks' heatmaps would cost most of the time)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "evaluate_masked").symlink_to(reference_dir / "evaluate_masked")
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--reference", str(reference)]) == 0
    assert "could not be built" not in (out / "report.html").read_text()

    page, problems = _open(browser, out / "report.html")
    assert problems == []
    tables = page.evaluate("Array.from(document.querySelectorAll('table[data-table]')).map(t => t.dataset.table)")
    assert sorted(tables) == sorted(REAL_TABLES)
    figures = page.evaluate("Array.from(document.images).map(i => i.dataset.figure)")
    assert sorted(figures) == sorted(REAL_FIGURES)
    _check_layout(page, out, tables=len(REAL_TABLES), wide=[],
                  drawn_from={name: f"figures/{name}.csv" for name in REAL_FIGURES})
    key_results = page.evaluate(KEY_RESULTS_JS)
    assert page.query_selector(".caution") is None  # both tasks were learnt
    page.close()
    _check_key_results(key_results, results, REAL_TASKS)
    kappa = {label.split(",")[0]: cells["κ heads\n(its ceiling; random masks' 95%)"] for label, cells in key_results
             if "s-pruning" in label}
    assert kappa == {task: "– (no s-pruning masks in the run folder)" for task in REAL_TASKS}

    # Table 3 on each task's own metric, beside the paper's released metric of that task
    table3 = pd.read_csv(out / "tables" / "table3.csv").set_index("row")
    for task, (metric, _) in REAL_TASKS.items():
        full = results[(results["task"] == task) & (results["method"] == "none") & (results["metric"] == metric)]
        assert table3.loc["full model (fine-tuned)", f"{task} mean"] == pytest.approx(full["value"].mean())
        assert table3.loc["full model (fine-tuned)", f"{task} n"] == 3
        assert table3.loc["full model (fine-tuned)", f"{task} paper mean"] > 0.8  # bert-base learnt both
    # what needs the stage folders is named, with what the reference folder lacks
    missing = json.loads((out / "missing.json").read_text())
    stability = missing["Stability of the good subnetworks across seeds (section 5.1, Figure 1, appendix A)"]
    for label in ("s-pruning", "m-pruning"):
        assert f"{label} masks of this run: {run} has no stages/ folder, where the prune stages keep their masks " \
               "(a copy of the run's results and config alone)" in stability
    assert f"comparison with the paper's released masks: {reference} has no masks/heads_mlps/ " \
           "(../shared/reference/prasanna2020 has both)" in stability
    lottery = missing["Good, random and bad subnetworks (Table 3, Figure 2)"]
    assert not any("released metrics" in line for line in lottery)
    # the searches' traces live in the stage folders too: said once, not as stages "missing"
    assert "Pruning searches: how much each could lose" not in missing
    assert f"{run} has no stages/ folder, where the prune stages keep their traces" in (out / "report.html").read_text()


# ---- package sections ----------------------------------------------------------------------------------

def provider_ok(run, out_dir: Path) -> Section:
    from bertlottery.report.html import paragraph

    return Section(f"Plugged in {EVIL}", paragraph(f"run {run.run_dir.name} {EVIL}"), missing=[f"later {EVIL}"])


def provider_none(run, out_dir: Path) -> None:
    return None


def provider_raises(run, out_dir: Path) -> Section:
    raise RuntimeError("plugin broke")


def test_section_providers_plug_in_escaped_and_a_broken_one_is_reported(tmp_path, monkeypatch):
    from bertlottery import report

    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    monkeypatch.setattr(report, "PLUGIN_SECTIONS", [])  # registered for this test only
    register_section(provider_none)
    register_section(provider_ok)
    run = _synthetic_run(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0  # through the CLI: registered ones
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in html.lower()
    assert "Plugged in &lt;script&gt;" in html and "later &lt;script&gt;" in html
    assert html.index("Plugged in") < html.index("Time and energy")  # before the costs, config, environment
    assert "provider_none" not in html  # a section with nothing to show is left out

    # one report's own sections: a broken one gets a section saying so, the rest is still written
    build_report(run, tmp_path / "out", sections=[provider_raises])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Section test_report:provider_raises" in html and "RuntimeError: plugin broke" in html
    assert "Plugged in &lt;script&gt;" in html and "Time and energy" in html
    missing = json.loads((tmp_path / "out" / "missing.json").read_text())
    assert missing["Section test_report:provider_raises"] == [
        "Section test_report:provider_raises: could not be built (RuntimeError: plugin broke)"]
    with pytest.raises(TypeError, match="is a function"):
        register_section("test_report:provider_ok")  # sections are functions, not names


def test_every_package_section_is_a_function_that_skips_a_run_without_its_stages(tmp_path):
    from bertlottery.report.build import package_sections
    from bertlottery.report.rundata import load_run

    run = load_run(_synthetic_run(tmp_path / "run"))  # a lottery study: no attention, no Compressing-BERT stages
    functions = package_sections()
    assert len(functions) >= 2
    for function in functions:
        assert callable(function)
        assert function(run, tmp_path / "out") is None, function


# ---- what a report reads ---------------------------------------------------------------------------------

def test_a_run_without_graph_json_reports_the_stages_on_disk_and_says_so(smoke_run, tmp_path, monkeypatch):
    """A run written before runs had graph.json: every stage folder on disk, and a line saying so."""
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = tmp_path / "old"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("model", "report"))
    (run / "graph.json").unlink()
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "this run has no graph.json" in html and "bertlottery run CONFIG --run-dir RUN" in html
    stages = pd.read_csv(tmp_path / "out" / "tables" / "stages.csv").set_index("kind")
    on_disk = len(list((run / "stages").glob("*/*/*/stage.json")))
    assert stages.loc["all", "done"] == on_disk and stages.loc["all", "left"] == 0
    missing = json.loads((tmp_path / "out" / "missing.json").read_text())
    assert any("no readable graph.json" in line for line in missing["Super-survivor subnetworks (appendix E)"])


NO_PIPELINE = """
import argparse
import importlib
import sys

# the two commands' own modules, as bertlottery.cli registers and runs them (the full CLI also builds
# the training commands' arguments, which is not what is measured here)
parser = argparse.ArgumentParser()
sub = parser.add_subparsers()
for name in ("bertlottery.analysis.cli", "bertlottery.report.cli"):
    importlib.import_module(name).register(sub)
args = parser.parse_args(sys.argv[1:])
code = args.func(args)
heavy = [m for m in ("bertlottery.pipeline", "bertlottery.config", "bertlottery.training", "bertlottery.recipes",
                     "bertlottery.lottery", "transformers.trainer", "accelerate",
                     # a lottery study's report: the Compressing-BERT section imports nothing heavy to say so
                     "bertlottery.gordon.stages", "bertlottery.gordon.analysis", "bertlottery.gordon.mlm")
         if m in sys.modules]
print("IMPORTED", heavy)
sys.exit(code)
"""


@pytest.mark.parametrize("command", ["report", "stability"])
def test_report_and_stability_read_a_run_without_importing_the_pipeline(smoke_run, tmp_path, command):
    """Both commands read graph.json and the stage folders, never the pipeline, the config or training
    (nor, for a lottery study, the Compressing-BERT package's modules)."""
    import subprocess
    import sys

    argv = [command, str(smoke_run)] + (["--out", str(tmp_path / "out")] if command == "report" else [])
    done = subprocess.run([sys.executable, "-c", NO_PIPELINE, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout, done.stdout[-2000:]
    if command == "report":
        assert (tmp_path / "out" / "tables" / "stability.csv").is_file()  # the statistics ran too
    else:
        assert "RTE" in done.stdout and "kappa" in done.stdout


# ---- refusals ------------------------------------------------------------------------------------------

def test_report_of_something_that_is_not_a_run_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a study run directory" in err
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = _synthetic_run(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path)]) == 2  # a folder that is no report: not replaced
    assert "was not written by bertlottery for report output" in capsys.readouterr().err  # the one rule's words
    assert (tmp_path / "notes.txt").is_file()
    assert main(["report", str(run), "--iterations", "0,last"]) == 2
    assert "--iterations" in capsys.readouterr().err
    assert main(["report", str(run), "--reference", str(tmp_path / "run")]) == 2
    assert "holds neither evaluate_masked/ nor masks/" in capsys.readouterr().err


def test_searches_that_could_lose_less_than_the_dev_noise_are_named_before_any_number():
    """MRPC's case in the minilm-glue re-run: full 0.772 on 408 dev pairs, threshold 0.763 (above_chance),
    an allowed loss of 3.6 pairs against a standard error of 8.5; SST-2's 31.5 of 872 is 3.2 of them."""
    from bertlottery.metrics import standard_error
    from bertlottery.report.sections.searches import search_caution_lines, searches_table

    def record(task, seed, full, threshold, n, kept):
        error = standard_error("accuracy", full, n)
        return {"task": task, "method": "structured", "seed": seed, "metric": "accuracy", "criterion": "above_chance",
                "full": full, "threshold": threshold, "allowed_loss": full - threshold, "dev_examples": n,
                "standard_error": error, "allowed_in_standard_errors": (full - threshold) / error,
                "steps_accepted": 1, "steps": 4, "heads_kept": 65, "mlps_kept": 5, "fraction_kept": kept}

    records = [record("SST-2", 42, 0.8704, 0.8343, 872, 0.385), record("MRPC", 1337, 0.7721, 0.7632, 408, 0.857),
               record("MRPC", 42, 0.7917, 0.7809, 408, 0.958)]
    assert standard_error("accuracy", 0.7721, 408) == pytest.approx((0.7721 * 0.2279 / 408) ** 0.5)
    assert standard_error("mcc", 0.5, 101) == pytest.approx(0.75 / 10)
    lines = search_caution_lines(None, records)
    assert len(lines) == 1 and lines[0].startswith("MRPC, s-pruning: the searches could lose at most 0.009-0.011 accuracy "
                                                   "(3.6-4.4 of 408 dev examples)")
    assert "the size of the good subnetworks (86-96% of the body) is set by that noise" in lines[0]
    assert "2 seeds" in lines[0]
    table = searches_table(records)
    assert table.row_classes == ["", "unlearnt", "unlearnt"]  # greyed where the allowed loss is under 1 SE
    assert table.display["allowed loss"].tolist()[1] == "0.009 (3.6 of 408 examples)"
    assert table.display["allowed / standard error"].tolist() == ["3.2", "0.4", "0.5"]


def test_the_contents_list_each_part_of_a_section_under_it():
    """A section's parts (its ``<h3 id=...>`` headings: one per experiment of the Gordon section) get
    their own entries in the contents, under the section's, in page order; a heading without an id has none."""
    from bertlottery.report.html import render_page
    from bertlottery.report.section import Section

    body = ('<h3 id="gordon-budgets">Budgets &amp; seeds</h3><p>x</p><h3>not a part</h3>'
            '<h3 id="gordon-after">Pruning after fine-tuning (Figure 3)</h3>')
    sections = [Section("Status", "<p>s</p>"), Section("Compressing BERT", body, anchor="gordon")]
    assert sections[1].parts == [("gordon-budgets", "Budgets &amp; seeds"),
                                 ("gordon-after", "Pruning after fine-tuning (Figure 3)")]
    page = render_page(title="t", run_dir="r", generated="g", version="v", results_source="rows", summary="",
                       problems=[], sections=sections)
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert ('<li><a href="#gordon">Compressing BERT</a><ol><li><a href="#gordon-budgets">Budgets &amp; seeds</a></li>'
            '<li><a href="#gordon-after">Pruning after fine-tuning (Figure 3)</a></li></ol></li>') in nav
    assert "not a part" not in nav and nav.count("<ol>") == 2  # the section without parts has no inner list
