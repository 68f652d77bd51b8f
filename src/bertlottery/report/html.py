"""HTML of the report: jinja2 with autoescaping on, and the helpers section providers build with.

Everything that comes from data (task names, config values, errors, file names) goes through
jinja2's autoescaping or `escape`; only the helpers' own output is marked safe. The page is
self-contained: its CSS is inline and its figures are ``data:image/png;base64`` URIs, so it opens
from a file anywhere, with no network.

Helpers for section providers (see `bertlottery.report`):

- `table_html(table, out_dir)`: a `bertlottery.report.tables.Table` as an HTML table (and its CSV in
  ``out_dir/tables/``);
- `figure_html(fig, out_dir, name, caption)`: a matplotlib figure saved as PNG and PDF in
  ``out_dir/figures/`` and embedded;
- `escape(text)`, `paragraph(text)`, `missing_list(lines)`, `caution_list(title, lines)`.

Example:
    >>> body = paragraph("Heads that survive in every seed.") + figure_html(fig, out, "heads", "Heads")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

__all__ = ["escape", "paragraph", "table_html", "figure_html", "image_html", "missing_list", "caution_list",
           "render_page", "slug"]

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def slug(text: str) -> str:
    """An id for an anchor: lower case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def paragraph(text: str) -> Markup:
    return Markup("<p>{}</p>").format(text)


def missing_list(lines: list[str]) -> Markup:
    if not lines:
        return Markup("")
    shown = len(lines) if len(lines) <= 8 else 6  # a long list folds after six lines
    return Markup(_ENV.from_string(_MISSING).render(lines=lines, shown=shown))


def caution_list(title: str, lines: list[str]) -> Markup:
    """A boxed list of what the reader must know before reading a section's numbers (escaped)."""
    if not lines:
        return Markup("")
    return Markup(_ENV.from_string(_CAUTION).render(title=title, lines=lines))


_CAUTION = """<div class="caution"><strong>{{ title }}</strong><ul>
{% for line in lines %}<li>{{ line }}</li>
{% endfor %}</ul></div>"""

_MISSING = """<div class="missing"><strong>Not in this report yet:</strong><ul>
{% for line in lines[:shown] %}<li>{{ line }}</li>
{% endfor %}</ul>
{% if lines|length > shown %}<details><summary>{{ lines|length - shown }} more</summary><ul>
{% for line in lines[shown:] %}<li>{{ line }}</li>
{% endfor %}</ul></details>{% endif %}
</div>"""

_TABLE = """<figure class="table" id="table-{{ name }}">
<figcaption><strong>{{ title }}</strong>{% if caption %} {{ caption }}{% endif %}
{% if csv %} <a class="csv" href="{{ csv }}">CSV</a>{% endif %}</figcaption>
<div class="scroll"><table data-table="{{ name }}">
<thead>
{% if two_levels %}
<tr><th></th>{% for top, span in tops %}<th colspan="{{ span }}" class="top">{{ top }}</th>{% endfor %}</tr>
{% endif %}
<tr><th></th>{% for column in columns %}<th>{{ column }}</th>{% endfor %}</tr>
</thead>
<tbody>
{% for row in rows %}
{% if row.group %}<tr class="group"><th colspan="{{ columns|length + 1 }}"><span class="pin">{{ row.group }}</span></th></tr>{% endif %}
<tr{% if row.cls %} class="{{ row.cls }}"{% endif %}><th>{{ row.label }}</th>{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table></div>
{% for note in notes %}<p class="note">{{ note }}</p>
{% endfor %}
</figure>"""


def table_html(table: Any, out_dir: Path | None = None, *, write_csv: bool = True) -> Markup:
    """A `Table` as HTML; with ``out_dir``, its ``frame`` is also written to ``out_dir/tables/<name>.csv``
    and the caption links to it."""
    csv = None
    if out_dir is not None and write_csv:
        folder = Path(out_dir) / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        table.frame.to_csv(folder / f"{table.name}.csv", index=False)
        csv = f"tables/{table.name}.csv"
    display = table.display
    two_levels = getattr(display.columns, "nlevels", 1) == 2
    if two_levels:
        tops: list[list[Any]] = []
        for top, _ in display.columns:
            if tops and tops[-1][0] == top:
                tops[-1][1] += 1
            else:
                tops.append([top, 1])
        columns = [sub for _, sub in display.columns]
    else:
        tops, columns = [], list(display.columns)
    rows, previous = [], None
    for i, (label, values) in enumerate(display.iterrows()):
        group = table.groups[i] if table.groups else None
        rows.append({"label": label, "cells": ["" if v is None else v for v in values.tolist()],
                     "group": group if group != previous else None,
                     "cls": table.row_classes[i] if table.row_classes else ""})
        previous = group
    return Markup(_ENV.from_string(_TABLE).render(
        name=table.name, title=table.title, caption=table.caption, csv=csv, two_levels=two_levels, tops=tops,
        columns=columns, rows=rows, notes=table.notes))


