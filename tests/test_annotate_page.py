"""The annotation page fit for hours of labelling (issue 17): a 128-token map and its colour bar in a
1280x720 window without scrolling, a colour scale that one hot cell cannot blacken, an "unsure" answer
that is saved but never exported as a pattern, the rule labeller's suggestion only on request, and a
shuffled order by default. Real headless Chromium; maps built in code."""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM_ARGS, new_page
from test_annotate import expected_ids, write_maps

from bertlottery.annotate.export import export_labelled
from bertlottery.annotate.server import make_server
from bertlottery.annotate.store import ORDER_FILE, MapsStore, order_seed, spread_heads
from bertlottery.attention import maps_format as fmt
from bertlottery.attention.rules import label_map
from bertlottery.cli import main
from bertlottery.errors import UserError

N_TOKENS = 128
HOT = (40, 7)  # one cell far above the rest


def long_tokens(n: int = N_TOKENS) -> tuple[list[str], list[int]]:
    """``n`` WordPiece-like tokens over two sentences, with long words, pieces and punctuation."""
    words = ["the", "representation", "of", "##ization", "is", "remarkably", "robust", ",", "although",
             "fine", "##tuning", "changes", "it", "."]
    body = [words[i % len(words)] for i in range(n - 3)]
    half = len(body) // 2
    tokens = ["[CLS]", *body[:half], "[SEP]", *body[half:], "[SEP]"]
    return tokens, [0] * (half + 2) + [1] * (n - half - 2)


def write_long_maps(root: Path) -> Path:
    """One example of 128 tokens, 1 layer x 2 heads: head 0 a soft diagonal with one hot cell, head 1
    attention on [CLS] and [SEP] (the rules call it vertical)."""
    tokens, segments = long_tokens()
    n = len(tokens)
    rng = np.random.default_rng(1)
    raw = np.zeros((1, 2, n, n))
    raw[0, 0] = rng.uniform(0.0, 0.02, (n, n)) + 0.2 * np.eye(n, k=-1)
    raw[0, 0][HOT] = 50.0
    anchors = [j for j, t in enumerate(tokens) if t in ("[CLS]", "[SEP]")]
    raw[0, 1] = 0.002
    raw[0, 1][:, anchors] = 1.0
    raw /= raw.sum(-1, keepdims=True)
    index = fmt.MapsIndex(model="tiny-bert", task="RTE", weights="finetuned", layers=1, heads=2, seed=0)
    example = fmt.Example("ex000", dev_index=3, tokens=tokens, segments=segments)
    return fmt.save_maps(root, index, [(example, {"raw": raw, "norm": raw * 2.0})])


@pytest.fixture
def maps_dir(tmp_path) -> Path:
    return write_maps(tmp_path / "maps")


