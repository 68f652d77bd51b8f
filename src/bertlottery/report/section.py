"""`Section`: one section of the report page, what every section function returns."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Section"]


@dataclass
class Section:
    """One section of the report page.

    ``title``: plain text (escaped). ``html_body``: trusted HTML (build it from escaped pieces).
    ``missing``: plain-text lines naming what is not there yet. ``anchor``: the id of the section's
    heading (derived from the title when empty). ``toc``: whether the contents list it.
    """

    title: str
    html_body: str
    missing: list[str] = field(default_factory=list)
    anchor: str = ""
    toc: bool = True  # listed in the contents (False: shown in place only, e.g. a part of the study that did not run)
