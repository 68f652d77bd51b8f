"""Assemble the report of a run directory: the built-in sections, the packages' sections, the page.

`build_report` is the one function that writes: into a scratch folder beside the output, renamed
into place at the end (a reader never sees half a report). Each built-in section is a function of
a `Context` (`builtin_sections`, `TAIL_SECTIONS`); each package's section a function of the run and
the output folder (`package_sections`). A section that fails to build says so on the page, and the
rest is still written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import runs
from ..errors import UserError
from . import Section, SectionFunction
from .context import Context, parse_iterations, prepare
from .html import paragraph, render_page
from .rundata import RunData, load_run
from .sections.ablation import ablation_section
from .sections.fisher import fisher_section
from .sections.masks import importance_section, overlaps_section, stability_section
from .sections.run import config_section, costs_section, environment_section, status_section
from .sections.searches import searches_section
from .sections.subnetworks import baselines_section, longer_section, subnetworks_section, super_section
from .sections.summary import lead_html
from .sections.tune import tune_section

__all__ = ["Context", "build_report", "builtin_sections", "package_sections", "failed_section", "parse_iterations",
           "TAIL_SECTIONS"]


def builtin_sections() -> list[tuple[str, Callable[[Context], Section]]]:
    """The report's own sections, in page order (the packages' sections come before the costs); the
    status first, then the lottery study's (left out for a Compressing-BERT study)."""
    return [
        ("status", status_section),
        ("tune", tune_section),
        ("searches", searches_section),
        ("subnetworks", subnetworks_section),
        ("baselines", baselines_section),
        ("super", super_section),
        ("longer", longer_section),
        ("stability", stability_section),
        ("importance", importance_section),
        ("ablation", ablation_section),
        ("overlaps", overlaps_section),
        ("fisher", fisher_section),
    ]


TAIL_SECTIONS: list[tuple[str, Callable[[Context], Section]]] = [
    ("costs", costs_section), ("config", config_section), ("environment", environment_section)]


def package_sections() -> list[SectionFunction]:
    """The packages' sections in page order (after the built-in results), then those added with
    `bertlottery.report.register_section`. Each returns None for a run that has nothing for it.

    Imported here, when a report is built, so that the CLI stays light; the sections import their
    packages' heavier modules only for a run that has their stages.
    """
    from .. import report
    from ..attention.report import report_section as attention
    from ..gordon.report import report_section as gordon

    return [attention, gordon, *report.PLUGIN_SECTIONS]


def failed_section(title: str, error: BaseException) -> Section:
    detail = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    return Section(title, paragraph(f"This section could not be built ({detail}). The rest of the report is complete; "
                                    "please report this as a bug."), [f"{title}: could not be built ({detail})"])


def _package_sections(run: RunData, out_dir: Path, functions: Sequence[SectionFunction]) -> list[Section]:
    sections = []
    for function in dict.fromkeys(functions):
        title = f"Section {getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', function)}"
        try:
            section = function(run, out_dir)
        except Exception as error:  # noqa: BLE001 - a broken plugin must not take the report down
            sections.append(failed_section(title, error))
            continue
        if section is None:
            continue
        if not isinstance(section, Section):
            sections.append(failed_section(title, TypeError(f"it returned {type(section).__name__}, not a Section")))
            continue
        sections.append(section)
    return sections


def _write_results(run: RunData, out: Path) -> str | None:
    """Every row of the run, per seed, as ``results.csv`` beside the page (the report can be moved or
    shared alone); its link, or None when the run has no rows yet."""
    if run.results.empty:
        return None
    run.results.to_csv(out / runs.RESULTS_CSV, index=False)
    return runs.RESULTS_CSV


def _summary_line(ctx: Context) -> str:
    run = ctx.run
    config = run.config or {}
    parts = []
    if config:
        parts.append(f"model {ctx.model}; tasks {', '.join(map(str, config.get('tasks') or []))}; "
                     f"seeds {', '.join(map(str, config.get('seeds') or []))}")
    counts = run.counts()
    if run.stages:
        parts.append(f"{counts['done']} of {len(run.stages)} stages done"
                     + (f", {counts['failed']} failed" if counts["failed"] else "")
                     + (f", {counts['running']} running" if counts["running"] else ""))
    parts.append(f"metric: each task's {ctx.metric} metric on its main dev split")
    parts.append("compared with the paper's released material in " + str(ctx.reference) if ctx.reference
                 else "no comparison with the paper's released material (no --reference)")
    return "; ".join(parts) + "."


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, reference: str | Path | None = None,
                 metric: str = "primary", iterations: Sequence[int | str] = (1, "last"),
                 sections: Sequence[SectionFunction] = (), overwrite: bool = False) -> Path:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``); returns its
    ``report.html``.

    ``reference``: the paper's released material (default ``$BERTLOTTERY_REFERENCE_DIR``; none: no
    comparison). ``metric``: ``"primary"`` (the pruning threshold's) or ``"reported"`` (the paper's
    Table 1 metric). ``iterations``: of the s-pruning search for the importance histograms (1-based
    or ``"last"``). ``sections``: extra section functions for this report (see `bertlottery.report`).
    ``overwrite``: write into an ``out_dir`` that is not a report folder (files of the same names
    replaced, nothing deleted).
    """
    from .. import __version__, runs
    from .paper import reference_dir

    if metric not in ("primary", "reported"):
        raise UserError(f"--metric is primary or reported, got {metric!r}.")
    run = load_run(run_dir)
    out = Path(out_dir).expanduser() if out_dir is not None else run.run_dir / "report"
    if out.resolve() == run.run_dir.resolve():
        raise UserError("--out must not be the run directory itself; leave it out to write RUN_DIR/report.")
    ref = reference_dir(reference)
    try:
        # a report folder (marked, or holding report.html from before the marker) is replaced as a
        # whole; any other non-empty folder is refused unless overwrite (then nothing in it is deleted)
        with runs.staged_output(out, "report", overwrite=overwrite,
                                recognise=lambda folder: (folder / "report.html").is_file()) as scratch:
            ctx = Context(run, scratch, ref, metric, list(iterations))
            prepare(ctx)
            lead = lead_html(ctx)
            page_sections = []
            # a Compressing-BERT study has no lottery grid: its package's section stands in for those
            lottery = run.config is None or run.config.get("gordon") is None
            for name, build in builtin_sections()[:None if lottery else 1]:
                try:
                    page_sections.append(build(ctx))
                except Exception as error:  # noqa: BLE001 - one broken section must not lose the report
                    page_sections.append(failed_section(name, error))
            page_sections += _package_sections(run, scratch, [*package_sections(), *sections])
            for name, build in TAIL_SECTIONS:
                try:
                    page_sections.append(build(ctx))
                except Exception as error:  # noqa: BLE001
                    page_sections.append(failed_section(name, error))
            html = render_page(title=f"bertlottery report: {run.name}", run_dir=str(run.run_dir),
                               generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), version=__version__,
                               results_source=run.results_source, summary=_summary_line(ctx),
                               problems=run.problems, sections=page_sections, lead=lead,
                               results_link=_write_results(run, scratch))
            (scratch / "report.html").write_text(html, encoding="utf-8")
            (scratch / "missing.json").write_text(json.dumps(
                {s.title: s.missing for s in page_sections if s.missing}, indent=1))
    except PermissionError as error:
        raise UserError(f"Cannot write the report to {out} ({error.strerror}); choose a writable folder with --out.") from None
    return out / "report.html"
