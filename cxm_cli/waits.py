"""Durations and ``wait`` steps: reading them and working out when they end.

A wait is written as a short phrase in a sequence file::

    wait: 1d                     # a duration (s, m, h, d, w; "2 hours" works too)
    wait: 1d at 09:30            # a duration, then the next 09:30 local time
    wait: 2 business days        # skips weekends and the holidays in cxm.toml
    wait: 2 business days at 10:00
    wait: until 09:00            # the next 09:00 in the contact's time zone
    wait: until starts_at - 24h  # a time in the trigger event's data, shifted

Days and weeks count calendar days in the contact's zone (a "1d" wait that
crosses a daylight-saving change keeps the wall-clock time); hours, minutes and
seconds are elapsed time.

An ``until <field>`` wait whose time has already passed is *missed*
(:func:`missed_wait`): the engine does not send the step after it late (a
reminder of Tuesday's appointment on Friday) but skips it, unless it is the
last step timed on that field and the field's own time is still ahead (a
booking made one hour ahead still gets the two-hour "see you soon", now).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cxm_cli import clock as clocks

_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "week": "weeks",
    "weeks": "weeks",
}
_PART = re.compile(r"(\d+)\s*([a-z]+)")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_FIELD = re.compile(r"^[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class Duration:
    """A duration split into calendar days and elapsed time."""

    days: int = 0
    elapsed: timedelta = timedelta(0)

    @property
    def total(self) -> timedelta:
        return timedelta(days=self.days) + self.elapsed

    def after(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """``moment`` plus this duration, days counted on the local calendar."""
        result = moment
        if self.days:
            local = moment.astimezone(zone)
            wall = local.replace(tzinfo=None) + timedelta(days=self.days)
            result = local_moment(wall.date(), wall.time(), zone)
        return result + self.elapsed

    def __str__(self) -> str:
        return describe(self.total)


def parse_duration(text: object) -> Duration:
    """Read ``1d``, ``36h``, ``1d 12h``, ``2 hours``, ``1w``; ValueError if not."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not a duration (write e.g. 30m, 2h, 1d)")
    source = str(text).strip().lower()
    if isinstance(text, int) or source.isdigit():
        raise ValueError(
            f"{text!r} has no unit (write e.g. {source}m, {source}h, {source}d)"
        )

    days = 0
    elapsed = timedelta(0)
    position = 0
    for match in _PART.finditer(source):
        if source[position : match.start()].strip(" ,") or match.group(2) not in _UNITS:
            raise ValueError(f"{text!r} is not a duration (write e.g. 30m, 2h, 1d)")
        amount = int(match.group(1))
        unit = _UNITS[match.group(2)]
        if unit == "weeks":
            days += 7 * amount
        elif unit == "days":
            days += amount
        else:
            elapsed += timedelta(**{unit: amount})
        position = match.end()
    if position == 0 or source[position:].strip():
        raise ValueError(f"{text!r} is not a duration (write e.g. 30m, 2h, 1d)")
    return Duration(days=days, elapsed=elapsed)


def parse_timedelta(text: object) -> timedelta:
    return parse_duration(text).total


