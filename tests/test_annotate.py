"""`bertlottery annotate`: the labelling page in real headless Chromium, its server's API and
refusals, and the export layouts. Maps are synthetic (the five patterns drawn in code)."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM_ARGS, new_page

from bertlottery.annotate.server import make_server
from bertlottery.annotate.store import LABELS, MapsStore
from bertlottery.attention import maps_format as fmt
from bertlottery.cli import main

LAYERS, HEADS = 2, 3
MASKED = (1, 2)  # the head the folder's mask removed: all-zero maps, never an item
SENTENCES = [
    (["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"], None),
    (["[CLS]", "a", "dog", "barked", ".", "[SEP]", "it", "was", "loud", "!", "[SEP]"],
     [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]),
]


def _pattern(kind: str, tokens: list[str], segments: list[int] | None, rng) -> np.ndarray:
    """A T x T map of one of the five types, rows summing to 1."""
    n = len(tokens)
    m = np.full((n, n), 0.01)
    special = [j for j, t in enumerate(tokens) if t in ("[CLS]", "[SEP]", ".", "!")]
    seg = np.asarray(segments if segments is not None else [0] * n)
    if kind in ("diagonal", "vertical+diagonal"):
        m[np.arange(1, n), np.arange(n - 1)] += 1.0
    if kind in ("vertical", "vertical+diagonal"):
        m[:, special] += 1.0
    if kind == "block":
        m += seg[:, None] == seg[None, :]
    if kind == "heterogeneous":
        m += rng.random((n, n)) ** 4
    return m / m.sum(-1, keepdims=True)


def write_maps(root: Path, n_examples: int = len(SENTENCES)) -> Path:
    """A maps folder of ``n_examples`` examples, cycling through SENTENCES."""
    rng = np.random.default_rng(0)
    head_mask = [[True] * HEADS for _ in range(LAYERS)]
    head_mask[MASKED[0]][MASKED[1]] = False
    index = fmt.MapsIndex(model="tiny-bert", task="RTE", weights="finetuned", layers=LAYERS, heads=HEADS,
                          head_mask=head_mask, seed=0)
    pairs = []
    for e in range(n_examples):
        tokens, segments = SENTENCES[e % len(SENTENCES)]
        raw = np.zeros((LAYERS, HEADS, len(tokens), len(tokens)))
        for layer in range(LAYERS):
            for head in range(HEADS):
                if (layer, head) != MASKED:
                    raw[layer, head] = _pattern(LABELS[(layer * HEADS + head + e) % 5], tokens, segments, rng)
        value_norms = rng.uniform(0.5, 4.0, size=(LAYERS, HEADS, 1, len(tokens)))
        example = fmt.Example(f"ex{e:03d}", dev_index=10 + e, tokens=tokens, segments=segments)
        pairs.append((example, {"raw": raw, "norm": raw * value_norms}))
    return fmt.save_maps(root, index, pairs)


def expected_ids(n_examples: int = len(SENTENCES)) -> list[str]:
    return [f"ex{e:03d}/{layer}/{head}/{kind}" for e in range(n_examples) for layer in range(LAYERS)
            for head in range(HEADS) if (layer, head) != MASKED for kind in ("raw", "norm")]


@pytest.fixture
def maps_dir(tmp_path) -> Path:
    return write_maps(tmp_path / "maps")


@pytest.fixture
def server(maps_dir, tmp_path):
    srv = make_server(MapsStore(maps_dir), tmp_path / "page-export", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """A raw HTTP request (http.client sends the path as given: browsers would normalise `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def post_json(srv, path: str, obj) -> tuple[int, dict]:
    status, data = request(srv, "POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"})
    return status, json.loads(data)


def get_json(srv, path: str) -> dict:
    status, data = request(srv, "GET", path)
    assert status == 200, data
    return json.loads(data)


# --- the page, in a real browser -----------------------------------------------------------------


def test_page_labels_by_click_and_key_saves_resumes_and_exports(server, maps_dir, tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    ids = expected_ids()
    labels_file = maps_dir / "labels.json"
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = new_page(browser, viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server.url) and not r.url.startswith("data:") else None)

        def shown() -> str:
            return page.get_attribute("#item-id", "data-item")

        def wait_for_item(item_id: str) -> None:
            page.wait_for_function("id => document.querySelector('#item-id').dataset.item === id", arg=item_id)

        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        assert shown() == ids[0]
        assert page.inner_text("#progress-text") == f"0 / {len(ids)} labelled"
        assert page.inner_text("#position") == f"map 1 of {len(ids)}"

        # the heatmap draws the map: map 0 is a diagonal head (query i takes from key i-1), so the cell
        # (3, 2) is the brightest colour and (3, 5) the darkest; hovering names both tokens
        pixel = """([i, j]) => { const c = document.querySelector('#heatmap'), r = window.devicePixelRatio || 1;
            const x = (geometry.left + (j + 0.5) * geometry.cell) * r, y = (geometry.top + (i + 0.5) * geometry.cell) * r;
            const one = document.createElement('canvas'), ctx = one.getContext('2d');  // read each canvas once
            one.width = one.height = 1; ctx.imageSmoothingEnabled = false;
            ctx.drawImage(c, Math.floor(x), Math.floor(y), 1, 1, 0, 0, 1, 1);
            return Array.from(ctx.getImageData(0, 0, 1, 1).data.slice(0, 3)); }"""
        assert page.evaluate(pixel, [3, 2]) == [253, 231, 37]
        assert np.abs(np.subtract(page.evaluate(pixel, [3, 5]), [68, 1, 84])).max() <= 6
        assert page.evaluate("geometry.n") == len(SENTENCES[0][0])
        box = page.locator("#heatmap").bounding_box()
        geometry = page.evaluate("geometry")
        page.mouse.move(box["x"] + geometry["left"] + 2.5 * geometry["cell"],
                        box["y"] + geometry["top"] + 3.5 * geometry["cell"])
        assert page.inner_text("#readout").startswith("query 3 sat → key 2 cat: ")

        # three by clicking, three by keys; each saves and moves on to the next unlabelled map
        given = {}
        for k, label in enumerate(["diagonal", "block", "vertical"]):
            page.click(f"button.label[data-label='{label}']")
            wait_for_item(ids[k + 1])
            given[ids[k]] = label
        for k, key in zip(range(3, 6), "451", strict=True):
            page.keyboard.press(key)
            wait_for_item(ids[k + 1])
            given[ids[k]] = LABELS[int(key) - 1]
        assert json.loads(labels_file.read_text()) == given
        assert page.inner_text("#progress-text") == f"6 / {len(ids)} labelled"

        # back shows the earlier label; relabelling it replaces it
        page.click("#back")
        wait_for_item(ids[5])
        assert page.get_attribute("#current", "data-label") == "diagonal"
        assert page.get_attribute("button.label[data-label='diagonal']", "class") == "label chosen"
        page.keyboard.press("3")
        wait_for_item(ids[6])
        given[ids[5]] = "vertical"
        # skip one (arrow key), label the one after by key; the skipped one stays unlabelled
        page.keyboard.press("ArrowRight")
        wait_for_item(ids[7])
        page.keyboard.press("2")
        wait_for_item(ids[8])
        given[ids[7]] = "block"
        assert json.loads(labels_file.read_text()) == given

        # a reload resumes at the first unlabelled map (the skipped one) with the counts kept
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert shown() == ids[6]
        assert page.inner_text("#progress-text") == f"7 / {len(ids)} labelled"
        assert page.inner_text("button.label[data-label='vertical'] .count") == "2"
        page.keyboard.press("ArrowLeft")
        wait_for_item(ids[5])
        assert page.inner_text("#current") == "labelled: vertical"
        page.keyboard.press("0")  # clear it, then put it back by clicking
        page.wait_for_function("() => document.querySelector('#current').dataset.label === ''")
        assert ids[5] not in json.loads(labels_file.read_text())
        page.click("button.label[data-label='vertical']")
        wait_for_item(ids[6])
        assert json.loads(labels_file.read_text()) == given

        # a norm map with the rows-to-1 view toggled (key r): still drawn, scale relabelled
        page.click("#skip")
        wait_for_item(ids[7])
        assert page.inner_text("#kind-badge").startswith("norm")
        page.keyboard.press("r")
        assert page.is_checked("#rownorm")
        assert float(page.inner_text("#scale-max")) <= 1.0
        page.screenshot(path=str(tmp_path / "annotate.png"))

        page.click("#export")
        page.wait_for_function("() => document.querySelector('#export-result').textContent.startsWith('wrote')")
        assert page.inner_text("#export-result").startswith(f"wrote {len(given)} labelled maps")
        browser.close()
    assert problems == []
    assert outside == []
    check_export(tmp_path / "page-export", maps_dir, given)
    assert (tmp_path / "annotate.png").stat().st_size > 10_000


def test_page_retries_a_failed_save_and_shows_one_that_never_lands(server, maps_dir, chromium):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

    ids = expected_ids()
    labels_file = maps_dir / "labels.json"
    seen: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = new_page(browser)
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")

        def wait_for_item(item_id: str) -> None:
            page.wait_for_function("id => document.querySelector('#item-id').dataset.item === id", arg=item_id)

        def wait_for_message(start: str, containing: str) -> str:
            """The message once it starts with ``start`` and holds ``containing`` (an earlier error may still
            be shown when a key is pressed: the new one must be waited for, not the old one)."""
            try:
                page.wait_for_function("([s, c]) => { const t = document.querySelector('#message').textContent; "
                                       "return t.startsWith(s) && t.includes(c); }", arg=[start, containing])
            except PlaywrightTimeout:
                pytest.fail(f"no message starting {start!r} with {containing!r}: the page says "
                            f"{page.inner_text('#message')!r} after {len(seen)} requests to /api/label")
            return page.inner_text("#message")

        def answer(route, status: int, error: str) -> None:
            seen.append(route.request.url)
            route.fulfill(status=status, content_type="application/json", body=json.dumps({"error": error}))

        # One route for the whole test, whose behaviour each part sets: unrouting and routing again between
        # parts let a request through to the real server now and then (CI at 944c52f and d8aa503: the page
        # saved, moved on and cleared its message, and no handler saw a request).
        behaviour = {"handler": None}

        def route_label(route) -> None:
            if behaviour["handler"] is None:
                route.continue_()
            else:
                behaviour["handler"](route)

        page.route("**/api/label", route_label)

        def intercept(handler) -> None:
            seen.clear()
            behaviour["handler"] = handler

        # the connection is reset twice, then the save goes through: the label lands, no error stays
        intercept(lambda route: (seen.append(route.request.url),
                                 route.abort("connectionreset") if len(seen) <= 2 else route.continue_()))
        page.keyboard.press("1")
        wait_for_item(ids[1])
        assert len(seen) == 3 and json.loads(labels_file.read_text()) == {ids[0]: LABELS[0]}
        assert page.inner_text("#message") == ""

        # a server that keeps failing: five tries, then a clear error; the page stays on the map
        intercept(lambda route: answer(route, 503, "server busy"))
        page.keyboard.press("2")
        message = wait_for_message("NOT SAVED", "server busy; tried 5 times")
        assert len(seen) == 5 and ids[1] in message, message
        assert "error" in page.get_attribute("#message", "class")
        assert page.get_attribute("#item-id", "data-item") == ids[1]
        assert json.loads(labels_file.read_text()) == {ids[0]: LABELS[0]}

        # a refusal (4xx) is final: not repeated
        intercept(lambda route: answer(route, 400, "unknown label"))
        page.keyboard.press("3")
        message = wait_for_message("NOT SAVED", "(unknown label)")
        assert len(seen) == 1 and ids[1] in message, message
        intercept(None)

        page.keyboard.press("2")  # the server answers again: the same key now saves
        wait_for_item(ids[2])
        assert page.inner_text("#message") == ""
        browser.close()
    assert json.loads(labels_file.read_text()) == {ids[0]: LABELS[0], ids[1]: LABELS[1]}


def _a_run_directory(path: Path) -> dict[str, bytes]:
    """A folder the export must never replace (a fine-tuning run), and its files' contents."""
    files = {"config.json": b'{"task": "RTE"}', "model/model.safetensors": os.urandom(4096), "metrics.json": b"{}"}
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return files


def _contents(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_export_never_replaces_a_folder_it_did_not_write(maps_dir, tmp_path, capsys):
    fmt.write_labels(maps_dir, {"ex000/0/0/raw": "diagonal", "ex001/0/1/norm": "block"})
    run = tmp_path / "run"
    files = _a_run_directory(run)
    assert main(["annotate", str(maps_dir), "--export", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run} is not empty and was not written by bertlottery for annotate-export output; choose" in err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert _contents(run) == files
    # with --overwrite the export is written into it, and everything that was there stays
    assert main(["annotate", str(maps_dir), "--export", str(run), "--overwrite"]) == 0
    assert {name: data for name, data in _contents(run).items() if name in files} == files
    check_export(run, maps_dir, {"ex000/0/0/raw": "diagonal", "ex001/0/1/norm": "block"})
    assert not (run / ".bertlottery-annotate-export").exists()  # still not ours: the next export asks again
    assert main(["annotate", str(maps_dir), "--export", str(run)]) == 2
    capsys.readouterr()

    # the page's Export button follows the same rule: a run directory named as --export-dir is refused
    other = tmp_path / "other-run"
    files = _a_run_directory(other)
    srv = make_server(MapsStore(maps_dir), other, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        status, answer = post_json(srv, "/api/export", {})
        assert status == 409 and "was not written by bertlottery" in answer["error"] and "--overwrite" in answer["error"]
        assert _contents(other) == files and not any(p.name.startswith(".") for p in other.iterdir())
    finally:
        srv.shutdown()
        srv.server_close()


def check_export(out: Path, maps_dir: Path, given: dict[str, str]) -> None:
    summary = json.loads((out / "export.json").read_text())
    assert summary["n_labelled"] == len(given)
    # toolkit layout: a maps folder of the labelled examples that the attention package reads back
    toolkit = fmt.load_maps(out / "toolkit")
    assert toolkit.labels() == given
    assert [e.id for e in toolkit.index.examples] == sorted({key.split("/")[0] for key in given})
    for key in given:
        k = fmt.parse_label_key(key)
        np.testing.assert_array_equal(toolkit.head_map(k.example_id, k.layer, k.head, k.kind),
                                      fmt.load_maps(maps_dir).head_map(k.example_id, k.layer, k.head, k.kind))
    # paper layout: one .npy per map, labels.txt "label = name1, name2", labels.tsv "name<TAB>label"
    from bertlottery.attention.classifier import load_labelled

    for kind in ("raw", "norm"):
        expect = {f"{k.example_id}_L{k.layer:02d}_H{k.head:02d}": label
                  for key, label in given.items() if (k := fmt.parse_label_key(key)).kind == kind}
        folder = out / "paper" / kind
        assert sorted(p.stem for p in folder.glob("*.npy")) == sorted(expect)
        from_txt = {}
        for line in (folder / "labels.txt").read_text().splitlines():
            label, names = (part.strip() for part in line.split("="))
            from_txt.update({name.strip(): label for name in names.split(",")})
        assert from_txt == expect
        assert dict(line.split("\t") for line in (folder / "labels.tsv").read_text().splitlines()) == expect
        for name in expect:
            m = np.load(folder / f"{name}.npy")
            ex, layer, head = re.fullmatch(r"(ex\d+)_L(\d+)_H(\d+)", name).groups()
            assert m.dtype == np.float32 and m.shape == (len(SENTENCES[int(ex[2:])][0]),) * 2
            np.testing.assert_array_equal(m, fmt.load_maps(maps_dir).head_map(ex, int(layer), int(head), kind))
        # the toolkit's classifier reads both layouts to the same maps and labels
        if expect:
            from_paper, from_toolkit = load_labelled([folder], kind), load_labelled([out / "toolkit"], kind)
            assert sorted(from_paper.labels) == sorted(from_toolkit.labels) == sorted(expect.values())
            by_name = dict(zip((Path(n).stem for n in from_paper.names), from_paper.maps, strict=True))
            for name, m in zip(from_toolkit.names, from_toolkit.maps, strict=True):  # name: <folder>/<key>
                k = fmt.parse_label_key("/".join(name.split("/")[-4:]))
                np.testing.assert_array_equal(by_name[f"{k.example_id}_L{k.layer:02d}_H{k.head:02d}"], m)


# --- the API -------------------------------------------------------------------------------------


def test_items_are_listed_in_a_stable_order_without_masked_heads(server, maps_dir):
    listed = get_json(server, "/api/items")
    assert [item["id"] for item in listed["items"]] == expected_ids()
    assert listed["total"] == len(expected_ids()) == 20
    assert get_json(server, "/api/items?offset=3&limit=2")["items"][0]["index"] == 3
    item = get_json(server, "/api/item/ex001/0/1/norm")
    assert item["tokens"] == SENTENCES[1][0] and item["segments"] == SENTENCES[1][1]
    stored = fmt.load_maps(maps_dir).head_map("ex001", 0, 1, "norm")
    np.testing.assert_allclose(item["map"], stored, rtol=1e-3)
    assert item["max"] == pytest.approx(stored.max())
    assert request(server, "GET", "/api/item/ex000/1/2/raw")[0] == 400  # the masked head
    # the same seed gives the same shuffled order on every start
    a, b = MapsStore(maps_dir, shuffle_seed=3), MapsStore(maps_dir, shuffle_seed=3)
    assert [i.id for i in a.items] == [i.id for i in b.items] != expected_ids()
    assert sorted(i.id for i in a.items) == sorted(expected_ids())
    assert [i.kind for i in MapsStore(maps_dir, kinds=["norm"]).items] == ["norm"] * 10


def test_next_unlabelled_wraps_and_labels_can_be_cleared(server, maps_dir):
    ids = expected_ids()
    for item_id in ids[:3]:
        assert post_json(server, "/api/label", {"id": item_id, "label": "block"})[0] == 200
    assert get_json(server, "/api/state")["first_unlabelled"] == ids[3]
    assert get_json(server, "/api/next?after=10")["item"]["id"] == ids[11]
    status, saved = post_json(server, "/api/label", {"id": ids[1], "label": None})
    assert status == 200 and saved["n_labelled"] == 2 and saved["next_unlabelled"] == ids[3]
    assert get_json(server, f"/api/next?after={len(ids) - 1}")["item"]["id"] == ids[1]  # wraps round
    assert fmt.read_labels(maps_dir) == {ids[0]: "block", ids[2]: "block"}


def test_parallel_labels_all_land_in_labels_json(tmp_path):
    """A burst of 80 saves, their connections opened at the same moment: none is reset or lost
    (the default listen queue of 5 reset one of 20 on a busy 2-core machine)."""
    n_examples = 8  # 10 maps each
    maps_dir = write_maps(tmp_path / "maps", n_examples)
    ids = expected_ids(n_examples)
    srv = make_server(MapsStore(maps_dir), tmp_path / "export", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    start = threading.Barrier(len(ids))
    answers: dict[str, object] = {}

    def post(n: int, item_id: str) -> None:
        body = json.dumps({"id": item_id, "label": LABELS[n % 5]}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
        try:
            start.wait()
            conn.connect()  # every connection at once: the burst lands in the listen queue
            conn.request("POST", "/api/label", body=body, headers={"Content-Type": "application/json"})
            answers[item_id] = conn.getresponse().status
        except OSError as error:
            answers[item_id] = repr(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=post, args=(n, i)) for n, i in enumerate(ids)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == dict.fromkeys(ids, 200)
        assert fmt.read_labels(maps_dir) == {i: LABELS[n % 5] for n, i in enumerate(ids)}
        assert get_json(srv, "/api/state")["first_unlabelled"] is None
    finally:
        srv.shutdown()
        srv.server_close()


def test_bad_labels_ids_and_requests_are_refused_with_a_message(server, maps_dir):
    ok = {"id": "ex000/0/0/raw", "label": "block"}
    cases = [
        ({"id": "ex000/0/0/raw", "label": "diagonl"}, 400, "unknown label 'diagonl'"),
        ({"id": "ex000/0/0/raw", "label": 3}, 400, "unknown label 3"),
        ({"id": "ex009/0/0/raw", "label": "block"}, 400, "no map 'ex009/0/0/raw'"),
        ({"id": "ex000/7/0/raw", "label": "block"}, 400, "no map"),
        ({"id": "../../etc/passwd", "label": "block"}, 400, "no map"),
        ({"label": "block"}, 400, '"id"'),
        (["ex000/0/0/raw", "block"], 400, "JSON object"),
    ]
    for body, status, message in cases:
        got, answer = post_json(server, "/api/label", body)
        assert (got, message in answer["error"]) == (status, True), (body, answer)
    raw = json.dumps(ok).encode()
    for headers, status in [
        ({"Content-Type": "text/plain"}, 415),  # what a cross-site form can send
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "application/json", "Host": "evil.example:80"}, 403),  # DNS rebinding
    ]:
        assert request(server, "POST", "/api/label", raw, headers)[0] == status
    assert request(server, "POST", "/api/label", b"{not json", {"Content-Type": "application/json"})[0] == 400
    assert request(server, "GET", "/api/next?after=x")[0] == 400
    status, data = request(server, "GET", "/api/next?after=-5")
    assert (status, json.loads(data)["error"]) == (400, "after must be a whole number >= -1, got '-5'")
    assert get_json(server, "/api/next?after=-1")["item"]["id"] == expected_ids()[0]  # the range stated holds
    assert json.loads(request(server, "GET", "/api/items?limit=-3")[1])["error"].startswith("limit must be a whole number >= 0")
    for depth in (100, 5_000, 30_000):  # past the parser's recursion limit, within the 64 KiB body limit
        nested = b"[" * depth + b"]" * depth
        status, data = request(server, "POST", "/api/label", nested, {"Content-Type": "application/json"})
        assert status == 400, depth
        assert json.loads(data)["error"] in ("body must be a JSON object",
                                             "body is nested too deeply; send one flat JSON object")
    assert request(server, "GET", "/api/items?limit=-3")[0] == 400
    assert request(server, "POST", "/api/nothing", raw, {"Content-Type": "application/json"})[0] == 404
    assert not (maps_dir / "labels.json").exists()  # nothing was written
    assert post_json(server, "/api/label", ok)[0] == 200


TRAVERSALS = [
    "/../../../../etc/passwd",
    "/static/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/static/%2e%2e/%2e%2e/index.json",
    "/..%5c..%5cetc%5cpasswd",
    "/api/item/../../../etc/passwd",
    "/api/item/%2e%2e/%2e%2e/maps/0/0/raw",
    "/api/item/..%2f..%2f..%2fetc%2fpasswd/0/0/raw",
    "/api/item/ex000/0/0/raw/../../../../../../etc/passwd",
    "//etc/passwd",
    "/etc/passwd",
    "/index.json",
    "/maps/ex000.npz",
    "/labels.json",
    "http://127.0.0.1/../etc/passwd",
]


def test_paths_outside_the_folder_are_refused(server, maps_dir, tmp_path):
    for path in TRAVERSALS:
        status, data = request(server, "GET", path)
        assert status in (403, 404), (path, status)
        assert b"root:" not in data and b"bertlottery-attention-maps" not in data, path
    assert request(server, "GET", "/static/../../../etc/passwd")[0] == 403
    # a map file that is a symlink to a file outside the folder is not read
    secret = tmp_path / "outside.npz"
    np.savez(secret, raw=np.ones((LAYERS, HEADS, 11, 11), np.float16), norm=np.ones((LAYERS, HEADS, 11, 11), np.float16))
    (maps_dir / "maps" / "ex001.npz").unlink()
    (maps_dir / "maps" / "ex001.npz").symlink_to(secret)
    status, data = request(server, "GET", "/api/item/ex001/0/0/raw")
    assert status == 403 and b"outside the maps folder" in data
    assert get_json(server, "/api/item/ex000/0/0/raw")["tokens"] == SENTENCES[0][0]


def test_labels_json_symlinked_outside_is_refused(maps_dir, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    (maps_dir / "labels.json").symlink_to(elsewhere)
    assert main(["annotate", str(maps_dir), "--export", str(tmp_path / "out")]) == 2
    assert "outside the maps folder" in capsys.readouterr().err


def test_server_listens_on_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.socket.getsockname()[0] == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")


# --- the command line ----------------------------------------------------------------------------


def test_cli_serves_on_127_0_0_1_and_prints_the_url(maps_dir):
    proc = subprocess.Popen([sys.executable, "-m", "bertlottery.cli", "annotate", str(maps_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        url, printed = None, []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            printed.append(line)
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            url = found and found.group(0)
        assert url, "no URL printed"
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=60)
        conn.request("GET", "/api/state")
        state = json.loads(conn.getresponse().read())
        # issue 17 made the shuffled order the default: the first map is the first of the recorded seed's order
        seed = json.loads((maps_dir / "annotate.json").read_text())["shuffle_seed"]
        assert f"order: shuffled with seed {seed}" in "".join(printed) and state["shuffle_seed"] == seed
        assert state["total"] == 20 and state["first_unlabelled"] == MapsStore(maps_dir, shuffle_seed=seed).items[0].id
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_export_writes_both_layouts_and_refuses_mistakes(maps_dir, tmp_path, capsys):
    out = tmp_path / "labelled"
    assert main(["annotate", str(maps_dir), "--export", str(out)]) == 2
    assert "no labels yet" in capsys.readouterr().err
    given = {"ex000/0/0/raw": "diagonal", "ex000/0/1/norm": "vertical", "ex001/1/1/raw": "vertical+diagonal",
             "ex001/0/0/raw": "heterogeneous", "ex001/0/2/norm": "block", "ex001/0/1/raw": "vertical"}
    fmt.write_labels(maps_dir, given)
    assert main(["annotate", str(maps_dir), "--export", str(out)]) == 0
    assert "wrote 6 labelled maps (raw 4, norm 2)" in capsys.readouterr().out
    check_export(out, maps_dir, given)
    assert (out / "paper" / "raw" / "labels.txt").read_text().splitlines()[0] == "diagonal = ex000_L00_H00"
    # an earlier export is replaced by the next one, without --overwrite: a cleared label's map goes too
    del given["ex000/0/0/raw"]
    fmt.write_labels(maps_dir, given)
    assert main(["annotate", str(maps_dir), "--export", str(out)]) == 0
    check_export(out, maps_dir, given)
    assert not (out / "paper" / "raw" / "ex000_L00_H00.npy").exists()
    assert main(["annotate", str(maps_dir), "--export", str(out), "--overwrite"]) == 0
    check_export(out, maps_dir, given)
    assert sorted(p.name for p in out.iterdir()) == [".bertlottery-annotate-export", "export.json", "paper", "toolkit"]
    assert main(["annotate", str(maps_dir), "--kind", "nrom"]) == 2
    assert "Did you mean 'norm'" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "nowhere")]) == 2
    assert "not a maps folder" in capsys.readouterr().err
