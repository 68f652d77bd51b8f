"""Downstream variants on a tiny model: the mask held fixed, information deletion, pruning after
fine-tuning; the training loss over the whole training set."""

from __future__ import annotations

import pytest
import torch

from bertlottery.data import make_loader
from bertlottery.gordon.analysis import mask_difference
from bertlottery.gordon.downstream import AfterDownstream, mean_loss, run_downstream
from bertlottery.gordon.mlm import load_mlm, save_mlm
from bertlottery.gordon.pruning import magnitude_mask, prune_count, pruned_parameters, random_mask
from bertlottery.masks import load_masks
from bertlottery.models import load_model, load_tokenizer
from bertlottery.steps.taskdata import prepare_task_data
from bertlottery.tasks import get_task
from bertlottery.training import TrainSettings

from tiny import write_rte

SETTINGS = TrainSettings(learning_rate=1e-3, epochs=1, batch_size=8, max_length=64, seed=3)
STEPS = 4  # 32 examples, batches of 8


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    """A pre-training checkpoint (encoder, pooler, head) whose weights are NOT zeroed under the masks."""
    model, tokenizer, _ = load_mlm(tiny_model_dir, seed=0)
    folder = save_mlm(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "model")
    params = pruned_parameters(model, "gordon", embeddings=True)
    return {"folder": folder, "weights": {n: p.detach().clone() for n, p in params.items()},
            "magnitude": magnitude_mask(params, 0.5),
            "random": random_mask({n: p.shape for n, p in params.items()}, 0.5, torch.Generator().manual_seed(0))}


@pytest.fixture
def glue(env):
    return write_rte(env / "glue", n_train=32, n_dev=12)


def test_information_deletion_starts_from_zeros_that_then_move(checkpoint, glue, tmp_path):
    mask = checkpoint["random"]  # random: the deleted weights include large ones, so the start is visible
    record = run_downstream(checkpoint["folder"], "RTE", tmp_path / "run", glue_dir=glue, settings=SETTINGS,
                            variant="information-deletion", mask=mask, save_model=True, progress=False)
    trained = dict(load_model(str(tmp_path / "run" / "model"), 2).named_parameters())
    bound = STEPS * SETTINGS.learning_rate * 3.2  # Adam moves a weight by at most ~3.2 lr per step
    moved = pruned = 0
    for name, keep in mask.keep.items():
        deleted = trained[name].detach()[~keep]
        assert float(checkpoint["weights"][name][~keep].abs().max()) > bound, name  # not small to begin with
        assert float(deleted.abs().max()) <= bound, name  # so these started at zero ...
        if "word_embeddings" not in name:  # (most embedding rows are of tokens the task never shows)
            moved += int((deleted != 0).sum())
            pruned += deleted.numel()
    assert moved > 0.9 * pruned  # ... and moved away from it
    assert record["fraction_kept"] == pytest.approx(0.5, abs=1e-3)
    assert not (tmp_path / "run" / "mask.safetensors").exists()  # nothing held fixed


