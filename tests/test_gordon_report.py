"""The Gordon section's pieces on known inputs: the paper's Table 1 beside ours, the budgets and the
cautions, G Fig. 5's one-shot curve against the masks themselves, and the figures' axes and colours."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from bertlottery.cli import main
from bertlottery.config import ConfigError, load
from bertlottery.gordon import paper
from bertlottery.gordon.analysis import oneshot_curve, table1
from bertlottery.gordon.pruning import magnitude_mask
from bertlottery.gordon.report import (
    average_figure,
    before_pruning_figure,
    budget_table,
    cautions,
    head_rates_figure,
    mask_difference_figure,
    movement_epochs_figure,
    table1_display,
    task_colour,
)

from test_gordon_analysis import _rows
from test_gordon_pipeline import MINILM


@pytest.mark.parametrize("scope", ["local", "global"])
def test_the_oneshot_curve_sums_what_the_magnitude_masks_prune(scope):
    generator = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(7, 5, generator=generator), "b": torch.randn(13, generator=generator)}
    weights["b"][:4] = 0.5  # ties, broken by position as the masks break them
    sparsities = [0.0, 0.1, 0.37, 0.5, 0.9, 0.99]
    curve = oneshot_curve(weights, sparsities, scope=scope)
    total = sum(float(w.abs().sum()) for w in weights.values())
    for i, sparsity in enumerate(sparsities):
        mask = magnitude_mask(weights, sparsity, scope=scope)
        pruned = [w[~mask.keep[n]].abs() for n, w in weights.items()]
        assert curve["pruned_abs_sum"][i] == pytest.approx(sum(float(p.sum()) for p in pruned))
        assert curve["largest_pruned"][i] == pytest.approx(max((float(p.max()) for p in pruned if p.numel()), default=0))
        assert curve["fraction_of_abs_sum"][i] == pytest.approx(curve["pruned_abs_sum"][i] / total)


def test_the_papers_table1_is_transcribed_consistently_with_its_own_averages():
    t1 = paper.table1()
    assert len(t1) == 40 and set(t1["method"]) == {"gmp-pretrain", "information-deletion", "gmp-downstream",
                                                    "random-pretrain"}
    # each printed average is the mean of the five tasks, to the table's rounding
    assert (t1[list(paper.TASKS)].mean(axis=1) - t1["average"]).abs().max() < 0.0007
    losses = t1[[f"{t} train_loss" for t in paper.TASKS]].mean(axis=1)
    assert (losses - t1["average train_loss"]).abs().max() < 0.0031
    row = t1[(t1["method"] == "random-pretrain") & (t1["sparsity"] == 0.2)].iloc[0]
    assert (row["pretrain_dev_loss"], row["CoLA"], row["average train_loss"]) == pytest.approx((2.46, 0.735, 0.208))


def _results(deletion_epochs=(4, 5), matched=False) -> pd.DataFrame:
    rows = []
    for sparsity in (0.0, 0.3, 0.9):
        for method, epochs in (("gmp-pretrain", 2), ("information-deletion", deletion_epochs[sparsity >= 0.7]),
                               *((("information-deletion-matched", 2),) if matched else ())):
            rows += [dict(r, epochs=epochs) for r in _rows(method, sparsity, "SST-2", "accuracy", 0.8, 0.3, 2.0)]
            cola = _rows(method, sparsity, "CoLA", "mcc", 0.2, 0.5)
            rows += [dict(r, epochs=epochs) for r in cola]
            rows.append(dict(cola[0], metric="accuracy", value=0.7, epochs=epochs))
    return pd.DataFrame(rows)


CONFIG = {"seeds": [42], "train": {"per_task": {"SST-2": {"max_train_examples": 2000}}},
          "gordon": {"downstream": {"learning_rates": [1e-4], "after_epochs": 2}}}


def test_table1_shows_the_papers_values_in_brackets_and_colas_accuracy_beside_its_mcc():
    display = table1_display(table1(_results()), paper.table1()).display
    first = display.iloc[0]  # gmp-pretrain at 0%
    assert first["pre-train loss"] == "2.00 [1.82]"
    assert first["SST-2 (accuracy)"] == "80.0 | 0.30 [92.1 | 0.06]"
    assert first["CoLA (Matthews correlation)"] == "20.0 | 0.50 (accuracy 70.0) [79.1 | 0.26]"
    assert first["average"] == "50.0 | 0.40 [85.6 | 0.16]"  # the paper's average over SST-2 and CoLA only


def test_the_budgets_and_cautions_say_what_each_variant_was_trained_for():
    results = _results()
    display = budget_table(results, CONFIG).display
    assert display.loc["gmp-pretrain", "SST-2"] == "2"
    assert display.loc["information-deletion", "CoLA"] == "4 (0%-30%); 5 (90%)"
    assert display.loc["information-deletion", "paper"] == "13; 15 from 70%"
    lines = " ".join(cautions(results, CONFIG))
    assert "One seed (42)" in lines and "One learning rate (1e-4)" in lines and "SST-2 2,000" in lines
    assert "fine-tuned for 4-5 epochs, the pruned models for 2" in lines and "add the information-deletion-matched" in lines
    assert "is the same deletion at the pruned models' budget" in " ".join(cautions(_results(matched=True), CONFIG))
    assert not any("Information deletion" in line for line in cautions(_results((2, 2)), {**CONFIG, "seeds": [1, 2]}))
    assert not any("One seed" in line for line in cautions(results, {**CONFIG, "seeds": [1, 2]}))
    assert cautions(pd.DataFrame(), {"seeds": [3]})[0].startswith("One seed (3)")  # before any result


def test_the_figures_axes_ticks_colours_and_chance_line():
    t1 = table1(_results())
    fig = average_figure(t1, chance=0.35)
    assert any(list(line.get_ydata()) == [0.35, 0.35] for line in fig.axes[0].lines)

    history = [{"epoch": e, "sort_order": {"mean": 0.01 * e}} for e in (1, 2)]
    fig = movement_epochs_figure({("SST-2", 1e-4): history, ("CoLA", 1e-4): history})
    assert list(fig.axes[0].get_xticks()) == [1, 2]  # ticks only where there are points
    assert {line.get_color() for line in fig.axes[0].lines} == {task_colour("SST-2"), task_colour("CoLA")}

    mask = pd.DataFrame([dict(_rows("gmp-downstream", s, "SST-2", "accuracy", 0.8, 0.3)[0], metric="mask_difference",
                              value=0.02 * s, split="mask") for s in (0.3, 0.6)])
    fig = mask_difference_figure(mask)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert labels and all(label.endswith("%") for label in labels)  # percent, as the text says
    # as many decimals as the ticks' spacing needs: no "1.050%, 1.100%" on a narrow range (below)
    assert "0.6%" in labels and all(len(label.rstrip("%").partition(".")[2]) <= 1 for label in labels), labels
    narrow = mask.assign(value=[0.0106, 0.0139])
    fig = mask_difference_figure(narrow)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert {"1.1%", "1.2%", "1.3%"} <= set(labels) and all(len(label.split(".")[-1]) == 2 for label in labels)
    assert fig.axes[0].lines[0].get_color() == task_colour("SST-2") != task_colour("CoLA")

    rates = pd.DataFrame([{"method": m, "sparsity": s, "layer": 0, "head": h, "rate": s + d}
                          for m, spread in (("gmp", 0.05), ("random", 0.002)) for s in (0.3, 0.6)
                          for h, d in enumerate((-spread, 0.0, spread))])
    fig = head_rates_figure(rates)
    bars = [c for c in fig.axes[1].containers if c.has_yerr]
    assert len(bars) == 2  # random pruning's narrow spread, in points from the sparsity: as tall as it is
    random_segments = bars[1].lines[2][0].get_segments()
    assert max(abs(seg[1][1] - seg[0][1]) for seg in random_segments) == pytest.approx(0.4)


def test_figure3_right_needs_its_sparsity_in_the_grid():
    with pytest.raises(ConfigError, match="before_pruning_sparsity"):
        load(MINILM, ["gordon.downstream.before_pruning_sparsity=0.5"])
    with pytest.raises(ConfigError, match="distinct positive"):
        load(MINILM, ["gordon.downstream.before_pruning_epochs=[2,2]"])


def test_figure3_right_puts_each_run_at_its_epochs_before_pruning():
    def selection(task, before, dev, difference):
        run = {"learning_rate": 1e-4, "dev": dev, "train_loss": 0.3, "epochs": 2, "mask_difference": difference}
        return {"task": task, "method": "epochs-before-pruning", "metric": "accuracy", "learning_rate": 1e-4,
                "epochs_before_pruning": before, "runs": [run]}

    fig = before_pruning_figure([selection("SST-2", 4, 0.8, 0.03), selection("SST-2", 1, 0.7, 0.01),
                                 selection("CoLA", 1, 0.2, 0.02)])
    left, right = fig.axes
    lines = {line.get_label(): line for line in left.lines}
    assert list(lines["SST-2 (accuracy)"].get_xdata()) == [1, 4]  # its own epochs, not the run's 2 after pruning
    assert list(lines["SST-2 (accuracy)"].get_ydata()) == [0.7, 0.8]
    assert list(right.get_xticks()) == [1, 4]


GORDON_RUN = Path(__file__).resolve().parents[1] / "results" / "gordon-minilm"


def test_a_copy_of_the_runs_results_and_config_alone_shows_what_results_csv_holds(tmp_path, monkeypatch):
    """The committed Compressing-BERT run without its stage folders: Table 1, the budgets and the figures
    drawn from results.csv are there, with the run's numbers; what needs the stage records is named once."""
    monkeypatch.delenv("BERTLOTTERY_REFERENCE_DIR", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("results.csv", "config.json"):
        shutil.copy(GORDON_RUN / name, run / name)
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "no downstream results yet" not in html and "could not be built" not in html

    results = pd.read_csv(run / "results.csv")
    shown = pd.read_csv(out / "tables" / "gordon-table1.csv")
    expected = table1(results)
    assert len(shown) == len(expected) > 0
    both = shown.merge(expected, on=["method", "sparsity"], suffixes=("", " expected"))
    assert len(both) == len(expected)
    assert both["average"].to_numpy() == pytest.approx(both["average expected"].to_numpy())
    assert (out / "tables" / "gordon-budgets.csv").is_file()
    for name in ("gordon-figure1", "gordon-figure2-fits", "gordon-figure3"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    missing = json.loads((out / "missing.json").read_text())["Compressing BERT: pruning during pre-training (Gordon et al. 2020)"]
    assert missing[0].startswith(f"{run} has no stages/ folder, where the stages keep their records")
    assert "Figure 5" in missing[0] and len(missing) == 1  # one line, not each figure's own reason


def test_movement_figures_follow_the_papers_task_order():
    """Every figure lists tasks in the paper's order (CoLA before SST-2), whatever the config's order."""
    from bertlottery.gordon.report import movement_magnitude_figure

    bins = {"mean": [0.01, 0.005], "std": [0.01, 0.01], "mean_magnitude": [0.01, 0.1]}
    selections = [{"task": task, "method": "gmp-pretrain", "sparsity": 0,
                   "runs": [{"learning_rate": 1e-4, "sort_order": {"by_magnitude": bins}}]} for task in ("SST-2", "CoLA")]
    fig = movement_magnitude_figure(selections)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["CoLA lr 1e-4", "SST-2 lr 1e-4"]
    history = [{"epoch": 1, "sort_order": {"mean": 0.01}}]
    fig = movement_epochs_figure({("SST-2", 1e-4): history, ("CoLA", 2e-5): history, ("CoLA", 1e-4): history})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "CoLA lr 2e-5", "CoLA lr 1e-4", "SST-2 lr 1e-4"]
