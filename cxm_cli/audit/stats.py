"""Small statistics with the definitions the audit's documentation states.

The median of an even count is the mean of the two middle values; the 90th
percentile is the nearest-rank value (the smallest value with at least 90% of
values at or below it), so it is always a value that really occurred.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return round(float(ordered[middle]), 1)
    return round((ordered[middle - 1] + ordered[middle]) / 2, 1)


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return round(float(ordered[rank - 1]), 1)


def mean(values: Sequence[float]) -> float | None:
    if not values:
        return None
    return round(sum(values) / len(values), 2)


def share(part: float, whole: float) -> float | None:
    """``part / whole`` rounded to four places; None when there is no whole."""
    if not whole:
        return None
    return round(part / whole, 4)


def seconds_between(start: str, end: str) -> float:
    """Seconds from one stored timestamp to another (both UTC text)."""
    return round(epoch(end) - epoch(start), 3)


def stored_from_epoch(seconds: float) -> str:
    """The stored UTC text for a POSIX time (what ``clock.iso`` gives, faster)."""
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
    return text[:-6] + "Z"


def epoch(stored: str) -> float:
    # fromisoformat reads the trailing "Z" itself (Python 3.11+).
    return datetime.fromisoformat(stored).timestamp()


class Breakdown:
    """One accumulator for everyone, and one per source and per channel."""

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory
        self.overall = factory()
        self.by_source: dict[str, Any] = {}
        self.by_channel: dict[str, Any] = {}

    def for_source(self, source: str) -> Any:
        found = self.by_source.get(source)
        if found is None:
            found = self.by_source[source] = self.factory()
        return found

    def for_channel(self, channel: str | None) -> Any:
        channel = channel or "unknown"
        found = self.by_channel.get(channel)
        if found is None:
            found = self.by_channel[channel] = self.factory()
        return found

    def parts(self, source: str, channel: str | None) -> tuple[Any, Any, Any]:
        return self.overall, self.for_source(source), self.for_channel(channel)

    def result(self, size_key: str) -> dict[str, Any]:
        """``overall`` plus ``by_source`` / ``by_channel`` lists, biggest first."""
        return {
            "overall": self.overall.result(),
            "by_source": _groups(self.by_source, "source", size_key),
            "by_channel": _groups(self.by_channel, "channel", size_key),
        }


def _groups(groups: dict[str, Any], key: str, size_key: str) -> list[dict[str, Any]]:
    rows = [{key: name, **acc.result()} for name, acc in groups.items()]
    rows.sort(key=lambda row: (-(row.get(size_key) or 0), str(row[key])))
    return rows
