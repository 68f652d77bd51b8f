"""The annotation page: HTML, CSS and vanilla JavaScript, kept as strings so that they ship inside the
package (no package-data entry, no build step) and load nothing from the network.

The page asks the server (``server.py``) for one map at a time and draws it on a canvas as a
heatmap, query tokens down the left, key tokens along the top, sized to the window so that a map of
128 tokens and its colour bar fit 1280x720 without scrolling. Keys 1-5 label, 6 marks "unsure", arrows
move, g changes the colour scale (linear, gamma 0.5, clipped at the 99th percentile: one hot cell then
no longer darkens the rest), s asks the server for the rule labeller's suggestion (never shown unasked,
so it cannot anchor the person's own reading).
"""

from __future__ import annotations

from html import escape

from .store import CHOICES

__all__ = ["HTML", "CSS", "JS", "LABEL_HINTS"]

# What each of Kovaleva et al. (2019)'s types looks like, as the buttons explain it.
LABEL_HINTS = {
    "diagonal": "previous / next token",
    "block": "uniform within a sentence",
    "vertical": "[CLS], [SEP], punctuation",
    "vertical+diagonal": "both at once",
    "heterogeneous": "everything else",
    "unsure": "can't tell; never exported",
}

_BUTTONS = "\n".join(
    f'      <button type="button" class="label" data-label="{escape(label)}" data-key="{n}">'
    f'<canvas class="icon" width="40" height="40" data-pattern="{escape(label)}"></canvas>'
    f'<span class="name">{escape(label)}</span><span class="hint">{escape(LABEL_HINTS[label])}</span>'
    f'<span class="count" data-count="{escape(label)}">0</span><kbd>{n}</kbd></button>'
    for n, label in enumerate(CHOICES, start=1)
)

HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bertlottery · attention patterns</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header>
  <div class="title">
    <h1>Attention patterns</h1>
    <span id="source" class="muted"></span>
  </div>
  <div class="progress" title="maps answered (a pattern or unsure)">
    <div class="bar"><div id="bar-fill"></div></div>
    <span id="progress-text">loading…</span>
    <span id="order" class="muted"></span>
  </div>
</header>
<main>
  <section class="card map-card">
    <div class="map-head">
      <span id="item-id" class="mono" data-item=""></span>
      <span id="kind-badge" class="badge"></span>
      <span id="position" class="muted"></span>
    </div>
    <div class="canvas-wrap" id="canvas-wrap"><canvas id="heatmap" aria-label="attention map"></canvas></div>
    <div id="readout" class="mono muted">rows: query token · columns: key token</div>
    <div class="map-foot">
      <label class="toggle" title="divide each row by its sum (display only; key r)"><input type="checkbox" id="rownorm"> rows to 1</label>
      <label class="toggle" title="how values map to colours (key g)">colours
        <select id="scale">
          <option value="linear">linear</option>
          <option value="gamma">gamma 0.5</option>
          <option value="clip">clip at 99th pct</option>
        </select></label>
      <div class="scale" id="scale-box" title="colour bar: the map's values from 0 to the top of the scale"><span>0</span><canvas id="colorbar" width="160" height="10"></canvas><span id="scale-max"></span><span id="scale-note"></span></div>
    </div>
  </section>
  <aside class="card side">
    <dl class="facts">
      <dt>example</dt><dd id="fact-example"></dd>
      <dt>layer</dt><dd><span id="fact-layer"></span> <span class="muted">head</span> <span id="fact-head"></span> <span class="muted">map</span> <span id="fact-kind"></span></dd>
    </dl>
    <div id="current" class="current">not labelled yet</div>
    <div id="labels" class="labels">
{_BUTTONS}
    </div>
    <div class="nav">
      <button type="button" id="back" title="previous map (←)">← Back</button>
      <button type="button" id="skip" title="next map (→)">Skip →</button>
      <button type="button" id="clear" title="remove this map's label (0)">Clear</button>
    </div>
    <div class="suggest">
      <button type="button" id="suggest" title="ask the rule labeller (s); hidden again on the next map">Rule labeller's suggestion</button>
      <div id="suggestion" hidden>
        <span id="suggestion-text"></span>
        <button type="button" id="accept" title="label the map as the rules say">Accept</button>
      </div>
    </div>
    <p class="keys muted"><kbd>1</kbd>–<kbd>6</kbd> label &amp; next · <kbd>←</kbd><kbd>→</kbd> move · <kbd>0</kbd> clear · <kbd>r</kbd> rows to 1 · <kbd>g</kbd> colours · <kbd>s</kbd> rules</p>
    <div class="export">
      <button type="button" id="export">Export labelled set</button>
      <div id="export-result" class="muted"></div>
    </div>
    <div id="message" class="message" role="status"></div>
  </aside>
