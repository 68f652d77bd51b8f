"""Stage ids are hashes of what a stage does; a refactor that changes one makes every run made before it
start over. These digests are of the ids of every shipped config's graph, taken before the studies
moved out of the pipeline and ``threshold`` became ``keep_fraction``: a change here must be deliberate.

Issue 16 changed them once, deliberately, for the configs with training caps (smoke, quickstart,
minilm-glue, gordon-minilm): a cap is now a seeded stratified sample instead of the file's first
lines, so every capped stage computes something else; configs without caps (paper, gordon) keep their
ids. minilm-glue also took the chance-aware criterion, so its prune stages and all after them changed,
uncapped WNLI's too; WNLI's fine-tuning and majority stages keep theirs. It then took the tune stage
(also issue 16): its tuned tasks' fine-tuning reads the choice, so their stages changed again; WNLI is
not tuned and keeps its ids. Configs without a ``tune:`` section keep theirs.

Issue 16 changed the Gordon configs' digests once more, deliberately, by adding stages: the one-shot
curve (G Fig. 5) in both, Figure 3 (right)'s fine-tunings in both, and in gordon-minilm the
information-deletion control at the pruned models' epochs. Every stage the graphs had before keeps
its id (the list grew; no id in it changed).

Issue 15 changed them once more, deliberately, twice over: every stage that trains or reads a trained
model now runs in bf16 by default (``train.precision``; before, fp32), and the stages that re-fine-tune
s-pruned subnetworks (the structured method's retrain stages, super-survivors' included, and the
random-init baseline) train the physically smaller model (``train.subnetwork_training: physical``).
With ``precision: fp32`` and ``subnetwork_training: gated`` every config keeps the ids it had before
(`EARLIER`), so a run made before resumes with those two settings.

minilm-glue was then resized for its re-run (issue 16: whole training sets but SST-2's, 3 epochs with
warm-up, a smaller tune grid, appendix D): its pins are of the new config. Its appendix D was then
limited to the first seed (``longer_retraining.seeds``), which removes stages and changes no other id
(`tests/test_config.py`).

Issue 15 then changed them once more, deliberately: every stage that trains, or reads a trained model,
computes the classifier's last layer at its first position only (``train.last_layer: cls``; before, every
position: the same function, other dropout draws). With ``last_layer: full`` (in `EARLIER_SETTINGS`) every
config keeps its ids; minilm-glue pins ``full`` itself, so that it is the config of the committed study
and keeps its digest. Only the majority baseline, which trains nothing, keeps its id under ``cls``.
A cut layer's dropouts later drew at the full shape (the full layer's draws, to rounding): no id changed.

minilm-glue then took an ``ablation:`` section (importance against ablation), which adds an ``ablation`` stage
per task and seed and changes no other id: the digests are of each graph's stages less its ablation stages,
and `test_the_ablation_section_only_adds_stages` pins the ones it adds."""

import hashlib
import json
from pathlib import Path

import pytest

from bertlottery.config import load
from bertlottery.studies import expand

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

DIGESTS = {
    "smoke": "127dae1d024e79f8",
    "gordon-minilm": "3f7025bb11caca3a",
    "minilm-glue": "ab3f03bc80269391",
    "paper": "c4508204c775bca1",
    "gordon": "32badb3aa8e7871f",
    "quickstart": "e182f67e4080b6d4",
    "fisher-smoke": "36335d4913a88d7d",
}
EARLIER_SETTINGS = ["train.precision=fp32", "train.subnetwork_training=gated", "train.last_layer=full"]
EARLIER = {  # the ids before issue 15, which EARLIER_SETTINGS keep
    "smoke": "c1945b6323b12a68",
    "gordon-minilm": "fd14ee812c336467",
    "minilm-glue": "0f4b7bfb56688f3b",
    "paper": "87d640948418c877",
    "gordon": "1d222d0ac313b48b",
    "quickstart": "dbb55ff5cf7eb383",
    "fisher-smoke": "8ca5e6e9a2b7c0e1",  # added with the Fisher search
}


def digest(stages) -> str:
    """Of the ids of every stage but the ablation ones (an analysis added beside a study: see the docstring)."""
    return hashlib.sha256(json.dumps([s.id for s in stages if s.kind != "ablation"]).encode()).hexdigest()[:16]