_FIGURE = """<figure class="figure" id="figure-{{ name }}">
{% if full %}<a class="full" href="{{ full }}" title="open the figure full-size">{% endif %}<img src="data:image/png;base64,{{ data }}" alt="{{ caption }}" data-figure="{{ name }}">{% if full %}</a>{% endif %}

<figcaption>{{ caption }}{% if full %} <a class="png" href="{{ full }}">full size</a>{% endif %}{% if pdf %} <a class="pdf" href="{{ pdf }}">PDF</a>{% endif %}{% for label, href in data_links %} <a class="data" href="{{ href }}">{{ label }}</a>{% endfor %}</figcaption>
</figure>"""


def image_html(png: Path, name: str, caption: str, pdf: str | None = None, full: str | None = None,
               data_links: list[tuple[str, str]] | None = None) -> Markup:
    """An existing PNG embedded as a base64 data URI; ``full``: the link (relative to the page) that
    opens it full-size; ``data_links``: ``(label, href)`` of the files it was drawn from."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return Markup(_ENV.from_string(_FIGURE).render(name=name, data=data, caption=caption, pdf=pdf, full=full,
                                                   data_links=data_links or []))


def figure_html(fig: Any, out_dir: Path, name: str, caption: str, *, data: Any = None,
                data_label: str = "data (CSV, per seed)", data_links: list[tuple[str, str]] | None = None) -> Markup:
    """Save a matplotlib figure as ``out_dir/figures/<name>.png`` and ``.pdf``, and embed the PNG; the
    image opens the PNG full-size. ``data``: the table the figure was drawn from (a DataFrame; per
    seed unless ``data_label`` says otherwise), written as ``figures/<name>.csv`` and linked;
    ``data_links``: other files it was drawn from, ``(label, href relative to the report)``."""
    from .figures import save_figure

    png, _ = save_figure(fig, Path(out_dir) / "figures", name)
    links = list(data_links or [])
    if data is not None:
        data.to_csv(Path(out_dir) / "figures" / f"{name}.csv", index=False)
        links.insert(0, (data_label, f"figures/{name}.csv"))
    return image_html(png, name, caption, pdf=f"figures/{name}.pdf", full=f"figures/{name}.png", data_links=links)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; margin: 0; }
:root { --column: 1200px; }  /* the text column's width */
main { max-width: var(--column); margin: 0 auto; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #dee2e6; padding-bottom: .2rem; margin-top: 2.4rem; }
h3 { font-size: 1.05rem; margin-top: 1.6rem; }
.meta { color: #495057; margin: 0 0 1rem; }
nav ol { columns: 2; margin: .3rem 0 0; }
nav ol ol { columns: 1; margin: 0; font-size: 90%; }
nav li { break-inside: avoid; }
.missing { background: #fff9db; border-left: 4px solid #fab005; padding: .4rem .9rem; margin: .8rem 0; }
.missing ul { margin: .3rem 0; padding-left: 1.2rem; }
.caution { background: #fff0f0; border-left: 4px solid #e03131; padding: .4rem .9rem; margin: .8rem 0; }
.caution ul { margin: .3rem 0; padding-left: 1.2rem; }
.problems { background: #fff5f5; border-left: 4px solid #fa5252; padding: .4rem .9rem; }
.scroll { overflow-x: auto; max-width: 100%; }
/* a table wider than the text column may use the window's width, centred on the column (a 1920-px screen
   shows the results of six tasks beside the paper's whole); it scrolls sideways only beyond that */
figure.table { width: fit-content; max-width: max(min(var(--column), 100vw - 4rem), 100vw - 5rem);
               transform: translateX(min(0px, calc((min(var(--column), 100vw - 4rem) - 100%) / 2))); }
/* the row labels stay in view when a wide table scrolls sideways (at -1px: with collapsed borders the
   label's background leaves the pixel of its left border open, and the cells scrolled under it show through) */
.scroll thead th:first-child, .scroll tbody th:first-child { position: sticky; left: -1px; z-index: 1; }
/* a group's heading spans the table: its text, not its cell, is what stays in view */
.scroll tr.group th .pin { position: sticky; left: .5rem; display: inline-block; }
.scroll thead th:first-child { background: #f1f3f5; }
.scroll tbody th:first-child { background: #fff; box-shadow: 1px 0 0 #dee2e6; }
.scroll tr.group th:first-child { background: #e7f5ff; }
.scroll tr.quoted th:first-child { background: #fff4e6; }
.scroll tr.unlearnt th:first-child { background: #f1f3f5; }
tr.unlearnt { color: #868e96; background: #f1f3f5; }
.keyresults { background: #ebfbee; border-left: 4px solid #2f9e44; padding: .4rem .9rem; margin: .8rem 0; }
.keyresults p { margin: .3rem 0; }
.keyresults td, .keyresults th { white-space: pre-line; vertical-align: top; }
.keyresults td { text-align: left; min-width: 8.5em; }
table { border-collapse: collapse; font-size: 12.5px; margin: .4rem 0; }
th, td { border: 1px solid #dee2e6; padding: .22rem .5rem; text-align: right; white-space: nowrap; }
thead th { background: #f1f3f5; text-align: center; }
tbody th { text-align: left; font-weight: normal; }
tr.group th { background: #e7f5ff; font-weight: 600; text-align: left; }
tr.quoted { color: #5c3c00; background: #fff4e6; font-style: italic; }
figure { margin: 1rem 0 1.4rem; }
figure.figure img { max-width: 100%; height: auto; border: 1px solid #e9ecef; cursor: zoom-in; }
figcaption { font-size: 12.5px; color: #495057; margin: .3rem 0; }
.note { font-size: 12px; color: #495057; margin: .2rem 0; }
.grid { display: flex; flex-wrap: wrap; gap: 0 1.5rem; }
.grid figure { flex: 0 1 auto; max-width: 100%; }
pre { background: #f8f9fa; border: 1px solid #e9ecef; padding: .6rem; overflow-x: auto; font-size: 12px; }
details summary { cursor: pointer; color: #1864ab; margin: .5rem 0; }
a { color: #1864ab; }
</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
<p class="meta">Run directory <code>{{ run_dir }}</code> &middot; generated {{ generated }} by bertlottery {{ version }}
&middot; results from {% if results_link and results_source == results_link %}<a class="results" href="{{ results_link }}">{{ results_link }}</a>{% else %}{{ results_source }}{% if results_link %} &middot; every row, per seed: <a class="results" href="{{ results_link }}">results.csv</a>{% endif %}{% endif %}</p>
<p class="meta">{{ summary }}</p>
{% if problems %}<div class="problems"><strong>Problems reading the run:</strong><ul>
{% for p in problems %}<li>{{ p }}</li>
{% endfor %}</ul></div>{% endif %}
{{ lead }}
<nav><strong>Contents</strong><ol>
{% for s in sections if s.toc %}<li><a href="#{{ s.anchor }}">{{ s.title }}</a>{% if s.missing %} <span class="note">({{ s.missing|length }} missing)</span>{% endif %}{% if s.parts %}<ol>{% for id, heading in s.parts %}<li><a href="#{{ id }}">{{ heading }}</a></li>{% endfor %}</ol>{% endif %}</li>
{% endfor %}</ol></nav>
{% for s in sections %}
<section id="{{ s.anchor }}" data-section="{{ s.anchor }}">
<h2>{{ s.title }}</h2>
{{ missing_list(s.missing) }}
{{ s.html_body }}
</section>
{% endfor %}
</main>
</body>
</html>
"""


