"""The Gordon study through the real CLI on a tiny model: the config, the stage graph, the result
rows, resumption, the CLI steps, and the report section in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bertlottery.cli import main
from bertlottery.config import ConfigError, load
from bertlottery.studies import expand

from conftest import CHROMIUM_ARGS, new_page
from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
MINILM = REPO / "configs" / "gordon-minilm.yaml"
PAPER = REPO / "configs" / "gordon.yaml"
WIKI = REPO.parent / "shared" / "data" / "text" / "wikitext-2" / "valid.txt"


def tiny_overrides(model_dir: Path, glue: Path, text: Path) -> list[str]:
    return [f"model={model_dir}", f"glue_dir={glue}", "tasks=[RTE]", "train.per_task={}", "train.epochs=1",
            "train.batch_size=8", "train.max_length=64", "energy.track=false", "gordon.sparsities=[0.0,0.5]",
            f"gordon.corpus.train=[{text}]", f"gordon.corpus.dev=[{text}]", "gordon.corpus.max_train_sequences=16",
            "gordon.corpus.dev_sequences=6", "gordon.pretrain.steps=4", "gordon.pretrain.prune_steps=2",
            "gordon.pretrain.prune_every=1", "gordon.pretrain.batch_size=4", "gordon.pretrain.max_length=32",
            "gordon.pretrain.warmup_steps=0", "gordon.pretrain.head_steps=2", "gordon.downstream.learning_rates=[1e-3]",
            "gordon.downstream.deletion_epochs=2", "gordon.downstream.deletion_epochs_high=2",
            "gordon.downstream.after_epochs=1", "gordon.downstream.after_epochs_high=1",
            "gordon.downstream.before_pruning_epochs=[1,2]", "gordon.downstream.before_pruning_sparsity=0.5",
            "gordon.downstream.before_pruning_more_epochs=1", "gordon.analysis.similarity_sequences=4"]


def test_config_problems_are_reported_together():
    bad = ["gordon.sparsities=[0.3,1.0]", "gordon.pretrain.methods=[gmp,randm]", "gordon.pretrain.prune_steps=10",
           "gordon.pretrain.steps=5", "gordon.pretrain.scope=loca", "gordon.downstream.variants=[pruned,deletion]",
           "gordon.downstream.learning_rates=[]", "gordon.corpus.format=wiki", "gordon.pretrain.bacth_size=3"]
    with pytest.raises(ConfigError) as error:
        load(MINILM, bad)
    text = str(error.value)
    for needle in ("must be in [0, 1), got 1.0", "must include 0.0", "unknown 'randm'. Did you mean 'random'?",
                   "prune_steps (10) must not exceed", "unknown 'loca'", "unknown 'deletion'",
                   "learning_rates must not be empty", "unknown 'wiki'", "unknown key 'gordon.pretrain.bacth_size'"):
        assert needle in text, needle


def test_the_graphs_put_inputs_first_and_ids_follow_the_settings():
    for path, pretrain_runs in ((MINILM, 7), (PAPER, 19)):  # 0% once, then every method x sparsity
        stages = expand(load(path))
        position = {s.id: i for i, s in enumerate(stages)}
        assert len(position) == len(stages)
        assert all(position[i] < position[s.id] for s in stages for i in s.inputs.values())
        assert sum(s.kind == "gordon-pretrain" for s in stages) == pretrain_runs
    stages = expand(load(MINILM))
    config = load(MINILM)
    selects = [s for s in stages if s.kind == "gordon-select"]
    # gmp 0-90%, random 30-90%, information deletion 0-90% and its matched control, after downstream 0-90%
    per_task = 4 + 3 + 4 + 4 + 4
    before = config.gordon.downstream.before_pruning_epochs  # Figure 3 (right): one select per point
    assert len(selects) == (per_task + len(before)) * len(config.tasks)
    rates = len(config.gordon.downstream.learning_rates)
    # and a plain fine-tuning per point, but for the one at train.epochs, which the main graph has; the
    # control at 0% deletes nothing, so it is the plain fine-tuning, not a run of its own
    extra = 2 * len(before) - sum(e == config.train.epochs for e in before)
    assert sum(s.kind == "gordon-finetune" for s in stages) == ((per_task - 1) * rates + extra) * len(config.tasks)
    matched = [s for s in selects if s.keys["method"] == "information-deletion-matched"]
    plain = {s.id for s in stages if s.kind == "gordon-finetune" and s.keys["method"] == "gmp-pretrain"
             and s.keys["subnetwork"] == "sparsity-0"}
    assert {s.keys["subnetwork"] for s in matched if set(s.inputs.values()) & plain} == {"sparsity-0"}
    changed = expand(load(MINILM, ["gordon.downstream.deletion_epochs=3"]))
    differ = {s.id for s in stages} ^ {s.id for s in changed}
    assert differ and all("information-deletion" in i and "matched" not in i for i in differ)  # only those it changes
    assert {s.id for s in changed if s.kind == "gordon-pretrain"} == {s.id for s in stages if s.kind == "gordon-pretrain"}


def test_the_matched_control_fine_tunes_for_the_pruned_models_epochs_and_information_deletion_for_its_own():
    config = load(MINILM)
    epochs: dict[str, set[int]] = {}
    for stage in expand(config):
        if stage.kind == "gordon-finetune" and stage.task == "SST-2":
            epochs.setdefault(stage.keys["method"], set()).add(stage.settings["train"]["epochs"])
    d = config.gordon.downstream
    assert epochs["information-deletion-matched"] == epochs["gmp-pretrain"] == {config.train.epochs}
    assert epochs["information-deletion"] == {d.deletion_epochs, d.deletion_epochs_high} != epochs["gmp-pretrain"]


def _study_data(root: Path) -> tuple[Path, Path]:
    """A slice of real WikiText-2 (fails, never skips, without the shared data) and a tiny RTE."""
    if not WIKI.is_file():
        pytest.fail(f"WikiText-2 not found at {WIKI}")
    text = root / "wiki.txt"
    text.write_text("\n".join(WIKI.read_text(encoding="utf-8").splitlines()[:80]), encoding="utf-8")
    return text, write_rte(root / "glue", n_train=24, n_dev=10)


@pytest.fixture(scope="module")
def study(tiny_model_dir, tmp_path_factory):
    """The gordon-minilm config cut down to seconds on the tiny model, run once through the CLI."""
    import os

    root = tmp_path_factory.mktemp("gordon")
    old = os.environ.get("BERTLOTTERY_CACHE")
    os.environ["BERTLOTTERY_CACHE"] = str(root / "cache")
    try:
        text, glue = _study_data(root)
        argv = ["run", str(MINILM), *tiny_overrides(tiny_model_dir, glue, text), "--run-dir", str(root / "run"),
                "--no-progress"]
        assert main(argv) == 0
        yield {"root": root, "run": root / "run", "argv": argv, "glue": glue, "text": text}
    finally:
        if old is None:
            os.environ.pop("BERTLOTTERY_CACHE", None)
        else:
            os.environ["BERTLOTTERY_CACHE"] = old


def test_the_study_writes_the_documented_rows_and_resumes_without_redoing_work(study, capsys):
    table = pd.read_csv(study["run"] / "results.csv")
    assert set(table["method"]) == {"gmp-pretrain", "random-pretrain", "information-deletion",
                                    "information-deletion-matched", "gmp-downstream", "epochs-before-pruning"}
    assert set(table["subnetwork"]) == {"sparsity-0", "sparsity-0.5"}
    assert set(table["mode"]) == {"pruned", "finetuned"}
    assert set(table.loc[table["method"].str.startswith("information-deletion"), "mode"]) == {"finetuned"}
    assert set(table["metric"]) == {"accuracy", "learning_rate", "train_loss", "pretrain_dev_loss", "mask_difference"}
    pre = table[table["metric"] == "pretrain_dev_loss"]
    assert set(pre["split"]) == {"pretrain-dev"} and "gmp-downstream" not in set(pre["method"])
    assert set(table.loc[table["metric"] == "mask_difference", "subnetwork"]) == {"sparsity-0.5"}
    assert set(table.loc[table["metric"] == "mask_difference", "method"]) == {"gmp-downstream", "epochs-before-pruning"}
    assert (table.loc[table["metric"] == "learning_rate", "value"] == 1e-3).all()
    half = table[(table["subnetwork"] == "sparsity-0.5") & (table["method"] == "gmp-pretrain")]
    assert half["fraction_kept"].iloc[0] == pytest.approx(0.5, abs=1e-3)
    epochs = table.groupby("method")["epochs"].agg(lambda e: sorted(set(e))).to_dict()
    # information deletion 2 epochs, its control the pruned models' 1; Figure 3 (right): 1 or 2 epochs
    # before pruning, 1 after
    assert epochs == {"gmp-pretrain": [1], "random-pretrain": [1], "information-deletion": [2],
                      "information-deletion-matched": [1], "gmp-downstream": [2], "epochs-before-pruning": [2, 3]}
    # the same checkpoint's loss in every row that reads it
    gmp_half = pre[pre["subnetwork"] == "sparsity-0.5"].groupby("method")["value"].first()
    assert gmp_half["gmp-pretrain"] == gmp_half["information-deletion"] != gmp_half["random-pretrain"]

    stages = list((study["run"] / "stages").rglob("stage.json"))
    assert len(stages) == 29
    before = {p: p.stat().st_mtime_ns for p in stages}
    capsys.readouterr()
    assert main(study["argv"]) == 0
    assert "29 already done, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_the_cli_steps_run_alone(study, tiny_model_dir, capsys):
    out = study["root"] / "alone"
    code = main(["gordon", "pretrain", "--model", str(tiny_model_dir), "--train", str(study["text"]), "--dev",
                 str(study["text"]), "--sparsity", "0.5", "--steps", "2", "--prune-steps", "1", "--prune-every", "1",
                 "--batch-size", "4", "--max-length", "32", "--max-train-sequences", "8", "--dev-sequences", "4",
                 "--prune-embeddings", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "at sparsity 0.500" in capsys.readouterr().out
    code = main(["gordon", "finetune", str(out), "--task", "RTE", "--variant", "information-deletion", "--glue-dir",
                 str(study["glue"]), "--epochs", "1", "--batch-size", "8", "--max-length", "64",
                 "--out", str(study["root"] / "ft"), "--no-progress"])
    assert code == 0
    assert "information-deletion: RTE dev" in capsys.readouterr().out
    assert main(["gordon", "pretrain", "--train", "nowhere.txt", "--dev", "x", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_report_section_renders_in_headless_chromium(study, chromium):
    from playwright.sync_api import sync_playwright

    from bertlottery.report import build_report
    from rungraph import write_graph_of

    write_graph_of(study["run"])  # what the report reads the run's stages from
    page_path = build_report(study["run"])
    assert main(["gordon", "analyse", str(study["run"])]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for path in (page_path, study["run"] / "gordon.html"):
                page = new_page(browser)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(path.resolve().as_uri())
                section = page.locator("section#gordon")
                assert section.count() == 1
                text = section.inner_text()
                assert "Table 1 (Gordon et al.)" in text and "Table 2" in text and "Table 3" in text
                sizes = page.evaluate("Array.from(document.querySelectorAll('section#gordon img'))"
                                      ".map(i => [i.dataset.figure, i.naturalWidth])")
                names = {name for name, width in sizes if width > 100}
                assert {"gordon-pretrain-loss", "gordon-figure1", "gordon-figure2-fits", "gordon-figure2-similarity",
                        "gordon-figure3", "gordon-figure4-heads", "gordon-figure4-movement", "gordon-figure7",
                        "gordon-heatmaps-0", "gordon-heatmaps-0.5"} <= names, sizes
                assert {"gordon-figure3-right", "gordon-figure5"} <= names, sizes
                # every figure but the weight heatmaps links the data it was drawn from, and the file is there
                links = page.evaluate("Array.from(document.querySelectorAll('section#gordon figure'))"
                                      ".filter(f => f.querySelector('img')).map(f => [f.querySelector('img').dataset.figure,"
                                      " Array.from(f.querySelectorAll('a')).map(a => a.getAttribute('href'))"
                                      ".filter(h => h.endsWith('.csv'))])")
                assert {name for name, _ in links} == names, links
                for name, hrefs in links:
                    assert hrefs or name.startswith("gordon-heatmaps"), name
                    assert all((path.parent / href).is_file() for href in hrefs), (name, hrefs)
                # the budgets, the seeds, and the paper's numbers beside ours
                assert "Fine-tuning budgets." in text and "One seed (42)" in text
                assert "Information deletion was fine-tuned for 2 epochs, the pruned models for 1" in text
                assert "13; 15 from 70%" in text and "[1.82]" in text  # the paper's budget and 0% pre-training loss
                assert "one learning rate, 1e-3: no sweep" in text
                contents = page.locator("section#gordon nav.contents a").all_inner_texts()
                assert "Pruning after fine-tuning (Figure 3)" in contents and len(contents) == 7
                assert not errors
                page.close()
        finally:
            browser.close()
    budgets = pd.read_csv(study["run"] / "report" / "tables" / "gordon-budgets.csv", dtype=str).set_index("method")
    assert budgets.loc["information-deletion", "RTE"] == "2" and budgets.loc["information-deletion-matched", "RTE"] == "1"
    assert budgets.loc["gmp-downstream", "RTE"] == "1 + 1"
    table1 = pd.read_csv(study["run"] / "report" / "tables" / "gordon-table1.csv")
    assert set(table1["method"]) == {"gmp-pretrain", "random-pretrain", "information-deletion",
                                     "information-deletion-matched", "gmp-downstream"}
    assert json.loads((study["run"] / "config.json").read_text())["gordon"]["sparsities"] == [0.0, 0.5]


@pytest.mark.parametrize("family", ["deberta-v3", "mpnet"])
def test_the_study_runs_on_families_without_sdpa_attention(family, tmp_path, monkeypatch, capsys):
    """DeBERTa-v2/v3 and MPNet have only eager attention in transformers: the MLM stages and the
    similarity analysis load them with their family's kernel, not SDPA."""
    from tiny import save_tiny_model

    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    model_dir = save_tiny_model(tmp_path / f"tiny-{family}", family)
    text, glue = _study_data(tmp_path)
    # MPNet's 64 position rows hold 62 tokens (transformers reserves two): a shorter length for every family
    argv = ["run", str(MINILM), *tiny_overrides(model_dir, glue, text), "train.max_length=48", "--run-dir",
            str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 0
    assert "failed 0" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(table["method"]) == {"gmp-pretrain", "random-pretrain", "information-deletion",
                                    "information-deletion-matched", "gmp-downstream", "epochs-before-pruning"}
    similarity = table[table["metric"] == "mask_difference"]
    assert len(similarity) and similarity["value"].notna().all()