def test_pruned_mode_holds_masked_weights_at_exactly_zero_and_after_downstream_prunes_the_fine_tuned_model(
        checkpoint, glue, tmp_path):
    mask = checkpoint["magnitude"]
    record = run_downstream(checkpoint["folder"], "RTE", tmp_path / "pruned", glue_dir=glue, settings=SETTINGS,
                            variant="pruned", mask=mask, save_model=True, progress=False,
                            sort_order={"bins": 4, "tensors": "gordon", "embeddings": False})
    trained = dict(load_model(str(tmp_path / "pruned" / "model"), 2).named_parameters())
    for name, keep in mask.keep.items():
        assert float(trained[name].detach()[~keep].abs().max()) == 0.0, name
    name = "bert.encoder.layer.0.attention.self.value.weight"
    assert not torch.equal(trained[name].detach()[mask.keep[name]], checkpoint["weights"][name][mask.keep[name]])
    assert record["fraction_kept"] == pytest.approx(0.5, abs=1e-3)
    assert set(record["splits"]) == {"dev"} and record["train_loss"] > 0
    assert record["sort_order"]["mean"] > 0 and len(record["sort_order"]["by_magnitude"]["mean"]) == 4
    assert load_masks(tmp_path / "pruned" / "mask.safetensors").weights == mask

    after = run_downstream(tmp_path / "pruned" / "model", "RTE", tmp_path / "after", glue_dir=glue,
                           settings=SETTINGS, variant="after-downstream", reference_mask=mask,
                           after=AfterDownstream(0.7, embeddings=True), progress=False)
    again = load_masks(tmp_path / "after" / "mask.safetensors").weights
    for name, keep in again.keep.items():
        assert int((~keep).sum()) == prune_count(keep.numel(), 0.7), name
    assert after["sparsity_reached"] == pytest.approx(0.7, abs=1e-3)
    assert after["mask_difference"] == pytest.approx(mask_difference(again, mask))
    assert 0.2 <= after["mask_difference"] <= 0.3  # 50% inside 70%, plus what fine-tuning reordered
    with pytest.raises(Exception, match="sparsity"):
        run_downstream(tmp_path / "pruned" / "model", "RTE", tmp_path / "x", glue_dir=glue, settings=SETTINGS,
                       variant="after-downstream")


def test_training_loss_over_the_training_set_is_the_mean_per_example(tiny_model_dir, glue):
    model = load_model(str(tiny_model_dir), 2, seed=0)
    data = prepare_task_data(get_task("RTE"), load_tokenizer(str(tiny_model_dir)), glue)
    loss = mean_loss(model, make_loader(data.train, data.pad_id, 5, shuffle=False, seed=None))
    model.eval()
    with torch.no_grad():
        each = [float(model(**{k: v for k, v in batch.items() if k != "index"}).loss)
                for batch in make_loader(data.train, data.pad_id, 1, shuffle=False, seed=None)]
    assert loss == pytest.approx(sum(each) / len(each), rel=1e-5)


def test_a_capped_run_draws_the_seeded_stratified_sample_of_its_cap_seed(checkpoint, glue, tmp_path):
    from bertlottery.steps.taskdata import training_examples

    records = {seed: run_downstream(checkpoint["folder"], "RTE", tmp_path / f"cap{seed}", glue_dir=glue,
                                    settings=SETTINGS, variant="pruned", max_train_examples=16, cap_seed=seed,
                                    progress=False)
               for seed in (1, 2)}
    for seed, record in records.items():
        _, _, cap = training_examples(get_task("RTE"), glue, max_train_examples=16, cap_seed=seed)
        assert record["n_train_examples"] == 16 and record["cap_seed"] == seed
        assert record["cap"]["sha256"] == cap.digest  # the lottery's fine-tuning draws the same examples
    assert records[1]["cap"]["sha256"] != records[2]["cap"]["sha256"]
    assert set(records[1]["majority"]) == {"dev"}  # the chance line: the majority class of what was trained on


def test_the_gordon_stage_passes_the_configs_cap_seed_to_the_fine_tuning(monkeypatch, tmp_path):
    from pathlib import Path

    from bertlottery.config import load
    from bertlottery.gordon import downstream, stages

    config = load(Path(__file__).resolve().parents[1] / "configs" / "gordon-minilm.yaml", ["train.cap_seed=7"])
    stage = next(s for s in stages.expand(config) if s.kind == "gordon-finetune" and s.task == "SST-2")
    seen = {}
    monkeypatch.setattr(downstream, "run_downstream", lambda *a, **kw: seen.update(kw))
    stages.execute(stage, tmp_path / "out", {"pretrain": tmp_path / "no-mask"}, config, False)
    assert seen["cap_seed"] == 7 and seen["max_train_examples"] == 2000
