"""Time in one place, so tests can drive it and every timestamp sorts as text.

Timestamps are stored as fixed-width UTC ISO-8601 strings
(``2026-12-04T15:32:35.000000Z``): lexical order equals time order, which lets
SQLite compare them with plain ``<``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to; used by tests and simulations."""

    def __init__(self, start: datetime | str):
        self._now = parse(start) if isinstance(start, str) else start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, **kwargs: float) -> datetime:
        self._now = self._now + timedelta(**kwargs)
        return self._now

    def set(self, when: datetime | str) -> None:
        self._now = parse(when) if isinstance(when, str) else when.astimezone(UTC)

    def sleep(self, seconds: float) -> None:
        self._now = self._now + timedelta(seconds=max(0.0, seconds))


def iso(moment: datetime) -> str:
    """Render an aware datetime as the stored UTC text form."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: cxm stores aware times only")
    # isoformat, not strftime: the same fixed-width text at a third of the
    # cost, and a runner step stores a dozen timestamps.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse(text: str) -> datetime:
    """Read a stored timestamp, or any ISO-8601 time with an offset or ``Z``."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def now_iso(clock) -> str:
    return iso(clock.now())
