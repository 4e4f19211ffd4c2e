"""What an audit covers: its period and the thresholds its measures use."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cxm_cli import clock as clocks
from cxm_cli.errors import ConfigError, InputError

DEFAULT_LAPSED_DAYS = 365
DEFAULT_REMINDER_HOURS = 72
DEFAULT_TOP_FINDINGS = 5

_RELATIVE = re.compile(r"^\s*(\d+)\s*([dw])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class AuditOptions:
    """The period ``[since, as_of)`` and the thresholds behind the measures.

    ``as_of`` is the end of the period and the moment the audit looks from: the
    timeline is read up to it and waiting times are measured to it, so an audit
    "until March" shows what could have been seen at the end of March.
    """

    as_of: str
    since: str | None = None
    timezone: str = "UTC"
    lapsed_days: int = DEFAULT_LAPSED_DAYS
    reminder_hours: int = DEFAULT_REMINDER_HOURS
    top: int = DEFAULT_TOP_FINDINGS

    def in_period(self, at: str | None) -> bool:
        if at is None or at >= self.as_of:
            return False
        return self.since is None or at >= self.since

    @property
    def zone(self) -> ZoneInfo:
        return zone_named(self.timezone)

    def local_day(self, stored: str) -> str:
        """The business's calendar day (YYYY-MM-DD) of a stored UTC time."""
        return _local_day(self.timezone, stored[:16])

    def local_month(self, stored: str) -> str:
        return _local_day(self.timezone, stored[:16])[:7]


@functools.lru_cache(maxsize=262_144)
def _local_day(zone: str, minute: str) -> str:
    # Cached per minute: visits and ratings cluster, and no zone changes its
    # offset in the middle of a minute.
    moment = datetime.fromisoformat(minute + "+00:00")
    return moment.astimezone(zone_named(zone)).date().isoformat()


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r}", hint="use an IANA name like America/Chicago"
        ) from exc


def make_options(
    *,
    clock,
    since: str | None = None,
    until: str | None = None,
    timezone: str = "UTC",
    lapsed_days: int | None = None,
    reminder_hours: int | None = None,
    top: int | None = None,
) -> AuditOptions:
    """Options from command-line text; relative bounds count back from now."""
    zone = zone_named(timezone)
    now = clock.now()
    as_of = (
        parse_bound(until, zone, now=now, end=True, name="--until") if until else None
    )
    as_of = as_of or clocks.iso(now)
    start = (
        parse_bound(since, zone, now=now, end=False, name="--since") if since else None
    )
    if start is not None and start >= as_of:
        raise InputError(f"--since ({start}) must be before --until ({as_of})")

    for name, value in (
        ("--lapsed-days", lapsed_days),
        ("--reminder-hours", reminder_hours),
        ("--top", top),
    ):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, not {value}")
    return AuditOptions(
        as_of=as_of,
        since=start,
        timezone=timezone,
        lapsed_days=lapsed_days or DEFAULT_LAPSED_DAYS,
        reminder_hours=reminder_hours or DEFAULT_REMINDER_HOURS,
        top=top or DEFAULT_TOP_FINDINGS,
    )


def parse_bound(
    text: str, zone: ZoneInfo, *, now: datetime, end: bool, name: str = "date"
) -> str:
    """Read a period bound: a date, a date and time, or ``30d`` / ``8w`` ago.

    A bare date is midnight in the business's time zone; as an end bound it
    means the whole day, so ``--until 2026-03-31`` includes the 31st. Times
    without an offset are in the business's time zone too.
    """
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        days = amount * (7 if unit == "w" else 1)
        return clocks.iso(now - timedelta(days=days))

    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is not None:
        if end:
            day = day + timedelta(days=1)
        return clocks.iso(datetime.combine(day, time(0), tzinfo=zone))

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"{name}: cannot read {text!r} as a date",
            hint="use 2026-03-31, 2026-03-31T17:00, or a count back such as 90d",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return clocks.iso(moment)
