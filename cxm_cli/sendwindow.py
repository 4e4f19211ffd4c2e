"""Send windows: when a message may reach a person, in *their* time zone.

The zone is the contact's own (``contacts.timezone``), else guessed from the
phone number (a number whose area spans several zones must fall inside the
window in every one of them), else the workspace's. Quiet hours come from
``[quiet_hours]`` in cxm.toml; Florida and Oklahoma contacts get the stricter
8:00-20:00. A moment outside the window moves to the next opening, never away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cxm_cli.waits import Calendar, local_moment, parse_time_of_day

log = logging.getLogger(__name__)

DEFAULT_START = time(8, 0)
DEFAULT_END = time(21, 0)

# States whose telemarketing laws are stricter than the federal 8:00-21:00:
# Florida (FTSA) and Oklahoma (OTSA) allow 8:00-20:00 and three solicitations
# per person per 24 hours.
STRICT_STATES = {"FL": "Florida", "OK": "Oklahoma"}
STRICT_START = time(8, 0)
STRICT_END = time(20, 0)
_STATE_NAMES = {name.upper(): code for code, name in STRICT_STATES.items()}

_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(frozen=True)
class SendWindow:
    """The daily local window in which messages may arrive, in every zone."""

    start: time
    end: time
    zones: tuple[ZoneInfo, ...]
    rule: str  # how the window was chosen, for the timeline

    @property
    def zone(self) -> ZoneInfo:
        return self.zones[0]

    def allows(self, moment: datetime) -> bool:
        return all(self._allows_in(zone, moment) for zone in self.zones)

    def next_open(self, moment: datetime) -> datetime:
        """``moment`` if the window is open then, else the next time it opens."""
        candidate = moment
        # Several candidate zones: move forward until every zone is open. A
        # handful of rounds settles any real overlap.
        for _ in range(8):
            moved = False
            for zone in self.zones:
                if not self._allows_in(zone, candidate):
                    candidate = self._next_open_in(zone, candidate)
                    moved = True
            if not moved:
                return candidate
        # Limitation: zones too far apart to share any hour (a toll-free number
        # spanning the Pacific) fall back to the first zone alone.
        return self._next_open_in(self.zones[0], moment)

    def _allows_in(self, zone: ZoneInfo, moment: datetime) -> bool:
        local = moment.astimezone(zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def _next_open_in(self, zone: ZoneInfo, moment: datetime) -> datetime:
        if self._allows_in(zone, moment):
            return moment
        local = moment.astimezone(zone)
        opening = local_moment(local.date(), self.start, zone)
        if opening <= moment:
            opening = local_moment(local.date() + timedelta(days=1), self.start, zone)
        return opening

    def describe(self) -> str:
        names = ", ".join(zone.key for zone in self.zones)
        return f"{self.start:%H:%M}-{self.end:%H:%M} {names} ({self.rule})"


def window_for(workspace, contact: dict) -> SendWindow:
    """The send window for one contact."""
    start, end = workspace_quiet_hours(workspace)
    zones, zone_source = contact_zones(workspace, contact)
    rule = f"quiet hours, zone from {zone_source}"

    state = strict_state(contact)
    if state:
        start = max(start, STRICT_START) if start < end else STRICT_START
        end = min(end, STRICT_END) if start < end else STRICT_END
        rule = f"{STRICT_STATES[state]} hours, zone from {zone_source}"
    return SendWindow(start=start, end=end, zones=tuple(zones), rule=rule)


def workspace_quiet_hours(workspace) -> tuple[time, time]:
    """The allowed window ``[start, end)`` from ``[quiet_hours]`` in cxm.toml."""
    start = workspace.setting("quiet_hours.start", "08:00")
    end = workspace.setting("quiet_hours.end", "21:00")
    if isinstance(start, str) and isinstance(end, str):
        # Every contact-facing step asks, and the settings rarely change.
        return _cached_quiet_hours(start, end)
    return _quiet_hours(start, end)


@lru_cache(maxsize=64)
def _cached_quiet_hours(start_text: str, end_text: str) -> tuple[time, time]:
    return _quiet_hours(start_text, end_text)


def _quiet_hours(start_text, end_text) -> tuple[time, time]:
    try:
        start = parse_time_of_day(start_text)
        end = parse_time_of_day(end_text)
    except ValueError as exc:
        from cxm_cli.errors import ConfigError

        raise ConfigError(f"cxm.toml [quiet_hours]: {exc}") from exc
    return start, end


def strict_state(contact: dict) -> str | None:
    """``FL`` or ``OK`` when the contact's state has stricter rules, else None."""
    region = str(contact.get("region") or "").strip().upper()
    if not region:
        return None
    region = region.removeprefix("US-").removeprefix("US ")
    if region in STRICT_STATES:
        return region
    return _STATE_NAMES.get(region)


def contact_zones(workspace, contact: dict) -> tuple[list[ZoneInfo], str]:
    """The contact's candidate zones (first is the main one) and their source."""
    own = _zone(contact.get("timezone"))
    if own is not None:
        return [own], "contact"

    phone = contact.get("phone")
    if phone:
        guessed = phone_zones(str(phone), workspace.phone_region)
        if guessed:
            return [_zone(name) for name in guessed], "phone number"

    return [workspace_zone(workspace)], "workspace"


def contact_zone(workspace, contact: dict) -> ZoneInfo:
    return contact_zones(workspace, contact)[0][0]


def workspace_zone(workspace) -> ZoneInfo:
    zone = _zone(workspace.timezone)
    if zone is None:
        from cxm_cli.errors import ConfigError

        raise ConfigError(
            f"cxm.toml [business] timezone {workspace.timezone!r} is unknown"
        )
    return zone


@lru_cache(maxsize=4096)
def phone_zones(phone: str, region: str = "US") -> tuple[str, ...]:
    """IANA zones a phone number's prefix belongs to (empty when unknown)."""
    import phonenumbers
    from phonenumbers import timezone as phone_timezone

    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return ()
    names = [
        name
        for name in phone_timezone.time_zones_for_number(parsed)
        if name != phone_timezone.UNKNOWN_TIMEZONE and _zone(name) is not None
    ]
    return tuple(names)


@lru_cache(maxsize=512)
def _zone(name: object) -> ZoneInfo | None:
    if not name or not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None


def workspace_calendar(workspace) -> Calendar:
    """Business days and holidays from ``[calendar]`` in cxm.toml."""
    from cxm_cli.errors import ConfigError

    names = workspace.setting(
        "calendar.business_days", ["mon", "tue", "wed", "thu", "fri"]
    )
    weekdays = set()
    for name in names or []:
        key = str(name).strip().lower()[:3]
        if key not in _WEEKDAYS:
            raise ConfigError(
                f"cxm.toml [calendar] business_days: {name!r} is not a weekday",
                hint="use mon, tue, wed, thu, fri, sat, sun",
            )
        weekdays.add(_WEEKDAYS[key])

    holidays = set()
    for value in workspace.setting("calendar.holidays", []) or []:
        try:
            holidays.add(
                value if isinstance(value, date) else date.fromisoformat(str(value))
            )
        except ValueError as exc:
            raise ConfigError(
                f"cxm.toml [calendar] holidays: {value!r} is not a date (YYYY-MM-DD)"
            ) from exc
    return Calendar(weekdays=frozenset(weekdays), holidays=frozenset(holidays))
