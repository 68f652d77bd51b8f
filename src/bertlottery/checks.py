"""Small checks the config sections share: names from a known list (with a suggestion) and numbers in
range. Each appends a one-line problem to ``problems`` instead of raising, so a config reports all of
its problems at once."""

from __future__ import annotations

from typing import Any

from .errors import did_you_mean

__all__ = ["check_names", "at_least", "positive"]


def check_names(values: list[str], allowed: tuple[str, ...] | list[str], where: str, problems: list[str]) -> None:
    for value in values or []:
        if value not in allowed:
            problems.append(f"{where}: unknown '{value}'.{did_you_mean(str(value), allowed)} "
                            f"Known: {', '.join(allowed)}")


def at_least(section: Any, names: tuple[str, ...], low: int, where: str, problems: list[str]) -> None:
    """Whole-number fields of ``section`` that must be at least ``low`` (None and wrong types skipped)."""
    for name in names:
        value = getattr(section, name)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            problems.append(f"{where}.{name} must be at least {low}, got {value}")


def positive(section: Any, names: tuple[str, ...], where: str, problems: list[str]) -> None:
    for name in names:
        value = getattr(section, name)
        if isinstance(value, float) and value <= 0:
            problems.append(f"{where}.{name} must be positive, got {value}")
