"""How the audit's numbers read to a person: percentages, waits, money."""

from __future__ import annotations


def pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:.0f}%"


def duration(seconds: float | None) -> str:
    """A wait as people say it: "45 s", "12 min", "3.5 hours", "6 days"."""
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        hours = seconds / 3600
        return f"{hours:.1f} hours" if hours < 10 else f"{hours:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def money(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.2f}"


def number(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{int(value):,}"


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{number(count)} {word if count == 1 else (many or word + 's')}"
