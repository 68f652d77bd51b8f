"""Mask types: set algebra, sizes, files, and the paper's released masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bertlottery.errors import UserError
from bertlottery.masks import (
    FORMAT,
    HeadMask,
    Masks,
    MlpMask,
    WeightMask,
    body_fraction_kept,
    import_prasanna2020,
    load_masks,
    save_masks,
)
from bertlottery.models import model_layout

from tiny import tiny_model


def test_set_operations_follow_boolean_algebra():
    a = HeadMask(torch.tensor([[1, 1, 0, 0]]))
    b = HeadMask(torch.tensor([[1, 0, 1, 0]]))
    assert (a & b).keep.tolist() == [[True, False, False, False]]
    assert (a | b).keep.tolist() == [[True, True, True, False]]
    assert (a - b).keep.tolist() == [[False, True, False, False]]
    assert (~a).keep.tolist() == [[False, False, True, True]]
    assert (a & b).n_kept == 1 and (a | b).n_pruned == 1 and a.n_total == 4


def test_combining_masks_of_different_shapes_names_both():
    with pytest.raises(UserError, match=r"\(2, 4\) and \(3, 4\)"):
        HeadMask(torch.ones(2, 4)) & HeadMask(torch.ones(3, 4))
    with pytest.raises(TypeError):
        HeadMask(torch.ones(2, 4)) & MlpMask(torch.ones(2))


def test_masks_reject_values_other_than_zero_and_one():
    with pytest.raises(UserError, match="0/1"):
        MlpMask(torch.tensor([0.0, 0.5]))


def test_random_like_keeps_exactly_the_count_and_is_seeded():
    full = HeadMask.full(12, 12)
    one = HeadMask.random_like(full, keep=50, seed=7)
    assert one.n_kept == 50
    assert one == HeadMask.random_like(full, keep=50, seed=7)
    assert one != HeadMask.random_like(full, keep=50, seed=8)


def test_weight_mask_set_operations_and_counts():
    a = WeightMask({"w": torch.tensor([1, 1, 0, 0]), "v": torch.tensor([[1, 0]])})
    b = WeightMask({"w": torch.tensor([1, 0, 1, 0]), "v": torch.tensor([[1, 1]])})
    assert (a & b).n_kept == 2 and (a | b).n_kept == 5 and (a - b).n_kept == 1 and (~a).n_kept == 3
    assert a.per_tensor_kept() == {"w": 2, "v": 1}
    with pytest.raises(UserError, match="different parameter sets"):
        a & WeightMask({"w": torch.ones(4)})


def test_body_fraction_counts_head_and_mlp_parameters():
    model = tiny_model()
    layout = model_layout(model)
    # per layer: 4 heads of 8 dims in a 32-wide model, MLP 32 -> 37 -> 32, plus two LayerNorms
    assert layout.params_per_head == 3 * (32 * 8 + 8) + 32 * 8
    assert layout.params_per_mlp == 32 * 37 + 37 + 37 * 32 + 32
    assert layout.body_params == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("bert.encoder.layer.")
    )
    heads = HeadMask(torch.ones(2, 4))
    heads.keep[0, 0] = False
    mlps = MlpMask(torch.tensor([True, False]))
    removed = layout.params_per_head + layout.params_per_mlp
    assert body_fraction_kept(layout, heads=heads, mlps=mlps) == pytest.approx(1 - removed / layout.body_params)
    # removing every head and MLP leaves exactly the output biases and LayerNorms
    nothing = body_fraction_kept(layout, heads=~HeadMask.full(2, 4), mlps=~MlpMask.full(2))
    left = 2 * (32 + 2 * 32 + 2 * 32)  # attention-output bias, two LayerNorms (weight + bias) per layer
    assert nothing * layout.body_params == pytest.approx(left)


def test_save_and_load_round_trip_with_metadata(tmp_path):
    model = tiny_model()
    layout = model_layout(model)
    masks = Masks(
        heads=HeadMask(torch.rand(2, 4) > 0.5),
        mlps=MlpMask(torch.tensor([True, False])),
        params={"method": "structured", "seed": 42, "threshold": 0.9},
    )
    path = save_masks(tmp_path / "m.safetensors", masks, layout)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["kinds"] == "heads,mlps" and meta["family"] == "bert"
    assert meta["layers"] == "2" and meta["heads"] == "4"
    assert json.loads(meta["params"])["seed"] == 42
    loaded = load_masks(path, layout)
    assert loaded.heads == masks.heads and loaded.mlps == masks.mlps and loaded.params == masks.params
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_weight_masks_round_trip(tmp_path):
    model = tiny_model()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    name = "bert.encoder.layer.0.attention.self.query.weight"
    masks = Masks(weights=WeightMask({name: torch.rand(shapes[name]) > 0.3}))
    loaded = load_masks(save_masks(tmp_path / "w.safetensors", masks), model_layout(model), shapes)
    assert loaded.weights == masks.weights


def test_loading_a_mask_for_another_model_names_both_shapes(tmp_path):
    path = save_masks(tmp_path / "big.safetensors", Masks(heads=HeadMask.full(12, 12)))
    with pytest.raises(UserError, match=r"\(12, 12\).*\(2, 4\)"):
        load_masks(path, model_layout(tiny_model()))
    path = save_masks(tmp_path / "mlp.safetensors", Masks(mlps=MlpMask.full(12)))
    with pytest.raises(UserError, match="12 layers but the model has 2"):
        load_masks(path, model_layout(tiny_model()))


def test_unreadable_or_foreign_mask_files_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_masks(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_masks(bad)


# The paper's released masks (bert-base-uncased, 12 x 12 heads, 12 MLPs).
def test_released_masks_import_with_the_right_counts(reference_dir):
    masks = import_prasanna2020(reference_dir / "masks/heads_mlps/CoLA/seed_1337")
    assert masks.heads.shape == (12, 12) and masks.heads.n_kept == 95
    assert masks.mlps.shape == (12,) and masks.mlps.n_kept == 11
    assert masks.params["seed"] == 1337
    raw = np.load(reference_dir / "masks/heads_mlps/CoLA/seed_1337/head_mask.npy")
    assert masks.heads.keep.numpy().tolist() == (raw == 1).tolist()


def test_every_released_heads_mlps_mask_imports(reference_dir):
    seeds = sorted((reference_dir / "masks/heads_mlps").glob("*/seed_*"))
    assert len(seeds) == 45  # 9 tasks x 5 seeds
    for seed_dir in seeds:
        masks = import_prasanna2020(seed_dir)
        raw_heads = np.load(seed_dir / "head_mask.npy")
        raw_mlps = np.load(seed_dir / "mlp_mask.npy")
        assert masks.heads.n_kept == int(raw_heads.sum()) and masks.mlps.n_kept == int(raw_mlps.sum())


def test_heads_only_mode_imports_without_an_mlp_mask(reference_dir, tmp_path):
    masks = import_prasanna2020(reference_dir / "masks/heads/CoLA/seed_1337")
    assert masks.heads is not None
    with pytest.raises(UserError, match="neither head_mask.npy nor mlp_mask.npy"):
        import_prasanna2020(tmp_path)


# --- damaged or hand-made inputs: one line naming the file, never a traceback or a silent "kept" ---


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf"), -1.0, 2.0])
def test_weight_masks_refuse_values_other_than_zero_and_one(tmp_path, bad):
    values = torch.tensor([[1.0, 0.0], [1.0, bad]])
    with pytest.raises(UserError, match=r"weight mask of w must hold 0/1"):
        WeightMask({"w": values})
    for mask_type, shape in ((HeadMask, (2, 2)), (MlpMask, (4,))):
        with pytest.raises(UserError, match="must hold 0/1"):
            mask_type(values.view(shape))
    # the same values in a file (uint8 on disk: 2 stands for any damage) are refused when loaded
    if bad == 2.0:
        path = tmp_path / "w.safetensors"
        save_file({"weights/w": values.to(torch.uint8)}, str(path), metadata={"format": FORMAT})
        with pytest.raises(UserError, match=r"w.safetensors: The weight mask of w must hold 0/1 or booleans, found values \[2\]"):
            load_masks(path)


def test_mask_file_whose_params_are_not_json_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    for params in ("{not json", "[1, 2]"):
        save_file({"mlps": torch.ones(2, dtype=torch.uint8)}, str(path), metadata={"format": FORMAT, "params": params})
        with pytest.raises(UserError, match=r"m.safetensors: its metadata 'params' is not a JSON object"):
            load_masks(path)


def _seed_folder(root, name="seed_7", heads=None):
    folder = root / name
    folder.mkdir(parents=True)
    np.save(folder / "head_mask.npy", np.ones((2, 4), np.float32) if heads is None else heads, allow_pickle=True)
    return folder


def test_import_paper_refuses_pickled_truncated_and_misnamed_inputs(tmp_path):
    pickled = _seed_folder(tmp_path / "a", heads=np.array([[1, {"run": "code"}]], dtype=object))
    with pytest.raises(UserError, match=r"head_mask.npy is not a readable .npy array.*download"):
        import_prasanna2020(pickled)
    truncated = _seed_folder(tmp_path / "b")
    data = (truncated / "head_mask.npy").read_bytes()
    (truncated / "head_mask.npy").write_bytes(data[: len(data) - 7])
    with pytest.raises(UserError, match="not a readable .npy array"):
        import_prasanna2020(truncated)
    (truncated / "head_mask.npy").write_bytes(data[:40])  # cut inside the header
    with pytest.raises(UserError, match="not a readable .npy array"):
        import_prasanna2020(truncated)
    text = _seed_folder(tmp_path / "c", heads=np.array([["1", "0"]]))
    with pytest.raises(UserError, match="<U1 values, not a 0/1 mask"):
        import_prasanna2020(text)
    with pytest.raises(UserError, match="'abc' is not a seed; .* seed_<number>"):
        import_prasanna2020(_seed_folder(tmp_path, "seed_abc"))
    assert import_prasanna2020(_seed_folder(tmp_path, "seed_3")).params["seed"] == 3
    assert "seed" not in import_prasanna2020(_seed_folder(tmp_path, "my_masks")).params


def test_import_paper_into_a_folder_is_refused_and_leaves_nothing(tmp_path, capsys):
    from bertlottery.cli import main

    seed_dir = _seed_folder(tmp_path, "seed_1")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["masks", "import-paper", str(seed_dir), str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a folder; give a file name" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == [] and not list(tmp_path.glob(".*"))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="Cannot write mask file"):
        save_masks(blocker / "m.safetensors", Masks(mlps=MlpMask.full(2)))
    assert not list(tmp_path.glob(".*"))
    assert main(["masks", "import-paper", str(seed_dir), str(out / "m.safetensors")]) == 0
    assert load_masks(out / "m.safetensors").heads.n_kept == 8
