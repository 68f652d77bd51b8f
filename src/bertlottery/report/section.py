"""`Section`: one section of the report page, what every section function returns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from markupsafe import Markup

__all__ = ["Section"]


@dataclass
class Section:
    """One section of the report page.

    ``title``: plain text (escaped). ``html_body``: trusted HTML (build it from escaped pieces).
    ``missing``: plain-text lines naming what is not there yet. ``anchor``: the id of the section's
    heading (derived from the title when empty). ``toc``: whether the contents list it; its parts (each
    ``<h3 id=...>`` of the body, one per experiment of a study's section) are listed under it.
    """

    title: str
    html_body: str
    missing: list[str] = field(default_factory=list)
    anchor: str = ""
    toc: bool = True  # listed in the contents (False: shown in place only, e.g. a part of the study that did not run)

    @property
    def parts(self) -> list[tuple[str, Markup]]:
        """``(id, heading)`` of each ``<h3 id="...">`` in the body, in page order: the contents' entries
        under the section's own."""
        return [(anchor, Markup(heading)) for anchor, heading in _PART.findall(str(self.html_body))]


_PART = re.compile(r'<h3 id="([^"]+)">(.*?)</h3>', re.S)
