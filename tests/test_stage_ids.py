"""Stage ids are hashes of what a stage does; a refactor that changes one makes every run made before it
start over. These digests are of the ids of every shipped config's graph, taken before the studies
moved out of the pipeline and ``threshold`` became ``keep_fraction``: a change here must be deliberate."""

import hashlib
import json
from pathlib import Path

import pytest

from bertlottery.config import load
from bertlottery.studies import expand

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

DIGESTS = {
    "smoke": "8783e313e97d2dd3",
    "gordon-minilm": "fd55bd8bb1381814",
    "minilm-glue": "9142dd6d89381d79",
    "paper": "87d640948418c877",
    "gordon": "01036f8008207cad",
    "quickstart": "71a592841b6d003f",
}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_every_shipped_config_keeps_its_stage_ids(name):
    ids = [stage.id for stage in expand(load(CONFIGS / f"{name}.yaml"))]
    assert hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16] == DIGESTS[name]


def test_the_smoke_study_keeps_its_first_ids():
    ids = [stage.id for stage in expand(load(CONFIGS / "smoke.yaml"))]
    assert ids[0] == "finetune/RTE/seed1-461e1f3aa9"
    assert "prune/RTE/seed1-structured-938c34f24f" in ids and "prune/RTE/seed1-magnitude-159a879cd4" in ids