@pytest.fixture
def long_server(tmp_path):
    maps_dir = write_long_maps(tmp_path / "maps")
    srv = make_server(MapsStore(maps_dir), tmp_path / "export", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, maps_dir
    srv.shutdown()
    srv.server_close()


def open_page(p, chromium, url: str, width: int, height: int):
    browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    page = new_page(browser, viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return browser, page, problems


# ``pixel([i, j])``: the colour drawn in cell (i, j) of the heatmap
PIXEL = """([i, j]) => { const c = document.querySelector('#heatmap'), r = window.devicePixelRatio || 1;
    const x = (geometry.left + (j + 0.5) * geometry.cell) * r, y = (geometry.top + (i + 0.5) * geometry.cell) * r;
    const one = document.createElement('canvas'), ctx = one.getContext('2d');
    one.width = one.height = 1;
    ctx.drawImage(c, Math.floor(x), Math.floor(y), 1, 1, 0, 0, 1, 1);
    return Array.from(ctx.getImageData(0, 0, 1, 1).data.slice(0, 3)); }"""


def inside(box: dict, width: int, height: int) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


@pytest.mark.parametrize("width,height", [(1280, 720), (1920, 1080)])
def test_a_128_token_map_and_its_colour_bar_fit_the_window_without_scrolling(long_server, chromium, tmp_path,
                                                                             width, height):
    from playwright.sync_api import sync_playwright

    srv, _ = long_server
    with sync_playwright() as p:
        browser, page, problems = open_page(p, chromium, srv.url, width, height)
        geometry = page.evaluate("geometry")
        assert geometry["n"] == N_TOKENS and geometry["cell"] >= 3  # every one of the 128 rows and columns drawn
        canvas = page.locator("#heatmap").bounding_box()
        # the whole grid, token labels included, lies on the canvas, and the canvas in the window
        assert geometry["left"] + N_TOKENS * geometry["cell"] <= canvas["width"]
        assert geometry["top"] + N_TOKENS * geometry["cell"] <= canvas["height"]
        for selector in ("#heatmap", "#colorbar", "#scale-max", "#scale", "#rownorm",
                         "button.label[data-label='unsure']", "#suggest", "#skip", "#progress-text"):
            box = page.locator(selector).bounding_box()
            assert box and inside(box, width, height), (selector, box)
        scroll = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight,"
                               " window.innerWidth, window.innerHeight, window.scrollY]")
        assert scroll[0] <= scroll[2] and scroll[1] <= scroll[3] and scroll[4] == 0, scroll
        # cells are a fraction of a pixel wide, their edges rounded: hovering a cell's first or last
        # pixel still names that cell
        tokens = long_tokens()[0]
        edge = lambda k: math.floor(k * geometry["cell"] + 0.5)  # noqa: E731 - JavaScript's Math.round
        for i, j in [(0, 127), (100, 37), (127, 0)]:
            for x in (edge(j) + 0.5, edge(j + 1) - 0.5):
                page.mouse.move(canvas["x"] + geometry["left"] + x, canvas["y"] + geometry["top"] + edge(i) + 0.5)
                assert page.inner_text("#readout").startswith(f"query {i} {tokens[i]} → key {j} {tokens[j]}: "), (i, j, x)
        page.mouse.wheel(0, 600)  # nothing to scroll to
        assert page.evaluate("window.scrollY") == 0
        page.screenshot(path=str(tmp_path / f"page-{width}x{height}.png"))
        browser.close()
    assert problems == []


def test_the_colour_scale_toggle_lifts_the_cells_a_hot_one_darkened(long_server, chromium):
    from playwright.sync_api import sync_playwright

    srv, _ = long_server
    with sync_playwright() as p:
        browser, page, _ = open_page(p, chromium, srv.url, 1280, 720)
        assert page.get_attribute("#item-id", "data-item") == "ex000/0/0/raw"
        # a diagonal cell (0.14 of its row) beside the hot cell (0.97 of its row)
        cell = [41, 40]
        linear = page.evaluate(PIXEL, cell)
        assert page.evaluate(PIXEL, list(HOT)) == [253, 231, 37]
        # viridis grows greener upwards: the green channel tells how far up the bar a colour is
        assert linear[1] < 60  # darkened: near the bottom colour (68, 1, 84)
        for mode in ("gamma", "clip"):
            page.select_option("#scale", mode)
            lifted = page.evaluate(PIXEL, cell)
            assert lifted[1] > linear[1] + 40, (mode, linear, lifted)
            assert page.get_attribute("#scale-box", "data-mode") == mode
        assert page.evaluate(PIXEL, list(HOT)) == [253, 231, 37]  # clipped: above the scale, the top colour
        above = int(re.fullmatch(r"(\d+) cells? above, in the top colour", page.inner_text("#scale-note")).group(1))
        assert 1 <= above <= N_TOKENS**2 // 100 + 1
        assert float(page.inner_text("#scale-max")) < 0.5  # the bar's top is the 99th percentile, not 50/51
        page.keyboard.press("g")  # cycles back to linear, and the choice is kept across a reload
        assert page.input_value("#scale") == "linear" and page.evaluate(PIXEL, cell) == linear
        page.keyboard.press("g")
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert page.input_value("#scale") == "gamma"
        browser.close()


def test_unsure_is_saved_counted_and_never_exported_as_a_pattern(maps_dir, tmp_path, chromium, capsys):
    from playwright.sync_api import sync_playwright

    from bertlottery.attention.classifier import load_labelled

    ids = expected_ids()
    srv = make_server(MapsStore(maps_dir), tmp_path / "page-export", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser, page, problems = open_page(p, chromium, srv.url, 1280, 720)
            page.keyboard.press("6")
            page.wait_for_function("id => document.querySelector('#item-id').dataset.item === id", arg=ids[1])
            assert json.loads((maps_dir / "labels.json").read_text()) == {ids[0]: "unsure"}
            assert page.inner_text("#progress-text") == f"1 / {len(ids)} labelled (1 unsure)"
            assert page.inner_text("[data-count='unsure']") == "1"
            page.click("button.label[data-label='unsure']")
            page.wait_for_function("id => document.querySelector('#item-id').dataset.item === id", arg=ids[2])
            page.keyboard.press("1")
            page.wait_for_function("id => document.querySelector('#item-id').dataset.item === id", arg=ids[3])
            assert page.inner_text("#progress-text") == f"3 / {len(ids)} labelled (2 unsure)"
            page.click("#export")
            page.wait_for_function("() => document.querySelector('#export-result').textContent.startsWith('wrote')")
            assert page.inner_text("#export-result").startswith("wrote 1 labelled maps")
            assert page.inner_text("#export-result").endswith("; 2 marked unsure left out")
            browser.close()
        assert problems == []
    finally:
        srv.shutdown()
        srv.server_close()
    # answered maps are not asked again, and the server's counts say how many are unsure
    store = MapsStore(maps_dir)
    assert store.next_unlabelled().id == ids[3] and store.n_labelled() == 3
    # downstream readers never see "unsure": read_labels, the classifier's loader, both export layouts
    assert fmt.read_labels(maps_dir) == {ids[2]: "diagonal"}
    assert fmt.read_labels(maps_dir, unsure=True) == {ids[0]: "unsure", ids[1]: "unsure", ids[2]: "diagonal"}
    assert load_labelled([maps_dir], "raw").labels == ["diagonal"]
    out = tmp_path / "page-export"
    summary = json.loads((out / "export.json").read_text())
    assert (summary["n_labelled"], summary["n_unsure"]) == (1, 2)
    assert "unsure" not in summary["labels"] and "unsure" not in json.dumps(summary["counts"])
    assert fmt.read_labels(out / "toolkit", unsure=True) == {ids[2]: "diagonal"}
    for kind in ("raw", "norm"):
        assert "unsure" not in (out / "paper" / kind / "labels.txt").read_text()
        assert "unsure" not in (out / "paper" / kind / "labels.tsv").read_text()
    assert sorted(p.stem for p in (out / "paper").rglob("*.npy")) == ["ex000_L00_H01"]
    assert main(["annotate", str(maps_dir), "--export", str(tmp_path / "cli-export")]) == 0
    assert f"wrote 1 labelled maps (raw 1, norm 0) to {tmp_path / 'cli-export'}; 2 marked unsure left out" in capsys.readouterr().out
    # a merge keeps the person's unsure answers; a folder of unsure answers only has nothing to export
    fmt.write_labels(maps_dir, {ids[2]: "block"}, merge=True)
    assert fmt.read_labels(maps_dir, unsure=True)[ids[0]] == "unsure"
    fmt.write_labels(maps_dir, {ids[0]: "unsure"})
    with pytest.raises(UserError, match="no labels yet \\(1 marked unsure, which are not exported\\)"):
        export_labelled(maps_dir, tmp_path / "again")
    with pytest.raises(UserError, match="Unknown attention pattern 'unsure'"):
        fmt.check_pattern("unsure")  # still no pattern where a pattern is required


def test_the_rule_labellers_suggestion_is_hidden_until_asked_for(long_server, chromium):
    from playwright.sync_api import sync_playwright

    srv, maps_dir = long_server
    maps = fmt.load_maps(maps_dir)
    tokens = maps.example_info("ex000").tokens
    rules = {key: label_map(maps.head_map("ex000", 0, head, kind), tokens).label
             for head in range(2) for kind in ("raw", "norm") for key in [f"ex000/0/{head}/{kind}"]}
    assert rules["ex000/0/1/raw"] == "vertical" != rules["ex000/0/0/raw"]  # the two heads really differ
    asked: list[str] = []
    with sync_playwright() as p:
        browser, page, problems = open_page(p, chromium, srv.url, 1280, 720)
        page.on("request", lambda r: asked.append(r.url) if "/api/suggest/" in r.url else None)
        first = page.get_attribute("#item-id", "data-item")
        page.click("#skip")
        page.click("#back")
        page.wait_for_function("id => document.querySelector('#item-id').dataset.item === id", arg=first)
        # off by default: not on screen, not even fetched
        assert page.is_hidden("#suggestion") and asked == [] and page.locator("button.label.suggested").count() == 0
        page.keyboard.press("s")
        page.wait_for_selector("#suggestion", state="visible")
        assert asked and page.get_attribute("#suggestion", "data-label") == rules[first]
        assert page.inner_text("#suggestion-text").startswith(f"rules say {rules[first]}")
        assert page.get_attribute("button.label.suggested", "data-label") == rules[first]
        page.keyboard.press("s")  # hides it again
        assert page.is_hidden("#suggestion")
        page.click("#suggest")
        page.wait_for_selector("#suggestion", state="visible")
        page.click("#accept")  # accepting labels the map as the rules say, then moves on
        page.wait_for_function("id => document.querySelector('#item-id').dataset.item !== id", arg=first)
        assert fmt.read_labels(maps_dir) == {first: rules[first]}
        assert page.is_hidden("#suggestion") and page.locator("button.label.suggested").count() == 0
        browser.close()
    assert problems == []


def test_the_api_serves_the_suggestion_of_the_map_asked_for(long_server):
    from test_annotate import get_json, request

    srv, maps_dir = long_server
    maps = fmt.load_maps(maps_dir)
    answer = get_json(srv, "/api/suggest/ex000/0/1/norm")
    expected = label_map(maps.head_map("ex000", 0, 1, "norm"), maps.example_info("ex000").tokens)
    assert answer["label"] == expected.label == "vertical"
    assert answer["scores"] == pytest.approx(expected.scores, abs=1e-3)
    assert request(srv, "GET", "/api/suggest/ex000/9/0/raw")[0] == 400
    assert request(srv, "GET", "/api/suggest/../../etc/passwd")[0] in (400, 403)


def test_shuffled_order_never_puts_a_heads_raw_and_norm_maps_side_by_side(tmp_path):
    maps_dir = write_maps(tmp_path / "maps", n_examples=6)
    for seed in range(200):
        items = MapsStore(maps_dir, shuffle_seed=seed).items
        assert sorted(i.id for i in items) == sorted(expected_ids(6))
        assert all((a.example, a.layer, a.head) != (b.example, b.layer, b.head) for a, b in zip(items, items[1:])), seed
    # deterministic for a seed, different across seeds, the folder's order only when asked for
    orders = {tuple(i.id for i in MapsStore(maps_dir, shuffle_seed=seed).items) for seed in (1, 1, 2)}
    assert len(orders) == 2 and tuple(expected_ids(6)) not in orders
    assert [i.id for i in MapsStore(maps_dir).items] == expected_ids(6)
    # the smallest cases: two heads can alternate; one head cannot be helped and is left as it is
    two = [("e", 0, 0, "raw"), ("e", 0, 0, "norm"), ("e", 0, 1, "raw"), ("e", 0, 1, "norm")]
    spread = spread_heads(two)
    assert sorted(spread) == sorted(two) and all(a[:3] != b[:3] for a, b in zip(spread, spread[1:]))
    assert spread_heads(two[:2]) == two[:2]


def test_the_default_seed_is_drawn_once_recorded_and_reused(tmp_path, capsys):
    maps_dir = write_maps(tmp_path / "maps")
    seed = order_seed(maps_dir)
    assert json.loads((maps_dir / ORDER_FILE).read_text()) == {"shuffle_seed": seed}
    assert order_seed(maps_dir) == seed  # every later start shows the same order
    assert order_seed(maps_dir, 7) == 7 and order_seed(maps_dir) == 7  # --shuffle-seed still works, and sticks
    for damaged in ("not json", "[7]", '{"shuffle_seed": "7"}', '{"seed": 7}'):
        (maps_dir / ORDER_FILE).write_text(damaged)
        with pytest.raises(UserError, match="delete it to draw a new order, or pass --shuffle-seed"):
            order_seed(maps_dir)
    assert order_seed(maps_dir, 9) == 9 == order_seed(maps_dir)  # a chosen seed replaces a damaged record
    with pytest.raises(SystemExit) as stop:
        main(["annotate", str(maps_dir), "--file-order", "--shuffle-seed", "3"])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    # a folder where the record cannot be written: one line naming it
    (maps_dir / ORDER_FILE).unlink()
    (maps_dir / ORDER_FILE).mkdir()
    with pytest.raises(UserError, match=f"cannot record the order in {re.escape(str(maps_dir / ORDER_FILE))}"):
        order_seed(maps_dir, 3)
    assert not list(maps_dir.glob(".*.tmp"))
    # a folder that is not a maps folder gets no order file
    assert main(["annotate", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "nowhere").exists()
