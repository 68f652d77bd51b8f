"""E13 analyses on known inputs: sort-order movement, mask difference, head prune rates, similarity,
weight statistics, and the tables of results (Table 1, the pre-training-loss fit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bertlottery.gordon.analysis import (
    head_prune_rates,
    hidden_state_similarity,
    loss_metric_fits,
    mask_difference,
    movement_summary,
    sort_order_movement,
    table1,
    weight_statistics,
)
from bertlottery.gordon.pruning import magnitude_mask, pruned_parameters
from bertlottery.masking import apply_weight_mask_
from bertlottery.masks import WeightMask

from tiny import tiny_model


def test_sort_order_movement_of_a_known_permutation_is_exact():
    generator = np.random.default_rng(0)
    n = 50
    magnitudes = np.arange(1, n + 1, dtype=float)  # rank of weight i before: i
    permutation = generator.permutation(n)
    before = torch.tensor(magnitudes * np.where(generator.random(n) < 0.5, -1, 1))  # signs do not matter
    after = torch.tensor(magnitudes[permutation])  # weight i now has the magnitude of rank permutation[i]
    expected = np.abs(np.arange(n) - permutation) / n
    assert np.allclose(sort_order_movement(before, after).numpy(), expected, atol=0, rtol=0)
    # a matrix: ranks are over all its entries, the fraction is of its size
    assert sort_order_movement(before.view(5, 10), after.view(5, 10)).numpy().tolist() == expected.tolist()
    # the paper's example: from position 59 of 100 to 63 is a move of 4%
    start = torch.arange(100.0)
    end = start.clone()
    end[59] = 62.5  # now above 60, 61, 62: position 62 (0-based) of the sorted order
    assert float(sort_order_movement(start, end)[59]) == pytest.approx(3 / 100)


def test_movement_summary_pools_tensors_and_bins_by_starting_magnitude():
    before = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([0.1, 0.2])}
    after = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0]), "b": torch.tensor([0.1, 0.2])}
    summary = movement_summary(before, after, bins=2)
    moved = np.array([0.75, 0.25, 0.25, 0.75, 0.0, 0.0])
    assert summary["mean"] == pytest.approx(moved.mean())
    assert summary["std"] == pytest.approx(moved.std())
    assert summary["per_tensor"] == {"a": pytest.approx(0.5), "b": 0.0}
    bins = summary["by_magnitude"]  # bin 0: the lower half of each tensor's order
    assert bins["count"] == [3, 3]
    assert bins["mean"] == pytest.approx([(0.75 + 0.25 + 0) / 3, (0.25 + 0.75 + 0) / 3])
    assert bins["mean_magnitude"] == pytest.approx([(1 + 2 + 0.1) / 3, (3 + 4 + 0.2) / 3])


def test_mask_difference_of_known_masks_is_exact():
    a = WeightMask({"x": torch.tensor([[1, 1], [0, 0]]), "y": torch.tensor([1, 0, 1, 0, 1, 0])})
    b = WeightMask({"x": torch.tensor([[1, 0], [0, 1]]), "y": torch.tensor([1, 0, 1, 0, 1, 0])})
    assert mask_difference(a, b) == 2 / 10
    assert mask_difference(a, a) == 0.0
    assert mask_difference(a, ~a) == 1.0
    with pytest.raises(ValueError, match="different tensors"):
        mask_difference(a, WeightMask({"x": a.keep["x"]}))


def test_head_prune_rates_count_each_heads_rows_and_output_columns():
    model = tiny_model("bert")  # 2 layers, 4 heads of 8 dims, hidden 32
    params = pruned_parameters(model, "weights")
    keep = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    keep["bert.encoder.layer.0.attention.self.query.weight"][8:16] = False  # all of head 1's query rows
    keep["bert.encoder.layer.1.attention.output.dense.weight"][:, 24:32] = False  # head 3's output columns
    keep["bert.encoder.layer.1.attention.self.key.weight"][24:28, :] = False  # half of head 3's key rows
    keep["bert.encoder.layer.1.intermediate.dense.weight"][:] = False  # not a head's: no effect
    rates = head_prune_rates(model, WeightMask(keep))
    expected = torch.zeros(2, 4, dtype=torch.float64)
    expected[0, 1] = 0.25
    expected[1, 3] = 0.25 + 0.125
    assert torch.equal(rates, expected)
    uniform = head_prune_rates(model, magnitude_mask(params, 0.5))
    assert float(uniform.mean()) == pytest.approx(0.5, abs=0.1)


def test_head_prune_rates_of_a_fused_qkv_map_count_each_heads_rows_in_q_k_and_v():
    model = tiny_model("modernbert")  # Wqkv is [Q; K; V], 32 rows each, heads of 8 rows
    params = pruned_parameters(model, "weights")
    keep = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    prefix = "model.layers"
    keep[f"{prefix}.0.attn.Wqkv.weight"][8:16] = False  # head 1's query rows
    keep[f"{prefix}.0.attn.Wqkv.weight"][64 + 8:64 + 12] = False  # half of head 1's value rows
    keep[f"{prefix}.1.attn.Wqkv.weight"][32 + 24:32 + 32] = False  # head 3's key rows
    keep[f"{prefix}.1.attn.Wo.weight"][:, 0:8] = False  # head 0's output columns
    keep[f"{prefix}.1.mlp.Wi.weight"][:] = False  # not a head's: no effect
    rates = head_prune_rates(model, WeightMask(keep))
    expected = torch.zeros(2, 4, dtype=torch.float64)
    expected[0, 1] = 0.25 + 0.125
    expected[1, 3] = 0.25
    expected[1, 0] = 0.25
    assert torch.equal(rates, expected)


def test_hidden_states_of_a_model_with_itself_are_identical_in_every_layer_and_pruning_lowers_them():
    model = tiny_model("bert").bert
    batches = [torch.randint(5, 99, (3, 9), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    same = hidden_state_similarity(model, model, batches)
    assert len(same) == 3  # embeddings + 2 layers
    assert same == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    similarity = {}
    for sparsity in (0.2, 0.8):
        pruned = tiny_model("bert").bert
        apply_weight_mask_(pruned, magnitude_mask(pruned_parameters(pruned, "weights"), sparsity))
        similarity[sparsity] = hidden_state_similarity(model, pruned, batches)
        assert similarity[sparsity][0] == pytest.approx(1.0, abs=1e-12)  # the embeddings were not pruned
    # a random tiny encoder's branches are small against the residual stream, so the drop is small but sure
    assert all(more < less < 1 - 1e-7 for more, less in zip(similarity[0.8][1:], similarity[0.2][1:]))


def test_weight_statistics_are_each_tensors_mean_and_population_std():
    t = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    (stats,) = weight_statistics({"w": t})
    assert stats == {"name": "w", "mean": 1.5, "std": pytest.approx(float(np.std([1, 2, 3, 0]))), "numel": 4,
                     "zeros": 0.25}


def _rows(method, sparsity, task, metric, dev, train_loss, pretrain_loss=None):
    common = dict(task=task, seed=1, method=method, subnetwork=f"sparsity-{sparsity:g}", mode="pruned",
                  fraction_kept=1 - sparsity, epochs=3, stage_id="x")
    rows = [dict(common, split="dev", metric=metric, value=dev), dict(common, split="train", metric="train_loss",
                                                                       value=train_loss)]
    if pretrain_loss is not None:
        rows.append(dict(common, split="pretrain-dev", metric="pretrain_dev_loss", value=pretrain_loss))
    return rows


def test_table1_and_the_pretraining_loss_fit_from_a_results_table():
    rows = []
    for sparsity, loss in ((0.0, 2.0), (0.5, 3.0), (0.9, 5.0)):
        rows += _rows("information-deletion", sparsity, "SST-2", "accuracy", 0.9 - 0.05 * (loss - 2), 0.1 + sparsity, loss)
        rows += _rows("information-deletion", sparsity, "CoLA", "mcc", 0.5 - 0.1 * (loss - 2), 0.2, loss)
    rows += _rows("gmp-downstream", 0.5, "SST-2", "accuracy", 0.8, 0.3)
    t1 = table1(pd.DataFrame(rows))
    deletion = t1[t1["method"] == "information-deletion"].set_index("sparsity")
    assert deletion.loc[0.5, "pretrain_dev_loss"] == 3.0
    assert deletion.loc[0.5, "SST-2"] == pytest.approx(0.85)
    assert deletion.loc[0.5, "average"] == pytest.approx((0.85 + 0.4) / 2)
    assert deletion.loc[0.9, "SST-2 train_loss"] == pytest.approx(1.0)
    downstream = t1[t1["method"] == "gmp-downstream"].iloc[0]
    assert pd.isna(downstream["pretrain_dev_loss"]) and pd.isna(downstream["average"])  # no CoLA row
    fits = loss_metric_fits(pd.DataFrame(rows)).set_index("task")
    assert fits.loc["SST-2", "slope"] == pytest.approx(-0.05)
    assert fits.loc["CoLA", "slope"] == pytest.approx(-0.1)
    assert fits.loc["CoLA", "intercept"] == pytest.approx(0.7)
    assert fits.loc["SST-2", "r"] == pytest.approx(-1.0)
