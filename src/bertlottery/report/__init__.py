"""The study report: tables, figures and one self-contained HTML page built from a run directory.

``bertlottery report RUN_DIR`` (or `build_report`) reads what a study wrote (``results.csv`` or the
per-stage ``rows/``, ``graph.json`` and the stages' ``stage.json`` / ``trace.json`` / masks,
``config.json``) and writes into ``RUN_DIR/report/`` (or ``--out``)::

    report.html          one page, figures embedded as base64 PNG, no external URL; the key results
                         (computed from the results) and the cautions come first
    results.csv          every row of the run, per seed (linked from the page)
    figures/<name>.png   every figure (a click on it opens this file), also as .pdf, and <name>.csv:
                         the per-seed rows it was drawn from, where it has them
    tables/<name>.csv    every table, numbers unrounded

It never loads a model nor imports the pipeline: every table and figure is a pure function of
tables and arrays (`bertlottery.report.tables`, `bertlottery.report.figures`). A run that is still
going, or has failed stages, gets a report of what exists, and each section lists what is missing.

Sections from other packages
----------------------------
The page is a list of sections. Besides the built-in ones (results, stability, overlaps, costs,
config), the packages' sections (attention patterns, Compressing BERT) and any plugin's come
before the costs. Such a section is a function::

    def my_section(run: RunData, out_dir: Path) -> Section | None

that returns `None` when the run has nothing for it (e.g. no attention stages), or a `Section`:
``title`` (plain text; escaped), ``html_body`` (HTML, trusted: build it with
`bertlottery.report.html.escape` / ``table_html`` / ``figure_html``, which escape everything they
are given), ``missing`` (plain-text lines: what the section would show but the run does not have
yet). ``run`` is what the report read (`bertlottery.report.rundata.RunData`: config, results,
stages and their folders). A section may write its own figure and table files under ``out_dir``
(``figures/`` and ``tables/``; `bertlottery.report.html.figure_html` does both for a matplotlib
figure, and with ``data=`` writes and links the per-seed table it was drawn from). Colours of tasks
come from `bertlottery.report.figures.task_colour`, the same in every section. A ``Section`` with
``toc=False`` is shown in place but left out of the contents (a part of the study that did not run). One that raises gets a section saying so; the rest of the report is still written.

The packages' sections are listed in `bertlottery.report.build.package_sections`;
`register_section(function)` adds one for every report built afterwards in this process (a
plugin, or a test), and ``build_report(..., sections=[function])`` for one report.

Example:
    >>> from bertlottery.report import Section, build_report, register_section   # doctest: +SKIP
    >>> def my_section(run, out_dir):                                          # doctest: +SKIP
    ...     return Section("My analysis", "<p>42</p>", missing=["stage X has not run"])
    >>> register_section(my_section)                                           # doctest: +SKIP
    >>> build_report("runs/minilm-glue")                                       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .section import Section

__all__ = ["Section", "SectionFunction", "PLUGIN_SECTIONS", "register_section", "build_report"]

SectionFunction = Callable[[Any, Path], "Section | None"]  # (RunData, out_dir) -> Section | None

# Sections added with `register_section`, in the order they were added (after the packages' own).
PLUGIN_SECTIONS: list[SectionFunction] = []


def register_section(section: SectionFunction) -> None:
    """Add a section function (once) to every report built afterwards; see the module's docstring."""
    if not callable(section):
        raise TypeError(f"a report section is a function (run, out_dir) -> Section | None, got {section!r}")
    if section not in PLUGIN_SECTIONS:
        PLUGIN_SECTIONS.append(section)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, **options: Any) -> Path:
    """Write the report of ``run_dir``; returns the path of ``report.html``. See `bertlottery.report.build`."""
    from .build import build_report as build

    return build(run_dir, out_dir, **options)