def render_page(*, title: str, run_dir: str, generated: str, version: str, results_source: str, summary: str,
                problems: list[str], sections: list[Any], lead: str = "", results_link: str | None = None) -> str:
    """The whole page. ``sections``' ``html_body`` and ``lead`` (what comes before the contents: the
    key results and the cautions) are trusted HTML; every other value is escaped. A section whose
    ``toc`` is False (one that did not run) is shown in place but not listed in the contents."""
    seen: set[str] = set()
    for section in sections:
        anchor = base = section.anchor or slug(section.title)
        k = 2
        while anchor in seen:  # two sections with one title still get their own anchors
            anchor, k = f"{base}-{k}", k + 1
        section.anchor = anchor
        seen.add(anchor)
    bodies = [Markup(s.html_body) for s in sections]
    views = [{"title": s.title, "anchor": s.anchor, "missing": list(s.missing), "html_body": body,
              "toc": getattr(s, "toc", True), "parts": getattr(s, "parts", [])} for s, body in zip(sections, bodies)]
    return _ENV.from_string(_PAGE).render(title=title, run_dir=run_dir, generated=generated, version=version,
                                          results_source=results_source, summary=summary, problems=problems,
                                          sections=views, missing_list=missing_list, lead=Markup(lead),
                                          results_link=results_link)
