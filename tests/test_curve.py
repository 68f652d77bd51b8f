"""`bertlottery curve`: a learning curve over training sizes and seeds, resumable, refusing to mix settings."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bertlottery.cli import main
from bertlottery.errors import UserError
from bertlottery.settings import TrainSettings
from bertlottery.steps import curve as curve_module
from bertlottery.steps.curve import learning_curve

from tiny import write_rte

SETTINGS = TrainSettings(epochs=1, learning_rate=1e-3, batch_size=8, max_length=32)


@pytest.fixture
def glue(tmp_path, env):
    return write_rte(tmp_path / "glue", n_train=48, n_dev=20)


def test_a_curve_has_a_point_per_size_and_seed_with_its_learnt_check(tiny_model_dir, glue, tmp_path):
    out = tmp_path / "curve"
    record = learning_curve(str(tiny_model_dir), "RTE", out, glue_dir=glue, settings=SETTINGS,
                            sizes=[None, 16, 100], seeds=[1, 2], progress=False)
    table = pd.read_csv(out / "curve.csv")
    # 100 >= the 48 training examples: the whole set, counted once with None; sizes in increasing order
    assert list(table["n_train"]) == [16, 16, 48, 48] and list(table["seed"]) == [1, 2, 1, 2]
    for row in table.itertuples():
        point = json.loads((out / "points" / f"n{16 if row.n_train == 16 else 'all'}-seed{row.seed}" / "metrics.json")
                           .read_text())
        assert point["learnt_check"]["score"] == row.value and point["learnt_check"]["learnt"] == row.learnt
        assert point["splits"]["dev"]["metrics"]["accuracy"] == row.value
        config = json.loads((out / "points" / f"n{16 if row.n_train == 16 else 'all'}-seed{row.seed}" / "config.json")
                            .read_text())
        assert config["train"]["seed"] == row.seed and config["train"]["learning_rate"] == 1e-3
    assert not list(out.glob("points/*/model"))  # models removed unless kept
    means = table.groupby("n_train")["value"].mean()
    assert [p["n_train"] for p in record["points"]] == [16, 48]
    assert [p["mean"] for p in record["points"]] == pytest.approx(list(means))
    assert (out / "curve.png").stat().st_size > 10_000 and json.loads((out / "curve.json").read_text()) == record


def test_a_stopped_curve_resumes_and_other_settings_are_refused(tiny_model_dir, glue, tmp_path, monkeypatch):
    out = tmp_path / "curve"
    first = learning_curve(str(tiny_model_dir), "RTE", out, glue_dir=glue, settings=SETTINGS, sizes=[16],
                           seeds=[1], progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr("bertlottery.steps.finetune.finetune_run", no_training)
    assert learning_curve(str(tiny_model_dir), "RTE", out, glue_dir=glue, settings=SETTINGS, sizes=[16],
                          seeds=[1], progress=False) == first
    with pytest.raises(UserError, match=r"holds a learning curve made with other settings \(train\); give another --out"):
        learning_curve(str(tiny_model_dir), "RTE", out, glue_dir=glue, settings=TrainSettings(epochs=2),
                       sizes=[16], seeds=[1], progress=False)


def test_bad_sizes_and_seeds_are_one_line_before_any_training(tiny_model_dir, glue, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(curve_module, "_point_dir", lambda *a: pytest.fail("trained before checking its input"))
    with pytest.raises(UserError, match="at least 1"):
        learning_curve(str(tiny_model_dir), "RTE", tmp_path / "a", glue_dir=glue, settings=SETTINGS, sizes=[0],
                       seeds=[1], progress=False)
    with pytest.raises(UserError, match="distinct seeds"):
        learning_curve(str(tiny_model_dir), "RTE", tmp_path / "b", glue_dir=glue, settings=SETTINGS, sizes=[8],
                       seeds=[1, 1], progress=False)
    code = main(["curve", "--model", str(tiny_model_dir), "--task", "RTE", "--out", str(tmp_path / "c"),
                 "--glue-dir", str(glue), "--sizes", "16", "many"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--sizes are numbers of training examples or 'all'" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
