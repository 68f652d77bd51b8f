"""Mask sets from the three layouts, the stability summary, and ``bertlottery stability`` (also on the paper's
released masks)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from bertlottery import stats
from bertlottery.cli import main
from bertlottery.errors import UserError
from bertlottery.importance import prunable_parameters
from bertlottery.masks import HeadMask, Masks, MlpMask, WeightMask, body_fraction_kept, save_masks
from bertlottery.models import model_layout
from bertlottery.analysis import (
    BERT_BASE_CONFIG,
    format_summary,
    importance_from_trace,
    cross_task,
    keep_arrays,
    layout_from_config,
    load_mask_sets,
    stability_summary,
    structured_task,
)

from rungraph import write_graph_of
from tiny import tiny_config, tiny_model


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["stability", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def random_keep(rng, shape, p=0.6) -> np.ndarray:
    return rng.random(shape) < p


# ---- layouts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "distilbert"])
def test_layout_from_config_matches_the_built_model(family):
    assert layout_from_config(tiny_config(family).to_dict()) == model_layout(tiny_model(family))


def test_bert_base_layout_counts_the_real_architectures_parameters():
    from transformers import BertConfig, BertModel

    with torch.device("meta"):  # the architecture without allocating its weights
        model = BertModel(BertConfig(**{k: v for k, v in BERT_BASE_CONFIG.items() if k != "model_type"}))
    body = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder.layer."))
    layout = layout_from_config(BERT_BASE_CONFIG)
    assert layout.body_params == body == 85_054_464
    assert (layout.num_layers, layout.num_heads, layout.head_dim) == (12, 12, 64)


def test_layout_from_config_names_what_is_missing():
    with pytest.raises(UserError, match="num_attention_heads or n_heads"):
        layout_from_config({"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 9})


# ---- (a) the paper's released layout ---------------------------------------------------------------

def write_released(mode_dir: Path, tasks, seeds, *, shape=(12, 12), mlps=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    truth = {}
    for task in tasks:
        for s in seeds:
            folder = mode_dir / task / f"seed_{s}"
            folder.mkdir(parents=True)
            heads = random_keep(rng, shape)
            np.save(folder / "head_mask.npy", heads.astype(np.float32))
            if mlps:
                np.save(folder / "mlp_mask.npy", random_keep(rng, shape[:1]).astype(np.float32))
            np.save(folder / "head_importance.npy", rng.random(shape).astype(np.float32))
            truth[task, s] = heads
    return truth


def test_released_mode_folder_loads_by_task_and_seed_ascending(tmp_path):
    truth = write_released(tmp_path / "heads_mlps", ["CoLA", "RTE"], [1337, 42, 86])
    mask_set = load_mask_sets(tmp_path / "heads_mlps")
    assert (mask_set.source, mask_set.method) == ("prasanna2020", "structured")
    assert mask_set.tasks == ["CoLA", "RTE"] and mask_set.seeds("RTE") == [42, 86, 1337]
    assert mask_set.masks["RTE"][86].heads.keep.numpy().tolist() == truth["RTE", 86].tolist()
    assert mask_set.layout == layout_from_config(BERT_BASE_CONFIG)
    # the source is said once, by the header (the report's group label likewise), not again in a note
    text = format_summary(stability_summary(mask_set, n_permutations=10))
    assert text.count("released masks") == 1
    assert "note: weight fractions counted on bert-base-uncased's layout (12 x 12 heads)" in text
    keeps = keep_arrays(mask_set, "heads")
    assert keeps["CoLA"].shape == (3, 12, 12) and keeps["CoLA"][2].tolist() == truth["CoLA", 1337].tolist()


def test_released_single_task_folder_and_heads_only_mode(tmp_path):
    write_released(tmp_path / "heads", ["MRPC"], [1, 2], mlps=False)
    mask_set = load_mask_sets(tmp_path / "heads" / "MRPC")
    assert mask_set.tasks == ["MRPC"] and mask_set.seeds("MRPC") == [1, 2]
    summary = stability_summary(mask_set)
    assert summary["tasks"]["MRPC"]["mlps"] is None and summary["tasks"]["MRPC"]["heads"]["n_elements"] == 144
    assert keep_arrays(mask_set, "mlps") == {}


def test_released_masks_of_another_shape_have_no_weight_fractions(tmp_path):
    write_released(tmp_path / "m", ["A"], [1, 2], shape=(2, 4))
    mask_set = load_mask_sets(tmp_path / "m")
    assert mask_set.layout is None and "not bert-base" in mask_set.notes[0]
    summary = stability_summary(mask_set)
    assert summary["tasks"]["A"]["body_fraction_kept"] is None
    assert summary["tasks"]["A"]["super_survivors"]["body_fraction"] is None


def test_the_masks_root_with_several_modes_asks_for_one(tmp_path):
    write_released(tmp_path / "masks" / "heads_mlps", ["A"], [1])
    write_released(tmp_path / "masks" / "mlps", ["A"], [1])
    with pytest.raises(UserError, match=r"several mask modes of the paper \(heads_mlps, mlps\).*masks/heads_mlps"):
        load_mask_sets(tmp_path / "masks")


def test_released_masks_have_no_magnitude_method(tmp_path):
    write_released(tmp_path / "heads_mlps", ["A"], [1])
    with pytest.raises(UserError, match="magnitude masks were not released"):
        load_mask_sets(tmp_path / "heads_mlps", "magnitude")


# ---- (b) a run directory ---------------------------------------------------------------------------

def tiny_weight_mask(rng) -> WeightMask:
    names = prunable_parameters(tiny_model("bert"), "paper")
    return WeightMask({n: torch.from_numpy(random_keep(rng, tuple(p.shape))) for n, p in names.items()})


def write_stage(folder: Path, record: dict, files: dict[str, Masks], layout=None) -> Path:
    folder.mkdir(parents=True)
    for name, masks in files.items():
        save_masks(folder / name, masks, layout)
    (folder / "stage.json").write_text(json.dumps(record))
    return folder


def write_run(root: Path, tasks=("RTE", "MRPC"), seeds=(7, 3), methods=("structured", "magnitude"), seed=0) -> dict:
    """A run directory as `bertlottery run` lays it out, with the files the stability loader reads."""
    rng = np.random.default_rng(seed)
    layout = model_layout(tiny_model("bert"))
    truth = {}
    for task in tasks:
        for s in seeds:
            finetune = f"finetune/{task}/seed{s}-aaaa"
            (root / "stages" / finetune / "model").mkdir(parents=True)
            (root / "stages" / finetune / "model" / "config.json").write_text(json.dumps(tiny_config("bert").to_dict()))
            for method in methods:
                if method == "structured":
                    masks = Masks(heads=HeadMask(torch.from_numpy(random_keep(rng, (2, 4)))),
                                  mlps=MlpMask(torch.from_numpy(random_keep(rng, (2,)))), params={"seed": s})
                else:
                    masks = Masks(weights=tiny_weight_mask(rng), params={"seed": s})
                truth[task, method, s] = masks
                write_stage(root / "stages" / "prune" / task / f"seed{s}-{method}-bbbb",
                            {"id": f"prune/{task}/seed{s}-{method}-bbbb", "kind": "prune", "task": task,
                             "keys": {"method": method, "seed": s}, "inputs": {"finetune": finetune}},
                            {"mask.safetensors": masks}, layout)
    return truth


def test_run_directory_loads_the_good_masks_of_its_prune_stages(tmp_path):
    truth = write_run(tmp_path / "run")
    mask_set = load_mask_sets(tmp_path / "run")
    assert (mask_set.source, mask_set.method) == ("run", "structured")
    assert sorted(mask_set.tasks) == ["MRPC", "RTE"] and mask_set.seeds("RTE") == [3, 7]
    assert mask_set.masks["RTE"][7].heads == truth["RTE", "structured", 7].heads
    assert mask_set.layout == model_layout(tiny_model("bert"))
    assert any("also holds magnitude" in n for n in mask_set.notes)
    magnitude = load_mask_sets(tmp_path / "run", "magnitude")
    assert magnitude.method == "magnitude" and magnitude.num_heads == 4
    assert magnitude.masks["MRPC"][3].weights == truth["MRPC", "magnitude", 3].weights


def test_run_directory_skips_unfinished_stages_and_takes_the_newest_of_duplicates(tmp_path):
    run = tmp_path / "run"
    write_run(run, tasks=("RTE",), methods=("structured",))
    unfinished = run / "stages" / "prune" / "RTE" / "seed9-structured-cccc"
    unfinished.mkdir()
    save_masks(unfinished / "mask.safetensors", Masks(heads=HeadMask.full(2, 4), mlps=MlpMask.full(2)))
    newer = write_stage(run / "stages" / "prune" / "RTE" / "seed7-structured-dddd",
                        {"task": "RTE", "keys": {"method": "structured", "seed": 7}, "inputs": {}},
                        {"mask.safetensors": Masks(heads=HeadMask.full(2, 4), mlps=MlpMask.full(2))})
    old = run / "stages" / "prune" / "RTE" / "seed7-structured-bbbb" / "stage.json"
    os.utime(old, (1_000_000, 1_000_000))
    mask_set = load_mask_sets(run)
    assert mask_set.seeds("RTE") == [3, 7]  # seed 9 has no stage.json: not finished
    assert mask_set.masks["RTE"][7].heads.n_kept == 8
    assert any(newer.name in n for n in mask_set.notes)


def test_run_directory_reads_only_the_stages_of_its_config(tmp_path):
    """Stages a changed config left on disk (here: an older RTE run and a CoLA task no longer in the
    config, both newer on disk) are not read; the run's own prune and super stages (its graph.json's) are."""
    from bertlottery.config import from_dict, to_dict

    config = from_dict({"name": "t", "model": "minilm-l6", "tasks": ["RTE"], "seeds": [7, 3],
                        "methods": ["structured"], "baselines": []})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(config)))
    graph = write_graph_of(run, config)
    rng = np.random.default_rng(1)
    own = {}
    for stage in graph:
        if stage.kind == "prune":
            seed = stage.keys["seed"]
            own[seed] = Masks(heads=HeadMask(torch.from_numpy(random_keep(rng, (2, 4)))),
                              mlps=MlpMask(torch.from_numpy(random_keep(rng, (2,)))))
            write_stage(run / "stages" / stage.id, {"id": stage.id, "task": "RTE", "keys": stage.keys,
                                                    "inputs": stage.inputs}, {"mask.safetensors": own[seed]})
            os.utime(run / "stages" / stage.id / "stage.json", (1_000_000, 1_000_000))
    sup = next(s for s in graph if s.kind == "super")
    good = own[7].heads & own[3].heads
    write_stage(run / "stages" / sup.id, {"id": sup.id, "task": "RTE", "keys": sup.keys},
                {"good.safetensors": Masks(heads=good, mlps=own[7].mlps & own[3].mlps)})
    full = Masks(heads=HeadMask.full(2, 4), mlps=MlpMask.full(2))
    for old in ("prune/RTE/seed7-structured-0123456789", "prune/CoLA/seed7-structured-0123456789"):
        write_stage(run / "stages" / old, {"id": old, "task": old.split("/")[1],
                                           "keys": {"method": "structured", "seed": 7}}, {"mask.safetensors": full})
    write_stage(run / "stages" / "super/RTE/structured-0123456789", {"id": "super/RTE/structured-0123456789",
                "task": "RTE", "keys": {"method": "structured"}}, {"good.safetensors": full})
    mask_set = load_mask_sets(run)
    assert mask_set.tasks == ["RTE"] and mask_set.seeds("RTE") == [3, 7]
    assert mask_set.masks["RTE"][7].heads == own[7].heads
    assert mask_set.super_survivors["RTE"].heads == good
    assert any("2 finished prune stage(s) on disk are not in the run's config.json" in n for n in mask_set.notes)
    (run / "graph.json").unlink()  # a run from before graph.json: everything on disk counts, with a note
    mask_set = load_mask_sets(run)
    assert sorted(mask_set.tasks) == ["CoLA", "RTE"]
    assert any("no graph.json" in n for n in mask_set.notes)


def test_run_directory_super_survivor_stage_is_checked_against_the_seeds(tmp_path):
    run = tmp_path / "run"
    truth = write_run(run, tasks=("RTE",), methods=("structured",))
    heads = truth["RTE", "structured", 7].heads & truth["RTE", "structured", 3].heads
    mlps = truth["RTE", "structured", 7].mlps & truth["RTE", "structured", 3].mlps
    write_stage(run / "stages" / "super" / "RTE" / "structured-eeee", {"task": "RTE", "keys": {"method": "structured"}},
                {"good.safetensors": Masks(heads=heads, mlps=mlps), "bad.safetensors": Masks(heads=~heads, mlps=~mlps)})
    mask_set = load_mask_sets(run)
    assert mask_set.super_survivors["RTE"].heads == heads
    sup = stability_summary(mask_set)["tasks"]["RTE"]["super_survivors"]
    assert sup["matches_stage"] is True and sup["heads"] == heads.n_kept and sup["mlps"] == mlps.n_kept
    assert sup["body_fraction"] == pytest.approx(body_fraction_kept(mask_set.layout, heads=heads, mlps=mlps))
    mask_set.super_survivors["RTE"] = Masks(heads=~heads, mlps=mlps)
    assert stability_summary(mask_set)["tasks"]["RTE"]["super_survivors"]["matches_stage"] is False


def test_run_directory_without_the_method_or_without_prune_stages(tmp_path):
    write_run(tmp_path / "run", tasks=("RTE",), methods=("structured",))
    with pytest.raises(UserError, match="no magnitude masks, only structured; use --method structured"):
        load_mask_sets(tmp_path / "run", "magnitude")
    (tmp_path / "empty" / "stages").mkdir(parents=True)
    with pytest.raises(UserError, match="no finished prune stages"):
        load_mask_sets(tmp_path / "empty")


# ---- (c) a plain folder ----------------------------------------------------------------------------

def test_plain_folder_of_task_seed_files(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "masks"
    written = {}
    for task in ("SST-2", "CoLA"):
        for name, seed in (("42", 42), ("seed7", 7), ("seed_100", 100)):
            masks = Masks(heads=HeadMask(torch.from_numpy(random_keep(rng, (2, 4)))),
                          mlps=MlpMask(torch.from_numpy(random_keep(rng, (2,)))))
            save_masks(folder / task / f"{name}.safetensors", masks)
            written[task, seed] = masks
    mask_set = load_mask_sets(folder)
    assert (mask_set.source, mask_set.method) == ("directory", "structured")
    assert mask_set.tasks == ["CoLA", "SST-2"] and mask_set.seeds("CoLA") == [7, 42, 100]
    assert mask_set.masks["SST-2"][100].heads == written["SST-2", 100].heads
    assert mask_set.layout is None and "config.json" in mask_set.notes[-1]
    (folder / "config.json").write_text(json.dumps(tiny_config("bert").to_dict()))
    assert load_mask_sets(folder).layout == model_layout(tiny_model("bert"))


def test_plain_folder_refuses_badly_named_files_and_two_masks_of_one_seed(tmp_path):
    masks = Masks(heads=HeadMask.full(2, 4))
    save_masks(tmp_path / "a" / "RTE" / "good.safetensors", masks)
    with pytest.raises(UserError, match=r"good.safetensors: .*<task>/<seed>.safetensors"):
        load_mask_sets(tmp_path / "a")
    save_masks(tmp_path / "b" / "RTE" / "7.safetensors", masks)
    save_masks(tmp_path / "b" / "RTE" / "seed7.safetensors", masks)
    with pytest.raises(UserError, match="two masks for seed 7"):
        load_mask_sets(tmp_path / "b")


def test_plain_folder_of_weight_masks_gets_heads_per_layer_from_the_file(tmp_path):
    rng = np.random.default_rng(4)
    layout = model_layout(tiny_model("bert"))
    for seed in (1, 2):
        save_masks(tmp_path / "RTE" / f"{seed}.safetensors", Masks(weights=tiny_weight_mask(rng)), layout)
    mask_set = load_mask_sets(tmp_path)
    assert mask_set.method == "magnitude" and mask_set.num_heads == 4 and mask_set.layout is None
    with pytest.raises(UserError, match="no structured masks, only magnitude"):
        load_mask_sets(tmp_path, "structured")


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_a_path_that_is_no_mask_set(tmp_path, make):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"masks/<mode>/ folder .* run directory .* <task>/<seed>.safetensors"):
        load_mask_sets(make(tmp_path))
    with pytest.raises(UserError, match="Did you mean 'magnitude'"):
        load_mask_sets(tmp_path, "magntude")


# ---- the summary -------------------------------------------------------------------------------------

def test_structured_summary_is_the_statistics_of_the_loaded_masks(tmp_path):
    truth = write_run(tmp_path / "run", tasks=("RTE", "MRPC", "CoLA"), seeds=(1, 2, 3), methods=("structured",))
    mask_set = load_mask_sets(tmp_path / "run")
    summary = stability_summary(mask_set, alpha=0.1)
    json.dumps(summary, allow_nan=False)  # strict JSON
    heads = np.stack([truth["RTE", "structured", s].heads.keep.numpy() for s in (1, 2, 3)])
    entry = summary["tasks"]["RTE"]["heads"]
    kappa = stats.fleiss_kappa(heads)
    assert entry["kappa"] == pytest.approx(kappa.value) and entry["kappa_reason"] is None
    q = stats.cochran_q(heads)
    assert entry["cochran_q"]["statistic"] == pytest.approx(q.statistic)
    assert entry["cochran_q"]["pvalue"] == pytest.approx(q.pvalue)
    assert entry["pairwise"]["alpha"] == 0.1 and entry["pairwise"]["n_pairs"] == 3
    assert [p["seeds"] for p in entry["pairwise"]["pairs"]] == [[1, 2], [1, 3], [2, 3]]
    np.testing.assert_allclose(entry["survival_mean"], heads.mean(0))
    np.testing.assert_allclose(entry["survival_std"], heads.std(0, ddof=1))
    assert entry["kept_per_seed"] == [int(h.sum()) for h in heads] and entry["shape"] == [2, 4]
    assert entry["super_survivors"] == int(heads.all(0).sum())
    sizes = summary["tasks"]["RTE"]["body_fraction_kept"]["per_seed"]
    assert sizes == pytest.approx([truth["RTE", "structured", s].body_fraction_kept(mask_set.layout) for s in (1, 2, 3)])
    cross = summary["cross_task"]["heads"]
    assert cross["tasks"] == mask_set.tasks and cross["n_seeds"] == 3
    expected = stats.task_overlap(keep_arrays(mask_set, "heads"))
    np.testing.assert_allclose(cross["overlap_mean"], expected.mean)
    mean, _ = stats.tasks_survived(keep_arrays(mask_set, "heads"))
    np.testing.assert_allclose(cross["tasks_survived_mean"], mean)
    assert summary["layout"]["body_params"] == mask_set.layout.body_params


def test_the_summary_is_a_function_of_the_keep_arrays_alone():
    """No files: the per-task and cross-task statistics straight from bool[seed, ...] arrays."""
    rng = np.random.default_rng(5)
    heads = {t: random_keep(rng, (3, 2, 4)) for t in ("RTE", "MRPC")}
    mlps = random_keep(rng, (3, 2))
    layout = model_layout(tiny_model("bert"))
    stage = {"heads": heads["RTE"].all(0), "mlps": None}
    entry = structured_task(heads["RTE"], mlps, [1, 2, 3], layout, 0.05, stage)
    assert entry["heads"]["kappa"] == pytest.approx(stats.fleiss_kappa(heads["RTE"]).value)
    assert entry["mlps"]["kept_per_seed"] == [int(m.sum()) for m in mlps]
    assert entry["body_fraction_kept"]["per_seed"] == pytest.approx(
        [stats.body_fraction(layout, heads["RTE"][i], mlps[i]) for i in range(3)])
    assert entry["super_survivors"]["matches_stage"] is True
    stage["heads"] = ~stage["heads"]
    assert structured_task(heads["RTE"], None, [1, 2, 3], None, 0.05, stage)["super_survivors"]["matches_stage"] is False
    cross = cross_task({"heads": heads, "mlps": {"RTE": mlps}})
    assert set(cross) == {"heads"}  # one task has MLP masks: nothing to overlap
    np.testing.assert_allclose(cross["heads"]["overlap_mean"], stats.task_overlap(heads).mean)


def test_summary_of_degenerate_masks_has_reasons_and_null_values(tmp_path):
    folder = tmp_path / "m"
    for seed in (1, 2):
        save_masks(folder / "WNLI" / f"{seed}.safetensors", Masks(heads=HeadMask.full(2, 4), mlps=MlpMask(torch.zeros(2))))
    save_masks(folder / "RTE" / "1.safetensors", Masks(heads=HeadMask.full(2, 4), mlps=MlpMask.full(2)))
    summary = stability_summary(load_mask_sets(folder))
    text = json.dumps(summary, allow_nan=False)
    wnli = summary["tasks"]["WNLI"]
    assert wnli["heads"]["kappa"] is None and "kept by every seed" in wnli["heads"]["kappa_reason"]
    assert wnli["mlps"]["kappa"] is None and "pruned by every seed" in wnli["mlps"]["kappa_reason"]
    assert wnli["heads"]["cochran_q"]["statistic"] is None and "identical" in wnli["heads"]["cochran_q"]["reason"]
    assert wnli["heads"]["pairwise"]["n_identical"] == 1 and wnli["heads"]["pairwise"]["differ_fraction"] == 0
    rte = summary["tasks"]["RTE"]
    assert "at least two seeds" in rte["heads"]["kappa_reason"] and rte["heads"]["survival_std"][0][0] is None
    assert "NaN" not in text
    printed = format_summary(summary)
    assert "WNLI mlps: kappa undefined: every element was pruned by every seed" in printed


def test_magnitude_summary_gives_weight_survival_per_head_and_mlp(tmp_path):
    truth = write_run(tmp_path / "run", tasks=("RTE",), seeds=(1, 2), methods=("magnitude",))
    mask_set = load_mask_sets(tmp_path / "run")
    summary = stability_summary(mask_set)
    json.dumps(summary, allow_nan=False)
    entry = summary["tasks"]["RTE"]
    weights = [truth["RTE", "magnitude", s].weights for s in (1, 2)]
    per_seed = [stats.weight_survival_by_component(w.keep, 4) for w in weights]
    np.testing.assert_allclose(entry["heads"]["survival_mean"], np.mean([h for h, _ in per_seed], axis=0))
    np.testing.assert_allclose(entry["mlps"]["survival_std"], np.std([m for _, m in per_seed], axis=0, ddof=1))
    assert entry["weights"]["kept_per_seed"] == [w.n_kept for w in weights]
    always = weights[0] & weights[1]
    assert entry["weights"]["super_survivors"] == always.n_kept
    assert entry["super_survivors"]["body_fraction"] == pytest.approx(body_fraction_kept(mask_set.layout, weights=always))
    assert entry["body_fraction_kept"]["per_seed"] == pytest.approx(
        [body_fraction_kept(mask_set.layout, weights=w) for w in weights])
    assert summary["cross_task"] == {}
    assert "RTE" in format_summary(summary)


def test_importance_from_a_prune_directory(tmp_path):
    from test_stats import _trace_of_a_search

    (tmp_path / "prune").mkdir()
    (tmp_path / "prune" / "trace.json").write_text(json.dumps(_trace_of_a_search()))
    first, = importance_from_trace(tmp_path / "prune", [1])
    assert first["iteration"] == 1 and first["heads"].shape == (2, 10)
    assert len(importance_from_trace(tmp_path / "prune" / "trace.json")) == 2


# ---- the command -------------------------------------------------------------------------------------

def test_cli_text_and_json_on_a_run_directory(tmp_path, capsys):
    write_run(tmp_path / "run", tasks=("RTE", "MRPC"), seeds=(1, 2, 3), methods=("structured", "magnitude"))
    code, out, _ = run_cli(capsys, tmp_path / "run")
    assert code == 0
    lines = out.splitlines()
    assert "Heads" in lines and "MLPs" in lines
    header = next(line for line in lines if line.startswith("task") and "kappa" in line)
    assert header.split() == ["task", "seeds", "kept", "per", "seed", "kappa", "Q", "p", "pairs", "differ", "super"]
    assert any(line.startswith("RTE ") for line in lines)
    code, out, _ = run_cli(capsys, tmp_path / "run", "--format", "json", "--method", "magnitude", "--alpha", "0.01")
    summary = json.loads(out)
    assert code == 0 and summary["method"] == "magnitude" and summary["alpha"] == 0.01
    code, out, _ = run_cli(capsys, tmp_path / "run", "--method", "magnitude")
    assert code == 0 and "kept in every seed" in out


def test_cli_bad_path_and_bad_alpha_exit_2_with_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, tmp_path / "nowhere")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "does not exist" in err
    write_released(tmp_path / "heads_mlps", ["A"], [1, 2])
    code, _, err = run_cli(capsys, tmp_path / "heads_mlps", "--alpha", "1.5")
    assert code == 2 and "alpha must lie between 0 and 1" in err and len(err.strip().splitlines()) == 1


# ---- real data: the paper's released masks -----------------------------------------------------------

def test_released_masks_kappa_per_task_through_the_cli(reference_dir, capsys):
    masks_dir = reference_dir / "masks" / "heads_mlps"
    code, out, _ = run_cli(capsys, masks_dir, "--format", "json")
    assert code == 0
    summary = json.loads(out)
    tasks = summary["tasks"]
    assert sorted(tasks) == ["CoLA", "MNLI", "MRPC", "QNLI", "QQP", "RTE", "SST-2", "STS-B", "WNLI"]
    for task, entry in tasks.items():
        assert entry["seeds"] == [42, 71, 86, 166, 1337]
        if task != "WNLI":  # the paper: 0.15-0.32 for every task; WNLI's masks are all-or-nothing
            assert 0.15 <= entry["heads"]["kappa"] <= 0.35, (task, entry["heads"]["kappa"])
    # recompute one task straight from the .npy files with statsmodels
    ratings = np.stack([np.load(masks_dir / "CoLA" / f"seed_{s}" / "head_mask.npy").reshape(-1)
                        for s in (1337, 42, 86, 71, 166)]).T.astype(int)  # heads x seeds
    table, _ = aggregate_raters(ratings, n_cat=2)
    assert tasks["CoLA"]["heads"]["kappa"] == pytest.approx(fleiss_kappa(table), abs=1e-12)
    # WNLI: every seed pruned every MLP, so kappa is undefined, with the reason
    assert tasks["WNLI"]["mlps"]["kappa"] is None and "pruned by every seed" in tasks["WNLI"]["mlps"]["kappa_reason"]
    assert tasks["CoLA"]["heads"]["pairwise"]["n_pairs"] == 10
    assert len(summary["cross_task"]["heads"]["overlap_mean"]) == 9


def test_super_survivors_of_the_released_masks_are_the_released_super_masks(reference_dir):
    good = load_mask_sets(reference_dir / "masks" / "heads_mlps")
    released_super = load_mask_sets(reference_dir / "masks" / "heads_mlps_super")
    for task in good.tasks:
        for kind in ("heads", "mlps"):
            ours = stats.super_survivors(keep_arrays(good, kind)[task])
            theirs = keep_arrays(released_super, kind)[task]
            assert (theirs == ours).all(), (task, kind)  # every seed folder holds the same super mask
    summary = stability_summary(released_super)
    assert all(e["heads"]["kappa"] in (1.0, None) for e in summary["tasks"].values())
    assert math.isclose(summary["tasks"]["CoLA"]["heads"]["kappa"], 1.0)


# ---- kappa against the masks' sizes (issue 16) ----------------------------------------------------------

def _kappa_table_rows(out: str, title: str) -> dict[str, list[str]]:
    """The rows of one 'kappa beside what masks of these sizes allow' table, by task."""
    lines = out.splitlines()
    start = lines.index(title)
    rows = {}
    for line in lines[start + 3:]:
        if not line.strip() or line.startswith("("):
            break
        # after the task: kappa, max, random mean, "[low, high]", "[low, high]" (or n/a)
        rows[line.split()[0]] = re.findall(r"\[[^\]]*\]|n/a|-?\d+\.\d+", line)
    return rows


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_cli_shows_kappa_beside_its_ceiling_null_and_bootstrap(tmp_path, capsys, n_seeds):
    seeds = list(range(1, n_seeds + 1))
    truth = write_released(tmp_path / "heads_mlps", ["RTE"], seeds, seed=n_seeds)
    heads = np.stack([truth["RTE", s] for s in seeds])
    code, out, _ = run_cli(capsys, tmp_path / "heads_mlps")
    assert code == 0
    kappa, ceiling, mean, null, boot = _kappa_table_rows(out, "Heads: kappa beside what masks of these sizes allow")["RTE"]
    expected_null = stats.kappa_null(heads, n_permutations=2000)
    expected_boot = stats.kappa_bootstrap(heads, n_resamples=2000)
    assert float(kappa) == pytest.approx(stats.fleiss_kappa(heads).value, abs=5e-4)
    assert float(ceiling) == pytest.approx(stats.max_fleiss_kappa(heads).value, abs=5e-4)
    assert float(mean) == pytest.approx(expected_null.mean, abs=5e-4)
    assert null == f"[{expected_null.low:.3f}, {expected_null.high:.3f}]"
    if n_seeds >= 5:
        assert boot == f"[{expected_boot.low:.3f}, {expected_boot.high:.3f}]"
    else:
        assert boot == "n/a" and "n/a with fewer than 5 seeds: RTE" in out
    assert "Cochran's Q tests whether the seeds keep elements at equal rates" in out
    code, out, _ = run_cli(capsys, tmp_path / "heads_mlps", "--format", "json")
    entry = json.loads(out)["tasks"]["RTE"]["heads"]
    assert entry["kappa_max"] == pytest.approx(stats.max_fleiss_kappa(heads).value)
    assert entry["kappa_null"]["high"] == pytest.approx(expected_null.high)
    assert entry["kappa_null"]["n_permutations"] == 2000
    assert (entry["kappa_bootstrap"]["low"] is None) == (n_seeds < 5)


def test_released_masks_kappa_sits_between_chance_and_its_ceiling(reference_dir, capsys):
    """The paper's released masks: every task's head kappa (WNLI aside, whose masks are all or nothing)
    is above the 95% range of random masks of the same sizes and below the ceiling the sizes allow."""
    code, out, _ = run_cli(capsys, reference_dir / "masks" / "heads_mlps", "--format", "json")
    assert code == 0
    for task, entry in json.loads(out)["tasks"].items():
        heads = entry["heads"]
        if task == "WNLI":
            assert heads["kappa"] == pytest.approx(heads["kappa_max"])  # one seed kept all: nothing else possible
            continue
        assert heads["kappa_null"]["high"] < heads["kappa"] < heads["kappa_max"], task
        assert heads["kappa_bootstrap"]["low"] <= heads["kappa"] <= heads["kappa_bootstrap"]["high"], task