</main>
</body>
</html>
"""

CSS = r"""
:root {
  --bg: #f4f5f7; --card: #ffffff; --ink: #1d2330; --muted: #6b7385; --line: #dde1e8;
  --accent: #3b5bdb; --accent-soft: #e7ecff; --good: #2f9e44; --bad: #c92a2a; --hint: #e8590c;
}
* { box-sizing: border-box; }
/* The page is exactly one window tall: the map takes the room that is left and is drawn to fit it,
   so no map ever needs a scroll (the side panel scrolls on its own in a very short window). */
html, body { height: 100%; }
body { margin: 0; background: var(--bg); color: var(--ink); display: flex; flex-direction: column;
       font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { display: flex; align-items: center; justify-content: space-between; gap: 24px; flex: none;
         padding: 8px 20px; background: var(--card); border-bottom: 1px solid var(--line); }
.title { display: flex; align-items: baseline; gap: 14px; min-width: 0; }
h1 { font-size: 17px; margin: 0; font-weight: 650; white-space: nowrap; }
#source { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.muted { color: var(--muted); }
.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.progress { display: flex; align-items: center; gap: 10px; min-width: 300px; }
.bar { flex: 1; min-width: 120px; height: 8px; background: #e9ecef; border-radius: 4px; overflow: hidden; }
#bar-fill { height: 100%; width: 0; background: var(--good); transition: width .2s; }
#progress-text, #order { white-space: nowrap; font-variant-numeric: tabular-nums; }
#order { font-size: 12px; }
main { flex: 1; min-height: 0; display: grid; grid-template-columns: minmax(0, 1fr) 320px;
       grid-template-rows: minmax(0, 1fr); gap: 14px; padding: 12px 20px; width: 100%; max-width: 1500px;
       margin: 0 auto; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; min-height: 0; }
.map-card { display: flex; flex-direction: column; }
.side { overflow-y: auto; }
.map-head { display: flex; align-items: center; gap: 10px; margin-bottom: 6px; flex: none; }
#item-id { font-size: 15px; font-weight: 600; }
#position { margin-left: auto; font-variant-numeric: tabular-nums; }
.badge { font-size: 12px; padding: 1px 8px; border-radius: 10px; background: var(--accent-soft); color: var(--accent); }
.canvas-wrap { flex: 1 1 0; min-height: 0; display: flex; justify-content: center; align-items: flex-start; overflow: hidden; }
#heatmap { display: block; cursor: crosshair; }
#readout { flex: none; min-height: 1.4em; margin-top: 4px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.map-foot { flex: none; display: flex; align-items: center; margin-top: 4px; gap: 14px; flex-wrap: wrap; }
.toggle { font-size: 12px; color: var(--muted); white-space: nowrap; cursor: pointer; }
.toggle input { vertical-align: -2px; margin: 0 3px 0 0; }
.toggle select { font: inherit; font-size: 12px; margin-left: 3px; }
.scale { display: flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); white-space: nowrap; margin-left: auto; }
#colorbar { border: 1px solid var(--line); border-radius: 2px; }
.facts { display: grid; grid-template-columns: auto 1fr; gap: 0 12px; margin: 0 0 8px; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.facts dd .muted { font-weight: 400; }
.current { padding: 5px 10px; border-radius: 8px; background: #f1f3f5; margin-bottom: 8px; color: var(--muted); }
.current.set { background: var(--accent-soft); color: var(--accent); font-weight: 600; }
.labels { display: flex; flex-direction: column; gap: 4px; }
button { font: inherit; color: inherit; background: #f8f9fa; border: 1px solid var(--line); border-radius: 8px;
         padding: 5px 10px; cursor: pointer; }
button:hover:not(:disabled) { border-color: var(--accent); }
button:disabled { opacity: .45; cursor: default; }
button.label { display: grid; grid-template-columns: 32px 1fr auto auto; grid-template-rows: auto auto;
               column-gap: 10px; align-items: center; text-align: left; padding: 4px 10px; background: var(--card);
               line-height: 1.25; }
button.label .icon { grid-row: 1 / span 2; width: 32px; height: 32px; border-radius: 4px; }
button.label .name { font-weight: 600; }
button.label .hint { grid-column: 2; grid-row: 2; font-size: 12px; color: var(--muted); }
button.label .count { grid-column: 3; grid-row: 1 / span 2; font-size: 12px; color: var(--muted);
                      font-variant-numeric: tabular-nums; }
button.label kbd { grid-column: 4; grid-row: 1 / span 2; }
button.label.chosen { border-color: var(--accent); background: var(--accent-soft); box-shadow: 0 0 0 1px var(--accent) inset; }
button.label.suggested { outline: 2px dashed var(--hint); outline-offset: -3px; }
button.label[data-label="unsure"] .name { font-weight: 500; font-style: italic; }
kbd { display: inline-block; min-width: 18px; padding: 0 4px; text-align: center; font: 11px/16px ui-monospace, Menlo, monospace;
      border: 1px solid #ced4da; border-bottom-width: 2px; border-radius: 4px; background: #fff; color: var(--ink); }
.nav { display: flex; gap: 6px; margin-top: 8px; }
.nav button { flex: 1; }
.suggest { margin-top: 8px; }
#suggest { width: 100%; }
#suggestion { display: flex; align-items: center; gap: 8px; margin-top: 4px; font-size: 13px; color: var(--hint); }
#accept { padding: 2px 10px; }
#suggestion[hidden] { display: none; }
#suggestion-text { flex: 1; }
.keys { font-size: 12px; margin: 8px 0 0; line-height: 1.7; }
.export { border-top: 1px solid var(--line); margin-top: 8px; padding-top: 8px; }
#export { width: 100%; }
#export-result { font-size: 12px; margin-top: 4px; word-break: break-all; }
.message { font-size: 13px; margin-top: 8px; min-height: 1em; }
.message.error { color: var(--bad); background: #fff5f5; border: 1px solid var(--bad); border-radius: 6px;
                 padding: 6px 8px; font-weight: 600; }
.message.retrying { color: var(--muted); }
@media (max-width: 900px) { html, body { height: auto; } main { grid-template-columns: 1fr; grid-template-rows: auto; }
                            .canvas-wrap { flex: none; } }
"""

JS = r"""
"use strict";

// viridis, sampled at 9 points and interpolated: dark = 0, yellow = the map's largest value
const STOPS = [[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
               [31, 158, 137], [53, 183, 121], [110, 206, 88], [253, 231, 37]];
function colour(t) {
  t = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i, a = STOPS[i], b = STOPS[i + 1];
  return `rgb(${Math.round(a[0] + f * (b[0] - a[0]))},${Math.round(a[1] + f * (b[1] - a[1]))},${Math.round(a[2] + f * (b[2] - a[2]))})`;
}

const $ = (id) => document.getElementById(id);
const HOVER_HINT = "rows: query token · columns: key token";
let state = null;     // /api/state
let current = null;   // /api/item/<id>
let busy = false;     // one request at a time: a key pressed mid-request never labels an unseen map
let geometry = null;  // where the heatmap's cells are, for the hover readout
let shown = null;     // the values drawn: the map, or its rows scaled to sum to 1
let suggested = null; // the rule labeller's answer for the current map, once asked for

// How values become colours. Linear puts the map's largest value at the top of the bar, so one hot
// cell can leave every other one near the bottom; gamma 0.5 lifts the small values; clipping at the
// 99th percentile of the map's cells draws the few above it in the top colour.
const GAMMA = 0.5, CLIP_QUANTILE = 0.99, SCALE_KEY = "bertlottery-annotate-scale";
function colourScale(values, max) {
  const mode = $("scale").value;
  const top = max > 0 ? max : 1;
  if (mode === "gamma") return { mode, top, of: (v) => Math.pow(Math.max(0, v) / top, GAMMA), above: 0 };
  if (mode === "clip") {
    const cells = values.flat().sort((a, b) => a - b);
    const at = cells.length ? cells[Math.floor(CLIP_QUANTILE * (cells.length - 1))] : 0;
    const clip = at > 0 ? at : top;
    return { mode, top: clip, of: (v) => Math.min(1, v / clip), above: cells.filter((v) => v > clip).length };
  }
  return { mode, top, of: (v) => v / top, above: 0 };
}

function displayed() {
  if (!$("rownorm").checked) return { values: current.map, max: current.max };
  const values = current.map.map((row) => {
    const sum = row.reduce((a, b) => a + b, 0);
    return sum > 0 ? row.map((v) => v / sum) : row;
  });
  return { values, max: Math.max(0, ...values.map((row) => Math.max(...row))) };
}

// A request that fails for a reason that may pass (no answer, or the server's 5xx: busy, restarting)
// is tried again after these pauses; a refusal (4xx) is final. Saves are safe to repeat: a label is set,
// not toggled.
const RETRY_PAUSES_MS = [300, 600, 1200, 2400];

class Refused extends Error {}

async function once(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error(`no answer from the server (${error.message})`);
  }
  let data = null;
  try { data = await response.json(); } catch (error) { /* not JSON: report the status below */ }
  if (response.ok && data) return data;
  const message = (data && data.error) || `${response.status} ${response.statusText}`;
  throw response.status >= 400 && response.status < 500 ? new Refused(message) : new Error(message);
}

async function api(path, body) {
  const options = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  for (let attempt = 0; ; attempt++) {
    try {
      return await once(path, options);
    } catch (error) {
      if (error instanceof Refused) throw error;
      if (attempt === RETRY_PAUSES_MS.length) {
        throw new Error(`${error.message}; tried ${attempt + 1} times`);
      }
      say(`${error.message}; trying again (${attempt + 2} of ${RETRY_PAUSES_MS.length + 1})…`, false, "retrying");
      await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSES_MS[attempt]));
    }
  }
}

function itemUrl(id) { return "/api/item/" + id.split("/").map(encodeURIComponent).join("/"); }

function say(text, isError, tone) {
  const box = $("message");
  box.textContent = text || "";
  box.classList.toggle("error", !!isError);
  box.classList.toggle("retrying", tone === "retrying");
}

function showProgress(p) {
  const unsure = (p.counts && p.counts.unsure) || 0;
  $("progress-text").textContent = `${p.n_labelled} / ${p.total} labelled` + (unsure ? ` (${unsure} unsure)` : "");
  $("bar-fill").style.width = p.total ? `${(100 * p.n_labelled) / p.total}%` : "0";
  for (const label of state.labels) {
    const cell = document.querySelector(`[data-count="${CSS.escape(label)}"]`);
    if (cell) cell.textContent = String((p.counts && p.counts[label]) || 0);
  }
}

async function show(id) {
  current = await api(itemUrl(id));
  render();
}

function render() {
  const c = current, item = c.item;
  const idBox = $("item-id");
  idBox.textContent = item.id;
  idBox.dataset.item = item.id;
  $("kind-badge").textContent = item.kind === "norm" ? "norm-based ‖αf(x)‖" : "raw attention";
  $("position").textContent = `map ${item.index + 1} of ${c.total}`;
  $("fact-example").textContent = `${item.example}${c.dev_index == null ? "" : ` · dev #${c.dev_index}`} · ${c.tokens.length} tok.`;
  $("fact-layer").textContent = String(item.layer);
  $("fact-head").textContent = String(item.head);
  $("fact-kind").textContent = item.kind;
  const box = $("current");
  box.textContent = c.label ? `labelled: ${c.label}` : "not labelled yet";
  box.classList.toggle("set", !!c.label);
  box.dataset.label = c.label || "";
  for (const button of document.querySelectorAll("button.label")) {
    button.classList.toggle("chosen", button.dataset.label === c.label);
  }
  hideSuggestion();
  $("back").disabled = !c.prev;
  $("skip").disabled = !c.next;
  $("clear").disabled = !c.label;
  showProgress(c);
  $("readout").textContent = HOVER_HINT;
  drawHeatmap();
}

// The side of the square the map may take: the room left in the window (the page never scrolls), or,
// in a narrow window where the panels stack, the width and the window's height.
function roomForMap() {
  const wrap = $("canvas-wrap");
  const height = window.matchMedia("(max-width: 900px)").matches ? window.innerHeight - 40 : wrap.clientHeight;
  return Math.max(160, Math.min(1000, wrap.clientWidth, height));
}

function drawHeatmap() {
  shown = displayed();
  const scale = colourScale(shown.values, shown.max);
  $("scale-max").textContent = (shown.max > 0 ? scale.top : 0).toPrecision(3);
  $("scale-note").textContent = scale.mode === "gamma" ? `γ ${GAMMA}: mid colour = ${(scale.top * 0.25).toPrecision(2)}`
    : scale.mode === "clip" ? `${scale.above} cell${scale.above === 1 ? "" : "s"} above, in the top colour` : "";
  $("scale-box").dataset.mode = scale.mode;
  const canvas = $("heatmap"), tokens = current.tokens, values = shown.values, n = tokens.length;
  const room = roomForMap();
  const ratio = window.devicePixelRatio || 1;
  const ctx = canvas.getContext("2d");

  // token labels: as large as the cells allow; every k-th one when the cells are too small to read
  const probe = Math.max(7, Math.min(12, Math.floor((room - 100) / Math.max(n, 1)) - 1));
  const font = `${probe}px ui-monospace, Menlo, Consolas, monospace`;
  ctx.font = font;
  const widest = Math.min(n > 64 ? 70 : 110, Math.max(24, ...tokens.map((t) => ctx.measureText(t).width)));
  const margin = Math.ceil(widest) + 10;
  // cells may be a fraction of a pixel wide so that the map fills its room; each cell's edges are
  // rounded to whole pixels (crisp, no seams), so neighbouring cells differ by at most one pixel
  const cell = Math.max(1, (room - margin - 4) / Math.max(n, 1));
  const edge = (k) => Math.round(k * cell);
  const every = Math.max(1, Math.ceil((probe + 1) / cell));
  const top = margin, left = margin;
  geometry = { left, top, cell, n };

  const size = margin + edge(n) + 4;  // the canvas fits the map: no empty band below or beside it
  canvas.width = Math.round(size * ratio);
  canvas.height = Math.round(size * ratio);
  canvas.style.width = `${size}px`;
  canvas.style.height = `${size}px`;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, size, size);
  ctx.font = font;  // resizing a canvas resets its state

  for (let i = 0; i < n; i++) {
    const row = values[i];
    for (let j = 0; j < n; j++) {
      ctx.fillStyle = colour(scale.of(row[j]));
      ctx.fillRect(left + edge(j), top + edge(i), edge(j + 1) - edge(j), edge(i + 1) - edge(i));
    }
  }
  // sentence boundaries (segment ids change): thin white rules help to see blocks
  const segments = current.segments;
  if (segments) {
    ctx.strokeStyle = "rgba(255, 255, 255, 0.55)";
    ctx.lineWidth = 1;
    for (let k = 1; k < n; k++) {
      if (segments[k] === segments[k - 1]) continue;
      const at = top + edge(k) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, at); ctx.lineTo(left + edge(n), at);
      ctx.moveTo(at - top + left, top); ctx.lineTo(at - top + left, top + edge(n));
      ctx.stroke();
    }
  }
  ctx.strokeStyle = "#adb5bd";
  ctx.lineWidth = 1;
  ctx.strokeRect(left - 0.5, top - 0.5, edge(n) + 1, edge(n) + 1);

  ctx.fillStyle = "#1d2330";
  ctx.textBaseline = "middle";
  const clip = (t) => {
    if (ctx.measureText(t).width <= widest) return t;
    while (t.length > 1 && ctx.measureText(t + "…").width > widest) t = t.slice(0, -1);
    return t + "…";
  };
  ctx.textAlign = "right";
  for (let i = 0; i < n; i += every) ctx.fillText(clip(tokens[i]), left - 5, top + i * cell + cell / 2);
  ctx.textAlign = "left";
  for (let j = 0; j < n; j += every) {
    ctx.save();
    ctx.translate(left + j * cell + cell / 2, top - 5);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(clip(tokens[j]), 0, 0);
    ctx.restore();
  }
}

