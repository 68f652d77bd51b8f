"""The one exception type for mistakes a user can fix.

The CLI prints ``str(error)`` on one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserError", "did_you_mean", "one_line"]


class UserError(Exception):
    """Bad input: the message names the problem and the fix, in one line."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest choice, or ``""`` if none is close.

    >>> did_you_mean("magntude", ["magnitude", "structured"])
    " Did you mean 'magnitude'?"
    """
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" Did you mean '{lowered[close[0]]}'?" if close else ""


# every character str.splitlines() breaks a line at
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with its line breaks written as escapes: a message that quotes a user's value (a model
    name holding a newline) stays one line.

    >>> one_line("model 'a\\nb' not found")
    "model 'a\\\\nb' not found"
    """
    return text.translate(_LINE_BREAKS)
