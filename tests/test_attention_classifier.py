"""The paper's CNN: exact architecture, brief training on synthetic maps, checkpoints, both labelled layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertlottery.attention import maps_format as fmt
from bertlottery.attention.classifier import (
    LabelledMaps,
    PatternCNN,
    load_classifier,
    load_labelled,
    pad_batch,
    predict,
    prepare,
    read_paper_labels,
    train,
)
from bertlottery.attention.synthetic import dataset
from bertlottery.cli import main
from bertlottery.errors import UserError


def test_the_architecture_is_the_papers():
    model = PatternCNN(5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    shapes = [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs]
    assert shapes == [(1, 16, 3), (16, 16, 3), (16, 32, 3), (32, 32, 3), (32, 64, 3), (64, 64, 3), (64, 16, 1),
                      (16, 5, 1)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 2
    assert isinstance(model.features[-2], torch.nn.AdaptiveAvgPool2d)
    assert all(torch.all(c.bias == 0) for c in convs)
    assert model(torch.zeros(3, 1, 37, 37)).shape == (3, 5)  # any size, through global pooling
    padded = pad_batch([np.ones((3, 3)), np.ones((5, 5))], 4)
    assert padded.shape == (2, 1, 5, 5) and padded[0, 0, 3:].sum() == 0 and padded[0, 0, :3, :3].sum() == 9


def _synthetic(n: int, seed: int, kind: str) -> LabelledMaps:
    maps = dataset(n, seed=seed, kind=kind, min_len=16, max_len=24)
    return LabelledMaps([prepare(m.attention, kind) for m in maps], [m.label for m in maps],
                        [f"s{i}" for i in range(len(maps))])


@pytest.fixture
def one_thread():
    # these small convolutions run fastest on one thread (and the CI machine is shared)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_brief_training_on_synthetic_maps_learns_the_five_types(tmp_path, capsys, one_thread):
    data = _synthetic(30, seed=3, kind="raw")
    result = train(data, "raw", tmp_path / "cnn", epochs=14, batch_size=32, learning_rate=3e-3, seed=0)
    with capsys.disabled():
        print(f"\nCNN on synthetic raw maps: validation weighted F1 {result.weighted_f1:.3f} "
              f"(epoch {result.best_epoch}, {result.seconds:.1f} s)")
    assert result.n_train == 120 and result.n_val == 30
    assert result.weighted_f1 >= 0.9 and min(result.per_class_f1.values()) >= 0.6
    assert result.weighted_f1 == max(h["val_weighted_f1"] for h in result.history)  # the best epoch was kept
    model, meta = load_classifier(tmp_path / "cnn")
    assert meta["classes"] == list(fmt.PATTERNS) and meta["input_size"] == 24 and meta["kind"] == "raw"
    fresh = dataset(6, seed=99, kind="raw", min_len=16, max_len=24)
    predicted = predict(model, meta, [m.attention for m in fresh])
    accuracy = np.mean([p == m.label for p, m in zip(predicted, fresh, strict=True)])
    with capsys.disabled():
        print(f"CNN on 30 fresh synthetic maps: accuracy {accuracy:.3f}")
    assert accuracy >= 0.8


def test_training_refuses_too_few_maps_of_a_type():
    data = LabelledMaps([np.eye(4)] * 3, ["diagonal", "diagonal", "block"], ["a", "b", "c"])
    with pytest.raises(UserError, match="block has fewer"):
        train(data, "raw", None, epochs=1)


def test_labelled_maps_in_the_toolkit_and_the_paper_layouts(tmp_path):
    # toolkit layout: a maps directory with labels.json
    ex = fmt.Example("ex000", 0, ["[CLS]", "a", "b", "[SEP]"], [0, 0, 0, 0])
    raw = np.random.default_rng(0).random((1, 2, 4, 4)).astype(np.float32)
    info = fmt.MapsIndex(model="m", task="RTE", weights="pretrained", layers=1, heads=2)
    fmt.save_maps(tmp_path / "maps", info, [(ex, {"raw": raw, "norm": raw * 3})])
    fmt.write_labels(tmp_path / "maps", {"ex000/0/1/norm": "block", "ex000/0/0/raw": "diagonal"})
    norm = load_labelled([tmp_path / "maps"], "norm")
    assert norm.labels == ["block"]
    np.testing.assert_allclose(norm.maps[0], fmt.row_normalised(raw[0, 1] * 3), rtol=2e-3)  # norm rows normalised
    # the paper's layout: .npy maps and a 'label = names' file
    paper = tmp_path / "paper"
    paper.mkdir()
    for name in ("m1", "m2", "m3"):
        np.save(paper / f"{name}.npy", np.eye(5))
    (paper / "labels.txt").write_text("Diagonal = m1, m2.npy\n\nVertical + Diagonal = m3\n")
    assert read_paper_labels(paper / "labels.txt") == {"m1": "diagonal", "m2": "diagonal", "m3": "vertical+diagonal"}
    both = load_labelled([paper, tmp_path / "maps"], "raw")
    assert both.labels == ["diagonal", "diagonal", "vertical+diagonal", "diagonal"]
    (paper / "labels.txt").write_text("Diagonal = m1\nStripes = m2\n")
    with pytest.raises(UserError, match="unknown pattern 'Stripes'"):
        load_labelled([paper], "raw")
    (paper / "labels.txt").write_text("Diagonal = m1, m9\n")
    with pytest.raises(UserError, match="m9"):
        load_labelled([paper], "raw")
    with pytest.raises(UserError, match="neither a maps directory"):
        load_labelled([tmp_path / "nothing"], "raw")


def test_train_and_classify_through_the_cli(tmp_path, capsys, one_thread):
    # a labelled maps directory of synthetic maps (one example per map, one layer and head)
    items, labels = [], {}
    for i, m in enumerate(dataset(8, seed=4, kind="raw", min_len=16, max_len=20)):
        example = fmt.Example(f"ex{i:03d}", i, m.tokens, None)
        items.append((example, {"raw": m.attention[None, None], "norm": m.attention[None, None] * 2}))
        labels[fmt.label_key(example.id, 0, 0, "raw")] = m.label
    info = fmt.MapsIndex(model="synthetic", task="RTE", weights="pretrained", layers=1, heads=1)
    fmt.save_maps(tmp_path / "maps", info, items)
    fmt.write_labels(tmp_path / "maps", labels)
    assert main(["attention", "train", str(tmp_path / "maps"), "--kind", "raw", "--out", str(tmp_path / "cnn"),
                 "--epochs", "2", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "weighted" in out and "heterogeneous" in out
    # classify keeps the person's labels.json and writes its own labels to patterns.json
    assert main(["attention", "classify", str(tmp_path / "maps"), "--method", "cnn", "--model",
                 str(tmp_path / "cnn")]) == 0
    assert "share of heads" in capsys.readouterr().out
    assert fmt.read_labels(tmp_path / "maps") == labels
    record = json.loads((tmp_path / "maps" / "patterns.json").read_text())
    assert record["method"] == "cnn" and set(record["kinds"]) == {"raw"} and len(record["labels"]) == 40
    assert main(["attention", "classify", str(tmp_path / "maps"), "--overwrite-labels"]) == 0
    assert set(fmt.read_labels(tmp_path / "maps").values()) <= set(fmt.PATTERNS)
    assert len(fmt.read_labels(tmp_path / "maps")) == 80  # rules: both kinds
    capsys.readouterr()
    assert main(["attention", "classify", str(tmp_path / "maps"), "--method", "cnnn"]) == 2
    assert "Did you mean 'cnn'" in capsys.readouterr().err
    assert main(["attention", "classify", str(tmp_path / "maps"), "--method", "cnn"]) == 2
    assert "--model CKPT" in capsys.readouterr().err