def test_the_ablation_section_only_adds_stages():
    with_section = expand(load(CONFIGS / "minilm-glue.yaml"))
    without = expand(load(CONFIGS / "minilm-glue.yaml", ["ablation=null"]))
    added = [s for s in with_section if s.kind == "ablation"]
    assert [s.id for s in with_section if s.kind != "ablation"] == [s.id for s in without]
    assert len(added) == 18 and hashlib.sha256(json.dumps([s.id for s in added]).encode()).hexdigest()[:16] == \
        "d23846ef569ab65e"


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_every_shipped_config_keeps_its_stage_ids(name):
    assert digest(expand(load(CONFIGS / f"{name}.yaml"))) == DIGESTS[name]


@pytest.mark.parametrize("name", sorted(EARLIER))
def test_fp32_and_gated_subnetwork_training_keep_the_ids_of_earlier_runs(name):
    assert digest(expand(load(CONFIGS / f"{name}.yaml", EARLIER_SETTINGS))) == EARLIER[name]


def test_every_stage_that_trains_or_reads_a_trained_model_changes_id_with_the_last_layer_at_one_position():
    cls = expand(load(CONFIGS / "smoke.yaml", ["train.precision=fp32", "train.subnetwork_training=gated"]))
    full = expand(load(CONFIGS / "smoke.yaml", EARLIER_SETTINGS))
    kept = {(a.kind, a.keys.get("method")) for a, b in zip(cls, full, strict=True) if a.id == b.id}
    assert kept == {("baseline", "majority")}
    assert {s.settings["train"]["last_layer"] for s in cls if s.kind == "finetune"} == {"cls"}
    assert all("last_layer" not in s.settings["train"] for s in full if s.kind == "finetune")


def test_only_the_re_fine_tunings_of_s_pruned_subnetworks_change_id_with_the_physical_path():
    physical = expand(load(CONFIGS / "smoke.yaml", ["train.precision=fp32", "train.last_layer=full"]))
    gated = expand(load(CONFIGS / "smoke.yaml", EARLIER_SETTINGS))
    changed = {(a.kind, a.keys["method"]) for a, b in zip(physical, gated, strict=True) if a.id != b.id}
    assert changed == {("retrain", "structured"), ("baseline", "random-init")}
    retrains = [s for s in physical if s.kind == "retrain"]
    assert {s.settings.get("subnetwork_training") for s in retrains if s.keys["method"] == "structured"} == {"physical"}
    assert all("subnetwork_training" not in s.settings for s in retrains if s.keys["method"] == "magnitude")


def test_the_smoke_study_keeps_its_first_ids():
    ids = [stage.id for stage in expand(load(CONFIGS / "smoke.yaml", EARLIER_SETTINGS))]
    assert ids[0] == "finetune/RTE/seed1-5aa71a3e3c"
    assert "prune/RTE/seed1-structured-e54e8a05e0" in ids and "prune/RTE/seed1-magnitude-c5ecab2b50" in ids


def test_an_uncapped_task_of_a_capped_config_keeps_its_fine_tuning_and_majority_ids():
    ids = [stage.id for stage in expand(load(CONFIGS / "minilm-glue.yaml", EARLIER_SETTINGS))
           if stage.task == "WNLI" and (stage.kind == "finetune" or stage.keys.get("method") == "majority")]
    assert hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16] == "0c4c00ea0f7c0774"


def test_the_fisher_search_adds_stages_and_leaves_the_other_methods_ids_alone():
    """Its prune stage reads the structured prune stage of the same seed (the default budget), which is
    the very stage a config without the Fisher search has; a budget of its own drops that input."""
    plain = {s.id for s in expand(load(CONFIGS / "smoke.yaml"))}
    stages = expand(load(CONFIGS / "smoke.yaml", ["methods=[fisher,structured,magnitude]"]))
    assert plain <= {s.id for s in stages}
    position = {s.id: i for i, s in enumerate(stages)}
    fisher = [s for s in stages if s.kind == "prune" and s.keys["method"] == "fisher"]
    assert len(fisher) == 2
    for prune in fisher:
        budget = next(s for s in stages if s.id == prune.inputs["budget"])
        assert (budget.keys["method"], budget.keys["seed"]) == ("structured", prune.keys["seed"])
        assert position[budget.id] < position[prune.id]
    own = expand(load(CONFIGS / "smoke.yaml", ["methods=[fisher]", "pruning.fisher.budget_fraction=0.5"]))
    assert all(set(s.inputs) == {"finetune"} for s in own if s.kind == "prune")