def describe(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + ("".join(parts) or "0s")


def parse_time_of_day(text: object) -> time:
    match = _TIME.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a time of day (write HH:MM, e.g. 09:30)")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class WaitSpec:
    mode: str  # duration | business_days | time_of_day | until_field
    duration: Duration = Duration()
    business_days: int = 0
    at: time | None = None
    field: str | None = None
    offset: timedelta = timedelta(0)
    text: str = ""


def parse_wait(text: object) -> WaitSpec:
    """Read a ``wait`` phrase; ValueError with a readable reason if it is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"{text!r} is not a wait (write e.g. 1d, 2 business days, until 09:00, "
            "until starts_at - 24h)"
        )
    source = " ".join(text.strip().split())
    lowered = source.lower()

    if lowered.startswith("until "):
        rest = source[6:].strip()
        if _TIME.match(rest):
            return WaitSpec("time_of_day", at=parse_time_of_day(rest), text=source)
        field, offset = _split_offset(rest)
        if not _FIELD.match(field):
            raise ValueError(
                f"{text!r}: after 'until' write a time (09:00) or an event field "
                "such as starts_at, optionally with - 24h"
            )
        return WaitSpec("until_field", field=field, offset=offset, text=source)

    at = None
    if " at " in lowered:
        head, _, tail = source.rpartition(" at ")
        at = parse_time_of_day(tail)
        source_main = head.strip()
    else:
        source_main = source

    business = re.fullmatch(r"(\d+)\s+business\s+days?", source_main.lower())
    if business:
        return WaitSpec(
            "business_days", business_days=int(business.group(1)), at=at, text=source
        )
    return WaitSpec(
        "duration", duration=parse_duration(source_main), at=at, text=source
    )


def _split_offset(text: str) -> tuple[str, timedelta]:
    for sign in ("-", "+"):
        if sign in text:
            field, _, amount = text.partition(sign)
            delta = parse_timedelta(amount.strip())
            return field.strip(), (-delta if sign == "-" else delta)
    return text.strip(), timedelta(0)


@dataclass(frozen=True)
class Calendar:
    """Which local dates are business days."""

    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    holidays: frozenset[date] = frozenset()

    def is_business_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.holidays


def wait_until(
    spec: WaitSpec,
    base: datetime,
    zone: ZoneInfo,
    calendar: Calendar,
    trigger_data: dict | None = None,
) -> tuple[datetime, str]:
    """When the wait that starts at ``base`` ends, and a note saying why.

    Raises ValueError when the wait needs event data that is missing.
    """
    if spec.mode == "duration":
        end = spec.duration.after(base, zone)
        note = f"wait {spec.duration}"
        if spec.at is not None:
            end = next_time_of_day(end, spec.at, zone)
            note += f" then {spec.at:%H:%M}"
        return end, note

    if spec.mode == "business_days":
        local = base.astimezone(zone)
        day = local.date()
        counted = 0
        while counted < spec.business_days:
            day += timedelta(days=1)
            if calendar.is_business_day(day):
                counted += 1
        when = spec.at or local.time().replace(tzinfo=None)
        return local_moment(day, when, zone), f"wait {spec.business_days} business days"

    if spec.mode == "time_of_day":
        return next_time_of_day(base, spec.at, zone), f"wait until {spec.at:%H:%M}"

    target = _field_time(spec, trigger_data) + spec.offset
    if target < base:
        return base, f"{spec.text} has passed; going on now"
    return target, spec.text


def _field_time(spec: WaitSpec, trigger_data: dict | None) -> datetime:
    """The time in the event data an ``until <field>`` wait counts from."""
    raw = _lookup(trigger_data or {}, spec.field or "")
    if raw in (None, ""):
        raise ValueError(f"the trigger event has no {spec.field!r} for {spec.text!r}")
    try:
        return clocks.parse(str(raw))
    except ValueError as exc:
        raise ValueError(f"{spec.field}={raw!r} is not a date and time") from exc


# A target this little in the past still counts as on time: a booking made
# 23h55m ahead, or a runner that was busy for a few minutes (cron runs it every
# five), should not lose its reminder to a clock tick. Longer than that, the
# message would read as stale ("your appointment tomorrow" at lunchtime).
LATE_GRACE = timedelta(minutes=15)


@dataclass(frozen=True)
class MissedWait:
    """An ``until <field>`` wait whose time had passed when it was worked out."""

    spec: WaitSpec
    target: datetime
    anchor: datetime  # the field's own time, offset left out

    @property
    def when(self) -> str:
        """The wait's time in words: ``24h before starts_at``."""
        rest = self.spec.text[len("until ") :]
        for sign, word in (("-", "before"), ("+", "after")):
            if sign in rest:
                field, _, amount = rest.partition(sign)
                return f"{amount.strip()} {word} {field.strip()}"
        return rest.strip()


def missed_wait(
    spec: WaitSpec, base: datetime, trigger_data: dict | None = None
) -> MissedWait | None:
    """The wait, if it is ``until <field>`` and its time is more than
    :data:`LATE_GRACE` before ``base``; else None (other waits are never late).

    Raises ValueError when the event data lacks the field, as :func:`wait_until`.
    """
    if spec.mode != "until_field":
        return None
    anchor = _field_time(spec, trigger_data)
    target = anchor + spec.offset
    if target >= base - LATE_GRACE:
        return None
    return MissedWait(spec, target, anchor)


def late_skip_reason(
    missed: MissedWait, moment: datetime, later_waits: list[object]
) -> str | None:
    """Why the step after ``missed`` is skipped rather than sent at ``moment``;
    None when it should go out late after all.

    ``later_waits`` are the ``wait`` phrases of the steps after it. Only the
    last step timed on the field goes out late, and only while the field's time
    is ahead: an earlier one (the 24h reminder) is superseded by the later one.
    """
    reason = f"its time ({missed.when}) passed before it could go out"
    field = missed.spec.field
    if missed.anchor <= moment:
        return f"{reason}; {field} has passed"
    for text in later_waits:
        try:
            later = parse_wait(text)
        except ValueError:
            continue
        if later.mode == "until_field" and later.field == field:
            return f"{reason}; a later step timed on {field} goes instead"
    return None


def _lookup(data: dict, dotted: str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def local_moment(day: date, when: time, zone: ZoneInfo) -> datetime:
    """The UTC-aware instant of a local wall time (a skipped time moves later)."""
    naive = datetime.combine(day, when)
    aware = naive.replace(tzinfo=zone)
    # A wall time in a spring-forward gap does not exist; round trip through UTC
    # lands it just after the gap instead of an hour early.
    return aware.astimezone(UTC)


def next_time_of_day(moment: datetime, when: time, zone: ZoneInfo) -> datetime:
    """The first local ``when`` at or after ``moment``."""
    local = moment.astimezone(zone)
    candidate = local_moment(local.date(), when, zone)
    if candidate < moment:
        candidate = local_moment(local.date() + timedelta(days=1), when, zone)
    return candidate


@dataclass(frozen=True)
class Deadline:
    """The time a message timed before an event must go out by: the event's own.

    A reminder held by quiet hours or a cap past the appointment it announces
    is worse than none ("see you soon" the morning after), so it is skipped.
    """

    at: datetime
    field: str

    def passed(self, moment: datetime, zone: ZoneInfo) -> str | None:
        """Why a message run at ``moment`` is skipped; None while in time."""
        if moment < self.at:
            return None
        return f"{self._what(zone)} has passed: too late for this message"

    def held_past(self, held: str, until: datetime, zone: ZoneInfo) -> str | None:
        """Why a message that ``held`` (``quiet hours last``) keeps back until
        ``until`` is skipped instead; None when it still goes out in time."""
        if until < self.at:
            return None
        return (
            f"{held} until {until.astimezone(zone):%a %H:%M %Z}, "
            f"after {self._what(zone)}: too late for this message"
        )

    def _what(self, zone: ZoneInfo) -> str:
        return f"{self.field} ({self.at.astimezone(zone):%a %H:%M %Z})"


def deadline_for(sequence, step, trigger_data: dict | None) -> Deadline | None:
    """The deadline of a message timed before an event, or None.

    That is a step right after waits whose last ``until <field>`` wait ends
    before the field's time (``until starts_at - 2h``). A message after the
    event (``until visited_at + 1d``) or at it (``until starts_at``) has none,
    nor one whose event data lacks the field: nothing then says it is late.
    """
    # Limitation: a wait's own when: is not checked; a skipped wait on the
    # field still sets the deadline of the step after it.
    index = step.index - 1
    while index >= 0 and sequence.steps[index].kind == "wait":
        try:
            spec = parse_wait(sequence.steps[index].spec.get("wait"))
        except ValueError:
            spec = None
        index -= 1
        if spec is None or spec.mode != "until_field":
            continue
        if spec.offset >= timedelta(0):
            return None
        try:
            return Deadline(_field_time(spec, trigger_data), spec.field or "")
        except ValueError:
            return None
    return None
