"""The study report: tables, figures and one self-contained HTML page built from a run directory.

``bertlottery report RUN_DIR`` (or `build_report`) reads what a study wrote (``results.csv`` or the
per-stage ``rows/``, the stages' ``stage.json`` / ``trace.json`` / masks, ``config.json``) and writes
into ``RUN_DIR/report/`` (or ``--out``)::

    report.html          one page, figures embedded as base64 PNG, no external URL
    figures/<name>.png   every figure, also as .pdf
    tables/<name>.csv    every table, numbers unrounded

It never loads a model: every table and figure is a pure function of tables and arrays
(`bertlottery.report.tables`, `bertlottery.report.figures`). A run that is still going, or has
failed stages, gets a report of what exists, and each section lists what is missing.

Sections from other packages
----------------------------
The page is a list of sections. Besides the built-in ones (results, stability, overlaps, costs,
config), any package can add a section with a *section provider*: a function::

    def report_section(run_dir: Path, out_dir: Path) -> Section | None

that returns `None` when the run has nothing for it (e.g. no attention stages), or a `Section`:
``title`` (plain text; escaped), ``html_body`` (HTML, trusted: build it with
`bertlottery.report.html.escape` / ``table_html`` / ``figure_html``, which escape everything they
are given), ``missing`` (plain-text lines: what the section would show but the run does not have
yet). A provider may write its own figure and table files under ``out_dir`` (``figures/`` and
``tables/``; `bertlottery.report.html.figure_html` does both for a matplotlib figure).

Providers are named by ``"module:function"`` strings, so that naming one imports nothing:

- `SECTION_PROVIDERS` below lists the packages' providers. An entry whose *module* does not exist
  (yet) is skipped; one that exists but fails to import, lacks the function, or raises while
  building gets a section saying so (the rest of the report is still written).
- `register_section("pkg.module:function")` adds one at run time (for a plugin outside this
  repository, or a test); ``bertlottery report --section pkg.module:function`` does the same for
  one report, and so does ``$BERTLOTTERY_REPORT_SECTIONS`` (comma-separated).

Example:
    >>> from bertlottery.report import Section, build_report           # doctest: +SKIP
    >>> def my_section(run_dir, out_dir):                              # doctest: +SKIP
    ...     return Section("My analysis", "<p>42</p>", missing=["stage X has not run"])
    >>> register_section("mypkg.report:my_section")                    # doctest: +SKIP
    >>> build_report("runs/minilm-glue")                               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Section", "SECTION_PROVIDERS", "register_section", "build_report"]


@dataclass
class Section:
    """One section of the report page.

    ``title``: plain text (escaped). ``html_body``: trusted HTML (build it from escaped pieces).
    ``missing``: plain-text lines naming what is not there yet. ``anchor``: the id of the section's
    heading (derived from the title when empty).
    """

    title: str
    html_body: str
    missing: list[str] = field(default_factory=list)
    anchor: str = ""


# The packages' section providers, in the order their sections appear after the built-in results.
SECTION_PROVIDERS: list[str] = [
    "bertlottery.attention.report:section",  # attention pattern types (E10)
    "bertlottery.gordon.report:report_section",  # Compressing BERT (E11-E13)
]


def register_section(spec: str) -> None:
    """Add a ``"module:function"`` section provider (once) to `SECTION_PROVIDERS`."""
    module, _, function = spec.partition(":")
    if not module or not function:
        from ..errors import UserError

        raise UserError(f"A section provider is named 'package.module:function', got {spec!r}.")
    if spec not in SECTION_PROVIDERS:
        SECTION_PROVIDERS.append(spec)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, **options: Any) -> Path:
    """Write the report of ``run_dir``; returns the path of ``report.html``. See `bertlottery.report.build`."""
    from .build import build_report as build

    return build(run_dir, out_dir, **options)
