"""The attention stages inside a lottery study: the smoke config on a tiny model, with an attention section."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bertlottery.attention import maps_format as fmt
from bertlottery.attention.patterns import read_patterns
from bertlottery.attention.stages import ANALYSIS_FILE, ANALYSIS_KIND, MAPS_KIND
from bertlottery.config import ConfigError, load
from bertlottery.studies import expand

from rungraph import run_study_done
from tiny import write_rte

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SMALL = ["seeds=[1,2]", "methods=[structured]", "subnetworks=[good]", "modes=[pruned]", "baselines=[]",
         "longer_retraining=null", "train.learning_rate=1e-3", "train.batch_size=8",
         "attention={examples: 4, keep_examples: 2, batch_size: 3}"]


def test_expand_adds_maps_for_pretrained_and_every_seed_full_and_super_then_one_analysis():
    config = load(SMOKE, SMALL)
    stages = expand(config)
    mine = [s for s in stages if s.kind.startswith("attention")]
    names = sorted(s.name for s in mine if s.kind == MAPS_KIND)
    assert names == ["pretrained", "pretrained-super", "seed1", "seed1-super", "seed2", "seed2-super"]
    (analysis,) = [s for s in mine if s.kind == ANALYSIS_KIND]
    by_id = {s.id: s for s in stages}
    assert by_id[analysis.inputs["super"]].kind == "super"
    assert {by_id[i].name for k, i in analysis.inputs.items() if k.startswith("maps")} == set(names)
    seed2 = next(s for s in mine if s.name == "seed2-super")
    assert by_id[seed2.inputs["finetune"]].keys["seed"] == 2 and by_id[seed2.inputs["super"]].kind == "super"
    position = {s.id: i for i, s in enumerate(stages)}
    assert all(position[i] < position[s.id] for s in stages for i in s.inputs.values())
    # one seed: no super-survivors, so no super maps
    one = [s for s in expand(load(SMOKE, [*SMALL, "seeds=[1]"])) if s.kind == MAPS_KIND]
    assert sorted(s.name for s in one) == ["pretrained", "seed1"]
    # the attention settings are part of the stage ids
    other = expand(load(SMOKE, [*SMALL[:-1], "attention={examples: 5, keep_examples: 2, batch_size: 3}"]))
    assert not {s.id for s in mine} & {s.id for s in other if s.kind.startswith("attention")}
    assert not [s for s in expand(load(SMOKE, SMALL[:-1])) if s.kind.startswith("attention")]


def test_bad_attention_settings_fail_with_the_config():
    with pytest.raises(ConfigError) as error:
        load(SMOKE, ["attention={examples: 0, classifier: rulez, kinds: [raw, nrom]}"])
    message = str(error.value)
    assert "attention.examples must be at least 1" in message
    assert "Did you mean 'rules'" in message and "Did you mean 'norm'" in message
    with pytest.raises(ConfigError, match="cnn_models is empty"):
        load(SMOKE, ["attention={classifier: cnn}"])
    with pytest.raises(ConfigError, match="unknown key 'attention.exampels'"):
        load(SMOKE, ["attention={exampels: 3}"])


def test_the_attention_stages_run_in_a_study(tiny_model_dir, env):
    glue = write_rte(env / "glue", n_train=32, n_dev=12)
    config = load(SMOKE, [f"model={tiny_model_dir}", f"glue_dir={glue}", *SMALL])
    run_dir = env / "study"
    stages = run_study_done(config, run_dir)

    maps_dirs = {s.name: run_dir / "stages" / s.id for s in stages if s.kind == MAPS_KIND}
    seed1 = fmt.load_maps(maps_dirs["seed1"])
    assert seed1.index.weights == "finetuned" and len(seed1) == 2  # keep_examples
    record = read_patterns(maps_dirs["seed1"])
    assert record["n_examples"] == 4 and len(record["labels"]) == 4 * 8 * 2  # every example, head and kind
    assert set(fmt.read_labels(maps_dirs["seed1"])) == {k for k in record["labels"] if k.split("/")[0] in
                                                         {"ex000", "ex001"}}
    sup = read_patterns(maps_dirs["seed1-super"])
    kept = sum(map(sum, sup["head_mask"]))
    assert len(sup["labels"]) == 4 * kept * 2
    assert fmt.load_maps(maps_dirs["pretrained"]).index.weights == "pretrained"

    (analysis_stage,) = [s for s in stages if s.kind == ANALYSIS_KIND]
    analysis = json.loads((run_dir / "stages" / analysis_stage.id / ANALYSIS_FILE).read_text())
    shares = pd.DataFrame(analysis["proportions"])
    for (weights, group, kind, level), rows in shares.groupby(["weights", "group", "kind", "level"]):
        assert rows["proportion"].sum() == pytest.approx(1.0)
    all_heads = shares[(shares.group == "all") & (shares.level == "heads")]
    assert set(all_heads.weights) == {"pretrained", "finetuned"}
    assert set(all_heads.n) == {8, 16}  # 8 heads pre-trained; 2 seeds x 8 heads fine-tuned
    super_heads = analysis["super_survivors"]["RTE"]
    assert super_heads == sup["head_mask"]  # the analysis reads the mask the super maps ran under
    survivors = sum(map(sum, super_heads))  # the tiny model may keep no head in both seeds
    groups = {"all"} | ({"super-survivors", "super-survivors-unpruned"} if survivors else set())
    table = pd.read_csv(run_dir / "results.csv")
    attention = table[table.method == "attention"]
    assert set(attention.subnetwork) == groups == set(shares.group)
    assert set(attention["mode"]) == {"pretrained", "finetuned"}
    assert len(attention[attention.metric.str.startswith("pattern-")]) == len(shares)
    assert {c["weights"] for c in analysis["correlations"]} == {"pretrained", "finetuned"}

    # the report section: the proportions table and figure, example maps, the correlation
    from bertlottery.attention.report import report_section
    from bertlottery.report import Section
    from bertlottery.report.rundata import load_run
    from rungraph import write_graph_of

    write_graph_of(run_dir, config)  # what the report reads the run's stages from
    section = report_section(load_run(run_dir), env / "report")
    assert isinstance(section, Section) and section.missing == ([] if survivors else [
        m for m in section.missing if "super" in m])
    assert 'id="figure-attention-patterns"' in section.html_body and "data:image/png;base64," in section.html_body
    assert 'id="figure-attention-examples"' in section.html_body
    assert "0.015" in section.html_body  # the paper's correlation beside ours
    written = pd.read_csv(env / "report" / "tables" / "attention-patterns-heads.csv")
    assert len(written) == len(shares[(shares.level == "heads") & (shares.pattern == "diagonal")])
    assert (env / "report" / "figures" / "attention-patterns.png").is_file()