function drawColourbar() {
  const bar = $("colorbar"), ctx = bar.getContext("2d");
  for (let x = 0; x < bar.width; x++) {
    ctx.fillStyle = colour(x / (bar.width - 1));
    ctx.fillRect(x, 0, 1, bar.height);
  }
}

// little 10 x 10 sketches of each pattern on its button
function sketch(pattern, i, j) {
  const vertical = j === 0 || j === 9 ? 1 : 0;
  const diagonal = Math.abs(i - j) === 1 ? 1 : 0;
  switch (pattern) {
    case "diagonal": return diagonal;
    case "block": return (i < 5) === (j < 5) ? 0.55 : 0;
    case "vertical": return vertical;
    case "vertical+diagonal": return Math.max(vertical * 0.9, diagonal * 0.8);
    default: return ((i * 7 + j * 13 + i * j * 3) % 11) / 10;
  }
}

function drawIcons() {
  for (const canvas of document.querySelectorAll("canvas.icon")) {
    const ctx = canvas.getContext("2d"), step = canvas.width / 10;
    if (canvas.dataset.pattern === "unsure") {  // no pattern: a question mark on grey
      ctx.fillStyle = "#dee2e6";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.fillStyle = "#495057";
      ctx.font = `bold ${canvas.width * 0.7}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("?", canvas.width / 2, canvas.height / 2 + 1);
      continue;
    }
    for (let i = 0; i < 10; i++) {
      for (let j = 0; j < 10; j++) {
        ctx.fillStyle = colour(sketch(canvas.dataset.pattern, i, j));
        ctx.fillRect(j * step, i * step, step, step);
      }
    }
  }
}

async function act(work) {
  if (busy || !current) return;
  busy = true;
  try {
    await work();
    say("");
  } catch (error) {
    say(error.message, true);
  } finally {
    busy = false;
  }
}

function choose(label) {
  return act(async () => {
    let saved;
    try {
      saved = await api("/api/label", { id: current.item.id, label });
    } catch (error) {
      const what = label === null ? "clearing the label" : `the label "${label}"`;
      throw new Error(`NOT SAVED: ${what} of ${current.item.id} did not reach labels.json (${error.message}). ` +
                      "Choose it again once the server answers.");
    }
    if (label !== null && saved.next_unlabelled) {
      await show(saved.next_unlabelled);
    } else {
      current = { ...current, ...saved, label };
      render();
      if (label !== null) say("Every map is labelled: export the set when ready.");
    }
  });
}

function move(direction) {
  return act(async () => {
    const id = direction < 0 ? current.prev : current.next;
    if (id) await show(id);
  });
}

function hideSuggestion() {
  suggested = null;
  $("suggestion").hidden = true;
  $("suggest").textContent = "Rule labeller's suggestion";
  for (const button of document.querySelectorAll("button.label")) button.classList.remove("suggested");
}

// Asked for by the person, for the map on screen only; hidden again when they move on.
function toggleSuggestion() {
  if (suggested) { hideSuggestion(); return; }
  return act(async () => {
    const id = current.item.id;
    const answer = await api("/api/suggest/" + id.split("/").map(encodeURIComponent).join("/"));
    if (!current || current.item.id !== id) return;  // moved on meanwhile
    suggested = answer;
    const s = answer.scores, key = state.labels.indexOf(answer.label) + 1;
    $("suggestion-text").textContent = `rules say ${answer.label} (key ${key})`;
    $("suggestion-text").title = `scores: vertical ${s.vertical.toFixed(2)}, diagonal ${s.diagonal.toFixed(2)}, ` +
      `block ${s.block.toFixed(2)}`;
    $("suggestion").hidden = false;
    $("suggestion").dataset.label = answer.label;
    $("suggest").textContent = "Hide suggestion";
    for (const button of document.querySelectorAll("button.label")) {
      button.classList.toggle("suggested", button.dataset.label === answer.label);
    }
  });
}

function setScale(mode) {
  $("scale").value = mode;
  try { localStorage.setItem(SCALE_KEY, mode); } catch (error) { /* private window: not remembered */ }
  if (current) drawHeatmap();
}

async function exportSet() {
  const out = $("export-result");
  out.textContent = "exporting…";
  try {
    const summary = await api("/api/export", {});
    const kinds = Object.entries(summary.counts)
      .map(([kind, counts]) => `${kind} ${Object.values(counts).reduce((a, b) => a + b, 0)}`).join(", ");
    const unsure = summary.n_unsure ? `; ${summary.n_unsure} marked unsure left out` : "";
    out.textContent = `wrote ${summary.n_labelled} labelled maps (${kinds}) to ${summary.out}${unsure}`;
  } catch (error) {
    out.textContent = "";
    say(error.message, true);
  }
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target instanceof HTMLSelectElement && event.key.startsWith("Arrow")) return;  // they choose the scale
  const n = "123456".indexOf(event.key);
  if (n >= 0 && state && n < state.labels.length) {
    event.preventDefault();
    choose(state.labels[n]);
  } else if (event.key === "ArrowLeft") {
    event.preventDefault();
    move(-1);
  } else if (event.key === "ArrowRight") {
    event.preventDefault();
    move(1);
  } else if (event.key === "r") {
    event.preventDefault();
    $("rownorm").checked = !$("rownorm").checked;
    if (current) drawHeatmap();
  } else if (event.key === "g") {
    event.preventDefault();
    const options = Array.from($("scale").options, (o) => o.value);
    setScale(options[(options.indexOf($("scale").value) + 1) % options.length]);
  } else if (event.key === "s") {
    event.preventDefault();
    if (current) toggleSuggestion();
  } else if (event.key === "0" || event.key === "Delete") {
    event.preventDefault();
    if (current && current.label) choose(null);
  }
}

function onHover(event) {
  if (!geometry || !current) return;
  const rect = event.target.getBoundingClientRect();
  // the cell whose rounded edges hold the pointer: cell k covers [round(k * cell), round((k + 1) * cell))
  const at = (offset) => {
    const edge = (k) => Math.round(k * geometry.cell);
    let k = Math.floor(offset / geometry.cell);
    if (edge(k + 1) <= offset) k += 1;
    else if (edge(k) > offset) k -= 1;
    return k;
  };
  const j = at(event.clientX - rect.left - geometry.left), i = at(event.clientY - rect.top - geometry.top);
  const readout = $("readout");
  if (i < 0 || j < 0 || i >= geometry.n || j >= geometry.n) {
    readout.textContent = HOVER_HINT;
    return;
  }
  const t = current.tokens;
  const value = current.map[i][j].toPrecision(3);
  const scaled = $("rownorm").checked ? ` (row-scaled ${shown.values[i][j].toPrecision(3)})` : "";
  readout.textContent = `query ${i} ${t[i]} → key ${j} ${t[j]}: ${value}${scaled}`;
}

async function start() {
  drawIcons();
  drawColourbar();
  for (const button of document.querySelectorAll("button.label")) {
    button.addEventListener("click", () => choose(button.dataset.label));
  }
  $("back").addEventListener("click", () => move(-1));
  $("skip").addEventListener("click", () => move(1));
  $("clear").addEventListener("click", () => choose(null));
  $("export").addEventListener("click", exportSet);
  $("suggest").addEventListener("click", () => { $("suggest").blur(); if (current) toggleSuggestion(); });
  $("accept").addEventListener("click", () => suggested && choose(suggested.label));
  try { const kept = localStorage.getItem(SCALE_KEY); if (kept) $("scale").value = kept; } catch (error) { /* none */ }
  if (!$("scale").value) $("scale").value = "linear";
  $("scale").addEventListener("change", () => { $("scale").blur(); setScale($("scale").value); });
  $("rownorm").addEventListener("change", () => { $("rownorm").blur(); if (current) drawHeatmap(); });
  $("heatmap").addEventListener("mousemove", onHover);
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => current && drawHeatmap());
  try {
    state = await api("/api/state");
    const where = [state.model, state.task, state.weights].filter(Boolean).join(" · ");
    $("source").textContent = `${state.folder}${where ? " — " + where : ""}`;
    $("order").textContent = state.shuffle_seed == null ? "folder order" : `shuffled · seed ${state.shuffle_seed}`;
    showProgress(state);
    const first = state.first_unlabelled || state.first;
    if (!first) { say("This folder has no maps.", true); return; }
    await show(first);
    if (!state.first_unlabelled) say("Every map is labelled: export the set when ready.");
    document.body.dataset.ready = "1";
  } catch (error) {
    say(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", start);
"""
